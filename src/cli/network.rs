//! Network commands, as Docker has them: `network create|ls|inspect|rm|prune`.
//!
//! Every mutation holds the network store's lock from the first read to the last host change,
//! so it never races a container being connected. Like Docker, `create` makes the bridge at
//! once (through [`manager::apply_host_state`], which also replaces the nftables table), and
//! `rm`/`prune` delete it. The default network `bridge` is predefined, as in Docker: it is
//! made on first use by a container and cannot be created, removed or pruned by hand.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::network::model::{Endpoint, NetworkConfig, DEFAULT_NETWORK};
use crate::network::store::{NetworkSpec, NetworkStore, StoreError, StoreGuard};
use crate::network::{ipam, link, manager};

/// The only driver there is.
const DRIVER: &str = "bridge";
const OPT_MTU: &str = "com.docker.network.driver.mtu";
const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network and its bridge; prints its id.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks' details as JSON.
    Inspect(InspectArgs),
    /// Remove networks (refused while containers are attached).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove every network no container is attached to (except the predefined `bridge`).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Network name: letters, digits, '_', '.' and '-'.
    pub name: String,
    /// Network driver (only `bridge`).
    #[arg(short = 'd', long, default_value = DRIVER)]
    pub driver: String,
    /// Subnet in CIDR form (default: a free one from the address pools).
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address, inside the subnet (default: its first address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Range (CIDR, inside the subnet) containers get their addresses from.
    #[arg(long = "ip-range")]
    pub ip_range: Option<String>,
    /// No egress and no published ports.
    #[arg(long)]
    pub internal: bool,
    /// Driver option KEY=VALUE (`com.docker.network.driver.mtu=N`).
    #[arg(short = 'o', long = "opt")]
    pub opts: Vec<String>,
    /// Label KEY=VALUE (or KEY, for an empty value).
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate ids.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// `table` (default) or `json` (one object per line).
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Network names, ids or id prefixes.
    #[arg(required = true)]
    pub networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Network names, ids or id prefixes.
    #[arg(required = true)]
    pub networks: Vec<String>,
    /// Do not fail when a network does not exist.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn run(root: &Path, cmd: NetworkCommand) -> anyhow::Result<i32> {
    match cmd {
        NetworkCommand::Create(a) => create(root, a),
        NetworkCommand::Ls(a) => ls(root, a),
        NetworkCommand::Inspect(a) => inspect(root, a),
        NetworkCommand::Rm(a) => rm(root, a),
        NetworkCommand::Prune(a) => prune(root, a),
    }
}

fn open_store(root: &Path) -> anyhow::Result<NetworkStore> {
    NetworkStore::open(root)
        .with_context(|| format!("open the network store under {}", root.display()))
}

/// Store errors that already name the network keep their message; others get its name.
fn named(network: &str, e: StoreError) -> anyhow::Error {
    match e {
        StoreError::NetworkExists { .. }
        | StoreError::NetworkNotFound(_)
        | StoreError::NetworkInUse { .. }
        | StoreError::InvalidName(_)
        | StoreError::Ambiguous { .. } => e.into(),
        other => anyhow::Error::new(other).context(format!("network {network}")),
    }
}

// ---- create ------------------------------------------------------------------------------

/// The store's request from the command line, validated as far as that is possible without
/// the store (addressing is checked by IPAM against the other networks).
fn spec_from_args(args: &CreateArgs) -> anyhow::Result<NetworkSpec> {
    let name = &args.name;
    if args.driver != DRIVER {
        bail!(
            "network {name}: driver {:?} is not supported: only {DRIVER}",
            args.driver
        );
    }
    if name == DEFAULT_NETWORK {
        bail!(
            "network {name} is predefined: it is created when a container first uses it, \
             and cannot be created by hand"
        );
    }
    let mut mtu = None;
    for (key, value) in parse_pairs("--opt", &args.opts)? {
        match key.as_str() {
            OPT_MTU => {
                let parsed = value
                    .parse::<u32>()
                    .ok()
                    .filter(|m| (68..=65535).contains(m));
                match parsed {
                    Some(m) => mtu = Some(m),
                    None => {
                        bail!("network {name}: invalid {OPT_MTU} {value:?}: expected 68 to 65535")
                    }
                }
            }
            OPT_BRIDGE_NAME => bail!(
                "network {name}: option {OPT_BRIDGE_NAME} is not supported: the bridge is \
                 named after the network id"
            ),
            _ => bail!("network {name}: unsupported driver option {key:?} (supported: {OPT_MTU})"),
        }
    }
    Ok(NetworkSpec {
        name: name.clone(),
        subnet: args
            .subnet
            .as_deref()
            .map(|s| parse_net(name, "--subnet", s))
            .transpose()?,
        gateway: args
            .gateway
            .as_deref()
            .map(|s| parse_addr(name, "--gateway", s))
            .transpose()?,
        ip_range: args
            .ip_range
            .as_deref()
            .map(|s| parse_net(name, "--ip-range", s))
            .transpose()?,
        internal: args.internal,
        mtu,
        labels: parse_pairs("--label", &args.labels)?.into_iter().collect(),
    })
}

/// `KEY=VALUE` (or `KEY`, an empty value) items; a later key wins, as with Docker.
fn parse_pairs(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        if key.is_empty() {
            bail!("invalid {flag} {item:?}: expected KEY=VALUE");
        }
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

fn parse_net(network: &str, flag: &str, text: &str) -> anyhow::Result<Ipv4Net> {
    match text.parse::<IpNet>() {
        Ok(IpNet::V4(net)) => Ok(net),
        Ok(IpNet::V6(_)) => {
            bail!("network {network}: {flag} {text}: IPv6 is not supported, only IPv4")
        }
        Err(_) => {
            bail!("network {network}: invalid {flag} {text:?}: expected CIDR like 10.1.0.0/24")
        }
    }
}

fn parse_addr(network: &str, flag: &str, text: &str) -> anyhow::Result<Ipv4Addr> {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(_)) => {
            bail!("network {network}: {flag} {text}: IPv6 is not supported, only IPv4")
        }
        Err(_) => bail!("network {network}: invalid {flag} {text:?}: expected an IPv4 address"),
    }
}

pub fn create(root: &Path, args: CreateArgs) -> anyhow::Result<i32> {
    let spec = spec_from_args(&args)?;
    let store = open_store(root)?;
    let guard = store.lock()?;
    let routes = link::ipv4_routes()
        .with_context(|| format!("network {}: read the host's routes", spec.name))?;
    let net = guard
        .create_network(&spec, &ipam::default_pools(), &routes)
        .map_err(|e| named(&spec.name, e))?;
    if let Err(e) = manager::apply_host_state(&guard) {
        // Not created unless its bridge is: leave nothing behind.
        undo_create(&guard, &net);
        return Err(anyhow::Error::new(e).context(format!(
            "network {}: set up bridge {}",
            net.name, net.bridge
        )));
    }
    println!("{}", net.id);
    Ok(0)
}

fn undo_create(guard: &StoreGuard, net: &NetworkConfig) {
    if let Err(e) = guard.remove_network(&net.name) {
        tracing::warn!(network = net.name, error = %e, "remove the record of a failed network");
    }
    if let Err(e) = link::delete_bridge(&net.bridge) {
        tracing::warn!(bridge = net.bridge, error = %e, "delete the bridge of a failed network");
    }
    if let Err(e) = manager::apply_host_state(guard) {
        tracing::warn!(error = %e, "restore host network state after a failed create");
    }
}

// ---- ls / inspect ------------------------------------------------------------------------

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Docker's `Labels` column: `k=v,k2=v2`.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn ls(root: &Path, args: LsArgs) -> anyhow::Result<i32> {
    if args.format != "table" && args.format != "json" {
        bail!("unknown --format {:?}: use table or json", args.format);
    }
    let store = open_store(root)?;
    let mut networks = store.list()?;
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let id = |n: &NetworkConfig| -> String {
        if args.no_trunc {
            n.id.clone()
        } else {
            short_id(&n.id).to_string()
        }
    };
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for n in &networks {
            writeln!(out, "{}", id(n))?;
        }
        return Ok(0);
    }
    if args.format == "json" {
        for n in &networks {
            let line = serde_json::json!({
                "ID": id(n),
                "Name": n.name,
                "Driver": DRIVER,
                "Scope": "local",
                "IPv6": "false",
                "Internal": n.internal.to_string(),
                "Labels": labels_text(&n.labels),
                "CreatedAt": n.created,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(0);
    }
    let header = ["NETWORK ID", "NAME", "DRIVER", "SCOPE"].map(String::from);
    let rows: Vec<[String; 4]> = networks
        .iter()
        .map(|n| [id(n), n.name.clone(), DRIVER.into(), "local".into()])
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(0)
}

/// `docker network inspect`'s shape, fields in Docker's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkJson {
    name: String,
    id: String,
    created: String,
    scope: &'static str,
    driver: &'static str,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: IpamJson,
    internal: bool,
    attachable: bool,
    ingress: bool,
    config_from: ConfigFromJson,
    config_only: bool,
    containers: BTreeMap<String, ContainerJson>,
    options: BTreeMap<&'static str, String>,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct IpamJson {
    driver: &'static str,
    options: BTreeMap<String, String>,
    config: Vec<IpamConfigJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct IpamConfigJson {
    subnet: String,
    gateway: String,
    #[serde(rename = "IPRange", skip_serializing_if = "Option::is_none")]
    ip_range: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigFromJson {
    network: String,
}

#[derive(Debug, Serialize)]
struct ContainerJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "MacAddress")]
    mac_address: String,
    #[serde(rename = "IPv4Address")]
    ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    ipv6_address: String,
}

/// A stable 64-hex endpoint id: the store keeps endpoints by (network, container), and a
/// container joins a network at most once at a time.
fn endpoint_id(network_id: &str, container_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(network_id.as_bytes());
    hasher.update([0]);
    hasher.update(container_id.as_bytes());
    hex::encode(hasher.finalize())
}

fn inspect_json(net: &NetworkConfig, endpoints: &[Endpoint]) -> NetworkJson {
    let prefix = net.subnet.prefix_len();
    NetworkJson {
        name: net.name.clone(),
        id: net.id.clone(),
        created: net.created.clone(),
        scope: "local",
        driver: DRIVER,
        enable_ipv6: false,
        ipam: IpamJson {
            driver: "default",
            options: BTreeMap::new(),
            config: vec![IpamConfigJson {
                subnet: net.subnet.to_string(),
                gateway: net.gateway.to_string(),
                ip_range: net.ip_range.map(|r| r.to_string()),
            }],
        },
        internal: net.internal,
        attachable: false,
        ingress: false,
        config_from: ConfigFromJson {
            network: String::new(),
        },
        config_only: false,
        containers: endpoints
            .iter()
            .map(|e| {
                (
                    e.container_id.clone(),
                    ContainerJson {
                        name: e.container_name.clone(),
                        endpoint_id: endpoint_id(&net.id, &e.container_id),
                        mac_address: e.mac.clone(),
                        ipv4_address: format!("{}/{prefix}", e.ip),
                        ipv6_address: String::new(),
                    },
                )
            })
            .collect(),
        options: BTreeMap::from([
            (OPT_BRIDGE_NAME, net.bridge.clone()),
            (OPT_MTU, net.mtu.to_string()),
        ]),
        labels: net.labels.clone(),
    }
}

pub fn inspect(root: &Path, args: InspectArgs) -> anyhow::Result<i32> {
    let store = open_store(root)?;
    let mut out = Vec::new();
    let mut failed = false;
    for query in &args.networks {
        let found = store
            .find(query)
            .and_then(|net| Ok((store.endpoints(&net.name)?, net)))
            .map_err(|e| named(query, e));
        match found {
            Ok((endpoints, net)) => out.push(inspect_json(&net, &endpoints)),
            Err(e) => {
                eprintln!("dockmaster: {e:#}");
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if failed { 1 } else { 0 })
}

// ---- rm / prune --------------------------------------------------------------------------

/// Removes `net`'s record (refused while containers are attached) and deletes its bridge.
/// The caller re-applies the host state.
fn remove_one(guard: &StoreGuard, net: &NetworkConfig) -> anyhow::Result<()> {
    if net.name == DEFAULT_NETWORK {
        bail!("network {DEFAULT_NETWORK} is predefined and cannot be removed");
    }
    guard
        .remove_network(&net.name)
        .map_err(|e| named(&net.name, e))?;
    link::delete_bridge(&net.bridge)
        .with_context(|| format!("network {}: delete bridge {}", net.name, net.bridge))?;
    Ok(())
}

pub fn rm(root: &Path, args: RmArgs) -> anyhow::Result<i32> {
    let store = open_store(root)?;
    let guard = store.lock()?;
    let mut failed = false;
    let mut changed = false;
    for query in &args.networks {
        let net = match guard.find(query) {
            Ok(net) => net,
            Err(StoreError::NetworkNotFound(_)) if args.force => continue,
            Err(e) => {
                eprintln!("dockmaster: {:#}", named(query, e));
                failed = true;
                continue;
            }
        };
        // A record removed with its bridge still in place changes the host state too.
        let result = remove_one(&guard, &net);
        changed |= guard.get(&net.name).is_err();
        match result {
            Ok(()) => println!("{query}"),
            Err(e) => {
                eprintln!("dockmaster: {e:#}");
                failed = true;
            }
        }
    }
    if changed {
        manager::apply_host_state(&guard).context("re-apply host network state")?;
    }
    Ok(if failed { 1 } else { 0 })
}

pub fn prune(root: &Path, args: PruneArgs) -> anyhow::Result<i32> {
    if !args.force
        && !super::confirm(
            "WARNING! This will remove all custom networks not used by at least one container.\n\
             Are you sure you want to continue?",
        )?
    {
        return Ok(0);
    }
    let store = open_store(root)?;
    let guard = store.lock()?;
    let mut removed = Vec::new();
    let mut failed = false;
    for net in guard.list()? {
        if net.name == DEFAULT_NETWORK || !guard.endpoints(&net.name)?.is_empty() {
            continue;
        }
        let result = remove_one(&guard, &net);
        if guard.get(&net.name).is_err() {
            removed.push(net.name.clone());
        }
        if let Err(e) = result {
            eprintln!("dockmaster: {e:#}");
            failed = true;
        }
    }
    if !removed.is_empty() {
        manager::apply_host_state(&guard).context("re-apply host network state")?;
        println!("Deleted Networks:");
        for name in &removed {
            println!("{name}");
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::model::{bridge_name, mac_for, veth_name};

    fn args(name: &str) -> CreateArgs {
        CreateArgs {
            name: name.into(),
            driver: DRIVER.into(),
            subnet: None,
            gateway: None,
            ip_range: None,
            internal: false,
            opts: Vec::new(),
            labels: Vec::new(),
        }
    }

    #[test]
    fn create_options_become_a_spec() {
        let mut a = args("front");
        a.subnet = Some("10.5.0.0/16".into());
        a.gateway = Some("10.5.0.254".into());
        a.ip_range = Some("10.5.1.0/24".into());
        a.internal = true;
        a.opts = vec![format!("{OPT_MTU}=1400")];
        a.labels = vec!["a=1".into(), "b".into(), "a=2".into(), "c=x=y".into()];
        let spec = spec_from_args(&a).unwrap();
        assert_eq!(spec.name, "front");
        assert_eq!(spec.subnet, Some("10.5.0.0/16".parse().unwrap()));
        assert_eq!(spec.gateway, Some(Ipv4Addr::new(10, 5, 0, 254)));
        assert_eq!(spec.ip_range, Some("10.5.1.0/24".parse().unwrap()));
        assert!(spec.internal);
        assert_eq!(spec.mtu, Some(1400));
        let labels: Vec<(&str, &str)> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, vec![("a", "2"), ("b", ""), ("c", "x=y")]);
        assert_eq!(spec_from_args(&args("x")).unwrap().mtu, None);
    }

    #[test]
    fn bad_create_options_are_refused_naming_the_network() {
        type Edit = Box<dyn Fn(&mut CreateArgs)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|a| a.driver = "overlay".into()),
                "driver \"overlay\" is not supported",
            ),
            (
                Box::new(|a| a.subnet = Some("10.0.0.0".into())),
                "invalid --subnet",
            ),
            (
                Box::new(|a| a.subnet = Some("fd00::/64".into())),
                "IPv6 is not supported",
            ),
            (
                Box::new(|a| a.gateway = Some("10.0.0.300".into())),
                "invalid --gateway",
            ),
            (
                Box::new(|a| a.gateway = Some("::1".into())),
                "IPv6 is not supported",
            ),
            (
                Box::new(|a| a.ip_range = Some("x".into())),
                "invalid --ip-range",
            ),
            (
                Box::new(|a| a.opts = vec![format!("{OPT_MTU}=9")]),
                "expected 68 to 65535",
            ),
            (
                Box::new(|a| a.opts = vec![format!("{OPT_MTU}=abc")]),
                "expected 68 to 65535",
            ),
            (
                Box::new(|a| a.opts = vec!["foo=1".into()]),
                "unsupported driver option \"foo\"",
            ),
            (
                Box::new(|a| a.opts = vec![format!("{OPT_BRIDGE_NAME}=br0")]),
                "not supported",
            ),
        ];
        for (edit, expected) in cases {
            let mut a = args("net1");
            edit(&mut a);
            let err = spec_from_args(&a).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(err.contains("net1"), "{err}");
        }
        let mut a = args("net1");
        a.labels = vec!["=v".into()];
        let err = spec_from_args(&a).unwrap_err().to_string();
        assert!(err.contains("invalid --label \"=v\""), "{err}");
        let err = spec_from_args(&args(DEFAULT_NETWORK))
            .unwrap_err()
            .to_string();
        assert!(err.contains("predefined"), "{err}");
    }

    #[test]
    fn inspect_has_dockers_shape() {
        let id = "ab".repeat(32);
        let net = NetworkConfig {
            name: "front".into(),
            bridge: bridge_name(&id),
            id: id.clone(),
            subnet: "10.5.0.0/16".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 5, 0, 1),
            ip_range: Some("10.5.1.0/24".parse().unwrap()),
            internal: true,
            mtu: 1400,
            labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
            created: "2024-05-01T10:00:00.000000001Z".into(),
        };
        let cid = "c".repeat(64);
        let ip = Ipv4Addr::new(10, 5, 1, 2);
        let endpoint = Endpoint {
            container_id: cid.clone(),
            container_name: "web".into(),
            network: "front".into(),
            ip,
            mac: mac_for(ip),
            ifname: "eth0".into(),
            host_veth: veth_name(&cid, "front"),
            aliases: vec![],
            ports: vec![],
            dns: vec![],
        };
        let v = serde_json::to_value(inspect_json(&net, &[endpoint])).unwrap();
        assert_eq!(v["Name"], "front");
        assert_eq!(v["Id"], id);
        assert_eq!(v["Created"], "2024-05-01T10:00:00.000000001Z");
        assert_eq!(v["Scope"], "local");
        assert_eq!(v["Driver"], "bridge");
        assert_eq!(v["EnableIPv6"], false);
        assert_eq!(v["Internal"], true);
        assert_eq!(v["IPAM"]["Driver"], "default");
        assert_eq!(
            v["IPAM"]["Config"],
            serde_json::json!([{"Subnet": "10.5.0.0/16", "Gateway": "10.5.0.1", "IPRange": "10.5.1.0/24"}])
        );
        let c = &v["Containers"][&cid];
        assert_eq!(c["Name"], "web");
        assert_eq!(c["MacAddress"], "02:42:0a:05:01:02");
        assert_eq!(c["IPv4Address"], "10.5.1.2/16");
        assert_eq!(c["IPv6Address"], "");
        let eid = c["EndpointID"].as_str().unwrap();
        assert_eq!(eid.len(), 64);
        assert_eq!(eid, endpoint_id(&id, &cid));
        assert_ne!(eid, endpoint_id(&"cd".repeat(32), &cid));
        assert_eq!(v["Options"][OPT_BRIDGE_NAME], net.bridge);
        assert_eq!(v["Options"][OPT_MTU], "1400");
        assert_eq!(v["Labels"], serde_json::json!({"k": "v"}));

        // Without an ip range the field is left out, as Docker does.
        let plain = NetworkConfig {
            ip_range: None,
            ..net
        };
        let v = serde_json::to_value(inspect_json(&plain, &[])).unwrap();
        assert_eq!(
            v["IPAM"]["Config"],
            serde_json::json!([{"Subnet": "10.5.0.0/16", "Gateway": "10.5.0.1"}])
        );
        assert_eq!(v["Containers"], serde_json::json!({}));
    }

    #[test]
    fn store_errors_name_the_network() {
        let e = named("front", StoreError::NetworkNotFound("front".into()));
        assert_eq!(e.to_string(), "network front not found");
        let e = named(
            "front",
            StoreError::InvalidInput {
                what: "mtu",
                value: "1".into(),
                reason: "expected 68 to 65535",
            },
        );
        assert_eq!(
            format!("{e:#}"),
            "network front: invalid mtu \"1\": expected 68 to 65535"
        );
        assert_eq!(labels_text(&BTreeMap::new()), "");
        assert_eq!(short_id(&"ab".repeat(32)), "abababababab");
    }
}
