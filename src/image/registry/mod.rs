//! OCI distribution client: auth, credentials, TLS, mirrors, retries, resumable blob downloads.
//!
//! - [`client`]: [`RegistryClient`], the requests, endpoints (mirrors), scheme choice and retries.
//! - [`auth`]: `WWW-Authenticate` parsing and the bearer token cache.
//! - [`credentials`]: Docker-style `config.json` and `docker-credential-*` helpers.
//! - [`tls`]: one `reqwest::Client` per registry host with its `certs.d` CA files.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod tls;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{RegistriesConfig, DEFAULT_CERTS_DIR};
use crate::error::{Categorized, Category};

pub use auth::{parse_www_authenticate, Challenge};
pub use client::{FetchedManifest, RegistryClient};
pub use credentials::{Credential, CredentialStore};

/// Largest manifest body accepted.
pub const MANIFEST_MAX: u64 = 4 << 20;
/// Largest blob [`RegistryClient::fetch_blob_bytes`] holds in memory (image configs).
pub const BLOB_BYTES_MAX: u64 = 16 << 20;
/// Default attempts per request on transient errors.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// How the client finds credentials and certificates, and how patient it is.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `config.json` from the agent config; takes precedence over `default_auth_file`.
    pub auth_file: Option<PathBuf>,
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`; read when present.
    pub default_auth_file: Option<PathBuf>,
    /// `<certs_dir>/<host:port>/*.crt` are extra CAs; `client.cert` + `client.key` (or any
    /// `X.cert` + `X.key`) a client certificate for mutual TLS.
    pub certs_dir: PathBuf,
    /// Hosts (`host` or `host:port`) allowed over plain HTTP, like Docker's
    /// `insecure-registries`: HTTPS is tried first without certificate verification, then
    /// HTTP. Loopback hosts are always allowed plain HTTP but keep certificate verification.
    pub insecure: Vec<String>,
    /// Mirrors per registry domain; only `docker.io` is honoured.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Attempts per request on transient errors (at least 1).
    pub max_attempts: u32,
    pub user_agent: String,
    /// `PATH` searched for `docker-credential-*` helpers; `None` uses the process's `PATH`.
    pub helper_path: Option<OsString>,
    /// TCP + TLS connection setup.
    pub connect_timeout: Duration,
    /// From sending a request to its response headers.
    pub response_timeout: Duration,
    /// Longest wait for the next bytes of a body before the transfer counts as stalled.
    pub stall_timeout: Duration,
    /// First retry delay; doubled per attempt up to `retry_max_delay`, with jitter.
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            auth_file: None,
            default_auth_file: default_docker_config(),
            certs_dir: PathBuf::from(DEFAULT_CERTS_DIR),
            insecure: Vec::new(),
            mirrors: BTreeMap::new(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            user_agent: format!("dockmaster/{}", env!("CARGO_PKG_VERSION")),
            helper_path: None,
            connect_timeout: Duration::from_secs(15),
            response_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(30),
            retry_base_delay: Duration::from_millis(250),
            retry_max_delay: Duration::from_secs(10),
        }
    }
}

impl ClientOptions {
    pub fn from_config(c: &RegistriesConfig) -> Self {
        let d = ClientOptions::default();
        ClientOptions {
            auth_file: c.auth_file.clone(),
            certs_dir: c.certs_dir.clone().unwrap_or(d.certs_dir.clone()),
            insecure: c.insecure.clone(),
            mirrors: c.mirrors.clone(),
            max_attempts: c.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1),
            ..d
        }
    }
}

/// Docker's lookup: `$DOCKER_CONFIG/config.json` when set, else `~/.docker/config.json`.
pub fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// What went wrong talking to a registry. Every variant names the registry and, where one
/// is involved, the repository and the object (`manifest <tag|digest>` or `blob <digest>`).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid registry client configuration: {0}")]
    Config(String),
    #[error("{object} not found in repository {repository} on registry {registry}")]
    NotFound {
        registry: String,
        repository: String,
        object: String,
    },
    #[error("authentication to {registry} failed for user '{user}': {status}")]
    AuthFailed {
        registry: String,
        user: String,
        status: String,
    },
    #[error(
        "registry {registry} refused anonymous access to repository {repository} ({status}): \
         it may not exist, or it needs credentials and none were found for {registry} \
         (looked in {searched})"
    )]
    AuthRequired {
        registry: String,
        repository: String,
        status: String,
        searched: String,
    },
    #[error("access to repository {repository} on registry {registry} denied: {detail}")]
    Denied {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error(
        "tls connection to registry {registry} failed: {detail}; if the registry uses a \
         private certificate authority, put its certificate in {hint}"
    )]
    Tls {
        registry: String,
        detail: String,
        hint: String,
    },
    #[error("cannot reach registry {registry} for {object} in {repository}: {detail}")]
    Connect {
        registry: String,
        repository: String,
        object: String,
        detail: String,
    },
    #[error("registry {registry} timed out {during} for {object} in {repository} after {secs}s")]
    Timeout {
        registry: String,
        repository: String,
        object: String,
        during: &'static str,
        secs: u64,
    },
    #[error("registry {registry} answered {status} for {object} in {repository}: {detail}")]
    Status {
        registry: String,
        repository: String,
        object: String,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("download of {object} from repository {repository} on registry {registry} was cut: {detail}")]
    BodyCut {
        registry: String,
        repository: String,
        object: String,
        detail: String,
    },
    #[error(
        "{object} from repository {repository} on registry {registry} does not match digest \
         {expected} (got {actual})"
    )]
    DigestMismatch {
        registry: String,
        repository: String,
        object: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{object} from repository {repository} on registry {registry} is larger than {limit} bytes"
    )]
    TooLarge {
        registry: String,
        repository: String,
        object: String,
        limit: u64,
    },
    #[error(
        "{object} from repository {repository} on registry {registry} has {actual} bytes, \
         expected {expected}"
    )]
    SizeMismatch {
        registry: String,
        repository: String,
        object: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid response from registry {registry} for {object} in {repository}: {detail}")]
    Protocol {
        registry: String,
        repository: String,
        object: String,
        detail: String,
    },
    #[error("credential helper docker-credential-{helper} failed for {server}: {detail}")]
    CredentialHelper {
        helper: String,
        server: String,
        detail: String,
    },
    #[error("cannot read docker credentials file {path}: {detail}")]
    CredentialsFile { path: PathBuf, detail: String },
    #[error("the receiver of {object} from repository {repository} went away")]
    ReceiverClosed { repository: String, object: String },
}

impl Categorized for RegistryError {
    fn category(&self) -> Category {
        use RegistryError::*;
        match self {
            NotFound { .. } => Category::NotFound,
            Connect { .. } | Timeout { .. } | BodyCut { .. } => Category::Transient,
            Status { status, .. } if is_transient_status(*status) => Category::Transient,
            ReceiverClosed { .. } => Category::Internal,
            Config(_)
            | AuthFailed { .. }
            | AuthRequired { .. }
            | Denied { .. }
            | Tls { .. }
            | Status { .. }
            | DigestMismatch { .. }
            | TooLarge { .. }
            | SizeMismatch { .. }
            | Protocol { .. }
            | CredentialHelper { .. }
            | CredentialsFile { .. } => Category::Invalid,
        }
    }
}

impl RegistryError {
    /// Whether trying the same request again may succeed.
    pub fn is_transient(&self) -> bool {
        self.category() == Category::Transient
    }

    /// The server's `Retry-After`, when it sent one with a 429 or 503.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// 408, 429 and 5xx are worth retrying; other statuses will not change.
pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}
