//! The planner: (desired state, actual state) -> ordered actions, each with its reasons.
//! Pure: no I/O, no clock, no tokio. The executor (`reconcile`) gathers both sides; this
//! module only compares them.
//!
//! A container's identity is (project, service, replica) plus the hash of its
//! [`ServiceInputs`]: the normalized service spec, the image digest its tag resolved to, and
//! the contents of the files it depends on (env files, configs, secrets, bind-mounted files
//! of the project). A container is recreated only when that hash changes (or it is dead, or
//! it exited and is not a finished one-shot), and every action says why.
//!
//! A job (a service with `x-dockmaster.schedule`) gets no containers: the plan only says
//! whether its definition is new, changed or gone ([`Action::ScheduleJob`],
//! [`Action::UnscheduleJob`]); the scheduler runs it from the last good generation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Categorized, Category};
use crate::manifest::model::{DependCondition, UpdateOrder};

/// Everything that shapes a service's containers, kept so a later plan can say what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInputs {
    /// The normalized service (compose-spec JSON) without what does not shape one container
    /// (replica count, update order).
    pub spec: serde_json::Value,
    /// The image as written in the manifest.
    pub image: String,
    /// The manifest digest the image resolved to.
    pub digest: String,
    /// What each depended-on file contains: `"env_file .env"`, `"config app.conf"`,
    /// `"bind ./html"` -> sha256 hex of its content.
    pub files: BTreeMap<String, String>,
}

impl ServiceInputs {
    /// The config hash: sha256 over the canonical JSON of all inputs (object keys sorted,
    /// serde_json's default map is ordered).
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Why a container made from `old` does not match these inputs (empty when it does).
    pub fn changes_since(&self, old: &ServiceInputs) -> Vec<String> {
        let mut out = Vec::new();
        if self.image != old.image {
            out.push(format!("image {} -> {}", old.image, self.image));
        }
        if self.digest != old.digest {
            out.push(format!(
                "image digest {} -> {}",
                short_digest(&old.digest),
                short_digest(&self.digest)
            ));
        }
        let empty = serde_json::Map::new();
        let new_spec = self.spec.as_object().unwrap_or(&empty);
        let old_spec = old.spec.as_object().unwrap_or(&empty);
        let keys: BTreeSet<&String> = new_spec.keys().chain(old_spec.keys()).collect();
        for key in keys {
            if key == "image" {
                continue;
            }
            let (a, b) = (old_spec.get(key), new_spec.get(key));
            if a == b {
                continue;
            }
            // Our own extension holds unrelated settings: say which of them changed.
            if key == "x-dockmaster" {
                let sub = sub_key_changes(key, a, b);
                if !sub.is_empty() {
                    out.extend(sub);
                    continue;
                }
            }
            out.push(match (a, b) {
                (None, Some(_)) => format!("{key} added"),
                (Some(_), None) => format!("{key} removed"),
                _ => format!("{key} changed"),
            });
        }
        let files: BTreeSet<&String> = self.files.keys().chain(old.files.keys()).collect();
        for file in files {
            match (old.files.get(file), self.files.get(file)) {
                (Some(a), Some(b)) if a == b => {}
                (None, Some(_)) => out.push(format!("{file} added")),
                (Some(_), None) => out.push(format!("{file} removed")),
                _ => out.push(format!("{file} changed")),
            }
        }
        out
    }
}

/// `key.sub added/removed/changed` for each differing key of two objects (an absent one counts
/// as empty); empty when either side is something else.
fn sub_key_changes(
    key: &str,
    old: Option<&serde_json::Value>,
    new: Option<&serde_json::Value>,
) -> Vec<String> {
    fn as_object<'v>(
        v: Option<&'v serde_json::Value>,
        empty: &'v serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'v serde_json::Map<String, serde_json::Value>> {
        match v {
            None => Some(empty),
            Some(v) => v.as_object(),
        }
    }
    let empty = serde_json::Map::new();
    let (Some(old), Some(new)) = (as_object(old, &empty), as_object(new, &empty)) else {
        return Vec::new();
    };
    let subs: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    subs.into_iter()
        .filter_map(|sub| match (old.get(sub), new.get(sub)) {
            (Some(a), Some(b)) if a == b => None,
            (None, Some(_)) => Some(format!("{key}.{sub} added")),
            (Some(_), None) => Some(format!("{key}.{sub} removed")),
            _ => Some(format!("{key}.{sub} changed")),
        })
        .collect()
}

/// `sha256:0123456789abcdef…` -> `0123456789ab`.
pub fn short_digest(digest: &str) -> String {
    let hex = digest.rsplit(':').next().unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// One service as the manifest wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredService {
    pub name: String,
    pub replicas: u32,
    pub depends_on: BTreeMap<String, Dependency>,
    pub inputs: ServiceInputs,
    /// `inputs.hash()`, computed once.
    pub hash: String,
    /// Runs to completion (restart `no` or `on-failure`): an exit with code 0 is its goal,
    /// not something to repair.
    pub one_shot: bool,
    pub order: UpdateOrder,
    /// A scheduled job: no containers are kept for it (`replicas` is ignored); the plan only
    /// says when its definition is new, changed or gone.
    pub job: bool,
}

impl DesiredService {
    pub fn new(
        name: &str,
        replicas: u32,
        depends_on: BTreeMap<String, Dependency>,
        inputs: ServiceInputs,
        one_shot: bool,
        order: UpdateOrder,
    ) -> DesiredService {
        DesiredService {
            name: name.to_string(),
            replicas,
            depends_on,
            hash: inputs.hash(),
            inputs,
            one_shot,
            order,
            job: false,
        }
    }

    /// The same service, as a scheduled job or not.
    pub fn with_job(mut self, job: bool) -> DesiredService {
        self.job = job;
        self
    }
}

/// A `depends_on` edge as the planner needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependency {
    pub condition: DependCondition,
    /// Recreate this service when the dependency is recreated.
    pub restart: bool,
    pub required: bool,
}

/// The whole project as the manifest wants it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub project: String,
    pub services: BTreeMap<String, DesiredService>,
    /// Real names of the networks to create (external ones excluded).
    pub networks: BTreeSet<String>,
    /// Real names of the named volumes to create (external ones excluded).
    pub volumes: BTreeSet<String>,
}

/// How a container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "exit_code")]
pub enum RunState {
    Created,
    Running,
    /// Its shim waits to restart it (restart policy backoff).
    Restarting,
    Exited(i32),
    /// Its shim is gone without an exit record.
    Dead,
}

/// One container of the project, as found on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ActualContainer {
    pub id: String,
    pub name: String,
    pub service: String,
    pub replica: u32,
    /// The config hash it was created with.
    pub hash: String,
    /// The inputs it was created from, when known (to explain a change).
    pub inputs: Option<ServiceInputs>,
    pub state: RunState,
}

/// A job as it is scheduled now (from the project's last good generation).
#[derive(Debug, Clone, PartialEq)]
pub struct ActualJob {
    /// Its config hash in that generation.
    pub hash: String,
    /// Its inputs there, when known (to explain a change).
    pub inputs: Option<ServiceInputs>,
}

/// What runs now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActualState {
    pub containers: Vec<ActualContainer>,
    pub networks: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    /// The jobs currently scheduled, by service.
    pub jobs: BTreeMap<String, ActualJob>,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    CreateNetwork {
        network: String,
    },
    CreateVolume {
        volume: String,
    },
    Create {
        service: String,
        replica: u32,
    },
    Recreate {
        service: String,
        replica: u32,
        container: String,
        name: String,
        /// Serialized as Compose writes it: `stop-first` / `start-first`.
        order: UpdateOrder,
    },
    Remove {
        service: String,
        container: String,
        name: String,
    },
    /// A job that is new or whose definition changed: the scheduler runs the new definition
    /// once the generation is good. Nothing is started now.
    ScheduleJob {
        service: String,
    },
    /// A job that is no longer in the project, or no longer a job.
    UnscheduleJob {
        service: String,
    },
}

/// The reason of a [`Action::ScheduleJob`] for a job that was not scheduled before.
pub const NEW_JOB: &str = "new job";

/// An action with why it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    pub reasons: Vec<String>,
}

/// The ordered actions for one project: networks and volumes, then removals (orphans and
/// scale-down free names and ports first) and jobs no longer scheduled, then services in
/// dependency order, then jobs new or changed (by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub project: String,
    pub steps: Vec<Step>,
    /// Services in the order they are brought up (dependencies first).
    pub order: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Services with a create or recreate step (jobs have none: nothing waits for them).
    pub fn changed_services(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Create { service, .. } | Action::Recreate { service, .. } => {
                    Some(service.as_str())
                }
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            return writeln!(f, "project {}: no changes", self.project);
        }
        writeln!(
            f,
            "project {}: {} change{}",
            self.project,
            self.steps.len(),
            if self.steps.len() == 1 { "" } else { "s" }
        )?;
        for step in &self.steps {
            let what = match &step.action {
                Action::CreateNetwork { network } => format!("+ network {network}"),
                Action::CreateVolume { volume } => format!("+ volume {volume}"),
                Action::Create { service, replica } => format!("+ {service} #{replica}"),
                Action::Recreate {
                    service,
                    replica,
                    order,
                    ..
                } => {
                    let order = match order {
                        UpdateOrder::StopFirst => "",
                        UpdateOrder::StartFirst => " (start-first)",
                    };
                    format!("~ {service} #{replica}{order}")
                }
                Action::Remove { service, name, .. } => format!("- {service} ({name})"),
                Action::ScheduleJob { service } => {
                    let sign = if step.reasons.len() == 1 && step.reasons[0] == NEW_JOB {
                        '+'
                    } else {
                        '~'
                    };
                    format!("{sign} job {service}")
                }
                Action::UnscheduleJob { service } => format!("- job {service}"),
            };
            if step.reasons.is_empty() {
                writeln!(f, "  {what}")?;
            } else {
                writeln!(f, "  {what}: {}", step.reasons.join("; "))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("project {project}: dependency cycle: {}", chain.join(" -> "))]
    Cycle { project: String, chain: Vec<String> },
    #[error("project {project}: service {service} depends on {dependency}, which is not in the project (or not in an active profile)")]
    UnknownDependency {
        project: String,
        service: String,
        dependency: String,
    },
}

impl Categorized for PlanError {
    fn category(&self) -> Category {
        Category::Invalid
    }
}

/// Services in bring-up order: every service after the services it depends on; otherwise by
/// name. Optional dependencies (`required: false`) that are absent are ignored.
pub fn service_order(desired: &DesiredState) -> Result<Vec<String>, PlanError> {
    for (name, service) in &desired.services {
        for (dep, d) in &service.depends_on {
            if d.required && !desired.services.contains_key(dep) {
                return Err(PlanError::UnknownDependency {
                    project: desired.project.clone(),
                    service: name.clone(),
                    dependency: dep.clone(),
                });
            }
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        desired: &DesiredState,
        name: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), PlanError> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = path.iter().position(|p| p == name).unwrap_or(0);
                let mut chain = path[start..].to_vec();
                chain.push(name.to_string());
                return Err(PlanError::Cycle {
                    project: desired.project.clone(),
                    chain,
                });
            }
            None => {}
        }
        let Some(service) = desired.services.get(name) else {
            return Ok(());
        };
        marks.insert(name.to_string(), Mark::Visiting);
        path.push(name.to_string());
        for dep in service.depends_on.keys() {
            visit(desired, dep, marks, path, out)?;
        }
        path.pop();
        marks.insert(name.to_string(), Mark::Done);
        out.push(name.to_string());
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut out = Vec::with_capacity(desired.services.len());
    for name in desired.services.keys() {
        visit(desired, name, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// Compares the two states. Containers of services that are no longer in the project (or
/// are jobs now), and replicas above the desired count, are removed; missing replicas are
/// created; replicas whose hash differs, that are dead, or that exited without being a
/// finished one-shot are recreated; a service whose dependency is recreated with
/// `restart: true` is recreated too. Jobs are compared with the scheduled ones by hash.
pub fn plan(desired: &DesiredState, actual: &ActualState) -> Result<Plan, PlanError> {
    let order = service_order(desired)?;
    let mut steps = Vec::new();
    for network in desired.networks.difference(&actual.networks) {
        steps.push(Step {
            action: Action::CreateNetwork {
                network: network.clone(),
            },
            reasons: vec!["does not exist".into()],
        });
    }
    for volume in desired.volumes.difference(&actual.volumes) {
        steps.push(Step {
            action: Action::CreateVolume {
                volume: volume.clone(),
            },
            reasons: vec!["does not exist".into()],
        });
    }

    // (service, replica) -> containers found, the best first.
    let mut found: BTreeMap<(&str, u32), Vec<&ActualContainer>> = BTreeMap::new();
    for c in &actual.containers {
        found
            .entry((c.service.as_str(), c.replica))
            .or_default()
            .push(c);
    }
    let mut removals = Vec::new();
    for ((service, replica), list) in found.iter_mut() {
        // Keep the one most likely to be right: matching hash, then running, then by id.
        list.sort_by_key(|c| {
            let hash_ok = desired
                .services
                .get(*service)
                .is_some_and(|d| d.hash == c.hash);
            (!hash_ok, c.state != RunState::Running, c.id.clone())
        });
        let reason = match desired.services.get(*service) {
            None => Some("service is no longer in the project".to_string()),
            Some(d) if d.job => {
                Some("is a job now: runs at its schedule, not kept running".to_string())
            }
            Some(d) if *replica > d.replicas || *replica == 0 => {
                Some(format!("scaled down to {} replica(s)", d.replicas))
            }
            Some(_) => None,
        };
        let extra = match &reason {
            Some(_) => &list[..],
            None => &list[1..],
        };
        for c in extra {
            removals.push(Step {
                action: Action::Remove {
                    service: c.service.clone(),
                    container: c.id.clone(),
                    name: c.name.clone(),
                },
                reasons: vec![reason
                    .clone()
                    .unwrap_or_else(|| format!("duplicate of replica {replica}"))],
            });
        }
    }
    steps.extend(removals);

    for name in actual.jobs.keys() {
        let reason = match desired.services.get(name) {
            None => "service is no longer in the project",
            Some(d) if !d.job => "no longer a job: kept running from now on",
            Some(_) => continue,
        };
        steps.push(Step {
            action: Action::UnscheduleJob {
                service: name.clone(),
            },
            reasons: vec![reason.to_string()],
        });
    }

    let mut recreated: BTreeSet<&str> = BTreeSet::new();
    for name in &order {
        let service = &desired.services[name];
        if service.job {
            continue;
        }
        let mut service_steps = Vec::new();
        // Dependencies recreated in this plan whose dependents asked to follow them.
        let mut follow: Vec<String> = service
            .depends_on
            .iter()
            .filter(|(dep, d)| d.restart && recreated.contains(dep.as_str()))
            .map(|(dep, _)| format!("dependency {dep} is recreated (restart: true)"))
            .collect();
        follow.sort();
        for replica in 1..=service.replicas {
            let Some(current) = found.get(&(name.as_str(), replica)).and_then(|l| l.first()) else {
                service_steps.push(Step {
                    action: Action::Create {
                        service: name.clone(),
                        replica,
                    },
                    reasons: vec![if replica == 1 && !found.keys().any(|(s, _)| s == name) {
                        "new service".to_string()
                    } else {
                        format!("replica {replica} is missing")
                    }],
                });
                continue;
            };
            let mut reasons = Vec::new();
            if current.hash != service.hash {
                match &current.inputs {
                    Some(old) => {
                        let changes = service.inputs.changes_since(old);
                        if changes.is_empty() {
                            reasons.push("config hash changed".to_string());
                        } else {
                            reasons.extend(changes);
                        }
                    }
                    None => reasons.push("config hash changed".to_string()),
                }
            }
            match current.state {
                RunState::Dead => reasons.push("container is dead (its shim is gone)".into()),
                RunState::Exited(0) if service.one_shot => {}
                RunState::Exited(code) => reasons.push(format!("container exited (code {code})")),
                RunState::Created => reasons.push("container was never started".into()),
                RunState::Running | RunState::Restarting => {}
            }
            reasons.extend(follow.iter().cloned());
            if !reasons.is_empty() {
                service_steps.push(Step {
                    action: Action::Recreate {
                        service: name.clone(),
                        replica,
                        container: current.id.clone(),
                        name: current.name.clone(),
                        order: service.order,
                    },
                    reasons,
                });
            }
        }
        if !service_steps.is_empty() {
            recreated.insert(name.as_str());
        }
        steps.extend(service_steps);
    }

    for (name, service) in desired.services.iter().filter(|(_, s)| s.job) {
        let reasons = match actual.jobs.get(name) {
            None => vec![NEW_JOB.to_string()],
            Some(current) if current.hash == service.hash => continue,
            Some(current) => match &current.inputs {
                Some(old) => {
                    let changes = service.inputs.changes_since(old);
                    if changes.is_empty() {
                        vec!["config hash changed".to_string()]
                    } else {
                        changes
                    }
                }
                None => vec!["config hash changed".to_string()],
            },
        };
        steps.push(Step {
            action: Action::ScheduleJob {
                service: name.clone(),
            },
            reasons,
        });
    }
    // Jobs are not brought up.
    let order = order
        .into_iter()
        .filter(|name| !desired.services[name].job)
        .collect();
    Ok(Plan {
        project: desired.project.clone(),
        steps,
        order,
    })
}

#[cfg(test)]
mod tests;
