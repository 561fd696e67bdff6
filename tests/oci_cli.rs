//! `dockmaster oci create|start|state|kill|delete` run for real as root: busybox bundles whose
//! config.json comes from dockmaster's own spec builder, a temp `--root` per test, unique
//! container ids, and a guard that runs `delete --force` whatever happens.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dockmaster::image::manifest::{ContainerConfig, ImageConfig};
use dockmaster::runtime::spec::{build_spec, ContainerOptions, DirRootfs, HostLimits, Identity};
use serde_json::Value;
use support::containers::cgroup_dirs;

const DOCKMASTER: &str = env!("CARGO_BIN_EXE_dockmaster");
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "sleep", "true", "cat", "echo", "hostname", "grep", "ls",
];
const TIMEOUT: Duration = Duration::from_secs(20);

/// A bundle directory: `rootfs/` with busybox and `config.json` from the spec builder.
struct Bundle {
    dir: tempfile::TempDir,
    spec: Value,
}

impl Bundle {
    fn new(id: &str, command: &[&str]) -> Bundle {
        let dir = tempfile::tempdir().expect("bundle dir");
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
            .expect("copy /bin/busybox (apt-get install busybox-static)");
        for applet in APPLETS {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();

        let image = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: ContainerConfig {
                env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
                cmd: Some(vec!["sh".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let opts = ContainerOptions {
            identity: Identity {
                container_id: id.into(),
                name: id.into(),
                image: "busybox-test".into(),
                ..Default::default()
            },
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let spec = build_spec(
            &image,
            &opts,
            &DirRootfs::new(&rootfs),
            &HostLimits::current(),
        )
        .expect("build spec");
        let spec = serde_json::to_value(&spec).unwrap();
        fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        Bundle { dir, spec }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn path_str(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

/// One `--root` for a test.
struct Runtime {
    root: tempfile::TempDir,
}

impl Runtime {
    fn new() -> Runtime {
        Runtime {
            root: tempfile::tempdir().expect("root dir"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKMASTER);
        cmd.arg("--root")
            .arg(self.root.path())
            .arg("oci")
            .args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs a verb that does not leave a process behind holding its stdio.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run dockmaster")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dockmaster oci {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a verb that must fail with exit code 1; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        stderr
    }

    /// `create ... ARGS` with the id last or wherever `args` puts it. The container inherits
    /// the command's stdio, so stdout and stderr go to files (a pipe would stay open as long
    /// as the container runs). The container is deleted on drop.
    fn create_with(&self, id: &str, args: &[&str]) -> Created<'_> {
        let guard = Created {
            rt: self,
            id: id.to_string(),
            stdout: self.root.path().join(format!("{id}.out")),
            stderr: self.root.path().join(format!("{id}.err")),
        };
        let status = self
            .command(args)
            .stdout(fs::File::create(&guard.stdout).unwrap())
            .stderr(fs::File::create(&guard.stderr).unwrap())
            .status()
            .expect("run dockmaster oci create");
        assert!(
            status.success(),
            "create {id}: {}",
            fs::read_to_string(&guard.stderr).unwrap_or_default()
        );
        guard
    }

    fn create(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Created<'_> {
        let mut args = vec!["create", "--bundle", bundle.path_str()];
        args.extend_from_slice(extra);
        args.push(id);
        self.create_with(id, &args)
    }

    fn state(&self, id: &str) -> Value {
        let text = self.ok(&["state", id]);
        assert!(
            !text.ends_with('\n'),
            "runc prints the state without a newline"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("state {id}: {e}: {text}"))
    }

    fn wait_status(&self, id: &str, want: &str) -> Value {
        let start = Instant::now();
        loop {
            let state = self.state(id);
            if state["status"] == want {
                return state;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "{id} never became {want}: {state}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.path().join("oci").join(id)
    }
}

/// A created container: `delete --force` on drop, so a failing test leaves nothing running.
struct Created<'a> {
    rt: &'a Runtime,
    id: String,
    /// The container's stdout (inherited from `create`).
    stdout: PathBuf,
    /// `create`'s stderr, and the container's.
    stderr: PathBuf,
}

impl Created<'_> {
    fn output_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits until the container's output contains `needle`.
    fn wait_output(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.output_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "{} never printed {needle:?}: {text:?}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        let _ = self.rt.run(&["delete", "--force", &self.id]);
    }
}

/// A container id no other test or run uses (cgroup paths are host-global).
fn unique_id(name: &str) -> String {
    format!("oci-{name}-{}", std::process::id())
}

/// Alive and not a zombie (a dead init may wait for the host's PID 1 to reap it).
fn alive(pid: i64) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

#[test]
fn lifecycle_create_start_kill_delete() {
    let rt = Runtime::new();
    let id = unique_id("life");
    let bundle = Bundle::new(&id, &["sleep", "1000"]);
    let pid_file = rt.root.path().join("init.pid");
    let c = rt.create(&id, &bundle, &["--pid-file", pid_file.to_str().unwrap()]);

    let state = rt.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["ociVersion"], bundle.spec["ociVersion"]);
    let bundle_path = fs::canonicalize(bundle.path()).unwrap();
    assert_eq!(state["bundle"], bundle_path.to_str().unwrap());
    assert_eq!(
        state["rootfs"],
        bundle_path.join("rootfs").to_str().unwrap()
    );
    assert_eq!(state["owner"], "");
    assert!(state["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        state["annotations"], bundle.spec["annotations"],
        "the spec's annotations"
    );
    let pid = state["pid"].as_i64().unwrap();
    assert!(
        pid > 0 && alive(pid),
        "created container's init {pid} is alive"
    );
    let written: i64 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(written, pid, "--pid-file holds the init's pid");
    // Its own PID namespace, and a cgroup at the spec's cgroupsPath.
    assert_ne!(
        fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        fs::read_link("/proc/self/ns/pid").unwrap()
    );
    let cgroups = cgroup_dirs(&id);
    assert!(!cgroups.is_empty(), "no cgroup /dockmaster/{id}");
    for dir in &cgroups {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}",
            dir.display()
        );
    }

    rt.ok(&["start", &id]);
    let state = rt.state(&id);
    assert_eq!(state["status"], "running");
    assert_eq!(state["pid"], pid);

    rt.ok(&["kill", &id, "KILL"]);
    let state = rt.wait_status(&id, "stopped");
    assert_eq!(state["pid"], 0, "runc reports pid 0 once stopped");
    assert!(!alive(pid));

    rt.ok(&["delete", &id]);
    assert!(!rt.container_dir(&id).exists(), "container dir left behind");
    for dir in &cgroups {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
    let stderr = rt.fails(&["state", &id]);
    assert!(
        stderr.contains(&format!("container {id} does not exist")),
        "{stderr}"
    );
    drop(c);
}

#[test]
fn runs_in_its_own_namespaces_with_seccomp() {
    let rt = Runtime::new();
    let id = unique_id("ns");
    let bundle = Bundle::new(
        &id,
        &[
            "sh",
            "-c",
            "echo pid=$$; echo host=$(hostname); grep Seccomp: /proc/self/status",
        ],
    );
    let c = rt.create(&id, &bundle, &[]);
    assert_eq!(c.output_text(), "", "nothing runs before start");
    rt.ok(&["start", &id]);
    rt.wait_status(&id, "stopped");
    let out = c.wait_output("Seccomp:");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out}");
    assert_eq!(
        lines[1],
        format!("host={}", bundle.spec["hostname"].as_str().unwrap()),
        "{out}"
    );
    // 2 = SECCOMP_MODE_FILTER: the spec's profile was loaded (libseccomp feature).
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "2"]
    );
    rt.ok(&["delete", &id]);
    assert!(!rt.container_dir(&id).exists());
}

#[test]
fn flags_after_the_id() {
    let rt = Runtime::new();
    let id = unique_id("flags");
    let bundle = Bundle::new(&id, &["sleep", "1000"]);
    let pid_file = rt.root.path().join("pid");
    let _c = rt.create_with(
        &id,
        &[
            "create",
            &id,
            "--bundle",
            bundle.path_str(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
    );
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    rt.ok(&["start", &id]);
    // `sleep` as PID 1 has no handler for USR1, so the signal leaves it running.
    rt.ok(&["kill", &id, "USR1", "--all"]);
    assert_eq!(rt.state(&id)["status"], "running");
    // Only a parsed --force lets a running container be deleted.
    rt.ok(&["delete", &id, "--force"]);
    assert!(!alive(pid));
    assert!(!rt.container_dir(&id).exists());
}

#[test]
fn delete_force_kills_a_running_container() {
    let rt = Runtime::new();
    let id = unique_id("force");
    let bundle = Bundle::new(&id, &["sh", "-c", "sleep 1000 & sleep 1000"]);
    let _c = rt.create(&id, &bundle, &[]);
    rt.ok(&["start", &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let cgroups = cgroup_dirs(&id);
    assert!(!cgroups.is_empty());

    let stderr = rt.fails(&["delete", &id]);
    assert!(
        stderr.contains(&format!("container {id} is running")) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(rt.state(&id)["status"], "running");

    rt.ok(&["delete", "-f", &id]);
    assert!(!alive(pid), "init {pid} survived delete --force");
    assert!(!rt.container_dir(&id).exists());
    for dir in &cgroups {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
    // Gone already: --force accepts it, a plain delete says so.
    rt.ok(&["delete", "--force", &id]);
    let stderr = rt.fails(&["delete", &id]);
    assert!(
        stderr.contains(&format!("container {id} does not exist")),
        "{stderr}"
    );
}

#[test]
fn errors_name_the_container() {
    let rt = Runtime::new();
    for verb in [
        &["state", "nope"][..],
        &["start", "nope"],
        &["kill", "nope"],
        &["delete", "nope"],
    ] {
        let stderr = rt.fails(verb);
        assert!(
            stderr.contains("container nope does not exist"),
            "{verb:?}: {stderr}"
        );
    }
    let stderr = rt.fails(&["state", "../etc"]);
    assert!(
        stderr.contains("invalid container id \"../etc\""),
        "{stderr}"
    );

    let id = unique_id("errors");
    let bundle = Bundle::new(&id, &["sleep", "1000"]);
    let _c = rt.create(&id, &bundle, &[]);
    rt.ok(&["start", &id]);
    let stderr = rt.fails(&["start", &id]);
    assert!(
        stderr.contains(&format!("container {id} is running, not created")),
        "{stderr}"
    );
    let stderr = rt.fails(&["create", "--bundle", bundle.path_str(), &id]);
    assert!(
        stderr.contains(&format!("container {id} already exists")),
        "{stderr}"
    );
    let stderr = rt.fails(&["kill", &id, "SIGFOO"]);
    assert!(stderr.contains("unknown signal \"SIGFOO\""), "{stderr}");
    assert_eq!(rt.state(&id)["status"], "running");

    // A terminal needs a console socket; a missing socket fails after libcontainer made the
    // container directory, which must not be left behind.
    let tty = Bundle::new("tty", &["true"]);
    let mut spec = tty.spec.clone();
    spec["process"]["terminal"] = Value::Bool(true);
    fs::write(tty.path().join("config.json"), spec.to_string()).unwrap();
    let stderr = rt.fails(&["create", "--bundle", tty.path_str(), "tty"]);
    assert!(
        stderr.contains("cannot create container tty") && stderr.contains("console socket"),
        "{stderr}"
    );
    let missing = rt.root.path().join("no.sock");
    let stderr = rt.fails(&[
        "create",
        "tty",
        "--bundle",
        tty.path_str(),
        "--console-socket",
        missing.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("cannot create container tty") && stderr.contains("ENOENT"),
        "{stderr}"
    );
    assert!(!rt.container_dir("tty").exists());

    let empty = tempfile::tempdir().unwrap();
    let stderr = rt.fails(&[
        "create",
        "--bundle",
        empty.path().to_str().unwrap(),
        "other",
    ]);
    assert!(stderr.contains("no config.json"), "{stderr}");
    assert!(!rt.container_dir("other").exists());
}

#[test]
fn kill_takes_names_and_numbers() {
    let rt = Runtime::new();
    let id = unique_id("signals");
    // PID 1 only receives signals it handles; the traps print what arrived.
    let script = "trap 'echo got USR1' USR1; trap 'echo got USR2' USR2; \
                  trap 'echo got TERM; exit 0' TERM; echo ready; \
                  while :; do sleep 0.05; done";
    let bundle = Bundle::new(&id, &["sh", "-c", script]);
    let c = rt.create(&id, &bundle, &[]);

    // A signal the waiting init survives leaves the container created.
    rt.ok(&["kill", &id, "USR1"]);
    assert_eq!(rt.state(&id)["status"], "created");

    rt.ok(&["start", &id]);
    c.wait_output("ready");
    rt.ok(&["kill", &id, "usr1"]);
    c.wait_output("got USR1");
    rt.ok(&["kill", &id, "SIGUSR2"]);
    c.wait_output("got USR2");
    rt.ok(&["kill", &id, "10"]);
    let out = c.wait_output("got USR1\ngot USR2\ngot USR1");
    assert_eq!(rt.state(&id)["status"], "running", "{out}");
    rt.ok(&["kill", &id]); // default SIGTERM
    c.wait_output("got TERM");
    rt.wait_status(&id, "stopped");

    let stderr = rt.fails(&["kill", &id, "KILL"]);
    assert!(
        stderr.contains(&format!("container {id} is stopped")),
        "{stderr}"
    );
    rt.ok(&["delete", &id]);
}
