//! A small HTTP/1.1 server for the client's unit tests: one thread per connection, one
//! request per connection, every request recorded, replies decided by a closure.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path with query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> Vec<(String, String)> {
        let q = self.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        reqwest::Url::parse(&format!("http://x/?{q}"))
            .map(|u| u.query_pairs().map(|(k, v)| (k.into(), v.into())).collect())
            .unwrap_or_default()
    }
}

pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Announces `content_length` bytes, sends `body` (fewer), then closes.
    Cut {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        content_length: u64,
    },
    /// Sends headers and `body`, then says nothing for `stall` before closing.
    Stall {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        content_length: u64,
        stall: Duration,
    },
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![],
            body: body.into(),
        }
    }
    pub fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: vec![],
            body: format!(r#"{{"errors":[{{"code":"X{status}","message":"status {status}"}}]}}"#)
                .into_bytes(),
        }
    }
    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        match &mut self {
            Reply::Full { headers, .. }
            | Reply::Cut { headers, .. }
            | Reply::Stall { headers, .. } => headers.push((k.into(), v.into())),
        }
        self
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct FakeServer {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    tls_probes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        let port = listener.local_addr().expect("local addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tls_probes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let (seen, tls_probes, stop) = (seen.clone(), tls_probes.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (seen, probes, handler) =
                        (seen.clone(), tls_probes.clone(), handler.clone());
                    std::thread::spawn(move || serve(conn, &seen, &probes, &*handler));
                }
            })
        };
        FakeServer {
            port,
            seen,
            tls_probes,
            stop,
            accept: Some(accept),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    /// Requests whose path starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path().starts_with(prefix))
            .count()
    }
    /// TLS ClientHellos answered with a plain-HTTP 400 (the client's HTTPS probes).
    pub fn tls_probes(&self) -> usize {
        self.tls_probes.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(mut conn: TcpStream, seen: &Mutex<Vec<Seen>>, probes: &AtomicUsize, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if buf.first() == Some(&0x16) {
            // A TLS ClientHello on our plain port: answer like Go's server does.
            probes.fetch_add(1, Ordering::SeqCst);
            let _ = conn.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n");
            let _ = conn.shutdown(Shutdown::Both);
            return;
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match conn.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match conn.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&tmp[..n]),
        }
    }
    let req = Seen {
        method,
        target,
        headers,
        body,
    };
    seen.lock().unwrap().push(req.clone());
    let reply = handler(&req);
    let write_head = |conn: &mut TcpStream, status: u16, headers: &[(String, String)], len: u64| {
        let mut h =
            format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n");
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        conn.write_all(h.as_bytes())
    };
    let _ = match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => write_head(&mut conn, status, &headers, body.len() as u64)
            .and_then(|_| conn.write_all(if method_is_head(&req) { &[] } else { &body })),
        Reply::Cut {
            status,
            headers,
            body,
            content_length,
        } => write_head(&mut conn, status, &headers, content_length)
            .and_then(|_| conn.write_all(&body)),
        Reply::Stall {
            status,
            headers,
            body,
            content_length,
            stall,
        } => write_head(&mut conn, status, &headers, content_length)
            .and_then(|_| conn.write_all(&body))
            .map(|_| {
                let _ = conn.flush();
                std::thread::sleep(stall);
            }),
    };
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}

fn method_is_head(s: &Seen) -> bool {
    s.method == "HEAD"
}
