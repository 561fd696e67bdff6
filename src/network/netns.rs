//! Network namespaces held by bind mounts (what `ip netns add` does), and running code inside
//! one without changing the caller's own namespace.
//!
//! A namespace lives as long as something references it: a process in it, an open fd, or a
//! bind mount of its nsfs file. [`create`] makes a new one on a short-lived thread
//! (`unshare(CLONE_NEWNET)` only affects that thread, so the process keeps its namespace) and
//! bind-mounts `/proc/thread-self/ns/net` onto a file; the thread then exits and the mount is
//! the only reference. [`remove`] lazily unmounts and unlinks it: the kernel destroys the
//! namespace, and with it the container side of every veth pair (which deletes the host side
//! too), once the container's processes are gone as well.
//!
//! # Mount propagation of the directory
//!
//! The directory holding the mounts (`<root>/netns`) is made a mount point of its own (bound
//! onto itself) in its own *shared* peer group, as iproute2 does for `/run/netns`, with one
//! difference: iproute2's self-bind stays in the peer group of the parent mount (when that is
//! shared, e.g. `/` under systemd), so every netns mount is duplicated, hidden, on the parent;
//! here the self-bind is first made private, then shared, so it starts a group of its own.
//!
//! Why shared: any mount namespace created later (a container being set up, a service with a
//! private /tmp, `unshare -m`) starts with a copy of every mount, netns mounts included. With
//! a private directory that copy would keep each namespace (and its veth pairs, still enslaved
//! to the bridge) alive after [`remove`]; with a shared one the copies are peers (or slaves,
//! after the other namespace makes its root `rslave`) and the unmount propagates to them.
//! Mounts made here are visible to every later process in the same mount namespace.
//!
//! Preparing the directory is idempotent but not atomic: two processes doing it at the same
//! moment could stack two self-binds (harmless, [`release_dir`] removes a stack). dockmaster
//! serializes network mutations with the `<root>/networks/.lock` flock, which covers this.
//!
//! # Running inside a namespace
//!
//! [`run_in`] (and [`run_in_fd`], [`run_in_pid`]) run a closure on a scoped thread that first
//! `setns(CLONE_NEWNET)`s: netlink sockets, sockets bound there, and `/proc/sys/net` (resolved
//! per thread by the kernel) all belong to that namespace, while the caller's threads are
//! untouched. Sockets created inside stay in that namespace after the thread ends. Note that
//! `/proc/self/net` shows the namespace of the thread-group leader: use `/proc/thread-self/net`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use crate::error::{Categorized, Category};

/// Mounts stacked on one path that [`remove`] / [`release_dir`] take off before giving up.
const MAX_STACKED_MOUNTS: usize = 16;

/// `/proc/self/mountinfo` is read up to this size (thousands of mounts fit comfortably).
const MOUNTINFO_MAX: u64 = 64 << 20;

/// Entries of a netns directory looked at by [`list`].
const LIST_MAX_ENTRIES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("make {path} a shared mount point: {source}")]
    PrepareDir {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{path} has no parent directory")]
    NoParent { path: PathBuf },
    #[error("network namespace {path} already exists")]
    Exists { path: PathBuf },
    #[error("create {path}: {source}")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create a network namespace for {path}: {source}")]
    Unshare {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("bind-mount the new network namespace onto {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("unmount {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{path} stays mounted after {MAX_STACKED_MOUNTS} unmounts")]
    StillMounted { path: PathBuf },
    #[error("remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{ns} is not a network namespace")]
    NotNetns { ns: String },
    #[error("enter network namespace {ns}: {source}")]
    Enter {
        ns: String,
        #[source]
        source: Errno,
    },
    #[error("start a thread for network namespace {ns}: {source}")]
    Thread {
        ns: String,
        #[source]
        source: io::Error,
    },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Categorized for NetnsError {
    fn category(&self) -> Category {
        match self {
            NetnsError::Exists { .. } => Category::Conflict,
            NetnsError::NoParent { .. } | NetnsError::NotNetns { .. } => Category::Invalid,
            NetnsError::Open { source, .. } | NetnsError::Read { source, .. }
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Category::NotFound
            }
            _ => Category::Internal,
        }
    }
}

/// Makes `dir` (created if missing) a mount point in a shared peer group of its own, unless it
/// already is a mount point (then it is only made shared). See the module docs for why.
pub fn prepare_dir(dir: &Path) -> Result<(), NetnsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| NetnsError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    let prepare_err = |source| NetnsError::PrepareDir {
        path: dir.to_path_buf(),
        source,
    };
    match mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => return Ok(()),
        // Not a mount point yet.
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(prepare_err(e)),
    }
    // MS_REC carries over netns mounts left in the directory (say, by a crash after someone
    // unmounted the directory) instead of hiding them under the new mount.
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(prepare_err)?;
    // Leave the parent's peer group (if any) first, so that the shared group is our own.
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(prepare_err)?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(prepare_err)
}

/// Unmounts the self-bind [`prepare_dir`] made on `dir` (lazily, with everything still mounted
/// inside) and removes the directory if it is empty. For tests and uninstall; idempotent.
pub fn release_dir(dir: &Path) -> Result<(), NetnsError> {
    unmount_all(dir)?;
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Ok(())
        }
        Err(source) => Err(NetnsError::Remove {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Creates a new, empty network namespace (only `lo`, down) held by a bind mount at `path`.
/// The parent directory is prepared with [`prepare_dir`]. A file left at `path` by a crash
/// (not a namespace) is reused; a namespace already mounted there is [`NetnsError::Exists`].
pub fn create(path: &Path) -> Result<(), NetnsError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| NetnsError::NoParent {
            path: path.to_path_buf(),
        })?;
    prepare_dir(dir)?;
    if is_netns(path) {
        return Err(NetnsError::Exists {
            path: path.to_path_buf(),
        });
    }
    // The mount point: an empty file nobody needs to read (mode 0, like iproute2's).
    fs::OpenOptions::new()
        .read(true)
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o000)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| NetnsError::CreateFile {
            path: path.to_path_buf(),
            source,
        })?;
    let result = thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("netns-create".into())
            .spawn_scoped(scope, || bind_new_netns(path))
            .map_err(|source| NetnsError::Thread {
                ns: path.display().to_string(),
                source,
            })?;
        join(worker)
    });
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Runs on a throwaway thread: the unshare changes only this thread's namespace.
fn bind_new_netns(path: &Path) -> Result<(), NetnsError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare {
        path: path.to_path_buf(),
        source,
    })?;
    mount(
        Some("/proc/thread-self/ns/net"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| NetnsError::Mount {
        path: path.to_path_buf(),
        source,
    })
}

/// Lazily unmounts the namespace at `path` (every stacked mount) and unlinks the file.
/// Idempotent: a missing file or one that is not mounted is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    unmount_all(path)?;
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn unmount_all(path: &Path) -> Result<(), NetnsError> {
    for _ in 0..MAX_STACKED_MOUNTS {
        match umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            // Not (or no longer) a mount point, or not there at all.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(NetnsError::Unmount {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Err(NetnsError::StillMounted {
        path: path.to_path_buf(),
    })
}

/// Whether `path` is (a bind mount of) a network namespace.
pub fn is_netns(path: &Path) -> bool {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .is_ok_and(|file| is_netns_fd(file.as_fd()))
}

fn is_netns_fd(fd: BorrowedFd<'_>) -> bool {
    if !fstatfs(fd).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC) {
        return false;
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the namespace behind a valid,
    // borrowed fd.
    let nstype = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    nstype == libc::CLONE_NEWNET
}

/// Opens the network namespace at `path` (a netns mount, `/proc/PID/ns/net`, ...), checking
/// that it is one. The fd keeps the namespace alive while open.
pub fn open(path: &Path) -> Result<OwnedFd, NetnsError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if !is_netns_fd(file.as_fd()) {
        return Err(NetnsError::NotNetns {
            ns: path.display().to_string(),
        });
    }
    Ok(file.into())
}

/// Runs `f` on a new thread inside the network namespace at `path` and returns its result.
/// The calling thread's namespace never changes. A panic in `f` is resumed in the caller.
pub fn run_in<F, R>(path: &Path, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let fd = open(path)?;
    enter_and_run(fd.as_fd(), path.display().to_string(), f)
}

/// [`run_in`] for the namespace of process `pid` (`/proc/PID/ns/net`).
pub fn run_in_pid<F, R>(pid: u32, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    run_in(&PathBuf::from(format!("/proc/{pid}/ns/net")), f)
}

/// [`run_in`] for an open namespace fd (from [`open`], or any nsfs fd of a network namespace).
pub fn run_in_fd<F, R>(fd: BorrowedFd<'_>, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    enter_and_run(fd, format!("fd {}", fd.as_raw_fd()), f)
}

fn enter_and_run<F, R>(fd: BorrowedFd<'_>, ns: String, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, || {
                // CLONE_NEWNET makes the kernel refuse an fd of another namespace type.
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(|source| match source {
                    Errno::EINVAL => NetnsError::NotNetns { ns: ns.clone() },
                    source => NetnsError::Enter {
                        ns: ns.clone(),
                        source,
                    },
                })?;
                Ok(f())
            })
            .map_err(|source| NetnsError::Thread {
                ns: ns.clone(),
                source,
            })?;
        join(worker)
    })
}

fn join<T>(worker: thread::ScopedJoinHandle<'_, T>) -> T {
    worker
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// One entry of a netns directory, as seen by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsEntry {
    /// File name (for dockmaster, the container id).
    pub name: String,
    pub path: PathBuf,
    /// A network namespace is mounted there (per `/proc/self/mountinfo`); false for a file
    /// left behind without its mount.
    pub mounted: bool,
}

/// Files and netns mounts directly inside `dir`, sorted by name, for cleaning up after a
/// crash. A missing directory lists as empty. Names that are not UTF-8 are skipped (dockmaster
/// never makes them).
pub fn list(dir: &Path) -> Result<Vec<NetnsEntry>, NetnsError> {
    let dir = match fs::canonicalize(dir) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NetnsError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let read_err = |source| NetnsError::Read {
        path: dir.clone(),
        source,
    };
    let mut entries: BTreeMap<String, bool> = BTreeMap::new();
    for entry in fs::read_dir(&dir).map_err(read_err)?.take(LIST_MAX_ENTRIES) {
        let entry = entry.map_err(read_err)?;
        if entry.file_type().map_err(read_err)?.is_dir() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            entries.insert(name.to_owned(), false);
        }
    }
    for mount_point in nsfs_mount_points()? {
        if mount_point.parent() == Some(dir.as_path()) {
            if let Some(name) = mount_point.file_name().and_then(OsStr::to_str) {
                entries.insert(name.to_owned(), true);
            }
        }
    }
    Ok(entries
        .into_iter()
        .map(|(name, mounted)| NetnsEntry {
            path: dir.join(&name),
            name,
            mounted,
        })
        .collect())
}

/// Mount points of nsfs mounts in this process's mount namespace.
fn nsfs_mount_points() -> Result<Vec<PathBuf>, NetnsError> {
    let path = Path::new("/proc/thread-self/mountinfo");
    let read_err = |source| NetnsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = Vec::new();
    fs::File::open(path)
        .map_err(read_err)?
        .take(MOUNTINFO_MAX)
        .read_to_end(&mut text)
        .map_err(read_err)?;
    Ok(parse_nsfs_mount_points(&text))
}

/// Mount points (field 5) of the mountinfo lines whose filesystem type (first field after
/// the ` - ` separator) is `nsfs`.
fn parse_nsfs_mount_points(mountinfo: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in mountinfo.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(separator) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        if separator < 5 || fields.get(separator + 1) != Some(&&b"nsfs"[..]) {
            continue;
        }
        out.push(PathBuf::from(OsStr::from_bytes(
            &crate::fsutil::unescape_mountinfo(fields[4]),
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_of_nsfs_mounts_are_found_and_unescaped() {
        let text = b"22 27 0:21 / /proc rw,relatime - proc proc rw\n\
            101 99 0:4 net:[4026532300] /var/lib/dm/netns/abc rw shared:5 - nsfs nsfs rw\n\
            102 99 0:4 net:[4026532301] /tmp/with\\040space/x rw - nsfs nsfs rw\n\
            103 99 0:4 net:[1] /tmp/opt rw master:1 shared:7 - nsfs nsfs rw\n\
            garbage line\n";
        assert_eq!(
            parse_nsfs_mount_points(text),
            vec![
                PathBuf::from("/var/lib/dm/netns/abc"),
                PathBuf::from("/tmp/with space/x"),
                PathBuf::from("/tmp/opt"),
            ]
        );
    }
}
