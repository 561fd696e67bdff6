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
