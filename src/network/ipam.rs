//! IPAM: choosing a network's subnet from address pools (avoiding other networks and every
//! route on the host), validating Compose's `subnet`/`gateway`/`ip_range`, and picking a
//! container's address inside a network. Pure logic: the store feeds it the state read under
//! its lock, and [`host_routes`] is the only function that reads anything.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::model::NetworkConfig;
use crate::error::{Categorized, Category};

/// The smallest network: network address, gateway, one container, broadcast.
pub const MAX_PREFIX_LEN: u8 = 30;

#[derive(Debug, Error)]
pub enum IpamError {
    #[error("invalid address pool {base} with size /{size}: {reason}")]
    InvalidPool {
        base: Ipv4Net,
        size: u8,
        reason: &'static str,
    },
    #[error("invalid subnet {subnet}: {reason}")]
    InvalidSubnet { subnet: Ipv4Net, reason: String },
    #[error("invalid gateway {gateway} for subnet {subnet}: {reason}")]
    InvalidGateway {
        gateway: Ipv4Addr,
        subnet: Ipv4Net,
        reason: &'static str,
    },
    #[error("invalid ip_range {ip_range} for subnet {subnet}: {reason}")]
    InvalidIpRange {
        ip_range: Ipv4Net,
        subnet: Ipv4Net,
        reason: String,
    },
    #[error("{option} needs an explicit subnet")]
    NeedsSubnet { option: &'static str },
    #[error("subnet {subnet} overlaps subnet {other_subnet} of network {other_network}")]
    Overlap {
        subnet: Ipv4Net,
        other_network: String,
        other_subnet: Ipv4Net,
    },
    #[error(
        "no free subnet left in the address pools ({pools}): every candidate overlaps a network \
         or a route of the host"
    )]
    PoolsExhausted { pools: String },
    #[error("address {address} is outside subnet {subnet} of network {network}")]
    OutsideSubnet {
        address: Ipv4Addr,
        network: String,
        subnet: Ipv4Net,
    },
    #[error("address {address} is the {what} of network {network}")]
    Reserved {
        address: Ipv4Addr,
        network: String,
        what: &'static str,
    },
    #[error(
        "address {address} on network {network} is already in use{}",
        .holder.as_ref().map(|h| format!(" by container {h}")).unwrap_or_default()
    )]
    InUse {
        address: Ipv4Addr,
        network: String,
        /// The container holding it, where the caller knows it.
        holder: Option<String>,
    },
    #[error("no free address left in {range} of network {network}")]
    Exhausted { network: String, range: Ipv4Net },
}

impl Categorized for IpamError {
    fn category(&self) -> Category {
        match self {
            IpamError::InvalidPool { .. }
            | IpamError::InvalidSubnet { .. }
            | IpamError::InvalidGateway { .. }
            | IpamError::InvalidIpRange { .. }
            | IpamError::NeedsSubnet { .. }
            | IpamError::OutsideSubnet { .. }
            | IpamError::Reserved { .. } => Category::Invalid,
            IpamError::Overlap { .. }
            | IpamError::PoolsExhausted { .. }
            | IpamError::InUse { .. }
            | IpamError::Exhausted { .. } => Category::Conflict,
        }
    }
}

/// An address pool like Docker's `default-address-pools` entries: `base` is split into
/// subnets with prefix length `size`, handed out in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPool", into = "RawPool")]
pub struct Pool {
    base: Ipv4Net,
    size: u8,
}

#[derive(Serialize, Deserialize)]
struct RawPool {
    base: Ipv4Net,
    size: u8,
}

impl TryFrom<RawPool> for Pool {
    type Error = IpamError;
    fn try_from(raw: RawPool) -> Result<Pool, IpamError> {
        Pool::new(raw.base, raw.size)
    }
}

impl From<Pool> for RawPool {
    fn from(pool: Pool) -> RawPool {
        RawPool {
            base: pool.base,
            size: pool.size,
        }
    }
}

impl Pool {
    pub fn new(base: Ipv4Net, size: u8) -> Result<Pool, IpamError> {
        let invalid = |reason| IpamError::InvalidPool { base, size, reason };
        if base.addr() != base.network() {
            return Err(invalid("the base has host bits set"));
        }
        if size < base.prefix_len() {
            return Err(invalid("the size is shorter than the base's prefix"));
        }
        if size > MAX_PREFIX_LEN {
            return Err(invalid(
                "subnets longer than /30 leave no address for a container",
            ));
        }
        Ok(Pool { base, size })
    }

    pub fn base(&self) -> Ipv4Net {
        self.base
    }

    pub fn size(&self) -> u8 {
        self.size
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} as /{}s", self.base, self.size)
    }
}

/// Docker's defaults: 172.17.0.0/16 to 172.31.0.0/16 as /16s, then 192.168.0.0/16 as /20s.
pub fn default_pools() -> Vec<Pool> {
    let mut pools: Vec<Pool> = (17..=31)
        .map(|b| Pool {
            base: Ipv4Net::new_assert(Ipv4Addr::new(172, b, 0, 0), 16),
            size: 16,
        })
        .collect();
    pools.push(Pool {
        base: Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
        size: 20,
    });
    pools
}

/// Whether two networks share at least one address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.network() <= b.broadcast() && b.network() <= a.broadcast()
}

/// The first subnet of the pools (in order) overlapping neither a network in `taken` nor a
/// route of the host (the default route aside, it overlaps everything).
pub fn pick_subnet(
    pools: &[Pool],
    taken: &[Ipv4Net],
    host_routes: &[Ipv4Net],
) -> Result<Ipv4Net, IpamError> {
    let blockers: Vec<Ipv4Net> = taken
        .iter()
        .chain(host_routes.iter().filter(|r| r.prefix_len() != 0))
        .map(Ipv4Net::trunc)
        .collect();
    for pool in pools {
        let step = 1u64 << (32 - u32::from(pool.size));
        let end = u64::from(u32::from(pool.base.broadcast())) + 1;
        let mut candidate = u64::from(u32::from(pool.base.network()));
        while candidate + step <= end {
            let Ok(addr) = u32::try_from(candidate) else {
                break;
            };
            let Ok(net) = Ipv4Net::new(Ipv4Addr::from(addr), pool.size) else {
                break;
            };
            let past_blockers = blockers
                .iter()
                .filter(|b| overlaps(&net, b))
                .map(|b| u64::from(u32::from(b.broadcast())) + 1)
                .max();
            match past_blockers {
                None => return Ok(net),
                // Jump over the blocker at once: a /8 route must not cost 65536 iterations.
                Some(past) => candidate = (candidate + step).max(past.div_ceil(step) * step),
            }
        }
    }
    Err(IpamError::PoolsExhausted {
        pools: pools
            .iter()
            .map(Pool::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The IPAM options of a network as the user wrote them (Compose `ipam.config[0]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpamRequest {
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
}

/// The addressing a new network gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamPlan {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Net>,
}

/// Validates the user's options against the existing networks, or picks a free subnet from
/// the pools when none is given. The gateway defaults to the subnet's first address.
/// A user-chosen subnet may overlap a host route (the user asked for it, as with Docker),
/// never another network.
pub fn plan(
    request: &IpamRequest,
    pools: &[Pool],
    existing: &[NetworkConfig],
    host_routes: &[Ipv4Net],
) -> Result<IpamPlan, IpamError> {
    let subnet = match request.subnet {
        Some(subnet) => {
            check_subnet(subnet)?;
            if let Some(other) = existing.iter().find(|n| overlaps(&subnet, &n.subnet)) {
                return Err(IpamError::Overlap {
                    subnet,
                    other_network: other.name.clone(),
                    other_subnet: other.subnet,
                });
            }
            subnet
        }
        None if request.gateway.is_some() => {
            return Err(IpamError::NeedsSubnet { option: "gateway" })
        }
        None if request.ip_range.is_some() => {
            return Err(IpamError::NeedsSubnet { option: "ip_range" })
        }
        None => {
            let taken: Vec<Ipv4Net> = existing.iter().map(|n| n.subnet).collect();
            pick_subnet(pools, &taken, host_routes)?
        }
    };
    let gateway = match request.gateway {
        Some(gateway) => {
            let invalid = |reason| IpamError::InvalidGateway {
                gateway,
                subnet,
                reason,
            };
            if !subnet.contains(&gateway) {
                return Err(invalid("it is outside the subnet"));
            }
            if gateway == subnet.network() {
                return Err(invalid("it is the subnet's network address"));
            }
            if gateway == subnet.broadcast() {
                return Err(invalid("it is the subnet's broadcast address"));
            }
            gateway
        }
        None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
    };
    if let Some(ip_range) = request.ip_range {
        let invalid = |reason: String| IpamError::InvalidIpRange {
            ip_range,
            subnet,
            reason,
        };
        if ip_range.addr() != ip_range.network() {
            return Err(invalid(format!(
                "it has host bits set (did you mean {}?)",
                ip_range.trunc()
            )));
        }
        if !subnet.contains(&ip_range) {
            return Err(invalid("it is not inside the subnet".into()));
        }
        let (lo, hi) = bounds(&ip_range);
        let usable = (lo..=hi)
            .map(Ipv4Addr::from)
            .any(|a| a != gateway && a != subnet.network() && a != subnet.broadcast());
        if !usable {
            return Err(invalid(
                "it holds no address besides the gateway, network and broadcast addresses".into(),
            ));
        }
    }
    Ok(IpamPlan {
        subnet,
        gateway,
        ip_range: request.ip_range,
    })
}

fn check_subnet(subnet: Ipv4Net) -> Result<(), IpamError> {
    if subnet.addr() != subnet.network() {
        return Err(IpamError::InvalidSubnet {
            subnet,
            reason: format!("it has host bits set (did you mean {}?)", subnet.trunc()),
        });
    }
    if subnet.prefix_len() > MAX_PREFIX_LEN {
        return Err(IpamError::InvalidSubnet {
            subnet,
            reason: "it is smaller than a /30 and leaves no address for a container".into(),
        });
    }
    if subnet.prefix_len() == 0 {
        return Err(IpamError::InvalidSubnet {
            subnet,
            reason: "it covers every address".into(),
        });
    }
    Ok(())
}

fn bounds(net: &Ipv4Net) -> (u32, u32) {
    (u32::from(net.network()), u32::from(net.broadcast()))
}

/// [`allocate_after`] without a rotation hint: the lowest free address.
pub fn allocate(
    net: &NetworkConfig,
    used: &BTreeSet<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, IpamError> {
    allocate_after(net, used, requested, None)
}

/// A container's address on `net`. `requested` (a static address) may be anywhere in the
/// subnet; dynamic addresses come from `ip_range` when set. Dynamic allocation starts after
/// `last` (the previous dynamic allocation) and wraps around, so a released address is
/// handed out again only after the rest of the range has been used, as Docker does: a
/// stale DNS answer or ARP entry then rarely points at a new container.
pub fn allocate_after(
    net: &NetworkConfig,
    used: &BTreeSet<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, IpamError> {
    let subnet = net.subnet.trunc();
    let reserved = |a: Ipv4Addr| {
        if a == subnet.network() {
            Some("network address")
        } else if a == subnet.broadcast() {
            Some("broadcast address")
        } else if a == net.gateway {
            Some("gateway")
        } else {
            None
        }
    };
    if let Some(address) = requested {
        if !subnet.contains(&address) {
            return Err(IpamError::OutsideSubnet {
                address,
                network: net.name.clone(),
                subnet,
            });
        }
        if let Some(what) = reserved(address) {
            return Err(IpamError::Reserved {
                address,
                network: net.name.clone(),
                what,
            });
        }
        if used.contains(&address) {
            return Err(IpamError::InUse {
                address,
                network: net.name.clone(),
                holder: None,
            });
        }
        return Ok(address);
    }
    // A stored range outside the subnet (hand-edited state) falls back to the subnet.
    let range = net
        .ip_range
        .map(|r| r.trunc())
        .filter(|r| subnet.contains(r))
        .unwrap_or(subnet);
    let (lo, hi) = bounds(&range);
    let start = match last.map(u32::from) {
        Some(l) if l >= lo && l < hi => l + 1,
        _ => lo,
    };
    (start..=hi)
        .chain(lo..start)
        .map(Ipv4Addr::from)
        .find(|a| reserved(*a).is_none() && !used.contains(a))
        .ok_or_else(|| IpamError::Exhausted {
            network: net.name.clone(),
            range,
        })
}

/// RTF_UP in /proc/net/route's flags.
const RTF_UP: u32 = 0x1;

/// The IPv4 routes (main table) of the calling thread's network namespace, the default
/// route excluded. /proc/thread-self rather than /proc/self: a thread that entered another
/// namespace (setns) must see that namespace's routes.
pub fn host_routes() -> io::Result<Vec<Ipv4Net>> {
    let file = File::open("/proc/thread-self/net/route")?;
    parse_routes(BufReader::new(file))
}

/// Parses /proc/net/route. Addresses are the kernel's network-order words printed as
/// native integers in hex (so little-endian hex on x86 and arm64). Malformed lines are
/// skipped.
pub fn parse_routes(reader: impl BufRead) -> io::Result<Vec<Ipv4Net>> {
    let mut routes = Vec::new();
    for line in reader.lines() {
        let line = line?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || fields[0] == "Iface" {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dest), Some(flags), Some(mask)) =
            (hex(fields[1]), hex(fields[3]), hex(fields[7]))
        else {
            continue;
        };
        if flags & RTF_UP == 0 {
            continue;
        }
        let dest = Ipv4Addr::from(dest.to_ne_bytes());
        let mask = Ipv4Addr::from(mask.to_ne_bytes());
        match Ipv4Net::with_netmask(dest, mask) {
            Ok(net) if net.prefix_len() != 0 => routes.push(net.trunc()),
            _ => continue,
        }
    }
    routes.sort();
    routes.dedup();
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn config(name: &str, subnet: &str, gateway: &str, ip_range: Option<&str>) -> NetworkConfig {
        NetworkConfig {
            name: name.into(),
            id: "c".repeat(64),
            bridge: "dm-cccccccccccc".into(),
            subnet: net(subnet),
            gateway: ip(gateway),
            ip_range: ip_range.map(net),
            internal: false,
            mtu: 1500,
            labels: BTreeMap::new(),
            created: "2024-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn default_pools_follow_docker() {
        let pools = default_pools();
        assert_eq!(pools.len(), 16);
        assert_eq!(pools[0].base(), net("172.17.0.0/16"));
        assert_eq!(pools[14].base(), net("172.31.0.0/16"));
        assert_eq!(pools[15].base(), net("192.168.0.0/16"));
        assert_eq!(pools[15].size(), 20);
        assert_eq!(pick_subnet(&pools, &[], &[]).unwrap(), net("172.17.0.0/16"));
    }

    #[test]
    fn pick_skips_networks_and_host_routes_but_not_the_default_route() {
        let pools = default_pools();
        let default_route = net("0.0.0.0/0");
        // docker0 holds 172.17, a VPN route covers part of 172.18
        let got = pick_subnet(
            &pools,
            &[net("172.17.0.0/16")],
            &[default_route, net("172.18.5.0/24")],
        )
        .unwrap();
        assert_eq!(got, net("172.19.0.0/16"));
        // every 172.x taken by a /12 route: on to 192.168/20s, skipping a LAN /24
        let got = pick_subnet(&pools, &[], &[net("172.16.0.0/12"), net("192.168.1.0/24")]).unwrap();
        assert_eq!(got, net("192.168.16.0/20"));
        let err =
            pick_subnet(&pools, &[], &[net("172.16.0.0/12"), net("192.168.0.0/16")]).unwrap_err();
        assert!(matches!(err, IpamError::PoolsExhausted { .. }));
        assert!(err.to_string().contains("192.168.0.0/16 as /20s"), "{err}");
        assert_eq!(err.category(), Category::Conflict);
    }

    #[test]
    fn pick_jumps_over_large_blockers_in_custom_pools() {
        let pools = [Pool::new(net("10.0.0.0/8"), 24).unwrap()];
        let got = pick_subnet(&pools, &[net("10.0.0.0/23")], &[net("10.0.0.0/9")]).unwrap();
        assert_eq!(got, net("10.128.0.0/24"));
        // a blocker smaller than the step still blocks its whole candidate
        let got = pick_subnet(&pools, &[], &[net("10.0.0.7/32")]).unwrap();
        assert_eq!(got, net("10.0.1.0/24"));
        // whole pool covered
        assert!(pick_subnet(&pools, &[net("10.0.0.0/8")], &[]).is_err());
    }

    #[test]
    fn pools_are_validated_also_when_deserialized() {
        assert!(Pool::new(net("10.0.0.1/8"), 24).is_err());
        assert!(Pool::new(net("10.0.0.0/16"), 8).is_err());
        assert!(Pool::new(net("10.0.0.0/16"), 31).is_err());
        let err = Pool::new(net("10.0.0.0/16"), 31).unwrap_err();
        assert_eq!(err.category(), Category::Invalid);
        let pool: Pool = serde_json::from_str(r#"{"base":"10.9.0.0/16","size":24}"#).unwrap();
        assert_eq!((pool.base(), pool.size()), (net("10.9.0.0/16"), 24));
        assert!(serde_json::from_str::<Pool>(r#"{"base":"10.9.0.0/16","size":8}"#).is_err());
        assert_eq!(
            serde_json::to_string(&pool).unwrap(),
            r#"{"base":"10.9.0.0/16","size":24}"#
        );
    }

    #[test]
    fn plan_fills_in_defaults_and_validates_user_options() {
        let pools = default_pools();
        let existing = [config("front", "172.20.0.0/16", "172.20.0.1", None)];
        let auto = plan(&IpamRequest::default(), &pools, &existing, &[]).unwrap();
        assert_eq!(
            auto,
            IpamPlan {
                subnet: net("172.17.0.0/16"),
                gateway: ip("172.17.0.1"),
                ip_range: None
            }
        );
        let explicit = IpamRequest {
            subnet: Some(net("10.5.0.0/24")),
            gateway: Some(ip("10.5.0.254")),
            ip_range: Some(net("10.5.0.128/25")),
        };
        let p = plan(&explicit, &pools, &existing, &[net("10.0.0.0/8")]).unwrap();
        assert_eq!(p.subnet, net("10.5.0.0/24"));
        assert_eq!(p.gateway, ip("10.5.0.254"));
        assert_eq!(p.ip_range, Some(net("10.5.0.128/25")));

        let with = |subnet: &str, gateway: Option<&str>, ip_range: Option<&str>| IpamRequest {
            subnet: Some(net(subnet)),
            gateway: gateway.map(ip),
            ip_range: ip_range.map(net),
        };
        let err = |req: IpamRequest| plan(&req, &pools, &existing, &[]).unwrap_err();

        let e = err(with("172.20.128.0/24", None, None));
        assert!(matches!(e, IpamError::Overlap { .. }));
        assert!(e.to_string().contains("network front"), "{e}");
        assert_eq!(e.category(), Category::Conflict);
        let e = err(with("10.5.0.1/24", None, None));
        assert!(e.to_string().contains("did you mean 10.5.0.0/24"), "{e}");
        assert!(matches!(
            err(with("10.5.0.0/31", None, None)),
            IpamError::InvalidSubnet { .. }
        ));
        for gw in ["10.6.0.1", "10.5.0.0", "10.5.0.255"] {
            let e = err(with("10.5.0.0/24", Some(gw), None));
            assert!(matches!(e, IpamError::InvalidGateway { .. }), "{gw}: {e}");
            assert_eq!(e.category(), Category::Invalid);
        }
        for range in ["10.6.0.0/25", "10.5.0.0/23", "10.5.0.130/25"] {
            let e = err(with("10.5.0.0/24", None, Some(range)));
            assert!(
                matches!(e, IpamError::InvalidIpRange { .. }),
                "{range}: {e}"
            );
        }
        // a range holding only the gateway
        let e = err(with("10.5.0.0/24", None, Some("10.5.0.1/32")));
        assert!(matches!(e, IpamError::InvalidIpRange { .. }), "{e}");
        let e = plan(
            &IpamRequest {
                gateway: Some(ip("10.5.0.1")),
                ..Default::default()
            },
            &pools,
            &existing,
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, IpamError::NeedsSubnet { option: "gateway" }));
    }

    #[test]
    fn static_addresses_are_checked() {
        let n = config("front", "10.1.0.0/24", "10.1.0.1", None);
        let used: BTreeSet<Ipv4Addr> = [ip("10.1.0.7")].into();
        assert_eq!(
            allocate(&n, &used, Some(ip("10.1.0.9"))).unwrap(),
            ip("10.1.0.9")
        );
        let e = allocate(&n, &used, Some(ip("10.1.0.7"))).unwrap_err();
        assert!(e.to_string().contains("10.1.0.7"), "{e}");
        assert!(matches!(e, IpamError::InUse { .. }));
        let e = IpamError::InUse {
            address: ip("10.1.0.7"),
            network: "front".into(),
            holder: Some("web".into()),
        };
        assert_eq!(
            e.to_string(),
            "address 10.1.0.7 on network front is already in use by container web"
        );
        for (addr, what) in [
            ("10.1.0.1", "gateway"),
            ("10.1.0.0", "network address"),
            ("10.1.0.255", "broadcast address"),
        ] {
            let e = allocate(&n, &used, Some(ip(addr))).unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
        }
        let e = allocate(&n, &used, Some(ip("10.2.0.5"))).unwrap_err();
        assert!(matches!(e, IpamError::OutsideSubnet { .. }));
        // static addresses may lie outside ip_range
        let ranged = config("front", "10.1.0.0/24", "10.1.0.1", Some("10.1.0.128/25"));
        assert_eq!(
            allocate(&ranged, &used, Some(ip("10.1.0.9"))).unwrap(),
            ip("10.1.0.9")
        );
    }

    #[test]
    fn dynamic_addresses_skip_reserved_and_used_and_honour_ip_range() {
        let n = config("front", "10.1.0.0/24", "10.1.0.1", None);
        let mut used = BTreeSet::new();
        assert_eq!(allocate(&n, &used, None).unwrap(), ip("10.1.0.2"));
        used.insert(ip("10.1.0.2"));
        used.insert(ip("10.1.0.3"));
        assert_eq!(allocate(&n, &used, None).unwrap(), ip("10.1.0.4"));

        // a gateway in the middle of the range is skipped; the range's own network
        // address is usable when it is not the subnet's
        let ranged = config("back", "10.1.0.0/24", "10.1.0.129", Some("10.1.0.128/30"));
        let mut used = BTreeSet::new();
        let mut got = Vec::new();
        while let Ok(a) = allocate(&ranged, &used, None) {
            used.insert(a);
            got.push(a);
        }
        assert_eq!(got, [ip("10.1.0.128"), ip("10.1.0.130"), ip("10.1.0.131")]);
        let e = allocate(&ranged, &used, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no free address left in 10.1.0.128/30 of network back"
        );
        assert_eq!(e.category(), Category::Conflict);
    }

    #[test]
    fn released_addresses_come_back_only_after_the_range_wraps() {
        let n = config("front", "10.1.0.0/29", "10.1.0.1", None);
        // usable: .2 .. .6
        let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
        let mut last = None;
        for _ in 0..3 {
            let a = allocate_after(&n, &used, None, last).unwrap();
            used.insert(a);
            last = Some(a);
        }
        assert_eq!(last, Some(ip("10.1.0.4")));
        used.remove(&ip("10.1.0.2")); // container removed
        let a = allocate_after(&n, &used, None, last).unwrap();
        assert_eq!(a, ip("10.1.0.5"), "not the just-released .2");
        used.insert(a);
        let a = allocate_after(&n, &used, None, Some(a)).unwrap();
        assert_eq!(a, ip("10.1.0.6"));
        used.insert(a);
        // the end of the range: wrap to the released address
        let a = allocate_after(&n, &used, None, Some(a)).unwrap();
        assert_eq!(a, ip("10.1.0.2"));
        used.insert(a);
        assert!(allocate_after(&n, &used, None, Some(a)).is_err());
        // a hint outside the range (network re-created) is ignored
        let fresh = BTreeSet::new();
        assert_eq!(
            allocate_after(&n, &fresh, None, Some(ip("192.0.2.1"))).unwrap(),
            ip("10.1.0.2")
        );
    }

    #[test]
    fn overlap_is_symmetric_and_exact_at_the_edges() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.2.0/24")));
        assert!(overlaps(&net("10.1.2.0/24"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.1.2.0/24"), &net("10.1.3.0/24")));
        assert!(overlaps(&net("10.1.2.255/32"), &net("10.1.2.0/24")));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn proc_net_route_is_parsed() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            wg0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
            down0\t0000A8C0\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            bad\tzz\n\
            odd\t000200C0\t00000000\t0001\t0\t0\t0\t00FF00FF\t0\t0\t0\n";
        let routes = parse_routes(text.as_bytes()).unwrap();
        assert_eq!(
            routes,
            [net("10.0.0.0/8"), net("172.17.0.0/16"), net("192.0.2.0/24")]
        );
    }

    #[test]
    fn this_threads_routes_are_readable() {
        let routes = host_routes().unwrap();
        assert!(routes
            .iter()
            .all(|r| r.prefix_len() > 0 && r.addr() == r.network()));
    }
}
