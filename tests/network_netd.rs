//! `dockmaster netd` for real, as root, inside a network namespace each test creates to play
//! the host (the machine's own namespace is never touched): netd is started by
//! `ensure_running_with` from a thread inside that namespace (so the daemon lives there),
//! containers are fabricated (a record in the container store, then `manager::connect`), and
//! DNS is asked from inside a container's namespace over its veth, as a container would.
//! Names that are not ours go to a fake upstream resolver on 127.0.0.1:53 of the test's host
//! namespace (netd reads it from a resolv.conf the test writes), which answers NXDOMAIN and
//! counts: so "unknown name" is observable without any traffic leaving the test's namespaces.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use dockmaster::network::manager::{self, ConnectRequest, NetworkRequest};
use dockmaster::network::model::{is_ours, veth_name, Endpoint};
use dockmaster::network::netd::{self, SpawnOptions};
use dockmaster::network::store::{NetworkSpec, NetworkStore};
use dockmaster::network::{link, netns, nft};
use dockmaster::runtime::container::{ContainerRecord, ContainerStore};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// netd polls the store every 300 ms; this leaves room on a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(10);

fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len / 2];
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `pid` is a live (not zombie) netd of `root`.
fn netd_alive(pid: i32, root: &Path) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    if state == Some(Some('Z')) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&&b"netd"[..]) && args.contains(&root.as_os_str().as_encoded_bytes())
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A fake upstream resolver on 127.0.0.1:53 inside the test's host namespace: NXDOMAIN for
/// everything, counting queries.
struct Upstream {
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    fn start(host: &Path) -> Upstream {
        let socket = netns::run_in(host, || UdpSocket::bind("127.0.0.1:53"))
            .unwrap()
            .expect("bind the fake upstream");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (queries.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::SeqCst) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(request) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut response = Message::new();
                response
                    .set_id(request.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(OpCode::Query)
                    .set_recursion_desired(request.recursion_desired())
                    .set_recursion_available(true)
                    .set_response_code(ResponseCode::NXDomain);
                response.add_queries(request.queries().to_vec());
                let _ = socket.send_to(&response.to_vec().unwrap(), from);
            }
        });
        Upstream {
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One test's world: a host namespace, a state root, a resolv.conf naming the fake upstream.
/// Dropping it kills every netd it saw, removes the namespace mounts, then the namespace.
struct Fixture {
    host_name: String,
    host: PathBuf,
    root: PathBuf,
    resolv_conf: PathBuf,
    netd_pids: Vec<i32>,
    upstream: Option<Upstream>,
    tmp: Option<tempfile::TempDir>,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let host_name = format!("dmt-netd-{}-{tag}", std::process::id() % 100_000);
        ip_cmd(&["netns", "add", &host_name]);
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(&root).unwrap();
        let resolv_conf = tmp.path().join("resolv.conf");
        fs::write(&resolv_conf, "nameserver 127.0.0.1\n").unwrap();
        let mut fixture = Fixture {
            host: PathBuf::from(format!("/run/netns/{host_name}")),
            host_name,
            root,
            resolv_conf,
            netd_pids: Vec::new(),
            upstream: None,
            tmp: Some(tmp),
        };
        ip_cmd(&["-n", &fixture.host_name, "link", "set", "lo", "up"]);
        fixture.upstream = Some(Upstream::start(&fixture.host));
        fixture
    }

    fn upstream_queries(&self) -> usize {
        self.upstream.as_ref().map_or(0, Upstream::count)
    }

    /// Runs `f` on a thread inside the test's host namespace.
    fn in_host<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        netns::run_in(&self.host, f).expect("enter the test's host namespace")
    }

    fn options(&self) -> SpawnOptions {
        SpawnOptions {
            exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_dockmaster"))),
            resolv_conf: Some(self.resolv_conf.clone()),
            idle_exit: None,
        }
    }

    /// `ensure_running` from inside the host namespace; returns the pid serving the root.
    fn ensure_netd(&mut self, options: &SpawnOptions) -> i32 {
        let root = self.root.clone();
        self.in_host(|| netd::ensure_running_with(&root, options))
            .expect("ensure_running");
        let pid = netd::running_pid(&self.root).expect("a netd pid after ensure_running");
        assert!(netd_alive(pid, &self.root));
        if !self.netd_pids.contains(&pid) {
            self.netd_pids.push(pid);
        }
        pid
    }

    fn network(&self, name: &str, subnet: &str) -> SocketAddr {
        let store = NetworkStore::open(&self.root).unwrap();
        let guard = store.lock().unwrap();
        let net = guard
            .create_network(
                &NetworkSpec {
                    name: name.into(),
                    subnet: Some(subnet.parse().unwrap()),
                    ..Default::default()
                },
                &[],
                &[],
            )
            .unwrap();
        SocketAddr::new(net.gateway.into(), 53)
    }

    /// A container as the runtime leaves it: a record, then its network namespace and
    /// endpoints (made inside the host namespace).
    fn container(&self, name: &str, network: &str, aliases: &[&str]) -> (String, Endpoint) {
        let id = random_hex(64);
        let record: ContainerRecord = serde_json::from_value(serde_json::json!({
            "id": id,
            "name": name,
            "image": "test",
            "image_id": "sha256:00",
            "layers": [],
            "command": ["true"],
            "created": "2024-01-01T00:00:00Z",
            "stop_signal": 15,
            "stop_grace_secs": 1,
            "log_max_bytes": 1024,
            "log_max_files": 1,
        }))
        .unwrap();
        ContainerStore::new(&self.root).create(&record).unwrap();
        let request = ConnectRequest {
            container_id: id.clone(),
            container_name: name.into(),
            networks: vec![NetworkRequest {
                network: network.into(),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                ip: None,
            }],
            ..Default::default()
        };
        let root = self.root.clone();
        let connected = self
            .in_host(|| manager::connect(&root, &request))
            .expect("connect");
        (id, connected.endpoints[0].clone())
    }

    fn netns_of(&self, id: &str) -> PathBuf {
        manager::netns_path(&self.root, id)
    }

    fn links(&self) -> Vec<String> {
        self.in_host(link::list_links).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for pid in &self.netd_pids {
            if netd_alive(*pid, &self.root) {
                // SAFETY: kill(2) only sends a signal, to a netd this test started and just
                // checked (cmdline names netd and this test's root).
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
        if let Ok(entries) = netns::list(&manager::netns_dir(&self.root)) {
            for entry in entries {
                let _ = netns::remove(&entry.path);
            }
        }
        let _ = netns::release_dir(&manager::netns_dir(&self.root));
        self.upstream.take();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host_name])
            .status();
        self.tmp.take();
    }
}

static NEXT_ID: AtomicU16 = AtomicU16::new(0x1000);

/// One A query over UDP from inside the namespace at `from`.
fn ask(from: &Path, server: SocketAddr, name: &str) -> io::Result<Message> {
    let mut request = Message::new();
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    request
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    request.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let packet = request.to_vec().unwrap();
    netns::run_in(from, || -> io::Result<Message> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(QUERY_TIMEOUT))?;
        socket.send(&packet)?;
        let mut buf = [0u8; 4096];
        let len = socket.recv(&mut buf)?;
        let response = Message::from_vec(&buf[..len]).map_err(io::Error::other)?;
        if response.id() != id {
            return Err(io::Error::other("answer to another query"));
        }
        Ok(response)
    })
    .map_err(io::Error::other)?
}

fn a_records(message: &Message) -> Vec<Ipv4Addr> {
    let mut addrs: Vec<Ipv4Addr> = message
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    addrs.sort();
    addrs
}

/// Waits until `name` resolves to exactly `want` (empty: NXDOMAIN from the upstream).
fn wait_resolves(from: &Path, server: SocketAddr, name: &str, want: &[Ipv4Addr]) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let last = match ask(from, server, name) {
            Ok(m) => {
                let addrs = a_records(&m);
                let done = if want.is_empty() {
                    m.response_code() == ResponseCode::NXDomain && addrs.is_empty()
                } else {
                    m.response_code() == ResponseCode::NoError && addrs == want
                };
                if done {
                    return;
                }
                format!("{:?} {addrs:?}", m.response_code())
            }
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{name} via {server}: want {want:?}, last answer: {last}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn netd_answers_container_names_and_follows_the_store() {
    let mut fx = Fixture::new("dns");
    let dns = fx.network("front", "10.231.1.0/24");
    let (web_id, web) = fx.container("web", "front", &["www"]);
    let pid = fx.ensure_netd(&fx.options());

    // From inside the container, over its veth, to the gateway.
    let web_ns = fx.netns_of(&web_id);
    let answer = ask(&web_ns, dns, "web").expect("netd answers on the gateway");
    assert_eq!(answer.response_code(), ResponseCode::NoError);
    assert_eq!(a_records(&answer), vec![web.ip]);
    wait_resolves(&web_ns, dns, "www", &[web.ip]);
    wait_resolves(&web_ns, dns, "web.front", &[web.ip]);

    // Other names go upstream (the fake one answers NXDOMAIN).
    let before = fx.upstream_queries();
    wait_resolves(&web_ns, dns, "db", &[]);
    assert!(fx.upstream_queries() > before, "db was forwarded upstream");

    // A container joining while netd runs becomes resolvable, replicas round-robin.
    let (db_id, db) = fx.container("db", "front", &["database", "web"]);
    wait_resolves(&web_ns, dns, "db", &[db.ip]);
    wait_resolves(&web_ns, dns, "database", &[db.ip]);
    let mut both = vec![web.ip, db.ip];
    both.sort();
    wait_resolves(&web_ns, dns, "web", &both);

    // A second ensure_running finds it running: same process, nothing new started.
    assert_eq!(fx.ensure_netd(&fx.options()), pid);
    assert_eq!(fx.netd_pids, vec![pid]);

    // Leaving: the names disappear (back to the upstream's NXDOMAIN).
    let root = fx.root.clone();
    let removed = fx
        .in_host(|| manager::disconnect(&root, &db_id))
        .expect("disconnect");
    assert_eq!(removed.len(), 1);
    wait_resolves(&web_ns, dns, "database", &[]);
    wait_resolves(&web_ns, dns, "db", &[]);
    wait_resolves(&web_ns, dns, "web", &[web.ip]);

    // A network created while netd runs gets a listener (and its bridge) too.
    let back_dns = fx.network("back", "10.231.2.0/24");
    let (api_id, api) = fx.container("api", "back", &[]);
    let api_ns = fx.netns_of(&api_id);
    wait_resolves(&api_ns, back_dns, "api", &[api.ip]);
    // Isolated per network: web is not a name on back.
    wait_resolves(&api_ns, back_dns, "web", &[]);
    assert!(netd_alive(pid, &fx.root));
}

#[test]
fn restarted_netd_repairs_what_a_crash_left() {
    let mut fx = Fixture::new("repair");
    let dns = fx.network("front", "10.231.3.0/24");
    let (web_id, web) = fx.container("web", "front", &[]);
    let (gone_id, gone) = fx.container("gone", "front", &[]);
    let (lost_id, lost) = fx.container("lost", "front", &[]);
    let pid = fx.ensure_netd(&fx.options());
    let web_ns = fx.netns_of(&web_id);
    wait_resolves(&web_ns, dns, "gone", &[gone.ip]);

    // The daemon dies without cleaning anything.
    // SAFETY: kill(2) only sends a signal, to the netd this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_for("netd to die", SETTLE, || !netd_alive(pid, &fx.root));

    // Stale state: a container whose directory is gone (endpoint, namespace and veth left),
    // a container whose namespace is gone (endpoint left), stray links of ours, a namespace
    // mount of no container, and the nftables table gone.
    ContainerStore::new(&fx.root).remove(&gone_id).unwrap();
    netns::remove(&fx.netns_of(&lost_id)).unwrap();
    let stray_veth = format!("dmv{}", random_hex(12));
    let stray_bridge = format!("dm-{}", random_hex(12));
    ip_cmd(&[
        "-n",
        &fx.host_name,
        "link",
        "add",
        &stray_veth,
        "type",
        "veth",
        "peer",
        "name",
        "dmtpeer0",
    ]);
    ip_cmd(&[
        "-n",
        &fx.host_name,
        "link",
        "add",
        &stray_bridge,
        "type",
        "bridge",
    ]);
    let stale_ns = fx.netns_of(&random_hex(64));
    netns::create(&stale_ns).unwrap();
    fx.in_host(nft::delete_table).unwrap();
    assert!(fx.in_host(nft::current_table).unwrap().is_none());
    let links = fx.links();
    for name in [&stray_veth, &stray_bridge, &gone.host_veth, &web.host_veth] {
        assert!(links.contains(name), "{name} is there before the repair");
    }

    let restarted = fx.ensure_netd(&fx.options());
    assert_ne!(restarted, pid);

    // Repaired before it answered.
    let store = NetworkStore::open(&fx.root).unwrap();
    let ids: Vec<String> = store
        .all_endpoints()
        .unwrap()
        .into_iter()
        .map(|e| e.container_id)
        .collect();
    assert_eq!(ids, vec![web_id.clone()], "only web's endpoint is left");
    let namespaces: Vec<String> = netns::list(&manager::netns_dir(&fx.root))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(namespaces, vec![web_id.clone()]);
    let network = store.get("front").unwrap();
    // The gone container's veth dies with its namespace, asynchronously.
    wait_for("the stale veth pair to go", SETTLE, || {
        let ours: Vec<String> = fx.links().into_iter().filter(|l| is_ours(l)).collect();
        let mut want = vec![network.bridge.clone(), web.host_veth.clone()];
        want.sort();
        ours == want
    });
    assert!(!fx.links().contains(&"dmtpeer0".to_string()));
    let table = fx
        .in_host(nft::current_table)
        .unwrap()
        .expect("nftables table rebuilt");
    assert!(table.contains(&network.bridge), "{table}");
    let log = fs::read_to_string(netd::log_file(&fx.root)).unwrap();
    assert!(
        log.contains("removed 2 stale endpoint(s), 2 namespace(s)"),
        "{log}"
    );

    // Answers again, without the stale names.
    wait_resolves(&web_ns, dns, "web", &[web.ip]);
    wait_resolves(&web_ns, dns, "gone", &[]);
    wait_resolves(&web_ns, dns, "lost", &[]);
    assert_ne!(lost.ip, web.ip);
}

#[test]
fn sigterm_stops_netd_and_releases_the_lock() {
    let mut fx = Fixture::new("term");
    let dns = fx.network("front", "10.231.4.0/24");
    let (web_id, web) = fx.container("web", "front", &[]);
    let pid = fx.ensure_netd(&fx.options());
    wait_resolves(&fx.netns_of(&web_id), dns, "web", &[web.ip]);

    // SAFETY: kill(2) only sends a signal, to the netd this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_for("netd to stop", SETTLE, || !netd_alive(pid, &fx.root));
    assert!(!netd::pid_file(&fx.root).exists(), "pid file removed");
    let lock = fs::File::open(netd::lock_file(&fx.root)).unwrap();
    assert!(
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok(),
        "the lock is free"
    );
    drop(lock);
    let log = fs::read_to_string(netd::log_file(&fx.root)).unwrap();
    assert!(log.contains("SIGTERM: netd stopping"), "{log}");
    // Nobody answers on the gateway any more.
    assert!(ask(&fx.netns_of(&web_id), dns, "web").is_err());

    // And it can be started again.
    let again = fx.ensure_netd(&fx.options());
    assert_ne!(again, pid);
    wait_resolves(&fx.netns_of(&web_id), dns, "web", &[web.ip]);
}

#[test]
fn idle_netd_exits_once_no_network_is_left() {
    let mut fx = Fixture::new("idle");
    let dns = fx.network("front", "10.231.5.0/24");
    let (web_id, web) = fx.container("web", "front", &[]);
    let options = SpawnOptions {
        idle_exit: Some(Duration::from_millis(600)),
        ..fx.options()
    };
    let pid = fx.ensure_netd(&options);
    wait_resolves(&fx.netns_of(&web_id), dns, "web", &[web.ip]);
    // Networks left: it stays.
    thread::sleep(Duration::from_millis(1500));
    assert!(netd_alive(pid, &fx.root));

    let root = fx.root.clone();
    fx.in_host(|| manager::disconnect(&root, &web_id))
        .expect("disconnect");
    NetworkStore::open(&fx.root)
        .unwrap()
        .lock()
        .unwrap()
        .remove_network("front")
        .unwrap();
    wait_for("the idle netd to exit", SETTLE, || {
        !netd_alive(pid, &fx.root)
    });
    assert!(!netd::pid_file(&fx.root).exists());
    let log = fs::read_to_string(netd::log_file(&fx.root)).unwrap();
    assert!(log.contains("netd exiting"), "{log}");
}

#[test]
fn repair_reports_what_it_removed() {
    let fx = Fixture::new("report");
    fx.network("front", "10.231.6.0/24");
    let (web_id, _) = fx.container("web", "front", &[]);
    let (gone_id, _) = fx.container("gone", "front", &[]);
    ContainerStore::new(&fx.root).remove(&gone_id).unwrap();
    let stale_ns = fx.netns_of(&random_hex(64));
    netns::create(&stale_ns).unwrap();
    let stray = format!("dmv{}", random_hex(12));
    ip_cmd(&[
        "-n",
        &fx.host_name,
        "link",
        "add",
        &stray,
        "type",
        "veth",
        "peer",
        "name",
        "dmtpeer1",
    ]);
    let gone_veth = veth_name(&gone_id, "front");
    let root = fx.root.clone();
    let report = fx.in_host(|| netd::repair(&root)).expect("repair");
    assert_eq!(report.endpoints, 1);
    assert_eq!(report.namespaces, 2);
    // The stray veth, and the gone container's host veth unless the kernel destroyed it
    // with its namespace first.
    assert!((1..=2).contains(&report.links), "{report}");
    assert!(!fx.links().contains(&stray));
    assert!(fx.in_host(nft::current_table).unwrap().is_some());
    wait_for("the gone container's veth to go", SETTLE, || {
        !fx.links().contains(&gone_veth)
    });
    // Nothing left to do the second time.
    let again = fx.in_host(|| netd::repair(&root)).expect("repair again");
    assert!(again.is_empty(), "{again}");
    assert!(netns::is_netns(&fx.netns_of(&web_id)));
}
