//! Real cgroups on this host, as root. The project's machines (and CI) are hybrid v1 hosts
//! (TESTBED.md); a pure v2 host fails these tests loudly rather than skipping them, since
//! the v2 path is only covered by the fake-tree tests.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;

const MIB: i64 = 1024 * 1024;

fn host_setup() -> CgroupSetup {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the cgroup host tests need root (the project's test machines and CI run as root)"
    );
    let setup = CgroupSetup::detect().expect("cgroups are mounted on this host");
    let Some(mounts) = setup.v1_mounts() else {
        panic!(
            "this host is pure cgroup v2 ({setup:?}); these real tests are written for the v1 \
             or hybrid hosts described in TESTBED.md, and v2 is only tested on fake trees"
        );
    };
    for controller in V1_CONTROLLERS {
        assert!(
            mounts.contains_key(&controller),
            "v1 controller {controller} is not mounted: {setup:?}"
        );
    }
    setup
}

/// A test cgroup `dockmaster-test-<pid>-<n>/ctr` plus the processes started for it; Drop
/// kills them by PID, then kills what is left in the cgroup and removes both levels.
struct Guard {
    setup: CgroupSetup,
    parent: PathBuf,
    cgroup: Cgroup,
    children: Vec<Child>,
}

impl Guard {
    fn new() -> Guard {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let setup = host_setup();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let parent = PathBuf::from(format!("dockmaster-test-{}-{n}", std::process::id()));
        let cgroup = Cgroup::create(&setup, parent.join("ctr")).expect("create test cgroup");
        Guard {
            setup,
            parent,
            cgroup,
            children: Vec::new(),
        }
    }

    /// Starts `/bin/sh -c 'read _ && SCRIPT'`, moves it into the cgroup, then lets it run,
    /// so everything the script does happens inside the cgroup.
    fn spawn_inside(&mut self, script: &str) -> u32 {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read _ && {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /bin/sh");
        let pid = child.id();
        let stdin = child.stdin.take();
        self.children.push(child);
        self.cgroup.add_pid(pid as i32).expect("add pid");
        let mut stdin = stdin.expect("piped stdin");
        stdin.write_all(b"go\n").expect("release child");
        pid
    }

    fn spawn(&mut self, program: &str, args: &[&str]) -> u32 {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn wait(&mut self, pid: u32, timeout: Duration) -> ExitStatus {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("our child");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "child {pid} still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self, pid: u32) {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("our child");
        child.kill().expect("kill child");
        child.wait().expect("reap child");
    }

    /// The leaf directories as they exist in every hierarchy.
    fn leaf_dirs(&self) -> Vec<PathBuf> {
        self.cgroup
            .dirs()
            .into_iter()
            .map(Path::to_path_buf)
            .collect()
    }

    fn parent_dirs(&self) -> Vec<PathBuf> {
        let parent = Cgroup::open(&self.setup, &self.parent).expect("parent path");
        parent.dirs().into_iter().map(Path::to_path_buf).collect()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = self.cgroup.kill_all(Signal::SIGKILL);
        if let Err(err) = self.cgroup.remove() {
            eprintln!("cleanup: {err}");
        }
        if let Ok(parent) = Cgroup::open(&self.setup, &self.parent) {
            if let Err(err) = parent.remove() {
                eprintln!("cleanup: {err}");
            }
        }
    }
}

#[test]
fn host_is_hybrid_with_v1_controllers() {
    let setup = host_setup();
    let available = setup.available_controllers().unwrap();
    for controller in V1_CONTROLLERS {
        assert!(available.contains(&controller), "{controller}");
        let mount = &setup.v1_mounts().unwrap()[&controller];
        assert!(mount.join("cgroup.procs").is_file(), "{}", mount.display());
    }
    if let CgroupSetup::Hybrid { unified, .. } = &setup {
        assert!(unified.join("cgroup.controllers").is_file());
    }
}

#[test]
fn memory_limit_stats_and_oom_kill() {
    let mut guard = Guard::new();
    let cgroup = guard.cgroup.clone();
    cgroup
        .apply(&Resources {
            memory_limit: Some(32 * MIB),
            memory_swap: Some(32 * MIB),
            memory_reservation: Some(16 * MIB),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(512),
            pids_limit: Some(64),
        })
        .unwrap();
    let cpu = cgroup.controller_dir(Controller::Cpu).unwrap();
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap().trim().to_string();
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(cpu.join("cpu.shares")), "512");
    let mem = cgroup.controller_dir(Controller::Memory).unwrap();
    assert_eq!(read(mem.join("memory.soft_limit_in_bytes")), "16777216");
    if mem.join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(read(mem.join("memory.memsw.limit_in_bytes")), "33554432");
    }

    let sleeper = guard.spawn("/bin/sh", &["-c", "exec sleep 30"]);
    cgroup.add_pid(sleeper as i32).unwrap();
    assert_eq!(cgroup.pids().unwrap(), [sleeper as i32]);
    let stats = cgroup.stats().unwrap();
    assert_eq!(stats.pids_current, Some(1), "{stats:?}");
    assert_eq!(
        stats.memory_limit_bytes,
        Some(32 * 1024 * 1024),
        "{stats:?}"
    );
    assert_eq!(stats.oom_kills, Some(0), "{stats:?}");
    assert!(stats.cpu_usage_ns.is_some() && stats.memory_usage_bytes.is_some());

    // Raising the limit after the fact works too (memsw is raised first).
    cgroup
        .apply(&Resources {
            memory_limit: Some(48 * MIB),
            memory_swap: Some(48 * MIB),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(
        cgroup.stats().unwrap().memory_limit_bytes,
        Some(48 * 1024 * 1024)
    );
    cgroup
        .apply(&Resources {
            memory_limit: Some(32 * MIB),
            memory_swap: Some(32 * MIB),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(
        cgroup.stats().unwrap().memory_limit_bytes,
        Some(32 * 1024 * 1024)
    );

    // tail -c buffers the last 100 MiB of its input: far above the limit.
    let hog = guard.spawn_inside("head -c 104857600 /dev/zero | tail -c 104857600 >/dev/null");
    let status = guard.wait(hog, Duration::from_secs(60));
    assert!(!status.success(), "the memory hog survived: {status:?}");
    let stats = cgroup.stats().unwrap();
    assert!(
        stats.oom_kills.unwrap_or(0) >= 1,
        "no OOM kill counted: {stats:?}"
    );
    assert!(stats.cpu_usage_ns.unwrap_or(0) > 0, "{stats:?}");

    // A busy cgroup is not removed, and the error says which directory. A fresh process
    // makes it busy: under load the OOM killer may take the sleeper as a second victim.
    let busy = guard.spawn("/bin/sh", &["-c", "exec sleep 30"]);
    cgroup.add_pid(busy as i32).unwrap();
    let err = cgroup
        .remove_within(Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(err, CgroupError::Busy { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&guard.parent.display().to_string()),
        "{err}"
    );

    guard.kill(busy);
    guard.kill(sleeper);
    cgroup.remove().unwrap();
    for dir in guard.leaf_dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let mut guard = Guard::new();
    let cgroup = guard.cgroup.clone();
    cgroup
        .apply(&Resources {
            pids_limit: Some(5),
            ..Resources::default()
        })
        .unwrap();
    let pids_dir = cgroup
        .controller_dir(Controller::Pids)
        .unwrap()
        .to_path_buf();
    assert_eq!(
        std::fs::read_to_string(pids_dir.join("pids.max"))
            .unwrap()
            .trim(),
        "5"
    );

    // The shell counts as one task; 10 background sleeps cannot all be forked.
    let shell = guard.spawn_inside("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done; wait");
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed_forks = loop {
        let events = std::fs::read_to_string(pids_dir.join("pids.events")).unwrap();
        let failed = events
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if failed >= 1 || Instant::now() > deadline {
            break failed;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(failed_forks >= 1, "no fork was refused by pids.max");
    let stats = cgroup.stats().unwrap();
    let current = stats.pids_current.unwrap();
    assert!((1..=5).contains(&current), "{stats:?}");
    let pids = cgroup.pids().unwrap();
    assert!(!pids.is_empty() && pids.len() <= 5, "{pids:?}");

    // The sleeps are the shell's children, not ours: kill_all reaches them.
    let signalled = cgroup.kill_all(Signal::SIGKILL).unwrap();
    assert!(signalled >= pids.len(), "{signalled} < {pids:?}");
    guard.wait(shell, Duration::from_secs(10));
    cgroup.remove().unwrap();
    for dir in guard.leaf_dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn guard_removes_everything() {
    let guard = Guard::new();
    let leaves = guard.leaf_dirs();
    let parents = guard.parent_dirs();
    // One directory per distinct mount of cpu, cpuacct, memory and pids.
    let mounts: BTreeSet<&PathBuf> = V1_CONTROLLERS
        .iter()
        .map(|c| &guard.setup.v1_mounts().unwrap()[c])
        .collect();
    assert_eq!(leaves.len(), mounts.len(), "{leaves:?}");
    for dir in leaves.iter().chain(&parents) {
        assert!(dir.is_dir(), "{}", dir.display());
    }
    drop(guard);
    for dir in leaves.iter().chain(&parents) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
