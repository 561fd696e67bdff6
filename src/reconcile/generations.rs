//! Each apply of a project is a generation: the source revision, the project as loaded
//! (compose-spec JSON, for rollback), and per service the inputs it was built from. Kept
//! under `<root>/projects/<name>/generations/<n>.json`, written atomically; the newest good
//! one is what `rollback` and a failed update return to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::plan::ServiceInputs;

use super::ReconcileError;

/// How many generations are kept per project (the newest good one is always kept).
pub const KEEP: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Being applied (a crash leaves it so: not good).
    Applying,
    /// Applied and stable through the health gate.
    Good,
    /// Failed (and rolled back when a good generation existed).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    #[serde(with = "crate::runtime::protocol::rfc3339")]
    pub created: SystemTime,
    pub status: Status,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The source revision (git commit) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The project directory it was loaded from.
    pub working_dir: PathBuf,
    /// The normalized project (compose-spec JSON) with images pinned to their digests.
    pub project: serde_json::Value,
    /// Service -> (config hash, inputs).
    pub services: BTreeMap<String, ServiceRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub hash: String,
    pub inputs: ServiceInputs,
}

/// `<root>/projects/<name>/generations/`.
pub fn dir(root: &Path, project: &str) -> PathBuf {
    root.join("projects").join(project).join("generations")
}

fn path(root: &Path, project: &str, n: u64) -> PathBuf {
    dir(root, project).join(format!("{n:08}.json"))
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> ReconcileError {
    move |source| ReconcileError::State { what, source }
}

/// All generations of a project, oldest first (unreadable files are skipped).
pub fn list(root: &Path, project: &str) -> Result<Vec<Generation>, ReconcileError> {
    let d = dir(root, project);
    let files = crate::fsutil::numbered_json_files(&d)
        .map_err(|e| io_err(format!("read {}", d.display()))(e))?;
    let mut out = Vec::new();
    for (_, path) in files {
        // Bounded: a generation is a project description, not bulk data.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.len() > 64 << 20 {
            continue;
        }
        if let Ok(g) = serde_json::from_slice::<Generation>(&bytes) {
            out.push(g);
        }
    }
    out.sort_by_key(|g| g.number);
    Ok(out)
}

/// The newest generation with status good, other than `except`.
pub fn last_good(
    root: &Path,
    project: &str,
    except: Option<u64>,
) -> Result<Option<Generation>, ReconcileError> {
    Ok(list(root, project)?
        .into_iter()
        .rev()
        .find(|g| g.status == Status::Good && Some(g.number) != except))
}

/// The next generation number.
pub fn next_number(root: &Path, project: &str) -> Result<u64, ReconcileError> {
    Ok(list(root, project)?.last().map_or(1, |g| g.number + 1))
}

/// Writes (or rewrites) a generation atomically, then drops old ones beyond [`KEEP`] (never
/// the newest good one).
pub fn save(root: &Path, project: &str, g: &Generation) -> Result<(), ReconcileError> {
    let d = dir(root, project);
    std::fs::create_dir_all(&d).map_err(io_err(format!("create {}", d.display())))?;
    let p = path(root, project, g.number);
    let bytes = serde_json::to_vec_pretty(g).map_err(|e| ReconcileError::State {
        what: format!("serialize generation {}", g.number),
        source: std::io::Error::other(e.to_string()),
    })?;
    crate::fsutil::write_atomic(&p, &bytes).map_err(io_err(format!("write {}", p.display())))?;
    let all = list(root, project)?;
    if all.len() > KEEP {
        let good = all
            .iter()
            .rev()
            .find(|g| g.status == Status::Good)
            .map(|g| g.number);
        for old in &all[..all.len() - KEEP] {
            if Some(old.number) != good {
                let _ = std::fs::remove_file(path(root, project, old.number));
            }
        }
    }
    Ok(())
}

/// Removes a project's state (for `down`).
pub fn forget(root: &Path, project: &str) -> Result<(), ReconcileError> {
    let d = root.join("projects").join(project);
    match std::fs::remove_dir_all(&d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", d.display()))(e)),
    }
}
