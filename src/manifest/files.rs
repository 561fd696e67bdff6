//! The loader's only access to files: a small seam so a project can be read from the working
//! tree (`OsFiles`) or from memory (`MemFiles`: tests, and the GitOps agent reading a commit's
//! tree without a checkout).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Read access to the files of a project. Paths are absolute and lexically normalized by the
/// loader (no `.`/`..` components).
pub trait ProjectFiles {
    /// The whole content of a regular file, at most `limit` bytes: a larger file is an error of
    /// kind `InvalidData` (never read into memory).
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>>;
    /// Whether a regular file exists at `path`.
    fn is_file(&self, path: &Path) -> bool;
    /// Whether a directory exists at `path`.
    fn is_dir(&self, path: &Path) -> bool;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFiles;

impl ProjectFiles for OsFiles {
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory",
            ));
        }
        if meta.len() > limit {
            return Err(too_large(limit));
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        // `take` bounds the read even if the file grows after the metadata call.
        file.take(limit + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > limit {
            return Err(too_large(limit));
        }
        Ok(buf)
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("file larger than {limit} bytes"),
    )
}

/// Files held in memory, keyed by absolute path. Directories are implied by the file paths.
#[derive(Debug, Clone, Default)]
pub struct MemFiles {
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl MemFiles {
    pub fn new() -> MemFiles {
        MemFiles::default()
    }

    /// Adds (or replaces) a file; the path is normalized lexically.
    pub fn insert(&mut self, path: impl AsRef<Path>, content: impl Into<Vec<u8>>) -> &mut Self {
        self.files.insert(normalize(path.as_ref()), content.into());
        self
    }

    /// Builder form of `insert`.
    pub fn with(mut self, path: impl AsRef<Path>, content: impl Into<Vec<u8>>) -> Self {
        self.insert(path, content);
        self
    }
}

impl ProjectFiles for MemFiles {
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        match self.files.get(&normalize(path)) {
            Some(c) if c.len() as u64 > limit => Err(too_large(limit)),
            Some(c) => Ok(c.clone()),
            None if self.is_dir(path) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory",
            )),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such file or directory",
            )),
        }
    }

    fn is_file(&self, path: &Path) -> bool {
        self.files.contains_key(&normalize(path))
    }

    fn is_dir(&self, path: &Path) -> bool {
        let dir = normalize(path);
        self.files
            .range(dir.clone()..)
            .next()
            .is_some_and(|(p, _)| p != &dir && p.starts_with(&dir))
    }
}

/// Confines another `ProjectFiles` to a directory: any path outside it (after lexical
/// normalization) fails to read with `PermissionDenied`, so a project from an untrusted source
/// cannot pull host files into the model (`env_file: /etc/shadow`, `extends: {file: ../..}`).
/// Outside paths report as existing, so even optional references to them fail loudly. Symlinks
/// inside the root are not resolved here: the agent's git-tree implementation has none, and
/// `OsFiles` callers confining a working tree should not rely on this against symlinks.
#[derive(Debug, Clone)]
pub struct ConfinedFiles<F> {
    pub inner: F,
    pub root: PathBuf,
}

impl<F> ConfinedFiles<F> {
    pub fn new(inner: F, root: impl AsRef<Path>) -> ConfinedFiles<F> {
        ConfinedFiles {
            inner,
            root: normalize(root.as_ref()),
        }
    }

    fn inside(&self, path: &Path) -> bool {
        normalize(path).starts_with(&self.root)
    }
}

impl<F: ProjectFiles> ProjectFiles for ConfinedFiles<F> {
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        if !self.inside(path) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("outside the project root {}", self.root.display()),
            ));
        }
        self.inner.read(path, limit)
    }

    fn is_file(&self, path: &Path) -> bool {
        !self.inside(path) || self.inner.is_file(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.inside(path) && self.inner.is_dir(path)
    }
}

impl<F: ProjectFiles + ?Sized> ProjectFiles for &F {
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        (**self).read(path, limit)
    }

    fn is_file(&self, path: &Path) -> bool {
        (**self).is_file(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        (**self).is_dir(path)
    }
}

pub use crate::fsutil::clean_path as normalize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_files_read_and_dirs() {
        let f = MemFiles::new()
            .with("/p/compose.yaml", "a")
            .with("/p/sub/x.env", "b");
        assert_eq!(f.read(Path::new("/p/./compose.yaml"), 10).unwrap(), b"a");
        assert!(f.is_dir(Path::new("/p/sub")));
        assert!(f.is_dir(Path::new("/p")));
        assert!(!f.is_dir(Path::new("/p/compose.yaml")));
        assert!(!f.is_file(Path::new("/p/sub")));
        let e = f.read(Path::new("/p/none"), 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = f.read(Path::new("/p/compose.yaml"), 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn confined_files_refuse_outside_paths() {
        let f = MemFiles::new()
            .with("/repo/app/compose.yaml", "a")
            .with("/etc/shadow", "secret");
        let c = ConfinedFiles::new(&f, "/repo/app");
        assert_eq!(
            c.read(Path::new("/repo/app/compose.yaml"), 10).unwrap(),
            b"a"
        );
        let e = c
            .read(Path::new("/repo/app/../../etc/shadow"), 10)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(c.is_file(Path::new("/etc/shadow")));
        assert!(!c.is_dir(Path::new("/etc")));
    }

    #[test]
    fn normalize_like_clean() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../a")), PathBuf::from("/a"));
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
    }
}
