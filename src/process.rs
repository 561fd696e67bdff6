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
    // SAFETY: only async-signal-safe calls (setsid, fork, _exit, close_range, dup2) run between fork and
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
            // Nothing of the caller's leaks into a helper that lives for days (a foreground
            // CLI's output pipe held open by netd would never reach EOF). Best effort: the
            // flag needs Linux 5.11.
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
            );
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

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_detached_helper_inherits_only_the_descriptors_placed_for_it() {
        let dir = tempfile::tempdir().unwrap();
        // A descriptor without close-on-exec, as a caller may hold (an inherited pipe).
        let (leak_r, leak_w) = nix::unistd::pipe().unwrap();
        let leaked = leak_w.into_raw_fd();
        let placed = dup_high(&leak_r).unwrap();
        let out_path = dir.path().join("fds");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ls /proc/self/fd > {}.tmp && mv {0}.tmp {0}",
                out_path.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn_detached(&mut cmd, &[(placed.as_raw_fd(), 7)]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !out_path.exists() {
            assert!(Instant::now() < deadline, "the helper did not run");
            std::thread::sleep(Duration::from_millis(20));
        }
        let fds: Vec<RawFd> = std::fs::read_to_string(&out_path)
            .unwrap()
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        assert!(fds.contains(&7), "{fds:?}");
        assert!(!fds.contains(&leaked), "fd {leaked} leaked: {fds:?}");
        // SAFETY: closes the descriptor this test took out of its OwnedFd above.
        unsafe { libc::close(leaked) };
    }
}
