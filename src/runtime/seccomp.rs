//! Seccomp filters compiled once per profile and loaded by the container's init right before
//! it execs the workload.
//!
//! libcontainer compiles the spec's profile with libseccomp inside every container's init;
//! for Docker's profile on x86_64 (three architectures) that alone is ~10 ms of a ~45 ms
//! start. The shim instead compiles a profile once, caches the BPF program under
//! `<root>/seccomp/<sha256 of the profile>.bpf`, hands libcontainer a spec without
//! `linux.seccomp`, and loads the cached program from libcontainer's [`Executor`] hook.
//!
//! Loading a filter without no_new_privs needs CAP_SYS_ADMIN, which libcontainer has already
//! dropped when the hook runs (it loads its own filter before dropping capabilities). So the
//! engine's spec also keeps CAP_SYS_ADMIN and CAP_SETPCAP in the bounding and permitted sets
//! when the container lacks them; the hook raises them, drops them from the bounding set,
//! loads the filter, sets the container's exact effective, permitted and inheritable sets,
//! and reads everything back before exec: a mismatch fails the start instead of running a
//! container with a capability it was not given.

use std::collections::HashSet;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use libcontainer::capabilities::CapabilityExt;
use libcontainer::workload::{
    default::DefaultExecutor, Executor, ExecutorError, ExecutorSetEnvsError,
    ExecutorValidationError,
};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, Capability, LinuxCapabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, Process, Spec,
};
use sha2::{Digest, Sha256};

use crate::error::{Categorized, Category};

/// `struct sock_filter` is 8 bytes; the kernel accepts at most BPF_MAXINSNS (4096) of them.
const SOCK_FILTER_LEN: usize = 8;
const BPF_MAXINSNS: usize = 4096;

/// The capabilities loading a filter (CAP_SYS_ADMIN) and dropping them from the bounding set
/// afterwards (CAP_SETPCAP) need.
const LOADER_CAPS: [Capability; 2] = [Capability::SysAdmin, Capability::Setpcap];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("compile the seccomp profile: {what}: {message}")]
    Compile { what: String, message: String },
    #[error("seccomp filter cache {}: {source}", path.display())]
    Cache { path: PathBuf, source: io::Error },
    #[error("cached seccomp program {} is malformed ({len} bytes)", path.display())]
    Malformed { path: PathBuf, len: usize },
}

impl Categorized for SeccompError {
    fn category(&self) -> Category {
        match self {
            SeccompError::Compile { .. } => Category::Invalid,
            SeccompError::Cache { .. } | SeccompError::Malformed { .. } => Category::Internal,
        }
    }
}

/// A profile compiled to a classic BPF program, ready for seccomp(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    /// `struct sock_filter` array in native byte order, as libseccomp exports it.
    pub program: Vec<u8>,
    /// SECCOMP_FILTER_FLAG_* from the profile's flags.
    pub flags: u32,
}

/// Whether a profile can be compiled ahead: notify actions need a listener fd handed to a
/// supervisor at load time, which only libcontainer's own path does.
pub fn cacheable(profile: &LinuxSeccomp) -> bool {
    profile.default_action() != LinuxSeccompAction::ScmpActNotify
        && profile.listener_path().is_none()
        && !profile
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
}

/// Hex sha256 of the profile's JSON: the cache key.
pub fn profile_hash(profile: &LinuxSeccomp) -> String {
    let json = serde_json::to_vec(profile).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

fn flag_bits(profile: &LinuxSeccomp) -> u32 {
    profile.flags().iter().flatten().fold(0, |bits, flag| {
        bits | match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 32,
        }
    })
}

/// The cached program for `profile`, compiled and stored on first use.
pub fn cached(dir: &Path, profile: &LinuxSeccomp) -> Result<CompiledFilter, SeccompError> {
    let hash = profile_hash(profile);
    let path = dir.join(format!("{hash}.bpf"));
    let flags = flag_bits(profile);
    match std::fs::read(&path) {
        Ok(program) => {
            check_program(&path, &program)?;
            return Ok(CompiledFilter { program, flags });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(SeccompError::Cache { path, source }),
    }
    let program = compile(profile)?;
    check_program(&path, &program)?;
    let cache_err = |source| SeccompError::Cache {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(cache_err)?;
    // A lost cache file is recompiled, so no fsync; the rename keeps readers from torn files.
    let tmp = dir.join(format!(".{}.{hash}", std::process::id()));
    std::fs::write(&tmp, &program).map_err(cache_err)?;
    std::fs::rename(&tmp, &path).map_err(cache_err)?;
    Ok(CompiledFilter { program, flags })
}

fn check_program(path: &Path, program: &[u8]) -> Result<(), SeccompError> {
    let len = program.len();
    if len == 0 || len % SOCK_FILTER_LEN != 0 || len / SOCK_FILTER_LEN > BPF_MAXINSNS {
        return Err(SeccompError::Malformed {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

fn translate_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn translate_action(action: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.clamp(0, u16::MAX as i32) as u16)
        }
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
    }
}

fn translate_op(op: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

/// Compiles `profile` the way libcontainer (and runc) would load it: same action and
/// operator translation, rules equal to the default action skipped, unknown syscall names
/// skipped, several conditions on one argument added as separate rules, no_new_privs left
/// alone.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>, SeccompError> {
    let fail = |what: String| {
        move |e: libseccomp::error::SeccompError| SeccompError::Compile {
            what,
            message: e.to_string(),
        }
    };
    let default_action = translate_action(profile.default_action(), profile.default_errno_ret());
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(fail("create the filter".into()))?;
    for &arch in profile.architectures().iter().flatten() {
        ctx.add_arch(translate_arch(arch))
            .map_err(fail(format!("add architecture {arch:?}")))?;
    }
    ctx.set_ctl_nnp(false)
        .map_err(fail("leave no_new_privs alone".into()))?;
    for rule in profile.syscalls().iter().flatten() {
        let action = translate_action(rule.action(), rule.errno_ret());
        if action == default_action {
            continue;
        }
        for name in rule.names() {
            // A name this libseccomp does not know is a syscall the kernel lacks too.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let what = || format!("add the rule for {name}");
            match rule.args() {
                None => {
                    ctx.add_rule(action, syscall).map_err(fail(what()))?;
                }
                Some(args) => {
                    let comparators: Vec<ScmpArgCompare> = args
                        .iter()
                        .map(|a| {
                            ScmpArgCompare::new(
                                a.index() as u32,
                                translate_op(a.op(), a.value_two()),
                                a.value(),
                            )
                        })
                        .collect();
                    let mut seen = HashSet::new();
                    let duplicate = args.iter().any(|a| !seen.insert(a.index()));
                    if duplicate {
                        for c in &comparators {
                            ctx.add_rule_conditional(action, syscall, std::slice::from_ref(c))
                                .map_err(fail(what()))?;
                        }
                    } else {
                        ctx.add_rule_conditional(action, syscall, &comparators)
                            .map_err(fail(what()))?;
                    }
                }
            }
        }
    }
    let mut file = tempfile_in_memory().map_err(|e| SeccompError::Compile {
        what: "create a memfd for the program".into(),
        message: e.to_string(),
    })?;
    ctx.export_bpf(&file)
        .map_err(fail("export the program".into()))?;
    let mut program = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut program))
        .map_err(|e| SeccompError::Compile {
            what: "read the exported program".into(),
            message: e.to_string(),
        })?;
    Ok(program)
}

fn tempfile_in_memory() -> io::Result<std::fs::File> {
    let fd = rustix::fs::memfd_create("dockmaster-seccomp", rustix::fs::MemfdFlags::CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// The capability sets the container must end up with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapSets {
    pub bounding: HashSet<Capability>,
    pub effective: HashSet<Capability>,
    pub permitted: HashSet<Capability>,
    pub inheritable: HashSet<Capability>,
}

impl CapSets {
    pub fn of(caps: Option<&LinuxCapabilities>) -> CapSets {
        let set = |s: Option<&HashSet<Capability>>| s.cloned().unwrap_or_default();
        CapSets {
            bounding: set(caps.and_then(|c| c.bounding().as_ref())),
            effective: set(caps.and_then(|c| c.effective().as_ref())),
            permitted: set(caps.and_then(|c| c.permitted().as_ref())),
            inheritable: set(caps.and_then(|c| c.inheritable().as_ref())),
        }
    }
}

/// What the container's init does right before exec: the program, the capabilities it
/// borrows to load it, and the sets it must leave behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterLoad {
    pub filter: CompiledFilter,
    pub target: CapSets,
    /// Borrowed into the bounding set only for loading (dropped again before exec).
    pub borrowed_bounding: Vec<Capability>,
}

/// The process libcontainer should set up: the container's own, plus the loader's
/// capabilities in the bounding and permitted sets.
pub fn engine_process(process: &Process) -> (Process, CapSets, Vec<Capability>) {
    let target = CapSets::of(process.capabilities().as_ref());
    let borrowed_bounding: Vec<Capability> = LOADER_CAPS
        .iter()
        .copied()
        .filter(|c| !target.bounding.contains(c))
        .collect();
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let mut bounding = target.bounding.clone();
    let mut permitted = target.permitted.clone();
    bounding.extend(LOADER_CAPS);
    permitted.extend(LOADER_CAPS);
    caps.set_bounding(Some(bounding))
        .set_permitted(Some(permitted));
    // libcontainer writes every set it is given; missing ones must stay empty, not default.
    if caps.effective().is_none() {
        caps.set_effective(Some(HashSet::new()));
    }
    if caps.inheritable().is_none() {
        caps.set_inheritable(Some(HashSet::new()));
    }
    let mut engine = process.clone();
    engine.set_capabilities(Some(caps));
    (engine, target, borrowed_bounding)
}

/// Splits a container's spec into the one libcontainer gets (no `linux.seccomp`, loader
/// capabilities added) and what the hook must do, when the profile can be cached. `None`
/// when the spec has no profile or one that only libcontainer can load.
pub fn engine_spec(
    spec: &Spec,
    cache_dir: &Path,
) -> Result<Option<(Spec, FilterLoad)>, SeccompError> {
    let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let Some(process) = spec.process().as_ref() else {
        return Ok(None);
    };
    if !cacheable(profile) {
        return Ok(None);
    }
    let filter = cached(cache_dir, profile)?;
    let (engine_process, target, borrowed_bounding) = engine_process(process);
    let mut engine = spec.clone();
    if let Some(linux) = engine.linux_mut() {
        linux.set_seccomp(None);
    }
    engine.set_process(Some(engine_process));
    Ok(Some((
        engine,
        FilterLoad {
            filter,
            target,
            borrowed_bounding,
        },
    )))
}

/// The syscalls the hook makes: one seam, so the order is unit-tested with a recording fake.
pub trait FilterSyscalls {
    fn raise_effective(&mut self, cap: Capability) -> io::Result<()>;
    fn drop_bounding(&mut self, cap: Capability) -> io::Result<()>;
    fn load_filter(&mut self, filter: &CompiledFilter) -> io::Result<()>;
    /// Sets effective, then permitted, then inheritable.
    fn set_sets(&mut self, target: &CapSets) -> io::Result<()>;
    /// The current sets, read back.
    fn read_sets(&mut self) -> io::Result<CapSets>;
}

/// Loads the filter and leaves exactly `load.target` behind (see the module docs).
pub fn install(load: &FilterLoad, sys: &mut dyn FilterSyscalls) -> io::Result<()> {
    for cap in LOADER_CAPS {
        sys.raise_effective(cap)?;
    }
    for &cap in &load.borrowed_bounding {
        sys.drop_bounding(cap)?;
    }
    sys.load_filter(&load.filter)?;
    sys.set_sets(&load.target)?;
    let now = sys.read_sets()?;
    // The bounding set may be smaller than asked where the host lacks a capability; it must
    // never be larger.
    let sets_match = now.effective == load.target.effective
        && now.permitted == load.target.permitted
        && now.inheritable == load.target.inheritable
        && now.bounding.is_subset(&load.target.bounding);
    if !sets_match {
        return Err(io::Error::other(format!(
            "capabilities after loading the seccomp filter differ from the container's: \
             have {now:?}, want {:?}",
            load.target
        )));
    }
    Ok(())
}

/// The real syscalls, for the calling thread.
pub struct ThreadSyscalls;

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

fn to_caps(set: &HashSet<Capability>) -> caps::CapsHashSet {
    set.iter().map(|c| c.to_cap()).collect()
}

impl FilterSyscalls for ThreadSyscalls {
    fn raise_effective(&mut self, cap: Capability) -> io::Result<()> {
        caps::raise(None, caps::CapSet::Effective, cap.to_cap()).map_err(caps_err)
    }

    fn drop_bounding(&mut self, cap: Capability) -> io::Result<()> {
        caps::drop(None, caps::CapSet::Bounding, cap.to_cap()).map_err(caps_err)
    }

    fn load_filter(&mut self, filter: &CompiledFilter) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: (filter.program.len() / SOCK_FILTER_LEN) as u16,
            filter: filter.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `len` whole sock_filter records (checked when the program
        // was read or compiled) that outlive the call; the kernel copies them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                filter.flags as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_sets(&mut self, target: &CapSets) -> io::Result<()> {
        caps::set(None, caps::CapSet::Effective, &to_caps(&target.effective)).map_err(caps_err)?;
        caps::set(None, caps::CapSet::Permitted, &to_caps(&target.permitted)).map_err(caps_err)?;
        caps::set(
            None,
            caps::CapSet::Inheritable,
            &to_caps(&target.inheritable),
        )
        .map_err(caps_err)
    }

    fn read_sets(&mut self) -> io::Result<CapSets> {
        let read = |set| -> io::Result<HashSet<Capability>> {
            let have = caps::read(None, set).map_err(caps_err)?;
            Ok(crate::runtime::spec::capabilities::ALL_CAPABILITIES
                .iter()
                .map(|(_, c)| *c)
                .filter(|c| have.contains(&c.to_cap()))
                .collect())
        };
        Ok(CapSets {
            bounding: read(caps::CapSet::Bounding)?,
            effective: read(caps::CapSet::Effective)?,
            permitted: read(caps::CapSet::Permitted)?,
            inheritable: read(caps::CapSet::Inheritable)?,
        })
    }
}

/// libcontainer's default executor with the cached filter loaded right before exec.
#[derive(Clone)]
pub struct FilterExecutor {
    pub load: FilterLoad,
}

impl Executor for FilterExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        install(&self.load, &mut ThreadSyscalls)
            .map_err(|e| ExecutorError::Other(format!("seccomp: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(
        &self,
        envs: std::collections::HashMap<String, String>,
    ) -> Result<(), ExecutorSetEnvsError> {
        DefaultExecutor {}.setup_envs(envs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::capabilities::DEFAULT_CAPABILITIES;
    use crate::runtime::spec::seccomp::{default_profile, SeccompArch};
    use oci_spec::runtime::{LinuxCapabilitiesBuilder, ProcessBuilder};

    fn process(caps: &[Capability]) -> Process {
        let set: HashSet<Capability> = caps.iter().copied().collect();
        ProcessBuilder::default()
            .args(vec!["/bin/true".to_string()])
            .capabilities(
                LinuxCapabilitiesBuilder::default()
                    .bounding(set.clone())
                    .effective(set.clone())
                    .permitted(set.clone())
                    .inheritable(HashSet::new())
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    /// Records calls and models the kernel's capability sets.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        sets: CapSets,
        filter_loaded_with: Option<HashSet<Capability>>,
    }

    impl FilterSyscalls for Recorder {
        fn raise_effective(&mut self, cap: Capability) -> io::Result<()> {
            self.calls.push(format!("raise {cap}"));
            if !self.sets.permitted.contains(&cap) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.sets.effective.insert(cap);
            Ok(())
        }
        fn drop_bounding(&mut self, cap: Capability) -> io::Result<()> {
            self.calls.push(format!("drop-bounding {cap}"));
            if !self.sets.effective.contains(&Capability::Setpcap) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.sets.bounding.remove(&cap);
            Ok(())
        }
        fn load_filter(&mut self, _: &CompiledFilter) -> io::Result<()> {
            self.calls.push("load".into());
            if !self.sets.effective.contains(&Capability::SysAdmin) {
                return Err(io::Error::from_raw_os_error(libc::EACCES));
            }
            self.filter_loaded_with = Some(self.sets.effective.clone());
            Ok(())
        }
        fn set_sets(&mut self, target: &CapSets) -> io::Result<()> {
            self.calls.push("set".into());
            self.sets.effective = target.effective.clone();
            self.sets.permitted = target.permitted.clone();
            self.sets.inheritable = target.inheritable.clone();
            Ok(())
        }
        fn read_sets(&mut self) -> io::Result<CapSets> {
            Ok(self.sets.clone())
        }
    }

    fn load_for(caps: &[Capability]) -> (FilterLoad, CapSets) {
        let (engine, target, borrowed_bounding) = engine_process(&process(caps));
        let after_libcontainer = CapSets::of(engine.capabilities().as_ref());
        let load = FilterLoad {
            filter: CompiledFilter {
                program: vec![0; 8],
                flags: 0,
            },
            target,
            borrowed_bounding,
        };
        (load, after_libcontainer)
    }

    #[test]
    fn default_caps_borrow_sys_admin_and_setpcap_only_while_loading() {
        let (load, start) = load_for(&DEFAULT_CAPABILITIES);
        assert!(start.bounding.contains(&Capability::SysAdmin));
        assert!(start.permitted.contains(&Capability::SysAdmin));
        assert!(!start.effective.contains(&Capability::SysAdmin));
        // Docker's default set has CAP_SETPCAP: only CAP_SYS_ADMIN is borrowed.
        assert_eq!(load.borrowed_bounding, vec![Capability::SysAdmin]);
        let mut sys = Recorder {
            sets: start,
            ..Default::default()
        };
        install(&load, &mut sys).unwrap();
        assert_eq!(
            sys.calls,
            [
                "raise SYS_ADMIN",
                "raise SETPCAP",
                "drop-bounding SYS_ADMIN",
                "load",
                "set"
            ]
        );
        assert!(sys
            .filter_loaded_with
            .unwrap()
            .contains(&Capability::SysAdmin));
        assert_eq!(sys.sets.effective, load.target.effective);
        assert_eq!(sys.sets.permitted, load.target.permitted);
        assert_eq!(sys.sets.bounding, load.target.bounding);
    }

    #[test]
    fn no_capabilities_at_all_end_with_none() {
        let (load, start) = load_for(&[]);
        assert_eq!(
            load.borrowed_bounding,
            vec![Capability::SysAdmin, Capability::Setpcap]
        );
        let mut sys = Recorder {
            sets: start,
            ..Default::default()
        };
        install(&load, &mut sys).unwrap();
        assert!(sys.sets.bounding.is_empty());
        assert!(sys.sets.effective.is_empty() && sys.sets.permitted.is_empty());
    }

    #[test]
    fn a_capability_left_behind_fails_the_start() {
        struct Leaky(Recorder);
        impl FilterSyscalls for Leaky {
            fn raise_effective(&mut self, cap: Capability) -> io::Result<()> {
                self.0.raise_effective(cap)
            }
            fn drop_bounding(&mut self, _: Capability) -> io::Result<()> {
                Ok(()) // silently does nothing
            }
            fn load_filter(&mut self, f: &CompiledFilter) -> io::Result<()> {
                self.0.load_filter(f)
            }
            fn set_sets(&mut self, t: &CapSets) -> io::Result<()> {
                self.0.set_sets(t)
            }
            fn read_sets(&mut self) -> io::Result<CapSets> {
                self.0.read_sets()
            }
        }
        let (load, start) = load_for(&DEFAULT_CAPABILITIES);
        let mut sys = Leaky(Recorder {
            sets: start,
            ..Default::default()
        });
        let err = install(&load, &mut sys).unwrap_err();
        assert!(err.to_string().contains("differ"), "{err}");
    }

    #[test]
    fn docker_profile_compiles_once_and_is_read_from_the_cache() {
        let profile = default_profile(SeccompArch::native(), &DEFAULT_CAPABILITIES).unwrap();
        assert!(cacheable(&profile));
        let dir = tempfile::tempdir().unwrap();
        let first = cached(dir.path(), &profile).unwrap();
        assert_eq!(first.program.len() % SOCK_FILTER_LEN, 0);
        assert!(first.program.len() / SOCK_FILTER_LEN > 100);
        let file = dir.path().join(format!("{}.bpf", profile_hash(&profile)));
        assert_eq!(std::fs::read(&file).unwrap(), first.program);
        // A second call reads the file: prove it by planting a different valid program.
        std::fs::write(&file, [7u8; 16]).unwrap();
        assert_eq!(cached(dir.path(), &profile).unwrap().program, vec![7u8; 16]);
        std::fs::write(&file, [7u8; 13]).unwrap();
        assert!(matches!(
            cached(dir.path(), &profile),
            Err(SeccompError::Malformed { len: 13, .. })
        ));
    }

    #[test]
    fn the_spec_for_libcontainer_has_no_profile_and_the_loader_caps() {
        let profile = default_profile(SeccompArch::native(), &DEFAULT_CAPABILITIES).unwrap();
        let mut spec = Spec::default();
        spec.set_process(Some(process(&DEFAULT_CAPABILITIES)));
        if let Some(linux) = spec.linux_mut() {
            linux.set_seccomp(Some(profile));
        }
        let dir = tempfile::tempdir().unwrap();
        let (engine, load) = engine_spec(&spec, dir.path()).unwrap().unwrap();
        assert!(engine.linux().as_ref().unwrap().seccomp().is_none());
        let caps = CapSets::of(engine.process().as_ref().unwrap().capabilities().as_ref());
        assert!(caps.bounding.contains(&Capability::SysAdmin));
        assert!(!load.target.bounding.contains(&Capability::SysAdmin));
        // Without a profile there is nothing to move.
        if let Some(linux) = spec.linux_mut() {
            linux.set_seccomp(None);
        }
        assert!(engine_spec(&spec, dir.path()).unwrap().is_none());
    }

    #[test]
    fn the_compiled_program_is_enforced_by_the_kernel() {
        // In a forked child that has CAP_SYS_ADMIN (we are root): load Docker's profile and
        // check that a blocked syscall fails with EPERM while an allowed one works.
        let profile = default_profile(SeccompArch::native(), &DEFAULT_CAPABILITIES).unwrap();
        let filter = CompiledFilter {
            program: compile(&profile).unwrap(),
            flags: 0,
        };
        // SAFETY: the child only makes raw syscalls and _exit; no allocation after fork
        // besides what `load_filter` does not do (it builds a struct on the stack).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if ThreadSyscalls.load_filter(&filter).is_err() {
                10
            } else {
                // SAFETY: plain syscalls with no pointers.
                let unshare = unsafe { libc::unshare(libc::CLONE_NEWUTS) };
                let errno = io::Error::last_os_error().raw_os_error();
                // SAFETY: as above.
                let pid = unsafe { libc::getpid() };
                if unshare == -1 && errno == Some(libc::EPERM) && pid > 0 {
                    0
                } else {
                    11
                }
            };
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "status {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
