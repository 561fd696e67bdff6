//! Scheduled jobs: services with `x-dockmaster: {schedule: …}` are not kept running; at each
//! fire time of their schedule a container of the service runs to completion.
//!
//! - [`spec`]: the job keys and their validation ([`spec::JobSpec`]).
//! - [`catalog`]: the jobs of every project, read from each project's last good generation
//!   (what `dockmaster jobs` shows; what the scheduler runs).
//! - [`history`]: the runs kept per job (record, exit code, duration, log).
//! - [`scheduler`]: when runs start, concurrency, timeouts, retries and missed runs: pure
//!   decisions over an injected clock and a [`scheduler::Launcher`].
//! - [`runner`]: one run as a real container (created from the generation's pinned
//!   image, watched to its exit, its log kept, then removed).

pub mod catalog;
pub mod history;
pub mod runner;
pub mod scheduler;
pub mod spec;
pub mod worker;

use serde::{Deserialize, Serialize};

pub use history::{JobDir, RunRecord, RunResult, Trigger};
pub use spec::{Concurrency, JobSpec, Retry};

/// Label on the containers of job runs (value: the run's sequence number). Planner,
/// drift and status do not count these containers as service replicas.
pub const LABEL_JOB_RUN: &str = "dockmaster.job.run";

/// One job as `dockmaster jobs` and `GET /v1/jobs` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub project: String,
    pub service: String,
    pub schedule: String,
    /// The zone fire times are computed in (`UTC` unless `time_zone` is set).
    pub time_zone: String,
    pub concurrency: Concurrency,
    /// e.g. `10m`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The generation whose definition runs.
    pub generation: u64,
    /// The next fire time (RFC 3339 in the job's zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// Sequence numbers of the runs still going.
    #[serde(default)]
    pub running: Vec<u64>,
    /// The newest finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
}

/// Why a manual run was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunNowError {
    #[error("{project}/{service} is not a job of a deployed project (see `dockmaster jobs`)")]
    NotFound { project: String, service: String },
    #[error("{project}/{service}: run {seq} is still running and the job's concurrency is forbid")]
    Busy {
        project: String,
        service: String,
        seq: u64,
    },
    #[error("{0}")]
    Unavailable(String),
}

impl crate::error::Categorized for RunNowError {
    fn category(&self) -> crate::error::Category {
        use crate::error::Category;
        match self {
            RunNowError::NotFound { .. } => Category::NotFound,
            RunNowError::Busy { .. } => Category::Conflict,
            RunNowError::Unavailable(_) => Category::Transient,
        }
    }
}

/// What the agent's API needs of the scheduler. May block (callers use a blocking thread).
pub trait JobsControl: Send + Sync {
    /// Every job with its next fire time and latest runs.
    fn list(&self) -> Vec<JobInfo>;
    /// The runs kept of `project/service`, oldest first.
    fn history(&self, project: &str, service: &str) -> Result<Vec<RunRecord>, RunNowError>;
    /// Starts a run of `project/service` now (the job's concurrency policy applies);
    /// returns its sequence number.
    fn run_now(&self, project: &str, service: &str) -> Result<u64, RunNowError>;
}

/// `project/service` → the two names; `None` when it is not of that form.
pub fn split_job_name(name: &str) -> Option<(&str, &str)> {
    let (p, s) = name.split_once('/')?;
    (!p.is_empty() && !s.is_empty() && !s.contains('/')).then_some((p, s))
}
