//! The container's root filesystem: an overlayfs whose lower dirs are the image's layer
//! snapshots (overlay form, see `image::snapshot`) and whose upper/work dirs belong to the
//! container, under `<overlay_dir>/{upper,work}`.
//!
//! Many layers: mount(2) takes its options in one page (4096 bytes), and snapshot paths are
//! ~110 bytes, so a plain `lowerdir=a:b:c` string stops at ~35 layers. Two ways around it:
//! - [`MountMethod::LowerdirAppend`] (Linux 6.8+): the new mount API, one
//!   `fsconfig(FSCONFIG_SET_STRING, "lowerdir+", path)` per layer; no length limit and no
//!   escaping of `:`/`,` in paths.
//! - [`MountMethod::ShortLinks`] (older kernels): symlinks `<overlay_dir>/l/<n>` -> snapshot
//!   and `lowerdir=l/0:l/1:...` relative to `<overlay_dir>` (6 bytes or less per layer, so
//!   overlayfs's own limit of 500 layers fits in a page). Relative paths resolve against the
//!   cwd, which all threads share; so the mount(2) runs on a short-lived thread that first
//!   detaches its cwd from the process with `unshare(CLONE_FS)`, then `fchdir`s. Other threads
//!   never see a changed cwd and nothing runs after a fork.
//!
//! [`MountMethod::Auto`] probes once whether the kernel takes `lowerdir+` and picks accordingly.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, StatxAttributes, StatxFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::error::{Categorized, Category};

/// overlayfs refuses more lower layers than this (`OVL_MAX_STACK`).
pub const MAX_LAYERS: usize = 500;

/// mount(2) copies at most one page of option data (the smallest page size, to be safe).
const MOUNT_DATA_MAX: usize = 4095;

/// Mounts stacked on one target that [`unmount`] removes before giving up.
const MAX_STACKED_MOUNTS: usize = 16;

/// Kernel log lines read from an fs context after a failure, and their size.
const FS_LOG_MAX_LINES: usize = 8;
const FS_LOG_LINE_MAX: usize = 512;

/// Options for every container rootfs. The same snapshot dirs are lower layers of many
/// containers at once, snapshots are re-created (gc + pull) while containers' upper dirs live
/// on, and overlayfs's defaults for these depend on the kernel's build config, so each is
/// set explicitly:
/// - `index=off`: with the inodes index an upper dir records the file handle of its lower
///   root and a later mount over a re-created snapshot (new inodes) fails with ESTALE
///   ("failed to verify upper root origin"; measured here), so a restart after a re-pull
///   would break. We need no hardlink-preserving copy-up or NFS export, which is what it buys.
/// - `xino=off`: xino packs a layer number into the high bits of inode numbers; it only
///   matters when layers span filesystems and overflows (with warnings) on filesystems with
///   64-bit inode numbers (xfs, btrfs). Snapshots and upper dirs share the data root's
///   filesystem, where overlayfs keeps `st_ino` stable without it.
/// - `redirect_dir=off`: renaming a lower directory returns EXDEV and tools copy instead (what
///   Docker does); the upper dir stays a plain diff with no redirect xattrs pointing into
///   shared layers.
/// - `metacopy=off`: a chmod/chown copies the whole file up instead of leaving a metadata-only
///   upper entry that keeps referencing lower data (and needs trusted lower layers).
const OVERLAY_OPTIONS: [(&str, &str); 4] = [
    ("index", "off"),
    ("xino", "off"),
    ("redirect_dir", "off"),
    ("metacopy", "off"),
];

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer snapshot {layer} does not exist")]
    LayerMissing { layer: PathBuf },
    #[error("layer snapshot {layer}: {reason}")]
    LayerInvalid { layer: PathBuf, reason: String },
    #[error("{count} layers exceed overlayfs's limit of {max}")]
    TooManyLayers { count: usize, max: usize },
    #[error("mount target {target}: {source}")]
    Target {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{target} is already a mount point")]
    AlreadyMounted { target: PathBuf },
    #[error("overlay options for {target} are {len} bytes, over mount(2)'s limit of {max}")]
    OptionsTooLong {
        target: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("the kernel does not support overlayfs lowerdir+ (Linux 6.8+), needed to mount {target} this way")]
    Unsupported { target: PathBuf },
    #[error("mount overlay at {target}: {step}: {source}{}", log_suffix(.log))]
    Mount {
        target: PathBuf,
        /// What was being done, naming the layer when one was involved.
        step: String,
        #[source]
        source: io::Error,
        /// The kernel's messages from the filesystem context (new mount API only).
        log: Vec<String>,
    },
    #[error("unmount {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{target} is still a mount point after {tries} unmounts")]
    StillMounted { target: PathBuf, tries: usize },
    #[error("check whether {path} is a mount point: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn log_suffix(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {})", log.join("; "))
    }
}

fn io_category(e: &io::Error) -> Category {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => Category::NotFound,
        Some(libc::EBUSY) => Category::Conflict,
        _ => Category::Internal,
    }
}

impl Categorized for RootfsError {
    fn category(&self) -> Category {
        match self {
            RootfsError::LayerMissing { .. } => Category::NotFound,
            RootfsError::LayerInvalid { .. }
            | RootfsError::TooManyLayers { .. }
            | RootfsError::OptionsTooLong { .. } => Category::Invalid,
            RootfsError::AlreadyMounted { .. } => Category::Conflict,
            RootfsError::CreateDir { source, .. }
            | RootfsError::Target { source, .. }
            | RootfsError::Mount { source, .. }
            | RootfsError::Unmount { source, .. }
            | RootfsError::Stat { source, .. } => io_category(source),
            RootfsError::Unsupported { .. } | RootfsError::StillMounted { .. } => {
                Category::Internal
            }
        }
    }
}

/// How the overlay is assembled; [`MountMethod::Auto`] unless testing a specific path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMethod {
    /// `LowerdirAppend` when the kernel supports it, else `ShortLinks`.
    Auto,
    /// New mount API, one `lowerdir+` per layer (Linux 6.8+).
    LowerdirAppend,
    /// mount(2) with `lowerdir=l/0:l/1:...` through short symlinks (any kernel).
    ShortLinks,
}

/// A container's overlay directories under its overlay dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDirs {
    /// The container's writable layer: everything it changed.
    pub upper: PathBuf,
    /// overlayfs's scratch dir (same filesystem as `upper`).
    pub work: PathBuf,
}

impl OverlayDirs {
    pub fn of(overlay_dir: &Path) -> Self {
        OverlayDirs {
            upper: overlay_dir.join("upper"),
            work: overlay_dir.join("work"),
        }
    }
}

/// Creates `<overlay_dir>/{upper,work}` (and `l/` or `empty/` when needed) and mounts the
/// overlay at `target`, which must exist and not be a mount point yet.
/// `layers_top_first`: the image's snapshot dirs, topmost layer first; may be empty (the
/// rootfs then starts empty). An existing upper dir is reused, so a remount after
/// [`unmount`] shows the container's earlier changes.
pub fn mount_overlay(
    overlay_dir: &Path,
    layers_top_first: &[PathBuf],
    target: &Path,
) -> Result<OverlayDirs, RootfsError> {
    mount_overlay_with(overlay_dir, layers_top_first, target, MountMethod::Auto)
}

/// [`mount_overlay`] with a chosen [`MountMethod`].
pub fn mount_overlay_with(
    overlay_dir: &Path,
    layers_top_first: &[PathBuf],
    target: &Path,
    method: MountMethod,
) -> Result<OverlayDirs, RootfsError> {
    mount_overlay_opts(overlay_dir, layers_top_first, target, method, false)
}

/// [`mount_overlay_with`], optionally `volatile`: overlayfs then skips every sync of the
/// upper filesystem, including the one at unmount that otherwise waits for all dirty data of
/// the whole data-root filesystem (100-470 ms measured while other writers were busy). After
/// a crash such an upper dir must be thrown away, which is what happens to a `--rm`
/// container's anyway.
pub fn mount_overlay_opts(
    overlay_dir: &Path,
    layers_top_first: &[PathBuf],
    target: &Path,
    method: MountMethod,
    volatile: bool,
) -> Result<OverlayDirs, RootfsError> {
    if layers_top_first.len() > MAX_LAYERS {
        return Err(RootfsError::TooManyLayers {
            count: layers_top_first.len(),
            max: MAX_LAYERS,
        });
    }
    let target_err = |source| RootfsError::Target {
        target: target.to_path_buf(),
        source,
    };
    // Absolute and symlink-free: the ShortLinks thread resolves paths from another cwd.
    let target = fs::canonicalize(target).map_err(target_err)?;
    if !fs::metadata(&target).map_err(target_err)?.is_dir() {
        return Err(target_err(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    if is_mountpoint(&target)? {
        return Err(RootfsError::AlreadyMounted { target });
    }

    let mut layers = Vec::with_capacity(layers_top_first.len().max(1));
    for layer in layers_top_first {
        layers.push(check_layer(layer)?);
    }

    create_dir(overlay_dir, 0o700)?;
    let overlay_dir = fs::canonicalize(overlay_dir).map_err(|source| RootfsError::CreateDir {
        path: overlay_dir.to_path_buf(),
        source,
    })?;
    let dirs = OverlayDirs::of(&overlay_dir);
    // The upper dir's root is the merged root: 0755 like any root directory. An existing one
    // keeps whatever mode the container gave it.
    create_dir(&dirs.upper, 0o755)?;
    create_dir(&dirs.work, 0o700)?;
    if layers.is_empty() {
        // overlayfs needs at least one lower dir.
        let empty = overlay_dir.join("empty");
        create_dir(&empty, 0o755)?;
        layers.push(empty);
    }

    let method = match method {
        MountMethod::Auto if lowerdir_append_supported() => MountMethod::LowerdirAppend,
        MountMethod::Auto => MountMethod::ShortLinks,
        m => m,
    };
    match method {
        MountMethod::LowerdirAppend => mount_lowerdir_append(&layers, &dirs, &target, volatile)?,
        _ => mount_short_links(&overlay_dir, &layers, &target, volatile)?,
    }
    Ok(dirs)
}

/// The layer as an absolute path, after checking it is a directory.
fn check_layer(layer: &Path) -> Result<PathBuf, RootfsError> {
    let abs = std::path::absolute(layer).map_err(|e| RootfsError::LayerInvalid {
        layer: layer.to_path_buf(),
        reason: e.to_string(),
    })?;
    match fs::metadata(&abs) {
        Ok(m) if m.is_dir() => Ok(abs),
        Ok(_) => Err(RootfsError::LayerInvalid {
            layer: abs,
            reason: "not a directory".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(RootfsError::LayerMissing { layer: abs })
        }
        Err(e) => Err(RootfsError::LayerInvalid {
            layer: abs,
            reason: e.to_string(),
        }),
    }
}

/// Creates `path` (and parents) with `mode` on the last component if it does not exist.
fn create_dir(path: &Path, mode: u32) -> Result<(), RootfsError> {
    let err = |source| RootfsError::CreateDir {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(err)?;
    }
    match fs::DirBuilder::new().mode(mode).create(path) {
        // The umask may have cut bits off.
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Whether overlayfs takes `lowerdir+` through fsconfig (Linux 6.8+); probed once.
pub fn lowerdir_append_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Ok(fs) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
            return false; // no new mount API (< 5.2) or no overlayfs
        };
        // Before 6.5 overlayfs used the legacy context, which accepts any key and fails only
        // at create time; so "lowerdir+" counts only if an unknown key is rejected.
        fsconfig_set_string(fs.as_fd(), "lowerdir+", "/").is_ok()
            && fsconfig_set_string(fs.as_fd(), "dockmaster-probe", "x").is_err()
    })
}

/// Drains the kernel's messages from a filesystem context (bounded).
fn fs_log(fs: &OwnedFd) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf = [0u8; FS_LOG_LINE_MAX];
    while lines.len() < FS_LOG_MAX_LINES {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => lines.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string()),
            _ => break, // ENODATA: no more messages
        }
    }
    lines
}

fn mount_lowerdir_append(
    layers: &[PathBuf],
    dirs: &OverlayDirs,
    target: &Path,
    volatile: bool,
) -> Result<(), RootfsError> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| match e {
        Errno::NOSYS => RootfsError::Unsupported {
            target: target.to_path_buf(),
        },
        e => RootfsError::Mount {
            target: target.to_path_buf(),
            step: "fsopen".into(),
            source: e.into(),
            log: Vec::new(),
        },
    })?;
    let fail = |step: String, e: Errno| RootfsError::Mount {
        target: target.to_path_buf(),
        step,
        source: e.into(),
        log: fs_log(&fs),
    };
    let set = |key: &str, value: &Path| {
        fsconfig_set_string(fs.as_fd(), key, value)
            .map_err(|e| fail(format!("{key} {}", value.display()), e))
    };
    set("source", Path::new("overlay"))?;
    for layer in layers {
        if let Err(e) = fsconfig_set_string(fs.as_fd(), "lowerdir+", layer.as_path()) {
            let log = fs_log(&fs);
            if e == Errno::INVAL && log.iter().any(|l| l.contains("Unknown parameter")) {
                return Err(RootfsError::Unsupported {
                    target: target.to_path_buf(),
                });
            }
            return Err(RootfsError::Mount {
                target: target.to_path_buf(),
                step: format!("add lower layer {}", layer.display()),
                source: e.into(),
                log,
            });
        }
    }
    set("upperdir", &dirs.upper)?;
    set("workdir", &dirs.work)?;
    for (key, value) in OVERLAY_OPTIONS {
        set(key, Path::new(value))?;
    }
    if volatile {
        fsconfig_set_flag(fs.as_fd(), "volatile").map_err(|e| fail("volatile".into(), e))?;
    }
    fsconfig_create(fs.as_fd()).map_err(|e| fail("create".into(), e))?;
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(|e| fail("fsmount".into(), e))?;
    move_mount(
        mnt.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount".into(), e))
}

/// The mount(2) option string for the ShortLinks method, relative to the overlay dir.
fn short_links_data(layers: usize, volatile: bool) -> String {
    let lower: Vec<String> = (0..layers).map(|i| format!("l/{i}")).collect();
    let mut data = format!("lowerdir={},upperdir=upper,workdir=work", lower.join(":"));
    for (key, value) in OVERLAY_OPTIONS {
        data.push_str(&format!(",{key}={value}"));
    }
    if volatile {
        data.push_str(",volatile");
    }
    data
}

fn mount_short_links(
    overlay_dir: &Path,
    layers: &[PathBuf],
    target: &Path,
    volatile: bool,
) -> Result<(), RootfsError> {
    let data = short_links_data(layers.len(), volatile);
    if data.len() > MOUNT_DATA_MAX {
        return Err(RootfsError::OptionsTooLong {
            target: target.to_path_buf(),
            len: data.len(),
            max: MOUNT_DATA_MAX,
        });
    }
    // Fresh links every time: the layers may differ from the last mount. A mounted overlay
    // holds the resolved dirs, not the links, so replacing them never disturbs it.
    let links = overlay_dir.join("l");
    match fs::remove_dir_all(&links) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(RootfsError::CreateDir {
                path: links,
                source,
            })
        }
    }
    create_dir(&links, 0o700)?;
    for (i, layer) in layers.iter().enumerate() {
        let link = links.join(i.to_string());
        std::os::unix::fs::symlink(layer, &link)
            .map_err(|source| RootfsError::CreateDir { path: link, source })?;
    }

    let mount_err = |step: &str, e: Errno| RootfsError::Mount {
        target: target.to_path_buf(),
        step: step.to_string(),
        source: e.into(),
        log: Vec::new(),
    };
    let dir = rustix::fs::open(
        overlay_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| mount_err("open the overlay dir", e))?;
    let data = CString::new(data).map_err(|_| mount_err("options", Errno::INVAL))?;
    let target_c = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| mount_err("target path", Errno::INVAL))?;

    let thread = std::thread::Builder::new()
        .name("rootfs-mount".into())
        .spawn(move || -> Result<(), (&'static str, Errno)> {
            // SAFETY: CLONE_FS gives this thread its own cwd/root/umask and nothing else; the
            // fd table stays shared (no CLONE_FILES), so no descriptor becomes invisible to
            // other threads. The thread ends right after the mount, taking the copy with it.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .map_err(|e| ("unshare(CLONE_FS)", e))?;
            rustix::process::fchdir(&dir).map_err(|e| ("fchdir to the overlay dir", e))?;
            rustix::mount::mount(
                "overlay",
                target_c.as_c_str(),
                "overlay",
                MountFlags::empty(),
                data.as_c_str(),
            )
            .map_err(|e| ("mount", e))
        })
        .map_err(|source| RootfsError::Mount {
            target: target.to_path_buf(),
            step: "spawn the mount thread".into(),
            source,
            log: Vec::new(),
        })?;
    match thread.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err((step, e))) => Err(mount_err(step, e)),
        Err(_) => Err(mount_err("mount thread panicked", Errno::IO)),
    }
}

/// Unmounts `target` and anything stacked on it; a path that is not a mount point, or does
/// not exist, is fine (idempotent). A busy mount is detached (MNT_DETACH) instead.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    for _ in 0..MAX_STACKED_MOUNTS {
        if !is_mountpoint(target)? {
            return Ok(());
        }
        let err = |e: Errno| RootfsError::Unmount {
            target: target.to_path_buf(),
            source: e.into(),
        };
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => {}
            Err(Errno::BUSY) => {
                rustix::mount::unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                    .map_err(err)?
            }
            Err(e) => return Err(err(e)),
        }
    }
    if is_mountpoint(target)? {
        return Err(RootfsError::StillMounted {
            target: target.to_path_buf(),
            tries: MAX_STACKED_MOUNTS,
        });
    }
    Ok(())
}

/// Whether `path` is the root of a mount. A missing path is not; a symlink is not followed.
pub fn is_mountpoint(path: &Path) -> Result<bool, RootfsError> {
    let stat_err = |source| RootfsError::Stat {
        path: path.to_path_buf(),
        source,
    };
    match rustix::fs::statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::empty(),
    ) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
        }
        // Kernels before 5.8 do not report STATX_ATTR_MOUNT_ROOT.
        Ok(_) | Err(Errno::NOSYS) => is_mountpoint_mountinfo(path).map_err(stat_err),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(stat_err(e.into())),
    }
}

/// The slow way: look the path up in /proc/self/mountinfo.
fn is_mountpoint_mountinfo(path: &Path) -> io::Result<bool> {
    if fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Ok(false);
    }
    let path = fs::canonicalize(path)?;
    let info = fs::read("/proc/self/mountinfo")?;
    Ok(info.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|mp| crate::fsutil::unescape_mountinfo(mp) == path.as_os_str().as_bytes())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// overlayfs cannot use an overlayfs as upper dir, and the test machine's /tmp may be one
    /// (in containers it often is); take the first candidate that is not. Here /tmp, /var/tmp
    /// and /work are all ext4, so the first one wins.
    fn test_base() -> PathBuf {
        const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
        [std::env::temp_dir(), "/var/tmp".into(), "/work".into()]
            .into_iter()
            .find(|p| {
                rustix::fs::statfs(p.as_path())
                    // f_type's width differs between architectures.
                    .is_ok_and(|s| {
                        #[allow(clippy::unnecessary_cast)]
                        let f_type = s.f_type as i64;
                        f_type != OVERLAYFS_SUPER_MAGIC
                    })
            })
            .expect("a temp dir that is not on overlayfs")
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("dockmaster-rootfs-")
            .tempdir_in(test_base())
            .unwrap()
    }

    /// Unmounts everything on its path when dropped, also when the test fails half-way.
    struct MountGuard(PathBuf);
    impl Drop for MountGuard {
        fn drop(&mut self) {
            for _ in 0..MAX_STACKED_MOUNTS {
                if rustix::mount::unmount(self.0.as_path(), UnmountFlags::DETACH).is_err() {
                    break; // EINVAL: nothing (more) mounted there
                }
            }
        }
    }

    /// `<t>/rootfs`, created, with its guard; bound before any mount is attempted, and after
    /// the temp dir, so it drops (unmounts) first.
    fn mount_target(t: &tempfile::TempDir) -> (PathBuf, MountGuard) {
        let target = t.path().join("rootfs");
        fs::create_dir(&target).unwrap();
        (target.clone(), MountGuard(target))
    }

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn whiteout(root: &Path, rel: &str) {
        rustix::fs::mknodat(
            CWD,
            root.join(rel).as_path(),
            rustix::fs::FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .unwrap();
    }

    fn opaque_dir(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(&p).unwrap();
        xattr::set(&p, "trusted.overlay.opaque", b"y").unwrap();
    }

    fn read(root: &Path, rel: &str) -> String {
        fs::read_to_string(root.join(rel)).unwrap()
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Everything observable about a tree: paths, types, contents, device numbers, xattrs.
    fn fingerprint(root: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let xattrs: Vec<_> = xattr::list(&p)
                    .unwrap()
                    .map(|n| format!("{n:?}={:?}", xattr::get(&p, &n).unwrap()))
                    .collect();
                let what = if m.is_dir() {
                    "dir".to_string()
                } else if m.file_type().is_char_device() {
                    format!("chr {}", m.rdev())
                } else {
                    format!("file {:?}", fs::read(&p).unwrap())
                };
                out.push(format!("{rel} {what} {:o} {xattrs:?}", m.mode()));
                if m.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }

    /// Three layers, bottom to top:
    /// - base: a, b, keep, d/{x,y}, o/old, w/inner
    /// - mid: a overridden, b whited out, d/z added, o opaque with o/new1
    /// - top: dir w whited out, top added, o/new2 added above the opaque o
    fn three_layers(t: &Path) -> Vec<PathBuf> {
        let (base, mid, top) = (t.join("base"), t.join("mid"), t.join("top"));
        write(&base, "a", "base-a");
        write(&base, "b", "base-b");
        write(&base, "keep", "base-keep");
        write(&base, "d/x", "x");
        write(&base, "d/y", "y");
        write(&base, "o/old", "old");
        write(&base, "w/inner", "inner");
        write(&mid, "a", "mid-a");
        whiteout(&mid, "b");
        write(&mid, "d/z", "z");
        opaque_dir(&mid, "o");
        write(&mid, "o/new1", "new1");
        fs::create_dir_all(&top).unwrap();
        whiteout(&top, "w");
        write(&top, "top", "top");
        write(&top, "o/new2", "new2");
        vec![top, mid, base]
    }

    fn merged_view_of_three_layers(method: MountMethod) {
        let t = tempdir();
        let layers = three_layers(t.path());
        let before: Vec<_> = layers.iter().map(|l| fingerprint(l)).collect();
        let (target, _guard) = mount_target(&t);
        let overlay = t.path().join("overlay");
        let dirs = mount_overlay_with(&overlay, &layers, &target, method).unwrap();
        assert!(is_mountpoint(&target).unwrap());

        assert_eq!(
            names(&target),
            ["a", "d", "keep", "o", "top"].map(String::from).into()
        );
        assert_eq!(read(&target, "a"), "mid-a");
        assert_eq!(read(&target, "keep"), "base-keep");
        assert_eq!(read(&target, "top"), "top");
        assert_eq!(
            names(&target.join("d")),
            ["x", "y", "z"].map(String::from).into()
        );
        assert_eq!(
            names(&target.join("o")),
            ["new1", "new2"].map(String::from).into()
        );
        assert!(!target.join("b").exists() && !target.join("w").exists());

        // Writes land in the upper dir; the shared layers are untouched.
        fs::write(target.join("a"), "changed").unwrap();
        fs::write(target.join("new"), "new").unwrap();
        fs::remove_file(target.join("keep")).unwrap();
        fs::remove_file(target.join("d/x")).unwrap();
        assert_eq!(read(&target, "a"), "changed");
        assert_eq!(read(&dirs.upper, "a"), "changed");
        assert_eq!(read(&dirs.upper, "new"), "new");
        for gone in ["keep", "d/x"] {
            let m = fs::symlink_metadata(dirs.upper.join(gone)).unwrap();
            assert!(m.file_type().is_char_device() && m.rdev() == 0, "{gone}");
        }
        let after: Vec<_> = layers.iter().map(|l| fingerprint(l)).collect();
        assert_eq!(before, after);
        assert_eq!(dirs, OverlayDirs::of(&fs::canonicalize(&overlay).unwrap()));

        unmount(&target).unwrap();
        assert!(!is_mountpoint(&target).unwrap());
        assert!(names(&target).is_empty());
    }

    #[test]
    fn merged_view_of_three_layers_lowerdir_append() {
        merged_view_of_three_layers(MountMethod::LowerdirAppend);
    }

    #[test]
    fn merged_view_of_three_layers_short_links() {
        merged_view_of_three_layers(MountMethod::ShortLinks);
    }

    /// 150 layers at snapshot-store-like paths (64-hex names, as deep as the real store):
    /// the absolute paths alone are far over one page.
    fn many_layers(method: MountMethod) {
        const N: usize = 150;
        let t = tempdir();
        let store = t
            .path()
            .join(format!("{:064x}", 0xd0c_u64))
            .join("var/lib/dockmaster/snapshots/sha256");
        let layers: Vec<PathBuf> = (0..N)
            .map(|i| {
                let l = store.join(format!("{:032x}{:032x}", i + 1, i * 7919));
                write(&l, &format!("f{i}"), &i.to_string());
                // Every layer has "shared"; the topmost (index 0) must win.
                write(&l, "shared", &i.to_string());
                l
            })
            .collect();
        let joined: usize = layers.iter().map(|l| l.as_os_str().len() + 1).sum();
        assert!(joined > 4 * 4096, "paths are {joined} bytes");

        let (target, _guard) = mount_target(&t);
        let cwd = std::env::current_dir().unwrap();
        mount_overlay_with(&t.path().join("overlay"), &layers, &target, method).unwrap();
        assert_eq!(std::env::current_dir().unwrap(), cwd, "cwd changed");

        for i in 0..N {
            assert_eq!(read(&target, &format!("f{i}")), i.to_string());
        }
        assert_eq!(read(&target, "shared"), "0");
        assert_eq!(names(&target).len(), N + 1);
        unmount(&target).unwrap();
    }

    #[test]
    fn many_layers_with_long_paths_lowerdir_append() {
        many_layers(MountMethod::LowerdirAppend);
    }

    #[test]
    fn many_layers_with_long_paths_short_links() {
        many_layers(MountMethod::ShortLinks);
        // The fallback fits overlayfs's maximum stack in one page.
        assert!(short_links_data(MAX_LAYERS, true).len() <= MOUNT_DATA_MAX);
    }

    #[test]
    fn auto_uses_lowerdir_append_on_linux_6_8_and_later() {
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        assert_eq!(
            lowerdir_append_supported(),
            (major, minor) >= (6, 8),
            "{release}"
        );
    }

    #[test]
    fn zero_layers_mount_an_empty_writable_root() {
        let t = tempdir();
        let (target, _guard) = mount_target(&t);
        let dirs = mount_overlay(&t.path().join("overlay"), &[], &target).unwrap();
        assert!(names(&target).is_empty());
        fs::write(target.join("f"), "x").unwrap();
        assert_eq!(read(&dirs.upper, "f"), "x");
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o755);
    }

    #[test]
    fn remount_keeps_the_upper_dir_and_survives_a_recreated_snapshot() {
        let t = tempdir();
        let layer = t.path().join("layer");
        write(&layer, "f", "lower");
        let (target, _guard) = mount_target(&t);
        let overlay = t.path().join("overlay");
        let layers = [layer.clone()];
        mount_overlay(&overlay, &layers, &target).unwrap();
        fs::write(target.join("f"), "changed").unwrap(); // copy-up records the origin
        unmount(&target).unwrap();

        // A snapshot removed and unpacked again (gc + pull) has new inodes; with index=on the
        // mount below would fail with ESTALE.
        fs::remove_dir_all(&layer).unwrap();
        write(&layer, "f", "lower");
        write(&layer, "g", "new");
        for method in [MountMethod::LowerdirAppend, MountMethod::ShortLinks] {
            mount_overlay_with(&overlay, &layers, &target, method).unwrap();
            assert_eq!(read(&target, "f"), "changed");
            assert_eq!(read(&target, "g"), "new");
            unmount(&target).unwrap();
        }
    }

    #[test]
    fn volatile_mounts_work_with_both_methods() {
        let t = tempdir();
        let layer = t.path().join("layer");
        write(&layer, "f", "lower");
        let (target, _guard) = mount_target(&t);
        for (i, method) in [MountMethod::LowerdirAppend, MountMethod::ShortLinks]
            .into_iter()
            .enumerate()
        {
            let overlay = t.path().join(format!("overlay{i}"));
            mount_overlay_opts(
                &overlay,
                std::slice::from_ref(&layer),
                &target,
                method,
                true,
            )
            .unwrap();
            let options = fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .find(|l| l.contains(target.to_str().unwrap()))
                .unwrap()
                .to_string();
            assert!(options.contains("volatile"), "{options}");
            fs::write(target.join("g"), "upper").unwrap();
            assert_eq!(read(&target, "f"), "lower");
            unmount(&target).unwrap();
            assert_eq!(
                fs::read_to_string(overlay.join("upper/g")).unwrap(),
                "upper"
            );
        }
    }

    #[test]
    fn unmount_is_idempotent_and_detaches_a_busy_mount() {
        let t = tempdir();
        let layer = t.path().join("layer");
        write(&layer, "f", "x");
        let (target, _guard) = mount_target(&t);
        mount_overlay(&t.path().join("overlay"), &[layer], &target).unwrap();

        let busy = fs::File::open(target.join("f")).unwrap();
        unmount(&target).unwrap();
        assert!(!is_mountpoint(&target).unwrap());
        drop(busy);
        unmount(&target).unwrap();
        unmount(&t.path().join("does-not-exist")).unwrap();
    }

    #[test]
    fn unmount_removes_stacked_mounts() {
        let t = tempdir();
        let layer = t.path().join("layer");
        write(&layer, "f", "x");
        let (target, _guard) = mount_target(&t);
        mount_overlay(
            &t.path().join("overlay"),
            std::slice::from_ref(&layer),
            &target,
        )
        .unwrap();
        rustix::mount::mount_bind(layer.as_path(), target.as_path()).unwrap();
        unmount(&target).unwrap();
        assert!(!is_mountpoint(&target).unwrap());
    }

    #[test]
    fn is_mountpoint_tells_mounted_from_plain_dirs() {
        let t = tempdir();
        let layer = t.path().join("layer");
        write(&layer, "f", "x");
        let (target, _guard) = mount_target(&t);
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(!is_mountpoint(&target).unwrap());
        assert!(!is_mountpoint(&t.path().join("missing")).unwrap());
        assert!(is_mountpoint(Path::new("/")).unwrap());

        mount_overlay(&t.path().join("overlay"), &[layer], &target).unwrap();
        assert!(is_mountpoint(&target).unwrap());
        assert!(!is_mountpoint(&target.join("f")).unwrap());
        assert!(!is_mountpoint(&link).unwrap(), "symlinks are not followed");
        // The pre-5.8 fallback agrees.
        assert!(is_mountpoint_mountinfo(&target).unwrap());
        assert!(is_mountpoint_mountinfo(Path::new("/")).unwrap());
        assert!(!is_mountpoint_mountinfo(&t.path().join("layer")).unwrap());
        assert!(!is_mountpoint_mountinfo(&link).unwrap());
    }

    #[test]
    fn mount_errors_name_what_failed() {
        let t = tempdir();
        let layer = t.path().join("layer");
        write(&layer, "f", "x");
        let (target, _guard) = mount_target(&t);
        let overlay = t.path().join("overlay");

        let missing = t.path().join("gone");
        let e = mount_overlay(&overlay, &[layer.clone(), missing.clone()], &target).unwrap_err();
        assert!(matches!(&e, RootfsError::LayerMissing { layer } if *layer == missing));
        assert_eq!(e.category(), Category::NotFound);
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");

        let too_many = vec![layer.clone(); MAX_LAYERS + 1];
        let e = mount_overlay(&overlay, &too_many, &target).unwrap_err();
        assert!(
            matches!(e, RootfsError::TooManyLayers { count: 501, .. }),
            "{e}"
        );
        assert_eq!(e.category(), Category::Invalid);

        let e = mount_overlay(
            &overlay,
            std::slice::from_ref(&layer),
            &t.path().join("nope"),
        )
        .unwrap_err();
        assert!(matches!(e, RootfsError::Target { .. }), "{e}");
        assert_eq!(e.category(), Category::NotFound);

        mount_overlay(&overlay, std::slice::from_ref(&layer), &target).unwrap();
        let e = mount_overlay(&overlay, &[layer], &target).unwrap_err();
        assert!(matches!(e, RootfsError::AlreadyMounted { .. }), "{e}");
        assert_eq!(e.category(), Category::Conflict);
    }

    #[test]
    fn kernel_messages_are_part_of_new_api_errors() {
        let t = tempdir();
        let (target, _guard) = mount_target(&t);
        let dirs = OverlayDirs::of(&t.path().join("overlay"));
        // A layer replaced by a file after the up-front checks.
        let gone = t.path().join("file");
        fs::write(&gone, "").unwrap();
        let e =
            mount_lowerdir_append(std::slice::from_ref(&gone), &dirs, &target, false).unwrap_err();
        match &e {
            RootfsError::Mount { log, step, .. } => {
                assert!(step.contains(&*gone.to_string_lossy()), "{e}");
                assert!(!log.is_empty(), "{e}");
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(e.to_string().contains("(kernel: "), "{e}");
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
