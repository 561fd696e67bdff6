//! A project's named volumes, through the volume store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::volume::VolumeStore;

use super::translate::LABEL_PROJECT;
use super::ReconcileError;

pub const LABEL_VOLUME: &str = "com.docker.compose.volume";

fn store(root: &Path) -> Result<VolumeStore, ReconcileError> {
    VolumeStore::open(root).map_err(|e| ReconcileError::Volume(e.to_string()))
}

/// Which of `wanted` exist.
pub fn existing(
    root: &Path,
    wanted: &BTreeSet<String>,
) -> Result<BTreeSet<String>, ReconcileError> {
    if wanted.is_empty() {
        return Ok(BTreeSet::new());
    }
    let s = store(root)?;
    let mut out = BTreeSet::new();
    for name in wanted {
        if s.get(name)
            .map_err(|e| ReconcileError::Volume(e.to_string()))?
            .is_some()
        {
            out.insert(name.clone());
        }
    }
    Ok(out)
}

/// Creates a volume of the project (idempotent).
pub fn create(
    root: &Path,
    project: &str,
    key: Option<&str>,
    name: &str,
) -> Result<(), ReconcileError> {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_PROJECT.to_string(), project.to_string());
    if let Some(key) = key {
        labels.insert(LABEL_VOLUME.to_string(), key.to_string());
    }
    store(root)?
        .create(name, labels)
        .map_err(|e| ReconcileError::Volume(format!("volume {name}: {e}")))?;
    Ok(())
}

/// Fills a fresh volume from the image's content at `target` (Docker's copy-up).
pub fn populate(
    root: &Path,
    name: &str,
    layers: &[String],
    target: &str,
) -> Result<bool, ReconcileError> {
    let s = store(root)?;
    let Some(volume) = s
        .get(name)
        .map_err(|e| ReconcileError::Volume(e.to_string()))?
    else {
        return Ok(false);
    };
    s.populate_from_image(&volume, root, layers, target)
        .map_err(|e| {
            ReconcileError::Volume(format!(
                "volume {name}: fill from the image at {target}: {e}"
            ))
        })
}

/// Where a volume's data is mounted from.
pub fn data_path(root: &Path, name: &str) -> PathBuf {
    root.join("volumes").join(name).join("_data")
}

/// Removes the project's volumes (for `down -v`); in-use ones are reported.
pub fn remove(root: &Path, names: &BTreeSet<String>) -> Result<Vec<String>, ReconcileError> {
    let s = store(root)?;
    let mut removed = Vec::new();
    for name in names {
        if s.get(name)
            .map_err(|e| ReconcileError::Volume(e.to_string()))?
            .is_none()
        {
            continue;
        }
        s.remove(name)
            .map_err(|e| ReconcileError::Volume(format!("volume {name}: {e}")))?;
        removed.push(name.clone());
    }
    Ok(removed)
}
