//! The persisted network state under `<root>/networks/`:
//!
//! ```text
//! .lock                               flock: every mutation holds it, exclusive
//! <name>/network.json                 NetworkConfig
//! <name>/ipam.json                    the last dynamic allocation (rotation hint)
//! <name>/endpoints/<container>.json   Endpoint
//! ```
//!
//! Reads need no lock (every file is replaced atomically); mutations go through the
//! [`StoreGuard`] returned by [`NetworkStore::lock`], so CLI processes, the agent, netd and
//! shims never hand out one address twice. Crash leftovers (temp files, half-created or
//! half-removed directories, unreadable records) never break listing: they are skipped with
//! a warning and [`StoreGuard::clean_leftovers`] removes what is safe to remove.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use ipnet::Ipv4Net;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::ipam::{self, IpamError, IpamRequest, Pool};
use super::model::{
    bridge_name, mac_for, veth_name, Endpoint, NetworkConfig, PortMapping, Proto, IFNAME_MAX,
};
use crate::error::{Categorized, Category};
use crate::fsutil::{sync_dir, write_atomic};
use crate::runtime::container::generate_id;
use crate::runtime::logs::format_rfc3339_nano;

/// Records are small; anything bigger is not ours and is not read into memory.
const RECORD_MAX: u64 = 1 << 20;
const NAME_MAX: usize = 128;
const LABEL_MAX: usize = 4096;
const ALIASES_MAX: usize = 256;
const DNS_NAME_MAX: usize = 253;
const NETWORK_FILE: &str = "network.json";
const IPAM_FILE: &str = "ipam.json";
const ENDPOINTS_DIR: &str = "endpoints";
const LOCK_FILE: &str = ".lock";
/// Prefix of a network directory being removed: renamed first so it vanishes from listings
/// at once, then deleted.
const REMOVING_PREFIX: &str = ".rm-";
/// Prefix of [`write_atomic`]'s temp files.
const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "invalid network name {0:?}: use letters, digits, '_', '.' and '-', starting with a \
         letter or digit, at most 128 characters"
    )]
    InvalidName(String),
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("network {name} already exists (id {id})")]
    NetworkExists { name: String, id: String },
    #[error("network {0} not found")]
    NetworkNotFound(String),
    #[error("network id prefix {prefix} is ambiguous: it matches {}", .names.join(", "))]
    Ambiguous { prefix: String, names: Vec<String> },
    #[error("network {name} is in use by container(s) {}", .containers.join(", "))]
    NetworkInUse {
        name: String,
        containers: Vec<String>,
    },
    #[error("container {container} is already attached to network {network}")]
    AlreadyAttached { network: String, container: String },
    #[error("interface {ifname} of container {container} is already used for network {network}")]
    IfnameTaken {
        ifname: String,
        container: String,
        network: String,
    },
    #[error(
        "host port {port} requested by container {container} is already published by \
         container {other_container} (network {other_network})"
    )]
    PortTaken {
        port: String,
        container: String,
        other_container: String,
        other_network: String,
    },
    #[error("unreadable record {path}: {reason}")]
    BadRecord { path: PathBuf, reason: String },
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

impl Categorized for StoreError {
    fn category(&self) -> Category {
        match self {
            StoreError::Io { .. } | StoreError::BadRecord { .. } => Category::Internal,
            StoreError::InvalidName(_)
            | StoreError::InvalidInput { .. }
            | StoreError::Ambiguous { .. } => Category::Invalid,
            StoreError::NetworkNotFound(_) => Category::NotFound,
            StoreError::NetworkExists { .. }
            | StoreError::NetworkInUse { .. }
            | StoreError::AlreadyAttached { .. }
            | StoreError::IfnameTaken { .. }
            | StoreError::PortTaken { .. } => Category::Conflict,
            StoreError::Ipam(e) => e.category(),
        }
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// What `network create` (or a Compose project's network) asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    /// 1500 when unset.
    pub mtu: Option<u32>,
    pub labels: BTreeMap<String, String>,
}

/// A container joining a network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSpec {
    pub network: String,
    /// 64 lowercase hex characters.
    pub container_id: String,
    pub container_name: String,
    pub aliases: Vec<String>,
    /// Static address (`--ip`, Compose `ipv4_address`).
    pub requested_ip: Option<Ipv4Addr>,
    /// Interface inside the container (`eth0`, ...).
    pub ifname: String,
    pub ports: Vec<PortMapping>,
    /// `--dns` servers of the container (kept with the endpoint for netd).
    pub dns: Vec<Ipv4Addr>,
}

/// The rotation hint of one network.
#[derive(Debug, Default, Serialize, Deserialize)]
struct IpamState {
    #[serde(default)]
    last_allocated: Option<Ipv4Addr>,
}

pub const DEFAULT_MTU: u32 = 1500;

/// Network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 bytes. They are directory
/// names, so this is also what keeps a name from escaping the store.
pub fn check_network_name(name: &str) -> Result<(), StoreError> {
    let mut bytes = name.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name.len() <= NAME_MAX;
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_string()))
    }
}

fn check_container_id(id: &str) -> Result<(), StoreError> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            what: "container id",
            value: id.chars().take(80).collect(),
            reason: "expected 64 lowercase hex characters",
        })
    }
}

fn check_text(what: &'static str, value: &str, max: usize) -> Result<(), StoreError> {
    let reason = if value.is_empty() {
        "it is empty"
    } else if value.len() > max {
        "it is too long"
    } else if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "it contains whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidInput {
        what,
        value: value.chars().take(80).collect(),
        reason,
    })
}

/// What the kernel accepts as an interface name (dev_valid_name).
fn check_ifname(ifname: &str) -> Result<(), StoreError> {
    check_text("interface name", ifname, IFNAME_MAX)?;
    if ifname == "." || ifname == ".." || ifname.contains(['/', ':']) {
        return Err(StoreError::InvalidInput {
            what: "interface name",
            value: ifname.to_string(),
            reason: "it is '.', '..' or contains '/' or ':'",
        });
    }
    Ok(())
}

/// Reads a JSON record: `None` when the file does not exist, [`StoreError::BadRecord`] when
/// it cannot be read whole or parsed, or is bigger than [`RECORD_MAX`].
fn read_record<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let bad = |reason: String| StoreError::BadRecord {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    file.take(RECORD_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > RECORD_MAX {
        return Err(bad(format!("bigger than {RECORD_MAX} bytes")));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

fn write_record<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::BadRecord {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &bytes).map_err(io_err("write", path))
}

/// The names of a directory's entries as strings (non-UTF-8 names are not ours: skipped).
fn entry_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read", dir))?;
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(name) => tracing::warn!(dir = %dir.display(), ?name, "skipping a foreign entry"),
        }
    }
    names.sort();
    Ok(names)
}

/// Whether two published ports claim the same host socket.
fn ports_clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && a.host_port != 0
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
}

fn port_label(p: &PortMapping) -> String {
    format!("{}:{}/{}", p.host_ip, p.host_port, p.proto)
}

/// A host port published by a container, while checking for clashes.
struct PortClaim<'a> {
    port: &'a PortMapping,
    container: &'a str,
    network: &'a str,
}

/// `eth2` before `eth10`.
fn ifname_order(e: &Endpoint) -> (usize, String) {
    (e.ifname.len(), e.ifname.clone())
}

/// Network state under one `--root`.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
}

/// The store's exclusive lock, held across processes; mutations are its methods. Dropping
/// it releases the lock. Reads are available through `Deref`.
#[derive(Debug)]
pub struct StoreGuard {
    store: NetworkStore,
    _lock: Flock<File>,
}

impl Deref for StoreGuard {
    type Target = NetworkStore;
    fn deref(&self) -> &NetworkStore {
        &self.store
    }
}

impl NetworkStore {
    /// Opens (creating it if needed) `<root>/networks`.
    pub fn open(root: &Path) -> Result<NetworkStore, StoreError> {
        let dir = root.join("networks");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(NetworkStore { dir })
    }

    /// The store of a root that has one; `None` for a root that never had a network (reads
    /// and releases then have nothing to do and leave no directory behind).
    pub fn open_existing(root: &Path) -> Option<NetworkStore> {
        let dir = root.join("networks");
        dir.is_dir().then_some(NetworkStore { dir })
    }

    /// `<root>/networks`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn network_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn endpoint_path(&self, network: &str, container_id: &str) -> PathBuf {
        self.network_dir(network)
            .join(ENDPOINTS_DIR)
            .join(format!("{container_id}.json"))
    }

    /// Waits for the exclusive store lock (flock on `<root>/networks/.lock`). Each call opens
    /// the lock file anew, so threads of one process exclude each other too.
    pub fn lock(&self) -> Result<StoreGuard, StoreError> {
        let path = self.dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => {
                    return Ok(StoreGuard {
                        store: self.clone(),
                        _lock: lock,
                    })
                }
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(io_err("lock", &path)(errno.into())),
            }
        }
    }

    /// The network named `name`.
    pub fn get(&self, name: &str) -> Result<NetworkConfig, StoreError> {
        check_network_name(name).map_err(|_| StoreError::NetworkNotFound(name.to_string()))?;
        let path = self.network_dir(name).join(NETWORK_FILE);
        match read_record::<NetworkConfig>(&path)? {
            Some(config) if config.name == name => Ok(config),
            Some(config) => Err(StoreError::BadRecord {
                path,
                reason: format!("it names network {:?}", config.name),
            }),
            None => Err(StoreError::NetworkNotFound(name.to_string())),
        }
    }

    /// A network by name, full id, or unique id prefix (as `docker network inspect` takes).
    pub fn find(&self, name_or_id: &str) -> Result<NetworkConfig, StoreError> {
        match self.get(name_or_id) {
            Err(StoreError::NetworkNotFound(_)) => {}
            other => return other,
        }
        let is_hex = !name_or_id.is_empty() && name_or_id.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex {
            return Err(StoreError::NetworkNotFound(name_or_id.to_string()));
        }
        let prefix = name_or_id.to_ascii_lowercase();
        let mut matches: Vec<NetworkConfig> = self
            .list()?
            .into_iter()
            .filter(|n| n.id.starts_with(&prefix))
            .collect();
        match matches.len() {
            0 => Err(StoreError::NetworkNotFound(name_or_id.to_string())),
            1 => Ok(matches.remove(0)),
            _ => Err(StoreError::Ambiguous {
                prefix: name_or_id.to_string(),
                names: matches.into_iter().map(|n| n.name).collect(),
            }),
        }
    }

    /// Every readable network, by name. Unreadable records and half-created directories are
    /// skipped (with a warning for the former).
    pub fn list(&self) -> Result<Vec<NetworkConfig>, StoreError> {
        let mut networks = Vec::new();
        for name in entry_names(&self.dir)? {
            if name.starts_with('.') {
                continue;
            }
            if check_network_name(&name).is_err() {
                tracing::warn!(dir = %self.dir.display(), name, "skipping a foreign entry");
                continue;
            }
            match self.get(&name) {
                Ok(config) => networks.push(config),
                // Created but not yet written, or being replaced by a crashed create.
                Err(StoreError::NetworkNotFound(_)) => {}
                Err(StoreError::BadRecord { path, reason }) => {
                    tracing::warn!(path = %path.display(), reason, "skipping an unreadable network record");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(networks)
    }

    /// The endpoints on one network, by address. Unreadable or inconsistent endpoint records
    /// are skipped with a warning.
    pub fn endpoints(&self, network: &str) -> Result<Vec<Endpoint>, StoreError> {
        check_network_name(network).map_err(|_| StoreError::NetworkNotFound(network.into()))?;
        let net_dir = self.network_dir(network);
        if !net_dir.join(NETWORK_FILE).exists() {
            return Err(StoreError::NetworkNotFound(network.to_string()));
        }
        let dir = net_dir.join(ENDPOINTS_DIR);
        let mut endpoints = Vec::new();
        for name in entry_names(&dir)? {
            if name.starts_with('.') {
                continue;
            }
            let path = dir.join(&name);
            let Some(stem) = name.strip_suffix(".json") else {
                tracing::warn!(path = %path.display(), "skipping a foreign file");
                continue;
            };
            match read_record::<Endpoint>(&path) {
                Ok(Some(e)) if e.container_id == stem && e.network == network => endpoints.push(e),
                Ok(Some(_)) => {
                    tracing::warn!(path = %path.display(), "skipping an endpoint record naming another container or network");
                }
                Ok(None) => {}
                Err(StoreError::BadRecord { path, reason }) => {
                    tracing::warn!(path = %path.display(), reason, "skipping an unreadable endpoint record");
                }
                Err(e) => return Err(e),
            }
        }
        endpoints.sort_by_key(|e| e.ip);
        Ok(endpoints)
    }

    /// Every endpoint on every network.
    pub fn all_endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let mut all = Vec::new();
        for network in self.list()? {
            match self.endpoints(&network.name) {
                Ok(mut e) => all.append(&mut e),
                // Removed since the listing (a reader without the lock).
                Err(StoreError::NetworkNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }

    /// One container's endpoint on one network, if attached.
    pub fn endpoint(
        &self,
        network: &str,
        container_id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        check_network_name(network).map_err(|_| StoreError::NetworkNotFound(network.into()))?;
        check_container_id(container_id)?;
        Ok(
            read_record::<Endpoint>(&self.endpoint_path(network, container_id))?
                .filter(|e| e.container_id == container_id && e.network == network),
        )
    }

    /// A container's endpoints on all networks, by interface (`eth0` first).
    pub fn endpoints_of(&self, container_id: &str) -> Result<Vec<Endpoint>, StoreError> {
        check_container_id(container_id)?;
        let mut found = Vec::new();
        for network in self.list()? {
            match self.endpoint(&network.name, container_id) {
                Ok(Some(e)) => found.push(e),
                Ok(None) => {}
                Err(StoreError::BadRecord { path, reason }) => {
                    tracing::warn!(path = %path.display(), reason, "skipping an unreadable endpoint record");
                }
                Err(e) => return Err(e),
            }
        }
        found.sort_by_key(ifname_order);
        Ok(found)
    }

    fn read_ipam_state(&self, network: &str) -> IpamState {
        let path = self.network_dir(network).join(IPAM_FILE);
        match read_record::<IpamState>(&path) {
            Ok(state) => state.unwrap_or_default(),
            Err(e) => {
                // Only a hint: losing it means a released address may come back sooner.
                tracing::warn!(error = %e, "ignoring the address rotation hint");
                IpamState::default()
            }
        }
    }
}

impl StoreGuard {
    /// Creates a network: validates the name and options, picks a subnet from `pools` when
    /// none is given (avoiding the other networks and `host_routes`, see
    /// [`ipam::host_routes`]), and records it. Only the record: the bridge is made by whoever
    /// attaches the first container.
    pub fn create_network(
        &self,
        spec: &NetworkSpec,
        pools: &[Pool],
        host_routes: &[Ipv4Net],
    ) -> Result<NetworkConfig, StoreError> {
        check_network_name(&spec.name)?;
        let mtu = spec.mtu.unwrap_or(DEFAULT_MTU);
        if !(68..=65535).contains(&mtu) {
            return Err(StoreError::InvalidInput {
                what: "mtu",
                value: mtu.to_string(),
                reason: "expected 68 to 65535",
            });
        }
        for (key, value) in &spec.labels {
            if key.is_empty() || key.len() > LABEL_MAX || value.len() > LABEL_MAX {
                return Err(StoreError::InvalidInput {
                    what: "label",
                    value: key.chars().take(80).collect(),
                    reason: "keys must be non-empty; keys and values at most 4096 bytes",
                });
            }
        }
        match self.get(&spec.name) {
            Ok(existing) => {
                return Err(StoreError::NetworkExists {
                    name: existing.name,
                    id: existing.id,
                })
            }
            Err(StoreError::NetworkNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let existing = self.list()?;
        let plan = ipam::plan(
            &IpamRequest {
                subnet: spec.subnet,
                gateway: spec.gateway,
                ip_range: spec.ip_range,
            },
            pools,
            &existing,
            host_routes,
        )?;
        let id = generate_id().map_err(io_err("read", Path::new("/dev/urandom")))?;
        let config = NetworkConfig {
            name: spec.name.clone(),
            bridge: bridge_name(&id),
            id,
            subnet: plan.subnet,
            gateway: plan.gateway,
            ip_range: plan.ip_range,
            internal: spec.internal,
            mtu,
            labels: spec.labels.clone(),
            created: format_rfc3339_nano(SystemTime::now()),
        };
        let dir = self.network_dir(&spec.name);
        // A directory without network.json is what a crashed create leaves: reused, but
        // nothing of it is trusted.
        let stale_hint = dir.join(IPAM_FILE);
        match fs::remove_file(&stale_hint) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &stale_hint)(e)),
        }
        let endpoints = dir.join(ENDPOINTS_DIR);
        fs::create_dir_all(&endpoints).map_err(io_err("create", &endpoints))?;
        sync_dir(&self.dir).map_err(io_err("sync", &self.dir))?;
        // Written last: the network exists from this rename on.
        write_record(&dir.join(NETWORK_FILE), &config)?;
        Ok(config)
    }

    /// Removes a network's record; refused while containers are attached. Returns the
    /// removed config (its bridge is the caller's to delete).
    pub fn remove_network(&self, name: &str) -> Result<NetworkConfig, StoreError> {
        let config = self.get(name)?;
        let endpoints = self.endpoints(name)?;
        if !endpoints.is_empty() {
            return Err(StoreError::NetworkInUse {
                name: name.to_string(),
                containers: endpoints.into_iter().map(|e| e.container_name).collect(),
            });
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = self.network_dir(name);
        let doomed = self.dir.join(format!(
            "{REMOVING_PREFIX}{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // The rename is the removal; deleting the files after it is housekeeping.
        fs::rename(&dir, &doomed).map_err(io_err("rename", &dir))?;
        sync_dir(&self.dir).map_err(io_err("sync", &self.dir))?;
        if let Err(e) = fs::remove_dir_all(&doomed) {
            tracing::warn!(path = %doomed.display(), error = %e, "cannot delete a removed network's directory; clean_leftovers will retry");
        }
        Ok(config)
    }

    /// Attaches a container to a network: validates the request, checks that its interface
    /// name and published ports are free, allocates its address (static or the next dynamic
    /// one) and records the endpoint.
    pub fn add_endpoint(&self, spec: &EndpointSpec) -> Result<Endpoint, StoreError> {
        check_container_id(&spec.container_id)?;
        check_text("container name", &spec.container_name, NAME_MAX)?;
        check_ifname(&spec.ifname)?;
        if spec.aliases.len() > ALIASES_MAX {
            return Err(StoreError::InvalidInput {
                what: "aliases",
                value: spec.aliases.len().to_string(),
                reason: "at most 256 aliases",
            });
        }
        for alias in &spec.aliases {
            check_text("alias", alias, DNS_NAME_MAX)?;
        }
        let network = self.get(&spec.network)?;
        let on_network = self.endpoints(&spec.network)?;
        if on_network
            .iter()
            .any(|e| e.container_id == spec.container_id)
        {
            return Err(StoreError::AlreadyAttached {
                network: spec.network.clone(),
                container: spec.container_name.clone(),
            });
        }
        let all = self.all_endpoints()?;
        if let Some(other) = all
            .iter()
            .find(|e| e.container_id == spec.container_id && e.ifname == spec.ifname)
        {
            return Err(StoreError::IfnameTaken {
                ifname: spec.ifname.clone(),
                container: spec.container_name.clone(),
                network: other.network.clone(),
            });
        }
        self.check_ports(spec, &all)?;

        let used: BTreeMap<Ipv4Addr, &str> = on_network
            .iter()
            .map(|e| (e.ip, e.container_name.as_str()))
            .collect();
        let used_set: BTreeSet<Ipv4Addr> = used.keys().copied().collect();
        let hint = self.read_ipam_state(&spec.network);
        let ip = ipam::allocate_after(&network, &used_set, spec.requested_ip, hint.last_allocated)
            .map_err(|e| match e {
                IpamError::InUse {
                    address,
                    network,
                    holder: None,
                } => IpamError::InUse {
                    holder: used.get(&address).map(|h| h.to_string()),
                    address,
                    network,
                },
                other => other,
            })?;
        let endpoint = Endpoint {
            container_id: spec.container_id.clone(),
            container_name: spec.container_name.clone(),
            network: spec.network.clone(),
            ip,
            mac: mac_for(ip),
            ifname: spec.ifname.clone(),
            host_veth: veth_name(&spec.container_id, &spec.network),
            aliases: spec.aliases.clone(),
            ports: spec.ports.clone(),
            dns: spec.dns.clone(),
        };
        write_record(
            &self.endpoint_path(&spec.network, &spec.container_id),
            &endpoint,
        )?;
        if spec.requested_ip.is_none() {
            // After the endpoint: a crash in between only shortens the rotation.
            let state = IpamState {
                last_allocated: Some(ip),
            };
            write_record(&self.network_dir(&spec.network).join(IPAM_FILE), &state)?;
        }
        Ok(endpoint)
    }

    /// Refuses ports published twice by the request or already published by another
    /// container (a host port 0 is an ephemeral request and never clashes here).
    fn check_ports(&self, spec: &EndpointSpec, all: &[Endpoint]) -> Result<(), StoreError> {
        if spec.ports.is_empty() {
            return Ok(());
        }
        let mut claimed: BTreeMap<(Proto, u16), Vec<PortClaim<'_>>> = BTreeMap::new();
        for e in all.iter().filter(|e| e.container_id != spec.container_id) {
            for p in &e.ports {
                claimed
                    .entry((p.proto, p.host_port))
                    .or_default()
                    .push(PortClaim {
                        port: p,
                        container: &e.container_name,
                        network: &e.network,
                    });
            }
        }
        for p in &spec.ports {
            let key = (p.proto, p.host_port);
            let earlier = claimed.get(&key).into_iter().flatten();
            if let Some(claim) = earlier.into_iter().find(|c| ports_clash(p, c.port)) {
                return Err(StoreError::PortTaken {
                    port: port_label(p),
                    container: spec.container_name.clone(),
                    other_container: claim.container.to_string(),
                    other_network: claim.network.to_string(),
                });
            }
            claimed.entry(key).or_default().push(PortClaim {
                port: p,
                container: &spec.container_name,
                network: &spec.network,
            });
        }
        Ok(())
    }

    /// Detaches a container from one network; `None` when it was not attached.
    pub fn remove_endpoint(
        &self,
        network: &str,
        container_id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        check_network_name(network).map_err(|_| StoreError::NetworkNotFound(network.into()))?;
        check_container_id(container_id)?;
        let path = self.endpoint_path(network, container_id);
        let endpoint = match read_record::<Endpoint>(&path) {
            Ok(e) => e,
            Err(StoreError::BadRecord { path, reason }) => {
                tracing::warn!(path = %path.display(), reason, "removing an unreadable endpoint record");
                None
            }
            Err(e) => return Err(e),
        };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(io_err("sync", dir))?;
        }
        Ok(endpoint)
    }

    /// Detaches a container from every network (also from networks whose record is
    /// unreadable, so nothing leaks); returns the endpoints removed.
    pub fn remove_endpoints(&self, container_id: &str) -> Result<Vec<Endpoint>, StoreError> {
        check_container_id(container_id)?;
        let mut removed = Vec::new();
        for name in entry_names(&self.dir)? {
            if name.starts_with('.') || check_network_name(&name).is_err() {
                continue;
            }
            if let Some(e) = self.remove_endpoint(&name, container_id)? {
                removed.push(e);
            }
        }
        removed.sort_by_key(ifname_order);
        Ok(removed)
    }

    /// Deletes what crashes leave behind: temp files of interrupted writes and directories
    /// of interrupted network removals. Safe only under the lock (every writer holds it), which
    /// is why it is here. Returns how many entries were removed.
    pub fn clean_leftovers(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut dirs = vec![self.dir.clone()];
        for name in entry_names(&self.dir)? {
            if !name.starts_with('.') && check_network_name(&name).is_ok() {
                let net = self.network_dir(&name);
                dirs.push(net.join(ENDPOINTS_DIR));
                dirs.push(net);
            }
        }
        for dir in dirs {
            for name in entry_names(&dir)? {
                let path = dir.join(&name);
                let result = if name.starts_with(TEMP_PREFIX) {
                    fs::remove_file(&path)
                } else if dir == self.dir && name.starts_with(REMOVING_PREFIX) {
                    fs::remove_dir_all(&path)
                } else {
                    continue;
                };
                match result {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a crash leftover");
                        removed += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &path)(e)),
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::process::{Child, Command, Stdio};

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn cid(n: usize) -> String {
        format!("{n:064x}")
    }

    fn network(name: &str, subnet: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            subnet: subnet.map(net),
            ..Default::default()
        }
    }

    fn attach(network: &str, n: usize) -> EndpointSpec {
        EndpointSpec {
            network: network.into(),
            container_id: cid(n),
            container_name: format!("c{n}"),
            aliases: vec![format!("svc{n}")],
            ifname: "eth0".into(),
            ..Default::default()
        }
    }

    fn create(store: &NetworkStore, spec: &NetworkSpec) -> Result<NetworkConfig, StoreError> {
        store
            .lock()?
            .create_network(spec, &ipam::default_pools(), &[])
    }

    #[test]
    fn networks_are_created_listed_and_found() {
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        let mut spec = network("front", None);
        spec.labels
            .insert("com.docker.compose.project".into(), "demo".into());
        let front = create(&store, &spec).unwrap();
        assert_eq!(front.subnet, net("172.17.0.0/16"));
        assert_eq!(front.gateway, ip("172.17.0.1"));
        assert_eq!(front.mtu, DEFAULT_MTU);
        assert_eq!(front.id.len(), 64);
        assert!(front.id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(front.bridge, bridge_name(&front.id));
        assert!(crate::runtime::logs::parse_rfc3339(&front.created).is_some());
        assert_eq!(front.labels["com.docker.compose.project"], "demo");

        // the next one avoids both the first network and a (fake) host route
        let back = store
            .lock()
            .unwrap()
            .create_network(
                &network("back", None),
                &ipam::default_pools(),
                &[net("0.0.0.0/0"), net("172.18.0.0/24")],
            )
            .unwrap();
        assert_eq!(back.subnet, net("172.19.0.0/16"));

        let mut explicit = network("db", Some("10.9.0.0/24"));
        explicit.gateway = Some(ip("10.9.0.254"));
        explicit.ip_range = Some(net("10.9.0.128/25"));
        explicit.internal = true;
        explicit.mtu = Some(1400);
        let db = create(&store, &explicit).unwrap();
        assert_eq!(
            (db.gateway, db.mtu, db.internal),
            (ip("10.9.0.254"), 1400, true)
        );

        let names: Vec<String> = store.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["back", "db", "front"]);
        assert_eq!(store.get("front").unwrap(), front);
        assert_eq!(store.find(&front.id[..10]).unwrap(), front);
        assert_eq!(store.find(&front.id.to_uppercase()).unwrap(), front);
        assert!(matches!(
            store.find("nope"),
            Err(StoreError::NetworkNotFound(_))
        ));
        assert!(matches!(
            store.get("../x"),
            Err(StoreError::NetworkNotFound(_))
        ));
        // a fresh open (a restart) reads the same
        let again = NetworkStore::open(root.path()).unwrap();
        assert_eq!(again.get("db").unwrap(), db);
    }

    #[test]
    fn bad_network_requests_are_refused_with_their_reason() {
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        let front = create(&store, &network("front", Some("10.1.0.0/16"))).unwrap();

        let e = create(&store, &network("front", None)).unwrap_err();
        assert_eq!(e.category(), Category::Conflict);
        assert!(e.to_string().contains(&front.id), "{e}");
        for bad in ["", "-x", "a/b", "..", ".hidden", "a b", &"n".repeat(129)] {
            let e = create(&store, &network(bad, None)).unwrap_err();
            assert!(matches!(e, StoreError::InvalidName(_)), "{bad:?}: {e}");
            assert_eq!(e.category(), Category::Invalid);
        }
        let e = create(&store, &network("other", Some("10.1.4.0/24"))).unwrap_err();
        assert_eq!(e.category(), Category::Conflict);
        assert!(e.to_string().contains("network front"), "{e}");
        let mut tiny_mtu = network("other", None);
        tiny_mtu.mtu = Some(10);
        assert!(matches!(
            create(&store, &tiny_mtu),
            Err(StoreError::InvalidInput { what: "mtu", .. })
        ));
        let mut bad_gw = network("other", Some("10.2.0.0/24"));
        bad_gw.gateway = Some(ip("10.3.0.1"));
        assert!(matches!(
            create(&store, &bad_gw),
            Err(StoreError::Ipam(IpamError::InvalidGateway { .. }))
        ));
        // nothing half-created by the refusals
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn endpoints_get_addresses_and_block_network_removal() {
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        create(&store, &network("front", Some("10.1.0.0/24"))).unwrap();
        create(&store, &network("back", Some("10.2.0.0/24"))).unwrap();
        let guard = store.lock().unwrap();
        let a = guard.add_endpoint(&attach("front", 1)).unwrap();
        assert_eq!(a.ip, ip("10.1.0.2"));
        assert_eq!(a.mac, "02:42:0a:01:00:02");
        assert_eq!(a.host_veth, veth_name(&cid(1), "front"));
        assert_eq!(a.aliases, ["svc1"]);
        let mut fixed = attach("front", 2);
        fixed.requested_ip = Some(ip("10.1.0.50"));
        assert_eq!(guard.add_endpoint(&fixed).unwrap().ip, ip("10.1.0.50"));
        let mut second_if = attach("back", 1);
        second_if.ifname = "eth1".into();
        guard.add_endpoint(&second_if).unwrap();

        let mut clash = attach("front", 3);
        clash.requested_ip = Some(ip("10.1.0.50"));
        let e = guard.add_endpoint(&clash).unwrap_err();
        assert_eq!(
            e.to_string(),
            "address 10.1.0.50 on network front is already in use by container c2"
        );
        assert_eq!(e.category(), Category::Conflict);
        assert!(matches!(
            guard.add_endpoint(&attach("front", 1)),
            Err(StoreError::AlreadyAttached { .. })
        ));
        let mut same_if = attach("back", 2);
        same_if.ifname = "eth0".into();
        // c2 has eth0 on front already
        assert!(matches!(
            guard.add_endpoint(&same_if),
            Err(StoreError::IfnameTaken { .. })
        ));
        let mut bad = attach("front", 4);
        bad.container_id = "../../etc".into();
        assert!(matches!(
            guard.add_endpoint(&bad),
            Err(StoreError::InvalidInput { .. })
        ));
        let mut bad = attach("front", 4);
        bad.ifname = "a-very-long-interface".into();
        assert!(matches!(
            guard.add_endpoint(&bad),
            Err(StoreError::InvalidInput { .. })
        ));
        assert!(matches!(
            guard.add_endpoint(&attach("nowhere", 4)),
            Err(StoreError::NetworkNotFound(_))
        ));

        let of_one: Vec<(String, String)> = guard
            .endpoints_of(&cid(1))
            .unwrap()
            .into_iter()
            .map(|e| (e.network, e.ifname))
            .collect();
        assert_eq!(
            of_one,
            [
                ("front".into(), "eth0".into()),
                ("back".into(), "eth1".into())
            ]
        );
        assert_eq!(guard.all_endpoints().unwrap().len(), 3);
        assert_eq!(
            guard.endpoint("front", &cid(2)).unwrap().unwrap().ip,
            ip("10.1.0.50")
        );

        let e = guard.remove_network("front").unwrap_err();
        assert_eq!(e.category(), Category::Conflict);
        assert!(e.to_string().contains("c1, c2"), "{e}");

        let removed = guard.remove_endpoints(&cid(1)).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(guard.endpoints_of(&cid(1)).unwrap().is_empty());
        assert_eq!(
            guard
                .remove_endpoint("front", &cid(2))
                .unwrap()
                .unwrap()
                .container_name,
            "c2"
        );
        assert_eq!(guard.remove_endpoint("front", &cid(2)).unwrap(), None);
        let gone = guard.remove_network("front").unwrap();
        assert_eq!(gone.name, "front");
        assert!(matches!(
            guard.get("front"),
            Err(StoreError::NetworkNotFound(_))
        ));
        assert_eq!(entry_names(store.dir()).unwrap(), [".lock", "back"]);
        // the name is free again, with a new id
        drop(guard);
        let reborn = create(&store, &network("front", Some("10.1.0.0/24"))).unwrap();
        assert_ne!(reborn.id, gone.id);
        assert_eq!(
            store
                .lock()
                .unwrap()
                .add_endpoint(&attach("front", 9))
                .unwrap()
                .ip,
            ip("10.1.0.2"),
            "the old network's rotation hint is gone with it"
        );
    }

    #[test]
    fn published_ports_are_claimed_once() {
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        create(&store, &network("front", Some("10.1.0.0/24"))).unwrap();
        create(&store, &network("back", Some("10.2.0.0/24"))).unwrap();
        let port = |host_ip: &str, host_port, proto| PortMapping {
            host_ip: ip(host_ip),
            host_port,
            container_port: 80,
            proto,
        };
        let guard = store.lock().unwrap();
        let mut web = attach("front", 1);
        web.ports = vec![
            port("127.0.0.1", 8080, Proto::Tcp),
            port("0.0.0.0", 53, Proto::Udp),
        ];
        guard.add_endpoint(&web).unwrap();

        let mut other = attach("back", 2);
        other.ports = vec![port("0.0.0.0", 8080, Proto::Tcp)];
        let e = guard.add_endpoint(&other).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host port 0.0.0.0:8080/tcp requested by container c2 is already published by \
             container c1 (network front)"
        );
        assert_eq!(e.category(), Category::Conflict);
        // another address, another protocol, or ephemeral: fine
        other.ports = vec![
            port("127.0.0.2", 8080, Proto::Tcp),
            port("0.0.0.0", 8080, Proto::Udp),
            port("0.0.0.0", 0, Proto::Tcp),
        ];
        guard.add_endpoint(&other).unwrap();
        let mut twice = attach("back", 3);
        twice.ports = vec![
            port("0.0.0.0", 9000, Proto::Tcp),
            port("10.0.0.1", 9000, Proto::Tcp),
        ];
        assert!(matches!(
            guard.add_endpoint(&twice),
            Err(StoreError::PortTaken { .. })
        ));
        // released with the container
        guard.remove_endpoints(&cid(1)).unwrap();
        let mut later = attach("back", 4);
        later.ports = vec![port("127.0.0.1", 53, Proto::Udp)];
        guard.add_endpoint(&later).unwrap();
    }

    #[test]
    fn allocations_survive_restarts_and_released_addresses_rotate() {
        let root = tempfile::tempdir().unwrap();
        {
            let store = NetworkStore::open(root.path()).unwrap();
            create(&store, &network("front", Some("10.1.0.0/29"))).unwrap();
            let guard = store.lock().unwrap();
            assert_eq!(
                guard.add_endpoint(&attach("front", 1)).unwrap().ip,
                ip("10.1.0.2")
            );
            assert_eq!(
                guard.add_endpoint(&attach("front", 2)).unwrap().ip,
                ip("10.1.0.3")
            );
            guard.remove_endpoints(&cid(1)).unwrap();
        }
        // "restart": a new store on the same directory
        let store = NetworkStore::open(root.path()).unwrap();
        let guard = store.lock().unwrap();
        let ips: Vec<Ipv4Addr> = (3..=5)
            .map(|n| guard.add_endpoint(&attach("front", n)).unwrap().ip)
            .collect();
        assert_eq!(ips, [ip("10.1.0.4"), ip("10.1.0.5"), ip("10.1.0.6")]);
        // the range wrapped: now the released .2 comes back
        assert_eq!(
            guard.add_endpoint(&attach("front", 6)).unwrap().ip,
            ip("10.1.0.2")
        );
        let e = guard.add_endpoint(&attach("front", 7)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no free address left in 10.1.0.0/29 of network front"
        );
        let all: Vec<Ipv4Addr> = guard
            .endpoints("front")
            .unwrap()
            .iter()
            .map(|e| e.ip)
            .collect();
        assert_eq!(all.len(), 5);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 5);
    }

    #[test]
    fn crash_leftovers_do_not_break_listing_and_are_cleaned() {
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        create(&store, &network("good", Some("10.1.0.0/24"))).unwrap();
        store
            .lock()
            .unwrap()
            .add_endpoint(&attach("good", 1))
            .unwrap();
        let dir = store.dir().to_path_buf();
        let eps = dir.join("good/endpoints");
        // an unreadable network, a half-created one, a foreign entry, one in removal
        fs::create_dir_all(dir.join("broken/endpoints")).unwrap();
        fs::write(dir.join("broken/network.json"), "{not json").unwrap();
        let mut stranded = store.endpoint("good", &cid(1)).unwrap().unwrap();
        stranded.network = "broken".into();
        fs::write(
            dir.join("broken/endpoints")
                .join(format!("{}.json", cid(1))),
            serde_json::to_vec(&stranded).unwrap(),
        )
        .unwrap();
        fs::create_dir_all(dir.join("half/endpoints")).unwrap();
        fs::create_dir_all(dir.join("bad name")).unwrap();
        fs::create_dir_all(dir.join(".rm-old-1-0/endpoints")).unwrap();
        // temp files of interrupted writes, garbage endpoint records
        fs::write(dir.join(".tmp-99999-0-network.json"), "{").unwrap();
        fs::write(dir.join("good/.tmp-99999-1-ipam.json"), "{").unwrap();
        fs::write(eps.join(".tmp-99999-2-x.json"), "{").unwrap();
        fs::write(eps.join(format!("{}.json", cid(2))), "[1,").unwrap();
        fs::write(eps.join("notes.txt"), "hello").unwrap();
        fs::write(eps.join(format!("{}.json", cid(3))), vec![b' '; 2 << 20]).unwrap();
        fs::create_dir(eps.join(format!("{}.json", cid(4)))).unwrap();
        // a record copied from another container
        let mut copied = store.endpoint("good", &cid(1)).unwrap().unwrap();
        copied.ip = ip("10.1.0.77");
        fs::write(
            eps.join(format!("{}.json", cid(5))),
            serde_json::to_vec(&copied).unwrap(),
        )
        .unwrap();
        fs::write(dir.join("good/ipam.json"), "garbage").unwrap();

        let names: Vec<String> = store.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["good"]);
        let ips: Vec<Ipv4Addr> = store
            .all_endpoints()
            .unwrap()
            .iter()
            .map(|e| e.ip)
            .collect();
        assert_eq!(ips, [ip("10.1.0.2")]);
        assert!(matches!(
            store.get("broken"),
            Err(StoreError::BadRecord { .. })
        ));
        assert!(matches!(
            create(&store, &network("broken", None)),
            Err(StoreError::BadRecord { .. })
        ));

        let guard = store.lock().unwrap();
        // allocation still works with an unreadable hint
        assert_eq!(
            guard.add_endpoint(&attach("good", 6)).unwrap().ip,
            ip("10.1.0.3")
        );
        // the endpoint in the unreadable network is removed too, nothing leaks
        let removed = guard.remove_endpoints(&cid(1)).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!dir
            .join("broken/endpoints")
            .join(format!("{}.json", cid(1)))
            .exists());
        assert_eq!(guard.clean_leftovers().unwrap(), 4);
        assert!(!dir.join(".rm-old-1-0").exists());
        assert!(!eps.join(".tmp-99999-2-x.json").exists());
        // a crashed create's directory is reused
        guard
            .create_network(&network("half", None), &ipam::default_pools(), &[])
            .unwrap();
        assert_eq!(guard.list().unwrap().len(), 2);
    }

    fn record_outcome(
        result: Result<Endpoint, StoreError>,
        ok: &mut Vec<Ipv4Addr>,
        full: &mut usize,
    ) {
        match result {
            Ok(e) => ok.push(e.ip),
            Err(StoreError::Ipam(IpamError::Exhausted { network, .. })) => {
                assert_eq!(network, "tiny");
                *full += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn threads_allocate_unique_addresses() {
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        // 16 addresses: network, gateway and broadcast leave 13
        create(&store, &network("tiny", Some("10.7.0.0/28"))).unwrap();
        let results: Vec<(Vec<Ipv4Addr>, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let store = store.clone();
                    s.spawn(move || {
                        let (mut ok, mut full) = (Vec::new(), 0);
                        for k in 0..4 {
                            let result = store
                                .lock()
                                .and_then(|g| g.add_endpoint(&attach("tiny", t * 100 + k)));
                            record_outcome(result, &mut ok, &mut full);
                        }
                        (ok, full)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ips: Vec<Ipv4Addr> = results.iter().flat_map(|r| r.0.clone()).collect();
        let full: usize = results.iter().map(|r| r.1).sum();
        assert_eq!(ips.len(), 13);
        assert_eq!(full, 32 - 13);
        assert_eq!(ips.iter().collect::<HashSet<_>>().len(), 13);
        let stored: HashSet<Ipv4Addr> = store
            .endpoints("tiny")
            .unwrap()
            .iter()
            .map(|e| e.ip)
            .collect();
        assert_eq!(stored, ips.into_iter().collect());
    }

    #[test]
    fn concurrent_creates_get_distinct_subnets() {
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        let subnets: Vec<Ipv4Net> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|t| {
                    let store = store.clone();
                    s.spawn(move || {
                        create(&store, &network(&format!("n{t}"), None))
                            .unwrap()
                            .subnet
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(subnets.iter().collect::<HashSet<_>>().len(), 6);
        assert_eq!(store.list().unwrap().len(), 6);
    }

    /// Set in the children of [`processes_allocate_unique_addresses`]: the store's root.
    const CHILD_ROOT_ENV: &str = "DMT_NETSTORE_CHILD_ROOT";
    const CHILD_INDEX_ENV: &str = "DMT_NETSTORE_CHILD_INDEX";
    const CHILD_TEST: &str = "network::store::tests::processes_allocate_unique_addresses";

    /// Kills (by pid) and reaps children still running when a test fails.
    struct Children(Vec<Child>);

    impl Drop for Children {
        fn drop(&mut self) {
            for child in &mut self.0 {
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }

    #[test]
    fn processes_allocate_unique_addresses() {
        if let Ok(root) = std::env::var(CHILD_ROOT_ENV) {
            // Child: allocate five times, report what happened.
            let index: usize = std::env::var(CHILD_INDEX_ENV).unwrap().parse().unwrap();
            let store = NetworkStore::open(Path::new(&root)).unwrap();
            let (mut ok, mut full) = (Vec::new(), 0);
            for k in 0..5 {
                let result = store
                    .lock()
                    .and_then(|g| g.add_endpoint(&attach("tiny", 1000 + index * 100 + k)));
                record_outcome(result, &mut ok, &mut full);
            }
            let ips: Vec<String> = ok.iter().map(Ipv4Addr::to_string).collect();
            println!("dmt-result full={full} ips={}", ips.join(","));
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        create(&store, &network("tiny", Some("10.7.0.0/28"))).unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut children = Children(Vec::new());
        for i in 0..4 {
            let child = Command::new(&exe)
                .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ROOT_ENV, root.path())
                .env(CHILD_INDEX_ENV, i.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            children.0.push(child);
        }
        let (mut ips, mut full) = (Vec::new(), 0);
        for child in std::mem::take(&mut children.0) {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "child failed: {stdout}");
            let line = stdout
                .lines()
                .find_map(|l| l.split_once("dmt-result ").map(|(_, r)| r))
                .unwrap_or_else(|| panic!("no result from child: {stdout}"));
            let (f, list) = line.split_once(' ').unwrap();
            full += f.strip_prefix("full=").unwrap().parse::<usize>().unwrap();
            let list = list.strip_prefix("ips=").unwrap();
            ips.extend(list.split(',').filter(|s| !s.is_empty()).map(ip));
        }
        assert_eq!(ips.len(), 13);
        assert_eq!(full, 20 - 13);
        let unique: HashSet<Ipv4Addr> = ips.iter().copied().collect();
        assert_eq!(unique.len(), 13);
        let stored: HashSet<Ipv4Addr> = store
            .endpoints("tiny")
            .unwrap()
            .iter()
            .map(|e| e.ip)
            .collect();
        assert_eq!(stored, unique);
    }
}
