//! Network namespaces held by bind mounts, bridges and veth pairs, for real (root).
//!
//! Every test creates a throwaway namespace that plays the host and does all link work inside
//! it through `netns::run_in`, so the machine's own network namespace is never changed.
//! Traffic only flows between namespaces the test made. A `Lab` guard removes every namespace
//! (and with them every link) and the netns directory mount, also when a test fails.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dockmaster::error::{Categorized, Category};
use dockmaster::network::link::{self, Attachment, LinkError};
use dockmaster::network::model::{bridge_name, is_ours, mac_for, veth_name};
use dockmaster::network::netns::{self, NetnsError};
use ipnet::Ipv4Net;

/// A temp dir whose `netns/` holds the test's namespaces.
struct Lab {
    dir: tempfile::TempDir,
    created: Vec<PathBuf>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            dir: tempfile::Builder::new()
                .prefix("dmt-netlink-")
                .tempdir()
                .expect("temp dir"),
            created: Vec::new(),
        }
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("netns")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.netns_dir().join(name)
    }

    /// A new namespace at `netns/<name>`.
    fn ns(&mut self, name: &str) -> PathBuf {
        let path = self.path(name);
        self.created.push(path.clone());
        netns::create(&path).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
        path
    }

    /// Runs `f` inside namespace `ns`.
    fn within<R: Send>(&self, ns: &Path, f: impl FnOnce() -> R + Send) -> R {
        netns::run_in(ns, f).unwrap_or_else(|e| panic!("enter {}: {e}", ns.display()))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for path in &self.created {
            if let Err(e) = netns::remove(path) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = netns::release_dir(&self.netns_dir()) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Runs a command inside the namespace at `ns` (a separate process: it also proves the mount
/// is visible to later processes).
fn run_in_ns(ns: &Path, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg("--")
        .args(args)
        .output()
        .expect("run nsenter")
}

fn stdout_in(ns: &Path, args: &[&str]) -> String {
    let out = run_in_ns(ns, args);
    assert!(
        out.status.success(),
        "{args:?} in {}: {}",
        ns.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

/// The inode of the network namespace of the calling thread.
fn current_netns() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("stat own netns")
}

fn is_mount_point(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let target = path.to_str().expect("utf-8 path");
    mountinfo
        .lines()
        .find(|line| line.split(' ').nth(4) == Some(target))
        .map(str::to_owned)
}

#[test]
fn netns_create_enter_list_and_remove() {
    let mut lab = Lab::new();
    let own = current_netns();
    let a = lab.ns("a");
    assert!(netns::is_netns(&a));
    let dir = std::fs::canonicalize(lab.netns_dir()).unwrap();

    // The directory is a mount point of its own, shared (see the module docs).
    let dir_line = is_mount_point(&dir).expect("netns dir is a mount point");
    assert!(dir_line.contains(" shared:"), "{dir_line}");
    assert!(is_mount_point(&dir.join("a")).is_some());

    // Inside: another namespace with only lo, which is down; the caller's is untouched.
    let (inside, links) = lab.within(&a, || (current_netns(), link::list_links().unwrap()));
    assert_ne!(inside, own);
    assert_eq!(current_netns(), own);
    assert_eq!(links, vec!["lo".to_owned()]);
    assert!(!lab.within(&a, || link::link_is_up("lo").unwrap()));
    lab.within(&a, || link::loopback_up().unwrap());
    assert!(lab.within(&a, || link::link_is_up("lo").unwrap()));
    // Same namespace again (the mount holds it, not a process).
    assert_eq!(lab.within(&a, current_netns), inside);

    // Through an fd and through a pid.
    let fd = netns::open(&a).unwrap();
    assert_eq!(
        netns::run_in_fd(std::os::fd::AsFd::as_fd(&fd), current_netns).unwrap(),
        inside
    );
    assert_eq!(
        netns::run_in_pid(std::process::id(), current_netns).unwrap(),
        own
    );
    drop(fd);

    // A second create of the same path is refused; a leftover plain file is reused.
    assert!(matches!(netns::create(&a), Err(NetnsError::Exists { .. })));
    let stale = lab.path("stale");
    std::fs::write(&stale, b"").unwrap();
    let listed = netns::list(&lab.netns_dir()).unwrap();
    let summary: Vec<(&str, bool)> = listed
        .iter()
        .map(|e| (e.name.as_str(), e.mounted))
        .collect();
    assert_eq!(summary, vec![("a", true), ("stale", false)]);
    assert_eq!(listed[0].path, dir.join("a"));
    let stale = lab.ns("stale");
    assert!(netns::is_netns(&stale));

    // Not a namespace: a plain file, a missing file, another namespace type.
    let plain = lab.dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    assert!(!netns::is_netns(&plain));
    let err = netns::run_in(&plain, || ()).unwrap_err();
    assert!(matches!(err, NetnsError::NotNetns { .. }), "{err}");
    assert_eq!(err.category(), Category::Invalid);
    let err = netns::run_in(&lab.path("missing"), || ()).unwrap_err();
    assert_eq!(err.category(), Category::NotFound, "{err}");
    assert!(!netns::is_netns(Path::new("/proc/self/ns/mnt")));
    let mnt = std::fs::File::open("/proc/self/ns/uts").unwrap();
    let err = netns::run_in_fd(std::os::fd::AsFd::as_fd(&mnt), || ()).unwrap_err();
    assert!(matches!(err, NetnsError::NotNetns { .. }), "{err}");

    // Remove: unmounted and unlinked; again is fine.
    netns::remove(&a).unwrap();
    assert!(!a.exists());
    assert!(is_mount_point(&dir.join("a")).is_none());
    netns::remove(&a).unwrap();
    let names: Vec<String> = netns::list(&lab.netns_dir())
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["stale".to_owned()]);
    assert!(netns::list(&lab.dir.path().join("nothing"))
        .unwrap()
        .is_empty());
}

#[test]
fn run_in_returns_the_closures_value_and_resumes_its_panic() {
    let mut lab = Lab::new();
    let a = lab.ns("a");
    // A listener bound inside stays in that namespace after the thread ends.
    let listener = lab.within(&a, || {
        link::loopback_up().unwrap();
        TcpListener::bind("127.0.0.1:0").unwrap()
    });
    let port = listener.local_addr().unwrap().port();
    let accept = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = String::new();
        conn.read_to_string(&mut buf).unwrap();
        buf
    });
    lab.within(&a, || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"inside").unwrap();
    });
    assert_eq!(accept.join().unwrap(), "inside");

    let caught = std::panic::catch_unwind(|| netns::run_in(&a, || panic!("boom in netns")));
    let payload = caught.expect_err("the panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in netns"));
}

/// A host namespace with a bridge and two containers attached.
struct Topology {
    host: PathBuf,
    c1: PathBuf,
    c2: PathBuf,
    bridge: String,
    veth1: String,
    veth2: String,
}

const GATEWAY: &str = "10.77.0.1/24";
const MTU: u32 = 1450;

fn topology(lab: &mut Lab) -> Topology {
    let host = lab.ns("host");
    let c1 = lab.ns("c1");
    let c2 = lab.ns("c2");
    let id = "c0ffee".repeat(10) + "0000";
    let bridge = bridge_name(&id);
    let veth1 = veth_name(&"1".repeat(64), "front");
    let veth2 = veth_name(&"2".repeat(64), "front");
    lab.within(&host, || {
        link::ensure_bridge(&bridge, net(GATEWAY), MTU).unwrap();
        for (ns, veth, ip) in [(&c1, &veth1, [10, 77, 0, 2]), (&c2, &veth2, [10, 77, 0, 3])] {
            let ip = Ipv4Addr::from(ip);
            link::attach(&Attachment {
                bridge: &bridge,
                host_veth: veth,
                netns: ns,
                ifname: "eth0",
                addr: Ipv4Net::new(ip, 24).unwrap(),
                mac: &mac_for(ip),
                mtu: MTU,
                gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
            })
            .unwrap_or_else(|e| panic!("attach {veth}: {e}"));
        }
    });
    Topology {
        host,
        c1,
        c2,
        bridge,
        veth1,
        veth2,
    }
}

#[test]
fn two_containers_on_a_bridge_are_configured_and_talk() {
    let mut lab = Lab::new();
    let t = topology(&mut lab);

    // Container side: address, MAC, MTU, up, default route, lo up.
    let addr = stdout_in(&t.c1, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 10.77.0.2/24 brd 10.77.0.255"), "{addr}");
    let eth0 = stdout_in(&t.c1, &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(eth0.contains("mtu 1450"), "{eth0}");
    assert!(eth0.contains(",UP"), "{eth0}");
    assert!(
        eth0.contains(&mac_for(Ipv4Addr::new(10, 77, 0, 2))),
        "{eth0}"
    );
    let route = stdout_in(&t.c1, &["ip", "-4", "route", "show", "default"]);
    assert!(route.contains("default via 10.77.0.1 dev eth0"), "{route}");
    let lo = stdout_in(&t.c2, &["ip", "-o", "link", "show", "dev", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    assert_eq!(
        lab.within(&t.c2, || link::ipv4_addrs("eth0").unwrap()),
        vec![net("10.77.0.3/24")]
    );

    // Host side: enslaved to the bridge, up, MTU; the bridge keeps the gateway's MAC.
    let port = stdout_in(&t.host, &["ip", "-o", "link", "show", "dev", &t.veth1]);
    assert!(port.contains(&format!("master {}", t.bridge)), "{port}");
    assert!(port.contains("mtu 1450") && port.contains(",UP"), "{port}");
    let bridge = stdout_in(&t.host, &["ip", "-o", "link", "show", "dev", &t.bridge]);
    assert!(
        bridge.contains(&mac_for(Ipv4Addr::new(10, 77, 0, 1))),
        "{bridge}"
    );
    let links = lab.within(&t.host, || link::list_links().unwrap());
    let ours: Vec<&String> = links.iter().filter(|l| is_ours(l)).collect();
    let mut expected = vec![&t.bridge, &t.veth1, &t.veth2];
    expected.sort();
    assert_eq!(ours, expected);
    let routes = lab.within(&t.host, || link::ipv4_routes().unwrap());
    assert_eq!(routes, vec![net("10.77.0.0/24")]);

    // Traffic: ping container to container and to the gateway, from separate processes.
    for target in ["10.77.0.3", "10.77.0.1"] {
        let out = run_in_ns(&t.c1, &["busybox", "ping", "-c", "1", "-W", "2", target]);
        assert!(
            out.status.success(),
            "ping {target}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // TCP: a listener in c2, a client in c1.
    let listener = lab.within(&t.c2, || TcpListener::bind("10.77.0.3:0").unwrap());
    let target = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"pong").unwrap();
        (peer, buf)
    });
    let reply = lab.within(&t.c1, || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap();
        s.write_all(b"ping!").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    });
    let (peer, got) = server.join().unwrap();
    assert_eq!(&got, b"ping!");
    assert_eq!(reply, "pong");
    assert_eq!(peer.ip(), "10.77.0.2".parse::<std::net::IpAddr>().unwrap());
}

#[test]
fn ensure_bridge_is_idempotent_and_converges() {
    let mut lab = Lab::new();
    let host = lab.ns("host");
    let bridge = bridge_name(&"ab".repeat(32));
    lab.within(&host, || {
        link::ensure_bridge(&bridge, net("10.88.0.1/16"), 1500).unwrap();
        link::ensure_bridge(&bridge, net("10.88.0.1/16"), 1500).unwrap();
        assert_eq!(
            link::ipv4_addrs(&bridge).unwrap(),
            vec![net("10.88.0.1/16")]
        );
        assert!(link::link_is_up(&bridge).unwrap());
    });
    // Converges after outside changes: down, MTU changed, address removed.
    for args in [
        vec!["ip", "link", "set", "dev", &bridge, "down", "mtu", "1400"],
        vec!["ip", "addr", "flush", "dev", &bridge],
    ] {
        stdout_in(&host, &args);
    }
    lab.within(&host, || {
        assert!(!link::link_is_up(&bridge).unwrap());
        link::ensure_bridge(&bridge, net("10.88.0.1/16"), 1500).unwrap();
        assert_eq!(
            link::ipv4_addrs(&bridge).unwrap(),
            vec![net("10.88.0.1/16")]
        );
        assert!(link::link_is_up(&bridge).unwrap());
    });
    let shown = stdout_in(&host, &["ip", "-o", "link", "show", "dev", &bridge]);
    assert!(shown.contains("mtu 1500"), "{shown}");
    assert_eq!(
        stdout_in(&host, &["ip", "-o", "link", "show", "type", "bridge"])
            .lines()
            .count(),
        1
    );

    // A link of that name that is not a bridge is refused, and left alone.
    stdout_in(
        &host,
        &[
            "ip", "link", "add", "notbr0", "type", "veth", "peer", "name", "notbr1",
        ],
    );
    lab.within(&host, || {
        let err = link::ensure_bridge("notbr0", net("10.89.0.1/24"), 1500).unwrap_err();
        assert!(matches!(err, LinkError::NotABridge { .. }), "{err}");
        let err = link::delete_bridge("notbr0").unwrap_err();
        assert!(matches!(err, LinkError::NotABridge { .. }), "{err}");
        assert!(link::link_exists("notbr0").unwrap());
        assert!(link::delete_link("notbr0").unwrap());
        assert!(!link::link_exists("notbr1").unwrap(), "the peer goes too");
        assert!(!link::delete_link("notbr0").unwrap());

        assert!(link::delete_bridge(&bridge).unwrap());
        assert!(!link::link_exists(&bridge).unwrap());
        assert!(!link::delete_bridge(&bridge).unwrap());
    });
}

#[test]
fn failed_attach_leaves_nothing_behind() {
    let mut lab = Lab::new();
    let t = topology(&mut lab);
    let c3 = lab.ns("c3");
    let attachment = |host_veth, ifname, ip: [u8; 4], gateway| Attachment {
        bridge: &t.bridge,
        host_veth,
        netns: &c3,
        ifname,
        addr: Ipv4Net::new(Ipv4Addr::from(ip), 24).unwrap(),
        mac: "02:42:0a:4d:00:09",
        mtu: MTU,
        gateway,
    };
    let gw = Some(Ipv4Addr::new(10, 77, 0, 1));

    lab.within(&t.host, || {
        // The host side name is taken: refused, and the existing link is untouched.
        let err = link::attach(&attachment(&t.veth1, "eth0", [10, 77, 0, 9], gw)).unwrap_err();
        assert!(matches!(err, LinkError::Exists { .. }), "{err}");
        assert_eq!(err.category(), Category::Conflict);
        assert!(link::link_exists(&t.veth1).unwrap());
        // No such bridge.
        let mut missing = attachment("dmv000000000009", "eth0", [10, 77, 0, 9], gw);
        missing.bridge = "dm-000000000000";
        let err = link::attach(&missing).unwrap_err();
        assert!(matches!(err, LinkError::BridgeNotFound { .. }), "{err}");
        // A gateway outside the subnet is refused before anything is made.
        let err = link::attach(&attachment(
            "dmv000000000009",
            "eth0",
            [10, 77, 0, 9],
            Some(Ipv4Addr::new(10, 78, 0, 1)),
        ))
        .unwrap_err();
        assert!(
            matches!(err, LinkError::GatewayOutsideSubnet { .. }),
            "{err}"
        );
    });
    assert_eq!(lab.within(&c3, || link::list_links().unwrap()), vec!["lo"]);

    // The name is taken inside the container: the kernel refuses the whole pair.
    stdout_in(
        &c3,
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    );
    lab.within(&t.host, || {
        let err =
            link::attach(&attachment("dmv000000000009", "eth0", [10, 77, 0, 9], gw)).unwrap_err();
        assert!(err.to_string().contains("File exists"), "{err}");
        assert!(!link::link_exists("dmv000000000009").unwrap());
    });

    // Failing after the pair exists (a second default route): the pair is deleted again.
    lab.within(&t.host, || {
        link::attach(&attachment("dmv00000000000a", "eth1", [10, 77, 0, 10], gw)).unwrap();
        let err =
            link::attach(&attachment("dmv00000000000b", "eth2", [10, 77, 0, 11], gw)).unwrap_err();
        assert!(err.to_string().contains("default route"), "{err}");
        assert!(!link::link_exists("dmv00000000000b").unwrap());
        assert!(link::link_exists("dmv00000000000a").unwrap());
    });
    let mut inside = lab.within(&c3, || link::list_links().unwrap());
    inside.sort();
    assert_eq!(inside, vec!["eth0", "eth1", "lo", "other0"]);
    // The attachment that was kept still works.
    let out = run_in_ns(&c3, &["busybox", "ping", "-c", "1", "-W", "2", "10.77.0.2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn removing_the_container_netns_removes_its_veth_pair() {
    let mut lab = Lab::new();
    let t = topology(&mut lab);
    netns::remove(&t.c1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The kernel tears a namespace down asynchronously.
    while lab.within(&t.host, || link::link_exists(&t.veth1).unwrap()) {
        assert!(Instant::now() < deadline, "{} still exists", t.veth1);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lab.within(&t.host, || link::link_exists(&t.veth2).unwrap()));
    assert!(lab.within(&t.host, || link::link_exists(&t.bridge).unwrap()));
    // Deleting the host side removes the container side.
    assert!(lab.within(&t.host, || link::delete_link(&t.veth2).unwrap()));
    assert_eq!(
        lab.within(&t.c2, || link::list_links().unwrap()),
        vec!["lo"]
    );
}

#[test]
fn sysctls_and_netlink_apply_to_the_threads_namespace() {
    let mut lab = Lab::new();
    let host = lab.ns("host");
    let bridge = bridge_name(&"cd".repeat(32));
    // Read (never written) in the machine's namespace, to compare.
    let outside = link::read_sysctl("ipv4/ip_forward").unwrap();
    lab.within(&host, || {
        link::write_sysctl("ipv4/ip_forward", "1").unwrap();
        assert_eq!(link::read_sysctl("ipv4/ip_forward").unwrap(), "1");
        link::ensure_bridge(&bridge, net("10.99.0.1/24"), 1500).unwrap();
        link::set_ipv4_conf(&bridge, "route_localnet", "1").unwrap();
        assert_eq!(
            link::read_sysctl(&format!("ipv4/conf/{bridge}/route_localnet")).unwrap(),
            "1"
        );
        let err = link::read_sysctl("ipv4/conf/nosuchlink/route_localnet").unwrap_err();
        assert_eq!(err.category(), Category::NotFound, "{err}");
        // Inside a tokio runtime the netlink work moves to its own thread, same namespace.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt.block_on(async { link::link_exists(&bridge).unwrap() }));
    });
    assert_eq!(link::read_sysctl("ipv4/ip_forward").unwrap(), outside);
    assert!(!link::link_exists(&bridge).unwrap());
    let err = link::link_exists("bad/name").unwrap_err();
    assert_eq!(err.category(), Category::Invalid);
}

/// The `hairpin` flag of bridge port `port` as the kernel reports it (`bridge -d -j link`).
fn hairpin_of(ns: &Path, port: &str) -> bool {
    let out = stdout_in(ns, &["bridge", "-d", "-j", "link", "show", "dev", port]);
    let ports: serde_json::Value = serde_json::from_str(&out).expect("bridge -j output");
    ports[0]["hairpin"]
        .as_bool()
        .unwrap_or_else(|| panic!("no hairpin flag for {port}: {out}"))
}

#[test]
fn hairpin_mode_is_set_per_bridge_port_in_the_threads_namespace() {
    let mut lab = Lab::new();
    let t = topology(&mut lab);
    assert!(!hairpin_of(&t.host, &t.veth1));
    assert!(!hairpin_of(&t.host, &t.veth2));

    lab.within(&t.host, || link::set_hairpin(&t.veth1, true).unwrap());
    assert!(hairpin_of(&t.host, &t.veth1));
    assert!(!hairpin_of(&t.host, &t.veth2), "only the named port");
    // Idempotent, and it turns off again.
    lab.within(&t.host, || link::set_hairpin(&t.veth1, true).unwrap());
    assert!(hairpin_of(&t.host, &t.veth1));
    lab.within(&t.host, || link::set_hairpin(&t.veth1, false).unwrap());
    assert!(!hairpin_of(&t.host, &t.veth1));
    lab.within(&t.host, || link::set_hairpin(&t.veth2, true).unwrap());
    assert!(hairpin_of(&t.host, &t.veth2));

    // Not bridge ports: the bridge itself, a veth of no bridge; a missing link; a bad name.
    stdout_in(
        &t.host,
        &[
            "ip", "link", "add", "loose0", "type", "veth", "peer", "name", "loose1",
        ],
    );
    lab.within(&t.host, || {
        for name in [t.bridge.as_str(), "loose0"] {
            let err = link::set_hairpin(name, true).unwrap_err();
            assert!(
                matches!(&err, LinkError::NotABridgePort { name: n } if n == name),
                "{err}"
            );
            assert_eq!(err.category(), Category::Invalid);
            assert_eq!(err.to_string(), format!("{name} is not a bridge port"));
        }
        let err = link::set_hairpin("dmv0000000000ff", true).unwrap_err();
        assert_eq!(err.category(), Category::NotFound, "{err}");
        assert!(err.to_string().contains("dmv0000000000ff"), "{err}");
        let err = link::set_hairpin("bad/name", true).unwrap_err();
        assert!(matches!(err, LinkError::InvalidName { .. }), "{err}");
    });
    // The machine's namespace has no such port: the call worked where the thread was.
    assert_eq!(
        link::set_hairpin(&t.veth1, true).unwrap_err().category(),
        Category::NotFound
    );
}
