//! What runs for a project: its containers (found by their Compose labels), with their state,
//! config hash and the inputs they were created from; plus the networks and volumes that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::plan::{ActualContainer, ActualState, RunState, ServiceInputs};
use crate::runtime::container::{
    observe, ContainerPaths, ContainerRecord, ContainerStore, Observed,
};
use crate::runtime::protocol::Status;

use super::translate::{LABEL_CONFIG_HASH, LABEL_NUMBER, LABEL_PROJECT, LABEL_SERVICE};
use super::ReconcileError;

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

/// The containers of `project`, observed.
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
        if record.labels.get(LABEL_PROJECT).map(String::as_str) != Some(project) {
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

/// The actual state of `project` for the planner.
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
            jobs: Default::default(),
        },
        found,
    ))
}
