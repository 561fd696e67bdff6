//! Container networking end to end, as root, with real containers. dockmaster runs inside a
//! network namespace that plays the host (via `nsenter --net`, so the mount namespace stays
//! shared and the netns bind mounts stay visible), with a veth to a second namespace that
//! plays the outside world; the machine's own namespace, forwarding setting and firewall are
//! never touched. Everything is removed on drop, also when a test fails.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use support::containers::{Host, BUSYBOX};
use support::netns::{ip, random_suffix, NetnsHost};

const HOST_ADDR: &str = "198.51.100.1";
const OUTSIDE_ADDR: &str = "198.51.100.2";

/// A "host" namespace with dockmaster's root, and an "outside" namespace on a veth.
struct NetHost {
    inner: NetnsHost,
    ns: String,
    outside: String,
}

impl NetHost {
    fn new() -> NetHost {
        let inner = NetnsHost::new("e2e");
        let outside = format!("dmt-out-{}", random_suffix());
        ip(&["netns", "add", &outside]);
        let me = NetHost {
            ns: inner.ns.clone(),
            inner,
            outside,
        };
        let (ns, out) = (me.ns.as_str(), me.outside.as_str());
        ip(&["-n", out, "link", "set", "lo", "up"]);
        ip(&[
            "-n", ns, "link", "add", "uplink0", "type", "veth", "peer", "name", "wan0", "netns",
            out,
        ]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{HOST_ADDR}/24"),
            "dev",
            "uplink0",
        ]);
        ip(&["-n", ns, "link", "set", "uplink0", "up"]);
        ip(&[
            "-n",
            out,
            "addr",
            "add",
            &format!("{OUTSIDE_ADDR}/24"),
            "dev",
            "wan0",
        ]);
        ip(&["-n", out, "link", "set", "wan0", "up"]);
        me
    }

    /// A foreground `run --rm` of a shell script; returns (exit code, stdout + stderr).
    fn sh(&self, flags: &[&str], script: &str) -> (i32, String) {
        let out = self.inner.host.sh(flags, script);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Runs `f` in a thread inside namespace `ns`.
    fn in_ns<R: Send>(&self, ns: &str, f: impl FnOnce() -> R + Send) -> R {
        dockmaster::network::netns::run_in(std::path::Path::new(&format!("/run/netns/{ns}")), f)
            .expect("enter the namespace")
    }

    /// The container's address on `network`, from `inspect`.
    fn address(&self, container: &str, network: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", container])).unwrap();
        v[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("no address on {network} in inspect: {v}"))
            .to_string()
    }

    fn netd_pid(&self) -> Option<i32> {
        dockmaster::network::netd::running_pid(&self.inner.host.root.root())
    }

    fn links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }

    fn nft_table(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "nft",
                "list",
                "table",
                "ip",
                "dockmaster",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl std::ops::Deref for NetHost {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.inner.host
    }
}

impl Drop for NetHost {
    fn drop(&mut self) {
        // The host namespace, its containers and netd go with `inner`.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.outside])
            .output();
    }
}

/// A TCP client that sends nothing and reads what the server says (busybox httpd answers a
/// GET; our echo servers greet).
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A shell function printing the address busybox's nslookup finds for a name (retried while
/// the DNS server learns about a new container).
const RESOLVE: &str = "resolve() { for i in 1 2 3 4 5 6 7 8 9 10; do \
    a=$(nslookup $1 2>/dev/null | awk '/^Name:/{n=1} n && /^Address/{print $2; exit}'); \
    [ -n \"$a\" ] && { echo $a; return 0; }; sleep 0.3; done; return 1; }; ";
/// A shell function fetching `/` from ADDR PORT over HTTP/1.0 with nc.
const GET: &str = "get() { printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $1 $2; }; ";
const WEB: &str =
    "mkdir -p /www && echo hello-from-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn published_ports_answer_from_loopback_outside_and_other_containers() {
    let h = NetHost::new();
    h.detached(&["--name", "web", "-p", "8080:80"], &["sh", "-c", WEB]);
    let body = eventually("web answers on the host's loopback", || {
        h.in_ns(&h.ns, || http_get("127.0.0.1:8080".parse().unwrap()).ok())
    });
    assert!(body.contains("hello-from-"), "{body}");
    let outside: SocketAddr = format!("{HOST_ADDR}:8080").parse().unwrap();
    let body = h
        .in_ns(&h.outside, || http_get(outside))
        .expect("from the outside host");
    assert!(body.contains("hello-from-"), "{body}");
    // Hairpin: another container through the host's address.
    let (code, out) = h.sh(&[], &format!("{GET}get {HOST_ADDR} 8080"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello-from-"), "{out}");

    // UDP: busybox has no UDP server, so the test answers from a socket it opens inside the
    // container's own network namespace (held at <root>/netns/<id>).
    let udp = h.detached(&["--name", "udp", "-p", "5353:53/udp"], &["sleep", "60"]);
    let container_ns = h.inner.host.root.root().join("netns").join(&udp);
    let server = dockmaster::network::netns::run_in(&container_ns, || {
        UdpSocket::bind("0.0.0.0:53").expect("bind inside the container")
    })
    .expect("enter the container's namespace");
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = server
            .recv_from(&mut buf)
            .expect("a datagram reaches the container");
        server.send_to(&buf[..n], from).unwrap();
        from
    });
    let reply = h.in_ns(&h.outside, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"ping-udp", format!("{HOST_ADDR}:5353")).unwrap();
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).expect("the reply comes back");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    assert_eq!(reply, "ping-udp");
    // DNAT keeps the outside client's address as the source.
    assert_eq!(
        echo.join().unwrap().ip(),
        OUTSIDE_ADDR.parse::<Ipv4Addr>().unwrap()
    );

    // A taken host port is refused, naming both claimants.
    let out = h.run(&[
        "run", "--rm", "--name", "late", "-p", "8080:81", BUSYBOX, "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("8080") && err.contains("web"), "{err}");
}

#[test]
fn addresses_stay_unique_and_released_ones_return() {
    let h = NetHost::new();
    h.ok(&["network", "create", "--subnet", "10.77.0.0/29", "small"]);
    let mut seen = std::collections::BTreeSet::new();
    let mut ids = Vec::new();
    // A /29 has 5 addresses for containers (the gateway takes one).
    for _ in 0..5 {
        let id = h.detached(&["--network", "small"], &["sleep", "60"]);
        let ip = h.address(&id, "small");
        assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        ids.push(id);
    }
    let out = h.run(&["run", "--rm", "--network", "small", BUSYBOX, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("small"));
    h.ok(&["rm", "-f", &ids[0]]);
    let id = h.detached(&["--network", "small"], &["sleep", "60"]);
    let ip = h.address(&id, "small");
    assert!(
        seen.contains(&ip),
        "a released address is reused once the range is full: {ip}"
    );
    for other in &ids[1..] {
        assert_ne!(h.address(other, "small"), ip);
    }
}

#[test]
fn removal_leaves_no_link_rule_or_namespace() {
    let h = NetHost::new();
    let id = h.detached(&["-p", "8080:80"], &["sleep", "60"]);
    assert!(
        h.links().iter().any(|l| l.starts_with("dmv")),
        "{:?}",
        h.links()
    );
    assert!(h.nft_table().contains("dport 8080"), "{}", h.nft_table());
    h.ok(&["rm", "-f", &id]);
    eventually("the veth pair is gone", || {
        (!h.links().iter().any(|l| l.starts_with("dmv"))).then_some(())
    });
    assert!(!h.nft_table().contains("8080"), "{}", h.nft_table());
    let netns = h.inner.host.root.root().join("netns").join(&id);
    assert!(!netns.exists(), "{} is left", netns.display());
    // The bridge of the default network stays, like Docker's docker0.
    assert!(
        h.links().iter().any(|l| l.starts_with("dm-")),
        "{:?}",
        h.links()
    );
}

#[test]
fn containers_reach_each_other_by_name_and_other_networks_are_isolated() {
    let h = NetHost::new();
    h.ok(&["network", "create", "front"]);
    h.ok(&["network", "create", "back"]);
    h.detached(
        &[
            "--network",
            "front",
            "--name",
            "web",
            "--network-alias",
            "site",
        ],
        &["sh", "-c", WEB],
    );
    // busybox-static's wget goes through glibc's NSS (it crashes without the host's NSS
    // modules): resolve with busybox's own nslookup, fetch with nc.
    let (code, out) = h.sh(
        &["--network", "front"],
        &format!(
            "{RESOLVE}{GET}ip=$(resolve web) && get $ip 80 && ip=$(resolve site) && get $ip 80"
        ),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("hello-from-").count(), 2, "{out}");
    // Another network: the name does not resolve, and the address is not reachable.
    let addr = h.address("web", "front");
    let (code, out) = h.sh(
        &["--network", "back"],
        &format!("{GET}nslookup web; get {addr} 80"),
    );
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("hello-from-"), "{out}");
}

#[test]
fn egress_reaches_the_outside_with_the_hosts_address_as_source() {
    let h = NetHost::new();
    let listener = h.in_ns(&h.outside, || {
        TcpListener::bind(format!("{OUTSIDE_ADDR}:9000")).expect("listen in the outside host")
    });
    listener.set_nonblocking(true).unwrap();
    // Non-blocking accept with a deadline: a test whose packets never arrive fails instead
    // of hanging.
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut text = String::new();
                    let _ = stream.read_to_string(&mut text);
                    return Some((peer, text));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    let (code, out) = h.sh(
        &[],
        &format!("echo egress-ok | nc -w 2 {OUTSIDE_ADDR} 9000"),
    );
    assert_eq!(code, 0, "{out}");
    let (peer, text) = server
        .join()
        .unwrap()
        .expect("the container's connection reaches the outside host");
    assert_eq!(text.trim(), "egress-ok");
    // Masqueraded: the outside host sees the host's address, not the container's.
    assert_eq!(peer.ip(), HOST_ADDR.parse::<Ipv4Addr>().unwrap());
}

#[test]
fn a_killed_netd_is_restarted_and_repairs_what_was_left_behind() {
    let h = NetHost::new();
    h.detached(&["--name", "web", "-p", "8080:80"], &["sh", "-c", WEB]);
    let outside: SocketAddr = format!("{HOST_ADDR}:8080").parse().unwrap();
    eventually("web answers from the outside host", || {
        h.in_ns(&h.outside, || http_get(outside).ok())
    });
    let old = h.netd_pid().expect("a netd serves the root");

    // What a crash can leave: a link and a namespace nobody claims, and a lost table.
    let stray_link = "dmv0123456789ab";
    ip(&[
        "-n",
        &h.ns,
        "link",
        "add",
        stray_link,
        "type",
        "veth",
        "peer",
        "name",
        "dmv0123456789ac",
    ]);
    let stray_ns = h.root.root().join("netns").join(format!("{:0>64}", "dead"));
    h.in_ns(&h.ns, || dockmaster::network::netns::create(&stray_ns))
        .expect("create a stray namespace");
    let out = Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{}", h.ns),
            "nft",
            "delete",
            "table",
            "ip",
            "dockmaster",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(h.in_ns(&h.outside, || http_get(outside)).is_err());

    // SAFETY: signals the netd this test's root started (pid from its own pid file).
    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
    // The container's shim notices and starts a new netd, whose start-up repairs the rest.
    eventually("a new netd runs", || h.netd_pid().filter(|p| *p != old));
    eventually("the stray link is deleted", || {
        (!h.links().iter().any(|l| l == stray_link)).then_some(())
    });
    assert!(!stray_ns.exists(), "{} is left", stray_ns.display());
    assert!(h.nft_table().contains("dport 8080"), "{}", h.nft_table());
    let body = eventually("web answers again", || {
        h.in_ns(&h.outside, || http_get(outside).ok())
    });
    assert!(body.contains("hello-from-"), "{body}");
    // DNS is served again by the new netd.
    let (code, out) = h.sh(
        &[],
        &format!("{RESOLVE}{GET}ip=$(resolve web) && get $ip 80"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello-from-"), "{out}");
}
