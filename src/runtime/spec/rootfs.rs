//! Reading files of an image's root filesystem before it is mounted (/etc/passwd and
//! /etc/group for user resolution): from a plain directory, or from a stack of overlay lower
//! directories exactly as overlayfs would merge them (top first; a 0/0 character device is a
//! whiteout; a directory with `trusted.overlay.opaque=y` hides the layers below it).
//!
//! Lookups walk one component at a time with `*at()` calls relative to directory descriptors
//! and never let the kernel follow a symlink: symlinks are read and resolved here as if the
//! root were `/` (`..` stops at the root, absolute targets restart at the root), so nothing
//! outside the root is ever read. Files are opened `O_NOFOLLOW|O_NONBLOCK` and must be regular.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};

/// Symlinks followed in one lookup before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;
/// Components queued in one lookup; bounds the work a symlink farm can cause.
const MAX_COMPONENTS: usize = 4096;
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Read-only access to files of a container's future root filesystem.
pub trait RootfsView {
    /// The regular file at `path` (absolute inside the root), `Ok(None)` when it does not exist.
    /// A file longer than `limit` bytes is an `InvalidData` error, not a truncated read.
    fn read_file(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>>;
}

/// A root filesystem that is one directory on the host.
#[derive(Debug, Clone)]
pub struct DirRootfs {
    root: PathBuf,
}

impl DirRootfs {
    pub fn new(root: impl Into<PathBuf>) -> DirRootfs {
        DirRootfs { root: root.into() }
    }
}

impl RootfsView for DirRootfs {
    fn read_file(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        read_merged(std::slice::from_ref(&self.root), false, path, limit)
    }
}

/// A root filesystem that is a stack of overlayfs lower directories, the top layer first
/// (the order of `lowerdir=` in the mount options).
#[derive(Debug, Clone)]
pub struct OverlayRootfs {
    layers: Vec<PathBuf>,
}

impl OverlayRootfs {
    pub fn new(layers_top_first: Vec<PathBuf>) -> OverlayRootfs {
        OverlayRootfs {
            layers: layers_top_first,
        }
    }
}

impl RootfsView for OverlayRootfs {
    fn read_file(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        if self.layers.is_empty() {
            return Ok(None);
        }
        read_merged(&self.layers, true, path, limit)
    }
}

/// One directory of the merged tree: its descriptors in each layer that contributes to it,
/// top first (only the top one for a plain directory).
struct MergedDir {
    fds: Vec<OwnedFd>,
}

enum Found {
    Missing,
    Dir(MergedDir),
    /// A regular file (or something else that is not a directory) in layer `layer`.
    NonDir {
        layer: usize,
        file_type: FileType,
    },
    Symlink(Vec<u8>),
}

fn open_dir(dirfd: impl std::os::fd::AsFd, name: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn is_opaque(fd: &OwnedFd) -> bool {
    let mut buf = [0u8; 8];
    matches!(rustix::fs::fgetxattr(fd, OPAQUE_XATTR, &mut buf[..]), Ok(n) if &buf[..n] == b"y")
}

fn lookup(dir: &MergedDir, name: &[u8], overlay: bool) -> io::Result<Found> {
    let name = Path::new(OsStr::from_bytes(name));
    let mut dirs = Vec::new();
    for (layer, fd) in dir.fds.iter().enumerate() {
        let st = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let file_type = FileType::from_raw_mode(st.st_mode);
        if overlay && file_type == FileType::CharacterDevice && st.st_rdev == 0 {
            // A whiteout: nothing below shows through.
            break;
        }
        if file_type == FileType::Directory {
            let sub = open_dir(fd, name)?;
            let opaque = overlay && is_opaque(&sub);
            dirs.push(sub);
            if opaque || !overlay {
                break;
            }
            continue;
        }
        if !dirs.is_empty() {
            // A non-directory below a directory ends the merge.
            break;
        }
        if file_type == FileType::Symlink {
            let target = rustix::fs::readlinkat(fd, name, Vec::new())?;
            return Ok(Found::Symlink(target.into_bytes()));
        }
        return Ok(Found::NonDir { layer, file_type });
    }
    if dirs.is_empty() {
        Ok(Found::Missing)
    } else {
        Ok(Found::Dir(MergedDir { fds: dirs }))
    }
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

fn read_merged(
    layers: &[PathBuf],
    overlay: bool,
    path: &str,
    limit: u64,
) -> io::Result<Option<Vec<u8>>> {
    let root = {
        let mut fds = Vec::with_capacity(layers.len());
        for layer in layers {
            let fd = rustix::fs::openat(
                CWD,
                layer,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("opening the root {}: {e}", layer.display()),
                )
            })?;
            let opaque = overlay && is_opaque(&fd);
            fds.push(fd);
            if opaque {
                break;
            }
        }
        MergedDir { fds }
    };
    let mut stack = vec![root];
    let mut queue: VecDeque<Vec<u8>> = components(path.as_bytes()).collect();
    let mut symlinks = 0;
    while let Some(comp) = queue.pop_front() {
        if comp == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let Some(dir) = stack.last() else {
            return Ok(None);
        };
        let last = queue.is_empty();
        match lookup(dir, &comp, overlay)? {
            Found::Missing => return Ok(None),
            Found::Dir(sub) => {
                if last {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{path} is a directory"),
                    ));
                }
                stack.push(sub);
            }
            Found::Symlink(target) => {
                symlinks += 1;
                if symlinks > MAX_SYMLINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{path}: too many levels of symbolic links"),
                    ));
                }
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                let mut spliced: VecDeque<Vec<u8>> = components(&target).collect();
                spliced.extend(queue.drain(..));
                if spliced.len() > MAX_COMPONENTS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{path}: symbolic links expand to too long a path"),
                    ));
                }
                queue = spliced;
            }
            Found::NonDir { layer, file_type } => {
                if !last {
                    // A file used as a directory: the path does not exist.
                    return Ok(None);
                }
                if file_type != FileType::RegularFile {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{path} is not a regular file"),
                    ));
                }
                return read_regular(&dir.fds[layer], &comp, path, limit).map(Some);
            }
        }
    }
    // The path named a directory (or the root itself).
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{path} is a directory"),
    ))
}

fn read_regular(dirfd: &OwnedFd, name: &[u8], path: &str, limit: u64) -> io::Result<Vec<u8>> {
    let fd = rustix::fs::openat(
        dirfd,
        Path::new(OsStr::from_bytes(name)),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    // Checked again on the open file: the entry may have been swapped since the lookup.
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path} is not a regular file"),
        ));
    }
    let mut data = Vec::new();
    File::from(fd)
        .take(limit.saturating_add(1))
        .read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} is larger than {limit} bytes"),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    const LIMIT: u64 = 1 << 20;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn whiteout(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        nix::sys::stat::mknod(
            &p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
    }

    fn opaque(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(&p).unwrap();
        xattr::set(&p, OPAQUE_XATTR, b"y").unwrap();
    }

    fn read(view: &dyn RootfsView, path: &str) -> Option<String> {
        view.read_file(path, LIMIT)
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn directory_reads_files_and_reports_missing_ones() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
        let v = DirRootfs::new(t.path());
        assert_eq!(
            read(&v, "/etc/passwd").unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(
            read(&v, "etc//./passwd").unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(read(&v, "/etc/group"), None);
        assert_eq!(read(&v, "/nope/group"), None);
        // A file used as a directory.
        assert_eq!(read(&v, "/etc/passwd/x"), None);
        assert!(v.read_file("/etc", LIMIT).is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret", "host secret\n");
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "real/passwd", "inside\n");
        write(t.path(), "secret", "root copy\n");
        fs::create_dir_all(t.path().join("etc")).unwrap();
        // Absolute target: relative to the container root, not the host.
        symlink("/real/passwd", t.path().join("etc/passwd")).unwrap();
        // Climbing out with .. stops at the root.
        symlink("../../../../../../secret", t.path().join("etc/group")).unwrap();
        // An absolute symlink pointing at the host path of the outside file.
        symlink(outside.path().join("secret"), t.path().join("etc/shadow")).unwrap();
        // A directory symlink in the middle of the path.
        symlink("/real", t.path().join("alias")).unwrap();
        let v = DirRootfs::new(t.path());
        assert_eq!(read(&v, "/etc/passwd").unwrap(), "inside\n");
        assert_eq!(read(&v, "/etc/group").unwrap(), "root copy\n");
        assert_eq!(read(&v, "/etc/shadow"), None);
        assert_eq!(read(&v, "/alias/passwd").unwrap(), "inside\n");
        assert_eq!(read(&v, "/../../etc/passwd").unwrap(), "inside\n");
    }

    #[test]
    fn symlink_loops_fail_cleanly() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        symlink("/etc/b", t.path().join("etc/a")).unwrap();
        symlink("/etc/a", t.path().join("etc/b")).unwrap();
        // A symlink that expands to itself plus one more component each time.
        symlink("/etc/grow/x", t.path().join("etc/grow")).unwrap();
        let v = DirRootfs::new(t.path());
        let err = v.read_file("/etc/a", LIMIT).unwrap_err();
        assert!(err.to_string().contains("symbolic links"), "{err}");
        assert!(v.read_file("/etc/grow", LIMIT).is_err());
    }

    #[test]
    fn oversized_and_special_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "etc/passwd", &"x".repeat(100));
        nix::unistd::mkfifo(
            &t.path().join("etc/group"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let v = DirRootfs::new(t.path());
        let err = v.read_file("/etc/passwd", 99).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(v.read_file("/etc/passwd", 100).unwrap().unwrap().len(), 100);
        // A fifo must neither block nor be read.
        let err = v.read_file("/etc/group", LIMIT).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_plain_directory_does_not_interpret_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        whiteout(t.path(), "etc/group");
        let err = DirRootfs::new(t.path())
            .read_file("/etc/group", LIMIT)
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn overlay_merges_layers_top_first() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        write(lower.path(), "etc/passwd", "lower passwd\n");
        write(lower.path(), "etc/group", "lower group\n");
        write(lower.path(), "etc/hosts", "lower hosts\n");
        write(lower.path(), "data/keep", "kept\n");
        write(lower.path(), "opaque/hidden", "hidden\n");
        write(upper.path(), "etc/passwd", "upper passwd\n");
        whiteout(upper.path(), "etc/group");
        opaque(upper.path(), "opaque");
        write(upper.path(), "opaque/own", "own\n");
        let v = OverlayRootfs::new(vec![upper.path().into(), lower.path().into()]);
        assert_eq!(read(&v, "/etc/passwd").unwrap(), "upper passwd\n");
        assert_eq!(read(&v, "/etc/group"), None, "whiteout in the top layer");
        assert_eq!(read(&v, "/etc/hosts").unwrap(), "lower hosts\n");
        assert_eq!(read(&v, "/data/keep").unwrap(), "kept\n");
        assert_eq!(read(&v, "/opaque/hidden"), None, "opaque directory");
        assert_eq!(read(&v, "/opaque/own").unwrap(), "own\n");
    }

    #[test]
    fn overlay_symlink_in_one_layer_resolves_through_the_merged_tree() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        write(lower.path(), "usr/share/passwd", "shared\n");
        fs::create_dir_all(upper.path().join("etc")).unwrap();
        symlink("../usr/share/passwd", upper.path().join("etc/passwd")).unwrap();
        let v = OverlayRootfs::new(vec![upper.path().into(), lower.path().into()]);
        assert_eq!(read(&v, "/etc/passwd").unwrap(), "shared\n");
    }

    #[test]
    fn overlay_non_directory_on_top_hides_a_lower_directory() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        write(lower.path(), "etc/passwd", "lower\n");
        write(upper.path(), "etc", "a file now\n");
        let v = OverlayRootfs::new(vec![upper.path().into(), lower.path().into()]);
        assert_eq!(read(&v, "/etc/passwd"), None);
        assert_eq!(read(&v, "/etc").unwrap(), "a file now\n");
        assert_eq!(
            OverlayRootfs::new(vec![])
                .read_file("/etc/passwd", LIMIT)
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_missing_layer_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let gone = t.path().join("gone");
        let err = OverlayRootfs::new(vec![gone.clone()])
            .read_file("/etc/passwd", LIMIT)
            .unwrap_err();
        assert!(
            err.to_string().contains(&gone.display().to_string()),
            "{err}"
        );
    }
}
