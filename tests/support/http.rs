//! Minimal HTTP/1.1 message-head parsing shared by the token server and the fault proxy.

use std::io::{self, Read};

/// Largest request or response head we accept; the peers are our own tests and a registry.
const MAX_HEAD: usize = 64 * 1024;

/// A parsed message head: the start line split in three and the header fields in order.
#[derive(Debug, Clone)]
pub struct Head {
    /// Request: method; response: protocol version.
    pub first: String,
    /// Request: target; response: status code.
    pub second: String,
    /// Request: protocol version; response: reason phrase.
    pub third: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn status(&self) -> u16 {
        self.second.parse().unwrap_or(0)
    }
}

/// Reads until the end of a message head; returns the head and any body bytes read past it.
/// `Ok(None)` when the peer closed before sending anything.
pub fn read_head(r: &mut impl Read) -> io::Result<Option<(Head, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find_end(&buf) {
            let head = parse_head(&buf[..end])?;
            return Ok(Some((head, buf[end + 4..].to_vec())));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message head too large",
            ));
        }
        let n = r.read(&mut chunk)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a message head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn parse_head(bytes: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message head is not utf-8"))?;
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let mut parts = start.splitn(3, ' ');
    let first = parts.next().unwrap_or_default().to_string();
    let second = parts.next().unwrap_or_default().to_string();
    let third = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Head {
        first,
        second,
        third,
        headers,
    })
}

/// Percent-decodes a query component (`+` is a space).
pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Splits `a=1&b=2&b=3` into decoded pairs, in order.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (url_decode(k), url_decode(v)),
            None => (url_decode(p), String::new()),
        })
        .collect()
}

/// Percent-encodes a query component.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A loopback HTTP server: one thread accepting, one thread per connection calling
/// `handle`. Dropping it stops accepting and joins the accept thread.
pub struct ServerThread {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    pub fn spawn<S: Send + Sync + 'static>(
        listener: std::net::TcpListener,
        state: std::sync::Arc<S>,
        handle: fn(std::net::TcpStream, &S) -> io::Result<()>,
    ) -> ServerThread {
        use std::sync::atomic::{AtomicBool, Ordering};
        let addr = listener.local_addr().expect("listener addr");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, &state);
                    });
                }
            })
        };
        ServerThread {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, std::time::Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
