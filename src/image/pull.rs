//! The pull pipeline: resolve a reference to a platform-specific manifest, then stream every
//! layer from the registry through digest verification into the content store and, at the
//! same time, through decompression and diff-ID verification into its snapshot. Layers run
//! in parallel; memory is bounded by a small channel per layer.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::digest::Digest;
use super::manifest::{self, media_types, Descriptor, Manifest, Platform};
use super::metadata::ImageRecord;
use super::registry::{RegistryClient, RegistryError};
use super::store::{BlobWriter, IngestLock, StoreError};
use super::unpack::{Compression, WhiteoutMode};
use super::{layer, ImageError, ImageStore, Reference};

/// Largest config blob accepted (real ones are a few KiB).
pub const MAX_CONFIG_SIZE: u64 = manifest::MAX_CONFIG_SIZE as u64;
const CHANNEL_CHUNKS: usize = 4;

/// What the CLI shows while pulling. Implementations must be cheap: `bytes` is called per chunk.
pub trait PullProgress: Send + Sync {
    fn resolved(&self, _reference: &Reference, _digest: &Digest) {}
    fn layer_cached(&self, _digest: &Digest, _size: u64) {}
    fn layer_started(&self, _digest: &Digest, _size: u64) {}
    fn bytes(&self, _digest: &Digest, _n: u64) {}
    fn layer_done(&self, _digest: &Digest) {}
}

/// Progress that shows nothing (agent, tests).
pub struct NoProgress;
impl PullProgress for NoProgress {}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Platform,
    /// The user asked for `platform` (`--platform`): a single-platform image of another
    /// platform is then an error, as with `docker pull --platform`; otherwise a warning.
    pub platform_explicit: bool,
    pub max_concurrent_layers: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            platform_explicit: false,
            max_concurrent_layers: 4,
        }
    }
}

pub struct Puller {
    store: ImageStore,
    client: RegistryClient,
    progress: Arc<dyn PullProgress>,
}

impl Puller {
    pub fn new(store: ImageStore, client: RegistryClient, progress: Arc<dyn PullProgress>) -> Self {
        Puller {
            store,
            client,
            progress,
        }
    }

    /// Pulls `reference` (already normalized, with a tag or digest) and records it.
    pub async fn pull(
        &self,
        reference: &Reference,
        opts: &PullOptions,
    ) -> Result<ImageRecord, ImageError> {
        let store = self.store.clone();
        let _gc_guard = blocking("gc lock", move || store.gc_shared()).await?;

        let fetched = self
            .client
            .fetch_manifest(reference, media_types::ACCEPT)
            .await?;
        let top = manifest::parse_manifest(&fetched.bytes, fetched.content_type.as_deref())
            .map_err(|e| ImageError::Manifest {
                reference: reference.to_string(),
                source: e,
            })?;
        self.store
            .content
            .write_bytes(&fetched.digest, &fetched.bytes)?;
        let repo_digest = fetched.digest.clone();
        self.progress.resolved(reference, &repo_digest);

        let (image, manifest_digest, manifest_media_type) = match top {
            Manifest::Image(m) => {
                let mt = m
                    .media_type
                    .clone()
                    .or(fetched.content_type.clone())
                    .unwrap_or_else(|| media_types::OCI_MANIFEST.to_string());
                (m, fetched.digest, mt)
            }
            Manifest::Index(index) => {
                let desc = manifest::select_platform(&index, &opts.platform).map_err(|e| {
                    ImageError::Manifest {
                        reference: reference.to_string(),
                        source: e,
                    }
                })?;
                let pinned = reference.clone().with_digest(desc.digest.clone());
                let f = self
                    .client
                    .fetch_manifest(&pinned, media_types::ACCEPT)
                    .await?;
                let ct = f
                    .content_type
                    .clone()
                    .unwrap_or_else(|| desc.media_type.clone());
                let parsed = manifest::parse_manifest(&f.bytes, Some(&ct)).map_err(|e| {
                    ImageError::Manifest {
                        reference: pinned.to_string(),
                        source: e,
                    }
                })?;
                let Manifest::Image(m) = parsed else {
                    return Err(ImageError::NestedIndex {
                        reference: pinned.to_string(),
                    });
                };
                self.store.content.write_bytes(&f.digest, &f.bytes)?;
                let mt = m.media_type.clone().unwrap_or(ct);
                (m, f.digest, mt)
            }
        };

        let config_bytes = self.ensure_config(reference, &image.config).await?;
        let config = manifest::parse_config(&config_bytes).map_err(|e| ImageError::Manifest {
            reference: reference.to_string(),
            source: e,
        })?;
        let image_platform = config.platform();
        if !image_platform.os.is_empty() && !opts.platform.matches(&image_platform) {
            if opts.platform_explicit {
                return Err(ImageError::Invalid(format!(
                    "image {reference} is for {image_platform}, not the requested {}",
                    opts.platform
                )));
            }
            tracing::warn!(
                image = %reference,
                "image platform {image_platform} does not match this host ({})",
                opts.platform
            );
        }
        let diff_ids = config.rootfs.diff_ids.clone();
        if diff_ids.len() != image.layers.len() {
            return Err(ImageError::LayerCountMismatch {
                reference: reference.to_string(),
                layers: image.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }

        let jobs = image.layers.iter().cloned().zip(diff_ids.iter().cloned());
        stream::iter(jobs.map(|(desc, diff_id)| self.ensure_layer(reference, desc, diff_id)))
            .buffer_unordered(opts.max_concurrent_layers.max(1))
            .try_collect::<Vec<()>>()
            .await?;

        let record = ImageRecord::new(
            reference.to_string(),
            repo_digest,
            manifest_digest,
            manifest_media_type,
            &image.config,
            &image.layers,
            &diff_ids,
            image_platform,
        );
        self.store.db.put(record.clone())?;
        Ok(record)
    }

    /// Waits for the cross-process ingest lock of one blob off the async workers.
    async fn lock_blob(&self, digest: &Digest) -> Result<IngestLock, ImageError> {
        let content = self.store.content.clone();
        let digest = digest.clone();
        blocking("lock", move || Ok(content.lock(&digest)?)).await
    }

    async fn ensure_config(
        &self,
        reference: &Reference,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, ImageError> {
        if desc.size > MAX_CONFIG_SIZE {
            return Err(StoreError::TooLarge {
                digest: desc.digest.to_string(),
                limit: MAX_CONFIG_SIZE,
            }
            .into());
        }
        if !self.store.content.contains(&desc.digest) {
            // Same single-flight rule as layers: a concurrent pull of this image waits for
            // the lock and then finds the config stored.
            let _lock = self.lock_blob(&desc.digest).await?;
            if !self.store.content.contains(&desc.digest) {
                let bytes = self
                    .client
                    .fetch_blob_bytes(reference, &desc.digest, desc.size)
                    .await?;
                self.store.content.write_bytes(&desc.digest, &bytes)?;
            }
        }
        Ok(self.store.content.read(&desc.digest, MAX_CONFIG_SIZE)?)
    }

    async fn ensure_layer(
        &self,
        reference: &Reference,
        desc: Descriptor,
        diff_id: Digest,
    ) -> Result<(), ImageError> {
        let store = &self.store;
        if store.content.contains(&desc.digest) && store.snapshots.contains(&diff_id) {
            self.progress.layer_cached(&desc.digest, desc.size);
            return Ok(());
        }
        let compression = layer::compression(&desc.digest, &desc.media_type)?;
        // One process at a time per blob; whoever comes second finds it done.
        let _lock = self.lock_blob(&desc.digest).await?;
        if store.content.contains(&desc.digest) && store.snapshots.contains(&diff_id) {
            self.progress.layer_cached(&desc.digest, desc.size);
            return Ok(());
        }
        self.progress.layer_started(&desc.digest, desc.size);

        if store.content.contains(&desc.digest) {
            // Blob present, snapshot missing (e.g. pruned or crashed mid-unpack): no network.
            let store = store.clone();
            let (desc2, diff2) = (desc.clone(), diff_id.clone());
            blocking("unpack", move || {
                let f = store.content.open_blob(&desc2.digest)?;
                store.unpack_snapshot(io::BufReader::new(f), &desc2, compression, &diff2)
            })
            .await?;
            self.progress.layer_done(&desc.digest);
            return Ok(());
        }

        let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let writer = store
            .content
            .writer(Some(desc.digest.clone()), Some(desc.size))?;
        let worker = {
            let store = store.clone();
            let desc = desc.clone();
            let diff_id = diff_id.clone();
            let progress = self.progress.clone();
            tokio::task::spawn_blocking(move || {
                let reader = ChannelReader {
                    rx,
                    buf: Bytes::new(),
                    progress,
                    digest: desc.digest.clone(),
                };
                receive_layer(&store, reader, writer, &desc, compression, &diff_id)
            })
        };
        let fetched = self
            .client
            .fetch_blob(reference, &desc.digest, desc.size, 0, tx)
            .await;
        let unpacked = worker
            .await
            .map_err(|e| ImageError::Internal(format!("unpack task: {e}")))?;
        // The worker's verdict (digest mismatch, breakout) explains more than the fetch's
        // "receiver closed"; a fetch failure explains more than the worker's short stream.
        match (fetched, unpacked) {
            (Ok(_), Ok(())) => {}
            (_, Err(e @ ImageError::Store(StoreError::DigestMismatch { .. })))
            | (_, Err(e @ ImageError::Unpack { .. }))
            | (_, Err(e @ ImageError::DiffIdMismatch { .. })) => return Err(e),
            (Err(e), _) => return Err(e.into()),
            (Ok(_), Err(e)) => return Err(e),
        }
        self.progress.layer_done(&desc.digest);
        Ok(())
    }
}

/// Runs blocking work (a flock wait, an unpack) on tokio's blocking pool.
async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, ImageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ImageError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Internal(format!("{what} task: {e}")))?
}

/// Runs on a blocking thread: tees the compressed stream into the blob writer while
/// unpacking it, then commits the blob and the snapshot only if both digests check out.
fn receive_layer(
    store: &ImageStore,
    reader: ChannelReader,
    writer: BlobWriter,
    desc: &Descriptor,
    compression: Compression,
    diff_id: &Digest,
) -> Result<(), ImageError> {
    let mut tee = TeeReader {
        inner: reader,
        writer,
        error: None,
    };
    let need_snapshot = !store.snapshots.contains(diff_id);
    let unpacked = if need_snapshot {
        store
            .unpack_into_prepared(&mut tee, desc, compression, diff_id)
            .map(Some)
    } else {
        Ok(None)
    };
    // Whatever happened, read the rest so the blob digest can be judged: a tampered blob
    // is reported as such, not as the gzip error it caused. The channel cannot fail (a cut
    // fetch just ends it), so only the blob writer can stop this copy, and it keeps its error.
    let _ = io::copy(&mut tee, &mut io::sink());
    let TeeReader { writer, error, .. } = tee;
    if let Some(e) = error {
        return Err(StoreError::Io {
            path: store.content.blob_path(&desc.digest),
            source: e,
        }
        .into());
    }
    // The blob's own verdict first (short stream, digest mismatch), then the unpack's.
    writer.commit()?;
    if let Some(prepared) = unpacked? {
        prepared.commit()?;
    }
    Ok(())
}

impl ImageStore {
    /// Unpacks a compressed layer stream into a prepared snapshot and checks its diff ID.
    pub(crate) fn unpack_into_prepared<R: Read + Send>(
        &self,
        reader: R,
        desc: &Descriptor,
        compression: Compression,
        diff_id: &Digest,
    ) -> Result<super::snapshot::PreparedSnapshot, ImageError> {
        let prepared = self.snapshots.prepare(diff_id)?;
        layer::apply_verified(
            reader,
            compression,
            &desc.digest,
            diff_id,
            prepared.path(),
            WhiteoutMode::Overlay,
        )?;
        Ok(prepared)
    }

    /// Unpacks a layer from any reader (a stored blob) into its committed snapshot.
    pub fn unpack_snapshot<R: Read + Send>(
        &self,
        reader: R,
        desc: &Descriptor,
        compression: Compression,
        diff_id: &Digest,
    ) -> Result<(), ImageError> {
        if self.snapshots.contains(diff_id) {
            return Ok(());
        }
        let prepared = self.unpack_into_prepared(reader, desc, compression, diff_id)?;
        prepared.commit()?;
        Ok(())
    }
}

/// Adapts the fetch task's channel to a blocking `Read` for the unpacker.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    buf: Bytes,
    progress: Arc<dyn PullProgress>,
    digest: Digest,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.progress.bytes(&self.digest, chunk.len() as u64);
                    self.buf = chunk;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

/// Copies everything read into the blob writer. A write error (disk full, blob longer than
/// its descriptor) is kept and ends the stream.
struct TeeReader<R> {
    inner: R,
    writer: BlobWriter,
    error: Option<io::Error>,
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        let n = self.inner.read(out)?;
        if let Err(e) = self.writer.write_all(&out[..n]) {
            let msg = e.to_string();
            self.error = Some(e);
            return Err(io::Error::other(msg));
        }
        Ok(n)
    }
}

impl From<RegistryError> for ImageError {
    fn from(e: RegistryError) -> Self {
        ImageError::Registry(Box::new(e))
    }
}
