//! Executing a plan: networks and volumes first, removals, then services as soon as their
//! dependencies' conditions hold, each replica created from its pinned image; then
//! the health gate, and a rollback to the last good generation when the update does not hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};

use crate::config::AgentConfig;
use crate::health::HealthStatus;
use crate::manifest::model::{
    DependCondition, MountKind, Project, RestartPolicy, Service, UpdateOrder,
};
use crate::manifest::ProjectFiles;
use crate::plan::{
    self, Action, DesiredService, DesiredState, Plan, RunState, ServiceInputs, Step,
};
use crate::runtime::container::{ContainerStore, Observed};
use crate::runtime::create::create_supervised;
use crate::runtime::lifecycle;
use crate::runtime::protocol::Status;
use crate::runtime::shim;

use super::generations::{self, Generation, ServiceRecord, Status as GenStatus};
use super::images::{self, Fetch, Resolved};
use super::observe::{self, Found};
use super::translate::{self, FileKind, HostPaths};
use super::{networks, volumes, ReconcileError};

/// Files larger than this are not hashed (their change is not detected; a bind-mounted file
/// that large is data, not configuration).
const MAX_HASHED_FILE: u64 = 64 << 20;

/// How often conditions (dependencies, readiness, the health gate) are checked.
const POLL: Duration = Duration::from_millis(50);

/// How an apply behaves.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How long updated services must stay running (and healthy, when they have a
    /// healthcheck) before the generation counts as good.
    pub stabilization: Duration,
    /// The longest wait for a dependency's condition or for a container to become healthy.
    pub timeout: Duration,
    /// Also wait until every service (not only updated ones) is running and healthy.
    pub wait_all: bool,
    /// The source revision to record (git commit), when known.
    pub revision: Option<String>,
    /// Images pulled again although stored (a `follow` tag that moved).
    pub refresh: images::Refresh,
    /// Told about each pull (metrics).
    pub pull_observer: Option<images::PullObserver>,
    /// Services that keep their image digest while the manifest names the same image.
    pub keep: images::Keep,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            stabilization: Duration::from_secs(5),
            timeout: Duration::from_secs(120),
            wait_all: false,
            revision: None,
            refresh: images::Refresh::new(),
            pull_observer: None,
            keep: images::Keep::new(),
        }
    }
}

/// The desired state of a loaded project, with its images resolved.
#[derive(Debug, Clone)]
pub struct Desired {
    pub project: Project,
    pub images: BTreeMap<String, Resolved>,
    pub state: DesiredState,
}

/// What an apply did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    pub plan: Plan,
    /// The generation recorded (none when nothing changed).
    pub generation: Option<u64>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    NoChanges,
    Applied,
    /// The update failed the health gate; the previous good generation was restored.
    RolledBack {
        reason: String,
        to: Option<u64>,
    },
}

/// The services a container's config hash covers: the spec without what does not shape one
/// container (replica count, update order).
pub fn service_inputs(
    project: &Project,
    service: &Service,
    image: Option<&Resolved>,
    files: &dyn ProjectFiles,
) -> ServiceInputs {
    inputs_hashing(project, service, image, &mut FileHashes::new(files))
}

/// sha256 of project files, each read once however many services depend on it.
struct FileHashes<'a> {
    files: &'a dyn ProjectFiles,
    seen: HashMap<PathBuf, String>,
}

impl<'a> FileHashes<'a> {
    fn new(files: &'a dyn ProjectFiles) -> FileHashes<'a> {
        FileHashes {
            files,
            seen: HashMap::new(),
        }
    }

    fn hash(&mut self, path: &Path) -> String {
        let files = self.files;
        self.seen
            .entry(path.to_path_buf())
            .or_insert_with(|| match files.read(path, MAX_HASHED_FILE) {
                Ok(bytes) => hex::encode(Sha256::digest(&bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "missing".to_string(),
                Err(e) => format!("unreadable: {e}"),
            })
            .clone()
    }
}

fn inputs_hashing(
    project: &Project,
    service: &Service,
    image: Option<&Resolved>,
    hashes: &mut FileHashes<'_>,
) -> ServiceInputs {
    let files = hashes.files;
    let mut spec = serde_json::to_value(service).unwrap_or_default();
    if let Some(obj) = spec.as_object_mut() {
        obj.remove("scale");
        if let Some(deploy) = obj.get_mut("deploy").and_then(|d| d.as_object_mut()) {
            deploy.remove("replicas");
            deploy.remove("update_config");
        }
    }
    let mut hashed = BTreeMap::new();
    let rel = |p: &Path| -> String {
        p.strip_prefix(&project.working_dir)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    for env in &service.env_files {
        hashed.insert(
            format!("env_file {}", rel(&env.path)),
            hashes.hash(&env.path),
        );
    }
    for (refs, kind, objects) in [
        (&service.configs, "config", &project.configs),
        (&service.secrets, "secret", &project.secrets),
    ] {
        for r in refs {
            match objects.get(&r.source) {
                Some(o) => match (&o.file, &o.content) {
                    (Some(file), _) => {
                        hashed.insert(format!("{kind} {}", r.source), hashes.hash(file));
                    }
                    (None, Some(content)) => {
                        hashed.insert(
                            format!("{kind} {}", r.source),
                            hex::encode(Sha256::digest(content.as_bytes())),
                        );
                    }
                    _ => {}
                },
                None => {
                    hashed.insert(format!("{kind} {}", r.source), "missing".into());
                }
            }
        }
    }
    // Bind-mounted files of the project (directories are live mounts: not hashed).
    for m in &service.volumes {
        if m.kind != MountKind::Bind {
            continue;
        }
        if let Some(src) = m.source.as_deref().map(Path::new) {
            if src.starts_with(&project.working_dir) && files.is_file(src) {
                hashed.insert(format!("bind {}", rel(src)), hashes.hash(src));
            }
        }
    }
    ServiceInputs {
        spec,
        image: service.image.clone(),
        digest: image.map_or_else(|| "unresolved".to_string(), |i| i.digest.clone()),
        files: hashed,
    }
}

/// A service runs to completion when it is not restarted after a clean exit.
fn one_shot(service: &Service) -> bool {
    matches!(
        service.effective_restart(),
        RestartPolicy::No | RestartPolicy::OnFailure { .. }
    )
}

/// Builds the desired state of `project`.
pub fn desired(
    project: Project,
    images: BTreeMap<String, Resolved>,
    files: &dyn ProjectFiles,
) -> Desired {
    let mut services = BTreeMap::new();
    let mut networks = BTreeSet::new();
    let mut volumes = BTreeSet::new();
    let mut hashes = FileHashes::new(files);
    for service in project.services.values() {
        let inputs = inputs_hashing(&project, service, images.get(&service.name), &mut hashes);
        let depends_on = service
            .depends_on
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    plan::Dependency {
                        condition: d.condition,
                        restart: d.restart,
                        required: d.required,
                    },
                )
            })
            .collect();
        // A job keeps no container: the scheduler runs it from the generation recorded here
        // (its image pulled and pinned like any other, its networks and volumes created).
        let job = crate::jobs::spec::is_job(service);
        services.insert(
            service.name.clone(),
            DesiredService::new(
                &service.name,
                if job { 0 } else { service.replicas() },
                depends_on,
                inputs,
                one_shot(service),
                service.update_order(),
            )
            .with_job(job),
        );
        if service.network_mode.is_none() {
            for key in service.networks.keys() {
                if let Some(n) = project.networks.get(key).filter(|n| !n.external) {
                    networks.insert(n.name.clone());
                }
            }
        }
        for m in &service.volumes {
            if m.kind != MountKind::Volume {
                continue;
            }
            if let Some(v) = m
                .source
                .as_deref()
                .and_then(|k| project.volumes.get(k))
                .filter(|v| !v.external)
            {
                volumes.insert(v.name.clone());
            }
        }
    }
    let state = DesiredState {
        project: project.name.clone(),
        services,
        networks,
        volumes,
    };
    Desired {
        project,
        images,
        state,
    }
}

/// Loads nothing, pulls nothing: what `plan` shows (images as stored locally).
pub fn plan_project(
    root: &Path,
    config: &AgentConfig,
    project: Project,
    files: &dyn ProjectFiles,
) -> Result<(Desired, Plan), ReconcileError> {
    let images = images::resolve(root, config, &project, Fetch::LocalOnly, &mut |_| {})?;
    let d = desired(project, images, files);
    let (actual, _) =
        observe::actual_state(root, &d.project.name, &d.state.networks, &d.state.volumes)?;
    let plan = plan::plan(&d.state, &actual).map_err(ReconcileError::Plan)?;
    Ok((d, plan))
}

struct Paths<'a> {
    root: &'a Path,
    project: &'a Project,
    allow: &'a [PathBuf],
}

impl HostPaths for Paths<'_> {
    fn volume(&self, name: &str) -> PathBuf {
        volumes::data_path(self.root, name)
    }
    fn generated_file(&self, kind: FileKind, name: &str) -> PathBuf {
        let kind = match kind {
            FileKind::Config => "configs",
            FileKind::Secret => "secrets",
        };
        self.root
            .join("projects")
            .join(&self.project.name)
            .join(kind)
            .join(name)
    }
    fn bind_allowed(&self, path: &Path) -> bool {
        let clean = crate::fsutil::clean_path(path);
        clean.starts_with(&self.project.working_dir)
            || self.allow.iter().any(|a| clean.starts_with(a))
    }
}

/// Applies `project`: pulls, plans, executes, gates on health, records the generation, and
/// rolls back to the last good generation when the update does not hold.
pub fn apply(
    root: &Path,
    config: &AgentConfig,
    project: Project,
    files: &dyn ProjectFiles,
    opts: &ApplyOptions,
    log: &mut dyn FnMut(String),
) -> Result<ApplyReport, ReconcileError> {
    let images = images::resolve_refreshing(
        root,
        config,
        &project,
        Fetch::AsPolicy,
        &images::ResolveWith {
            refresh: &opts.refresh,
            keep: &opts.keep,
            observer: opts.pull_observer.as_ref(),
        },
        log,
    )?;
    let d = desired(project, images, files);
    let (actual, found) =
        observe::actual_state(root, &d.project.name, &d.state.networks, &d.state.volumes)?;
    let plan = plan::plan(&d.state, &actual).map_err(ReconcileError::Plan)?;
    if plan.is_empty() {
        if opts.wait_all {
            gate(root, &d, &kept_running(&d), opts, log)?;
        }
        return Ok(ApplyReport {
            plan,
            generation: None,
            outcome: Outcome::NoChanges,
        });
    }
    let number = generations::next_number(root, &d.project.name)?;
    let mut generation = Generation {
        number,
        created: SystemTime::now(),
        status: GenStatus::Applying,
        error: None,
        revision: opts.revision.clone(),
        working_dir: d.project.working_dir.clone(),
        project: pinned_project_json(&d),
        services: service_records(&d),
    };
    generations::save(root, &d.project.name, &generation)?;
    log(plan.to_string().trim_end().to_string());

    let result = execute(root, config, &d, &plan, &found, number, opts, log).and_then(|()| {
        let mut services: BTreeSet<String> = plan
            .changed_services()
            .into_iter()
            .map(String::from)
            .collect();
        if opts.wait_all {
            services.extend(kept_running(&d));
        }
        gate(root, &d, &services, opts, log)
    });
    match result {
        Ok(()) => {
            generation.status = GenStatus::Good;
            generations::save(root, &d.project.name, &generation)?;
            Ok(ApplyReport {
                plan,
                generation: Some(number),
                outcome: Outcome::Applied,
            })
        }
        Err(e) => {
            let reason = e.to_string();
            generation.status = GenStatus::Failed;
            generation.error = Some(reason.clone());
            generations::save(root, &d.project.name, &generation)?;
            log(format!("generation {number} failed: {reason}"));
            let previous = generations::last_good(root, &d.project.name, Some(number))?;
            let Some(previous) = previous else {
                return Err(e);
            };
            log(format!("rolling back to generation {}", previous.number));
            restore(root, config, &previous, opts, log).map_err(|re| ReconcileError::Rollback {
                project: d.project.name.clone(),
                reason: reason.clone(),
                rollback: re.to_string(),
            })?;
            Ok(ApplyReport {
                plan,
                generation: Some(number),
                outcome: Outcome::RolledBack {
                    reason,
                    to: Some(previous.number),
                },
            })
        }
    }
}

/// The services kept running (not jobs): what `wait_all` waits for.
fn kept_running(d: &Desired) -> BTreeSet<String> {
    d.state
        .services
        .values()
        .filter(|s| !s.job)
        .map(|s| s.name.clone())
        .collect()
}

/// What a generation records of each service of `d`: its config hash and inputs.
pub fn service_records(d: &Desired) -> BTreeMap<String, ServiceRecord> {
    d.state
        .services
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                ServiceRecord {
                    hash: s.hash.clone(),
                    inputs: s.inputs.clone(),
                },
            )
        })
        .collect()
}

/// The project JSON with every service's image pinned to the digest it resolved to and env
/// files dropped (their values are in `environment` already), so reloading it later gives the
/// same containers.
fn pinned_project_json(d: &Desired) -> serde_json::Value {
    let mut v = serde_json::to_value(&d.project).unwrap_or_default();
    if let Some(services) = v.get_mut("services").and_then(|s| s.as_object_mut()) {
        for (name, s) in services.iter_mut() {
            if let Some(obj) = s.as_object_mut() {
                obj.remove("env_file");
                if let Some(img) = d.images.get(name) {
                    obj.insert("image".into(), img.pinned.clone().into());
                }
            }
        }
    }
    v
}

/// The desired state of a recorded generation: its project with pinned images, and the
/// recorded inputs (file contents may have changed since).
fn recorded_desired(
    root: &Path,
    config: &AgentConfig,
    generation: &Generation,
    fetch: Fetch,
    log: &mut dyn FnMut(String),
) -> Result<Desired, ReconcileError> {
    recorded_desired_of(
        root,
        config,
        generation,
        load_recorded(generation)?,
        fetch,
        log,
    )
}

/// [`recorded_desired`] for a project already loaded from `generation`.
fn recorded_desired_of(
    root: &Path,
    config: &AgentConfig,
    generation: &Generation,
    project: Project,
    fetch: Fetch,
    log: &mut dyn FnMut(String),
) -> Result<Desired, ReconcileError> {
    let files = crate::manifest::OsFiles;
    let images = images::resolve(root, config, &project, fetch, log)?;
    let mut d = desired(project, images, &files);
    for (name, s) in d.state.services.iter_mut() {
        if let Some(r) = generation.services.get(name) {
            s.inputs = r.inputs.clone();
            s.hash = r.hash.clone();
        }
    }
    Ok(d)
}

/// What it would take to return to a recorded generation (drift: containers that died, were
/// removed or changed by hand). Nothing is pulled or changed.
pub fn restore_plan(
    root: &Path,
    config: &AgentConfig,
    generation: &Generation,
) -> Result<Plan, ReconcileError> {
    let d = recorded_desired(root, config, generation, Fetch::LocalOnly, &mut |_| {})?;
    let (actual, _) =
        observe::actual_state(root, &d.project.name, &d.state.networks, &d.state.volumes)?;
    plan::plan(&d.state, &actual).map_err(ReconcileError::Plan)
}

/// Re-applies a recorded generation (rollback, drift correction): its project with pinned
/// images, no gate-failure rollback of its own. Returns what was done.
pub fn restore(
    root: &Path,
    config: &AgentConfig,
    generation: &Generation,
    opts: &ApplyOptions,
    log: &mut dyn FnMut(String),
) -> Result<Plan, ReconcileError> {
    let d = recorded_desired(root, config, generation, Fetch::AsPolicy, log)?;
    let (actual, found) =
        observe::actual_state(root, &d.project.name, &d.state.networks, &d.state.volumes)?;
    let plan = plan::plan(&d.state, &actual).map_err(ReconcileError::Plan)?;
    if plan.is_empty() {
        return Ok(plan);
    }
    log(plan.to_string().trim_end().to_string());
    execute(
        root,
        config,
        &d,
        &plan,
        &found,
        generation.number,
        opts,
        log,
    )?;
    let changed: BTreeSet<String> = plan
        .changed_services()
        .into_iter()
        .map(String::from)
        .collect();
    gate(root, &d, &changed, opts, log)?;
    Ok(plan)
}

/// The project of a generation, loaded again from its recorded JSON.
pub fn load_recorded(generation: &Generation) -> Result<Project, ReconcileError> {
    let file = generation.working_dir.join(".dockmaster-generation.json");
    // Recorded values are already interpolated: escape `$` so loading them again keeps them.
    let text = serde_json::to_vec(&escape_dollars(generation.project.clone())).unwrap_or_default();
    let files = crate::manifest::MemFiles::new().with(&file, text);
    let options = crate::manifest::LoadOptions {
        files: vec![file.clone()],
        project_directory: Some(generation.working_dir.clone()),
        cwd: generation.working_dir.clone(),
        ..Default::default()
    };
    crate::manifest::load_project(&files, &options).map_err(|e| ReconcileError::Invalid {
        project: generation
            .project
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string(),
        what: format!("generation {}", generation.number),
        reason: e.to_string(),
    })
}

fn escape_dollars(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(s.replace('$', "$$")),
        Value::Array(a) => Value::Array(a.into_iter().map(escape_dollars).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, escape_dollars(v))).collect())
        }
        other => other,
    }
}

/// Runs the plan: networks, volumes and removals in order, then the services as a ready set:
/// every service whose dependencies' conditions hold is created before anything waits, so a
/// slow healthcheck delays only what depends on it (like docker compose's parallel start).
#[allow(clippy::too_many_arguments)]
fn execute(
    root: &Path,
    config: &AgentConfig,
    d: &Desired,
    plan: &Plan,
    found: &[Found],
    generation: u64,
    opts: &ApplyOptions,
    log: &mut dyn FnMut(String),
) -> Result<(), ReconcileError> {
    let store = ContainerStore::new(root);
    let paths = Paths {
        root,
        project: &d.project,
        allow: &config.bind_allow,
    };
    // Service steps grouped by service, in the planner's (dependency) order.
    let mut pending: Vec<(String, Vec<&Step>)> = Vec::new();
    for step in &plan.steps {
        let Step { action, reasons } = step;
        match action {
            Action::CreateNetwork { network } => {
                let (key, decl) = d
                    .project
                    .networks
                    .iter()
                    .find(|(_, n)| &n.name == network)
                    .ok_or_else(|| {
                        ReconcileError::Network(format!("network {network} is not declared"))
                    })?;
                log(format!("creating network {network}"));
                networks::create(root, &d.project.name, key, decl)?;
            }
            Action::CreateVolume { volume } => {
                let key = d
                    .project
                    .volumes
                    .iter()
                    .find(|(_, v)| &v.name == volume)
                    .map(|(k, _)| k.as_str());
                log(format!("creating volume {volume}"));
                volumes::create(root, &d.project.name, key, volume)?;
            }
            Action::Remove {
                name, container, ..
            } => {
                log(format!("removing {name}: {}", reasons.join("; ")));
                remove(&store, container)?;
            }
            // The scheduler picks the definition up from the generation once it is good.
            Action::ScheduleJob { service } => {
                log(format!("scheduling job {service} ({})", reasons.join("; ")));
            }
            Action::UnscheduleJob { service } => {
                log(format!(
                    "unscheduling job {service} ({})",
                    reasons.join("; ")
                ));
            }
            Action::Create { service, .. } | Action::Recreate { service, .. } => {
                match pending.iter_mut().find(|(s, _)| s == service) {
                    Some((_, steps)) => steps.push(step),
                    None => pending.push((service.clone(), vec![step])),
                }
            }
        }
    }
    let mut waits = DependencyWaits::default();
    // One observation per round, taken only when a pending service has something to check,
    // and dropped once a service was started (its dependents must see the new containers).
    let mut observed: Option<Vec<Found>> = None;
    while !pending.is_empty() {
        let mut next = None;
        // Services others wait for go first: their dependents' waits start sooner.
        let waited_for = |service: &str| {
            pending.iter().any(|(other, _)| {
                d.project
                    .services
                    .get(other)
                    .is_some_and(|s| s.depends_on.contains_key(service))
            })
        };
        let mut candidates: Vec<usize> = (0..pending.len()).collect();
        candidates.sort_by_key(|&i| !waited_for(&pending[i].0));
        for i in candidates {
            let service = &pending[i].0;
            let blocked_by_plan = d.project.services.get(service).is_some_and(|s| {
                s.depends_on
                    .keys()
                    .any(|dep| pending.iter().any(|(p, _)| p == dep))
            });
            if blocked_by_plan {
                continue;
            }
            if waits.met(root, d, service, &mut observed, opts, log)? {
                next = Some(i);
                break;
            }
        }
        match next {
            Some(i) => {
                let (_, steps) = pending.remove(i);
                for step in steps {
                    run_service_step(root, d, &store, &paths, step, found, generation, opts, log)?;
                }
                observed = None;
            }
            None => {
                std::thread::sleep(POLL);
                observed = None;
            }
        }
    }
    Ok(())
}

/// Creates or recreates one replica of a service whose dependencies are met.
#[allow(clippy::too_many_arguments)]
fn run_service_step(
    root: &Path,
    d: &Desired,
    store: &ContainerStore,
    paths: &Paths<'_>,
    step: &Step,
    found: &[Found],
    generation: u64,
    opts: &ApplyOptions,
    log: &mut dyn FnMut(String),
) -> Result<(), ReconcileError> {
    let Step { action, reasons } = step;
    match action {
        Action::Create { service, replica } => {
            log(format!(
                "creating {service} #{replica}: {}",
                reasons.join("; ")
            ));
            start(root, d, paths, service, *replica, generation, &|_| {})?;
        }
        Action::Recreate {
            service,
            replica,
            container,
            name,
            order,
        } => {
            log(format!(
                "recreating {service} #{replica} ({name}): {}",
                reasons.join("; ")
            ));
            let old = found.iter().find(|f| &f.record.id == container);
            // Both generations cannot hold the same host port: a service that publishes
            // fixed ports is updated stop-first.
            let publishes = d
                .project
                .services
                .get(service)
                .is_some_and(|s| s.ports.iter().any(|p| p.published.is_some()));
            let order = match order {
                UpdateOrder::StartFirst if publishes => {
                    log(format!(
                        "{service}: start-first needs free host ports; it publishes fixed ones, so stop-first"
                    ));
                    &UpdateOrder::StopFirst
                }
                other => other,
            };
            match order {
                UpdateOrder::StopFirst => {
                    if let Some(old) = old {
                        stop(store, old);
                    }
                    remove(store, container)?;
                    start(root, d, paths, service, *replica, generation, &|_| {})?;
                }
                UpdateOrder::StartFirst => {
                    let hash = &d.state.services[service].hash;
                    let temp = format!("{name}-{}", &hash[..8.min(hash.len())]);
                    let id = start(root, d, paths, service, *replica, generation, &|cp| {
                        cp.request.name = Some(temp.clone())
                    })?;
                    wait_ready(
                        root,
                        &d.project.name,
                        &id,
                        d.project.services.get(service),
                        opts,
                    )?;
                    if let Some(old) = old {
                        stop(store, old);
                    }
                    remove(store, container)?;
                }
            }
        }
        // Handled before the services by `execute`.
        Action::CreateNetwork { .. }
        | Action::CreateVolume { .. }
        | Action::Remove { .. }
        | Action::ScheduleJob { .. }
        | Action::UnscheduleJob { .. } => {}
    }
    Ok(())
}

/// Creates and starts one replica; returns its id.
fn start(
    root: &Path,
    d: &Desired,
    paths: &Paths<'_>,
    service_name: &str,
    replica: u32,
    generation: u64,
    tweak: &dyn Fn(&mut translate::ContainerPlan),
) -> Result<String, ReconcileError> {
    let service = &d.project.services[service_name];
    let desired = &d.state.services[service_name];
    let image = d
        .images
        .get(service_name)
        .ok_or_else(|| ReconcileError::Image {
            image: service.image.clone(),
            reason: format!("service {service_name}: the image is not stored"),
        })?;
    let mut cp = translate::container_plan(
        &d.project,
        service,
        replica,
        &image.pinned,
        &desired.hash,
        generation,
        paths,
    )
    .map_err(ReconcileError::Translate)?;
    tweak(&mut cp);
    for dir in &cp.host_dirs {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| ReconcileError::State {
                what: format!("create bind source {}", dir.display()),
                source,
            })?;
        }
    }
    for v in &cp.volumes {
        let key = d
            .project
            .volumes
            .iter()
            .find(|(_, decl)| decl.name == v.name)
            .map(|(k, _)| k.as_str());
        volumes::create(root, &d.project.name, key, &v.name)?;
        if !v.nocopy {
            volumes::populate(root, &v.name, &image.layers, &v.target)?;
        }
    }
    for (refs, kind, objects) in [
        (&service.configs, FileKind::Config, &d.project.configs),
        (&service.secrets, FileKind::Secret, &d.project.secrets),
    ] {
        for r in refs {
            if let Some(content) = objects
                .get(&r.source)
                .filter(|o| o.file.is_none())
                .and_then(|o| o.content.as_ref())
            {
                let path = paths.generated_file(kind, &r.source);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| ReconcileError::State {
                        what: format!("create {}", parent.display()),
                        source,
                    })?;
                }
                crate::fsutil::write_atomic(&path, content.as_bytes()).map_err(|source| {
                    ReconcileError::State {
                        what: format!("write {}", path.display()),
                        source,
                    }
                })?;
            }
        }
    }
    let (record, cpaths) = create_supervised(root, cp.request, cp.supervision).map_err(|e| {
        ReconcileError::Container {
            service: service_name.to_string(),
            reason: e.to_string(),
        }
    })?;
    let inputs = serde_json::to_vec(&desired.inputs).unwrap_or_default();
    crate::fsutil::write_atomic(&observe::inputs_path(&cpaths), &inputs).map_err(|source| {
        ReconcileError::State {
            what: format!("write the inputs of {}", record.name),
            source,
        }
    })?;
    shim::spawn(root, &record.id, &cpaths, false).map_err(|e| ReconcileError::Container {
        service: service_name.to_string(),
        reason: format!("start {}: {e}", record.name),
    })?;
    Ok(record.id)
}

/// Creates and starts a one-off container of `service` as recorded in `generation` (a job
/// run; `project` is the generation's project as [`load_recorded`] gives it): its pinned image
/// (pulled again if it was removed), volumes and files, named `name`, with `labels` added and
/// no restart policy (whoever runs it decides about retries). Returns the container's id.
#[allow(clippy::too_many_arguments)]
pub fn start_one_off(
    root: &Path,
    config: &AgentConfig,
    generation: &Generation,
    project: &Project,
    service: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    log: &mut dyn FnMut(String),
) -> Result<String, ReconcileError> {
    let d = recorded_desired_of(
        root,
        config,
        generation,
        project.clone(),
        Fetch::AsPolicy,
        log,
    )?;
    if !d.project.services.contains_key(service) {
        return Err(ReconcileError::Container {
            service: service.to_string(),
            reason: format!("not in generation {}", generation.number),
        });
    }
    let paths = Paths {
        root,
        project: &d.project,
        allow: &config.bind_allow,
    };
    start(root, &d, &paths, service, 1, generation.number, &|cp| {
        cp.request.name = Some(name.to_string());
        cp.request.labels.extend(labels.clone());
        cp.request
            .labels
            .insert(translate::LABEL_ONEOFF.into(), "True".into());
        cp.supervision.restart = crate::health::RestartPolicy::No;
    })
}

/// Stops the old container of a recreate; a failure is left to the forced removal that
/// follows.
fn stop(store: &ContainerStore, found: &Found) {
    let grace = Duration::from_secs(found.record.stop_grace_secs);
    let _ = lifecycle::stop(store, &found.record, grace);
}

fn remove(store: &ContainerStore, id: &str) -> Result<(), ReconcileError> {
    let Ok(record) = store.load(id) else {
        return Ok(());
    };
    lifecycle::remove(store, &record, true).map_err(|e| ReconcileError::Container {
        service: record
            .labels
            .get(translate::LABEL_SERVICE)
            .cloned()
            .unwrap_or_default(),
        reason: format!("remove {}: {e:#}", record.name),
    })
}

fn health_of(o: &Observed) -> Option<HealthStatus> {
    match o {
        Observed::Live(s) => s.health.as_ref().map(|h| h.status),
        _ => None,
    }
}

/// Whether a container counts as up: running (healthy when it has a healthcheck), or a
/// one-shot that finished cleanly. `Err` when it can no longer get there.
fn ready(f: &Found, one_shot: bool) -> Result<bool, String> {
    match (&f.observed, f.actual.state) {
        (_, RunState::Exited(0)) if one_shot => Ok(true),
        (_, RunState::Exited(code)) => Err(format!("{} exited with code {code}", f.record.name)),
        (_, RunState::Dead) => Err(format!("{} is dead (its shim is gone)", f.record.name)),
        (Observed::Live(s), RunState::Running) if s.status == Status::Running => {
            match health_of(&f.observed) {
                None | Some(HealthStatus::Healthy) => Ok(true),
                Some(HealthStatus::Starting) => Ok(false),
                Some(HealthStatus::Unhealthy) => Err(format!(
                    "{} is unhealthy{}",
                    f.record.name,
                    last_output(&f.observed)
                )),
            }
        }
        (_, RunState::Restarting) => Err(format!("{} is restarting (crash loop)", f.record.name)),
        _ => Ok(false),
    }
}

fn last_output(o: &Observed) -> String {
    match o {
        Observed::Live(s) => s
            .health
            .as_ref()
            .and_then(|h| h.log.last())
            .map(|p| format!(": {}", p.output.trim()))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Waits until one container is ready (start-first updates).
fn wait_ready(
    root: &Path,
    project: &str,
    id: &str,
    service: Option<&Service>,
    opts: &ApplyOptions,
) -> Result<(), ReconcileError> {
    let Some(service) = service else {
        return Ok(());
    };
    let deadline = Instant::now() + opts.timeout;
    loop {
        let list = observe::service_containers(root, project, &service.name)?;
        if let Some(f) = list.iter().find(|f| f.record.id == id) {
            match ready(f, one_shot(service)) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(reason) => {
                    return Err(ReconcileError::Gate {
                        service: service.name.clone(),
                        reason,
                    })
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(ReconcileError::Gate {
                service: service.name.clone(),
                reason: format!("not ready after {}s", opts.timeout.as_secs()),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Dependency conditions of the services waiting to be created, with when each started
/// waiting and what was already said about it.
#[derive(Default)]
struct DependencyWaits {
    since: HashMap<String, Instant>,
    said: BTreeSet<(String, String)>,
}

impl DependencyWaits {
    /// Whether every dependency condition of `service` holds now. `Err` when a required one
    /// can no longer hold, or has not held within the timeout.
    fn met(
        &mut self,
        root: &Path,
        d: &Desired,
        service: &str,
        observed: &mut Option<Vec<Found>>,
        opts: &ApplyOptions,
        log: &mut dyn FnMut(String),
    ) -> Result<bool, ReconcileError> {
        let Some(svc) = d.project.services.get(service) else {
            return Ok(true);
        };
        let since = *self
            .since
            .entry(service.to_string())
            .or_insert_with(Instant::now);
        for (dep, cond) in &svc.depends_on {
            let Some(dep_service) = d.project.services.get(dep) else {
                continue;
            };
            // A job has no container to wait for (the loader refuses such a dependency).
            if d.state.services.get(dep).is_some_and(|s| s.job) {
                continue;
            }
            let all = match observed {
                Some(all) => all,
                None => observed.insert(observe::project_containers(root, &d.project.name)?),
            };
            let list: Vec<&Found> = all.iter().filter(|f| &f.actual.service == dep).collect();
            let error = |reason: String| ReconcileError::Dependency {
                service: service.to_string(),
                dependency: dep.clone(),
                condition: cond.condition.as_str().to_string(),
                reason,
            };
            match dependency_met(&list, cond.condition, one_shot(dep_service)) {
                Ok(true) => {}
                Ok(false) => {
                    if since.elapsed() >= opts.timeout {
                        return Err(error(format!("not met after {}s", opts.timeout.as_secs())));
                    }
                    if self.said.insert((service.to_string(), dep.clone())) {
                        log(format!(
                            "{service}: waiting for {dep} ({})",
                            cond.condition.as_str()
                        ));
                    }
                    return Ok(false);
                }
                Err(reason) if cond.required => return Err(error(reason)),
                Err(reason) => {
                    if self
                        .said
                        .insert((service.to_string(), format!("{dep} (optional)")))
                    {
                        log(format!("{service}: optional dependency {dep}: {reason}"));
                    }
                }
            }
        }
        Ok(true)
    }
}

fn dependency_met(
    list: &[&Found],
    condition: DependCondition,
    one_shot: bool,
) -> Result<bool, String> {
    if list.is_empty() {
        return Ok(false);
    }
    for f in list {
        let ok = match condition {
            DependCondition::Started => match f.actual.state {
                RunState::Running | RunState::Restarting => true,
                RunState::Exited(0) if one_shot => true,
                RunState::Exited(code) => {
                    return Err(format!("{} exited with code {code}", f.record.name))
                }
                RunState::Dead => return Err(format!("{} is dead", f.record.name)),
                RunState::Created => false,
            },
            DependCondition::Healthy => match health_of(&f.observed) {
                Some(HealthStatus::Healthy) => true,
                Some(HealthStatus::Unhealthy) => {
                    return Err(format!(
                        "{} is unhealthy{}",
                        f.record.name,
                        last_output(&f.observed)
                    ))
                }
                Some(HealthStatus::Starting) => false,
                None => match f.actual.state {
                    RunState::Exited(code) => {
                        return Err(format!("{} exited with code {code}", f.record.name))
                    }
                    RunState::Dead => return Err(format!("{} is dead", f.record.name)),
                    _ => return Err(format!("{} has no healthcheck", f.record.name)),
                },
            },
            DependCondition::CompletedSuccessfully => match f.actual.state {
                RunState::Exited(0) => true,
                RunState::Exited(code) => {
                    return Err(format!("{} exited with code {code}", f.record.name))
                }
                RunState::Dead => return Err(format!("{} is dead", f.record.name)),
                _ => false,
            },
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The health gate: every container of `services` must become ready within the timeout and
/// then stay ready for the stabilization window.
fn gate(
    root: &Path,
    d: &Desired,
    services: &BTreeSet<String>,
    opts: &ApplyOptions,
    log: &mut dyn FnMut(String),
) -> Result<(), ReconcileError> {
    if services.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + opts.timeout;
    let mut stable_since: Option<Instant> = None;
    log(format!(
        "waiting for {} to be up for {}s",
        services.iter().cloned().collect::<Vec<_>>().join(", "),
        opts.stabilization.as_secs()
    ));
    loop {
        let all = observe::project_containers(root, &d.project.name)?;
        let mut all_ready = true;
        for name in services {
            let Some(service) = d.project.services.get(name) else {
                continue;
            };
            // Jobs are not kept running: their runs never hold up an apply.
            if d.state.services.get(name).is_some_and(|s| s.job) {
                continue;
            }
            let list: Vec<&Found> = all.iter().filter(|f| &f.actual.service == name).collect();
            if list.len() < service.replicas() as usize {
                all_ready = false;
            }
            for f in list {
                match ready(f, one_shot(service)) {
                    Ok(true) => {}
                    Ok(false) => {
                        if stable_since.is_some() {
                            // It was ready and is not any more (a health flap).
                            return Err(ReconcileError::Gate {
                                service: name.clone(),
                                reason: format!("{} stopped being ready", f.record.name),
                            });
                        }
                        all_ready = false;
                    }
                    Err(reason) => {
                        return Err(ReconcileError::Gate {
                            service: name.clone(),
                            reason,
                        })
                    }
                }
            }
        }
        let now = Instant::now();
        if all_ready {
            let since = *stable_since.get_or_insert(now);
            if now.duration_since(since) >= opts.stabilization {
                return Ok(());
            }
        } else if now >= deadline {
            return Err(ReconcileError::Gate {
                service: services.iter().cloned().collect::<Vec<_>>().join(", "),
                reason: format!("not up after {}s", opts.timeout.as_secs()),
            });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{load_project, LoadOptions, MemFiles};

    #[test]
    fn bind_checks_see_through_dot_dot() {
        assert_eq!(
            crate::fsutil::clean_path(Path::new("/srv/p/../../etc")),
            PathBuf::from("/etc")
        );
        assert_eq!(
            crate::fsutil::clean_path(Path::new("/srv/p/./data")),
            PathBuf::from("/srv/p/data")
        );
        let project = Project {
            working_dir: "/srv/p".into(),
            ..load(&MemFiles::new().with("/srv/p/compose.yaml", "services: {}\n"))
        };
        let paths = Paths {
            root: Path::new("/var/lib/dm"),
            project: &project,
            allow: &[PathBuf::from("/data")],
        };
        assert!(paths.bind_allowed(Path::new("/srv/p/html")));
        assert!(paths.bind_allowed(Path::new("/data/x")));
        assert!(!paths.bind_allowed(Path::new("/srv/p/../../etc")));
        assert!(!paths.bind_allowed(Path::new("/var/lib/dm")));
    }

    #[test]
    fn recorded_strings_keep_their_dollars_when_loaded_again() {
        let v = serde_json::json!({"a": ["x $Y $$"], "b": {"c": "$"}});
        assert_eq!(
            escape_dollars(v),
            serde_json::json!({"a": ["x $$Y $$$$"], "b": {"c": "$$"}})
        );
    }

    fn load(files: &MemFiles) -> Project {
        let options = LoadOptions {
            project_directory: Some("/srv/p".into()),
            cwd: "/srv/p".into(),
            ..LoadOptions::default()
        };
        load_project(files, &options).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn inputs_hash_env_files_configs_and_bound_files_by_content() {
        let compose = "services:\n  web:\n    image: busybox\n    env_file: web.env\n    configs: [app]\n    volumes: [\"./site.conf:/etc/site.conf:ro\", \"./html:/www\"]\nconfigs:\n  app: {file: ./app.conf}\n";
        let files = |env: &str| {
            MemFiles::new()
                .with("/srv/p/compose.yaml", compose)
                .with("/srv/p/web.env", env)
                .with("/srv/p/app.conf", "x=1")
                .with("/srv/p/site.conf", "listen 80")
        };
        let a = files("A=1\n");
        let project = load(&a);
        let web = &project.services["web"];
        let one = service_inputs(&project, web, None, &a);
        let keys: Vec<&str> = one.files.keys().map(String::as_str).collect();
        assert_eq!(keys, ["bind site.conf", "config app", "env_file web.env"]);
        assert_eq!(one.digest, "unresolved");
        let b = files("A=2\n");
        let project_b = load(&b);
        let two = service_inputs(&project_b, &project_b.services["web"], None, &b);
        assert_eq!(
            two.changes_since(&one),
            ["environment changed", "env_file web.env changed"]
        );
    }
}
