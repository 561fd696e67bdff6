//! A fault-injecting reverse proxy in front of a plain-HTTP registry: logs every request,
//! can cut a blob response short once, and can throttle blob bodies.
//!
//! One request per connection: the proxy forces `Connection: close` both ways and relays the
//! response until the registry closes, so it never parses bodies except to count bytes.

use super::http::ServerThread;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::read_head;

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    pub range: Option<String>,
    /// Upstream status (0 when the registry did not answer).
    pub status: u16,
    /// Response body bytes passed on to the client.
    pub body_bytes: u64,
    /// Whether the proxy cut this response short.
    pub cut: bool,
}

impl ProxyRequest {
    /// GET or HEAD of `/v2/<name>/blobs/<digest>`.
    pub fn is_blob(&self) -> bool {
        blob_digest(&self.path).is_some()
    }
}

/// The digest of a `/v2/<name>/blobs/<digest>` path (not an upload).
fn blob_digest(path: &str) -> Option<&str> {
    let p = path.split('?').next().unwrap_or(path);
    let (before, digest) = p.rsplit_once("/blobs/")?;
    if before.starts_with("/v2/") && !digest.contains('/') && digest.contains(':') {
        Some(digest)
    } else {
        None
    }
}

#[derive(Default)]
struct Faults {
    /// Cut the next blob GET response after this many body bytes (consumed when used).
    cut_once: Option<u64>,
    /// Cut the first GET of each distinct blob after this many bytes.
    cut_each: Option<u64>,
    cut_done: BTreeSet<String>,
}

struct Shared {
    upstream: String,
    log: Mutex<Vec<ProxyRequest>>,
    faults: Mutex<Faults>,
    /// Bytes per second for blob bodies; 0 means unthrottled.
    throttle: AtomicU64,
    /// The registry is "unreachable": every connection is closed at once.
    down: std::sync::atomic::AtomicBool,
}

/// The proxy; dropping it stops accepting (connections in flight finish on their own).
pub struct FaultProxy {
    shared: Arc<Shared>,
    server: ServerThread,
}

impl FaultProxy {
    /// Proxies to `upstream` (`127.0.0.1:PORT` of a plain-HTTP registry).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
            throttle: AtomicU64::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let server = ServerThread::spawn(listener, shared.clone(), handle);
        FaultProxy { shared, server }
    }

    /// `127.0.0.1:PORT` to use as the registry host.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// The next blob GET whose body is longer than `n` bytes gets `n` bytes, then the
    /// connection closes; later requests pass untouched.
    pub fn cut_blob_once_after(&self, n: u64) {
        self.shared.faults.lock().expect("faults").cut_once = Some(n);
    }

    /// The first GET of every distinct blob is cut after `n` bytes.
    pub fn cut_each_blob_once_after(&self, n: u64) {
        self.shared.faults.lock().expect("faults").cut_each = Some(n);
    }

    /// Limits blob response bodies to about `bytes_per_sec` per connection; `None` lifts it.
    pub fn throttle(&self, bytes_per_sec: Option<u64>) {
        self.shared
            .throttle
            .store(bytes_per_sec.unwrap_or(0), Ordering::SeqCst);
    }

    /// Every request so far, in the order their responses started.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.shared.log.lock().expect("proxy log").clone()
    }

    /// GET requests of the blob with this digest.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && blob_digest(&r.path) == Some(digest))
            .count()
    }

    /// Number of requests matching `method` whose path contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(needle))
            .count()
    }

    /// While down, every connection is closed without an answer (a registry gone from the
    /// network, as clients see it).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    pub fn clear_log(&self) {
        self.shared.log.lock().expect("proxy log").clear();
    }
}

fn handle(mut client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    if shared.down.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let Some((head, early_body)) = read_head(&mut client)? else {
        return Ok(());
    };
    let method = head.first.clone();
    let path = head.second.clone();
    let range = head.header("range").map(str::to_string);

    let mut upstream = TcpStream::connect(&shared.upstream)?;
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req = format!("{} {} {}\r\n", head.first, head.second, head.third);
    for (n, v) in &head.headers {
        let lower = n.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "upgrade"
        ) {
            continue;
        }
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    upstream.write_all(req.as_bytes())?;
    upstream.write_all(&early_body)?;

    // The rest of the request body (uploads), whatever its framing, until the client is done.
    let mut c_read = client.try_clone()?;
    let mut u_write = upstream.try_clone()?;
    let pump = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
    });

    let result = relay_response(&mut upstream, &mut client, shared, &method, &path, range);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = pump.join();
    result
}

fn relay_response(
    upstream: &mut TcpStream,
    client: &mut TcpStream,
    shared: &Shared,
    method: &str,
    path: &str,
    range: Option<String>,
) -> std::io::Result<()> {
    let entry = |status, body_bytes, cut| ProxyRequest {
        method: method.to_string(),
        path: path.to_string(),
        range: range.clone(),
        status,
        body_bytes,
        cut,
    };
    let Some((head, first_body)) = read_head(upstream)? else {
        shared
            .log
            .lock()
            .expect("proxy log")
            .push(entry(0, 0, false));
        return Ok(());
    };
    let status = head.status();
    let is_blob_get = method == "GET" && blob_digest(path).is_some();
    let cut_at = if is_blob_get && (status == 200 || status == 206) {
        let len: Option<u64> = head.header("content-length").and_then(|v| v.parse().ok());
        let mut f = shared.faults.lock().expect("faults");
        let longer = |n: u64| len.map_or(true, |l| l > n);
        if let Some(n) = f.cut_once.filter(|n| longer(*n)) {
            f.cut_once = None;
            Some(n)
        } else if let Some(n) = f.cut_each.filter(|n| longer(*n)) {
            let key = blob_digest(path).unwrap_or_default().to_string();
            f.cut_done.insert(key).then_some(n)
        } else {
            None
        }
    } else {
        None
    };
    let index = {
        let mut log = shared.log.lock().expect("proxy log");
        log.push(entry(status, 0, cut_at.is_some()));
        log.len() - 1
    };

    let mut out = format!("{} {} {}\r\n", head.first, head.second, head.third);
    for (n, v) in &head.headers {
        if n.eq_ignore_ascii_case("connection") || n.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    client.write_all(out.as_bytes())?;

    let mut sent: u64 = 0;
    let started = Instant::now();
    let mut pending = first_body;
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        if pending.is_empty() {
            match upstream.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        }
        let rate = if is_blob_get {
            shared.throttle.load(Ordering::SeqCst)
        } else {
            0
        };
        let mut take = pending.len();
        if rate > 0 {
            take = take.min((rate / 20).max(1) as usize);
        }
        if let Some(limit) = cut_at {
            take = take.min(limit.saturating_sub(sent) as usize);
        }
        if let Err(e) = client.write_all(&pending[..take]) {
            break Err(e);
        }
        pending.drain(..take);
        sent += take as u64;
        if cut_at.is_some_and(|limit| sent >= limit) {
            let _ = client.flush();
            break Ok(());
        }
        if rate > 0 {
            // Sleep until `sent` bytes are due at `rate`.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    };
    if let Some(e) = shared.log.lock().expect("proxy log").get_mut(index) {
        e.body_bytes = sent;
    }
    result
}
