//! The DNS server for real, over loopback only: two "networks" listening on 127.0.0.2 and
//! 127.0.0.3, fake upstream resolvers on 127.0.0.4/127.0.0.5 (one answers a big name with TC
//! over UDP and in full over TCP), queried with packets built by hickory-proto over UDP and
//! TCP and with busybox nslookup. The server runs on a current-thread Tokio runtime in its
//! own thread, as netd would.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dockmaster::network::dns::{upstreams_from_resolv_conf, Records, Server, ServerOptions};
use dockmaster::network::model::{bridge_name, mac_for, veth_name, Endpoint, NetworkConfig};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

const TIMEOUT: Duration = Duration::from_secs(3);

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn network(name: &str, subnet: &str) -> NetworkConfig {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    let id = format!("{:x>64}", name);
    NetworkConfig {
        name: name.into(),
        bridge: bridge_name(&id),
        id,
        gateway: subnet.hosts().next().unwrap(),
        subnet,
        ip_range: None,
        internal: false,
        mtu: 1500,
        labels: Default::default(),
        created: "2024-01-01T00:00:00Z".into(),
    }
}

fn endpoint(id: char, name: &str, net: &str, addr: Ipv4Addr, aliases: &[&str]) -> Endpoint {
    let container_id: String = std::iter::repeat(id).take(64).collect();
    Endpoint {
        host_veth: veth_name(&container_id, net),
        container_id,
        container_name: name.into(),
        network: net.into(),
        ip: addr,
        mac: mac_for(addr),
        ifname: "eth0".into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        ports: Vec::new(),
        dns: Vec::new(),
    }
}

fn networks() -> Vec<NetworkConfig> {
    vec![
        network("front", "10.1.0.0/24"),
        network("back", "10.2.0.0/24"),
        network("extra", "10.3.0.0/24"),
    ]
}

fn base_endpoints() -> Vec<Endpoint> {
    vec![
        endpoint('a', "proj-web-1", "front", ip(10, 1, 0, 2), &["web"]),
        endpoint('b', "proj-web-2", "front", ip(10, 1, 0, 3), &["web"]),
        endpoint('c', "proj-db-1", "back", ip(10, 2, 0, 2), &["db"]),
        endpoint('a', "proj-web-1", "back", ip(10, 2, 0, 3), &["web"]),
        endpoint(
            'e',
            "proj-extra-1",
            "extra",
            ip(10, 3, 0, 2),
            &["extra-svc"],
        ),
    ]
}

fn fast_options() -> ServerOptions {
    ServerOptions {
        upstream_timeout: Duration::from_millis(400),
        tcp_idle_timeout: Duration::from_millis(500),
        max_tcp_connections: 4,
        ..ServerOptions::default()
    }
}

/// The server on a current-thread runtime in its own thread; stopped (listeners closed) and
/// joined on drop.
struct DnsThread {
    server: Arc<Server>,
    handle: tokio::runtime::Handle,
    wanted: Vec<(String, SocketAddr)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsThread {
    fn start(records: Records, upstreams: Vec<SocketAddr>, options: ServerOptions) -> DnsThread {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let server = Arc::new(Server::new(records, upstreams, options));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = server.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
                served.shutdown().await;
            })
        });
        DnsThread {
            server,
            handle,
            wanted: Vec::new(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn set_listeners(&mut self, wanted: &[(&str, SocketAddr)]) {
        self.wanted = wanted
            .iter()
            .map(|(net, addr)| (net.to_string(), *addr))
            .collect();
        let errors = self
            .handle
            .block_on(self.server.set_listeners(&self.wanted));
        assert!(errors.is_empty(), "{errors:?}");
    }

    fn bound(&self, network: &str) -> SocketAddr {
        let listeners = self.handle.block_on(self.server.listeners());
        listeners
            .into_iter()
            .find(|(net, _)| net == network)
            .map(|(_, addr)| addr)
            .unwrap_or_else(|| panic!("no listener for {network}"))
    }

    /// front on 127.0.0.2 (a free port), back on 127.0.0.3 with the same port.
    fn listen_front_and_back(&mut self) -> (SocketAddr, SocketAddr) {
        self.set_listeners(&[("front", SocketAddr::from((ip(127, 0, 0, 2), 0)))]);
        let front = self.bound("front");
        assert_ne!(front.port(), 0);
        let back = SocketAddr::from((ip(127, 0, 0, 3), front.port()));
        let front_wanted = SocketAddr::from((ip(127, 0, 0, 2), 0));
        self.set_listeners(&[("front", front_wanted), ("back", back)]);
        assert_eq!(self.bound("front"), front, "front kept its socket");
        (front, back)
    }
}

impl Drop for DnsThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A resolver playing the host's upstream: `fixed.example` is `192.0.2.<tag>`,
/// `big.example` is TC (no answer) over UDP and two addresses over TCP, `refused.example` is
/// REFUSED on upstream 10 and `192.0.2.30` elsewhere, everything else NXDOMAIN.
struct FakeUpstream {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

fn upstream_answer(request: &Message, tag: u8, over_tcp: bool) -> Message {
    let query = request.queries()[0].clone();
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    response.add_query(query.clone());
    let mut name = query.name().to_lowercase().to_ascii();
    if !name.ends_with('.') {
        name.push('.');
    }
    let a = |addr: Ipv4Addr| Record::from_rdata(query.name().clone(), 30, RData::A(A(addr)));
    match name.as_str() {
        "fixed.example." => {
            response.add_answer(a(ip(192, 0, 2, tag)));
        }
        "big.example." if over_tcp => {
            response.add_answer(a(ip(192, 0, 2, 20)));
            response.add_answer(a(ip(192, 0, 2, 21)));
        }
        "big.example." => {
            response.set_truncated(true);
        }
        "refused.example." if tag == 10 => {
            response.set_response_code(ResponseCode::Refused);
        }
        "refused.example." => {
            response.add_answer(a(ip(192, 0, 2, 30)));
        }
        _ => {
            response.set_response_code(ResponseCode::NXDomain);
        }
    }
    response
}

impl FakeUpstream {
    fn start(at: Ipv4Addr, tag: u8) -> FakeUpstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind((at, 0)).unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = std::net::TcpListener::bind((at, port)) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        {
            let _guard = runtime.enter();
            let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
            let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
            let counter = udp_queries.clone();
            runtime.spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((len, from)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let request = Message::from_vec(&buf[..len]).unwrap();
                    let bytes = upstream_answer(&request, tag, false).to_vec().unwrap();
                    udp.send_to(&bytes, from).await.unwrap();
                }
            });
            let counter = tcp_queries.clone();
            runtime.spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let len = stream.read_u16().await.unwrap();
                        let mut request = vec![0u8; usize::from(len)];
                        stream.read_exact(&mut request).await.unwrap();
                        counter.fetch_add(1, Ordering::SeqCst);
                        let request = Message::from_vec(&request).unwrap();
                        let bytes = upstream_answer(&request, tag, true).to_vec().unwrap();
                        stream.write_u16(bytes.len() as u16).await.unwrap();
                        stream.write_all(&bytes).await.unwrap();
                    });
                }
            });
        }
        FakeUpstream {
            addr,
            udp_queries,
            tcp_queries,
            _runtime: runtime,
        }
    }
}

static NEXT_ID: AtomicU16 = AtomicU16::new(0x4000);

fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::new();
    message
        .set_id(NEXT_ID.fetch_add(1, Ordering::SeqCst))
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

/// One datagram to `server` from `source`, the raw answer back.
fn udp_exchange(server: SocketAddr, source: Ipv4Addr, packet: &[u8]) -> io::Result<Vec<u8>> {
    let socket = UdpSocket::bind((source, 0))?;
    // Connected, so an ICMP port unreachable shows as ConnectionRefused.
    socket.connect(server)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.send(packet)?;
    let mut buf = vec![0u8; 65535];
    let len = socket.recv(&mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

fn udp_query_from(server: SocketAddr, source: Ipv4Addr, request: &Message) -> Message {
    let bytes = udp_exchange(server, source, &request.to_vec().unwrap())
        .unwrap_or_else(|e| panic!("no udp answer from {server}: {e}"));
    let response = Message::from_vec(&bytes).unwrap();
    assert_eq!(response.id(), request.id(), "the client's id comes back");
    assert_eq!(response.message_type(), MessageType::Response);
    response
}

fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    udp_query_from(server, ip(127, 0, 0, 1), &query(name, qtype))
}

fn tcp_exchange(stream: &mut TcpStream, packet: &[u8]) -> io::Result<Vec<u8>> {
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut response = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut response)?;
    Ok(response)
}

fn tcp_connect(server: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&server, TIMEOUT).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let request = query(name, qtype);
    let mut stream = tcp_connect(server);
    let bytes = tcp_exchange(&mut stream, &request.to_vec().unwrap()).unwrap();
    let response = Message::from_vec(&bytes).unwrap();
    assert_eq!(response.id(), request.id());
    response
}

fn addrs(message: &Message) -> Vec<Ipv4Addr> {
    message
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn sorted(mut list: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    list.sort();
    list
}

#[test]
fn names_resolve_per_network_round_robin_and_follow_updates() {
    let upstream = FakeUpstream::start(ip(127, 0, 0, 4), 10);
    let records = Records::new(&networks(), &base_endpoints());
    let mut dns = DnsThread::start(records, vec![upstream.addr], fast_options());
    let (front, back) = dns.listen_front_and_back();

    // Each network answers from its own records only.
    let web_front = udp(front, "web", RecordType::A);
    assert_eq!(web_front.response_code(), ResponseCode::NoError);
    assert!(web_front.authoritative());
    assert_eq!(
        sorted(addrs(&web_front)),
        [ip(10, 1, 0, 2), ip(10, 1, 0, 3)]
    );
    assert_eq!(addrs(&udp(back, "web.", RecordType::A)), [ip(10, 2, 0, 3)]);
    assert_eq!(addrs(&udp(back, "DB", RecordType::A)), [ip(10, 2, 0, 2)]);
    assert_eq!(
        addrs(&udp(back, "proj-db-1.back", RecordType::A)),
        [ip(10, 2, 0, 2)]
    );
    assert_eq!(
        addrs(&udp(front, "bbbbbbbbbbbb", RecordType::A)),
        [ip(10, 1, 0, 3)]
    );
    // db lives on back: on front it is not ours, goes upstream, and does not exist there.
    let before = upstream.udp_queries.load(Ordering::SeqCst);
    let db_front = udp(front, "db", RecordType::A);
    assert_eq!(db_front.response_code(), ResponseCode::NXDomain);
    assert!(addrs(&db_front).is_empty());
    assert_eq!(upstream.udp_queries.load(Ordering::SeqCst), before + 1);
    assert_eq!(
        udp(front, "proj-db-1", RecordType::A).response_code(),
        ResponseCode::NXDomain
    );

    // Round-robin: consecutive answers for the replicas come in different orders, over UDP
    // and TCP alike.
    let orders: Vec<Vec<Ipv4Addr>> = (0..4)
        .map(|i| {
            let answer = if i % 2 == 0 {
                udp(front, "web", RecordType::A)
            } else {
                tcp(front, "web", RecordType::A)
            };
            addrs(&answer)
        })
        .collect();
    for pair in orders.windows(2) {
        assert_ne!(pair[0], pair[1], "{orders:?}");
        assert_eq!(sorted(pair[0].clone()), sorted(pair[1].clone()));
    }

    // Live update: a new container appears, a replica goes away, with the sockets untouched.
    let mut endpoints = base_endpoints();
    endpoints.retain(|e| e.container_name != "proj-web-2");
    endpoints.push(endpoint(
        'f',
        "proj-cache-1",
        "front",
        ip(10, 1, 0, 7),
        &["cache"],
    ));
    dns.server.update(Records::new(&networks(), &endpoints));
    assert_eq!(
        addrs(&udp(front, "cache", RecordType::A)),
        [ip(10, 1, 0, 7)]
    );
    assert_eq!(addrs(&udp(front, "web", RecordType::A)), [ip(10, 1, 0, 2)]);
    assert_eq!(
        udp(front, "proj-web-2", RecordType::A).response_code(),
        ResponseCode::NXDomain
    );
    assert_eq!(
        udp(back, "cache", RecordType::A).response_code(),
        ResponseCode::NXDomain
    );

    // Networks come and go: back stops listening, extra starts, front is untouched.
    let extra = SocketAddr::from((ip(127, 0, 0, 8), front.port()));
    let front_wanted = SocketAddr::from((ip(127, 0, 0, 2), 0));
    dns.set_listeners(&[("front", front_wanted), ("extra", extra)]);
    let request = query("web", RecordType::A).to_vec().unwrap();
    let gone = udp_exchange(back, ip(127, 0, 0, 1), &request);
    assert_eq!(
        gone.map_err(|e| e.kind()).err(),
        Some(io::ErrorKind::ConnectionRefused)
    );
    assert!(TcpStream::connect_timeout(&back, TIMEOUT).is_err());
    assert_eq!(
        addrs(&udp(extra, "extra-svc", RecordType::A)),
        [ip(10, 3, 0, 2)]
    );
    assert_eq!(
        addrs(&tcp(extra, "proj-extra-1", RecordType::A)),
        [ip(10, 3, 0, 2)]
    );
    assert_eq!(
        addrs(&udp(front, "cache", RecordType::A)),
        [ip(10, 1, 0, 7)]
    );
    // And back can come back on the same address at once.
    dns.set_listeners(&[("front", front_wanted), ("extra", extra), ("back", back)]);
    assert_eq!(addrs(&udp(back, "db", RecordType::A)), [ip(10, 2, 0, 2)]);
}

#[test]
fn other_types_ptr_and_large_answers() {
    let upstream = FakeUpstream::start(ip(127, 0, 0, 4), 10);
    let mut endpoints = base_endpoints();
    // 60 replicas: more than a 512-byte UDP answer holds.
    for i in 0..60u8 {
        let mut replica = endpoint(
            '9',
            &format!("proj-many-{i}"),
            "front",
            ip(10, 1, 1, i + 2),
            &["many"],
        );
        replica.container_id = format!("{i:0>64}");
        endpoints.push(replica);
    }
    let records = Records::new(&networks(), &endpoints);
    let mut dns = DnsThread::start(records, vec![upstream.addr], fast_options());
    let (front, back) = dns.listen_front_and_back();

    // Our names have no IPv6 or other records: NOERROR with no answer, not NXDOMAIN, and
    // nothing goes upstream.
    let before = upstream.udp_queries.load(Ordering::SeqCst);
    for qtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let answer = udp(front, "web", qtype);
        assert_eq!(answer.response_code(), ResponseCode::NoError, "{qtype}");
        assert!(answer.answers().is_empty(), "{qtype}");
    }
    assert_eq!(upstream.udp_queries.load(Ordering::SeqCst), before);

    // Reverse lookups of our addresses, per network.
    let ptr = udp(front, "3.0.1.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(ptr.response_code(), ResponseCode::NoError);
    match ptr.answers().first().map(Record::data) {
        Some(RData::PTR(target)) => assert_eq!(target.0.to_ascii(), "proj-web-2.front."),
        other => panic!("no PTR: {other:?}"),
    }
    // The name PTR gives resolves forward.
    assert_eq!(
        addrs(&udp(front, "proj-web-2.front.", RecordType::A)),
        [ip(10, 1, 0, 3)]
    );
    let foreign = udp(back, "3.0.1.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(foreign.response_code(), ResponseCode::NXDomain);

    // Many replicas: truncated over UDP (the client retries over TCP), whole over TCP.
    let request = query("many", RecordType::A);
    let bytes = udp_exchange(front, ip(127, 0, 0, 1), &request.to_vec().unwrap()).unwrap();
    assert!(bytes.len() <= 512, "{}", bytes.len());
    let truncated = Message::from_vec(&bytes).unwrap();
    assert!(truncated.truncated());
    let whole = tcp(front, "many", RecordType::A);
    assert!(!whole.truncated());
    assert_eq!(addrs(&whole).len(), 60);
}

#[test]
fn other_names_are_forwarded_with_fallbacks_and_tcp_retry() {
    let first = FakeUpstream::start(ip(127, 0, 0, 4), 10);
    let second = FakeUpstream::start(ip(127, 0, 0, 5), 11);
    // An upstream nobody listens on (port unreachable) and one that never answers.
    let dead = UdpSocket::bind((ip(127, 0, 0, 6), 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let silent = UdpSocket::bind((ip(127, 0, 0, 6), 0)).unwrap();
    let silent_addr = silent.local_addr().unwrap();

    // The list comes from a resolv.conf; our fakes listen on high ports, not 53.
    let mut upstreams = upstreams_from_resolv_conf("nameserver 127.0.0.6\nnameserver 127.0.0.4\n");
    assert_eq!(upstreams.len(), 2);
    upstreams[0].set_port(dead.port());
    upstreams[1].set_port(first.addr.port());
    upstreams.push(second.addr);

    let records = Records::new(&networks(), &base_endpoints());
    let mut dns = DnsThread::start(records, upstreams, fast_options());
    let (front, _back) = dns.listen_front_and_back();

    // Relayed: past the dead upstream to the first live one, the client's id restored, the
    // rest of the upstream's answer byte for byte.
    let request = query("fixed.example", RecordType::A);
    let relayed = udp_exchange(front, ip(127, 0, 0, 1), &request.to_vec().unwrap()).unwrap();
    let expected = upstream_answer(&request, 10, false).to_vec().unwrap();
    assert_eq!(relayed, expected);
    assert_eq!(first.udp_queries.load(Ordering::SeqCst), 1);

    // REFUSED from the first upstream: the next one is asked.
    let refused = udp(front, "refused.example", RecordType::A);
    assert_eq!(refused.response_code(), ResponseCode::NoError);
    assert_eq!(addrs(&refused), [ip(192, 0, 2, 30)]);

    // Truncated over UDP upstream: asked again over TCP, relayed whole since it fits.
    let big = udp(front, "big.example", RecordType::A);
    assert!(!big.truncated());
    assert_eq!(addrs(&big), [ip(192, 0, 2, 20), ip(192, 0, 2, 21)]);
    assert_eq!(first.tcp_queries.load(Ordering::SeqCst), 1);
    // A client asking over TCP is forwarded over TCP.
    assert_eq!(
        addrs(&tcp(front, "fixed.example", RecordType::A)),
        [ip(192, 0, 2, 10)]
    );
    assert_eq!(first.tcp_queries.load(Ordering::SeqCst), 2);

    // A container with its own dns servers is forwarded there, others are not.
    let mut per_client = HashMap::new();
    per_client.insert(ip(127, 0, 0, 7), vec![second.addr]);
    dns.server.set_client_upstreams(per_client);
    let own = udp_query_from(
        front,
        ip(127, 0, 0, 7),
        &query("fixed.example", RecordType::A),
    );
    assert_eq!(addrs(&own), [ip(192, 0, 2, 11)]);
    assert_eq!(
        addrs(&udp(front, "fixed.example", RecordType::A)),
        [ip(192, 0, 2, 10)]
    );
    // Our own names stay ours for that client.
    let local = udp_query_from(front, ip(127, 0, 0, 7), &query("web", RecordType::A));
    assert_eq!(addrs(&local).len(), 2);

    // An upstream that never answers: SERVFAIL after the timeout, not silence.
    dns.server.set_upstreams(vec![silent_addr]);
    let started = Instant::now();
    let answer = udp(front, "fixed.example", RecordType::A);
    assert_eq!(answer.response_code(), ResponseCode::ServFail);
    assert!(started.elapsed() >= Duration::from_millis(400));
    // No upstream at all: SERVFAIL at once; our names still resolve.
    dns.server.set_upstreams(Vec::new());
    let answer = udp(front, "fixed.example", RecordType::A);
    assert_eq!(answer.response_code(), ResponseCode::ServFail);
    assert_eq!(
        tcp(front, "fixed.example", RecordType::A).response_code(),
        ResponseCode::ServFail
    );
    assert_eq!(
        addrs(&udp(front, "proj-web-1", RecordType::A)),
        [ip(10, 1, 0, 2)]
    );
    drop(silent);
}

#[test]
fn malformed_input_and_abusive_clients_do_not_stop_the_server() {
    let records = Records::new(&networks(), &base_endpoints());
    let mut dns = DnsThread::start(records, Vec::new(), fast_options());
    let (front, _back) = dns.listen_front_and_back();
    let client = ip(127, 0, 0, 1);

    // Unparsable: FORMERR with the id echoed.
    let garbage = [0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'x'];
    let reply = Message::from_vec(&udp_exchange(front, client, &garbage).unwrap()).unwrap();
    assert_eq!(reply.id(), 0xbeef);
    assert_eq!(reply.response_code(), ResponseCode::FormErr);
    // Too short, or a response: no answer at all.
    let socket = UdpSocket::bind((client, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut response = query("web", RecordType::A);
    response.set_message_type(MessageType::Response);
    for packet in [vec![], vec![1, 2, 3], response.to_vec().unwrap()] {
        socket.send_to(&packet, front).unwrap();
    }
    let mut buf = [0u8; 512];
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "answered a packet it should drop"
    );
    // A flood of noise, then a real query still works.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..3000usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 300) as usize;
        let packet: Vec<u8> = (0..len)
            .map(|j| (state >> (j % 56)) as u8 ^ i as u8)
            .collect();
        let _ = socket.send_to(&packet, front);
    }
    // A query sent while the socket's buffer is still full of noise may be dropped by the
    // kernel; like a resolver, ask again after a short wait.
    let request = query("proj-web-1", RecordType::A).to_vec().unwrap();
    let answered = (0..5).find_map(|_| {
        let socket = UdpSocket::bind((client, 0)).unwrap();
        socket.connect(front).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        socket.send(&request).unwrap();
        let mut buf = vec![0u8; 512];
        let len = socket.recv(&mut buf).ok()?;
        Message::from_vec(&buf[..len]).ok()
    });
    let answered = answered.expect("no answer after the flood");
    assert_eq!(addrs(&answered), [ip(10, 1, 0, 2)]);

    // TCP: garbage in a frame gets FORMERR on the same connection, which keeps working.
    let mut stream = tcp_connect(front);
    let reply = Message::from_vec(&tcp_exchange(&mut stream, &garbage).unwrap()).unwrap();
    assert_eq!(reply.response_code(), ResponseCode::FormErr);
    let next = query("web", RecordType::A);
    let reply =
        Message::from_vec(&tcp_exchange(&mut stream, &next.to_vec().unwrap()).unwrap()).unwrap();
    assert_eq!(addrs(&reply).len(), 2);
    drop(stream);
    // A frame announcing more than is sent, then a half-close: the server gives up.
    let mut stream = tcp_connect(front);
    stream.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
    drop(stream);

    // Idle connections are closed after the idle timeout.
    let mut idle = tcp_connect(front);
    let started = Instant::now();
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < TIMEOUT,
        "{waited:?}"
    );

    // At most 4 connections: a fifth is closed at once, and a new one is served once the
    // others are gone.
    let holders: Vec<TcpStream> = (0..4).map(|_| tcp_connect(front)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut fifth = tcp_connect(front);
    let started = Instant::now();
    assert_eq!(fifth.read(&mut buf).unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_millis(400));
    drop(holders);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        addrs(&tcp(front, "proj-web-1", RecordType::A)),
        [ip(10, 1, 0, 2)]
    );
    assert_eq!(
        addrs(&udp(front, "proj-web-1", RecordType::A)),
        [ip(10, 1, 0, 2)]
    );
}

#[test]
fn busybox_nslookup_resolves_through_the_server() {
    let upstream = FakeUpstream::start(ip(127, 0, 0, 4), 10);
    let records = Records::new(&networks(), &base_endpoints());
    let mut dns = DnsThread::start(records, vec![upstream.addr], fast_options());
    let (front, back) = dns.listen_front_and_back();

    let nslookup = |server: SocketAddr, name: &str| {
        let output = Command::new("/bin/busybox")
            .arg("nslookup")
            .arg(format!("-port={}", server.port()))
            .args(["-timeout=2", "-retry=1", name])
            .arg(server.ip().to_string())
            .output()
            .expect("busybox-static is installed (TESTBED.md)");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let (ok, out) = nslookup(front, "web");
    assert!(ok, "{out}");
    assert!(
        out.contains("Address: 10.1.0.2") && out.contains("Address: 10.1.0.3"),
        "{out}"
    );
    let (ok, out) = nslookup(back, "web");
    assert!(ok, "{out}");
    assert!(
        out.contains("Address: 10.2.0.3") && !out.contains("10.1.0."),
        "{out}"
    );
    let (ok, out) = nslookup(front, "fixed.example");
    assert!(ok, "{out}");
    assert!(out.contains("Address: 192.0.2.10"), "{out}");
    let (ok, out) = nslookup(front, "10.1.0.3");
    assert!(ok, "{out}");
    assert!(out.contains("proj-web-2.front"), "{out}");
    let (ok, out) = nslookup(front, "nosuch.example");
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
}
