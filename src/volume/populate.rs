//! Docker's copy-up of image content into a new volume, read straight from the layer
//! snapshots.
//!
//! Why not mount: a read-only overlay of the snapshots would merge the layers for us, but it
//! is a mount in the caller's mount namespace (visible to the host, left behind by a crash,
//! needing CAP_SYS_ADMIN), and the mounted tree would still have to be walked without
//! following its symlinks onto the host. So the layers are merged here, the way overlayfs
//! does and the way `runtime::spec::rootfs` reads /etc/passwd: the top layer wins, a 0/0
//! character device (whiteout) hides what lower layers have at that name, a directory with
//! `trusted.overlay.opaque=y` hides the lower layers' content of that directory, a
//! non-directory hides lower directories.
//!
//! Every read is relative to directory descriptors of the snapshots with `O_NOFOLLOW`;
//! symlinks on the way to the mount path are read and resolved here as if the image were `/`
//! (`..` stops at its root, absolute targets restart there). Symlinks inside the copied tree
//! are copied as symlinks, never followed. Writes go into a private staging directory
//! (0700, inside the volume's directory, outside `_data`) with `*at()` calls that create
//! exclusively (`O_EXCL`, `mkdirat`), so nothing outside it can be touched; the finished
//! entries are then renamed into `_data`.
//!
//! Memory is bounded: the merge keeps no name sets (an entry of layer N is skipped when a
//! layer above has that name, which is a `stat` per layer above), file data is copied by the
//! kernel (`copy_file_range`), and xattr buffers are fixed. Descriptors grow with depth
//! (one per contributing layer per level, plus two): trees deeper than [`MAX_DEPTH`] are
//! refused.
//!
//! What is copied: directories, regular files (data, owner, mode incl. setuid bits, atime and
//! mtime, xattrs except `trusted.overlay.*`), symlinks (target, owner, times), fifos and
//! device nodes (skipped with a warning where mknod is not permitted). Hardlinks within the
//! copied tree stay hardlinks (up to [`HARDLINKS_MAX`] distinct files; beyond, copies).
//! Sockets are skipped. Xattrs of symlinks and special files are not copied.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, RenameFlags, Stat, Timespec, Timestamps, Uid,
    XattrFlags, CWD,
};
use rustix::io::Errno;

/// Longest mount path accepted (the kernel's PATH_MAX).
pub(super) const PATH_MAX: usize = 4096;
/// Deepest directory nesting copied (and symlink-resolved directories on the mount path).
pub(super) const MAX_DEPTH: usize = 512;
/// Distinct hardlinked files remembered to link instead of copy.
pub(super) const HARDLINKS_MAX: usize = 1 << 16;
/// Symlinks followed while resolving the mount path (the kernel's limit).
const MAX_SYMLINKS: usize = 40;
/// Components pending while resolving; bounds what a symlink farm can expand to.
const MAX_COMPONENTS: usize = 4096;
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
/// overlayfs's own xattrs (opaque markers, redirects) are layer plumbing, not content.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
/// The kernel's limits for an xattr name list and one value.
const XATTR_LIST_MAX: usize = 65536;
const XATTR_SIZE_MAX: usize = 65536;
/// Longest image path quoted in an error.
const MESSAGE_PATH_MAX: usize = 256;
/// Names renamed into `_data` per directory scan.
const MOVE_BATCH: usize = 1024;

/// One directory of the merged image: its descriptors in each layer that contributes to it,
/// top first (only one unless layers below add to it).
pub(super) struct Merged {
    fds: Vec<OwnedFd>,
}

/// What the mount path is in the image.
pub(super) enum ImagePath {
    Missing,
    NotDir,
    Dir(Merged),
}

/// A copy failure: the entry inside the image, and why.
#[derive(Debug)]
pub(super) struct CopyError {
    pub image_path: String,
    pub source: io::Error,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn is_opaque(fd: &OwnedFd) -> bool {
    let mut buf = [0u8; 8];
    matches!(rustix::fs::fgetxattr(fd, OPAQUE_XATTR, &mut buf[..]), Ok(n) if &buf[..n] == b"y")
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as _)
}

fn is_whiteout(st: &Stat) -> bool {
    file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Opens the layers' root directories (top first), stopping below an opaque root. The error
/// names the layer.
pub(super) fn open_image(layers_top_first: &[PathBuf]) -> Result<Merged, (PathBuf, io::Error)> {
    let mut fds = Vec::with_capacity(layers_top_first.len());
    for layer in layers_top_first {
        let fd = rustix::fs::openat(
            CWD,
            layer,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| (layer.clone(), e.into()))?;
        let opaque = is_opaque(&fd);
        fds.push(fd);
        if opaque {
            break;
        }
    }
    Ok(Merged { fds })
}

/// An entry of a merged directory as overlayfs shows it.
enum Entry {
    /// Absent, or hidden by a whiteout.
    Missing,
    Dir(Merged),
    /// Anything but a directory, found in layer `layer`.
    Other {
        layer: usize,
        stat: Stat,
    },
}

/// The entry `name` of `dir`, looking at layers from `start` down (layers above `start` are
/// known not to have it).
fn lookup(dir: &Merged, start: usize, name: &CStr) -> io::Result<Entry> {
    let mut dirs = Vec::new();
    for (layer, fd) in dir.fds.iter().enumerate().skip(start) {
        let st = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if is_whiteout(&st) {
            break;
        }
        if file_type(&st) == FileType::Directory {
            let sub = open_dir_at(fd.as_fd(), name)?;
            let opaque = is_opaque(&sub);
            dirs.push(sub);
            if opaque {
                break;
            }
            continue;
        }
        if !dirs.is_empty() {
            // A non-directory below a directory ends the merge.
            break;
        }
        return Ok(Entry::Other { layer, stat: st });
    }
    if dirs.is_empty() {
        Ok(Entry::Missing)
    } else {
        Ok(Entry::Dir(Merged { fds: dirs }))
    }
}

/// Whether a layer above `layer` has an entry `name`: then that layer decides what it is
/// (or hides it), and the entry was or will be handled when that layer is read.
fn shadowed(dir: &Merged, layer: usize, name: &CStr) -> io::Result<bool> {
    for fd in &dir.fds[..layer] {
        match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => return Ok(true),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

/// Resolves `path` (absolute inside the image) in the merged image rooted at `root`,
/// following the image's symlinks inside the image.
pub(super) fn resolve(root: Merged, path: &str) -> io::Result<ImagePath> {
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
            return Ok(ImagePath::Missing);
        };
        // Components come from a NUL-free path or symlink target: never fails.
        let name = CString::new(comp).map_err(|e| invalid(e.to_string()))?;
        match lookup(dir, 0, &name)? {
            Entry::Missing => return Ok(ImagePath::Missing),
            Entry::Dir(sub) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
                }
                stack.push(sub);
            }
            Entry::Other { layer, stat } if file_type(&stat) == FileType::Symlink => {
                symlinks += 1;
                if symlinks > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = rustix::fs::readlinkat(&dir.fds[layer], &name, Vec::new())?;
                let target = target.as_bytes();
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                let mut spliced: VecDeque<Vec<u8>> = components(target).collect();
                spliced.extend(queue.drain(..));
                if spliced.len() > MAX_COMPONENTS {
                    return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
                }
                queue = spliced;
            }
            Entry::Other { .. } => {
                return Ok(if queue.is_empty() {
                    ImagePath::NotDir
                } else {
                    ImagePath::Missing
                })
            }
        }
    }
    match stack.pop() {
        // The root of an image without layers has nothing, not even metadata.
        Some(dir) if !dir.fds.is_empty() => Ok(ImagePath::Dir(dir)),
        _ => Ok(ImagePath::Missing),
    }
}

/// Whether a directory has no entries.
pub(super) fn is_empty(dir: &OwnedFd) -> io::Result<bool> {
    let mut stream = Dir::read_from(dir)?;
    while let Some(entry) = stream.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Renames every entry of `from` into `to`, never replacing anything there.
pub(super) fn move_entries(from: &OwnedFd, to: &OwnedFd) -> io::Result<()> {
    loop {
        // A directory is not read while entries leave it: names in batches, then renames.
        let mut batch = Vec::new();
        let mut stream = Dir::read_from(from)?;
        while let Some(entry) = stream.read() {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            batch.push(name.to_owned());
            if batch.len() >= MOVE_BATCH {
                break;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        for name in &batch {
            rustix::fs::renameat_with(from, name, to, name, RenameFlags::NOREPLACE)?;
        }
    }
}

/// Gives `dest` the owner, mode, xattrs and times of the merged directory (its top layer's,
/// which is what overlayfs shows).
pub(super) fn copy_dir_metadata(source: &Merged, dest: &OwnedFd) -> io::Result<()> {
    let Some(top) = source.fds.first() else {
        return Ok(());
    };
    let st = rustix::fs::fstat(top)?;
    let mut buffers = XattrBuffers::new();
    set_fd_metadata(top, dest, &st, &mut buffers)
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

fn owner(st: &Stat) -> (Option<Uid>, Option<Gid>) {
    (
        Some(Uid::from_raw_unchecked(st.st_uid)),
        Some(Gid::from_raw_unchecked(st.st_gid)),
    )
}

fn permissions(st: &Stat) -> Mode {
    Mode::from_raw_mode((st.st_mode & 0o7777) as _)
}

struct XattrBuffers {
    names: Vec<u8>,
    value: Vec<u8>,
}

impl XattrBuffers {
    fn new() -> XattrBuffers {
        XattrBuffers {
            names: vec![0; XATTR_LIST_MAX],
            value: vec![0; XATTR_SIZE_MAX],
        }
    }
}

/// Copies xattrs (except overlayfs's) from one open file to another; a destination
/// filesystem without xattr support is not an error (as with Docker).
fn copy_xattrs(src: &OwnedFd, dst: &OwnedFd, buf: &mut XattrBuffers) -> io::Result<()> {
    let n = match rustix::fs::flistxattr(src, &mut buf.names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let XattrBuffers { names, value } = buf;
    for key in names[..n].split(|b| *b == 0) {
        if key.is_empty() || key.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        let key = CString::new(key).map_err(|e| invalid(e.to_string()))?;
        let len = match rustix::fs::fgetxattr(src, &key, &mut value[..]) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        match rustix::fs::fsetxattr(dst, &key, &value[..len], XattrFlags::empty()) {
            Ok(()) | Err(Errno::NOTSUP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Owner first (chown clears setuid bits and file capabilities), then mode, xattrs, times.
fn set_fd_metadata(
    src: &OwnedFd,
    dst: &OwnedFd,
    st: &Stat,
    buf: &mut XattrBuffers,
) -> io::Result<()> {
    let (uid, gid) = owner(st);
    rustix::fs::fchown(dst, uid, gid)?;
    rustix::fs::fchmod(dst, permissions(st))?;
    copy_xattrs(src, dst, buf)?;
    rustix::fs::futimens(dst, &times(st))?;
    Ok(())
}

/// A directory being copied.
struct Frame {
    source: Merged,
    /// The layer whose entries are being read.
    layer: usize,
    stream: Option<Dir>,
    dest: OwnedFd,
    /// Length of the path buffers before this directory's name was appended.
    path_len: usize,
    rel_len: usize,
}

impl Frame {
    /// The next entry name and the layer it was read from.
    fn next(&mut self) -> io::Result<Option<(CString, usize)>> {
        loop {
            let stream = match &mut self.stream {
                Some(s) => s,
                None => {
                    let Some(fd) = self.source.fds.get(self.layer) else {
                        return Ok(None);
                    };
                    self.stream.insert(Dir::read_from(fd)?)
                }
            };
            match stream.read() {
                Some(Ok(entry)) => {
                    let name = entry.file_name();
                    if name.to_bytes() == b"." || name.to_bytes() == b".." {
                        continue;
                    }
                    return Ok(Some((name.to_owned(), self.layer)));
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    self.stream = None;
                    self.layer += 1;
                }
            }
        }
    }
}

/// State shared by one copy.
struct Copier {
    dest_root: OwnedFd,
    buffers: XattrBuffers,
    /// (dev, ino) of hardlinked source files already copied -> their path below `dest_root`.
    links: HashMap<(u64, u64), CString>,
}

/// Copies the content of the merged directory `source` (not the directory's own metadata:
/// see [`copy_dir_metadata`]) into the empty directory `dest`. `image_path` names the source
/// in errors.
pub(super) fn copy_contents(
    source: &Merged,
    dest: &OwnedFd,
    image_path: &str,
) -> Result<(), CopyError> {
    // Paths in messages are cut: a deep tree makes kilobytes of them.
    let fail = |path: &[u8], source: io::Error| CopyError {
        image_path: match path.get(..MESSAGE_PATH_MAX) {
            Some(head) if path.len() > MESSAGE_PATH_MAX => {
                format!("{}...", String::from_utf8_lossy(head))
            }
            _ => String::from_utf8_lossy(path).into_owned(),
        },
        source,
    };
    let root_path = image_path.trim_end_matches('/').as_bytes().to_vec();
    let dup = |fd: &OwnedFd| fd.try_clone();
    let root_fds = source
        .fds
        .iter()
        .map(dup)
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| fail(&root_path, e))?;
    let mut copier = Copier {
        dest_root: dup(dest).map_err(|e| fail(&root_path, e))?,
        buffers: XattrBuffers::new(),
        links: HashMap::new(),
    };
    // The path inside the image (for errors) and below the destination (for hardlinks).
    let mut path = root_path;
    let mut rel: Vec<u8> = Vec::new();
    let mut stack = vec![Frame {
        source: Merged { fds: root_fds },
        layer: 0,
        stream: None,
        dest: dup(dest).map_err(|e| fail(&path, e))?,
        path_len: path.len(),
        rel_len: 0,
    }];
    loop {
        let depth = stack.len();
        let Some(frame) = stack.last_mut() else { break };
        let next = frame.next().map_err(|e| fail(&path, e))?;
        let Some((name, layer)) = next else {
            let Some(done) = stack.pop() else { break };
            if !stack.is_empty() {
                // A subdirectory: its metadata now that nothing more is created in it.
                let top = &done.source.fds[0];
                let result = rustix::fs::fstat(top)
                    .map_err(io::Error::from)
                    .and_then(|st| set_fd_metadata(top, &done.dest, &st, &mut copier.buffers));
                result.map_err(|e| fail(&path, e))?;
            }
            path.truncate(done.path_len);
            rel.truncate(done.rel_len);
            continue;
        };
        let entry_path = |path: &[u8]| {
            let mut p = path.to_vec();
            p.push(b'/');
            p.extend_from_slice(name.to_bytes());
            p
        };
        let entry = shadowed(&frame.source, layer, &name).and_then(|hidden| {
            if hidden {
                Ok(Entry::Missing)
            } else {
                lookup(&frame.source, layer, &name)
            }
        });
        match entry.map_err(|e| fail(&entry_path(&path), e))? {
            Entry::Missing => {}
            Entry::Dir(sub) => {
                if depth >= MAX_DEPTH {
                    return Err(fail(
                        &entry_path(&path),
                        invalid(format!("directories nested deeper than {MAX_DEPTH} levels")),
                    ));
                }
                let made = rustix::fs::mkdirat(&frame.dest, &name, Mode::from_raw_mode(0o700))
                    .map_err(io::Error::from)
                    .and_then(|()| open_dir_at(frame.dest.as_fd(), &name));
                let dest = made.map_err(|e| fail(&entry_path(&path), e))?;
                let (path_len, rel_len) = (path.len(), rel.len());
                path = entry_path(&path);
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(name.to_bytes());
                stack.push(Frame {
                    source: sub,
                    layer: 0,
                    stream: None,
                    dest,
                    path_len,
                    rel_len,
                });
            }
            Entry::Other { layer, stat } => {
                let mut rel_entry = rel.clone();
                if !rel_entry.is_empty() {
                    rel_entry.push(b'/');
                }
                rel_entry.extend_from_slice(name.to_bytes());
                copier
                    .copy_other(
                        &frame.source.fds[layer],
                        &name,
                        &stat,
                        &frame.dest,
                        rel_entry,
                    )
                    .map_err(|e| fail(&entry_path(&path), e))?;
            }
        }
    }
    Ok(())
}

impl Copier {
    /// Copies one non-directory `name` of the layer directory `src_dir` into `dest`.
    fn copy_other(
        &mut self,
        src_dir: &OwnedFd,
        name: &CStr,
        st: &Stat,
        dest: &OwnedFd,
        rel: Vec<u8>,
    ) -> io::Result<()> {
        let (uid, gid) = owner(st);
        match file_type(st) {
            FileType::RegularFile => self.copy_file(src_dir, name, st, dest, rel),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src_dir, name, Vec::new())?;
                rustix::fs::symlinkat(&target, dest, name)?;
                rustix::fs::chownat(dest, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
                rustix::fs::utimensat(dest, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)?;
                Ok(())
            }
            ft @ (FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice) => {
                let rdev = if ft == FileType::Fifo { 0 } else { st.st_rdev };
                match rustix::fs::mknodat(dest, name, ft, Mode::from_raw_mode(0o600), rdev as _) {
                    Ok(()) => {}
                    Err(Errno::PERM) => {
                        tracing::warn!(name = %name.to_string_lossy(), "skipping a device node: mknod not permitted");
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
                rustix::fs::chownat(dest, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
                // Just made by us in the private staging directory: not a symlink.
                rustix::fs::chmodat(dest, name, permissions(st), AtFlags::empty())?;
                rustix::fs::utimensat(dest, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)?;
                Ok(())
            }
            _ => {
                tracing::debug!(name = %name.to_string_lossy(), "skipping a socket");
                Ok(())
            }
        }
    }

    fn copy_file(
        &mut self,
        src_dir: &OwnedFd,
        name: &CStr,
        st: &Stat,
        dest: &OwnedFd,
        rel: Vec<u8>,
    ) -> io::Result<()> {
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                match rustix::fs::linkat(&self.dest_root, first, dest, name, AtFlags::empty()) {
                    Ok(()) => return Ok(()),
                    // Too many links and the like: a copy will do.
                    Err(e) => tracing::debug!(error = %e, "hardlink in a volume copied instead"),
                }
            }
        }
        let src = rustix::fs::openat(
            src_dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // Checked again on the open file: the entry may have been swapped since the lookup.
        let st = rustix::fs::fstat(&src)?;
        if file_type(&st) != FileType::RegularFile {
            return Err(invalid("changed while being copied".into()));
        }
        let dst = rustix::fs::openat(
            dest,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut reader = File::from(src);
        let mut writer = File::from(dst);
        io::copy(&mut reader, &mut writer)?;
        let (src, dst) = (OwnedFd::from(reader), OwnedFd::from(writer));
        set_fd_metadata(&src, &dst, &st, &mut self.buffers)?;
        if st.st_nlink > 1 && self.links.len() < HARDLINKS_MAX {
            if let Ok(rel) = CString::new(rel) {
                self.links.insert(key, rel);
            }
        }
        Ok(())
    }
}
