//! Connecting containers to networks and disconnecting them: the sequence over the store,
//! IPAM, ports, namespaces, links and the nftables table, with rollback. Synchronous: the CLI,
//! the agent (through spawn_blocking) and shims call it; every step holds the store lock, so
//! concurrent callers see one consistent host state.
//!
//! Host state (bridges, per-interface sysctls, dockmaster's nftables table) is always
//! recomputed from the whole store and applied in one go ([`apply_host_state`]): a crash
//! between steps is repaired by the next call.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::{Categorized, Category};
use crate::network::model::{Endpoint, NetworkConfig, PortMapping, DEFAULT_NETWORK};
use crate::network::ports::{self, PortError, PortSpec};
use crate::network::store::{EndpointSpec, NetworkSpec, NetworkStore, StoreError, StoreGuard};
use crate::network::{ipam, link, netns, nft};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error("network {network} is internal: it cannot publish ports (container {container})")]
    InternalPorts { network: String, container: String },
    #[error("container {container} asks for network {network} twice")]
    Duplicate { container: String, network: String },
    #[error("published ports need a bridge network (container {container})")]
    PortsWithoutNetwork { container: String },
}

impl Categorized for NetworkError {
    fn category(&self) -> Category {
        match self {
            NetworkError::Store(e) => e.category(),
            NetworkError::Ports(e) => e.category(),
            NetworkError::Link(e) => e.category(),
            NetworkError::Netns(e) => e.category(),
            NetworkError::Nft(e) => e.category(),
            NetworkError::InternalPorts { .. }
            | NetworkError::Duplicate { .. }
            | NetworkError::PortsWithoutNetwork { .. } => Category::Invalid,
        }
    }
}

/// One network a container joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkRequest {
    pub network: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    pub container_id: String,
    pub container_name: String,
    /// In order: the first gets eth0, the default route and the published ports.
    pub networks: Vec<NetworkRequest>,
    pub ports: Vec<PortSpec>,
    /// `--dns`: where netd forwards this container's queries for names that are not ours.
    pub dns: Vec<Ipv4Addr>,
}

/// A container's network namespace, ready for its spec.
#[derive(Debug, Clone)]
pub struct Connected {
    pub netns: PathBuf,
    pub endpoints: Vec<Endpoint>,
    /// The first network's gateway, where netd answers DNS for it.
    pub nameserver: Ipv4Addr,
}

/// Where a container's network namespace is held.
pub fn netns_dir(root: &Path) -> PathBuf {
    root.join("netns")
}

pub fn netns_path(root: &Path, container_id: &str) -> PathBuf {
    netns_dir(root).join(container_id)
}

/// The default `bridge` network, created on first use with a pool subnet (like Docker's
/// `docker0`, but named and managed like any other network).
pub fn ensure_default_network(guard: &StoreGuard) -> Result<NetworkConfig, NetworkError> {
    match guard.get(DEFAULT_NETWORK) {
        Ok(net) => Ok(net),
        Err(StoreError::NetworkNotFound { .. }) => {
            let spec = NetworkSpec {
                name: DEFAULT_NETWORK.to_string(),
                ..Default::default()
            };
            Ok(guard.create_network(&spec, &ipam::default_pools(), &link::ipv4_routes()?)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Brings the host in line with the store: every network's bridge up with its gateway, the
/// sysctls the rules need, and dockmaster's nftables table, replaced atomically.
pub fn apply_host_state(guard: &StoreGuard) -> Result<(), NetworkError> {
    let networks = guard.list()?;
    let endpoints = guard.all_endpoints()?;
    for net in &networks {
        link::ensure_bridge(&net.bridge, net.gateway_net(), net.mtu)?;
    }
    let uplinks = nft::uplink_interfaces()?;
    nft::apply_sysctls(&nft::required_sysctls(&networks, &endpoints, &uplinks))?;
    nft::apply(&networks, &endpoints)?;
    Ok(())
}

/// Attaches a container to its networks: endpoints (addresses, ports) stored, namespace
/// created at [`netns_path`], veth pairs made, host rules applied. Nothing is left behind
/// when any step fails.
pub fn connect(root: &Path, req: &ConnectRequest) -> Result<Connected, NetworkError> {
    let store = NetworkStore::open(root)?;
    let guard = store.lock()?;
    let path = netns_path(root, &req.container_id);
    match connect_locked(&guard, req, &path) {
        Ok(connected) => Ok(connected),
        Err(e) => {
            // The first error is the one worth reporting.
            if let Err(undo) = disconnect_locked(&guard, root, &req.container_id) {
                tracing::warn!("undo a failed connect of {}: {undo}", req.container_name);
            }
            Err(e)
        }
    }
}

fn connect_locked(
    guard: &StoreGuard,
    req: &ConnectRequest,
    path: &Path,
) -> Result<Connected, NetworkError> {
    let container = &req.container_name;
    if req.networks.is_empty() && !req.ports.is_empty() {
        return Err(NetworkError::PortsWithoutNetwork {
            container: container.clone(),
        });
    }
    let mut networks = Vec::with_capacity(req.networks.len());
    for (i, r) in req.networks.iter().enumerate() {
        if req.networks[..i].iter().any(|o| o.network == r.network) {
            return Err(NetworkError::Duplicate {
                container: container.clone(),
                network: r.network.clone(),
            });
        }
        let net = if r.network == DEFAULT_NETWORK {
            ensure_default_network(guard)?
        } else {
            guard.find(&r.network)?
        };
        networks.push(net);
    }
    let mappings: Vec<PortMapping> = if req.ports.is_empty() {
        Vec::new()
    } else {
        if networks[0].internal {
            return Err(NetworkError::InternalPorts {
                network: networks[0].name.clone(),
                container: container.clone(),
            });
        }
        let existing: Vec<(String, PortMapping)> = guard
            .all_endpoints()?
            .into_iter()
            .flat_map(|e| {
                let name = e.container_name.clone();
                e.ports.into_iter().map(move |p| (name.clone(), p))
            })
            .collect();
        ports::allocate(&req.ports, &existing)?
    };

    let mut endpoints = Vec::with_capacity(networks.len());
    for (i, (net, r)) in networks.iter().zip(&req.networks).enumerate() {
        let endpoint = guard.add_endpoint(&EndpointSpec {
            network: net.name.clone(),
            container_id: req.container_id.clone(),
            container_name: container.clone(),
            aliases: r.aliases.clone(),
            requested_ip: r.ip,
            ifname: format!("eth{i}"),
            ports: if i == 0 { mappings.clone() } else { Vec::new() },
            dns: req.dns.clone(),
        })?;
        endpoints.push(endpoint);
    }

    netns::create(path)?;
    // Bridges first: a veth is enslaved at creation.
    for net in &networks {
        link::ensure_bridge(&net.bridge, net.gateway_net(), net.mtu)?;
    }
    for (i, (net, endpoint)) in networks.iter().zip(&endpoints).enumerate() {
        link::attach(&link::Attachment::for_endpoint(net, endpoint, path, i == 0))?;
        link::set_hairpin(&endpoint.host_veth, true)?;
    }
    if networks.is_empty() {
        netns::run_in(path, link::loopback_up)??;
    }
    apply_host_state(guard)?;
    Ok(Connected {
        netns: path.to_path_buf(),
        nameserver: networks.first().map_or(Ipv4Addr::LOCALHOST, |n| n.gateway),
        endpoints,
    })
}

/// Detaches a container from every network: endpoints released, host rules re-applied,
/// namespace removed (which destroys its veth pairs). Idempotent; nothing to do (and no
/// store created) on a root that never had a network.
pub fn disconnect(root: &Path, container_id: &str) -> Result<Vec<Endpoint>, NetworkError> {
    let Some(store) = NetworkStore::open_existing(root) else {
        return Ok(Vec::new());
    };
    disconnect_locked(&store.lock()?, root, container_id)
}

/// [`disconnect`] under a held lock (also the undo of a failed [`connect`]).
fn disconnect_locked(
    guard: &StoreGuard,
    root: &Path,
    container_id: &str,
) -> Result<Vec<Endpoint>, NetworkError> {
    let removed = guard.remove_endpoints(container_id)?;
    netns::remove(&netns_path(root, container_id))?;
    for endpoint in &removed {
        // The kernel destroys the pair with the namespace, asynchronously; do not wait.
        let _ = link::delete_link(&endpoint.host_veth);
    }
    if !removed.is_empty() {
        apply_host_state(guard)?;
    }
    Ok(removed)
}
