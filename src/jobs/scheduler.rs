//! When runs start: fire times, concurrency, retries, manual runs and runs missed while the
//! agent was down. The scheduler never reads the clock (callers pass `now`) and never starts
//! a container itself (a [`Launcher`] does, reporting back through [`Scheduler::finished`]),
//! so its decisions are tested with a manual clock and a recording launcher.
//!
//! It keeps the run records: a run is saved as `running` before it is launched, the
//! launcher saves how it ended.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::health::{BACKOFF_INITIAL, BACKOFF_MAX};
use crate::metrics::Metrics;
use crate::schedule::Timestamp;

use super::catalog::{to_system_time, to_timestamp, Job};
use super::history::{JobDir, JobState, RunRecord, RunResult, Trigger};
use super::spec::Concurrency;
use super::RunNowError;

/// (project, service).
pub type JobKey = (String, String);

/// Starts and stops runs for the scheduler.
pub trait Launcher {
    /// Starts the run `record` (saved as running) of `job` in the background. The launcher
    /// saves the finished record and reports it with [`Scheduler::finished`].
    fn launch(&mut self, job: &Job, record: &RunRecord);
    /// Stops an active run (`concurrency: replace`); it ends as `replaced`.
    fn cancel(&mut self, key: &JobKey, seq: u64);
    /// A run recorded as running when the scheduler started (the agent restarted while it
    /// ran): `true` when its container is still there and is now watched again.
    fn adopt(&mut self, job: Option<&Job>, record: &RunRecord) -> bool;
}

/// How a run ended, as the launcher reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub project: String,
    pub service: String,
    pub seq: u64,
    pub result: RunResult,
    pub duration: Duration,
}

impl Finished {
    pub fn of(record: &RunRecord) -> Finished {
        Finished {
            project: record.project.clone(),
            service: record.service.clone(),
            seq: record.seq,
            result: record.result,
            duration: record.duration(record.finished.unwrap_or(record.started)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct ActiveRun {
    attempt: u32,
    scheduled_for: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct PendingRetry {
    at: Timestamp,
    attempt: u32,
    scheduled_for: Option<Timestamp>,
}

#[derive(Debug)]
struct Entry {
    job: Job,
    dir: JobDir,
    next_fire: Option<Timestamp>,
    active: BTreeMap<u64, ActiveRun>,
    retry: Option<PendingRetry>,
    state: JobState,
}

/// The delay before retry number `attempt` (1 = the first retry): Docker's restart backoff,
/// 100 ms doubling up to a minute.
pub fn retry_delay(attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    BACKOFF_INITIAL.saturating_mul(factor).min(BACKOFF_MAX)
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// The jobs' timers and active runs.
pub struct Scheduler<L: Launcher> {
    root: PathBuf,
    launcher: L,
    metrics: Option<Arc<Metrics>>,
    entries: BTreeMap<JobKey, Entry>,
    /// Whether the first reload (adoption, missed runs) happened.
    started: bool,
}

impl<L: Launcher> Scheduler<L> {
    pub fn new(root: &Path, launcher: L, metrics: Option<Arc<Metrics>>) -> Scheduler<L> {
        Scheduler {
            root: root.to_path_buf(),
            launcher,
            metrics,
            entries: BTreeMap::new(),
            started: false,
        }
    }

    pub fn launcher(&mut self) -> &mut L {
        &mut self.launcher
    }

    /// The jobs known, with their next fire time.
    pub fn next_fires(&self) -> BTreeMap<JobKey, Option<Timestamp>> {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), e.next_fire))
            .collect()
    }

    /// Active runs of a job.
    pub fn active(&self, key: &JobKey) -> Vec<u64> {
        self.entries
            .get(key)
            .map(|e| e.active.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Takes the current set of jobs (the last good generations). New jobs start counting
    /// fire times from now; a changed definition gets a new next fire time; removed jobs
    /// stop firing (a run in progress finishes). The first call after start also adopts
    /// runs left running and runs each job once whose fire time was missed within its
    /// `missed_run_deadline`.
    pub fn reload(&mut self, jobs: Vec<Job>, now: Timestamp) {
        let first = !self.started;
        self.started = true;
        let keys: BTreeSet<JobKey> = jobs.iter().map(Job::key).collect();
        let gone: Vec<JobKey> = self
            .entries
            .keys()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            tracing::info!(project = %key.0, job = %key.1, "job removed: it no longer fires");
            self.entries.remove(&key);
            if let Some(m) = &self.metrics {
                m.forget_job(&key.0, &key.1);
            }
        }
        for job in jobs {
            let key = job.key();
            match self.entries.get_mut(&key) {
                Some(e) if e.job.hash == job.hash => e.job = job,
                Some(e) => {
                    e.next_fire = job.spec.schedule.next_after(now);
                    e.retry = None;
                    tracing::info!(project = %key.0, job = %key.1, generation = job.generation.number,
                        next = %fmt_time(e.next_fire), "job definition changed");
                    e.job = job;
                }
                None => self.add(job, now),
            }
        }
        if first {
            self.adopt_all(now);
            self.run_missed(now);
        }
    }

    fn add(&mut self, job: Job, now: Timestamp) {
        let key = job.key();
        let dir = JobDir::new(&self.root, &job.project, &job.service);
        let mut state = dir.state();
        if state.last_fire.is_none() {
            // Fire times before the job existed are not missed runs.
            state.last_fire = Some(to_system_time(now));
            if let Err(e) = dir.save_state(&state) {
                tracing::warn!(project = %key.0, job = %key.1, "saving job state: {e}");
            }
        }
        let next_fire = job.spec.schedule.next_after(now);
        tracing::info!(project = %key.0, job = %key.1, schedule = job.spec.schedule.as_str(),
            next = %fmt_time(next_fire), "job scheduled");
        if let Some(m) = &self.metrics {
            m.job_known(&key.0, &key.1);
        }
        self.entries.insert(
            key,
            Entry {
                job,
                dir,
                next_fire,
                active: BTreeMap::new(),
                retry: None,
                state,
            },
        );
    }

    /// Runs recorded as running from before a restart: watched again when their container
    /// is still there, else recorded as lost.
    fn adopt_all(&mut self, now: Timestamp) {
        for project in super::catalog::projects(&self.root) {
            for service in super::history::job_services(&self.root, &project) {
                let key = (project.clone(), service.clone());
                let dir = JobDir::new(&self.root, &project, &service);
                for mut record in dir.list().unwrap_or_default() {
                    if record.result != RunResult::Running {
                        continue;
                    }
                    let job = self.entries.get(&key).map(|e| &e.job);
                    if self.launcher.adopt(job, &record) {
                        tracing::info!(project = %project, job = %service, run = record.seq,
                            "watching a run started before the agent restarted");
                        if let Some(e) = self.entries.get_mut(&key) {
                            e.active.insert(
                                record.seq,
                                ActiveRun {
                                    attempt: record.attempt,
                                    scheduled_for: record.scheduled_for.map(to_timestamp),
                                },
                            );
                        }
                        continue;
                    }
                    record.result = RunResult::Lost;
                    record.finished = Some(to_system_time(now));
                    record.error = Some(
                        "its container is gone (removed, or the host restarted while it ran)"
                            .to_string(),
                    );
                    tracing::warn!(project = %project, job = %service, run = record.seq,
                        "run lost: its container is gone");
                    if let Err(e) = dir.save(&record) {
                        tracing::warn!(project = %project, job = %service, "saving run: {e}");
                    }
                    self.finished(Finished::of(&record), now);
                }
            }
        }
    }

    fn run_missed(&mut self, now: Timestamp) {
        let keys: Vec<JobKey> = self.entries.keys().cloned().collect();
        for key in keys {
            let Some(e) = self.entries.get(&key) else {
                continue;
            };
            let (Some(deadline), Some(last)) = (e.job.spec.missed_run_deadline, e.state.last_fire)
            else {
                continue;
            };
            let earliest = now
                .checked_sub(deadline)
                .unwrap_or(Timestamp::MIN)
                .max(to_timestamp(last));
            // The newest fire time missed within the deadline: one run stands for all.
            let mut missed = None;
            let mut from = earliest;
            // Bounded: a per-second schedule with a long deadline has millions of fire times.
            for _ in 0..10_000 {
                let Some(t) = e.job.spec.schedule.first_between(from, now) else {
                    break;
                };
                missed = Some(t);
                from = t;
            }
            if let Some(t) = missed {
                tracing::info!(project = %key.0, job = %key.1, missed = %fmt_time(Some(t)),
                    "running a fire time missed while the agent was down");
                self.fire(&key, Trigger::Missed, Some(t), now);
            }
        }
    }

    /// Starts what is due at `now`: fire times (which supersede a pending retry) and retries.
    pub fn tick(&mut self, now: Timestamp) {
        let keys: Vec<JobKey> = self.entries.keys().cloned().collect();
        for key in keys {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            if let Some(t) = e.next_fire.filter(|t| *t <= now) {
                // Fire times passed over (host suspended, clock jump) are not run one by one.
                e.next_fire = e.job.spec.schedule.next_after(now);
                self.fire(&key, Trigger::Schedule, Some(t), now);
                continue;
            }
            if let Some(r) = e.retry.filter(|r| r.at <= now) {
                e.retry = None;
                self.start(&key, Trigger::Retry, r.scheduled_for, r.attempt, now);
            }
        }
    }

    /// When something is due next (a fire time or a retry).
    pub fn next_wake(&self) -> Option<Timestamp> {
        self.entries
            .values()
            .flat_map(|e| [e.next_fire, e.retry.map(|r| r.at)])
            .flatten()
            .min()
    }

    /// `dockmaster job run`: a run now, under the job's concurrency policy.
    pub fn run_now(
        &mut self,
        project: &str,
        service: &str,
        now: Timestamp,
    ) -> Result<u64, RunNowError> {
        let key = (project.to_string(), service.to_string());
        let Some(e) = self.entries.get(&key) else {
            return Err(RunNowError::NotFound {
                project: project.to_string(),
                service: service.to_string(),
            });
        };
        if e.job.spec.concurrency == Concurrency::Forbid {
            if let Some(seq) = e.active.keys().next() {
                return Err(RunNowError::Busy {
                    project: project.to_string(),
                    service: service.to_string(),
                    seq: *seq,
                });
            }
        }
        self.make_room(&key);
        self.start(&key, Trigger::Manual, None, 1, now)
            .ok_or_else(|| {
                RunNowError::Unavailable(format!(
                    "{project}/{service}: the run could not be recorded"
                ))
            })
    }

    /// A fire time (or a missed one) came: start a run unless the policy says otherwise.
    fn fire(&mut self, key: &JobKey, trigger: Trigger, at: Option<Timestamp>, now: Timestamp) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(t) = at {
            e.state.last_fire = Some(to_system_time(t));
            if let Err(err) = e.dir.save_state(&e.state) {
                tracing::warn!(project = %key.0, job = %key.1, "saving job state: {err}");
            }
        }
        if e.retry.take().is_some() {
            tracing::info!(project = %key.0, job = %key.1, "pending retry dropped: the next run is due");
        }
        if e.job.spec.concurrency == Concurrency::Forbid && !e.active.is_empty() {
            let running: Vec<String> = e.active.keys().map(u64::to_string).collect();
            tracing::warn!(project = %key.0, job = %key.1, running = %running.join(","),
                "run skipped: the previous run is still going (concurrency: forbid)");
            if let Some(m) = &self.metrics {
                m.job_run_skipped(&key.0, &key.1);
            }
            return;
        }
        self.make_room(key);
        self.start(key, trigger, at, 1, now);
    }

    /// `concurrency: replace`: stops the active runs.
    fn make_room(&mut self, key: &JobKey) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        if e.job.spec.concurrency != Concurrency::Replace {
            return;
        }
        let active: Vec<u64> = e.active.keys().copied().collect();
        for seq in active {
            tracing::info!(project = %key.0, job = %key.1, run = seq,
                "stopping the active run: a new one replaces it (concurrency: replace)");
            self.launcher.cancel(key, seq);
        }
    }

    fn start(
        &mut self,
        key: &JobKey,
        trigger: Trigger,
        scheduled_for: Option<Timestamp>,
        attempt: u32,
        now: Timestamp,
    ) -> Option<u64> {
        let e = self.entries.get_mut(key)?;
        let seq = match e.dir.next_seq() {
            Ok(n) => n.max(e.active.keys().next_back().map_or(1, |m| m + 1)),
            Err(err) => {
                tracing::error!(project = %key.0, job = %key.1, "reading job history: {err}");
                return None;
            }
        };
        let record = RunRecord {
            seq,
            project: key.0.clone(),
            service: key.1.clone(),
            trigger,
            scheduled_for: scheduled_for.map(to_system_time),
            attempt,
            generation: e.job.generation.number,
            container: None,
            container_id: None,
            started: to_system_time(now),
            finished: None,
            result: RunResult::Running,
            exit_code: None,
            error: None,
        };
        if let Err(err) = e.dir.save(&record) {
            tracing::error!(project = %key.0, job = %key.1, "saving run {seq}: {err}");
            return None;
        }
        tracing::info!(project = %key.0, job = %key.1, run = seq, trigger = trigger.as_str(),
            attempt, "starting run");
        e.active.insert(
            seq,
            ActiveRun {
                attempt,
                scheduled_for,
            },
        );
        self.launcher.launch(&e.job, &record);
        Some(seq)
    }

    /// A run ended (the launcher saved its record): metrics, retry per the restart policy,
    /// and old runs pruned.
    pub fn finished(&mut self, f: Finished, now: Timestamp) {
        let key = (f.project.clone(), f.service.clone());
        if let Some(m) = &self.metrics {
            m.job_run_finished(
                &f.project,
                &f.service,
                f.result.as_str(),
                f.duration,
                to_system_time(now)
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
        }
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let run = e.active.remove(&f.seq);
        tracing::info!(project = %key.0, job = %key.1, run = f.seq, result = f.result.as_str(),
            duration_ms = f.duration.as_millis() as u64, "run finished");
        // A timeout is not retried (a run that hung is likely to hang again), nor is a
        // replaced run (its successor is running).
        let retryable = matches!(f.result, RunResult::Failed | RunResult::Lost);
        if let Some(run) = run.filter(|_| retryable) {
            if e.job.spec.retry.allows_after(run.attempt) {
                let at = add(now, retry_delay(run.attempt));
                if e.next_fire.is_some_and(|n| n <= at) {
                    tracing::info!(project = %key.0, job = %key.1, "no retry: the next run is due first");
                } else {
                    tracing::info!(project = %key.0, job = %key.1, attempt = run.attempt + 1,
                        at = %fmt_time(Some(at)), "retrying the failed run (restart policy)");
                    e.retry = Some(PendingRetry {
                        at,
                        attempt: run.attempt + 1,
                        scheduled_for: run.scheduled_for,
                    });
                }
            }
        }
        if let Err(err) = e.dir.prune(e.job.spec.history) {
            tracing::warn!(project = %key.0, job = %key.1, "pruning job history: {err}");
        }
    }
}

fn fmt_time(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "never".to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests;
