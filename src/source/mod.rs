//! Where manifests come from: git repositories mirrored locally, read at a commit.
//!
//! One bare mirror repository per source ([`Mirror`], on libgit2), never with a working tree:
//! the agent checks the remote cheaply ([`Mirror::remote_commit`], an ls-remote), fetches
//! when the reference moved ([`Mirror::fetch`], force refspecs so rewritten history is taken),
//! lists the Compose projects of a commit ([`Mirror::projects`]) and writes a project's
//! subtree into a fresh directory ([`Mirror::export`]). Everything here is synchronous and
//! blocking (the agent calls it from `spawn_blocking`).
//!
//! Credentials live only in memory ([`GitAuth`]) and reach libgit2 through callbacks on an
//! anonymous remote: nothing is written into the mirror's config, and every URL in errors,
//! logs and status goes through [`display_url`]. SSH host keys are checked against the
//! configured known_hosts file only ([`known_hosts`]).

pub mod export;
pub mod git;
pub mod known_hosts;
pub mod url;

use std::fmt;
use std::path::PathBuf;

use crate::error::{Categorized, Category};

pub use export::ExportLimits;
pub use git::{configure_timeouts, set_timeouts, FetchLimits, Mirror};
pub use url::display_url;

/// The compose file names that make a directory a project (Compose's own lookup order).
pub const COMPOSE_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// How to authenticate to a source's server.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum GitAuth {
    /// Anonymous (for http(s), a `user:password@` in the URL is used as [`GitAuth::Basic`]).
    #[default]
    None,
    /// An access token over http(s): basic auth with user `x-access-token` and the token as
    /// password (GitHub, Gitea and GitLab accept this).
    Token(String),
    /// Basic auth over http(s).
    Basic { username: String, password: String },
    /// An SSH private key (OpenSSH or PEM, unencrypted) and the known_hosts file the server's
    /// host key must be listed in. `username` is used when the URL names none (`git` is
    /// the usual one: [`GitAuth::DEFAULT_SSH_USER`]).
    Ssh {
        key: PathBuf,
        known_hosts: PathBuf,
        username: String,
    },
}

impl GitAuth {
    pub const DEFAULT_SSH_USER: &'static str = "git";
    /// The user name sent with [`GitAuth::Token`].
    pub const TOKEN_USER: &'static str = "x-access-token";

    /// Which kind of auth this is, for messages (never the secret).
    pub fn kind(&self) -> &'static str {
        match self {
            GitAuth::None => "none",
            GitAuth::Token(_) => "token",
            GitAuth::Basic { .. } => "basic",
            GitAuth::Ssh { .. } => "ssh key",
        }
    }
}

// Debug never prints secrets: specs end up in logs.
impl fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitAuth::None => f.write_str("None"),
            GitAuth::Token(_) => f.write_str("Token(<redacted>)"),
            GitAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            GitAuth::Ssh {
                key,
                known_hosts,
                username,
            } => f
                .debug_struct("Ssh")
                .field("key", key)
                .field("known_hosts", known_hosts)
                .field("username", username)
                .finish(),
        }
    }
}

/// What a source follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GitRef {
    /// A branch name (`main`), not `refs/heads/main`.
    Branch(String),
    /// A tag name (`v1.2`); lightweight or annotated.
    Tag(String),
    /// A commit id: 40 hex digits, or an abbreviation of at least 7 once fetched.
    Commit(String),
}

impl fmt::Display for GitRef {
    /// `branch main`, `tag v1`, `commit abc…` (the form status shows).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitRef::Branch(b) => write!(f, "branch {b}"),
            GitRef::Tag(t) => write!(f, "tag {t}"),
            GitRef::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

/// One configured git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The source's name (unique per agent; also the project name of a repository root).
    pub name: String,
    pub url: String,
    pub auth: GitAuth,
    pub reference: GitRef,
    /// Directories inside the repository to look for projects in ([`Mirror::projects`]);
    /// empty means `["."]`.
    pub paths: Vec<String>,
}

impl SourceSpec {
    /// A source following `branch` of `url` anonymously, projects found from the root.
    pub fn branch(name: &str, url: &str, branch: &str) -> SourceSpec {
        SourceSpec {
            name: name.to_string(),
            url: url.to_string(),
            auth: GitAuth::None,
            reference: GitRef::Branch(branch.to_string()),
            paths: vec![".".to_string()],
        }
    }
}

/// A Compose project found in a commit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProjectDir {
    /// The directory's base name (the source's name for the repository root).
    pub name: String,
    /// The directory in the repository, `/`-separated, `.` for the root.
    pub path: String,
}

/// What status and history show about a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    /// The first line of the message.
    pub summary: String,
    /// `Name <email>`.
    pub author: String,
    /// Commit time, Unix seconds.
    pub time: i64,
}

/// Everything that can go wrong with a source. Every variant names the source; URLs are
/// always display URLs (no credentials).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {name}: invalid configuration: {reason}")]
    InvalidSpec { name: String, reason: String },
    #[error("source {name}: cannot reach {url}: {message}")]
    Unreachable {
        name: String,
        url: String,
        message: String,
    },
    #[error("source {name}: authentication to {url} failed ({auth}): {message}")]
    Auth {
        name: String,
        url: String,
        auth: &'static str,
        message: String,
    },
    #[error("source {name}: ssh host key of {host} refused (known_hosts {known_hosts}): {reason}")]
    HostKey {
        name: String,
        host: String,
        known_hosts: PathBuf,
        reason: String,
    },
    #[error("source {name}: repository {url} not found: {message}")]
    RepoNotFound {
        name: String,
        url: String,
        message: String,
    },
    #[error("source {name}: {reference} not found at {url}")]
    RefNotFound {
        name: String,
        url: String,
        reference: GitRef,
    },
    #[error("source {name}: commit {commit} not in the mirror of {url}")]
    CommitNotFound {
        name: String,
        url: String,
        commit: String,
    },
    #[error("source {name}: path {path:?} not found at commit {commit}")]
    PathNotFound {
        name: String,
        commit: String,
        path: String,
    },
    #[error("source {name}: fetching {reference} from {url} failed: {message}")]
    Fetch {
        name: String,
        url: String,
        reference: GitRef,
        message: String,
        class: FetchFailure,
    },
    #[error("source {name}: mirror {dir} is corrupt: {message}")]
    Corrupt {
        name: String,
        dir: PathBuf,
        message: String,
    },
    #[error("source {name}: {what} {path}: {error}")]
    Io {
        name: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("source {name}: export of {path:?} at commit {commit} refused: {reason}")]
    Export {
        name: String,
        commit: String,
        path: String,
        reason: String,
    },
    #[error("source {name}: export destination {dest} already exists")]
    DestExists { name: String, dest: PathBuf },
}

/// Why a fetch failed when no more specific variant applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailure {
    /// The server or the transfer misbehaved (retry later).
    Transient,
    /// Too much data or too slow: the configured limits stopped it.
    Limit,
    /// Anything else libgit2 reported.
    Other,
}

impl Categorized for SourceError {
    fn category(&self) -> Category {
        match self {
            SourceError::InvalidSpec { .. }
            | SourceError::Auth { .. }
            | SourceError::HostKey { .. }
            | SourceError::Export { .. } => Category::Invalid,
            SourceError::RepoNotFound { .. }
            | SourceError::RefNotFound { .. }
            | SourceError::CommitNotFound { .. }
            | SourceError::PathNotFound { .. } => Category::NotFound,
            SourceError::Unreachable { .. } => Category::Transient,
            SourceError::Fetch { class, .. } => match class {
                FetchFailure::Transient => Category::Transient,
                FetchFailure::Limit => Category::Invalid,
                FetchFailure::Other => Category::Internal,
            },
            SourceError::DestExists { .. } => Category::Conflict,
            SourceError::Corrupt { .. } | SourceError::Io { .. } => Category::Internal,
        }
    }
}
