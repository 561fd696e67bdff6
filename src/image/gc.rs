//! Garbage collection: blobs and snapshots that no image record references are removed.
//! Runs under the exclusive gc lock, so it never races a pull or import in progress.

use std::collections::BTreeSet;

use super::metadata::ImageRecord;
use super::{Digest, ImageError, ImageStore};

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

/// `image prune`: removes every blob and snapshot that no image references, and partial
/// downloads left by dead processes.
pub fn prune(store: &ImageStore) -> Result<PruneReport, ImageError> {
    let _guard = store.gc_exclusive()?;
    let records = store.db.list()?;
    let (keep_blobs, keep_snaps) = referenced(&records);
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
    let removed = store.db.remove(references)?;
    let (keep_blobs, keep_snaps) = referenced(&store.db.list()?);
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
