//! Bridges and veth pairs over rtnetlink, behind a synchronous API.
//!
//! Every function works in the network namespace of the calling thread; to work in another
//! one, call it inside [`netns::run_in`]. Each call opens its own netlink socket and drives it
//! on a tokio current-thread runtime: on the calling thread when that thread is not inside a
//! tokio runtime (the CLI, the shim), else on a short-lived scoped thread (which inherits the
//! caller's network namespace), because a runtime cannot be started inside another. Async
//! callers should still use `spawn_blocking`: a call blocks for the netlink round trips.
//!
//! rtnetlink quirks handled here:
//! - Modifying an existing link goes through `LinkHandle::change` (RTM_NEWLINK without
//!   NLM_F_CREATE); `LinkHandle::set` sends RTM_SETLINK with NLM_F_CREATE|NLM_F_EXCL.
//! - A lookup by name of a missing link is an ENODEV error, not an empty answer.
//! - Errors are `rtnetlink::Error::NetlinkError` carrying a negative errno; they are turned
//!   into `io::Error`s here so callers can match on `raw_os_error()`.
//!
//! A veth pair is created in one RTM_NEWLINK: the host side with its name, MTU, bridge
//! (IFLA_MASTER) and up; the peer directly inside the container's namespace (IFLA_NET_NS_FD in
//! the peer message) with its final name, MAC and MTU. So there is no temporary name that
//! could collide or leak in the host namespace, and the kernel creates all of it or nothing.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::thread;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteType};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use super::model::{mac_for, Endpoint, NetworkConfig, IFNAME_MAX};
use super::netns::{self, NetnsError};
use crate::error::{Categorized, Category};

/// Longest value [`write_sysctl`] writes (sysctl values are short numbers or names).
const SYSCTL_VALUE_MAX: usize = 256;
/// Longest value [`read_sysctl`] reads.
const SYSCTL_READ_MAX: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid interface name {name:?}")]
    InvalidName { name: String },
    #[error("invalid mac address {mac:?}")]
    InvalidMac { mac: String },
    #[error("invalid mtu {mtu} for {name}")]
    InvalidMtu { name: String, mtu: u32 },
    #[error("{addr} of {name} is not inside the subnet of its gateway {gateway}")]
    GatewayOutsideSubnet {
        name: String,
        addr: Ipv4Net,
        gateway: Ipv4Addr,
    },
    #[error("invalid sysctl {key:?}")]
    InvalidSysctl { key: String },
    #[error("invalid value {value:?} for sysctl {key}")]
    InvalidSysctlValue { key: String, value: String },
    #[error("open a netlink socket: {source}")]
    Netlink {
        #[source]
        source: io::Error,
    },
    #[error("{op} {name}: {source}")]
    Op {
        op: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("bridge {name} does not exist")]
    BridgeNotFound { name: String },
    #[error("{name} is a {kind} link, not a bridge")]
    NotABridge { name: String, kind: String },
    #[error("{name} is not a bridge port")]
    NotABridgePort { name: String },
    #[error("link {name} already exists")]
    Exists { name: String },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{op} sysctl {path}: {source}")]
    Sysctl {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("start a netlink thread: {source}")]
    Thread {
        #[source]
        source: io::Error,
    },
}

impl Categorized for LinkError {
    fn category(&self) -> Category {
        match self {
            LinkError::InvalidName { .. }
            | LinkError::InvalidMac { .. }
            | LinkError::InvalidMtu { .. }
            | LinkError::GatewayOutsideSubnet { .. }
            | LinkError::InvalidSysctl { .. }
            | LinkError::InvalidSysctlValue { .. }
            | LinkError::NotABridge { .. }
            | LinkError::NotABridgePort { .. } => Category::Invalid,
            LinkError::BridgeNotFound { .. } => Category::NotFound,
            LinkError::Exists { .. } => Category::Conflict,
            LinkError::Netns(e) => e.category(),
            LinkError::Op { source, .. } | LinkError::Sysctl { source, .. } => {
                errno_category(source)
            }
            LinkError::Netlink { .. } | LinkError::Thread { .. } => Category::Internal,
        }
    }
}

fn errno_category(e: &io::Error) -> Category {
    match e.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::EADDRINUSE) => Category::Conflict,
        Some(libc::ENODEV) | Some(libc::ENOENT) => Category::NotFound,
        Some(libc::EINVAL) | Some(libc::ERANGE) | Some(libc::EOPNOTSUPP) => Category::Invalid,
        Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::ENOBUFS) => Category::Transient,
        _ => Category::Internal,
    }
}

/// One veth attachment of a container to a bridge: what [`attach`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment<'a> {
    /// Host bridge to enslave the host side to (must exist, see [`ensure_bridge`]).
    pub bridge: &'a str,
    /// Host side of the pair.
    pub host_veth: &'a str,
    /// The container's network namespace (a netns mount or `/proc/PID/ns/net`).
    pub netns: &'a Path,
    /// Interface name inside the container (`eth0`, ...).
    pub ifname: &'a str,
    /// The container's address with the subnet's prefix length.
    pub addr: Ipv4Net,
    /// `aa:bb:cc:dd:ee:ff`, for the container side.
    pub mac: &'a str,
    pub mtu: u32,
    /// Default route via this gateway (the first network's); `None` adds no route.
    pub gateway: Option<Ipv4Addr>,
}

impl<'a> Attachment<'a> {
    /// The attachment of `endpoint` on `network`; `default_route` for the container's first
    /// network only (a second default route would be refused).
    pub fn for_endpoint(
        network: &'a NetworkConfig,
        endpoint: &'a Endpoint,
        netns: &'a Path,
        default_route: bool,
    ) -> Self {
        Attachment {
            bridge: &network.bridge,
            host_veth: &endpoint.host_veth,
            netns,
            ifname: &endpoint.ifname,
            addr: Ipv4Net::new(endpoint.ip, network.subnet.prefix_len())
                .expect("prefix of a valid subnet"),
            mac: &endpoint.mac,
            mtu: network.mtu,
            gateway: default_route.then_some(network.gateway),
        }
    }
}

/// Makes sure bridge `name` exists, has MTU `mtu`, carries `gateway` (address and prefix) and
/// is up. Idempotent; other addresses already on the bridge are left alone. A new bridge gets
/// the MAC [`mac_for`] its gateway, set explicitly so the kernel never switches it to a port's
/// MAC (which would invalidate the gateway's ARP entries in containers).
pub fn ensure_bridge(name: &str, gateway: Ipv4Net, mtu: u32) -> Result<(), LinkError> {
    check_ifname(name)?;
    check_mtu(name, mtu)?;
    let mac = parse_mac(&mac_for(gateway.addr()))?;
    with_netlink(|h| async move {
        let index = match find_link(&h, name).await? {
            Some(link) => {
                check_bridge(name, &link)?;
                if link_mtu(&link) != Some(mtu) {
                    h.link()
                        .change(
                            LinkUnspec::new_with_index(link.header.index)
                                .mtu(mtu)
                                .build(),
                        )
                        .execute()
                        .await
                        .map_err(op_err("set mtu of", name))?;
                }
                link.header.index
            }
            None => {
                let message = LinkBridge::new(name).mtu(mtu).address(mac.to_vec()).build();
                match h.link().add(message).execute().await {
                    Ok(()) => tracing::debug!(bridge = name, "created bridge"),
                    // Created by someone else meanwhile: checked below like any existing one.
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(op_err("create bridge", name)(e)),
                }
                let link = find_link(&h, name)
                    .await?
                    .ok_or_else(|| LinkError::BridgeNotFound { name: name.into() })?;
                check_bridge(name, &link)?;
                link.header.index
            }
        };
        if !ipv4_addrs_of(&h, index, name).await?.contains(&gateway) {
            match h
                .address()
                .add(index, IpAddr::V4(gateway.addr()), gateway.prefix_len())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(op_err("add gateway address to", name)(e)),
            }
        }
        h.link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(op_err("set up", name))
    })
}

/// Creates the veth pair of `a` and configures the container side inside `a.netns`: name,
/// MAC, MTU, address, up, default route via `a.gateway` if given, and `lo` up. The host side
/// is enslaved to `a.bridge` and up. On any failure nothing this call created is left (the
/// pair is deleted); an existing `a.host_veth` is [`LinkError::Exists`] and is not touched.
pub fn attach(a: &Attachment<'_>) -> Result<(), LinkError> {
    check_ifname(a.bridge)?;
    check_ifname(a.host_veth)?;
    check_ifname(a.ifname)?;
    check_mtu(a.host_veth, a.mtu)?;
    let mac = parse_mac(a.mac)?;
    if let Some(gateway) = a.gateway {
        if !a.addr.contains(&gateway) {
            return Err(LinkError::GatewayOutsideSubnet {
                name: a.ifname.into(),
                addr: a.addr,
                gateway,
            });
        }
    }
    let ns_fd = netns::open(a.netns)?;
    let ns_raw = ns_fd.as_raw_fd();
    let peer_desc = format!(
        "{} (peer {} in {})",
        a.host_veth,
        a.ifname,
        a.netns.display()
    );
    with_netlink(|h| async move {
        let bridge = find_link(&h, a.bridge)
            .await?
            .ok_or_else(|| LinkError::BridgeNotFound {
                name: a.bridge.into(),
            })?;
        check_bridge(a.bridge, &bridge)?;
        if find_link(&h, a.host_veth).await?.is_some() {
            return Err(LinkError::Exists {
                name: a.host_veth.into(),
            });
        }
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(a.ifname)
            .mtu(a.mtu)
            .address(mac.to_vec())
            .setns_by_fd(ns_raw)
            // Not `.up()`: the kernel configures the peer before linking the two ends, and
            // opening an unlinked veth fails with ENOTCONN. It is set up inside the container.
            .build();
        let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(a.host_veth)
            .mtu(a.mtu)
            .controller(bridge.header.index)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        h.link()
            .add(pair)
            .execute()
            .await
            .map_err(|e| match errno(&e) {
                // Checked above for the host side; so the name is taken in the container.
                Some(libc::EEXIST) => LinkError::Op {
                    op: "create veth pair",
                    name: peer_desc.clone(),
                    source: nl_io(e),
                },
                _ => op_err("create veth pair", &peer_desc)(e),
            })
    })?;
    tracing::debug!(
        host_veth = a.host_veth,
        bridge = a.bridge,
        "created veth pair"
    );
    let configured = netns::run_in_fd(ns_fd.as_fd(), || configure_container_side(a))
        .map_err(LinkError::from)
        .and_then(|r| r);
    if let Err(e) = configured {
        // Deleting either end deletes the pair.
        if let Err(cleanup) = delete_link(a.host_veth) {
            tracing::warn!(host_veth = a.host_veth, error = %cleanup, "delete half-made veth pair");
        }
        return Err(e);
    }
    Ok(())
}

/// Runs inside the container's namespace.
fn configure_container_side(a: &Attachment<'_>) -> Result<(), LinkError> {
    with_netlink(|h| async move {
        set_up(&h, "lo").await?;
        let link = find_link(&h, a.ifname)
            .await?
            .ok_or_else(|| LinkError::Op {
                op: "find",
                name: a.ifname.into(),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            })?;
        let index = link.header.index;
        h.address()
            .add(index, IpAddr::V4(a.addr.addr()), a.addr.prefix_len())
            .execute()
            .await
            .map_err(op_err("add address to", a.ifname))?;
        set_up(&h, a.ifname).await?;
        if let Some(gateway) = a.gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(index)
                .build();
            h.route()
                .add(route)
                .execute()
                .await
                .map_err(op_err("add default route via", &gateway.to_string()))?;
        }
        Ok(())
    })
}

/// Turns hairpin mode of bridge port `name` on or off: with it on, the bridge may send a
/// frame back out of the port it came in on, which a container needs to reach itself through
/// the host address of one of its published ports (DNAT turns the reply's path around). Set
/// over netlink (IFLA_BRPORT_MODE in the port's IFLA_INFO_SLAVE_DATA, as `ip link set NAME
/// type bridge_slave hairpin on` does) in the calling thread's namespace, not through
/// `/sys/class/net`, which shows the namespace sysfs was mounted in. A link that is not
/// enslaved to a bridge is [`LinkError::NotABridgePort`].
pub fn set_hairpin(name: &str, on: bool) -> Result<(), LinkError> {
    check_ifname(name)?;
    with_netlink(|h| async move {
        let link = find_link(&h, name).await?.ok_or_else(|| LinkError::Op {
            op: "find",
            name: name.into(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        // The port data is parsed by whatever the link is enslaved to: only a bridge's will do.
        if port_kind(&link) != Some(&InfoPortKind::Bridge) {
            return Err(LinkError::NotABridgePort { name: name.into() });
        }
        h.link()
            .change(LinkBridgePort::new(link.header.index).hairpin(on).build())
            .execute()
            .await
            .map_err(|e| match errno(&e) {
                // Released from its bridge since the lookup.
                Some(libc::EOPNOTSUPP) => LinkError::NotABridgePort { name: name.into() },
                _ => op_err("set hairpin mode of", name)(e),
            })
    })
}

/// Brings `lo` up in the calling thread's namespace (a new namespace has it down).
/// Sets `lo` up in the calling thread's network namespace, with two ioctls: no netlink socket
/// and no async runtime (the shim calls it on every start of a `--network none` container).
pub fn loopback_up() -> Result<(), LinkError> {
    set_loopback_up_ioctl().map_err(|source| LinkError::Op {
        op: "set up",
        name: "lo".into(),
        source,
    })
}

fn set_loopback_up_ioctl() -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the named interface into `ifr`, which outlives
    // the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the flags member is the one SIOCGIFFLAGS filled in.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `ifr`, valid for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn set_up(h: &Handle, name: &str) -> Result<(), LinkError> {
    h.link()
        .change(LinkUnspec::new_with_name(name).up().build())
        .execute()
        .await
        .map_err(op_err("set up", name))
}

/// Deletes link `name` (for a veth, both ends). Returns whether it existed.
pub fn delete_link(name: &str) -> Result<bool, LinkError> {
    check_ifname(name)?;
    with_netlink(|h| async move {
        match h
            .link()
            .del_with_message(LinkUnspec::new_with_name(name).build())
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(op_err("delete", name)(e)),
        }
    })
}

/// Deletes bridge `name` (its ports are released, not deleted). Returns whether it existed;
/// a link of that name that is not a bridge is [`LinkError::NotABridge`] and stays.
pub fn delete_bridge(name: &str) -> Result<bool, LinkError> {
    check_ifname(name)?;
    with_netlink(|h| async move {
        let Some(link) = find_link(&h, name).await? else {
            return Ok(false);
        };
        check_bridge(name, &link)?;
        match h.link().del(link.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(op_err("delete bridge", name)(e)),
        }
    })
}

/// Whether a link called `name` exists.
pub fn link_exists(name: &str) -> Result<bool, LinkError> {
    check_ifname(name)?;
    with_netlink(|h| async move { Ok(find_link(&h, name).await?.is_some()) })
}

/// Names of all links, sorted.
pub fn list_links() -> Result<Vec<String>, LinkError> {
    with_netlink(|h| async move {
        let mut names: Vec<String> = h
            .link()
            .get()
            .execute()
            .map_ok(|link| link_name(&link).map(str::to_owned))
            .try_filter_map(|name| async move { Ok(name) })
            .try_collect()
            .await
            .map_err(op_err("list", "links"))?;
        names.sort();
        Ok(names)
    })
}

/// IPv4 addresses (with prefix) of link `name`. A missing link is an error.
pub fn ipv4_addrs(name: &str) -> Result<Vec<Ipv4Net>, LinkError> {
    check_ifname(name)?;
    with_netlink(|h| async move {
        let link = find_link(&h, name).await?.ok_or_else(|| LinkError::Op {
            op: "find",
            name: name.into(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        ipv4_addrs_of(&h, link.header.index, name).await
    })
}

/// Destinations of the unicast IPv4 routes of every table, without default routes, sorted
/// and deduplicated: what an address pool must not overlap.
pub fn ipv4_routes() -> Result<Vec<Ipv4Net>, LinkError> {
    with_netlink(|h| async move {
        let mut routes: Vec<Ipv4Net> = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_filter_map(|route| async move {
                let prefix = route.header.destination_prefix_length;
                if route.header.kind != RouteType::Unicast || prefix == 0 {
                    return Ok(None);
                }
                Ok(route.attributes.iter().find_map(|attr| match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(dst)) => {
                        Ipv4Net::new(*dst, prefix).ok().map(|n| n.trunc())
                    }
                    _ => None,
                }))
            })
            .try_collect()
            .await
            .map_err(op_err("list", "ipv4 routes"))?;
        routes.sort();
        routes.dedup();
        Ok(routes)
    })
}

async fn ipv4_addrs_of(h: &Handle, index: u32, name: &str) -> Result<Vec<Ipv4Net>, LinkError> {
    h.address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_filter_map(|msg| async move {
            let prefix = msg.header.prefix_len;
            let local = msg.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let address = msg.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            Ok(local
                .or(address)
                .and_then(|ip| Ipv4Net::new(ip, prefix).ok()))
        })
        .try_collect()
        .await
        .map_err(op_err("list addresses of", name))
}

/// Writes `value` to `/proc/sys/net/<rel>` in the calling thread's namespace (`rel` like
/// `ipv4/ip_forward`; components of letters, digits, `_`, `-`, `.`).
pub fn write_sysctl(rel: &str, value: &str) -> Result<(), LinkError> {
    let path = sysctl_path(rel)?;
    if value.is_empty()
        || value.len() > SYSCTL_VALUE_MAX
        || value.bytes().any(|b| b.is_ascii_control())
    {
        return Err(LinkError::InvalidSysctlValue {
            key: rel.into(),
            value: value.into(),
        });
    }
    std::fs::write(&path, value).map_err(|source| LinkError::Sysctl {
        op: "write",
        path,
        source,
    })
}

/// Reads `/proc/sys/net/<rel>` in the calling thread's namespace, trimmed.
pub fn read_sysctl(rel: &str) -> Result<String, LinkError> {
    use std::io::Read;
    let path = sysctl_path(rel)?;
    let read_err = |source| LinkError::Sysctl {
        op: "read",
        path: path.clone(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(&path)
        .map_err(read_err)?
        .take(SYSCTL_READ_MAX)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    Ok(text.trim().to_owned())
}

/// `net.ipv4.conf.<ifname>.<key> = value` in the calling thread's namespace.
pub fn set_ipv4_conf(ifname: &str, key: &str, value: &str) -> Result<(), LinkError> {
    if ifname != "all" && ifname != "default" {
        check_ifname(ifname)?;
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(LinkError::InvalidSysctl { key: key.into() });
    }
    write_sysctl(&format!("ipv4/conf/{ifname}/{key}"), value)
}

fn sysctl_path(rel: &str) -> Result<PathBuf, LinkError> {
    let components: Vec<&str> = rel.split('/').collect();
    let valid = components.len() <= 8
        && components.iter().all(|c| {
            !c.is_empty()
                && *c != "."
                && *c != ".."
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        });
    if !valid {
        return Err(LinkError::InvalidSysctl { key: rel.into() });
    }
    Ok(Path::new("/proc/sys/net").join(rel))
}

/// The kernel's `dev_valid_name`: 1..=15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn check_ifname(name: &str) -> Result<(), LinkError> {
    let valid = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if valid {
        Ok(())
    } else {
        Err(LinkError::InvalidName { name: name.into() })
    }
}

fn check_mtu(name: &str, mtu: u32) -> Result<(), LinkError> {
    // 68 is IPv4's minimum; 65535 the largest a bridge or veth takes.
    if (68..=65535).contains(&mtu) {
        Ok(())
    } else {
        Err(LinkError::InvalidMtu {
            name: name.into(),
            mtu,
        })
    }
}

/// `aa:bb:cc:dd:ee:ff` (hex, either case) to bytes; must be unicast.
pub fn parse_mac(mac: &str) -> Result<[u8; 6], LinkError> {
    let invalid = || LinkError::InvalidMac { mac: mac.into() };
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in out.iter_mut() {
        let part = parts.next().ok_or_else(invalid)?;
        // from_str_radix alone would take a sign ("+2").
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
    }
    if parts.next().is_some() || out[0] & 1 == 1 || out == [0; 6] {
        return Err(invalid());
    }
    Ok(out)
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// What the link is enslaved to (IFLA_INFO_SLAVE_KIND), if anything.
fn port_kind(link: &LinkMessage) -> Option<&InfoPortKind> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::PortKind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

fn check_bridge(name: &str, link: &LinkMessage) -> Result<(), LinkError> {
    match link_kind(link) {
        Some(InfoKind::Bridge) => Ok(()),
        other => Err(LinkError::NotABridge {
            name: name.into(),
            kind: other.map_or_else(|| "plain".to_owned(), |k| k.to_string()),
        }),
    }
}

/// Whether `link` is up (administratively).
fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

/// Whether link `name` exists and is administratively up.
pub fn link_is_up(name: &str) -> Result<bool, LinkError> {
    check_ifname(name)?;
    with_netlink(|h| async move { Ok(find_link(&h, name).await?.is_some_and(|l| is_up(&l))) })
}

async fn find_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>, LinkError> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(op_err("find", name)(e)),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

fn nl_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn op_err<'a>(op: &'static str, name: &'a str) -> impl Fn(rtnetlink::Error) -> LinkError + 'a {
    move |e| LinkError::Op {
        op,
        name: name.to_owned(),
        source: nl_io(e),
    }
}

/// Runs `f` with a fresh netlink handle in the calling thread's network namespace (see the
/// module docs for which thread drives it).
fn with_netlink<F, Fut, R>(f: F) -> Result<R, LinkError>
where
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<R, LinkError>>,
    R: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return drive_netlink(f);
    }
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("netlink".into())
            .spawn_scoped(scope, || drive_netlink(f))
            .map_err(|source| LinkError::Thread { source })?;
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn drive_netlink<F, Fut, R>(f: F) -> Result<R, LinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<R, LinkError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| LinkError::Netlink { source })?;
    runtime.block_on(async move {
        // The socket registers with the runtime's reactor, so it is made inside block_on.
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| LinkError::Netlink { source })?;
        let driver = tokio::spawn(connection);
        let result = f(handle).await;
        driver.abort();
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernels_rules() {
        for good in ["eth0", "dm-0123456789ab", "a", "veth.1", "x-y_z"] {
            assert!(check_ifname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "0123456789abcdef",
            "tab\t",
        ] {
            assert!(
                matches!(check_ifname(bad), Err(LinkError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn macs_parse_and_multicast_is_refused() {
        assert_eq!(
            parse_mac("02:42:AC:12:00:02").unwrap(),
            [0x02, 0x42, 0xac, 0x12, 0x00, 0x02]
        );
        assert_eq!(
            parse_mac(&mac_for(Ipv4Addr::new(10, 0, 0, 1))).unwrap(),
            [0x02, 0x42, 10, 0, 0, 1]
        );
        for bad in [
            "",
            "02:42:ac:12:00",
            "02:42:ac:12:00:02:03",
            "02:42:ac:12:0:2",
            "zz:42:ac:12:00:02",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "+2:42:ac:12:00:02",
        ] {
            assert!(
                matches!(parse_mac(bad), Err(LinkError::InvalidMac { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sysctl_paths_stay_under_proc_sys_net() {
        assert_eq!(
            sysctl_path("ipv4/conf/dm-0123456789ab/route_localnet").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/dm-0123456789ab/route_localnet")
        );
        for bad in [
            "",
            "../kernel/x",
            "ipv4//x",
            "/ipv4/x",
            "ipv4/./x",
            "a b",
            "ipv4/x\n",
        ] {
            assert!(
                matches!(sysctl_path(bad), Err(LinkError::InvalidSysctl { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            set_ipv4_conf("eth0", "../../x", "1"),
            Err(LinkError::InvalidSysctl { .. })
        ));
        assert!(matches!(
            write_sysctl("ipv4/ip_forward", "1\n0"),
            Err(LinkError::InvalidSysctlValue { .. })
        ));
    }

    #[test]
    fn errors_are_categorized_by_errno() {
        let exists = LinkError::Op {
            op: "create",
            name: "x".into(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        };
        assert_eq!(exists.category(), Category::Conflict);
        let missing = LinkError::Op {
            op: "delete",
            name: "x".into(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        };
        assert_eq!(missing.category(), Category::NotFound);
        assert_eq!(exists.to_string(), "create x: File exists (os error 17)");
    }
}
