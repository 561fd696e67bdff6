//! The `--init` PID 1 itself, written against `std` and a few libc functions only, so that
//! the same file also builds as a small, statically linked program (`init_static.rs`, built by
//! `build.rs`): a container's rootfs has no dynamic loader or glibc of ours, so the init that
//! is bind-mounted into it must not need one.
//!
//! It blocks the catchable signals, spawns the command with an empty mask, then loops on
//! `sigwaitinfo`: SIGCHLD reaps every child (orphans are reparented to PID 1), any other
//! signal is forwarded to the command (to its process group when it leads one). It exits with
//! the command's exit code, or 128 + signal when a signal killed it; 127 / 126 when the
//! command cannot be found / executed (docker-init's codes).

use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::process::Command;

pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
pub const EXIT_INIT_FAILED: i32 = 1;

/// glibc's `sigset_t` (1024 bits) and `siginfo_t` (128 bytes, `si_signo` first).
#[repr(C)]
struct SigSet([u64; 16]);
#[repr(C)]
struct SigInfo {
    signo: i32,
    rest: [i32; 31],
}

const SIG_SETMASK: i32 = 2;
const SIG_UNBLOCK: i32 = 1;
const SIGCHLD: i32 = 17;
const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;
const WNOHANG: i32 = 1;
const EINTR: i32 = 4;
const ECHILD: i32 = 10;
/// Synchronous faults stay unblocked (blocking them is undefined), and terminal stops.
const UNBLOCKED: [i32; 9] = [8, 4, 11, 7, 6, 5, 31, 21, 22];

extern "C" {
    fn sigfillset(set: *mut SigSet) -> i32;
    fn sigemptyset(set: *mut SigSet) -> i32;
    fn sigdelset(set: *mut SigSet, sig: i32) -> i32;
    fn sigismember(set: *const SigSet, sig: i32) -> i32;
    fn sigprocmask(how: i32, set: *const SigSet, old: *mut SigSet) -> i32;
    fn sigwaitinfo(set: *const SigSet, info: *mut SigInfo) -> i32;
    fn signal(sig: i32, handler: usize) -> usize;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn getpgid(pid: i32) -> i32;
}

/// Why the init could not do its job.
#[derive(Debug)]
pub enum InitError {
    NoCommand,
    Signals(std::io::Error),
    Spawn {
        command: String,
        source: std::io::Error,
    },
    Wait(std::io::Error),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::NoCommand => write!(f, "init: no command given after `--`"),
            InitError::Signals(e) => write!(f, "init: cannot set up signal handling: {e}"),
            InitError::Spawn { command, source } => {
                write!(f, "init: cannot execute {command:?}: {source}")
            }
            InitError::Wait(e) => write!(f, "init: waiting for children failed: {e}"),
        }
    }
}

impl std::error::Error for InitError {}

impl InitError {
    /// docker-init's exit codes.
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

/// Runs the init; returns the process exit code (errors are printed).
pub fn main(command: &[OsString]) -> i32 {
    match run(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dockmaster {e}");
            e.exit_code()
        }
    }
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Spawns `command` and supervises it; returns its exit code.
pub fn run(command: &[OsString]) -> Result<i32, InitError> {
    let (program, args) = command.split_first().ok_or(InitError::NoCommand)?;
    let mut mask = SigSet([0; 16]);
    // SAFETY: the sigset functions only write the set we own.
    unsafe {
        sigfillset(&mut mask);
        for sig in UNBLOCKED {
            sigdelset(&mut mask, sig);
        }
    }
    // SAFETY: sets this (only) thread's mask from a valid set.
    if unsafe { sigprocmask(SIG_SETMASK, &mask, std::ptr::null_mut()) } != 0 {
        return Err(InitError::Signals(last_error()));
    }
    // Dispositions set to SIG_IGN by whoever started us would otherwise be inherited.
    for sig in 1..65 {
        // SAFETY: sigismember reads the set; signal() with SIG_DFL (0) is always valid.
        if sig != SIGKILL && sig != SIGSTOP && unsafe { sigismember(&mask, sig) } == 1 {
            unsafe { signal(sig, 0) };
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only sigemptyset/sigprocmask (async-signal-safe) run between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty = SigSet([0; 16]);
            sigemptyset(&mut empty);
            if sigprocmask(SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(last_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            // SAFETY: restores the signals blocked above, from a valid set.
            unsafe { sigprocmask(SIG_UNBLOCK, &mask, std::ptr::null_mut()) };
            return Err(InitError::Spawn {
                command: program.to_string_lossy().into_owned(),
                source,
            });
        }
    };
    let pid = child.id() as i32;
    // Reaping is ours (waitpid(-1)); the handle is not needed.
    drop(child);
    loop {
        if let Some(code) = reap(pid)? {
            return Ok(code);
        }
        let mut info = SigInfo {
            signo: 0,
            rest: [0; 31],
        };
        // SAFETY: waits for one of the blocked signals; `info` is large enough (128 bytes).
        let signo = unsafe { sigwaitinfo(&mask, &mut info) };
        if signo < 0 {
            let e = last_error();
            if e.raw_os_error() == Some(EINTR) {
                continue;
            }
            return Err(InitError::Signals(e));
        }
        if signo != SIGCHLD {
            forward(pid, signo);
        }
    }
}

/// Reaps every exited child; the command's exit code once it has ended.
fn reap(main: i32) -> Result<Option<i32>, InitError> {
    let mut main_code = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer; WNOHANG never blocks.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        if pid == 0 {
            return Ok(main_code);
        }
        if pid < 0 {
            let e = last_error();
            match e.raw_os_error() {
                Some(ECHILD) => return Ok(main_code),
                Some(EINTR) => continue,
                _ => return Err(InitError::Wait(e)),
            }
        }
        if pid == main {
            let termsig = status & 0x7f;
            main_code = Some(if termsig == 0 {
                (status >> 8) & 0xff
            } else {
                128 + termsig
            });
        }
    }
}

/// Forwards a signal to the command, or to its process group when it leads one (a shell
/// running a pipeline), as tini does with `-g`.
fn forward(child: i32, signo: i32) {
    // SAFETY: getpgid and kill take plain integers.
    unsafe {
        let target = if getpgid(child) == child {
            -child
        } else {
            child
        };
        kill(target, signo);
    }
}
