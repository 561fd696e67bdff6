//! HTTP: /metrics, /healthz, /readyz, the git webhook, and the local admin API (unix socket).

pub mod client;
pub mod server;
pub mod webhook;

pub use server::{
    public_router, serve_admin_tcp, serve_admin_unix, serve_public, AdminSocket, ApiError,
    ApiState, EventHub, HistoryFn, MetricsFn, WebhookObserver,
};
pub use webhook::{Provider, Verified, WebhookError, WebhookSecrets};
