//! Published ports: Docker/Compose port specs, host port choice and conflict checks.
//!
//! A spec is `[host_ip:][host_port[-end]:]container_port[-end][/tcp|/udp]`, the grammar of
//! Docker's `-p` and Compose's short `ports:` syntax (go-connections `ParsePortSpec`):
//! - `80`, `80-82`: container ports, each published on a random free host port;
//! - `8080:80`, `8080-8082:80-82`: fixed host ports, one per container port (equal lengths);
//! - `8000-8010:80`: one container port on the first free host port of the range;
//! - `127.0.0.1:8080:80`, `127.0.0.1::80`, `:8080:80`: with a host address (empty means all).
//!
//! The protocol defaults to tcp and is case-insensitive. IPv6 host addresses (`[::1]:80:80`)
//! are refused: dockmaster's NAT is IPv4 only for now.
//!
//! Host ports published by dockmaster are DNAT rules, not sockets, so two checks are needed
//! before publishing: against other containers' mappings ([`check_conflicts`], from the
//! endpoint store) and against sockets of other processes ([`check_host_free`], by binding).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType};

use super::model::{PortMapping, Proto};
use crate::error::{Categorized, Category};

/// Longest spec accepted (a valid one is at most ~40 bytes); bounds error messages too.
const SPEC_MAX: usize = 128;

/// How many ephemeral ports are tried before giving up when each one the kernel offers is
/// already published by a container (our DNAT rules hold no socket the kernel would see).
const EPHEMERAL_ATTEMPTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid port spec {spec:?}: {reason}")]
    Invalid { spec: String, reason: String },
    #[error(
        "host port {port}/{proto} is already published by container {container} ({existing}), \
         requested as {requested}"
    )]
    Conflict {
        port: u16,
        proto: Proto,
        container: String,
        existing: Shown,
        requested: Shown,
    },
    #[error("host port {port}/{proto} is requested twice ({first} and {second})")]
    Duplicate {
        port: u16,
        proto: Proto,
        first: Shown,
        second: Shown,
    },
    #[error("host port {addr}/{proto} is already in use: another process on the host holds it")]
    HostPortBusy { addr: SocketAddrV4, proto: Proto },
    #[error("host address {addr} (for port {port}/{proto}) is not an address of this host")]
    AddressNotLocal {
        addr: Ipv4Addr,
        port: u16,
        proto: Proto,
    },
    #[error("no free host port for {container_port}/{proto} in {start}-{end}")]
    RangeExhausted {
        container_port: u16,
        proto: Proto,
        start: u16,
        end: u16,
    },
    #[error("no free ephemeral host port for {host_ip}/{proto} after {attempts} attempts")]
    EphemeralExhausted {
        host_ip: Ipv4Addr,
        proto: Proto,
        attempts: usize,
    },
    #[error("probing host port {addr}/{proto}: {source}")]
    Io {
        addr: SocketAddrV4,
        proto: Proto,
        #[source]
        source: io::Error,
    },
}

impl Categorized for PortError {
    fn category(&self) -> Category {
        match self {
            PortError::Invalid { .. } | PortError::AddressNotLocal { .. } => Category::Invalid,
            PortError::Conflict { .. }
            | PortError::Duplicate { .. }
            | PortError::HostPortBusy { .. }
            | PortError::RangeExhausted { .. }
            | PortError::EphemeralExhausted { .. } => Category::Conflict,
            PortError::Io { .. } => Category::Internal,
        }
    }
}

/// A mapping as users write it: `0.0.0.0:8080->80/tcp` (Docker's `docker port` form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown(pub PortMapping);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{}:{}->{}/{}",
            m.host_ip, m.host_port, m.container_port, m.proto
        )
    }
}

/// Host ports of a spec before allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPorts {
    /// Not given (`80`, `127.0.0.1::80`, or host port `0`): each container port gets a free
    /// ephemeral port when the container is started.
    Unspecified,
    /// `start..=end`; when the container side is a single port and the range is longer, the
    /// first free port of the range is used, otherwise ports map one to one.
    Range { start: u16, end: u16 },
}

/// One parsed port spec, host ports not yet chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `None`: every host address (`0.0.0.0`).
    pub host_ip: Option<Ipv4Addr>,
    pub host_ports: HostPorts,
    pub container_start: u16,
    pub container_end: u16,
    pub proto: Proto,
}

impl PortSpec {
    /// Parses one short-syntax spec (see the module documentation).
    pub fn parse(spec: &str) -> Result<PortSpec, PortError> {
        let invalid = |reason: String| PortError::Invalid {
            spec: shorten(spec),
            reason,
        };
        if spec.len() > SPEC_MAX {
            return Err(invalid(format!("longer than {SPEC_MAX} bytes")));
        }
        if spec.is_empty() {
            return Err(invalid("empty".into()));
        }
        if spec.starts_with('[') {
            return Err(invalid(
                "IPv6 host addresses are not supported yet (dockmaster publishes IPv4 only)".into(),
            ));
        }
        let parts: Vec<&str> = spec.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => (Some(*ip), Some(*h), *c),
            _ => {
                return Err(invalid(
                    "too many ':' (IPv6 host addresses are not supported yet)".into(),
                ))
            }
        };
        let (container, proto) = match container.split_once('/') {
            None => (container, Proto::Tcp),
            Some((port, proto)) => (port, parse_proto(proto).map_err(invalid)?),
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(ip) => Some(
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| invalid(format!("invalid host address {ip:?}")))?,
            ),
        };
        if container.is_empty() {
            return Err(invalid("no container port".into()));
        }
        let (container_start, container_end) =
            parse_range(container, "container").map_err(invalid)?;
        if container_start == 0 {
            return Err(invalid("container port 0 is not a port".into()));
        }
        let host_ports = match host {
            None | Some("") => HostPorts::Unspecified,
            Some(h) => match parse_range(h, "host").map_err(invalid)? {
                // Docker treats host port 0 as "any port".
                (0, 0) => HostPorts::Unspecified,
                (0, _) => return Err(invalid("host port range starts at 0".into())),
                (start, end) => HostPorts::Range { start, end },
            },
        };
        if let HostPorts::Range { start, end } = host_ports {
            let host_len = end - start;
            let container_len = container_end - container_start;
            if host_len != container_len && container_len != 0 {
                return Err(invalid(format!(
                    "host range {start}-{end} and container range \
                     {container_start}-{container_end} differ in length"
                )));
            }
        }
        Ok(PortSpec {
            host_ip,
            host_ports,
            container_start,
            container_end,
            proto,
        })
    }

    /// Compose's long syntax (`host_ip`, `published`, `target`, `protocol`), through the
    /// same grammar: `published` may be a port, a range or absent; `target` a port or range.
    pub fn from_long(
        host_ip: Option<&str>,
        published: Option<&str>,
        target: &str,
        protocol: Option<&str>,
    ) -> Result<PortSpec, PortError> {
        if host_ip.is_some_and(|ip| ip.contains(':')) {
            return Err(PortError::Invalid {
                spec: shorten(host_ip.unwrap_or_default()),
                reason: "IPv6 host addresses are not supported yet \
                         (dockmaster publishes IPv4 only)"
                    .into(),
            });
        }
        for field in [published, Some(target), protocol].into_iter().flatten() {
            if field.contains([':', '/']) {
                return Err(PortError::Invalid {
                    spec: shorten(field),
                    reason: "a long-syntax field holds one value (no ':' or '/')".into(),
                });
            }
        }
        let mut text = String::new();
        if let Some(ip) = host_ip.filter(|ip| !ip.is_empty()) {
            text.push_str(ip);
            text.push(':');
        }
        if published.is_some() || !text.is_empty() {
            text.push_str(published.unwrap_or(""));
            text.push(':');
        }
        text.push_str(target);
        if let Some(proto) = protocol {
            text.push('/');
            text.push_str(proto);
        }
        PortSpec::parse(&text)
    }

    /// The spec's container ports.
    pub fn container_ports(&self) -> RangeInclusive<u16> {
        self.container_start..=self.container_end
    }

    /// The host address the mappings bind, `0.0.0.0` for all.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Mappings with host ports that need no choice (one-to-one fixed ports), else `None`.
    pub fn fixed_mappings(&self) -> Option<Vec<PortMapping>> {
        match self.host_ports {
            HostPorts::Range { start, end }
                if end - start == self.container_end - self.container_start =>
            {
                let hosts: Vec<u16> = (start..=end).collect();
                self.expand(&hosts).ok()
            }
            _ => None,
        }
    }

    /// Mappings once host ports are chosen: `host_ports[i]` serves the i-th container port.
    /// Chosen ports must lie in the spec's host range when it has one.
    pub fn expand(&self, host_ports: &[u16]) -> Result<Vec<PortMapping>, PortError> {
        let count = usize::from(self.container_end - self.container_start) + 1;
        let invalid = |reason: String| PortError::Invalid {
            spec: self.to_string(),
            reason,
        };
        if host_ports.len() != count {
            return Err(invalid(format!(
                "{} host ports chosen for {count} container ports",
                host_ports.len()
            )));
        }
        let mut out = Vec::with_capacity(count);
        for (container_port, &host_port) in self.container_ports().zip(host_ports) {
            if host_port == 0 {
                return Err(invalid("host port 0 chosen".into()));
            }
            if let HostPorts::Range { start, end } = self.host_ports {
                if !(start..=end).contains(&host_port) {
                    return Err(invalid(format!(
                        "host port {host_port} is outside {start}-{end}"
                    )));
                }
            }
            out.push(PortMapping {
                host_ip: self.host_addr(),
                host_port,
                container_port,
                proto: self.proto,
            });
        }
        Ok(out)
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        match self.host_ports {
            HostPorts::Unspecified if self.host_ip.is_some() => f.write_str(":")?,
            HostPorts::Unspecified => {}
            HostPorts::Range { start, end } if start == end => write!(f, "{start}:")?,
            HostPorts::Range { start, end } => write!(f, "{start}-{end}:")?,
        }
        if self.container_start == self.container_end {
            write!(f, "{}/{}", self.container_start, self.proto)
        } else {
            write!(
                f,
                "{}-{}/{}",
                self.container_start, self.container_end, self.proto
            )
        }
    }
}

fn shorten(spec: &str) -> String {
    if spec.len() <= SPEC_MAX {
        return spec.to_string();
    }
    let mut end = SPEC_MAX;
    while !spec.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &spec[..end])
}

fn parse_proto(proto: &str) -> Result<Proto, String> {
    match proto.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "sctp" => Err("sctp is not supported (tcp or udp)".into()),
        _ => Err(format!("unknown protocol {proto:?} (tcp or udp)")),
    }
}

fn parse_port(text: &str, side: &str) -> Result<u16, String> {
    // u16::from_str accepts a leading '+'; ports are plain digits.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid {side} port {text:?}"));
    }
    text.parse::<u16>()
        .map_err(|_| format!("{side} port {text} is out of range (1-65535)"))
}

fn parse_range(text: &str, side: &str) -> Result<(u16, u16), String> {
    match text.split_once('-') {
        None => {
            let port = parse_port(text, side)?;
            Ok((port, port))
        }
        Some((start, end)) => {
            let start = parse_port(start, side)?;
            let end = parse_port(end, side)?;
            if end < start {
                return Err(format!(
                    "{side} port range {start}-{end} ends before it starts"
                ));
            }
            Ok((start, end))
        }
    }
}

/// Whether two mappings claim the same host socket: same protocol and port, and the same
/// address or either on all addresses.
pub fn overlaps(a: &PortMapping, b: &PortMapping) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
}

/// Refuses `new` mappings that claim a host port already published by a container in
/// `existing` (container name, mapping), or twice within `new`.
pub fn check_conflicts(
    existing: &[(String, PortMapping)],
    new: &[PortMapping],
) -> Result<(), PortError> {
    for (i, wanted) in new.iter().enumerate() {
        if let Some((container, held)) = existing.iter().find(|(_, m)| overlaps(m, wanted)) {
            return Err(PortError::Conflict {
                port: wanted.host_port,
                proto: wanted.proto,
                container: container.clone(),
                existing: Shown(*held),
                requested: Shown(*wanted),
            });
        }
        if let Some(first) = new[..i].iter().find(|m| overlaps(m, wanted)) {
            return Err(PortError::Duplicate {
                port: wanted.host_port,
                proto: wanted.proto,
                first: Shown(*first),
                second: Shown(*wanted),
            });
        }
    }
    Ok(())
}

/// A socket of `proto` bound to `addr` (port 0: an ephemeral port) in the calling thread's
/// network namespace, never listening. TCP sets SO_REUSEADDR so that connections in
/// TIME_WAIT do not count as holders (a listener or bound socket still does); UDP does not,
/// so a socket that itself set SO_REUSEADDR is still seen.
fn probe_bind(addr: SocketAddrV4, proto: Proto) -> Result<OwnedFd, Errno> {
    let kind = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None)?;
    if proto == Proto::Tcp {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in that outlives the call, and the length passed is
    // its size; `fd` is an open socket we own.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    Errno::result(rc)?;
    Ok(fd)
}

/// The local port a bound IPv4 socket got.
fn bound_port(fd: &OwnedFd) -> Result<u16, Errno> {
    // SAFETY: an all-zero sockaddr_in is a valid value of this plain C struct.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sin` and `len` are valid for writes and `len` holds the buffer's size; the
    // kernel writes at most `len` bytes. `fd` is an open AF_INET socket we own.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut sin as *mut libc::sockaddr_in).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    Errno::result(rc)?;
    Ok(u16::from_be(sin.sin_port))
}

fn probe_error(addr: SocketAddrV4, proto: Proto, errno: Errno) -> PortError {
    match errno {
        Errno::EADDRINUSE => PortError::HostPortBusy { addr, proto },
        Errno::EADDRNOTAVAIL => PortError::AddressNotLocal {
            addr: *addr.ip(),
            port: addr.port(),
            proto,
        },
        other => PortError::Io {
            addr,
            proto,
            source: io::Error::from(other),
        },
    }
}

/// Refuses mappings whose host port a process on the host holds (a listening or bound
/// socket), found by binding it briefly in the calling thread's network namespace.
///
/// Racy by nature: a process may bind the port right after the check; from then on our
/// DNAT rule shadows its socket for traffic from other hosts and from the host itself.
pub fn check_host_free(mappings: &[PortMapping]) -> Result<(), PortError> {
    for m in mappings {
        let addr = SocketAddrV4::new(m.host_ip, m.host_port);
        probe_bind(addr, m.proto).map_err(|e| probe_error(addr, m.proto, e))?;
    }
    Ok(())
}

/// Picks a free ephemeral host port for `proto` on `host_ip` in the calling thread's
/// network namespace: binds port 0, reads the kernel's choice back and closes the socket.
/// Ports for which `taken` is true (published by containers: DNAT rules hold no socket, so
/// the kernel may offer them) are skipped.
///
/// Racy: the port is free when probed, another process may bind it before the DNAT rule is
/// in place (and afterwards it would be shadowed); the kernel's ephemeral range
/// (net.ipv4.ip_local_port_range) is also where outgoing connections take their ports.
pub fn pick_free_port(
    host_ip: Ipv4Addr,
    proto: Proto,
    taken: impl Fn(u16) -> bool,
) -> Result<u16, PortError> {
    let addr = SocketAddrV4::new(host_ip, 0);
    for _ in 0..EPHEMERAL_ATTEMPTS {
        let fd = probe_bind(addr, proto).map_err(|e| probe_error(addr, proto, e))?;
        let port = bound_port(&fd).map_err(|e| PortError::Io {
            addr,
            proto,
            source: io::Error::from(e),
        })?;
        if port != 0 && !taken(port) {
            return Ok(port);
        }
    }
    Err(PortError::EphemeralExhausted {
        host_ip,
        proto,
        attempts: EPHEMERAL_ATTEMPTS,
    })
}

/// Turns specs into mappings for one container: fixed ports as given, unspecified ones on
/// free ephemeral ports, a host range for one container port on its first free port; then
/// checks the result against `existing` (other containers' mappings, with their names) and
/// against sockets on the host. Runs in the calling thread's network namespace.
pub fn allocate(
    specs: &[PortSpec],
    existing: &[(String, PortMapping)],
) -> Result<Vec<PortMapping>, PortError> {
    let mut chosen: Vec<PortMapping> = Vec::new();
    for spec in specs {
        let host_ip = spec.host_addr();
        let is_taken = |chosen: &[PortMapping], port: u16| {
            let probe = PortMapping {
                host_ip,
                host_port: port,
                container_port: 0,
                proto: spec.proto,
            };
            existing.iter().any(|(_, m)| overlaps(m, &probe))
                || chosen.iter().any(|m| overlaps(m, &probe))
        };
        if let Some(fixed) = spec.fixed_mappings() {
            chosen.extend(fixed);
            continue;
        }
        match spec.host_ports {
            HostPorts::Unspecified => {
                let mut hosts = Vec::new();
                for _ in spec.container_ports() {
                    let port = pick_free_port(host_ip, spec.proto, |p| {
                        is_taken(&chosen, p) || hosts.contains(&p)
                    })?;
                    hosts.push(port);
                }
                chosen.extend(spec.expand(&hosts)?);
            }
            HostPorts::Range { start, end } => {
                // A single container port over a longer host range (parse guarantees it).
                let mut found = None;
                for port in start..=end {
                    if is_taken(&chosen, port) {
                        continue;
                    }
                    let candidate = SocketAddrV4::new(host_ip, port);
                    match probe_bind(candidate, spec.proto) {
                        Ok(_) => {
                            found = Some(port);
                            break;
                        }
                        Err(Errno::EADDRINUSE) => continue,
                        Err(e) => return Err(probe_error(candidate, spec.proto, e)),
                    }
                }
                let port = found.ok_or(PortError::RangeExhausted {
                    container_port: spec.container_start,
                    proto: spec.proto,
                    start,
                    end,
                })?;
                chosen.extend(spec.expand(&[port])?);
            }
        }
    }
    check_conflicts(existing, &chosen)?;
    check_host_free(&chosen)?;
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, UdpSocket};

    use super::*;

    const ALL: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
    const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

    fn m(host_ip: Ipv4Addr, host_port: u16, container_port: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip,
            host_port,
            container_port,
            proto,
        }
    }

    fn spec(
        host_ip: Option<Ipv4Addr>,
        host_ports: HostPorts,
        container: (u16, u16),
        proto: Proto,
    ) -> PortSpec {
        PortSpec {
            host_ip,
            host_ports,
            container_start: container.0,
            container_end: container.1,
            proto,
        }
    }

    fn range(start: u16, end: u16) -> HostPorts {
        HostPorts::Range { start, end }
    }

    #[test]
    fn parses_every_form_of_the_short_syntax() {
        use HostPorts::Unspecified;
        use Proto::{Tcp, Udp};
        let ip = Some(Ipv4Addr::new(192, 168, 1, 10));
        let cases: Vec<(&str, PortSpec)> = vec![
            ("80", spec(None, Unspecified, (80, 80), Tcp)),
            ("80/udp", spec(None, Unspecified, (80, 80), Udp)),
            ("80/UDP", spec(None, Unspecified, (80, 80), Udp)),
            ("80/", spec(None, Unspecified, (80, 80), Tcp)),
            ("3000-3005", spec(None, Unspecified, (3000, 3005), Tcp)),
            ("8080:80", spec(None, range(8080, 8080), (80, 80), Tcp)),
            ("0:80", spec(None, Unspecified, (80, 80), Tcp)),
            (":80", spec(None, Unspecified, (80, 80), Tcp)),
            ("::80", spec(None, Unspecified, (80, 80), Tcp)),
            (":8080:80", spec(None, range(8080, 8080), (80, 80), Tcp)),
            ("127.0.0.1::80", spec(Some(LO), Unspecified, (80, 80), Tcp)),
            (
                "127.0.0.1:8001:8001",
                spec(Some(LO), range(8001, 8001), (8001, 8001), Tcp),
            ),
            (
                "0.0.0.0:53:53/udp",
                spec(Some(ALL), range(53, 53), (53, 53), Udp),
            ),
            (
                "9090-9091:8080-8081",
                spec(None, range(9090, 9091), (8080, 8081), Tcp),
            ),
            (
                "192.168.1.10:5000-5010:5000-5010/udp",
                spec(ip, range(5000, 5010), (5000, 5010), Udp),
            ),
            ("8000-8010:80", spec(None, range(8000, 8010), (80, 80), Tcp)),
            ("65535:1", spec(None, range(65535, 65535), (1, 1), Tcp)),
        ];
        for (text, want) in cases {
            let got = PortSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            // Display gives a spec that parses back to the same value.
            assert_eq!(
                PortSpec::parse(&got.to_string()).unwrap(),
                want,
                "{text} -> {got}"
            );
        }
    }

    #[test]
    fn refuses_malformed_specs_with_the_reason() {
        let cases = [
            ("", "empty"),
            ("[::1]:80:80", "IPv6"),
            ("::1:80:80", "IPv6"),
            ("fe80::1:8080:80", "too many ':'"),
            ("80/sctp", "sctp is not supported"),
            ("80/icmp", "unknown protocol"),
            ("8080:", "no container port"),
            ("/udp", "no container port"),
            ("0", "container port 0"),
            ("abc", "invalid container port"),
            ("+80", "invalid container port"),
            ("-80", "invalid container port"),
            ("80-", "invalid container port"),
            ("65536", "out of range"),
            ("99999999999999999999", "out of range"),
            ("90-80", "ends before it starts"),
            ("8080-8070:80", "ends before it starts"),
            ("0-10:80", "starts at 0"),
            ("localhost:8080:80", "invalid host address"),
            ("1.2.3:8080:80", "invalid host address"),
            ("1.2.3.4:80", "invalid host port"),
            ("8080:80-81", "differ in length"),
            ("8080-8082:80-81", "differ in length"),
        ];
        for (text, reason) in cases {
            match PortSpec::parse(text) {
                Err(e @ PortError::Invalid { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(reason), "{text}: {msg}");
                    assert!(msg.contains(&format!("{text:?}")), "{text}: {msg}");
                    assert_eq!(e.category(), Category::Invalid);
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let long = "1".repeat(10_000);
        let msg = PortSpec::parse(&long).unwrap_err().to_string();
        assert!(msg.contains("longer than") && msg.len() < 400, "{msg}");
    }

    #[test]
    fn long_syntax_goes_through_the_same_grammar() {
        let long = |ip, published, target, proto| PortSpec::from_long(ip, published, target, proto);
        assert_eq!(
            long(None, Some("8080"), "80", Some("udp")).unwrap(),
            spec(None, range(8080, 8080), (80, 80), Proto::Udp)
        );
        assert_eq!(
            long(Some("127.0.0.1"), None, "80", None).unwrap(),
            spec(Some(LO), HostPorts::Unspecified, (80, 80), Proto::Tcp)
        );
        assert_eq!(
            long(Some(""), Some("9090-9091"), "8080-8081", Some("tcp")).unwrap(),
            spec(None, range(9090, 9091), (8080, 8081), Proto::Tcp)
        );
        assert_eq!(
            long(None, None, "80", None).unwrap(),
            spec(None, HostPorts::Unspecified, (80, 80), Proto::Tcp)
        );
        let err = long(Some("::1"), Some("80"), "80", None).unwrap_err();
        assert!(err.to_string().contains("IPv6"), "{err}");
        for (published, target, proto) in [
            (Some("80"), "80:81", None),
            (Some("1.2.3.4:80"), "80", None),
            (None, "80/udp", Some("tcp")),
        ] {
            let err = long(None, published, target, proto).unwrap_err();
            assert!(err.to_string().contains("one value"), "{err}");
        }
    }

    #[test]
    fn expands_ranges_one_to_one_after_ports_are_chosen() {
        let s = PortSpec::parse("127.0.0.1:9090-9092:8080-8082/udp").unwrap();
        let want = vec![
            m(LO, 9090, 8080, Proto::Udp),
            m(LO, 9091, 8081, Proto::Udp),
            m(LO, 9092, 8082, Proto::Udp),
        ];
        assert_eq!(s.fixed_mappings().unwrap(), want);
        assert_eq!(s.expand(&[9090, 9091, 9092]).unwrap(), want);
        assert!(s.expand(&[9090, 9091]).is_err(), "count must match");
        assert!(
            s.expand(&[9090, 9091, 9999]).is_err(),
            "outside the host range"
        );

        let random = PortSpec::parse("3000-3001").unwrap();
        assert_eq!(random.fixed_mappings(), None);
        assert_eq!(
            random.expand(&[40001, 40007]).unwrap(),
            vec![
                m(ALL, 40001, 3000, Proto::Tcp),
                m(ALL, 40007, 3001, Proto::Tcp)
            ]
        );
        assert!(random.expand(&[0, 1]).is_err());

        let pick = PortSpec::parse("8000-8010:80").unwrap();
        assert_eq!(
            pick.fixed_mappings(),
            None,
            "one port of the range is chosen"
        );
        assert_eq!(
            pick.expand(&[8004]).unwrap(),
            vec![m(ALL, 8004, 80, Proto::Tcp)]
        );
    }

    #[test]
    fn conflicts_name_the_container_holding_the_port() {
        let existing = vec![
            ("web".to_string(), m(ALL, 8080, 80, Proto::Tcp)),
            ("dns".to_string(), m(LO, 5353, 53, Proto::Udp)),
        ];
        // 0.0.0.0 overlaps any address.
        let err = check_conflicts(&existing, &[m(LO, 8080, 81, Proto::Tcp)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host port 8080/tcp is already published by container web (0.0.0.0:8080->80/tcp), \
             requested as 127.0.0.1:8080->81/tcp"
        );
        assert_eq!(err.category(), Category::Conflict);
        let err = check_conflicts(&existing, &[m(ALL, 5353, 53, Proto::Udp)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("by container dns (127.0.0.1:5353->53/udp)"),
            "{err}"
        );

        // Other protocol, other port, other specific address: no conflict.
        let fine = [
            m(ALL, 8080, 80, Proto::Udp),
            m(ALL, 8081, 80, Proto::Tcp),
            m(Ipv4Addr::new(127, 0, 0, 2), 5353, 53, Proto::Udp),
        ];
        check_conflicts(&existing, &fine).unwrap();

        // Twice in the same request.
        let err = check_conflicts(
            &[],
            &[m(ALL, 9000, 1, Proto::Tcp), m(LO, 9000, 2, Proto::Tcp)],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host port 9000/tcp is requested twice (0.0.0.0:9000->1/tcp and 127.0.0.1:9000->2/tcp)"
        );
    }

    #[test]
    fn overlap_is_symmetric() {
        let a = m(ALL, 80, 1, Proto::Tcp);
        let b = m(LO, 80, 2, Proto::Tcp);
        let c = m(Ipv4Addr::new(10, 0, 0, 1), 80, 3, Proto::Tcp);
        assert!(overlaps(&a, &b) && overlaps(&b, &a));
        assert!(overlaps(&a, &c) && overlaps(&c, &a));
        assert!(!overlaps(&b, &c) && !overlaps(&c, &b));
    }

    // The probes below bind sockets on 127.0.0.1 only (no traffic, nothing listens).

    #[test]
    fn a_port_held_by_another_process_is_refused() {
        let tcp = TcpListener::bind((LO, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        let err = check_host_free(&[m(LO, port, 80, Proto::Tcp)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("host port 127.0.0.1:{port}/tcp is already in use: another process on the host holds it")
        );
        // A UDP socket on the same number is a different port.
        check_host_free(&[m(LO, port, 80, Proto::Udp)]).unwrap_or_else(|e| {
            // Only if some other process happens to hold that UDP port.
            assert!(matches!(e, PortError::HostPortBusy { .. }), "{e}");
        });

        let udp = UdpSocket::bind((LO, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        let err = check_host_free(&[m(LO, port, 53, Proto::Udp)]).unwrap_err();
        assert!(
            matches!(
                err,
                PortError::HostPortBusy {
                    proto: Proto::Udp,
                    ..
                }
            ),
            "{err}"
        );
        drop(udp);
        check_host_free(&[m(LO, port, 53, Proto::Udp)]).unwrap();

        // An address that is not the host's.
        let err =
            check_host_free(&[m(Ipv4Addr::new(192, 0, 2, 77), 8080, 80, Proto::Tcp)]).unwrap_err();
        assert!(matches!(err, PortError::AddressNotLocal { .. }), "{err}");
        assert!(err.to_string().contains("192.0.2.77"), "{err}");
    }

    #[test]
    fn picks_free_ports_and_skips_published_ones() {
        let first = pick_free_port(LO, Proto::Tcp, |_| false).unwrap();
        assert_ne!(first, 0);
        // The port is free: it can be bound right after.
        drop(TcpListener::bind((LO, first)).unwrap());
        let next = pick_free_port(LO, Proto::Udp, |p| p == first).unwrap();
        assert_ne!(next, first);
        let err = pick_free_port(LO, Proto::Tcp, |_| true).unwrap_err();
        assert!(matches!(err, PortError::EphemeralExhausted { .. }), "{err}");
    }

    #[test]
    fn allocate_chooses_host_ports_and_checks_them() {
        let holder = TcpListener::bind((LO, 0)).unwrap();
        let held = holder.local_addr().unwrap().port();
        let existing = vec![("web".to_string(), m(ALL, 18080, 80, Proto::Tcp))];

        let specs = [
            PortSpec::parse("127.0.0.1::80").unwrap(),
            PortSpec::parse("127.0.0.1:18081:81/udp").unwrap(),
            PortSpec::parse("127.0.0.1:18080-18090:82").unwrap(),
        ];
        let got = allocate(&specs, &existing).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].host_ip, got[0].container_port), (LO, 80));
        assert_ne!(got[0].host_port, 18080);
        assert_eq!(got[1], m(LO, 18081, 81, Proto::Udp));
        // 18080 is published by web: the range gives the next one (unless held on the host).
        assert!(
            got[2].host_port > 18080 && got[2].host_port <= 18090,
            "{got:?}"
        );

        let err = allocate(&[PortSpec::parse("18080:80").unwrap()], &existing).unwrap_err();
        assert!(err.to_string().contains("container web"), "{err}");
        let err = allocate(
            &[PortSpec::parse(&format!("127.0.0.1:{held}:80")).unwrap()],
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, PortError::HostPortBusy { .. }), "{err}");
        let err = allocate(
            &[PortSpec::parse(&format!("127.0.0.1:{held}-{held}:80")).unwrap()],
            &[],
        );
        assert!(err.is_err());
        let specs = [PortSpec::parse(&format!("127.0.0.1:{held}:80")).unwrap()];
        let err = allocate(&specs, &[]).unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
    }
}
