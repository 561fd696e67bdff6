//! Prometheus metric families of the agent, its process and its containers.
//!
//! [`Metrics`] holds every family (prometheus-client) and is shared as `Arc<Metrics>`: the
//! agent loop records events through its methods, the HTTP server calls [`Metrics::encode`]
//! for `/metrics` (served with [`CONTENT_TYPE`]). Three parts are collected at scrape time,
//! not recorded: the containers ([`containers`]: state from their shims, usage from their
//! cgroups, see [`cgroup`]) and the agent's own process ([`process`]).
//!
//! The names, types and labels are an interface (alert rules and the Grafana dashboard in
//! deploy/ use them): docs/METRICS.md documents each, and tests/metrics.rs checks that the
//! exposition and the document list the same families and that `promtool check metrics`
//! accepts the output.
//!
//! Cardinality: labels are sources and projects (from the configuration), services,
//! container names (never ids), revisions (one per project at a time) and closed sets of
//! results and reasons. Whatever belongs to a removed project is removed by
//! [`Metrics::forget_project`].

pub mod cgroup;
pub mod containers;
pub mod exposition;
pub mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use cgroup::{CgroupReader, CgroupUsage};
pub use exposition::CONTENT_TYPE;
pub use process::ProcessStats;

/// Buckets of `dockmaster_sync_duration_seconds`: a no-op sync takes tens of ms, a cold
/// apply with pulls and health gates minutes.
pub const SYNC_BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Buckets of `dockmaster_job_duration_seconds`: from a quick cleanup to a long backup.
pub const JOB_BUCKETS: [f64; 12] = [
    0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

/// Buckets of `dockmaster_image_pull_duration_seconds`: cached layers to large images.
pub const PULL_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// How a sync run ended (`dockmaster_sync_runs_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncResult {
    /// Something was applied and the host converged.
    Success,
    /// Nothing to do: the host already matched the commit.
    Noop,
    /// The run failed for this reason; the last good generation keeps running.
    Failure(FailureReason),
}

impl SyncResult {
    pub const ALL_RESULTS: [&'static str; 3] = ["success", "failure", "noop"];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncResult::Success => "success",
            SyncResult::Noop => "noop",
            SyncResult::Failure(_) => "failure",
        }
    }
}

/// Why a sync failed (`dockmaster_sync_failures_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The git source could not be fetched (network, auth, corrupt mirror).
    Fetch,
    /// The commit's Compose files are invalid.
    Manifest,
    /// An image could not be pulled or resolved.
    Image,
    /// Creating, starting or removing containers, networks or volumes failed.
    Apply,
    /// A service did not become healthy and the project was rolled back.
    HealthGate,
    /// A bug or an unexpected local failure.
    Internal,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::Fetch,
        FailureReason::Manifest,
        FailureReason::Image,
        FailureReason::Apply,
        FailureReason::HealthGate,
        FailureReason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Fetch => "fetch",
            FailureReason::Manifest => "manifest",
            FailureReason::Image => "image",
            FailureReason::Apply => "apply",
            FailureReason::HealthGate => "health_gate",
            FailureReason::Internal => "internal",
        }
    }
}

/// What became of a `POST /hooks/git` (`dockmaster_webhook_requests_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    /// Verified; a sync was triggered.
    Accepted,
    /// The HMAC signature or the GitLab token did not match.
    BadSignature,
    /// Not a request the hook understands (method, headers, body).
    BadRequest,
    /// The webhook is not configured.
    Disabled,
}

impl WebhookResult {
    pub const ALL: [WebhookResult; 4] = [
        WebhookResult::Accepted,
        WebhookResult::BadSignature,
        WebhookResult::BadRequest,
        WebhookResult::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::BadSignature => "bad_signature",
            WebhookResult::BadRequest => "bad_request",
            WebhookResult::Disabled => "disabled",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceResultLabels {
    source: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceReasonLabels {
    source: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    source: String,
    project: String,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectLabels {
    project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    project: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobResultLabels {
    project: String,
    service: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// Which label sets exist, for what prometheus-client cannot do: list a family's series
/// (to remove a project's) and replace a project's revision series.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Sources whose zero series were created.
    sources: BTreeSet<String>,
    /// The labels of each project's `applied_revision_info` series.
    revisions: BTreeMap<String, RevisionLabels>,
    /// Services of each project with a per-service series.
    services: BTreeMap<String, BTreeSet<String>>,
    /// (project, service) with a `containers_desired` series.
    desired: BTreeSet<(String, String)>,
    /// (project, service) of jobs with series.
    jobs: BTreeSet<(String, String)>,
}

impl Index {
    fn desired_services(&self) -> BTreeSet<(String, String)> {
        self.desired.clone()
    }

    fn note_service(&mut self, project: &str, service: &str) {
        self.services
            .entry(project.to_string())
            .or_default()
            .insert(service.to_string());
    }
}

/// The index lock; a panic elsewhere while holding it leaves data that is still consistent
/// enough for metrics, so poisoning is ignored.
fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    index
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sync_histogram() -> Histogram {
    Histogram::new(SYNC_BUCKETS)
}

fn job_histogram() -> Histogram {
    Histogram::new(JOB_BUCKETS)
}

/// Every metric of the agent. `Send + Sync`: share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    index: Arc<Mutex<Index>>,
    sync_runs: Family<SourceResultLabels, Counter>,
    sync_failures: Family<SourceReasonLabels, Counter>,
    sync_duration: Family<SourceLabels, Histogram, fn() -> Histogram>,
    last_success: Family<SourceLabels, Gauge>,
    applied_revision: Family<RevisionLabels, Gauge>,
    generation: Family<ProjectLabels, Gauge>,
    pending: Family<ProjectLabels, Gauge>,
    desired: Family<ServiceLabels, Gauge>,
    pulls: Family<ResultLabels, Counter>,
    pull_bytes: Counter,
    pull_duration: Histogram,
    updates_available: Family<ServiceLabels, Gauge>,
    rollbacks: Family<ProjectLabels, Counter>,
    drift: Family<ServiceLabels, Counter>,
    webhooks: Family<ResultLabels, Counter>,
    job_runs: Family<JobResultLabels, Counter>,
    job_last_success: Family<ServiceLabels, Gauge>,
    job_last_failure: Family<ServiceLabels, Gauge>,
    job_duration: Family<ServiceLabels, Histogram, fn() -> Histogram>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The agent's metrics for state directory `root` (whose containers are collected at
    /// each scrape) and agent `version` (`dockmaster_build_info`). Cgroups are found from
    /// this process's mount table.
    pub fn new(root: &Path, version: &str) -> Metrics {
        Metrics::with_cgroups(root, version, CgroupReader::detect())
    }

    /// [`Metrics::new`] reading container cgroups through `cgroups` (tests: fake trees).
    pub fn with_cgroups(root: &Path, version: &str, cgroups: CgroupReader) -> Metrics {
        let index = Arc::new(Mutex::new(Index::default()));
        let mut m = Metrics {
            registry: Registry::default(),
            index: index.clone(),
            sync_runs: Family::default(),
            sync_failures: Family::default(),
            sync_duration: Family::new_with_constructor(sync_histogram),
            last_success: Family::default(),
            applied_revision: Family::default(),
            generation: Family::default(),
            pending: Family::default(),
            desired: Family::default(),
            pulls: Family::default(),
            pull_bytes: Counter::default(),
            pull_duration: Histogram::new(PULL_BUCKETS),
            updates_available: Family::default(),
            rollbacks: Family::default(),
            drift: Family::default(),
            webhooks: Family::default(),
            job_runs: Family::default(),
            job_last_success: Family::default(),
            job_last_failure: Family::default(),
            job_duration: Family::new_with_constructor(job_histogram),
        };

        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
        m.registry.register(
            "dockmaster_build_info",
            "Always 1; the version label is the agent's version",
            build_info,
        );

        // Families are cheap handles on shared maps: the registry's copy and ours are one.
        m.registry.register(
            "dockmaster_sync_runs",
            "Sync runs of a git source, by result (success, failure, noop)",
            m.sync_runs.clone(),
        );
        m.registry.register(
            "dockmaster_sync_failures",
            "Failed sync runs of a git source, by reason",
            m.sync_failures.clone(),
        );
        m.registry.register(
            "dockmaster_sync_duration_seconds",
            "Wall time of a sync run, from trigger to converged or failed",
            m.sync_duration.clone(),
        );
        m.registry.register(
            "dockmaster_last_successful_sync_timestamp_seconds",
            "Unix time of the last sync run of a source that succeeded or had nothing to do",
            m.last_success.clone(),
        );
        m.registry.register(
            "dockmaster_applied_revision_info",
            "Always 1; the revision label is the commit applied to the project",
            m.applied_revision.clone(),
        );
        m.registry.register(
            "dockmaster_project_generation",
            "Number of the project's applied generation",
            m.generation.clone(),
        );
        m.registry.register(
            "dockmaster_pending_changes",
            "Planned actions of the project not applied (failed or waiting)",
            m.pending.clone(),
        );
        m.registry.register(
            "dockmaster_containers_desired",
            "Containers the applied generation wants for the service",
            m.desired.clone(),
        );
        m.registry
            .register_collector(Box::new(containers::ContainerCollector {
                root: root.to_path_buf(),
                cgroups,
                index,
            }));
        m.registry.register(
            "dockmaster_image_pulls",
            "Image pulls by the agent, by result (success, failure)",
            m.pulls.clone(),
        );
        m.registry.register(
            "dockmaster_image_pull_bytes",
            "Bytes downloaded by image pulls",
            m.pull_bytes.clone(),
        );
        m.registry.register(
            "dockmaster_image_pull_duration_seconds",
            "Wall time of an image pull, successful or not",
            m.pull_duration.clone(),
        );
        m.registry.register(
            "dockmaster_image_updates_available",
            "1 when a newer digest of a notify-policy service's image tag exists",
            m.updates_available.clone(),
        );
        m.registry.register(
            "dockmaster_rollbacks",
            "Rollbacks of the project to its previous generation",
            m.rollbacks.clone(),
        );
        m.registry.register(
            "dockmaster_drift_corrections",
            "Containers of the service put back after they died, vanished or were changed",
            m.drift.clone(),
        );
        m.registry.register(
            "dockmaster_webhook_requests",
            "Webhook requests, by result",
            m.webhooks.clone(),
        );
        m.registry.register(
            "dockmaster_job_runs",
            "Finished runs of a scheduled job, by result (succeeded, failed, timeout, replaced, lost), and fire times skipped because a run was still going (skipped)",
            m.job_runs.clone(),
        );
        m.registry.register(
            "dockmaster_job_last_success_timestamp_seconds",
            "Unix time at which the job's last successful run finished",
            m.job_last_success.clone(),
        );
        m.registry.register(
            "dockmaster_job_last_failure_timestamp_seconds",
            "Unix time at which the job's last failed run (failed, timeout or lost) finished",
            m.job_last_failure.clone(),
        );
        m.registry.register(
            "dockmaster_job_duration_seconds",
            "Wall time of a finished job run",
            m.job_duration.clone(),
        );
        m.registry.register_collector(Box::new(ProcessCollector));

        // Closed label sets start at zero so the first event is an increase, not a new series.
        for result in ["success", "failure"] {
            m.pulls.get_or_create_owned(&ResultLabels {
                result: result.to_string(),
            });
        }
        for result in WebhookResult::ALL {
            m.webhooks.get_or_create_owned(&ResultLabels {
                result: result.as_str().to_string(),
            });
        }
        m
    }

    /// The exposition in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]), with the
    /// scrape-time parts collected now: each Compose container's shim is asked for its state
    /// and its cgroup read, by 4 threads (about 5 ms for 20 containers in a release build;
    /// a shim that does not answer holds its thread for the shim timeout, 5 s), so call it
    /// from a blocking thread.
    pub fn encode(&self) -> String {
        let mut openmetrics = String::new();
        if let Err(err) =
            prometheus_client::encoding::text::encode_registry(&mut openmetrics, &self.registry)
        {
            // Only a collector can fail (writing to a String cannot): keep what was written.
            tracing::error!("metrics encoding failed: {err}");
        }
        exposition::to_prometheus_text(&openmetrics)
    }

    /// A sync run of `source` ended with `result` after `duration`: counts the run (and the
    /// failure's reason) and observes the duration. `Success` and `Noop` also set the
    /// source's last successful sync time to now. The first run of a source creates all its
    /// result and reason series at zero.
    pub fn sync_finished(&self, source: &str, result: SyncResult, duration: Duration) {
        self.init_source(source);
        self.sync_runs
            .get_or_create(&SourceResultLabels {
                source: source.to_string(),
                result: result.as_str().to_string(),
            })
            .inc();
        if let SyncResult::Failure(reason) = result {
            self.sync_failures
                .get_or_create(&SourceReasonLabels {
                    source: source.to_string(),
                    reason: reason.as_str().to_string(),
                })
                .inc();
        }
        self.sync_duration
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .observe(duration.as_secs_f64());
        if matches!(result, SyncResult::Success | SyncResult::Noop) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.sync_succeeded_at(source, now);
        }
    }

    /// Sets the last successful sync time of `source` (unix seconds): for restoring it from
    /// the agent's state at startup; [`Metrics::sync_finished`] sets it on every success.
    pub fn sync_succeeded_at(&self, source: &str, unix_secs: u64) {
        self.last_success
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .set(i64::try_from(unix_secs).unwrap_or(i64::MAX));
    }

    fn init_source(&self, source: &str) {
        if !lock(&self.index).sources.insert(source.to_string()) {
            return;
        }
        for result in SyncResult::ALL_RESULTS {
            self.sync_runs.get_or_create_owned(&SourceResultLabels {
                source: source.to_string(),
                result: result.to_string(),
            });
        }
        for reason in FailureReason::ALL {
            self.sync_failures.get_or_create_owned(&SourceReasonLabels {
                source: source.to_string(),
                reason: reason.as_str().to_string(),
            });
        }
    }

    /// Removes every series of a source that is no longer configured.
    pub fn forget_source(&self, source: &str) {
        lock(&self.index).sources.remove(source);
        for result in SyncResult::ALL_RESULTS {
            self.sync_runs.remove(&SourceResultLabels {
                source: source.to_string(),
                result: result.to_string(),
            });
        }
        for reason in FailureReason::ALL {
            self.sync_failures.remove(&SourceReasonLabels {
                source: source.to_string(),
                reason: reason.as_str().to_string(),
            });
        }
        let labels = SourceLabels {
            source: source.to_string(),
        };
        self.sync_duration.remove(&labels);
        self.last_success.remove(&labels);
    }

    /// `project` (from `source`) now runs `revision`: its previous revision series is
    /// removed, so each project has one `dockmaster_applied_revision_info` series.
    pub fn applied_revision(&self, source: &str, project: &str, revision: &str) {
        let labels = RevisionLabels {
            source: source.to_string(),
            project: project.to_string(),
            revision: revision.to_string(),
        };
        let mut index = lock(&self.index);
        if let Some(old) = index.revisions.insert(project.to_string(), labels.clone()) {
            if old != labels {
                self.applied_revision.remove(&old);
            }
        }
        self.applied_revision.get_or_create(&labels).set(1);
    }

    /// The number of `project`'s applied generation.
    pub fn project_generation(&self, project: &str, n: u64) {
        let _index = lock(&self.index);
        self.generation
            .get_or_create(&project_labels(project))
            .set(saturate(n));
    }

    /// Planned actions of `project` not applied (0 once converged).
    pub fn pending_changes(&self, project: &str, n: u64) {
        let _index = lock(&self.index);
        self.pending
            .get_or_create(&project_labels(project))
            .set(saturate(n));
    }

    /// How many containers the applied generation wants for `service` of `project`
    /// (`dockmaster_containers_running` then reports the same pair, 0 when none runs).
    pub fn containers_desired(&self, project: &str, service: &str, n: u64) {
        let mut index = lock(&self.index);
        index.note_service(project, service);
        index
            .desired
            .insert((project.to_string(), service.to_string()));
        self.desired
            .get_or_create(&service_labels(project, service))
            .set(saturate(n));
    }

    /// Removes the series of a service no longer in `project` (desired containers, image
    /// update, drift corrections).
    pub fn forget_service(&self, project: &str, service: &str) {
        let mut index = lock(&self.index);
        if let Some(services) = index.services.get_mut(project) {
            services.remove(service);
        }
        index
            .desired
            .remove(&(project.to_string(), service.to_string()));
        self.remove_service_series(project, service);
    }

    fn remove_service_series(&self, project: &str, service: &str) {
        let labels = service_labels(project, service);
        self.desired.remove(&labels);
        self.updates_available.remove(&labels);
        self.drift.remove(&labels);
    }

    /// Removes every series of a project that was removed from the source: revision,
    /// generation, pending changes, rollbacks and every per-service series. (Its containers
    /// disappear from the scrape-time families once they are removed.)
    pub fn forget_project(&self, project: &str) {
        let mut index = lock(&self.index);
        if let Some(old) = index.revisions.remove(project) {
            self.applied_revision.remove(&old);
        }
        let labels = project_labels(project);
        self.generation.remove(&labels);
        self.pending.remove(&labels);
        self.rollbacks.remove(&labels);
        for service in index.services.remove(project).unwrap_or_default() {
            self.remove_service_series(project, &service);
        }
        index.desired.retain(|(p, _)| p != project);
        let jobs: Vec<(String, String)> = index
            .jobs
            .iter()
            .filter(|(p, _)| p == project)
            .cloned()
            .collect();
        for (p, s) in jobs {
            index.jobs.remove(&(p.clone(), s.clone()));
            self.remove_job_series(&p, &s);
        }
    }

    /// A job is scheduled: its run counters (every result) start at zero.
    pub fn job_known(&self, project: &str, service: &str) {
        let mut index = lock(&self.index);
        index
            .jobs
            .insert((project.to_string(), service.to_string()));
        for result in crate::jobs::RunResult::METRIC_RESULTS {
            let _ = self
                .job_runs
                .get_or_create(&job_result_labels(project, service, result));
        }
        let _ = self
            .job_duration
            .get_or_create(&service_labels(project, service));
    }

    /// A run of a job finished with `result` after `duration`, at `at` (since the epoch).
    pub fn job_run_finished(
        &self,
        project: &str,
        service: &str,
        result: crate::jobs::RunResult,
        duration: Duration,
        at: Duration,
    ) {
        let mut index = lock(&self.index);
        index
            .jobs
            .insert((project.to_string(), service.to_string()));
        self.job_runs
            .get_or_create(&job_result_labels(project, service, result.as_str()))
            .inc();
        let labels = service_labels(project, service);
        let at = saturate(at.as_secs());
        if result == crate::jobs::RunResult::Succeeded {
            self.job_last_success.get_or_create(&labels).set(at);
        } else if result.is_failure() {
            self.job_last_failure.get_or_create(&labels).set(at);
        }
        self.job_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// A fire time of a job was skipped: its previous run was still going.
    pub fn job_run_skipped(&self, project: &str, service: &str) {
        let mut index = lock(&self.index);
        index
            .jobs
            .insert((project.to_string(), service.to_string()));
        self.job_runs
            .get_or_create(&job_result_labels(project, service, "skipped"))
            .inc();
    }

    /// Removes the series of a job that no longer exists.
    pub fn forget_job(&self, project: &str, service: &str) {
        let mut index = lock(&self.index);
        index
            .jobs
            .remove(&(project.to_string(), service.to_string()));
        self.remove_job_series(project, service);
    }

    fn remove_job_series(&self, project: &str, service: &str) {
        for result in crate::jobs::RunResult::METRIC_RESULTS {
            self.job_runs
                .remove(&job_result_labels(project, service, result));
        }
        let labels = service_labels(project, service);
        self.job_last_success.remove(&labels);
        self.job_last_failure.remove(&labels);
        self.job_duration.remove(&labels);
    }

    /// An image pull ended: counts it by result, adds the bytes downloaded (also those of a
    /// failed pull) and observes its duration.
    pub fn image_pull(&self, ok: bool, bytes: u64, duration: Duration) {
        self.pulls
            .get_or_create(&ResultLabels {
                result: if ok { "success" } else { "failure" }.to_string(),
            })
            .inc();
        self.pull_bytes.inc_by(bytes);
        self.pull_duration.observe(duration.as_secs_f64());
    }

    /// Whether a newer digest of the image of `service` (policy `notify`) exists: 1 or 0.
    pub fn image_update_available(&self, project: &str, service: &str, available: bool) {
        let mut index = lock(&self.index);
        index.note_service(project, service);
        self.updates_available
            .get_or_create(&service_labels(project, service))
            .set(i64::from(available));
    }

    /// `project` was rolled back to its previous generation.
    pub fn rollback(&self, project: &str) {
        let _index = lock(&self.index);
        self.rollbacks.get_or_create(&project_labels(project)).inc();
    }

    /// A container of `service` was put back (died, vanished or changed by hand).
    pub fn drift_corrected(&self, project: &str, service: &str) {
        let mut index = lock(&self.index);
        index.note_service(project, service);
        self.drift
            .get_or_create(&service_labels(project, service))
            .inc();
    }

    /// Creates the rollback and drift counters of a deployed service at 0, so that the
    /// first rollback or correction is an increase Prometheus can see (`increase()` misses
    /// a series that appears at 1).
    pub fn service_deployed(&self, project: &str, service: &str) {
        let mut index = lock(&self.index);
        index.note_service(project, service);
        let _ = self.rollbacks.get_or_create(&project_labels(project));
        let _ = self.drift.get_or_create(&service_labels(project, service));
    }

    /// A webhook request was answered with `result`.
    pub fn webhook_request(&self, result: WebhookResult) {
        self.webhooks
            .get_or_create(&ResultLabels {
                result: result.as_str().to_string(),
            })
            .inc();
    }
}

fn project_labels(project: &str) -> ProjectLabels {
    ProjectLabels {
        project: project.to_string(),
    }
}

fn service_labels(project: &str, service: &str) -> ServiceLabels {
    ServiceLabels {
        project: project.to_string(),
        service: service.to_string(),
    }
}

fn job_result_labels(project: &str, service: &str, result: &str) -> JobResultLabels {
    JobResultLabels {
        project: project.to_string(),
        service: service.to_string(),
        result: result.to_string(),
    }
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The agent's own `process_*` metrics, read at each scrape. (Help texts of collectors are
/// written as given; `Registry::register` appends a period to its own.)
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = ProcessStats::read_self()
            .map_err(|err| tracing::warn!("process metrics not read: {err}"))
            .ok();
        fn gauge<V: EncodeGaugeValue>(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            value: Option<V>,
        ) -> Result<(), fmt::Error> {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            match value {
                Some(v) => ConstGauge::new(v).encode(m),
                None => Ok(()),
            }
        }
        let m = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?;
        if let Some(s) = &stats {
            ConstCounter::new(s.cpu_seconds).encode(m)?;
        }
        let s = stats.as_ref();
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            s.map(|s| s.resident_memory_bytes),
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            s.map(|s| s.virtual_memory_bytes),
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors.",
            s.map(|s| s.open_fds),
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors (soft limit).",
            s.and_then(|s| s.max_fds),
        )?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            s.map(|s| s.start_time_seconds),
        )?;
        gauge(
            &mut encoder,
            "process_threads",
            "Number of OS threads in the process.",
            s.map(|s| s.threads),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name{labels}` -> value of every sample line.
    fn samples(text: &str) -> BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (key, value) = l.rsplit_once(' ').unwrap();
                (key.to_string(), value.parse().unwrap())
            })
            .collect()
    }

    fn metrics() -> (tempfile::TempDir, Metrics) {
        let tmp = tempfile::tempdir().unwrap();
        let m = Metrics::new(tmp.path(), "1.2.3");
        (tmp, m)
    }

    #[test]
    fn metrics_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Metrics>();
        send_sync::<Arc<Metrics>>();
    }

    #[test]
    fn sync_runs_failures_duration_and_last_success() {
        let (_tmp, m) = metrics();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        m.sync_finished("main", SyncResult::Noop, Duration::from_millis(30));
        m.sync_finished(
            "main",
            SyncResult::Failure(FailureReason::HealthGate),
            Duration::from_secs(20),
        );
        let s = samples(&m.encode());
        assert_eq!(s[r#"dockmaster_build_info{version="1.2.3"}"#], 1.0);
        assert_eq!(
            s[r#"dockmaster_sync_runs_total{source="main",result="noop"}"#],
            1.0
        );
        assert_eq!(
            s[r#"dockmaster_sync_runs_total{source="main",result="failure"}"#],
            1.0
        );
        // Created at zero by the first run, so alerts see the first failure as an increase.
        assert_eq!(
            s[r#"dockmaster_sync_runs_total{source="main",result="success"}"#],
            0.0
        );
        for reason in FailureReason::ALL {
            let key = format!(
                r#"dockmaster_sync_failures_total{{source="main",reason="{}"}}"#,
                reason.as_str()
            );
            let want = if reason == FailureReason::HealthGate {
                1.0
            } else {
                0.0
            };
            assert_eq!(s[&key], want, "{key}");
        }
        assert_eq!(
            s[r#"dockmaster_sync_duration_seconds_count{source="main"}"#],
            2.0
        );
        assert_eq!(
            s[r#"dockmaster_sync_duration_seconds_sum{source="main"}"#],
            20.03
        );
        assert_eq!(
            s[r#"dockmaster_sync_duration_seconds_bucket{le="0.05",source="main"}"#],
            1.0
        );
        assert_eq!(
            s[r#"dockmaster_sync_duration_seconds_bucket{le="10.0",source="main"}"#],
            1.0
        );
        assert_eq!(
            s[r#"dockmaster_sync_duration_seconds_bucket{le="30.0",source="main"}"#],
            2.0
        );
        assert_eq!(
            s[r#"dockmaster_sync_duration_seconds_bucket{le="+Inf",source="main"}"#],
            2.0
        );
        let last = s[r#"dockmaster_last_successful_sync_timestamp_seconds{source="main"}"#];
        assert!(last >= before.floor() && last <= before + 5.0, "{last}");

        // A failure does not move it; restoring it from state does.
        m.sync_succeeded_at("main", 1_700_000_000);
        m.sync_finished(
            "main",
            SyncResult::Failure(FailureReason::Fetch),
            Duration::from_secs(1),
        );
        let s = samples(&m.encode());
        assert_eq!(
            s[r#"dockmaster_last_successful_sync_timestamp_seconds{source="main"}"#],
            1_700_000_000.0
        );

        m.forget_source("main");
        let text = m.encode();
        assert!(!text.contains(r#"source="main""#), "{text}");
    }

    #[test]
    fn one_revision_series_per_project_and_forget_project_removes_everything() {
        let (_tmp, m) = metrics();
        for project in ["shop", "blog"] {
            m.applied_revision("main", project, "aaaa");
            m.project_generation(project, 3);
            m.pending_changes(project, 2);
            m.containers_desired(project, "web", 2);
            m.containers_desired(project, "db", 1);
            m.image_update_available(project, "web", true);
            m.image_update_available(project, "cache", false);
            m.rollback(project);
            m.drift_corrected(project, "db");
        }
        m.applied_revision("main", "shop", "bbbb");
        let s = samples(&m.encode());
        assert!(!s.contains_key(
            r#"dockmaster_applied_revision_info{source="main",project="shop",revision="aaaa"}"#
        ));
        assert_eq!(
            s[r#"dockmaster_applied_revision_info{source="main",project="shop",revision="bbbb"}"#],
            1.0
        );
        assert_eq!(s[r#"dockmaster_project_generation{project="shop"}"#], 3.0);
        assert_eq!(s[r#"dockmaster_pending_changes{project="shop"}"#], 2.0);
        assert_eq!(
            s[r#"dockmaster_containers_desired{project="shop",service="web"}"#],
            2.0
        );
        // Desired services get a running count even with no container: 0.
        assert_eq!(
            s[r#"dockmaster_containers_running{project="shop",service="db"}"#],
            0.0
        );
        assert_eq!(
            s[r#"dockmaster_image_updates_available{project="shop",service="web"}"#],
            1.0
        );
        assert_eq!(
            s[r#"dockmaster_image_updates_available{project="shop",service="cache"}"#],
            0.0
        );
        assert_eq!(s[r#"dockmaster_rollbacks_total{project="shop"}"#], 1.0);
        assert_eq!(
            s[r#"dockmaster_drift_corrections_total{project="shop",service="db"}"#],
            1.0
        );

        m.job_known("shop", "backup");
        m.job_run_finished(
            "shop",
            "backup",
            crate::jobs::RunResult::Failed,
            Duration::from_secs(3),
            Duration::from_secs(1_700_000_000),
        );
        assert!(m.encode().contains(
            r#"dockmaster_job_last_failure_timestamp_seconds{project="shop",service="backup"} 1700000000"#
        ));
        m.forget_service("blog", "db");
        m.forget_project("shop");
        let text = m.encode();
        assert!(!text.contains(r#"project="shop""#), "{text}");
        let s = samples(&text);
        assert!(!s.contains_key(r#"dockmaster_containers_desired{project="blog",service="db"}"#));
        assert!(
            !s.contains_key(r#"dockmaster_drift_corrections_total{project="blog",service="db"}"#)
        );
        assert_eq!(
            s[r#"dockmaster_containers_desired{project="blog",service="web"}"#],
            2.0
        );
        assert_eq!(
            s[r#"dockmaster_applied_revision_info{source="main",project="blog",revision="aaaa"}"#],
            1.0
        );
        assert_eq!(s[r#"dockmaster_rollbacks_total{project="blog"}"#], 1.0);
    }

    #[test]
    fn pulls_and_webhooks_start_at_zero() {
        let (_tmp, m) = metrics();
        let s = samples(&m.encode());
        assert_eq!(s[r#"dockmaster_image_pulls_total{result="success"}"#], 0.0);
        assert_eq!(s[r#"dockmaster_image_pulls_total{result="failure"}"#], 0.0);
        for r in WebhookResult::ALL {
            let key = format!(
                r#"dockmaster_webhook_requests_total{{result="{}"}}"#,
                r.as_str()
            );
            assert_eq!(s[&key], 0.0, "{key}");
        }

        m.image_pull(true, 1000, Duration::from_millis(200));
        m.image_pull(false, 24, Duration::from_secs(700));
        m.webhook_request(WebhookResult::BadSignature);
        m.webhook_request(WebhookResult::Accepted);
        m.webhook_request(WebhookResult::Accepted);
        let s = samples(&m.encode());
        assert_eq!(s[r#"dockmaster_image_pulls_total{result="success"}"#], 1.0);
        assert_eq!(s[r#"dockmaster_image_pulls_total{result="failure"}"#], 1.0);
        assert_eq!(s["dockmaster_image_pull_bytes_total"], 1024.0);
        assert_eq!(s["dockmaster_image_pull_duration_seconds_count"], 2.0);
        assert_eq!(
            s[r#"dockmaster_image_pull_duration_seconds_bucket{le="0.25"}"#],
            1.0
        );
        assert_eq!(
            s[r#"dockmaster_image_pull_duration_seconds_bucket{le="600.0"}"#],
            1.0
        );
        assert_eq!(
            s[r#"dockmaster_image_pull_duration_seconds_bucket{le="+Inf"}"#],
            2.0
        );
        assert_eq!(
            s[r#"dockmaster_webhook_requests_total{result="accepted"}"#],
            2.0
        );
        assert_eq!(
            s[r#"dockmaster_webhook_requests_total{result="bad_signature"}"#],
            1.0
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let (_tmp, m) = metrics();
        m.project_generation("we\"ird\\na\nme", 1);
        let text = m.encode();
        assert!(
            text.lines()
                .any(|l| l == r#"dockmaster_project_generation{project="we\"ird\\na\nme"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn process_metrics_are_the_agents() {
        let (_tmp, m) = metrics();
        // Some CPU time first: run alone, the test process may not have used one clock tick.
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let s = samples(&m.encode());
        assert!(s["process_cpu_seconds_total"] > 0.0);
        assert!(s["process_resident_memory_bytes"] > 1e6);
        assert!(s["process_virtual_memory_bytes"] > s["process_resident_memory_bytes"]);
        assert!(s["process_open_fds"] >= 3.0);
        assert!(s["process_max_fds"] >= s["process_open_fds"]);
        assert!(s["process_start_time_seconds"] > 1e9);
        assert!(s["process_threads"] >= 1.0);
    }
}
