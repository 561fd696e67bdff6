//! Containers on disk: one directory per container under `<root>/containers/<id>/`, holding
//! the record (what was asked), the bundle (spec + rootfs mount point), the overlay's
//! upper/work dirs, logs, the shim's socket and pid, and the exit record. The directory is the
//! only source of truth: a restarted agent or CLI rediscovers every container from it and
//! asks the shims for the live part ([`observe`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Categorized, Category};
use crate::fsutil::write_replace;
use crate::health::{HealthConfig, RestartPolicy};
use crate::runtime::protocol::{self, ContainerState, ExitRecord, Status};

/// Records are small; anything bigger is not ours.
const MAX_RECORD_BYTES: u64 = 1024 * 1024;
/// How long a state query may take before the shim counts as unresponsive.
pub const SHIM_TIMEOUT: Duration = Duration::from_secs(5);

/// What a container was asked to be, written once at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 lowercase hex characters, like Docker's.
    pub id: String,
    /// Unique among containers (`--name`, or a generated one).
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's config digest (its id): keeps the image's content alive (gc root).
    pub image_id: String,
    /// Layer diff IDs, bottom first: the snapshots the rootfs is stacked from.
    pub layers: Vec<String>,
    /// The process as started (entrypoint + command), for `ps`.
    pub command: Vec<String>,
    #[serde(with = "crate::runtime::protocol::rfc3339")]
    pub created: SystemTime,
    /// `--rm`: the shim removes the container once it has exited.
    #[serde(default)]
    pub auto_remove: bool,
    /// Signal number for `stop` (the image's StopSignal, else SIGTERM).
    pub stop_signal: i32,
    /// Default grace period of `stop`, in seconds.
    pub stop_grace_secs: u64,
    /// Identity and user labels (the spec's annotations).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Log rotation: bytes per file and files kept.
    pub log_max_bytes: u64,
    pub log_max_files: usize,
    /// Networking the shim sets up at each start (absent in records made before networks
    /// existed: those have a private namespace with loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::sandbox::ContainerNetwork>,
    /// `--restart` (Compose's `restart:`): whether the shim starts the init again when it
    /// ends, with the crash-loop backoff (`health::Backoff`).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The healthcheck as Docker keeps it in `Config.Healthcheck`: the container's own merged
    /// over the image's HEALTHCHECK; `None` when neither has one. The shim runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Restart the container when its healthcheck reports it unhealthy, whatever its restart
    /// policy (Docker never does; ours is on unless turned off).
    #[serde(default = "default_true")]
    pub restart_unhealthy: bool,
    /// The image's SHELL, which `CMD-SHELL` healthchecks run with (`/bin/sh -c` when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// The files of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPaths {
    pub dir: PathBuf,
}

impl ContainerPaths {
    pub fn record(&self) -> PathBuf {
        self.dir.join("container.json")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    /// The container's OCI spec as built (what `inspect` and every start read).
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    /// The spec libcontainer reads, rewritten by the shim at each start (see
    /// `runtime::seccomp`: the profile may be loaded from a cache instead).
    pub fn engine_spec(&self) -> PathBuf {
        self.bundle().join("config.json")
    }
    /// Where the generated /etc/hosts, /etc/hostname and /etc/resolv.conf live.
    pub fn sandbox_files(&self) -> crate::network::sandbox::SandboxFiles {
        crate::network::sandbox::SandboxFiles {
            dir: self.dir.clone(),
        }
    }
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join(crate::runtime::spec::ROOTFS_DIR)
    }
    /// The overlay's upper and work dirs (and short lowerdir links).
    pub fn overlay(&self) -> PathBuf {
        self.dir.join("overlay")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }
    pub fn shim_pid(&self) -> PathBuf {
        self.dir.join("shim.pid")
    }
    /// The shim's own diagnostics (its stderr).
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    /// The healthcheck's state (`health::HealthState`), rewritten by the shim after every
    /// probe, so it can be read without asking the shim (and after it is gone).
    pub fn health(&self) -> PathBuf {
        self.dir.join("health.json")
    }
    /// libcontainer's state root; the container's state is `<engine>/<id>`.
    pub fn engine(&self) -> PathBuf {
        self.dir.join("engine")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{query:?} matches several containers ({matches}): give more of the id")]
    Ambiguous { query: String, matches: String },
    #[error("the container name {name:?} is already used by container {id}")]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")]
    InvalidName(String),
    #[error("container {id}: {action} {path}: {source}")]
    Io {
        id: String,
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("container {id}: unreadable record {path}: {reason}")]
    BadRecord {
        id: String,
        path: PathBuf,
        reason: String,
    },
}

impl Categorized for ContainerError {
    fn category(&self) -> Category {
        match self {
            ContainerError::NotFound(_) => Category::NotFound,
            ContainerError::Ambiguous { .. } | ContainerError::InvalidName(_) => Category::Invalid,
            ContainerError::NameInUse { .. } => Category::Conflict,
            ContainerError::Io { .. } | ContainerError::BadRecord { .. } => Category::Internal,
        }
    }
}

/// All containers of one state directory.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    dir: PathBuf,
}

impl ContainerStore {
    pub fn new(root: &Path) -> ContainerStore {
        ContainerStore {
            dir: root.join("containers"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn paths(&self, id: &str) -> ContainerPaths {
        ContainerPaths {
            dir: self.dir.join(id),
        }
    }

    /// Creates the container's directory and writes its record. Names are unique: the check
    /// and the creation happen under one lock so two concurrent `run --name x` cannot both win.
    pub fn create(&self, record: &ContainerRecord) -> Result<ContainerPaths, ContainerError> {
        check_name(&record.name)?;
        let io_err = |action, path: &Path| {
            let id = record.id.clone();
            let path = path.to_path_buf();
            move |source| ContainerError::Io {
                id,
                action,
                path,
                source,
            }
        };
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let lock_path = self.dir.join(".names.lock");
        let lock = File::create(&lock_path).map_err(io_err("open", &lock_path))?;
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("lock", &lock_path)(io::Error::from(e)))
            .and_then(|_guard| {
                if let Some(other) = self.list()?.into_iter().find(|r| r.name == record.name) {
                    return Err(ContainerError::NameInUse {
                        name: record.name.clone(),
                        id: other.id,
                    });
                }
                let paths = self.paths(&record.id);
                // A half-created directory of a crashed CLI has no record: reuse is fine.
                fs::create_dir_all(paths.bundle()).map_err(io_err("create", &paths.dir))?;
                fs::create_dir_all(paths.rootfs()).map_err(io_err("create", &paths.dir))?;
                let bytes =
                    serde_json::to_vec_pretty(record).map_err(|e| ContainerError::BadRecord {
                        id: record.id.clone(),
                        path: paths.record(),
                        reason: e.to_string(),
                    })?;
                // A --rm container does not outlive a power loss: no fsync for it.
                write_replace(&paths.record(), &bytes, !record.auto_remove)
                    .map_err(io_err("write", &paths.record()))?;
                Ok(paths)
            })
    }

    /// Every container with a readable record, oldest first. Directories without a record
    /// (a creation cut short) are skipped.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ContainerError::Io {
                    id: String::new(),
                    action: "list",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if !is_container_id(id) {
                continue;
            }
            match self.load(id) {
                Ok(r) => out.push(r),
                Err(ContainerError::NotFound(_)) => {}
                Err(e) => tracing::warn!("skipping container {id}: {e}"),
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn load(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        let path = self.paths(id).record();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContainerError::NotFound(id.to_string()))
            }
            Err(source) => {
                return Err(ContainerError::Io {
                    id: id.to_string(),
                    action: "open",
                    path,
                    source,
                })
            }
        };
        let mut bytes = Vec::new();
        file.take(MAX_RECORD_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|source| ContainerError::Io {
                id: id.to_string(),
                action: "read",
                path: path.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ContainerError::BadRecord {
            id: id.to_string(),
            path,
            reason: e.to_string(),
        })
    }

    /// Finds a container the way Docker does: exact id, exact name, then a unique id prefix.
    pub fn resolve(&self, query: &str) -> Result<ContainerRecord, ContainerError> {
        let all = self.list()?;
        if let Some(r) = all.iter().find(|r| r.id == query || r.name == query) {
            return Ok(r.clone());
        }
        let matches: Vec<&ContainerRecord> = if query.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|r| r.id.starts_with(query)).collect()
        };
        match matches.as_slice() {
            [] => Err(ContainerError::NotFound(query.to_string())),
            [one] => Ok((*one).clone()),
            many => Err(ContainerError::Ambiguous {
                query: query.to_string(),
                matches: many
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Deletes the container's directory. The caller has made sure nothing runs or is
    /// mounted there.
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let paths = self.paths(id);
        match fs::remove_dir_all(&paths.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ContainerError::Io {
                id: id.to_string(),
                action: "remove",
                path: paths.dir,
                source,
            }),
        }
    }
}

/// A new random container id: 64 lowercase hex characters.
pub fn generate_id() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// A generated name for containers started without `--name`: Docker-like `adjective_noun`,
/// plus the id's first characters so it never collides with a live one.
pub fn generate_name(id: &str) -> String {
    const ADJECTIVES: [&str; 8] = [
        "brave", "calm", "eager", "keen", "quiet", "swift", "tidy", "wise",
    ];
    const NOUNS: [&str; 8] = [
        "dock", "harbor", "keel", "mast", "pier", "quay", "sail", "tide",
    ];
    let b = u8::from_str_radix(id.get(..2).unwrap_or("00"), 16).unwrap_or(0) as usize;
    format!(
        "{}_{}_{}",
        ADJECTIVES[b % 8],
        NOUNS[(b / 8) % 8],
        id.get(..6).unwrap_or(id)
    )
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (we also cap the length).
pub fn check_name(name: &str) -> Result<(), ContainerError> {
    let mut bytes = name.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidName(name.to_string()))
    }
}

/// What a container is doing, as far as the state directory and its shim tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The shim answers: created or running (or stopped but not yet recorded).
    Live(ContainerState),
    /// The container has ended and its exit is recorded.
    Exited(ExitRecord),
    /// Neither a shim answers nor an exit is recorded, and no shim process is alive: the shim
    /// died (killed, or the host lost power). `container_pid` is a process still in the
    /// container's cgroup, if any: it runs on, unsupervised and without logs.
    ShimLost {
        shim_pid: Option<i32>,
        container_pids: Vec<i32>,
    },
    /// A shim process exists but does not answer (starting up, or stuck).
    Unresponsive { shim_pid: i32, error: String },
}

impl Observed {
    /// Docker-like one-word status.
    pub fn status_word(&self) -> &'static str {
        match self {
            Observed::Live(s) => match s.status {
                Status::Created => "created",
                Status::Running => "running",
                Status::Restarting => "restarting",
                Status::Stopped => "exited",
            },
            Observed::Exited(_) => "exited",
            Observed::ShimLost { .. } => "dead",
            Observed::Unresponsive { .. } => "unknown",
        }
    }

    /// Running, or waiting to be restarted (Docker counts a restarting container as running).
    pub fn is_running(&self) -> bool {
        matches!(self, Observed::Live(s) if matches!(s.status, Status::Running | Status::Restarting))
            || matches!(self, Observed::ShimLost { container_pids, .. } if !container_pids.is_empty())
            || matches!(self, Observed::Unresponsive { .. })
    }
}

/// Observes one container: the exit record if there is one, else its shim's answer, else why
/// neither is available.
pub fn observe(paths: &ContainerPaths, record: &ContainerRecord) -> Observed {
    if let Ok(Some(exit)) = ExitRecord::load(&paths.exit()) {
        return Observed::Exited(exit);
    }
    let error =
        match protocol::Client::connect(paths.socket(), SHIM_TIMEOUT).and_then(|mut c| c.state()) {
            Ok(state) => return Observed::Live(state),
            Err(e) => e.to_string(),
        };
    // The shim may have just recorded the exit and gone.
    if let Ok(Some(exit)) = ExitRecord::load(&paths.exit()) {
        return Observed::Exited(exit);
    }
    let shim_pid = read_pid(&paths.shim_pid());
    if let Some(pid) = shim_pid.filter(|p| process_is_shim(*p, &record.id)) {
        return Observed::Unresponsive {
            shim_pid: pid,
            error,
        };
    }
    Observed::ShimLost {
        shim_pid,
        container_pids: crate::runtime::engine::container_pids(&record.id),
    }
}

/// Reads a pid file (a decimal number, optional newline).
pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live dockmaster shim for `id` (guards against pid reuse: the pid file
/// of a dead shim may name an unrelated process by now).
pub fn process_is_shim(pid: i32, id: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&&b"shim"[..]) && args.contains(&id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            layers: vec![],
            command: vec!["sh".into()],
            created: SystemTime::now(),
            auto_remove: false,
            stop_signal: 15,
            stop_grace_secs: 10,
            labels: BTreeMap::new(),
            log_max_bytes: 1024,
            log_max_files: 2,
            network: None,
            restart: RestartPolicy::No,
            healthcheck: None,
            restart_unhealthy: true,
            shell: Vec::new(),
        }
    }

    #[test]
    fn create_list_resolve_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::new(tmp.path());
        let a = "a".repeat(63) + "1";
        let b = "a".repeat(63) + "2";
        store.create(&record(&a, "web")).unwrap();
        store.create(&record(&b, "db")).unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(store.resolve("web").unwrap().id, a);
        assert_eq!(store.resolve(&b).unwrap().name, "db");
        assert_eq!(store.resolve(&(("a".repeat(63)) + "2")).unwrap().id, b);
        assert!(matches!(
            store.resolve("aaaa"),
            Err(ContainerError::Ambiguous { .. })
        ));
        assert!(matches!(
            store.resolve("nope"),
            Err(ContainerError::NotFound(_))
        ));
        let dup = store.create(&record(&("b".repeat(64)), "web")).unwrap_err();
        assert!(dup.to_string().contains(&a), "{dup}");
        store.remove(&a).unwrap();
        store.remove(&a).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn records_without_supervision_fields_get_the_defaults() {
        let r = record(&"d".repeat(64), "old");
        let mut v = serde_json::to_value(&r).unwrap();
        let obj = v.as_object_mut().unwrap();
        for field in ["restart", "healthcheck", "restart_unhealthy", "shell"] {
            obj.remove(field);
        }
        let back: ContainerRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert!(
            back.restart_unhealthy,
            "restarting unhealthy containers is the default"
        );
        let mut with = r.clone();
        with.restart = RestartPolicy::OnFailure { max_retries: 2 };
        with.healthcheck = Some(HealthConfig::disabled());
        with.restart_unhealthy = false;
        let v = serde_json::to_value(&with).unwrap();
        assert_eq!(v["restart"], "on-failure:2");
        assert_eq!(v["healthcheck"]["Test"], serde_json::json!(["NONE"]));
        assert_eq!(serde_json::from_value::<ContainerRecord>(v).unwrap(), with);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("web-1.x_y").is_ok());
        assert!(check_name("-web").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn a_directory_without_record_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::new(tmp.path());
        fs::create_dir_all(store.dir().join("c".repeat(64))).unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn generated_ids_and_names() {
        let id = generate_id().unwrap();
        assert!(is_container_id(&id));
        assert_ne!(id, generate_id().unwrap());
        let name = generate_name(&id);
        assert!(check_name(&name).is_ok());
        assert!(name.ends_with(&id[..6]));
    }
}
