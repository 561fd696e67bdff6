//! A state root with the busybox fixture imported, for tests that run real containers with
//! the `dockmaster` binary. Dropping it force-removes every container it created (which
//! kills them and unmounts their rootfs), so a failing test leaves no container, mount or
//! cgroup behind.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::env::TempRoot;
use super::fixtures::busybox;
use super::image::write_oci_layout;

/// The tag the busybox fixture is imported under.
pub const BUSYBOX: &str = "localhost/busybox:test";

pub struct Host {
    pub root: TempRoot,
    /// Network namespace (under /run/netns) dockmaster runs in; None: the caller's.
    netns: Option<String>,
}

impl Host {
    /// A fresh root with [`BUSYBOX`] imported.
    pub fn new() -> Host {
        Host::with_netns(None)
    }

    /// Like [`Host::new`], with every dockmaster command run inside network namespace
    /// `/run/netns/NAME` through `nsenter --net` (not `ip netns exec`: the mount namespace
    /// must stay shared so the netns bind mounts stay visible), and `run` keeping its own
    /// default network.
    pub fn in_netns(name: &str) -> Host {
        Host::with_netns(Some(name.to_string()))
    }

    fn with_netns(netns: Option<String>) -> Host {
        let root = TempRoot::new();
        let layout = root.path().join("busybox-layout");
        let image = busybox();
        write_oci_layout(&layout, &[(BUSYBOX, &image)]);
        let host = Host { root, netns };
        host.ok(&[
            "image",
            "import",
            layout.to_str().unwrap(),
            "--tag",
            BUSYBOX,
        ]);
        host
    }

    /// `run` without `--network` gets `--network none` in the caller's namespace: these tests
    /// run in the machine's own network namespace, where the default bridge network must
    /// never be created (network tests use [`Host::in_netns`]).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.root.dockmaster();
        let Some(ns) = &self.netns else {
            let has_network = args
                .iter()
                .any(|a| *a == "--network" || a.starts_with("--network="));
            if args.first() == Some(&"run") && !has_network {
                c.arg("run").args(["--network", "none"]).args(&args[1..]);
            } else {
                c.args(args);
            }
            return c;
        };
        let mut wrapped = Command::new("nsenter");
        wrapped
            .arg(format!("--net=/run/netns/{ns}"))
            .arg(c.get_program())
            .args(c.get_args())
            .args(args);
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        wrapped
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run dockmaster")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dockmaster {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `run --rm IMAGE sh -c SCRIPT` in the foreground with extra flags; returns the output.
    pub fn sh(&self, flags: &[&str], script: &str) -> Output {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[BUSYBOX, "sh", "-c", script]);
        self.run(&args)
    }

    /// Like [`Host::sh`], expecting exit 0; returns stdout.
    pub fn sh_ok(&self, flags: &[&str], script: &str) -> String {
        let out = self.sh(flags, script);
        assert!(
            out.status.success(),
            "script {script:?} with {flags:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `run -d [flags] IMAGE CMD...`; returns the container id.
    pub fn detached(&self, flags: &[&str], command: &[&str]) -> String {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(flags);
        args.push(BUSYBOX);
        args.extend_from_slice(command);
        self.ok(&args).trim().to_string()
    }

    /// `inspect ID` as JSON (the single object).
    pub fn inspect(&self, id: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", id]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
        v[0].clone()
    }

    /// Waits until `inspect` says the container's status is `status`.
    pub fn wait_status(&self, id: &str, status: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            // The container may not exist yet (a launcher still creating it).
            let out = self.run(&["inspect", id]);
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            let v = v[0].clone();
            if out.status.success() && v["State"]["Status"] == status {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not reach {status} within {within:?}: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The container's directory in the state root.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.root().join("containers").join(id)
    }

    /// Ids of all containers in this root.
    pub fn all_ids(&self) -> Vec<String> {
        self.ok(&["ps", "-a", "-q", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Host {
    /// Force-removes every container of this root (which kills them and releases their
    /// mounts, cgroups and networks), in the namespace they were started in.
    pub fn remove_all_containers(&self) {
        let ids = self
            .cmd(&["ps", "-a", "-q", "--no-trunc"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.lines() {
            let _ = self.cmd(&["rm", "-f", id]).output();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.remove_all_containers();
    }
}

/// cgroup directories of a container on this host (v1 controllers and the unified tree).
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let p = e.path().join("dockmaster").join(id);
            if p.exists() {
                out.push(p);
            }
        }
    }
    let unified = PathBuf::from("/sys/fs/cgroup/dockmaster").join(id);
    if unified.exists() {
        out.push(unified);
    }
    out
}

/// Mount points under `dir` (from /proc/self/mountinfo).
pub fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// Every trace of a removed container is gone: directory, mounts, cgroups.
pub fn assert_gone(host: &Host, id: &str) {
    let dir = host.container_dir(id);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        mounts_under(&dir).is_empty(),
        "mounts left: {:?}",
        mounts_under(&dir)
    );
    assert!(
        cgroup_dirs(id).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(id)
    );
}

/// A command's stderr as text.
pub fn err_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
