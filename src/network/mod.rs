//! Container networking: bridge networks and veth pairs (rtnetlink), network namespaces held
//! by bind mounts, IPAM with persisted allocations, dockmaster's own nftables table (published
//! ports, NAT, isolation) and a DNS server for service names.

pub mod dns;
pub mod ipam;
pub mod link;
pub mod manager;
pub mod model;
pub mod netd;
pub mod netns;
pub mod nft;
pub mod ports;
pub mod sandbox;
pub mod store;
