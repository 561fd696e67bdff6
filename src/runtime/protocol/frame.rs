//! Framing: a big-endian u32 length, then that many bytes of JSON. Blocking helpers for any
//! `Read`/`Write`, and buffers for non-blocking sockets driven by a poll loop.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{FrameError, MAX_FRAME};

const HEADER: usize = 4;

/// Buffers grown beyond this by a large frame are freed once empty: a shim spends its life
/// idle with a few connections, and its memory budget is small.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Writes one frame carrying `payload`.
pub fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> Result<(), FrameError> {
    let header = frame_header(payload.len())?;
    // One write for small frames, so a frame is rarely split across segments.
    if payload.len() <= 4096 {
        let mut buf = Vec::with_capacity(HEADER + payload.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(payload);
        w.write_all(&buf)?;
    } else {
        w.write_all(&header)?;
        w.write_all(payload)?;
    }
    w.flush()?;
    Ok(())
}

/// Reads one frame. `Ok(None)` when the peer closed the stream between frames; a stream that
/// ends inside a frame is [`FrameError::Truncated`]. Never allocates more than [`MAX_FRAME`].
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(payload))
}

/// Serializes `message` as JSON and writes it as one frame.
pub fn write_message<W: Write, T: Serialize>(w: &mut W, message: &T) -> Result<(), FrameError> {
    write_frame(w, &serde_json::to_vec(message)?)
}

/// Reads one frame and decodes it; `Ok(None)` at a clean end of stream.
pub fn read_message<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, FrameError> {
    match read_frame(r)? {
        Some(payload) => Ok(Some(serde_json::from_slice(&payload)?)),
        None => Ok(None),
    }
}

/// `payload` with its length prefix, ready to be queued.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = frame_header(payload.len())?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(out)
}

fn frame_header(len: usize) -> Result<[u8; HEADER], FrameError> {
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    Ok((len as u32).to_be_bytes())
}

/// Reassembles frames from bytes that arrive in arbitrary pieces (non-blocking reads).
/// Holds at most one frame plus what a single read brings.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_max(MAX_FRAME)
    }

    /// A decoder with a smaller frame limit.
    pub fn with_max(max: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max: max.min(MAX_FRAME),
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Does one `read` from `r` into the buffer: `Ok(0)` at end of stream. `WouldBlock` and
    /// other errors are returned as they are.
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match r.read(&mut chunk) {
                Ok(n) => {
                    self.feed(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete frame's payload, if one is buffered. A length above the limit is
    /// an error as soon as the header is seen: the stream cannot be resynchronized after it.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if avail.len() < HEADER + len {
            return Ok(None);
        }
        let payload = avail[HEADER..HEADER + len].to_vec();
        self.start += HEADER + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
        Ok(Some(payload))
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Frames waiting to be written to a non-blocking socket.
#[derive(Debug, Default)]
pub struct OutBuffer {
    buf: Vec<u8>,
    written: usize,
}

impl OutBuffer {
    /// Queues `message` as one frame.
    pub fn push<T: Serialize>(&mut self, message: &T) -> Result<(), FrameError> {
        let payload = serde_json::to_vec(message)?;
        let header = frame_header(payload.len())?;
        if self.written == self.buf.len() {
            self.buf.clear();
            self.written = 0;
        }
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(&payload);
        Ok(())
    }

    /// Writes as much as `w` takes. `Ok(true)` once everything queued is written,
    /// `Ok(false)` when `w` would block.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        while self.written < self.buf.len() {
            match w.write(&self.buf[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        Ok(true)
    }

    pub fn is_empty(&self) -> bool {
        self.written == self.buf.len()
    }
}
