//! Mounts, device nodes and masked paths, as Docker (with runc) sets them up.
//!
//! The spec covers: the standard filesystems (proc, the /dev tmpfs, devpts, sysfs, the cgroup
//! filesystem, mqueue, /dev/shm with its size), the six standard device nodes in
//! `linux.devices` and the device cgroup allowlist, user tmpfs and bind mounts, the init binary
//! mount, and Docker's masked and read-only paths. The runtime (libcontainer in the shim) adds
//! what no spec field describes: the /dev/fd, /dev/stdin, /dev/stdout, /dev/stderr and
//! /dev/ptmx symlinks, /dev/console for a tty, and the mount points' creation.

use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    Mount, MountBuilder,
};

use super::options::{parse_size, BindMount, ContainerOptions, TmpfsMount};
use super::SpecError;

/// Docker's default /dev/shm size.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// Docker's default masked paths (not when privileged).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths (not when privileged).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// `size=` for a tmpfs: whole KiB like Docker writes them, bytes otherwise.
fn size_option(bytes: u64) -> String {
    if bytes % 1024 == 0 {
        format!("size={}k", bytes / 1024)
    } else {
        format!("size={bytes}")
    }
}

/// Docker's standard mounts, in Docker's order. Privileged containers get sysfs and the cgroup
/// filesystem read-write.
pub fn default_mounts(shm_size: u64, privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let shm_size = size_option(shm_size);
    let sys_opts: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let cgroup_opts: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["ro", "nosuid", "noexec", "nodev"]
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount("/sys", "sysfs", "sysfs", sys_opts)?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_opts)?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        )?,
    ])
}

/// An absolute path inside the container, lexically cleaned (`//`, `.`, `..` resolved; `..`
/// stops at `/`). NUL bytes and relative paths are refused.
pub fn clean_container_path(field: &'static str, value: &str) -> Result<String, SpecError> {
    if !value.starts_with('/') {
        return Err(SpecError::invalid(field, value, "must be an absolute path"));
    }
    if value.contains('\0') {
        return Err(SpecError::invalid(field, value, "contains a NUL byte"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in value.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn mount_destination(field: &'static str, value: &str) -> Result<String, SpecError> {
    let dst = clean_container_path(field, value)?;
    if dst == "/" {
        return Err(SpecError::invalid(field, value, "cannot mount over /"));
    }
    Ok(dst)
}

/// Flag options of a tmpfs and the option each one cancels.
const TMPFS_FLAGS: [(&str, &str); 20] = [
    ("rw", "ro"),
    ("ro", "rw"),
    ("exec", "noexec"),
    ("noexec", "exec"),
    ("suid", "nosuid"),
    ("nosuid", "suid"),
    ("dev", "nodev"),
    ("nodev", "dev"),
    ("sync", "async"),
    ("async", "sync"),
    ("atime", "noatime"),
    ("noatime", "atime"),
    ("diratime", "nodiratime"),
    ("nodiratime", "diratime"),
    ("relatime", "norelatime"),
    ("norelatime", "relatime"),
    ("strictatime", "nostrictatime"),
    ("nostrictatime", "strictatime"),
    ("dirsync", "dirsync"),
    ("nosymfollow", "nosymfollow"),
];

fn tmpfs_mount(t: &TmpfsMount) -> Result<Mount, SpecError> {
    let dst = mount_destination("tmpfs", &t.destination)?;
    let bad = |opt: &str, reason: &str| {
        SpecError::invalid("tmpfs", format!("{}:{opt}", t.destination), reason)
    };
    // Docker's defaults; the user's flags replace their opposites.
    let mut flags: Vec<String> = ["rw", "nosuid", "nodev", "noexec"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut keyed: Vec<(&'static str, String)> = Vec::new();
    for opt in &t.options {
        let opt = opt.trim();
        if let Some((flag, opposite)) = TMPFS_FLAGS.iter().find(|(f, _)| *f == opt) {
            flags.retain(|f| f != flag && f != opposite);
            flags.push(flag.to_string());
            continue;
        }
        let (key, value) = opt
            .split_once('=')
            .ok_or_else(|| bad(opt, "unknown tmpfs option"))?;
        let (key, value): (&'static str, String) = match key {
            "size" => {
                if let Some(pct) = value.strip_suffix('%') {
                    match pct.parse::<u8>() {
                        Ok(p) if (1..=100).contains(&p) => ("size", format!("{p}%")),
                        _ => return Err(bad(opt, "a percentage must be 1% to 100%")),
                    }
                } else {
                    match parse_size(value) {
                        Some(b) if b > 0 => ("size", b.to_string()),
                        _ => return Err(bad(opt, "size must be a positive byte size like 64m")),
                    }
                }
            }
            "mode" => match u32::from_str_radix(value, 8) {
                Ok(m) if m <= 0o7777 && !value.is_empty() => ("mode", format!("{m:o}")),
                _ => return Err(bad(opt, "mode must be octal, at most 7777")),
            },
            "uid" | "gid" => match value.parse::<u32>() {
                Ok(id) => (if key == "uid" { "uid" } else { "gid" }, id.to_string()),
                Err(_) => return Err(bad(opt, "must be a numeric id")),
            },
            "nr_inodes" => match parse_size(value) {
                Some(n) => ("nr_inodes", n.to_string()),
                None => return Err(bad(opt, "must be a number")),
            },
            _ => return Err(bad(opt, "unknown tmpfs option")),
        };
        keyed.retain(|(k, _)| *k != key);
        keyed.push((key, value));
    }
    let mut options = flags;
    options.extend(keyed.into_iter().map(|(k, v)| format!("{k}={v}")));
    Ok(MountBuilder::default()
        .destination(dst)
        .typ("tmpfs")
        .source("tmpfs")
        .options(options)
        .build()?)
}

fn bind_mount(b: &BindMount) -> Result<Mount, SpecError> {
    let dst = mount_destination("volume", &b.destination)?;
    let src = b.source.to_str().ok_or_else(|| {
        SpecError::invalid("volume", b.source.display().to_string(), "is not UTF-8")
    })?;
    if !src.starts_with('/') || src.contains('\0') {
        return Err(SpecError::invalid(
            "volume",
            src,
            "the source must be an absolute host path",
        ));
    }
    Ok(MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(PathBuf::from(src))
        .options(vec![
            "rbind".to_string(),
            if b.read_only { "ro" } else { "rw" }.to_string(),
            "rprivate".to_string(),
        ])
        .build()?)
}

fn depth(destination: &str) -> usize {
    destination.split('/').filter(|c| !c.is_empty()).count()
}

/// All mounts: the standard ones not replaced by a user mount (a user /dev replaces every
/// standard mount under /dev), then the user's tmpfs and bind mounts and the init binary,
/// parents before children (Docker sorts by path depth).
pub fn build_mounts(opts: &ContainerOptions) -> Result<Vec<Mount>, SpecError> {
    let shm_size = match opts.shm_size {
        Some(0) => return Err(SpecError::invalid("shm_size", "0", "must be positive")),
        Some(n) => n,
        None => DEFAULT_SHM_SIZE,
    };
    let mut user: Vec<Mount> = Vec::new();
    for t in &opts.tmpfs {
        user.push(tmpfs_mount(t)?);
    }
    for b in &opts.binds {
        user.push(bind_mount(b)?);
    }
    if let Some(init) = &opts.init {
        let dst = mount_destination("init", &init.container_path)?;
        user.push(bind_mount(&BindMount {
            source: init.host_path.clone(),
            destination: dst,
            read_only: true,
        })?);
        if let Some(m) = user.last_mut() {
            m.set_options(Some(vec![
                "bind".to_string(),
                "ro".to_string(),
                "rprivate".to_string(),
            ]));
        }
    }
    let destinations: Vec<String> = user
        .iter()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    for (i, d) in destinations.iter().enumerate() {
        if destinations[..i].contains(d) {
            return Err(SpecError::DuplicateMount {
                destination: d.clone(),
            });
        }
    }
    let user_dev = destinations.iter().any(|d| d == "/dev");
    let mut mounts: Vec<Mount> = default_mounts(shm_size, opts.privileged)?
        .into_iter()
        .filter(|m| {
            let d = m.destination().to_string_lossy();
            let replaced = destinations.iter().any(|u| *u == d);
            let under_user_dev = user_dev && d.starts_with("/dev/");
            !replaced && !under_user_dev
        })
        .collect();
    user.sort_by_key(|m| depth(&m.destination().to_string_lossy()));
    mounts.extend(user);
    Ok(mounts)
}

fn device(path: &str, major: i64, minor: i64) -> Result<LinuxDevice, SpecError> {
    Ok(LinuxDeviceBuilder::default()
        .path(path)
        .typ(LinuxDeviceType::C)
        .major(major)
        .minor(minor)
        .file_mode(0o666u32)
        .uid(0u32)
        .gid(0u32)
        .build()?)
}

/// The standard device nodes every container gets.
pub fn default_devices() -> Result<Vec<LinuxDevice>, SpecError> {
    Ok(vec![
        device("/dev/null", 1, 3)?,
        device("/dev/zero", 1, 5)?,
        device("/dev/full", 1, 7)?,
        device("/dev/random", 1, 8)?,
        device("/dev/urandom", 1, 9)?,
        device("/dev/tty", 5, 0)?,
    ])
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    Ok(b.build()?)
}

/// The device cgroup: deny everything, then allow mknod of any node (using one still needs an
/// allow rule), the standard nodes, the tty nodes and the pseudo-terminals; privileged
/// containers may use every device.
pub fn device_rules(privileged: bool) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    use LinuxDeviceType::{A, B, C};
    if privileged {
        return Ok(vec![rule(true, A, None, None, "rwm")?]);
    }
    let mut rules = vec![
        rule(false, A, None, None, "rwm")?,
        rule(true, C, None, None, "m")?,
        rule(true, B, None, None, "m")?,
    ];
    for (major, minor) in [
        (1, Some(3)), // null
        (1, Some(5)), // zero
        (1, Some(7)), // full
        (1, Some(8)), // random
        (1, Some(9)), // urandom
        (5, Some(0)), // tty
        (5, Some(1)), // console
        (5, Some(2)), // ptmx
        (136, None),  // pts/*
    ] {
        rules.push(rule(true, C, Some(major), minor, "rwm")?);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::options::InitProcess;

    fn dests(mounts: &[Mount]) -> Vec<String> {
        mounts
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect()
    }

    fn find<'a>(mounts: &'a [Mount], dst: &str) -> &'a Mount {
        mounts
            .iter()
            .find(|m| m.destination().to_string_lossy() == dst)
            .unwrap()
    }

    fn opts_of(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    #[test]
    fn standard_mounts_like_docker() {
        let m = build_mounts(&ContainerOptions::default()).unwrap();
        assert_eq!(
            dests(&m),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
        assert_eq!(find(&m, "/dev").typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            opts_of(find(&m, "/dev")),
            ["nosuid", "strictatime", "mode=755", "size=65536k"]
        );
        assert_eq!(
            opts_of(find(&m, "/dev/pts")),
            [
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5"
            ]
        );
        assert_eq!(
            opts_of(find(&m, "/dev/shm")),
            ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
        );
        assert!(opts_of(find(&m, "/sys")).contains(&"ro".to_string()));
        assert!(opts_of(find(&m, "/sys/fs/cgroup")).contains(&"ro".to_string()));
        assert_eq!(find(&m, "/sys/fs/cgroup").typ().as_deref(), Some("cgroup"));
        assert_eq!(find(&m, "/dev/mqueue").typ().as_deref(), Some("mqueue"));
        assert_eq!(find(&m, "/proc").typ().as_deref(), Some("proc"));
    }

    #[test]
    fn privileged_gets_writable_sysfs_and_cgroups() {
        let o = ContainerOptions {
            privileged: true,
            ..Default::default()
        };
        let m = build_mounts(&o).unwrap();
        assert!(!opts_of(find(&m, "/sys")).contains(&"ro".to_string()));
        assert!(!opts_of(find(&m, "/sys/fs/cgroup")).contains(&"ro".to_string()));
    }

    #[test]
    fn shm_size() {
        let o = ContainerOptions {
            shm_size: Some(128 << 20),
            ..Default::default()
        };
        let m = build_mounts(&o).unwrap();
        assert!(opts_of(find(&m, "/dev/shm")).contains(&"size=131072k".to_string()));
        let o = ContainerOptions {
            shm_size: Some(1000),
            ..Default::default()
        };
        let m = build_mounts(&o).unwrap();
        assert!(opts_of(find(&m, "/dev/shm")).contains(&"size=1000".to_string()));
        let o = ContainerOptions {
            shm_size: Some(0),
            ..Default::default()
        };
        assert!(build_mounts(&o).is_err());
    }

    #[test]
    fn tmpfs_options_are_validated_and_merged() {
        let o = ContainerOptions {
            tmpfs: vec![TmpfsMount::parse("/run:size=64m,mode=1777,exec,uid=1000").unwrap()],
            ..Default::default()
        };
        let m = build_mounts(&o).unwrap();
        let run = find(&m, "/run");
        assert_eq!(run.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            opts_of(run),
            [
                "rw",
                "nosuid",
                "nodev",
                "exec",
                "size=67108864",
                "mode=1777",
                "uid=1000"
            ]
        );
        let t = tmpfs_mount(&TmpfsMount::parse("/t:ro,size=50%,size=1k").unwrap()).unwrap();
        assert_eq!(
            opts_of(&t),
            ["nosuid", "nodev", "noexec", "ro", "size=1024"]
        );
        for bad in [
            "/t:size=0",
            "/t:size=lots",
            "/t:size=200%",
            "/t:mode=999",
            "/t:mode=",
            "/t:uid=x",
            "/t:bogus",
            "/t:foo=bar",
            "relative:size=1m",
            "/:size=1m",
        ] {
            let err = tmpfs_mount(&TmpfsMount::parse(bad).unwrap()).unwrap_err();
            assert!(
                matches!(err, SpecError::Invalid { field: "tmpfs", .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bind_mounts() {
        let o = ContainerOptions {
            binds: vec![
                BindMount::parse("/srv/a:/data/a:ro").unwrap(),
                BindMount::parse("/srv/b:/data").unwrap(),
            ],
            ..Default::default()
        };
        let m = build_mounts(&o).unwrap();
        // Parents before children.
        let d = dests(&m);
        assert_eq!(&d[7..], ["/data", "/data/a"]);
        let a = find(&m, "/data/a");
        assert_eq!(a.typ().as_deref(), Some("bind"));
        assert_eq!(a.source().as_deref(), Some(std::path::Path::new("/srv/a")));
        assert_eq!(opts_of(a), ["rbind", "ro", "rprivate"]);
        assert_eq!(opts_of(find(&m, "/data")), ["rbind", "rw", "rprivate"]);
    }

    #[test]
    fn destinations_are_cleaned_and_checked() {
        assert_eq!(
            clean_container_path("x", "/a//b/./c/../d/").unwrap(),
            "/a/b/d"
        );
        assert_eq!(clean_container_path("x", "/../../etc").unwrap(), "/etc");
        assert!(clean_container_path("x", "a/b").is_err());
        assert!(clean_container_path("x", "/a\0b").is_err());
        let bad = BindMount {
            source: "/srv".into(),
            destination: "/x/..".into(),
            read_only: false,
        };
        assert!(bind_mount(&bad).is_err());
        let bad = BindMount {
            source: "srv".into(),
            destination: "/x".into(),
            read_only: false,
        };
        assert!(bind_mount(&bad).is_err());
    }

    #[test]
    fn duplicates_are_refused() {
        let o = ContainerOptions {
            tmpfs: vec![TmpfsMount::parse("/data").unwrap()],
            binds: vec![BindMount::parse("/srv:/data/").unwrap()],
            ..Default::default()
        };
        let err = build_mounts(&o).unwrap_err();
        assert!(
            matches!(&err, SpecError::DuplicateMount { destination } if destination == "/data")
        );
    }

    #[test]
    fn user_mounts_replace_standard_ones() {
        let o = ContainerOptions {
            tmpfs: vec![TmpfsMount::parse("/dev/shm:size=1g").unwrap()],
            ..Default::default()
        };
        let m = build_mounts(&o).unwrap();
        let shm: Vec<_> = m
            .iter()
            .filter(|m| m.destination().to_string_lossy() == "/dev/shm")
            .collect();
        assert_eq!(shm.len(), 1);
        assert!(opts_of(shm[0]).contains(&"size=1073741824".to_string()));
        // A user /dev replaces everything under /dev.
        let o = ContainerOptions {
            binds: vec![BindMount::parse("/srv/dev:/dev").unwrap()],
            ..Default::default()
        };
        let d = dests(&build_mounts(&o).unwrap());
        assert_eq!(d, ["/proc", "/sys", "/sys/fs/cgroup", "/dev"]);
    }

    #[test]
    fn init_is_bind_mounted_read_only() {
        let o = ContainerOptions {
            init: Some(InitProcess::new("/usr/local/bin/dockmaster")),
            ..Default::default()
        };
        let m = build_mounts(&o).unwrap();
        let init = find(&m, "/dev/init");
        assert_eq!(init.typ().as_deref(), Some("bind"));
        assert_eq!(
            init.source().as_deref(),
            Some(std::path::Path::new("/usr/local/bin/dockmaster"))
        );
        assert_eq!(opts_of(init), ["bind", "ro", "rprivate"]);
        // After /dev so its mount point lives on the container's /dev tmpfs.
        let d = dests(&m);
        let pos = |x: &str| d.iter().position(|y| y == x).unwrap();
        assert!(pos("/dev") < pos("/dev/init"));
    }

    #[test]
    fn devices_and_rules() {
        let devs = default_devices().unwrap();
        let paths: Vec<_> = devs
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
        assert!(devs.iter().all(|d| d.file_mode() == Some(0o666)));
        let rules = device_rules(false).unwrap();
        assert!(!rules[0].allow());
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
        // Every standard node is allowed by a rule.
        for d in &devs {
            assert!(rules.iter().any(|r| r.allow()
                && r.typ() == Some(LinuxDeviceType::C)
                && r.major() == Some(d.major())
                && r.minor() == Some(d.minor())
                && r.access().as_deref() == Some("rwm")));
        }
        let rules = device_rules(true).unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
    }
}
