//! From an image reference to a verified, unpacked, shareable root filesystem on disk.
//!
//! Concepts, joined by small value types (`Digest`, `Reference`, `Descriptor`):
//! `store` (blobs by digest), `snapshot` (one unpacked directory per layer diff ID),
//! `metadata` (which names point at which manifests), `registry` (the network),
//! `unpack` (the safe tar writer), and the operations `pull`, `gc`, `export`, `import`.

pub mod digest;
pub mod export;
pub mod gc;
pub mod import;
pub mod layer;
pub mod manifest;
pub mod metadata;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub use digest::Digest;
pub use reference::Reference;

use crate::error::{Categorized, Category};

/// Errors of image operations (pull, import, export, prune), naming the image, layer or blob.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Registry(Box<registry::RegistryError>),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    #[error("image {reference}: {source}")]
    Manifest {
        reference: String,
        source: manifest::ManifestError,
    },
    #[error("image {reference}: an index may not point at another index here")]
    NestedIndex { reference: String },
    #[error(
        "image {reference}: manifest has {layers} layers but its config lists {diff_ids} diff IDs"
    )]
    LayerCountMismatch {
        reference: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("layer {digest}: unsupported media type {media_type:?}")]
    UnsupportedLayer { digest: Digest, media_type: String },
    /// The unpacker's message already names the layer and the entry.
    #[error("{source}")]
    Unpack {
        layer: Digest,
        source: unpack::UnpackError,
    },
    #[error("layer {layer}: uncompressed content is {actual}, but the image config says {expected} (diff ID mismatch)")]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {layer}: reading the layer stream: {source}")]
    LayerRead {
        layer: Digest,
        source: std::io::Error,
    },
    #[error("image {0} not found (pull or import it first)")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Categorized for ImageError {
    fn category(&self) -> Category {
        match self {
            ImageError::Registry(e) => e.category(),
            ImageError::Store(e) => e.category(),
            ImageError::Snapshot(e) => e.category(),
            ImageError::Metadata(e) => e.category(),
            ImageError::NotFound(_) => Category::NotFound,
            ImageError::Conflict(_) => Category::Conflict,
            ImageError::Io { .. } | ImageError::Internal(_) => Category::Internal,
            ImageError::Manifest { .. }
            | ImageError::NestedIndex { .. }
            | ImageError::LayerCountMismatch { .. }
            | ImageError::UnsupportedLayer { .. }
            | ImageError::Unpack { .. }
            | ImageError::LayerRead { .. }
            | ImageError::DiffIdMismatch { .. }
            | ImageError::Invalid(_) => Category::Invalid,
        }
    }
}

/// Everything image-related under one `--root`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    pub root: PathBuf,
    pub content: store::ContentStore,
    pub snapshots: snapshot::SnapshotStore,
    pub db: metadata::ImageDb,
}

/// Held by pulls and imports (shared) and by garbage collection (exclusive), so prune never
/// deletes a blob that a running pull has written but not yet recorded.
pub struct GcGuard {
    _lock: Flock<File>,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        Ok(ImageStore {
            root: root.to_path_buf(),
            content: store::ContentStore::open(root)?,
            snapshots: snapshot::SnapshotStore::open(root)?,
            db: metadata::ImageDb::open(root)?,
        })
    }

    fn gc_lock(&self, arg: FlockArg) -> Result<GcGuard, ImageError> {
        let p = self.root.join("images").join("gc.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|source| ImageError::Io {
                path: p.clone(),
                source,
            })?;
        let lock = Flock::lock(f, arg).map_err(|(_, e)| ImageError::Io {
            path: p,
            source: e.into(),
        })?;
        Ok(GcGuard { _lock: lock })
    }

    pub fn gc_shared(&self) -> Result<GcGuard, ImageError> {
        self.gc_lock(FlockArg::LockShared)
    }

    pub fn gc_exclusive(&self) -> Result<GcGuard, ImageError> {
        self.gc_lock(FlockArg::LockExclusive)
    }

    /// Finds an image by reference (normalized like `docker`), by full or short ID (config
    /// digest), or by repo/manifest digest.
    pub fn find(&self, query: &str) -> Result<metadata::ImageRecord, ImageError> {
        let records = self.db.list()?;
        if let Ok(r) = Reference::parse_pullable(query) {
            let key = r.to_string();
            if let Some(rec) = records.iter().find(|rec| rec.reference == key) {
                return Ok(rec.clone());
            }
            if let Some(d) = r.digest() {
                if let Some(rec) = records
                    .iter()
                    .find(|rec| &rec.repo_digest == d || &rec.manifest_digest == d)
                {
                    return Ok(rec.clone());
                }
            }
        }
        let id = query.strip_prefix("sha256:").unwrap_or(query);
        if id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<_> = records
                .iter()
                .filter(|rec| rec.config_digest.encoded().starts_with(id))
                .collect();
            if let Some(first) = matches.first() {
                if matches
                    .iter()
                    .all(|m| m.config_digest == first.config_digest)
                {
                    return Ok((*first).clone());
                }
                return Err(ImageError::Invalid(format!(
                    "image ID {query} is ambiguous"
                )));
            }
        }
        Err(ImageError::NotFound(query.to_string()))
    }
}
