//! Relaying a query that is not ours to the upstream resolvers and the answer back unchanged
//! (only the id is swapped: a random one upstream, the client's one back).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::packet::{self, Forward, Transport, HEADER_LEN, MAX_UDP};

/// Asks `upstreams` in order and returns the bytes to send to the client: the first usable
/// answer, else the last SERVFAIL/REFUSED one, else our own SERVFAIL. Each attempt gets
/// `per_try`. Over UDP a truncated answer is asked again over TCP and relayed whole when it
/// fits what the client takes over UDP, else relayed truncated (the client then uses TCP).
/// A client that asked over TCP is forwarded over TCP.
pub(crate) async fn forward(
    query: &Forward,
    upstreams: &[SocketAddr],
    transport: Transport,
    per_try: Duration,
) -> Option<Vec<u8>> {
    let client_id = [query.packet[0], query.packet[1]];
    let id = random_id();
    let mut packet = query.packet.clone();
    packet[..2].copy_from_slice(&id.to_be_bytes());

    let mut fallback = None;
    for &upstream in upstreams {
        let attempt = match transport {
            Transport::Udp => udp_exchange(upstream, &packet, id, &query.query, per_try).await,
            Transport::Tcp => tcp_exchange(upstream, &packet, id, &query.query, per_try).await,
        };
        let response = match attempt {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%upstream, %error, "dns upstream failed");
                continue;
            }
        };
        let response = match response {
            Reply::Full(bytes) if transport == Transport::Udp && is_truncated(&bytes) => {
                match tcp_exchange(upstream, &packet, id, &query.query, per_try).await {
                    Ok(Reply::Full(full))
                        if full.len() <= query.udp_limit && !is_truncated(&full) =>
                    {
                        full
                    }
                    _ => bytes,
                }
            }
            Reply::Full(bytes) => bytes,
            // Too big for our UDP buffer: the client can take at most MAX_UDP anyway.
            Reply::Oversized => match packet::truncated(query) {
                Some(bytes) => return Some(bytes),
                None => continue,
            },
        };
        let code = rcode(&response);
        if code == u16::from(ResponseCode::ServFail) || code == u16::from(ResponseCode::Refused) {
            fallback = Some(response);
            continue;
        }
        return Some(with_id(response, client_id));
    }
    match fallback {
        Some(response) => Some(with_id(response, client_id)),
        None => packet::server_failure(query),
    }
}

enum Reply {
    Full(Vec<u8>),
    Oversized,
}

fn with_id(mut response: Vec<u8>, id: [u8; 2]) -> Vec<u8> {
    response[..2].copy_from_slice(&id);
    response
}

fn is_truncated(response: &[u8]) -> bool {
    response[2] & 0x02 != 0
}

fn rcode(response: &[u8]) -> u16 {
    u16::from(response[3] & 0x0f)
}

/// Whether `response` answers our query: our id, QR set, the same question. Anything else
/// (late answers, spoofing attempts) is ignored.
fn answers(response: &[u8], id: u16, query: &Query) -> bool {
    if response.len() < HEADER_LEN || response[2] & 0x80 == 0 {
        return false;
    }
    if u16::from_be_bytes([response[0], response[1]]) != id {
        return false;
    }
    match packet::header_and_queries(response) {
        Some((_, queries)) => {
            let [asked] = queries.as_slice() else {
                return false;
            };
            asked.name() == query.name()
                && asked.query_type() == query.query_type()
                && asked.query_class() == query.query_class()
        }
        None => false,
    }
}

async fn udp_exchange(
    upstream: SocketAddr,
    packet: &[u8],
    id: u16,
    query: &Query,
    per_try: Duration,
) -> io::Result<Reply> {
    // A fresh socket per query: a random source port on top of the random id.
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    // One byte more than we relay tells a too-long datagram from one that fits.
    let mut buf = vec![0u8; MAX_UDP + 1];
    let exchange = async {
        loop {
            let len = socket.recv(&mut buf).await?;
            if len > MAX_UDP {
                return Ok(Reply::Oversized);
            }
            if answers(&buf[..len], id, query) {
                buf.truncate(len);
                return Ok(Reply::Full(buf));
            }
        }
    };
    timeout(per_try, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer over udp"))?
}

async fn tcp_exchange(
    upstream: SocketAddr,
    packet: &[u8],
    id: u16,
    query: &Query,
    per_try: Duration,
) -> io::Result<Reply> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        let len = u16::try_from(packet.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
        let mut framed = Vec::with_capacity(packet.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(packet);
        stream.write_all(&framed).await?;
        let len = usize::from(stream.read_u16().await?);
        let mut response = vec![0u8; len];
        stream.read_exact(&mut response).await?;
        if answers(&response, id, query) {
            Ok(Reply::Full(response))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answer over tcp does not match the query",
            ))
        }
    };
    timeout(per_try, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer over tcp"))?
}

/// An unpredictable query id, so an off-path sender cannot guess it.
fn random_id() -> u16 {
    let mut bytes = [0u8; 2];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the valid, writable buffer.
    let written = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if written == 2 {
        u16::from_ne_bytes(bytes)
    } else {
        // getrandom cannot fail for 2 bytes once the pool is initialised; the random source
        // port still protects the exchange if it ever does.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16)
    }
}
