//! Container cgroups on v1, v2 and hybrid hosts, driven through a cgroupfs root path.
//!
//! Everything here works on paths (the mount points found in the mount table), never on
//! fixed `/sys/fs/cgroup` names, so unit tests run against fake cgroupfs trees in a temp
//! dir and the same code runs for real as root.
//!
//! - [`CgroupSetup`] says how cgroups are mounted (v1, v2 or hybrid) and which controllers
//!   are available. On hybrid hosts the controllers are used through v1.
//! - [`Cgroup`] is one container's cgroup, a relative path such as `dockmaster/<id>` under
//!   every hierarchy it needs: [`Cgroup::create`], [`Cgroup::apply`] of [`Resources`],
//!   [`Cgroup::add_pid`], [`Cgroup::pids`], [`Cgroup::stats`], [`Cgroup::kill_all`] and
//!   [`Cgroup::remove`].
//!
//! Synchronous on purpose: these are a handful of small file writes, done by the shim
//! before it starts the container.

mod fsio;
mod mountinfo;
mod v1;
mod v2;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod host_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{Categorized, Category};

pub use mountinfo::{CgroupSetup, PROC_MOUNTINFO};

/// How long [`Cgroup::remove`] retries a busy cgroup while its processes exit.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A cgroup controller, by its kernel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    Cpu,
    Cpuacct,
    Cpuset,
    Io,
    Memory,
    Blkio,
    Devices,
    Freezer,
    Hugetlb,
    NetCls,
    NetPrio,
    PerfEvent,
    Pids,
    Rdma,
    Misc,
}

impl Controller {
    const ALL: [Controller; 15] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Io,
        Controller::Memory,
        Controller::Blkio,
        Controller::Devices,
        Controller::Freezer,
        Controller::Hugetlb,
        Controller::NetCls,
        Controller::NetPrio,
        Controller::PerfEvent,
        Controller::Pids,
        Controller::Rdma,
        Controller::Misc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Io => "io",
            Controller::Memory => "memory",
            Controller::Blkio => "blkio",
            Controller::Devices => "devices",
            Controller::Freezer => "freezer",
            Controller::Hugetlb => "hugetlb",
            Controller::NetCls => "net_cls",
            Controller::NetPrio => "net_prio",
            Controller::PerfEvent => "perf_event",
            Controller::Pids => "pids",
            Controller::Rdma => "rdma",
            Controller::Misc => "misc",
        }
    }

    pub fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The v1 hierarchies a container's cgroup is made in. cpuset is left out on purpose: a
/// new v1 cpuset cgroup has empty `cpuset.cpus`/`cpuset.mems` and refuses tasks until
/// they are filled in, and containers here do not pin CPUs.
pub const V1_CONTROLLERS: [Controller; 4] = [
    Controller::Cpu,
    Controller::Cpuacct,
    Controller::Memory,
    Controller::Pids,
];

/// The v2 controllers enabled for a container's cgroup (cpu includes accounting).
pub const V2_CONTROLLERS: [Controller; 3] = [Controller::Cpu, Controller::Memory, Controller::Pids];

/// Resource limits for one cgroup. `None` leaves a setting alone. Values follow the OCI
/// runtime spec / Docker: `-1` means unlimited where a limit can be unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Hard memory limit in bytes (`--memory`); `-1` unlimited.
    pub memory_limit: Option<i64>,
    /// Soft limit in bytes (`--memory-reservation`); `-1` none.
    pub memory_reservation: Option<i64>,
    /// Memory plus swap in bytes, as v1's memsw and Docker's `--memory-swap`; `-1`
    /// unlimited swap. Needs `memory_limit` unless `-1`. Skipped where the kernel has no
    /// swap accounting.
    pub memory_swap: Option<i64>,
    /// CPU time in microseconds per period (`--cpus` × period); `-1` unlimited.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds, 1000..=1000000; v2 uses 100000 when only a quota is set.
    pub cpu_period: Option<u64>,
    /// Relative CPU weight (`--cpu-shares`), clamped to 2..=262144 as the kernel does.
    pub cpu_shares: Option<u64>,
    /// Most tasks in the cgroup; `0` or `-1` unlimited, as Docker's `--pids-limit`.
    pub pids_limit: Option<i64>,
}

/// Default CFS period (microseconds), the kernel's.
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;

impl Resources {
    /// Checks every value before anything is written, so a bad value never leaves a
    /// half-applied cgroup.
    pub fn validate(&self) -> Result<(), CgroupError> {
        let invalid = |name: &'static str, value: String, reason: &'static str| {
            Err(CgroupError::InvalidResource {
                name,
                value,
                reason,
            })
        };
        if let Some(v) = self.memory_limit {
            if v != -1 && v <= 0 {
                return invalid("memory_limit", v.to_string(), "must be positive or -1");
            }
        }
        if let Some(v) = self.memory_reservation {
            if v < -1 {
                return invalid("memory_reservation", v.to_string(), "must be >= 0 or -1");
            }
        }
        if let Some(swap) = self.memory_swap {
            if swap != -1 {
                if swap <= 0 {
                    return invalid("memory_swap", swap.to_string(), "must be positive or -1");
                }
                match self.memory_limit {
                    Some(limit) if limit > 0 => {
                        if swap < limit {
                            return invalid(
                                "memory_swap",
                                swap.to_string(),
                                "memory+swap must be at least the memory limit",
                            );
                        }
                    }
                    _ => {
                        return invalid(
                            "memory_swap",
                            swap.to_string(),
                            "a swap limit needs a memory limit",
                        )
                    }
                }
            }
        }
        if let Some(v) = self.cpu_quota {
            if v != -1 && v <= 0 {
                return invalid("cpu_quota", v.to_string(), "must be positive or -1");
            }
        }
        if let Some(v) = self.cpu_period {
            if !(1000..=1_000_000).contains(&v) {
                return invalid("cpu_period", v.to_string(), "must be 1000..=1000000 us");
            }
        }
        Ok(())
    }

    fn touches_memory(&self) -> bool {
        self.memory_limit.is_some()
            || self.memory_reservation.is_some()
            || self.memory_swap.is_some()
    }

    fn touches_cpu(&self) -> bool {
        self.cpu_quota.is_some() || self.cpu_period.is_some() || self.cpu_shares.is_some()
    }
}

/// Clamps shares to the kernel's range.
fn clamp_shares(shares: u64) -> u64 {
    shares.clamp(2, 262_144)
}

/// cgroup v1 `cpu.shares` to v2 `cpu.weight`, the formula runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + ((clamp_shares(shares) - 2) * 9999) / 262_142
}

/// A snapshot of a cgroup's usage. `None` when the controller or file is not there (or,
/// for the memory limit, when there is no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub pids_current: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup filesystem is mounted according to {path}")]
    NotMounted { path: PathBuf },
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    #[error("invalid cgroup resource {name}={value}: {reason}")]
    InvalidResource {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "cgroup controller {controller} is not available on this host (needed for {needed_for})"
    )]
    ControllerUnavailable {
        controller: Controller,
        needed_for: &'static str,
    },
    #[error("cgroup {path} does not exist")]
    Missing { path: PathBuf },
    #[error("failed to create cgroup directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is larger than {cap} bytes")]
    TooLarge { path: PathBuf, cap: u64 },
    #[error("unexpected content in {path}: {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("failed to write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cgroup {path} is still busy after {waited_ms} ms: processes are still in it")]
    Busy { path: PathBuf, waited_ms: u128 },
    #[error("failed to remove cgroup directory {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("failed to send {signal} to process {pid} of cgroup {path}: {source}")]
    Signal {
        path: PathBuf,
        pid: i32,
        signal: Signal,
        source: nix::Error,
    },
}

impl Categorized for CgroupError {
    fn category(&self) -> Category {
        match self {
            CgroupError::InvalidPath { .. } | CgroupError::InvalidResource { .. } => {
                Category::Invalid
            }
            CgroupError::NotMounted { .. }
            | CgroupError::ControllerUnavailable { .. }
            | CgroupError::Missing { .. } => Category::NotFound,
            CgroupError::Busy { .. } => Category::Conflict,
            // The kernel says EINVAL for a value out of its range.
            CgroupError::Write { source, .. } if source.raw_os_error() == Some(libc::EINVAL) => {
                Category::Invalid
            }
            CgroupError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Category::NotFound
            }
            CgroupError::Create { .. }
            | CgroupError::Read { .. }
            | CgroupError::TooLarge { .. }
            | CgroupError::Parse { .. }
            | CgroupError::Write { .. }
            | CgroupError::Remove { .. }
            | CgroupError::Signal { .. } => Category::Internal,
        }
    }
}

/// Where a cgroup lives in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// One directory per managed v1 controller (comounted controllers share one).
    V1 { dirs: BTreeMap<Controller, PathBuf> },
    /// The unified hierarchy's root and the cgroup's directory in it.
    V2 { root: PathBuf, dir: PathBuf },
}

/// One cgroup, at the same relative path in every hierarchy it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
    layout: Layout,
}

impl Cgroup {
    /// A handle on the cgroup at `path` (relative, such as `dockmaster/<id>`) without
    /// creating anything: for a cgroup made earlier, e.g. by a shim before a restart.
    pub fn open(setup: &CgroupSetup, path: impl AsRef<Path>) -> Result<Cgroup, CgroupError> {
        let path = validate_path(path.as_ref())?;
        let layout = match setup {
            CgroupSetup::V1 { mounts } | CgroupSetup::Hybrid { mounts, .. } => Layout::V1 {
                dirs: V1_CONTROLLERS
                    .iter()
                    .filter_map(|c| mounts.get(c).map(|m| (*c, m.join(&path))))
                    .collect(),
            },
            CgroupSetup::V2 { root } => Layout::V2 {
                root: root.clone(),
                dir: root.join(&path),
            },
        };
        Ok(Cgroup { path, layout })
    }

    /// Creates the cgroup in every hierarchy it needs (parents included). On v2 it also
    /// enables the cpu, memory and pids controllers (those the root offers) in
    /// `cgroup.subtree_control` of the root and of every parent, so the leaf gets them.
    /// Existing directories are fine: creating twice is harmless.
    pub fn create(setup: &CgroupSetup, path: impl AsRef<Path>) -> Result<Cgroup, CgroupError> {
        let cgroup = Cgroup::open(setup, path)?;
        match &cgroup.layout {
            Layout::V1 { .. } => {
                for dir in cgroup.unique_dirs() {
                    mkdir_all(dir)?;
                }
            }
            Layout::V2 { root, dir } => {
                let wanted = v2::wanted_controllers(root)?;
                // Parents first, then controllers top down, then the leaf: a controller can
                // only be enabled in a child's subtree_control once the parent has it.
                let mut current = root.clone();
                let components: Vec<_> = cgroup.path.components().collect();
                let parent_count = components.len() - 1;
                v2::enable_controllers(&current, &wanted)?;
                for component in &components[..parent_count] {
                    current.push(component);
                    mkdir_all(&current)?;
                    v2::enable_controllers(&current, &wanted)?;
                }
                mkdir_all(dir)?;
            }
        }
        Ok(cgroup)
    }

    /// The relative path this cgroup was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this cgroup is driven through the v1 interface.
    pub fn is_v1(&self) -> bool {
        matches!(self.layout, Layout::V1 { .. })
    }

    /// The cgroup's directories, one per hierarchy (comounted controllers counted once).
    pub fn dirs(&self) -> Vec<&Path> {
        self.unique_dirs().into_iter().collect()
    }

    fn unique_dirs(&self) -> BTreeSet<&Path> {
        match &self.layout {
            Layout::V1 { dirs } => dirs.values().map(PathBuf::as_path).collect(),
            Layout::V2 { dir, .. } => std::iter::once(dir.as_path()).collect(),
        }
    }

    /// The directory of a v1 controller, or the unified directory on v2.
    pub fn controller_dir(&self, controller: Controller) -> Option<&Path> {
        match &self.layout {
            Layout::V1 { dirs } => dirs.get(&controller).map(PathBuf::as_path),
            Layout::V2 { dir, .. } => Some(dir),
        }
    }

    /// Writes the limits. Values are validated first; on v1 memory and memsw are written in
    /// the order the kernel accepts for both raising and lowering.
    pub fn apply(&self, resources: &Resources) -> Result<(), CgroupError> {
        resources.validate()?;
        match &self.layout {
            Layout::V1 { dirs } => v1::apply(dirs, resources),
            Layout::V2 { dir, .. } => v2::apply(dir, resources),
        }
    }

    /// Moves a process into the cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidResource {
                name: "pid",
                value: pid.to_string(),
                reason: "must be positive",
            });
        }
        let value = pid.to_string();
        for dir in self.unique_dirs() {
            fsio::write(&dir.join("cgroup.procs"), &value)?;
        }
        Ok(())
    }

    /// The directory whose `cgroup.procs` lists the cgroup's processes: on v1 the pids
    /// hierarchy if mounted, else the first one.
    fn procs_dir(&self) -> Option<&Path> {
        match &self.layout {
            Layout::V1 { dirs } => dirs
                .get(&Controller::Pids)
                .or_else(|| dirs.get(&Controller::Memory))
                .or_else(|| dirs.values().next())
                .map(PathBuf::as_path),
            Layout::V2 { dir, .. } => Some(dir),
        }
    }

    /// The PIDs of the processes in the cgroup, sorted.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(dir) = self.procs_dir() else {
            return Ok(Vec::new());
        };
        let path = dir.join("cgroup.procs");
        let text = fsio::read_capped(&path, fsio::PROCS_CAP)?;
        let mut pids = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let pid: i32 = line.parse().map_err(|_| CgroupError::Parse {
                path: path.clone(),
                content: line.chars().take(64).collect(),
            })?;
            pids.push(pid);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// CPU time, memory, OOM kills and task count. Fails with [`CgroupError::Missing`] when
    /// the cgroup does not exist.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        if let Some(dir) = self.procs_dir() {
            if !dir.is_dir() {
                return Err(CgroupError::Missing {
                    path: dir.to_path_buf(),
                });
            }
        }
        match &self.layout {
            Layout::V1 { dirs } => v1::stats(dirs),
            Layout::V2 { dir, .. } => v2::stats(dir),
        }
    }

    /// Sends `signal` to every process in the cgroup, best effort: processes that exit in
    /// between are skipped. With SIGKILL it goes round again for processes forked in the
    /// meantime (a few rounds at most). Returns how many processes were signalled.
    pub fn kill_all(&self, signal: Signal) -> Result<usize, CgroupError> {
        let path = self.procs_dir().map(Path::to_path_buf).unwrap_or_default();
        let rounds = if signal == Signal::SIGKILL { 10 } else { 1 };
        let mut signalled = BTreeSet::new();
        for _ in 0..rounds {
            let pids = match self.pids() {
                Ok(pids) => pids,
                // The cgroup is gone: nothing left to signal.
                Err(CgroupError::Read { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    break
                }
                Err(err) => return Err(err),
            };
            let fresh: Vec<i32> = pids
                .into_iter()
                .filter(|p| !signalled.contains(p))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
                    Ok(()) | Err(nix::Error::ESRCH) => {}
                    Err(source) => {
                        return Err(CgroupError::Signal {
                            path,
                            pid,
                            signal,
                            source,
                        })
                    }
                }
                signalled.insert(pid);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(signalled.len())
    }

    /// Removes the cgroup's leaf directory in every hierarchy (parents such as
    /// `dockmaster/` stay). Retries for up to [`REMOVE_TIMEOUT`] while the kernel reports
    /// the cgroup busy (its processes are still exiting). Already removed is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.remove_within(REMOVE_TIMEOUT)
    }

    /// [`Cgroup::remove`] with a chosen retry budget.
    pub fn remove_within(&self, timeout: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        for dir in self.unique_dirs() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => break,
                    Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                        if start.elapsed() >= timeout {
                            return Err(CgroupError::Busy {
                                path: dir.to_path_buf(),
                                waited_ms: start.elapsed().as_millis(),
                            });
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(source) => {
                        return Err(CgroupError::Remove {
                            path: dir.to_path_buf(),
                            source,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

/// A cgroup path must stay inside the hierarchy: relative, plain names only.
fn validate_path(path: &Path) -> Result<PathBuf, CgroupError> {
    let invalid = |reason| CgroupError::InvalidPath {
        path: path.to_path_buf(),
        reason,
    };
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(invalid("must be relative")),
            Component::ParentDir => return Err(invalid("must not contain \"..\"")),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(invalid("must name a cgroup below the root"));
    }
    Ok(clean)
}

fn mkdir_all(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
        path: dir.to_path_buf(),
        source,
    })
}
