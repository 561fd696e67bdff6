//! The bare mirror of one source, on libgit2.
//!
//! Layout: the mirror is the directory the caller gives (`<root>/sources/<name>.git`), a bare
//! repository holding only the followed reference (`refs/heads/<b>` or `refs/tags/<t>`; every
//! branch and tag for a commit reference). Writers (open's init, fetch) serialize on an
//! flock of the sibling file `<dir>.lock`, so stale libgit2 lock files found under it are
//! left over from a killed process and removed. A re-clone is built at `<dir>.new` and
//! swapped in only once its fetch succeeded, so an unreachable server never costs the mirror
//! that keeps the agent going offline.

use std::cell::{Cell, RefCell};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode,
    FetchOptions, ObjectType, Oid, Remote, RemoteCallbacks, RemoteHead, Repository,
    RepositoryInitOptions, TreeWalkMode, TreeWalkResult,
};

use super::export::{self, ExportLimits};
use super::known_hosts::{self, HostKeyCheck};
use super::url::{GitUrl, Transport};
use super::{
    CommitInfo, FetchFailure, GitAuth, GitRef, ProjectDir, SourceError, SourceSpec, COMPOSE_FILES,
};

/// Connect timeout when [`configure_timeouts`] was not called.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of each read or write on a server connection when not configured.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);

static TIMEOUTS: OnceLock<(Duration, Duration)> = OnceLock::new();
static APPLY_TIMEOUTS: Once = Once::new();

/// Chooses libgit2's process-wide server connect timeout and per-operation read/write
/// timeout (they cover http(s), git:// and ssh) instead of the defaults. Takes effect only
/// before the first [`configure_timeouts`] or network operation of this module; returns
/// whether it did.
pub fn set_timeouts(connect: Duration, io: Duration) -> bool {
    TIMEOUTS.set((connect, io)).is_ok()
}

/// Applies the timeouts ([`set_timeouts`], else the defaults) to libgit2 now. Call it early,
/// before threads start; network operations of this module call it too.
pub fn configure_timeouts() {
    ensure_timeouts();
}

fn ensure_timeouts() {
    APPLY_TIMEOUTS.call_once(|| {
        let (connect, io) = *TIMEOUTS.get_or_init(|| (DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT));
        let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: these write two C globals of libgit2 without synchronization. Every
        // libgit2 network operation of this process goes through this module and runs after
        // this `Once` completed, which orders the writes before all reads.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
            let _ = git2::opts::set_server_timeout_in_milliseconds(ms(io));
        }
    });
}

/// Limits on what a fetch may cost; exceeding them fails the fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Bytes received from the server in one fetch.
    pub max_bytes: u64,
    /// Wall time of one fetch's transfer.
    pub max_duration: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_bytes: 1 << 30,
            max_duration: Duration::from_secs(600),
        }
    }
}

/// More packs than this (one per fetch) and the next fetch re-clones into a fresh mirror
/// (libgit2 cannot repack), keeping lookups fast on hosts that poll for years.
pub const MAX_PACKS: usize = 64;

/// The bare mirror of one source. Cheap to keep; every operation opens the repository
/// afresh, so a `Mirror` is `Send + Sync` and survives a re-clone underneath it.
#[derive(Debug)]
pub struct Mirror {
    dir: PathBuf,
    spec: SourceSpec,
    url: GitUrl,
    paths: Vec<String>,
    limits: FetchLimits,
}

/// Credentials resolved from the spec (and, for http(s) without auth, the URL's userinfo).
enum Creds<'a> {
    None,
    UserPass {
        user: &'a str,
        pass: &'a str,
    },
    Ssh {
        user: &'a str,
        key: &'a Path,
        known_hosts: &'a Path,
    },
}

impl Mirror {
    /// Opens the mirror of `spec` at `dir`, creating a bare repository when missing. A
    /// repository that cannot be opened is moved to `<dir>.corrupt` (replacing an older one)
    /// and an empty one made; the next [`Mirror::fetch`] fills it. No network.
    pub fn open(dir: &Path, spec: &SourceSpec) -> Result<Mirror, SourceError> {
        let invalid = |reason: String| SourceError::InvalidSpec {
            name: spec.name.clone(),
            reason,
        };
        validate_name(&spec.name).map_err(invalid)?;
        let url = GitUrl::parse(&spec.url)
            .map_err(|r| invalid(format!("url {}: {r}", super::display_url(&spec.url))))?;
        check_auth(&url, &spec.auth).map_err(invalid)?;
        check_reference(&spec.reference).map_err(invalid)?;
        let mut paths = Vec::new();
        for p in if spec.paths.is_empty() {
            &[][..]
        } else {
            &spec.paths[..]
        } {
            let n = normalize_repo_path(p).map_err(|r| invalid(format!("path {p:?}: {r}")))?;
            if !paths.contains(&n) {
                paths.push(n);
            }
        }
        if paths.is_empty() {
            paths.push(".".to_string());
        }
        if url.transport == Transport::Http && !matches!(spec.auth, GitAuth::None) {
            tracing::warn!(
                source = %spec.name,
                url = %url.display,
                "credentials are sent over plain http"
            );
        }
        let m = Mirror {
            dir: dir.to_path_buf(),
            spec: spec.clone(),
            url,
            paths,
            limits: FetchLimits::default(),
        };
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(|e| m.io("create directory", parent, e))?;
        }
        let _lock = m.lock()?;
        m.open_or_init()?;
        Ok(m)
    }

    /// The same mirror with other fetch limits.
    pub fn with_fetch_limits(mut self, limits: FetchLimits) -> Mirror {
        self.limits = limits;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// The source URL without credentials.
    pub fn display_url(&self) -> &str {
        &self.url.display
    }

    /// The project search paths, normalized (`.` for the root).
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The commit the reference points to on the server, without fetching any object (an
    /// ls-remote; annotated tags peeled). A commit reference already in the mirror is
    /// answered locally, without network; one not yet fetched is returned as configured
    /// after checking the server answers.
    pub fn remote_commit(&self) -> Result<String, SourceError> {
        ensure_timeouts();
        if let GitRef::Commit(c) = &self.spec.reference {
            if let Some(id) = self.local_commit() {
                return Ok(id);
            }
            self.ls_remote()?;
            return Ok(c.to_ascii_lowercase());
        }
        let heads = self.ls_remote()?;
        pick_advertised(&heads, &self.spec.reference)
            .map(|oid| oid.to_string())
            .ok_or_else(|| self.ref_not_found())
    }

    /// Fetches the reference into the mirror (force: rewritten history replaces the old)
    /// and returns the commit it points to. A mirror found corrupt, or holding more than
    /// [`MAX_PACKS`] packs, is re-cloned; the old one is kept until the new fetch succeeded.
    pub fn fetch(&self) -> Result<String, SourceError> {
        ensure_timeouts();
        let _lock = self.lock()?;
        let repo = self.open_or_init()?;
        remove_stale_files(&self.dir);
        let packs = count_packs(&self.dir);
        if packs > MAX_PACKS {
            tracing::info!(source = %self.spec.name, packs, "compacting the mirror by re-cloning");
            drop(repo);
            return self.reclone();
        }
        match self.fetch_into(&repo) {
            Err(e @ SourceError::Corrupt { .. }) => {
                tracing::warn!(source = %self.spec.name, error = %e, "re-cloning the mirror");
                drop(repo);
                self.reclone()
            }
            r => r,
        }
    }

    /// The commit the last fetch got for the reference, from the mirror alone (offline).
    /// `None` before the first fetch or when the mirror cannot be read.
    pub fn local_commit(&self) -> Option<String> {
        let repo = Repository::open_bare(&self.dir).ok()?;
        resolve_local(&repo, &self.spec.reference)
            .ok()
            .flatten()
            .map(|o| o.to_string())
    }

    /// The Compose projects of `commit`: for each search path, the directory itself when it
    /// holds a compose file, else each direct subdirectory holding one. Sorted by name.
    /// Two projects with one name are an error.
    pub fn projects(&self, commit: &str) -> Result<Vec<ProjectDir>, SourceError> {
        let repo = self.open_existing()?;
        let c = self.find_commit(&repo, commit)?;
        let root = c.tree().map_err(|e| self.corrupt(e))?;
        let mut out: Vec<ProjectDir> = Vec::new();
        for path in &self.paths {
            let tree = self.subtree(&repo, &root, &c.id().to_string(), path)?;
            if has_compose_file(&tree) {
                let name = if path == "." {
                    self.spec.name.clone()
                } else {
                    path.rsplit('/').next().unwrap_or(path).to_string()
                };
                out.push(ProjectDir {
                    name,
                    path: path.clone(),
                });
                continue;
            }
            for entry in tree.iter() {
                if entry.kind() != Some(ObjectType::Tree) {
                    continue;
                }
                let Ok(name) = std::str::from_utf8(entry.name_bytes()) else {
                    tracing::warn!(source = %self.spec.name, path, "skipping a directory with a non-UTF-8 name");
                    continue;
                };
                if export::check_entry_name(entry.name_bytes()).is_err() {
                    continue;
                }
                let sub = repo.find_tree(entry.id()).map_err(|e| self.corrupt(e))?;
                if has_compose_file(&sub) {
                    out.push(ProjectDir {
                        name: name.to_string(),
                        path: join_repo_path(path, name),
                    });
                }
            }
        }
        out.sort();
        out.dedup();
        for pair in out.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(SourceError::InvalidSpec {
                    name: self.spec.name.clone(),
                    reason: format!(
                        "two projects named {:?} at commit {}: {} and {}",
                        pair[0].name,
                        c.id(),
                        pair[0].path,
                        pair[1].path
                    ),
                });
            }
        }
        Ok(out)
    }

    /// Id, summary, author and time of `commit`.
    pub fn commit_info(&self, commit: &str) -> Result<CommitInfo, SourceError> {
        let repo = self.open_existing()?;
        let c = self.find_commit(&repo, commit)?;
        let author = c.author();
        Ok(CommitInfo {
            id: c.id().to_string(),
            summary: String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned(),
            author: format!(
                "{} <{}>",
                String::from_utf8_lossy(author.name_bytes()),
                String::from_utf8_lossy(author.email_bytes())
            ),
            time: c.time().seconds(),
        })
    }

    /// Writes the subtree `path_in_repo` of `commit` into the new directory `dest` (which
    /// must not exist; its parent must). Built in a temporary sibling, synced, then renamed
    /// into place, so `dest` is complete or absent. See [`ExportLimits`] for what is refused.
    pub fn export(&self, commit: &str, path_in_repo: &str, dest: &Path) -> Result<(), SourceError> {
        self.export_with(commit, path_in_repo, dest, &ExportLimits::default())
    }

    /// [`Mirror::export`] with explicit limits.
    pub fn export_with(
        &self,
        commit: &str,
        path_in_repo: &str,
        dest: &Path,
        limits: &ExportLimits,
    ) -> Result<(), SourceError> {
        let path = normalize_repo_path(path_in_repo).map_err(|reason| SourceError::Export {
            name: self.spec.name.clone(),
            commit: commit.to_string(),
            path: path_in_repo.to_string(),
            reason,
        })?;
        let repo = self.open_existing()?;
        let c = self.find_commit(&repo, commit)?;
        let root = c.tree().map_err(|e| self.corrupt(e))?;
        let id = c.id().to_string();
        let tree = self.subtree(&repo, &root, &id, &path)?;
        export::export_tree(&repo, &tree, dest, limits).map_err(|e| match e {
            export::Failure::Exists => SourceError::DestExists {
                name: self.spec.name.clone(),
                dest: dest.to_path_buf(),
            },
            export::Failure::Io(what, p, error) => SourceError::Io {
                name: self.spec.name.clone(),
                what,
                path: p,
                error,
            },
            export::Failure::Refused(reason) => SourceError::Export {
                name: self.spec.name.clone(),
                commit: id.clone(),
                path: path.clone(),
                reason,
            },
            export::Failure::Git(e) => self.corrupt(e),
        })
    }

    // ---- internals ----

    fn lock(&self) -> Result<File, SourceError> {
        let mut name = self.dir.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io("open lock", &path, e))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| self.io("lock", &path, e.into()))?;
        Ok(f)
    }

    /// Opens the mirror for writing (caller holds the lock): initializes a missing one,
    /// moves an unopenable one aside and starts over.
    fn open_or_init(&self) -> Result<Repository, SourceError> {
        if !self.dir.exists() {
            return self.init(&self.dir);
        }
        match Repository::open_bare(&self.dir) {
            Ok(r) if r.is_bare() && r.odb().is_ok() => Ok(r),
            Ok(_) => self.move_aside("not a bare repository"),
            Err(e) => self.move_aside(e.message()),
        }
    }

    fn move_aside(&self, why: &str) -> Result<Repository, SourceError> {
        let aside = sibling(&self.dir, ".corrupt");
        tracing::warn!(
            source = %self.spec.name,
            dir = %self.dir.display(),
            reason = why,
            aside = %aside.display(),
            "mirror cannot be opened; starting over"
        );
        if aside.exists() {
            fs::remove_dir_all(&aside).map_err(|e| self.io("remove", &aside, e))?;
        }
        fs::rename(&self.dir, &aside).map_err(|e| self.io("move aside", &self.dir, e))?;
        self.init(&self.dir)
    }

    fn init(&self, dir: &Path) -> Result<Repository, SourceError> {
        let mut opts = RepositoryInitOptions::new();
        opts.bare(true)
            .external_template(false)
            .initial_head("main")
            .mkpath(true);
        Repository::init_opts(dir, &opts).map_err(|e| SourceError::Corrupt {
            name: self.spec.name.clone(),
            dir: dir.to_path_buf(),
            message: format!("cannot create the mirror: {}", e.message()),
        })
    }

    fn open_existing(&self) -> Result<Repository, SourceError> {
        Repository::open_bare(&self.dir).map_err(|e| self.corrupt(e))
    }

    /// Fetches into a fresh repository at `<dir>.new` and swaps it in.
    fn reclone(&self) -> Result<String, SourceError> {
        let new = sibling(&self.dir, ".new");
        if new.exists() {
            fs::remove_dir_all(&new).map_err(|e| self.io("remove", &new, e))?;
        }
        let repo = self.init(&new)?;
        let id = match self.fetch_into(&repo) {
            Ok(id) => id,
            Err(e) => {
                drop(repo);
                let _ = fs::remove_dir_all(&new);
                return Err(e);
            }
        };
        drop(repo);
        let old = sibling(&self.dir, ".old");
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| self.io("remove", &old, e))?;
        }
        if self.dir.exists() {
            fs::rename(&self.dir, &old).map_err(|e| self.io("move aside", &self.dir, e))?;
        }
        fs::rename(&new, &self.dir).map_err(|e| self.io("move into place", &new, e))?;
        let _ = fs::remove_dir_all(&old);
        Ok(id)
    }

    fn fetch_into(&self, repo: &Repository) -> Result<String, SourceError> {
        if let GitRef::Commit(_) = self.spec.reference {
            // A commit never changes: present (and whole) means nothing to fetch.
            if let Ok(Some(oid)) = resolve_local(repo, &self.spec.reference) {
                if verify_commit(repo, oid).is_ok() {
                    return Ok(oid.to_string());
                }
            }
        }
        self.check_local_exists()?;
        let session = Session::new(self);
        let mut remote = repo
            .remote_anonymous(&self.url.connect)
            .map_err(|e| session.error(e))?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(session.callbacks())
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        let refspecs = refspecs(&self.spec.reference);
        remote
            .fetch(&refspecs, Some(&mut opts), None)
            .map_err(|e| session.error(e))?;
        drop(opts);
        if let Ok(heads) = remote.list() {
            if !matches!(self.spec.reference, GitRef::Commit(_))
                && pick_advertised(heads, &self.spec.reference).is_none()
            {
                return Err(self.ref_not_found());
            }
        }
        let oid = match resolve_local(repo, &self.spec.reference) {
            Ok(Some(oid)) => oid,
            Ok(None) => return Err(self.ref_not_found()),
            Err(e) => return Err(self.corrupt(e)),
        };
        verify_commit(repo, oid).map_err(|e| self.corrupt(e))?;
        Ok(oid.to_string())
    }

    /// libgit2 reports a missing local repository as an "unsupported URL protocol".
    fn check_local_exists(&self) -> Result<(), SourceError> {
        if self.url.transport != Transport::Local {
            return Ok(());
        }
        let c = &self.url.connect;
        let path = c
            .strip_prefix("file://localhost")
            .or_else(|| c.strip_prefix("file://"))
            .unwrap_or(c);
        if Path::new(path).exists() {
            return Ok(());
        }
        Err(SourceError::RepoNotFound {
            name: self.spec.name.clone(),
            url: self.url.display.clone(),
            message: "no such directory".into(),
        })
    }

    fn ls_remote(&self) -> Result<Vec<(String, Oid)>, SourceError> {
        self.check_local_exists()?;
        let session = Session::new(self);
        let mut remote =
            Remote::create_detached(self.url.connect.as_str()).map_err(|e| session.error(e))?;
        let conn = remote
            .connect_auth(Direction::Fetch, Some(session.callbacks()), None)
            .map_err(|e| session.error(e))?;
        let heads = conn.list().map_err(|e| session.error(e))?;
        Ok(heads
            .iter()
            .map(|h: &RemoteHead<'_>| (h.name().to_string(), h.oid()))
            .collect())
    }

    fn find_commit<'r>(
        &self,
        repo: &'r Repository,
        commit: &str,
    ) -> Result<git2::Commit<'r>, SourceError> {
        let not_found = || SourceError::CommitNotFound {
            name: self.spec.name.clone(),
            url: self.url.display.clone(),
            commit: commit.to_string(),
        };
        if !is_commit_id(commit) {
            return Err(not_found());
        }
        let found = if commit.len() == 40 {
            Oid::from_str(commit).and_then(|o| repo.find_commit(o))
        } else {
            repo.find_commit_by_prefix(commit)
        };
        found.map_err(|_| not_found())
    }

    fn subtree<'r>(
        &self,
        repo: &'r Repository,
        root: &git2::Tree<'r>,
        commit: &str,
        path: &str,
    ) -> Result<git2::Tree<'r>, SourceError> {
        if path == "." {
            return Ok(root.clone());
        }
        let not_found = || SourceError::PathNotFound {
            name: self.spec.name.clone(),
            commit: commit.to_string(),
            path: path.to_string(),
        };
        let entry = root.get_path(Path::new(path)).map_err(|_| not_found())?;
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(not_found());
        }
        repo.find_tree(entry.id()).map_err(|e| self.corrupt(e))
    }

    fn ref_not_found(&self) -> SourceError {
        SourceError::RefNotFound {
            name: self.spec.name.clone(),
            url: self.url.display.clone(),
            reference: self.spec.reference.clone(),
        }
    }

    fn corrupt(&self, e: git2::Error) -> SourceError {
        SourceError::Corrupt {
            name: self.spec.name.clone(),
            dir: self.dir.clone(),
            message: e.message().to_string(),
        }
    }

    fn io(&self, what: &'static str, path: &Path, error: std::io::Error) -> SourceError {
        SourceError::Io {
            name: self.spec.name.clone(),
            what,
            path: path.to_path_buf(),
            error,
        }
    }

    fn creds(&self) -> Creds<'_> {
        match &self.spec.auth {
            GitAuth::None => match (&self.url.user, &self.url.password) {
                (Some(u), p) if self.url.transport != Transport::Ssh => Creds::UserPass {
                    user: u,
                    pass: p.as_deref().unwrap_or(""),
                },
                _ => Creds::None,
            },
            GitAuth::Token(t) => Creds::UserPass {
                user: GitAuth::TOKEN_USER,
                pass: t,
            },
            GitAuth::Basic { username, password } => Creds::UserPass {
                user: username,
                pass: password,
            },
            GitAuth::Ssh {
                key,
                known_hosts,
                username,
            } => Creds::Ssh {
                user: self.url.user.as_deref().unwrap_or(username),
                key,
                known_hosts,
            },
        }
    }
}

/// What callbacks learned during one remote operation, to turn libgit2's error into ours.
struct Session<'m> {
    mirror: &'m Mirror,
    started: Instant,
    auth_failure: RefCell<Option<String>>,
    hostkey_failure: RefCell<Option<(String, PathBuf, String)>>,
    limit_failure: RefCell<Option<String>>,
    credential_calls: Cell<u32>,
    secret_tries: Cell<u32>,
}

impl<'m> Session<'m> {
    fn new(mirror: &'m Mirror) -> Session<'m> {
        Session {
            mirror,
            started: Instant::now(),
            auth_failure: RefCell::new(None),
            hostkey_failure: RefCell::new(None),
            limit_failure: RefCell::new(None),
            credential_calls: Cell::new(0),
            secret_tries: Cell::new(0),
        }
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        cb.credentials(|_url, user_from_url, allowed| self.credentials(user_from_url, allowed));
        cb.certificate_check(|cert, hostname| self.certificate(cert, hostname));
        let limits = self.mirror.limits;
        cb.transfer_progress(move |p| {
            if p.received_bytes() as u64 > limits.max_bytes {
                *self.limit_failure.borrow_mut() = Some(format!(
                    "the server sent more than {} bytes",
                    limits.max_bytes
                ));
                return false;
            }
            if self.started.elapsed() > limits.max_duration {
                *self.limit_failure.borrow_mut() = Some(format!(
                    "the transfer took longer than {}s",
                    limits.max_duration.as_secs()
                ));
                return false;
            }
            true
        });
        cb
    }

    fn auth_fail(&self, msg: String) -> Result<Cred, git2::Error> {
        let e = git2::Error::new(ErrorCode::Auth, ErrorClass::Callback, &msg);
        *self.auth_failure.borrow_mut() = Some(msg);
        Err(e)
    }

    /// Hands out the configured credentials once per kind: libgit2 asks again after every
    /// rejection, forever, so a second ask means the server refused them.
    fn credentials(
        &self,
        user_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        self.credential_calls.set(self.credential_calls.get() + 1);
        if self.credential_calls.get() > 4 {
            return self.auth_fail("the server keeps asking for credentials".into());
        }
        match self.mirror.creds() {
            Creds::None => {
                self.auth_fail("the server requires authentication and none is configured".into())
            }
            Creds::UserPass { user, pass } => {
                if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                    return self
                        .auth_fail("the server offers no user/password authentication".into());
                }
                if self.secret_tries.replace(self.secret_tries.get() + 1) > 0 {
                    return self.auth_fail(format!(
                        "the server refused the credentials of user {user:?}"
                    ));
                }
                Cred::userpass_plaintext(user, pass)
            }
            Creds::Ssh { user, key, .. } => {
                let user = user_from_url.unwrap_or(user);
                if allowed.contains(CredentialType::USERNAME) {
                    return Cred::username(user);
                }
                if !allowed.contains(CredentialType::SSH_KEY) {
                    return self.auth_fail("the server offers no public key authentication".into());
                }
                if self.secret_tries.replace(self.secret_tries.get() + 1) > 0 {
                    return self.auth_fail(format!(
                        "the server refused key {} for user {user:?}",
                        key.display()
                    ));
                }
                Cred::ssh_key(user, None, key, None)
            }
        }
    }

    /// SSH host keys are checked here against the configured known_hosts file, and only
    /// there; TLS certificates are left to libgit2's own verification.
    fn certificate(
        &self,
        cert: &git2::cert::Cert<'_>,
        hostname: &str,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let url = &self.mirror.url;
        let host = url.host.as_deref().unwrap_or(hostname).to_string();
        let refuse = |known_hosts: &Path, reason: String| {
            let e = git2::Error::new(ErrorCode::Certificate, ErrorClass::Callback, &reason);
            *self.hostkey_failure.borrow_mut() =
                Some((host.clone(), known_hosts.to_path_buf(), reason));
            Err(e)
        };
        let Creds::Ssh { known_hosts, .. } = self.mirror.creds() else {
            return refuse(Path::new(""), "no known_hosts file is configured".into());
        };
        // hostkey_type() would panic on key types newer than git2 knows: use the raw blob,
        // which names its own type and is exactly what known_hosts stores.
        let Some(key) = hostkey.hostkey() else {
            return refuse(
                known_hosts,
                "the server's raw host key is not available".into(),
            );
        };
        let text = match read_bounded(known_hosts, known_hosts::MAX_KNOWN_HOSTS_BYTES) {
            Ok(t) => t,
            Err(e) => return refuse(known_hosts, format!("cannot read it: {e}")),
        };
        let name = known_hosts::lookup_name(&host, url.port);
        match known_hosts::check(&text, &host, url.port, key) {
            HostKeyCheck::Match => Ok(CertificateCheckStatus::CertificateOk),
            HostKeyCheck::Mismatch => refuse(
                known_hosts,
                format!("{name} is listed with a different key (possible man in the middle)"),
            ),
            HostKeyCheck::Unknown => refuse(known_hosts, format!("{name} is not listed")),
            HostKeyCheck::Revoked => refuse(known_hosts, "the key is marked @revoked".into()),
        }
    }

    /// Our error for a libgit2 error of this session.
    fn error(&self, e: git2::Error) -> SourceError {
        let m = self.mirror;
        let name = m.spec.name.clone();
        let url = m.url.display.clone();
        if let Some(message) = self.auth_failure.borrow_mut().take() {
            return SourceError::Auth {
                name,
                url,
                auth: m.spec.auth.kind(),
                message,
            };
        }
        if let Some((host, known_hosts, reason)) = self.hostkey_failure.borrow_mut().take() {
            return SourceError::HostKey {
                name,
                host,
                known_hosts,
                reason,
            };
        }
        if let Some(message) = self.limit_failure.borrow_mut().take() {
            return SourceError::Fetch {
                name,
                url,
                reference: m.spec.reference.clone(),
                message,
                class: FetchFailure::Limit,
            };
        }
        let message = redact(e.message(), &m.url);
        let lower = message.to_ascii_lowercase();
        let class = e.class();
        match e.code() {
            ErrorCode::Auth => {
                return SourceError::Auth {
                    name,
                    url,
                    auth: m.spec.auth.kind(),
                    message,
                }
            }
            ErrorCode::Certificate => {
                return SourceError::Auth {
                    name,
                    url,
                    auth: m.spec.auth.kind(),
                    message: format!("the server's certificate is not trusted: {message}"),
                }
            }
            _ => {}
        }
        match class {
            // Our side: the mirror's objects or refs are broken.
            ErrorClass::Odb
            | ErrorClass::Object
            | ErrorClass::Zlib
            | ErrorClass::Repository
            | ErrorClass::Reference
            | ErrorClass::Tree
            | ErrorClass::Indexer => SourceError::Corrupt {
                name,
                dir: m.dir.clone(),
                message,
            },
            ErrorClass::Net
            | ErrorClass::Os
            | ErrorClass::Ssl
            | ErrorClass::Ssh
            | ErrorClass::Http
            | ErrorClass::Callback
                if [
                    "404",
                    "not found",
                    "no such repository",
                    "does not appear to be a git repository",
                    "not exported",
                ]
                .iter()
                .any(|s| lower.contains(s)) =>
            {
                SourceError::RepoNotFound { name, url, message }
            }
            ErrorClass::Net
            | ErrorClass::Os
            | ErrorClass::Ssl
            | ErrorClass::Ssh
            | ErrorClass::Http => SourceError::Unreachable { name, url, message },
            _ if matches!(e.code(), ErrorCode::Timeout | ErrorCode::Eof) => {
                SourceError::Unreachable { name, url, message }
            }
            _ => SourceError::Fetch {
                name,
                url,
                reference: m.spec.reference.clone(),
                message,
                class: FetchFailure::Other,
            },
        }
    }
}

/// Belt and braces: libgit2 never sees credentials (they are not in the connect URL), but
/// a message quoting the configured URL gets its display form.
fn redact(message: &str, url: &GitUrl) -> String {
    let mut m = message.to_string();
    for secret in [url.password.as_deref(), url.user.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| s.len() >= 4)
    {
        if url.transport != Transport::Ssh {
            m = m.replace(secret, "<redacted>");
        }
    }
    m
}

fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    File::open(path)?.take(max).read_to_string(&mut s)?;
    Ok(s)
}

fn refspecs(reference: &GitRef) -> Vec<String> {
    match reference {
        GitRef::Branch(b) => vec![format!("+refs/heads/{b}:refs/heads/{b}")],
        GitRef::Tag(t) => vec![format!("+refs/tags/{t}:refs/tags/{t}")],
        GitRef::Commit(_) => vec![
            "+refs/heads/*:refs/heads/*".to_string(),
            "+refs/tags/*:refs/tags/*".to_string(),
        ],
    }
}

/// The commit a branch or tag points to in an ls-remote listing (`^{}` peeled entries of
/// annotated tags preferred).
fn pick_advertised<H: AdvertisedRef>(heads: &[H], reference: &GitRef) -> Option<Oid> {
    let find = |name: &str| {
        heads
            .iter()
            .find(|h| h.ref_name() == name)
            .map(|h| h.ref_oid())
    };
    match reference {
        GitRef::Branch(b) => find(&format!("refs/heads/{b}")),
        GitRef::Tag(t) => {
            find(&format!("refs/tags/{t}^{{}}")).or_else(|| find(&format!("refs/tags/{t}")))
        }
        GitRef::Commit(_) => None,
    }
}

trait AdvertisedRef {
    fn ref_name(&self) -> &str;
    fn ref_oid(&self) -> Oid;
}

impl AdvertisedRef for (String, Oid) {
    fn ref_name(&self) -> &str {
        &self.0
    }
    fn ref_oid(&self) -> Oid {
        self.1
    }
}

impl AdvertisedRef for RemoteHead<'_> {
    fn ref_name(&self) -> &str {
        self.name()
    }
    fn ref_oid(&self) -> Oid {
        self.oid()
    }
}

/// The commit `reference` resolves to in `repo`; `Ok(None)` when absent.
fn resolve_local(repo: &Repository, reference: &GitRef) -> Result<Option<Oid>, git2::Error> {
    let refname = match reference {
        GitRef::Branch(b) => format!("refs/heads/{b}"),
        GitRef::Tag(t) => format!("refs/tags/{t}"),
        GitRef::Commit(c) => {
            if !is_commit_id(c) {
                return Ok(None);
            }
            let found = if c.len() == 40 {
                repo.find_commit(Oid::from_str(c)?)
            } else {
                repo.find_commit_by_prefix(c)
            };
            return match found {
                Ok(commit) => Ok(Some(commit.id())),
                Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
                Err(e) => Err(e),
            };
        }
    };
    match repo.find_reference(&refname) {
        Ok(r) => Ok(Some(r.peel_to_commit()?.id())),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the commit's whole tree (every tree, and that every blob exists): a mirror that
/// lost objects fails here rather than in a later export.
fn verify_commit(repo: &Repository, oid: Oid) -> Result<(), git2::Error> {
    let commit = repo.find_commit(oid)?;
    let tree = commit.tree()?;
    let odb = repo.odb()?;
    let mut missing: Option<Oid> = None;
    let mut failure: Option<git2::Error> = None;
    tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        match entry.kind() {
            Some(ObjectType::Blob) if !odb.exists(entry.id()) => {
                missing = Some(entry.id());
                return TreeWalkResult::Abort;
            }
            Some(ObjectType::Tree) => {
                if let Err(e) = repo.find_tree(entry.id()) {
                    failure = Some(e);
                    return TreeWalkResult::Abort;
                }
            }
            _ => {}
        }
        TreeWalkResult::Ok
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(id) = missing {
        return Err(git2::Error::new(
            ErrorCode::NotFound,
            ErrorClass::Odb,
            format!("object {id} of commit {oid} is missing"),
        ));
    }
    Ok(())
}

fn has_compose_file(tree: &git2::Tree<'_>) -> bool {
    COMPOSE_FILES.iter().any(|f| {
        tree.get_name(f)
            .is_some_and(|e| e.kind() == Some(ObjectType::Blob))
    })
}

fn is_commit_id(s: &str) -> bool {
    (4..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("the source name must be 1 to 255 bytes".into());
    }
    if name.contains('/') || name.chars().any(char::is_control) || name == "." || name == ".." {
        return Err(format!("bad source name {name:?}"));
    }
    Ok(())
}

fn check_auth(url: &GitUrl, auth: &GitAuth) -> Result<(), String> {
    let t = url.transport;
    match (auth, t) {
        (GitAuth::None, Transport::Ssh) => Err(format!(
            "url {} uses ssh: configure an ssh key and known_hosts",
            url.display
        )),
        (GitAuth::Ssh { .. }, Transport::Ssh) => Ok(()),
        (GitAuth::Ssh { .. }, _) => Err(format!(
            "an ssh key is configured but url {} uses {t}",
            url.display
        )),
        (GitAuth::Token(_) | GitAuth::Basic { .. }, Transport::Http | Transport::Https) => Ok(()),
        (GitAuth::Token(_) | GitAuth::Basic { .. }, _) => Err(format!(
            "{} auth needs an http(s) url, not {}",
            auth.kind(),
            url.display
        )),
        (GitAuth::None, _) => Ok(()),
    }
}

fn check_reference(reference: &GitRef) -> Result<(), String> {
    match reference {
        GitRef::Branch(b) if git2::Reference::is_valid_name(&format!("refs/heads/{b}")) => Ok(()),
        GitRef::Tag(t) if git2::Reference::is_valid_name(&format!("refs/tags/{t}")) => Ok(()),
        GitRef::Commit(c) if c.len() >= 7 && is_commit_id(c) => Ok(()),
        GitRef::Commit(c) => Err(format!(
            "commit {c:?} is not a commit id (7 to 40 hex digits)"
        )),
        other => Err(format!("{other} is not a valid reference name")),
    }
}

/// A repository path as `a/b` (no `./`, no trailing `/`), `.` for the root; `..`,
/// absolute paths and odd names refused.
pub(crate) fn normalize_repo_path(p: &str) -> Result<String, String> {
    if p.starts_with('/') {
        return Err("must be relative to the repository root".into());
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("must not contain ..".into()),
            c => {
                export::check_entry_name(c.as_bytes())?;
                parts.push(c);
            }
        }
    }
    Ok(if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    })
}

fn join_repo_path(base: &str, name: &str) -> String {
    if base == "." {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn count_packs(dir: &Path) -> usize {
    fs::read_dir(dir.join("objects/pack"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .count()
        })
        .unwrap_or(0)
}

/// Removes what a killed libgit2 leaves behind (lock files, temporary packs and objects).
/// Only called with the mirror's flock held, so none of it belongs to a live writer.
fn remove_stale_files(dir: &Path) {
    for name in [
        "HEAD.lock",
        "config.lock",
        "packed-refs.lock",
        "FETCH_HEAD.lock",
        "shallow.lock",
    ] {
        let _ = fs::remove_file(dir.join(name));
    }
    remove_matching(&dir.join("objects/pack"), &|n| {
        n.starts_with("pack_git2_") || n.ends_with(".lock")
    });
    remove_matching(&dir.join("objects"), &|n| n.starts_with("tmp_object"));
    let mut stack = vec![dir.join("refs")];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(Result::ok) {
            seen += 1;
            if seen > 100_000 {
                return;
            }
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) if e.file_name().to_string_lossy().ends_with(".lock") => {
                    let _ = fs::remove_file(p);
                }
                _ => {}
            }
        }
    }
}

fn remove_matching(dir: &Path, pred: &dyn Fn(&str) -> bool) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_file()) && pred(&e.file_name().to_string_lossy()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_are_normalized_and_checked() {
        assert_eq!(normalize_repo_path(".").unwrap(), ".");
        assert_eq!(normalize_repo_path("").unwrap(), ".");
        assert_eq!(normalize_repo_path("./apps//web/").unwrap(), "apps/web");
        assert!(normalize_repo_path("/etc").is_err());
        assert!(normalize_repo_path("apps/../..").is_err());
        assert!(normalize_repo_path("a/.git").is_err());
    }

    #[test]
    fn auth_must_fit_the_transport() {
        let ssh = GitAuth::Ssh {
            key: "/k".into(),
            known_hosts: "/kh".into(),
            username: "git".into(),
        };
        let https = GitUrl::parse("https://h/r.git").unwrap();
        let scp = GitUrl::parse("git@h:r.git").unwrap();
        let git = GitUrl::parse("git://h/r.git").unwrap();
        assert!(check_auth(&https, &GitAuth::Token("t".into())).is_ok());
        assert!(check_auth(&https, &ssh).is_err());
        assert!(check_auth(&scp, &ssh).is_ok());
        assert!(check_auth(&scp, &GitAuth::None).is_err());
        assert!(check_auth(&git, &GitAuth::Token("t".into())).is_err());
        assert!(check_auth(&git, &GitAuth::None).is_ok());
    }

    #[test]
    fn references_are_checked() {
        assert!(check_reference(&GitRef::Branch("main".into())).is_ok());
        assert!(check_reference(&GitRef::Branch("feature/x".into())).is_ok());
        assert!(check_reference(&GitRef::Branch("a..b".into())).is_err());
        assert!(check_reference(&GitRef::Tag("v1.0".into())).is_ok());
        assert!(check_reference(&GitRef::Tag("bad tag".into())).is_err());
        assert!(check_reference(&GitRef::Commit("abc1234".into())).is_ok());
        assert!(check_reference(&GitRef::Commit("abc".into())).is_err());
        assert!(check_reference(&GitRef::Commit("zzzzzzz".into())).is_err());
    }

    #[test]
    fn advertised_refs_prefer_peeled_tags() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").unwrap();
        let b = Oid::from_str("2222222222222222222222222222222222222222").unwrap();
        let heads = vec![
            ("refs/heads/main".to_string(), a),
            ("refs/tags/v1".to_string(), a),
            ("refs/tags/v1^{}".to_string(), b),
            ("refs/tags/v2".to_string(), b),
        ];
        assert_eq!(
            pick_advertised(&heads, &GitRef::Branch("main".into())),
            Some(a)
        );
        assert_eq!(pick_advertised(&heads, &GitRef::Branch("dev".into())), None);
        assert_eq!(pick_advertised(&heads, &GitRef::Tag("v1".into())), Some(b));
        assert_eq!(pick_advertised(&heads, &GitRef::Tag("v2".into())), Some(b));
    }

    #[test]
    fn redact_hides_url_credentials() {
        let u = GitUrl::parse("https://alice:hunter22@h/r.git").unwrap();
        assert_eq!(
            redact("failed for alice:hunter22", &u),
            "failed for <redacted>:<redacted>"
        );
    }
}
