//! Starting dockmaster's own long-lived helpers (shims, netd) so that they outlive and never
//! belong to whoever started them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The lowest descriptor [`dup_high`] returns: above every target a helper's descriptors are
/// placed at, so placing one can never overwrite the source of another.
const HIGH_FD: RawFd = 10;

/// A close-on-exec duplicate of `fd` numbered 10 or more, to pass to [`spawn_detached`].
pub fn dup_high(fd: impl AsFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid borrowed fd returns a new descriptor we own (checked).
    let new = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Spawns `cmd` detached: a new session, then a second fork whose middle process exits at
/// once, so the helper is nobody's child (a long-lived caller collects no zombie) and not a
/// session leader (it cannot acquire a controlling terminal). Each `(source, target)` pair is
/// dup2'ed in the helper; sources must come from [`dup_high`] and stay open until this
/// returns. Returns once the middle process has exited.
pub fn spawn_detached(cmd: &mut Command, place: &[(RawFd, RawFd)]) -> io::Result<()> {
    let place = place.to_vec();
    // SAFETY: only async-signal-safe calls (setsid, fork, _exit, dup2) run between fork and
    // exec; `place` was allocated before the fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => return Err(io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            for &(source, target) in &place {
                if libc::dup2(source, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut middle = cmd.spawn()?;
    let _ = middle.wait();
    Ok(())
}
