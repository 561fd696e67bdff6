//! Named volumes, as Docker's `local` driver has them: a directory per volume under the state
//! root that containers bind-mount, filled from the image on first use (see [`populate`]).
//!
//! ```text
//! <root>/volumes/.lock                  flock: create, remove and prune hold it, exclusive
//! <root>/volumes/<name>/volume.json     VolumeRecord (name, created, labels, copy-up marker)
//! <root>/volumes/<name>/_data/          the content: what containers mount
//! <root>/volumes/<name>/.populate-*     a copy from an image in progress (private staging)
//! <root>/volumes/.new-* / .rm-*         a create / remove in progress (or a crash's leftover)
//! ```
//!
//! Names come from manifests in git, so they are untrusted: they are checked against Docker's
//! grammar (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`, at most 255 bytes) before any path is built, so a
//! name is always exactly one directory entry under `volumes/`.
//!
//! Crash safety: a volume appears under its name only complete (made as `.new-<pid>-<seq>` with
//! its record and `_data`, then renamed), and disappears at once (renamed to `.rm-<pid>-<seq>`,
//! then deleted). Leftovers of dead processes are removed by the next create, remove or prune.
//! Reads need no lock: records are replaced atomically.
//!
//! In use: a container uses a volume when its `containers/<id>/spec.json` has a bind mount
//! whose source is the volume's directory or anything below it. `remove` refuses such a
//! volume naming the containers, whether they run or not, as Docker does. A container being
//! created at the same moment (its spec not written yet) is not seen: callers that create
//! containers and remove volumes concurrently must order them themselves.
//!
//! `prune` removes unused volumes. Like Docker since 23.0 it removes only anonymous volumes
//! (label `com.docker.volume.anonymous`, which Docker and the apply executor put on them)
//! unless `all` is set, in which case every unused volume goes.

mod populate;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rustix::fs::{FlockOperation, Mode, OFlags, CWD};
use serde::{Deserialize, Serialize};

use crate::error::{Categorized, Category};
use crate::fsutil::{self, sync_dir, write_atomic};
use crate::runtime::logs::{format_rfc3339_nano, parse_rfc3339};

/// The directory under the state root.
pub const VOLUMES_DIR: &str = "volumes";
/// A volume's content directory, the source of the bind mounts.
pub const DATA_DIR: &str = "_data";
/// Docker's label on anonymous volumes; `prune` without `all` removes only these.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";
/// Longest volume name: one directory entry (the filesystem's NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Labels per volume and their total size (keys plus values) in bytes.
pub const LABELS_MAX: usize = 1024;
pub const LABEL_BYTES_MAX: usize = 64 << 10;

const RECORD_FILE: &str = "volume.json";
const LOCK_FILE: &str = ".lock";
const NEW_PREFIX: &str = ".new-";
const REMOVING_PREFIX: &str = ".rm-";
const STAGING_PREFIX: &str = ".populate-";
/// Records are small; anything bigger is not ours and is not read into memory.
const RECORD_MAX: u64 = 1 << 20;
/// A container's spec.json (with a seccomp profile it is some 100 KiB).
const SPEC_MAX: u64 = 16 << 20;

static SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("volume {name}: invalid label {key:?}: {reason}")]
    InvalidLabel {
        name: String,
        key: String,
        reason: String,
    },
    #[error("volume {name} not found")]
    NotFound { name: String },
    #[error("volume {name} ({}) is in use by container(s) {}", .path.display(), .containers.join(", "))]
    InUse {
        name: String,
        path: PathBuf,
        containers: Vec<String>,
    },
    #[error("volume {name} ({}) is busy: content is being copied into it from an image", .path.display())]
    Busy { name: String, path: PathBuf },
    #[error("volume {name}: cannot {action} {}: {source}", .path.display())]
    Io {
        name: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("volume {name}: unreadable record {}: {reason}", .path.display())]
    BadRecord {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("volume {name}: invalid mount path {path:?} in the image: {reason}")]
    InvalidMountPath {
        name: String,
        path: String,
        reason: String,
    },
    #[error("volume {name}: invalid image layer {layer:?}: {reason}")]
    LayerInvalid {
        name: String,
        layer: String,
        reason: String,
    },
    #[error("volume {name}: snapshot of image layer {layer} is missing ({}): pull the image again", .path.display())]
    LayerMissing {
        name: String,
        layer: String,
        path: PathBuf,
    },
    #[error("volume {name}: copy {image_path} from the image into {}: {source}", .path.display())]
    Copy {
        name: String,
        /// The entry inside the image that failed.
        image_path: String,
        /// The volume's content directory.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Categorized for VolumeError {
    fn category(&self) -> Category {
        match self {
            VolumeError::InvalidName { .. }
            | VolumeError::InvalidLabel { .. }
            | VolumeError::InvalidMountPath { .. }
            | VolumeError::LayerInvalid { .. } => Category::Invalid,
            VolumeError::NotFound { .. } | VolumeError::LayerMissing { .. } => Category::NotFound,
            VolumeError::InUse { .. } | VolumeError::Busy { .. } => Category::Conflict,
            VolumeError::Io { .. } | VolumeError::BadRecord { .. } => Category::Internal,
            // What the image's content provokes (a symlink loop, a tree too deep) versus the
            // machine's errors (disk full, I/O).
            VolumeError::Copy { source, .. } => match source.raw_os_error() {
                Some(libc::ELOOP | libc::ENAMETOOLONG | libc::EINVAL) => Category::Invalid,
                None if source.kind() == io::ErrorKind::InvalidInput => Category::Invalid,
                _ => Category::Internal,
            },
        }
    }
}

/// A named volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// The content directory (`<root>/volumes/<name>/_data`), absolute: what gets
    /// bind-mounted into containers.
    pub path: PathBuf,
    pub created: SystemTime,
    pub labels: BTreeMap<String, String>,
}

/// `volume.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VolumeRecord {
    name: String,
    /// RFC 3339, UTC, nanoseconds.
    created: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Set once content was copied in from an image; it is never copied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    populated: Option<Populated>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Populated {
    /// The path inside the image that was copied.
    from: String,
    at: String,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Names of the removed volumes, in name order.
    pub removed: Vec<String>,
    /// Bytes of regular files they held (hardlinks counted once).
    pub reclaimed: u64,
}

/// Checks a volume name against Docker's rules for local volumes. Messages are Docker's.
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    let invalid = |reason: String| VolumeError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.len() > NAME_MAX {
        return Err(invalid(format!(
            "volume name is too long: at most {NAME_MAX} characters"
        )));
    }
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let valid = bytes.first().is_some_and(u8::is_ascii_alphanumeric) && bytes.iter().all(allowed);
    if !valid {
        return Err(invalid(
            "it includes invalid characters for a local volume name, only \
             \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed; if you intended to pass a host \
             directory, use an absolute path"
                .into(),
        ));
    }
    if bytes.len() < 2 {
        return Err(invalid(
            "volume name is too short, names should be at least two alphanumeric characters".into(),
        ));
    }
    Ok(())
}

fn validate_labels(name: &str, labels: &BTreeMap<String, String>) -> Result<(), VolumeError> {
    let invalid = |key: &str, reason: String| VolumeError::InvalidLabel {
        name: name.to_string(),
        key: key.chars().take(64).collect(),
        reason,
    };
    if labels.len() > LABELS_MAX {
        return Err(invalid(
            "",
            format!("{} labels, at most {LABELS_MAX} are allowed", labels.len()),
        ));
    }
    let mut total = 0usize;
    for (key, value) in labels {
        if key.is_empty() {
            return Err(invalid(key, "empty key".into()));
        }
        total = total.saturating_add(key.len() + value.len());
        if total > LABEL_BYTES_MAX {
            return Err(invalid(
                key,
                format!("labels exceed {LABEL_BYTES_MAX} bytes in all"),
            ));
        }
    }
    Ok(())
}

/// The volumes of one state root.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    /// The state root (absolute).
    root: PathBuf,
    /// `<root>/volumes` (absolute).
    dir: PathBuf,
}

impl VolumeStore {
    /// Opens (creating it if needed) `<root>/volumes/`.
    pub fn open(root: &Path) -> Result<VolumeStore, VolumeError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| VolumeError::Io {
                name: String::new(),
                action,
                path,
                source,
            }
        };
        let root = std::path::absolute(root).map_err(io("resolve", root))?;
        let dir = root.join(VOLUMES_DIR);
        fs::create_dir_all(&root).map_err(io("create", &root))?;
        // 0701 like Docker's: only root lists volumes; the bind mounts need no search
        // permission on the way.
        match fs::DirBuilder::new().mode(0o701).create(&dir) {
            Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o701))
                .map_err(io("set the mode of", &dir))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(io("create", &dir)(e)),
        }
        Ok(VolumeStore { root, dir })
    }

    /// `<root>/volumes`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn io_err<'a>(
        name: &'a str,
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> VolumeError + 'a {
        move |source| VolumeError::Io {
            name: name.to_string(),
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The store lock (flock on `volumes/.lock`), held by create, remove and prune.
    fn lock(&self) -> Result<Flock<File>, VolumeError> {
        let path = self.dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Self::io_err("", "open", &path))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(lock),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(Self::io_err("", "lock", &path)(errno.into())),
            }
        }
    }

    /// Creates the volume, or returns the existing one of that name unchanged (its labels
    /// too), as `docker volume create` does for the local driver.
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        validate_name(name)?;
        validate_labels(name, &labels)?;
        let _lock = self.lock()?;
        if let Some(existing) = self.get(name)? {
            return Ok(existing);
        }
        let dir = self.volume_dir(name);
        if fs::symlink_metadata(&dir).is_ok() {
            // Never made by us (creation commits by rename): not ours to reuse or delete.
            return Err(VolumeError::BadRecord {
                name: name.to_string(),
                path: dir.join(RECORD_FILE),
                reason: format!("{} exists without a record", dir.display()),
            });
        }
        self.clean_leftovers_locked();
        let tmp = self.dir.join(format!(
            "{NEW_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let created = SystemTime::now();
        let record = VolumeRecord {
            name: name.to_string(),
            created: format_rfc3339_nano(created),
            labels,
            populated: None,
        };
        let result = (|| {
            make_dir(&tmp, 0o755).map_err(Self::io_err(name, "create", &tmp))?;
            let data = tmp.join(DATA_DIR);
            make_dir(&data, 0o755).map_err(Self::io_err(name, "create", &data))?;
            self.write_record(&tmp.join(RECORD_FILE), &record)?;
            sync_dir(&tmp).map_err(Self::io_err(name, "sync", &tmp))?;
            fs::rename(&tmp, &dir).map_err(Self::io_err(name, "rename into place", &dir))?;
            sync_dir(&self.dir).map_err(Self::io_err(name, "sync", &self.dir))
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Ok(self.volume_of(record, created))
    }

    fn volume_of(&self, record: VolumeRecord, created: SystemTime) -> Volume {
        Volume {
            path: self.volume_dir(&record.name).join(DATA_DIR),
            name: record.name,
            created,
            labels: record.labels,
        }
    }

    fn write_record(&self, path: &Path, record: &VolumeRecord) -> Result<(), VolumeError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| VolumeError::BadRecord {
            name: record.name.clone(),
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_atomic(path, &bytes).map_err(Self::io_err(&record.name, "write", path))
    }

    /// The record of `name`, `None` when there is no such volume.
    fn read_record(&self, name: &str) -> Result<Option<VolumeRecord>, VolumeError> {
        let path = self.volume_dir(name).join(RECORD_FILE);
        let bad = |reason: String| VolumeError::BadRecord {
            name: name.to_string(),
            path: path.clone(),
            reason,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io_err(name, "open", &path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(RECORD_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(e.to_string()))?;
        if bytes.len() as u64 > RECORD_MAX {
            return Err(bad(format!("bigger than {RECORD_MAX} bytes")));
        }
        let record: VolumeRecord =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if record.name != name {
            return Err(bad(format!("it names volume {:?}", record.name)));
        }
        Ok(Some(record))
    }

    /// The volume named `name`, `None` when there is none. An invalid name is an error.
    pub fn get(&self, name: &str) -> Result<Option<Volume>, VolumeError> {
        validate_name(name)?;
        let Some(record) = self.read_record(name)? else {
            return Ok(None);
        };
        let created = parse_rfc3339(&record.created).ok_or_else(|| VolumeError::BadRecord {
            name: name.to_string(),
            path: self.volume_dir(name).join(RECORD_FILE),
            reason: format!("invalid created time {:?}", record.created),
        })?;
        Ok(Some(self.volume_of(record, created)))
    }

    /// Every volume with a readable record, by name. Unreadable records are skipped with a
    /// warning; entries in progress and foreign names are skipped.
    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let mut out = Vec::new();
        for name in entry_names(&self.dir)? {
            if name.starts_with('.') {
                continue;
            }
            if validate_name(&name).is_err() {
                tracing::warn!(dir = %self.dir.display(), name, "skipping a foreign entry");
                continue;
            }
            match self.get(&name) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => {}
                Err(VolumeError::BadRecord { path, reason, .. }) => {
                    tracing::warn!(path = %path.display(), reason, "skipping an unreadable volume record");
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the volume and its content. Refused (`InUse`, naming the containers) while a
    /// container's spec mounts it, and (`Busy`) while content is being copied into it.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        validate_name(name)?;
        let _lock = self.lock()?;
        let users = self.users()?;
        self.remove_locked(name, &users)
    }

    fn remove_locked(
        &self,
        name: &str,
        users: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), VolumeError> {
        if self.read_record(name)?.is_none() {
            return Err(VolumeError::NotFound {
                name: name.to_string(),
            });
        }
        let dir = self.volume_dir(name);
        if let Some(containers) = users.get(name) {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                path: dir.join(DATA_DIR),
                containers: containers.clone(),
            });
        }
        // A populate holds the volume directory's lock for the whole copy.
        let dir_fd = open_dir(&dir).map_err(Self::io_err(name, "open", &dir))?;
        match rustix::fs::flock(&dir_fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(VolumeError::Busy {
                    name: name.to_string(),
                    path: dir.join(DATA_DIR),
                })
            }
            Err(e) => return Err(Self::io_err(name, "lock", &dir)(e.into())),
        }
        self.clean_leftovers_locked();
        let trash = self.dir.join(format!(
            "{REMOVING_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(&dir, &trash).map_err(Self::io_err(name, "move aside", &dir))?;
        sync_dir(&self.dir).map_err(Self::io_err(name, "sync", &self.dir))?;
        drop(dir_fd);
        // Gone from every listing already; a failure here leaves garbage that the next
        // create/remove/prune deletes, not a half volume.
        if let Err(e) = fs::remove_dir_all(&trash) {
            tracing::warn!(volume = name, path = %trash.display(), error = %e, "could not delete a removed volume's content");
        }
        Ok(())
    }

    /// Removes the unused volumes: only anonymous ones (label [`ANONYMOUS_LABEL`]) unless
    /// `all`. Volumes being populated are skipped.
    pub fn prune(&self, all: bool) -> Result<PruneReport, VolumeError> {
        let _lock = self.lock()?;
        let users = self.users()?;
        let mut report = PruneReport::default();
        for volume in self.list()? {
            if users.contains_key(&volume.name) {
                continue;
            }
            if !all && !volume.labels.contains_key(ANONYMOUS_LABEL) {
                continue;
            }
            let size = disk_usage(&self.volume_dir(&volume.name).join(DATA_DIR));
            match self.remove_locked(&volume.name, &users) {
                Ok(()) => {
                    report.removed.push(volume.name);
                    report.reclaimed = report.reclaimed.saturating_add(size);
                }
                Err(VolumeError::Busy { .. } | VolumeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Which containers use which volume: volume name -> containers (`name (short id)`),
    /// from the bind mounts in every `containers/<id>/spec.json`.
    pub fn users(&self) -> Result<BTreeMap<String, Vec<String>>, VolumeError> {
        let containers = self.root.join("containers");
        let mut prefixes = vec![crate::fsutil::clean_path(&self.dir)];
        if let Ok(canonical) = fs::canonicalize(&self.dir) {
            if !prefixes.contains(&canonical) {
                prefixes.push(canonical);
            }
        }
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in entry_names(&containers)? {
            if id.starts_with('.') {
                continue;
            }
            let dir = containers.join(&id);
            let spec: MiniSpec = match read_json(&dir.join("spec.json"), SPEC_MAX) {
                Ok(Some(s)) => s,
                // Being created (the record comes first) or being removed.
                Ok(None) => continue,
                Err(reason) => {
                    tracing::warn!(
                        container = id,
                        reason,
                        "skipping an unreadable container spec"
                    );
                    continue;
                }
            };
            let mut used = HashSet::new();
            for mount in spec.mounts {
                let is_bind = mount.typ.as_deref() == Some("bind")
                    || mount.options.iter().any(|o| o == "bind" || o == "rbind");
                let Some(source) = mount.source.filter(|_| is_bind) else {
                    continue;
                };
                let source = PathBuf::from(source);
                let mut candidates = vec![crate::fsutil::clean_path(&source)];
                if let Ok(c) = fs::canonicalize(&source) {
                    candidates.push(c);
                }
                for candidate in &candidates {
                    for prefix in &prefixes {
                        let Ok(rest) = candidate.strip_prefix(prefix) else {
                            continue;
                        };
                        if let Some(Component::Normal(first)) = rest.components().next() {
                            if let Some(name) = first.to_str() {
                                used.insert(name.to_string());
                            }
                        }
                    }
                }
            }
            if used.is_empty() {
                continue;
            }
            let label = match read_json::<MiniRecord>(&dir.join("container.json"), RECORD_MAX) {
                Ok(Some(r)) if !r.name.is_empty() => {
                    format!("{} ({})", r.name, id.get(..12).unwrap_or(&id))
                }
                _ => id.clone(),
            };
            for name in used {
                users.entry(name).or_default().push(label.clone());
            }
        }
        for list in users.values_mut() {
            list.sort();
        }
        Ok(users)
    }

    /// Removes `.new-*`/`.rm-*` entries of dead processes (under the store lock) and
    /// `.populate-*` staging directories of dead processes inside volumes. Best effort.
    fn clean_leftovers_locked(&self) {
        let Ok(names) = entry_names(&self.dir) else {
            return;
        };
        for name in names {
            let path = self.dir.join(&name);
            if name.starts_with(NEW_PREFIX) || name.starts_with(REMOVING_PREFIX) {
                if !fsutil::temp_owner_alive(&name) {
                    match fs::remove_dir_all(&path) {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), "removed a crash leftover")
                        }
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "could not remove a crash leftover")
                        }
                    }
                }
            } else if !name.starts_with('.') && validate_name(&name).is_ok() {
                clean_staging(&path);
            }
        }
    }

    /// Docker's copy-up: the first time a volume is mounted at `container_path`, if the
    /// volume is empty and the image has a directory there, that directory's content (and
    /// its owner, mode, timestamps and xattrs) is copied into the volume. A marker in the
    /// record makes it happen at most once per volume, even if the volume is emptied later.
    ///
    /// `image_layers` are the image's layer diff IDs, bottom first; their snapshots under
    /// `<root>/snapshots/` are read as overlayfs would merge them, without mounting anything
    /// (see [`populate`]). The path is resolved inside the image (symlinks in the image are
    /// followed as if the image were `/`, never on the host). Returns whether content was
    /// copied; `false` when the volume was populated before, is not empty, or the image has
    /// no directory at the path (the layers are only looked at when a copy is due).
    /// Content appears in `_data` only once complete: it is copied into a private staging
    /// directory first, then its entries are renamed in.
    pub fn populate_from_image(
        &self,
        volume: &Volume,
        root: &Path,
        image_layers: &[String],
        container_path: &str,
    ) -> Result<bool, VolumeError> {
        let name = volume.name.as_str();
        validate_name(name)?;
        let invalid_path = |reason: &str| VolumeError::InvalidMountPath {
            name: name.to_string(),
            path: container_path.chars().take(256).collect(),
            reason: reason.to_string(),
        };
        if !container_path.starts_with('/') {
            return Err(invalid_path("not an absolute path"));
        }
        if container_path.contains('\0') {
            return Err(invalid_path("contains a NUL byte"));
        }
        if container_path.len() > populate::PATH_MAX {
            return Err(invalid_path("longer than 4096 bytes"));
        }
        let dir = self.volume_dir(name);
        let dir_fd = self.lock_volume(name, &dir)?;
        let Some(mut record) = self.read_record(name)? else {
            return Err(VolumeError::NotFound {
                name: name.to_string(),
            });
        };
        if record.populated.is_some() {
            return Ok(false);
        }
        clean_staging(&dir);
        let data_path = dir.join(DATA_DIR);
        let data =
            open_dir_at(&dir_fd, DATA_DIR).map_err(Self::io_err(name, "open", &data_path))?;
        let copy_err = |image_path: String, source: io::Error| VolumeError::Copy {
            name: name.to_string(),
            image_path,
            path: data_path.clone(),
            source,
        };
        if !populate::is_empty(&data).map_err(Self::io_err(name, "read", &data_path))? {
            return Ok(false);
        }
        // Only now: a populated or used volume needs no image (its layers may be gone).
        let layers = snapshot_dirs(name, root, image_layers)?;
        let image = populate::open_image(&layers).map_err(|(layer, source)| VolumeError::Io {
            name: name.to_string(),
            action: "open the image layer",
            path: layer,
            source,
        })?;
        let source = match populate::resolve(image, container_path)
            .map_err(|e| copy_err(container_path.to_string(), e))?
        {
            populate::ImagePath::Dir(dir) => dir,
            populate::ImagePath::Missing | populate::ImagePath::NotDir => return Ok(false),
        };

        let staging_name = format!(
            "{STAGING_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let staging = Staging::create(&dir_fd, &dir, &staging_name).map_err(Self::io_err(
            name,
            "create",
            &dir.join(&staging_name),
        ))?;
        populate::copy_contents(&source, &staging.fd, container_path)
            .map_err(|e| copy_err(e.image_path, e.source))?;
        // Re-checked just before the content becomes visible: a container may have written
        // into the volume meanwhile (only populates are excluded by the lock).
        if !populate::is_empty(&data).map_err(Self::io_err(name, "read", &data_path))? {
            return Ok(false);
        }
        populate::move_entries(&staging.fd, &data)
            .map_err(|e| copy_err(container_path.to_string(), e))?;
        populate::copy_dir_metadata(&source, &data)
            .map_err(|e| copy_err(container_path.to_string(), e))?;
        drop(staging);
        record.populated = Some(Populated {
            from: container_path.to_string(),
            at: format_rfc3339_nano(SystemTime::now()),
        });
        self.write_record(&dir.join(RECORD_FILE), &record)?;
        Ok(true)
    }

    /// Opens the volume's directory and waits for its exclusive lock (held while copying
    /// into it). A volume removed (renamed aside) while waiting is reported as not found.
    fn lock_volume(&self, name: &str, dir: &Path) -> Result<OwnedFd, VolumeError> {
        let not_found = || VolumeError::NotFound {
            name: name.to_string(),
        };
        let fd = match open_dir(dir) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(Self::io_err(name, "open", dir)(e)),
        };
        loop {
            match rustix::fs::flock(&fd, FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Self::io_err(name, "lock", dir)(e.into())),
            }
        }
        let locked =
            rustix::fs::fstat(&fd).map_err(|e| Self::io_err(name, "stat", dir)(e.into()))?;
        match fs::symlink_metadata(dir) {
            Ok(m) if m.ino() == locked.st_ino as u64 && m.dev() == locked.st_dev as u64 => Ok(fd),
            Ok(_) => Err(not_found()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found()),
            Err(e) => Err(Self::io_err(name, "stat", dir)(e)),
        }
    }
}

/// The snapshot directories of `image_layers` (diff IDs, bottom first), top first.
fn snapshot_dirs(
    name: &str,
    root: &Path,
    image_layers: &[String],
) -> Result<Vec<PathBuf>, VolumeError> {
    if image_layers.len() > crate::runtime::rootfs::MAX_LAYERS {
        return Err(VolumeError::LayerInvalid {
            name: name.to_string(),
            layer: String::new(),
            reason: format!(
                "{} layers, more than overlayfs's {}",
                image_layers.len(),
                crate::runtime::rootfs::MAX_LAYERS
            ),
        });
    }
    let snapshots = root.join("snapshots");
    let mut dirs = Vec::with_capacity(image_layers.len());
    for layer in image_layers.iter().rev() {
        let digest =
            crate::image::digest::Digest::parse(layer).map_err(|e| VolumeError::LayerInvalid {
                name: name.to_string(),
                layer: layer.chars().take(200).collect(),
                reason: e.to_string(),
            })?;
        let path = snapshots
            .join(digest.algorithm().as_str())
            .join(digest.encoded());
        if !path.is_dir() {
            return Err(VolumeError::LayerMissing {
                name: name.to_string(),
                layer: layer.clone(),
                path,
            });
        }
        dirs.push(path);
    }
    Ok(dirs)
}

/// A private directory inside the volume directory the copy is made in; removed on drop
/// (empty after a successful move, partial after a failure).
struct Staging {
    fd: OwnedFd,
    path: PathBuf,
}

impl Staging {
    fn create(dir_fd: &OwnedFd, dir: &Path, name: &str) -> io::Result<Staging> {
        rustix::fs::mkdirat(dir_fd, name, Mode::from_raw_mode(0o700))?;
        let path = dir.join(name);
        match open_dir_at(dir_fd, name) {
            Ok(fd) => Ok(Staging { fd, path }),
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // std's remove_dir_all never follows symlinks.
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a volume's staging directory");
        }
    }
}

/// Removes staging directories of dead processes in one volume directory.
fn clean_staging(volume_dir: &Path) {
    let Ok(names) = entry_names(volume_dir) else {
        return;
    };
    for name in names {
        if name.starts_with(STAGING_PREFIX) && !fsutil::temp_owner_alive(&name) {
            let path = volume_dir.join(&name);
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a crash leftover");
            }
        }
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_dir_at(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir.as_fd(),
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `mkdir` with exactly `mode` (not cut by the umask).
fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().mode(mode).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Names of a directory's entries (non-UTF-8 names are not ours: skipped); a missing
/// directory has none.
fn entry_names(dir: &Path) -> Result<Vec<String>, VolumeError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(VolumeStore::io_err("", "read", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(VolumeStore::io_err("", "read", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Reads a JSON file of at most `max` bytes; `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, max: u64) -> Result<Option<T>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("bigger than {max} bytes"));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The part of an OCI spec that says what is mounted.
#[derive(Debug, Deserialize)]
struct MiniSpec {
    #[serde(default)]
    mounts: Vec<MiniMount>,
}

#[derive(Debug, Deserialize)]
struct MiniMount {
    #[serde(default)]
    source: Option<String>,
    #[serde(default, rename = "type")]
    typ: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct MiniRecord {
    #[serde(default)]
    name: String,
}

/// Bytes of regular files under `dir` (hardlinks once), not following symlinks; what Docker
/// reports as reclaimed space. Best effort: unreadable parts count as zero.
fn disk_usage(dir: &Path) -> u64 {
    /// Inodes remembered to count hardlinks once; beyond this they may count twice.
    const SEEN_MAX: usize = 1 << 16;
    let mut total = 0u64;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = match fs::read_dir(dir) {
        Ok(r) => vec![r],
        Err(_) => return 0,
    };
    while let Some(top) = stack.last_mut() {
        let Some(entry) = top.next() else {
            stack.pop();
            continue;
        };
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            if stack.len() < populate::MAX_DEPTH {
                if let Ok(r) = fs::read_dir(entry.path()) {
                    stack.push(r);
                }
            }
        } else if meta.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if seen.contains(&key) {
                    continue;
                }
                if seen.len() < SEEN_MAX {
                    seen.insert(key);
                }
            }
            total = total.saturating_add(meta.len());
        }
    }
    total
}
