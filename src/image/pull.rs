//! The pull pipeline: resolve a reference to a platform-specific manifest, then stream every
//! layer from the registry through digest verification into the content store and, at the
//! same time, through decompression and diff-ID verification into its snapshot. Layers run
//! in parallel; memory is bounded by a small channel per layer.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::digest::{Algorithm, Digest, HashingReader};
use super::manifest::{self, media_types, Descriptor, ImageManifest, Manifest, Platform};
use super::metadata::{ImageRecord, LayerRecord};
use super::registry::{RegistryClient, RegistryError};
use super::store::{BlobWriter, StoreError};
use super::unpack::{self, ApplyOptions, Compression, WhiteoutMode};
use super::{ImageError, ImageStore, Reference};

/// Largest config blob accepted (real ones are a few KiB).
pub const MAX_CONFIG_SIZE: u64 = 32 * 1024 * 1024;
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
        let _gc_guard = tokio::task::spawn_blocking(move || store.gc_shared())
            .await
            .map_err(|e| ImageError::Internal(format!("gc lock task: {e}")))??;

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

        let record = build_record(
            reference,
            repo_digest,
            manifest_digest,
            manifest_media_type,
            &image,
            &diff_ids,
            Platform {
                os: config.os.clone(),
                architecture: config.architecture.clone(),
                variant: config.variant.clone(),
                ..Platform::default()
            },
        );
        self.store.db.put(record.clone())?;
        Ok(record)
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
            let content = self.store.content.clone();
            let d = desc.digest.clone();
            let _lock = tokio::task::spawn_blocking(move || content.lock(&d))
                .await
                .map_err(|e| ImageError::Internal(format!("lock task: {e}")))??;
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
        let compression = Compression::from_media_type(&desc.media_type).ok_or_else(|| {
            ImageError::UnsupportedLayer {
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            }
        })?;
        // One process at a time per blob; whoever comes second finds it done.
        let content = store.content.clone();
        let d = desc.digest.clone();
        let _lock = tokio::task::spawn_blocking(move || content.lock(&d))
            .await
            .map_err(|e| ImageError::Internal(format!("lock task: {e}")))??;
        if store.content.contains(&desc.digest) && store.snapshots.contains(&diff_id) {
            self.progress.layer_cached(&desc.digest, desc.size);
            return Ok(());
        }
        self.progress.layer_started(&desc.digest, desc.size);

        if store.content.contains(&desc.digest) {
            // Blob present, snapshot missing (e.g. pruned or crashed mid-unpack): no network.
            let store = store.clone();
            let (desc2, diff2) = (desc.clone(), diff_id.clone());
            tokio::task::spawn_blocking(move || {
                let f = store.content.open_blob(&desc2.digest)?;
                store.unpack_snapshot(io::BufReader::new(f), &desc2, compression, &diff2)
            })
            .await
            .map_err(|e| ImageError::Internal(format!("unpack task: {e}")))??;
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

fn build_record(
    reference: &Reference,
    repo_digest: Digest,
    manifest_digest: Digest,
    manifest_media_type: String,
    image: &ImageManifest,
    diff_ids: &[Digest],
    platform: Platform,
) -> ImageRecord {
    ImageRecord {
        reference: reference.to_string(),
        repo_digest,
        manifest_digest,
        manifest_media_type,
        config_digest: image.config.digest.clone(),
        platform,
        layers: image
            .layers
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
    // is reported as such, not as the gzip error it caused.
    let drained = io::copy(&mut tee, &mut io::sink());
    let TeeReader { writer, error, .. } = tee;
    if let Some(e) = error {
        return Err(StoreError::Io {
            path: store.content.blob_path(&desc.digest),
            source: e,
        }
        .into());
    }
    let blob_ok = if drained.is_ok() {
        writer.commit().map(|_| ())
    } else {
        // Stream cut: let the fetch error explain.
        drop(writer);
        return Err(ImageError::Interrupted {
            digest: desc.digest.clone(),
        });
    };
    match (blob_ok, unpacked) {
        (Err(e), _) => Err(e.into()),
        (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(Some(prepared))) => {
            prepared.commit()?;
            Ok(())
        }
        (Ok(()), Ok(None)) => Ok(()),
    }
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
        let layer_name = desc.digest.to_string();
        let unpack_err = |e: unpack::UnpackError| ImageError::Unpack {
            layer: desc.digest.clone(),
            source: e,
        };
        let decompressed = unpack::decompress(reader, compression).map_err(unpack_err)?;
        let mut hashing = HashingReader::new(decompressed, diff_id.algorithm());
        unpack::apply_layer(
            &mut hashing,
            prepared.path(),
            &ApplyOptions {
                layer: &layer_name,
                whiteouts: WhiteoutMode::Overlay,
            },
        )
        .map_err(unpack_err)?;
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| ImageError::LayerRead {
            layer: desc.digest.clone(),
            source: e,
        })?;
        let (_, actual, _) = hashing.finish();
        if actual != *diff_id {
            return Err(ImageError::DiffIdMismatch {
                layer: desc.digest.clone(),
                expected: diff_id.clone(),
                actual,
            });
        }
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

/// The algorithm used for new content.
pub const CANONICAL: Algorithm = Algorithm::Sha256;
