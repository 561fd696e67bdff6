//! The CLI side: `logs`, `logs --tail N`, `logs -f` over the live and rotated files.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{rotated_files, rotated_path, LogError, LogRecord, MAX_RECORD_LINE};

/// Bytes read per `pread`, forwards and backwards.
const CHUNK: usize = 64 * 1024;

/// How often a walk over the files is retried when a rotation happens while it is being
/// taken; after that the last walk is used, each file once.
const WALK_ATTEMPTS: usize = 20;

/// (device, inode): what a file is, whatever its name is now.
type FileId = (u64, u64);

/// One open log file of a snapshot.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: File,
    id: FileId,
    /// Just past the last newline when the snapshot was taken: a record being written (or
    /// torn by a crash) at the end is not part of the snapshot.
    end: u64,
}

/// A consistent snapshot of a container's log files, oldest first.
///
/// The files are held open, so a rotation after [`LogReader::open`] changes nothing for
/// [`LogReader::records`] and [`LogReader::tail`]; [`LogReader::follow`] continues exactly
/// where the snapshot ends.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    files: Vec<LogFile>,
}

impl LogReader {
    /// Snapshots the live log file `path` (e.g. `<container dir>/container.log`) and its
    /// rotated predecessors. A missing live file is an empty log, not an error (the
    /// container may not have written anything yet).
    pub fn open(path: impl Into<PathBuf>) -> Result<LogReader, LogError> {
        let path = path.into();
        let mut files = walk(&path, None)?;
        files.reverse();
        for f in &mut files {
            let len = f
                .file
                .metadata()
                .map_err(|source| LogError::Read {
                    path: f.path.clone(),
                    source,
                })?
                .len();
            f.end = last_line_end(&f.file, len).map_err(|source| LogError::Read {
                path: f.path.clone(),
                source,
            })?;
        }
        Ok(LogReader { path, files })
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record of the snapshot, oldest first. Malformed lines are skipped (see
    /// [`Records::skipped`]); a read error is yielded once and the iterator moves on to the
    /// next file.
    pub fn records(&self) -> Records<'_> {
        Records {
            files: &self.files,
            idx: 0,
            pos: 0,
            split: LineSplitter::default(),
            chunk: vec![0; CHUNK],
        }
    }

    /// The last `n` records of the snapshot, oldest first, read backwards by blocks from
    /// the end: the cost grows with `n`, not with the size of the files.
    pub fn tail(&self, n: usize) -> Result<Vec<LogRecord>, LogError> {
        let mut newest_first = Vec::new();
        for f in self.files.iter().rev() {
            if newest_first.len() >= n {
                break;
            }
            scan_backwards(f, n, &mut newest_first).map_err(|source| LogError::Read {
                path: f.path.clone(),
                source,
            })?;
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Follows the log from the end of the snapshot: yields records as they are appended,
    /// polling every `poll` when there is nothing new, through rotations (the live file is
    /// replaced: the rest of the old one is read, then the files that came after it).
    ///
    /// `stop` is asked whenever the follower has caught up (everything written so far was
    /// yielded); returning true ends the iteration. Use it for a deadline, a signal flag, or
    /// "the container has exited".
    pub fn follow<F: FnMut() -> bool>(self, poll: Duration, stop: F) -> Follow<F> {
        let (current, pos) = match self.files.into_iter().next_back() {
            Some(f) => {
                let end = f.end;
                (Some(f), end)
            }
            None => (None, 0),
        };
        Follow {
            path: self.path,
            current,
            pos,
            queue: VecDeque::new(),
            split: LineSplitter::default(),
            chunk: vec![0; CHUNK],
            poll,
            stop,
            done: false,
        }
    }
}

/// Iterator over the records of a [`LogReader`] snapshot.
#[derive(Debug)]
pub struct Records<'a> {
    files: &'a [LogFile],
    idx: usize,
    pos: u64,
    split: LineSplitter,
    chunk: Vec<u8>,
}

impl Records<'_> {
    /// Lines skipped so far because they were malformed, oversized or torn.
    pub fn skipped(&self) -> u64 {
        self.split.skipped
    }
}

impl Iterator for Records<'_> {
    type Item = Result<LogRecord, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.split.next_record() {
                return Some(Ok(record));
            }
            let f = self.files.get(self.idx)?;
            if self.pos >= f.end {
                self.idx += 1;
                self.pos = 0;
                self.split.reset();
                continue;
            }
            let want = CHUNK.min((f.end - self.pos) as usize);
            match f.file.read_at(&mut self.chunk[..want], self.pos) {
                Ok(0) => self.pos = f.end,
                Ok(n) => {
                    self.split.feed(&self.chunk[..n]);
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.idx += 1;
                    self.pos = 0;
                    self.split.reset();
                    return Some(Err(LogError::Read {
                        path: f.path.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

/// Iterator returned by [`LogReader::follow`]; it ends when `stop` says so at a moment the
/// follower has caught up, or after yielding an error.
#[derive(Debug)]
pub struct Follow<F> {
    path: PathBuf,
    current: Option<LogFile>,
    pos: u64,
    /// Files that came after `current` and are read before looking at the live path again.
    queue: VecDeque<LogFile>,
    split: LineSplitter,
    chunk: Vec<u8>,
    poll: Duration,
    stop: F,
    done: bool,
}

impl<F> Follow<F> {
    /// Lines skipped so far because they were malformed, oversized or torn.
    pub fn skipped(&self) -> u64 {
        self.split.skipped
    }
}

impl<F: FnMut() -> bool> Iterator for Follow<F> {
    type Item = Result<LogRecord, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some(record) = self.split.next_record() {
                return Some(Ok(record));
            }
            match self.advance() {
                Ok(true) => {}
                Ok(false) => {
                    if (self.stop)() {
                        self.done = true;
                    } else {
                        std::thread::sleep(self.poll);
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl<F> Follow<F> {
    /// Brings in more bytes or switches files; false when there is nothing new yet.
    fn advance(&mut self) -> Result<bool, LogError> {
        let Some(cur_id) = self.current.as_ref().map(|c| c.id) else {
            // No file when following began: once one appears, every file present is new
            // (the live one may even have been rotated already).
            self.queue = successors(&self.path, None)?;
            return Ok(match self.queue.pop_front() {
                Some(f) => {
                    self.current = Some(f);
                    self.pos = 0;
                    true
                }
                None => false,
            });
        };
        if self.read_more()? {
            return Ok(true);
        }
        if let Some(next) = self.queue.pop_front() {
            self.split.reset();
            self.current = Some(next);
            self.pos = 0;
            return Ok(true);
        }
        match fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == cur_id => {
                if m.len() < self.pos {
                    // Truncated in place (copytruncate): start over.
                    self.pos = 0;
                    self.split.reset();
                    return Ok(true);
                }
                Ok(false)
            }
            Ok(_) => self.rotated(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.rotated(),
            Err(source) => Err(LogError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The live path no longer names the current file.
    fn rotated(&mut self) -> Result<bool, LogError> {
        // The writer finished with the old file before renaming it: whatever it wrote is
        // readable through our descriptor, so drain it first.
        if self.read_more()? {
            return Ok(true);
        }
        let Some(cur) = &self.current else {
            return Ok(false);
        };
        self.queue = successors(&self.path, Some(cur.id))?;
        Ok(!self.queue.is_empty())
    }

    /// Reads the next chunk of the current file; false at its end.
    fn read_more(&mut self) -> Result<bool, LogError> {
        let Some(cur) = &self.current else {
            return Ok(false);
        };
        loop {
            match cur.file.read_at(&mut self.chunk, self.pos) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.split.feed(&self.chunk[..n]);
                    self.pos += n as u64;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(LogError::Read {
                        path: cur.path.clone(),
                        source,
                    })
                }
            }
        }
    }
}

/// Splits bytes into lines, holding at most [`MAX_RECORD_LINE`] plus one chunk.
#[derive(Debug, Default)]
struct LineSplitter {
    buf: Vec<u8>,
    start: usize,
    /// Inside a line that outgrew the limit: drop bytes up to its newline.
    oversized: bool,
    skipped: u64,
}

impl LineSplitter {
    fn feed(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next well-formed record among the complete lines buffered.
    fn next_record(&mut self) -> Option<LogRecord> {
        loop {
            let rest = &self.buf[self.start..];
            let Some(i) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > MAX_RECORD_LINE {
                    self.oversized = true;
                    self.buf.clear();
                    self.start = 0;
                }
                return None;
            };
            let line = &rest[..i];
            self.start += i + 1;
            if std::mem::take(&mut self.oversized) {
                self.skipped += 1;
                continue;
            }
            match LogRecord::parse(line) {
                Some(record) => return Some(record),
                None => self.skipped += 1,
            }
        }
    }

    /// Forgets an unterminated rest (the end of a file was reached).
    fn reset(&mut self) {
        if self.oversized || self.start < self.buf.len() {
            self.skipped += 1;
        }
        self.buf.clear();
        self.start = 0;
        self.oversized = false;
    }
}

/// Opens one log file with its identity; `None` if it does not exist.
fn open_log_file(path: &Path) -> Result<Option<LogFile>, LogError> {
    let err = |source| LogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let m = file.metadata().map_err(err)?;
    Ok(Some(LogFile {
        path: path.to_path_buf(),
        file,
        id: (m.dev(), m.ino()),
        end: m.len(),
    }))
}

/// Opens the log's files newest first, from the live file through `.1`, `.2`, …, stopping
/// before `stop` when it is met. Repeated until no rotation happened during the walk (after
/// [`WALK_ATTEMPTS`], the last walk is used, each file once).
///
/// Names are probed in increasing order rather than taken from a directory listing: a
/// listing can miss an entry renamed while it is read. A rotation renames from the highest
/// number down, the walk goes up, so a walk that meets one sees a file twice (the duplicate
/// is dropped) but never misses one; a complete rotation renames the live file, which the
/// check before and after the walk catches.
fn walk(path: &Path, stop: Option<FileId>) -> Result<Vec<LogFile>, LogError> {
    let mut newest_first: Vec<LogFile> = Vec::new();
    for _ in 0..WALK_ATTEMPTS {
        newest_first.clear();
        let before = live_id(path)?;
        // Highest number present, plus a margin for a shift under way while listing.
        let highest = rotated_files(path)
            .map_err(|source| LogError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .last()
            .map_or(0, |(n, _)| *n);
        let live = open_log_file(path)?;
        let opened = live.as_ref().map(|f| f.id);
        let mut stopped = opened.is_some() && opened == stop;
        newest_first.extend(live.filter(|_| !stopped));
        let mut n = 1;
        while !stopped && n <= highest + 2 {
            match open_log_file(&rotated_path(path, n))? {
                Some(f) if Some(f.id) == stop => stopped = true,
                Some(f) => newest_first.push(f),
                None => {}
            }
            n += 1;
        }
        if before == opened && live_id(path)? == before {
            break;
        }
    }
    let mut seen = HashSet::new();
    newest_first.retain(|f| seen.insert(f.id));
    Ok(newest_first)
}

/// The files written after the file `id`, oldest first, opened. When `id` is gone (dropped
/// by rotation, or replaced with max_files = 1) or `None`, every file present is newer.
fn successors(path: &Path, id: Option<FileId>) -> Result<VecDeque<LogFile>, LogError> {
    Ok(walk(path, id)?.into_iter().rev().collect())
}

/// The identity of the file `path` names now, if any.
fn live_id(path: &Path) -> Result<Option<FileId>, LogError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LogError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Position just past the last newline before `len` (0 if none). Looks back at most
/// [`MAX_RECORD_LINE`] plus a chunk: an unterminated run longer than that is an oversized
/// line anyway, and the reader starting inside it skips it.
fn last_line_end(file: &File, len: u64) -> io::Result<u64> {
    let mut block = vec![0u8; CHUNK.min(len as usize)];
    let mut pos = len;
    let limit = len.saturating_sub((MAX_RECORD_LINE + CHUNK) as u64);
    while pos > limit {
        let start = pos.saturating_sub(CHUNK as u64).max(limit);
        let n = (pos - start) as usize;
        file.read_exact_at(&mut block[..n], start)?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        pos = start;
    }
    Ok(pos)
}

/// Collects records of `f` from its end backwards into `out` (newest first) until `out`
/// holds `want` records or the file is exhausted.
fn scan_backwards(f: &LogFile, want: usize, out: &mut Vec<LogRecord>) -> io::Result<()> {
    if f.end == 0 || out.len() >= want {
        return Ok(());
    }
    let mut block = vec![0u8; CHUNK];
    // The byte at end-1 is the newline ending the last line; `line` holds the part of the
    // current line already seen (it grows to the left), `oversized` when it outgrew the cap.
    let mut pos = f.end - 1;
    let mut line: Vec<u8> = Vec::new();
    let mut oversized = false;
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK as u64);
        let n = (pos - start) as usize;
        f.file.read_exact_at(&mut block[..n], start)?;
        let mut hi = n;
        while let Some(i) = block[..hi].iter().rposition(|&b| b == b'\n') {
            if !oversized {
                let record = if line.is_empty() {
                    LogRecord::parse(&block[i + 1..hi])
                } else {
                    let mut whole = block[i + 1..hi].to_vec();
                    whole.extend_from_slice(&line);
                    LogRecord::parse(&whole)
                };
                if let Some(r) = record {
                    out.push(r);
                    if out.len() >= want {
                        return Ok(());
                    }
                }
            }
            line.clear();
            oversized = false;
            hi = i;
        }
        if !oversized {
            if hi + line.len() > MAX_RECORD_LINE {
                oversized = true;
                line = Vec::new();
            } else {
                let mut grown = Vec::with_capacity(hi + line.len());
                grown.extend_from_slice(&block[..hi]);
                grown.extend_from_slice(&line);
                line = grown;
            }
        }
        pos = start;
    }
    // The first line of the file.
    if !oversized {
        if let Some(r) = LogRecord::parse(&line) {
            out.push(r);
        }
    }
    Ok(())
}
