//! The sockets: one UDP and one TCP listener per (network, address), all answering from one
//! shared, atomically replaceable table.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use super::forward::forward;
use super::packet::{self, Action, Transport};
use super::records::Records;
use super::DnsError;

/// Tries at binding UDP and TCP on the same free port when asked for port 0.
const PORT_ZERO_TRIES: usize = 8;
/// Pause after a failing recv/accept (EMFILE and the like) so the loop does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// TTL of our answers (Docker's embedded DNS uses 600).
    pub ttl: u32,
    /// Per upstream and attempt (UDP, then TCP after truncation).
    pub upstream_timeout: Duration,
    /// Queries being forwarded at once, over all listeners; beyond it clients get SERVFAIL.
    pub max_in_flight: usize,
    /// Open TCP connections over all listeners; beyond it new ones are closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            ttl: 600,
            upstream_timeout: Duration::from_secs(2),
            max_in_flight: 1024,
            max_tcp_connections: 256,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// The DNS server. Every method takes `&self`: share it in an `Arc` between netd's watcher
/// (which calls [`Server::update`]) and whatever manages networks ([`Server::set_listeners`]).
/// Dropping it stops every listener.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Mutex<HashMap<(String, SocketAddr), Listener>>,
}

struct Shared {
    records: RwLock<Arc<Records>>,
    upstreams: RwLock<Arc<Upstreams>>,
    /// Where we listen: never forwarded to (a resolv.conf naming a gateway would loop).
    own_addrs: RwLock<HashSet<SocketAddr>>,
    in_flight: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
    options: ServerOptions,
}

#[derive(Default)]
struct Upstreams {
    default: Vec<SocketAddr>,
    per_client: HashMap<Ipv4Addr, Vec<SocketAddr>>,
}

struct Listener {
    network: String,
    /// Bound address (the port filled in when 0 was asked).
    addr: SocketAddr,
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
}

impl Listener {
    /// Stops both loops and waits until their sockets are closed, so the address can be
    /// bound again right away.
    async fn stop(self) {
        self.udp.abort();
        self.tcp.abort();
        let _ = self.udp.await;
        let _ = self.tcp.await;
    }
}

impl Server {
    /// A server with no listener yet; `upstreams` is where other names go (empty: SERVFAIL).
    pub fn new(records: Records, upstreams: Vec<SocketAddr>, options: ServerOptions) -> Server {
        let shared = Shared {
            records: RwLock::new(Arc::new(records)),
            upstreams: RwLock::new(Arc::new(Upstreams {
                default: upstreams,
                per_client: HashMap::new(),
            })),
            own_addrs: RwLock::new(HashSet::new()),
            in_flight: Arc::new(Semaphore::new(options.max_in_flight)),
            tcp_connections: Arc::new(Semaphore::new(options.max_tcp_connections)),
            options,
        };
        Server {
            shared: Arc::new(shared),
            listeners: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the name table atomically: the next query is answered from `records`.
    pub fn update(&self, records: Records) {
        *self
            .shared
            .records
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(records);
    }

    /// The table queries are answered from now.
    pub fn records(&self) -> Arc<Records> {
        self.shared.records()
    }

    /// Replaces the upstream resolvers (e.g. after /etc/resolv.conf changed).
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        let mut guard = self
            .shared
            .upstreams
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *guard = Arc::new(Upstreams {
            default: upstreams,
            per_client: guard.per_client.clone(),
        });
    }

    /// Replaces the per-client upstreams: queries from a source address in the map (a
    /// container with its own `dns:` servers) are forwarded to those instead of the default.
    pub fn set_client_upstreams(&self, per_client: HashMap<Ipv4Addr, Vec<SocketAddr>>) {
        let mut guard = self
            .shared
            .upstreams
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *guard = Arc::new(Upstreams {
            default: guard.default.clone(),
            per_client,
        });
    }

    /// Makes the listeners exactly `wanted` (network name, address): those no longer wanted
    /// are closed, new ones bound (UDP and TCP on the same port; port 0 picks a free one, see
    /// [`Server::listeners`]); the others keep running untouched. Sockets are bound with
    /// IP_FREEBIND, so a gateway address not yet on its bridge is not an error. Returns the
    /// listeners that could not be bound (they are not kept: the next call tries again).
    /// Must run inside a Tokio runtime (current-thread is enough).
    pub async fn set_listeners(&self, wanted: &[(String, SocketAddr)]) -> Vec<DnsError> {
        let mut listeners = self.listeners.lock().await;
        let wanted: HashSet<(String, SocketAddr)> = wanted.iter().cloned().collect();
        let gone: Vec<_> = listeners
            .keys()
            .filter(|key| !wanted.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(listener) = listeners.remove(&key) {
                listener.stop().await;
            }
        }
        let mut errors = Vec::new();
        for key in wanted {
            if listeners.contains_key(&key) {
                continue;
            }
            match self.start(&key.0, key.1) {
                Ok(listener) => {
                    listeners.insert(key, listener);
                }
                Err(error) => errors.push(error),
            }
        }
        *self
            .shared
            .own_addrs
            .write()
            .unwrap_or_else(PoisonError::into_inner) = listeners.values().map(|l| l.addr).collect();
        errors
    }

    /// The running listeners: network name and bound address (UDP and TCP share it).
    pub async fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let listeners = self.listeners.lock().await;
        let mut all: Vec<_> = listeners
            .values()
            .map(|l| (l.network.clone(), l.addr))
            .collect();
        all.sort();
        all
    }

    /// Closes every listener (waiting until the sockets are released).
    pub async fn shutdown(&self) {
        let errors = self.set_listeners(&[]).await;
        debug_assert!(errors.is_empty());
    }

    fn start(&self, network: &str, addr: SocketAddr) -> Result<Listener, DnsError> {
        let no_runtime = || DnsError::NoRuntime {
            network: network.to_owned(),
            addr,
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| no_runtime())?;
        let bind_error = |proto, addr, source| DnsError::Bind {
            network: network.to_owned(),
            addr,
            proto,
            source,
        };
        let mut tries = 0;
        let (udp, tcp, bound) = loop {
            tries += 1;
            let udp = bind_udp(addr).map_err(|e| bind_error("udp", addr, e))?;
            let bound = udp.local_addr().map_err(|e| bind_error("udp", addr, e))?;
            match bind_tcp(bound) {
                Ok(tcp) => break (udp, tcp, bound),
                Err(e)
                    if addr.port() == 0
                        && e.kind() == io::ErrorKind::AddrInUse
                        && tries < PORT_ZERO_TRIES =>
                {
                    continue
                }
                Err(e) => return Err(bind_error("tcp", bound, e)),
            }
        };
        // Entering the runtime makes from_std register with its reactor.
        let _guard = runtime.enter();
        let udp = UdpSocket::from_std(udp).map_err(|e| bind_error("udp", bound, e))?;
        let tcp = TcpListener::from_std(tcp).map_err(|e| bind_error("tcp", bound, e))?;
        let udp = runtime.spawn(serve_udp(self.shared.clone(), network.to_owned(), udp));
        let tcp = runtime.spawn(serve_tcp(self.shared.clone(), network.to_owned(), tcp));
        tracing::debug!(network, %bound, "dns listening");
        Ok(Listener {
            network: network.to_owned(),
            addr: bound,
            udp,
            tcp,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for listener in self.listeners.get_mut().values() {
            listener.udp.abort();
            listener.tcp.abort();
        }
    }
}

impl Shared {
    fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where a query from `client` goes: its own servers if it has some, else the default;
    /// never one of our own listen addresses.
    fn upstreams_for(&self, client: IpAddr) -> Vec<SocketAddr> {
        let upstreams = self
            .upstreams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let chosen = match client {
            IpAddr::V4(ip) => upstreams.per_client.get(&ip),
            IpAddr::V6(ip) => ip
                .to_ipv4_mapped()
                .and_then(|v4| upstreams.per_client.get(&v4)),
        }
        .unwrap_or(&upstreams.default);
        let own = self
            .own_addrs
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        chosen
            .iter()
            .filter(|addr| !own.contains(addr))
            .copied()
            .collect()
    }

    /// A permit to forward, with where to, or `None` when the query must get SERVFAIL (no
    /// upstream, or too many queries in flight).
    fn forward_plan(&self, client: IpAddr) -> Option<(OwnedSemaphorePermit, Vec<SocketAddr>)> {
        let upstreams = self.upstreams_for(client);
        if upstreams.is_empty() {
            return None;
        }
        let permit = self.in_flight.clone().try_acquire_owned().ok()?;
        Some((permit, upstreams))
    }
}

fn new_socket(addr: SocketAddr, kind: SockType) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        kind,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if addr.is_ipv4() {
        // Bind before the bridge has its gateway address (netd may start first).
        enable(&fd, libc::IPPROTO_IP, libc::IP_FREEBIND)?;
    }
    Ok(fd)
}

/// Sets a boolean socket option (nix's typed options need its `net` feature, not enabled).
fn enable(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option takes a c_int; we pass a pointer to one and its exact size, and
    // `fd` is an open socket for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// bind(2) with a std address (nix's sockaddr conversions need its `net` feature).
fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let rc = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                // Octets in memory order are network byte order.
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a fully initialised sockaddr_in and the length is its size.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: `sin6` is a fully initialised sockaddr_in6 and the length is its size.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    // No SO_REUSEADDR: on UDP it would let another socket share the port.
    let fd = new_socket(addr, SockType::Datagram)?;
    bind(&fd, addr)?;
    Ok(std::net::UdpSocket::from(fd))
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let fd = new_socket(addr, SockType::Stream)?;
    // Rebinding while connections of a previous listener linger in TIME_WAIT.
    enable(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    bind(&fd, addr)?;
    socket::listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(std::net::TcpListener::from(fd))
}

type Relayed = Option<(Vec<u8>, SocketAddr)>;

async fn serve_udp(shared: Arc<Shared>, network: String, socket: UdpSocket) {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    // Forwards in progress; they hand their answer back here, so this task alone owns the
    // socket and aborting it closes the socket.
    let mut forwards: JoinSet<Relayed> = JoinSet::new();
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (len, client) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        tracing::debug!(%network, %error, "dns udp receive failed");
                        tokio::time::sleep(ERROR_PAUSE).await;
                        continue;
                    }
                };
                let records = shared.records();
                let ttl = shared.options.ttl;
                match packet::handle(&records, &network, &buf[..len], Transport::Udp, ttl) {
                    Action::Reply(bytes) => {
                        let _ = socket.send_to(&bytes, client).await;
                    }
                    Action::Drop => {}
                    Action::Forward(query) => match shared.forward_plan(client.ip()) {
                        Some((permit, upstreams)) => {
                            let per_try = shared.options.upstream_timeout;
                            forwards.spawn(async move {
                                let _permit = permit;
                                forward(&query, &upstreams, Transport::Udp, per_try)
                                    .await
                                    .map(|bytes| (bytes, client))
                            });
                        }
                        None => {
                            if let Some(bytes) = packet::server_failure(&query) {
                                let _ = socket.send_to(&bytes, client).await;
                            }
                        }
                    },
                }
            }
            Some(done) = forwards.join_next(), if !forwards.is_empty() => {
                if let Ok(Some((bytes, client))) = done {
                    let _ = socket.send_to(&bytes, client).await;
                }
            }
        }
    }
}

async fn serve_tcp(shared: Arc<Shared>, network: String, listener: TcpListener) {
    // Connections die with the listener task (JoinSet aborts them when dropped).
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, client) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%network, %error, "dns tcp accept failed");
                        tokio::time::sleep(ERROR_PAUSE).await;
                        continue;
                    }
                };
                // Over the limit: dropping the stream closes it.
                let Ok(permit) = shared.tcp_connections.clone().try_acquire_owned() else {
                    continue;
                };
                let shared = shared.clone();
                let network = network.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    serve_connection(&shared, &network, stream, client.ip()).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Queries in order on one connection, each framed by a 2-byte length (at most 64 KiB by
/// construction); closed when idle, on garbage, or on any error.
async fn serve_connection(shared: &Shared, network: &str, mut stream: TcpStream, client: IpAddr) {
    let idle = shared.options.tcp_idle_timeout;
    loop {
        let Ok(Ok(len)) = timeout(idle, stream.read_u16()).await else {
            return;
        };
        let mut request = vec![0u8; usize::from(len)];
        let Ok(Ok(_)) = timeout(idle, stream.read_exact(&mut request)).await else {
            return;
        };
        let action = {
            let records = shared.records();
            packet::handle(
                &records,
                network,
                &request,
                Transport::Tcp,
                shared.options.ttl,
            )
        };
        let reply = match action {
            Action::Reply(bytes) => bytes,
            Action::Drop => return,
            Action::Forward(query) => {
                let relayed = match shared.forward_plan(client) {
                    Some((_permit, upstreams)) => {
                        let per_try = shared.options.upstream_timeout;
                        forward(&query, &upstreams, Transport::Tcp, per_try).await
                    }
                    None => None,
                };
                match relayed.or_else(|| packet::server_failure(&query)) {
                    Some(bytes) => bytes,
                    None => return,
                }
            }
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if !matches!(timeout(idle, stream.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}
