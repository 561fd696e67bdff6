//! The admin API's client (the CLI's `status`, `history`, `sync`, `events`): a minimal
//! synchronous HTTP/1.1 client over the agent's unix socket. One request per connection
//! (`Connection: close`); bodies by Content-Length, chunked, or until close; every read is
//! bounded.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::status::{AgentStatus, Event, HistoryEntry};
use crate::error::{Categorized, Category};
use crate::jobs::{JobInfo, RunRecord};

/// Longest status line plus headers.
pub const HEAD_MAX: usize = 64 << 10;
const HEADERS_MAX: usize = 100;
/// Longest chunk-size line (with extensions) or trailer line.
const CHUNK_LINE_MAX: usize = 1024;
/// Largest non-streamed response body (status of hundreds of projects is well below this).
pub const BODY_MAX: u64 = 32 << 20;
/// Longest single event line.
pub const EVENT_LINE_MAX: usize = 1 << 20;
/// Read/write timeout of calls that are not following a stream.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no agent listening on {}: is `dockmaster agent` running?", socket.display())]
    NotRunning { socket: PathBuf },
    #[error("connecting to the agent at {}: {source}", socket.display())]
    Connect { socket: PathBuf, source: io::Error },
    #[error("talking to the agent at {}: {source}", socket.display())]
    Io { socket: PathBuf, source: io::Error },
    #[error("the agent at {} sent a malformed response: {reason}", socket.display())]
    Malformed { socket: PathBuf, reason: String },
    #[error("the agent at {} refused {what}: {status} {message}", socket.display())]
    Status {
        socket: PathBuf,
        what: String,
        status: u16,
        message: String,
    },
    #[error("decoding the agent's {what}: {source}")]
    Decode {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl Categorized for ClientError {
    fn category(&self) -> Category {
        match self {
            ClientError::NotRunning { .. } => Category::NotFound,
            ClientError::Connect { .. } | ClientError::Io { .. } => Category::Transient,
            ClientError::Status { status, .. } if *status >= 500 => Category::Transient,
            ClientError::Status { .. } => Category::Invalid,
            ClientError::Malformed { .. } | ClientError::Decode { .. } => Category::Internal,
        }
    }
}

/// A parsed status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn malformed(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// Reads one line ending in LF (the CR before it is dropped) of at most `max` bytes.
/// `Ok(None)` at EOF before any byte.
fn read_line<R: BufRead>(r: &mut R, max: usize) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = r.take(max as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > max {
            malformed(format!("line longer than {max} bytes"))
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line")
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| malformed("line is not utf-8"))
}

/// Parses the status line and headers, reading at most `HEAD_MAX` bytes.
pub fn read_head<R: BufRead>(r: &mut R) -> io::Result<ResponseHead> {
    let mut budget = HEAD_MAX;
    let mut next = |r: &mut R| -> io::Result<String> {
        let line = read_line(r, budget)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response",
            )
        })?;
        budget = budget.saturating_sub(line.len() + 2);
        Ok(line)
    };
    let status_line = next(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(malformed(format!("bad status line {status_line:?}")));
    }
    let status = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| malformed(format!("bad status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let line = next(r)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == HEADERS_MAX {
            return Err(malformed(format!("more than {HEADERS_MAX} headers")));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(ResponseHead {
        status,
        reason,
        headers,
    })
}

enum Framing {
    Length(u64),
    /// Bytes left in the current chunk; `None` before a chunk-size line.
    Chunked {
        left: Option<u64>,
        done: bool,
    },
    UntilClose,
}

/// A response body as a `Read`: decodes chunked transfer-encoding and stops at the declared
/// length. A chunked body that ends without its last chunk is an `UnexpectedEof` error.
pub struct BodyReader<R> {
    inner: R,
    framing: Framing,
}

impl<R: BufRead> BodyReader<R> {
    pub fn new(inner: R, head: &ResponseHead) -> io::Result<Self> {
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let framing = if chunked {
            Framing::Chunked {
                left: None,
                done: false,
            }
        } else if let Some(len) = head.header("content-length") {
            Framing::Length(
                len.parse()
                    .map_err(|_| malformed(format!("bad content-length {len:?}")))?,
            )
        } else if head.status == 204 || head.status == 304 {
            Framing::Length(0)
        } else {
            Framing::UntilClose
        };
        Ok(BodyReader { inner, framing })
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_string())
}

impl<R: BufRead> Read for BodyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.framing {
            Framing::UntilClose => self.inner.read(buf),
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(eof("connection closed before the end of the body"));
                }
                *left -= n as u64;
                Ok(n)
            }
            Framing::Chunked { left, done } => loop {
                if *done {
                    return Ok(0);
                }
                match left {
                    Some(0) => {
                        // The CRLF after a chunk's data.
                        let line = read_line(&mut self.inner, 2)?
                            .ok_or_else(|| eof("connection closed after a chunk"))?;
                        if !line.is_empty() {
                            return Err(malformed("chunk data longer than its size"));
                        }
                        *left = None;
                    }
                    Some(n) => {
                        let want = buf.len().min(usize::try_from(*n).unwrap_or(usize::MAX));
                        let got = self.inner.read(&mut buf[..want])?;
                        if got == 0 {
                            return Err(eof("connection closed inside a chunk"));
                        }
                        *n -= got as u64;
                        return Ok(got);
                    }
                    None => {
                        let line = read_line(&mut self.inner, CHUNK_LINE_MAX)?
                            .ok_or_else(|| eof("connection closed before the last chunk"))?;
                        let size = line.split(';').next().unwrap_or_default().trim();
                        let size = u64::from_str_radix(size, 16)
                            .map_err(|_| malformed(format!("bad chunk size {line:?}")))?;
                        if size == 0 {
                            // Trailers, up to the empty line.
                            let mut trailers = 0;
                            loop {
                                let t = read_line(&mut self.inner, CHUNK_LINE_MAX)?
                                    .ok_or_else(|| eof("connection closed in the trailers"))?;
                                if t.is_empty() {
                                    break;
                                }
                                trailers += 1;
                                if trailers > HEADERS_MAX {
                                    return Err(malformed("too many trailers"));
                                }
                            }
                            *done = true;
                        } else {
                            *left = Some(size);
                        }
                    }
                }
            },
        }
    }
}

/// Reads a whole body of at most `max` bytes.
pub fn read_body_limited<R: Read>(body: R, max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    body.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(malformed(format!("response body larger than {max} bytes")));
    }
    Ok(out)
}

/// Writes one request (`Connection: close`) and parses the response head; the body is read
/// from the returned reader.
pub fn send<S: Read + Write>(
    mut stream: S,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> io::Result<(ResponseHead, BodyReader<BufReader<S>>)> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nUser-Agent: dockmaster/{}\r\n", env!("CARGO_PKG_VERSION"));
    for (name, value) in headers {
        if name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad request header {name:?}"),
            ));
        }
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    match body {
        Some((content_type, data)) => req.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            data.len()
        )),
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    stream.write_all(req.as_bytes())?;
    if let Some((_, data)) = body {
        stream.write_all(data)?;
    }
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let body = BodyReader::new(reader, &head)?;
    Ok((head, body))
}

/// The admin API over the agent's unix socket.
#[derive(Debug, Clone)]
pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        AdminClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn connect(&self, timeout: Option<Duration>) -> Result<UnixStream, ClientError> {
        let stream = UnixStream::connect(&self.socket).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
                socket: self.socket.clone(),
            },
            _ => ClientError::Connect {
                socket: self.socket.clone(),
                source,
            },
        })?;
        let io = |source| ClientError::Io {
            socket: self.socket.clone(),
            source,
        };
        stream.set_read_timeout(timeout).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        Ok(stream)
    }

    fn io_error(&self, source: io::Error) -> ClientError {
        if source.kind() == io::ErrorKind::InvalidData {
            ClientError::Malformed {
                socket: self.socket.clone(),
                reason: source.to_string(),
            }
        } else {
            ClientError::Io {
                socket: self.socket.clone(),
                source,
            }
        }
    }

    /// Sends a request and returns the body of a 2xx response; other statuses are errors
    /// carrying the agent's message.
    fn call(
        &self,
        method: &str,
        target: &str,
        body: Option<(&str, &[u8])>,
        timeout: Option<Duration>,
    ) -> Result<(ResponseHead, BodyReader<BufReader<UnixStream>>), ClientError> {
        let stream = self.connect(timeout)?;
        let (head, reader) =
            send(stream, method, target, &[], body).map_err(|e| self.io_error(e))?;
        if !(200..300).contains(&head.status) {
            let text = read_body_limited(reader, 64 << 10).unwrap_or_default();
            let message = String::from_utf8_lossy(&text).trim().to_string();
            return Err(ClientError::Status {
                socket: self.socket.clone(),
                what: format!("{method} {target}"),
                status: head.status,
                message: if message.is_empty() {
                    head.reason
                } else {
                    message
                },
            });
        }
        Ok((head, reader))
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        target: &str,
        what: &'static str,
    ) -> Result<T, ClientError> {
        let (_, reader) = self.call("GET", target, None, Some(IO_TIMEOUT))?;
        let body = read_body_limited(reader, BODY_MAX).map_err(|e| self.io_error(e))?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode { what, source })
    }

    pub fn status(&self) -> Result<AgentStatus, ClientError> {
        self.get_json("/v1/status", "status")
    }

    /// The raw status JSON (for `--format json`, which prints what the agent sent).
    pub fn status_value(&self) -> Result<serde_json::Value, ClientError> {
        self.get_json("/v1/status", "status")
    }

    pub fn history(&self, project: Option<&str>) -> Result<Vec<HistoryEntry>, ClientError> {
        let target = match project {
            Some(p) => format!("/v1/history?project={}", query_escape(p)),
            None => "/v1/history".to_string(),
        };
        self.get_json(&target, "history")
    }

    pub fn sync(&self, now: bool) -> Result<(), ClientError> {
        let body = serde_json::json!({ "now": now }).to_string();
        let (_, reader) = self.call(
            "POST",
            "/v1/sync",
            Some(("application/json", body.as_bytes())),
            Some(IO_TIMEOUT),
        )?;
        read_body_limited(reader, 64 << 10).map_err(|e| self.io_error(e))?;
        Ok(())
    }

    /// Every job the agent schedules, with its next fire time and latest runs.
    pub fn jobs(&self) -> Result<Vec<JobInfo>, ClientError> {
        self.get_json("/v1/jobs", "jobs")
    }

    /// The runs the agent keeps of `project/service`, oldest first.
    pub fn job_runs(&self, project: &str, service: &str) -> Result<Vec<RunRecord>, ClientError> {
        let target = format!(
            "/v1/jobs/{}/{}/runs",
            query_escape(project),
            query_escape(service)
        );
        self.get_json(&target, "job runs")
    }

    /// Starts a run of `project/service` now; returns its sequence number. A job that does
    /// not exist is a 404 [`ClientError::Status`], a run refused by `concurrency: forbid` a
    /// 409.
    pub fn run_job(&self, project: &str, service: &str) -> Result<u64, ClientError> {
        #[derive(serde::Deserialize)]
        struct Started {
            run: u64,
        }
        let target = format!(
            "/v1/jobs/{}/{}/run",
            query_escape(project),
            query_escape(service)
        );
        let (_, reader) = self.call("POST", &target, None, Some(IO_TIMEOUT))?;
        let body = read_body_limited(reader, 64 << 10).map_err(|e| self.io_error(e))?;
        let started: Started =
            serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
                what: "job run",
                source,
            })?;
        Ok(started.run)
    }

    /// Calls `each` for every event: the agent's recent ones, then (with `follow`) each new
    /// one until the agent closes the stream. `each` returning false stops early.
    pub fn events(
        &self,
        follow: bool,
        mut each: impl FnMut(Event) -> bool,
    ) -> Result<(), ClientError> {
        let target = format!("/v1/events?follow={follow}");
        // Following waits for events as long as it takes.
        let timeout = (!follow).then_some(IO_TIMEOUT);
        let (_, reader) = self.call("GET", &target, None, timeout)?;
        let mut lines = BufReader::new(reader);
        while let Some(line) =
            read_line(&mut lines, EVENT_LINE_MAX).map_err(|e| self.io_error(e))?
        {
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(&line).map_err(|source| ClientError::Decode {
                what: "event",
                source,
            })?;
            if !each(event) {
                break;
            }
        }
        Ok(())
    }
}

/// Percent-encodes a query value or a path segment (everything but the unreserved
/// characters, so `/` cannot split a segment).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(raw: &[u8]) -> io::Result<(ResponseHead, Vec<u8>)> {
        let mut r = BufReader::new(Cursor::new(raw.to_vec()));
        let head = read_head(&mut r)?;
        let body = read_body_limited(BodyReader::new(r, &head)?, 1 << 20)?;
        Ok((head, body))
    }

    #[test]
    fn content_length_body() {
        let (head, body) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
        )
        .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.reason, "OK");
        assert_eq!(head.header("content-type"), Some("text/plain"));
        assert_eq!(head.header("Content-Type"), Some("text/plain"));
        assert_eq!(body, b"hello");
        let err = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nIGNORED";
        let (_, body) = parse(raw).unwrap();
        assert_eq!(body, b"hello 0123456789");
    }

    #[test]
    fn chunked_body_read_one_byte_at_a_time() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut r = BufReader::with_capacity(1, Cursor::new(raw.to_vec()));
        let head = read_head(&mut r).unwrap();
        let mut body = BodyReader::new(r, &head).unwrap();
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while body.read(&mut b).unwrap() == 1 {
            out.push(b[0]);
        }
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn chunked_errors() {
        let cases: [(&[u8], io::ErrorKind); 4] = [
            // Connection closed before the last chunk.
            (b"3\r\nabc\r\n", io::ErrorKind::UnexpectedEof),
            // Inside a chunk.
            (b"9\r\nabc", io::ErrorKind::UnexpectedEof),
            (b"zz\r\nabc\r\n0\r\n\r\n", io::ErrorKind::InvalidData),
            // Data longer than the declared size.
            (b"2\r\nabc\r\n0\r\n\r\n", io::ErrorKind::InvalidData),
        ];
        for (body, kind) in cases {
            let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            raw.extend_from_slice(body);
            let err = parse(&raw).unwrap_err();
            assert_eq!(err.kind(), kind, "{}", String::from_utf8_lossy(body));
        }
        // A huge chunk-size line is refused without reading it all.
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend(vec![b'1'; 10_000]);
        assert_eq!(parse(&raw).unwrap_err().kind(), io::ErrorKind::InvalidData);
        // A chunk size that overflows u64.
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(b"fffffffffffffffffffff\r\n");
        assert_eq!(parse(&raw).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn bodies_and_heads_are_bounded() {
        let mut raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
        raw.extend(vec![b'x'; 100]);
        let mut r = BufReader::new(Cursor::new(raw.clone()));
        let head = read_head(&mut r).unwrap();
        let err = read_body_limited(BodyReader::new(r, &head).unwrap(), 99).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut r = BufReader::new(Cursor::new(raw));
        let head = read_head(&mut r).unwrap();
        assert_eq!(
            read_body_limited(BodyReader::new(r, &head).unwrap(), 100)
                .unwrap()
                .len(),
            100
        );
        // A head that never ends.
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..HEAD_MAX / 10 {
            raw.extend_from_slice(b"X-A: 12\r\n");
        }
        assert!(read_head(&mut BufReader::new(Cursor::new(raw))).is_err());
        let mut raw = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        raw.extend(vec![b'a'; HEAD_MAX + 10]);
        let err = read_head(&mut BufReader::new(Cursor::new(raw))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn bad_heads() {
        for raw in [
            &b""[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        ] {
            assert!(parse(raw).is_err(), "{}", String::from_utf8_lossy(raw));
        }
        // Until close when neither length nor chunked is given.
        let (head, body) = parse(b"HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready\n").unwrap();
        assert_eq!(
            (head.status, head.reason.as_str()),
            (503, "Service Unavailable")
        );
        assert_eq!(body, b"not ready\n");
    }

    #[test]
    fn request_bytes() {
        struct Duplex {
            written: Vec<u8>,
            reply: Cursor<Vec<u8>>,
        }
        impl Read for Duplex {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.reply.read(buf)
            }
        }
        impl Write for Duplex {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.written.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let d = Duplex {
            written: Vec::new(),
            reply: Cursor::new(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}".to_vec()),
        };
        let (head, body) = send(
            d,
            "POST",
            "/v1/sync",
            &[("Authorization", "Bearer t")],
            Some(("application/json", b"{\"now\":true}")),
        )
        .unwrap();
        assert_eq!(head.status, 202);
        let written = String::from_utf8(body.into_inner().into_inner().written).unwrap();
        assert!(
            written.starts_with("POST /v1/sync HTTP/1.1\r\n"),
            "{written}"
        );
        assert!(written.contains("\r\nConnection: close\r\n"), "{written}");
        assert!(
            written.contains("\r\nAuthorization: Bearer t\r\n"),
            "{written}"
        );
        assert!(
            written.ends_with("Content-Length: 12\r\n\r\n{\"now\":true}"),
            "{written}"
        );
        let d = Duplex {
            written: Vec::new(),
            reply: Cursor::new(Vec::new()),
        };
        let Err(err) = send(d, "GET", "/", &[("X", "a\r\nInjected: 1")], None) else {
            panic!("a header with CRLF was sent");
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(query_escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn agent_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let err = AdminClient::new(&socket).status().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no agent listening on {}: is `dockmaster agent` running?",
                socket.display()
            )
        );
        // A socket file nobody listens on (an agent that was killed).
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let err = AdminClient::new(&socket).sync(false).unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err}");
    }
}
