//! The agent's jobs thread: owns the [`Scheduler`], sleeps until the next fire time or
//! retry, and takes messages: a reload (after the agent applied something; the catalog is
//! read again only when a project's generations changed), a manual run, a finished run, a
//! new configuration, stop. Runs outlive the thread: on the next start they are adopted.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use crate::config::AgentConfig;
use crate::metrics::Metrics;
use crate::schedule::{Clock, Timestamp};

use super::catalog;
use super::history::{JobDir, RunRecord};
use super::runner::{self, ContainerLauncher};
use super::scheduler::{EventFn, Finished, Scheduler};
use super::{JobInfo, JobsControl, RunNowError};

/// Projects applied by hand (`dockmaster apply`) are noticed within this long.
const RESCAN: Duration = Duration::from_secs(30);
/// How long `run_now` waits for the jobs thread.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

enum Message {
    Reload,
    Config(Arc<AgentConfig>),
    RunNow {
        project: String,
        service: String,
        reply: mpsc::SyncSender<Result<u64, RunNowError>>,
    },
    Finished(Finished),
    Stop,
}

/// The handle the agent keeps: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct JobsHandle {
    tx: mpsc::Sender<Message>,
    root: PathBuf,
    clock: Arc<dyn Clock>,
}

impl JobsHandle {
    /// Look again at the projects' generations (something was applied or removed).
    pub fn reload(&self) {
        let _ = self.tx.send(Message::Reload);
    }

    pub fn set_config(&self, config: Arc<AgentConfig>) {
        let _ = self.tx.send(Message::Config(config));
    }

    /// Ends the thread (runs go on; the next start adopts them).
    pub fn stop(&self) {
        let _ = self.tx.send(Message::Stop);
    }
}

impl JobsControl for JobsHandle {
    fn list(&self) -> Vec<JobInfo> {
        catalog::list(&self.root, self.clock.now())
    }

    fn history(&self, project: &str, service: &str) -> Result<Vec<RunRecord>, RunNowError> {
        let runs = JobDir::new(&self.root, project, service)
            .list()
            .map_err(|e| RunNowError::Unavailable(e.to_string()))?;
        let known = || {
            catalog::project_jobs(&self.root, project)
                .is_ok_and(|jobs| jobs.iter().any(|j| j.service == service))
        };
        if runs.is_empty() && !known() {
            return Err(RunNowError::NotFound {
                project: project.to_string(),
                service: service.to_string(),
            });
        }
        Ok(runs)
    }

    fn run_now(&self, project: &str, service: &str) -> Result<u64, RunNowError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Message::RunNow {
                project: project.to_string(),
                service: service.to_string(),
                reply,
            })
            .map_err(|_| RunNowError::Unavailable("the jobs thread has stopped".into()))?;
        answer
            .recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| RunNowError::Unavailable("the jobs thread did not answer".into()))?
    }
}

/// Starts the jobs thread.
pub fn spawn(
    root: &Path,
    config: Arc<AgentConfig>,
    metrics: Option<Arc<Metrics>>,
    clock: Arc<dyn Clock>,
    events: Option<EventFn>,
) -> std::io::Result<(JobsHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let handle = JobsHandle {
        tx: tx.clone(),
        root: root.to_path_buf(),
        clock: clock.clone(),
    };
    let root = root.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("jobs".into())
        .spawn(move || {
            let report = move |f: Finished| {
                let _ = tx.send(Message::Finished(f));
            };
            let launcher = ContainerLauncher::new(&root, config, Box::new(report));
            let mut scheduler = Scheduler::new(&root, launcher, metrics);
            if let Some(events) = events {
                scheduler = scheduler.with_events(events);
            }
            run(&root, scheduler, &rx, &*clock);
        })?;
    Ok((handle, thread))
}

/// Each project's generations directory and its modification time: a new generation
/// (written by rename) changes it.
fn fingerprint(root: &Path) -> Vec<(String, Option<SystemTime>)> {
    catalog::projects(root)
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(root.join("projects").join(&p).join("generations"))
                .and_then(|m| m.modified())
                .ok();
            (p, m)
        })
        .collect()
}

fn run(
    root: &Path,
    mut scheduler: Scheduler<ContainerLauncher>,
    rx: &mpsc::Receiver<Message>,
    clock: &dyn Clock,
) {
    runner::remove_orphans(root);
    let mut seen = None;
    let mut reload = |scheduler: &mut Scheduler<ContainerLauncher>, now: Timestamp| {
        let current = fingerprint(root);
        if seen.as_ref() == Some(&current) {
            return;
        }
        let jobs = catalog::all(root, &mut |problem| tracing::warn!("jobs: {problem}"));
        scheduler.reload(jobs, now);
        seen = Some(current);
    };
    reload(&mut scheduler, clock.now());
    let mut rescanned = std::time::Instant::now();
    loop {
        let now = clock.now();
        scheduler.tick(now);
        let until_due = scheduler
            .next_wake()
            .map(|t| {
                let d = now.until(t).ok().and_then(|s| Duration::try_from(s).ok());
                d.unwrap_or_default()
            })
            .unwrap_or(RESCAN);
        let wait = until_due
            .min(RESCAN.saturating_sub(rescanned.elapsed()))
            // Fire times are whole seconds: waking a hair late makes `now` reach them.
            .saturating_add(Duration::from_millis(1));
        match rx.recv_timeout(wait) {
            Ok(Message::Reload) => reload(&mut scheduler, clock.now()),
            Ok(Message::Config(c)) => scheduler.launcher().set_config(c),
            Ok(Message::RunNow {
                project,
                service,
                reply,
            }) => {
                let _ = reply.send(scheduler.run_now(&project, &service, clock.now()));
            }
            Ok(Message::Finished(f)) => scheduler.finished(f, clock.now()),
            Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if rescanned.elapsed() >= RESCAN {
            rescanned = std::time::Instant::now();
            reload(&mut scheduler, clock.now());
        }
    }
}
