//! Small helpers: free ports, temp roots, the `dockmaster` command, client config files.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

/// A loopback port that was free a moment ago. Another process can take it before the caller
/// binds it; callers that start servers on it retry on a bind failure.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A temporary directory holding a dockmaster `--root` and a private `HOME`, removed on drop.
pub struct TempRoot {
    dir: tempfile::TempDir,
}

impl TempRoot {
    pub fn new() -> TempRoot {
        let dir = tempfile::Builder::new()
            .prefix("dockmaster-test-")
            .tempdir()
            .expect("create temp root");
        for sub in ["root", "home/.docker", "xdg/config", "xdg/run"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create temp root subdir");
        }
        TempRoot { dir }
    }

    /// The directory passed as `--root`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The `HOME` of commands made by [`TempRoot::dockmaster`].
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `DOCKER_CONFIG` of commands made by [`TempRoot::dockmaster`] (`$HOME/.docker`).
    pub fn docker_config_dir(&self) -> PathBuf {
        self.home().join(".docker")
    }

    /// The whole temp directory, for anything else a test wants to keep next to the root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `dockmaster --root ROOT` with the host's credentials and configuration kept out.
    pub fn dockmaster(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockmaster"));
        cmd.arg("--root").arg(self.root());
        cmd.env("HOME", self.home())
            .env("DOCKER_CONFIG", self.docker_config_dir())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg/config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("xdg/run"))
            .env_remove("DOCKMASTER_ROOT")
            .env_remove("DOCKMASTER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        cmd
    }
}

impl Default for TempRoot {
    fn default() -> Self {
        TempRoot::new()
    }
}

/// `dockmaster` command for `root` (see [`TempRoot::dockmaster`]).
pub fn dockmaster(root: &TempRoot) -> Command {
    root.dockmaster()
}

/// Writes `dir/config.json` in Docker's format with one `auths` entry per (host, user,
/// password); returns the file's path.
pub fn write_docker_config(dir: &Path, auths: &[(&str, &str, &str)]) -> PathBuf {
    let mut map = serde_json::Map::new();
    for (host, user, password) in auths {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        map.insert(host.to_string(), serde_json::json!({ "auth": auth }));
    }
    let doc = serde_json::json!({ "auths": map });
    fs::create_dir_all(dir).expect("create docker config dir");
    let path = dir.join("config.json");
    fs::write(&path, serde_json::to_vec_pretty(&doc).expect("serialize"))
        .expect("write config.json");
    path
}

/// Makes `dir/HOST/ca.crt` (Docker's certs.d layout) from `ca`; returns `dir`.
pub fn certs_d(dir: &Path, host: &str, ca: &Path) -> PathBuf {
    let d = dir.join(host);
    fs::create_dir_all(&d).expect("create certs.d host dir");
    fs::copy(ca, d.join("ca.crt")).expect("copy ca.crt");
    dir.to_path_buf()
}

/// Runs a command, panicking with its output when it fails; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a process with this PID exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // The state follows the parenthesized command name.
            let state = s
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// `program` in a private mount namespace with a tmpfs over `/var/lib`: skopeo and podman
/// run as root otherwise write `/var/lib/containers/cache` on the host.
pub fn with_private_var_lib(program: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs dockmaster-test /var/lib && exec "$0" "$@""#)
        .arg(program);
    c
}

/// `skopeo` that leaves the host alone ([`with_private_var_lib`]), with an accept-anything
/// policy and an empty auth file in `dir`. Append skopeo's arguments.
pub fn skopeo(dir: &Path) -> Command {
    let policy = dir.join("skopeo-policy.json");
    fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("write skopeo policy");
    let auth = dir.join("skopeo-auth.json");
    fs::write(&auth, "{}").expect("write skopeo auth file");
    let mut c = with_private_var_lib("skopeo");
    c.arg("--policy")
        .arg(policy)
        .env("REGISTRY_AUTH_FILE", auth)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg"));
    c
}

/// podman with a private store (vfs) in a temp dir, so the host's images, containers and
/// caches stay untouched. For comparing against a second implementation.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}

impl Podman {
    pub fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("dockmaster-podman-")
            .tempdir()
            .expect("podman temp dir");
        fs::write(dir.path().join("auth.json"), "{}").expect("write podman auth file");
        Podman { dir }
    }

    /// `podman --root ... --runroot ...` with cgroupfs and no events; append arguments.
    pub fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = with_private_var_lib("podman");
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"])
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .env("HOME", d)
            .env("XDG_CONFIG_HOME", d.join("xdg"));
        c
    }

    /// Pulls `reference` (TLS verification off), creates a container without starting it
    /// and reads `podman export` of it as a [`super::layer::Tree`]. podman's export has no
    /// extended attributes.
    pub fn export(&self, reference: &str) -> super::layer::Tree {
        run_ok(
            self.cmd()
                .args(["pull", "-q", "--tls-verify=false", reference]),
        );
        let id = run_ok(self.cmd().args(["create", reference]));
        let tar = self.dir.path().join("export.tar");
        run_ok(self.cmd().args(["export", "-o"]).arg(&tar).arg(id.trim()));
        run_ok(self.cmd().args(["rm", id.trim()]));
        let t = super::layer::Tree::from_tar(fs::File::open(&tar).expect("open export"));
        let _ = fs::remove_file(&tar);
        t
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-a", "-f"]).output();
        let _ = self.cmd().args(["rmi", "-a", "-f"]).output();
    }
}
