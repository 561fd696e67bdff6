//! The agent's own persisted state (`<root>/agent/state.json`): per project, which revision
//! is applied and which one failed, so that a restart (or a power loss) neither re-applies a
//! known-bad commit in a loop nor forgets what runs. Written atomically after every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    #[serde(default)]
    pub projects: BTreeMap<String, ProjectState>,
    /// Source name -> unix seconds of its last successful sync (restored into metrics).
    #[serde(default)]
    pub last_success: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectState {
    pub source: String,
    /// The project's directory in the repository.
    pub path: String,
    /// The revision applied and found good.
    pub applied: Option<String>,
    /// The newest revision that failed, and why.
    pub failed: Option<Failure>,
    /// Changes held back until the update window opens.
    #[serde(default)]
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub revision: String,
    /// The planned actions, as `plan` prints them.
    pub changes: Vec<String>,
    /// When the window opens next (RFC 3339), if known.
    pub opens_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub revision: String,
    pub reason: String,
    /// The metric's failure reason (fetch, manifest, image, apply, health_gate, internal).
    pub kind: String,
    /// Unix seconds.
    pub at: u64,
    /// A transient failure (registry or network down) is retried with backoff; any other
    /// waits for a new commit or a manual sync.
    pub transient: bool,
    pub attempts: u32,
    /// Unix seconds before which a transient failure is not retried.
    pub retry_at: u64,
}

pub fn path(root: &Path) -> PathBuf {
    root.join("agent").join("state.json")
}

impl AgentState {
    /// The saved state; a missing or unreadable file gives an empty state (the agent then
    /// re-derives everything: applying an unchanged commit touches nothing).
    pub fn load(root: &Path) -> AgentState {
        std::fs::read(path(root))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, root: &Path) -> std::io::Result<()> {
        let p = path(root);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&p, &bytes)
    }
}

/// Backoff before retrying a transient failure: 10 s doubling to 10 min.
pub fn retry_delay(attempts: u32) -> u64 {
    (10u64 << attempts.min(6)).min(600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(AgentState::load(dir.path()), AgentState::default());
        let mut s = AgentState::default();
        s.projects.insert(
            "web".into(),
            ProjectState {
                source: "fleet".into(),
                path: "stacks/web".into(),
                applied: Some("abc".into()),
                failed: Some(Failure {
                    revision: "def".into(),
                    reason: "bad yaml".into(),
                    kind: "manifest".into(),
                    at: 5,
                    transient: false,
                    attempts: 1,
                    retry_at: 0,
                }),
                pending: None,
            },
        );
        s.save(dir.path()).unwrap();
        assert_eq!(AgentState::load(dir.path()), s);
        std::fs::write(path(dir.path()), b"{ not json").unwrap();
        assert_eq!(AgentState::load(dir.path()), AgentState::default());
    }

    #[test]
    fn retries_back_off_to_ten_minutes() {
        assert_eq!(retry_delay(0), 10);
        assert_eq!(retry_delay(1), 20);
        assert_eq!(retry_delay(5), 320);
        assert_eq!(retry_delay(6), 600);
        assert_eq!(retry_delay(60), 600);
    }
}
