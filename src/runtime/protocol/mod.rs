//! The versioned unix-socket protocol between the agent or CLI and a container's shim, and
//! the exit record the shim persists.
//!
//! Wire format: frames of a big-endian `u32` length and that many bytes of JSON (at most
//! [`MAX_FRAME`]). Each message is an object tagged by `"type"`. A connection starts with the
//! client's [`Request::Hello`] carrying its version; the shim answers [`Response::Hello`]
//! with the negotiated version (same major, lower minor) or an `Error` of kind
//! `version_mismatch` and closes. Then each request gets exactly one response, in order.
//!
//! ```text
//! -> {"type":"hello","major":1,"minor":0,"client":"dockmaster 0.1.0"}
//! <- {"type":"hello","major":1,"minor":0,"server":"dockmaster-shim 0.1.0"}
//! -> {"type":"state"}
//! <- {"type":"state","status":"running","pid":4242,"exit_code":null,…}
//! ```
//!
//! Compatibility rules: a shim outlives agent upgrades, so a newer agent talks to older
//! shims. Additions (request types, optional fields) bump the minor version and are only
//! used when the negotiated minor version has them; an older shim answers an unknown
//! request type with an `unsupported` error rather than dropping the connection. Anything
//! else bumps the major version. The hello's shape never changes.
//!
//! The shim is single-threaded: [`Connection`] is a state machine for its poll loop over
//! non-blocking sockets. [`Client`] is blocking with timeouts.

mod client;
mod exit;
mod frame;
mod message;
mod server;

use std::io;
use std::path::PathBuf;

use crate::error::{Categorized, Category};

pub use client::{bind_listener, request, Client};
pub use exit::{exit_code_and_signal, ExitRecord};
pub use frame::{
    encode_frame, read_frame, read_message, write_frame, write_message, FrameDecoder, OutBuffer,
};
pub use message::{rfc3339, rfc3339_opt};
pub use message::{
    ContainerState, ContainerStats, ErrorKind, ExecRequest, Request, Response, Status, Version,
};
pub use server::{serve_blocking, Connection, ReadOutcome};

/// Major version: peers with different majors cannot talk.
pub const PROTOCOL_MAJOR: u16 = 1;
/// Minor version: what this side implements within the major version.
///
/// - 1.1: the state answer's `restarting` status (sent to 1.1 clients only: 1.0 clients get
///   `running`), `restart_count` and `health`.
pub const PROTOCOL_MINOR: u16 = 1;
/// Largest frame payload either side sends or accepts.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Errors of the framing layer, over any byte stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

impl Categorized for FrameError {
    fn category(&self) -> Category {
        match self {
            FrameError::Io(e) if is_transient(e) => Category::Transient,
            FrameError::Io(_) | FrameError::Truncated => Category::Internal,
            FrameError::TooLarge { .. } | FrameError::Json(_) => Category::Invalid,
        }
    }
}

/// Errors talking to a shim or handling its exit record, naming the socket or file.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connect to shim socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("talk to shim at {path}: {source}")]
    Exchange { path: PathBuf, source: FrameError },
    #[error("shim at {path} did not answer {request} within {timeout:?}")]
    Timeout {
        path: PathBuf,
        request: &'static str,
        timeout: std::time::Duration,
    },
    #[error("shim at {path} closed the connection before answering {request}")]
    Closed {
        path: PathBuf,
        request: &'static str,
    },
    #[error(
        "shim at {path} answered with protocol version {theirs}, this dockmaster speaks {ours}"
    )]
    VersionMismatch {
        path: PathBuf,
        ours: Version,
        theirs: Version,
    },
    #[error("shim at {path} refused protocol version {ours}: {message}")]
    VersionRefused {
        path: PathBuf,
        ours: Version,
        message: String,
    },
    #[error("shim at {path} refused {request} ({kind}): {message}")]
    Refused {
        path: PathBuf,
        request: &'static str,
        kind: ErrorKind,
        message: String,
    },
    #[error("shim at {path} answered {request} with an unexpected {got} message")]
    Unexpected {
        path: PathBuf,
        request: &'static str,
        got: &'static str,
    },
    #[error("write exit record {path}: {source}")]
    WriteExitRecord { path: PathBuf, source: io::Error },
    #[error("read exit record {path}: {source}")]
    ReadExitRecord { path: PathBuf, source: io::Error },
    #[error("exit record {path} is malformed: {source}")]
    BadExitRecord {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl Categorized for ProtocolError {
    fn category(&self) -> Category {
        match self {
            // No socket, or nobody accepting on it: the shim is gone.
            ProtocolError::Connect { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Category::NotFound
            }
            ProtocolError::Connect { source, .. } if is_transient(source) => Category::Transient,
            ProtocolError::Connect { .. } => Category::Internal,
            ProtocolError::Exchange { source, .. } => source.category(),
            ProtocolError::Closed { .. } | ProtocolError::Timeout { .. } => Category::Transient,
            ProtocolError::VersionMismatch { .. } | ProtocolError::VersionRefused { .. } => {
                Category::Invalid
            }
            ProtocolError::Refused { kind, .. } => kind.category(),
            ProtocolError::Unexpected { .. }
            | ProtocolError::WriteExitRecord { .. }
            | ProtocolError::ReadExitRecord { .. }
            | ProtocolError::BadExitRecord { .. } => Category::Internal,
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests;
