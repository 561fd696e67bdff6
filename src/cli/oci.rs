//! `dockmaster oci create|start|state|kill|delete`: the runc-compatible low-level commands, so
//! OCI tooling (and a person debugging the engine) can drive dockmaster's runtime directly.
//!
//! The engine is youki's libcontainer. Its container directory (state.json, notify socket,
//! its copy of the cgroup path) is `<--root>/oci/<id>`: a subtree of its own, so container ids
//! can never collide with the content store's directories and removing it touches nothing else.
//! As with runc, a created container inherits the caller's stdin, stdout and stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use serde::Serialize;

use crate::error::{Categorized, Category};

/// The subdirectory of `--root` holding libcontainer's container directories.
pub const STATE_SUBDIR: &str = "oci";

#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Run the user process of a created container.
    Start {
        /// The container id.
        id: String,
    },
    /// Print the container's state as JSON (runc's format).
    State {
        /// The container id.
        id: String,
    },
    /// Send a signal to the container's init process (or with --all to all its processes).
    Kill(KillArgs),
    /// Delete a stopped or created container: its cgroup and state.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The container id: letters, digits, `_`, `+`, `-`, `.`.
    pub id: String,
    /// The bundle directory (holding config.json).
    #[arg(long, short, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init process's host PID to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Send the pseudo-terminal's master to this unix socket (for `process.terminal`).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The container id.
    pub id: String,
    /// A signal name (KILL or SIGKILL, any case) or number.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Signal every process in the container's cgroup, not only its init.
    #[arg(long, short)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The container id.
    pub id: String,
    /// Kill a running container first; a missing container is no error.
    #[arg(long, short)]
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("container {id} does not exist")]
    NotFound { id: String },
    #[error("container {id} already exists")]
    Exists { id: String },
    #[error("container {id} is {status}, not {expected}")]
    WrongStatus {
        id: String,
        status: &'static str,
        expected: &'static str,
    },
    #[error("container {id} is {status}: stop it first or delete it with --force")]
    NotStopped { id: String, status: &'static str },
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    #[error("bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A libcontainer failure; `message` is its whole chain of causes.
    #[error("cannot {operation} container {id}: {message}")]
    Engine {
        id: String,
        operation: &'static str,
        message: String,
    },
}

impl Categorized for OciError {
    fn category(&self) -> Category {
        match self {
            OciError::InvalidId { .. } | OciError::UnknownSignal(_) | OciError::Bundle { .. } => {
                Category::Invalid
            }
            OciError::NotFound { .. } => Category::NotFound,
            OciError::Exists { .. }
            | OciError::WrongStatus { .. }
            | OciError::NotStopped { .. } => Category::Conflict,
            OciError::Io { .. } | OciError::Engine { .. } => Category::Internal,
        }
    }
}

/// Runs one `oci` verb with its state under `root/oci`; returns the exit code.
pub fn run(root: &Path, cmd: OciCommand) -> anyhow::Result<i32> {
    let state_root = root.join(STATE_SUBDIR);
    match cmd {
        OciCommand::Create(args) => create(&state_root, &args)?,
        OciCommand::Start { id } => start(&state_root, &id)?,
        OciCommand::State { id } => state(&state_root, &id)?,
        OciCommand::Kill(args) => kill(&state_root, &args)?,
        OciCommand::Delete(args) => delete(&state_root, &args)?,
    }
    Ok(0)
}

fn create(state_root: &Path, args: &CreateArgs) -> Result<(), OciError> {
    let id = &args.id;
    check_id(id)?;
    if !args.bundle.join("config.json").is_file() {
        return Err(OciError::Bundle {
            path: args.bundle.clone(),
            reason: "no config.json".into(),
        });
    }
    std::fs::create_dir_all(state_root).map_err(|source| OciError::Io {
        path: state_root.to_path_buf(),
        source,
    })?;
    let dir = state_root.join(id);
    if dir.exists() {
        return Err(OciError::Exists { id: id.clone() });
    }
    let build = || {
        ContainerBuilder::new(id.clone(), SyscallType::Linux)
            .with_root_path(state_root)?
            .with_pid_file(args.pid_file.as_ref())?
            .with_console_socket(args.console_socket.as_ref())
            .as_init(&args.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
    };
    match build() {
        Ok(_) => Ok(()),
        Err(LibcontainerError::Exist) => Err(OciError::Exists { id: id.clone() }),
        Err(e) => {
            // libcontainer cleans up after failures in the process setup only; an earlier one
            // (connecting the console socket, saving its config) leaves a "creating" directory.
            if dir.exists() {
                let deleted = Container::load(dir.clone()).and_then(|mut c| c.delete(true));
                if deleted.is_err() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            Err(engine_error(id, "create", e))
        }
    }
}

fn start(state_root: &Path, id: &str) -> Result<(), OciError> {
    let mut container = load(state_root, id)?;
    if container.status() != ContainerStatus::Created {
        return Err(OciError::WrongStatus {
            id: id.to_string(),
            status: status_name(container.status()),
            expected: "created",
        });
    }
    container.start().map_err(|e| engine_error(id, "start", e))
}

/// runc's `state` output: Go's `json.MarshalIndent(containerState, "", "  ")` without a
/// trailing newline; the field order, `pid` 0 once stopped and the empty `owner` are runc's.
#[derive(Serialize)]
struct RuncState {
    #[serde(rename = "ociVersion")]
    oci_version: String,
    id: String,
    pid: i32,
    status: &'static str,
    bundle: String,
    rootfs: String,
    created: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    owner: String,
}

fn state(state_root: &Path, id: &str) -> Result<(), OciError> {
    let container = load(state_root, id)?;
    let s = &container.state;
    // runc reports the version and rootfs of the config the container was created from; that
    // is the bundle's config.json (libcontainer keeps neither).
    let spec = oci_spec::runtime::Spec::load(s.bundle.join("config.json")).ok();
    let rootfs = spec
        .as_ref()
        .and_then(|spec| spec.root().as_ref())
        .map(|root| s.bundle.join(root.path()).display().to_string())
        .unwrap_or_default();
    let out = RuncState {
        oci_version: spec.map_or_else(|| s.oci_version.clone(), |spec| spec.version().clone()),
        id: s.id.clone(),
        pid: match container.status() {
            ContainerStatus::Stopped => 0,
            _ => s.pid.unwrap_or(0),
        },
        status: status_name(container.status()),
        bundle: s.bundle.display().to_string(),
        rootfs,
        created: s
            .created
            .map(|t| crate::runtime::logs::format_rfc3339_nano(t.into()))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        annotations: s
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        owner: String::new(),
    };
    let json = serde_json::to_string_pretty(&out).expect("state serializes");
    print!("{}", go_escape(&json));
    Ok(())
}

fn kill(state_root: &Path, args: &KillArgs) -> Result<(), OciError> {
    let id = &args.id;
    let signal = parse_signal(&args.signal)?;
    let mut container = load(state_root, id)?;
    let before = container.status();
    // Like libcontainer (and runc): a stopped container's leftovers only with --all.
    let killable = match before {
        ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused => true,
        ContainerStatus::Stopped => args.all,
        ContainerStatus::Creating => false,
    };
    if !killable {
        return Err(OciError::WrongStatus {
            id: id.clone(),
            status: status_name(before),
            expected: "created, running or paused",
        });
    }
    container
        .kill(signal, args.all)
        .map_err(|e| engine_error(id, "kill", e))?;
    // libcontainer records "stopped" after any signal, even one the process survives; put the
    // old status back. Loading recomputes "stopped" from the PID once the process is gone.
    if before != ContainerStatus::Stopped {
        container
            .set_status(before)
            .save()
            .map_err(|e| engine_error(id, "kill", e))?;
    }
    Ok(())
}

fn delete(state_root: &Path, args: &DeleteArgs) -> Result<(), OciError> {
    let id = &args.id;
    check_id(id)?;
    let dir = state_root.join(id);
    if !dir.join("state.json").exists() {
        // Like runc: a directory without state is a create that died half-way; --force also
        // accepts a container that is already gone.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| OciError::Io { path: dir, source })?;
        } else if !args.force {
            return Err(OciError::NotFound { id: id.clone() });
        }
        return Ok(());
    }
    let mut container = load(state_root, id)?;
    let status = container.status();
    if !args.force && !matches!(status, ContainerStatus::Stopped | ContainerStatus::Created) {
        return Err(OciError::NotStopped {
            id: id.clone(),
            status: status_name(status),
        });
    }
    container
        .delete(args.force)
        .map_err(|e| engine_error(id, "delete", e))
}

/// libcontainer's id rule (it also becomes a directory name under the state root, so this is
/// what keeps `../x` from escaping it).
fn check_id(id: &str) -> Result<(), OciError> {
    let invalid = |reason| {
        Err(OciError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return invalid("empty");
    }
    if id == "." || id == ".." {
        return invalid("not a file name");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return invalid("only letters, digits, '_', '+', '-' and '.' are allowed");
    }
    Ok(())
}

fn load(state_root: &Path, id: &str) -> Result<Container, OciError> {
    check_id(id)?;
    let dir = state_root.join(id);
    if !dir.join("state.json").exists() {
        return Err(OciError::NotFound { id: id.to_string() });
    }
    Container::load(dir).map_err(|e| engine_error(id, "load", e))
}

/// `KILL`, `SIGKILL`, `kill` or `9`.
fn parse_signal(s: &str) -> Result<Signal, OciError> {
    Signal::try_from(s).map_err(|_| OciError::UnknownSignal(s.to_string()))
}

fn status_name(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// Maps libcontainer's errors to ours. Its messages are often generic ("io error") with the
/// cause in `source()`, so the whole chain goes into the message.
fn engine_error(id: &str, operation: &'static str, err: LibcontainerError) -> OciError {
    match err {
        LibcontainerError::Exist => return OciError::Exists { id: id.into() },
        LibcontainerError::NoDirectory => return OciError::NotFound { id: id.into() },
        _ => {}
    }
    let mut message = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    OciError::Engine {
        id: id.into(),
        operation,
        message,
    }
}

/// Go's encoding/json escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings; outside
/// strings JSON has none of them, so replacing them everywhere is exact.
fn go_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "web-1", "x_y.z+1", "A9"] {
            check_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", "é"] {
            let err = check_id(bad).unwrap_err();
            assert!(matches!(err, OciError::InvalidId { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn signals() {
        for s in ["KILL", "SIGKILL", "kill", "9"] {
            // libcontainer's Signal exposes its value only through Debug.
            assert_eq!(format!("{:?}", parse_signal(s).unwrap()), "Signal(SIGKILL)");
        }
        for bad in ["", "0", "SIGFOO", "99", "-9"] {
            let err = parse_signal(bad).unwrap_err();
            assert_eq!(err.to_string(), format!("unknown signal {bad:?}"));
        }
    }

    #[test]
    fn go_escapes() {
        assert_eq!(
            go_escape("{\"a\": \"<b>&\u{2028}\"}"),
            "{\"a\": \"\\u003cb\\u003e\\u0026\\u2028\"}"
        );
    }
}
