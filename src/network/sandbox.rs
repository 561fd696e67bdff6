//! A container's network sandbox: what it asked for (stored in its record) and what its shim
//! sets up at each start and tears down at exit: the namespace and endpoints (bridge mode),
//! and the generated /etc/hosts, /etc/hostname and /etc/resolv.conf bind-mounted into it.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::network::manager::{self, ConnectRequest, NetworkError, NetworkRequest};
use crate::network::model::{Endpoint, DEFAULT_NETWORK};
use crate::network::ports::PortSpec;

/// `--network`: Docker's modes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// One or more bridge networks ([`ContainerNetwork::networks`]).
    #[default]
    Bridge,
    None,
    Host,
    /// `container:NAME`: share another container's network namespace and its files.
    Container(String),
}

impl NetMode {
    /// `--network VALUE`: `none`, `host`, `container:NAME`, or a network name (bridge mode).
    pub fn parse(value: &str) -> (NetMode, Option<String>) {
        match value {
            "none" => (NetMode::None, None),
            "host" => (NetMode::Host, None),
            v => match v.strip_prefix("container:") {
                Some(name) => (NetMode::Container(name.to_string()), None),
                None => (NetMode::Bridge, Some(v.to_string())),
            },
        }
    }
}

/// What a container asked for, stored in its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerNetwork {
    pub mode: NetMode,
    /// Bridge mode: the networks, in order (eth0 first).
    #[serde(default)]
    pub networks: Vec<NetworkRequest>,
    /// `-p` specs as given (validated at create time).
    #[serde(default)]
    pub ports: Vec<String>,
    /// `--dns`: upstream resolvers for this container's names that are not ours.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP`.
    #[serde(default)]
    pub extra_hosts: Vec<(String, Ipv4Addr)>,
}

impl ContainerNetwork {
    /// Bridge mode on the default network.
    pub fn default_bridge() -> ContainerNetwork {
        ContainerNetwork {
            networks: vec![NetworkRequest {
                network: DEFAULT_NETWORK.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    pub fn port_specs(&self) -> Result<Vec<PortSpec>, NetworkError> {
        self.ports
            .iter()
            .map(|p| PortSpec::parse(p).map_err(NetworkError::from))
            .collect()
    }
}

/// The files generated for a container, in its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFiles {
    pub dir: PathBuf,
}

impl SandboxFiles {
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn hostname(&self) -> PathBuf {
        self.dir.join("hostname")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    /// (host file, container path) for the spec's bind mounts.
    pub fn mounts(&self) -> [(PathBuf, &'static str); 3] {
        [
            (self.hosts(), "/etc/hosts"),
            (self.hostname(), "/etc/hostname"),
            (self.resolv_conf(), "/etc/resolv.conf"),
        ]
    }
}

/// The outcome of [`setup`].
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    pub endpoints: Vec<Endpoint>,
    /// A namespace to join that is only known at start (`container:NAME`).
    pub join: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network container:{name}: {reason}")]
    Peer { name: String, reason: String },
}

impl crate::error::Categorized for SandboxError {
    fn category(&self) -> crate::error::Category {
        match self {
            SandboxError::Network(e) => e.category(),
            SandboxError::Write { .. } => crate::error::Category::Internal,
            SandboxError::Peer { .. } => crate::error::Category::Conflict,
        }
    }
}

/// Where `container:NAME` joins: resolved by the caller (it knows the container store).
pub struct Peer {
    pub netns: PathBuf,
    pub files: SandboxFiles,
}

/// Sets up the sandbox before the container starts: endpoints and namespace (bridge mode)
/// and the three generated files.
pub fn setup(
    root: &Path,
    container_id: &str,
    container_name: &str,
    hostname: &str,
    net: &ContainerNetwork,
    files: &SandboxFiles,
    peer: Option<Peer>,
) -> Result<Sandbox, SandboxError> {
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| SandboxError::Write { path, source })
    };
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    match &net.mode {
        NetMode::Bridge => {
            let connected = manager::connect(
                root,
                &ConnectRequest {
                    container_id: container_id.to_string(),
                    container_name: container_name.to_string(),
                    networks: net.networks.clone(),
                    ports: net.port_specs()?,
                    dns: net.dns.clone(),
                },
            )?;
            let own: Vec<Ipv4Addr> = connected.endpoints.iter().map(|e| e.ip).collect();
            let result = write(files.hosts(), hosts_file(hostname, &own, &net.extra_hosts))
                .and_then(|_| write(files.hostname(), format!("{hostname}\n")))
                .and_then(|_| {
                    write(
                        files.resolv_conf(),
                        resolv_conf(&[connected.nameserver], net),
                    )
                });
            if let Err(e) = result {
                let _ = manager::disconnect(root, container_id);
                return Err(e);
            }
            // DNS for the networks; never while holding the store lock (netd's start-up
            // repair takes it). Without it names do not resolve but traffic flows: warn.
            if let Err(e) = crate::network::netd::ensure_running(root) {
                tracing::warn!("start the network daemon for {}: {e}", root.display());
            }
            Ok(Sandbox {
                endpoints: connected.endpoints,
                join: None,
            })
        }
        NetMode::None => {
            write(files.hosts(), hosts_file(hostname, &[], &net.extra_hosts))?;
            write(files.hostname(), format!("{hostname}\n"))?;
            write(files.resolv_conf(), host_resolv_conf(&host_resolv, net))?;
            Ok(Sandbox::default())
        }
        NetMode::Host => {
            let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            if !hosts.is_empty() && !hosts.ends_with('\n') {
                hosts.push('\n');
            }
            for (name, ip) in &net.extra_hosts {
                let _ = writeln!(hosts, "{ip}\t{name}");
            }
            write(files.hosts(), hosts)?;
            write(files.hostname(), format!("{hostname}\n"))?;
            write(files.resolv_conf(), host_resolv_conf(&host_resolv, net))?;
            Ok(Sandbox::default())
        }
        NetMode::Container(name) => {
            let peer = peer.ok_or_else(|| SandboxError::Peer {
                name: name.clone(),
                reason: "it is not running".into(),
            })?;
            for (from, to) in [
                (peer.files.hosts(), files.hosts()),
                (peer.files.hostname(), files.hostname()),
                (peer.files.resolv_conf(), files.resolv_conf()),
            ] {
                std::fs::copy(&from, &to).map_err(|source| SandboxError::Write {
                    path: to.clone(),
                    source,
                })?;
            }
            Ok(Sandbox {
                endpoints: Vec::new(),
                join: Some(peer.netns),
            })
        }
    }
}

/// Releases what [`setup`] made; idempotent.
pub fn teardown(root: &Path, container_id: &str) -> Result<(), SandboxError> {
    manager::disconnect(root, container_id)?;
    Ok(())
}

/// Docker's /etc/hosts for a container: loopback names, the container's addresses with its
/// host name, then `--add-host` entries.
pub fn hosts_file(hostname: &str, own: &[Ipv4Addr], extra: &[(String, Ipv4Addr)]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for (name, ip) in extra {
        let _ = writeln!(out, "{ip}\t{name}");
    }
    for ip in own {
        let _ = writeln!(out, "{ip}\t{hostname}");
    }
    out
}

/// resolv.conf pointing at dockmaster's DNS on the gateway (which forwards other names).
pub fn resolv_conf(nameservers: &[Ipv4Addr], net: &ContainerNetwork) -> String {
    let mut out = String::new();
    for ns in nameservers {
        let _ = writeln!(out, "nameserver {ns}");
    }
    if !net.dns_search.is_empty() {
        let _ = writeln!(out, "search {}", net.dns_search.join(" "));
    }
    let mut options = vec!["ndots:0".to_string()];
    options.extend(net.dns_options.iter().cloned());
    let _ = writeln!(out, "options {}", options.join(" "));
    out
}

/// resolv.conf for `none`/`host` modes: `--dns`/`--dns-search` when given, else the host's
/// file with loopback nameservers dropped for `none` (nothing listens there in its own
/// namespace), like Docker.
pub fn host_resolv_conf(host: &str, net: &ContainerNetwork) -> String {
    let keep_loopback = net.mode == NetMode::Host;
    let mut out = String::new();
    for ns in &net.dns {
        let _ = writeln!(out, "nameserver {ns}");
    }
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") if net.dns.is_empty() => {
                let addr = words.next().unwrap_or_default();
                let loopback = addr
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
                if keep_loopback || !loopback {
                    let _ = writeln!(out, "{line}");
                }
            }
            Some("search") | Some("domain") if !net.dns_search.is_empty() => {}
            Some("nameserver") => {}
            _ => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    if !net.dns_search.is_empty() {
        let _ = writeln!(out, "search {}", net.dns_search.join(" "));
    }
    if !net.dns_options.is_empty() {
        let _ = writeln!(out, "options {}", net.dns_options.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_like_docker() {
        assert_eq!(NetMode::parse("none"), (NetMode::None, None));
        assert_eq!(NetMode::parse("host"), (NetMode::Host, None));
        assert_eq!(
            NetMode::parse("container:web"),
            (NetMode::Container("web".into()), None)
        );
        assert_eq!(
            NetMode::parse("front"),
            (NetMode::Bridge, Some("front".into()))
        );
    }

    #[test]
    fn hosts_has_loopback_own_address_and_extra_hosts() {
        let text = hosts_file(
            "abc123",
            &[Ipv4Addr::new(10, 1, 0, 2)],
            &[("db.local".into(), Ipv4Addr::new(10, 9, 9, 9))],
        );
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.1.0.2\tabc123\n"));
        assert!(text.contains("10.9.9.9\tdb.local\n"));
    }

    #[test]
    fn resolv_conf_points_at_the_gateway_with_search_and_options() {
        let net = ContainerNetwork {
            dns_search: vec!["example.org".into()],
            dns_options: vec!["timeout:2".into()],
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(&[Ipv4Addr::new(10, 1, 0, 1)], &net),
            "nameserver 10.1.0.1\nsearch example.org\noptions ndots:0 timeout:2\n"
        );
    }

    #[test]
    fn none_mode_drops_loopback_resolvers_and_dns_flags_replace_the_hosts() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch lan\n";
        let none = ContainerNetwork {
            mode: NetMode::None,
            ..Default::default()
        };
        let text = host_resolv_conf(host, &none);
        assert!(!text.contains("127.0.0.53") && text.contains("nameserver 192.0.2.1"));
        assert!(text.contains("search lan"));
        let hostmode = ContainerNetwork {
            mode: NetMode::Host,
            ..Default::default()
        };
        assert!(host_resolv_conf(host, &hostmode).contains("127.0.0.53"));
        let custom = ContainerNetwork {
            mode: NetMode::None,
            dns: vec![Ipv4Addr::new(198, 51, 100, 7)],
            dns_search: vec!["corp".into()],
            ..Default::default()
        };
        let text = host_resolv_conf(host, &custom);
        assert!(text.contains("nameserver 198.51.100.7") && !text.contains("192.0.2.1"));
        assert!(text.contains("search corp") && !text.contains("search lan"));
    }
}
