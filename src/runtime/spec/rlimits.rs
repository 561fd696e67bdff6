//! Resource limits (`--ulimit`): Docker sets none of its own, so the container inherits the
//! shim's limits unless the user asks. A requested hard limit above the host's hard limit can
//! only be set with CAP_SYS_RESOURCE; without it the runtime would fail obscurely at start, so
//! the builder refuses it here and says which limit the host has.

use std::collections::BTreeMap;
use std::fmt;

use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};

use super::SpecError;

/// `RLIM_INFINITY`: an unlimited soft or hard limit.
pub const UNLIMITED: u64 = u64::MAX;

/// One `RLIMIT_*` resource, named as Docker's `--ulimit` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RlimitKind {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl RlimitKind {
    pub const ALL: [RlimitKind; 16] = [
        RlimitKind::As,
        RlimitKind::Core,
        RlimitKind::Cpu,
        RlimitKind::Data,
        RlimitKind::Fsize,
        RlimitKind::Locks,
        RlimitKind::Memlock,
        RlimitKind::Msgqueue,
        RlimitKind::Nice,
        RlimitKind::Nofile,
        RlimitKind::Nproc,
        RlimitKind::Rss,
        RlimitKind::Rtprio,
        RlimitKind::Rttime,
        RlimitKind::Sigpending,
        RlimitKind::Stack,
    ];

    /// Docker's name (`nofile`, `nproc`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RlimitKind::As => "as",
            RlimitKind::Core => "core",
            RlimitKind::Cpu => "cpu",
            RlimitKind::Data => "data",
            RlimitKind::Fsize => "fsize",
            RlimitKind::Locks => "locks",
            RlimitKind::Memlock => "memlock",
            RlimitKind::Msgqueue => "msgqueue",
            RlimitKind::Nice => "nice",
            RlimitKind::Nofile => "nofile",
            RlimitKind::Nproc => "nproc",
            RlimitKind::Rss => "rss",
            RlimitKind::Rtprio => "rtprio",
            RlimitKind::Rttime => "rttime",
            RlimitKind::Sigpending => "sigpending",
            RlimitKind::Stack => "stack",
        }
    }

    /// Accepts Docker's names and the `RLIMIT_` forms, case-insensitively.
    pub fn from_name(name: &str) -> Option<RlimitKind> {
        let lower = name.to_ascii_lowercase();
        let short = lower.strip_prefix("rlimit_").unwrap_or(&lower);
        RlimitKind::ALL.into_iter().find(|k| k.name() == short)
    }

    pub fn to_oci(self) -> PosixRlimitType {
        match self {
            RlimitKind::As => PosixRlimitType::RlimitAs,
            RlimitKind::Core => PosixRlimitType::RlimitCore,
            RlimitKind::Cpu => PosixRlimitType::RlimitCpu,
            RlimitKind::Data => PosixRlimitType::RlimitData,
            RlimitKind::Fsize => PosixRlimitType::RlimitFsize,
            RlimitKind::Locks => PosixRlimitType::RlimitLocks,
            RlimitKind::Memlock => PosixRlimitType::RlimitMemlock,
            RlimitKind::Msgqueue => PosixRlimitType::RlimitMsgqueue,
            RlimitKind::Nice => PosixRlimitType::RlimitNice,
            RlimitKind::Nofile => PosixRlimitType::RlimitNofile,
            RlimitKind::Nproc => PosixRlimitType::RlimitNproc,
            RlimitKind::Rss => PosixRlimitType::RlimitRss,
            RlimitKind::Rtprio => PosixRlimitType::RlimitRtprio,
            RlimitKind::Rttime => PosixRlimitType::RlimitRttime,
            RlimitKind::Sigpending => PosixRlimitType::RlimitSigpending,
            RlimitKind::Stack => PosixRlimitType::RlimitStack,
        }
    }

    fn to_rustix(self) -> rustix::process::Resource {
        use rustix::process::Resource;
        match self {
            RlimitKind::As => Resource::As,
            RlimitKind::Core => Resource::Core,
            RlimitKind::Cpu => Resource::Cpu,
            RlimitKind::Data => Resource::Data,
            RlimitKind::Fsize => Resource::Fsize,
            RlimitKind::Locks => Resource::Locks,
            RlimitKind::Memlock => Resource::Memlock,
            RlimitKind::Msgqueue => Resource::Msgqueue,
            RlimitKind::Nice => Resource::Nice,
            RlimitKind::Nofile => Resource::Nofile,
            RlimitKind::Nproc => Resource::Nproc,
            RlimitKind::Rss => Resource::Rss,
            RlimitKind::Rtprio => Resource::Rtprio,
            RlimitKind::Rttime => Resource::Rttime,
            RlimitKind::Sigpending => Resource::Sigpending,
            RlimitKind::Stack => Resource::Stack,
        }
    }
}

impl fmt::Display for RlimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One requested limit; [`UNLIMITED`] stands for `unlimited` / `-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    pub kind: RlimitKind,
    pub soft: u64,
    pub hard: u64,
}

impl Ulimit {
    /// Docker's `NAME=SOFT[:HARD]` form (`nofile=1024:2048`, `core=-1`, `nproc=unlimited`).
    pub fn parse(spec: &str) -> Result<Ulimit, SpecError> {
        let bad = |reason: &str| SpecError::invalid("ulimit", spec, reason);
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD]"))?;
        let kind = RlimitKind::from_name(name).ok_or_else(|| bad("unknown limit name"))?;
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (s, h),
            None => (values, values),
        };
        let soft = parse_limit(soft).ok_or_else(|| bad("the soft limit is not a number"))?;
        let hard = parse_limit(hard).ok_or_else(|| bad("the hard limit is not a number"))?;
        Ok(Ulimit { kind, soft, hard })
    }
}

fn parse_limit(s: &str) -> Option<u64> {
    match s {
        "-1" | "unlimited" | "infinity" => Some(UNLIMITED),
        _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

fn show(v: u64) -> String {
    if v == UNLIMITED {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

/// What the host allows: hard rlimits, whether they can be raised, and how many CPUs there are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostLimits {
    /// Finite hard limits; a resource missing here is unlimited.
    pub hard: BTreeMap<RlimitKind, u64>,
    /// CAP_SYS_RESOURCE in the effective set: hard limits may be raised.
    pub can_raise: bool,
    /// CPUs available to this process (upper bound for `--cpus`), when known.
    pub cpus: Option<u32>,
    /// Capabilities this process may grant (its permitted set, bit N = capability N); `None`
    /// when unknown (then nothing is restricted).
    pub capabilities: Option<u64>,
}

impl HostLimits {
    /// The limits of the calling process (`getrlimit`, `capget`, the CPU affinity mask).
    pub fn current() -> HostLimits {
        let hard = RlimitKind::ALL
            .into_iter()
            .filter_map(|k| {
                let limit = rustix::process::getrlimit(k.to_rustix());
                limit.maximum.map(|max| (k, max))
            })
            .collect();
        let sets = rustix::thread::capabilities(None).ok();
        let can_raise = sets.is_some_and(|sets| {
            sets.effective
                .contains(rustix::thread::CapabilitySet::SYS_RESOURCE)
        });
        let capabilities = sets.map(|sets| sets.permitted.bits());
        let cpus = std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok());
        HostLimits {
            hard,
            can_raise,
            cpus,
            capabilities,
        }
    }

    /// The host's hard limit for `kind`, [`UNLIMITED`] when none.
    pub fn hard_limit(&self, kind: RlimitKind) -> u64 {
        self.hard.get(&kind).copied().unwrap_or(UNLIMITED)
    }
}

/// Checks the requested limits and turns them into the spec's `process.rlimits`; a later entry
/// for the same resource replaces an earlier one (as Docker's map does).
pub fn build_rlimits(ulimits: &[Ulimit], host: &HostLimits) -> Result<Vec<PosixRlimit>, SpecError> {
    let mut chosen: Vec<Ulimit> = Vec::new();
    for u in ulimits {
        match chosen.iter_mut().find(|c| c.kind == u.kind) {
            Some(existing) => *existing = *u,
            None => chosen.push(*u),
        }
    }
    let mut out = Vec::with_capacity(chosen.len());
    for u in chosen {
        if u.soft > u.hard {
            return Err(SpecError::invalid(
                "ulimit",
                format!("{}={}:{}", u.kind, show(u.soft), show(u.hard)),
                "the soft limit is above the hard limit",
            ));
        }
        let host_hard = host.hard_limit(u.kind);
        if u.hard > host_hard && !host.can_raise {
            return Err(SpecError::UlimitAboveHost {
                name: u.kind.name(),
                requested: show(u.hard),
                host: host_hard,
            });
        }
        out.push(
            PosixRlimitBuilder::default()
                .typ(u.kind.to_oci())
                .soft(u.soft)
                .hard(u.hard)
                .build()?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(nofile: u64, can_raise: bool) -> HostLimits {
        HostLimits {
            capabilities: None,
            hard: BTreeMap::from([(RlimitKind::Nofile, nofile)]),
            can_raise,
            cpus: Some(2),
        }
    }

    #[test]
    fn parses_docker_forms() {
        assert_eq!(
            Ulimit::parse("nofile=1024:2048").unwrap(),
            Ulimit {
                kind: RlimitKind::Nofile,
                soft: 1024,
                hard: 2048
            }
        );
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!(
            (u.kind, u.soft, u.hard),
            (RlimitKind::Core, UNLIMITED, UNLIMITED)
        );
        let u = Ulimit::parse("RLIMIT_NPROC=512").unwrap();
        assert_eq!((u.kind, u.soft, u.hard), (RlimitKind::Nproc, 512, 512));
        for bad in [
            "nofile",
            "files=1",
            "nofile=abc",
            "nofile=1:x",
            "nofile=",
            "nofile=-5",
        ] {
            let err = Ulimit::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn no_limits_by_default() {
        assert!(build_rlimits(&[], &host(20000, false)).unwrap().is_empty());
    }

    #[test]
    fn within_the_host_limit_is_kept() {
        let r = build_rlimits(
            &[Ulimit::parse("nofile=1024:20000").unwrap()],
            &host(20000, false),
        )
        .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!((r[0].soft(), r[0].hard()), (1024, 20000));
    }

    #[test]
    fn above_the_host_limit_is_refused_and_says_why() {
        let err = build_rlimits(
            &[Ulimit::parse("nofile=65536").unwrap()],
            &host(20000, false),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("nofile"), "{msg}");
        assert!(msg.contains("65536"), "{msg}");
        assert!(msg.contains("20000"), "{msg}");
        assert!(msg.contains("CAP_SYS_RESOURCE"), "{msg}");
        // Unlimited against a finite host limit is above it too.
        let err =
            build_rlimits(&[Ulimit::parse("nofile=-1").unwrap()], &host(20000, false)).unwrap_err();
        assert!(err.to_string().contains("unlimited"), "{err}");
    }

    #[test]
    fn above_the_host_limit_is_allowed_with_cap_sys_resource() {
        let r = build_rlimits(
            &[Ulimit::parse("nofile=65536").unwrap()],
            &host(20000, true),
        )
        .unwrap();
        assert_eq!(r[0].hard(), 65536);
    }

    #[test]
    fn unlisted_host_resources_are_unlimited() {
        let r = build_rlimits(&[Ulimit::parse("core=-1").unwrap()], &host(20000, false)).unwrap();
        assert_eq!(r[0].hard(), UNLIMITED);
    }

    #[test]
    fn soft_above_hard_is_refused() {
        let err = build_rlimits(
            &[Ulimit::parse("nofile=2048:1024").unwrap()],
            &host(20000, false),
        )
        .unwrap_err();
        assert!(err.to_string().contains("soft limit is above"), "{err}");
    }

    #[test]
    fn later_entry_for_the_same_resource_wins() {
        let r = build_rlimits(
            &[
                Ulimit::parse("nofile=100").unwrap(),
                Ulimit::parse("nproc=50").unwrap(),
                Ulimit::parse("nofile=200").unwrap(),
            ],
            &host(20000, false),
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].typ(), r[0].soft()),
            (PosixRlimitType::RlimitNofile, 200)
        );
        assert_eq!(r[1].typ(), PosixRlimitType::RlimitNproc);
    }

    #[test]
    fn current_reads_this_process() {
        let h = HostLimits::current();
        let mut expected = libc_hard_nofile();
        if expected == u64::MAX {
            expected = UNLIMITED;
        }
        assert_eq!(h.hard_limit(RlimitKind::Nofile), expected);
        assert!(h.cpus.unwrap_or(1) >= 1);
    }

    /// The nofile hard limit as /proc/self/limits reports it, independent of rustix.
    fn libc_hard_nofile() -> u64 {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let hard = line.split_whitespace().nth(4).unwrap();
        if hard == "unlimited" {
            UNLIMITED
        } else {
            hard.parse().unwrap()
        }
    }
}
