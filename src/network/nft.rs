//! dockmaster's nftables table: published ports (DNAT), egress masquerade, hairpin NAT,
//! isolation between networks, and DNS on the gateways, all computed from the stored
//! networks and endpoints and replaced as a whole in one `nft` transaction.
//!
//! One table, `ip dockmaster`, and nothing else is ever touched. IPv4 only: networks have
//! IPv4 subnets and published ports IPv4 host addresses; IPv6 traffic is not NATed.
//!
//! The ruleset is generated as nft's text syntax and fed to `nft -f -` rather than built with
//! the `nftables` crate's JSON schema: the text is what `nft list table ip dockmaster`
//! prints, so what we generate, what tests assert on, what logs show and what an operator
//! reads are the same language; every rule is one readable line (the JSON form of
//! `fib daddr type local` or `ct status dnat` is a dozen nested objects). The only strings
//! not typed by construction are interface names (checked to be plain interface names) and
//! comments (reduced to a safe character set), so nothing user-controlled can change the
//! script's structure.
//!
//! Verdicts are per base chain: an `accept` here does not override a `drop` in another
//! table's chain on the same hook. When another firewall (a host's own nftables or iptables
//! rules) has a forward chain with a drop policy, container egress and published ports only
//! work once that firewall accepts traffic from and to the `dm-*` bridges; dockmaster cannot
//! and does not change other tables.
//!
//! Ordering for the caller: create bridges (and address them) first, then
//! [`apply_sysctls`] with [`required_sysctls`] (per-interface paths exist only once the
//! interface does), then [`apply`]. Re-apply after every endpoint or network change, and
//! the sysctls also when an uplink appears, or after anyone writes `net.ipv4.ip_forward`
//! (writing it resets every interface's forwarding value).
//!
//! What the rules rely on, measured with real traffic in tests/network_nft.rs:
//! - the host reaches ports published on 0.0.0.0 or 127.0.0.1 through 127.0.0.1 only with
//!   `route_localnet=1` on the container's bridge (the loopback source is masqueraded to the
//!   gateway on the way out); the input chain then drops 127/8 traffic coming in from
//!   bridges, without which a container that routes 127/8 to its gateway reaches sockets the
//!   host bound to 127.0.0.1 (CVE-2020-8558);
//! - hairpin (a container to a published port of its own network through the host address)
//!   needs the masquerade when br_netfilter is off, and hairpin mode on the bridge port when
//!   br_netfilter is on and the container reaches its own port (the frame leaves by the
//!   port it came in by): set hairpin mode on every host-side veth;
//! - forwarding is switched on per receiving interface (bridges and uplinks), the
//!   namespace-wide `net.ipv4.ip_forward` is left alone.
//!
//! Not handled: conntrack entries outlive a rule change, so a UDP flow (same addresses and
//! ports) that was being DNATed to a removed container keeps going to its old address until
//! the entry times out (30 s unanswered, 120 s once answered); TCP connections are new flows.

use std::collections::BTreeSet;
use std::io::{self, Read as _, Write as _};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::model::{Endpoint, NetworkConfig, PortMapping, Proto, IFNAME_MAX};
use super::ports::Shown;
use crate::error::{Categorized, Category};

/// The table's family and name.
pub const FAMILY: &str = "ip";
pub const TABLE: &str = "dockmaster";

/// nft refuses longer comments.
const COMMENT_MAX: usize = 120;
/// How much of nft's stderr an error keeps.
const STDERR_MAX: usize = 8 * 1024;
/// Bound on what `nft list` output is read (our table is a few lines per port).
const OUTPUT_MAX: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft binary not found in PATH, /usr/sbin or /sbin")]
    NftMissing,
    #[error("running {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("nft {operation} failed: {stderr}")]
    Failed {
        operation: &'static str,
        stderr: String,
    },
    #[error("interface name {name:?} of network {network} is not a plain interface name")]
    BadInterface { network: String, name: String },
    #[error("refusing to write {path}: not a network sysctl under /proc/sys/net")]
    BadSysctl { path: PathBuf },
    #[error("writing sysctl {path}: {source}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Categorized for NftError {
    fn category(&self) -> Category {
        match self {
            NftError::BadInterface { .. } | NftError::BadSysctl { .. } => Category::Invalid,
            NftError::NftMissing
            | NftError::Spawn { .. }
            | NftError::Failed { .. }
            | NftError::Sysctl { .. }
            | NftError::Read { .. } => Category::Internal,
        }
    }
}

/// An interface name safe to put in the script and in a /proc/sys path.
fn plain_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A comment reduced to characters that cannot end or escape nft's quoted string.
fn comment(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " _-.:/>(),".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(COMMENT_MAX);
    format!("comment \"{out}\"")
}

/// `"a"` or `{ "a", "b" }` (duplicates dropped: nft refuses them in a set).
fn quoted_set<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut items: Vec<String> = Vec::new();
    for name in names {
        let item = format!("\"{name}\"");
        if !items.contains(&item) {
            items.push(item);
        }
    }
    if items.len() == 1 {
        items.into_iter().next().unwrap_or_default()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

fn proto_kw(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// One DNAT rule's worth of facts.
struct Published<'a> {
    network: &'a NetworkConfig,
    endpoint: &'a Endpoint,
    mapping: PortMapping,
}

/// What the ruleset is computed from, checked and in a stable order.
struct State<'a> {
    /// Sorted by name.
    networks: Vec<&'a NetworkConfig>,
    published: Vec<Published<'a>>,
}

impl<'a> State<'a> {
    fn new(
        networks: &'a [NetworkConfig],
        endpoints: &'a [Endpoint],
    ) -> Result<State<'a>, NftError> {
        let mut nets: Vec<&NetworkConfig> = networks.iter().collect();
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        nets.dedup_by(|a, b| a.name == b.name);
        for net in &nets {
            if !plain_ifname(&net.bridge) {
                return Err(NftError::BadInterface {
                    network: net.name.clone(),
                    name: net.bridge.clone(),
                });
            }
        }
        let mut eps: Vec<&Endpoint> = endpoints.iter().collect();
        eps.sort_by(|a, b| {
            (&a.network, &a.container_name, &a.container_id).cmp(&(
                &b.network,
                &b.container_name,
                &b.container_id,
            ))
        });
        let mut published: Vec<Published> = Vec::new();
        for ep in eps {
            let Some(network) = nets.iter().copied().find(|n| n.name == ep.network) else {
                if !ep.ports.is_empty() {
                    tracing::warn!(
                        container = %ep.container_name,
                        network = %ep.network,
                        "endpoint of an unknown network: its ports are not published"
                    );
                }
                continue;
            };
            if network.internal {
                // Internal networks have no published ports (Compose `internal: true`).
                continue;
            }
            for mapping in &ep.ports {
                if let Some(other) = published
                    .iter()
                    .find(|p| super::ports::overlaps(&p.mapping, mapping))
                {
                    tracing::warn!(
                        container = %ep.container_name,
                        holder = %other.endpoint.container_name,
                        mapping = %Shown(*mapping),
                        "host port published twice: the first claim wins"
                    );
                    continue;
                }
                published.push(Published {
                    network,
                    endpoint: ep,
                    mapping: *mapping,
                });
            }
        }
        Ok(State {
            networks: nets,
            published,
        })
    }

    fn bridges(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.networks.iter().map(|n| n.bridge.as_str())
    }

    fn external(&self) -> impl Iterator<Item = &'a NetworkConfig> + '_ {
        self.networks.iter().copied().filter(|n| !n.internal)
    }
}

fn subnet(net: &NetworkConfig) -> Ipv4Net {
    net.subnet.trunc()
}

/// Whether a mapping is reachable through the host's loopback (so its bridge needs
/// route_localnet and the loopback masquerade).
fn via_loopback(m: &PortMapping) -> bool {
    m.host_ip.is_unspecified() || m.host_ip.is_loopback()
}

/// The table's definition (`table ip dockmaster { ... }`) for these networks and
/// endpoints. Endpoints of networks not in `networks` and ports on internal networks are
/// left out; of two endpoints claiming the same host port, the first in (network,
/// container name, id) order wins (callers refuse such conflicts with
/// [`super::ports::check_conflicts`] before storing them).
pub fn ruleset(networks: &[NetworkConfig], endpoints: &[Endpoint]) -> Result<String, NftError> {
    let state = State::new(networks, endpoints)?;
    let mut s = String::new();
    let mut line = |indent: usize, text: &str| {
        for _ in 0..indent {
            s.push('\t');
        }
        s.push_str(text);
        s.push('\n');
    };
    let all_bridges = quoted_set(state.bridges());
    let has_bridges = !state.networks.is_empty();

    line(0, &format!("table {FAMILY} {TABLE} {{"));
    line(
        1,
        &comment("managed by dockmaster: replaced as a whole on every change"),
    );

    // Published ports: one DNAT rule per mapping, jumped to for packets addressed to the
    // host (from other hosts, from containers, and from the host itself).
    line(0, "");
    line(1, "chain published {");
    for p in &state.published {
        let m = &p.mapping;
        let daddr = if m.host_ip.is_unspecified() {
            String::new()
        } else {
            format!("ip daddr {} ", m.host_ip)
        };
        line(
            2,
            &format!(
                "{daddr}{} dport {} counter dnat to {}:{} {}",
                proto_kw(m.proto),
                m.host_port,
                p.endpoint.ip,
                m.container_port,
                comment(&format!(
                    "{} on {}: {}",
                    p.endpoint.container_name,
                    p.network.name,
                    Shown(*m)
                ))
            ),
        );
    }
    line(1, "}");

    line(0, "");
    line(1, "chain prerouting {");
    line(
        2,
        "type nat hook prerouting priority dstnat; policy accept;",
    );
    // Packets from other hosts (or containers) to 127/8 are martians; DNATing them would
    // make loopback-only ports reachable from the network (Docker's CVE-2021-21285-like bug).
    line(
        2,
        &format!(
            "ip daddr 127.0.0.0/8 return {}",
            comment("loopback addresses are published only to the host itself")
        ),
    );
    let mut gateways: Vec<String> = Vec::new();
    for net in &state.networks {
        let gateway = net.gateway.to_string();
        if !gateways.contains(&gateway) {
            gateways.push(gateway);
        }
    }
    if !gateways.is_empty() {
        let set = if gateways.len() == 1 {
            gateways[0].clone()
        } else {
            format!("{{ {} }}", gateways.join(", "))
        };
        line(
            2,
            &format!(
                "ip daddr {set} meta l4proto {{ tcp, udp }} th dport 53 return {}",
                comment("dns on the gateways is dockmaster's, never a published port")
            ),
        );
    }
    line(2, "fib daddr type local jump published");
    line(1, "}");

    line(0, "");
    line(1, "chain output {");
    // nft accepts the name `dstnat` on prerouting only; -100 is its value.
    line(2, "type nat hook output priority -100; policy accept;");
    line(
        2,
        &format!(
            "fib daddr type local jump published {}",
            comment("published ports from the host itself, 127.0.0.1 included")
        ),
    );
    line(1, "}");

    line(0, "");
    line(1, "chain postrouting {");
    line(
        2,
        "type nat hook postrouting priority srcnat; policy accept;",
    );
    for net in state.external() {
        let bridge = &net.bridge;
        let name = &net.name;
        let sub = subnet(net);
        if state
            .published
            .iter()
            .any(|p| p.network.name == net.name && via_loopback(&p.mapping))
        {
            // The host's 127.0.0.1 cannot be a source on the bridge: the container could
            // not answer it. The gateway address stands in (needs route_localnet).
            line(
                2,
                &format!(
                    "oifname \"{bridge}\" ip saddr 127.0.0.0/8 counter masquerade {}",
                    comment(&format!("network {name}: host loopback to published ports"))
                ),
            );
        }
        // A container reaching a published port of its own network through the host
        // address: without this the answer would go straight back, bypassing the NAT.
        line(
            2,
            &format!(
                "oifname \"{bridge}\" ip saddr {sub} ct status dnat counter masquerade {}",
                comment(&format!("network {name}: hairpin to published ports"))
            ),
        );
        line(
            2,
            &format!(
                "ip saddr {sub} oifname != {all_bridges} counter masquerade {}",
                comment(&format!("network {name}: egress"))
            ),
        );
    }
    line(1, "}");

    line(0, "");
    line(1, "chain forward {");
    line(
        2,
        "type filter hook forward priority filter; policy accept;",
    );
    line(2, "ct state established,related accept");
    for net in state.networks.iter().filter(|n| n.internal) {
        let bridge = &net.bridge;
        let text = comment(&format!("network {} is internal", net.name));
        line(
            2,
            &format!("iifname \"{bridge}\" oifname != \"{bridge}\" counter drop {text}"),
        );
        line(
            2,
            &format!("oifname \"{bridge}\" iifname != \"{bridge}\" counter drop {text}"),
        );
    }
    let external: Vec<&str> = state.external().map(|n| n.bridge.as_str()).collect();
    if !external.is_empty() {
        line(
            2,
            &format!(
                "oifname {} ct status dnat counter accept {}",
                quoted_set(external.iter().copied()),
                comment("published ports")
            ),
        );
    }
    for net in &state.networks {
        line(
            2,
            &format!(
                "iifname \"{0}\" oifname \"{0}\" accept {1}",
                net.bridge,
                comment(&format!("within network {}", net.name))
            ),
        );
    }
    if has_bridges {
        line(
            2,
            &format!(
                "iifname {all_bridges} oifname {all_bridges} counter drop {}",
                comment("isolation between networks")
            ),
        );
    }
    if !external.is_empty() {
        line(
            2,
            &format!(
                "iifname {} accept {}",
                quoted_set(external.iter().copied()),
                comment("egress")
            ),
        );
    }
    if has_bridges {
        line(
            2,
            &format!(
                "oifname {all_bridges} counter drop {}",
                comment("containers are reached from outside only through published ports")
            ),
        );
    }
    line(1, "}");

    line(0, "");
    line(1, "chain input {");
    line(2, "type filter hook input priority filter; policy accept;");
    line(2, "ct state established,related accept");
    if has_bridges {
        // route_localnet on a bridge would otherwise let its containers reach services
        // the host binds to 127.0.0.1 (CVE-2020-8558).
        line(
            2,
            &format!(
                "iifname {all_bridges} ip daddr 127.0.0.0/8 counter drop {}",
                comment("containers never reach the loopback of the host")
            ),
        );
    }
    for net in &state.networks {
        line(
            2,
            &format!(
                "ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 iifname != {{ \"{}\", \"lo\" }} counter drop {}",
                net.gateway,
                net.bridge,
                comment(&format!("dns of network {} only from its own bridge", net.name))
            ),
        );
    }
    line(1, "}");
    line(0, "}");
    Ok(s)
}

/// The whole transaction [`apply`] feeds to `nft -f -`: create the table if missing (so the
/// delete cannot fail), delete it, define it anew. nft commits a file as one kernel
/// transaction: readers see the old table or the new one, never a partial one.
pub fn transaction(networks: &[NetworkConfig], endpoints: &[Endpoint]) -> Result<String, NftError> {
    let body = ruleset(networks, endpoints)?;
    Ok(format!(
        "table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{body}"
    ))
}

/// Replaces dockmaster's table in the calling thread's network namespace.
pub fn apply(networks: &[NetworkConfig], endpoints: &[Endpoint]) -> Result<(), NftError> {
    let script = transaction(networks, endpoints)?;
    run_nft("apply", &["-f", "-"], Some(&script)).map(drop)
}

/// Removes dockmaster's table (nothing if it is absent), atomically.
pub fn delete_table() -> Result<(), NftError> {
    let script = format!("table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n");
    run_nft("delete table", &["-f", "-"], Some(&script)).map(drop)
}

/// The table as `nft list table ip dockmaster` prints it, `None` when absent.
pub fn current_table() -> Result<Option<String>, NftError> {
    let tables = run_nft("list tables", &["list", "tables", FAMILY], None)?;
    let wanted = format!("table {FAMILY} {TABLE}");
    if !tables.lines().any(|l| l.trim() == wanted) {
        return Ok(None);
    }
    run_nft("list table", &["list", "table", FAMILY, TABLE], None).map(Some)
}

/// Checks a script with `nft -c` (parsed and validated by the kernel, nothing committed).
pub fn check(script: &str) -> Result<(), NftError> {
    run_nft("check", &["-c", "-f", "-"], Some(script)).map(drop)
}

/// The `nft` program: the first in PATH, else /usr/sbin/nft or /sbin/nft (often missing
/// from a non-root PATH).
pub fn nft_binary() -> Result<PathBuf, NftError> {
    let from_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nft"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nft"), PathBuf::from("/sbin/nft")])
        .find(|p| p.is_file())
        .ok_or(NftError::NftMissing)
}

fn truncated(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    let mut text = text.trim().to_string();
    if bytes.len() > max {
        text.push_str(" ...");
    }
    text
}

/// Runs nft (in the calling thread's network namespace: a child inherits it) and returns
/// its stdout; a failure carries its stderr.
fn run_nft(
    operation: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NftError> {
    let path = nft_binary()?;
    let spawn_err = |source| NftError::Spawn {
        path: path.clone(),
        source,
    };
    let mut child = Command::new(&path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let mut child_stdin = child.stdin.take();
    let mut child_stdout = child.stdout.take();
    let mut child_stderr = child.stderr.take();
    // Feed stdin and drain both outputs at once: nft may answer before reading all input.
    let (stdout, stderr, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| match (child_stdin.take(), stdin) {
            (Some(mut pipe), Some(text)) => pipe.write_all(text.as_bytes()),
            _ => Ok(()),
        });
        let errors = scope.spawn(|| {
            let mut buf = Vec::new();
            if let Some(pipe) = child_stderr.take() {
                // Read past the cap (and drop it) so nft never blocks on a full pipe.
                let _ = pipe.take(OUTPUT_MAX).read_to_end(&mut buf);
            }
            buf
        });
        let mut out = Vec::new();
        let read = match child_stdout.take() {
            Some(pipe) => pipe.take(OUTPUT_MAX).read_to_end(&mut out).map(drop),
            None => Ok(()),
        };
        let written = writer.join().unwrap_or(Ok(()));
        let err = errors.join().unwrap_or_default();
        (read.map(|_| out), err, written)
    });
    let status = child.wait().map_err(spawn_err)?;
    if !status.success() {
        return Err(NftError::Failed {
            operation,
            stderr: format!("{status}: {}", truncated(&stderr, STDERR_MAX)),
        });
    }
    let stdout = stdout.map_err(spawn_err)?;
    // A broken pipe on stdin with a successful exit cannot happen for -f -; report anyway.
    written.map_err(spawn_err)?;
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

fn conf_path(ifname: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{ifname}/{key}"))
}

/// The sysctls the ruleset relies on, for the network namespace it is applied in:
/// - `net.ipv4.conf.<bridge>.forwarding=1` for every non-internal network (containers'
///   packets are routed out of the bridge, and hairpin traffic back into it);
/// - `net.ipv4.conf.<uplink>.forwarding=1` for each of `uplinks` when any non-internal
///   network exists (published ports and egress replies come in there);
/// - `net.ipv4.conf.<bridge>.route_localnet=1` for networks with ports published on all
///   addresses or on a loopback address (the host's 127.0.0.1 is the source, then
///   masqueraded, of packets to such ports).
///
/// IPv4 forwarding is per receiving interface, so the global `net.ipv4.ip_forward` (which
/// rewrites every interface's value when written) stays as it is. Internal networks need
/// none: nothing is routed in or out of them. Values are only ever turned on: a bridge
/// goes away with its network, and leaving an uplink forwarding is harmless with the
/// forward chain's drops.
pub fn required_sysctls(
    networks: &[NetworkConfig],
    endpoints: &[Endpoint],
    uplinks: &[String],
) -> Vec<(PathBuf, String)> {
    let mut out: BTreeSet<(PathBuf, String)> = BTreeSet::new();
    let on = || "1".to_string();
    let external: Vec<&NetworkConfig> = networks
        .iter()
        .filter(|n| !n.internal && plain_ifname(&n.bridge))
        .collect();
    for net in &external {
        out.insert((conf_path(&net.bridge, "forwarding"), on()));
        let loopback = endpoints
            .iter()
            .filter(|e| e.network == net.name)
            .flat_map(|e| &e.ports)
            .any(via_loopback);
        if loopback {
            out.insert((conf_path(&net.bridge, "route_localnet"), on()));
        }
    }
    if !external.is_empty() {
        for uplink in uplinks.iter().filter(|u| plain_ifname(u)) {
            out.insert((conf_path(uplink, "forwarding"), on()));
        }
    }
    out.into_iter().collect()
}

/// Writes sysctls through /proc/sys, which resolves to the calling thread's network
/// namespace. Only paths under /proc/sys/net/ are accepted.
pub fn apply_sysctls(settings: &[(PathBuf, String)]) -> Result<(), NftError> {
    for (path, value) in settings {
        let safe = path.starts_with("/proc/sys/net/")
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !safe {
            return Err(NftError::BadSysctl { path: path.clone() });
        }
        std::fs::write(path, value.as_bytes()).map_err(|source| NftError::Sysctl {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Interfaces that carry IPv4 routes in the calling thread's network namespace, except
/// loopback and dockmaster's own: where published ports and egress replies arrive, so
/// where [`required_sysctls`] turns forwarding on.
pub fn uplink_interfaces() -> Result<Vec<String>, NftError> {
    // thread-self: /proc/self/net would show the main thread's namespace.
    let path = Path::new("/proc/thread-self/net/route");
    let text = std::fs::read_to_string(path).map_err(|source| NftError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_route_interfaces(&text))
}

fn parse_route_interfaces(table: &str) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for row in table.lines().skip(1) {
        if let Some(name) = row.split_whitespace().next() {
            if name != "lo" && !super::model::is_ours(name) && plain_ifname(name) {
                names.insert(name.to_string());
            }
        }
    }
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::network::model::{bridge_name, mac_for, veth_name};

    fn network(name: &str, subnet: &str, internal: bool) -> NetworkConfig {
        let id = format!("{:0>64}", hex::encode(name));
        let subnet: Ipv4Net = subnet.parse().unwrap();
        NetworkConfig {
            name: name.into(),
            bridge: bridge_name(&id),
            id,
            gateway: subnet.hosts().next().unwrap(),
            subnet,
            ip_range: None,
            internal,
            mtu: 1500,
            labels: BTreeMap::new(),
            created: "2024-01-01T00:00:00Z".into(),
        }
    }

    fn endpoint(
        name: &str,
        net: &NetworkConfig,
        host: u8,
        ports: &[(&str, u16, u16, Proto)],
    ) -> Endpoint {
        let id = format!("{:0>64}", hex::encode(name));
        let o = net.subnet.network().octets();
        let ip = Ipv4Addr::new(o[0], o[1], o[2], host);
        Endpoint {
            host_veth: veth_name(&id, &net.name),
            container_id: id,
            container_name: name.into(),
            network: net.name.clone(),
            ip,
            mac: mac_for(ip),
            ifname: "eth0".into(),
            aliases: vec![],
            ports: ports
                .iter()
                .map(|&(host_ip, host_port, container_port, proto)| PortMapping {
                    host_ip: host_ip.parse().unwrap(),
                    host_port,
                    container_port,
                    proto,
                })
                .collect(),
            dns: vec![],
        }
    }

    pub(super) fn sample() -> (Vec<NetworkConfig>, Vec<Endpoint>) {
        let front = network("front", "10.88.0.0/24", false);
        let back = network("back", "10.89.0.0/24", false);
        let vault = network("vault", "10.90.0.0/24", true);
        let endpoints = vec![
            endpoint(
                "web",
                &front,
                2,
                &[
                    ("0.0.0.0", 8080, 80, Proto::Tcp),
                    ("127.0.0.1", 8081, 81, Proto::Tcp),
                ],
            ),
            endpoint("dns", &front, 3, &[("0.0.0.0", 5353, 53, Proto::Udp)]),
            endpoint("api", &back, 2, &[("192.0.2.1", 9000, 9000, Proto::Tcp)]),
            endpoint("secret", &vault, 2, &[("0.0.0.0", 7000, 7000, Proto::Tcp)]),
        ];
        (vec![front, back, vault], endpoints)
    }

    fn rules_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
        text.lines()
            .map(str::trim)
            .filter(|l| l.contains(needle))
            .collect()
    }

    #[test]
    fn published_ports_become_dnat_rules_named_after_their_container() {
        let (nets, eps) = sample();
        let text = ruleset(&nets, &eps).unwrap();
        assert!(text.starts_with("table ip dockmaster {\n"), "{text}");
        let dnat = rules_with(&text, "dnat to");
        assert_eq!(
            dnat,
            [
                "ip daddr 192.0.2.1 tcp dport 9000 counter dnat to 10.89.0.2:9000 comment \"api on back: 192.0.2.1:9000->9000/tcp\"",
                "udp dport 5353 counter dnat to 10.88.0.3:53 comment \"dns on front: 0.0.0.0:5353->53/udp\"",
                "tcp dport 8080 counter dnat to 10.88.0.2:80 comment \"web on front: 0.0.0.0:8080->80/tcp\"",
                "ip daddr 127.0.0.1 tcp dport 8081 counter dnat to 10.88.0.2:81 comment \"web on front: 127.0.0.1:8081->81/tcp\"",
            ],
            "{text}"
        );
        // The internal network's port is not published.
        assert!(!text.contains("7000"), "{text}");
        // Reached from other hosts and from the host itself, never for 127/8 from outside.
        let pre = section(&text, "chain prerouting");
        assert!(pre.contains("ip daddr 127.0.0.0/8 return"), "{pre}");
        assert!(
            pre.trim_end()
                .ends_with("fib daddr type local jump published"),
            "{pre}"
        );
        assert!(pre.contains("ip daddr { 10.89.0.1, 10.88.0.1, 10.90.0.1 } meta l4proto { tcp, udp } th dport 53 return"), "{pre}");
        let out = section(&text, "chain output");
        assert!(out.contains("type nat hook output priority -100;"), "{out}");
        assert!(out.contains("fib daddr type local jump published"), "{out}");
    }

    /// The lines of one chain.
    fn section<'a>(text: &'a str, header: &str) -> &'a str {
        let start = text
            .find(header)
            .unwrap_or_else(|| panic!("{header} in {text}"));
        let rest = &text[start..];
        &rest[..rest.find("\n\t}").unwrap()]
    }

    #[test]
    fn nat_masquerades_egress_hairpin_and_host_loopback() {
        let (nets, eps) = sample();
        let text = ruleset(&nets, &eps).unwrap();
        let post = section(&text, "chain postrouting");
        let (front, back, vault) = (&nets[0].bridge, &nets[1].bridge, &nets[2].bridge);
        let all = format!("{{ \"{back}\", \"{front}\", \"{vault}\" }}");
        for (sub, name) in [("10.88.0.0/24", "front"), ("10.89.0.0/24", "back")] {
            assert!(
                post.contains(&format!("ip saddr {sub} oifname != {all} counter masquerade comment \"network {name}: egress\"")),
                "{post}"
            );
            assert!(
                post.contains(&format!("ip saddr {sub} ct status dnat counter masquerade")),
                "{post}"
            );
        }
        // Loopback masquerade only where a port is reachable through 127.0.0.1.
        assert_eq!(rules_with(post, "ip saddr 127.0.0.0/8").len(), 1, "{post}");
        assert!(
            post.contains(&format!(
                "oifname \"{front}\" ip saddr 127.0.0.0/8 counter masquerade"
            )),
            "{post}"
        );
        // Internal networks get no NAT at all.
        assert!(!post.contains("10.90.0.0"), "{post}");
    }

    #[test]
    fn forward_chain_isolates_networks_and_internal_ones() {
        let (nets, eps) = sample();
        let text = ruleset(&nets, &eps).unwrap();
        let fwd = section(&text, "chain forward");
        let (front, back, vault) = (&nets[0].bridge, &nets[1].bridge, &nets[2].bridge);
        let all = format!("{{ \"{back}\", \"{front}\", \"{vault}\" }}");
        let rules: Vec<&str> = fwd.lines().skip(2).map(str::trim).collect();
        let position = |needle: &str| {
            rules
                .iter()
                .position(|r| r.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} in {fwd}"))
        };
        let established = position("ct state established,related accept");
        let internal_out = position(&format!(
            "iifname \"{vault}\" oifname != \"{vault}\" counter drop"
        ));
        let internal_in = position(&format!(
            "oifname \"{vault}\" iifname != \"{vault}\" counter drop"
        ));
        let dnat = position(&format!(
            "oifname {{ \"{back}\", \"{front}\" }} ct status dnat counter accept"
        ));
        let within = position(&format!("iifname \"{front}\" oifname \"{front}\" accept"));
        let isolation = position(&format!("iifname {all} oifname {all} counter drop"));
        let egress = position(&format!("iifname {{ \"{back}\", \"{front}\" }} accept"));
        let inbound = position(&format!("oifname {all} counter drop"));
        // Order matters: internal drops before the published-port accept (an internal
        // container must not reach another network through the host address), isolation
        // before egress, the catch-all inbound drop last.
        assert!(established < internal_out && internal_out < dnat && internal_in < dnat);
        assert!(dnat < within && within < isolation && isolation < egress && egress < inbound);
        assert_eq!(inbound, rules.len() - 1);
    }

    #[test]
    fn input_chain_guards_loopback_and_dns() {
        let (nets, eps) = sample();
        let text = ruleset(&nets, &eps).unwrap();
        let input = section(&text, "chain input");
        let front = &nets[0].bridge;
        assert!(
            input.contains("ip daddr 127.0.0.0/8 counter drop"),
            "{input}"
        );
        assert!(
            input.contains(&format!(
                "ip daddr 10.88.0.1 meta l4proto {{ tcp, udp }} th dport 53 iifname != {{ \"{front}\", \"lo\" }} counter drop comment \"dns of network front only from its own bridge\""
            )),
            "{input}"
        );
        assert_eq!(rules_with(input, "th dport 53").len(), 3);
    }

    #[test]
    fn empty_state_still_gives_a_valid_skeleton() {
        let text = ruleset(&[], &[]).unwrap();
        for chain in [
            "published",
            "prerouting",
            "output",
            "postrouting",
            "forward",
            "input",
        ] {
            assert!(text.contains(&format!("chain {chain} {{")), "{text}");
        }
        assert!(!text.contains("{ }") && !text.contains("\"\""), "{text}");
        assert!(
            !text.contains("dnat to") && !text.contains("masquerade"),
            "{text}"
        );
    }

    #[test]
    fn transaction_replaces_only_our_table() {
        let (nets, eps) = sample();
        let script = transaction(&nets, &eps).unwrap();
        let mut lines = script.lines();
        assert_eq!(lines.next(), Some("table ip dockmaster"));
        assert_eq!(lines.next(), Some("delete table ip dockmaster"));
        assert_eq!(lines.next(), Some("table ip dockmaster {"));
        // Every table statement names ours; nothing flushes the ruleset.
        for line in script.lines().filter(|l| {
            l.trim_start().starts_with("table") || l.contains("flush") || l.contains("delete")
        }) {
            assert!(line.contains("ip dockmaster"), "{line}");
        }
    }

    #[test]
    fn names_cannot_change_the_scripts_structure() {
        let (mut nets, mut eps) = sample();
        eps[0].container_name = "evil\" ; flush ruleset ; \"".into();
        let text = ruleset(&nets, &eps).unwrap();
        // The name stays inside one quoted comment: quotes pair up on every line and the
        // only lines mentioning flush are web's two DNAT rules.
        assert!(
            text.lines().all(|l| l.matches('"').count() % 2 == 0),
            "{text}"
        );
        let flush = rules_with(&text, "flush");
        assert_eq!(flush.len(), 2, "{text}");
        assert!(flush.iter().all(|r| r.contains("dport 808")), "{text}");
        assert!(
            text.contains("comment \"evil_ _ flush ruleset _ _ on front"),
            "{text}"
        );
        eps[0].container_name = "x".repeat(500);
        let text = ruleset(&nets, &eps).unwrap();
        assert!(text.lines().all(|l| l.len() < 300), "{text}");

        nets[0].bridge = "dm-\"x".into();
        let err = ruleset(&nets, &eps).unwrap_err();
        assert!(matches!(err, NftError::BadInterface { .. }), "{err}");
        assert_eq!(err.category(), Category::Invalid);
        nets[0].bridge = "a-very-long-interface-name".into();
        assert!(ruleset(&nets, &eps).is_err());
    }

    #[test]
    fn first_claim_of_a_host_port_wins() {
        let (nets, mut eps) = sample();
        let clash = endpoint("copy", &nets[0], 9, &[("127.0.0.1", 8080, 80, Proto::Tcp)]);
        eps.push(clash);
        let text = ruleset(&nets, &eps).unwrap();
        let rules = rules_with(&text, "dport 8080");
        assert_eq!(rules.len(), 1, "{text}");
        // "copy" sorts before "web" on the same network.
        assert!(rules[0].contains("copy on front"), "{text}");
    }

    #[test]
    fn unknown_networks_are_skipped() {
        let (nets, eps) = sample();
        let text = ruleset(&nets[1..], &eps).unwrap();
        assert!(
            !text.contains("web on front") && text.contains("api on back"),
            "{text}"
        );
    }

    #[test]
    fn sysctls_turn_on_forwarding_and_route_localnet_only_where_needed() {
        let (nets, eps) = sample();
        let uplinks = vec!["eth0".to_string(), "bad/name".to_string()];
        let got = required_sysctls(&nets, &eps, &uplinks);
        let (front, back) = (&nets[0].bridge, &nets[1].bridge);
        let mut want = vec![
            (format!("/proc/sys/net/ipv4/conf/{front}/forwarding"), "1"),
            (
                format!("/proc/sys/net/ipv4/conf/{front}/route_localnet"),
                "1",
            ),
            (format!("/proc/sys/net/ipv4/conf/{back}/forwarding"), "1"),
            ("/proc/sys/net/ipv4/conf/eth0/forwarding".to_string(), "1"),
        ];
        want.sort();
        let got: Vec<(String, &str)> = got
            .iter()
            .map(|(p, v)| (p.display().to_string(), v.as_str()))
            .collect();
        assert_eq!(got, want);
        // Only internal networks: nothing to route.
        assert!(required_sysctls(&nets[2..], &eps, &uplinks).is_empty());
    }

    #[test]
    fn apply_sysctls_refuses_paths_outside_proc_sys_net() {
        for path in [
            "/etc/passwd",
            "/proc/sys/kernel/panic",
            "/proc/sys/net/../kernel/x",
        ] {
            let err = apply_sysctls(&[(PathBuf::from(path), "1".into())]).unwrap_err();
            assert!(matches!(err, NftError::BadSysctl { .. }), "{path}: {err}");
        }
    }

    #[test]
    fn uplinks_come_from_the_routing_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            dm-0123456789ab\t0058000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            wlan0\t0003A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
        assert_eq!(parse_route_interfaces(table), ["eth0", "wlan0"]);
    }

    #[test]
    fn nft_is_found() {
        let path = nft_binary().unwrap();
        assert!(path.ends_with("nft"), "{}", path.display());
    }
}
