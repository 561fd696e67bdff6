//! The per-container shim: `dockmaster shim <id>`, started by re-executing the binary.
//!
//! It runs in its own session as the child subreaper, mounts the rootfs, creates and starts
//! the container through the [`Engine`], holds the container's stdout/stderr pipes and writes
//! them to the json-file log, answers the shim protocol on `<container>/shim.sock`, and when
//! the container's init ends records the exit atomically, deletes the engine state and cgroup,
//! unmounts the rootfs and exits. Nothing here depends on the process that launched it: killing
//! the CLI or the agent never stops a container.
//!
//! Single-threaded, one `poll(2)` loop; no async runtime. Signals arrive through a self-pipe
//! written by handlers (not a blocked mask + signalfd: a blocked mask would be inherited by
//! every container process the engine forks).
//!
//! The shim also supervises (`supervise.rs`): it restarts the init under the container's
//! restart policy with a backoff, and runs its healthcheck on schedule. The shim is the one
//! process sure to outlive whoever created the container, so supervision lives here.

mod exec;
pub mod fdpass;
mod launch;
mod supervise;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::image::digest::Digest;
use crate::image::snapshot::SnapshotStore;
use crate::runtime::container::{ContainerPaths, ContainerRecord, ContainerStore};
use crate::runtime::engine::{self, Engine, Libcontainer, Stdio};
use crate::runtime::logs::{LogConfig, LogWriter, Stream};
use crate::runtime::protocol::{
    bind_listener, encode_frame, exit_code_and_signal, Connection, ContainerState, ContainerStats,
    ErrorKind, ExitRecord, ReadOutcome, Request, Response, Status,
};
use crate::runtime::rootfs;
use crate::runtime::seccomp;

pub use exec::{exec_in_container, exec_process, ExecError, ExecOutcome};
pub use launch::{spawn, LaunchError, Launched, StartFailure, SELF_EXE};

/// Environment variable naming the descriptor the shim reports its start (and, when
/// attached, the exit) on.
pub const STATUS_FD_ENV: &str = "DOCKMASTER_SHIM_STATUS_FD";
/// Descriptors of the launcher's stdout and stderr when the shim is attached (`run` in the
/// foreground): the container's output is copied there as well as to the log.
pub const ATTACH_OUT_FD: RawFd = 4;
pub const ATTACH_ERR_FD: RawFd = 5;
/// How long the shim keeps reading the container's pipes after its init ended (processes
/// outside its PID namespace could hold them open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Quiet time after start before the shim gives back the memory only starting needed.
const TRIM_AFTER_START: Duration = Duration::from_secs(2);
/// Quiet time after a client request (exec, stats...) before trimming again.
const TRIM_AFTER_REQUEST: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 64 * 1024;

/// The shim's command line.
#[derive(Debug, Clone)]
pub struct ShimOptions {
    pub root: PathBuf,
    pub id: String,
    /// Copy the container's output to descriptors 4 and 5 and report the exit on the status
    /// descriptor.
    pub attach: bool,
}

/// Runs the shim; returns its process exit code.
pub fn main(opts: ShimOptions) -> i32 {
    let mut status = status_pipe();
    let store = ContainerStore::new(&opts.root);
    let paths = store.paths(&opts.id);
    let started = Shim::start(&opts, &store, &paths);
    let mut shim = match started {
        Ok(shim) => shim,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("shim {}: {message}", opts.id);
            // Clean up before reporting: the launcher may act on the container right after.
            cleanup_failed_start(&opts.id, &paths);
            let auto_remove = store.load(&opts.id).is_ok_and(|r| r.auto_remove);
            if auto_remove {
                let _ = store.remove(&opts.id);
            } else {
                // The container never ran: record it like Docker's exit codes for a command
                // that cannot be found (127) or run (126).
                let code = match StartFailure::classify(&message) {
                    StartFailure::NotFound => 127,
                    StartFailure::CannotInvoke | StartFailure::Other => 126,
                };
                let now = SystemTime::now();
                let _ = ExitRecord {
                    exit_code: code,
                    signal: None,
                    oom_killed: false,
                    started_at: None,
                    finished_at: now,
                    restart_count: 0,
                    manually_stopped: false,
                    error: None,
                }
                .write(&paths.exit());
            }
            if let Some(s) = status.as_mut() {
                let _ = writeln!(s, "error {message}");
            }
            return 1;
        }
    };
    if let Some(s) = status.as_mut() {
        let _ = writeln!(s, "started {} {}", shim.init_pid, std::process::id());
    }
    if !opts.attach {
        status = None;
    }
    shim.status = status;
    match shim.run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shim {}: {e}", opts.id);
            1
        }
    }
}

fn status_pipe() -> Option<File> {
    let fd: RawFd = std::env::var(STATUS_FD_ENV).ok()?.parse().ok()?;
    std::env::remove_var(STATUS_FD_ENV);
    take_fd(fd)
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own; failure only leaves the flag unset.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

fn take_fd(fd: RawFd) -> Option<File> {
    // SAFETY: fcntl only queries whether the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the launcher passed this descriptor for the shim's exclusive use.
    let f = unsafe { File::from_raw_fd(fd) };
    set_cloexec(fd);
    Some(f)
}

/// Releases what a container holds on the host: engine state, its cgroup (also one the engine
/// no longer knows, e.g. after a crash) and the rootfs mount. Idempotent; used when the
/// container ends, when its start fails, and by `rm` for containers whose shim is gone.
pub fn release(id: &str, paths: &ContainerPaths) -> Result<(), ShimError> {
    let engine = release_engine(id, paths);
    let unmounted = rootfs::unmount(&paths.rootfs());
    // Endpoints, addresses and published ports go with the container's process.
    if let Some(root) = paths.dir.parent().and_then(Path::parent) {
        if let Err(e) = crate::network::sandbox::teardown(root, id) {
            eprintln!("shim {id}: release the container's networks: {e}");
        }
    }
    engine?;
    unmounted?;
    Ok(())
}

/// The part of [`release`] a restart needs: the engine's state and the cgroup of the run
/// that ended. The rootfs mount, the network namespace and endpoints and the generated /etc
/// files stay for the next run.
fn release_engine(id: &str, paths: &ContainerPaths) -> Result<(), ShimError> {
    let engine = Libcontainer::new(paths.engine()).delete(id);
    if let Some(cg) = engine::container_cgroup(id) {
        let _ = cg.remove_within(Duration::from_secs(2));
    }
    Ok(engine?)
}

/// The namespace and files of the container a `container:NAME` container shares.
fn peer_sandbox(
    root: &Path,
    store: &ContainerStore,
    name: &str,
) -> Result<crate::network::sandbox::Peer, ShimError> {
    let peer_err = |reason: String| {
        ShimError::Network(crate::network::sandbox::SandboxError::Peer {
            name: name.to_string(),
            reason,
        })
    };
    let peer = store.resolve(name).map_err(|e| peer_err(e.to_string()))?;
    let netns = crate::network::manager::netns_path(root, &peer.id);
    if !crate::network::netns::is_netns(&netns) {
        return Err(peer_err(
            "it is not running on a bridge network (only those can be shared)".into(),
        ));
    }
    Ok(crate::network::sandbox::Peer {
        netns,
        files: store.paths(&peer.id).sandbox_files(),
    })
}

/// Points the spec's network namespace at `path`.
fn join_network_namespace(spec: &mut oci_spec::runtime::Spec, path: PathBuf) {
    use oci_spec::runtime::LinuxNamespaceType;
    if let Some(linux) = spec.linux_mut() {
        if let Some(namespaces) = linux.namespaces_mut() {
            for ns in namespaces.iter_mut() {
                if ns.typ() == LinuxNamespaceType::Network {
                    ns.set_path(Some(path.clone()));
                }
            }
        }
    }
}

/// Undoes what a failed start left: [`release`], plus the pid file and socket.
fn cleanup_failed_start(id: &str, paths: &ContainerPaths) {
    let _ = release(id, paths);
    let _ = std::fs::remove_file(paths.shim_pid());
    let _ = std::fs::remove_file(paths.socket());
}

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("container {id}", id = .1)]
    Container(#[source] crate::runtime::container::ContainerError, String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("mount the root filesystem")]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("layer {layer} of the container's image: {reason}")]
    Layer { layer: String, reason: String },
    #[error("write the exit record")]
    Exit(#[from] crate::runtime::protocol::ProtocolError),
    #[error("open the log")]
    Log(#[from] crate::runtime::logs::LogError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("set up the container's network: {0}")]
    Network(#[from] crate::network::sandbox::SandboxError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ShimError {
    let what = what.into();
    move |source| ShimError::Io { what, source }
}

// ---- signals -------------------------------------------------------------------------------

/// Write end of the self-pipe, for the signal handlers.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking so a full pipe
        // (wakeup already pending) only drops this byte.
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

/// Installs handlers: SIGCHLD wakes the loop; SIGTERM, SIGINT, SIGHUP and SIGPIPE are caught
/// and ignored (a shim must outlive terminals and callers). Handlers, unlike SIG_IGN, are
/// reset by execve, so container processes start with default dispositions.
fn install_signal_handlers() -> io::Result<File> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(io::Error::from)?;
    SIGNAL_PIPE.store(w.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(w);
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: the handler only calls write(2) on a descriptor set before installation.
        unsafe { sigaction(sig, &action) }.map_err(io::Error::from)?;
    }
    Ok(File::from(r))
}

// ---- the shim ------------------------------------------------------------------------------

struct Client {
    stream: UnixStream,
    conn: Connection,
    fds: Vec<OwnedFd>,
}

struct PendingStop {
    /// The client waiting for the stop; `None` for the shim's own stop of an unhealthy
    /// container.
    client: Option<u64>,
    deadline: Instant,
    killed: bool,
}

struct Shim {
    id: String,
    record: ContainerRecord,
    paths: ContainerPaths,
    store: ContainerStore,
    engine: Libcontainer,
    /// The container's spec process (exec starts from it).
    process: oci_spec::runtime::Process,
    /// The container's cgroup, looked up once (stats are read often).
    cgroup: Option<crate::runtime::cgroups::Cgroup>,
    init_pid: i32,
    started_at: SystemTime,
    listener: UnixListener,
    signals: File,
    clients: BTreeMap<u64, Client>,
    next_client: u64,
    stdout: Option<File>,
    stderr: Option<File>,
    attach_out: Option<File>,
    attach_err: Option<File>,
    logs: Option<LogWriter>,
    status: Option<File>,
    /// Raw wait status of the init, once it ended.
    init_status: Option<(i32, SystemTime)>,
    drain_deadline: Option<Instant>,
    /// When to give idle memory back ([`crate::process::trim_idle_memory`]); None once done.
    trim_at: Option<Instant>,
    stops: Vec<PendingStop>,
    /// Exec'd processes still running: pid -> client waiting for the exit.
    execs: BTreeMap<i32, u64>,
    exec_counter: u32,
    /// The netd serving this container's networks, restarted when it dies (DNS, repair).
    netd: Option<crate::network::netd::NetdWatch>,
    /// Restarts and healthchecks (supervise.rs).
    sup: supervise::Supervisor,
}

impl Shim {
    fn start(
        opts: &ShimOptions,
        store: &ContainerStore,
        paths: &ContainerPaths,
    ) -> Result<Shim, ShimError> {
        let id = opts.id.clone();
        let record = store
            .load(&id)
            .map_err(|e| ShimError::Container(e, id.clone()))?;
        // First: close-on-exec before anything (netd, the engine) is started from here.
        let (attach_out, attach_err) = if opts.attach {
            (take_fd(ATTACH_OUT_FD), take_fd(ATTACH_ERR_FD))
        } else {
            (None, None)
        };
        let signals = install_signal_handlers().map_err(io_err("install signal handlers"))?;
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| ShimError::Io {
            what: "become the child subreaper".into(),
            source: e.into(),
        })?;
        // No fsync: after a power loss the shim is gone whatever the file says.
        crate::fsutil::write_replace(
            &paths.shim_pid(),
            format!("{}\n", std::process::id()).as_bytes(),
            false,
        )
        .map_err(io_err(format!("write {}", paths.shim_pid().display())))?;

        let layers = layer_dirs(&opts.root, &record)?;
        // A --rm container's upper dir dies with it: no syncs (see mount_overlay_opts).
        rootfs::mount_overlay_opts(
            &paths.overlay(),
            &layers,
            &paths.rootfs(),
            rootfs::MountMethod::Auto,
            record.auto_remove,
        )?;
        // Docker creates a working directory the image lacks (in the container's upper dir).
        let spec = oci_spec::runtime::Spec::load(paths.spec()).map_err(|e| ShimError::Io {
            what: format!("read {}", paths.spec().display()),
            source: io::Error::other(e.to_string()),
        })?;
        // Kept for exec, which starts from the container's process.
        let process = spec.process().clone().ok_or_else(|| ShimError::Io {
            what: format!("read {}", paths.spec().display()),
            source: io::Error::other("the spec has no process"),
        })?;
        let cwd = process.cwd().to_string_lossy().into_owned();
        crate::image::unpack::create_dir_in_root(&paths.rootfs(), &cwd)
            .map_err(io_err(format!("create the working directory {cwd}")))?;

        let logs = LogWriter::open(
            paths.log(),
            LogConfig {
                max_size: record.log_max_bytes,
                max_files: record.log_max_files,
            },
        )?;
        let listener = bind_listener(&paths.socket())
            .map_err(io_err(format!("bind {}", paths.socket().display())))?;

        // Networking: namespace, endpoints, published ports and the generated /etc files.
        let mut spec = spec;
        let mut netd = None;
        if let Some(network) = &record.network {
            let peer = match &network.mode {
                crate::network::sandbox::NetMode::Container(name) => {
                    Some(peer_sandbox(&opts.root, store, name)?)
                }
                _ => None,
            };
            let hostname = spec
                .hostname()
                .clone()
                .unwrap_or_else(|| id[..12].to_string());
            let sandbox = crate::network::sandbox::setup(
                &opts.root,
                &id,
                &record.name,
                &hostname,
                network,
                &paths.sandbox_files(),
                peer,
            )?;
            if let Some(path) = sandbox.join {
                join_network_namespace(&mut spec, path);
            }
            if !sandbox.endpoints.is_empty() {
                netd = Some(crate::network::netd::NetdWatch::new(&opts.root));
            }
        }
        // libcontainer reads the bundle's config.json: the spec itself, or (usually) the spec
        // with its seccomp profile moved to the cached-filter hook.
        let seccomp_cache = opts.root.join("seccomp");
        let (engine_spec, seccomp) = match seccomp::engine_spec(&spec, &seccomp_cache)? {
            Some((engine_spec, load)) => (engine_spec, Some(load)),
            None => (spec, None),
        };
        let engine_bytes = serde_json::to_vec(&engine_spec).map_err(|e| ShimError::Io {
            what: "serialize the engine's spec".into(),
            source: io::Error::other(e.to_string()),
        })?;
        // Rewritten at every start, so a crash mid-write costs nothing: no fsync.
        std::fs::write(paths.engine_spec(), engine_bytes)
            .map_err(io_err(format!("write {}", paths.engine_spec().display())))?;
        let engine = Libcontainer::new(paths.engine()).with_seccomp(seccomp);
        let (init_pid, stdout, stderr) = launch_init(&engine, &id, paths, &record)?;
        let started_at = SystemTime::now();
        let cgroup = engine::container_cgroup(&id);
        let sup = supervise::Supervisor::new(&record, paths);
        Ok(Shim {
            id,
            record,
            paths: paths.clone(),
            store: store.clone(),
            engine,
            process,
            cgroup,
            init_pid,
            started_at,
            listener,
            signals,
            clients: BTreeMap::new(),
            next_client: 0,
            stdout: Some(stdout),
            stderr: Some(stderr),
            attach_out,
            attach_err,
            logs: Some(logs),
            status: None,
            init_status: None,
            drain_deadline: None,
            trim_at: Some(Instant::now() + TRIM_AFTER_START),
            stops: Vec::new(),
            execs: BTreeMap::new(),
            exec_counter: 0,
            netd,
            sup,
        })
    }

    fn run(&mut self) -> Result<(), ShimError> {
        // A child that ended before the handlers saw it is found by the first sweep.
        self.reap();
        loop {
            // The init ended and its output is drained: restart it or end for good.
            if self.init_status.is_some() && self.sup.restart_at.is_none() {
                let drained = self.stdout.is_none() && self.stderr.is_none();
                let late = self.drain_deadline.is_some_and(|d| Instant::now() >= d);
                if drained || late {
                    if !self.should_restart() {
                        return self.finish();
                    }
                    self.schedule_restart();
                }
            }
            if self.sup.restart_at.is_some_and(|t| Instant::now() >= t) {
                if let Err(e) = self.restart() {
                    let message = format!("restart the container: {e:#}").replace('\n', " ");
                    eprintln!("shim {}: {message}", self.id);
                    self.sup.error = Some(message);
                    return self.finish();
                }
            }
            self.poll_once();
        }
    }

    fn poll_once(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let pollfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        fds.push(pollfd(self.signals.as_raw_fd(), libc::POLLIN));
        fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
        fds.push(pollfd(
            self.stdout.as_ref().map_or(-1, |f| f.as_raw_fd()),
            libc::POLLIN,
        ));
        fds.push(pollfd(
            self.stderr.as_ref().map_or(-1, |f| f.as_raw_fd()),
            libc::POLLIN,
        ));
        // Not once the container ended: its networks are about to be released.
        let watching = self.init_status.is_none();
        fds.push(pollfd(
            self.netd
                .as_ref()
                .filter(|_| watching)
                .map_or(-1, |w| w.fd()),
            libc::POLLIN,
        ));
        fds.push(pollfd(self.probe_fd(), libc::POLLIN));
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for id in &ids {
            let c = &self.clients[id];
            let mut ev = 0;
            if c.conn.wants_read() {
                ev |= libc::POLLIN;
            }
            if c.conn.wants_write() {
                ev |= libc::POLLOUT;
            }
            fds.push(pollfd(c.stream.as_raw_fd(), ev));
        }
        let timeout = self.poll_timeout();
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            return; // EINTR: a signal handler ran; loop again.
        }
        let ready = |i: usize| fds[i].revents != 0;
        if ready(0) {
            let mut buf = [0u8; 64];
            while matches!((&self.signals).read(&mut buf), Ok(n) if n > 0) {}
        }
        // Reap on every wakeup: cheap, and robust against coalesced signals.
        self.reap();
        if ready(1) {
            self.accept();
        }
        if ready(2) {
            self.pump(Stream::Stdout);
        }
        if ready(3) {
            self.pump(Stream::Stderr);
        }
        if ready(5) {
            self.read_probe_output();
        }
        for (i, id) in ids.iter().enumerate() {
            if fds[6 + i].revents != 0 {
                self.service_client(*id);
            }
        }
        let netd_due = self
            .netd
            .as_ref()
            .and_then(|w| w.deadline())
            .is_some_and(|d| Instant::now() >= d);
        if watching && (ready(4) || netd_due) {
            if let Some(w) = self.netd.as_mut() {
                w.wake();
            }
        }
        self.check_stops();
        self.supervise_tick();
        self.clients.retain(|_, c| !c.conn.is_finished());
        if self.trim_at.is_some_and(|t| Instant::now() >= t) {
            self.trim_at = None;
            crate::process::trim_idle_memory();
        }
    }

    fn poll_timeout(&self) -> libc::c_int {
        let now = Instant::now();
        let deadlines = self
            .stops
            .iter()
            .filter(|s| !s.killed)
            .map(|s| s.deadline)
            .chain(self.drain_deadline)
            .chain(self.trim_at)
            .chain(self.supervision_deadline())
            .chain(
                self.netd
                    .as_ref()
                    .filter(|_| self.init_status.is_none())
                    .and_then(|w| w.deadline()),
            );
        match deadlines.min() {
            None => -1,
            Some(d) => d.saturating_duration_since(now).as_millis().min(60_000) as libc::c_int + 1,
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out pointer; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if pid == self.init_pid && self.init_status.is_none() {
                self.init_status = Some((status, SystemTime::now()));
                self.drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
            } else if self.is_probe(pid) {
                self.probe_exited(status);
            } else if let Some(client) = self.execs.remove(&pid) {
                let (exit_code, signal) = exit_code_and_signal(status);
                self.respond(client, &Response::ExecExited { exit_code, signal });
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.next_client += 1;
                    self.clients.insert(
                        self.next_client,
                        Client {
                            stream,
                            conn: Connection::new(format!(
                                "dockmaster-shim {}",
                                env!("CARGO_PKG_VERSION")
                            )),
                            fds: Vec::new(),
                        },
                    );
                }
                Err(_) => return,
            }
        }
    }

    /// Moves what the container wrote on one stream into the log (and the attached caller).
    fn pump(&mut self, stream: Stream) {
        let mut buf = vec![0u8; READ_CHUNK];
        // Bounded: a chatty container must not starve the socket.
        for _ in 0..16 {
            let pipe = match stream {
                Stream::Stdout => self.stdout.as_mut(),
                Stream::Stderr => self.stderr.as_mut(),
            };
            let Some(pipe) = pipe else { return };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    if let Some(l) = self.logs.as_mut() {
                        l.close_stream(stream);
                    }
                    match stream {
                        Stream::Stdout => self.stdout = None,
                        Stream::Stderr => self.stderr = None,
                    }
                    return;
                }
                Ok(n) => {
                    if let Some(l) = self.logs.as_mut() {
                        l.write(stream, &buf[..n]);
                        if let Some(e) = l.take_error() {
                            eprintln!("shim {}: log: {e}", self.id);
                        }
                    }
                    let attached = match stream {
                        Stream::Stdout => &mut self.attach_out,
                        Stream::Stderr => &mut self.attach_err,
                    };
                    if let Some(f) = attached.as_mut() {
                        // The caller went away: stop copying, keep logging.
                        if f.write_all(&buf[..n]).is_err() {
                            *attached = None;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn service_client(&mut self, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        self.trim_at = Some(Instant::now() + TRIM_AFTER_REQUEST);
        if c.conn.wants_read() {
            let mut reader = fdpass::FdReader {
                stream: &c.stream,
                fds: &mut c.fds,
            };
            loop {
                match c.conn.read_from(&mut reader) {
                    Ok(ReadOutcome::Data(_)) => continue,
                    Ok(ReadOutcome::WouldBlock) | Ok(ReadOutcome::Closed) => break,
                    Err(_) => {
                        self.clients.remove(&id);
                        return;
                    }
                }
            }
        }
        while let Some(request) = self
            .clients
            .get_mut(&id)
            .and_then(|c| c.conn.next_request())
        {
            self.handle(id, request);
        }
        self.flush(id);
    }

    fn flush(&mut self, id: u64) {
        if let Some(c) = self.clients.get_mut(&id) {
            if c.conn.wants_write() {
                let mut s = &c.stream;
                if c.conn.write_to(&mut s).is_err() {
                    self.clients.remove(&id);
                }
            }
        }
    }

    fn respond(&mut self, id: u64, response: &Response) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.conn.respond(response);
        }
        self.flush(id);
    }

    /// The state answer; `minor` is the client's negotiated protocol minor version.
    fn state(&self, minor: u16) -> ContainerState {
        let mut state = match self.init_status {
            None => ContainerState {
                status: Status::Running,
                pid: Some(self.init_pid),
                exit_code: None,
                signal: None,
                oom_killed: false,
                started_at: Some(self.started_at),
                finished_at: None,
                restart_count: 0,
                health: None,
            },
            Some((status, at)) => {
                let (exit_code, signal) = exit_code_and_signal(status);
                let restarting = self.restarting();
                ContainerState {
                    // 1.0 clients do not know `restarting`: Docker counts it as running.
                    status: match (restarting, minor) {
                        (false, _) => Status::Stopped,
                        (true, 0) => Status::Running,
                        (true, _) => Status::Restarting,
                    },
                    pid: None,
                    exit_code: Some(exit_code),
                    signal,
                    oom_killed: restarting && self.sup.last_oom,
                    started_at: Some(self.started_at),
                    finished_at: Some(at),
                    restart_count: 0,
                    health: None,
                }
            }
        };
        state.restart_count = self.sup.restart_count;
        state.health = self.sup.health.as_ref().map(|h| h.state().clone());
        state
    }

    fn handle(&mut self, client: u64, request: Request) {
        let running = self.init_status.is_none();
        let restarting = self.restarting();
        match request {
            Request::Hello { .. } => {}
            Request::State => {
                let minor = self
                    .clients
                    .get(&client)
                    .and_then(|c| c.conn.version())
                    .map_or(0, |v| v.minor);
                let state = self.state(minor);
                self.respond(client, &Response::State(state));
            }
            Request::Signal { signal } => {
                // SIGKILL and the stop signal mean "stop it": no restart (Docker cancels its
                // restart manager for those; other signals leave the policy in place).
                let fatal = signal == libc::SIGKILL || signal == self.record.stop_signal;
                let response = if !(1..=64).contains(&signal) {
                    Response::error(ErrorKind::Invalid, format!("invalid signal {signal}"))
                } else if restarting && fatal {
                    // Nothing runs: cancelling the restart is the whole stop.
                    self.stop_for_good();
                    Response::Ok
                } else if restarting {
                    Response::error(
                        ErrorKind::Conflict,
                        format!(
                            "container {} is restarting: no process to signal until it runs",
                            self.id
                        ),
                    )
                } else if !running {
                    Response::error(
                        ErrorKind::Conflict,
                        format!("container {} is not running", self.id),
                    )
                } else {
                    if fatal {
                        self.sup.manually_stopped = true;
                    }
                    // SAFETY: kill(2) on our own child, which we have not reaped.
                    match unsafe { libc::kill(self.init_pid, signal) } {
                        0 => Response::Ok,
                        _ => Response::error(
                            ErrorKind::Internal,
                            format!("signal {signal}: {}", io::Error::last_os_error()),
                        ),
                    }
                };
                self.respond(client, &response);
            }
            Request::Stop { grace_secs } => {
                // Stopped through dockmaster: never restarted (Docker's "manually stopped").
                self.sup.manually_stopped = true;
                if !running {
                    // Ended already (draining its output, or waiting for a restart that is
                    // now cancelled): answered once the exit is recorded.
                    self.stop_for_good();
                    self.stops.push(PendingStop {
                        client: Some(client),
                        deadline: Instant::now(),
                        killed: true,
                    });
                    return;
                }
                let grace = Duration::from_secs(grace_secs);
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(self.init_pid, self.record.stop_signal) };
                self.stops.push(PendingStop {
                    client: Some(client),
                    deadline: Instant::now() + grace,
                    killed: false,
                });
                self.check_stops();
            }
            Request::Stats => {
                let stats = self.stats();
                self.respond(client, &Response::Stats(stats));
            }
            Request::Exec(req) => {
                if !running {
                    let why = if restarting {
                        "is restarting, wait until it is running"
                    } else {
                        "is not running"
                    };
                    let r = Response::error(
                        ErrorKind::Conflict,
                        format!("container {} {why}", self.id),
                    );
                    self.respond(client, &r);
                    return;
                }
                self.exec(client, req);
            }
        }
    }

    fn check_stops(&mut self) {
        let now = Instant::now();
        let mut kill = false;
        for s in self.stops.iter_mut() {
            if !s.killed && now >= s.deadline {
                s.killed = true;
                kill = true;
            }
        }
        if kill && self.init_status.is_none() {
            self.kill_all();
        }
    }

    /// SIGKILL to the init (which takes its PID namespace with it) and to anything in the
    /// cgroup (processes that joined without being in the namespace).
    fn kill_all(&self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.init_pid, libc::SIGKILL) };
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Whether the kernel's OOM killer ended a process of the current run (cgroup counter).
    fn oom_killed(&self) -> bool {
        self.cgroup
            .as_ref()
            .and_then(|c| c.stats().ok())
            .and_then(|s| s.oom_kills)
            .is_some_and(|n| n > 0)
    }

    fn stats(&self) -> ContainerStats {
        let s = self
            .cgroup
            .as_ref()
            .and_then(|c| c.stats().ok())
            .unwrap_or_default();
        ContainerStats {
            cpu_ns: s.cpu_usage_ns.unwrap_or(0),
            memory_bytes: s.memory_usage_bytes.unwrap_or(0),
            memory_limit: s.memory_limit_bytes,
            oom_kills: s.oom_kills.unwrap_or(0),
            pids: s.pids_current.unwrap_or(0),
        }
    }

    fn exec(&mut self, client: u64, req: crate::runtime::protocol::ExecRequest) {
        self.exec_counter += 1;
        let fds = self
            .clients
            .get_mut(&client)
            .map(|c| std::mem::take(&mut c.fds))
            .unwrap_or_default();
        match exec::start(self, &req, fds) {
            Ok((pid, master)) => {
                self.execs.insert(pid, client);
                let response = Response::ExecStarted { pid };
                match master {
                    None => self.respond(client, &response),
                    Some(master) => self.respond_with_fd(client, &response, master),
                }
                // It may have ended already; the sweep answers with its exit.
                self.reap();
            }
            Err((kind, message)) => self.respond(client, &Response::error(kind, message)),
        }
    }

    /// Sends a response with a descriptor attached, bypassing the connection's buffer (which
    /// is flushed first so responses stay in order).
    fn respond_with_fd(&mut self, id: u64, response: &Response, fd: OwnedFd) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let mut s = &c.stream;
        while c.conn.wants_write() {
            if c.conn.write_to(&mut s).is_err() {
                self.clients.remove(&id);
                return;
            }
        }
        let frame = serde_json::to_vec(response)
            .ok()
            .and_then(|b| encode_frame(&b).ok());
        let ok = frame
            .map(|f| fdpass::send_with_fds(&c.stream, &f, &[fd.as_raw_fd()]).is_ok())
            .unwrap_or(false);
        if !ok {
            self.clients.remove(&id);
        }
    }

    /// The init ended and its output is drained: record, clean up, answer, exit.
    fn finish(&mut self) -> Result<(), ShimError> {
        let (status, finished_at) = self.init_status.expect("finish only after the init ended");
        if let Some(logs) = self.logs.take() {
            if let Err(e) = logs.close() {
                eprintln!("shim {}: log: {e}", self.id);
            }
        }
        // After a restart was scheduled the cgroup is gone: its verdict was kept.
        let oom_killed = match &self.cgroup {
            Some(_) => self.oom_killed(),
            None => self.sup.last_oom,
        };
        let mut record =
            ExitRecord::from_wait_status(status, oom_killed, Some(self.started_at), finished_at);
        record.restart_count = self.sup.restart_count;
        record.manually_stopped = self.sup.manually_stopped;
        record.error = self.sup.error.clone();
        self.abandon_probe();
        let write_result = record.write_with(&self.paths.exit(), !self.record.auto_remove);
        if let Err(e) = release(&self.id, &self.paths) {
            eprintln!("shim {}: {e:#}", self.id);
        }
        let stops: Vec<u64> = self.stops.drain(..).filter_map(|s| s.client).collect();
        for client in stops {
            self.respond(client, &Response::Ok);
        }
        // Exec'd processes died with the PID namespace; answer whoever still waits.
        self.reap();
        let waiting: Vec<u64> = std::mem::take(&mut self.execs).into_values().collect();
        for client in waiting {
            self.respond(
                client,
                &Response::error(ErrorKind::Conflict, "the container stopped"),
            );
        }
        self.flush_all(Duration::from_secs(1));
        let _ = std::fs::remove_file(self.paths.socket());
        let _ = std::fs::remove_file(self.paths.shim_pid());
        if self.record.auto_remove {
            if let Err(e) = self.store.remove(&self.id) {
                eprintln!("shim {}: {e}", self.id);
            }
        }
        // Last: a foreground `run --rm` returns only once the container is gone.
        if let Some(s) = self.status.as_mut() {
            let _ = writeln!(s, "exited {}", record.exit_code);
        }
        write_result.map_err(ShimError::from)
    }

    fn flush_all(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && self.clients.values().any(|c| c.conn.wants_write()) {
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            for id in ids {
                self.flush(id);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Whether the engine creates a network namespace of its own for the container (no
/// network at all): every other mode joins a namespace that is set up already.
fn needs_loopback(record: &ContainerRecord) -> bool {
    use crate::network::sandbox::NetMode;
    record
        .network
        .as_ref()
        .map_or(true, |n| n.mode == NetMode::None)
}

/// Creates and starts the container's init with fresh stdout/stderr pipes (stdin is
/// /dev/null); returns its pid and the pipes' read ends, non-blocking. Used for the first
/// start and for every restart.
fn launch_init(
    engine: &Libcontainer,
    id: &str,
    paths: &ContainerPaths,
    record: &ContainerRecord,
) -> Result<(i32, File, File), ShimError> {
    let (out_r, out_w) = pipe().map_err(io_err("create the stdout pipe"))?;
    let (err_r, err_w) = pipe().map_err(io_err("create the stderr pipe"))?;
    let stdin = File::open("/dev/null").map_err(io_err("open /dev/null"))?;
    let init_pid = engine.create(
        id,
        &paths.bundle(),
        Stdio {
            stdin: stdin.into(),
            stdout: out_w,
            stderr: err_w,
        },
    )?;
    if needs_loopback(record) {
        // The engine made a fresh network namespace (`--network none`): loopback starts
        // down there; Docker brings it up. The init waits for `start`, so nothing runs yet.
        crate::network::netns::run_in_pid(init_pid as u32, crate::network::link::loopback_up)
            .map_err(|e| e.to_string())
            .and_then(|up| up.map_err(|e| e.to_string()))
            .map_err(|e| ShimError::Io {
                what: "bring up loopback in the container".into(),
                source: io::Error::other(e),
            })?;
    }
    engine.start(id)?;
    set_nonblocking(out_r.as_raw_fd());
    set_nonblocking(err_r.as_raw_fd());
    Ok((init_pid, File::from(out_r), File::from(err_r)))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// The snapshot directories of the container's layers, topmost first.
fn layer_dirs(root: &Path, record: &ContainerRecord) -> Result<Vec<PathBuf>, ShimError> {
    let snapshots = SnapshotStore::open(root).map_err(|e| ShimError::Layer {
        layer: "-".into(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(record.layers.len());
    for layer in record.layers.iter().rev() {
        let digest = Digest::parse(layer).map_err(|e| ShimError::Layer {
            layer: layer.clone(),
            reason: e.to_string(),
        })?;
        if !snapshots.contains(&digest) {
            return Err(ShimError::Layer {
                layer: layer.clone(),
                reason: "its snapshot is missing (was the image removed?)".into(),
            });
        }
        out.push(snapshots.path(&digest));
    }
    Ok(out)
}
