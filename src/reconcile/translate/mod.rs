//! From a Compose service to what the runtime creates: one [`CreateRequest`] per replica,
//! with the identity labels the planner finds it by. Pure: host paths of volumes and of
//! generated config/secret files come from the caller ([`HostPaths`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::{Categorized, Category};
use crate::health::{HealthConfig, RestartPolicy};
use crate::manifest::model::{HealthTest, RestartPolicy as ComposeRestart};
use crate::manifest::model::{
    MountKind, NetworkMode as ComposeNetworkMode, Port, Project, Service,
};
use crate::network::manager::NetworkRequest;
use crate::network::sandbox::{ContainerNetwork, NetMode};
use crate::runtime::create::{CreateRequest, Supervision};
use crate::runtime::logs::LogConfig;
use crate::runtime::spec::{
    BindMount, ContainerOptions, Identity, SecurityOpt, TmpfsMount, Ulimit,
};

/// Labels every container of a project carries (Compose's names, so tools that know them
/// keep working), plus ours.
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_NUMBER: &str = "com.docker.compose.container-number";
pub const LABEL_CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
pub const LABEL_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
/// The generation (apply) that created the container.
pub const LABEL_GENERATION: &str = "dockmaster.generation";

/// Where things live on the host, decided by the executor.
pub trait HostPaths {
    /// The directory a named volume (real name) is mounted from.
    fn volume(&self, name: &str) -> PathBuf;
    /// The file holding a config or secret given inline (`content:` / `environment:`).
    fn generated_file(&self, kind: FileKind, name: &str) -> PathBuf;
    /// Whether a bind mount of this absolute host path is allowed: inside the project
    /// directory, or under the configured allow-list.
    fn bind_allowed(&self, path: &Path) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Config,
    Secret,
}

/// A named volume a container needs, and where the image's content would be copied from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUse {
    pub name: String,
    pub target: String,
    /// `volume.nocopy`: do not fill it from the image.
    pub nocopy: bool,
}

/// One replica, ready for `runtime::create_supervised`.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub request: CreateRequest,
    pub supervision: Supervision,
    pub volumes: Vec<VolumeUse>,
    /// Host directories to create first (bind mounts with `create_host_path`).
    pub host_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("project {project}, service {service}: {field}: {reason}")]
pub struct TranslateError {
    pub project: String,
    pub service: String,
    pub field: String,
    pub reason: String,
}

impl Categorized for TranslateError {
    fn category(&self) -> Category {
        Category::Invalid
    }
}

/// The container name of a replica: `container_name`, else `<project>-<service>-<n>` (Compose v2).
pub fn container_name(project: &str, service: &Service, replica: u32) -> String {
    match &service.container_name {
        Some(name) => name.clone(),
        None => format!("{project}-{}-{replica}", service.name),
    }
}

/// Builds the create request of one replica. `image` is what to create from (the
/// reference pinned to the digest it resolved to), `hash` the service's config hash.
pub fn container_plan(
    project: &Project,
    service: &Service,
    replica: u32,
    image: &str,
    hash: &str,
    generation: u64,
    paths: &dyn HostPaths,
) -> Result<ContainerPlan, TranslateError> {
    let err = |field: &str, reason: String| TranslateError {
        project: project.name.clone(),
        service: service.name.clone(),
        field: field.to_string(),
        reason,
    };
    let name = container_name(&project.name, service, replica);
    let mut options = ContainerOptions {
        identity: Identity {
            project: Some(project.name.clone()),
            service: Some(service.name.clone()),
            replica: Some(replica),
            config_hash: Some(hash.to_string()),
            ..Identity::default()
        },
        command: service.command.clone().unwrap_or_default(),
        entrypoint: service.entrypoint.clone(),
        env: service
            .environment
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect(),
        user: service.user.clone(),
        group_add: service.group_add.clone(),
        working_dir: service.working_dir.clone(),
        hostname: service.hostname.clone(),
        tty: service.tty,
        read_only: service.read_only,
        memory: service.resources.memory,
        memory_reservation: service.resources.memory_reservation,
        memory_swap: service.resources.memory_swap,
        cpus: service.resources.cpus,
        cpu_shares: service.resources.cpu_shares,
        pids_limit: service.resources.pids,
        cap_add: service.cap_add.clone(),
        cap_drop: service.cap_drop.clone(),
        privileged: service.privileged,
        sysctls: service.sysctls.clone(),
        shm_size: service.resources.shm_size,
        ..ContainerOptions::default()
    };
    for opt in &service.security_opt {
        options
            .security_opts
            .push(SecurityOpt::parse(opt).map_err(|e| err("security_opt", e.to_string()))?);
    }
    for (kind, limit) in &service.ulimits {
        let spec = format!("{kind}={}:{}", limit.soft(), limit.hard());
        options
            .ulimits
            .push(Ulimit::parse(&spec).map_err(|e| err("ulimits", e.to_string()))?);
    }
    for t in &service.tmpfs {
        options
            .tmpfs
            .push(TmpfsMount::parse(t).map_err(|e| err("tmpfs", e.to_string()))?);
    }

    let mut volumes = Vec::new();
    let mut host_dirs = Vec::new();
    for m in &service.volumes {
        match m.kind {
            MountKind::Bind => {
                let source = PathBuf::from(m.source.as_deref().unwrap_or_default());
                if !source.is_absolute() {
                    return Err(err(
                        "volumes",
                        format!("bind source {} is not absolute", source.display()),
                    ));
                }
                if !paths.bind_allowed(&source) {
                    return Err(err(
                        "volumes",
                        format!(
                            "bind mount of {} is outside the project directory and the \
                             configured allow-list (bind_allow in the agent configuration)",
                            source.display()
                        ),
                    ));
                }
                if m.bind.as_ref().is_some_and(|b| b.create_host_path) {
                    host_dirs.push(source.clone());
                }
                options.binds.push(BindMount {
                    source,
                    destination: m.target.clone(),
                    read_only: m.read_only,
                });
            }
            MountKind::Volume => {
                // Anonymous volumes get a stable name per replica and target, so a recreated
                // container finds its data again (as Compose reuses them).
                let real = match m.source.as_deref().filter(|s| !s.is_empty()) {
                    Some(key) => match project.volumes.get(key) {
                        Some(v) => v.name.clone(),
                        None => {
                            return Err(err(
                                "volumes",
                                format!("volume {key:?} is not declared in the top-level volumes"),
                            ))
                        }
                    },
                    None => anonymous_volume(&project.name, &service.name, replica, &m.target),
                };
                volumes.push(VolumeUse {
                    name: real.clone(),
                    target: m.target.clone(),
                    nocopy: m.volume.as_ref().is_some_and(|v| v.nocopy),
                });
                options.binds.push(BindMount {
                    source: paths.volume(&real),
                    destination: m.target.clone(),
                    read_only: m.read_only,
                });
            }
            MountKind::Tmpfs => {
                let mut opts = Vec::new();
                if let Some(t) = &m.tmpfs {
                    if let Some(size) = t.size {
                        opts.push(format!("size={size}"));
                    }
                    if let Some(mode) = t.mode {
                        opts.push(format!("mode={mode:o}"));
                    }
                }
                options.tmpfs.push(TmpfsMount {
                    destination: m.target.clone(),
                    options: opts,
                });
            }
        }
    }
    for (refs, kind, objects) in [
        (&service.configs, FileKind::Config, &project.configs),
        (&service.secrets, FileKind::Secret, &project.secrets),
    ] {
        for r in refs {
            let Some(object) = objects.get(&r.source) else {
                return Err(err(
                    if kind == FileKind::Config {
                        "configs"
                    } else {
                        "secrets"
                    },
                    format!("{:?} is not declared at the top level", r.source),
                ));
            };
            let source = match &object.file {
                Some(file) => file.clone(),
                None => paths.generated_file(kind, &r.source),
            };
            let target = match (&r.target, kind) {
                (Some(t), FileKind::Secret) if !t.starts_with('/') => {
                    format!("/run/secrets/{t}")
                }
                (Some(t), _) => t.clone(),
                (None, FileKind::Secret) => format!("/run/secrets/{}", r.source),
                (None, FileKind::Config) => format!("/{}", r.source),
            };
            options.binds.push(BindMount {
                source,
                destination: target,
                read_only: true,
            });
        }
    }

    let network = network(project, service, replica).map_err(|(f, r)| err(f, r))?;

    let mut labels = service.labels.clone();
    labels.insert(LABEL_PROJECT.into(), project.name.clone());
    labels.insert(LABEL_SERVICE.into(), service.name.clone());
    labels.insert(LABEL_NUMBER.into(), replica.to_string());
    labels.insert(LABEL_CONFIG_HASH.into(), hash.to_string());
    labels.insert(LABEL_ONEOFF.into(), "False".into());
    labels.insert(
        LABEL_WORKING_DIR.into(),
        project.working_dir.display().to_string(),
    );
    labels.insert(LABEL_GENERATION.into(), generation.to_string());

    Ok(ContainerPlan {
        request: CreateRequest {
            image: image.to_string(),
            name: Some(name),
            options,
            auto_remove: false,
            stop_grace_secs: service.stop_grace_period.map(|d| d.as_secs()),
            stop_signal: service.stop_signal.clone(),
            labels,
            log: LogConfig::default(),
            network,
        },
        supervision: supervision(service),
        volumes,
        host_dirs,
    })
}

/// Compose's `restart:` and `healthcheck:` as the shim takes them. `x-dockmaster:
/// {restart_unhealthy: false}` on a service opts out of restarting unhealthy containers.
pub fn supervision(service: &Service) -> Supervision {
    let restart = match service.effective_restart() {
        ComposeRestart::No => RestartPolicy::No,
        ComposeRestart::Always => RestartPolicy::Always,
        ComposeRestart::UnlessStopped => RestartPolicy::UnlessStopped,
        ComposeRestart::OnFailure { max_retries } => RestartPolicy::OnFailure {
            max_retries: max_retries.unwrap_or(0),
        },
    };
    let healthcheck = service.healthcheck.as_ref().map(|h| {
        let test = if h.disable {
            vec!["NONE".to_string()]
        } else {
            match &h.test {
                None => Vec::new(),
                Some(HealthTest::None) => vec!["NONE".to_string()],
                Some(HealthTest::Cmd(args)) => std::iter::once("CMD".to_string())
                    .chain(args.iter().cloned())
                    .collect(),
                Some(HealthTest::Shell(cmd)) => vec!["CMD-SHELL".to_string(), cmd.clone()],
            }
        };
        HealthConfig {
            test,
            interval: h.interval.unwrap_or_default(),
            timeout: h.timeout.unwrap_or_default(),
            start_period: h.start_period.unwrap_or_default(),
            start_interval: h.start_interval.unwrap_or_default(),
            retries: h.retries.map_or(0, |r| r.min(u64::from(u32::MAX)) as u32),
        }
    });
    let restart_unhealthy = service
        .x_dockmaster
        .as_ref()
        .and_then(|x| x.get("restart_unhealthy"))
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    Supervision {
        restart,
        healthcheck,
        restart_unhealthy,
    }
}

/// `<project>_<service>_<n>_<12 hex of the target>`: stable across recreation.
pub fn anonymous_volume(project: &str, service: &str, replica: u32, target: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let h = hex::encode(Sha256::digest(target.as_bytes()));
    format!("{project}_{service}_{replica}_{}", &h[..12])
}

fn network(
    project: &Project,
    service: &Service,
    replica: u32,
) -> Result<ContainerNetwork, (&'static str, String)> {
    let mut net = ContainerNetwork::default();
    match &service.network_mode {
        Some(ComposeNetworkMode::None) => net.mode = NetMode::None,
        Some(ComposeNetworkMode::Host) => net.mode = NetMode::Host,
        Some(ComposeNetworkMode::Container(name)) => net.mode = NetMode::Container(name.clone()),
        Some(ComposeNetworkMode::Service(other)) => {
            let Some(target) = project.services.get(other) else {
                return Err((
                    "network_mode",
                    format!("service {other:?} is not in the project"),
                ));
            };
            // The sidecar joins the same replica number when the target has it, else #1.
            let n = if replica <= target.replicas() {
                replica
            } else {
                1
            };
            net.mode = NetMode::Container(container_name(&project.name, target, n));
        }
        Some(ComposeNetworkMode::Bridge) => {
            net.mode = NetMode::Bridge;
            net.networks.push(NetworkRequest {
                network: crate::network::model::DEFAULT_NETWORK.to_string(),
                aliases: Vec::new(),
                ip: None,
            });
        }
        None => {
            net.mode = NetMode::Bridge;
            // Sorted by priority (higher first), then by key, like Compose.
            let mut entries: Vec<_> = service.networks.iter().collect();
            entries.sort_by_key(|(key, n)| {
                (
                    std::cmp::Reverse(n.as_ref().map_or(0, |n| n.priority)),
                    (*key).clone(),
                )
            });
            for (key, attachment) in entries {
                let Some(decl) = project.networks.get(key) else {
                    return Err((
                        "networks",
                        format!("network {key:?} is not declared in the top-level networks"),
                    ));
                };
                // Compose makes the service name an alias on every network it joins.
                let mut aliases = vec![service.name.clone()];
                if let Some(a) = attachment {
                    for alias in &a.aliases {
                        if !aliases.contains(alias) {
                            aliases.push(alias.clone());
                        }
                    }
                }
                net.networks.push(NetworkRequest {
                    network: decl.name.clone(),
                    aliases,
                    ip: attachment.as_ref().and_then(|a| a.ipv4_address),
                });
            }
        }
    }
    if net.mode == NetMode::Bridge {
        net.ports = service.ports.iter().map(port_spec).collect();
    } else if !service.ports.is_empty() {
        return Err((
            "ports",
            format!(
                "published ports need a bridge network, not network_mode {}",
                service
                    .network_mode
                    .as_ref()
                    .map_or(String::new(), |m| m.to_string())
            ),
        ));
    }
    for d in &service.dns {
        let ip: Ipv4Addr = d
            .parse()
            .map_err(|_| ("dns", format!("{d:?} is not an IPv4 address")))?;
        net.dns.push(ip);
    }
    net.dns_search = service.dns_search.clone();
    net.dns_options = service.dns_opt.clone();
    for h in &service.extra_hosts {
        let ip: Ipv4Addr = h.ip.parse().map_err(|_| {
            (
                "extra_hosts",
                format!("{}: {:?} is not an IPv4 address", h.host, h.ip),
            )
        })?;
        net.extra_hosts.push((h.host.clone(), ip));
    }
    Ok(net)
}

/// A Compose port as the short syntax `run -p` takes.
fn port_spec(p: &Port) -> String {
    let mut s = String::new();
    if let Some(ip) = p.host_ip {
        s.push_str(&ip.to_string());
        s.push(':');
    }
    match p.published {
        Some(range) => s.push_str(&format!("{range}:{}", p.target)),
        None if p.host_ip.is_some() => s.push_str(&format!(":{}", p.target)),
        None => s.push_str(&p.target.to_string()),
    }
    s.push('/');
    s.push_str(p.protocol.as_str());
    s
}

#[cfg(test)]
mod tests;
