//! The value types every part of networking shares: a network's validated config, a
//! container's attachment to it (endpoint) and its published ports. They are what the store
//! persists, what IPAM fills in, what the nftables ruleset and the DNS tables are computed from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the network a project gets when its services name none, and of the network
/// `run` uses when given `--network bridge` (Docker's default bridge is called `bridge`).
pub const DEFAULT_NETWORK: &str = "bridge";

/// Linux interface names are at most 15 bytes.
pub const IFNAME_MAX: usize = 15;

/// A bridge network as created (validated, with IPAM decisions made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// User-facing name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), unique per root.
    pub name: String,
    /// 64 hex characters, random at creation.
    pub id: String,
    /// Host bridge interface, [`bridge_name`] of the id.
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Dynamic allocations come from here when set (Compose `ip_range`); static
    /// `ipv4_address` may be anywhere in the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
    /// No egress and no published ports (Compose `internal: true`).
    #[serde(default)]
    pub internal: bool,
    pub mtu: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339.
    pub created: String,
}

impl NetworkConfig {
    /// Prefix-qualified gateway, as put on the bridge.
    pub fn gateway_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, self.subnet.prefix_len()).expect("prefix of a valid subnet")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port, after ranges are expanded (a range becomes one mapping per port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// `0.0.0.0` means every host address, loopback included.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

/// A container's attachment to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 64 hex characters.
    pub container_id: String,
    /// The container's name (resolvable on the network).
    pub container_name: String,
    /// Network name.
    pub network: String,
    pub ip: Ipv4Addr,
    /// `02:42:..`-style locally administered address derived from the ip.
    pub mac: String,
    /// Interface inside the container (`eth0`, `eth1`, ...).
    pub ifname: String,
    /// Host side of the veth pair, [`veth_name`].
    pub host_veth: String,
    /// Further names resolvable on this network: the service name, network aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Published ports are attached to the container's first network endpoint only.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// The container's own upstream resolvers (`--dns`), used by netd for its queries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
}

fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// `dm-` + 12 hex characters of the network id: 15 bytes, unique enough per host, and
/// recognisable as ours when cleaning up after a crash.
pub fn bridge_name(network_id: &str) -> String {
    format!("dm-{}", &short_hash(&[network_id])[..12])
}

/// `dmv` + 12 hex characters of (container id, network name).
pub fn veth_name(container_id: &str, network: &str) -> String {
    format!("dmv{}", &short_hash(&[container_id, network])[..12])
}

/// Docker's scheme: 02:42 followed by the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Whether an interface name is one dockmaster creates (bridge or host-side veth).
pub fn is_ours(ifname: &str) -> bool {
    let rest = ifname
        .strip_prefix("dm-")
        .or_else(|| ifname.strip_prefix("dmv"));
    rest.is_some_and(|r| r.len() == 12 && r.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_interface_names_and_are_recognised() {
        let id = "a".repeat(64);
        let bridge = bridge_name(&id);
        let veth = veth_name(&id, "front");
        assert_eq!(bridge.len(), IFNAME_MAX);
        assert_eq!(veth.len(), IFNAME_MAX);
        assert!(is_ours(&bridge) && is_ours(&veth));
        assert!(!is_ours("docker0") && !is_ours("dm-x") && !is_ours("eth0"));
        assert_ne!(veth_name(&id, "front"), veth_name(&id, "back"));
    }

    #[test]
    fn mac_follows_dockers_scheme() {
        assert_eq!(mac_for(Ipv4Addr::new(172, 18, 0, 2)), "02:42:ac:12:00:02");
    }

    #[test]
    fn endpoint_round_trips_through_json() {
        let endpoint = Endpoint {
            container_id: "b".repeat(64),
            container_name: "web".into(),
            network: "front".into(),
            ip: Ipv4Addr::new(10, 1, 0, 2),
            mac: mac_for(Ipv4Addr::new(10, 1, 0, 2)),
            ifname: "eth0".into(),
            host_veth: veth_name(&"b".repeat(64), "front"),
            aliases: vec!["web".into()],
            ports: vec![PortMapping {
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 8080,
                container_port: 80,
                proto: Proto::Tcp,
            }],
            dns: vec![],
        };
        let json = serde_json::to_string(&endpoint).unwrap();
        assert!(json.contains("\"proto\":\"tcp\""));
        assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), endpoint);
    }
}
