//! A small bearer-token server for the registry's `auth.token` mode (Docker's token spec):
//! checks basic credentials, signs ES256 JWTs that distribution verifies against our
//! self-signed certificate (`rootcertbundle`), and counts what it served.

use super::http::ServerThread;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use sha2::Digest as _;

use super::env::run_ok;
use super::http::{parse_query, read_head};

/// The `service` the registry names in its challenge (and expects as the token's `aud`).
pub const SERVICE: &str = "dockmaster-test-registry";
/// The token issuer (`iss`) the registry trusts.
pub const ISSUER: &str = "dockmaster-test-token-server";

/// Largest request body (OAuth2 form) the token server reads.
const MAX_BODY: usize = 64 * 1024;

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    /// The user from basic credentials or the OAuth2 form; `None` for anonymous requests.
    pub account: Option<String>,
    /// `scope` parameters as sent (`repository:NAME:pull,push`).
    pub scopes: Vec<String>,
    /// HTTP status answered: 200 with a token, 401 refused.
    pub status: u16,
}

struct State {
    user: String,
    password: String,
    allow_anonymous: AtomicBool,
    expires_in: AtomicU64,
    served: AtomicUsize,
    log: Mutex<Vec<TokenRequest>>,
    key: SigningKey,
    kid: String,
    jti: AtomicU64,
}

/// The token server: a thread accepting on its own loopback port.
pub struct TokenServer {
    state: Arc<State>,
    server: ServerThread,
    cert: PathBuf,
}

impl TokenServer {
    /// Generates a P-256 key and its self-signed certificate in `dir` and starts serving.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key_path = dir.join("token.key");
        let cert = dir.join("token.crt");
        run_ok(
            Command::new("openssl")
                .args(["genpkey", "-algorithm", "EC"])
                .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
                .arg(&key_path),
        );
        run_ok(
            Command::new("openssl")
                .args(["req", "-x509", "-new", "-key"])
                .arg(&key_path)
                .args(["-subj", "/CN=dockmaster-test-token", "-days", "2", "-out"])
                .arg(&cert),
        );
        let pem = std::fs::read_to_string(&key_path).expect("read token key");
        let key = SigningKey::from_pkcs8_pem(&pem).expect("parse token key");
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .expect("encode public key");
        let kid = libtrust_key_id(spki.as_bytes());

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let state = Arc::new(State {
            user: user.to_string(),
            password: password.to_string(),
            allow_anonymous: AtomicBool::new(false),
            expires_in: AtomicU64::new(300),
            served: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            key,
            kid,
            jti: AtomicU64::new(1),
        });
        let server = ServerThread::spawn(listener, state.clone(), serve);
        TokenServer {
            state,
            server,
            cert,
        }
    }

    /// `http://127.0.0.1:PORT/token`, the realm the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// The certificate whose key signs the tokens (the registry's `rootcertbundle`).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The `kid` in every token header (libtrust key ID of the signing key).
    pub fn kid(&self) -> &str {
        &self.state.kid
    }

    /// Token requests answered so far (granted or refused).
    pub fn token_requests(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.log.lock().expect("token log").clone()
    }

    /// Whether requests without credentials get a token (default: refused with 401).
    pub fn set_allow_anonymous(&self, allow: bool) {
        self.state.allow_anonymous.store(allow, Ordering::SeqCst);
    }

    /// Lifetime of new tokens in seconds, reported as `expires_in` and put into `exp`
    /// (default 300).
    pub fn set_expires_in(&self, secs: u64) {
        self.state.expires_in.store(secs, Ordering::SeqCst);
    }

    /// Signs a token for `scopes` directly, without HTTP (for tests that talk to the
    /// registry by hand).
    pub fn issue(&self, account: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        make_token(&self.state, account, &scopes)
    }
}

/// libtrust's key ID: base32 of the first 240 bits of sha256(DER SubjectPublicKeyInfo), in
/// 12 groups of 4 characters joined by ':'.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let sum = sha2::Sha256::digest(spki_der);
    let b32 = base32(&sum[..30]);
    let groups: Vec<&str> = (0..12).map(|i| &b32[i * 4..i * 4 + 4]).collect();
    groups.join(":")
}

/// RFC 4648 base32 without padding.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut acc: u64 = 0;
    let mut bits = 0;
    for &b in data {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Grants pull and push (and delete) on the repositories named by `scopes`.
fn access(scopes: &[String]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for scope in scopes {
        for one in scope.split(' ') {
            // type:name:actions, where the name may itself contain ':' (a port).
            let Some((rest, actions)) = one.rsplit_once(':') else {
                continue;
            };
            let Some((typ, name)) = rest.split_once(':') else {
                continue;
            };
            let granted: Vec<&str> = actions
                .split(',')
                .filter(|a| matches!(*a, "pull" | "push" | "delete" | "*"))
                .collect();
            out.push(serde_json::json!({ "type": typ, "name": name, "actions": granted }));
        }
    }
    out
}

fn make_token(state: &State, account: &str, scopes: &[String]) -> String {
    let iat = now();
    let exp = iat + state.expires_in.load(Ordering::SeqCst);
    let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "kid": state.kid });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": account,
        "aud": SERVICE,
        "exp": exp,
        "nbf": iat.saturating_sub(1),
        "iat": iat,
        "jti": format!("dockmaster-test-{}", state.jti.fetch_add(1, Ordering::SeqCst)),
        "access": access(scopes),
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig: Signature = state.key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&sig.to_bytes()))
}

fn basic_credentials(value: &str) -> Option<(String, String)> {
    let b64 = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn serve(mut conn: TcpStream, state: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let Some((head, mut body)) = read_head(&mut conn)? else {
        return Ok(());
    };
    let (path, query) = head.second.split_once('?').unwrap_or((&head.second, ""));
    if path != "/token" {
        return respond(&mut conn, 404, "{}");
    }
    let mut params = parse_query(query);
    let mut creds = head.header("authorization").and_then(basic_credentials);
    if head.first == "POST" {
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            .min(MAX_BODY);
        while body.len() < len {
            let mut chunk = vec![0u8; len - body.len()];
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let form = parse_query(&String::from_utf8_lossy(&body));
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let (Some(u), Some(p)) = (get("username"), get("password")) {
            creds = Some((u, p));
        }
        params.extend(form);
    }
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let (status, account) = match &creds {
        Some((u, p)) if *u == state.user && *p == state.password => (200, Some(u.clone())),
        Some((u, _)) => (401, Some(u.clone())),
        None if state.allow_anonymous.load(Ordering::SeqCst) => (200, None),
        None => (401, None),
    };
    state.served.fetch_add(1, Ordering::SeqCst);
    state.log.lock().expect("token log").push(TokenRequest {
        method: head.first.clone(),
        account: account.clone(),
        scopes: scopes.clone(),
        status,
    });
    if status != 200 {
        return respond(&mut conn, 401, r#"{"details":"invalid credentials"}"#);
    }
    let token = make_token(state, account.as_deref().unwrap_or(""), &scopes);
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": state.expires_in.load(Ordering::SeqCst),
        "issued_at": dockmaster::runtime::logs::format_rfc3339_nano(SystemTime::now()),
    });
    respond(&mut conn, 200, &body.to_string())
}

fn respond(conn: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let extra = if status == 401 {
        "WWW-Authenticate: Basic realm=\"dockmaster-test-token\"\r\n"
    } else {
        ""
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(msg.as_bytes())?;
    conn.flush()
}
