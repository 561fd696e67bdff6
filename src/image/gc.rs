//! Garbage collection: blobs and snapshots that no image record references are removed.
//! Runs under the exclusive gc lock, so it never races a pull or import in progress.

use std::collections::BTreeSet;

use super::metadata::ImageRecord;
use super::{Digest, ImageError, ImageStore};
use crate::runtime::container::{ContainerRecord, ContainerStore};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    pub blobs_removed: Vec<Digest>,
    pub snapshots_removed: Vec<Digest>,
    pub bytes_freed: u64,
    pub partials_removed: u64,
}

fn referenced(records: &[ImageRecord]) -> (BTreeSet<Digest>, BTreeSet<Digest>) {
    let mut blobs = BTreeSet::new();
    let mut snapshots = BTreeSet::new();
    for r in records {
        blobs.insert(r.repo_digest.clone());
        blobs.insert(r.manifest_digest.clone());
        blobs.insert(r.config_digest.clone());
        for l in &r.layers {
            blobs.insert(l.digest.clone());
            snapshots.insert(l.diff_id.clone());
        }
    }
    (blobs, snapshots)
}

/// What containers (running or not) still use: their image's config and layer snapshots.
/// They are gc roots even when no image record names them any more (the tag moved on).
fn used_by_containers(store: &ImageStore) -> Result<Vec<ContainerRecord>, ImageError> {
    ContainerStore::new(&store.root)
        .list()
        .map_err(|e| ImageError::Internal(format!("read the containers that use images: {e}")))
}

fn add_container_roots(
    containers: &[ContainerRecord],
    blobs: &mut BTreeSet<Digest>,
    snapshots: &mut BTreeSet<Digest>,
) {
    for c in containers {
        if let Ok(d) = Digest::parse(&c.image_id) {
            blobs.insert(d);
        }
        snapshots.extend(c.layers.iter().filter_map(|l| Digest::parse(l).ok()));
    }
}

/// `image prune`: removes every blob and snapshot that no image or container references, and
/// partial downloads left by dead processes.
pub fn prune(store: &ImageStore) -> Result<PruneReport, ImageError> {
    let _guard = store.gc_exclusive()?;
    let records = store.db.list()?;
    let (mut keep_blobs, mut keep_snaps) = referenced(&records);
    add_container_roots(
        &used_by_containers(store)?,
        &mut keep_blobs,
        &mut keep_snaps,
    );
    let mut report = PruneReport::default();
    for (d, size) in store.content.list()? {
        if !keep_blobs.contains(&d) {
            store.content.delete(&d)?;
            report.bytes_freed += size;
            report.blobs_removed.push(d);
        }
    }
    for d in store.snapshots.list()? {
        if !keep_snaps.contains(&d) {
            store.snapshots.remove(&d)?;
            report.snapshots_removed.push(d);
        }
    }
    report.partials_removed = store.content.clean_ingest()? + store.snapshots.clean_tmp()?;
    Ok(report)
}

/// `rmi`: removes the named records, then the content only they referenced.
pub fn remove_images(
    store: &ImageStore,
    references: &[String],
) -> Result<(Vec<ImageRecord>, PruneReport), ImageError> {
    let _guard = store.gc_exclusive()?;
    // Like `docker rmi`: an image a container uses (running or stopped) stays.
    let containers = used_by_containers(store)?;
    for reference in references {
        let Ok(image) = store.find(reference) else {
            continue;
        };
        let id = image.config_digest.to_string();
        if let Some(c) = containers.iter().find(|c| c.image_id == id) {
            return Err(ImageError::Conflict(format!(
                "image {reference} is used by container {} ({}): remove the container first",
                c.name,
                &c.id[..12]
            )));
        }
    }
    let removed = store.db.remove(references)?;
    let (mut keep_blobs, mut keep_snaps) = referenced(&store.db.list()?);
    add_container_roots(&containers, &mut keep_blobs, &mut keep_snaps);
    let (cand_blobs, cand_snaps) = referenced(&removed);
    let mut report = PruneReport::default();
    for d in cand_blobs.difference(&keep_blobs) {
        if let Some(size) = store.content.size(d) {
            store.content.delete(d)?;
            report.bytes_freed += size;
            report.blobs_removed.push(d.clone());
        }
    }
    for d in cand_snaps.difference(&keep_snaps) {
        if store.snapshots.contains(d) {
            store.snapshots.remove(d)?;
            report.snapshots_removed.push(d.clone());
        }
    }
    Ok((removed, report))
}
