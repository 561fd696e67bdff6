//! A real registry: Debian's `docker-registry` (CNCF distribution 2.8) on a loopback port,
//! with its own config, storage and, per mode, htpasswd file, token server or TLS certs.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::env::{free_port, run_ok};
use super::token::{TokenServer, ISSUER, SERVICE};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How the registry authenticates and which transport it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// HTTP, anonymous.
    Plain,
    /// HTTP with basic auth against an htpasswd (bcrypt) file.
    Basic { user: String, password: String },
    /// HTTP with bearer tokens from our in-process [`TokenServer`].
    Token { user: String, password: String },
    /// HTTPS with a certificate from our own CA, anonymous.
    Tls,
}

impl Mode {
    pub fn basic(user: &str, password: &str) -> Mode {
        Mode::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn token(user: &str, password: &str) -> Mode {
        Mode::Token {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The credentials this mode accepts, if it wants any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match self {
            Mode::Basic { user, password } | Mode::Token { user, password } => {
                Some((user, password))
            }
            Mode::Plain | Mode::Tls => None,
        }
    }
}

/// Options beyond the mode; see [`Registry::builder`].
#[derive(Debug, Clone)]
pub struct RegistryBuilder {
    mode: Mode,
    storage: Option<PathBuf>,
    token_anonymous: bool,
    token_expires_in: u64,
}

impl RegistryBuilder {
    /// Serve this storage directory (kept on drop) instead of a fresh temp one.
    pub fn storage(mut self, dir: &Path) -> Self {
        self.storage = Some(dir.to_path_buf());
        self
    }

    /// Token mode: whether requests without credentials get a (pull/push) token.
    pub fn anonymous_tokens(mut self, allow: bool) -> Self {
        self.token_anonymous = allow;
        self
    }

    /// Token mode: `expires_in` (and `exp - iat`) of issued tokens, in seconds.
    pub fn token_expires_in(mut self, secs: u64) -> Self {
        self.token_expires_in = secs;
        self
    }

    pub fn start(self) -> Registry {
        Registry::start_with(self)
    }
}

/// A running registry; dropping it kills the process (by PID) and removes its temp dirs.
///
/// The process gets `PR_SET_PDEATHSIG=SIGKILL`, so it dies with the *thread* that started
/// it: start it on the test's own thread and keep it owned by the test (not in a static
/// initialized by another test's thread).
pub struct Registry {
    mode: Mode,
    child: Option<Child>,
    pid: u32,
    port: u16,
    dir: tempfile::TempDir,
    storage: PathBuf,
    token: Option<TokenServer>,
    ca: Option<PathBuf>,
}

impl Registry {
    /// Starts a registry with fresh temp storage.
    pub fn start(mode: Mode) -> Registry {
        Registry::builder(mode).start()
    }

    /// Starts a registry serving an existing storage directory (left in place on drop), for
    /// example one a plain registry was pushed to, now served in another mode.
    pub fn start_on_storage(mode: Mode, storage: &Path) -> Registry {
        Registry::builder(mode).storage(storage).start()
    }

    pub fn builder(mode: Mode) -> RegistryBuilder {
        RegistryBuilder {
            mode,
            storage: None,
            token_anonymous: false,
            token_expires_in: 300,
        }
    }

    fn start_with(opts: RegistryBuilder) -> Registry {
        let mut dir = tempfile::Builder::new()
            .prefix("dockmaster-registry-")
            .tempdir()
            .expect("create registry temp dir");
        let storage = match &opts.storage {
            Some(s) => s.clone(),
            None => dir.path().join("storage"),
        };
        fs::create_dir_all(&storage).expect("create registry storage");

        let mut auth = String::new();
        let mut token = None;
        let mut ca = None;
        let mut tls = String::new();
        match &opts.mode {
            Mode::Plain => {}
            Mode::Basic { user, password } => {
                let line = run_ok(Command::new("htpasswd").args(["-Bbn", user, password]));
                let path = dir.path().join("htpasswd");
                fs::write(&path, line.trim_end().to_string() + "\n").expect("write htpasswd");
                auth = format!(
                    "auth:\n  htpasswd:\n    realm: dockmaster-test\n    path: {}\n",
                    path.display()
                );
            }
            Mode::Token { user, password } => {
                let t = TokenServer::start(dir.path(), user, password);
                t.set_allow_anonymous(opts.token_anonymous);
                t.set_expires_in(opts.token_expires_in);
                auth = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    t.realm(),
                    t.cert().display()
                );
                token = Some(t);
            }
            Mode::Tls => {
                let (ca_crt, crt, key) = make_tls(dir.path());
                tls = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    crt.display(),
                    key.display()
                );
                ca = Some(ca_crt);
            }
        }

        let log_path = dir.path().join("registry.log");
        let config_path = dir.path().join("config.yml");
        let mut last_log = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: dockmaster-test-secret\n{tls}\
                 health:\n  storagedriver:\n    enabled: false\n\
                 {auth}",
                storage.display()
            );
            fs::write(&config_path, config).expect("write registry config");
            let log = File::create(&log_path).expect("create registry log");
            let mut cmd = Command::new(REGISTRY_BIN);
            cmd.arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log);
            // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the
            // registry if the test thread that started it dies without dropping the guard
            // (test binary aborted), so no registry outlives its test.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("spawn docker-registry");
            let pid = child.id();
            let mut reg = Registry {
                mode: opts.mode.clone(),
                child: Some(child),
                pid,
                port,
                dir,
                storage: storage.clone(),
                token,
                ca,
            };
            match reg.wait_ready() {
                Ok(()) => return reg,
                Err(log) => {
                    reg.kill();
                    last_log = log;
                    if !last_log.contains("address already in use") {
                        break;
                    }
                    // Another process took the port between probing and binding: retry.
                    dir = take_dir(&mut reg);
                    token = reg.token.take();
                    ca = reg.ca.take();
                }
            }
        }
        panic!("docker-registry did not start:\n{last_log}");
    }

    /// Polls `/v2/` until any HTTP answer; on failure returns the registry's log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let client = self.client();
        let url = self.url("/v2/");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited with {status}\n{}", self.log()));
                }
            }
            if client.get(&url).send().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on {url} within 20s\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.mode == Mode::Tls {
            "https"
        } else {
            "http"
        }
    }

    /// `SCHEME://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme(), self.host(), path)
    }

    /// The CA certificate (PEM) that signed the TLS registry's certificate.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The filesystem storage root (`docker/registry/v2/...` lives below it).
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// Path of a blob's data file in storage (for tampering with content).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_data_path(&self.storage, digest)
    }

    /// The token server in token mode.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// Token requests served so far (0 outside token mode).
    pub fn token_requests(&self) -> usize {
        self.token.as_ref().map_or(0, |t| t.token_requests())
    }

    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.mode.credentials()
    }

    /// The temp directory with config, log, certs (and storage unless one was given).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's process ID (for leak checks).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the registry wrote to stdout and stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A blocking HTTP client that trusts this registry's CA in TLS mode. No credentials.
    pub fn client(&self) -> reqwest::blocking::Client {
        let mut b = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &self.ca {
            let pem = fs::read(ca).expect("read ca cert");
            b = b
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("parse ca cert"));
        }
        b.build().expect("build http client")
    }

    /// Stops the registry now (SIGKILL by PID, then reaped); temp dirs stay until drop.
    pub fn stop(&mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Moves the temp dir out of a registry that failed to start, so the retry reuses it.
fn take_dir(reg: &mut Registry) -> tempfile::TempDir {
    let placeholder = tempfile::Builder::new()
        .prefix("dockmaster-registry-")
        .tempdir()
        .expect("create registry temp dir");
    std::mem::replace(&mut reg.dir, placeholder)
}

/// `STORAGE/docker/registry/v2/blobs/sha256/AB/ABCD.../data`.
pub fn blob_data_path(storage: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').expect("digest has an algorithm");
    storage
        .join("docker/registry/v2/blobs")
        .join(alg)
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Makes a CA and a server certificate for 127.0.0.1 / localhost signed by it; returns
/// (ca.crt, server.crt, server.key).
pub fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca_crt = dir.join("ca.crt");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let crt = dir.join("server.crt");
    let ext = dir.join("server.ext");
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_crt)
            .args(["-days", "2", "-subj", "/CN=dockmaster-test-ca"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    );
    run_ok(
        Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", "/CN=localhost"]),
    );
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    let serial = format!(
        "0x{:016x}",
        u64::from(std::process::id()) ^ (u64::from(free_port()) << 32)
    );
    run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca_crt)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-set_serial", &serial, "-days", "2", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&crt),
    );
    (ca_crt, crt, key)
}
