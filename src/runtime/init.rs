//! The container `--init` process: a tiny PID 1 like tini/docker-init, built into the binary.
//!
//! The spec builder bind-mounts the dockmaster binary at `/dev/init` and runs
//! `/dev/init -- COMMAND...`. [`command_from_args`] recognises that call (or
//! `dockmaster init -- COMMAND...`) before clap or any async runtime exists, and [`run`] then:
//! blocks the catchable signals and reads them from a signalfd, spawns the command, forwards
//! every signal except SIGCHLD to it, reaps every zombie (orphans are reparented to PID 1)
//! and exits with the command's exit code, or 128 + signal when a signal killed it.
//! Single-threaded, no async runtime: signals are consumed synchronously from the signalfd.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, signal, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpgid, Pid};

use crate::error::{Categorized, Category};

/// Exit code when the command does not exist (as shells and docker-init report it).
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code when the command exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit code for a usage error or a failure of the init itself.
pub const EXIT_INIT_FAILED: i32 = 1;

/// Signals that stay unblocked: synchronous faults must kill the init (blocking them is
/// undefined), and TTIN/TTOU keep their defaults since the init never touches the terminal.
const UNBLOCKED: [Signal; 9] = [
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("init: no command given after `--`")]
    NoCommand,
    #[error("init: cannot set up signal handling: {0}")]
    Signals(#[source] Errno),
    #[error("init: cannot execute {command:?}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("init: waiting for children failed: {0}")]
    Wait(#[source] Errno),
}

impl InitError {
    /// The exit code the init leaves with for this error, like docker-init and shells.
    pub fn exit_code(&self) -> i32 {
        match self {
            InitError::Spawn { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_CANNOT_EXECUTE,
            },
            _ => EXIT_INIT_FAILED,
        }
    }
}

impl Categorized for InitError {
    fn category(&self) -> Category {
        match self {
            InitError::NoCommand => Category::Invalid,
            InitError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Category::NotFound
            }
            InitError::Spawn { .. } => Category::Invalid,
            InitError::Signals(_) | InitError::Wait(_) => Category::Internal,
        }
    }
}

/// The command to run when this process was started as the init: argv[0]'s file name is
/// `init` (e.g. `/dev/init -- CMD...`) or argv[1] is `init` (`dockmaster init -- CMD...`),
/// followed by `--`. Returns the arguments after `--` (possibly empty), or `None` when this
/// is not an init invocation.
pub fn command_from_args(args: &[OsString]) -> Option<&[OsString]> {
    let rest = match args {
        [argv0, rest @ ..] if Path::new(argv0).file_name() == Some(OsStr::new("init")) => rest,
        [_, sub, rest @ ..] if sub == "init" => rest,
        _ => return None,
    };
    match rest {
        [dashdash, command @ ..] if dashdash == "--" => Some(command),
        _ => None,
    }
}

/// Runs `command` as the child of this init and returns the exit code to leave with.
/// Errors are printed to stderr.
pub fn main(command: &[OsString]) -> i32 {
    match run(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dockmaster {e}");
            e.exit_code()
        }
    }
}

/// Spawns `command`, forwards signals to it, reaps all zombies and returns the exit code of
/// `command` (128 + signal when it was killed by one). Must be called while the process is
/// single-threaded: the signal mask set here has to cover every thread.
pub fn run(command: &[OsString]) -> Result<i32, InitError> {
    let (program, args) = command.split_first().ok_or(InitError::NoCommand)?;
    let mut mask = SigSet::all();
    for sig in UNBLOCKED {
        mask.remove(sig);
    }
    // Block before spawning so no SIGCHLD or forwarded signal can be lost in between.
    mask.thread_set_mask().map_err(InitError::Signals)?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(InitError::Signals)?;
    // Ignored dispositions survive exec (e.g. SIGINT/SIGQUIT when started in the background
    // by a shell); the command must start with defaults so forwarded signals act on it.
    for sig in Signal::iterator().filter(|s| mask.contains(*s)) {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler, so no code runs in signal context; the signal
        // is blocked and read from the signalfd anyway.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    // The blocked mask survives exec and std does not clear it: unblock in the child.
    // SAFETY: the closure runs between fork and exec and only calls sigprocmask, which is
    // async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().map_err(|source| InitError::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    });
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            // Leave the mask as found (only matters to callers that keep running).
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None);
            return Err(e);
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    // The Child handle is not used for waiting: waitpid(-1) below reaps it with the rest.
    drop(child);
    loop {
        if let Some(code) = reap(pid)? {
            return Ok(code);
        }
        let info = match sfd.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(e) => return Err(InitError::Signals(e)),
        };
        let signo = info.ssi_signo as i32;
        if signo != libc::SIGCHLD {
            forward(pid, signo);
        }
    }
}

/// Reaps every exited child without blocking; returns the exit code once `main` is reaped.
fn reap(main: Pid) -> Result<Option<i32>, InitError> {
    let mut main_code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(main_code),
            Ok(WaitStatus::Exited(p, code)) if p == main => main_code = Some(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == main => main_code = Some(128 + sig as i32),
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(e) => return Err(InitError::Wait(e)),
        }
    }
}

/// Sends `signo` to the child's process group when it leads one, else to the child alone.
/// The child is not reaped yet, so its pid cannot have been reused.
fn forward(child: Pid, signo: i32) {
    let group = getpgid(Some(child)).is_ok_and(|g| g == child);
    match Signal::try_from(signo) {
        Ok(sig) => {
            let _ = if group {
                killpg(child, sig)
            } else {
                kill(child, sig)
            };
        }
        Err(_) => {
            // Real-time signals have no nix `Signal`; forward them by number.
            let target = if group {
                -child.as_raw()
            } else {
                child.as_raw()
            };
            // SAFETY: kill(2) only takes integers and touches no memory of this process.
            unsafe {
                libc::kill(target, signo);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn recognises_init_invocations() {
        let a = args(&["/dev/init", "--", "sleep", "1"]);
        assert_eq!(command_from_args(&a), Some(&a[2..]));
        let a = args(&["/usr/bin/dockmaster", "init", "--", "sh"]);
        assert_eq!(command_from_args(&a), Some(&a[3..]));
        let a = args(&["init", "--"]);
        assert_eq!(command_from_args(&a).map(<[_]>::len), Some(0));
    }

    #[test]
    fn other_invocations_go_to_the_cli() {
        for v in [
            &["dockmaster", "run", "alpine"][..],
            &["dockmaster", "init"],
            &["dockmaster", "init", "sh"],
            &["/dev/init", "sh"],
            &["/sbin/initx", "--", "sh"],
            &["dockmaster"],
            &[],
        ] {
            assert_eq!(command_from_args(&args(v)), None, "{v:?}");
        }
    }

    #[test]
    fn exit_codes_follow_docker_init() {
        let e = |kind| InitError::Spawn {
            command: "x".into(),
            source: std::io::Error::from(kind),
        };
        assert_eq!(e(std::io::ErrorKind::NotFound).exit_code(), 127);
        assert_eq!(e(std::io::ErrorKind::PermissionDenied).exit_code(), 126);
        assert_eq!(InitError::NoCommand.exit_code(), 1);
        assert_eq!(InitError::NoCommand.category(), Category::Invalid);
    }
}
