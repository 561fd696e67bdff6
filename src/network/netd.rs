//! `dockmaster netd`: the per-root network daemon. It serves DNS on every network's gateway
//! address (port 53, UDP and TCP) from the stored endpoints, forwards other names to the
//! host's resolvers, follows the store as containers come and go, and repairs what a crash
//! left behind when it starts ([`repair`]).
//!
//! One netd per root: it holds an exclusive flock on `<root>/networks/.netd.lock` for its
//! whole life (its files start with a dot: the store takes every other entry of that
//! directory for a network, and network names cannot start with one). [`ensure_running`] is what callers use: one lock try when netd runs already;
//! otherwise it starts `dockmaster --root ROOT netd` detached (like a shim: new session,
//! double fork, nobody's child) and waits until it answers.
//!
//! Starting without races: the launcher takes the lock itself and hands the locked file to
//! netd as descriptor 3 (a flock belongs to the open file, so netd holds it from its first
//! instruction, and no second launcher can slip in between). Descriptor 4 is a pipe on which
//! netd writes `ready` once its listeners are bound, or `error MESSAGE`.
//!
//! Exiting: on SIGTERM/SIGINT, or by itself once the store has had no network for a while
//! (30 s). The idle exit re-checks under the store lock and releases the netd lock before the
//! store lock, so a `connect` that creates a network and then calls [`ensure_running`] either
//! keeps this netd alive or finds the lock free and starts a new one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rustix::fs::{flock, FlockOperation};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::MissedTickBehavior;

use crate::error::{Categorized, Category};
use crate::network::dns::{self, Records, Server, ServerOptions, DNS_PORT};
use crate::network::link::{self, LinkError};
use crate::network::manager::{self, NetworkError};
use crate::network::model::{is_ours, Endpoint, NetworkConfig};
use crate::network::netns::{self, NetnsError};
use crate::network::store::{NetworkStore, StoreError};
use crate::runtime::container::{ContainerError, ContainerStore};

const LOCK_FILE: &str = ".netd.lock";
const PID_FILE: &str = ".netd.pid";
const LOG_FILE: &str = ".netd.log";

/// Where netd finds the locked `.netd.lock` and the readiness pipe its launcher passed.
const LOCK_FD: RawFd = 3;
const READY_FD: RawFd = 4;
const LOCK_FD_ENV: &str = "DOCKMASTER_NETD_LOCK_FD";
const READY_FD_ENV: &str = "DOCKMASTER_NETD_READY_FD";
/// Overrides /etc/resolv.conf as the source of upstream resolvers (tests, unusual hosts).
pub const RESOLV_CONF_ENV: &str = "DOCKMASTER_NETD_RESOLV_CONF";
/// Overrides the idle time before exiting, in milliseconds.
pub const IDLE_ENV: &str = "DOCKMASTER_NETD_IDLE_MS";

const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// How often the store and resolv.conf are looked at (a listing and a stat: cheap).
const POLL_INTERVAL: Duration = Duration::from_millis(300);
/// How often missing bridges are looked for and failed listeners retried.
const SLOW_INTERVAL: Duration = Duration::from_secs(5);
const IDLE_EXIT: Duration = Duration::from_secs(30);
/// How long [`ensure_running`] waits for a new netd to answer.
const START_TIMEOUT: Duration = Duration::from_secs(3);
const RESOLV_CONF_MAX: u64 = 64 << 10;
const READY_LINE_MAX: usize = 4096;
/// netd logs its start, repairs and changes at info unless the caller chose a filter.
const DEFAULT_LOG_FILTER: &str = "info,libcgroups=error";

#[derive(Debug, thiserror::Error)]
pub enum NetdError {
    #[error("netd: {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("netd: start {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("netd for {root}: {message} (log: {log})")]
    Failed {
        root: PathBuf,
        message: String,
        log: PathBuf,
    },
    #[error("netd for {root} exited without reporting (log: {log})")]
    Vanished { root: PathBuf, log: PathBuf },
    #[error("netd for {root} did not answer within {waited:?} (log: {log})")]
    NotReady {
        root: PathBuf,
        waited: Duration,
        log: PathBuf,
    },
    #[error("netd: inherited descriptor {fd} ({what}) is unusable: {reason}")]
    BadFd {
        fd: RawFd,
        what: &'static str,
        reason: String,
    },
    #[error("netd: start the async runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("netd: {0}")]
    Store(#[from] StoreError),
    #[error("netd: {0}")]
    Network(#[from] NetworkError),
    #[error("netd: {0}")]
    Netns(#[from] NetnsError),
    #[error("netd: {0}")]
    Link(#[from] LinkError),
}

impl Categorized for NetdError {
    fn category(&self) -> Category {
        match self {
            NetdError::Store(e) => e.category(),
            NetdError::Network(e) => e.category(),
            NetdError::Netns(e) => e.category(),
            NetdError::Link(e) => e.category(),
            NetdError::NotReady { .. } => Category::Transient,
            NetdError::Io { .. }
            | NetdError::Spawn { .. }
            | NetdError::Failed { .. }
            | NetdError::Vanished { .. }
            | NetdError::BadFd { .. }
            | NetdError::Runtime(_) => Category::Internal,
        }
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NetdError {
    let path = path.to_path_buf();
    move |source| NetdError::Io {
        action,
        path,
        source,
    }
}

/// What [`repair`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Store crash leftovers (temp files, half-removed network directories).
    pub leftovers: usize,
    /// Endpoint records of containers that are gone or lost their namespace.
    pub endpoints: usize,
    /// Namespace mounts (or their files) of containers that are gone.
    pub namespaces: usize,
    /// dockmaster links (bridges, host-side veths) no network or endpoint claims.
    pub links: usize,
}

impl RepairReport {
    pub fn is_empty(&self) -> bool {
        *self == RepairReport::default()
    }
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "removed {} stale endpoint(s), {} namespace(s), {} link(s), {} store leftover(s)",
            self.endpoints, self.namespaces, self.links, self.leftovers
        )
    }
}

/// How [`ensure_running_with`] starts netd. The defaults are production's.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// The dockmaster binary (default: this process's executable).
    pub exe: Option<PathBuf>,
    /// Upstream resolvers are read from here (default /etc/resolv.conf).
    pub resolv_conf: Option<PathBuf>,
    /// Exit after the store has had no network this long (default 30 s).
    pub idle_exit: Option<Duration>,
}

/// `<root>/networks/.netd.pid`.
pub fn pid_file(root: &Path) -> PathBuf {
    root.join("networks").join(PID_FILE)
}

/// `<root>/networks/.netd.log`, netd's stderr.
pub fn log_file(root: &Path) -> PathBuf {
    root.join("networks").join(LOG_FILE)
}

/// `<root>/networks/.netd.lock`, held by the running netd.
pub fn lock_file(root: &Path) -> PathBuf {
    root.join("networks").join(LOCK_FILE)
}

/// The pid of the netd serving `root`, if its pid file names a live netd of this root
/// (guards against pid reuse).
pub fn running_pid(root: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file(root))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let root = std::path::absolute(root).ok()?;
    let root = root.as_os_str().as_encoded_bytes();
    (args.contains(&&b"netd"[..]) && args.contains(&root)).then_some(pid)
}

/// Makes sure a netd serves `root`: one non-blocking lock try when it does; otherwise starts
/// one and waits (at most 3 s) until its DNS listeners are bound. Call it after `connect`,
/// never while holding the store lock (netd's start-up repair takes it).
pub fn ensure_running(root: &Path) -> Result<(), NetdError> {
    ensure_running_with(root, &SpawnOptions::default())
}

/// [`ensure_running`] with a chosen binary, resolv.conf or idle time.
pub fn ensure_running_with(root: &Path, options: &SpawnOptions) -> Result<(), NetdError> {
    // netd runs in `/`: a relative root must not change meaning.
    let root = std::path::absolute(root).map_err(io_err("resolve", root))?;
    let dir = root.join("networks");
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let lock_path = lock_file(&root);
    let lock = open_lock(&lock_path)?;
    if !try_lock(&lock, &lock_path)? {
        return Ok(());
    }
    spawn(&root, lock, options)
}

/// How long a watcher waits before trying again when netd could not be (re)started or its
/// pid file is not written yet.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// Keeps a netd running for as long as a container on a network lives: the container's shim
/// holds a pidfd of the netd serving its root and polls it with its other descriptors (no
/// timer, no wakeups while netd runs). When netd dies, [`NetdWatch::wake`] starts a new one,
/// whose start-up [`repair`] rebuilds links, namespaces and the nftables table from the
/// store. Many shims wake at once; the netd lock lets exactly one of them start it.
#[derive(Debug)]
pub struct NetdWatch {
    root: PathBuf,
    pidfd: Option<OwnedFd>,
    retry_at: Option<Instant>,
}

impl NetdWatch {
    /// Watches the netd of `root` (started by the caller, e.g. through [`ensure_running`]).
    pub fn new(root: &Path) -> NetdWatch {
        let mut watch = NetdWatch {
            root: root.to_path_buf(),
            pidfd: None,
            retry_at: None,
        };
        watch.arm();
        watch
    }

    /// The descriptor to poll for readability (netd exited), or -1 while none is held.
    pub fn fd(&self) -> RawFd {
        self.pidfd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// When [`NetdWatch::wake`] should run even though the descriptor did not fire.
    pub fn deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Call when the descriptor is readable or the deadline passed: restarts netd if it is
    /// gone and watches the one that runs.
    pub fn wake(&mut self) {
        self.pidfd = None;
        self.retry_at = None;
        if let Err(e) = ensure_running(&self.root) {
            tracing::warn!(
                "restart the network daemon for {}: {e}",
                self.root.display()
            );
        }
        self.arm();
    }

    fn arm(&mut self) {
        self.pidfd = running_pid(&self.root)
            .and_then(rustix::process::Pid::from_raw)
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            });
        if self.pidfd.is_none() {
            self.retry_at = Some(Instant::now() + WATCH_RETRY);
        }
    }
}

fn open_lock(path: &Path) -> Result<File, NetdError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// Exclusive, non-blocking; false when another open file holds it.
fn try_lock(file: &File, path: &Path) -> Result<bool, NetdError> {
    loop {
        match flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io_err("lock", path)(e.into())),
        }
    }
}

fn spawn(root: &Path, lock: File, options: &SpawnOptions) -> Result<(), NetdError> {
    let exe = match &options.exe {
        Some(exe) => exe.clone(),
        // The running binary even after its file was replaced (see shim::launch).
        None => PathBuf::from(crate::runtime::shim::SELF_EXE),
    };
    let spawn_err = |source| NetdError::Spawn {
        exe: exe.clone(),
        source,
    };
    let log_path = log_file(root);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err("open", &log_path))?;
    let (ready_r, ready_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let lock_src = crate::process::dup_high(&lock).map_err(spawn_err)?;
    let ready_src = crate::process::dup_high(&ready_w).map_err(spawn_err)?;
    drop(ready_w);
    let mut cmd = Command::new(&exe);
    cmd.arg("--root")
        .arg(root)
        .arg("netd")
        .env(LOCK_FD_ENV, LOCK_FD.to_string())
        .env(READY_FD_ENV, READY_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        // Not the caller's cwd: it may be a mount point someone wants to unmount.
        .current_dir("/");
    if std::env::var_os("DOCKMASTER_LOG").is_none() {
        cmd.env("DOCKMASTER_LOG", DEFAULT_LOG_FILTER);
    }
    if let Some(path) = &options.resolv_conf {
        cmd.env(RESOLV_CONF_ENV, path);
    }
    if let Some(idle) = options.idle_exit {
        cmd.env(IDLE_ENV, idle.as_millis().to_string());
    }
    // As for shims: netd is nobody's child and no session leader (see spawn_detached).
    crate::process::spawn_detached(
        &mut cmd,
        &[
            (lock_src.as_raw_fd(), LOCK_FD),
            (ready_src.as_raw_fd(), READY_FD),
        ],
    )
    .map_err(spawn_err)?;
    // netd holds the lock through its own descriptor now; ours must go, and so must our
    // write end of the pipe, or EOF never comes if netd dies.
    drop((lock_src, ready_src, lock));
    wait_ready(root, ready_r, &log_path)
}

/// Reads netd's first line from the readiness pipe, for at most [`START_TIMEOUT`].
fn wait_ready(root: &Path, ready: OwnedFd, log: &Path) -> Result<(), NetdError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pipe = File::from(ready);
    let mut buf = Vec::new();
    let mut eof = false;
    while !eof && !buf.contains(&b'\n') && buf.len() < READY_LINE_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetdError::NotReady {
                root: root.to_path_buf(),
                waited: START_TIMEOUT,
                log: log.to_path_buf(),
            });
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)], timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(io_err("wait for", log)(e.into())),
        }
        let mut chunk = [0u8; 512];
        match pipe.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("wait for", log)(e)),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("").trim();
    match line {
        // busy: another netd got there first (cannot happen while we pass the lock, but
        // harmless).
        "ready" | "busy" => Ok(()),
        "" => Err(NetdError::Vanished {
            root: root.to_path_buf(),
            log: log.to_path_buf(),
        }),
        other => Err(NetdError::Failed {
            root: root.to_path_buf(),
            message: other.strip_prefix("error ").unwrap_or(other).to_string(),
            log: log.to_path_buf(),
        }),
    }
}

/// Repairs the state of `root` after a crash, under the store lock: endpoint records of
/// containers that no longer exist (no record in `<root>/containers`) or whose namespace is
/// no longer mounted are removed; namespace mounts of containers that no longer exist are
/// unmounted; dockmaster links that no stored network or endpoint claims are deleted; then
/// bridges, sysctls and the nftables table are rebuilt from the store. Works in the calling
/// thread's network namespace (the host's).
///
/// A container counts as existing once its record is written, so callers must write the
/// record before `connect` (else a concurrent repair takes the fresh endpoints for stale).
pub fn repair(root: &Path) -> Result<RepairReport, NetdError> {
    let store = NetworkStore::open(root)?;
    let guard = store.lock()?;
    let containers = ContainerStore::new(root);
    let mut report = RepairReport {
        leftovers: guard.clean_leftovers()?,
        ..RepairReport::default()
    };

    let mut stale: BTreeSet<String> = BTreeSet::new();
    for endpoint in guard.all_endpoints()? {
        let id = &endpoint.container_id;
        if stale.contains(id) {
            continue;
        }
        if !container_exists(&containers, id) {
            tracing::info!(container = %id, network = %endpoint.network, "container is gone: removing its endpoints");
            stale.insert(id.clone());
        } else if !netns::is_netns(&manager::netns_path(root, id)) {
            tracing::info!(container = %id, network = %endpoint.network, "network namespace is gone: removing the container's endpoints");
            stale.insert(id.clone());
        }
    }
    for id in &stale {
        report.endpoints += guard.remove_endpoints(id)?.len();
    }

    for entry in netns::list(&manager::netns_dir(root))? {
        if container_exists(&containers, &entry.name) {
            continue;
        }
        tracing::info!(path = %entry.path.display(), mounted = entry.mounted, "container is gone: removing its network namespace");
        netns::remove(&entry.path)?;
        report.namespaces += 1;
    }

    let networks = guard.list()?;
    let endpoints = guard.all_endpoints()?;
    let claimed: HashSet<&str> = networks
        .iter()
        .map(|n| n.bridge.as_str())
        .chain(endpoints.iter().map(|e| e.host_veth.as_str()))
        .collect();
    for name in link::list_links()? {
        if is_ours(&name) && !claimed.contains(name.as_str()) {
            tracing::info!(link = %name, "deleting a link no network or endpoint claims");
            // Gone already (a veth dies with its namespace, asynchronously): nothing to count.
            if link::delete_link(&name)? {
                report.links += 1;
            }
        }
    }

    manager::apply_host_state(&guard)?;
    Ok(report)
}

/// A container exists while its directory holds a record; an unreadable record still counts
/// (better keep a stale endpoint than cut a live container off).
fn container_exists(containers: &ContainerStore, id: &str) -> bool {
    match containers.load(id) {
        Ok(_) => true,
        Err(ContainerError::NotFound(_)) => false,
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "cannot read the container record: keeping its network state");
            true
        }
    }
}

/// Settings netd takes from its environment (set by [`ensure_running_with`]).
struct Settings {
    resolv_conf: PathBuf,
    idle_exit: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            resolv_conf: std::env::var_os(RESOLV_CONF_ENV)
                .map_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF), PathBuf::from),
            idle_exit: std::env::var(IDLE_ENV)
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map_or(IDLE_EXIT, Duration::from_millis),
        }
    }
}

/// The descriptors a launcher passed, taken once per process.
struct Inherited {
    lock: Option<File>,
    ready: Option<File>,
}

static INHERITED_TAKEN: AtomicBool = AtomicBool::new(false);

impl Inherited {
    fn take(lock_path: &Path) -> Result<Inherited, NetdError> {
        if INHERITED_TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(Inherited {
                lock: None,
                ready: None,
            });
        }
        let ready = inherited_fd(READY_FD_ENV, READY_FD, "readiness pipe")?;
        if let Some(fd) = &ready {
            let meta = File::from(fd.try_clone().map_err(io_err("dup", lock_path))?)
                .metadata()
                .map_err(io_err("inspect the readiness pipe of", lock_path))?;
            if !meta.file_type().is_fifo() {
                return Err(NetdError::BadFd {
                    fd: READY_FD,
                    what: "readiness pipe",
                    reason: "not a pipe".into(),
                });
            }
        }
        let lock = inherited_fd(LOCK_FD_ENV, LOCK_FD, "lock")?.map(File::from);
        if let Some(file) = &lock {
            if !same_file(file, lock_path) {
                return Err(NetdError::BadFd {
                    fd: LOCK_FD,
                    what: "lock",
                    reason: format!("not {}", lock_path.display()),
                });
            }
        }
        Ok(Inherited {
            lock,
            ready: ready.map(File::from),
        })
    }
}

/// Descriptor `expected` when `env` names it and it is open; made close-on-exec so the
/// programs netd runs (nft) do not inherit it.
fn inherited_fd(
    env: &str,
    expected: RawFd,
    what: &'static str,
) -> Result<Option<OwnedFd>, NetdError> {
    let Some(value) = std::env::var_os(env) else {
        return Ok(None);
    };
    let bad = |reason: String| NetdError::BadFd {
        fd: expected,
        what,
        reason,
    };
    if value.to_str().and_then(|v| v.parse::<RawFd>().ok()) != Some(expected) {
        return Err(bad(format!("{env} is {value:?}")));
    }
    // SAFETY: F_GETFD only reads the descriptor flags; an invalid fd is reported as EBADF.
    if unsafe { libc::fcntl(expected, libc::F_GETFD) } < 0 {
        return Err(bad(io::Error::last_os_error().to_string()));
    }
    // SAFETY: the descriptor is open (checked above), was placed there by the launcher for
    // this process, and nothing else in the process uses it: the number was taken at exec,
    // and INHERITED_TAKEN makes this the only adoption.
    let fd = unsafe { OwnedFd::from_raw_fd(expected) };
    // SAFETY: F_SETFD on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(bad(io::Error::last_os_error().to_string()));
    }
    Ok(Some(fd))
}

/// Whether `file` is the file now at `path` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `<root>/networks/.netd.pid` naming this process; removed on drop if it still does.
struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    fn write(path: PathBuf) -> Result<PidFile, NetdError> {
        let pid = std::process::id();
        // Renamed into place so readers never see half a number; not fsutil's temp name,
        // which the store's leftover cleaning may remove at any time. Moot after a power loss
        // (like shim.pid), so no fsync.
        let tmp = path.with_extension(format!("new-{pid}"));
        fs::write(&tmp, format!("{pid}\n"))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(io_err("write", &path))?;
        Ok(PidFile { path, pid })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == self.pid.to_string().as_str());
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Runs netd for `root` until SIGTERM/SIGINT or the idle exit. Returns at once (Ok) when
/// another netd holds the lock.
pub fn run(root: &Path) -> Result<(), NetdError> {
    let lock_path = lock_file(root);
    let inherited = Inherited::take(&lock_path)?;
    let mut ready = inherited.ready;
    let result = run_locked(root, &lock_path, inherited.lock, &mut ready);
    if let (Err(e), Some(pipe)) = (&result, ready.as_mut()) {
        let message = e.to_string().replace('\n', " ");
        let _ = writeln!(pipe, "error {message}");
    }
    result
}

fn run_locked(
    root: &Path,
    lock_path: &Path,
    lock: Option<File>,
    ready: &mut Option<File>,
) -> Result<(), NetdError> {
    let dir = root.join("networks");
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let lock = match lock {
        Some(lock) => lock,
        None => open_lock(lock_path)?,
    };
    // Inherited: the same open file the launcher locked, so this succeeds at once.
    if !try_lock(&lock, lock_path)? {
        tracing::info!(root = %root.display(), "another netd serves this root");
        signal_ready(ready, "busy");
        return Ok(());
    }
    let pid_file = PidFile::write(pid_file(root))?;
    tracing::info!(root = %root.display(), pid = pid_file.pid, "netd starting");
    let settings = Settings::from_env();
    match repair(root) {
        Ok(report) if report.is_empty() => tracing::info!("repair: nothing stale"),
        Ok(report) => tracing::info!("repair: {report}"),
        // DNS is still worth serving; connect re-applies host state on every change anyway.
        Err(e) => tracing::warn!("repair failed: {e}"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetdError::Runtime)?;
    let daemon = Daemon {
        root: root.to_path_buf(),
        store: NetworkStore::open(root)?,
        lock_path: lock_path.to_path_buf(),
        settings,
    };
    runtime.block_on(daemon.serve(lock, pid_file, ready))
}

fn signal_ready(ready: &mut Option<File>, word: &str) {
    if let Some(mut pipe) = ready.take() {
        let _ = writeln!(pipe, "{word}");
    }
}

/// What DNS is computed from.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    networks: Vec<NetworkConfig>,
    endpoints: Vec<Endpoint>,
}

impl Snapshot {
    /// Without the lock: every record is replaced atomically, so this is a consistent enough
    /// view (a change between two reads shows up at the next poll).
    fn read(store: &NetworkStore) -> Result<Snapshot, StoreError> {
        let networks = store.list()?;
        let mut endpoints = Vec::new();
        for net in &networks {
            match store.endpoints(&net.name) {
                Ok(mut e) => endpoints.append(&mut e),
                Err(StoreError::NetworkNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Snapshot {
            networks,
            endpoints,
        })
    }

    fn records(&self) -> Records {
        Records::new(&self.networks, &self.endpoints)
    }

    /// Containers with their own `--dns` servers: queries from their addresses go there.
    fn client_upstreams(&self) -> HashMap<Ipv4Addr, Vec<SocketAddr>> {
        self.endpoints
            .iter()
            .filter(|e| !e.dns.is_empty())
            .map(|e| {
                let servers = e
                    .dns
                    .iter()
                    .map(|ip| SocketAddr::new((*ip).into(), DNS_PORT))
                    .collect();
                (e.ip, servers)
            })
            .collect()
    }

    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.networks
            .iter()
            .map(|n| (n.name.clone(), SocketAddr::new(n.gateway.into(), DNS_PORT)))
            .collect()
    }
}

/// Follows /etc/resolv.conf by its mtime, size and inode.
struct ResolvConf {
    path: PathBuf,
    stamp: Option<(SystemTime, u64, u64)>,
    read_once: bool,
}

impl ResolvConf {
    fn new(path: PathBuf) -> ResolvConf {
        ResolvConf {
            path,
            stamp: None,
            read_once: false,
        }
    }

    /// The upstreams when the file changed since the last call (always on the first).
    fn refresh(&mut self) -> Option<Vec<SocketAddr>> {
        let stamp = fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())));
        if self.read_once && stamp == self.stamp {
            return None;
        }
        self.read_once = true;
        self.stamp = stamp;
        let text = match File::open(&self.path).and_then(|f| {
            let mut bytes = Vec::new();
            f.take(RESOLV_CONF_MAX).read_to_end(&mut bytes)?;
            Ok(bytes)
        }) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "no upstream resolvers: other names get SERVFAIL");
                String::new()
            }
        };
        let upstreams = dns::upstreams_from_resolv_conf(&text);
        tracing::info!(path = %self.path.display(), ?upstreams, "upstream resolvers");
        Some(upstreams)
    }
}

struct Daemon {
    root: PathBuf,
    store: NetworkStore,
    lock_path: PathBuf,
    settings: Settings,
}

impl Daemon {
    async fn serve(
        self,
        lock: File,
        pid_file: PidFile,
        ready: &mut Option<File>,
    ) -> Result<(), NetdError> {
        let signal_err = |e| io_err("handle signals for", &self.root)(e);
        let mut sigterm = signal(SignalKind::terminate()).map_err(signal_err)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(signal_err)?;
        let mut resolv = ResolvConf::new(self.settings.resolv_conf.clone());
        let mut state = Snapshot::read(&self.store)?;
        let server = Server::new(
            state.records(),
            resolv.refresh().unwrap_or_default(),
            ServerOptions::default(),
        );
        server.set_client_upstreams(state.client_upstreams());
        let mut listen_errors = Vec::new();
        let mut listeners_ok = self
            .set_listeners(&server, &state, &mut listen_errors)
            .await;
        signal_ready(ready, "ready");
        tracing::info!(
            networks = state.networks.len(),
            endpoints = state.endpoints.len(),
            "netd serving dns"
        );

        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_slow = Instant::now();
        let mut empty_since = state.networks.is_empty().then(Instant::now);
        let mut read_failing = false;
        loop {
            tokio::select! {
                _ = sigterm.recv() => {
                    tracing::info!("SIGTERM: netd stopping");
                    break;
                }
                _ = sigint.recv() => {
                    tracing::info!("SIGINT: netd stopping");
                    break;
                }
                _ = ticker.tick() => {}
            }
            if !same_file(&lock, &self.lock_path) {
                // Someone removed the state (or the lock): a new netd may start for it, and
                // two must never serve the same addresses.
                tracing::warn!(path = %self.lock_path.display(), "the lock file is gone or replaced: netd stopping");
                break;
            }
            if let Some(upstreams) = resolv.refresh() {
                server.set_upstreams(upstreams);
            }
            let changed = match Snapshot::read(&self.store) {
                Ok(next) => {
                    read_failing = false;
                    if next != state {
                        state = next;
                        true
                    } else {
                        false
                    }
                }
                Err(e) => {
                    if !read_failing {
                        tracing::warn!("reading the network store: {e}");
                    }
                    read_failing = true;
                    false
                }
            };
            if changed {
                server.update(state.records());
                server.set_client_upstreams(state.client_upstreams());
                tracing::info!(
                    networks = state.networks.len(),
                    endpoints = state.endpoints.len(),
                    "store changed: dns updated"
                );
            }
            let slow = last_slow.elapsed() >= SLOW_INTERVAL;
            if slow {
                last_slow = Instant::now();
            }
            if changed || (slow && !listeners_ok) {
                listeners_ok = self
                    .set_listeners(&server, &state, &mut listen_errors)
                    .await;
            }
            if changed || slow {
                self.fix_drift(&state).await;
            }
            if !state.networks.is_empty() {
                empty_since = None;
                continue;
            }
            let since = *empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.settings.idle_exit {
                match self
                    .store
                    .lock()
                    .and_then(|guard| Ok((guard.list()?, guard)))
                {
                    Ok((networks, guard)) if networks.is_empty() => {
                        tracing::info!(
                            "no network for {:?}: netd exiting",
                            self.settings.idle_exit
                        );
                        // Lock released before the store lock: see the module docs.
                        drop(pid_file);
                        drop(lock);
                        drop(guard);
                        server.shutdown().await;
                        return Ok(());
                    }
                    Ok(_) => empty_since = None,
                    Err(e) => tracing::warn!("idle check: {e}"),
                }
            }
        }
        server.shutdown().await;
        drop(pid_file);
        drop(lock);
        Ok(())
    }

    /// Listeners on every network's gateway; false while some cannot be bound (logged when
    /// the set of failures changes).
    async fn set_listeners(
        &self,
        server: &Server,
        state: &Snapshot,
        last_errors: &mut Vec<String>,
    ) -> bool {
        let errors: Vec<String> = server
            .set_listeners(&state.listeners())
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        if errors != *last_errors {
            for e in &errors {
                tracing::warn!("{e}");
            }
            *last_errors = errors;
        }
        last_errors.is_empty()
    }

    /// Rebuilds host state when a stored network's bridge is missing (deleted by hand, or a
    /// network created since the last apply).
    async fn fix_drift(&self, state: &Snapshot) {
        let bridges: Vec<String> = state.networks.iter().map(|n| n.bridge.clone()).collect();
        if bridges.is_empty() {
            return;
        }
        let store = self.store.clone();
        let work = tokio::task::spawn_blocking(move || -> Result<bool, NetdError> {
            let links: HashSet<String> = link::list_links()?.into_iter().collect();
            if bridges.iter().all(|b| links.contains(b)) {
                return Ok(false);
            }
            let guard = store.lock()?;
            manager::apply_host_state(&guard)?;
            Ok(true)
        });
        match work.await {
            Ok(Ok(true)) => tracing::info!("a bridge was missing: host network state re-applied"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!("re-applying host network state: {e}"),
            Err(e) => tracing::warn!("re-applying host network state: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_reads_well_in_logs() {
        let report = RepairReport {
            leftovers: 1,
            endpoints: 2,
            namespaces: 3,
            links: 4,
        };
        assert_eq!(
            report.to_string(),
            "removed 2 stale endpoint(s), 3 namespace(s), 4 link(s), 1 store leftover(s)"
        );
        assert!(!report.is_empty());
        assert!(RepairReport::default().is_empty());
    }

    #[test]
    fn resolv_conf_is_reread_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        fs::write(&path, "nameserver 10.0.0.53\n").unwrap();
        let mut resolv = ResolvConf::new(path.clone());
        assert_eq!(
            resolv.refresh(),
            Some(vec!["10.0.0.53:53".parse().unwrap()])
        );
        assert_eq!(resolv.refresh(), None);
        // A new file (editors and resolvconf replace it): another inode.
        let next = dir.path().join("next");
        fs::write(&next, "nameserver 10.0.0.54\nnameserver 10.0.0.55\n").unwrap();
        fs::rename(&next, &path).unwrap();
        assert_eq!(
            resolv.refresh(),
            Some(vec![
                "10.0.0.54:53".parse().unwrap(),
                "10.0.0.55:53".parse().unwrap()
            ])
        );
        fs::remove_file(&path).unwrap();
        assert_eq!(resolv.refresh(), Some(vec![]));
        assert_eq!(resolv.refresh(), None);
    }

    #[test]
    fn lock_is_exclusive_across_open_files_and_shared_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let first = open_lock(&path).unwrap();
        assert!(try_lock(&first, &path).unwrap());
        // The same open file (what netd inherits) locks again at once.
        let inherited = first.try_clone().unwrap();
        assert!(try_lock(&inherited, &path).unwrap());
        let other = open_lock(&path).unwrap();
        assert!(!try_lock(&other, &path).unwrap());
        drop(first);
        // Still held through the duplicate.
        assert!(!try_lock(&other, &path).unwrap());
        drop(inherited);
        assert!(try_lock(&other, &path).unwrap());
        assert!(same_file(&other, &path));
        fs::remove_file(&path).unwrap();
        assert!(!same_file(&other, &path));
    }

    #[test]
    fn running_pid_needs_a_live_netd_of_this_root() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("networks")).unwrap();
        assert_eq!(running_pid(dir.path()), None);
        // This test process is alive but is no netd.
        fs::write(pid_file(dir.path()), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(running_pid(dir.path()), None);
        fs::write(pid_file(dir.path()), "garbage").unwrap();
        assert_eq!(running_pid(dir.path()), None);
    }
}
