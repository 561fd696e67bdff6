//! Applying one uncompressed tar stream onto a directory, entry by entry, with the same rules
//! as containerd's `archive.Apply`: names are cleaned and resolved inside the root, whatever is
//! in the way is replaced (a directory over a directory merges), and whiteouts are applied or
//! converted to overlayfs form.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use super::root::{self, is_dir, is_errno, is_symlink, DirHandle, Root};
use super::tar::{CopyError, Entry, Kind, TarError, TarReader, Time};
use super::{ApplyOptions, ApplyStats, UnpackError, WhiteoutMode};

/// File data is copied through a buffer this large (one allocation per layer).
const COPY_BUF: usize = 1 << 20;
/// Reads of headers are served from a buffer of this size.
const READ_BUF: usize = 256 << 10;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// Splits an archive name into components the way containerd normalizes it (Go's
/// `filepath.Clean`, then `..` at the top stays at the root): no empty, `.` or `..` parts.
pub(super) fn clean(name: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether an entry name climbs above the layer root with `..` and then names something
/// there (`../x`, `a/../../x`). containerd would clamp such a name at the root; Docker's
/// archive code and this project refuse it: no legitimate image builder writes one. A bare
/// `..` names the root itself and is ignored like `.` (as the conformance data expects).
pub(super) fn climbs_out(name: &[u8]) -> bool {
    let mut depth: i64 = 0;
    let mut escaped = false;
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    escaped = true;
                    depth = 0;
                }
            }
            _ => {
                if escaped {
                    return true;
                }
                depth += 1;
            }
        }
    }
    false
}

pub(super) fn apply<R: Read>(
    tar: R,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, UnpackError> {
    // Unknown umask: always set modes explicitly.
    let umask = root::current_umask().unwrap_or(0o777);
    let root = Root::open(dest, umask).map_err(|source| UnpackError::Target {
        layer: opts.layer.to_string(),
        path: dest.to_path_buf(),
        source,
    })?;
    let mut applier = Applier {
        root,
        layer: opts.layer,
        mode: opts.whiteouts,
        umask,
        euid: nix::unistd::geteuid().as_raw(),
        egid: nix::unistd::getegid().as_raw(),
        unpacked: HashSet::new(),
        hasher: RandomState::new(),
        dirs: Vec::new(),
        stats: ApplyStats {
            entries: 0,
            bytes: 0,
        },
    };
    let mut reader = TarReader::new(BufReader::with_capacity(READ_BUF, tar));
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let entry = match reader.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => return Err(applier.tar_err(e)),
        };
        applier.stats.entries += 1;
        applier.apply_entry(&mut reader, &entry, &mut buf)?;
    }
    applier.fix_dir_times()?;
    reader.drain(&mut buf).map_err(|e| applier.tar_err(e))?;
    Ok(applier.stats)
}

struct Applier<'o> {
    root: Root,
    layer: &'o str,
    mode: WhiteoutMode,
    umask: u32,
    euid: u32,
    egid: u32,
    /// Apply mode: (parent directory inode, name) of every entry this layer created, hashed.
    /// Opaque markers and whiteouts only remove what earlier layers put there.
    unpacked: HashSet<u64>,
    hasher: RandomState,
    /// Directories whose times are set at the end (creating entries inside changes them).
    dirs: Vec<(Vec<u8>, Time, Time)>,
    stats: ApplyStats,
}

fn times(e: &Entry) -> (Time, Time) {
    // Like containerd: atime is the later of atime and mtime.
    let atime = e.atime.map_or(e.mtime, |a| a.max(e.mtime));
    (atime, e.mtime)
}

/// Where an entry's xattrs go: an open regular file, or a name in a directory.
enum XattrTarget<'a> {
    Fd(RawFd),
    At(RawFd, &'a CStr),
}

impl Applier<'_> {
    fn entry_name(e: &Entry) -> String {
        String::from_utf8_lossy(&e.name).into_owned()
    }

    fn tar_err(&self, e: TarError) -> UnpackError {
        match e {
            TarError::Read { offset, source } => UnpackError::Read {
                layer: self.layer.to_string(),
                offset,
                source,
            },
            TarError::Malformed { offset, reason } => UnpackError::Malformed {
                layer: self.layer.to_string(),
                offset,
                reason,
            },
        }
    }

    fn io_err(&self, e: &Entry, op: &'static str, source: io::Error) -> UnpackError {
        UnpackError::Entry {
            layer: self.layer.to_string(),
            entry: Self::entry_name(e),
            op,
            source,
        }
    }

    fn refused(&self, e: &Entry, reason: impl Into<String>) -> UnpackError {
        UnpackError::Refused {
            layer: self.layer.to_string(),
            entry: Self::entry_name(e),
            reason: reason.into(),
        }
    }

    fn key(&self, dir_ino: u64, name: &[u8]) -> u64 {
        self.hasher.hash_one((dir_ino, name))
    }

    fn record(&mut self, dir: &DirHandle, name: &CStr) {
        if self.mode == WhiteoutMode::Apply {
            let k = self.key(dir.ino, name.to_bytes());
            self.unpacked.insert(k);
        }
    }

    fn cname(&self, e: &Entry, b: &[u8]) -> Result<CString, UnpackError> {
        root::cstring(b).map_err(|_| self.refused(e, "name contains a NUL byte"))
    }

    fn apply_entry<R: Read>(
        &mut self,
        reader: &mut TarReader<R>,
        e: &Entry,
        buf: &mut [u8],
    ) -> Result<(), UnpackError> {
        // Like containerd (whose path-based calls fail with ENAMETOOLONG); it also bounds how
        // deep one entry can make the tree.
        if e.name.len() >= libc::PATH_MAX as usize || e.link.len() >= libc::PATH_MAX as usize {
            return Err(self.refused(e, "name or link target longer than PATH_MAX"));
        }
        if climbs_out(&e.name) {
            return Err(self.refused(e, "entry name climbs out of the layer root with '..'"));
        }
        let comps = clean(&e.name);
        // A name that resolves to the root itself (".", "./", "..") is ignored, as in
        // containerd: a layer does not change the metadata of the directory it is applied to.
        let Some((base, parent)) = comps.split_last() else {
            return Ok(());
        };
        if let Some(target) = base.strip_prefix(WHITEOUT_PREFIX) {
            if *base == OPAQUE_MARKER {
                return self.opaque(e, parent);
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(self.refused(
                    e,
                    format!(
                        "invalid whiteout name {:?}: it names no entry",
                        String::from_utf8_lossy(base)
                    ),
                ));
            }
            return self.whiteout(e, parent, target);
        }
        let name = self.cname(e, base)?;
        let dir = self
            .root
            .resolve(parent, true)
            .map_err(|err| self.io_err(e, "resolving the parent directory", err))?;
        match e.kind {
            Kind::File => self.file(reader, e, &dir, &name, buf)?,
            Kind::Dir => self.dir(e, &dir, &name)?,
            Kind::Symlink => self.symlink(e, &dir, &name)?,
            Kind::Hardlink => self.hardlink(e, &dir, &name)?,
            Kind::Char | Kind::Block | Kind::Fifo => self.node(e, &dir, &name)?,
        }
        self.record(&dir, &name);
        Ok(())
    }

    /// Removes whatever is at `name` (recursively); returns what was there.
    fn clear(&mut self, dir: &DirHandle, name: &CStr) -> io::Result<Option<libc::stat>> {
        let removed = root::remove_all_at(dir.raw(), name)?;
        if let Some(st) = &removed {
            // Cached parent paths may run through a removed directory or symlink.
            if is_dir(st) || is_symlink(st) {
                self.root.invalidate();
            }
        }
        Ok(removed)
    }

    /// Runs `create`; if the name is taken, removes what is there and runs it again.
    fn create_replacing<T>(
        &mut self,
        dir: &DirHandle,
        name: &CStr,
        mut create: impl FnMut() -> io::Result<T>,
    ) -> io::Result<T> {
        match create() {
            Err(err) if is_errno(&err, libc::EEXIST) => {
                self.clear(dir, name)?;
                create()
            }
            r => r,
        }
    }

    fn needs_chown_new(&self, e: &Entry, dir: &DirHandle) -> bool {
        // New entries belong to us, except for the group in a setgid directory.
        e.uid != self.euid || e.gid != self.egid || dir.sgid
    }

    fn needs_chmod_new(&self, e: &Entry, is_dir: bool, dir: &DirHandle) -> bool {
        // The umask may have cleared bits; chown clears setuid/setgid; new directories
        // inherit setgid from a setgid parent.
        e.mode & self.umask != 0 || e.mode & 0o7000 != 0 || (is_dir && dir.sgid)
    }

    fn set_xattrs(&self, e: &Entry, target: XattrTarget) -> Result<(), UnpackError> {
        for (key, value) in &e.xattrs {
            // Overlay metadata is ours to write (opaque markers), never the archive's.
            if key.starts_with(b"trusted.overlay.") {
                tracing::debug!(layer = self.layer, entry = %Self::entry_name(e), "ignoring trusted.overlay.* xattr from the archive");
                continue;
            }
            let k = self.cname(e, key)?;
            let r = match target {
                XattrTarget::Fd(fd) => root::fset_xattr(fd, &k, value),
                XattrTarget::At(dir, name) => root::lset_xattr_at(dir, name, &k, value),
            };
            match r {
                Ok(()) => {}
                Err(err)
                    if is_errno(&err, libc::ENOTSUP)
                        || (is_errno(&err, libc::EPERM) && key.starts_with(b"user.")) =>
                {
                    // Like containerd: unsupported here (or user.* on a symlink or device).
                    tracing::warn!(layer = self.layer, entry = %Self::entry_name(e), xattr = %String::from_utf8_lossy(key), "ignoring xattr: {err}");
                }
                Err(err) => return Err(self.io_err(e, "setting an xattr", err)),
            }
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        reader: &mut TarReader<R>,
        e: &Entry,
        dir: &DirHandle,
        name: &CStr,
        buf: &mut [u8],
    ) -> Result<(), UnpackError> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = self
            .create_replacing(dir, name, || root::open_at(dir.raw(), name, flags, e.mode))
            .map_err(|err| self.io_err(e, "creating the file", err))?;
        let mut file = File::from(fd);
        match reader.copy_data(&mut file, buf) {
            Ok(n) => self.stats.bytes += n,
            Err(CopyError::Tar(t)) => return Err(self.tar_err(t)),
            Err(CopyError::Write(err)) => return Err(self.io_err(e, "writing the file", err)),
        }
        let fd = file.as_raw_fd();
        if self.needs_chown_new(e, dir) {
            root::fchown(fd, e.uid, e.gid).map_err(|err| self.io_err(e, "chown", err))?;
        }
        self.set_xattrs(e, XattrTarget::Fd(fd))?;
        if self.needs_chmod_new(e, false, dir) {
            root::fchmod(fd, e.mode).map_err(|err| self.io_err(e, "chmod", err))?;
        }
        let (atime, mtime) = times(e);
        root::futimens(fd, atime, mtime).map_err(|err| self.io_err(e, "setting times", err))
    }

    fn dir(&mut self, e: &Entry, dir: &DirHandle, name: &CStr) -> Result<(), UnpackError> {
        let mut existing = None;
        let mut make_opaque = false;
        match root::mkdir_at(dir.raw(), name, e.mode & 0o1777) {
            Ok(()) => {}
            Err(err) if is_errno(&err, libc::EEXIST) => {
                let st = root::lstat_at(dir.raw(), name)
                    .map_err(|err| self.io_err(e, "inspecting the existing entry", err))?;
                if is_dir(&st) {
                    // A directory over a directory merges: only the metadata changes.
                    existing = Some(st);
                } else {
                    let old = self
                        .clear(dir, name)
                        .map_err(|err| self.io_err(e, "replacing the existing entry", err))?;
                    root::mkdir_at(dir.raw(), name, e.mode & 0o1777)
                        .map_err(|err| self.io_err(e, "creating the directory", err))?;
                    // Overlay: a directory recreated where this layer whited out the lower
                    // one must hide the lower directory's contents.
                    make_opaque = self.mode == WhiteoutMode::Overlay
                        && old.is_some_and(|st| {
                            st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
                        });
                }
            }
            Err(err) => return Err(self.io_err(e, "creating the directory", err)),
        }
        let chown = match &existing {
            None => self.needs_chown_new(e, dir),
            Some(st) => st.st_uid != e.uid || st.st_gid != e.gid,
        };
        if chown {
            root::lchown_at(dir.raw(), name, e.uid, e.gid)
                .map_err(|err| self.io_err(e, "chown", err))?;
        }
        self.set_xattrs(e, XattrTarget::At(dir.raw(), name))?;
        let chmod = match &existing {
            None => self.needs_chmod_new(e, true, dir),
            Some(st) => st.st_mode & 0o7777 != e.mode || chown,
        };
        if chmod {
            // Not a symlink: we made it, or lstat said it is a directory.
            root::chmod_at(dir.raw(), name, e.mode).map_err(|err| self.io_err(e, "chmod", err))?;
        }
        if make_opaque {
            root::lset_xattr_at(dir.raw(), name, OPAQUE_XATTR, b"y")
                .map_err(|err| self.io_err(e, "marking the directory opaque", err))?;
        }
        let (atime, mtime) = times(e);
        let mut path = clean(&e.name).join(&b'/');
        path.shrink_to_fit();
        self.dirs.push((path, atime, mtime));
        Ok(())
    }

    fn symlink(&mut self, e: &Entry, dir: &DirHandle, name: &CStr) -> Result<(), UnpackError> {
        // The target is stored as written: it is only ever resolved inside the root.
        let target = self.cname(e, &e.link)?;
        self.create_replacing(dir, name, || root::symlink_at(&target, dir.raw(), name))
            .map_err(|err| self.io_err(e, "creating the symlink", err))?;
        if self.needs_chown_new(e, dir) {
            root::lchown_at(dir.raw(), name, e.uid, e.gid)
                .map_err(|err| self.io_err(e, "chown", err))?;
        }
        self.set_xattrs(e, XattrTarget::At(dir.raw(), name))?;
        let (atime, mtime) = times(e);
        root::lutimes_at(dir.raw(), name, atime, mtime)
            .map_err(|err| self.io_err(e, "setting times", err))
    }

    fn hardlink(&mut self, e: &Entry, dir: &DirHandle, name: &CStr) -> Result<(), UnpackError> {
        let missing = |this: &Self| {
            let link = String::from_utf8_lossy(&e.link);
            match this.mode {
                WhiteoutMode::Overlay => {
                    this.refused(e, format!("hardlink target {link:?} is not in this layer"))
                }
                WhiteoutMode::Apply => {
                    this.refused(e, format!("hardlink target {link:?} does not exist"))
                }
            }
        };
        // Like containerd: the target's directory is resolved inside the root, its last
        // component is linked as is (a symlink is linked, not followed).
        // The text is not cleaned first: as in containerd, `..` applies to the directory
        // reached so far (after following symlinks).
        let tcomps: Vec<&[u8]> = e
            .link
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let Some((tbase, tparent)) = tcomps.split_last().filter(|(b, _)| **b != b"..") else {
            return Err(self.refused(e, "hardlink target is not a file"));
        };
        let tname = self.cname(e, tbase)?;
        let tdir = match self.root.resolve(tparent, false) {
            Ok(d) => d,
            Err(err) if is_errno(&err, libc::ENOENT) || is_errno(&err, libc::ENOTDIR) => {
                return Err(missing(self))
            }
            Err(err) => return Err(self.io_err(e, "resolving the hardlink target", err)),
        };
        match self.create_replacing(dir, name, || {
            root::link_at(tdir.raw(), &tname, dir.raw(), name)
        }) {
            Ok(()) => {}
            Err(err) if is_errno(&err, libc::ENOENT) => return Err(missing(self)),
            Err(err) if is_errno(&err, libc::EPERM) => {
                return Err(self.refused(e, "hardlink target is a directory"))
            }
            Err(err) => return Err(self.io_err(e, "creating the hardlink", err)),
        }
        // containerd applies the link entry's metadata to the (shared) inode.
        let st = root::lstat_at(dir.raw(), name)
            .map_err(|err| self.io_err(e, "inspecting the hardlink", err))?;
        let chown = st.st_uid != e.uid || st.st_gid != e.gid;
        if chown {
            root::lchown_at(dir.raw(), name, e.uid, e.gid)
                .map_err(|err| self.io_err(e, "chown", err))?;
        }
        self.set_xattrs(e, XattrTarget::At(dir.raw(), name))?;
        // Modes of a symlink are meaningless, and chmod would follow it.
        if !is_symlink(&st) && (st.st_mode & 0o7777 != e.mode || (chown && e.mode & 0o6000 != 0)) {
            root::chmod_at(dir.raw(), name, e.mode).map_err(|err| self.io_err(e, "chmod", err))?;
        }
        let (atime, mtime) = times(e);
        root::lutimes_at(dir.raw(), name, atime, mtime)
            .map_err(|err| self.io_err(e, "setting times", err))
    }

    fn node(&mut self, e: &Entry, dir: &DirHandle, name: &CStr) -> Result<(), UnpackError> {
        let (fmt, dev) = match e.kind {
            Kind::Char => (libc::S_IFCHR, libc::makedev(e.dev_major, e.dev_minor)),
            Kind::Block => (libc::S_IFBLK, libc::makedev(e.dev_major, e.dev_minor)),
            _ => (libc::S_IFIFO, 0),
        };
        self.create_replacing(dir, name, || {
            root::mknod_at(dir.raw(), name, fmt | (e.mode & 0o777), dev)
        })
        .map_err(|err| self.io_err(e, "creating the device or fifo", err))?;
        if self.needs_chown_new(e, dir) {
            root::lchown_at(dir.raw(), name, e.uid, e.gid)
                .map_err(|err| self.io_err(e, "chown", err))?;
        }
        self.set_xattrs(e, XattrTarget::At(dir.raw(), name))?;
        if self.needs_chmod_new(e, false, dir) {
            root::chmod_at(dir.raw(), name, e.mode).map_err(|err| self.io_err(e, "chmod", err))?;
        }
        let (atime, mtime) = times(e);
        root::lutimes_at(dir.raw(), name, atime, mtime)
            .map_err(|err| self.io_err(e, "setting times", err))
    }

    /// `.wh.NAME`: NAME from earlier layers is deleted (Apply) or hidden by a 0/0 character
    /// device (Overlay). Like containerd, the whiteout's directory is created if missing.
    fn whiteout(&mut self, e: &Entry, parent: &[&[u8]], target: &[u8]) -> Result<(), UnpackError> {
        let name = self.cname(e, target)?;
        let dir = self
            .root
            .resolve(parent, true)
            .map_err(|err| self.io_err(e, "resolving the whiteout's directory", err))?;
        match self.mode {
            WhiteoutMode::Apply => {
                // Whiteouts only apply to lower layers (image-spec): what this layer itself
                // created stays.
                if self.unpacked.contains(&self.key(dir.ino, target)) {
                    return Ok(());
                }
                self.clear(&dir, &name)
                    .map_err(|err| self.io_err(e, "removing the whited-out entry", err))?;
            }
            WhiteoutMode::Overlay => {
                // The snapshot starts empty, so anything already here came from this layer.
                match root::lstat_at(dir.raw(), &name) {
                    Ok(_) => return Ok(()),
                    Err(err) if is_errno(&err, libc::ENOENT) => {}
                    Err(err) => return Err(self.io_err(e, "inspecting the whiteout target", err)),
                }
                root::mknod_at(dir.raw(), &name, libc::S_IFCHR, 0)
                    .map_err(|err| self.io_err(e, "creating the whiteout device", err))?;
                if self.needs_chown_new(e, &dir) {
                    root::lchown_at(dir.raw(), &name, e.uid, e.gid)
                        .map_err(|err| self.io_err(e, "chown", err))?;
                }
            }
        }
        Ok(())
    }

    /// `.wh..wh..opq`: the directory loses what earlier layers put in it (Apply) or gets the
    /// overlayfs opaque xattr (Overlay).
    fn opaque(&mut self, e: &Entry, parent: &[&[u8]]) -> Result<(), UnpackError> {
        let dir = self
            .root
            .resolve(parent, true)
            .map_err(|err| self.io_err(e, "resolving the opaque directory", err))?;
        match self.mode {
            WhiteoutMode::Apply => {
                let keep = |ino: u64, name: &CStr| {
                    self.unpacked
                        .contains(&self.hasher.hash_one((ino, name.to_bytes())))
                };
                let r = root::prune_dir(&dir, &keep);
                self.root.invalidate();
                r.map_err(|err| self.io_err(e, "emptying the opaque directory", err))
            }
            WhiteoutMode::Overlay => {
                let fd = root::open_at(dir.raw(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .and_then(|fd| root::fset_xattr(fd.as_raw_fd(), OPAQUE_XATTR, b"y"));
                fd.map_err(|err| self.io_err(e, "marking the directory opaque", err))
            }
        }
    }

    /// Sets directory times last: entries created inside a directory change its mtime.
    fn fix_dir_times(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, atime, mtime) in dirs {
            let comps = clean(&path);
            let Some((base, parent)) = comps.split_last() else {
                continue;
            };
            let gone =
                |err: &io::Error| is_errno(err, libc::ENOENT) || is_errno(err, libc::ENOTDIR);
            let dir = match self.root.resolve(parent, false) {
                Ok(d) => d,
                // Removed or replaced later in this layer.
                Err(err) if gone(&err) => continue,
                Err(source) => {
                    return Err(UnpackError::Entry {
                        layer: self.layer.to_string(),
                        entry: String::from_utf8_lossy(&path).into_owned(),
                        op: "setting directory times",
                        source,
                    })
                }
            };
            let name = match root::cstring(base) {
                Ok(n) => n,
                Err(_) => continue,
            };
            match root::lutimes_at(dir.raw(), &name, atime, mtime) {
                Ok(()) => {}
                Err(err) if gone(&err) => {}
                Err(source) => {
                    return Err(UnpackError::Entry {
                        layer: self.layer.to_string(),
                        entry: String::from_utf8_lossy(&path).into_owned(),
                        op: "setting directory times",
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}
