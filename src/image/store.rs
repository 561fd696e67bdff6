//! The content store: blobs by digest under `<root>/content`, every byte verified while it
//! streams, written atomically (temp, fsync, rename) so a crash at any moment leaves only
//! complete, verified blobs behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use super::digest::{Algorithm, Digest, Hasher};
use crate::error::{Categorized, Category};
use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("content store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("blob {digest} is not in the content store")]
    NotFound { digest: Digest },
    #[error("blob {expected} failed verification: got {actual} ({size} bytes){detail}")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
        detail: String,
    },
    #[error("blob {digest} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is larger than the {limit} bytes allowed here")]
    TooLarge { digest: String, limit: u64 },
}

impl Categorized for StoreError {
    fn category(&self) -> Category {
        match self {
            StoreError::Io { .. } => Category::Internal,
            StoreError::NotFound { .. } => Category::NotFound,
            // A mismatch from the network may be a cut stream or a bad proxy: retryable.
            StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => {
                Category::Transient
            }
            StoreError::TooLarge { .. } => Category::Invalid,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

/// An exclusive lock on one digest's ingest, held across processes (flock), so the same
/// blob pulled twice at once is fetched once: the second waiter finds it committed.
pub struct IngestLock {
    _lock: Flock<File>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Opens (creating if needed) the store under `<root>/content`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let dir = root.join("content");
        for sub in ["blobs/sha256", "ingest"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(ContentStore { dir })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.encoded())
    }

    /// Size of a committed blob, if present.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d)).ok().map(|m| m.len())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.size(d).is_some()
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound { digest: d.clone() }
            } else {
                StoreError::Io { path: p, source: e }
            }
        })
    }

    /// Reads a small blob (manifest, config) whole, verifying it again: the bytes a caller
    /// acts on are always the bytes the digest names.
    pub fn read(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let f = self.open_blob(d)?;
        let mut buf = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(io_err(&self.blob_path(d)))?;
        if buf.len() as u64 > limit {
            return Err(StoreError::TooLarge {
                digest: d.to_string(),
                limit,
            });
        }
        if !d.verifies(&buf) {
            let actual = Digest::sha256_of(&buf);
            return Err(StoreError::DigestMismatch {
                expected: d.clone(),
                actual,
                size: buf.len() as u64,
                detail: " (store corrupted on disk)".into(),
            });
        }
        Ok(buf)
    }

    /// Stores a small blob already in memory after checking it.
    pub fn write_bytes(&self, d: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if self.contains(d) {
            return Ok(());
        }
        let mut w = self.writer(Some(d.clone()), Some(bytes.len() as u64))?;
        w.write_all(bytes).map_err(io_err(&self.blob_path(d)))?;
        w.commit().map(|_| ())
    }

    /// Takes the cross-process ingest lock for `d` (blocking).
    pub fn lock(&self, d: &Digest) -> Result<IngestLock, StoreError> {
        let p = self
            .dir
            .join("ingest")
            .join(format!("{}.lock", d.encoded()));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        let lock =
            Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, errno)| StoreError::Io {
                path: p.clone(),
                source: io::Error::from(errno),
            })?;
        Ok(IngestLock { _lock: lock })
    }

    /// A writer for a new blob. With `expected`, the bytes must hash to it and the blob is
    /// committed under that name; without, it is named by what was written (imports).
    pub fn writer(
        &self,
        expected: Option<Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobWriter, StoreError> {
        let tmp = self.dir.join("ingest").join(format!(
            "{}-{}-{}.partial",
            expected.as_ref().map_or("unknown", |d| d.encoded()),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let algorithm = expected
            .as_ref()
            .map_or(Algorithm::Sha256, |d| d.algorithm());
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            hasher: Some(Hasher::new(algorithm)),
            written: 0,
            expected,
            expected_size,
            tmp,
        })
    }

    pub fn delete(&self, d: &Digest) -> Result<(), StoreError> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io { path: p, source: e }),
        }
    }

    /// Every committed blob with its size.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let mut out = Vec::new();
        let blobs = self.dir.join("blobs");
        for alg in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let alg = alg.map_err(io_err(&blobs))?;
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            for e in fs::read_dir(alg.path()).map_err(io_err(&alg.path()))? {
                let e = e.map_err(io_err(&alg.path()))?;
                let name = format!("{alg_name}:{}", e.file_name().to_string_lossy());
                if let (Ok(d), Ok(m)) = (Digest::parse(&name), e.metadata()) {
                    out.push((d, m.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes partial downloads left by processes that died (their lock is free).
    pub fn clean_ingest(&self) -> Result<u64, StoreError> {
        let dir = self.dir.join("ingest");
        let mut removed = 0;
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".partial") else {
                continue;
            };
            // `<digest-or-unknown>-<pid>-<seq>`: a partial of a live process is kept.
            let alive = fsutil::temp_owner_alive(stem);
            if !alive && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Streams a blob into the store: hashes and counts every byte, refuses to grow past the
/// expected size, and only `commit` makes it visible, after fsync and verification.
pub struct BlobWriter {
    store: ContentStore,
    file: Option<io::BufWriter<File>>,
    hasher: Option<Hasher>,
    written: u64,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    tmp: PathBuf,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies digest and size, fsyncs, and renames into place. On mismatch the partial
    /// file is removed and nothing is committed.
    pub fn commit(mut self) -> Result<(Digest, u64), StoreError> {
        let mut file = self.file.take().expect("commit once");
        let actual = self.hasher.take().expect("commit once").finish();
        let size = self.written;
        let result = (|| {
            if let Some(want) = self.expected_size {
                if want != size {
                    return Err(StoreError::SizeMismatch {
                        digest: self.expected.clone().unwrap_or_else(|| actual.clone()),
                        expected: want,
                        actual: size,
                    });
                }
            }
            if let Some(want) = &self.expected {
                if *want != actual {
                    return Err(StoreError::DigestMismatch {
                        expected: want.clone(),
                        actual: actual.clone(),
                        size,
                        detail: String::new(),
                    });
                }
            }
            file.flush().map_err(io_err(&self.tmp))?;
            let f = file.into_inner().map_err(|e| StoreError::Io {
                path: self.tmp.clone(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(io_err(&self.tmp))?;
            drop(f);
            let dest = self.store.blob_path(&actual);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            // Blobs are immutable: read-only for everyone but root.
            let _ = fs::set_permissions(
                &self.tmp,
                std::os::unix::fs::PermissionsExt::from_mode(0o444),
            );
            fs::rename(&self.tmp, &dest).map_err(io_err(&dest))?;
            fsutil::sync_dir(dest.parent().unwrap_or(Path::new("/"))).map_err(io_err(&dest))?;
            Ok((actual.clone(), size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.expected_size {
            if self.written + buf.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} is longer than its descriptor's {limit} bytes",
                        self.expected
                            .as_ref()
                            .map_or_else(|| "(unknown)".to_string(), |d| d.to_string())
                    ),
                ));
            }
        }
        let f = self.file.as_mut().expect("write after commit");
        let n = f.write(buf)?;
        self.hasher
            .as_mut()
            .expect("write after commit")
            .update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Not committed: the partial is garbage.
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_verified_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let good = Digest::sha256_of(b"hello");
        let mut w = store.writer(Some(good.clone()), Some(5)).unwrap();
        w.write_all(b"hello").unwrap();
        w.commit().unwrap();
        assert_eq!(store.read(&good, 100).unwrap(), b"hello");

        // tampered: same length, other bytes
        let mut w = store
            .writer(Some(Digest::sha256_of(b"world")), Some(5))
            .unwrap();
        w.write_all(b"w0rld").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&Digest::sha256_of(b"world")));

        // truncated
        let mut w = store
            .writer(Some(Digest::sha256_of(b"world")), Some(5))
            .unwrap();
        w.write_all(b"wor").unwrap();
        assert!(matches!(w.commit(), Err(StoreError::SizeMismatch { .. })));

        // too long never grows past the descriptor size
        let mut w = store
            .writer(Some(Digest::sha256_of(b"world")), Some(5))
            .unwrap();
        assert!(w.write_all(b"world!").is_err());
        drop(w);

        // nothing left in ingest
        let partials = fs::read_dir(tmp.path().join("content/ingest"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            })
            .count();
        assert_eq!(partials, 0);
        assert_eq!(store.list().unwrap(), vec![(good, 5)]);
    }

    #[test]
    fn read_detects_corruption_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let d = Digest::sha256_of(b"abc");
        store.write_bytes(&d, b"abc").unwrap();
        let p = store.blob_path(&d);
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        fs::write(&p, b"abd").unwrap();
        assert!(store.read(&d, 10).is_err());
    }

    #[test]
    fn unnamed_writer_names_blob_by_content() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let mut w = store.writer(None, None).unwrap();
        w.write_all(b"layer").unwrap();
        let (d, n) = w.commit().unwrap();
        assert_eq!(d, Digest::sha256_of(b"layer"));
        assert_eq!(n, 5);
        assert!(store.contains(&d));
    }
}
