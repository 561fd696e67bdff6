//! One run of a job as a real container: created from the generation's pinned image (like
//! the service's replicas, with no restart policy), watched until it exits, is stopped for
//! its timeout or replaced, its log kept with the run, then removed. Each run has its own
//! thread: a long backup never delays another job's fire time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::AgentConfig;
use crate::reconcile::translate::{LABEL_PROJECT, LABEL_SERVICE};
use crate::runtime::container::{observe, ContainerRecord, ContainerStore, Observed};
use crate::runtime::lifecycle;
use crate::runtime::protocol::{ExitRecord, Status};

use super::catalog::Job;
use super::history::{JobDir, RunRecord, RunResult, Trigger};
use super::scheduler::{Finished, JobKey, Launcher};
use super::spec::Concurrency;
use super::{RunNowError, LABEL_JOB_RUN};

/// How often a run's exit record is looked for (a file stat): often at first (most jobs
/// are short, and the poll is their end's latency), then less.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL: Duration = Duration::from_millis(50);
/// How long the first, quick polling lasts.
const QUICK: Duration = Duration::from_secs(2);
/// How often its shim is asked (to notice a shim that died without an exit record).
const ASK_SHIM: Duration = Duration::from_secs(2);

/// What the run threads report to.
pub type Report = Box<dyn Fn(Finished) + Send + Sync>;

/// The container name of run `seq`: `<project>-<service>-run-<seq>` (or
/// `<container_name>-run-<seq>`).
pub fn container_name(job: &Job, seq: u64) -> String {
    let base = job
        .loaded
        .services
        .get(&job.service)
        .and_then(|s| s.container_name.clone())
        .unwrap_or_else(|| format!("{}-{}", job.project, job.service));
    format!("{base}-run-{seq}")
}

/// The job-run containers on the host.
pub fn run_containers(root: &Path) -> Vec<ContainerRecord> {
    ContainerStore::new(root)
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.labels.contains_key(LABEL_JOB_RUN))
        .collect()
}

fn run_container(root: &Path, project: &str, service: &str, seq: u64) -> Option<ContainerRecord> {
    run_containers(root).into_iter().find(|r| {
        r.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project)
            && r.labels.get(LABEL_SERVICE).map(String::as_str) == Some(service)
            && r.labels.get(LABEL_JOB_RUN) == Some(&seq.to_string())
    })
}

/// Removes job-run containers whose run is no longer recorded as running (the agent stopped
/// between a run's end and its container's removal). Called before runs are adopted.
pub fn remove_orphans(root: &Path) {
    let store = ContainerStore::new(root);
    for c in run_containers(root) {
        let (Some(project), Some(service)) =
            (c.labels.get(LABEL_PROJECT), c.labels.get(LABEL_SERVICE))
        else {
            continue;
        };
        let seq = c.labels.get(LABEL_JOB_RUN).and_then(|s| s.parse().ok());
        let running = seq
            .and_then(|seq| JobDir::new(root, project, service).load(seq))
            .is_some_and(|r| r.result == RunResult::Running);
        if !running {
            tracing::info!(container = %c.name, "removing the container of a finished job run");
            if let Err(e) = lifecycle::remove(&store, &c, true) {
                tracing::warn!(container = %c.name, "removing: {e:#}");
            }
        }
    }
}

/// Starts runs in threads of their own for the agent's scheduler.
pub struct ContainerLauncher {
    root: PathBuf,
    config: Arc<AgentConfig>,
    report: Arc<Report>,
    cancels: HashMap<(JobKey, u64), Arc<AtomicBool>>,
}

impl ContainerLauncher {
    pub fn new(root: &Path, config: Arc<AgentConfig>, report: Report) -> ContainerLauncher {
        ContainerLauncher {
            root: root.to_path_buf(),
            config,
            report: Arc::new(report),
            cancels: HashMap::new(),
        }
    }

    /// A new configuration (SIGHUP): registries and bind allow-list for later runs.
    pub fn set_config(&mut self, config: Arc<AgentConfig>) {
        self.config = config;
    }

    fn spawn(
        &mut self,
        key: JobKey,
        seq: u64,
        work: impl FnOnce(Arc<AtomicBool>) -> RunRecord + Send + 'static,
    ) {
        self.cancels.retain(|_, c| Arc::strong_count(c) > 1);
        let cancel = Arc::new(AtomicBool::new(false));
        self.cancels.insert((key, seq), cancel.clone());
        let report = self.report.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("job-run-{seq}"))
            .spawn(move || {
                let record = work(cancel);
                report(Finished::of(&record));
            });
        if let Err(e) = spawned {
            tracing::error!("starting a job run thread: {e}");
        }
    }
}

impl Launcher for ContainerLauncher {
    fn launch(&mut self, job: &Job, record: &RunRecord) {
        let (root, config, job2, record) = (
            self.root.clone(),
            self.config.clone(),
            job.clone(),
            record.clone(),
        );
        self.spawn(job.key(), record.seq, move |cancel| {
            run(&root, &config, &job2, record, &cancel)
        });
    }

    fn cancel(&mut self, key: &JobKey, seq: u64) {
        if let Some(c) = self.cancels.get(&(key.clone(), seq)) {
            c.store(true, Ordering::SeqCst);
        }
    }

    fn adopt(&mut self, job: Option<&Job>, record: &RunRecord) -> bool {
        let Some(container) =
            run_container(&self.root, &record.project, &record.service, record.seq)
        else {
            return false;
        };
        let mut record = record.clone();
        record.container = Some(container.name.clone());
        record.container_id = Some(container.id.clone());
        let timeout = job.and_then(|j| j.spec.timeout);
        let root = self.root.clone();
        let key = (record.project.clone(), record.service.clone());
        let seq = record.seq;
        self.spawn(key, seq, move |cancel| {
            watch(&root, container, timeout, record, &cancel)
        });
        true
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn save(dir: &JobDir, record: &RunRecord) {
    if let Err(e) = dir.save(record) {
        tracing::error!(project = %record.project, job = %record.service, run = record.seq, "saving the run: {e}");
    }
}

/// Runs `record` (saved as running) of `job` to its end; returns the finished record, saved.
pub fn run(
    root: &Path,
    config: &AgentConfig,
    job: &Job,
    mut record: RunRecord,
    cancel: &AtomicBool,
) -> RunRecord {
    let dir = JobDir::new(root, &job.project, &job.service);
    let name = container_name(job, record.seq);
    let store = ContainerStore::new(root);
    // A container of this run from before (the agent died between creating it and saving
    // the record): it is replaced, this attempt starts clean.
    if let Ok(old) = store.resolve(&name) {
        if old.labels.contains_key(LABEL_JOB_RUN) {
            let _ = lifecycle::remove(&store, &old, true);
        }
    }
    let labels = BTreeMap::from([(LABEL_JOB_RUN.to_string(), record.seq.to_string())]);
    let (project, service, seq) = (job.project.clone(), job.service.clone(), record.seq);
    let started = crate::reconcile::apply::start_one_off(
        root,
        config,
        &job.generation,
        &job.loaded,
        &job.service,
        &name,
        &labels,
        &mut |line| tracing::info!(project = %project, job = %service, run = seq, "{line}"),
    );
    let container = started.and_then(|id| {
        store
            .load(&id)
            .map_err(crate::reconcile::ReconcileError::Containers)
    });
    match container {
        Err(e) => {
            record.result = RunResult::Failed;
            record.error = Some(format!("could not start: {e}"));
            record.finished = Some(now());
            save(&dir, &record);
            record
        }
        Ok(c) => {
            record.container = Some(c.name.clone());
            record.container_id = Some(c.id.clone());
            save(&dir, &record);
            watch(root, c, job.spec.timeout, record, cancel)
        }
    }
}

/// Waits for a run's container to end (stopping it on timeout or cancel), keeps its log,
/// saves the record and removes the container.
fn watch(
    root: &Path,
    container: ContainerRecord,
    timeout: Option<Duration>,
    mut record: RunRecord,
    cancel: &AtomicBool,
) -> RunRecord {
    let store = ContainerStore::new(root);
    let paths = store.paths(&container.id);
    let dir = JobDir::new(root, &record.project, &record.service);
    let deadline = timeout.map(|t| record.started + t);
    let mut stopped_for: Option<RunResult> = None;
    let watching = Instant::now();
    // None: ask the shim at the next turn.
    let mut asked: Option<Instant> = None;
    let (result, exit_code) = loop {
        if let Ok(Some(exit)) = ExitRecord::load(&paths.exit()) {
            break (None, Some(exit.exit_code));
        }
        if asked.map_or(true, |a| a.elapsed() >= ASK_SHIM) {
            asked = Some(Instant::now());
            match observe(&paths, &container) {
                Observed::Exited(e) => break (None, Some(e.exit_code)),
                Observed::Live(s) if s.status == Status::Stopped => break (None, s.exit_code),
                Observed::ShimLost { .. } => break (Some(RunResult::Lost), None),
                _ => {}
            }
        }
        if stopped_for.is_none() {
            let why = if cancel.load(Ordering::SeqCst) {
                Some(RunResult::Replaced)
            } else if deadline.is_some_and(|d| now() >= d) {
                Some(RunResult::Timeout)
            } else {
                None
            };
            if let Some(why) = why {
                stopped_for = Some(why);
                let grace = Duration::from_secs(container.stop_grace_secs);
                if let Err(e) = lifecycle::stop(&store, &container, grace) {
                    tracing::warn!(container = %container.name, "stopping the run: {e:#}");
                }
                asked = None;
                continue;
            }
        }
        std::thread::sleep(if watching.elapsed() < QUICK {
            POLL_FIRST
        } else {
            POLL
        });
    };
    record.exit_code = exit_code;
    record.result = match (stopped_for, result) {
        (Some(why), _) => why,
        (None, Some(r)) => r,
        (None, None) if exit_code == Some(0) => RunResult::Succeeded,
        (None, None) => RunResult::Failed,
    };
    record.error = match record.result {
        RunResult::Timeout => Some(format!(
            "stopped after its timeout of {}",
            super::catalog::humantime_short(timeout.unwrap_or_default().as_secs())
        )),
        RunResult::Replaced => Some("stopped: a newer run replaced it".to_string()),
        RunResult::Lost => Some("its shim is gone without an exit code".to_string()),
        RunResult::Failed => exit_code.map(|c| format!("exited with code {c}")),
        _ => None,
    };
    record.finished = Some(now());
    if let Err(e) = dir.keep_log(record.seq, &paths.log()) {
        tracing::warn!(container = %container.name, "keeping the run's log: {e}");
    }
    save(&dir, &record);
    if let Err(e) = lifecycle::remove(&store, &container, true) {
        tracing::warn!(container = %container.name, "removing the run's container: {e:#}");
    }
    record
}

/// `dockmaster job run` without an agent: the run happens in this process, under the job's
/// concurrency policy (forbid refuses while a run is recorded as running; replace is not
/// possible without the agent that watches the other run, so it behaves as allow).
pub fn run_local(
    root: &Path,
    config: &AgentConfig,
    project: &str,
    service: &str,
    log: &mut dyn FnMut(String),
) -> Result<RunRecord, RunNowError> {
    let not_found = || RunNowError::NotFound {
        project: project.to_string(),
        service: service.to_string(),
    };
    let jobs = super::catalog::project_jobs(root, project).map_err(RunNowError::Unavailable)?;
    let job = jobs
        .into_iter()
        .find(|j| j.service == service)
        .ok_or_else(not_found)?;
    let dir = JobDir::new(root, project, service);
    let runs = dir
        .list()
        .map_err(|e| RunNowError::Unavailable(e.to_string()))?;
    if job.spec.concurrency == Concurrency::Forbid {
        if let Some(r) = runs.iter().find(|r| r.result == RunResult::Running) {
            return Err(RunNowError::Busy {
                project: project.to_string(),
                service: service.to_string(),
                seq: r.seq,
            });
        }
    }
    let seq = runs.last().map_or(1, |r| r.seq + 1);
    let record = RunRecord {
        seq,
        project: project.to_string(),
        service: service.to_string(),
        trigger: Trigger::Manual,
        scheduled_for: None,
        attempt: 1,
        generation: job.generation.number,
        container: None,
        container_id: None,
        started: now(),
        finished: None,
        result: RunResult::Running,
        exit_code: None,
        error: None,
    };
    dir.save(&record)
        .map_err(|e| RunNowError::Unavailable(format!("saving run {seq}: {e}")))?;
    log(format!("{project}/{service}: run {seq} started"));
    let cancel = AtomicBool::new(false);
    let record = run(root, config, &job, record, &cancel);
    if let Err(e) = dir.prune(job.spec.history) {
        log(format!("pruning the job's history: {e}"));
    }
    Ok(record)
}
