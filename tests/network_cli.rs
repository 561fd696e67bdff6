//! `dockmaster network create|ls|inspect|rm|prune`, run as the real binary (root).
//!
//! Every test creates a network namespace that plays the host (`ip netns add dmt-cli-…`) and
//! runs the binary in it with `nsenter --net=…` (not `ip netns exec`, which would also give
//! it a mount namespace of its own, hiding the container namespace mounts from the test).
//! So the machine's own network namespace is never changed; the `Host` guard deletes the
//! namespace (and with it every bridge and veth made in it) and any container namespace left
//! under the test's state directory, also when a test fails.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dockmaster::network::manager::{self, ConnectRequest, NetworkRequest};
use dockmaster::network::model::bridge_name;
use dockmaster::network::store::NetworkStore;
use dockmaster::network::{ipam, link, netns};
use ipnet::Ipv4Net;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dockmaster");

/// A network namespace playing the host, and a state directory for dockmaster.
struct Host {
    name: String,
    root: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let mut bytes = [0u8; 6];
        let mut urandom = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
        std::io::Read::read_exact(&mut urandom, &mut bytes).expect("read /dev/urandom");
        let name = format!("dmt-cli-{}", hex::encode(bytes));
        let root = tempfile::Builder::new()
            .prefix("dmt-cli-")
            .tempdir()
            .expect("temp dir");
        let host = Host { name, root };
        let out = Command::new("ip")
            .args(["netns", "add", &host.name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {}: {}",
            host.name,
            String::from_utf8_lossy(&out.stderr)
        );
        host.ip(&["link", "set", "lo", "up"]);
        host
    }

    fn ns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    /// Runs `dockmaster --root ROOT ARGS` inside the namespace, with `stdin` as its input.
    fn dm_with_input(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path().display()))
            .arg("--")
            .arg(BIN)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dockmaster");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("wait for dockmaster")
    }

    fn dm(&self, args: &[&str]) -> Output {
        self.dm_with_input(args, "")
    }

    /// Stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.dm(args);
        assert!(
            out.status.success(),
            "dockmaster {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Stderr of a command that must fail with exit code 1.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.dm(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "dockmaster {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }

    fn inspect(&self, network: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["network", "inspect", network]))
            .expect("inspect prints JSON");
        assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
        v[0].clone()
    }

    fn names(&self) -> Vec<String> {
        self.ok(&["network", "ls", "--format", "json"])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("ls json line");
                v["Name"].as_str().expect("Name").to_string()
            })
            .collect()
    }

    /// `ip -n NS ARGS`, which must succeed; its stdout.
    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 ip output")
    }

    /// The link `name` in the namespace as `ip -j -d addr show` reports it, `None` if absent.
    fn link(&self, name: &str) -> Option<Value> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j", "-d", "addr", "show", "dev", name])
            .output()
            .expect("run ip");
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        Some(v[0].clone())
    }

    /// Names of the bridges in the namespace.
    fn bridges(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ip(&["-j", "link", "show", "type", "bridge"]))
            .expect("ip -j output");
        v.as_array()
            .expect("array")
            .iter()
            .map(|l| l["ifname"].as_str().expect("ifname").to_string())
            .collect()
    }

    /// dockmaster's nftables table in the namespace, `None` when absent.
    fn nft_table(&self) -> Option<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path().display()))
            .args(["--", "nft", "list", "table", "ip", "dockmaster"])
            .output()
            .expect("run nft");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread inside the namespace.
    fn within<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        netns::run_in(&self.ns_path(), f).expect("enter the test namespace")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Container namespaces a failed test left (their veths go with the host namespace).
        let dir = manager::netns_dir(self.root());
        if let Ok(entries) = netns::list(&dir) {
            for e in entries {
                if let Err(err) = netns::remove(&e.path) {
                    eprintln!("cleanup {}: {err}", e.path.display());
                }
            }
        }
        if let Err(err) = netns::release_dir(&dir) {
            eprintln!("cleanup {}: {err}", dir.display());
        }
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "cleanup: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(err) => eprintln!("cleanup: ip netns del {}: {err}", self.name),
        }
    }
}

/// The IPv4 addresses (`a.b.c.d/len`) on a link from `ip -j addr` output.
fn ipv4_of(link: &Value) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn subnet_of(inspect: &Value) -> Ipv4Net {
    inspect["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .expect("Subnet")
        .parse()
        .expect("subnet parses")
}

/// A made-up container id: 64 hex characters, random.
fn container_id() -> String {
    let mut bytes = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut urandom, &mut bytes).expect("read /dev/urandom");
    hex::encode(bytes)
}

fn connect(host: &Host, id: &str, name: &str, network: &str) -> manager::Connected {
    let req = ConnectRequest {
        container_id: id.to_string(),
        container_name: name.to_string(),
        networks: vec![NetworkRequest {
            network: network.to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let root = host.root().to_path_buf();
    host.within(move || manager::connect(&root, &req))
        .unwrap_or_else(|e| panic!("connect {name} to {network}: {e}"))
}

fn disconnect(host: &Host, id: &str) {
    let root = host.root().to_path_buf();
    host.within(|| manager::disconnect(&root, id))
        .unwrap_or_else(|e| panic!("disconnect {id}: {e}"));
}

#[test]
fn create_with_defaults_takes_a_free_pool_subnet_and_makes_the_bridge() {
    let host = Host::new();
    // A route in the host namespace over the first pool: the default choice must avoid it.
    host.ip(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    host.ip(&["addr", "add", "172.17.0.1/16", "dev", "uplink0"]);
    host.ip(&["link", "set", "uplink0", "up"]);
    host.ip(&["link", "set", "uplink1", "up"]);

    let id = host.ok(&["network", "create", "front"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");

    let net = host.inspect("front");
    assert_eq!(net["Id"], id);
    let subnet = subnet_of(&net);
    assert!(
        ipam::default_pools()
            .iter()
            .any(|p| p.base().contains(&subnet) && subnet.prefix_len() == p.size()),
        "{subnet} is not from a pool"
    );
    assert!(
        !ipam::overlaps(&subnet, &"172.17.0.0/16".parse().unwrap()),
        "{subnet} overlaps the host route"
    );
    let gateway: Ipv4Addr = net["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(u32::from(gateway), u32::from(subnet.network()) + 1);
    assert!(net["IPAM"]["Config"][0].get("IPRange").is_none(), "{net}");
    assert_eq!(net["Internal"], false);
    assert_eq!(net["Containers"], serde_json::json!({}));

    // The bridge exists at once, in the test namespace only: up, gateway address, MTU 1500.
    let bridge = bridge_name(id);
    assert_eq!(net["Options"]["com.docker.network.bridge.name"], bridge);
    assert_eq!(net["Options"]["com.docker.network.driver.mtu"], "1500");
    let link = host.link(&bridge).expect("bridge exists");
    assert_eq!(
        ipv4_of(&link),
        vec![format!("{gateway}/{}", subnet.prefix_len())]
    );
    assert_eq!(link["mtu"], 1500);
    assert_eq!(link["linkinfo"]["info_kind"], "bridge");
    assert!(
        link["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{link}"
    );
    assert!(
        !link::link_exists(&bridge).unwrap(),
        "not in the machine's namespace"
    );

    // dockmaster's nftables table exists in the test namespace and covers the bridge.
    let table = host.nft_table().expect("table ip dockmaster exists");
    assert!(table.contains(&bridge), "{table}");

    // The record is in the store.
    let stored = NetworkStore::open(host.root())
        .unwrap()
        .get("front")
        .unwrap();
    assert_eq!(stored.id, id);
    assert_eq!(stored.subnet, subnet);

    // A second default network takes another free subnet.
    let id2 = host.ok(&["network", "create", "back"]);
    let back = host.inspect("back");
    let subnet2 = subnet_of(&back);
    assert!(!ipam::overlaps(&subnet, &subnet2), "{subnet} and {subnet2}");
    let mut bridges = host.bridges();
    bridges.sort();
    let mut expected = vec![bridge, bridge_name(id2.trim())];
    expected.sort();
    assert_eq!(bridges, expected);
}

#[test]
fn create_with_addressing_internal_mtu_and_labels() {
    let host = Host::new();
    let id = host.ok(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        "10.123.0.0/16",
        "--gateway",
        "10.123.0.254",
        "--ip-range",
        "10.123.5.0/24",
        "--internal",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "--label",
        "tier=back",
        "--label",
        "empty",
        "inner",
    ]);
    let net = host.inspect("inner");
    assert_eq!(net["Name"], "inner");
    assert_eq!(net["Id"], id.trim());
    assert_eq!(net["Driver"], "bridge");
    assert_eq!(net["Scope"], "local");
    assert_eq!(net["EnableIPv6"], false);
    assert_eq!(net["Internal"], true);
    assert_eq!(net["IPAM"]["Driver"], "default");
    assert_eq!(
        net["IPAM"]["Config"],
        serde_json::json!([{"Subnet": "10.123.0.0/16", "Gateway": "10.123.0.254", "IPRange": "10.123.5.0/24"}])
    );
    assert_eq!(net["Options"]["com.docker.network.driver.mtu"], "1400");
    assert_eq!(
        net["Labels"],
        serde_json::json!({"tier": "back", "empty": ""})
    );
    let created = net["Created"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");

    let bridge = bridge_name(id.trim());
    let link = host.link(&bridge).expect("bridge exists");
    assert_eq!(ipv4_of(&link), vec!["10.123.0.254/16".to_string()]);
    assert_eq!(link["mtu"], 1400);
    assert!(host.nft_table().is_some());

    // A container on it gets an address from the ip range, shown by inspect.
    let cid = container_id();
    let connected = connect(&host, &cid, "db", "inner");
    let ip = connected.endpoints[0].ip;
    assert!(
        "10.123.5.0/24".parse::<Ipv4Net>().unwrap().contains(&ip),
        "{ip}"
    );
    let c = &host.inspect("inner")["Containers"][&cid];
    assert_eq!(c["Name"], "db");
    assert_eq!(c["IPv4Address"], format!("{ip}/16"));
    assert_eq!(c["MacAddress"], connected.endpoints[0].mac);
    assert_eq!(c["IPv6Address"], "");
    assert_eq!(c["EndpointID"].as_str().unwrap().len(), 64);
    disconnect(&host, &cid);
    assert_eq!(host.inspect("inner")["Containers"], serde_json::json!({}));
}

#[test]
fn create_errors_name_the_network_and_leave_nothing_behind() {
    let host = Host::new();
    host.ok(&["network", "create", "--subnet", "10.50.0.0/16", "front"]);
    let before = host.bridges();

    let err = host.fails(&["network", "create", "front"]);
    assert!(err.contains("network front already exists"), "{err}");
    let err = host.fails(&["network", "create", "--subnet", "10.50.8.0/24", "other"]);
    assert!(
        err.contains("other") && err.contains("front") && err.contains("10.50.0.0/16"),
        "{err}"
    );
    let err = host.fails(&["network", "create", "-d", "overlay", "swarm"]);
    assert!(
        err.contains("swarm") && err.contains("driver \"overlay\" is not supported"),
        "{err}"
    );
    let err = host.fails(&[
        "network",
        "create",
        "--subnet",
        "10.60.0.0/24",
        "--gateway",
        "10.61.0.1",
        "gw",
    ]);
    assert!(err.contains("gw") && err.contains("10.61.0.1"), "{err}");
    let err = host.fails(&["network", "create", "--gateway", "10.62.0.1", "nosubnet"]);
    assert!(err.contains("nosubnet") && err.contains("subnet"), "{err}");
    let err = host.fails(&["network", "create", "--subnet", "fd00::/64", "v6"]);
    assert!(err.contains("v6") && err.contains("IPv6"), "{err}");
    let err = host.fails(&[
        "network",
        "create",
        "-o",
        "com.docker.network.driver.mtu=9",
        "tiny",
    ]);
    assert!(err.contains("tiny") && err.contains("mtu"), "{err}");
    let err = host.fails(&["network", "create", "bad/name"]);
    assert!(err.contains("invalid network name"), "{err}");
    let err = host.fails(&["network", "create", "bridge"]);
    assert!(
        err.contains("bridge") && err.contains("predefined"),
        "{err}"
    );

    assert_eq!(host.names(), vec!["front"]);
    assert_eq!(host.bridges(), before);
}

#[test]
fn ls_lists_networks_like_docker() {
    let host = Host::new();
    assert_eq!(
        host.ok(&["network", "ls"]),
        "NETWORK ID   NAME   DRIVER   SCOPE\n"
    );
    let b = host.ok(&["network", "create", "beta"]).trim().to_string();
    let a = host
        .ok(&["network", "create", "--label", "x=1", "alpha-network"])
        .trim()
        .to_string();

    let table = host.ok(&["network", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        cols(lines[0]),
        vec!["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    );
    assert_eq!(
        cols(lines[1]),
        vec![&a[..12], "alpha-network", "bridge", "local"]
    );
    assert_eq!(cols(lines[2]), vec![&b[..12], "beta", "bridge", "local"]);
    // Columns line up: NAME starts at the same offset in every line.
    let name_col = lines[0].find("NAME").unwrap();
    assert_eq!(lines[1].find("alpha-network"), Some(name_col));
    assert_eq!(lines[2].find("beta"), Some(name_col));

    assert_eq!(
        host.ok(&["network", "ls", "-q"]),
        format!("{}\n{}\n", &a[..12], &b[..12])
    );
    assert_eq!(
        host.ok(&["network", "ls", "-q", "--no-trunc"]),
        format!("{a}\n{b}\n")
    );
    let json: Vec<Value> = host
        .ok(&["network", "ls", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["Name"], "alpha-network");
    assert_eq!(json[0]["ID"], &a[..12]);
    assert_eq!(json[0]["Driver"], "bridge");
    assert_eq!(json[0]["Scope"], "local");
    assert_eq!(json[0]["Labels"], "x=1");
    assert_eq!(json[1]["Name"], "beta");
    let err = host.fails(&["network", "ls", "--format", "yaml"]);
    assert!(err.contains("yaml"), "{err}");

    // Inspect takes names, ids and id prefixes; several at once; a missing one fails but
    // the others are still printed.
    let both: Value = serde_json::from_str(&host.ok(&["network", "inspect", &b, &a[..8]])).unwrap();
    assert_eq!(both[0]["Name"], "beta");
    assert_eq!(both[1]["Name"], "alpha-network");
    let out = host.dm(&["network", "inspect", "beta", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed.as_array().unwrap().len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("network nope not found"));
}

#[test]
fn rm_deletes_the_bridge_and_the_record() {
    let host = Host::new();
    let front = host.ok(&["network", "create", "front"]).trim().to_string();
    let back = host.ok(&["network", "create", "back"]).trim().to_string();
    let front_bridge = bridge_name(&front);
    assert!(host.nft_table().unwrap().contains(&front_bridge));

    assert_eq!(host.ok(&["network", "rm", "front"]), "front\n");
    assert!(host.link(&front_bridge).is_none(), "bridge deleted");
    assert!(!host.root().join("networks/front").exists());
    assert_eq!(host.names(), vec!["back"]);
    let table = host.nft_table().expect("table still there for back");
    assert!(!table.contains(&front_bridge), "{table}");
    assert!(table.contains(&bridge_name(&back)), "{table}");

    // Missing: an error naming it, unless -f.
    let err = host.fails(&["network", "rm", "front"]);
    assert!(err.contains("network front not found"), "{err}");
    host.ok(&["network", "rm", "-f", "front"]);
    // By id prefix, several at once; one missing fails the command but not the others.
    let again = host.ok(&["network", "create", "again"]).trim().to_string();
    let out = host.dm(&["network", "rm", &back[..10], "nope", "again"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\nagain\n", &back[..10])
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("network nope not found"));
    assert!(host.names().is_empty());
    assert!(host.bridges().is_empty(), "{:?}", host.bridges());
    assert!(host.link(&bridge_name(&again)).is_none());
}

#[test]
fn networks_in_use_are_kept_by_rm_and_prune() {
    let host = Host::new();
    let front = host
        .ok(&["network", "create", "--subnet", "10.70.0.0/24", "front"])
        .trim()
        .to_string();
    host.ok(&["network", "create", "unused"]);
    let lonely = host.ok(&["network", "create", "lonely"]).trim().to_string();
    let cid = container_id();
    let connected = connect(&host, &cid, "web", "front");
    let veth = connected.endpoints[0].host_veth.clone();
    // The container's port on the bridge, in hairpin mode (to reach its own published ports).
    let port = host.link(&veth).expect("host side of the veth pair");
    assert_eq!(port["master"], bridge_name(&front));
    assert_eq!(
        port["linkinfo"]["info_slave_data"]["hairpin"], true,
        "{port}"
    );

    // rm refuses, naming the network and the container; nothing changes.
    let err = host.fails(&["network", "rm", "front"]);
    assert!(
        err.contains("network front is in use by container(s) web"),
        "{err}"
    );
    assert!(host.link(&bridge_name(&front)).is_some());
    let c = &host.inspect("front")["Containers"][&cid];
    assert_eq!(c["Name"], "web");
    assert_eq!(
        c["IPv4Address"],
        format!("{}/24", connected.endpoints[0].ip)
    );

    // The predefined default network, once created, is listed and never pruned or removed.
    host.within(|| {
        let store = NetworkStore::open(host.root()).unwrap();
        let guard = store.lock().unwrap();
        manager::ensure_default_network(&guard).unwrap();
        manager::apply_host_state(&guard).unwrap();
    });
    assert!(host.names().contains(&"bridge".to_string()));
    let err = host.fails(&["network", "rm", "bridge"]);
    assert!(err.contains("bridge is predefined"), "{err}");

    // prune asks first; anything but yes keeps everything.
    let out = host.dm_with_input(&["network", "prune"], "n\n");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Are you sure"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(host.names(), vec!["bridge", "front", "lonely", "unused"]);
    let out = host.dm_with_input(&["network", "prune"], "y\n");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Deleted Networks:\nlonely\nunused\n"
    );
    assert_eq!(host.names(), vec!["bridge", "front"]);
    assert!(host.link(&bridge_name(&lonely)).is_none());
    assert!(host.link(&bridge_name(&front)).is_some());
    // Nothing left to prune: no output.
    assert_eq!(host.ok(&["network", "prune", "-f"]), "");

    // Once the container is gone, rm works.
    disconnect(&host, &cid);
    assert_eq!(
        host.ok(&["network", "rm", &front[..12]]),
        format!("{}\n", &front[..12])
    );
    assert!(host.link(&bridge_name(&front)).is_none());
    assert!(host.link(&veth).is_none());
    assert_eq!(host.names(), vec!["bridge"]);
    assert_eq!(host.ok(&["network", "prune", "-f"]), "");
}
