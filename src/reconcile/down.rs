//! Taking a project down: its containers (also those of job runs), the networks it declared
//! (when no other container uses them), optionally its volumes, and its generations.

use std::collections::BTreeSet;
use std::path::Path;

use super::{apply, generations, networks, observe, volumes, ReconcileError};

/// Removes `project`'s containers (services' and job runs') and unused networks (and its
/// volumes when `remove_volumes`), and forgets its generations. Returns whether anything
/// existed.
pub fn down(
    root: &Path,
    project: &str,
    remove_volumes: bool,
    log: &mut dyn FnMut(String),
) -> Result<bool, ReconcileError> {
    let found = observe::project_containers(root, project)?;
    let runs = observe::job_run_containers(root, project)?;
    let store = crate::runtime::container::ContainerStore::new(root);
    let mut volume_names = BTreeSet::new();
    let mut network_names = BTreeSet::new();
    for g in generations::list(root, project)? {
        if let Ok(p) = apply::load_recorded(&g) {
            network_names.extend(
                p.networks
                    .values()
                    .filter(|n| !n.external)
                    .map(|n| n.name.clone()),
            );
            volume_names.extend(
                p.volumes
                    .values()
                    .filter(|v| !v.external)
                    .map(|v| v.name.clone()),
            );
        }
    }
    for f in &found {
        log(format!("removing {}", f.record.name));
        crate::runtime::lifecycle::remove(&store, &f.record, true).map_err(|e| {
            ReconcileError::Container {
                service: f.actual.service.clone(),
                reason: format!("remove {}: {e:#}", f.record.name),
            }
        })?;
    }
    // Runs of the project's jobs still going (or kept by a scheduler that stopped).
    for run in &runs {
        // The scheduler removes a run once it ended: it may have gone meanwhile.
        let Ok(record) = store.load(&run.id) else {
            continue;
        };
        log(format!("removing {} (job run)", record.name));
        crate::runtime::lifecycle::remove(&store, &record, true).map_err(|e| {
            ReconcileError::Container {
                service: record
                    .labels
                    .get(super::translate::LABEL_SERVICE)
                    .cloned()
                    .unwrap_or_default(),
                reason: format!("remove {}: {e:#}", record.name),
            }
        })?;
    }
    for net in networks::remove_unused(root, &network_names)? {
        log(format!("removed network {net}"));
    }
    if remove_volumes {
        // Anonymous volumes of the project's containers are named <project>_<service>_<n>_<hash>.
        if let Ok(vs) = crate::volume::VolumeStore::open(root).and_then(|s| s.list()) {
            for v in vs {
                if v.labels
                    .get(super::translate::LABEL_PROJECT)
                    .map(String::as_str)
                    == Some(project)
                {
                    volume_names.insert(v.name);
                }
            }
        }
        for v in volumes::remove(root, &volume_names)? {
            log(format!("removed volume {v}"));
        }
    }
    generations::forget(root, project)?;
    Ok(!found.is_empty() || !runs.is_empty() || !network_names.is_empty())
}
