//! Image records: which references name which manifest, config and layers. One JSON file,
//! rewritten atomically under a lock, so concurrent CLI commands and the agent agree.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::manifest::{Descriptor, Platform};
use crate::error::{Categorized, Category};
use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("image records {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("image records {path} are corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl Categorized for MetadataError {
    fn category(&self) -> Category {
        Category::Internal
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// One named image: what `dockmaster images` lists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// Normalized reference, e.g. `docker.io/library/nginx:latest`.
    pub reference: String,
    /// Digest of what the reference resolved to (an index or a manifest): the repo digest.
    pub repo_digest: Digest,
    /// The platform-specific image manifest.
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub config_digest: Digest,
    pub platform: Platform,
    pub layers: Vec<LayerRecord>,
    /// Seconds since the epoch when this record was written.
    pub created: u64,
}

impl ImageRecord {
    /// The record of an image whose manifest, config and layers are all stored, created now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reference: String,
        repo_digest: Digest,
        manifest_digest: Digest,
        manifest_media_type: String,
        config: &Descriptor,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        platform: Platform,
    ) -> Self {
        ImageRecord {
            reference,
            repo_digest,
            manifest_digest,
            manifest_media_type,
            config_digest: config.digest.clone(),
            platform,
            layers: layers
                .iter()
                .zip(diff_ids)
                .map(|(l, d)| LayerRecord {
                    digest: l.digest.clone(),
                    diff_id: d.clone(),
                    size: l.size,
                    media_type: l.media_type.clone(),
                })
                .collect(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Compressed size of all layers plus config.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
    /// Docker-style image ID: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordFile {
    images: BTreeMap<String, ImageRecord>,
}

#[derive(Debug, Clone)]
pub struct ImageDb {
    path: PathBuf,
    lock_path: PathBuf,
}

impl ImageDb {
    pub fn open(root: &Path) -> Result<Self, MetadataError> {
        let dir = root.join("images");
        std::fs::create_dir_all(&dir).map_err(|source| MetadataError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(ImageDb {
            path: dir.join("images.json"),
            lock_path: dir.join("images.lock"),
        })
    }

    fn lock(&self, exclusive: bool) -> Result<Flock<File>, MetadataError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|source| MetadataError::Io {
                path: self.lock_path.clone(),
                source,
            })?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(f, arg).map_err(|(_, e)| MetadataError::Io {
            path: self.lock_path.clone(),
            source: e.into(),
        })
    }

    fn load(&self) -> Result<RecordFile, MetadataError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| MetadataError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RecordFile::default()),
            Err(source) => Err(MetadataError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn store(&self, f: &RecordFile) -> Result<(), MetadataError> {
        let bytes = serde_json::to_vec_pretty(f).expect("records serialize");
        fsutil::write_atomic(&self.path, &bytes).map_err(|source| MetadataError::Io {
            path: self.path.clone(),
            source,
        })
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, MetadataError> {
        let _l = self.lock(false)?;
        Ok(self.load()?.images.into_values().collect())
    }

    pub fn get(&self, reference: &str) -> Result<Option<ImageRecord>, MetadataError> {
        let _l = self.lock(false)?;
        Ok(self.load()?.images.remove(reference))
    }

    pub fn put(&self, rec: ImageRecord) -> Result<(), MetadataError> {
        let _l = self.lock(true)?;
        let mut f = self.load()?;
        f.images.insert(rec.reference.clone(), rec);
        self.store(&f)
    }

    /// Removes the named records; returns those removed.
    pub fn remove(&self, references: &[String]) -> Result<Vec<ImageRecord>, MetadataError> {
        let _l = self.lock(true)?;
        let mut f = self.load()?;
        let removed: Vec<_> = references
            .iter()
            .filter_map(|r| f.images.remove(r))
            .collect();
        if !removed.is_empty() {
            self.store(&f)?;
        }
        Ok(removed)
    }
}
