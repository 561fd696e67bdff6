//! The launcher's side: re-execute this binary as `dockmaster --root R shim ID` in a new
//! session and wait until it reports that the container started (or why it did not).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{ATTACH_ERR_FD, ATTACH_OUT_FD, STATUS_FD_ENV};
use crate::error::{Categorized, Category};
use crate::runtime::container::ContainerPaths;

/// The descriptor number the status pipe gets in the shim.
const STATUS_FD: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("container {id}: start the shim: {source}")]
    Spawn { id: String, source: io::Error },
    #[error("container {id}: {message} (shim log: {log})")]
    Failed {
        id: String,
        message: String,
        log: String,
    },
    #[error("container {id}: the shim exited without reporting (shim log: {log})")]
    Vanished { id: String, log: String },
}

/// Why a container's process could not be started, read from the engine's message (it only
/// gives text); decides Docker's exit codes 127 / 126.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFailure {
    /// The command does not exist.
    NotFound,
    /// The command exists but cannot be executed.
    CannotInvoke,
    /// Something else (a mount, a cgroup, ...).
    Other,
}

impl StartFailure {
    pub fn classify(message: &str) -> StartFailure {
        if message.contains("not found") || message.contains("No such file") {
            StartFailure::NotFound
        } else if message.contains("ermission denied") {
            StartFailure::CannotInvoke
        } else {
            StartFailure::Other
        }
    }
}

impl LaunchError {
    /// What kind of start failure the shim reported, if it reported one.
    pub fn start_failure(&self) -> Option<StartFailure> {
        match self {
            LaunchError::Failed { message, .. } => Some(StartFailure::classify(message)),
            _ => None,
        }
    }
}

impl Categorized for LaunchError {
    fn category(&self) -> Category {
        match self {
            LaunchError::Failed { message, .. }
                if StartFailure::classify(message) == StartFailure::NotFound =>
            {
                Category::NotFound
            }
            _ => Category::Internal,
        }
    }
}

/// A started container.
#[derive(Debug)]
pub struct Launched {
    pub shim_pid: i32,
    pub init_pid: i32,
    /// When attached: where the shim reports `exited CODE`.
    status: Option<BufReader<File>>,
}

impl Launched {
    /// Attached launches: blocks until the container has exited and its exit is recorded;
    /// returns its exit code. `None` when the shim went away without saying (see the exit
    /// record or `ps`).
    pub fn wait_exit(mut self) -> Option<i32> {
        let status = self.status.as_mut()?;
        let mut line = String::new();
        loop {
            line.clear();
            match status.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    if let Some(code) = line.trim().strip_prefix("exited ") {
                        return code.parse().ok();
                    }
                }
            }
        }
    }
}

/// What shims (and netd) are started from: the kernel's link to this process's binary.
pub const SELF_EXE: &str = "/proc/self/exe";

/// Starts the shim of the container whose directory is `paths` (record and bundle written).
/// With `attach`, the shim also copies the container's output to this process's stdout and
/// stderr and [`Launched::wait_exit`] works.
pub fn spawn(
    root: &Path,
    id: &str,
    paths: &ContainerPaths,
    attach: bool,
) -> Result<Launched, LaunchError> {
    let spawn_err = |source| LaunchError::Spawn {
        id: id.to_string(),
        source,
    };
    // The running binary itself, even when the file was replaced (an upgrade, a rebuild)
    // since this process started: the path current_exe() returns would then be gone.
    let exe = std::path::PathBuf::from(SELF_EXE);
    let (status_r, status_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let shim_log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.shim_log())
        .map_err(spawn_err)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .arg("shim")
        .arg(id)
        .env(STATUS_FD_ENV, STATUS_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(shim_log))
        // The shim must not keep the launcher's cwd (a mount point the user may unmount).
        .current_dir("/");
    if attach {
        cmd.arg("--attach");
    }
    // Sources numbered 10+ (dup_high): placing one at 3, 4 or 5 never overwrites another.
    let status_src = crate::process::dup_high(&status_w).map_err(spawn_err)?;
    let mut place = vec![(status_src.as_raw_fd(), STATUS_FD)];
    // Attached: the shim's own stdout/stderr are /dev/null and its log; the caller's streams
    // go to descriptors 4 and 5.
    let attached = if attach {
        let out = crate::process::dup_high(std::io::stdout()).map_err(spawn_err)?;
        let err = crate::process::dup_high(std::io::stderr()).map_err(spawn_err)?;
        place.push((out.as_raw_fd(), ATTACH_OUT_FD));
        place.push((err.as_raw_fd(), ATTACH_ERR_FD));
        Some((out, err))
    } else {
        None
    };
    crate::process::spawn_detached(&mut cmd, &place).map_err(spawn_err)?;
    drop((status_src, attached));
    finish_spawn(id, paths, status_r, status_w, attach)
}

fn finish_spawn(
    id: &str,
    paths: &ContainerPaths,
    status_r: OwnedFd,
    status_w: OwnedFd,
    attach: bool,
) -> Result<Launched, LaunchError> {
    // Our copy of the write end must go, or EOF never comes if the shim dies.
    drop(status_w);
    let mut reader = BufReader::new(File::from(status_r));
    let log = paths.shim_log().display().to_string();
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => {
            let line = line.trim_end();
            if let Some(pids) = line.strip_prefix("started ") {
                let mut pids = pids.split(' ').map(|p| p.parse().unwrap_or(0));
                let init_pid = pids.next().unwrap_or(0);
                let shim_pid = pids.next().unwrap_or(0);
                Ok(Launched {
                    shim_pid,
                    init_pid,
                    status: attach.then_some(reader),
                })
            } else {
                let message = line.strip_prefix("error ").unwrap_or(line);
                // The shim's errors already start with the container; say it once.
                let prefix = format!("container {id}: ");
                let message = message.strip_prefix(&prefix).unwrap_or(message);
                Err(LaunchError::Failed {
                    id: id.to_string(),
                    message: message.to_string(),
                    log,
                })
            }
        }
        _ => Err(LaunchError::Vanished {
            id: id.to_string(),
            log,
        }),
    }
}
