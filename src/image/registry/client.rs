//! The registry client: endpoints (mirrors, then the registry), scheme choice, the auth
//! challenge flow, retries with backoff, bounded bodies and resumable blob streams.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::auth::{parse_www_authenticate, CachedToken, Challenge, TokenResponse};
use super::credentials::{truncate, Credential, CredentialStore};
use super::tls::{self, ClientSettings};
use super::{ClientOptions, RegistryError, BLOB_BYTES_MAX, MANIFEST_MAX};
use crate::image::{Digest, Reference};

/// Largest token response read.
const TOKEN_MAX: u64 = 1 << 20;
/// Largest error body read (only the start is kept for messages).
const ERROR_BODY_MAX: u64 = 64 << 10;
/// Credentials are looked up again after this long.
const CREDENTIAL_TTL: Duration = Duration::from_secs(300);
/// Mirrors get few attempts: the registry itself is the fallback.
const MIRROR_MAX_ATTEMPTS: u32 = 2;
/// Longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);
/// Docker Hub's API host.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A manifest as the registry sent it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    /// The `Content-Type` header: the media type when the body has no `mediaType`.
    pub content_type: Option<String>,
    /// The body's sha256 digest, or the reference's pinned digest (which it matched).
    pub digest: Digest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// One place to ask: a mirror or the registry itself.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `host[:port]` in URLs, certs.d and the scheme memory.
    host: String,
    /// The registry name for credentials and messages (`docker.io` for Docker Hub).
    name: String,
    /// Scheme fixed by a mirror URL.
    scheme: Option<Scheme>,
    mirror: bool,
}

/// How a host wants to be authenticated, learnt from its challenges.
#[derive(Debug, Clone)]
enum HostAuth {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Names for errors: which registry, repository and object a request is about.
struct Ctx<'a> {
    ep: &'a Endpoint,
    repository: &'a str,
    object: String,
}

impl Ctx<'_> {
    fn registry(&self) -> String {
        if self.ep.name == self.ep.host {
            self.ep.host.clone()
        } else {
            format!("{} ({})", self.ep.name, self.ep.host)
        }
    }
    fn not_found(&self) -> RegistryError {
        RegistryError::NotFound {
            registry: self.registry(),
            repository: self.repository.to_string(),
            object: self.object.clone(),
        }
    }
    fn protocol(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            registry: self.registry(),
            repository: self.repository.to_string(),
            object: self.object.clone(),
            detail: detail.into(),
        }
    }
    fn cut(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::BodyCut {
            registry: self.registry(),
            repository: self.repository.to_string(),
            object: self.object.clone(),
            detail: detail.into(),
        }
    }
    fn connect(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Connect {
            registry: self.registry(),
            repository: self.repository.to_string(),
            object: self.object.clone(),
            detail: detail.into(),
        }
    }
    fn timeout(&self, during: &'static str, d: Duration) -> RegistryError {
        RegistryError::Timeout {
            registry: self.registry(),
            repository: self.repository.to_string(),
            object: self.object.clone(),
            during,
            secs: d.as_secs().max(1),
        }
    }
    fn too_large(&self, limit: u64) -> RegistryError {
        RegistryError::TooLarge {
            registry: self.registry(),
            repository: self.repository.to_string(),
            object: self.object.clone(),
            limit,
        }
    }
    fn mismatch(&self, expected: &Digest, actual: &Digest) -> RegistryError {
        RegistryError::DigestMismatch {
            registry: self.registry(),
            repository: self.repository.to_string(),
            object: self.object.clone(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }
}

/// One request, re-sendable (retries, auth, scheme fallback).
struct Req {
    method: Method,
    path: String,
    accept: Option<String>,
    range_from: Option<u64>,
}

enum SendError {
    Timeout,
    Http(reqwest::Error),
}

/// One cached token per (host, scope); the async lock makes concurrent callers share a fetch.
type TokenSlot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

struct Inner {
    opts: ClientOptions,
    creds: CredentialStore,
    mirrors: Vec<Endpoint>,
    clients: Mutex<HashMap<String, reqwest::Client>>,
    schemes: Mutex<HashMap<String, Scheme>>,
    host_auth: Mutex<HashMap<String, HostAuth>>,
    tokens: Mutex<HashMap<(String, String), TokenSlot>>,
    cred_cache: Mutex<HashMap<String, (Instant, Option<Credential>)>>,
}

/// A registry client; cheap to clone, share one per process so connections, schemes and
/// tokens are reused.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (single inserts).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Splits `host[:port]` into host and port; brackets of IPv6 literals are removed.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let port = rest[end + 1..].strip_prefix(':');
            return (&rest[..end], port);
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (s, None),
    }
}

/// 127.0.0.0/8, ::1 and `localhost` may always use plain HTTP.
pub fn is_loopback_host(host_port: &str) -> bool {
    let (host, _) = split_host_port(host_port);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Listed in `insecure` (normalized entries, as `host:port` or `host`).
pub(crate) fn listed_insecure(insecure: &[String], host_port: &str) -> bool {
    let hp = host_port.to_ascii_lowercase();
    let (h, _) = split_host_port(&hp);
    insecure
        .iter()
        .any(|e| *e == hp || (!e.contains(':') && e == h))
}

/// Plain HTTP is for loopback and the `insecure` list only.
pub(crate) fn plain_http_allowed(insecure: &[String], host_port: &str) -> bool {
    is_loopback_host(host_port) || listed_insecure(insecure, host_port)
}

fn normalize_insecure(entry: &str) -> String {
    let e = entry.trim();
    let e = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"))
        .unwrap_or(e);
    e.trim_end_matches('/').to_ascii_lowercase()
}

impl RegistryClient {
    pub fn new(opts: ClientOptions) -> Result<Self, RegistryError> {
        let mut opts = opts;
        opts.max_attempts = opts.max_attempts.max(1);
        opts.insecure = opts
            .insecure
            .iter()
            .map(|s| normalize_insecure(s))
            .collect();
        let mut mirrors = Vec::new();
        for (domain, list) in &opts.mirrors {
            if domain != crate::image::reference::DEFAULT_DOMAIN {
                tracing::warn!(%domain, "registry mirrors are only honoured for docker.io");
                continue;
            }
            for m in list {
                mirrors.push(parse_mirror(m, &opts)?);
            }
        }
        let creds = CredentialStore::new(
            opts.auth_file.clone(),
            opts.default_auth_file.clone(),
            opts.helper_path.clone(),
        );
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                opts,
                creds,
                mirrors,
                clients: Mutex::new(HashMap::new()),
                schemes: Mutex::new(HashMap::new()),
                host_auth: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                cred_cache: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// GET `/v2/<repo>/manifests/<tag|digest>` with the given `Accept` list; the body is
    /// capped at [`MANIFEST_MAX`] and checked against the pinned digest and the
    /// `Docker-Content-Digest` header.
    pub async fn fetch_manifest(
        &self,
        r: &Reference,
        accept: &[&str],
    ) -> Result<FetchedManifest, RegistryError> {
        let accept = accept.join(", ");
        self.on_endpoints(r, |ep| {
            let accept = &accept;
            async move { self.fetch_manifest_once(&ep, r, accept).await }
        })
        .await
    }

    async fn fetch_manifest_once(
        &self,
        ep: &Endpoint,
        r: &Reference,
        accept: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let (ctx, resp) = self.manifest_request(ep, r, accept, Method::GET).await?;
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| Digest::parse(s.trim()).ok());
        let bytes = self.read_body(&ctx, resp, MANIFEST_MAX).await?;
        let mut digest = Digest::sha256_of(&bytes);
        if let Some(pinned) = r.digest() {
            if !pinned.verifies(&bytes) {
                return Err(ctx.mismatch(pinned, &digest));
            }
            digest = pinned.clone();
        }
        if let Some(h) = header_digest {
            if !h.verifies(&bytes) {
                return Err(ctx.mismatch(&h, &digest));
            }
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// The digest a tag points to, from a HEAD request's `Docker-Content-Digest` (no body
    /// transferred: the cheap check for a moved tag). `None` when the registry sends no such
    /// header (the caller falls back to [`RegistryClient::fetch_manifest`]).
    pub async fn head_manifest_digest(
        &self,
        r: &Reference,
        accept: &[&str],
    ) -> Result<Option<Digest>, RegistryError> {
        let accept = accept.join(", ");
        self.on_endpoints(r, |ep| {
            let accept = &accept;
            async move { self.head_manifest_once(&ep, r, accept).await }
        })
        .await
    }

    /// `method` on the manifest of `r` at `ep`; anything but 200 is an error.
    async fn manifest_request<'a>(
        &self,
        ep: &'a Endpoint,
        r: &'a Reference,
        accept: &str,
        method: Method,
    ) -> Result<(Ctx<'a>, reqwest::Response), RegistryError> {
        let ctx = Ctx {
            ep,
            repository: r.repository(),
            object: format!("manifest {}", r.manifest_selector()),
        };
        let req = Req {
            method,
            path: format!("/v2/{}/manifests/{}", r.repository(), r.manifest_selector()),
            accept: (!accept.is_empty()).then(|| accept.to_string()),
            range_from: None,
        };
        let resp = self.send(&ctx, &req).await?;
        if resp.status() != StatusCode::OK {
            return Err(ctx.protocol(format!("unexpected status {}", resp.status())));
        }
        Ok((ctx, resp))
    }

    async fn head_manifest_once(
        &self,
        ep: &Endpoint,
        r: &Reference,
        accept: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let (_, resp) = self.manifest_request(ep, r, accept, Method::HEAD).await?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| Digest::parse(s.trim()).ok()))
    }

    /// A small blob (an image config) in memory, checked against `digest` and `size`.
    pub async fn fetch_blob_bytes(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<Bytes, RegistryError> {
        self.on_endpoints(r, |ep| async move {
            self.fetch_blob_bytes_once(&ep, r, digest, size).await
        })
        .await
    }

    async fn fetch_blob_bytes_once(
        &self,
        ep: &Endpoint,
        r: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<Bytes, RegistryError> {
        let ctx = Ctx {
            ep,
            repository: r.repository(),
            object: format!("blob {digest}"),
        };
        if size > BLOB_BYTES_MAX {
            return Err(ctx.too_large(BLOB_BYTES_MAX));
        }
        let req = Req {
            method: Method::GET,
            path: format!("/v2/{}/blobs/{digest}", r.repository()),
            accept: None,
            range_from: None,
        };
        let resp = self.send(&ctx, &req).await?;
        if resp.status() != StatusCode::OK {
            return Err(ctx.protocol(format!("unexpected status {}", resp.status())));
        }
        let bytes = self.read_body(&ctx, resp, size).await?;
        if bytes.len() as u64 != size {
            return Err(RegistryError::SizeMismatch {
                registry: ctx.registry(),
                repository: ctx.repository.to_string(),
                object: ctx.object.clone(),
                expected: size,
                actual: bytes.len() as u64,
            });
        }
        let mut h = crate::image::digest::Hasher::new(digest.algorithm());
        h.update(&bytes);
        let actual = h.finish();
        if actual != *digest {
            return Err(ctx.mismatch(digest, &actual));
        }
        Ok(bytes)
    }

    /// Streams blob bytes from `offset` into `tx`, resuming with `Range` after cuts and
    /// transient errors, never sending more than `size - offset` bytes. Returns the bytes
    /// sent. The consumer verifies the digest.
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        offset: u64,
        tx: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<u64, RegistryError> {
        let endpoints = self.endpoints(r)?;
        if offset > size {
            let ctx = Ctx {
                ep: &endpoints[endpoints.len() - 1],
                repository: r.repository(),
                object: format!("blob {digest}"),
            };
            return Err(ctx.protocol(format!("resume offset {offset} is past the size {size}")));
        }
        let need = size - offset;
        let mut sent = 0u64;
        if need == 0 {
            return Ok(0);
        }
        let mut last = None;
        for ep in &endpoints {
            let max = self.attempts_for(ep);
            let mut failures = 0;
            let res = loop {
                let before = sent;
                match self
                    .fetch_blob_once(ep, r, digest, offset, need, &mut sent, &tx)
                    .await
                {
                    Ok(()) => break Ok(()),
                    Err(e) => {
                        if sent > before {
                            // Progress was made: this is a flaky link, not a dead one.
                            failures = 0;
                        }
                        failures += 1;
                        if !e.is_transient() || failures >= max {
                            break Err(e);
                        }
                        let delay = self.backoff(failures, e.retry_after());
                        tracing::debug!(error = %e, sent, ?delay, "blob download interrupted, resuming");
                        tokio::time::sleep(delay).await;
                    }
                }
            };
            match res {
                Ok(()) => return Ok(sent),
                Err(e @ RegistryError::ReceiverClosed { .. }) => return Err(e),
                Err(e) if ep.mirror => {
                    tracing::warn!(mirror = %ep.host, error = %e, "mirror failed, trying the next endpoint");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Config("no registry endpoint".into())))
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_blob_once(
        &self,
        ep: &Endpoint,
        r: &Reference,
        digest: &Digest,
        offset: u64,
        need: u64,
        sent: &mut u64,
        tx: &tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<(), RegistryError> {
        let ctx = Ctx {
            ep,
            repository: r.repository(),
            object: format!("blob {digest}"),
        };
        let pos = offset + *sent;
        let req = Req {
            method: Method::GET,
            path: format!("/v2/{}/blobs/{digest}", r.repository()),
            accept: None,
            range_from: (pos > 0).then_some(pos),
        };
        let mut resp = self.send(&ctx, &req).await?;
        // Bytes at the start of this body that were already sent.
        let mut skip = match resp.status() {
            StatusCode::OK => pos,
            StatusCode::PARTIAL_CONTENT => {
                let start = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range_start)
                    .unwrap_or(pos);
                if start > pos {
                    return Err(ctx.protocol(format!(
                        "asked for bytes from {pos}, got a range starting at {start}"
                    )));
                }
                pos - start
            }
            s => return Err(ctx.protocol(format!("unexpected status {s}"))),
        };
        let remaining = need - *sent;
        if let Some(len) = resp.content_length() {
            if len.saturating_sub(skip) > remaining {
                return Err(ctx.too_large(offset + need));
            }
        }
        let stall = self.inner.opts.stall_timeout;
        loop {
            let chunk = match tokio::time::timeout(stall, resp.chunk()).await {
                Err(_) => return Err(ctx.timeout("waiting for body bytes", stall)),
                Ok(Err(e)) => return Err(ctx.cut(tls::error_chain(&e))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            let mut chunk = chunk;
            if skip > 0 {
                let k = skip.min(chunk.len() as u64);
                chunk = chunk.slice(k as usize..);
                skip -= k;
            }
            if chunk.is_empty() {
                continue;
            }
            if chunk.len() as u64 > need - *sent {
                return Err(ctx.too_large(offset + need));
            }
            let n = chunk.len() as u64;
            tx.send(chunk)
                .await
                .map_err(|_| RegistryError::ReceiverClosed {
                    repository: ctx.repository.to_string(),
                    object: ctx.object.clone(),
                })?;
            *sent += n;
        }
        if *sent < need {
            return Err(ctx.cut(format!(
                "body ended after {} of {} bytes",
                offset + *sent,
                offset + need
            )));
        }
        Ok(())
    }

    /// Mirrors for docker.io (in order), then the registry itself.
    /// Runs `op` (with retries) against each endpoint of `r` in turn: mirrors first, whose
    /// failures fall through to the next endpoint; the registry's own failure is final.
    async fn on_endpoints<T, F, Fut>(&self, r: &Reference, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut(Endpoint) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut last = None;
        for ep in self.endpoints(r)? {
            let res = self.retry(&ep, || op(ep.clone())).await;
            match res {
                Ok(v) => return Ok(v),
                Err(e) if ep.mirror => {
                    tracing::warn!(mirror = %ep.host, error = %e, "mirror failed, trying the next endpoint");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Config("no registry endpoint".into())))
    }

    fn endpoints(&self, r: &Reference) -> Result<Vec<Endpoint>, RegistryError> {
        let domain = r.domain();
        if domain.is_empty() {
            return Err(RegistryError::Config(format!(
                "reference {r} has no registry domain"
            )));
        }
        let mut out = Vec::new();
        let host = if domain == crate::image::reference::DEFAULT_DOMAIN {
            out.extend(self.inner.mirrors.iter().cloned());
            DOCKER_HUB_API.to_string()
        } else {
            domain.to_string()
        };
        out.push(Endpoint {
            host,
            name: domain.to_string(),
            scheme: None,
            mirror: false,
        });
        Ok(out)
    }

    fn attempts_for(&self, ep: &Endpoint) -> u32 {
        if ep.mirror {
            self.inner.opts.max_attempts.min(MIRROR_MAX_ATTEMPTS)
        } else {
            self.inner.opts.max_attempts
        }
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of attempts.
    async fn retry<T, F, Fut>(&self, ep: &Endpoint, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let max = self.attempts_for(ep);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < max => {
                    let delay = self.backoff(attempt, e.retry_after());
                    tracing::debug!(error = %e, attempt, ?delay, "transient registry error, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Exponential backoff with jitter (50-100% of the step); a server's `Retry-After`
    /// (capped) is a floor.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let o = &self.inner.opts;
        let step = o
            .retry_base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(o.retry_max_delay);
        let d = step.mul_f64(0.5 + 0.5 * jitter());
        match retry_after {
            Some(ra) => d.max(ra.min(RETRY_AFTER_MAX)),
            None => d,
        }
    }

    // ---- transport ----

    fn http_client(&self, host: &str) -> Result<reqwest::Client, RegistryError> {
        if let Some(c) = lock(&self.inner.clients).get(host) {
            return Ok(c.clone());
        }
        let o = &self.inner.opts;
        let host_tls = tls::load_host_tls(&o.certs_dir, host)?;
        if !host_tls.files.is_empty() {
            tracing::debug!(%host, files = ?host_tls.files, "using certs.d files");
        }
        let settings = ClientSettings {
            user_agent: &o.user_agent,
            connect_timeout: o.connect_timeout,
            accept_invalid_certs: self.listed_insecure(host),
            insecure: self.inner.opts.insecure.clone(),
        };
        let c = tls::build_client(&settings, host_tls)?;
        Ok(lock(&self.inner.clients)
            .entry(host.to_string())
            .or_insert(c)
            .clone())
    }

    fn listed_insecure(&self, host_port: &str) -> bool {
        listed_insecure(&self.inner.opts.insecure, host_port)
    }

    fn plain_http_allowed(&self, host_port: &str) -> bool {
        plain_http_allowed(&self.inner.opts.insecure, host_port)
    }

    async fn send_raw(
        &self,
        client: &reqwest::Client,
        scheme: Scheme,
        host: &str,
        req: &Req,
        auth: Option<&str>,
    ) -> Result<reqwest::Response, SendError> {
        let url = format!("{}://{}{}", scheme.as_str(), host, req.path);
        let mut headers = HeaderMap::new();
        if let Some(a) = &req.accept {
            if let Ok(v) = HeaderValue::from_str(a) {
                headers.insert(ACCEPT, v);
            }
        }
        if let Some(from) = req.range_from {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={from}-")) {
                headers.insert(RANGE, v);
            }
        }
        if let Some(a) = auth {
            if let Ok(mut v) = HeaderValue::from_str(a) {
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
            }
        }
        let fut = client
            .request(req.method.clone(), &url)
            .headers(headers)
            .send();
        match tokio::time::timeout(self.inner.opts.response_timeout, fut).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) => Err(SendError::Http(e)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    fn map_send_error(&self, ctx: &Ctx, e: SendError) -> RegistryError {
        match e {
            SendError::Timeout => {
                ctx.timeout("waiting for a response", self.inner.opts.response_timeout)
            }
            SendError::Http(e) if e.is_timeout() => {
                ctx.timeout("connecting", self.inner.opts.connect_timeout)
            }
            SendError::Http(e) if tls::is_certificate_error(&e) => RegistryError::Tls {
                registry: ctx.registry(),
                detail: tls::root_cause(&e),
                hint: self
                    .inner
                    .opts
                    .certs_dir
                    .join(&ctx.ep.host)
                    .join("ca.crt")
                    .display()
                    .to_string(),
            },
            // A redirect we refuse (or a loop) will not change on retry.
            SendError::Http(e) if e.is_redirect() => ctx.protocol(tls::error_chain(&e)),
            SendError::Http(e) => ctx.connect(tls::error_chain(&e)),
        }
    }

    /// Sends with the host's known scheme; for hosts allowed plain HTTP whose scheme is not
    /// known yet, HTTPS first and HTTP when the TLS connection cannot be made (but not
    /// when the certificate is refused: that server does speak TLS).
    async fn send_scheme(
        &self,
        ctx: &Ctx<'_>,
        req: &Req,
        auth: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let host = ctx.ep.host.as_str();
        let client = self.http_client(host)?;
        let known = ctx
            .ep
            .scheme
            .or_else(|| lock(&self.inner.schemes).get(host).copied());
        let scheme = match known {
            Some(s) => s,
            None if !self.plain_http_allowed(host) => Scheme::Https,
            None => match self.send_raw(&client, Scheme::Https, host, req, auth).await {
                Ok(r) => {
                    lock(&self.inner.schemes).insert(host.to_string(), Scheme::Https);
                    return Ok(r);
                }
                Err(SendError::Http(e)) if e.is_connect() && !tls::is_certificate_error(&e) => {
                    tracing::debug!(%host, error = %tls::error_chain(&e), "https failed, trying plain http");
                    let r = self
                        .send_raw(&client, Scheme::Http, host, req, auth)
                        .await
                        .map_err(|e| self.map_send_error(ctx, e))?;
                    lock(&self.inner.schemes).insert(host.to_string(), Scheme::Http);
                    return Ok(r);
                }
                Err(e) => return Err(self.map_send_error(ctx, e)),
            },
        };
        self.send_raw(&client, scheme, host, req, auth)
            .await
            .map_err(|e| self.map_send_error(ctx, e))
    }

    /// Sends with authentication: cached auth first; on a 401, authenticate from the
    /// challenge and try once more. Non-success statuses become errors.
    async fn send(&self, ctx: &Ctx<'_>, req: &Req) -> Result<reqwest::Response, RegistryError> {
        let mut auth = self.cached_auth(ctx).await?;
        let mut fresh = false;
        loop {
            let resp = self.send_scheme(ctx, req, auth.as_deref()).await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return self.check_status(ctx, resp).await;
            }
            let challenges: Vec<Challenge> = parse_www_authenticate(
                resp.headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            if fresh {
                return Err(self.unauthorized(ctx, resp).await);
            }
            let stale = auth.take();
            auth = Some(self.authenticate(ctx, &challenges, stale, resp).await?);
            fresh = true;
        }
    }

    /// The error for a 401 that fresh authentication did not cure.
    async fn unauthorized(&self, ctx: &Ctx<'_>, resp: reqwest::Response) -> RegistryError {
        let status = self.status_text(ctx, resp).await;
        let cached = lock(&self.inner.cred_cache).remove(&ctx.ep.name);
        // Name the user whose credentials were just refused, not a re-read file's.
        let cred = match cached {
            Some((_, c)) => Ok(c),
            None => self.credential(ctx.ep).await,
        };
        match cred {
            Ok(Some(c)) => RegistryError::AuthFailed {
                registry: ctx.registry(),
                user: c.username().to_string(),
                status,
            },
            Ok(None) => RegistryError::AuthRequired {
                registry: ctx.registry(),
                repository: ctx.repository.to_string(),
                status,
                searched: self.inner.creds.describe(),
            },
            Err(e) => e,
        }
    }

    fn scope(ctx: &Ctx) -> String {
        format!("repository:{}:pull", ctx.repository)
    }

    /// The Authorization header we can send without asking: Basic for hosts known to want
    /// it, a cached (or fetched) bearer token for hosts known to want tokens.
    async fn cached_auth(&self, ctx: &Ctx<'_>) -> Result<Option<String>, RegistryError> {
        let known = lock(&self.inner.host_auth).get(&ctx.ep.host).cloned();
        match known {
            None => Ok(None),
            Some(HostAuth::Basic) => Ok(match self.credential(ctx.ep).await? {
                Some(Credential::Basic { username, password }) => {
                    Some(basic_header(&username, &password))
                }
                _ => None,
            }),
            Some(HostAuth::Bearer { realm, service }) => {
                let t = self
                    .bearer(ctx, &realm, service.as_deref(), None, None)
                    .await?;
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// Answers a 401's challenges with an Authorization header value.
    async fn authenticate(
        &self,
        ctx: &Ctx<'_>,
        challenges: &[Challenge],
        stale: Option<String>,
        resp: reqwest::Response,
    ) -> Result<String, RegistryError> {
        let bearer = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.param("realm").is_some_and(|r| !r.is_empty()));
        if let Some(c) = bearer {
            let realm = c.param("realm").unwrap_or_default().to_string();
            let service = c.param("service").map(str::to_string);
            lock(&self.inner.host_auth).insert(
                ctx.ep.host.clone(),
                HostAuth::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                },
            );
            let stale_token = stale.as_deref().and_then(|s| s.strip_prefix("Bearer "));
            let t = self
                .bearer(
                    ctx,
                    &realm,
                    service.as_deref(),
                    c.param("scope"),
                    stale_token,
                )
                .await?;
            return Ok(format!("Bearer {t}"));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            lock(&self.inner.host_auth).insert(ctx.ep.host.clone(), HostAuth::Basic);
            if stale.is_some() {
                // Our cached credentials were refused: read them again.
                lock(&self.inner.cred_cache).remove(&ctx.ep.name);
            }
            return match self.credential(ctx.ep).await? {
                Some(Credential::Basic { username, password }) => {
                    Ok(basic_header(&username, &password))
                }
                Some(other) => Err(RegistryError::AuthFailed {
                    registry: ctx.registry(),
                    user: other.username().to_string(),
                    status: "the registry wants basic auth but only a token is configured"
                        .to_string(),
                }),
                None => Err(RegistryError::AuthRequired {
                    registry: ctx.registry(),
                    repository: ctx.repository.to_string(),
                    status: self.status_text(ctx, resp).await,
                    searched: self.inner.creds.describe(),
                }),
            };
        }
        let got: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        Err(ctx.protocol(format!(
            "401 without a usable WWW-Authenticate challenge (got {got:?})"
        )))
    }

    /// Credentials for an endpoint, cached for [`CREDENTIAL_TTL`].
    async fn credential(&self, ep: &Endpoint) -> Result<Option<Credential>, RegistryError> {
        if let Some((at, c)) = lock(&self.inner.cred_cache).get(&ep.name) {
            if at.elapsed() < CREDENTIAL_TTL {
                return Ok(c.clone());
            }
        }
        let c = self.inner.creds.lookup(&ep.name).await?;
        lock(&self.inner.cred_cache).insert(ep.name.clone(), (Instant::now(), c.clone()));
        Ok(c)
    }

    /// A bearer token for the repository, from the cache unless it is `stale` (the token
    /// that just got a 401). Concurrent callers for the same scope wait for one token
    /// request, and then use its token.
    async fn bearer(
        &self,
        ctx: &Ctx<'_>,
        realm: &str,
        service: Option<&str>,
        challenge_scope: Option<&str>,
        stale: Option<&str>,
    ) -> Result<String, RegistryError> {
        let scope = Self::scope(ctx);
        let slot = lock(&self.inner.tokens)
            .entry((ctx.ep.host.clone(), scope.clone()))
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some(t) = cached.as_ref() {
            if t.is_valid() && stale != Some(t.token.as_str()) {
                return Ok(t.token.clone());
            }
        }
        *cached = None;
        let t = self
            .fetch_token(ctx, realm, service, &scope, challenge_scope)
            .await?;
        let token = t.token.clone();
        *cached = Some(t);
        Ok(token)
    }

    async fn fetch_token(
        &self,
        ctx: &Ctx<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        challenge_scope: Option<&str>,
    ) -> Result<CachedToken, RegistryError> {
        let url = reqwest::Url::parse(realm)
            .map_err(|e| ctx.protocol(format!("invalid token realm {realm:?}: {e}")))?;
        let realm_host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(ctx.protocol(format!("token realm {realm:?} has no host"))),
        };
        match url.scheme() {
            "https" => {}
            "http" if self.plain_http_allowed(&realm_host) => {}
            s => {
                return Err(ctx.protocol(format!(
                    "refusing token realm {realm:?}: scheme {s} (plain http only for loopback and insecure registries)"
                )))
            }
        }
        let cred = self.credential(ctx.ep).await?;
        if let Some(Credential::RegistryToken(t)) = &cred {
            return Ok(CachedToken::new(t.clone(), None, Instant::now()));
        }
        let mut scopes = vec![scope.to_string()];
        if let Some(cs) = challenge_scope.filter(|cs| !cs.is_empty() && *cs != scope) {
            scopes.push(cs.to_string());
        }
        let client = self.http_client(&realm_host)?;
        let started = Instant::now();
        let rb = match &cred {
            Some(Credential::IdentityToken { token, .. }) => {
                // OAuth2 refresh-token grant, as Docker does with an identity token.
                let mut form = reqwest::Url::parse("http://form.invalid/")
                    .map_err(|e| ctx.protocol(e.to_string()))?;
                {
                    let mut q = form.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("client_id", "dockmaster");
                    q.append_pair("refresh_token", token);
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", &scopes.join(" "));
                }
                client
                    .post(url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.query().unwrap_or_default().to_string())
            }
            _ => {
                let mut u = url.clone();
                {
                    let mut q = u.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scopes {
                        q.append_pair("scope", s);
                    }
                }
                let rb = client.get(u);
                match &cred {
                    Some(Credential::Basic { username, password }) => {
                        rb.basic_auth(username, Some(password))
                    }
                    _ => rb,
                }
            }
        };
        let tctx = Ctx {
            ep: ctx.ep,
            repository: ctx.repository,
            object: format!("token from {realm_host}"),
        };
        let resp = match tokio::time::timeout(self.inner.opts.response_timeout, rb.send()).await {
            Err(_) => return Err(self.map_send_error(&tctx, SendError::Timeout)),
            Ok(Err(e)) => return Err(self.map_send_error(&tctx, SendError::Http(e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // Read the credentials again next time: they may be fixed while we run.
            lock(&self.inner.cred_cache).remove(&ctx.ep.name);
            let text = self.status_text(&tctx, resp).await;
            return Err(match cred {
                Some(c) => RegistryError::AuthFailed {
                    registry: ctx.registry(),
                    user: c.username().to_string(),
                    status: text,
                },
                None => RegistryError::AuthRequired {
                    registry: ctx.registry(),
                    repository: ctx.repository.to_string(),
                    status: text,
                    searched: self.inner.creds.describe(),
                },
            });
        }
        let resp = self.check_status(&tctx, resp).await?;
        let body = self.read_body(&tctx, resp, TOKEN_MAX).await?;
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| tctx.protocol(format!("invalid token response: {e}")))?;
        let token = t
            .bearer()
            .ok_or_else(|| tctx.protocol("token response has neither token nor access_token"))?;
        if token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(tctx.protocol("token holds characters not allowed in a header"));
        }
        Ok(CachedToken::new(token.to_string(), t.expires_in, started))
    }

    /// Success passes through; any other status becomes an error (body read, capped).
    async fn check_status(
        &self,
        ctx: &Ctx<'_>,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(ctx.not_found());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let detail = self.error_detail(ctx, resp).await;
        if status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Denied {
                registry: ctx.registry(),
                repository: ctx.repository.to_string(),
                detail: format!("{status}: {detail}"),
            });
        }
        Err(RegistryError::Status {
            registry: ctx.registry(),
            repository: ctx.repository.to_string(),
            object: ctx.object.clone(),
            status: status.as_u16(),
            detail,
            retry_after,
        })
    }

    async fn status_text(&self, ctx: &Ctx<'_>, resp: reqwest::Response) -> String {
        let status = resp.status();
        let detail = self.error_detail(ctx, resp).await;
        if detail.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {detail}")
        }
    }

    /// The registry's error message: `errors[].code: message` when it sent the standard
    /// JSON, else the start of the body.
    async fn error_detail(&self, ctx: &Ctx<'_>, resp: reqwest::Response) -> String {
        let Ok(body) = self.read_body(ctx, resp, ERROR_BODY_MAX).await else {
            return String::new();
        };
        #[derive(serde::Deserialize)]
        struct Errs {
            errors: Vec<Err1>,
        }
        #[derive(serde::Deserialize)]
        struct Err1 {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        if let Ok(e) = serde_json::from_slice::<Errs>(&body) {
            let s: Vec<String> = e
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect();
            if !s.is_empty() {
                return truncate(&s.join("; "), 300);
            }
        }
        truncate(String::from_utf8_lossy(&body).trim(), 300)
    }

    /// The whole body, at most `max` bytes (more is an error), with the stall timeout.
    async fn read_body(
        &self,
        ctx: &Ctx<'_>,
        mut resp: reqwest::Response,
        max: u64,
    ) -> Result<Bytes, RegistryError> {
        if resp.content_length().is_some_and(|l| l > max) {
            return Err(ctx.too_large(max));
        }
        let stall = self.inner.opts.stall_timeout;
        let mut buf = BytesMut::new();
        loop {
            match tokio::time::timeout(stall, resp.chunk()).await {
                Err(_) => return Err(ctx.timeout("waiting for body bytes", stall)),
                Ok(Err(e)) => return Err(ctx.cut(tls::error_chain(&e))),
                Ok(Ok(None)) => return Ok(buf.freeze()),
                Ok(Ok(Some(c))) => {
                    if buf.len() as u64 + c.len() as u64 > max {
                        return Err(ctx.too_large(max));
                    }
                    buf.extend_from_slice(&c);
                }
            }
        }
    }
}

fn basic_header(user: &str, password: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {enc}")
}

/// `bytes START-END/TOTAL` -> START.
fn parse_content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = rest.split_once('-')?;
    start.trim().parse().ok()
}

/// `https://host[:port]`, `http://host[:port]` or `host[:port]` (HTTPS, or probed for hosts
/// allowed plain HTTP). Paths are not supported: mirrors serve `/v2/` at their root.
fn parse_mirror(m: &str, opts: &ClientOptions) -> Result<Endpoint, RegistryError> {
    let bad = |why: &str| RegistryError::Config(format!("mirror {m:?}: {why}"));
    let s = m.trim();
    let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
        (Some(Scheme::Https), r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (Some(Scheme::Http), r)
    } else {
        (None, s)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("expected [https://]host[:port] without a path"));
    }
    let host = rest.to_ascii_lowercase();
    if scheme == Some(Scheme::Http) && !plain_http_allowed(&opts.insecure, &host) {
        return Err(bad(
            "plain http is only allowed for loopback hosts and hosts listed in insecure",
        ));
    }
    Ok(Endpoint {
        name: host.clone(),
        host,
        scheme,
        mirror: true,
    })
}

/// A number in [0, 1) from the std hasher's random keys: enough to spread retries.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
