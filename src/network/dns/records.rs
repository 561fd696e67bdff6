//! The name table the DNS server answers from, computed from the stored networks and
//! endpoints: per network, name -> addresses, and address -> name for reverse lookups.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::rr::Name;

use crate::network::model::{Endpoint, NetworkConfig};

/// Docker resolves the short (12-character) container id too: it is the default hostname.
const SHORT_ID_LEN: usize = 12;

/// Per network: which names resolve there and to what.
///
/// Resolvable on a network: every endpoint's container name, its aliases (service name,
/// network aliases) and its 12-character short container id. Matching is case-insensitive
/// and ignores a trailing dot. As in Docker, `NAME.NETWORK` resolves like `NAME` on network
/// `NETWORK` (the PTR answer uses that form). Search domains are only stripped when given
/// with [`Records::with_search_domains`]; the generated resolv.conf should instead carry
/// `options ndots:0` (as Docker's does) so a resolver asks for `web` before `web.<domain>`.
/// Several endpoints with the same name (replicas) give all their addresses, rotated by one
/// on every lookup (round-robin).
#[derive(Debug, Default)]
pub struct Records {
    networks: HashMap<String, Table>,
    search_domains: Vec<String>,
}

#[derive(Debug, Default)]
struct Table {
    /// `.` + the network name normalized, stripped from queries for `NAME.NETWORK`.
    suffix: Option<String>,
    names: HashMap<String, Entry>,
    /// Address -> PTR target (normalized, no trailing dot).
    reverse: HashMap<Ipv4Addr, String>,
}

#[derive(Debug)]
struct Entry {
    /// Sorted, without duplicates.
    addrs: Vec<Ipv4Addr>,
    /// Round-robin position, advanced by every lookup.
    next: AtomicUsize,
}

/// Lower-case ASCII form of a name without its trailing dot, the key of every table; `None`
/// for something that is not a valid DNS name (empty, too long, empty label).
pub(crate) fn normalize(name: &str) -> Option<String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return None;
    }
    let parsed = Name::from_ascii(trimmed).ok()?;
    Some(key_of(&parsed))
}

/// The table key of a name taken from a query.
pub(crate) fn key_of(name: &Name) -> String {
    let mut ascii = name.to_lowercase().to_ascii();
    if ascii.ends_with('.') {
        ascii.pop();
    }
    ascii
}

impl Records {
    /// Tables for `networks`; endpoints on a network not in `networks` are ignored (a stale
    /// endpoint of a removed network must not resolve).
    pub fn new(networks: &[NetworkConfig], endpoints: &[Endpoint]) -> Records {
        let mut grouped: HashMap<&str, Vec<&Endpoint>> = HashMap::new();
        for endpoint in endpoints {
            grouped
                .entry(endpoint.network.as_str())
                .or_default()
                .push(endpoint);
        }
        let mut tables = HashMap::new();
        for network in networks {
            let members = grouped
                .get(network.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            tables.insert(network.name.clone(), Table::build(&network.name, members));
        }
        Records {
            networks: tables,
            search_domains: Vec::new(),
        }
    }

    /// Also answer `NAME.DOMAIN` for each search domain (what a resolver asks for a relative
    /// name when ndots makes it try the search list first). Off by default: it shadows any
    /// real name of that form.
    pub fn with_search_domains<S: AsRef<str>>(mut self, domains: &[S]) -> Records {
        self.search_domains = domains
            .iter()
            .filter_map(|d| normalize(d.as_ref()))
            .collect();
        self
    }

    /// The networks that have a table.
    pub fn networks(&self) -> impl Iterator<Item = &str> {
        self.networks.keys().map(String::as_str)
    }

    /// Whether `name` is one of ours on `network` (for any record type).
    pub fn contains(&self, network: &str, name: &str) -> bool {
        normalize(name).is_some_and(|key| self.entry(network, &key).is_some())
    }

    /// The addresses of `name` on `network`, rotated by one position per call (round-robin);
    /// `None` when the name is not ours there.
    pub fn lookup(&self, network: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let key = normalize(name)?;
        self.lookup_key(network, &key)
    }

    /// The name an address of `network` has (PTR), without trailing dot.
    pub fn reverse(&self, network: &str, ip: Ipv4Addr) -> Option<&str> {
        self.networks
            .get(network)?
            .reverse
            .get(&ip)
            .map(String::as_str)
    }

    pub(crate) fn lookup_key(&self, network: &str, key: &str) -> Option<Vec<Ipv4Addr>> {
        let entry = self.entry(network, key)?;
        let mut addrs = entry.addrs.clone();
        if addrs.len() > 1 {
            let start = entry.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
            addrs.rotate_left(start);
        }
        Some(addrs)
    }

    pub(crate) fn contains_key(&self, network: &str, key: &str) -> bool {
        self.entry(network, key).is_some()
    }

    fn entry(&self, network: &str, key: &str) -> Option<&Entry> {
        let table = self.networks.get(network)?;
        if let Some(entry) = table.names.get(key) {
            return Some(entry);
        }
        let strip = |suffix: &str| {
            key.strip_suffix(suffix)
                .and_then(|rest| rest.strip_suffix('.'))
                .filter(|rest| !rest.is_empty())
                .and_then(|rest| table.names.get(rest))
        };
        if let Some(entry) = table.suffix.as_deref().and_then(|s| strip(&s[1..])) {
            return Some(entry);
        }
        self.search_domains.iter().find_map(|domain| strip(domain))
    }
}

impl Table {
    fn build(network: &str, endpoints: &[&Endpoint]) -> Table {
        let suffix = normalize(network).map(|n| format!(".{n}"));
        let mut names: HashMap<String, BTreeSet<Ipv4Addr>> = HashMap::new();
        let mut reverse = HashMap::new();
        for endpoint in endpoints {
            let short_id = endpoint.container_id.get(..SHORT_ID_LEN);
            let candidates = std::iter::once(endpoint.container_name.as_str())
                .chain(endpoint.aliases.iter().map(String::as_str))
                .chain(short_id);
            for key in candidates.filter_map(normalize) {
                names.entry(key).or_default().insert(endpoint.ip);
            }
            if let Some(name) = normalize(&endpoint.container_name) {
                // Docker's PTR answer is NAME.NETWORK, which resolves forward too.
                let target = suffix
                    .as_deref()
                    .map(|s| format!("{name}{s}"))
                    .filter(|full| normalize(full).is_some())
                    .unwrap_or(name);
                reverse.entry(endpoint.ip).or_insert(target);
            }
        }
        let names = names
            .into_iter()
            .map(|(key, addrs)| {
                let entry = Entry {
                    addrs: addrs.into_iter().collect(),
                    next: AtomicUsize::new(0),
                };
                (key, entry)
            })
            .collect();
        Table {
            suffix,
            names,
            reverse,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::network::model::{mac_for, veth_name};

    pub(crate) fn network(name: &str, subnet: &str) -> NetworkConfig {
        let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
        let id = format!("{:0>64}", name.len());
        NetworkConfig {
            name: name.into(),
            bridge: crate::network::model::bridge_name(&id),
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

    pub(crate) fn endpoint(
        id: char,
        name: &str,
        net: &str,
        ip: [u8; 4],
        aliases: &[&str],
    ) -> Endpoint {
        let container_id: String = std::iter::repeat(id).take(64).collect();
        let ip = Ipv4Addr::from(ip);
        Endpoint {
            host_veth: veth_name(&container_id, net),
            container_id,
            container_name: name.into(),
            network: net.into(),
            ip,
            mac: mac_for(ip),
            ifname: "eth0".into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ports: Vec::new(),
            dns: Vec::new(),
        }
    }

    fn sample() -> Records {
        Records::new(
            &[
                network("front", "10.1.0.0/24"),
                network("back", "10.2.0.0/24"),
            ],
            &[
                endpoint('a', "proj-web-1", "front", [10, 1, 0, 2], &["web"]),
                endpoint('b', "proj-web-2", "front", [10, 1, 0, 3], &["web", "www"]),
                endpoint('c', "proj-db-1", "back", [10, 2, 0, 2], &["db"]),
                endpoint('a', "proj-web-1", "back", [10, 2, 0, 3], &["web"]),
                endpoint('d', "ghost", "removed", [10, 3, 0, 2], &[]),
            ],
        )
    }

    #[test]
    fn names_resolve_on_their_own_network_only() {
        let records = sample();
        assert_eq!(
            records.lookup("front", "proj-web-1"),
            Some(vec![Ipv4Addr::new(10, 1, 0, 2)])
        );
        assert_eq!(
            records.lookup("back", "proj-web-1"),
            Some(vec![Ipv4Addr::new(10, 2, 0, 3)])
        );
        assert_eq!(records.lookup("front", "db"), None);
        assert_eq!(records.lookup("back", "www"), None);
        assert_eq!(records.lookup("removed", "ghost"), None);
        assert_eq!(records.lookup("nosuch", "web"), None);
        let mut networks: Vec<_> = records.networks().collect();
        networks.sort();
        assert_eq!(networks, ["back", "front"]);
    }

    #[test]
    fn case_trailing_dot_short_id_and_network_suffix() {
        let records = sample();
        let web1 = Some(vec![Ipv4Addr::new(10, 1, 0, 2)]);
        assert_eq!(records.lookup("front", "PROJ-Web-1."), web1);
        assert_eq!(records.lookup("front", "aaaaaaaaaaaa"), web1);
        assert_eq!(records.lookup("front", "AAAAAAAAAAAA."), web1);
        // Neither the full id nor another length is a name.
        assert_eq!(records.lookup("front", &"a".repeat(64)), None);
        assert_eq!(records.lookup("front", "aaaaaaaaaaa"), None);
        assert_eq!(records.lookup("front", "proj-web-1.front"), web1);
        assert_eq!(records.lookup("front", "proj-web-1.FRONT."), web1);
        // The suffix is the network's own name only.
        assert_eq!(records.lookup("front", "proj-web-1.back"), None);
        assert_eq!(records.lookup("front", ".front"), None);
        assert_eq!(records.lookup("front", "front"), None);
        assert!(records.contains("front", "www"));
        assert!(!records.contains("front", ""));
        assert!(!records.contains("front", "."));
    }

    #[test]
    fn replicas_share_a_name_and_rotate() {
        let records = sample();
        let a = Ipv4Addr::new(10, 1, 0, 2);
        let b = Ipv4Addr::new(10, 1, 0, 3);
        let first = records.lookup("front", "web").unwrap();
        let second = records.lookup("front", "web").unwrap();
        let third = records.lookup("front", "web").unwrap();
        assert_eq!(first, vec![a, b]);
        assert_eq!(second, vec![b, a]);
        assert_eq!(third, first);
        // A single address does not rotate, and other names have their own position.
        assert_eq!(records.lookup("front", "www"), Some(vec![b]));
    }

    #[test]
    fn reverse_names_use_name_dot_network() {
        let records = sample();
        assert_eq!(
            records.reverse("front", Ipv4Addr::new(10, 1, 0, 3)),
            Some("proj-web-2.front")
        );
        assert_eq!(records.reverse("back", Ipv4Addr::new(10, 1, 0, 3)), None);
        assert_eq!(records.reverse("front", Ipv4Addr::new(10, 1, 0, 9)), None);
    }

    #[test]
    fn compose_style_network_names_with_underscores() {
        let records = Records::new(
            &[network("proj_default", "10.7.0.0/24")],
            &[endpoint(
                'a',
                "proj_web_1",
                "proj_default",
                [10, 7, 0, 2],
                &["web"],
            )],
        );
        let web = Some(vec![Ipv4Addr::new(10, 7, 0, 2)]);
        assert_eq!(records.lookup("proj_default", "web.proj_default."), web);
        assert_eq!(records.lookup("proj_default", "PROJ_WEB_1"), web);
        assert_eq!(
            records.reverse("proj_default", Ipv4Addr::new(10, 7, 0, 2)),
            Some("proj_web_1.proj_default")
        );
    }

    #[test]
    fn search_domains_are_opt_in() {
        let plain = sample();
        assert_eq!(plain.lookup("front", "www.corp.example"), None);
        let records = sample().with_search_domains(&["Corp.Example.", ""]);
        assert_eq!(
            records.lookup("front", "www.corp.example"),
            Some(vec![Ipv4Addr::new(10, 1, 0, 3)])
        );
        assert_eq!(records.lookup("front", "corp.example"), None);
    }

    #[test]
    fn invalid_names_are_skipped_not_fatal() {
        let long_label = "x".repeat(64);
        let records = Records::new(
            &[network("n", "10.9.0.0/24")],
            &[endpoint(
                'e',
                "ok",
                "n",
                [10, 9, 0, 2],
                &["", "a..b", &long_label, "."],
            )],
        );
        assert!(records.contains("n", "ok"));
        assert!(!records.contains("n", &long_label));
        assert!(!records.contains("n", "a..b"));
    }
}
