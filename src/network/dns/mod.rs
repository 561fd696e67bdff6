//! The DNS server `dockmaster netd` runs on every network's gateway address: container names,
//! service names, aliases and short ids resolve to their addresses on that network only
//! (replicas round-robin, PTR for our addresses); every other name is relayed to the host's
//! upstream resolvers, or to a container's own `dns:` servers.
//!
//! [`Records`] is the name table, computed from the stored networks and endpoints; [`Server`]
//! serves it over UDP and TCP and takes a new table or a new set of listen addresses without
//! restarting anything else.

mod forward;
mod packet;
mod records;
mod server;

use std::io;
use std::net::{IpAddr, SocketAddr};

pub use records::Records;
pub use server::{Server, ServerOptions};

use crate::error::{Categorized, Category};

/// The port resolvers use.
pub const DNS_PORT: u16 = 53;

/// glibc reads at most 3 nameservers; more is never useful and would only lengthen the time
/// a failing query takes.
const MAX_UPSTREAMS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("dns for network {network}: binding {proto} {addr}: {source}")]
    Bind {
        network: String,
        addr: SocketAddr,
        proto: &'static str,
        source: io::Error,
    },
    #[error("dns for network {network}: listening on {addr} needs a tokio runtime")]
    NoRuntime { network: String, addr: SocketAddr },
}

impl Categorized for DnsError {
    fn category(&self) -> Category {
        match self {
            DnsError::Bind { source, .. } => match source.kind() {
                io::ErrorKind::AddrInUse => Category::Conflict,
                io::ErrorKind::AddrNotAvailable | io::ErrorKind::InvalidInput => Category::Invalid,
                _ => Category::Internal,
            },
            DnsError::NoRuntime { .. } => Category::Internal,
        }
    }
}

/// The upstream resolvers named by `nameserver` lines of a resolv.conf, port 53, in order,
/// without duplicates, at most 3 (as glibc). Unparsable lines are skipped; an IPv6 address
/// with a zone (`fe80::1%eth0`) is kept only when the zone is numeric.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else {
            continue;
        };
        let addr = match word.split_once('%') {
            None => word
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, DNS_PORT)),
            Some((ip, zone)) => format!("[{ip}%{zone}]:{DNS_PORT}").parse().ok(),
        };
        let Some(addr) = addr.filter(|a| !a.ip().is_unspecified()) else {
            continue;
        };
        if !upstreams.contains(&addr) {
            upstreams.push(addr);
        }
        if upstreams.len() == MAX_UPSTREAMS {
            break;
        }
    }
    upstreams
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\n\
            search corp.example\n\
            nameserver 10.0.0.53 # trailing words are ignored\n\
            ;nameserver 10.9.9.9\n\
            nameserver\n\
            nameserver not-an-ip\n\
            \tnameserver   2001:db8::53\n\
            nameserver 10.0.0.53\n\
            nameserver fe80::1%eth0\n\
            nameserver 0.0.0.0\n\
            nameserver fe80::2%3\n\
            nameserver 192.0.2.1\n\
            options ndots:2\n";
        let upstreams = upstreams_from_resolv_conf(text);
        let expected: Vec<SocketAddr> = vec![
            "10.0.0.53:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap(),
            "[fe80::2%3]:53".parse().unwrap(),
        ];
        assert_eq!(upstreams, expected);
        assert!(upstreams_from_resolv_conf("").is_empty());
    }

    #[test]
    fn bind_errors_are_categorised() {
        let error = |kind| DnsError::Bind {
            network: "front".into(),
            addr: "10.1.0.1:53".parse().unwrap(),
            proto: "udp",
            source: io::Error::from(kind),
        };
        assert_eq!(
            error(io::ErrorKind::AddrInUse).category(),
            Category::Conflict
        );
        let message = error(io::ErrorKind::AddrInUse).to_string();
        assert!(message.starts_with("dns for network front: binding udp 10.1.0.1:53: "));
    }
}
