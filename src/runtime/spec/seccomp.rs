//! A default seccomp profile equivalent to Docker's: everything not listed fails with EPERM;
//! an allowlist of ordinary syscalls; argument-checked rules for `personality`, `clone` (no
//! namespace flags without CAP_SYS_ADMIN) and `socket` (no AF_VSOCK); `clone3` answers ENOSYS
//! without CAP_SYS_ADMIN so libc falls back to `clone`, whose flags can be checked; and groups
//! that open up with the capability that makes them meaningful (CAP_SYS_ADMIN: mount, unshare,
//! setns...; CAP_SYS_PTRACE: kcmp, pidfd_getfd...; CAP_SYS_MODULE; CAP_SYS_BOOT; ...).
//!
//! Written as a Rust table from Docker's rules, not from its JSON. Like Docker's, the profile
//! is rendered for the native architecture with its compat architectures (x86_64 + x86 + x32,
//! aarch64 + arm) and arch-specific syscalls only there. Docker allows `ptrace` and
//! `process_vm_*` on kernels ≥ 4.8 only; every kernel this runtime supports is newer.

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::SpecError;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
/// `AF_VSOCK`: host/guest sockets, refused by Docker's profile.
const AF_VSOCK: u64 = 40;
/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET: the flags that create namespaces.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Which architecture family the profile is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompArch {
    /// x86_64 with x86 and x32.
    X86_64,
    /// aarch64 with arm.
    Aarch64,
    /// Anything else: `SCMP_ARCH_NATIVE` and no arch-specific rules.
    Other,
}

impl SeccompArch {
    /// The architecture this binary was built for.
    pub fn native() -> SeccompArch {
        if cfg!(target_arch = "x86_64") {
            SeccompArch::X86_64
        } else if cfg!(target_arch = "aarch64") {
            SeccompArch::Aarch64
        } else {
            SeccompArch::Other
        }
    }

    fn architectures(self) -> Vec<Arch> {
        match self {
            SeccompArch::X86_64 => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
            SeccompArch::Aarch64 => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
            SeccompArch::Other => vec![Arch::ScmpArchNative],
        }
    }
}

#[derive(Clone, Copy)]
enum Act {
    Allow,
    Errno(u32),
}

/// One argument condition: `(index, value, value_two, op)`.
type Cond = (usize, u64, u64, LinuxSeccompOperator);

struct Rule {
    names: &'static [&'static str],
    act: Act,
    args: &'static [Cond],
    /// Included only when every one of these is in the bounding set.
    caps: &'static [Capability],
    /// Left out when any of these is in the bounding set.
    not_caps: &'static [Capability],
    /// Included only on this architecture family.
    arch: Option<SeccompArch>,
}

const fn allow(names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        act: Act::Allow,
        args: &[],
        caps: &[],
        not_caps: &[],
        arch: None,
    }
}

const fn allow_with(names: &'static [&'static str], caps: &'static [Capability]) -> Rule {
    Rule {
        names,
        act: Act::Allow,
        args: &[],
        caps,
        not_caps: &[],
        arch: None,
    }
}

const fn allow_on(names: &'static [&'static str], arch: SeccompArch) -> Rule {
    Rule {
        names,
        act: Act::Allow,
        args: &[],
        caps: &[],
        not_caps: &[],
        arch: Some(arch),
    }
}

const fn allow_if(names: &'static [&'static str], args: &'static [Cond]) -> Rule {
    Rule {
        names,
        act: Act::Allow,
        args,
        caps: &[],
        not_caps: &[],
        arch: None,
    }
}

use LinuxSeccompOperator::{ScmpCmpEq as EQ, ScmpCmpMaskedEq as MASKED_EQ, ScmpCmpNe as NE};

/// Ordinary syscalls every container may make.
const BASE: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

const SYS_ADMIN: &[Capability] = &[Capability::SysAdmin];

/// The profile after the base allowlist, in Docker's order.
const RULES: &[Rule] = &[
    // Docker: kernels ≥ 4.8 (where ptrace can no longer bypass seccomp).
    allow(&["process_vm_readv", "process_vm_writev", "ptrace"]),
    allow_if(&["socket"], &[(0, AF_VSOCK, 0, NE)]),
    // personality: only the harmless personas (PER_LINUX, UNAME26, PER_LINUX32, both, query).
    allow_if(&["personality"], &[(0, 0x0, 0, EQ)]),
    allow_if(&["personality"], &[(0, 0x0008, 0, EQ)]),
    allow_if(&["personality"], &[(0, 0x20000, 0, EQ)]),
    allow_if(&["personality"], &[(0, 0x20008, 0, EQ)]),
    allow_if(&["personality"], &[(0, 0xffff_ffff, 0, EQ)]),
    // Architecture-specific.
    allow_on(&["arch_prctl", "modify_ldt"], SeccompArch::X86_64),
    allow_on(
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        SeccompArch::Aarch64,
    ),
    // Capability-gated groups.
    allow_with(&["open_by_handle_at"], &[Capability::DacReadSearch]),
    allow_with(
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        SYS_ADMIN,
    ),
    // Without CAP_SYS_ADMIN: clone only without namespace flags...
    Rule {
        names: &["clone"],
        act: Act::Allow,
        args: &[(0, CLONE_NAMESPACE_FLAGS, 0, MASKED_EQ)],
        caps: &[],
        not_caps: SYS_ADMIN,
        arch: None,
    },
    // ...and clone3, whose flags sit in memory seccomp cannot read, says ENOSYS so libc falls
    // back to clone.
    Rule {
        names: &["clone3"],
        act: Act::Errno(ENOSYS),
        args: &[],
        caps: &[],
        not_caps: SYS_ADMIN,
        arch: None,
    },
    allow_with(&["reboot"], &[Capability::SysBoot]),
    allow_with(&["chroot"], &[Capability::SysChroot]),
    allow_with(
        &["delete_module", "init_module", "finit_module"],
        &[Capability::SysModule],
    ),
    allow_with(&["acct"], &[Capability::SysPacct]),
    allow_with(
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        &[Capability::SysPtrace],
    ),
    allow_with(&["iopl", "ioperm"], &[Capability::SysRawio]),
    allow_with(
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &[Capability::SysTime],
    ),
    allow_with(&["vhangup"], &[Capability::SysTtyConfig]),
    allow_with(
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        &[Capability::SysNice],
    ),
    allow_with(&["syslog"], &[Capability::Syslog]),
    allow_with(&["bpf"], &[Capability::Bpf]),
    allow_with(&["perf_event_open"], &[Capability::Perfmon]),
];

impl Rule {
    fn applies(&self, arch: SeccompArch, caps: &[Capability]) -> bool {
        self.arch.map_or(true, |a| a == arch)
            && self.caps.iter().all(|c| caps.contains(c))
            && !self.not_caps.iter().any(|c| caps.contains(c))
    }

    fn to_oci(&self) -> Result<LinuxSyscall, SpecError> {
        let mut b = LinuxSyscallBuilder::default()
            .names(self.names.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        b = match self.act {
            Act::Allow => b.action(LinuxSeccompAction::ScmpActAllow),
            Act::Errno(errno) => b.action(LinuxSeccompAction::ScmpActErrno).errno_ret(errno),
        };
        if !self.args.is_empty() {
            let args = self
                .args
                .iter()
                .map(|&(index, value, value_two, op)| {
                    let mut a = LinuxSeccompArgBuilder::default()
                        .index(index)
                        .value(value)
                        .op(op);
                    if op == MASKED_EQ {
                        a = a.value_two(value_two);
                    }
                    a.build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            b = b.args(args);
        }
        Ok(b.build()?)
    }
}

/// Docker's default profile for `arch`, with the groups that `caps` (the bounding set) opens.
pub fn default_profile(arch: SeccompArch, caps: &[Capability]) -> Result<LinuxSeccomp, SpecError> {
    let mut syscalls = vec![allow(BASE).to_oci()?];
    for rule in RULES.iter().filter(|r| r.applies(arch, caps)) {
        syscalls.push(rule.to_oci()?);
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(arch.architectures())
        .syscalls(syscalls)
        .build()?)
}

/// What the profile does with a call of `name` with `args`, as libseccomp would decide for the
/// rules this module writes (one action per syscall and argument match): the action and, for
/// `SCMP_ACT_ERRNO`, the errno. Used by tests and diagnostics.
pub fn evaluate(profile: &LinuxSeccomp, name: &str, args: &[u64]) -> (LinuxSeccompAction, u32) {
    let arg = |i: usize| args.get(i).copied().unwrap_or(0);
    let matched = profile.syscalls().iter().flatten().find(|rule| {
        rule.names().iter().any(|n| n == name)
            && rule.args().iter().flatten().all(|a| {
                let v = arg(a.index());
                match a.op() {
                    LinuxSeccompOperator::ScmpCmpNe => v != a.value(),
                    LinuxSeccompOperator::ScmpCmpLt => v < a.value(),
                    LinuxSeccompOperator::ScmpCmpLe => v <= a.value(),
                    LinuxSeccompOperator::ScmpCmpEq => v == a.value(),
                    LinuxSeccompOperator::ScmpCmpGe => v >= a.value(),
                    LinuxSeccompOperator::ScmpCmpGt => v > a.value(),
                    LinuxSeccompOperator::ScmpCmpMaskedEq => {
                        v & a.value() == a.value_two().unwrap_or(0)
                    }
                }
            })
    });
    match matched {
        Some(rule) => (rule.action(), rule.errno_ret().unwrap_or(EPERM)),
        None => (
            profile.default_action(),
            profile.default_errno_ret().unwrap_or(EPERM),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::capabilities::{resolve_capabilities, DEFAULT_CAPABILITIES};

    const ALLOW: (LinuxSeccompAction, u32) = (LinuxSeccompAction::ScmpActAllow, EPERM);
    const DENY: (LinuxSeccompAction, u32) = (LinuxSeccompAction::ScmpActErrno, EPERM);

    fn default() -> LinuxSeccomp {
        default_profile(SeccompArch::X86_64, &DEFAULT_CAPABILITIES).unwrap()
    }

    fn with(add: &str) -> LinuxSeccomp {
        let caps = resolve_capabilities(&[add.to_string()], &[], false).unwrap();
        default_profile(SeccompArch::X86_64, &caps).unwrap()
    }

    #[test]
    fn default_action_is_eperm() {
        let p = default();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(EPERM));
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let arm = default_profile(SeccompArch::Aarch64, &DEFAULT_CAPABILITIES).unwrap();
        assert_eq!(
            arm.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
    }

    #[test]
    fn ordinary_syscalls_are_allowed() {
        let p = default();
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "exit_group",
            "mmap",
            "futex",
            "wait4",
            "fork",
            "socketpair",
            "chown",
            "mknod",
            "setuid",
            "kill",
            "rt_sigaction",
            "statx",
        ] {
            assert_eq!(evaluate(&p, name, &[]), ALLOW, "{name}");
        }
    }

    #[test]
    fn dangerous_syscalls_are_refused_by_default() {
        let p = default();
        for name in [
            "unshare",
            "mount",
            "umount2",
            "setns",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "reboot",
            "init_module",
            "finit_module",
            "delete_module",
            "open_by_handle_at",
            "bpf",
            "perf_event_open",
            "swapon",
            "swapoff",
            "acct",
            "settimeofday",
            "clock_settime",
            "iopl",
            "ioperm",
            "kcmp",
            "pidfd_getfd",
            "vhangup",
            "userfaultfd",
            "io_uring_setup",
            "pivot_root",
            "syslog",
            "quotactl",
            "sethostname",
            "uselib",
            "nfsservctl",
            "mbind",
            "lookup_dcookie",
            "fsopen",
            "unknown_future_call",
        ] {
            assert_eq!(evaluate(&p, name, &[]), DENY, "{name}");
        }
    }

    #[test]
    fn clone_is_allowed_without_namespace_flags_only() {
        let p = default();
        // A thread: CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | ...
        assert_eq!(evaluate(&p, "clone", &[0x003D_0F00]), ALLOW);
        assert_eq!(evaluate(&p, "clone", &[17]), ALLOW); // fork: SIGCHLD
        for flag in [
            0x0002_0000u64, // CLONE_NEWNS
            0x0200_0000,    // CLONE_NEWCGROUP
            0x0400_0000,    // CLONE_NEWUTS
            0x0800_0000,    // CLONE_NEWIPC
            0x1000_0000,    // CLONE_NEWUSER
            0x2000_0000,    // CLONE_NEWPID
            0x4000_0000,    // CLONE_NEWNET
        ] {
            assert_eq!(evaluate(&p, "clone", &[flag | 17]), DENY, "{flag:#x}");
        }
        // clone3 says ENOSYS so libc retries with clone.
        assert_eq!(
            evaluate(&p, "clone3", &[]),
            (LinuxSeccompAction::ScmpActErrno, ENOSYS)
        );
    }

    #[test]
    fn cap_sys_admin_opens_its_group() {
        let p = with("SYS_ADMIN");
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "sethostname",
            "clone3",
            "bpf",
        ] {
            assert_eq!(evaluate(&p, name, &[]), ALLOW, "{name}");
        }
        assert_eq!(evaluate(&p, "clone", &[0x1000_0000 | 17]), ALLOW);
        // Never allowed, whatever the capabilities.
        for name in ["keyctl", "add_key", "kexec_load"] {
            assert_eq!(evaluate(&p, name, &[]), DENY, "{name}");
        }
    }

    #[test]
    fn each_capability_opens_only_its_syscalls() {
        for (cap, name) in [
            ("SYS_BOOT", "reboot"),
            ("SYS_MODULE", "init_module"),
            ("SYS_MODULE", "delete_module"),
            ("SYS_PACCT", "acct"),
            ("SYS_PTRACE", "kcmp"),
            ("SYS_PTRACE", "pidfd_getfd"),
            ("SYS_RAWIO", "iopl"),
            ("SYS_TIME", "settimeofday"),
            ("SYS_TIME", "clock_settime"),
            ("SYS_TTY_CONFIG", "vhangup"),
            ("SYS_NICE", "mbind"),
            ("SYSLOG", "syslog"),
            ("BPF", "bpf"),
            ("PERFMON", "perf_event_open"),
            ("DAC_READ_SEARCH", "open_by_handle_at"),
        ] {
            assert_eq!(evaluate(&default(), name, &[]), DENY, "{name} by default");
            assert_eq!(evaluate(&with(cap), name, &[]), ALLOW, "{name} with {cap}");
            assert_eq!(evaluate(&with(cap), "mount", &[]), DENY, "mount with {cap}");
        }
    }

    #[test]
    fn chroot_follows_the_default_sys_chroot() {
        assert_eq!(evaluate(&default(), "chroot", &[]), ALLOW);
        let caps = resolve_capabilities(&[], &["SYS_CHROOT".to_string()], false).unwrap();
        let p = default_profile(SeccompArch::X86_64, &caps).unwrap();
        assert_eq!(evaluate(&p, "chroot", &[]), DENY);
    }

    #[test]
    fn personality_allows_only_safe_personas() {
        let p = default();
        for persona in [0x0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(
                evaluate(&p, "personality", &[persona]),
                ALLOW,
                "{persona:#x}"
            );
        }
        // READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE.
        for persona in [0x0040_0000u64, 0x0004_0000] {
            assert_eq!(
                evaluate(&p, "personality", &[persona]),
                DENY,
                "{persona:#x}"
            );
        }
    }

    #[test]
    fn vsock_sockets_are_refused() {
        let p = default();
        assert_eq!(evaluate(&p, "socket", &[2, 1, 0]), ALLOW); // AF_INET
        assert_eq!(evaluate(&p, "socket", &[1, 1, 0]), ALLOW); // AF_UNIX
        assert_eq!(evaluate(&p, "socket", &[40, 1, 0]), DENY); // AF_VSOCK
    }

    #[test]
    fn arch_specific_syscalls_only_on_their_arch() {
        let x86 = default();
        let arm = default_profile(SeccompArch::Aarch64, &DEFAULT_CAPABILITIES).unwrap();
        assert_eq!(evaluate(&x86, "arch_prctl", &[]), ALLOW);
        assert_eq!(evaluate(&arm, "arch_prctl", &[]), DENY);
        assert_eq!(evaluate(&arm, "set_tls", &[]), ALLOW);
        assert_eq!(evaluate(&x86, "set_tls", &[]), DENY);
    }

    #[test]
    fn ptrace_is_allowed_like_docker_on_modern_kernels() {
        assert_eq!(evaluate(&default(), "ptrace", &[]), ALLOW);
    }

    #[test]
    fn rules_are_well_formed() {
        let p = with("ALL");
        for rule in p.syscalls().iter().flatten() {
            assert!(!rule.names().is_empty());
            for name in rule.names() {
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}"
                );
            }
        }
        // No syscall appears twice in the base list.
        let mut base: Vec<_> = BASE.to_vec();
        base.sort_unstable();
        let before = base.len();
        base.dedup();
        assert_eq!(before, base.len());
        // The base list never contains a gated syscall.
        for rule in RULES {
            if !rule.caps.is_empty() || rule.arch.is_some() || !rule.args.is_empty() {
                for name in rule.names {
                    assert!(
                        !BASE.contains(name),
                        "{name} is gated but also in the base list"
                    );
                }
            }
        }
    }

    #[test]
    fn serializes_like_an_oci_profile() {
        let json = serde_json::to_value(default()).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        let clone = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["names"] == serde_json::json!(["clone"]))
            .unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["value"], 0x7E02_0000u64);
        assert_eq!(clone["args"][0]["valueTwo"], 0);
    }
}
