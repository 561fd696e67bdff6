//! The shim side: turns pipe output into json-file records and rotates by size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::json::{encode_record, incomplete_utf8_tail};
use super::time::format_rfc3339_nano;
use super::{
    rotated_files, rotated_path, LogError, Stream, DEFAULT_MAX_FILES, DEFAULT_MAX_SIZE, LINE_CAP,
};

/// Encoded bytes collected before a write; one pipe read of 64 KiB of short lines becomes
/// a single write instead of hundreds.
const BATCH_BYTES: usize = 128 * 1024;

/// Buffers larger than this are freed once empty.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Most files a configuration may keep; more is a typo, not a log policy.
const MAX_FILES_LIMIT: usize = 1000;

/// Size-based rotation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Bytes per file: a record that would take the live file past this size goes into a
    /// fresh file instead (a file is only larger when a single record is).
    pub max_size: u64,
    /// Files kept, the live one included; the oldest is dropped on rotation. With 1, the
    /// live file is replaced by an empty one when full.
    pub max_files: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), LogError> {
        if self.max_size == 0 {
            return Err(LogError::InvalidConfig {
                reason: "max size must be at least 1 byte".into(),
            });
        }
        if self.max_files == 0 || self.max_files > MAX_FILES_LIMIT {
            return Err(LogError::InvalidConfig {
                reason: format!(
                    "max files must be between 1 and {MAX_FILES_LIMIT}, not {}",
                    self.max_files
                ),
            });
        }
        Ok(())
    }

    /// Upper bound of the bytes all files take together.
    pub fn max_total_bytes(&self) -> u64 {
        self.max_files as u64 * self.max_size.max(max_record_bytes())
    }
}

/// Largest record the writer produces: [`LINE_CAP`] bytes that each need a `\u00XX` escape,
/// plus the fixed fields (and a newline that terminates a torn record).
pub(crate) const fn max_record_bytes() -> u64 {
    (LINE_CAP * 6 + 128) as u64
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogWriterStats {
    /// Records written.
    pub records: u64,
    /// Bytes written to files (all files, across rotations).
    pub bytes: u64,
    /// Records lost to write or open errors.
    pub dropped: u64,
    /// Successful rotations.
    pub rotations: u64,
}

#[derive(Debug, Default)]
struct Pending {
    /// Start of a line not yet terminated, at most `LINE_CAP` bytes.
    bytes: Vec<u8>,
    /// Timestamp shared by the records of a line that was split into partial records.
    partial_time: Option<SystemTime>,
}

/// Writes a container's stdout and stderr as json-file records with size-based rotation.
///
/// Feed it with [`LogWriter::write`] whatever the pipes yield; call
/// [`LogWriter::close_stream`] at a pipe's EOF and [`LogWriter::close`] at the end (dropping it
/// also flushes unterminated lines). Errors never interrupt the caller: the record is counted
/// as dropped, the error is kept for [`LogWriter::take_error`], and the next write reopens the
/// file if needed.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    config: LogConfig,
    file: Option<File>,
    size: u64,
    /// The file may end in a partial record (crash or failed write): the next record starts
    /// with a newline so the damage stays confined to one skipped line.
    torn: bool,
    pending: [Pending; 2],
    /// Records encoded during one `write` call, written together (at most about
    /// [`BATCH_BYTES`] plus one record).
    batch: Vec<u8>,
    batch_records: u64,
    /// The time stamped on records completed by the current `write` call.
    now: Option<SystemTime>,
    /// Last timestamp formatted, reused while it does not change.
    stamp: (SystemTime, String),
    clock: fn() -> SystemTime,
    stats: LogWriterStats,
    last_error: Option<LogError>,
}

impl LogWriter {
    /// Opens (or creates) the live log file at `path` for appending, e.g.
    /// `<container dir>/container.log`, and drops rotated files beyond `max_files`.
    pub fn open(path: impl Into<PathBuf>, config: LogConfig) -> Result<LogWriter, LogError> {
        config.validate()?;
        let path = path.into();
        let file = open_append(&path).map_err(|source| LogError::Open {
            path: path.clone(),
            source,
        })?;
        let size = file
            .metadata()
            .map_err(|source| LogError::Open {
                path: path.clone(),
                source,
            })?
            .len();
        let torn = ends_torn(&file, size);
        // A smaller max_files than last time: the surplus would never be rotated away.
        if let Ok(files) = rotated_files(&path) {
            for (n, p) in files {
                if n >= config.max_files {
                    let _ = fs::remove_file(p);
                }
            }
        }
        Ok(LogWriter {
            path,
            config,
            file: Some(file),
            size,
            torn,
            pending: Default::default(),
            batch: Vec::new(),
            batch_records: 0,
            now: None,
            stamp: (SystemTime::UNIX_EPOCH, String::new()),
            clock: SystemTime::now,
            stats: LogWriterStats::default(),
            last_error: None,
        })
    }

    /// Replaces the clock that stamps records (tests, replays).
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> LogWriter {
        self.clock = clock;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> LogConfig {
        self.config
    }

    pub fn stats(&self) -> LogWriterStats {
        self.stats
    }

    /// Bytes held for unterminated lines, both streams (each under [`LINE_CAP`]).
    pub fn buffered(&self) -> usize {
        self.pending.iter().map(|p| p.bytes.len()).sum()
    }

    #[cfg(test)]
    pub(super) fn encode_buffer_capacity(&self) -> usize {
        self.batch.capacity()
    }

    /// The most recent error since the last call, if any.
    pub fn take_error(&mut self) -> Option<LogError> {
        self.last_error.take()
    }

    /// Logs bytes read from one of the container's pipes. Complete lines become one record
    /// each; an unterminated rest is kept (at most [`LINE_CAP`] bytes) until its newline
    /// arrives, or written as a partial record without newline when the cap is reached.
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let held = self.pending[stream.index()].bytes.len();
            let room = LINE_CAP - held;
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= room => {
                    let (line, tail) = rest.split_at(i + 1);
                    if held == 0 {
                        self.emit(stream, line, true);
                    } else {
                        let mut pending = std::mem::take(&mut self.pending[stream.index()].bytes);
                        pending.extend_from_slice(line);
                        self.emit(stream, &pending, true);
                        pending.clear();
                        self.pending[stream.index()].bytes = pending;
                    }
                    rest = tail;
                }
                _ if rest.len() < room => {
                    self.pending[stream.index()].bytes.extend_from_slice(rest);
                    rest = &[];
                }
                _ => {
                    // The line outgrows the cap: fill the buffer and flush it as a partial.
                    self.pending[stream.index()]
                        .bytes
                        .extend_from_slice(&rest[..room]);
                    rest = &rest[room..];
                    self.flush_partial(stream, true);
                }
            }
        }
        self.flush_batch();
        self.now = None;
    }

    /// The pipe of `stream` reached EOF: its unterminated last line becomes a record without
    /// newline, as Docker writes it.
    pub fn close_stream(&mut self, stream: Stream) {
        self.flush_partial(stream, false);
        self.flush_batch();
        self.now = None;
    }

    /// Flushes both streams' unterminated lines and syncs the file; returns the last error
    /// that occurred since [`LogWriter::take_error`] was called, if any.
    pub fn close(mut self) -> Result<LogWriterStats, LogError> {
        self.close_stream(Stream::Stdout);
        self.close_stream(Stream::Stderr);
        if let Some(file) = &self.file {
            if let Err(source) = file.sync_data() {
                self.last_error = Some(LogError::Write {
                    path: self.path.clone(),
                    source,
                });
            }
        }
        match self.last_error.take() {
            Some(e) => Err(e),
            None => Ok(self.stats),
        }
    }

    /// Writes the held bytes of `stream` as a partial record. When the line continues
    /// (`split_utf8`), an incomplete UTF-8 character at the end is carried over so it is not
    /// turned into replacement characters.
    fn flush_partial(&mut self, stream: Stream, split_utf8: bool) {
        let mut pending = std::mem::take(&mut self.pending[stream.index()].bytes);
        if pending.is_empty() {
            self.pending[stream.index()].bytes = pending;
            return;
        }
        let carry = if split_utf8 {
            incomplete_utf8_tail(&pending)
        } else {
            0
        };
        let cut = pending.len() - carry;
        if cut > 0 {
            self.emit(stream, &pending[..cut], false);
        }
        pending.drain(..cut);
        if !split_utf8 {
            self.pending[stream.index()].partial_time = None;
        }
        self.pending[stream.index()].bytes = pending;
    }

    /// Encodes one record into the batch; `complete` records end the line (their content
    /// ends with the newline). All records completed by one `write` call carry the same
    /// time: their bytes arrived together.
    fn emit(&mut self, stream: Stream, content: &[u8], complete: bool) {
        let now = *self.now.get_or_insert_with(self.clock);
        let slot = &mut self.pending[stream.index()];
        let time = if complete {
            slot.partial_time.take().unwrap_or(now)
        } else {
            *slot.partial_time.get_or_insert(now)
        };
        if self.stamp.0 != time || self.stamp.1.is_empty() {
            self.stamp = (time, format_rfc3339_nano(time));
        }
        let start = self.batch.len();
        encode_record(&mut self.batch, content, stream, &self.stamp.1);
        self.batch_records += 1;
        let before = self.size + start as u64;
        if before > 0 && self.size + self.batch.len() as u64 > self.config.max_size {
            // This record starts a fresh file: write what precedes it, rotate, carry it over.
            let record = self.batch.split_off(start);
            self.batch_records -= 1;
            self.flush_batch();
            if self.size > 0 {
                if let Err(source) = self.rotate() {
                    self.last_error = Some(LogError::Rotate {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
            self.batch.extend_from_slice(&record);
            self.batch_records += 1;
        }
        if self.batch.len() >= BATCH_BYTES {
            self.flush_batch();
        }
    }

    /// Appends the batched records with one write. A file that ends in a torn record gets a
    /// newline first, so the damage stays confined to one skipped line.
    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.batch_records);
        if let Err(e) = self.append_batch() {
            self.stats.dropped += records;
            self.last_error = Some(e);
        } else {
            self.stats.records += records;
        }
        self.batch.clear();
        // An idle shim should not sit on a burst's buffers (its memory budget is small).
        if self.batch.capacity() > KEEP_CAPACITY {
            self.batch = Vec::new();
        }
        for p in &mut self.pending {
            if p.bytes.is_empty() && p.bytes.capacity() > KEEP_CAPACITY {
                p.bytes = Vec::new();
            }
        }
    }

    fn append_batch(&mut self) -> Result<(), LogError> {
        let write_err = |path: &Path, source| LogError::Write {
            path: path.to_path_buf(),
            source,
        };
        if self.file.is_none() {
            let f = open_append(&self.path).map_err(|source| LogError::Open {
                path: self.path.clone(),
                source,
            })?;
            self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.torn = ends_torn(&f, self.size);
            self.file = Some(f);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        if self.torn {
            file.write_all(b"\n")
                .map_err(|e| write_err(&self.path, e))?;
            self.size += 1;
            self.stats.bytes += 1;
            self.torn = false;
        }
        match file.write_all(&self.batch) {
            Ok(()) => {
                self.size += self.batch.len() as u64;
                self.stats.bytes += self.batch.len() as u64;
                Ok(())
            }
            Err(source) => {
                // Part of the batch may be on disk; the next write starts on a new line.
                self.torn = true;
                self.size = file.metadata().map(|m| m.len()).unwrap_or(self.size);
                Err(write_err(&self.path, source))
            }
        }
    }

    /// Shifts `container.log.N` to `.N+1` (the oldest is replaced), the live file to `.1`,
    /// then opens a fresh live file. Every step is a rename, so a crash at any point leaves
    /// complete files; the reader orders files by number, not by contiguity.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let result = if self.config.max_files <= 1 {
            match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            // Only the files that exist, highest number first; the oldest is dropped.
            let shifted = rotated_files(&self.path).and_then(|files| {
                for (n, p) in files.into_iter().rev() {
                    let done = if n + 1 >= self.config.max_files {
                        fs::remove_file(&p)
                    } else {
                        fs::rename(&p, rotated_path(&self.path, n + 1))
                    };
                    match done {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            });
            shifted.and_then(|()| fs::rename(&self.path, rotated_path(&self.path, 1)))
        };
        if result.is_ok() {
            self.stats.rotations += 1;
        }
        self.reopen(result)
    }

    /// Opens the live file after a rotation attempt (whether or not it succeeded).
    fn reopen(&mut self, result: io::Result<()>) -> io::Result<()> {
        let f = open_append(&self.path)?;
        self.size = f.metadata()?.len();
        self.torn = ends_torn(&f, self.size);
        self.file = Some(f);
        result
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.close_stream(Stream::Stdout);
        self.close_stream(Stream::Stderr);
    }
}

/// Whether a file of `size` bytes ends inside a record (its last byte is not a newline).
fn ends_torn(file: &File, size: u64) -> bool {
    let mut last = [0u8; 1];
    size > 0 && !matches!(file.read_at(&mut last, size - 1), Ok(1) if last[0] == b'\n')
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o640)
        .open(path)
}
