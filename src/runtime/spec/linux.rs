//! The Linux section: namespaces, sysctls, cgroup resources, plus the identity checks
//! (container id, hostname) and annotations.

use std::collections::{BTreeMap, HashMap};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

use super::mounts::device_rules;
use super::options::{ContainerOptions, Identity, NetworkMode};
use super::rlimits::HostLimits;
use super::SpecError;

/// Docker's smallest memory limit and reservation.
pub const MIN_MEMORY: u64 = 6 << 20;
/// The CFS period `--cpus` is expressed in, in microseconds.
pub const CPU_PERIOD: u64 = 100_000;
const MIN_CPU_SHARES: u64 = 2;
const MAX_CPU_SHARES: u64 = 262_144;

/// Annotation keys carrying dockmaster's identity.
pub mod annotation {
    pub const NAME: &str = "io.dockmaster.name";
    pub const IMAGE: &str = "io.dockmaster.image";
    pub const PROJECT: &str = "io.dockmaster.project";
    pub const SERVICE: &str = "io.dockmaster.service";
    pub const REPLICA: &str = "io.dockmaster.replica";
    pub const CONFIG_HASH: &str = "io.dockmaster.config-hash";
}

/// Container ids are file and cgroup names: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 bytes.
pub fn check_container_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            "container_id",
            id,
            "must match [A-Za-z0-9][A-Za-z0-9_.-]* and be at most 128 bytes",
        ))
    }
}

/// The hostname: the given one, else with `--network host` the host's (the container shares
/// its network identity, as in Docker), else the first 12 characters of the id (Docker's
/// default).
pub fn hostname(opts: &ContainerOptions) -> Result<String, SpecError> {
    let Some(name) = &opts.hostname else {
        let host = (opts.network == NetworkMode::Host)
            .then(|| nix::unistd::gethostname().ok()?.into_string().ok())
            .flatten();
        return Ok(host.unwrap_or_else(|| opts.identity.container_id.chars().take(12).collect()));
    };
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if ok {
        Ok(name.clone())
    } else {
        Err(SpecError::invalid(
            "hostname",
            name.as_str(),
            "must be 1 to 64 letters, digits, '-' or '.', not starting with '-' or '.'",
        ))
    }
}

/// Namespaces in Docker's order; the network namespace depends on the network mode.
pub fn namespaces(network: &NetworkMode) -> Result<Vec<LinuxNamespace>, SpecError> {
    let ns = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    let mut out = vec![ns(LinuxNamespaceType::Pid)?];
    match network {
        NetworkMode::None => out.push(ns(LinuxNamespaceType::Network)?),
        NetworkMode::Host => {}
        NetworkMode::Join(path) => {
            if !path.is_absolute() {
                return Err(SpecError::invalid(
                    "network",
                    path.display().to_string(),
                    "a network namespace path must be absolute",
                ));
            }
            out.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .path(path.clone())
                    .build()?,
            );
        }
    }
    out.push(ns(LinuxNamespaceType::Ipc)?);
    out.push(ns(LinuxNamespaceType::Uts)?);
    out.push(ns(LinuxNamespaceType::Mount)?);
    out.push(ns(LinuxNamespaceType::Cgroup)?);
    Ok(out)
}

const IPC_SYSCTL_PREFIXES: [&str; 3] = ["kernel.shm", "kernel.msg", "fs.mqueue."];

/// Only sysctls that live in the container's own namespaces: IPC ones (`kernel.shm*`,
/// `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`) and network ones (`net.*`, not with the host's
/// network). Anything else would change the host.
pub fn sysctls(
    requested: &BTreeMap<String, String>,
    network: &NetworkMode,
) -> Result<HashMap<String, String>, SpecError> {
    let mut out = HashMap::with_capacity(requested.len());
    for (key, value) in requested {
        let err = |reason: &str| SpecError::Sysctl {
            key: key.clone(),
            reason: reason.to_string(),
        };
        let well_formed = key.split('.').all(|seg| {
            !seg.is_empty()
                && seg.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@' | b':' | b'+')
                })
        });
        if !well_formed {
            return Err(err("not a sysctl name (dot-separated words)"));
        }
        if value.is_empty() || value.contains(['\0', '\n']) {
            return Err(err("the value must be one non-empty line"));
        }
        let ipc = key == "kernel.sem" || IPC_SYSCTL_PREFIXES.iter().any(|p| key.starts_with(p));
        let net = key.starts_with("net.");
        if net && *network == NetworkMode::Host {
            return Err(err(
                "not allowed with the host's network: it would change the host's network stack",
            ));
        }
        if !ipc && !net {
            return Err(err(
                "not namespaced, it would change the host (allowed: net.*, kernel.shm*, \
                 kernel.msg*, kernel.sem, fs.mqueue.*)",
            ));
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
}

/// Cgroup resources: memory, reservation and swap; `--cpus` as a CFS quota; shares; pids; and
/// the device allowlist.
pub fn resources(opts: &ContainerOptions, host: &HostLimits) -> Result<LinuxResources, SpecError> {
    let mut b = LinuxResourcesBuilder::default().devices(device_rules(opts.privileged)?);

    if opts.memory.is_some() || opts.memory_reservation.is_some() || opts.memory_swap.is_some() {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(limit) = opts.memory {
            if limit < MIN_MEMORY {
                return Err(SpecError::invalid(
                    "memory",
                    limit.to_string(),
                    "the smallest memory limit is 6 MiB",
                ));
            }
            m = m.limit(to_i64("memory", limit)?);
        }
        if let Some(r) = opts.memory_reservation {
            if r < MIN_MEMORY {
                return Err(SpecError::invalid(
                    "memory_reservation",
                    r.to_string(),
                    "the smallest memory reservation is 6 MiB",
                ));
            }
            if opts.memory.is_some_and(|limit| r > limit) {
                return Err(SpecError::invalid(
                    "memory_reservation",
                    r.to_string(),
                    "must not be above the memory limit",
                ));
            }
            m = m.reservation(to_i64("memory_reservation", r)?);
        }
        if let Some(swap) = opts.memory_swap {
            let Some(limit) = opts.memory else {
                return Err(SpecError::invalid(
                    "memory_swap",
                    swap.to_string(),
                    "needs a memory limit",
                ));
            };
            if swap != -1 && (swap < 0 || (swap as u64) < limit) {
                return Err(SpecError::invalid(
                    "memory_swap",
                    swap.to_string(),
                    "must be -1 (unlimited) or at least the memory limit",
                ));
            }
            m = m.swap(swap);
        }
        b = b.memory(m.build()?);
    }

    let mut cpu = None;
    if let Some(cpus) = opts.cpus {
        if !cpus.is_finite() || cpus < 0.01 {
            return Err(SpecError::invalid(
                "cpus",
                cpus.to_string(),
                "must be at least 0.01",
            ));
        }
        if let Some(avail) = host.cpus {
            if cpus > f64::from(avail) {
                return Err(SpecError::invalid(
                    "cpus",
                    cpus.to_string(),
                    format!("this host has {avail} CPUs"),
                ));
            }
        }
        let quota = (cpus * CPU_PERIOD as f64).round() as i64;
        cpu = Some(LinuxCpuBuilder::default().quota(quota).period(CPU_PERIOD));
    }
    match opts.cpu_shares {
        None | Some(0) => {}
        Some(s) if (MIN_CPU_SHARES..=MAX_CPU_SHARES).contains(&s) => {
            cpu = Some(cpu.unwrap_or_default().shares(s));
        }
        Some(s) => {
            return Err(SpecError::invalid(
                "cpu_shares",
                s.to_string(),
                format!("must be {MIN_CPU_SHARES} to {MAX_CPU_SHARES}"),
            ))
        }
    }
    if let Some(cpu) = cpu {
        b = b.cpu(cpu.build()?);
    }
    if let Some(limit) = opts.pids_limit.filter(|l| *l > 0) {
        b = b.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    Ok(b.build()?)
}

fn to_i64(field: &'static str, v: u64) -> Result<i64, SpecError> {
    i64::try_from(v).map_err(|_| SpecError::invalid(field, v.to_string(), "too large"))
}

/// dockmaster's identity annotations.
pub fn annotations(id: &Identity) -> HashMap<String, String> {
    let mut a = HashMap::new();
    a.insert(annotation::NAME.to_string(), id.name.clone());
    a.insert(annotation::IMAGE.to_string(), id.image.clone());
    if let Some(p) = &id.project {
        a.insert(annotation::PROJECT.to_string(), p.clone());
    }
    if let Some(s) = &id.service {
        a.insert(annotation::SERVICE.to_string(), s.clone());
    }
    if let Some(r) = id.replica {
        a.insert(annotation::REPLICA.to_string(), r.to_string());
    }
    if let Some(h) = &id.config_hash {
        a.insert(annotation::CONFIG_HASH.to_string(), h.clone());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostLimits {
        HostLimits {
            capabilities: None,
            cpus: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn container_ids() {
        for ok in ["a", "0123456789ab", "web-1_x.y"] {
            check_container_id(ok).unwrap();
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "../x", &"a".repeat(129)] {
            assert!(check_container_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        let mut o = ContainerOptions::default();
        o.identity.container_id = "0123456789abcdef".into();
        assert_eq!(hostname(&o).unwrap(), "0123456789ab");
        o.network = NetworkMode::Host;
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(hostname(&o).unwrap(), host);
        o.hostname = Some("web.local".into());
        assert_eq!(hostname(&o).unwrap(), "web.local");
        for bad in ["", "-x", ".x", "a b", "a/b", &"h".repeat(65)] {
            o.hostname = Some(bad.to_string());
            let err = hostname(&o).unwrap_err();
            assert!(
                matches!(
                    err,
                    SpecError::Invalid {
                        field: "hostname",
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    fn types(ns: &[LinuxNamespace]) -> Vec<LinuxNamespaceType> {
        ns.iter().map(|n| n.typ()).collect()
    }

    #[test]
    fn namespaces_follow_the_network_mode() {
        use LinuxNamespaceType::*;
        assert_eq!(
            types(&namespaces(&NetworkMode::None).unwrap()),
            [Pid, Network, Ipc, Uts, Mount, Cgroup]
        );
        assert_eq!(
            types(&namespaces(&NetworkMode::Host).unwrap()),
            [Pid, Ipc, Uts, Mount, Cgroup]
        );
        let joined = namespaces(&NetworkMode::Join("/run/netns/x".into())).unwrap();
        assert_eq!(
            joined[1].path().as_deref(),
            Some(std::path::Path::new("/run/netns/x"))
        );
        assert!(namespaces(&NetworkMode::Join("netns/x".into())).is_err());
    }

    fn sysctl(key: &str, network: NetworkMode) -> Result<HashMap<String, String>, SpecError> {
        sysctls(
            &BTreeMap::from([(key.to_string(), "1".to_string())]),
            &network,
        )
    }

    #[test]
    fn namespaced_sysctls_only() {
        for ok in [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.rp_filter",
            "kernel.shmmax",
            "kernel.shm_rmid_forced",
            "kernel.msgmax",
            "kernel.sem",
            "fs.mqueue.msg_max",
        ] {
            assert_eq!(sysctl(ok, NetworkMode::None).unwrap()[ok], "1");
        }
        for bad in [
            "kernel.hostname",
            "vm.swappiness",
            "kernel.pid_max",
            "fs.file-max",
            "kernel.semx",
        ] {
            let err = sysctl(bad, NetworkMode::None).unwrap_err();
            assert!(matches!(&err, SpecError::Sysctl { key, .. } if key == bad));
            assert!(err.to_string().contains("not namespaced"), "{err}");
        }
        for malformed in [
            "net..x",
            "net.ipv4/../x",
            "net/ipv4/ip_forward",
            ".net",
            "net.a b",
        ] {
            assert!(sysctl(malformed, NetworkMode::None).is_err(), "{malformed}");
        }
        let bad_value = BTreeMap::from([("net.ipv4.ip_forward".to_string(), "1\n2".to_string())]);
        assert!(sysctls(&bad_value, &NetworkMode::None).is_err());
    }

    #[test]
    fn net_sysctls_are_refused_with_host_network() {
        let err = sysctl("net.ipv4.ip_forward", NetworkMode::Host).unwrap_err();
        assert!(err.to_string().contains("host's network"), "{err}");
        // IPC ones stay fine: the IPC namespace is always private.
        sysctl("kernel.shmmax", NetworkMode::Host).unwrap();
    }

    #[test]
    fn no_limits_means_only_device_rules() {
        let r = resources(&ContainerOptions::default(), &host()).unwrap();
        assert!(r.memory().is_none() && r.cpu().is_none() && r.pids().is_none());
        assert!(!r.devices().as_ref().unwrap().is_empty());
    }

    #[test]
    fn limits() {
        let o = ContainerOptions {
            memory: Some(256 << 20),
            memory_reservation: Some(128 << 20),
            memory_swap: Some(512 << 20),
            cpus: Some(1.5),
            cpu_shares: Some(512),
            pids_limit: Some(100),
            ..Default::default()
        };
        let r = resources(&o, &host()).unwrap();
        let m = r.memory().unwrap();
        assert_eq!(m.limit(), Some(256 << 20));
        assert_eq!(m.reservation(), Some(128 << 20));
        assert_eq!(m.swap(), Some(512 << 20));
        let c = r.cpu().as_ref().unwrap();
        assert_eq!(
            (c.quota(), c.period(), c.shares()),
            (Some(150_000), Some(100_000), Some(512))
        );
        assert_eq!(r.pids().unwrap().limit(), 100);
        let o = ContainerOptions {
            cpus: Some(0.5),
            pids_limit: Some(-1),
            ..Default::default()
        };
        let r = resources(&o, &host()).unwrap();
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert!(r.pids().is_none());
    }

    #[test]
    fn bad_limits_name_the_field() {
        let cases: Vec<(ContainerOptions, &str)> = vec![
            (
                ContainerOptions {
                    memory: Some(1 << 20),
                    ..Default::default()
                },
                "memory",
            ),
            (
                ContainerOptions {
                    memory: Some(64 << 20),
                    memory_reservation: Some(128 << 20),
                    ..Default::default()
                },
                "memory_reservation",
            ),
            (
                ContainerOptions {
                    memory_swap: Some(1 << 30),
                    ..Default::default()
                },
                "memory_swap",
            ),
            (
                ContainerOptions {
                    memory: Some(64 << 20),
                    memory_swap: Some(32 << 20),
                    ..Default::default()
                },
                "memory_swap",
            ),
            (
                ContainerOptions {
                    cpus: Some(0.0),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                ContainerOptions {
                    cpus: Some(f64::NAN),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                ContainerOptions {
                    cpus: Some(3.0),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                ContainerOptions {
                    cpu_shares: Some(1),
                    ..Default::default()
                },
                "cpu_shares",
            ),
            (
                ContainerOptions {
                    cpu_shares: Some(300_000),
                    ..Default::default()
                },
                "cpu_shares",
            ),
        ];
        for (o, field) in cases {
            let err = resources(&o, &host()).unwrap_err();
            assert!(
                matches!(err, SpecError::Invalid { field: f, .. } if f == field),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn identity_annotations() {
        let id = Identity {
            container_id: "abc".into(),
            name: "shop-web-1".into(),
            image: "busybox:1.36".into(),
            project: Some("shop".into()),
            service: Some("web".into()),
            replica: Some(1),
            config_hash: Some("sha256:00".into()),
        };
        let a = annotations(&id);
        assert_eq!(a[annotation::PROJECT], "shop");
        assert_eq!(a[annotation::SERVICE], "web");
        assert_eq!(a[annotation::REPLICA], "1");
        assert_eq!(a[annotation::CONFIG_HASH], "sha256:00");
        assert_eq!(a[annotation::IMAGE], "busybox:1.36");
        assert_eq!(a[annotation::NAME], "shop-web-1");
        let a = annotations(&Identity {
            name: "x".into(),
            ..Default::default()
        });
        assert_eq!(a.len(), 2);
    }
}
