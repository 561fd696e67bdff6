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

/// Gives back what only the busy part of a long-lived process needed (a shim's container
/// start, an agent's sync pass): free heap pages, and the pages of our own binary that no
/// other process maps (libcontainer, spec building, the apply path...). The binary's pages
/// stay in the page cache while the agent or another shim maps them; a page the shim needs
/// again is simply faulted back in. Anonymous memory (the relocated data of the binary) stays:
/// there is no swap to page it out to, and MADV_PAGEOUT never discards it.
pub fn trim_idle_memory() {
    // SAFETY: malloc_trim only returns free memory at the top of the heap to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    for (start, end) in executable_mappings(&maps, exe.ino()) {
        // SAFETY: the range is a whole mapping of this process; MADV_PAGEOUT is advisory and
        // never changes the contents a later access sees.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        // Fault-around would map 16 neighbouring pages back for every page the idle loop
        // touches; one page per fault keeps the working set what it really is.
        // SAFETY: as above, advisory only.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_RANDOM) };
    }
}

/// The address ranges in /proc/self/maps text that map the file with inode `ino`.
fn executable_mappings(maps: &str, ino: u64) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let inode: u64 = fields.nth(3)?.parse().ok()?;
            if inode != ino {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn only_the_mappings_of_our_binary_are_picked() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:01 4242    /usr/bin/dockmaster
55d0c0100000-55d0c0900000 r-xp 00100000 fe:01 4242    /usr/bin/dockmaster (deleted)
55d0c0a00000-55d0c0a10000 rw-p 00000000 00:00 0       [heap]
7f0000000000-7f0000200000 r-xp 00000000 fe:01 99      /usr/lib/x86_64-linux-gnu/libc.so.6
";
        assert_eq!(
            executable_mappings(maps, 4242),
            vec![
                (0x55d0c0000000, 0x55d0c0100000),
                (0x55d0c0100000, 0x55d0c0900000)
            ]
        );
        assert!(executable_mappings("garbage\n\n", 4242).is_empty());
    }

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
