//! The messages: JSON objects tagged by `"type"`, one per frame.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::Category;

/// A protocol version. Peers must share the major version; the minor version is negotiated
/// down to the lower of the two, and a peer only uses what that minor version has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What the client asks. The first message on a connection is always [`Request::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Version negotiation. Its shape never changes across versions, so any shim can read a
    /// hello and refuse an unknown major version with a clear error.
    Hello {
        major: u16,
        minor: u16,
        /// Free-form name of the client, for the shim's log (`dockmaster 0.1.0`).
        #[serde(default)]
        client: String,
    },
    /// The container's current state: answered with [`Response::State`].
    State,
    /// Send a signal (number) to the container's init process: answered with `Ok`.
    Signal { signal: i32 },
    /// SIGTERM (or the image's stop signal), then SIGKILL after `grace_secs`: answered with
    /// `Ok` once the container has stopped.
    Stop { grace_secs: u64 },
    /// Run a process inside the running container (the stdio plumbing is not part of the
    /// message): answered with [`Response::ExecStarted`], later [`Response::ExecExited`].
    Exec(ExecRequest),
    /// Resource usage: answered with [`Response::Stats`].
    Stats,
}

impl Request {
    /// Short name for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::State => "state",
            Request::Signal { .. } => "signal",
            Request::Stop { .. } => "stop",
            Request::Exec(_) => "exec",
            Request::Stats => "stats",
        }
    }
}

/// A process to run inside a running container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in the container's PATH.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries added to (and overriding) the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; the container's when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// `user`, `uid`, `uid:gid` or `user:group`; the container's user when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
}

/// What the shim answers; exactly one response per request, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The hello was accepted; `minor` is the negotiated minor version.
    Hello {
        major: u16,
        minor: u16,
        /// Free-form name of the shim (`dockmaster-shim 0.1.0`).
        #[serde(default)]
        server: String,
    },
    State(ContainerState),
    Stats(ContainerStats),
    /// An exec'd process started with this host PID.
    ExecStarted {
        pid: i32,
    },
    /// An exec'd process ended (`exit_code` is 128 + signal when a signal killed it).
    ExecExited {
        exit_code: i32,
        #[serde(default)]
        signal: Option<i32>,
    },
    Ok,
    Error {
        kind: ErrorKind,
        message: String,
    },
}

impl Response {
    /// Short name for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "hello",
            Response::State(_) => "state",
            Response::Stats(_) => "stats",
            Response::ExecStarted { .. } => "exec_started",
            Response::ExecExited { .. } => "exec_exited",
            Response::Ok => "ok",
            Response::Error { .. } => "error",
        }
    }

    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            kind,
            message: message.into(),
        }
    }
}

/// Why the shim refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is wrong (bad signal, empty exec args).
    Invalid,
    /// What the request names does not exist (exec'd program, user).
    NotFound,
    /// The request does not fit the container's state (exec into a stopped container).
    Conflict,
    /// Try again later.
    Transient,
    /// The shim failed.
    Internal,
    /// A request type this shim does not know (newer client, same major version).
    Unsupported,
    /// The hello's major version is not this shim's.
    VersionMismatch,
    /// The peer broke the protocol (malformed frame, request before hello).
    Protocol,
    /// A kind added by a newer peer.
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    pub fn category(self) -> Category {
        match self {
            ErrorKind::Invalid
            | ErrorKind::Unsupported
            | ErrorKind::VersionMismatch
            | ErrorKind::Protocol => Category::Invalid,
            ErrorKind::NotFound => Category::NotFound,
            ErrorKind::Conflict => Category::Conflict,
            ErrorKind::Transient => Category::Transient,
            ErrorKind::Internal | ErrorKind::Unknown => Category::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Transient => "transient",
            ErrorKind::Internal => "internal",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::VersionMismatch => "version mismatch",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Unknown => "unknown",
        };
        f.write_str(s)
    }
}

/// Lifecycle of a container as its shim sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, its process not started yet.
    Created,
    Running,
    /// Its init process has exited; `exit_code` and friends say how.
    Stopped,
    /// Its init ended and the restart policy (or an unhealthy healthcheck) starts it again
    /// after the backoff; `exit_code` and friends describe the run that ended. Protocol 1.1:
    /// a shim answers `running` instead to 1.0 clients.
    Restarting,
}

/// The container's state, as answered to [`Request::State`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// Host PID of the container's init process while it runs.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Once stopped: the exit status, or 128 + signal when a signal killed it (as Docker).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Once stopped by a signal: its number.
    #[serde(default)]
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it.
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default, with = "rfc3339_opt")]
    pub started_at: Option<SystemTime>,
    #[serde(default, with = "rfc3339_opt")]
    pub finished_at: Option<SystemTime>,
    /// How many times the shim started the container again (protocol 1.1; 0 from older
    /// shims).
    #[serde(default)]
    pub restart_count: u32,
    /// The healthcheck's state, when the container has one (protocol 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthState>,
}

/// Resource usage, as answered to [`Request::Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// CPU time used, user and system, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory charged to the container's cgroup.
    pub memory_bytes: u64,
    /// The cgroup's memory limit; `None` when unlimited.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// OOM kills inside the container's cgroup so far.
    pub oom_kills: u64,
    /// Processes (tasks) in the container's cgroup.
    pub pids: u64,
}

/// Timestamps as RFC 3339 strings with nanoseconds, UTC (Docker's `StartedAt` format).
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{de, Deserialize, Deserializer, Serializer};

    use crate::runtime::logs::{format_rfc3339_nano, parse_rfc3339};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339_nano(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        parse_rfc3339(&s)
            .ok_or_else(|| de::Error::custom(format!("invalid RFC 3339 timestamp {s:?}")))
    }
}

/// [`rfc3339`] for optional timestamps (`null` when absent).
pub mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{de, Deserialize, Deserializer, Serializer};

    use crate::runtime::logs::{format_rfc3339_nano, parse_rfc3339};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&format_rfc3339_nano(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse_rfc3339(&s)
                .map(Some)
                .ok_or_else(|| de::Error::custom(format!("invalid RFC 3339 timestamp {s:?}"))),
        }
    }
}
