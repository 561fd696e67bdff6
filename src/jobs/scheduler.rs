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

/// Told what the scheduler decides, for the agent's events: (project, service, is a
/// problem, message).
pub type EventFn = Box<dyn Fn(&str, &str, bool, String) + Send>;

/// Logs a decision and tells the agent's event stream.
fn say(events: &Option<EventFn>, key: &JobKey, problem: bool, message: String) {
    if problem {
        tracing::warn!(project = %key.0, job = %key.1, "{message}");
    } else {
        tracing::info!(project = %key.0, job = %key.1, "{message}");
    }
    if let Some(f) = events {
        f(&key.0, &key.1, problem, message);
    }
}

/// The jobs' timers and active runs.
pub struct Scheduler<L: Launcher> {
    root: PathBuf,
    launcher: L,
    metrics: Option<Arc<Metrics>>,
    events: Option<EventFn>,
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
            events: None,
            entries: BTreeMap::new(),
            started: false,
        }
    }

    /// Tells `events` about each decision (runs started, finished, skipped, retried).
    pub fn with_events(mut self, events: EventFn) -> Scheduler<L> {
        self.events = Some(events);
        self
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
            say(
                &self.events,
                &key,
                false,
                "job removed: it no longer fires".into(),
            );
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
                    say(
                        &self.events,
                        &key,
                        false,
                        format!(
                            "job definition changed (generation {}); next run {}",
                            job.generation.number,
                            fmt_time(e.next_fire)
                        ),
                    );
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
        say(
            &self.events,
            &key,
            false,
            format!(
                "job scheduled ({}); next run {}",
                job.spec.schedule.as_str(),
                fmt_time(next_fire)
            ),
        );
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
                        say(
                            &self.events,
                            &key,
                            false,
                            format!(
                                "run {}: watching a run started before the agent restarted",
                                record.seq
                            ),
                        );
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
                    say(
                        &self.events,
                        &key,
                        true,
                        format!("run {}: lost, its container is gone", record.seq),
                    );
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
                say(
                    &self.events,
                    &key,
                    false,
                    format!(
                        "running the fire time {} missed while the agent was down",
                        fmt_time(Some(t))
                    ),
                );
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
            say(
                &self.events,
                key,
                false,
                "pending retry dropped: the next run is due".into(),
            );
        }
        if e.job.spec.concurrency == Concurrency::Forbid && !e.active.is_empty() {
            let running: Vec<String> = e.active.keys().map(u64::to_string).collect();
            say(
                &self.events,
                key,
                true,
                format!(
                    "run skipped: run {} is still going (concurrency: forbid)",
                    running.join(", ")
                ),
            );
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
            say(
                &self.events,
                key,
                false,
                format!("run {seq}: stopping it, a new run replaces it (concurrency: replace)"),
            );
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
        say(
            &self.events,
            key,
            false,
            format!(
                "starting run {seq} ({}, attempt {attempt})",
                trigger.as_str()
            ),
        );
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
                f.result,
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
        say(
            &self.events,
            &key,
            f.result.is_failure(),
            format!(
                "run {} finished: {} after {:.1}s",
                f.seq,
                f.result.as_str(),
                f.duration.as_secs_f64()
            ),
        );
        // A timeout is not retried (a run that hung is likely to hang again), nor is a
        // replaced run (its successor is running).
        let retryable = matches!(f.result, RunResult::Failed | RunResult::Lost);
        if let Some(run) = run.filter(|_| retryable) {
            if e.job.spec.retry.allows_after(run.attempt) {
                let at = add(now, retry_delay(run.attempt));
                if e.next_fire.is_some_and(|n| n <= at) {
                    say(
                        &self.events,
                        &key,
                        false,
                        "no retry: the next run is due first".into(),
                    );
                } else {
                    say(
                        &self.events,
                        &key,
                        false,
                        format!(
                            "retrying the failed run at {} (attempt {}, restart policy)",
                            fmt_time(Some(at)),
                            run.attempt + 1
                        ),
                    );
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
