//! Container logs in Docker's json-file format: the shim's writer and the CLI's reader.
//!
//! One JSON object per line, `{"log":"…\n","stream":"stdout","time":"…"}`, in
//! `container.log`, rotated by size to `container.log.1` … `container.log.<max_files-1>`
//! (higher numbers are older). Files written here can be read by tools that read Docker's
//! json-file logs, and the reader reads Docker's files.
//!
//! - [`LogWriter`] is fed byte slices from the container's stdout/stderr pipes by the shim's
//!   poll loop. It never blocks on anything but the local file write, never buffers more than
//!   [`LINE_CAP`] bytes per stream, and turns write errors into counted, dropped records
//!   rather than stopping: a full disk must not wedge the container's output pipes.
//! - [`LogReader`] takes a consistent snapshot of the files for `logs`, `logs --tail N`
//!   (read backwards by blocks) and `logs -f` ([`Follow`], which polls and survives
//!   rotation). Malformed lines, such as a record torn by a crash, are skipped.

mod json;
mod reader;
mod time;
mod writer;

use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Categorized, Category};

pub use reader::{Follow, LogReader, Records};
pub use time::{format_rfc3339_nano, parse_rfc3339};
pub use writer::{LogConfig, LogWriter, LogWriterStats};

/// Most content bytes one record carries; a longer line is split into records of this size
/// that have no trailing newline (Docker's copier uses the same 16 KiB buffer).
pub const LINE_CAP: usize = 16 * 1024;

/// Longest line the reader accepts; longer lines are skipped without being buffered whole.
/// A record of [`LINE_CAP`] bytes that all need `\u00XX` escapes is under 100 KiB.
pub const MAX_RECORD_LINE: usize = 1024 * 1024;

/// Default size of one log file before rotation, as Docker's `max-size` when set for it.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// Default number of files kept, the live one included.
pub const DEFAULT_MAX_FILES: usize = 3;

/// Name of the live log file inside a container's directory.
pub const LOG_FILE_NAME: &str = "container.log";

/// Which pipe of the container a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// One decoded log record.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LogRecord {
    /// Which pipe it came from.
    pub stream: Stream,
    /// The text, with its trailing `\n` unless the record is a partial line. Invalid UTF-8
    /// from the container was already replaced by U+FFFD when it was written.
    #[serde(default)]
    pub log: String,
    /// The timestamp exactly as stored (RFC 3339 with nanoseconds, UTC).
    pub time: String,
}

impl LogRecord {
    /// The stored timestamp, if it parses.
    pub fn timestamp(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.time)
    }

    /// Decodes one line of a log file (without or with its newline); `None` if malformed.
    pub fn parse(line: &[u8]) -> Option<LogRecord> {
        serde_json::from_slice(line).ok()
    }
}

/// Errors of the log writer and reader, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("open log file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("write log file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("rotate log file {path}: {source}")]
    Rotate { path: PathBuf, source: io::Error },
    #[error("read log file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("invalid log options: {reason}")]
    InvalidConfig { reason: String },
}

impl Categorized for LogError {
    fn category(&self) -> Category {
        match self {
            LogError::InvalidConfig { .. } => Category::Invalid,
            LogError::Open { source, .. } | LogError::Read { source, .. }
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Category::NotFound
            }
            _ => Category::Internal,
        }
    }
}

/// `container.log.<n>` next to the live file `container.log`.
pub(crate) fn rotated_path(live: &std::path::Path, n: usize) -> PathBuf {
    let mut name = live.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The rotated files that exist next to `live`, newest (lowest number) first. Listed from the
/// directory rather than probed one by one, so a gap left by a crash mid-rotation does not
/// hide older files.
pub(crate) fn rotated_files(live: &std::path::Path) -> io::Result<Vec<(usize, PathBuf)>> {
    let dir = match live.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let Some(base) = live.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(num) = name
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('.'))
        else {
            continue;
        };
        // Canonical decimal only: "container.log.01" is not ours.
        if num.is_empty()
            || num.len() > 9
            || num.starts_with('0')
            || !num.bytes().all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(n) = num.parse::<usize>() {
            out.push((n, dir.join(name)));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

#[cfg(test)]
mod tests;
