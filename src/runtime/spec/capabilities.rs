//! Capabilities with Docker's rules: its default set, `--cap-add`/`--cap-drop` with `ALL`, names
//! with or without `CAP_` in any case, and every capability when privileged. The set goes into
//! bounding, effective and permitted; inheritable and ambient stay empty (Docker ≥ 20.10.14:
//! an inheritable set would survive an exec of a file with inheritable file caps).

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use super::SpecError;

/// Every capability the kernel knows (as of Linux 5.9), with its `CAP_` name, in number order.
pub const ALL_CAPABILITIES: [(&str, Capability); 41] = [
    ("CAP_CHOWN", Capability::Chown),
    ("CAP_DAC_OVERRIDE", Capability::DacOverride),
    ("CAP_DAC_READ_SEARCH", Capability::DacReadSearch),
    ("CAP_FOWNER", Capability::Fowner),
    ("CAP_FSETID", Capability::Fsetid),
    ("CAP_KILL", Capability::Kill),
    ("CAP_SETGID", Capability::Setgid),
    ("CAP_SETUID", Capability::Setuid),
    ("CAP_SETPCAP", Capability::Setpcap),
    ("CAP_LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("CAP_NET_BIND_SERVICE", Capability::NetBindService),
    ("CAP_NET_BROADCAST", Capability::NetBroadcast),
    ("CAP_NET_ADMIN", Capability::NetAdmin),
    ("CAP_NET_RAW", Capability::NetRaw),
    ("CAP_IPC_LOCK", Capability::IpcLock),
    ("CAP_IPC_OWNER", Capability::IpcOwner),
    ("CAP_SYS_MODULE", Capability::SysModule),
    ("CAP_SYS_RAWIO", Capability::SysRawio),
    ("CAP_SYS_CHROOT", Capability::SysChroot),
    ("CAP_SYS_PTRACE", Capability::SysPtrace),
    ("CAP_SYS_PACCT", Capability::SysPacct),
    ("CAP_SYS_ADMIN", Capability::SysAdmin),
    ("CAP_SYS_BOOT", Capability::SysBoot),
    ("CAP_SYS_NICE", Capability::SysNice),
    ("CAP_SYS_RESOURCE", Capability::SysResource),
    ("CAP_SYS_TIME", Capability::SysTime),
    ("CAP_SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("CAP_MKNOD", Capability::Mknod),
    ("CAP_LEASE", Capability::Lease),
    ("CAP_AUDIT_WRITE", Capability::AuditWrite),
    ("CAP_AUDIT_CONTROL", Capability::AuditControl),
    ("CAP_SETFCAP", Capability::Setfcap),
    ("CAP_MAC_OVERRIDE", Capability::MacOverride),
    ("CAP_MAC_ADMIN", Capability::MacAdmin),
    ("CAP_SYSLOG", Capability::Syslog),
    ("CAP_WAKE_ALARM", Capability::WakeAlarm),
    ("CAP_BLOCK_SUSPEND", Capability::BlockSuspend),
    ("CAP_AUDIT_READ", Capability::AuditRead),
    ("CAP_PERFMON", Capability::Perfmon),
    ("CAP_BPF", Capability::Bpf),
    ("CAP_CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// Docker's default set, in the order Docker lists it.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The `CAP_` name of a capability.
pub fn capability_name(cap: Capability) -> &'static str {
    ALL_CAPABILITIES
        .iter()
        .find(|(_, c)| *c == cap)
        .map(|(n, _)| *n)
        .unwrap_or("CAP_UNKNOWN")
}

/// A name with or without `CAP_`, in any case, or `ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CapName {
    All,
    One(Capability),
}

fn parse_name(name: &str) -> Result<CapName, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(CapName::All);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL_CAPABILITIES
        .iter()
        .find(|(n, _)| *n == full)
        .map(|(_, c)| CapName::One(*c))
        .ok_or_else(|| SpecError::UnknownCapability {
            value: name.to_string(),
        })
}

/// Parses one capability name (with or without `CAP_`, any case); `ALL` is refused here.
pub fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    match parse_name(name)? {
        CapName::One(c) => Ok(c),
        CapName::All => Err(SpecError::UnknownCapability {
            value: name.to_string(),
        }),
    }
}

/// Docker's `TweakCapabilities`: privileged gets everything; `--cap-add ALL` gives everything
/// but the drops; `--cap-drop ALL` keeps only the adds; otherwise defaults minus drops plus adds.
/// Every name is checked, also when privileged makes it moot.
/// Restricts `caps` to what the host can grant (`host`: bit N = capability N). Capabilities
/// asked for by name in `add` that the host lacks are an error naming them; the rest (the
/// privileged set, `ALL`) are trimmed silently, as Docker does.
pub fn restrict_to_host(
    caps: Vec<Capability>,
    add: &[String],
    host: Option<u64>,
) -> Result<Vec<Capability>, SpecError> {
    let Some(host) = host else {
        return Ok(caps);
    };
    let has = |c: &Capability| {
        ALL_CAPABILITIES
            .iter()
            .position(|(_, x)| x == c)
            .is_some_and(|bit| bit < 64 && host & (1u64 << bit) != 0)
    };
    for name in add {
        if let CapName::One(c) = parse_name(name)? {
            if !has(&c) {
                return Err(SpecError::invalid(
                    "cap_add",
                    name.clone(),
                    "this host cannot grant it: it is not in dockmaster's permitted \
                     capabilities (the host or its container runtime dropped it)",
                ));
            }
        }
    }
    Ok(caps.into_iter().filter(has).collect())
}

pub fn resolve_capabilities(
    add: &[String],
    drop: &[String],
    privileged: bool,
) -> Result<Vec<Capability>, SpecError> {
    let adds = add
        .iter()
        .map(|n| parse_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    let drops = drop
        .iter()
        .map(|n| parse_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    let all: Vec<Capability> = ALL_CAPABILITIES.iter().map(|(_, c)| *c).collect();
    if privileged {
        return Ok(all);
    }
    let ones = |names: &[CapName]| -> Vec<Capability> {
        names
            .iter()
            .filter_map(|n| match n {
                CapName::One(c) => Some(*c),
                CapName::All => None,
            })
            .collect()
    };
    let (add_caps, drop_caps) = (ones(&adds), ones(&drops));
    let mut caps: Vec<Capability> = if adds.contains(&CapName::All) {
        all.into_iter().filter(|c| !drop_caps.contains(c)).collect()
    } else if drops.contains(&CapName::All) {
        add_caps
    } else {
        DEFAULT_CAPABILITIES
            .into_iter()
            .filter(|c| !drop_caps.contains(c))
            .chain(add_caps)
            .collect()
    };
    let mut seen = HashSet::new();
    caps.retain(|c| seen.insert(*c));
    Ok(caps)
}

/// The spec's capability sets for the resolved list.
pub fn linux_capabilities(caps: &[Capability]) -> Result<LinuxCapabilities, SpecError> {
    let set: HashSet<Capability> = caps.iter().copied().collect();
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn all_capabilities_have_distinct_names_and_values() {
        let names: HashSet<_> = ALL_CAPABILITIES.iter().map(|(n, _)| *n).collect();
        let caps: HashSet<_> = ALL_CAPABILITIES.iter().map(|(_, c)| *c).collect();
        assert_eq!(names.len(), 41);
        assert_eq!(caps.len(), 41);
        // Our names agree with oci-spec's serialization.
        for (name, cap) in ALL_CAPABILITIES {
            assert_eq!(serde_json::to_string(&cap).unwrap(), format!("\"{name}\""));
        }
    }

    #[test]
    fn default_set_is_dockers() {
        let caps = resolve_capabilities(&[], &[], false).unwrap();
        let names: Vec<_> = caps.iter().map(|c| capability_name(*c)).collect();
        assert_eq!(
            names,
            [
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FSETID",
                "CAP_FOWNER",
                "CAP_MKNOD",
                "CAP_NET_RAW",
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_SETFCAP",
                "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT",
                "CAP_KILL",
                "CAP_AUDIT_WRITE"
            ]
        );
    }

    #[test]
    fn add_and_drop_with_or_without_prefix_any_case() {
        let caps = resolve_capabilities(
            &s(&["sys_admin", "CAP_NET_ADMIN"]),
            &s(&["net_raw", "Cap_Kill"]),
            false,
        )
        .unwrap();
        assert!(caps.contains(&Capability::SysAdmin));
        assert!(caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::NetRaw));
        assert!(!caps.contains(&Capability::Kill));
        assert!(caps.contains(&Capability::Chown));
        assert_eq!(caps.len(), 14);
    }

    #[test]
    fn adding_a_default_does_not_duplicate() {
        let caps = resolve_capabilities(&s(&["CHOWN"]), &[], false).unwrap();
        assert_eq!(caps.len(), 14);
    }

    #[test]
    fn drop_all_keeps_only_adds() {
        let caps = resolve_capabilities(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"]), false).unwrap();
        assert_eq!(caps, vec![Capability::NetBindService]);
        let caps = resolve_capabilities(&[], &s(&["all"]), false).unwrap();
        assert!(caps.is_empty());
    }

    #[test]
    fn add_all_gives_all_but_drops() {
        let caps = resolve_capabilities(&s(&["ALL"]), &s(&["SYS_ADMIN"]), false).unwrap();
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&Capability::SysAdmin));
        assert!(caps.contains(&Capability::SysModule));
    }

    #[test]
    fn privileged_gets_everything_regardless_of_drops() {
        let caps = resolve_capabilities(&[], &s(&["ALL"]), true).unwrap();
        assert_eq!(caps.len(), 41);
    }

    #[test]
    fn unknown_names_are_refused_by_name() {
        for (add, drop) in [(s(&["CAP_FLY"]), vec![]), (vec![], s(&["teleport"]))] {
            let err = resolve_capabilities(&add, &drop, false).unwrap_err();
            let name = add.first().or(drop.first()).unwrap();
            assert!(matches!(&err, SpecError::UnknownCapability { value } if value == name));
            assert!(err.to_string().contains(name.as_str()));
        }
        // Even when privileged would ignore it.
        assert!(resolve_capabilities(&s(&["nope"]), &[], true).is_err());
        assert!(parse_capability("ALL").is_err());
        assert_eq!(parse_capability("sys_time").unwrap(), Capability::SysTime);
    }

    #[test]
    fn sets_are_filled_like_docker() {
        let caps = resolve_capabilities(&[], &[], false).unwrap();
        let lc = linux_capabilities(&caps).unwrap();
        let expected: HashSet<_> = caps.iter().copied().collect();
        assert_eq!(lc.bounding().as_ref().unwrap(), &expected);
        assert_eq!(lc.effective().as_ref().unwrap(), &expected);
        assert_eq!(lc.permitted().as_ref().unwrap(), &expected);
        assert!(lc.inheritable().as_ref().unwrap().is_empty());
        assert!(lc.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn capabilities_the_host_lacks() {
        // A host without CAP_SYS_RESOURCE (bit 24), like this test machine.
        let host = Some(((1u64 << 41) - 1) & !(1 << 24));
        let privileged = resolve_capabilities(&[], &[], true).unwrap();
        let trimmed = restrict_to_host(privileged.clone(), &[], host).unwrap();
        assert_eq!(trimmed.len(), privileged.len() - 1);
        assert!(!trimmed.contains(&Capability::SysResource));
        let err = restrict_to_host(privileged, &s(&["SYS_RESOURCE"]), host).unwrap_err();
        assert!(err.to_string().contains("SYS_RESOURCE"), "{err}");
        // ALL is trimmed silently; unknown host keeps everything.
        assert!(
            restrict_to_host(vec![Capability::SysResource], &s(&["ALL"]), host)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            restrict_to_host(vec![Capability::SysResource], &[], None).unwrap(),
            vec![Capability::SysResource]
        );
    }
}
