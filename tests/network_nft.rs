//! dockmaster's nftables table with real traffic, as root, entirely inside network
//! namespaces this test creates: a "host" namespace with bridges (one per network), a
//! namespace per "container" attached to a bridge by a veth pair, and an "outside" namespace
//! joined to the host by a veth (its "uplink"). The machine's own namespace is never changed.
//! Links are made with `ip` here because the rtnetlink code is not this module's.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dockmaster::network::model::{
    bridge_name, mac_for, veth_name, Endpoint, NetworkConfig, PortMapping, Proto,
};
use dockmaster::network::nft;
use ipnet::Ipv4Net;
use nix::sched::{setns, CloneFlags};

const TIMEOUT: Duration = Duration::from_millis(1500);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace (`ip netns add`), deleted on drop with everything in it.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str, role: &str) -> Netns {
        let name = format!("dmt-{tag}-{role}");
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread that joined this namespace: sockets it creates (and children it
    /// spawns) live there, and may be used from any thread afterwards.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    fn sysctl(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(move || {
            std::fs::read_to_string(path)
                .expect("read sysctl")
                .trim()
                .to_string()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A unique tag per test so parallel tests never share namespace names.
fn tag(test: &str) -> String {
    format!("{}-{test}", std::process::id() % 100_000)
}

fn network(name: &str, subnet: &str, internal: bool) -> NetworkConfig {
    let id = format!("{:0>64}", hex_of(name));
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

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn mapping(host_ip: Ipv4Addr, host_port: u16, container_port: u16, proto: Proto) -> PortMapping {
    PortMapping {
        host_ip,
        host_port,
        container_port,
        proto,
    }
}

/// A "container": its own namespace, attached to `net`'s bridge in `host`.
struct Container {
    ns: Netns,
    endpoint: Endpoint,
}

fn attach(tag: &str, host: &Netns, net: &NetworkConfig, name: &str, last: u8) -> Container {
    let ns = Netns::new(tag, name);
    let id = format!("{:0>64}", hex_of(name));
    let o = net.subnet.network().octets();
    let addr = Ipv4Addr::new(o[0], o[1], o[2], last);
    let veth = veth_name(&id, &net.name);
    let h = host.name.as_str();
    ip(&[
        "-n", h, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ]);
    ip(&["-n", h, "link", "set", &veth, "master", &net.bridge, "up"]);
    let cidr = format!("{addr}/{}", net.subnet.prefix_len());
    ip(&["-n", &ns.name, "addr", "add", &cidr, "dev", "eth0"]);
    ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
    let gw = net.gateway.to_string();
    ip(&["-n", &ns.name, "route", "add", "default", "via", &gw]);
    Container {
        ns,
        endpoint: Endpoint {
            container_id: id.clone(),
            container_name: name.into(),
            network: net.name.clone(),
            ip: addr,
            mac: mac_for(addr),
            ifname: "eth0".into(),
            host_veth: veth,
            aliases: vec![],
            ports: vec![],
            dns: vec![],
        },
    }
}

fn add_bridge(host: &Netns, net: &NetworkConfig) {
    let h = host.name.as_str();
    ip(&["-n", h, "link", "add", &net.bridge, "type", "bridge"]);
    let cidr = net.gateway_net().to_string();
    ip(&["-n", h, "addr", "add", &cidr, "dev", &net.bridge]);
    ip(&["-n", h, "link", "set", &net.bridge, "up"]);
}

/// A TCP server in a namespace answering every connection with `<label> <peer address>`.
struct TcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    fn start(ns: &Netns, addr: SocketAddrV4, label: &str) -> TcpServer {
        let listener = ns.run(move || TcpListener::bind(addr).expect("bind server"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let label = label.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = writeln!(stream, "{label} {}", peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP server answering each datagram with `<label> <peer address>`.
struct UdpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    fn start(ns: &Netns, addr: SocketAddrV4, label: &str) -> UdpServer {
        let socket = ns.run(move || UdpSocket::bind(addr).expect("bind udp server"));
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let label = label.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let reply = format!("{label} {}", peer.ip());
                    let _ = socket.send_to(reply.as_bytes(), peer);
                }
            }
        });
        UdpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `ns` and returns the server's line, or why it failed.
fn tcp_from(ns: &Netns, to: SocketAddrV4) -> Result<String, String> {
    ns.run(move || {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(to), TIMEOUT)
            .map_err(|e| format!("connect {to}: {e}"))?;
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut line = String::new();
        stream
            .read_to_string(&mut line)
            .map_err(|e| format!("read {to}: {e}"))?;
        Ok(line.trim().to_string())
    })
}

fn udp_from(ns: &Netns, to: SocketAddrV4) -> Result<String, String> {
    ns.run(move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        socket
            .send_to(b"ping", to)
            .map_err(|e| format!("send {to}: {e}"))?;
        let mut buf = [0u8; 512];
        let (n, _) = socket
            .recv_from(&mut buf)
            .map_err(|e| format!("recv {to}: {e}"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

fn sa(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

#[test]
fn generated_ruleset_is_accepted_by_the_kernel_and_replaced_atomically() {
    let tag = tag("tbl");
    let host = Netns::new(&tag, "h");
    let front = network("front", "10.88.0.0/24", false);
    let vault = network("vault", "10.90.0.0/24", true);
    let endpoints = vec![Endpoint {
        container_id: "a".repeat(64),
        container_name: "web".into(),
        network: "front".into(),
        ip: Ipv4Addr::new(10, 88, 0, 2),
        mac: mac_for(Ipv4Addr::new(10, 88, 0, 2)),
        ifname: "eth0".into(),
        host_veth: veth_name(&"a".repeat(64), "front"),
        aliases: vec![],
        ports: vec![
            mapping(Ipv4Addr::UNSPECIFIED, 8080, 80, Proto::Tcp),
            mapping(Ipv4Addr::LOCALHOST, 5353, 53, Proto::Udp),
        ],
        dns: vec![],
    }];
    let networks = vec![front, vault];
    let (nets, eps) = (networks.clone(), endpoints.clone());
    let listed = host.run(move || {
        // Someone else's table, which must survive everything we do.
        let other = "table ip other {\n chain c {\n type filter hook input priority 0; policy accept;\n counter\n }\n}\n";
        let out = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(other.as_bytes())?;
                c.wait()
            })
            .unwrap();
        assert!(out.success());

        assert_eq!(nft::current_table().unwrap(), None);
        nft::check(&nft::transaction(&nets, &eps).unwrap()).unwrap();
        nft::check(&nft::transaction(&[], &[]).unwrap()).unwrap();
        assert_eq!(nft::current_table().unwrap(), None, "check commits nothing");
        nft::apply(&nets, &eps).unwrap();
        let first = nft::current_table().unwrap().expect("table after apply");
        // Applying again replaces rather than appends.
        nft::apply(&nets, &eps).unwrap();
        let second = nft::current_table().unwrap().unwrap();
        assert_eq!(first, second);
        // A smaller state drops the old rules.
        nft::apply(&nets, &[]).unwrap();
        let smaller = nft::current_table().unwrap().unwrap();
        nft::delete_table().unwrap();
        nft::delete_table().unwrap();
        let gone = nft::current_table().unwrap();
        let tables = Command::new("nft").args(["list", "tables"]).output().unwrap();
        (first, smaller, gone, String::from_utf8_lossy(&tables.stdout).into_owned())
    });
    let (first, smaller, gone, tables) = listed;
    assert!(first.contains("dnat to 10.88.0.2:80"), "{first}");
    assert!(
        first.contains("comment \"web on front: 0.0.0.0:8080->80/tcp\""),
        "{first}"
    );
    assert!(
        first.contains("ip daddr 127.0.0.1 udp dport 5353"),
        "{first}"
    );
    assert!(!smaller.contains("dnat to"), "{smaller}");
    assert_eq!(gone, None);
    assert!(tables.contains("table ip other"), "{tables}");
    assert!(!tables.contains("dockmaster"), "{tables}");
}

fn counter_of(table: &str, comment: &str) -> u64 {
    let line = table
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("rule {comment:?} in {table}"));
    let after = line.split("counter packets ").nth(1).expect("counter");
    after.split(' ').next().unwrap().parse().unwrap()
}

// br_netfilter (loaded wherever Docker or Kubernetes ran) makes bridged frames go through
// the IPv4 hooks too, which changes how hairpin traffic flows; hosts have it or not, so the
// same scenario runs both ways (the switch is per network namespace).

#[test]
fn published_ports_nat_and_isolation_with_br_netfilter() {
    scenario("nfon", true);
}

#[test]
fn published_ports_nat_and_isolation_without_br_netfilter() {
    scenario("nfoff", false);
}

fn scenario(name: &str, bridge_nf: bool) {
    let tag = tag(name);
    let host = Netns::new(&tag, "h");
    let call_iptables = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    let switch = vec![(
        call_iptables.into(),
        if bridge_nf { "1" } else { "0" }.to_string(),
    )];
    if std::path::Path::new(call_iptables).exists() {
        host.run(move || nft::apply_sysctls(&switch).unwrap());
        let now = host.sysctl("net.bridge.bridge-nf-call-iptables");
        assert_eq!(now, if bridge_nf { "1" } else { "0" });
    } else {
        assert!(
            !bridge_nf,
            "br_netfilter is not loaded on this machine (TESTBED.md says it is)"
        );
    }
    let outside = Netns::new(&tag, "o");
    let (h, o) = (host.name.as_str(), outside.name.as_str());
    let host_addr = Ipv4Addr::new(192, 0, 2, 1);
    let outside_addr = Ipv4Addr::new(192, 0, 2, 2);
    ip(&[
        "-n", h, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", o,
    ]);
    ip(&["-n", h, "addr", "add", "192.0.2.1/24", "dev", "up0"]);
    ip(&["-n", h, "link", "set", "up0", "up"]);
    ip(&["-n", o, "addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    ip(&["-n", o, "link", "set", "eth0", "up"]);
    // Lets the outside try the containers' addresses directly (which must fail).
    ip(&["-n", o, "route", "add", "10.0.0.0/8", "via", "192.0.2.1"]);

    let front = network("front", "10.88.0.0/24", false);
    let back = network("back", "10.89.0.0/24", false);
    let vault = network("vault", "10.90.0.0/24", true);
    for net in [&front, &back, &vault] {
        add_bridge(&host, net);
    }
    let mut web = attach(&tag, &host, &front, "web", 2);
    let peer = attach(&tag, &host, &front, "peer", 3);
    let mut other = attach(&tag, &host, &back, "other", 2);
    let mut secret = attach(&tag, &host, &vault, "secret", 2);
    let any = Ipv4Addr::UNSPECIFIED;
    web.endpoint.ports = vec![
        mapping(any, 8080, 80, Proto::Tcp),
        mapping(Ipv4Addr::LOCALHOST, 8081, 81, Proto::Tcp),
        mapping(any, 5353, 53, Proto::Udp),
    ];
    other.endpoint.ports = vec![mapping(host_addr, 9000, 9000, Proto::Tcp)];
    secret.endpoint.ports = vec![mapping(any, 7000, 7000, Proto::Tcp)];
    // A container reaching its own published port through the host address: with
    // br_netfilter the DNAT happens while the frame is being bridged, and it must go back
    // out of the port it came in by, which needs hairpin mode on that port (measured: it
    // times out without). Without br_netfilter the packet is routed and needs none. The
    // integrator sets hairpin mode on every host-side veth.
    ip(&[
        "-n",
        h,
        "link",
        "set",
        &web.endpoint.host_veth,
        "type",
        "bridge_slave",
        "hairpin",
        "on",
    ]);

    let _servers = (
        TcpServer::start(&web.ns, sa(any, 80), "web"),
        TcpServer::start(&web.ns, sa(any, 81), "web81"),
        UdpServer::start(&web.ns, sa(any, 53), "webdns"),
        TcpServer::start(&peer.ns, sa(any, 80), "peer"),
        TcpServer::start(&other.ns, sa(any, 9000), "other"),
        TcpServer::start(&secret.ns, sa(any, 7000), "secret"),
        TcpServer::start(&outside, sa(outside_addr, 9999), "outside"),
        // Stand-ins for the DNS server on front's gateway and a loopback-only host service.
        TcpServer::start(&host, sa(front.gateway, 53), "dns-front"),
        TcpServer::start(&host, sa(Ipv4Addr::LOCALHOST, 6000), "host-lo"),
    );

    let networks = vec![front.clone(), back.clone(), vault.clone()];
    let endpoints: Vec<Endpoint> = [&web, &peer, &other, &secret]
        .iter()
        .map(|c| c.endpoint.clone())
        .collect();
    let (nets, eps) = (networks.clone(), endpoints.clone());
    let (uplinks, sysctls) = host.run(move || {
        let uplinks = nft::uplink_interfaces().unwrap();
        let sysctls = nft::required_sysctls(&nets, &eps, &uplinks);
        nft::apply_sysctls(&sysctls).unwrap();
        nft::apply(&nets, &eps).unwrap();
        (uplinks, sysctls)
    });
    assert_eq!(uplinks, ["up0"], "bridges are ours, lo is not an uplink");
    let keys: Vec<String> = sysctls
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(keys.contains(&format!(
        "/proc/sys/net/ipv4/conf/{}/route_localnet",
        front.bridge
    )));
    assert!(!keys.iter().any(|k| k.contains(&vault.bridge)), "{keys:?}");
    // Forwarding is per interface: the namespace-wide switch stays off.
    assert_eq!(host.sysctl("net.ipv4.ip_forward"), "0");
    assert_eq!(
        host.sysctl(&format!("net.ipv4.conf.{}.forwarding", vault.bridge)),
        "0"
    );

    // Published TCP port from another host: the client's address is preserved.
    assert_eq!(
        tcp_from(&outside, sa(host_addr, 8080)),
        Ok("web 192.0.2.2".into())
    );
    // From the host itself, through 127.0.0.1 (masqueraded to the gateway) and its own address.
    assert_eq!(
        tcp_from(&host, sa(Ipv4Addr::LOCALHOST, 8080)),
        Ok("web 10.88.0.1".into())
    );
    assert_eq!(
        tcp_from(&host, sa(host_addr, 8080)),
        Ok("web 192.0.2.1".into())
    );
    // A port published on 127.0.0.1 only.
    assert_eq!(
        tcp_from(&host, sa(Ipv4Addr::LOCALHOST, 8081)),
        Ok("web81 10.88.0.1".into())
    );
    assert!(tcp_from(&outside, sa(host_addr, 8081)).is_err());
    // A port published on one host address.
    assert_eq!(
        tcp_from(&outside, sa(host_addr, 9000)),
        Ok("other 192.0.2.2".into())
    );
    // Hairpin: from a container of the same network through the host address (and the
    // gateway), masqueraded so the answer comes back through the NAT; from the container
    // itself; from another network's container (published ports are public).
    assert_eq!(
        tcp_from(&peer.ns, sa(host_addr, 8080)),
        Ok("web 10.88.0.1".into())
    );
    assert_eq!(
        tcp_from(&peer.ns, sa(front.gateway, 8080)),
        Ok("web 10.88.0.1".into())
    );
    assert_eq!(
        tcp_from(&web.ns, sa(host_addr, 8080)),
        Ok("web 10.88.0.1".into())
    );
    assert_eq!(
        tcp_from(&other.ns, sa(host_addr, 8080)),
        Ok("web 10.89.0.2".into())
    );
    // UDP.
    assert_eq!(
        udp_from(&outside, sa(host_addr, 5353)),
        Ok("webdns 192.0.2.2".into())
    );
    assert_eq!(
        udp_from(&host, sa(Ipv4Addr::LOCALHOST, 5353)),
        Ok("webdns 10.88.0.1".into())
    );
    assert_eq!(
        udp_from(&peer.ns, sa(host_addr, 5353)),
        Ok("webdns 10.88.0.1".into())
    );
    // Egress is masqueraded to the host's address.
    assert_eq!(
        tcp_from(&web.ns, sa(outside_addr, 9999)),
        Ok("outside 192.0.2.1".into())
    );
    assert_eq!(
        tcp_from(&other.ns, sa(outside_addr, 9999)),
        Ok("outside 192.0.2.1".into())
    );
    // Within a network, containers talk directly.
    assert_eq!(
        tcp_from(&peer.ns, sa(web.endpoint.ip, 80)),
        Ok("web 10.88.0.3".into())
    );
    // DNS on the gateway: from its own bridge and the host, not from others.
    assert_eq!(
        tcp_from(&web.ns, sa(front.gateway, 53)),
        Ok("dns-front 10.88.0.2".into())
    );
    // (The host picks its source address for its own gateway address itself.)
    let from_host = tcp_from(&host, sa(front.gateway, 53)).unwrap();
    assert!(from_host.starts_with("dns-front "), "{from_host}");
    assert!(tcp_from(&other.ns, sa(front.gateway, 53)).is_err());
    assert!(tcp_from(&outside, sa(front.gateway, 53)).is_err());

    // Isolation: other networks and other hosts cannot reach containers directly.
    assert!(tcp_from(&other.ns, sa(web.endpoint.ip, 80)).is_err());
    assert!(tcp_from(&web.ns, sa(other.endpoint.ip, 9000)).is_err());
    assert!(tcp_from(&outside, sa(web.endpoint.ip, 80)).is_err());
    // Internal network: no published ports, no egress, no way out through the host
    // address, even with forwarding turned on for its bridge.
    let vault_forwarding = vec![(
        format!("/proc/sys/net/ipv4/conf/{}/forwarding", vault.bridge).into(),
        "1".to_string(),
    )];
    host.run(move || nft::apply_sysctls(&vault_forwarding).unwrap());
    assert!(tcp_from(&outside, sa(host_addr, 7000)).is_err());
    assert!(tcp_from(&host, sa(Ipv4Addr::LOCALHOST, 7000)).is_err());
    assert!(tcp_from(&secret.ns, sa(outside_addr, 9999)).is_err());
    assert!(tcp_from(&secret.ns, sa(host_addr, 8080)).is_err());
    assert!(tcp_from(&secret.ns, sa(web.endpoint.ip, 80)).is_err());
    // Within it, fine: the host reaches its container directly.
    assert_eq!(
        tcp_from(&host, sa(secret.endpoint.ip, 7000)),
        Ok("secret 10.90.0.1".into())
    );

    // A container with CAP_NET_ADMIN can route 127/8 to its gateway; route_localnet on
    // the bridge would then let it reach services the host binds to 127.0.0.1.
    for route in [
        "del local 127.0.0.0/8 dev lo table local",
        "del local 127.0.0.1 dev lo table local",
        "add 127.0.0.0/8 via 10.88.0.1 dev eth0",
    ] {
        let args: Vec<&str> = ["-n", &peer.ns.name, "route"]
            .into_iter()
            .chain(route.split(' '))
            .collect();
        ip(&args);
    }
    let localnet = vec![(
        "/proc/sys/net/ipv4/conf/eth0/route_localnet".into(),
        "1".to_string(),
    )];
    peer.ns.run(move || nft::apply_sysctls(&localnet).unwrap());
    // Without the input rule the datagram (or a TCP SYN) is delivered to the host's
    // loopback socket; only the answer gets lost on the way back.
    let sink = host.run(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 6001)).unwrap());
    sink.set_read_timeout(Some(TIMEOUT)).unwrap();
    peer.ns.run(|| {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        socket
            .send_to(b"hello", (Ipv4Addr::LOCALHOST, 6001))
            .unwrap();
    });
    let mut buf = [0u8; 64];
    let leaked = sink.recv_from(&mut buf).map(|(_, from)| from);
    assert!(leaked.is_err(), "{leaked:?}");

    // The drops were ours (counters), and the host's loopback service stays the host's.
    let table = host.run(|| nft::current_table().unwrap().unwrap());
    assert!(
        counter_of(&table, "isolation between networks") >= 2,
        "{table}"
    );
    assert!(
        counter_of(&table, "network vault is internal") >= 2,
        "{table}"
    );
    assert!(
        counter_of(&table, "web on front: 0.0.0.0:8080->80/tcp") >= 7,
        "{table}"
    );
    assert_eq!(
        tcp_from(&host, sa(Ipv4Addr::LOCALHOST, 6000)),
        Ok("host-lo 127.0.0.1".into())
    );

    // Removing a container's endpoint and re-applying withdraws its ports at once.
    let remaining: Vec<Endpoint> = endpoints
        .iter()
        .filter(|e| e.container_name != "web")
        .cloned()
        .collect();
    host.run(move || nft::apply(&networks, &remaining).unwrap());
    assert!(tcp_from(&outside, sa(host_addr, 8080)).is_err());
    assert_eq!(
        tcp_from(&outside, sa(host_addr, 9000)),
        Ok("other 192.0.2.2".into())
    );
    host.run(|| nft::delete_table().unwrap());
}
