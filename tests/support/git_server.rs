//! Real git servers on 127.0.0.1 for tests, and helpers to make and change repositories.
//!
//! Every piece uses the same git installation: [`git_bin`] (`git` from `PATH`, or
//! `$DOCKMASTER_TEST_GIT`), its `git daemon`, and `git-http-backend` from its `--exec-path`;
//! sshd sessions find `git-upload-pack` through the default `PATH` too. The host's git
//! configuration is kept out ([`git`]).
//!
//! ```ignore
//! let repos = GitRepos::new();                    // temp dir of bare repositories
//! let bare = repos.create("app");                 // git init --bare -b main
//! let work = WorkClone::new(&bare);               // a working clone that pushes to it
//! work.write("web/compose.yaml", "services: {}\n");
//! let c1 = work.commit("first");
//! work.push();
//! let daemon = GitDaemon::start(repos.path());    // git://127.0.0.1:PORT/app.git
//! let http = GitHttp::start(repos.path(), Some(("alice", "s3cret")));
//! let url = http.url("app.git");                  // http://127.0.0.1:PORT/app.git
//! let sshd = Sshd::start();                       // ssh://root@127.0.0.1:PORT/<abs path>
//! ```
//!
//! Servers are killed (by PID) or stopped on drop; temp dirs are removed on drop.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::env::{free_port, run_ok};
use super::http::read_head;

/// The git binary every helper here runs.
pub fn git_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| std::env::var("DOCKMASTER_TEST_GIT").unwrap_or_else(|_| "git".into()))
}

/// `git --exec-path` of [`git_bin`] (where git-http-backend lives).
pub fn git_exec_path() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| PathBuf::from(run_ok(Command::new(git_bin()).arg("--exec-path")).trim()))
}

/// A directory for git's `HOME` with an empty config, so the host's ~/.gitconfig and
/// /etc/gitconfig never change what a test does.
fn isolated_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        // One fixed, empty directory shared by all test processes (git writes nothing there):
        // nothing to clean up per process.
        let dir = std::env::temp_dir().join("dockmaster-git-home");
        fs::create_dir_all(&dir).expect("create git home");
        dir
    })
}

/// A `git` command with the host's configuration kept out and a fixed identity.
pub fn git() -> Command {
    let mut c = Command::new(git_bin());
    c.env("HOME", isolated_home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.test")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.test")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null());
    c
}

/// Makes a bare repository at `path` (`git init --bare -b main`) that accepts pushes over
/// every transport, including force-pushes.
pub fn init_bare(path: &Path) -> PathBuf {
    run_ok(git().args(["init", "-q", "--bare", "-b", "main"]).arg(path));
    for (k, v) in [
        ("http.receivepack", "true"),
        ("receive.denyNonFastForwards", "false"),
        ("receive.denyDeletes", "false"),
    ] {
        run_ok(git().arg("-C").arg(path).args(["config", k, v]));
    }
    path.to_path_buf()
}

/// A temporary directory of bare repositories, the base dir the servers export.
pub struct GitRepos {
    dir: tempfile::TempDir,
}

impl Default for GitRepos {
    fn default() -> Self {
        GitRepos::new()
    }
}

impl GitRepos {
    pub fn new() -> GitRepos {
        let dir = tempfile::Builder::new()
            .prefix("dockmaster-git-repos-")
            .tempdir()
            .expect("temp dir for repositories");
        GitRepos { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates the bare repository `<dir>/<name>.git`; returns its path.
    pub fn create(&self, name: &str) -> PathBuf {
        init_bare(&self.dir.path().join(format!("{name}.git")))
    }

    /// `file://` URL of `<name>.git`.
    pub fn file_url(&self, name: &str) -> String {
        format!("file://{}/{name}.git", self.dir.path().display())
    }
}

/// A working clone of a bare repository for writing, committing, tagging and pushing.
/// Pushes go straight to the bare repository's path.
pub struct WorkClone {
    dir: tempfile::TempDir,
    branch: String,
}

impl WorkClone {
    /// Clones `bare` (empty or not) on branch `main`.
    pub fn new(bare: &Path) -> WorkClone {
        WorkClone::with_branch(bare, "main")
    }

    /// Clones `bare` and works on `branch` (created if the repository has none).
    pub fn with_branch(bare: &Path, branch: &str) -> WorkClone {
        let dir = tempfile::Builder::new()
            .prefix("dockmaster-git-work-")
            .tempdir()
            .expect("temp dir for a work clone");
        run_ok(git().args(["clone", "-q"]).arg(bare).arg(dir.path()));
        let w = WorkClone {
            dir,
            branch: branch.to_string(),
        };
        run_ok(w.git().args(["config", "commit.gpgsign", "false"]));
        // Switch to the branch whether or not it exists yet (an empty clone has none).
        let exists = w
            .git()
            .args(["rev-parse", "--verify", "-q"])
            .arg(format!("refs/remotes/origin/{branch}"))
            .status()
            .expect("git rev-parse")
            .success();
        if exists {
            run_ok(
                w.git()
                    .args(["checkout", "-q", "-B", branch])
                    .arg(format!("origin/{branch}")),
            );
        } else {
            run_ok(w.git().args(["checkout", "-q", "--orphan", branch]));
        }
        w
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `git -C <clone>`.
    pub fn git(&self) -> Command {
        let mut c = git();
        c.arg("-C").arg(self.dir.path());
        c
    }

    /// Writes `content` to `rel` (parents created), mode 0644.
    pub fn write(&self, rel: &str, content: &str) -> &Self {
        self.write_bytes(rel, content.as_bytes(), 0o644)
    }

    /// Writes an executable file (mode 0755).
    pub fn write_exec(&self, rel: &str, content: &str) -> &Self {
        self.write_bytes(rel, content.as_bytes(), 0o755)
    }

    pub fn write_bytes(&self, rel: &str, content: &[u8], mode: u32) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        let _ = fs::remove_file(&p);
        fs::write(&p, content).expect("write file");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    /// Creates the symlink `rel -> target`.
    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        let _ = fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p).expect("symlink");
        self
    }

    /// Removes a file or directory.
    pub fn remove(&self, rel: &str) -> &Self {
        let p = self.dir.path().join(rel);
        if p.is_dir() {
            fs::remove_dir_all(&p).expect("remove dir");
        } else {
            fs::remove_file(&p).expect("remove file");
        }
        self
    }

    /// Stages everything and commits (empty commits allowed); returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        run_ok(self.git().args(["add", "-A"]));
        run_ok(
            self.git()
                .args(["commit", "-q", "--allow-empty", "-m", message]),
        );
        self.head()
    }

    pub fn head(&self) -> String {
        run_ok(self.git().args(["rev-parse", "HEAD"]))
            .trim()
            .to_string()
    }

    /// Pushes the branch.
    pub fn push(&self) {
        run_ok(
            self.git()
                .args(["push", "-q", "origin"])
                .arg(format!("HEAD:refs/heads/{}", self.branch)),
        );
    }

    /// Pushes the branch with `--force` (after [`WorkClone::reset_hard`] or an amend).
    pub fn force_push(&self) {
        run_ok(
            self.git()
                .args(["push", "-q", "--force", "origin"])
                .arg(format!("HEAD:refs/heads/{}", self.branch)),
        );
    }

    /// `git reset --hard <commit>`.
    pub fn reset_hard(&self, commit: &str) {
        run_ok(self.git().args(["reset", "-q", "--hard", commit]));
    }

    /// A lightweight tag on HEAD, pushed (forced, so it can be moved).
    pub fn tag(&self, name: &str) {
        run_ok(self.git().args(["tag", "-f", name]));
        self.push_tag(name);
    }

    /// An annotated tag on HEAD, pushed (forced).
    pub fn annotated_tag(&self, name: &str, message: &str) {
        run_ok(self.git().args(["tag", "-f", "-a", name, "-m", message]));
        self.push_tag(name);
    }

    fn push_tag(&self, name: &str) {
        run_ok(
            self.git()
                .args(["push", "-q", "--force", "origin"])
                .arg(format!("refs/tags/{name}:refs/tags/{name}")),
        );
    }
}

/// Sets PR_SET_PDEATHSIG so a server never outlives a test binary that aborted.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Waits until `port` accepts connections; `Err(log)` when `child` exited first or after
/// 20 s.
fn wait_port(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "exited with {status}: {}",
                fs::read_to_string(log).unwrap_or_default()
            ));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not listening on {port} after 20s: {}",
                fs::read_to_string(log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `git daemon` exporting every repository below a base directory, pushes enabled.
pub struct GitDaemon {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl GitDaemon {
    /// Serves `base` (URLs `git://127.0.0.1:PORT/<path below base>`).
    pub fn start(base: &Path) -> GitDaemon {
        let logdir = tempfile::tempdir().expect("temp dir for the daemon log");
        let log = logdir.path().join("daemon.log");
        let mut last = String::new();
        for _ in 0..8 {
            let port = free_port();
            let logf = fs::File::create(&log).expect("create daemon log");
            // git-daemon itself, not the `git` wrapper (which would fork it as a grandchild
            // that killing the wrapper leaves running).
            let mut cmd = Command::new(git_exec_path().join("git-daemon"));
            cmd.env("HOME", isolated_home())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .stdin(Stdio::null())
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .args([
                    "--export-all",
                    "--enable=receive-pack",
                    "--reuseaddr",
                    "--informative-errors",
                    "--verbose",
                ])
                .stdout(logf.try_clone().expect("dup log"))
                .stderr(logf);
            die_with_parent(&mut cmd);
            let mut child = cmd.spawn().expect("spawn git daemon");
            match wait_port(&mut child, port, &log) {
                Ok(()) => {
                    return GitDaemon {
                        child: Some(child),
                        port,
                        log,
                        _logdir: logdir,
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = e;
                }
            }
        }
        panic!("git daemon did not start: {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `git://127.0.0.1:PORT/<repo>` (`repo` relative to the base, e.g. `app.git`).
    pub fn url(&self, repo: &str) -> String {
        format!(
            "git://127.0.0.1:{}/{}",
            self.port,
            repo.trim_start_matches('/')
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the daemon (the port is closed afterwards).
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request the smart-HTTP server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLogEntry {
    pub method: String,
    /// Path and query as requested.
    pub target: String,
    pub status: u16,
    /// The authenticated user.
    pub user: Option<String>,
    /// The raw Authorization header, to prove what a client sent (or did not).
    pub authorization: Option<String>,
}

/// Smart HTTP: an HTTP/1.1 server in this process (a thread per connection) that checks
/// basic auth and runs `git-http-backend` as a CGI for each request. `Connection: close`
/// on every response.
pub struct GitHttp {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<HttpLogEntry>>>,
    credentials: Option<(String, String)>,
}

struct HttpShared {
    root: PathBuf,
    credentials: Option<(String, String)>,
    log: Arc<Mutex<Vec<HttpLogEntry>>>,
}

/// Largest chunked request body buffered (pushes from tests are small).
const MAX_CHUNKED_BODY: usize = 64 << 20;

impl GitHttp {
    /// Serves the repositories below `root`; with `credentials`, every request must carry
    /// them as basic auth (else 401 with `WWW-Authenticate: Basic`).
    pub fn start(root: &Path, credentials: Option<(&str, &str)>) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        let shared = Arc::new(HttpShared {
            root: root.to_path_buf(),
            credentials: credentials.clone(),
            log: log.clone(),
        });
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve_http(conn, &shared);
                });
            }
        });
        GitHttp {
            port,
            stop,
            accept: Some(accept),
            log,
            credentials,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/<repo>` without credentials.
    pub fn url(&self, repo: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            repo.trim_start_matches('/')
        )
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT/<repo>` (for the git CLI; credentials must be
    /// URL-safe).
    pub fn url_with_credentials(&self, repo: &str) -> String {
        let (u, p) = self.credentials.as_ref().expect("server has credentials");
        format!(
            "http://{u}:{p}@127.0.0.1:{}/{}",
            self.port,
            repo.trim_start_matches('/')
        )
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<HttpLogEntry> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn clear_requests(&self) {
        self.log.lock().expect("log lock").clear();
    }

    /// Stops accepting; connections in flight finish.
    pub fn stop(&mut self) {
        if let Some(h) = self.accept.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            let _ = h.join();
        }
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn respond_simple(conn: &mut TcpStream, status: &str, extra: &str) -> io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    conn.flush()
}

fn serve_http(mut conn: TcpStream, shared: &HttpShared) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let Some((head, leftover)) = read_head(&mut conn)? else {
        return Ok(());
    };
    let method = head.first.clone();
    let target = head.second.clone();
    let authorization = head.header("authorization").map(str::to_string);
    let mut entry = HttpLogEntry {
        method: method.clone(),
        target: target.clone(),
        status: 0,
        user: None,
        authorization: authorization.clone(),
    };
    let record = |entry: HttpLogEntry| shared.log.lock().expect("log lock").push(entry);

    // Authentication.
    let mut user = None;
    if let Some((u, p)) = &shared.credentials {
        let given = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        match given.as_deref().and_then(|g| g.split_once(':')) {
            Some((gu, gp)) if gu == u && gp == p => user = Some(u.clone()),
            _ => {
                entry.status = 401;
                record(entry);
                return respond_simple(
                    &mut conn,
                    "401 Unauthorized",
                    "WWW-Authenticate: Basic realm=\"git\"\r\n",
                );
            }
        }
    }
    entry.user = user.clone();

    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    if path.split('/').any(|c| c == "..") {
        entry.status = 400;
        record(entry);
        return respond_simple(&mut conn, "400 Bad Request", "");
    }

    // The request body: streamed for Content-Length, buffered (capped) for chunked.
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    let mut reader = io::Cursor::new(leftover).chain(conn.try_clone()?);
    let mut chunked_body = None;
    let content_length: Option<u64> = if chunked {
        let body = read_chunked(&mut BufReader::new(&mut reader))?;
        let n = body.len() as u64;
        chunked_body = Some(body);
        Some(n)
    } else {
        head.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    };

    let mut cmd = Command::new(git_exec_path().join("git-http-backend"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", isolated_home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ct) = head.header("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(n) = content_length {
        cmd.env("CONTENT_LENGTH", n.to_string());
    }
    if let Some(p) = head.header("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    if let Some(enc) = head.header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", enc);
    }
    if let Some(u) = &user {
        cmd.env("REMOTE_USER", u);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("cgi stdin");
    // Feed the body from a thread while the response is read: no pipe deadlock.
    let feeder = std::thread::spawn(move || -> io::Result<()> {
        if let Some(body) = chunked_body {
            stdin.write_all(&body)?;
        } else if let Some(n) = content_length {
            io::copy(&mut reader.take(n), &mut stdin)?;
        }
        Ok(())
    });

    let mut out = BufReader::new(child.stdout.take().expect("cgi stdout"));
    let mut status = "200 OK".to_string();
    let mut headers = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            // The body is re-framed as chunked below.
            Some((k, _)) if k.eq_ignore_ascii_case("content-length") => {}
            _ => {
                headers.push_str(line);
                headers.push_str("\r\n");
            }
        }
    }
    // Logged before the body goes out: a client that has its answer sees the entry.
    entry.status = status
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    record(entry);
    // Chunked: libgit2 reads no body from a response with neither Content-Length nor
    // chunked encoding, even with Connection: close.
    write!(
        conn,
        "HTTP/1.1 {status}\r\n{headers}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        write!(conn, "{n:x}\r\n")?;
        conn.write_all(&buf[..n])?;
        conn.write_all(b"\r\n")?;
    }
    conn.write_all(b"0\r\n\r\n")?;
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Write);
    let _ = feeder.join();
    let _ = child.wait();
    Ok(())
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_CHUNKED_BODY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunked body too large",
            ));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

/// A TCP listener on 127.0.0.1 that accepts connections and never answers: a server that
/// hangs, for timeout tests. Connections are held until drop.
pub struct Blackhole {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    held.push(c);
                }
            }
        });
        Blackhole {
            port,
            stop,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// A loopback port nothing listens on (bound and released; racy only against other
/// processes grabbing it in between).
pub fn closed_port() -> u16 {
    free_port()
}

/// OpenSSH's sshd on 127.0.0.1 with its own host key, one authorized user key (for root),
/// and the config, pid file and log in a temp dir. It runs in a private mount namespace with
/// a tmpfs on /run (sshd insists on /run/sshd; the host's /run is left alone); /etc/ssh and
/// ~/.ssh are never used.
pub struct Sshd {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

pub const SSHD_BIN: &str = "/usr/sbin/sshd";

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("dockmaster-sshd-")
            .tempdir()
            .expect("temp dir for sshd");
        let d = dir.path();
        for key in ["host_key", "user_key", "other_key"] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                    .arg(d.join(key)),
            );
        }
        fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
        let log = d.join("sshd.log");
        let mut last = String::new();
        for _ in 0..8 {
            let port = free_port();
            let config = format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 PidFile {d}/sshd.pid\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 UseDNS no\n\
                 LogLevel VERBOSE\n",
                d = d.display()
            );
            fs::write(d.join("sshd_config"), config).expect("write sshd_config");
            let logf = fs::File::create(&log).expect("create sshd log");
            let mut cmd = Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mount -t tmpfs dockmaster-sshd /run && mkdir -m 755 /run/sshd && exec "$0" -D -e -f "$1""#)
                .arg(SSHD_BIN)
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(logf.try_clone().expect("dup log"))
                .stderr(logf);
            die_with_parent(&mut cmd);
            // unshare and sh exec: the PID is sshd's.
            let mut child = cmd.spawn().expect("spawn sshd");
            match wait_port(&mut child, port, &log) {
                Ok(()) => {
                    let s = Sshd {
                        child: Some(child),
                        port,
                        dir,
                    };
                    s.write_known_hosts(&s.known_hosts(), &s.host_public_key());
                    return s;
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = e;
                }
            }
        }
        panic!("sshd did not start: {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ssh://root@127.0.0.1:PORT<absolute path of the bare repository>`.
    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, repo.display())
    }

    /// The private key sshd accepts (for root).
    pub fn user_key(&self) -> PathBuf {
        self.dir.path().join("user_key")
    }

    /// A private key sshd does not accept.
    pub fn unauthorized_key(&self) -> PathBuf {
        self.dir.path().join("other_key")
    }

    /// A known_hosts file listing this server's real host key as `[127.0.0.1]:PORT`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// `type base64` of the server's host key.
    pub fn host_public_key(&self) -> String {
        public_key_fields(&self.dir.path().join("host_key.pub"))
    }

    /// `type base64` of a key that is not the server's (for mismatch tests).
    pub fn other_public_key(&self) -> String {
        public_key_fields(&self.dir.path().join("other_key.pub"))
    }

    /// Writes a known_hosts file at `path` saying this server (`[127.0.0.1]:PORT`) has key
    /// `key` (`type base64`).
    pub fn write_known_hosts(&self, path: &Path, key: &str) {
        fs::write(path, format!("[127.0.0.1]:{} {key}\n", self.port)).expect("write known_hosts");
    }

    /// Like [`Sshd::write_known_hosts`], hashed with `ssh-keygen -H`.
    pub fn write_hashed_known_hosts(&self, path: &Path, key: &str) {
        self.write_known_hosts(path, key);
        run_ok(
            Command::new("ssh-keygen")
                .arg("-q")
                .arg("-H")
                .arg("-f")
                .arg(path),
        );
        let _ = fs::remove_file(format!("{}.old", path.display()));
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

fn public_key_fields(pub_file: &Path) -> String {
    let s = fs::read_to_string(pub_file).expect("read public key");
    s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// Reads `path`'s whole content as a string (for asserting on mirror config files).
pub fn read_string(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// All files below `dir` whose content contains `needle` (for "no secret on disk" checks).
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    if let Ok(bytes) = fs::read(&p) {
                        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                            hits.push(p);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    hits
}
