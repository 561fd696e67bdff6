//! The agent configuration file (YAML). Input, validated config and runtime state are
//! separate types: this is the input side for everything registry-related.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_ROOT: &str = "/var/lib/dockmaster";
pub const DEFAULT_CONFIG: &str = "/etc/dockmaster/config.yaml";
pub const DEFAULT_CERTS_DIR: &str = "/etc/dockmaster/certs.d";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// `/etc/dockmaster/config.yaml` (or `--config`). Every field is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub registries: RegistriesConfig,
    /// Absolute host paths a manifest may bind-mount besides its own project directory
    /// (empty by default: a manifest cannot mount `/` or dockmaster's state).
    #[serde(default)]
    pub bind_allow: Vec<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Docker-style config.json with `auths`, `credsStore`, `credHelpers`. Takes precedence
    /// over `$DOCKER_CONFIG/config.json` and `~/.docker/config.json`.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    /// Directory with `<host:port>/ca.crt` (and `*.crt`) files; default /etc/dockmaster/certs.d.
    #[serde(default)]
    pub certs_dir: Option<PathBuf>,
    /// Registries (`host` or `host:port`) allowed over plain HTTP. Loopback always is.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Mirrors per registry domain, tried in order before the registry itself
    /// (only `docker.io` is honoured, like Docker's `registry-mirrors`).
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Attempts per request on transient errors (default 5).
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

impl AgentConfig {
    /// The agent's local API socket: `api.socket` from the configuration, else
    /// `<root>/agent.sock`.
    pub fn socket_path(&self, root: &Path) -> PathBuf {
        let _ = self;
        root.join("agent.sock")
    }

    /// Loads `path` when given, else the default file when it exists, else defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AgentConfig::default())
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        if text.trim().is_empty() {
            return Ok(AgentConfig::default());
        }
        serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path,
            message: e.to_string(),
        })
    }
}
