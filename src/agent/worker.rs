//! The single writer: one thread runs every sync pass (fetch, apply, drift correction, image
//! checks) one after the other, owns the agent state, and publishes snapshots (status,
//! events, metrics) for everyone else. Nothing else changes containers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::api::EventHub;

use crate::config::{AgentConfig, SourceConfig};
use crate::manifest::{load_project, LoadOptions, OsFiles};
use crate::metrics::{FailureReason, Metrics, SyncResult};
use crate::plan::{Action, RunState};
use crate::reconcile::apply::{self, ApplyOptions, Outcome};
use crate::reconcile::generations::{self, Generation};
use crate::reconcile::{observe, ReconcileError};
use crate::source::{display_url, GitAuth, GitRef, Mirror, ProjectDir, SourceSpec};

use super::state::{retry_delay, AgentState, Failure, Pending};
use super::status::{
    AgentStatus, ErrorRecord, Event, ProjectStatus, ServiceStatus, SourceStatus, Trigger,
};

pub const DEFAULT_POLL: Duration = Duration::from_secs(60);
pub const DEFAULT_DRIFT: Duration = Duration::from_secs(30);
pub const DEFAULT_IMAGE_CHECK: Duration = Duration::from_secs(600);
pub const DEFAULT_STABILIZATION: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the rest of the agent sends to the worker.
#[derive(Debug)]
pub enum Msg {
    Trigger(Trigger),
    /// SIGHUP: a new, already validated configuration.
    Reload(Box<AgentConfig>),
    Stop,
}

/// The channels the worker publishes on.
pub struct Publish {
    pub status: watch::Sender<AgentStatus>,
    pub events: EventHub,
    pub metrics: Arc<Metrics>,
    /// Told to look at the generations again after each pass (jobs come from them).
    pub jobs: Option<crate::jobs::worker::JobsHandle>,
}

struct SourceRuntime {
    config: SourceConfig,
    spec: SourceSpec,
    poll: Duration,
    next_poll: Instant,
    revision: Option<String>,
    last_fetch: Option<u64>,
    last_error: Option<String>,
    /// Consecutive failed fetches: the source is retried sooner than its poll interval
    /// (2 s doubling), so a hiccup at start does not wait out an hourly poll.
    failures: u32,
}

pub struct Worker {
    root: PathBuf,
    config: AgentConfig,
    state: AgentState,
    publish: Publish,
    sources: BTreeMap<String, SourceRuntime>,
    next_drift: Instant,
    next_image_check: Instant,
    started_at: u64,
    ready: bool,
    /// (project, service) -> the newer digest of a `notify` image.
    updates: BTreeMap<(String, String), String>,
    /// This pass was asked for with `sync --now`: update windows do not hold changes.
    ignore_windows: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Up to `max` of extra delay, different per call (no need for a real RNG: it only spreads
/// a fleet's polls).
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mixed =
        nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ std::process::id() as u64;
    Duration::from_millis(mixed % (max.as_millis() as u64).max(1))
}

/// Reads a secret file, trimmed (a trailing newline is not part of a token).
fn read_secret(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("read {}: {e}", path.display()))
}

/// The source module's spec for a configured source (secrets read from their files).
pub fn source_spec(s: &SourceConfig) -> Result<SourceSpec, String> {
    let a = &s.auth;
    let auth = if let Some(key) = &a.ssh_key {
        GitAuth::Ssh {
            key: key.clone(),
            known_hosts: a
                .known_hosts
                .clone()
                .ok_or_else(|| format!("source {}: auth.ssh_key needs auth.known_hosts", s.name))?,
            username: a
                .username
                .clone()
                .unwrap_or_else(|| GitAuth::DEFAULT_SSH_USER.to_string()),
        }
    } else if let Some(t) = &a.token {
        GitAuth::Token(t.clone())
    } else if let Some(f) = &a.token_file {
        GitAuth::Token(read_secret(f)?)
    } else if let Some(user) = &a.username {
        let password = match (&a.password, &a.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => read_secret(f)?,
            (None, None) => String::new(),
        };
        GitAuth::Basic {
            username: user.clone(),
            password,
        }
    } else {
        GitAuth::None
    };
    let reference = match (&s.branch, &s.tag, &s.commit) {
        (_, _, Some(c)) => GitRef::Commit(c.clone()),
        (_, Some(t), None) => GitRef::Tag(t.clone()),
        (Some(b), None, None) => GitRef::Branch(b.clone()),
        (None, None, None) => GitRef::Branch("main".to_string()),
    };
    Ok(SourceSpec {
        name: s.name.clone(),
        url: s.url.clone(),
        auth,
        reference,
        paths: if s.paths.is_empty() {
            vec![".".to_string()]
        } else {
            s.paths.clone()
        },
    })
}

/// Which metric reason and retry behaviour a reconcile error gets.
fn classify(e: &ReconcileError) -> (FailureReason, bool) {
    match e {
        ReconcileError::Image { .. } => (FailureReason::Image, true),
        ReconcileError::Gate { .. }
        | ReconcileError::Dependency { .. }
        | ReconcileError::Rollback { .. } => (FailureReason::HealthGate, false),
        ReconcileError::Plan(_) | ReconcileError::Translate(_) | ReconcileError::Invalid { .. } => {
            (FailureReason::Manifest, false)
        }
        _ => (FailureReason::Apply, false),
    }
}

/// What one project's pass did.
enum ProjectOutcome {
    Unchanged,
    Applied,
    Failed(FailureReason),
}

impl Worker {
    pub fn new(root: PathBuf, config: AgentConfig, publish: Publish) -> Worker {
        let state = AgentState::load(&root);
        for (source, at) in &state.last_success {
            publish.metrics.sync_succeeded_at(source, *at);
        }
        let now = Instant::now();
        let mut w = Worker {
            root,
            config: AgentConfig::default(),
            state,
            publish,
            sources: BTreeMap::new(),
            next_drift: now,
            next_image_check: now,
            started_at: unix_now(),
            ready: false,
            updates: BTreeMap::new(),
            ignore_windows: false,
        };
        w.set_config(config);
        w
    }

    fn set_config(&mut self, config: AgentConfig) {
        let poll = config.poll_interval.unwrap_or(DEFAULT_POLL);
        let mut sources = BTreeMap::new();
        for s in &config.sources {
            let spec = match source_spec(s) {
                Ok(spec) => spec,
                Err(e) => {
                    self.event("error", Some(&s.name), None, e);
                    continue;
                }
            };
            let old = self.sources.remove(&s.name);
            sources.insert(
                s.name.clone(),
                SourceRuntime {
                    config: s.clone(),
                    spec,
                    poll: s.poll_interval.unwrap_or(poll),
                    next_poll: Instant::now(),
                    revision: old.as_ref().and_then(|o| o.revision.clone()),
                    last_fetch: old.as_ref().and_then(|o| o.last_fetch),
                    last_error: old.and_then(|o| o.last_error),
                    failures: 0,
                },
            );
        }
        for gone in self.sources.keys() {
            self.publish.metrics.forget_source(gone);
        }
        self.sources = sources;
        self.config = config;
    }

    fn event(&self, kind: &str, source: Option<&str>, project: Option<&str>, message: String) {
        match kind {
            "error" => tracing::warn!(source, project, "{message}"),
            _ => tracing::info!(kind, source, project, "{message}"),
        }
        self.publish.events.publish(Event {
            at_ms: unix_ms(),
            kind: kind.to_string(),
            source: source.map(String::from),
            project: project.map(String::from),
            message,
        });
    }

    fn save_state(&self) {
        if let Err(e) = self.state.save(&self.root) {
            self.event(
                "error",
                None,
                None,
                format!("saving the agent state failed: {e}"),
            );
        }
    }

    /// The update window of a project (`x-dockmaster: {update_window: …}`), else the
    /// agent's.
    fn window_for(
        &self,
        extension: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Option<crate::schedule::Window>, String> {
        if let Some(w) = extension.and_then(|x| x.get("update_window")) {
            let config: crate::config::WindowConfig =
                serde_json::from_value(w.clone()).map_err(|e| e.to_string())?;
            return config.window().map(Some);
        }
        match &self.config.update_window {
            Some(w) => w.window().map(Some),
            None => Ok(None),
        }
    }

    /// What `pin` and `notify` services of `project` keep running: the digests of its last
    /// good generation (a `follow` service takes what its tag resolves to).
    fn keep_for(&self, project: &str) -> crate::reconcile::images::Keep {
        let Ok(Some(good)) = generations::last_good(&self.root, project, None) else {
            return Default::default();
        };
        image_policies(&good)
            .into_iter()
            .filter(|(_, policy)| policy != "follow")
            .filter_map(|(service, _)| {
                let r = good.services.get(&service)?;
                Some((service, (r.inputs.image.clone(), r.inputs.digest.clone())))
            })
            .collect()
    }

    fn apply_options(&self, revision: Option<String>) -> ApplyOptions {
        ApplyOptions {
            stabilization: self
                .config
                .apply
                .stabilization
                .unwrap_or(DEFAULT_STABILIZATION),
            timeout: self.config.apply.timeout.unwrap_or(DEFAULT_TIMEOUT),
            wait_all: false,
            revision,
            refresh: Default::default(),
            pull_observer: Some(self.pull_observer()),
            keep: Default::default(),
        }
    }

    fn pull_observer(&self) -> crate::reconcile::images::PullObserver {
        let metrics = self.publish.metrics.clone();
        crate::reconcile::images::PullObserver(Arc::new(move |ok, bytes, took| {
            metrics.image_pull(ok, bytes, took)
        }))
    }

    /// Runs until `Stop` (or every sender is gone).
    pub fn run(mut self, rx: Receiver<Msg>) {
        // First: converge to what the sources say (a mirror's local commit when the network
        // is down), then put back what ran before (after a reboot nothing runs).
        let names: Vec<String> = self.sources.keys().cloned().collect();
        for name in &names {
            self.sync_source(name, false);
        }
        self.drift_pass();
        self.ready = true;
        self.publish_status();
        // Idle between passes: give back what the pass needed (heap, the apply path's code
        // pages; they fault back in when the next pass runs).
        crate::process::trim_idle_memory();
        loop {
            let next = self
                .sources
                .values()
                .map(|s| s.next_poll)
                .chain([self.next_drift, self.next_image_check])
                .min()
                .unwrap_or(self.next_drift);
            let wait = next.saturating_duration_since(Instant::now());
            let mut forced = false;
            let mut all = false;
            match rx.recv_timeout(wait) {
                Ok(Msg::Trigger(Trigger::Manual { now })) => {
                    self.event(
                        "sync",
                        None,
                        None,
                        if now {
                            "manual sync requested (--now: update windows ignored)".into()
                        } else {
                            "manual sync requested".into()
                        },
                    );
                    forced = true;
                    all = true;
                    self.ignore_windows = now;
                }
                Ok(Msg::Trigger(Trigger::Webhook)) => {
                    self.event(
                        "webhook",
                        None,
                        None,
                        "webhook: syncing every source".into(),
                    );
                    all = true;
                }
                Ok(Msg::Reload(config)) => {
                    self.event("config", None, None, "configuration reloaded".into());
                    self.set_config(*config);
                    all = true;
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            let due: Vec<String> = self
                .sources
                .iter()
                .filter(|(_, s)| all || s.next_poll <= now)
                .map(|(n, _)| n.clone())
                .collect();
            let mut worked = !due.is_empty();
            for name in &due {
                self.sync_source(name, forced);
            }
            if forced || self.next_drift <= Instant::now() {
                self.drift_pass();
                worked = true;
            }
            if forced || self.next_image_check <= Instant::now() {
                self.image_pass();
                worked = true;
            }
            self.ignore_windows = false;
            if worked {
                self.publish_status();
                crate::process::trim_idle_memory();
            }
        }
    }

    /// Fetches one source (or falls back to its local commit) and applies each of its
    /// projects whose revision changed.
    fn sync_source(&mut self, name: &str, forced: bool) {
        let started = Instant::now();
        let Some(src) = self.sources.get_mut(name) else {
            return;
        };
        let poll = src.poll;
        let jitter_max = self.config.poll_jitter.unwrap_or(poll / 10);
        src.next_poll = Instant::now() + poll + jitter(jitter_max);
        let spec = src.spec.clone();
        let config = src.config.clone();
        let dir = self.root.join("sources").join(format!("{name}.git"));
        let fetched = Mirror::open(&dir, &spec).map(|mirror| {
            let commit = match mirror.remote_commit() {
                Ok(remote) if mirror.local_commit().as_deref() == Some(remote.as_str()) => {
                    Ok(remote)
                }
                Ok(_) => mirror.fetch(),
                Err(e) => Err(e),
            };
            (mirror, commit)
        });
        let (mirror, commit) = match fetched {
            Ok((mirror, Ok(commit))) => {
                let moved = self.sources.get_mut(name).is_some_and(|src| {
                    let moved = src.revision.as_deref() != Some(commit.as_str());
                    src.revision = Some(commit.clone());
                    src.last_fetch = Some(unix_now());
                    src.last_error = None;
                    src.failures = 0;
                    moved
                });
                if moved {
                    let short = &commit[..12.min(commit.len())];
                    self.event(
                        "fetch",
                        Some(name),
                        None,
                        format!("{} is at {short}", spec.reference),
                    );
                }
                (mirror, commit)
            }
            Ok((mirror, Err(e))) => {
                // Offline: keep going from what the mirror already has.
                let message = e.to_string();
                self.fetch_failed(name, &message, started);
                match mirror.local_commit() {
                    Some(c) => (mirror, c),
                    None => return,
                }
            }
            Err(e) => {
                self.fetch_failed(name, &e.to_string(), started);
                return;
            }
        };
        let projects = match mirror.projects(&commit) {
            Ok(p) => p,
            Err(e) => {
                self.event("error", Some(name), None, e.to_string());
                self.publish.metrics.sync_finished(
                    name,
                    SyncResult::Failure(FailureReason::Manifest),
                    started.elapsed(),
                );
                return;
            }
        };
        let mut applied = false;
        let mut failure = None;
        let mut seen_paths = BTreeSet::new();
        for pd in &projects {
            seen_paths.insert(pd.path.clone());
            match self.sync_project(&config, &mirror, &commit, pd, forced) {
                ProjectOutcome::Unchanged => {}
                ProjectOutcome::Applied => applied = true,
                ProjectOutcome::Failed(reason) => {
                    failure.get_or_insert(reason);
                }
            }
        }
        self.prune(name, &seen_paths);
        let result = match (failure, applied) {
            (Some(reason), _) => SyncResult::Failure(reason),
            (None, true) => SyncResult::Success,
            (None, false) => SyncResult::Noop,
        };
        self.publish
            .metrics
            .sync_finished(name, result, started.elapsed());
        if !matches!(result, SyncResult::Failure(_)) {
            self.state.last_success.insert(name.to_string(), unix_now());
            self.save_state();
        }
    }

    fn fetch_failed(&mut self, name: &str, message: &str, started: Instant) {
        if let Some(src) = self.sources.get_mut(name) {
            src.last_error = Some(message.to_string());
            let retry = Duration::from_secs(2u64 << src.failures.min(10)).min(src.poll);
            src.failures = src.failures.saturating_add(1);
            src.next_poll = Instant::now() + retry;
        }
        self.event("error", Some(name), None, message.to_string());
        self.publish.metrics.sync_finished(
            name,
            SyncResult::Failure(FailureReason::Fetch),
            started.elapsed(),
        );
    }

    /// The project name a directory of a source is recorded under.
    fn project_key(&self, source: &str, pd: &ProjectDir) -> Option<String> {
        self.state
            .projects
            .iter()
            .find(|(_, p)| p.source == source && p.path == pd.path)
            .map(|(k, _)| k.clone())
    }

    fn sync_project(
        &mut self,
        source: &SourceConfig,
        mirror: &Mirror,
        commit: &str,
        pd: &ProjectDir,
        forced: bool,
    ) -> ProjectOutcome {
        let short = &commit[..12.min(commit.len())];
        if let Some(key) = self.project_key(&source.name, pd) {
            let p = &self.state.projects[&key];
            if p.applied.as_deref() == Some(commit) {
                return ProjectOutcome::Unchanged;
            }
            if let Some(f) = p.failed.as_ref().filter(|f| f.revision == commit) {
                let retry = forced || (f.transient && unix_now() >= f.retry_at);
                if !retry {
                    return ProjectOutcome::Unchanged;
                }
            }
        }
        // The project's files at this commit, on disk: bind mounts of repository files point
        // into this directory, so it stays as long as a generation uses it.
        let dest = self
            .root
            .join("agent")
            .join("checkouts")
            .join(&source.name)
            .join(commit)
            .join(&pd.name);
        if !dest.exists() {
            if let Some(parent) = dest.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Err(e) = mirror.export(commit, &pd.path, &dest) {
                return self.fail_unloaded(&source.name, pd, commit, e.to_string());
            }
        }
        let options = LoadOptions {
            project_directory: Some(dest.clone()),
            cwd: dest.clone(),
            confine_to: Some(dest.clone()),
            ..LoadOptions::default()
        };
        let project = match load_project(&OsFiles, &options) {
            Ok(p) => p,
            Err(errors) => {
                return self.fail_unloaded(
                    &source.name,
                    pd,
                    commit,
                    // Paths as they are in the repository, not in the checkout.
                    format!("commit {short}: {errors}").replace(
                        &format!("{}/", dest.display()),
                        &match pd.path.as_str() {
                            "." => String::new(),
                            p => format!("{p}/"),
                        },
                    ),
                );
            }
        };
        let key = project.name.clone();
        if let Some(other) = self
            .state
            .projects
            .get(&key)
            .filter(|p| p.source != source.name || p.path != pd.path)
        {
            let message = format!(
                "project name {key} of {}:{} is already used by {}:{}",
                source.name, pd.path, other.source, other.path
            );
            self.event("error", Some(&source.name), Some(&key), message);
            return ProjectOutcome::Failed(FailureReason::Manifest);
        }
        for w in &project.warnings {
            self.event(
                "apply",
                Some(&source.name),
                Some(&key),
                format!("warning: {w}"),
            );
        }
        match self.window_for(project.x_dockmaster.as_ref()) {
            Err(e) => {
                return self.fail(
                    &key,
                    &source.name,
                    pd,
                    commit,
                    FailureReason::Manifest,
                    false,
                    format!("commit {short}: x-dockmaster.update_window: {e}"),
                )
            }
            Ok(Some(window)) if !self.ignore_windows => {
                let now = jiff::Timestamp::now();
                if !window.is_open(now) {
                    match apply::plan_project(&self.root, &self.config, project.clone(), &OsFiles) {
                        Ok((_, plan)) if !plan.is_empty() => {
                            let opens_at = window.next_open(now).map(|t| {
                                crate::schedule::cron::format_rfc3339(
                                    t,
                                    window.schedule().time_zone(),
                                )
                            });
                            let changes: Vec<String> = plan
                                .to_string()
                                .lines()
                                .skip(1)
                                .map(|l| l.trim().to_string())
                                .filter(|l| !l.is_empty())
                                .collect();
                            let entry = self.state.projects.entry(key.clone()).or_default();
                            entry.source = source.name.clone();
                            entry.path = pd.path.clone();
                            let new =
                                entry.pending.as_ref().map(|p| p.revision.as_str()) != Some(commit);
                            entry.pending = Some(Pending {
                                revision: commit.to_string(),
                                changes: changes.clone(),
                                opens_at: opens_at.clone(),
                            });
                            if new {
                                self.save_state();
                                self.event(
                                    "pending",
                                    Some(&source.name),
                                    Some(&key),
                                    format!(
                                        "commit {short}: {} change(s) held until the update window opens ({})",
                                        changes.len(),
                                        opens_at.as_deref().unwrap_or("never")
                                    ),
                                );
                            }
                            return ProjectOutcome::Unchanged;
                        }
                        // Nothing to change, or unknown: the apply decides (a no-op apply
                        // only records the revision).
                        _ => {}
                    }
                }
            }
            Ok(_) => {}
        }
        self.event(
            "apply",
            Some(&source.name),
            Some(&key),
            format!("applying commit {short}"),
        );
        let mut opts = self.apply_options(Some(commit.to_string()));
        opts.keep = self.keep_for(&key);
        let events = self.publish.events.clone();
        let (src_name, proj_name) = (source.name.clone(), key.clone());
        let mut log = |line: String| {
            tracing::info!(project = %proj_name, "{line}");
            events.publish(Event {
                at_ms: unix_ms(),
                kind: "apply".into(),
                source: Some(src_name.clone()),
                project: Some(proj_name.clone()),
                message: line,
            });
        };
        let result = apply::apply(&self.root, &self.config, project, &OsFiles, &opts, &mut log);
        match result {
            Ok(report) => match report.outcome {
                Outcome::NoChanges | Outcome::Applied => {
                    let changed = report.outcome == Outcome::Applied;
                    let entry = self.state.projects.entry(key.clone()).or_default();
                    entry.source = source.name.clone();
                    entry.path = pd.path.clone();
                    entry.applied = Some(commit.to_string());
                    entry.failed = None;
                    entry.pending = None;
                    self.save_state();
                    self.gc_checkouts(&key, &source.name, pd);
                    self.event(
                        "apply",
                        Some(&source.name),
                        Some(&key),
                        match report.generation {
                            Some(g) if changed => {
                                format!("commit {short} applied as generation {g}")
                            }
                            _ => format!("commit {short}: nothing to change"),
                        },
                    );
                    if changed {
                        ProjectOutcome::Applied
                    } else {
                        ProjectOutcome::Unchanged
                    }
                }
                Outcome::RolledBack { reason, to } => {
                    self.publish.metrics.rollback(&key);
                    self.event(
                        "rollback",
                        Some(&source.name),
                        Some(&key),
                        format!(
                            "commit {short} failed ({reason}); rolled back to generation {}",
                            to.map_or("-".into(), |n| n.to_string())
                        ),
                    );
                    self.fail(
                        &key,
                        &source.name,
                        pd,
                        commit,
                        FailureReason::HealthGate,
                        false,
                        reason,
                    )
                }
            },
            Err(e) => {
                let (reason, transient) = classify(&e);
                self.fail(
                    &key,
                    &source.name,
                    pd,
                    commit,
                    reason,
                    transient,
                    format!("commit {short}: {e}"),
                )
            }
        }
    }

    /// A failure before the project's name is known (export, load): recorded under the name
    /// it had before, else its directory's.
    fn fail_unloaded(
        &mut self,
        source: &str,
        pd: &ProjectDir,
        commit: &str,
        message: String,
    ) -> ProjectOutcome {
        let key = self
            .project_key(source, pd)
            .unwrap_or_else(|| pd.name.clone());
        self.fail(
            &key,
            source,
            pd,
            commit,
            FailureReason::Manifest,
            false,
            message,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn fail(
        &mut self,
        key: &str,
        source: &str,
        pd: &ProjectDir,
        commit: &str,
        reason: FailureReason,
        transient: bool,
        message: String,
    ) -> ProjectOutcome {
        let entry = self.state.projects.entry(key.to_string()).or_default();
        entry.source = source.to_string();
        entry.path = pd.path.clone();
        let attempts = entry
            .failed
            .as_ref()
            .filter(|f| f.revision == commit)
            .map_or(0, |f| f.attempts)
            + 1;
        let now = unix_now();
        entry.failed = Some(Failure {
            revision: commit.to_string(),
            reason: message.clone(),
            kind: reason.as_str().to_string(),
            at: now,
            transient,
            attempts,
            retry_at: if transient {
                now + retry_delay(attempts - 1)
            } else {
                0
            },
        });
        self.save_state();
        let what = if transient {
            format!("{message} (retrying in {}s)", retry_delay(attempts - 1))
        } else {
            format!("{message} (not retried until a new commit or `dockmaster sync`)")
        };
        self.event("error", Some(source), Some(key), what);
        ProjectOutcome::Failed(reason)
    }

    /// Projects of `source` whose directory is gone from the repository are taken down
    /// (volumes kept, like `down` without `-v`).
    fn prune(&mut self, source: &str, seen_paths: &BTreeSet<String>) {
        let gone: Vec<(String, String)> = self
            .state
            .projects
            .iter()
            .filter(|(_, p)| p.source == source && !seen_paths.contains(&p.path))
            .map(|(k, p)| (k.clone(), p.path.clone()))
            .collect();
        for (name, path) in gone {
            self.event(
                "apply",
                Some(source),
                Some(&name),
                "removed from the repository: taking it down (volumes kept)".into(),
            );
            let events = self.publish.events.clone();
            let result = crate::reconcile::down::down(&self.root, &name, false, &mut |line| {
                tracing::info!(project = %name, "{line}");
                events.publish(Event {
                    at_ms: unix_ms(),
                    kind: "apply".into(),
                    source: None,
                    project: None,
                    message: line,
                });
            });
            match result {
                Ok(_) => {
                    self.state.projects.remove(&name);
                    self.publish.metrics.forget_project(&name);
                    self.updates.retain(|(p, _), _| p != &name);
                    // Checkouts are named after the directory (the source for the root).
                    let dir_name = match path.rsplit('/').next() {
                        Some(".") | None => source.to_string(),
                        Some(base) => base.to_string(),
                    };
                    if let Ok(commits) =
                        std::fs::read_dir(self.root.join("agent").join("checkouts").join(source))
                    {
                        for c in commits.flatten() {
                            let _ = std::fs::remove_dir_all(c.path().join(&dir_name));
                            let _ = std::fs::remove_dir(c.path());
                        }
                    }
                    self.save_state();
                }
                Err(e) => self.event("error", Some(source), Some(&name), e.to_string()),
            }
        }
    }

    /// Removes checkouts of `project` that no kept generation uses any more.
    fn gc_checkouts(&self, project: &str, source: &str, pd: &ProjectDir) {
        let Ok(gens) = generations::list(&self.root, project) else {
            return;
        };
        let used: BTreeSet<PathBuf> = gens.iter().map(|g| g.working_dir.clone()).collect();
        let base = self.root.join("agent").join("checkouts").join(source);
        let Ok(commits) = std::fs::read_dir(&base) else {
            return;
        };
        for c in commits.flatten() {
            let dir = c.path().join(&pd.name);
            if dir.exists() && !used.contains(&dir) {
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_dir(c.path());
            }
        }
    }

    /// Puts back containers of the last good generation of every project that died, were
    /// removed or were changed by hand. Works offline (images are pinned and stored).
    fn drift_pass(&mut self) {
        self.next_drift = Instant::now() + self.config.drift_interval.unwrap_or(DEFAULT_DRIFT);
        let names: Vec<String> = self.state.projects.keys().cloned().collect();
        for name in names {
            let Ok(Some(good)) = generations::last_good(&self.root, &name, None) else {
                continue;
            };
            let plan = match apply::restore_plan(&self.root, &self.config, &good) {
                Ok(p) => p,
                Err(e) => {
                    self.event("error", None, Some(&name), format!("drift check: {e}"));
                    continue;
                }
            };
            if plan.is_empty() {
                continue;
            }
            let services: BTreeSet<String> = plan
                .steps
                .iter()
                .filter_map(|s| match &s.action {
                    Action::Create { service, .. } | Action::Recreate { service, .. } => {
                        Some(service.clone())
                    }
                    _ => None,
                })
                .collect();
            self.event(
                "drift",
                None,
                Some(&name),
                format!(
                    "generation {} drifted ({}); restoring",
                    good.number,
                    plan.steps
                        .iter()
                        .flat_map(|s| s.reasons.iter().cloned())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            );
            let opts = self.apply_options(good.revision.clone());
            let events = self.publish.events.clone();
            let proj = name.clone();
            let result = apply::restore(&self.root, &self.config, &good, &opts, &mut |line| {
                tracing::info!(project = %proj, "{line}");
                events.publish(Event {
                    at_ms: unix_ms(),
                    kind: "drift".into(),
                    source: None,
                    project: Some(proj.clone()),
                    message: line,
                });
            });
            match result {
                Ok(_) => {
                    for s in &services {
                        self.publish.metrics.drift_corrected(&name, s);
                    }
                }
                Err(e) => self.event("error", None, Some(&name), format!("drift correction: {e}")),
            }
        }
    }

    /// Checks `follow` and `notify` images for a new digest behind their tag: `follow`
    /// redeploys the applied revision pulling them again, `notify` only reports.
    fn image_pass(&mut self) {
        self.next_image_check = Instant::now()
            + self
                .config
                .image_check_interval
                .unwrap_or(DEFAULT_IMAGE_CHECK);
        let names: Vec<String> = self.state.projects.keys().cloned().collect();
        for name in names {
            let Ok(Some(good)) = generations::last_good(&self.root, &name, None) else {
                continue;
            };
            let mut follow = BTreeSet::new();
            for (service, policy) in image_policies(&good) {
                if policy == "pin" {
                    continue;
                }
                let Some(record) = good.services.get(&service) else {
                    continue;
                };
                let reference = record.inputs.image.clone();
                let newer = match super::images::newer_digest(
                    &self.root,
                    &self.config,
                    &reference,
                    &record.inputs.digest,
                ) {
                    Ok(n) => n,
                    Err(e) => {
                        self.event(
                            "error",
                            None,
                            Some(&name),
                            format!("image check of {service} ({reference}): {e}"),
                        );
                        continue;
                    }
                };
                let key = (name.clone(), service.clone());
                match newer {
                    Some(digest) => {
                        if self.updates.get(&key) != Some(&digest) {
                            self.event(
                                "image-update",
                                None,
                                Some(&name),
                                format!("{service}: {reference} now points to {digest}"),
                            );
                        }
                        if policy == "follow" {
                            follow.insert(reference);
                        } else {
                            self.publish
                                .metrics
                                .image_update_available(&name, &service, true);
                            self.updates.insert(key, digest);
                        }
                    }
                    None => {
                        if self.updates.remove(&key).is_some() {
                            self.publish
                                .metrics
                                .image_update_available(&name, &service, false);
                        }
                    }
                }
            }
            if !follow.is_empty() {
                let extension = good.project.get("x-dockmaster").and_then(|x| x.as_object());
                let held = !self.ignore_windows
                    && matches!(self.window_for(extension), Ok(Some(w)) if !w.is_open(jiff::Timestamp::now()));
                if held {
                    self.event(
                        "pending",
                        None,
                        Some(&name),
                        format!(
                            "{} moved: the redeploy waits for the update window",
                            follow.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    );
                } else {
                    self.redeploy_with(&name, &good, follow);
                }
            }
        }
    }

    /// Applies the project of `good` again (its own checkout) pulling `refresh` again.
    fn redeploy_with(&mut self, name: &str, good: &Generation, refresh: BTreeSet<String>) {
        let dir = good.working_dir.clone();
        let options = LoadOptions {
            project_directory: Some(dir.clone()),
            cwd: dir.clone(),
            confine_to: Some(dir.clone()),
            ..LoadOptions::default()
        };
        let project = match load_project(&OsFiles, &options) {
            Ok(p) => p,
            Err(e) => {
                self.event("error", None, Some(name), format!("image update: {e}"));
                return;
            }
        };
        let mut opts = self.apply_options(good.revision.clone());
        opts.refresh = refresh;
        opts.keep = self.keep_for(name);
        let events = self.publish.events.clone();
        let proj = name.to_string();
        let result = apply::apply(
            &self.root,
            &self.config,
            project,
            &OsFiles,
            &opts,
            &mut |line| {
                tracing::info!(project = %proj, "{line}");
                events.publish(Event {
                    at_ms: unix_ms(),
                    kind: "image-update".into(),
                    source: None,
                    project: Some(proj.clone()),
                    message: line,
                });
            },
        );
        match result {
            Ok(r) => {
                if let Outcome::RolledBack { reason, .. } = r.outcome {
                    self.publish.metrics.rollback(name);
                    self.event(
                        "rollback",
                        None,
                        Some(name),
                        format!("image update failed ({reason}); rolled back"),
                    );
                }
            }
            Err(e) => self.event("error", None, Some(name), format!("image update: {e}")),
        }
    }

    /// Recomputes the status snapshot and the per-project metrics.
    fn publish_status(&mut self) {
        if let Some(jobs) = &self.publish.jobs {
            jobs.reload();
        }
        let mut projects = Vec::new();
        for (name, p) in &self.state.projects {
            let good = generations::last_good(&self.root, name, None)
                .ok()
                .flatten();
            let found = observe::project_containers(&self.root, name).unwrap_or_default();
            let mut services = Vec::new();
            if let Some(g) = &good {
                let pinned = pinned_images(g);
                for (service, record) in &g.services {
                    let desired = replicas(g, service);
                    let mine: Vec<_> = found
                        .iter()
                        .filter(|f| &f.actual.service == service)
                        .collect();
                    let running = mine
                        .iter()
                        .filter(|f| matches!(f.actual.state, RunState::Running))
                        .count() as u32;
                    let state = if is_job(g, service) {
                        // Its runs are in `dockmaster jobs`.
                        "job"
                    } else {
                        mine.iter()
                            .map(|f| run_state_name(f.actual.state))
                            .max_by_key(|s| state_rank(s))
                            .unwrap_or("missing")
                    }
                    .to_string();
                    let health = mine.iter().find_map(|f| match &f.observed {
                        crate::runtime::container::Observed::Live(s) => {
                            s.health.as_ref().map(|h| h.status.as_str().to_string())
                        }
                        _ => None,
                    });
                    let restarts = mine
                        .iter()
                        .map(|f| match &f.observed {
                            crate::runtime::container::Observed::Live(s) => s.restart_count as u64,
                            _ => 0,
                        })
                        .sum();
                    self.publish
                        .metrics
                        .containers_desired(name, service, desired as u64);
                    self.publish.metrics.service_deployed(name, service);
                    services.push(ServiceStatus {
                        name: service.clone(),
                        image: record.inputs.image.clone(),
                        digest: pinned.get(service).map(|_| record.inputs.digest.clone()),
                        desired,
                        running,
                        state,
                        health,
                        restarts,
                        update: self.updates.get(&(name.clone(), service.clone())).cloned(),
                    });
                }
                if let Some(rev) = &g.revision {
                    self.publish.metrics.applied_revision(&p.source, name, rev);
                }
                self.publish.metrics.project_generation(name, g.number);
            }
            let mut pending: Vec<String> = self
                .updates
                .iter()
                .filter(|((proj, _), _)| proj == name)
                .map(|((_, s), d)| format!("{s}: image update available ({d})"))
                .collect();
            if let Some(held) = &p.pending {
                let short = &held.revision[..12.min(held.revision.len())];
                pending.extend(held.changes.iter().map(|c| {
                    format!(
                        "commit {short}: {c} (waits for the update window: {})",
                        held.opens_at.as_deref().unwrap_or("never")
                    )
                }));
            }
            self.publish
                .metrics
                .pending_changes(name, pending.len() as u64);
            let state = match (&p.failed, &p.applied) {
                _ if p.pending.is_some() => "pending",
                (Some(f), _) if p.applied.as_deref() != Some(f.revision.as_str()) => "failed",
                (_, Some(_)) => "converged",
                (_, None) => "pending",
            };
            projects.push(ProjectStatus {
                name: name.clone(),
                source: p.source.clone(),
                path: p.path.clone(),
                revision: good.as_ref().and_then(|g| g.revision.clone()),
                generation: good.as_ref().map(|g| g.number),
                state: state.to_string(),
                last_error: p.failed.as_ref().map(|f| ErrorRecord {
                    revision: Some(f.revision.clone()),
                    reason: f.reason.clone(),
                    at: f.at,
                }),
                pending,
                services,
            });
        }
        let sources = self
            .sources
            .values()
            .map(|s| SourceStatus {
                name: s.spec.name.clone(),
                url: display_url(&s.spec.url),
                reference: s.spec.reference.to_string(),
                revision: s.revision.clone(),
                last_fetch: s.last_fetch,
                last_error: s.last_error.clone(),
            })
            .collect();
        let status = AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at,
            ready: self.ready,
            labels: self.config.labels.clone(),
            sources,
            projects,
        };
        self.publish.status.send_replace(status);
    }
}

fn run_state_name(s: RunState) -> &'static str {
    match s {
        RunState::Created => "created",
        RunState::Running => "running",
        RunState::Restarting => "restarting",
        RunState::Exited(_) => "exited",
        RunState::Dead => "dead",
    }
}

/// Worse states rank higher: a service shows its worst replica.
fn state_rank(s: &str) -> u8 {
    match s {
        "running" => 0,
        "created" => 1,
        "exited" => 2,
        "restarting" => 3,
        _ => 4,
    }
}

fn service_json<'a>(g: &'a Generation, service: &str) -> Option<&'a serde_json::Value> {
    g.project.get("services")?.get(service)
}

/// A scheduled job (`x-dockmaster.schedule`): no container is kept running for it.
fn is_job(g: &Generation, service: &str) -> bool {
    service_json(g, service)
        .and_then(|s| s.get("x-dockmaster"))
        .and_then(|x| x.get("schedule"))
        .is_some()
}

fn replicas(g: &Generation, service: &str) -> u32 {
    if is_job(g, service) {
        return 0;
    }
    service_json(g, service)
        .and_then(|s| s.get("deploy"))
        .and_then(|d| d.get("replicas"))
        .and_then(|r| r.as_u64())
        .or_else(|| {
            service_json(g, service)
                .and_then(|s| s.get("scale"))
                .and_then(|r| r.as_u64())
        })
        .unwrap_or(1) as u32
}

fn pinned_images(g: &Generation) -> BTreeMap<String, String> {
    g.services
        .keys()
        .filter_map(|s| {
            let image = service_json(g, s)?.get("image")?.as_str()?;
            Some((s.clone(), image.to_string()))
        })
        .collect()
}

/// Each service's `x-dockmaster: {image_update: follow|pin|notify}` (default `pin`: only a
/// commit changes what runs).
pub fn image_policies(g: &Generation) -> Vec<(String, String)> {
    g.services
        .keys()
        .map(|s| {
            let policy = service_json(g, s)
                .and_then(|v| v.get("x-dockmaster"))
                .and_then(|x| x.get("image_update"))
                .and_then(|p| p.as_str())
                .unwrap_or("pin")
                .to_string();
            (s.clone(), policy)
        })
        .collect()
}
