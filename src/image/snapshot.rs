//! Snapshots: each layer unpacked once, in overlayfs form, into `<root>/snapshots/<alg>/<hex>`
//! named by its diff ID, and shared by every image that uses the layer. A snapshot is built in
//! `snapshots/tmp/` and renamed into place after a filesystem sync, so a directory under its
//! final name is always complete.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::digest::Digest;
use crate::error::{Categorized, Category};
use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Categorized for SnapshotError {
    fn category(&self) -> Category {
        Category::Internal
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl SnapshotStore {
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        let dir = root.join("snapshots");
        for sub in ["sha256", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(SnapshotStore { dir })
    }

    /// The committed snapshot directory for a layer (an overlayfs lowerdir).
    pub fn path(&self, diff_id: &Digest) -> PathBuf {
        self.dir
            .join(diff_id.algorithm().as_str())
            .join(diff_id.encoded())
    }

    pub fn contains(&self, diff_id: &Digest) -> bool {
        self.path(diff_id).is_dir()
    }

    /// A fresh, empty directory to unpack into; dropped without `commit`, it is removed.
    pub fn prepare(&self, diff_id: &Digest) -> Result<PreparedSnapshot, SnapshotError> {
        let tmp = self.dir.join("tmp").join(format!(
            "{}-{}-{}",
            diff_id.encoded(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        Ok(PreparedSnapshot {
            tmp: Some(tmp),
            dest: self.path(diff_id),
        })
    }

    pub fn remove(&self, diff_id: &Digest) -> Result<(), SnapshotError> {
        let p = self.path(diff_id);
        // Move aside first so a crash mid-removal never leaves a half-deleted snapshot under
        // its committed name.
        let trash = self.dir.join("tmp").join(format!(
            "rm-{}-{}-{}",
            diff_id.encoded(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(&p, &trash) {
            Ok(()) => fs::remove_dir_all(&trash).map_err(io_err(&trash)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::Io { path: p, source: e }),
        }
    }

    /// Diff IDs of every committed snapshot.
    pub fn list(&self) -> Result<Vec<Digest>, SnapshotError> {
        let mut out = Vec::new();
        let p = self.dir.join("sha256");
        for e in fs::read_dir(&p).map_err(io_err(&p))? {
            let e = e.map_err(io_err(&p))?;
            if let Ok(d) = Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes unpack directories left by processes that died.
    pub fn clean_tmp(&self) -> Result<u64, SnapshotError> {
        let dir = self.dir.join("tmp");
        let mut removed = 0;
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let alive = fsutil::temp_owner_alive(&name);
            if !alive && fs::remove_dir_all(e.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

pub struct PreparedSnapshot {
    tmp: Option<PathBuf>,
    dest: PathBuf,
}

impl PreparedSnapshot {
    pub fn path(&self) -> &Path {
        self.tmp.as_deref().expect("not committed")
    }

    /// Makes the unpacked tree durable (one syncfs instead of an fsync per file) and renames
    /// it to its final name. If another process committed the same layer first, ours is
    /// dropped: both are identical by diff ID.
    pub fn commit(mut self) -> Result<PathBuf, SnapshotError> {
        let tmp = self.tmp.take().expect("commit once");
        let dir = fs::File::open(&tmp).map_err(io_err(&tmp))?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| io_err(&tmp)(io::Error::from(e)))?;
        drop(dir);
        match fs::rename(&tmp, &self.dest) {
            Ok(()) => {}
            Err(e) if self.dest.is_dir() => {
                // ENOTEMPTY/EEXIST: a concurrent commit won.
                let _ = e;
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(SnapshotError::Io {
                    path: self.dest.clone(),
                    source: e,
                });
            }
        }
        if let Some(parent) = self.dest.parent() {
            fsutil::sync_dir(parent).map_err(io_err(parent))?;
        }
        Ok(self.dest.clone())
    }
}

impl Drop for PreparedSnapshot {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_dir_all(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_commit_and_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let id = Digest::sha256_of(b"layer");
        let p = store.prepare(&id).unwrap();
        fs::write(p.path().join("f"), b"x").unwrap();
        let final_path = p.commit().unwrap();
        assert_eq!(fs::read(final_path.join("f")).unwrap(), b"x");
        assert_eq!(store.list().unwrap(), vec![id.clone()]);

        // an abandoned unpack leaves nothing behind
        let other = Digest::sha256_of(b"other");
        let p = store.prepare(&other).unwrap();
        fs::write(p.path().join("g"), b"y").unwrap();
        drop(p);
        assert!(!store.contains(&other));
        assert_eq!(
            fs::read_dir(tmp.path().join("snapshots/tmp"))
                .unwrap()
                .count(),
            0
        );

        // a second commit of the same layer keeps the first
        let p = store.prepare(&id).unwrap();
        fs::write(p.path().join("f2"), b"z").unwrap();
        p.commit().unwrap();
        assert!(store.path(&id).join("f").exists());

        store.remove(&id).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
