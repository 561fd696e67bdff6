//! One query in, one decision out: answer it from the records, forward it upstream, or drop
//! it. Pure (no sockets), so every branch is unit-tested with packets built by hickory.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::records::{key_of, Records};

pub(crate) const HEADER_LEN: usize = 12;
/// Without EDNS a UDP answer is at most 512 bytes (RFC 1035).
pub(crate) const MIN_UDP: usize = 512;
/// Largest UDP message sent or relayed to a client whatever it advertises; bigger answers get
/// TC and the client asks again over TCP.
pub(crate) const MAX_UDP: usize = 4096;
/// Payload size advertised in the OPT record of local answers (DNS flag day 2020).
const EDNS_PAYLOAD: u16 = 1232;
/// An A record after the first costs 16 bytes with a compressed owner name.
const A_RECORD_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug)]
pub(crate) enum Action {
    Reply(Vec<u8>),
    Forward(Box<Forward>),
    Drop,
}

/// A query that is not ours, to be relayed upstream unchanged (apart from its id).
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    /// The query exactly as received.
    pub packet: Vec<u8>,
    pub request: Message,
    pub query: Query,
    /// What the client can take over UDP.
    pub udp_limit: usize,
}

/// Decides what to do with `packet`, received on `network`'s listener.
pub(crate) fn handle(
    records: &Records,
    network: &str,
    packet: &[u8],
    transport: Transport,
    ttl: u32,
) -> Action {
    if packet.len() < HEADER_LEN {
        return Action::Drop;
    }
    // A response sent to us: never answer one (no loops between servers, no reflection).
    if packet[2] & 0x80 != 0 {
        return Action::Drop;
    }
    let Ok(request) = Message::from_vec(packet) else {
        return Action::Reply(format_error(packet));
    };
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => udp_limit(&request),
    };
    if request.op_code() != OpCode::Query {
        return reply(&request, Vec::new(), ResponseCode::NotImp, limit);
    }
    let [query] = request.queries() else {
        return reply(&request, Vec::new(), ResponseCode::FormErr, limit);
    };
    if query.query_class() == DNSClass::IN {
        if let Some(answers) = local_answers(records, network, query, ttl) {
            return reply(&request, answers, ResponseCode::NoError, limit);
        }
    }
    let query = query.clone();
    Action::Forward(Box::new(Forward {
        packet: packet.to_vec(),
        request,
        query,
        udp_limit: limit.min(MAX_UDP),
    }))
}

/// The answers when the name is ours on `network` (possibly none: a name we own with no
/// record of the asked type is NOERROR with an empty answer, never NXDOMAIN, which would make
/// resolvers drop the A answer too); `None` when the query is for someone else.
fn local_answers(records: &Records, network: &str, query: &Query, ttl: u32) -> Option<Vec<Record>> {
    let key = key_of(query.name());
    let qtype = query.query_type();
    if let Some(ip) = reverse_v4(&key) {
        let target = records.reverse(network, ip)?;
        let answers = match (qtype, Name::from_ascii(format!("{target}."))) {
            (RecordType::PTR | RecordType::ANY, Ok(target)) => vec![Record::from_rdata(
                query.name().clone(),
                ttl,
                RData::PTR(PTR(target)),
            )],
            _ => Vec::new(),
        };
        return Some(answers);
    }
    if !records.contains_key(network, &key) {
        return None;
    }
    let answers = match qtype {
        RecordType::A | RecordType::ANY => records
            .lookup_key(network, &key)
            .unwrap_or_default()
            .into_iter()
            .map(|ip| Record::from_rdata(query.name().clone(), ttl, RData::A(A(ip))))
            .collect(),
        _ => Vec::new(),
    };
    Some(answers)
}

/// The address of `d.c.b.a.in-addr.arpa` (a normalized key), `None` for anything else.
fn reverse_v4(key: &str) -> Option<Ipv4Addr> {
    let labels = key.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = labels.split('.');
    for slot in octets.iter_mut().rev() {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// Largest UDP answer `request` can take: 512, or its EDNS payload size up to [`MAX_UDP`].
pub(crate) fn udp_limit(request: &Message) -> usize {
    usize::from(request.max_payload()).clamp(MIN_UDP, MAX_UDP)
}

fn reply(request: &Message, answers: Vec<Record>, rcode: ResponseCode, limit: usize) -> Action {
    let mut message = response(request, rcode);
    message.set_authoritative(rcode == ResponseCode::NoError);
    message.add_answers(answers);
    match encode_within(message, limit) {
        Some(bytes) => Action::Reply(bytes),
        None => Action::Drop,
    }
}

/// A response skeleton for `request`: same id, question and RD, with `rcode`.
pub(crate) fn response(request: &Message, rcode: ResponseCode) -> Message {
    let mut message = Message::new();
    message
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(request.checking_disabled())
        .set_response_code(rcode);
    message.add_queries(request.queries().iter().cloned());
    if request.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        message.set_edns(edns);
    }
    message
}

/// SERVFAIL for a query that could not be forwarded.
pub(crate) fn server_failure(forward: &Forward) -> Option<Vec<u8>> {
    response(&forward.request, ResponseCode::ServFail)
        .to_vec()
        .ok()
}

/// An empty answer with TC set: the client asks again over TCP.
pub(crate) fn truncated(forward: &Forward) -> Option<Vec<u8>> {
    let mut message = response(&forward.request, ResponseCode::NoError);
    message.set_truncated(true);
    message.to_vec().ok()
}

/// Encodes `message`, dropping answers and setting TC when it is longer than `limit`.
fn encode_within(mut message: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = message.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let answers = message.take_answers();
    message.set_truncated(true);
    let base = message.to_vec().ok()?.len();
    let mut keep = (limit.saturating_sub(base) / A_RECORD_LEN).min(answers.len());
    loop {
        message.answers_mut().clear();
        message.add_answers(answers[..keep].iter().cloned());
        let bytes = message.to_vec().ok()?;
        if bytes.len() <= limit || keep == 0 {
            return Some(bytes);
        }
        keep -= 1;
    }
}

/// FORMERR for a packet hickory could not parse: only its header is echoed.
fn format_error(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[..2].copy_from_slice(&packet[..2]);
    // QR, the request's opcode and RD; RA and rcode 1 (FORMERR).
    out[2] = 0x80 | (packet[2] & 0x79);
    out[3] = 0x80 | 0x01;
    out
}

/// The header and question of a message (answer records are not parsed, so an upstream's
/// odd records cannot make a valid response look invalid).
pub(crate) fn header_and_queries(packet: &[u8]) -> Option<(Header, Vec<Query>)> {
    let mut decoder = BinDecoder::new(packet);
    let header = Header::read(&mut decoder).ok()?;
    let queries = Message::read_queries(&mut decoder, usize::from(header.query_count())).ok()?;
    Some((header, queries))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::network::dns::records::tests::{endpoint, network};

    pub(crate) fn query(name: &str, qtype: RecordType) -> Message {
        let mut message = Message::new();
        message
            .set_id(0x1234)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message
    }

    fn records() -> Records {
        Records::new(
            &[
                network("front", "10.1.0.0/24"),
                network("back", "10.2.0.0/24"),
            ],
            &[
                endpoint('a', "proj-web-1", "front", [10, 1, 0, 2], &["web"]),
                endpoint('b', "proj-web-2", "front", [10, 1, 0, 3], &["web"]),
                endpoint('c', "proj-db-1", "back", [10, 2, 0, 2], &["db"]),
            ],
        )
    }

    fn run(records: &Records, net: &str, message: &Message, transport: Transport) -> Action {
        handle(records, net, &message.to_vec().unwrap(), transport, 600)
    }

    fn answer(action: Action) -> Message {
        match action {
            Action::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn a_records(message: &Message) -> Vec<Ipv4Addr> {
        message
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_query_for_replicas_answers_all_rotating() {
        let records = records();
        let request = query("WEB.", RecordType::A);
        let first = answer(run(&records, "front", &request, Transport::Udp));
        assert_eq!(first.id(), 0x1234);
        assert_eq!(first.message_type(), MessageType::Response);
        assert_eq!(first.response_code(), ResponseCode::NoError);
        assert!(first.authoritative() && first.recursion_desired());
        // The question comes back as asked (case preserved for 0x20 randomisation).
        assert_eq!(first.queries()[0].name().to_ascii(), "WEB.");
        assert_eq!(first.answers()[0].name().to_ascii(), "WEB.");
        assert_eq!(first.answers()[0].ttl(), 600);
        let second = answer(run(&records, "front", &request, Transport::Udp));
        let (a, b) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3));
        assert_eq!(a_records(&first), vec![a, b]);
        assert_eq!(a_records(&second), vec![b, a]);
    }

    #[test]
    fn other_types_for_our_names_are_empty_noerror() {
        let records = records();
        for qtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let reply = answer(run(&records, "front", &query("web", qtype), Transport::Udp));
            assert_eq!(reply.response_code(), ResponseCode::NoError, "{qtype}");
            assert!(reply.answers().is_empty());
        }
        let any = answer(run(
            &records,
            "back",
            &query("db.", RecordType::ANY),
            Transport::Tcp,
        ));
        assert_eq!(a_records(&any), vec![Ipv4Addr::new(10, 2, 0, 2)]);
    }

    #[test]
    fn reverse_lookups_of_our_addresses() {
        let records = records();
        let request = query("3.0.1.10.in-addr.arpa.", RecordType::PTR);
        let reply = answer(run(&records, "front", &request, Transport::Udp));
        match reply.answers()[0].data() {
            RData::PTR(target) => assert_eq!(target.0.to_ascii(), "proj-web-2.front."),
            other => panic!("{other:?}"),
        }
        // Another network's address, or one nobody has, goes upstream.
        assert!(matches!(
            run(&records, "back", &request, Transport::Udp),
            Action::Forward(_)
        ));
        let unknown = query("9.0.1.10.in-addr.arpa.", RecordType::PTR);
        assert!(matches!(
            run(&records, "front", &unknown, Transport::Udp),
            Action::Forward(_)
        ));
        assert_eq!(
            reverse_v4("4.3.2.1.in-addr.arpa"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        for bad in [
            "3.2.1.in-addr.arpa",
            "5.4.3.2.1.in-addr.arpa",
            "256.0.0.1.in-addr.arpa",
        ] {
            assert_eq!(reverse_v4(bad), None, "{bad}");
        }
        assert_eq!(reverse_v4("+1.0.0.1.in-addr.arpa"), None);
    }

    #[test]
    fn foreign_names_are_forwarded_unchanged() {
        let records = records();
        let mut request = query("example.org.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(1400);
        request.set_edns(edns);
        let bytes = request.to_vec().unwrap();
        match handle(&records, "front", &bytes, Transport::Udp, 600) {
            Action::Forward(forward) => {
                assert_eq!(forward.packet, bytes);
                assert_eq!(forward.udp_limit, 1400);
                assert_eq!(forward.query.name().to_ascii(), "example.org.");
            }
            other => panic!("{other:?}"),
        }
        // db lives on back only; a CH-class query is never ours.
        let db = query("db", RecordType::A);
        assert!(matches!(
            run(&records, "front", &db, Transport::Udp),
            Action::Forward(_)
        ));
        let mut chaos = query("web", RecordType::TXT);
        chaos.queries_mut()[0].set_query_class(DNSClass::CH);
        assert!(matches!(
            run(&records, "front", &chaos, Transport::Udp),
            Action::Forward(_)
        ));
    }

    #[test]
    fn bad_requests_get_errors_or_nothing() {
        let records = records();
        assert!(matches!(
            handle(&records, "front", &[1, 2, 3], Transport::Udp, 1),
            Action::Drop
        ));
        let mut response = query("web", RecordType::A);
        response.set_message_type(MessageType::Response);
        assert!(matches!(
            run(&records, "front", &response, Transport::Udp),
            Action::Drop
        ));

        let garbage = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        let reply = answer(handle(&records, "front", &garbage, Transport::Udp, 1));
        assert_eq!(reply.id(), 0xabcd);
        assert_eq!(reply.response_code(), ResponseCode::FormErr);
        assert!(reply.recursion_desired());

        let mut two = query("web", RecordType::A);
        two.add_query(Query::query(Name::from_ascii("db").unwrap(), RecordType::A));
        let reply = answer(run(&records, "front", &two, Transport::Udp));
        assert_eq!(reply.response_code(), ResponseCode::FormErr);

        let mut none = query("web", RecordType::A);
        none.queries_mut().clear();
        let reply = answer(run(&records, "front", &none, Transport::Udp));
        assert_eq!(reply.response_code(), ResponseCode::FormErr);

        let mut status = query("web", RecordType::A);
        status.set_op_code(OpCode::Status);
        let reply = answer(run(&records, "front", &status, Transport::Udp));
        assert_eq!(reply.response_code(), ResponseCode::NotImp);
    }

    #[test]
    fn large_answers_truncate_over_udp_only() {
        let endpoints: Vec<_> = (0..100u8)
            .map(|i| {
                let mut e = endpoint('f', &format!("svc-{i}"), "big", [10, 5, 0, i + 2], &["svc"]);
                e.container_id = format!("{i:0>64}");
                e
            })
            .collect();
        let records = Records::new(&[network("big", "10.5.0.0/24")], &endpoints);
        let request = query("svc", RecordType::A);

        let Action::Reply(bytes) = run(&records, "big", &request, Transport::Udp) else {
            panic!("no reply");
        };
        assert!(bytes.len() <= MIN_UDP, "{}", bytes.len());
        let udp = Message::from_vec(&bytes).unwrap();
        assert!(udp.truncated());
        assert!(!udp.answers().is_empty() && udp.answers().len() < 100);

        let tcp = answer(run(&records, "big", &request, Transport::Tcp));
        assert!(!tcp.truncated());
        assert_eq!(a_records(&tcp).len(), 100);

        let mut with_edns = request.clone();
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        with_edns.set_edns(edns);
        let reply = answer(run(&records, "big", &with_edns, Transport::Udp));
        assert!(!reply.truncated());
        assert_eq!(a_records(&reply).len(), 100);
        assert_eq!(reply.max_payload(), EDNS_PAYLOAD);
    }

    /// xorshift: deterministic noise without a rand dependency.
    fn noise(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_and_mutated_packets_never_panic() {
        let records = records();
        let seeds = [
            query("web", RecordType::A).to_vec().unwrap(),
            query("3.0.1.10.in-addr.arpa", RecordType::PTR)
                .to_vec()
                .unwrap(),
            query("example.org", RecordType::AAAA).to_vec().unwrap(),
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut replies = 0;
        for round in 0..30_000 {
            let mut packet = if round % 3 == 0 {
                let len = (noise(&mut state) % 80) as usize;
                (0..len).map(|_| noise(&mut state) as u8).collect()
            } else {
                seeds[round % seeds.len()].clone()
            };
            if !packet.is_empty() {
                for _ in 0..1 + noise(&mut state) % 4 {
                    let at = (noise(&mut state) as usize) % packet.len();
                    packet[at] = noise(&mut state) as u8;
                }
                if noise(&mut state) % 5 == 0 {
                    packet.truncate((noise(&mut state) as usize) % packet.len());
                }
            }
            let transport = if round % 2 == 0 {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            if let Action::Reply(bytes) = handle(&records, "front", &packet, transport, 5) {
                assert!(bytes.len() >= HEADER_LEN);
                assert_eq!(bytes[..2], packet[..2]);
                replies += 1;
            }
        }
        assert!(replies > 1000, "only {replies} replies");
    }
}
