//! A project's networks: created in dockmaster's network store (bridge, IPAM) with Compose's
//! labels; external ones must exist.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use crate::manifest::model::Network;
use crate::network::store::{NetworkSpec, NetworkStore};
use crate::network::{ipam, link, manager};

use super::ReconcileError;

pub const LABEL_NETWORK: &str = "com.docker.compose.network";

/// Names of the networks that exist.
pub fn existing(root: &Path) -> Result<BTreeSet<String>, ReconcileError> {
    let Some(store) = NetworkStore::open_existing(root) else {
        return Ok(BTreeSet::new());
    };
    let list = store
        .list()
        .map_err(|e| ReconcileError::Network(e.to_string()))?;
    Ok(list.into_iter().map(|n| n.name).collect())
}

/// The store's request for a Compose network.
pub fn spec(project: &str, key: &str, decl: &Network) -> Result<NetworkSpec, ReconcileError> {
    let invalid = |reason: String| ReconcileError::Invalid {
        project: project.to_string(),
        what: format!("network {key}"),
        reason,
    };
    if let Some(driver) = decl.driver.as_deref().filter(|d| *d != "bridge") {
        return Err(invalid(format!(
            "driver {driver:?} is unsupported (only bridge)"
        )));
    }
    let mut spec = NetworkSpec {
        name: decl.name.clone(),
        internal: decl.internal,
        labels: decl.labels.clone(),
        ..NetworkSpec::default()
    };
    spec.labels
        .insert(super::translate::LABEL_PROJECT.into(), project.to_string());
    spec.labels.insert(LABEL_NETWORK.into(), key.to_string());
    // IPv4 pools only; the first one is used (one subnet per bridge).
    if let Some(pool) = decl
        .ipam
        .config
        .iter()
        .find(|p| matches!(p.subnet, Some(ipnet::IpNet::V4(_))) || p.subnet.is_none())
    {
        if let Some(ipnet::IpNet::V4(net)) = pool.subnet {
            spec.subnet = Some(net);
        }
        if let Some(ipnet::IpNet::V4(net)) = pool.ip_range {
            spec.ip_range = Some(net);
        }
        match pool.gateway {
            Some(IpAddr::V4(gw)) => spec.gateway = Some(gw),
            Some(IpAddr::V6(gw)) => {
                return Err(invalid(format!("gateway {gw}: IPv6 is unsupported")))
            }
            None => {}
        }
    }
    if let Some(mtu) = decl.driver_opts.get("com.docker.network.driver.mtu") {
        spec.mtu = Some(
            mtu.parse()
                .map_err(|_| invalid(format!("invalid mtu {mtu:?}")))?,
        );
    }
    Ok(spec)
}

/// Creates the network unless it exists.
pub fn create(root: &Path, project: &str, key: &str, decl: &Network) -> Result<(), ReconcileError> {
    let spec = spec(project, key, decl)?;
    let err = |e: String| ReconcileError::Network(format!("network {}: {e}", spec.name));
    let store = NetworkStore::open(root).map_err(|e| err(e.to_string()))?;
    let guard = store.lock().map_err(|e| err(e.to_string()))?;
    if store.find(&spec.name).is_ok() {
        return Ok(());
    }
    let routes = link::ipv4_routes().map_err(|e| err(format!("read the host's routes: {e}")))?;
    let net = guard
        .create_network(&spec, &ipam::default_pools(), &routes)
        .map_err(|e| err(e.to_string()))?;
    if let Err(e) = manager::apply_host_state(&guard) {
        let _ = guard.remove_network(&net.name);
        let _ = link::delete_bridge(&net.bridge);
        let _ = manager::apply_host_state(&guard);
        return Err(err(format!("set up bridge {}: {e}", net.bridge)));
    }
    Ok(())
}

/// Removes the project's networks that no container uses any more (for `down`).
pub fn remove_unused(root: &Path, names: &BTreeSet<String>) -> Result<Vec<String>, ReconcileError> {
    let Some(store) = NetworkStore::open_existing(root) else {
        return Ok(Vec::new());
    };
    let err = |e: String| ReconcileError::Network(e);
    let guard = store.lock().map_err(|e| err(e.to_string()))?;
    let used: BTreeSet<String> = guard
        .all_endpoints()
        .map_err(|e| err(e.to_string()))?
        .into_iter()
        .map(|e| e.network)
        .collect();
    let mut removed = Vec::new();
    for name in names {
        let Ok(net) = store.find(name) else { continue };
        if used.contains(&net.name) {
            continue;
        }
        guard
            .remove_network(&net.name)
            .map_err(|e| err(format!("network {name}: {e}")))?;
        let _ = link::delete_bridge(&net.bridge);
        removed.push(name.clone());
    }
    manager::apply_host_state(&guard).map_err(|e| err(e.to_string()))?;
    Ok(removed)
}
