//! The exit record the shim persists when the container's init process ends, so the agent
//! learns how a container ended even if the shim is gone by the time it asks.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::message::{rfc3339, rfc3339_opt};
use super::ProtocolError;
use crate::fsutil::write_replace;

/// Largest exit record accepted when loading; real ones are ~200 bytes.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// How a container's init process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit status, or 128 + signal when a signal killed the process (as Docker reports
    /// it: 137 for SIGKILL).
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (from the cgroup's OOM kill counter).
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default, with = "rfc3339_opt")]
    pub started_at: Option<SystemTime>,
    #[serde(with = "rfc3339")]
    pub finished_at: SystemTime,
    /// How many times the shim had started the container again before this last exit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// Stopped through dockmaster (`stop`, `kill` with SIGKILL or the stop signal, `rm -f`):
    /// Docker's `HasBeenManuallyStopped`, which decides whether an `unless-stopped`
    /// container comes back after a reboot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manually_stopped: bool,
    /// Why the shim gave up, when it did (a restart that failed to start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Exit code and signal from a raw `waitpid` status, Docker's way: the exit status, or
/// 128 + signal when a signal killed the process.
pub fn exit_code_and_signal(status: i32) -> (i32, Option<i32>) {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, Some(sig))
    } else if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), None)
    } else {
        // Stopped or continued is not an end; callers only pass terminal statuses.
        (status, None)
    }
}

impl ExitRecord {
    /// Builds a record from a raw `waitpid` status.
    pub fn from_wait_status(
        status: i32,
        oom_killed: bool,
        started_at: Option<SystemTime>,
        finished_at: SystemTime,
    ) -> ExitRecord {
        let (exit_code, signal) = exit_code_and_signal(status);
        ExitRecord {
            exit_code,
            signal,
            oom_killed,
            started_at,
            finished_at,
            restart_count: 0,
            manually_stopped: false,
            error: None,
        }
    }

    /// Writes the record atomically (temp file, fsync, rename, fsync dir): after a crash the
    /// file holds this record or the previous content, never a torn one.
    pub fn write(&self, path: &Path) -> Result<(), ProtocolError> {
        self.write_with(path, true)
    }

    /// [`ExitRecord::write`], skipping the fsyncs when not `durable` (a `--rm` container's
    /// record is removed moments later).
    pub fn write_with(&self, path: &Path, durable: bool) -> Result<(), ProtocolError> {
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|source| ProtocolError::BadExitRecord {
                path: path.to_path_buf(),
                source,
            })?;
        bytes.push(b'\n');
        write_replace(path, &bytes, durable).map_err(|source| ProtocolError::WriteExitRecord {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Loads the record; `Ok(None)` when there is none (the container has not exited, or
    /// exited while nothing recorded it).
    pub fn load(path: &Path) -> Result<Option<ExitRecord>, ProtocolError> {
        let read_err = |source| ProtocolError::ReadExitRecord {
            path: path.to_path_buf(),
            source,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(read_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_RECORD_BYTES} bytes"),
            )));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ProtocolError::BadExitRecord {
                path: path.to_path_buf(),
                source,
            })
    }
}
