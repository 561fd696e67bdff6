//! What the agent publishes for the API, the CLI and metrics: snapshots (never live state),
//! events, and the triggers others may send to the single-writer reconcile loop.

use serde::{Deserialize, Serialize};

/// The agent's whole status (`GET /v1/status`, `dockmaster status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    /// Unix seconds.
    pub started_at: u64,
    /// True once the first sync pass (or the restore of local state) finished.
    pub ready: bool,
    /// Host labels from the configuration.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub sources: Vec<SourceStatus>,
    pub projects: Vec<ProjectStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    /// The URL without credentials.
    pub url: String,
    /// `branch main`, `tag v1`, `commit abc…`.
    pub reference: String,
    /// The commit the reference pointed to at the last fetch.
    pub revision: Option<String>,
    /// Unix seconds of the last successful fetch (or remote check).
    pub last_fetch: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectStatus {
    pub name: String,
    pub source: String,
    /// The project's directory in the repository.
    pub path: String,
    /// The revision that is applied (last good generation).
    pub revision: Option<String>,
    pub generation: Option<u64>,
    /// converged | applying | failed | pending | removed
    pub state: String,
    pub last_error: Option<ErrorRecord>,
    /// Planned changes not applied yet (outside an update window, or `notify` image updates).
    #[serde(default)]
    pub pending: Vec<String>,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub revision: Option<String>,
    pub reason: String,
    /// Unix seconds.
    pub at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub image: String,
    pub digest: Option<String>,
    pub desired: u32,
    pub running: u32,
    /// running | restarting | exited | created | dead | missing (worst replica's state)
    pub state: String,
    /// healthy | unhealthy | starting, when the service has a healthcheck
    pub health: Option<String>,
    pub restarts: u64,
    /// A newer digest of a `notify` (or not yet applied `follow`) image.
    pub update: Option<String>,
}

/// One line of `dockmaster history` (`GET /v1/history`): a generation of a project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub project: String,
    pub generation: u64,
    pub revision: Option<String>,
    /// applying | good | failed
    pub status: String,
    pub error: Option<String>,
    /// Unix seconds.
    pub at: u64,
    /// service -> image pinned by digest
    #[serde(default)]
    pub images: std::collections::BTreeMap<String, String>,
}

/// Something that happened (`GET /v1/events`, `dockmaster events -f`): one JSON per line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// sync | fetch | apply | rollback | drift | image-update | webhook | error | config | job
    pub kind: String,
    pub source: Option<String>,
    pub project: Option<String>,
    pub message: String,
}

/// Why the reconcile loop should run now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "kebab-case")]
pub enum Trigger {
    /// `dockmaster sync` / `POST /v1/sync`: fetch and reconcile every source at once, retrying
    /// failed commits too. `now` also overrides update windows.
    Manual { now: bool },
    /// A verified webhook (`POST /hooks/git`).
    Webhook,
}
