//! What runs for a project: its containers (found by their Compose labels), with their state,
//! config hash and the inputs they were created from; plus the networks and volumes that
//! exist, and the jobs scheduled (those of the last good generation). Containers of job runs
//! (label [`crate::jobs::LABEL_JOB_RUN`]) are not replicas: the scheduler owns them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::jobs::LABEL_JOB_RUN;
use crate::plan::{ActualContainer, ActualJob, ActualState, RunState, ServiceInputs};
use crate::runtime::container::{
    observe, ContainerPaths, ContainerRecord, ContainerStore, Observed,
};
use crate::runtime::protocol::Status;

use super::translate::{LABEL_CONFIG_HASH, LABEL_NUMBER, LABEL_PROJECT, LABEL_SERVICE};
use super::{generations, ReconcileError};

/// The file next to a container's record that keeps the inputs it was created from.
pub fn inputs_path(paths: &ContainerPaths) -> PathBuf {
    paths.dir.join("inputs.json")
}

/// A project container with what was observed of it.
#[derive(Debug, Clone)]
pub struct Found {
    pub record: ContainerRecord,
    pub observed: Observed,
    pub actual: ActualContainer,
}

/// The containers of `project`'s services, observed (not those of job runs).
pub fn project_containers(root: &Path, project: &str) -> Result<Vec<Found>, ReconcileError> {
    containers(root, project, None)
}

/// The containers of one service of `project`, observed (only those shims are asked).
pub fn service_containers(
    root: &Path,
    project: &str,
    service: &str,
) -> Result<Vec<Found>, ReconcileError> {
    containers(root, project, Some(service))
}

fn containers(
    root: &Path,
    project: &str,
    only: Option<&str>,
) -> Result<Vec<Found>, ReconcileError> {
    let store = ContainerStore::new(root);
    let records = store.list().map_err(ReconcileError::Containers)?;
    let mut out = Vec::new();
    for record in records {
        if record.labels.get(LABEL_PROJECT).map(String::as_str) != Some(project)
            || record.labels.contains_key(LABEL_JOB_RUN)
        {
            continue;
        }
        let Some(service) = record.labels.get(LABEL_SERVICE).cloned() else {
            continue;
        };
        if only.is_some_and(|o| o != service) {
            continue;
        }
        let replica = record
            .labels
            .get(LABEL_NUMBER)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let paths = store.paths(&record.id);
        let observed = observe(&paths, &record);
        let inputs: Option<ServiceInputs> = std::fs::read(inputs_path(&paths))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let actual = ActualContainer {
            id: record.id.clone(),
            name: record.name.clone(),
            service,
            replica,
            hash: record
                .labels
                .get(LABEL_CONFIG_HASH)
                .cloned()
                .unwrap_or_default(),
            inputs,
            state: run_state(&observed),
        };
        out.push(Found {
            record,
            observed,
            actual,
        });
    }
    out.sort_by(|a, b| {
        (&a.actual.service, a.actual.replica, &a.actual.id).cmp(&(
            &b.actual.service,
            b.actual.replica,
            &b.actual.id,
        ))
    });
    Ok(out)
}

/// The containers of `project`'s job runs, oldest first (not observed: their shims are not
/// asked).
pub fn job_run_containers(
    root: &Path,
    project: &str,
) -> Result<Vec<ContainerRecord>, ReconcileError> {
    let store = ContainerStore::new(root);
    Ok(store
        .list()
        .map_err(ReconcileError::Containers)?
        .into_iter()
        .filter(|r| {
            r.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project)
                && r.labels.contains_key(LABEL_JOB_RUN)
        })
        .collect())
}

/// The jobs `project` has scheduled: those of its last good generation (the scheduler runs
/// what that generation recorded).
pub fn scheduled_jobs(
    root: &Path,
    project: &str,
) -> Result<BTreeMap<String, ActualJob>, ReconcileError> {
    let Some(good) = generations::last_good(root, project, None)? else {
        return Ok(BTreeMap::new());
    };
    Ok(good
        .services
        .into_iter()
        .filter(|(_, r)| {
            r.inputs
                .spec
                .get("x-dockmaster")
                .and_then(|x| x.get("schedule"))
                .is_some()
        })
        .map(|(name, r)| {
            (
                name,
                ActualJob {
                    hash: r.hash,
                    inputs: Some(r.inputs),
                },
            )
        })
        .collect())
}

/// The planner's view of an observation.
pub fn run_state(o: &Observed) -> RunState {
    match o {
        Observed::Live(s) => match s.status {
            Status::Created => RunState::Created,
            Status::Running => RunState::Running,
            Status::Restarting => RunState::Restarting,
            Status::Stopped => RunState::Exited(s.exit_code.unwrap_or(-1)),
        },
        Observed::Exited(e) => RunState::Exited(e.exit_code),
        Observed::ShimLost { .. } => RunState::Dead,
        // Starting up or busy: not something to replace.
        Observed::Unresponsive { .. } => RunState::Running,
    }
}

/// The actual state of `project` for the planner (job runs are not counted as replicas).
pub fn actual_state(
    root: &Path,
    project: &str,
    networks: &BTreeSet<String>,
    volumes: &BTreeSet<String>,
) -> Result<(ActualState, Vec<Found>), ReconcileError> {
    let found = project_containers(root, project)?;
    let existing_networks = super::networks::existing(root)?;
    let existing_volumes = super::volumes::existing(root, volumes)?;
    Ok((
        ActualState {
            containers: found.iter().map(|f| f.actual.clone()).collect(),
            networks: networks
                .iter()
                .filter(|n| existing_networks.contains(*n))
                .cloned()
                .collect(),
            volumes: existing_volumes,
            jobs: scheduled_jobs(root, project)?,
        },
        found,
    ))
}
