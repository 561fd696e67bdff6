//! Filesystem operations confined to one directory tree. Paths without symlinks are resolved
//! by the kernel (`openat2` with `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`); any other path is
//! walked one component at a time relative to directory fds with `O_NOFOLLOW`, resolving
//! symlinks, absolute or relative, as if the root were `/` (`..` stops at the root). Final
//! components are always handled with `*at()` calls that never follow symlinks.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::rc::Rc;

use super::tar::Time;

/// Like the kernel's limit on symlinks followed during one lookup.
const MAX_SYMLINKS: u32 = 40;
/// Cached parent directories (each holds an fd).
const CACHE_MAX: usize = 128;

pub(super) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

pub(super) fn is_errno(e: &io::Error, code: i32) -> bool {
    e.raw_os_error() == Some(code)
}

pub(super) fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(super) fn open_at(dir: RawFd, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; openat has no other pointers.
    let fd = cvt(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just returned by openat, so nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(dir, path, O_PATH|O_DIRECTORY)` refusing symlinks and anything outside `dir`
/// (`RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS`): the one-syscall fast path
/// for the common case, a path made only of real directories.
fn openat2_beneath(dir: RawFd, path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: open_how is a plain C struct for which all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: both pointers are valid for the call and the size matches the struct passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative result is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

pub(super) fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; fstat fills it in and we only read it on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(super) fn lstat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid name and writable buffer.
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub(super) fn mkdir_at(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name.
    cvt(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) }).map(drop)
}

pub(super) fn mknod_at(dir: RawFd, name: &CStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name.
    cvt(unsafe { libc::mknodat(dir, name.as_ptr(), mode, dev) }).map(drop)
}

pub(super) fn symlink_at(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are valid and NUL-terminated.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }).map(drop)
}

/// `linkat` without `AT_SYMLINK_FOLLOW`: a link to a symlink links the symlink itself.
pub(super) fn link_at(odir: RawFd, oname: &CStr, ndir: RawFd, nname: &CStr) -> io::Result<()> {
    // SAFETY: both strings are valid and NUL-terminated.
    cvt(unsafe { libc::linkat(odir, oname.as_ptr(), ndir, nname.as_ptr(), 0) }).map(drop)
}

pub(super) fn unlink_at(dir: RawFd, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name.
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
}

fn readlink_at(dir: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let n = unsafe {
        libc::readlinkat(
            dir,
            name.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n >= buf.len() {
        return Err(errno(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
pub(super) fn lchown_at(dir: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name.
    cvt(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

pub(super) fn fchown(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on an fd we own.
    cvt(unsafe { libc::fchown(fd, uid, gid) }).map(drop)
}

/// `fchmodat` follows a final symlink: callers use it only on names they know are not one.
pub(super) fn chmod_at(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name.
    cvt(unsafe { libc::fchmodat(dir, name.as_ptr(), mode, 0) }).map(drop)
}

pub(super) fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on an fd we own.
    cvt(unsafe { libc::fchmod(fd, mode) }).map(drop)
}

fn timespecs(atime: Time, mtime: Time) -> [libc::timespec; 2] {
    let ts = |t: Time| libc::timespec {
        tv_sec: t.sec as libc::time_t,
        tv_nsec: t.nsec as _,
    };
    [ts(atime), ts(mtime)]
}

/// `utimensat(dir, name, times, AT_SYMLINK_NOFOLLOW)`.
pub(super) fn lutimes_at(dir: RawFd, name: &CStr, atime: Time, mtime: Time) -> io::Result<()> {
    let ts = timespecs(atime, mtime);
    // SAFETY: `ts` points at two timespecs as utimensat requires.
    cvt(unsafe { libc::utimensat(dir, name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

pub(super) fn futimens(fd: RawFd, atime: Time, mtime: Time) -> io::Result<()> {
    let ts = timespecs(atime, mtime);
    // SAFETY: `ts` points at two timespecs as futimens requires.
    cvt(unsafe { libc::futimens(fd, ts.as_ptr()) }).map(drop)
}

pub(super) fn fset_xattr(fd: RawFd, key: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `key` is NUL-terminated, `value` is readable for its length.
    cvt(unsafe {
        libc::fsetxattr(
            fd,
            key.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// Sets an xattr on `name` inside `dir` without following a final symlink. There is no
/// `lsetxattrat`, so the directory is named through its `/proc/self/fd` link.
pub(super) fn lset_xattr_at(dir: RawFd, name: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{dir}/").into_bytes();
    path.extend_from_slice(name.to_bytes());
    let path = cstring(&path)?;
    // SAFETY: both strings are NUL-terminated, `value` is readable for its length.
    cvt(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    })
    .map(drop)
}

pub(super) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(super) fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// The process umask without changing it (`umask(2)` cannot be read without a race).
pub(super) fn current_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

/// A resolved directory inside the root.
pub(super) struct DirHandle {
    /// `O_PATH` fd: good as the `dirfd` of `*at()` calls.
    pub fd: OwnedFd,
    pub ino: u64,
    /// New entries in a setgid directory inherit its group (and subdirectories the bit).
    pub sgid: bool,
}

impl DirHandle {
    fn from_fd(fd: OwnedFd) -> io::Result<DirHandle> {
        let st = fstat(fd.as_raw_fd())?;
        if !is_dir(&st) {
            return Err(errno(libc::ENOTDIR));
        }
        Ok(DirHandle {
            fd,
            ino: st.st_ino,
            sgid: st.st_mode & libc::S_ISGID != 0,
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The directory a layer is applied onto.
pub(super) struct Root {
    root: Rc<DirHandle>,
    /// Resolved parent directories by their (cleaned) path in the archive. Any removal of a
    /// directory or symlink clears it, since a cached path may run through what was removed.
    cache: HashMap<Vec<u8>, Rc<DirHandle>>,
    use_openat2: bool,
    umask: u32,
}

impl Root {
    pub fn open(path: &Path, umask: u32) -> io::Result<Root> {
        let c = cstring(path.as_os_str().as_bytes())?;
        let fd = open_at(libc::AT_FDCWD, &c, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok(Root {
            root: Rc::new(DirHandle::from_fd(fd)?),
            cache: HashMap::new(),
            use_openat2: true,
            umask,
        })
    }

    pub fn invalidate(&mut self) {
        self.cache.clear();
    }

    /// Resolves the directory `comps` inside the root, following symlinks as if the root were
    /// `/`. With `create`, missing
    /// directories are made (mode 0755, like `mkdir -p`), also where a dangling symlink points.
    pub fn resolve(&mut self, comps: &[&[u8]], create: bool) -> io::Result<Rc<DirHandle>> {
        if comps.is_empty() {
            return Ok(self.root.clone());
        }
        let key = comps.join(&b'/');
        if let Some(h) = self.cache.get(&key) {
            return Ok(h.clone());
        }
        let mut fd = None;
        if self.use_openat2 {
            let path = cstring(&key)?;
            match openat2_beneath(self.root.raw(), &path) {
                Ok(f) => fd = Some(f),
                // Not available (old kernel, seccomp): always walk in user space from now on.
                Err(e) if is_errno(&e, libc::ENOSYS) || is_errno(&e, libc::EPERM) => {
                    self.use_openat2 = false
                }
                // A symlink on the way (ELOOP), missing directories, `..` above the root
                // (EXDEV), EAGAIN, too long...: the walk below decides.
                Err(_) => {}
            }
        }
        let fd = match fd {
            Some(f) => f,
            None => self.walk(comps, create)?,
        };
        let handle = Rc::new(DirHandle::from_fd(fd)?);
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, handle.clone());
        Ok(handle)
    }

    /// Resolution in user space, with containerd's rules (continuity's `fs.RootPath`): a
    /// symlink's target is joined to the directory holding the symlink (or to the root if
    /// absolute) and cleaned *as text*, `..` stopping at the root, then resolution starts over
    /// from the root with that path plus what was left. Every step opens one component
    /// relative to a directory fd with `O_NOFOLLOW`, so nothing outside the root is reached.
    fn walk(&self, comps: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
        let mut pending: VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
        // The directories walked so far (real directories, no symlinks); `cur` is the last.
        let mut stack: Vec<Vec<u8>> = Vec::new();
        let mut cur: Option<OwnedFd> = None;
        let mut links = 0u32;
        let mut retries = 0u32;
        // Without `create`, components past a missing one are only text: a later `..` can
        // still cancel them (like Go's lexical joins); left over at the end, the path is missing.
        let mut missing = 0usize;
        let dir_flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        while let Some(c) = pending.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if missing > 0 {
                if c == b".." {
                    missing -= 1;
                } else {
                    missing += 1;
                }
                continue;
            }
            let dir = cur.as_ref().map_or(self.root.raw(), |f| f.as_raw_fd());
            if c == b".." {
                // Never above the root. Below it, the parent of a directory reached inside
                // the root is the previous directory on the stack.
                if stack.pop().is_some() {
                    cur = if stack.is_empty() {
                        None
                    } else {
                        Some(open_at(dir, c"..", dir_flags, 0)?)
                    };
                }
                continue;
            }
            let name = cstring(&c)?;
            match open_at(dir, &name, dir_flags, 0) {
                Ok(f) => {
                    cur = Some(f);
                    stack.push(c);
                }
                Err(e) if is_errno(&e, libc::ENOTDIR) || is_errno(&e, libc::ELOOP) => {
                    let target = match readlink_at(dir, &name) {
                        Ok(t) => t,
                        Err(le) if is_errno(&le, libc::EINVAL) => return Err(errno(libc::ENOTDIR)),
                        Err(le) => return Err(le),
                    };
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(errno(libc::ELOOP));
                    }
                    let mut joined: Vec<Vec<u8>> = if target.starts_with(b"/") {
                        Vec::new()
                    } else {
                        std::mem::take(&mut stack)
                    };
                    for part in target.split(|&b| b == b'/') {
                        match part {
                            b"" | b"." => {}
                            b".." => {
                                joined.pop();
                            }
                            p => joined.push(p.to_vec()),
                        }
                    }
                    for part in joined.into_iter().rev() {
                        pending.push_front(part);
                    }
                    stack.clear();
                    cur = None;
                }
                Err(e) if is_errno(&e, libc::ENOENT) && create => {
                    retries += 1;
                    if retries > 64 {
                        return Err(e);
                    }
                    match mkdir_at(dir, &name, 0o755) {
                        Ok(()) if self.umask & 0o755 != 0 => chmod_at(dir, &name, 0o755)?,
                        Ok(()) => {}
                        Err(me) if is_errno(&me, libc::EEXIST) => {}
                        Err(me) => return Err(me),
                    }
                    // Open it on the next turn, through the same checks as anything else.
                    pending.push_front(c);
                }
                Err(e) if is_errno(&e, libc::ENOENT) => missing = 1,
                Err(e) => return Err(e),
            }
        }
        if missing > 0 {
            return Err(errno(libc::ENOENT));
        }
        match cur {
            Some(f) => Ok(f),
            None => open_at(self.root.raw(), c".", dir_flags, 0),
        }
    }
}

/// A `readdir` stream over a directory opened without following symlinks.
struct DirStream {
    dir: NonNull<libc::DIR>,
}

impl DirStream {
    fn open_at(parent: RawFd, name: &CStr) -> io::Result<DirStream> {
        let fd = open_at(
            parent,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?
        .into_raw_fd();
        // SAFETY: `fd` is an open directory fd; on success fdopendir owns it.
        let dir = unsafe { libc::fdopendir(fd) };
        match NonNull::new(dir) {
            Some(dir) => Ok(DirStream { dir }),
            None => {
                let e = io::Error::last_os_error();
                // SAFETY: fdopendir failed, so `fd` is still ours to close.
                unsafe { libc::close(fd) };
                Err(e)
            }
        }
    }

    fn fd(&self) -> RawFd {
        // SAFETY: `self.dir` is a valid open DIR*.
        unsafe { libc::dirfd(self.dir.as_ptr()) }
    }

    /// The next entry other than `.` and `..`: name and `d_type`.
    fn next_entry(&mut self) -> io::Result<Option<(CString, u8)>> {
        loop {
            // SAFETY: errno is thread-local; clearing it tells end-of-stream from an error.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `self.dir` is a valid open DIR*.
            let ent = unsafe { libc::readdir64(self.dir.as_ptr()) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(0) | None => Ok(None),
                    Some(_) => Err(e),
                };
            }
            // SAFETY: readdir returned a valid entry that lives until the next readdir call;
            // d_name is NUL-terminated and copied out before then.
            let (name, dtype) = unsafe {
                let ent = &*ent;
                (CStr::from_ptr(ent.d_name.as_ptr()).to_owned(), ent.d_type)
            };
            if name.as_bytes() == b"." || name.as_bytes() == b".." {
                continue;
            }
            return Ok(Some((name, dtype)));
        }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: `self.dir` is a valid DIR* that is closed exactly once, here.
        unsafe { libc::closedir(self.dir.as_ptr()) };
    }
}

/// Decides, for an entry `name` of the directory with inode `dir_ino`, whether it stays.
pub(super) type Keep<'a> = &'a dyn Fn(u64, &CStr) -> bool;

/// Removes everything below the open directory `top` for which `keep` says no, depth first
/// without recursion (deep trees cannot overflow the stack). A directory that is not kept
/// but still holds kept entries stays. Symlinks are removed, never followed.
fn prune(top: DirStream, top_ino: u64, keep: Option<Keep>) -> io::Result<()> {
    struct Frame {
        stream: DirStream,
        ino: u64,
        name: CString,
        kept: bool,
    }
    let mut stack = vec![Frame {
        stream: top,
        ino: top_ino,
        name: CString::default(),
        kept: true,
    }];
    while let Some(frame) = stack.last_mut() {
        match frame.stream.next_entry()? {
            Some((name, dtype)) => {
                let kept = keep.is_some_and(|k| k(frame.ino, &name));
                let dir_fd = frame.stream.fd();
                let child_is_dir = match dtype {
                    libc::DT_DIR => true,
                    libc::DT_UNKNOWN => match lstat_at(dir_fd, &name) {
                        Ok(st) => is_dir(&st),
                        Err(e) if is_errno(&e, libc::ENOENT) => continue,
                        Err(e) => return Err(e),
                    },
                    _ => false,
                };
                if child_is_dir {
                    let stream = DirStream::open_at(dir_fd, &name)?;
                    let ino = match keep {
                        Some(_) => fstat(stream.fd())?.st_ino,
                        None => 0,
                    };
                    stack.push(Frame {
                        stream,
                        ino,
                        name,
                        kept,
                    });
                } else if !kept {
                    match unlink_at(dir_fd, &name, 0) {
                        Ok(()) => {}
                        Err(e) if is_errno(&e, libc::ENOENT) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            None => {
                let Some(done) = stack.pop() else { break };
                let Some(parent) = stack.last() else { break };
                if done.kept {
                    continue;
                }
                let parent_fd = parent.stream.fd();
                drop(done.stream);
                match unlink_at(parent_fd, &done.name, libc::AT_REMOVEDIR) {
                    Ok(()) => {}
                    Err(e) if is_errno(&e, libc::ENOENT) => {}
                    // Still holds entries that are kept.
                    Err(e)
                        if keep.is_some()
                            && (is_errno(&e, libc::ENOTEMPTY) || is_errno(&e, libc::EEXIST)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Removes `name` in `dir` and, for a directory, everything below it (`rm -rf`, never
/// following symlinks). Returns what was there, or None if nothing was.
pub(super) fn remove_all_at(dir: RawFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    let st = match lstat_at(dir, name) {
        Ok(st) => st,
        Err(e) if is_errno(&e, libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    if is_dir(&st) {
        prune(DirStream::open_at(dir, name)?, st.st_ino, None)?;
        unlink_at(dir, name, libc::AT_REMOVEDIR)?;
    } else {
        unlink_at(dir, name, 0)?;
    }
    Ok(Some(st))
}

/// Empties the directory `dir` of every entry (recursively) that `keep` does not keep.
pub(super) fn prune_dir(dir: &DirHandle, keep: Keep) -> io::Result<()> {
    prune(DirStream::open_at(dir.raw(), c".")?, dir.ino, Some(keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ino_of(h: &DirHandle) -> u64 {
        h.ino
    }

    /// The kernel fast path and the user-space walk agree wherever both apply, and the walk
    /// alone (as on kernels without openat2) resolves symlinks inside the root.
    #[test]
    fn walk_matches_openat2_and_stays_inside() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        for d in ["root/a/b/c", "root/etc", "outside"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink("/etc", root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../etc", root.join("a/rel")).expect("symlink");
        std::os::unix::fs::symlink("nope/../a/b", root.join("lex")).expect("symlink");
        std::os::unix::fs::symlink("loop", root.join("loop")).expect("symlink");
        std::fs::write(root.join("file"), "x").expect("write");
        let ino = |p: &str| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(root.join(p)).expect("stat"))
        };
        let mut fast = Root::open(&root, 0o022).expect("open");
        let mut slow = Root::open(&root, 0o022).expect("open");
        slow.use_openat2 = false;
        let cases: &[(&[&[u8]], u64)] = &[
            (&[b"a", b"b", b"c"], ino("a/b/c")),
            (&[b"abs"], ino("etc")),
            (&[b"a", b"rel"], ino("etc")),
            (&[b"lex", b"c"], ino("a/b/c")),
            (&[b"..", b"a", b"..", b"etc"], ino("etc")),
        ];
        for (comps, want) in cases {
            for r in [&mut fast, &mut slow] {
                let h = r.resolve(comps, false).expect("resolve");
                assert_eq!(ino_of(&h), *want, "{comps:?}");
            }
        }
        for r in [&mut fast, &mut slow] {
            let e = r.resolve(&[b"loop"], false).err().expect("loop");
            assert!(is_errno(&e, libc::ELOOP), "{e}");
            let e = r.resolve(&[b"file", b"x"], false).err().expect("file");
            assert!(is_errno(&e, libc::ENOTDIR), "{e}");
            let e = r.resolve(&[b"missing"], false).err().expect("missing");
            assert!(is_errno(&e, libc::ENOENT), "{e}");
        }
        // Creating through an absolute symlink creates inside the root.
        slow.resolve(&[b"abs", b"new", b"deeper"], true)
            .expect("create");
        assert!(root.join("etc/new/deeper").is_dir());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("outside"))
                .expect("read")
                .count(),
            0
        );
    }
}
