//! The agent's HTTP servers: the public listener (`/metrics`, `/healthz`, `/readyz`,
//! `POST /hooks/git`) and the admin API (`/v1/...`) on a unix socket and optionally on a
//! loopback TCP address behind a bearer token.
//!
//! Handlers only read snapshots (the status watch, the history callback, the event hub) and
//! send to channels; they never wait on the reconcile loop, so a slow or hostile client costs
//! one task and never the loop.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};

use super::webhook::{self, WebhookSecrets};
use crate::agent::status::{AgentStatus, Event, HistoryEntry, Trigger};
use crate::error::{Categorized, Category};
use crate::jobs::{JobsControl, RunNowError};

/// Largest webhook body accepted (GitHub caps payloads at 25 MB, but a push payload is a few
/// KiB; anything near this is not a push worth a sync).
pub const WEBHOOK_BODY_MAX: usize = 1 << 20;
/// Largest admin request body (`POST /v1/sync`).
const ADMIN_BODY_MAX: usize = 64 << 10;
/// Longest project or service name accepted in a `/v1/jobs/...` path (Compose names are far
/// shorter; this only bounds what reaches the scheduler and the file system).
pub const JOB_NAME_MAX: usize = 255;
/// A webhook body must arrive within this.
const WEBHOOK_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `POST /v1/sync` waits for room in a full trigger channel.
const TRIGGER_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// After the shutdown signal, connections get this long to finish before the server returns
/// anyway (a client stuck in the middle of its request head would otherwise hold it forever).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const NDJSON: &str = "application/x-ndjson";

/// `(project filter) -> generations`, newest last or first as the agent keeps them. May block
/// (it runs on the blocking pool).
pub type HistoryFn = Arc<dyn Fn(Option<&str>) -> Vec<HistoryEntry> + Send + Sync>;
/// The Prometheus text exposition. May block (it runs on the blocking pool).
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;
/// Called once per webhook request with its result label:
/// `accepted | bad_signature | bad_request | disabled`.
pub type WebhookObserver = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything the HTTP servers need from the agent. Cheap to clone; the same state serves the
/// public listener and every admin listener.
#[derive(Clone)]
pub struct ApiState {
    /// The agent's latest status snapshot (`/v1/status`, `/readyz`).
    pub status: watch::Receiver<AgentStatus>,
    pub history: HistoryFn,
    /// To the reconcile loop: `Trigger::Webhook` (try_send: a full channel means a sync is
    /// pending already) and `Trigger::Manual` (waits briefly for room).
    pub triggers: mpsc::Sender<Trigger>,
    /// Events for `/v1/events`; the agent publishes through the same hub.
    pub events: EventHub,
    pub metrics: MetricsFn,
    pub webhook: WebhookSecrets,
    /// Bearer token required by the admin API on TCP (the unix socket relies on its mode).
    pub api_token: Option<String>,
    pub on_webhook: WebhookObserver,
    /// The job scheduler (`/v1/jobs...`); `None` answers 503 "jobs are not available".
    pub jobs: Option<Arc<dyn JobsControl>>,
}

/// Events fan out to followers through a broadcast channel and the last few are kept for
/// `GET /v1/events?follow=false` and for the start of a follow. Publishing never blocks on
/// subscribers: a subscriber that lags skips what it missed.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    tx: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
    keep: usize,
}

impl EventHub {
    /// Keeps the last `keep` events; each follower may fall `channel` events behind before it
    /// skips.
    pub fn new(keep: usize, channel: usize) -> Self {
        let (tx, _) = broadcast::channel(channel.max(1));
        EventHub {
            inner: Arc::new(HubInner {
                tx,
                recent: Mutex::new(VecDeque::with_capacity(keep)),
                keep,
            }),
        }
    }

    /// Records and broadcasts an event.
    pub fn publish(&self, event: Event) {
        // The broadcast happens under the lock so `subscribe` sees every event exactly once:
        // either in its snapshot or on its receiver.
        let mut recent = self.lock();
        if self.inner.keep > 0 {
            if recent.len() == self.inner.keep {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // No receivers is fine.
        let _ = self.inner.tx.send(event);
    }

    /// The kept events, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        self.lock().iter().cloned().collect()
    }

    /// The kept events and a receiver for everything published after them.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let recent = self.lock();
        (recent.iter().cloned().collect(), self.inner.tx.subscribe())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.inner.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new(100, 256)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("creating the api socket directory {path}: {source}")]
    SocketDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another agent is serving the api socket {path}")]
    InUse { path: PathBuf },
    #[error("api socket {path} exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("binding the api socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin api on tcp {addr} needs an api token")]
    TcpWithoutToken { addr: String },
    #[error("serving the {what} api: {source}")]
    Serve {
        what: &'static str,
        source: std::io::Error,
    },
}

impl Categorized for ApiError {
    fn category(&self) -> Category {
        match self {
            ApiError::InUse { .. } | ApiError::NotASocket { .. } => Category::Conflict,
            ApiError::TcpWithoutToken { .. } => Category::Invalid,
            ApiError::SocketDir { .. } | ApiError::Bind { .. } | ApiError::Serve { .. } => {
                Category::Internal
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Public listener

/// `/metrics`, `/healthz`, `/readyz`, `POST /hooks/git`.
pub fn public_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .route("/hooks/git", post(hook))
        .with_state(state)
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let render = state.metrics.clone();
    match tokio::task::spawn_blocking(move || render()).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("rendering metrics failed: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering metrics failed",
            )
        }
    }
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.status.borrow().ready {
        text(StatusCode::OK, "ready")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads at most `max` bytes of a body; more is `TooLarge` without reading the rest.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if out.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

async fn hook(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    let (label, response) = hook_inner(&state, &headers, body).await;
    (state.on_webhook)(label);
    response
}

async fn hook_inner(state: &ApiState, headers: &HeaderMap, body: Body) -> (&'static str, Response) {
    if !state.webhook.enabled() {
        return ("disabled", text(StatusCode::FORBIDDEN, "webhook disabled"));
    }
    let body = match tokio::time::timeout(
        WEBHOOK_READ_TIMEOUT,
        read_body(headers, body, WEBHOOK_BODY_MAX),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::TooLarge)) => {
            let msg = format!("webhook body larger than {WEBHOOK_BODY_MAX} bytes");
            return ("bad_request", text(StatusCode::PAYLOAD_TOO_LARGE, msg));
        }
        Ok(Err(BodyError::Read(e))) => {
            let msg = format!("reading the webhook body: {e}");
            return ("bad_request", text(StatusCode::BAD_REQUEST, msg));
        }
        Err(_) => {
            let msg = "reading the webhook body timed out";
            return ("bad_request", text(StatusCode::REQUEST_TIMEOUT, msg));
        }
    };
    let verified = match webhook::verify(headers, &body, &state.webhook) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("rejected webhook: {e}");
            let status = match &e {
                webhook::WebhookError::NotConfigured { .. } => StatusCode::FORBIDDEN,
                webhook::WebhookError::MalformedSignature { .. } => StatusCode::BAD_REQUEST,
                webhook::WebhookError::MissingSignature
                | webhook::WebhookError::BadSignature { .. } => StatusCode::UNAUTHORIZED,
            };
            return (e.label(), text(status, e.to_string()));
        }
    };
    let message = verified.describe();
    tracing::info!("{message}");
    let response = match state.triggers.try_send(Trigger::Webhook) {
        // Full: a sync is pending already and will see this push.
        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {
            text(StatusCode::ACCEPTED, "sync requested")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        ),
    };
    state.events.publish(Event {
        at_ms: now_ms(),
        kind: "webhook".into(),
        source: None,
        project: None,
        message,
    });
    ("accepted", response)
}

// ---------------------------------------------------------------------------------------------
// Admin API

#[derive(Clone)]
struct AdminState {
    api: ApiState,
    /// Flips to true on shutdown: ends event streams so graceful shutdown can finish.
    stop: watch::Receiver<bool>,
}

/// `/v1/status`, `/v1/history`, `/v1/sync`, `/v1/events`, `/v1/jobs...`. `stop` turning true
/// ends open event streams (the serve functions wire it to their shutdown signal).
fn admin_router(api: ApiState, stop: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/v1/status", get(v1_status))
        .route("/v1/history", get(v1_history))
        .route("/v1/sync", post(v1_sync))
        .route("/v1/events", get(v1_events))
        .route("/v1/jobs", get(v1_jobs))
        .route("/v1/jobs/{project}/{service}/runs", get(v1_job_runs))
        .route("/v1/jobs/{project}/{service}/run", post(v1_job_run))
        .with_state(AdminState { api, stop })
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding json: {e}"),
        ),
    }
}

async fn v1_status(State(state): State<AdminState>) -> Response {
    let status = state.api.status.borrow().clone();
    json(&status)
}

#[derive(Deserialize)]
struct HistoryQuery {
    project: Option<String>,
}

async fn v1_history(State(state): State<AdminState>, Query(q): Query<HistoryQuery>) -> Response {
    let history = state.api.history.clone();
    match tokio::task::spawn_blocking(move || history(q.project.as_deref())).await {
        Ok(entries) => json(&entries),
        Err(e) => {
            tracing::error!("reading history failed: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "reading history failed")
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    #[serde(default)]
    now: bool,
}

async fn v1_sync(State(state): State<AdminState>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&headers, body, ADMIN_BODY_MAX).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "sync request too large")
        }
        Err(BodyError::Read(e)) => return text(StatusCode::BAD_REQUEST, e),
    };
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        SyncRequest::default()
    } else {
        match serde_json::from_slice::<SyncRequest>(&body) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("sync request: {e}")),
        }
    };
    let trigger = Trigger::Manual { now: request.now };
    match tokio::time::timeout(TRIGGER_SEND_TIMEOUT, state.api.triggers.send(trigger)).await {
        Ok(Ok(())) => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "requested": true, "now": request.now }).to_string(),
        )
            .into_response(),
        Ok(Err(_)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent's trigger queue stayed full",
        ),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    follow: Option<bool>,
}

fn event_line(e: &Event) -> Option<Bytes> {
    let mut line = serde_json::to_vec(e).ok()?;
    line.push(b'\n');
    Some(line.into())
}

/// Newline-delimited JSON: the kept events, then (unless `follow=false`) each new one until
/// the agent stops. A follower that lags skips what it missed.
async fn v1_events(State(state): State<AdminState>, Query(q): Query<EventsQuery>) -> Response {
    let follow = q.follow.unwrap_or(true);
    let (recent, rx) = state.api.events.subscribe();
    let replay = futures_util::stream::iter(
        recent
            .into_iter()
            .filter_map(|e| event_line(&e))
            .map(Ok::<_, Infallible>)
            .collect::<Vec<_>>(),
    );
    let body = if follow {
        let live =
            futures_util::stream::unfold((rx, state.stop), |(mut rx, mut stop)| async move {
                loop {
                    if *stop.borrow() {
                        return None;
                    }
                    tokio::select! {
                        r = rx.recv() => match r {
                            Ok(e) => match event_line(&e) {
                                Some(line) => return Some((Ok(line), (rx, stop))),
                                None => continue,
                            },
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                tracing::debug!("event follower skipped {n} events");
                                continue;
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        r = stop.changed() => if r.is_err() { return None },
                    }
                }
            });
        Body::from_stream(replay.chain(live))
    } else {
        Body::from_stream(replay)
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(NDJSON)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Jobs

fn jobs_unavailable() -> Response {
    text(StatusCode::SERVICE_UNAVAILABLE, "jobs are not available")
}

fn run_now_error(e: &RunNowError) -> Response {
    let status = match e {
        RunNowError::NotFound { .. } => StatusCode::NOT_FOUND,
        RunNowError::Busy { .. } => StatusCode::CONFLICT,
        RunNowError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, e.to_string())
}

/// Why a project or service name from a path is refused (`None`: it is acceptable). The
/// names become directory names under the root, so nothing that could leave a directory.
pub fn job_name_problem(what: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        Some(format!("empty {what} name"))
    } else if name.len() > JOB_NAME_MAX {
        Some(format!("{what} name longer than {JOB_NAME_MAX} bytes"))
    } else if name == "." || name == ".." || name.contains('/') {
        Some(format!("invalid {what} name {name:?}"))
    } else if name.chars().any(char::is_control) {
        Some(format!("invalid {what} name {name:?}: control characters"))
    } else {
        None
    }
}

/// The `{project}/{service}` of a jobs path, or why it is refused (a 400).
fn job_path(
    path: Result<UrlPath<(String, String)>, PathRejection>,
) -> Result<(String, String), String> {
    let UrlPath((project, service)) = path.map_err(|e| e.body_text())?;
    for (what, name) in [("project", &project), ("service", &service)] {
        if let Some(problem) = job_name_problem(what, name) {
            return Err(problem);
        }
    }
    Ok((project, service))
}

/// Runs `f` with the scheduler on the blocking pool (its calls may read files).
async fn with_jobs<T: Send + 'static>(
    state: &AdminState,
    f: impl FnOnce(&dyn JobsControl) -> T + Send + 'static,
) -> Result<T, Response> {
    let Some(jobs) = state.api.jobs.clone() else {
        return Err(jobs_unavailable());
    };
    tokio::task::spawn_blocking(move || f(jobs.as_ref()))
        .await
        .map_err(|e| {
            tracing::error!("jobs request failed: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "jobs request failed")
        })
}

async fn v1_jobs(State(state): State<AdminState>) -> Response {
    match with_jobs(&state, |jobs| jobs.list()).await {
        Ok(list) => json(&list),
        Err(r) => r,
    }
}

async fn v1_job_runs(
    State(state): State<AdminState>,
    path: Result<UrlPath<(String, String)>, PathRejection>,
) -> Response {
    let (project, service) = match job_path(path) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    match with_jobs(&state, move |jobs| jobs.history(&project, &service)).await {
        Ok(Ok(runs)) => json(&runs),
        Ok(Err(e)) => run_now_error(&e),
        Err(r) => r,
    }
}

async fn v1_job_run(
    State(state): State<AdminState>,
    path: Result<UrlPath<(String, String)>, PathRejection>,
) -> Response {
    let (project, service) = match job_path(path) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    match with_jobs(&state, move |jobs| jobs.run_now(&project, &service)).await {
        Ok(Ok(seq)) => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "run": seq }).to_string(),
        )
            .into_response(),
        Ok(Err(e)) => run_now_error(&e),
        Err(r) => r,
    }
}

async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(t) if webhook::token_eq(t, token.as_bytes()) => next.run(request).await,
        _ => {
            let mut r = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving

/// Runs `serve` until it ends; once `stopped` flips, gives it `SHUTDOWN_GRACE` to finish.
async fn serve_with_grace(
    what: &'static str,
    serve: impl Future<Output = std::io::Result<()>>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    tokio::pin!(serve);
    let result = tokio::select! {
        r = &mut serve => r,
        // The guard `wait_for` returns must not live across the await below (not Send).
        _ = async { let _ = stopped.wait_for(|s| *s).await; } => {
            tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await.unwrap_or(Ok(()))
        }
    };
    result.map_err(|source| ApiError::Serve { what, source })
}

fn stop_signal(shutdown: impl Future<Output = ()> + Send + 'static) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => { let _ = tx.send(true); }
            // Every receiver gone: the server ended on its own.
            () = tx.closed() => {}
        }
    });
    rx
}

/// Serves the public endpoints until `shutdown` completes.
pub async fn serve_public(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let stop = stop_signal(shutdown);
    let mut signal = stop.clone();
    let serve = axum::serve(listener, public_router(state)).with_graceful_shutdown(async move {
        let _ = signal.wait_for(|s| *s).await;
    });
    serve_with_grace("public", serve.into_future(), stop).await
}

/// Serves the admin API on TCP; every request needs `Authorization: Bearer <api_token>`.
/// Refuses to start without a (non-empty) token.
pub async fn serve_admin_tcp(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let token: Arc<str> = match state.api_token.as_deref() {
        Some(t) if !t.is_empty() => t.into(),
        _ => {
            let addr = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into());
            // Logged here too: callers usually spawn this and may never look at the result.
            let err = ApiError::TcpWithoutToken { addr };
            tracing::error!("{err}");
            return Err(err);
        }
    };
    let stop = stop_signal(shutdown);
    let router = admin_router(state, stop.clone())
        .layer(middleware::from_fn_with_state(token, require_token));
    let mut signal = stop.clone();
    let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = signal.wait_for(|s| *s).await;
    });
    serve_with_grace("admin tcp", serve.into_future(), stop).await
}

/// The admin API's unix socket, bound with mode 0600 (binding needs no async runtime, so the
/// agent can report a busy socket before it starts serving).
#[derive(Debug)]
pub struct AdminSocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    ino: u64,
}

impl AdminSocket {
    /// Creates the parent directory if needed (mode 0700), replaces a stale socket (one
    /// nobody answers on), and binds. Fails when another process is serving `path` or when
    /// `path` is something other than a socket.
    pub fn bind(path: &Path) -> Result<AdminSocket, ApiError> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(|source| ApiError::SocketDir {
                path: parent.clone(),
                source,
            })?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ApiError::InUse { path: path.into() });
                }
            }
            Ok(_) => return Err(ApiError::NotASocket { path: path.into() }),
            Err(_) => {}
        }
        // Bind inside a private directory, fix the mode, then rename into place: nobody can
        // connect in between with the umask's mode, and the stale socket is replaced
        // atomically.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "agent.sock".into());
        let private = parent.join(format!(".{name}.{}.d", std::process::id()));
        let bind_err = |source| ApiError::Bind {
            path: path.into(),
            source,
        };
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(bind_err)?;
        let staged = private.join("s");
        let result = (|| {
            let listener = std::os::unix::net::UnixListener::bind(&staged)?;
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&staged, path)?;
            listener.set_nonblocking(true)?;
            let ino = std::fs::symlink_metadata(path)?.ino();
            Ok(AdminSocket {
                listener,
                path: path.into(),
                ino,
            })
        })();
        let _ = std::fs::remove_dir_all(&private);
        result.map_err(bind_err)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the socket file on exit, unless another process has replaced it since.
struct SocketFileGuard {
    path: PathBuf,
    ino: u64,
}

impl Drop for SocketFileGuard {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves the admin API on the unix socket until `shutdown` completes; removes the socket
/// file afterwards. Access control is the socket's mode (root only).
pub async fn serve_admin_unix(
    socket: AdminSocket,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let _guard = SocketFileGuard {
        path: socket.path.clone(),
        ino: socket.ino,
    };
    let listener =
        tokio::net::UnixListener::from_std(socket.listener).map_err(|source| ApiError::Bind {
            path: socket.path.clone(),
            source,
        })?;
    let stop = stop_signal(shutdown);
    let mut signal = stop.clone();
    let serve = axum::serve(listener, admin_router(state, stop.clone())).with_graceful_shutdown(
        async move {
            let _ = signal.wait_for(|s| *s).await;
        },
    );
    serve_with_grace("admin unix", serve.into_future(), stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Event {
        Event {
            at_ms: n,
            kind: "sync".into(),
            message: format!("event {n}"),
            ..Default::default()
        }
    }

    #[test]
    fn hub_keeps_the_last_events_and_hands_each_out_once() {
        let hub = EventHub::new(3, 8);
        for n in 0..5 {
            hub.publish(event(n));
        }
        let kept: Vec<u64> = hub.recent().iter().map(|e| e.at_ms).collect();
        assert_eq!(kept, [2, 3, 4]);
        let (snapshot, mut rx) = hub.subscribe();
        assert_eq!(snapshot.len(), 3);
        hub.publish(event(5));
        assert_eq!(rx.try_recv().unwrap().at_ms, 5);
        assert!(rx.try_recv().is_err());
        // Keeping nothing still broadcasts.
        let hub = EventHub::new(0, 8);
        let (snapshot, mut rx) = hub.subscribe();
        hub.publish(event(1));
        assert!(snapshot.is_empty() && hub.recent().is_empty());
        assert_eq!(rx.try_recv().unwrap().at_ms, 1);
    }

    #[test]
    fn job_names_from_paths() {
        assert_eq!(job_name_problem("service", "backup-1.db_x"), None);
        for bad in ["", ".", "..", "a/b", "a\nb", "\0"] {
            assert!(job_name_problem("service", bad).is_some(), "{bad:?}");
        }
        assert_eq!(job_name_problem("project", &"p".repeat(JOB_NAME_MAX)), None);
        assert_eq!(
            job_name_problem("project", &"p".repeat(JOB_NAME_MAX + 1)).as_deref(),
            Some("project name longer than 255 bytes")
        );
    }

    #[test]
    fn bind_replaces_stale_refuses_live_and_non_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent.sock");
        let first = AdminSocket::bind(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Live (bound and listening): refused.
        assert!(matches!(
            AdminSocket::bind(&path),
            Err(ApiError::InUse { .. })
        ));
        // Stale: the listener is gone, the file stays.
        drop(first);
        let second = AdminSocket::bind(&path).unwrap();
        assert_ne!(second.ino, 0);
        // No staging directory left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["agent.sock"]);
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            AdminSocket::bind(&file),
            Err(ApiError::NotASocket { .. })
        ));
    }
}
