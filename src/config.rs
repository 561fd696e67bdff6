//! The agent configuration file (YAML). Input, validated config and runtime state are
//! separate types: this is the input side for everything registry-related.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_ROOT: &str = "/var/lib/dockmaster";
pub const DEFAULT_CONFIG: &str = "/etc/dockmaster/agent.yaml";
/// Read when DEFAULT_CONFIG does not exist (the name before the agent existed).
pub const LEGACY_CONFIG: &str = "/etc/dockmaster/config.yaml";
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
    #[error("config {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl crate::error::Categorized for ConfigError {
    fn category(&self) -> crate::error::Category {
        match self {
            ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                crate::error::Category::NotFound
            }
            ConfigError::Read { .. } => crate::error::Category::Internal,
            ConfigError::Parse { .. } | ConfigError::Invalid { .. } => {
                crate::error::Category::Invalid
            }
        }
    }
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
    /// State directory; `--root` (or DOCKMASTER_ROOT) given explicitly wins.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Git repositories the agent follows.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// How often each source is checked (default 60 s).
    #[serde(default, with = "duration_opt")]
    pub poll_interval: Option<Duration>,
    /// A random extra delay up to this much per poll (default 10% of the interval), so that
    /// a fleet does not hit its git server in the same second.
    #[serde(default, with = "duration_opt")]
    pub poll_jitter: Option<Duration>,
    /// How often running containers are compared with the applied generation (default 30 s).
    #[serde(default, with = "duration_opt")]
    pub drift_interval: Option<Duration>,
    /// How often `follow`/`notify` images are checked for a new digest (default 10 min).
    #[serde(default, with = "duration_opt")]
    pub image_check_interval: Option<Duration>,
    #[serde(default)]
    pub apply: ApplyConfig,
    /// Host labels, shown in status and metrics.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `human` (default) or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// When disruptive changes may be applied (default: always). A project's own
    /// `x-dockmaster: {update_window: …}` wins. Self-healing is never held.
    #[serde(default)]
    pub update_window: Option<WindowConfig>,
}

/// `{schedule: "0 2 * * *", duration: 2h, time_zone: Europe/Berlin}`: open for `duration`
/// from each fire time of `schedule` (cron, see `dockmaster schedule next`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub schedule: String,
    pub duration: String,
    #[serde(default)]
    pub time_zone: Option<String>,
}

impl WindowConfig {
    pub fn window(&self) -> Result<crate::schedule::Window, String> {
        let tz = match &self.time_zone {
            Some(z) => crate::schedule::cron::parse_time_zone(z).map_err(|e| e.to_string())?,
            None => crate::schedule::TimeZone::UTC,
        };
        crate::schedule::Window::parse(&self.schedule, &self.duration, &tz)
            .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `[a-z0-9][a-z0-9_.-]*`: names the mirror and the projects' source in status.
    #[serde(deserialize_with = "checked::source_name")]
    pub name: String,
    /// https, http, ssh://, user@host:path, git://, file:// or a local path.
    pub url: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default, deserialize_with = "checked::commit")]
    pub commit: Option<String>,
    /// Directories in the repository: one with a compose file is a project, else each of its
    /// subdirectories with one is. Default `["."]`.
    #[serde(default, deserialize_with = "checked::repo_paths")]
    pub paths: Vec<String>,
    #[serde(default)]
    pub auth: GitAuthConfig,
    #[serde(default, with = "duration_opt")]
    pub poll_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GitAuthConfig {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// How long updated services must stay up before a generation counts as good
    /// (default 10 s).
    #[serde(default, with = "duration_opt")]
    pub stabilization: Option<Duration>,
    /// How long to wait for dependencies and readiness (default 5 min).
    #[serde(default, with = "duration_opt")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// /metrics, /healthz, /readyz, /hooks/git (default 127.0.0.1:9469; "" disables).
    #[serde(default, deserialize_with = "checked::address")]
    pub http: Option<String>,
    /// The local admin API used by the CLI (default `<root>/agent.sock`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// An optional loopback TCP admin API; needs `api_token_file`.
    #[serde(default, deserialize_with = "checked::address")]
    pub api: Option<String>,
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// GitHub/Gitea HMAC-SHA256 secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub secret: Option<String>,
    /// GitLab's `X-Gitlab-Token`.
    #[serde(default)]
    pub gitlab_token_file: Option<PathBuf>,
    #[serde(default)]
    pub gitlab_token: Option<String>,
}

/// Field checks done while parsing, so that their errors carry the line and column.
mod checked {
    use serde::{Deserialize, Deserializer};

    pub fn source_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let name = String::deserialize(d)?;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "source name {name:?} must match [a-z0-9][a-z0-9_.-]* (at most 64 characters)"
            )));
        }
        Ok(name)
    }

    pub fn commit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let c = String::deserialize(d)?;
        if c.len() < 7 || c.len() > 64 || !c.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "{c:?} is not a commit id (7 to 64 hex digits)"
            )));
        }
        Ok(Some(c.to_ascii_lowercase()))
    }

    pub fn repo_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let paths = Vec::<String>::deserialize(d)?;
        for p in &paths {
            if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == "..") {
                return Err(serde::de::Error::custom(format!(
                    "path {p:?} must be relative to the repository, without '..'"
                )));
            }
        }
        Ok(paths)
    }

    pub fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let a = String::deserialize(d)?;
        if !a.is_empty() && a.parse::<std::net::SocketAddr>().is_err() {
            return Err(serde::de::Error::custom(format!(
                "{a:?} is not an address:port (e.g. 127.0.0.1:9469)"
            )));
        }
        Ok(Some(a))
    }
}

/// Durations as Compose writes them (`90s`, `1m30s`, `2h`).
mod duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        crate::manifest::syntax::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
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
    /// The agent's local API socket: `listen.socket` from the configuration, else
    /// `<root>/agent.sock`.
    pub fn socket_path(&self, root: &Path) -> PathBuf {
        self.listen
            .socket
            .clone()
            .unwrap_or_else(|| root.join("agent.sock"))
    }

    /// Loads `path` when given, else the default file when it exists (or the legacy name),
    /// else defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None if !Path::new(DEFAULT_CONFIG).exists() && Path::new(LEGACY_CONFIG).exists() => {
                (PathBuf::from(LEGACY_CONFIG), false)
            }
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AgentConfig::default())
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse(&path, &text)
    }

    /// Parses and validates a configuration; errors name the file, the line and the field.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(AgentConfig::default());
        }
        let mut field = String::new();
        let parsed: Result<AgentConfig, _> = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                field = e.path().to_string();
                e.into_inner()
            })
        });
        let config = parsed.map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: if field.is_empty() || field == "." {
                e.to_string()
            } else {
                format!("field {field}: {e}")
            },
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let field = |f: &str| format!("sources[{i}].{f}");
            if !names.insert(s.name.as_str()) {
                return Err(invalid(
                    field("name"),
                    format!("{:?} is used twice", s.name),
                ));
            }
            if s.url.trim().is_empty() {
                return Err(invalid(field("url"), "is empty".into()));
            }
            let refs = [&s.branch, &s.tag, &s.commit]
                .iter()
                .filter(|r| r.is_some())
                .count();
            if refs > 1 {
                return Err(invalid(
                    field("branch"),
                    "give one of branch, tag or commit".into(),
                ));
            }
            let a = &s.auth;
            if a.token.is_some() && a.token_file.is_some() {
                return Err(invalid(
                    field("auth.token"),
                    "give token or token_file".into(),
                ));
            }
            if a.password.is_some() && a.password_file.is_some() {
                return Err(invalid(
                    field("auth.password"),
                    "give password or password_file".into(),
                ));
            }
            if a.known_hosts.is_some() && a.ssh_key.is_none() {
                return Err(invalid(field("auth.known_hosts"), "needs ssh_key".into()));
            }
            if let Some(d) = s.poll_interval {
                if d < Duration::from_millis(100) {
                    return Err(invalid(field("poll_interval"), "is below 100ms".into()));
                }
            }
        }
        for (name, d) in [
            ("poll_interval", self.poll_interval),
            ("drift_interval", self.drift_interval),
            ("image_check_interval", self.image_check_interval),
        ] {
            if d.is_some_and(|d| d < Duration::from_millis(100)) {
                return Err(invalid(name.into(), "is below 100ms".into()));
            }
        }
        if let Some(w) = &self.update_window {
            w.window().map_err(|e| invalid("update_window".into(), e))?;
        }
        if self.listen.api.as_deref().is_some_and(|a| !a.is_empty())
            && self.listen.api_token_file.is_none()
        {
            return Err(invalid(
                "listen.api".into(),
                "a TCP admin API needs listen.api_token_file".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        AgentConfig::parse(Path::new("/etc/dockmaster/agent.yaml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_example_configurations_parse() {
        for (name, text) in [
            ("deploy/agent.yaml", include_str!("../deploy/agent.yaml")),
            (
                "manifests/agent.yaml",
                include_str!("../manifests/agent.yaml"),
            ),
        ] {
            let c =
                AgentConfig::parse(Path::new(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!c.sources.is_empty(), "{name}");
        }
        let c = AgentConfig::parse(
            Path::new("a.yaml"),
            "sources:\n  - name: fleet\n    url: https://git.example.com/x.git\n    tag: v1.2\n    paths: [stacks, edge/one]\npoll_interval: 1m30s\napply: {stabilization: 500ms}\nlisten: {http: \"127.0.0.1:1\", socket: /run/dm.sock}\n",
        )
        .unwrap();
        assert_eq!(c.poll_interval, Some(Duration::from_secs(90)));
        assert_eq!(c.apply.stabilization, Some(Duration::from_millis(500)));
        assert_eq!(c.sources[0].tag.as_deref(), Some("v1.2"));
        assert_eq!(c.socket_path(Path::new("/r")), Path::new("/run/dm.sock"));
        assert_eq!(
            AgentConfig::default().socket_path(Path::new("/r")),
            Path::new("/r/agent.sock")
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let e = err("sources:\n  - name: fleet\n    url: x\n    poll_interval: soon\n");
        assert!(
            e.contains("/etc/dockmaster/agent.yaml")
                && e.contains("sources[0].poll_interval")
                && e.contains("line 4"),
            "{e}"
        );
        let e = err("sources:\n  - name: Fleet\n    url: x\n");
        assert!(e.contains("sources[0].name") && e.contains("line 2"), "{e}");
        let e = err("sources:\n  - name: a\n    url: x\n    paths: [../etc]\n");
        assert!(e.contains("sources[0].paths") && e.contains("'..'"), "{e}");
        let e = err("sources:\n  - name: a\n    url: x\n    commit: zzz\n");
        assert!(e.contains("sources[0].commit") && e.contains("hex"), "{e}");
        let e = err("poll_intervall: 1s\n");
        assert!(e.contains("unknown field") && e.contains("line 1"), "{e}");
        let e = err("listen: {http: \"localhost\"}\n");
        assert!(
            e.contains("listen.http") && e.contains("address:port"),
            "{e}"
        );
    }

    #[test]
    fn cross_field_problems_are_named() {
        let e = err("sources:\n  - {name: a, url: x, branch: main, tag: v1}\n");
        assert!(
            e.contains("sources[0].branch") && e.contains("one of"),
            "{e}"
        );
        let e = err("sources:\n  - {name: a, url: x}\n  - {name: a, url: y}\n");
        assert!(e.contains("sources[1].name") && e.contains("twice"), "{e}");
        let e = err("listen: {api: \"127.0.0.1:9470\"}\n");
        assert!(
            e.contains("listen.api") && e.contains("api_token_file"),
            "{e}"
        );
        let e = err("drift_interval: 1ms\n");
        assert!(e.contains("drift_interval"), "{e}");
    }
}
