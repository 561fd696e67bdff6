//! The validated, normalized project: what the planner, the executor and the agent work from.
//!
//! The input side is the positioned YAML tree (`yaml::Node`): untyped, merged and
//! interpolated. Everything here has been checked: names resolve, short syntaxes are expanded,
//! relative paths are absolute, units are parsed. Serializing a `Project` with serde gives the
//! compose-spec JSON of `docker compose config --format json` (field names, order and forms), so
//! the same value is printed by `dockmaster config` and hashed by the planner.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// A free-form extension map (`x-dockmaster`), kept as JSON for later policy code.
pub type Extension = serde_json::Map<String, serde_json::Value>;

/// A loaded Compose project.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Project {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, FileObject>,
    /// Normalized project name (`[a-z0-9][a-z0-9_-]*`).
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Network>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, FileObject>,
    /// Active services (profiles applied).
    pub services: BTreeMap<String, Service>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Volume>,
    /// Our own extension (`x-dockmaster` at the top level), free-form.
    #[serde(rename = "x-dockmaster", skip_serializing_if = "Option::is_none")]
    pub x_dockmaster: Option<Extension>,
    /// Other top-level `x-` fields: not used, echoed by `config` as compose does.
    #[serde(flatten)]
    pub extensions: BTreeMap<String, serde_json::Value>,
    /// The project directory: relative paths were resolved against it.
    #[serde(skip)]
    pub working_dir: PathBuf,
    /// The compose files read, in merge order (included and extended files not listed).
    #[serde(skip)]
    pub compose_files: Vec<PathBuf>,
    /// Every file the loader read (compose files, includes, extends, `.env`, env files), in
    /// read order without duplicates: what a change detector must watch.
    #[serde(skip)]
    pub source_files: Vec<PathBuf>,
    /// Profiles that were active.
    #[serde(skip)]
    pub profiles: BTreeSet<String>,
    /// Services left out because none of their profiles is active.
    #[serde(skip)]
    pub disabled_services: BTreeSet<String>,
    /// Things that were accepted but are ignored or approximated; the CLI prints them.
    #[serde(skip)]
    pub warnings: Vec<Warning>,
}

impl Project {
    /// Service names in start order: every service after the ones it depends on, ties broken
    /// by name (deterministic). The loader has already refused dependency cycles; should one
    /// remain, its services come last in name order.
    pub fn startup_order(&self) -> Vec<String> {
        let mut pending: BTreeMap<&str, usize> = BTreeMap::new();
        let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, s) in &self.services {
            let deps = s
                .depends_on
                .keys()
                .filter(|d| self.services.contains_key(*d))
                .count();
            pending.insert(name, deps);
            for d in s.depends_on.keys() {
                if self.services.contains_key(d) {
                    dependents.entry(d.as_str()).or_default().push(name);
                }
            }
        }
        let mut ready: BTreeSet<&str> = pending
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(k, _)| *k)
            .collect();
        let mut order = Vec::with_capacity(self.services.len());
        while let Some(next) = ready.pop_first() {
            order.push(next.to_string());
            pending.remove(next);
            for d in dependents.get(next).into_iter().flatten() {
                if let Some(n) = pending.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(d);
                    }
                }
            }
        }
        order.extend(pending.keys().map(|k| k.to_string()));
        order
    }
}

/// A non-fatal finding, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub location: Option<super::error::Location>,
    pub service: Option<String>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.location {
            write!(f, "{l}: ")?;
        }
        if let Some(s) = &self.service {
            write!(f, "service {s:?}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// One service, normalized. Field order is compose-go's, so JSON output matches
/// `docker compose config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Service {
    #[serde(skip)]
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// OCI annotations for the containers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `docker compose up` output attachment: no effect on dockmaster, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `cpus:` as written (see `resources` for the effective limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// `None`: the image's Cmd. `Some(vec![])`: cleared.
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Dependency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// `None`: the image's Entrypoint. `Some(vec![])`: cleared.
    pub entrypoint: Option<Vec<String>>,
    /// The container environment: env files first, then `environment:`; `None` values are
    /// names without a value anywhere (Docker leaves them unset).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, Option<String>>,
    /// The env files that fed `environment` (kept: the planner hashes their contents).
    #[serde(rename = "env_file", skip_serializing_if = "Vec::is_empty")]
    pub env_files: Vec<EnvFile>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_bytes"
    )]
    pub mem_limit: Option<i64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_bytes"
    )]
    pub mem_reservation: Option<i64>,
    /// Memory plus swap, `-1` unlimited.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_bytes"
    )]
    pub memswap_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// Networks the service joins (`None` value: joined with no options). Empty when
    /// `network_mode` is set.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_bytes"
    )]
    pub shm_size: Option<i64>,
    #[serde(skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub stop_grace_period: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `--tmpfs` style entries: `PATH[:OPTIONS]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Mount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Our own extension (`x-dockmaster` on the service), free-form.
    #[serde(rename = "x-dockmaster", skip_serializing_if = "Option::is_none")]
    pub x_dockmaster: Option<Extension>,
    /// Effective limits after reconciling `mem_limit`/`cpus`/`pids_limit`/`mem_reservation`
    /// with `deploy.resources` (deploy wins when both are set, as in Docker Compose).
    #[serde(skip)]
    pub resources: EffectiveResources,
}

impl Service {
    /// How many containers to run: `deploy.replicas`, else `scale`, else 1.
    pub fn replicas(&self) -> u32 {
        self.deploy
            .as_ref()
            .and_then(|d| d.replicas)
            .or(self.scale)
            .unwrap_or(1)
    }

    /// The restart policy to apply: `restart:`, else `deploy.restart_policy` translated like
    /// Docker Compose does (`any` → always, `on-failure` with `max_attempts`, `none` → no),
    /// else no.
    pub fn effective_restart(&self) -> RestartPolicy {
        if let Some(r) = self.restart {
            return r;
        }
        let deploy = self.deploy.as_ref().and_then(|d| d.restart_policy.as_ref());
        match deploy.and_then(|r| r.condition.as_deref()) {
            Some("any") => RestartPolicy::Always,
            Some("on-failure") => RestartPolicy::OnFailure {
                max_retries: deploy
                    .and_then(|r| r.max_attempts)
                    .and_then(|n| u32::try_from(n).ok()),
            },
            _ => RestartPolicy::No,
        }
    }

    /// `deploy.update_config.order`, default stop-first.
    pub fn update_order(&self) -> UpdateOrder {
        self.deploy
            .as_ref()
            .and_then(|d| d.update_config.as_ref())
            .and_then(|u| u.order)
            .unwrap_or(UpdateOrder::StopFirst)
    }
}

/// Limits as the runtime applies them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EffectiveResources {
    /// Bytes.
    pub memory: Option<u64>,
    pub memory_reservation: Option<u64>,
    /// Memory plus swap, -1 unlimited.
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<i64>,
    pub shm_size: Option<u64>,
}

/// `network_mode:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    None,
    Host,
    /// `bridge`: Docker's default bridge (dockmaster's predefined `bridge` network).
    Bridge,
    /// `service:NAME`: share another service's network namespace.
    Service(String),
    /// `container:NAME`.
    Container(String),
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::Bridge => f.write_str("bridge"),
            NetworkMode::Service(s) => write!(f, "service:{s}"),
            NetworkMode::Container(c) => write!(f, "container:{c}"),
        }
    }
}

impl Serialize for NetworkMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A service's attachment to one network.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceNetwork {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub gw_priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<std::net::Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<std::net::Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
}

/// `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub condition: DependCondition,
    /// Restart this service when the dependency is updated.
    #[serde(skip_serializing_if = "is_false")]
    pub restart: bool,
    /// When false, a missing/failed dependency only warns.
    pub required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DependCondition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

impl DependCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            DependCondition::Started => "service_started",
            DependCondition::Healthy => "service_healthy",
            DependCondition::CompletedSuccessfully => "service_completed_successfully",
        }
    }
}

impl Serialize for DependCondition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Published port: one entry per container port (ranges are expanded like compose).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub mode: PortMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub target: u16,
    /// Host port or host port range; `None`: not published on a fixed port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<PortRange>,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMode {
    Ingress,
    Host,
}

impl Serialize for PortMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            PortMode::Ingress => "ingress",
            PortMode::Host => "host",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An inclusive host port range (`start == end` for one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A service mount (`volumes:` entry), short syntax expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Bind: absolute host path. Volume: the project's volume key (or empty for an anonymous
    /// volume). Tmpfs: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

impl Serialize for MountKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BindOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selinux: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
    /// Create the host path when missing (compose's default for bind mounts).
    pub create_host_path: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursive: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VolumeOptions {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_false")]
    pub nocopy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TmpfsOptions {
    /// Bytes.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_bytes"
    )]
    pub size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// `healthcheck:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Healthcheck {
    /// `None`: keep the image's test (only the timings change).
    pub test: Option<HealthTest>,
    pub timeout: Option<Duration>,
    pub interval: Option<Duration>,
    pub retries: Option<u64>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    /// `disable: true` (also what `test: ["NONE"]` means).
    pub disable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTest {
    /// `["NONE"]`: no healthcheck, not even the image's.
    None,
    /// `["CMD", args...]`: exec form.
    Cmd(Vec<String>),
    /// `["CMD-SHELL", cmd]` or a plain string: run by `/bin/sh -c`.
    Shell(String),
}

impl Serialize for Healthcheck {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match &self.test {
            None => {}
            Some(HealthTest::None) => m.serialize_entry("test", &["NONE"])?,
            Some(HealthTest::Cmd(args)) => {
                let v: Vec<&str> = std::iter::once("CMD")
                    .chain(args.iter().map(String::as_str))
                    .collect();
                m.serialize_entry("test", &v)?
            }
            Some(HealthTest::Shell(cmd)) => m.serialize_entry("test", &["CMD-SHELL", cmd])?,
        }
        if let Some(d) = self.timeout {
            m.serialize_entry("timeout", &go_duration(d))?;
        }
        if let Some(d) = self.interval {
            m.serialize_entry("interval", &go_duration(d))?;
        }
        if let Some(r) = self.retries {
            m.serialize_entry("retries", &r)?;
        }
        if let Some(d) = self.start_period {
            m.serialize_entry("start_period", &go_duration(d))?;
        }
        if let Some(d) = self.start_interval {
            m.serialize_entry("start_interval", &go_duration(d))?;
        }
        if self.disable {
            m.serialize_entry("disable", &true)?;
        }
        m.end()
    }
}

/// `restart:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    OnFailure { max_retries: Option<u32> },
    UnlessStopped,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `pull_policy:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    Never,
    /// `missing` (also written `if_not_present`).
    Missing,
    /// `daily`, `weekly`, `every_<duration>`: pull when the last pull is older.
    Every(Duration),
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PullPolicy::Always => f.write_str("always"),
            PullPolicy::Never => f.write_str("never"),
            PullPolicy::Missing => f.write_str("missing"),
            PullPolicy::Every(d) if *d == Duration::from_secs(86400) => f.write_str("daily"),
            PullPolicy::Every(d) if *d == Duration::from_secs(7 * 86400) => f.write_str("weekly"),
            PullPolicy::Every(d) => write!(f, "every_{}", go_duration(*d)),
        }
    }
}

impl Serialize for PullPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `ulimits:` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ulimit {
    /// One number: soft and hard.
    Single(i64),
    Range {
        soft: i64,
        hard: i64,
    },
}

impl Ulimit {
    pub fn soft(self) -> i64 {
        match self {
            Ulimit::Single(v) => v,
            Ulimit::Range { soft, .. } => soft,
        }
    }
    pub fn hard(self) -> i64 {
        match self {
            Ulimit::Single(v) => v,
            Ulimit::Range { hard, .. } => hard,
        }
    }
}

impl Serialize for Ulimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ulimit::Single(v) => s.serialize_i64(*v),
            Ulimit::Range { soft, hard } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("soft", soft)?;
                m.serialize_entry("hard", hard)?;
                m.end()
            }
        }
    }
}

/// `extra_hosts:` entry: `host=ip` in compose's canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHost {
    pub host: String,
    /// An IP address or `host-gateway`.
    pub ip: String,
}

impl Serialize for ExtraHost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}={}", self.host, self.ip))
    }
}

/// An `env_file:` entry, path absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvFile {
    pub path: PathBuf,
    pub required: bool,
    /// `raw`: values taken literally (no quotes, no interpolation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A service's reference to a config or secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRef {
    pub source: String,
    /// Path in the container (secrets default to `/run/secrets/<source>`; configs to
    /// `/<source>`, applied by the runtime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_mode"
    )]
    pub mode: Option<u32>,
}

/// `deploy:` (the parts a single host honours are typed; see the loader for what is refused).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Deploy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    pub resources: DeployResources,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<DeployRestartPolicy>,
    pub placement: Placement,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<String>,
}

/// Always empty: placement constraints are refused (single host); kept for the JSON form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub monitor: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<UpdateOrder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

impl Serialize for UpdateOrder {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeployResources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Resource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_bytes"
    )]
    pub memory: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeployRestartPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub window: Option<Duration>,
}

/// A top-level network.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Network {
    /// The real name (`<project>_<key>` unless `name:` or external).
    pub name: String,
    /// Always bridge (or unset, meaning bridge) for networks we create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    pub ipam: Ipam,
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub attachable: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_ipv4: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_ipv6: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ipam {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamPool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpamPool {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<IpNet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, IpAddr>,
}

/// A top-level volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// The real name (`<project>_<key>` unless `name:` or external).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A top-level config or secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileObject {
    pub name: String,
    /// Absolute path of the file holding the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Name of the variable holding the content (resolved into `content` at load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Inline content (configs print it unless it came from `environment`; secrets never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Resolved content for `environment:` sources (never printed).
    #[serde(skip)]
    pub resolved_content: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn ser_opt_bytes<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.collect_str(b),
        None => s.serialize_none(),
    }
}

fn ser_opt_duration<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_str(&go_duration(*d)),
        None => s.serialize_none(),
    }
}

fn ser_opt_mode<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(m) => s.collect_str(&format_args!("0{m:o}")),
        None => s.serialize_none(),
    }
}

/// Formats a duration like Go's `time.Duration.String()` ("1m30s", "500ms", "2h0m0s"), the
/// form compose prints.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1u128)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(nanos, div));
    }
    let secs_total = nanos / 1_000_000_000;
    let sub = nanos % 1_000_000_000;
    let hours = secs_total / 3600;
    let minutes = (secs_total % 3600) / 60;
    let secs = secs_total % 60;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&fraction(
        u128::from(secs as u64) * 1_000_000_000 + sub,
        1_000_000_000,
    ));
    out.push('s');
    out
}

/// `value / div` with the fractional digits Go prints (trailing zeros dropped).
fn fraction(value: u128, div: u128) -> String {
    let whole = value / div;
    let rem = value % div;
    if rem == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::from_secs(0), "0s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(3_723_000_000_001), "1h2m3.000000001s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn effective_restart_and_startup_order() {
        let mut s = Service {
            deploy: Some(Deploy {
                restart_policy: Some(DeployRestartPolicy {
                    condition: Some("on-failure".into()),
                    max_attempts: Some(4),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            s.effective_restart(),
            RestartPolicy::OnFailure {
                max_retries: Some(4)
            }
        );
        s.restart = Some(RestartPolicy::Always);
        assert_eq!(s.effective_restart(), RestartPolicy::Always);
        assert_eq!(Service::default().effective_restart(), RestartPolicy::No);

        let dep = |names: &[&str]| {
            names
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        Dependency {
                            condition: DependCondition::Started,
                            restart: false,
                            required: true,
                        },
                    )
                })
                .collect()
        };
        let mut p = Project::default();
        for (name, deps) in [
            ("web", vec!["api", "cache"]),
            ("api", vec!["db"]),
            ("db", vec![]),
            ("cache", vec![]),
            ("jobs", vec!["db", "gone"]),
        ] {
            p.services.insert(
                name.to_string(),
                Service {
                    name: name.to_string(),
                    depends_on: dep(&deps),
                    ..Default::default()
                },
            );
        }
        assert_eq!(p.startup_order(), ["cache", "db", "api", "jobs", "web"]);
    }

    #[test]
    fn restart_policy_strings() {
        assert_eq!(
            RestartPolicy::OnFailure {
                max_retries: Some(3)
            }
            .to_string(),
            "on-failure:3"
        );
        assert_eq!(RestartPolicy::UnlessStopped.to_string(), "unless-stopped");
    }
}
