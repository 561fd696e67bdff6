//! Whole-spec tests: a busybox container end to end (serialized to JSON), the options' interplay,
//! and user resolution through the real rootfs readers (a directory, an overlay stack).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccompAction, Spec};
use serde_json::Value;

use super::*;
use crate::image::manifest::{ContainerConfig, ImageConfig};

const BUSYBOX_PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
";
const BUSYBOX_GROUP: &str = "\
root:x:0:
daemon:x:1:
wheel:x:10:root
www-data:x:33:
nogroup:x:65534:
";

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn busybox_root() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "etc/passwd", BUSYBOX_PASSWD);
    write(t.path(), "etc/group", BUSYBOX_GROUP);
    t
}

fn busybox_image() -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ContainerConfig {
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn options() -> ContainerOptions {
    ContainerOptions {
        identity: Identity {
            container_id: "4f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            name: "hello".into(),
            image: "busybox:1.36".into(),
            project: Some("demo".into()),
            service: Some("hello".into()),
            replica: Some(1),
            config_hash: Some("sha256:abc".into()),
        },
        ..Default::default()
    }
}

fn host() -> HostLimits {
    HostLimits {
        capabilities: None,
        hard: BTreeMap::from([(RlimitKind::Nofile, 20_000)]),
        can_raise: false,
        cpus: Some(2),
    }
}

fn build(opts: &ContainerOptions) -> Result<Spec, SpecError> {
    let root = busybox_root();
    build_spec_for(
        SeccompArch::X86_64,
        &busybox_image(),
        opts,
        &DirRootfs::new(root.path()),
        &host(),
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn seccomp_of(spec: &Spec) -> &oci_spec::runtime::LinuxSeccomp {
    spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap()
}

#[test]
fn busybox_spec_as_json() {
    let mut opts = options();
    opts.command = vec!["echo".into(), "hello".into()];
    opts.env = vec!["GREETING=hi".into()];
    let spec = build(&opts).unwrap();
    let json = serde_json::to_value(&spec).unwrap();

    assert_eq!(json["ociVersion"], "1.0.2");
    assert_eq!(json["root"]["path"], "rootfs");
    assert_eq!(json["root"]["readonly"], false);
    assert_eq!(json["hostname"], "4f1e2d3c4b5a");

    let p = &json["process"];
    assert_eq!(strings(&p["args"]), ["echo", "hello"]);
    assert_eq!(
        strings(&p["env"]),
        [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME=4f1e2d3c4b5a",
            "GREETING=hi",
            "HOME=/root"
        ]
    );
    assert_eq!(p["cwd"], "/");
    assert_eq!(p["terminal"], false);
    assert_eq!(p["user"]["uid"], 0);
    assert_eq!(p["user"]["gid"], 0);
    assert_eq!(p["user"]["additionalGids"], serde_json::json!([0, 10]));
    // Absent means off (see build_spec_for).
    assert!(p.get("noNewPrivileges").is_none(), "{p}");
    assert!(p["rlimits"].as_array().map_or(true, |r| r.is_empty()));
    let expected_caps: BTreeSet<String> = [
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
        "CAP_AUDIT_WRITE",
    ]
    .map(String::from)
    .into();
    for set in ["bounding", "effective", "permitted"] {
        let got: BTreeSet<String> = strings(&p["capabilities"][set]).into_iter().collect();
        assert_eq!(got, expected_caps, "{set}");
    }
    assert!(strings(&p["capabilities"]["inheritable"]).is_empty());
    assert!(strings(&p["capabilities"]["ambient"]).is_empty());

    let mounts: Vec<&str> = json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
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
    assert_eq!(json["mounts"][6]["options"][4], "size=65536k");

    let l = &json["linux"];
    assert_eq!(
        strings(&l["maskedPaths"]),
        [
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
            "/sys/devices/virtual/powercap"
        ]
    );
    assert_eq!(
        strings(&l["readonlyPaths"]),
        [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]
    );
    let ns: Vec<&str> = l["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, ["pid", "network", "ipc", "uts", "mount", "cgroup"]);
    assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(l["seccomp"]["defaultErrnoRet"], 1);
    assert_eq!(
        strings(&l["seccomp"]["architectures"]),
        ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    );
    let devices: Vec<&str> = l["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        devices,
        [
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty"
        ]
    );
    assert_eq!(l["resources"]["devices"][0]["allow"], false);
    assert_eq!(l["resources"]["devices"][0]["access"], "rwm");
    assert!(l["resources"].get("memory").is_none());
    assert_eq!(
        l["cgroupsPath"],
        "/dockmaster/4f1e2d3c4b5a69788796a5b4c3d2e1f0"
    );
    assert!(l.get("sysctl").is_none());

    let a = &json["annotations"];
    assert_eq!(a["io.dockmaster.project"], "demo");
    assert_eq!(a["io.dockmaster.service"], "hello");
    assert_eq!(a["io.dockmaster.replica"], "1");
    assert_eq!(a["io.dockmaster.config-hash"], "sha256:abc");
    assert_eq!(a["io.dockmaster.image"], "busybox:1.36");

    // What the shim writes as config.json reads back to the same spec.
    let text = serde_json::to_string_pretty(&spec).unwrap();
    let back: Spec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn image_defaults_run_when_nothing_is_given() {
    let spec = build(&options()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_deref(), Some(&["sh".to_string()][..]));
}

#[test]
fn non_root_user_gets_home_and_groups_from_the_image() {
    let mut opts = options();
    opts.user = Some("www-data".into());
    opts.group_add = vec!["wheel".into()];
    let spec = build(&opts).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (33, 33));
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[33, 10][..]));
    assert!(p
        .env()
        .as_ref()
        .unwrap()
        .contains(&"HOME=/var/www".to_string()));
    // The image's USER applies when -u is not given.
    let mut image = busybox_image();
    image.config.user = Some("nobody".into());
    let root = busybox_root();
    let spec = build_spec_for(
        SeccompArch::X86_64,
        &image,
        &options(),
        &DirRootfs::new(root.path()),
        &host(),
    )
    .unwrap();
    assert_eq!(spec.process().as_ref().unwrap().user().uid(), 65534);
}

#[test]
fn unknown_user_is_an_error_naming_user_and_image() {
    let mut opts = options();
    opts.user = Some("postgres".into());
    let err = build(&opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("postgres") && msg.contains("busybox:1.36"),
        "{msg}"
    );
}

#[test]
fn no_command_is_an_error_naming_the_image() {
    let mut image = busybox_image();
    image.config.cmd = None;
    let root = busybox_root();
    let err = build_spec_for(
        SeccompArch::X86_64,
        &image,
        &options(),
        &DirRootfs::new(root.path()),
        &host(),
    )
    .unwrap_err();
    assert!(matches!(&err, SpecError::NoCommand { image } if image == "busybox:1.36"));
}

#[test]
fn user_resolution_through_an_overlay_stack_with_a_whiteout() {
    // Bottom layer: the base image's databases. Top layer: replaces /etc/passwd and deletes
    // /etc/group with a whiteout.
    let lower = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    write(lower.path(), "etc/passwd", BUSYBOX_PASSWD);
    write(lower.path(), "etc/group", BUSYBOX_GROUP);
    write(
        upper.path(),
        "etc/passwd",
        &format!("{BUSYBOX_PASSWD}app:x:1000:1000:app:/home/app:/bin/sh\n"),
    );
    nix::sys::stat::mknod(
        &upper.path().join("etc/group"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let rootfs = OverlayRootfs::new(vec![upper.path().into(), lower.path().into()]);
    let spec_for = |user: &str| {
        let mut opts = options();
        opts.user = Some(user.into());
        build_spec_for(
            SeccompArch::X86_64,
            &busybox_image(),
            &opts,
            &rootfs,
            &host(),
        )
    };

    // root is in wheel in the lower /etc/group, but that file is deleted above it.
    let spec = spec_for("root").unwrap();
    let u = spec.process().as_ref().unwrap().user().clone();
    assert_eq!(u.additional_gids().as_deref(), Some(&[0][..]));
    // The user added by the top layer is found.
    let spec = spec_for("app").unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
    assert!(p
        .env()
        .as_ref()
        .unwrap()
        .contains(&"HOME=/home/app".to_string()));
    // Groups by name are gone with the file; numeric ones still work.
    let err = spec_for("app:wheel").unwrap_err();
    assert!(matches!(&err, SpecError::UnknownGroup { group, .. } if group == "wheel"));
    assert_eq!(
        spec_for("app:10")
            .unwrap()
            .process()
            .as_ref()
            .unwrap()
            .user()
            .gid(),
        10
    );
}

#[test]
fn privileged_lifts_every_restriction() {
    let mut opts = options();
    opts.privileged = true;
    let spec = build(&opts).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert_eq!(linux.masked_paths().as_deref(), Some(&[][..]));
    assert_eq!(linux.readonly_paths().as_deref(), Some(&[][..]));
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 41);
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    let sys = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(!sys.options().as_ref().unwrap().contains(&"ro".to_string()));
}

#[test]
fn seccomp_unconfined_keeps_the_other_protections() {
    let mut opts = options();
    opts.security_opts = vec![SecurityOpt::parse("seccomp=unconfined").unwrap()];
    let spec = build(&opts).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert_eq!(linux.masked_paths().as_ref().unwrap().len(), 11);
    assert_eq!(
        spec.process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .len(),
        14
    );
}

#[test]
fn seccomp_follows_the_final_capabilities() {
    let spec = build(&options()).unwrap();
    let deny = (LinuxSeccompAction::ScmpActErrno, 1);
    let allow = (LinuxSeccompAction::ScmpActAllow, 1);
    assert_eq!(seccomp::evaluate(seccomp_of(&spec), "mount", &[]), deny);
    assert_eq!(seccomp::evaluate(seccomp_of(&spec), "chroot", &[]), allow);
    let mut opts = options();
    opts.cap_add = vec!["sys_admin".into()];
    opts.cap_drop = vec!["SYS_CHROOT".into()];
    let spec = build(&opts).unwrap();
    assert_eq!(seccomp::evaluate(seccomp_of(&spec), "mount", &[]), allow);
    assert_eq!(seccomp::evaluate(seccomp_of(&spec), "chroot", &[]), deny);
}

#[test]
fn no_new_privileges_option() {
    let mut opts = options();
    opts.security_opts = vec![SecurityOpt::NoNewPrivileges(true)];
    let spec = build(&opts).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().no_new_privileges(),
        Some(true)
    );
    opts.security_opts.push(SecurityOpt::NoNewPrivileges(false));
    let spec = build(&opts).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), None);
}

#[test]
fn init_wraps_the_command() {
    let mut opts = options();
    opts.command = vec!["sleep".into(), "60".into()];
    opts.init = Some(InitProcess::new("/usr/local/bin/dockmaster"));
    let spec = build(&opts).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_deref(),
        Some(&["/dev/init", "--", "sleep", "60"].map(String::from)[..])
    );
    let m = spec.mounts().as_ref().unwrap().last().unwrap();
    assert_eq!(m.destination(), Path::new("/dev/init"));
    // A multi-call binary can be told what to be.
    opts.init = Some(InitProcess {
        host_path: "/usr/local/bin/dockmaster".into(),
        container_path: "/dev/init".into(),
        args: vec!["init".into(), "--".into()],
    });
    let spec = build(&opts).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_deref(),
        Some(&["/dev/init", "init", "--", "sleep", "60"].map(String::from)[..])
    );
}

#[test]
fn host_network_shares_the_namespace_and_refuses_net_sysctls() {
    let mut opts = options();
    opts.network = NetworkMode::Host;
    let spec = build(&opts).unwrap();
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(ns.iter().all(|n| n.typ() != LinuxNamespaceType::Network));
    opts.sysctls = BTreeMap::from([("net.core.somaxconn".into(), "1024".into())]);
    assert!(matches!(
        build(&opts).unwrap_err(),
        SpecError::Sysctl { .. }
    ));
    opts.network = NetworkMode::None;
    let spec = build(&opts).unwrap();
    let sysctl = spec.linux().as_ref().unwrap().sysctl().clone().unwrap();
    assert_eq!(sysctl["net.core.somaxconn"], "1024");
}

#[test]
fn read_only_rootfs_tty_hostname_workdir() {
    let mut opts = options();
    opts.read_only = true;
    opts.tty = true;
    opts.hostname = Some("web".into());
    opts.working_dir = Some("/tmp".into());
    let spec = build(&opts).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    assert_eq!(spec.hostname().as_deref(), Some("web"));
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.cwd(), Path::new("/tmp"));
    let env = p.env().as_ref().unwrap();
    assert!(env.contains(&"TERM=xterm".to_string()));
    assert!(env.contains(&"HOSTNAME=web".to_string()));
}

#[test]
fn limits_and_mounts_reach_the_spec() {
    let mut opts = options();
    opts.memory = Some(64 << 20);
    opts.cpus = Some(0.5);
    opts.pids_limit = Some(32);
    opts.ulimits = vec![Ulimit::parse("nofile=1024:2048").unwrap()];
    opts.tmpfs = vec![TmpfsMount::parse("/run:size=8m").unwrap()];
    opts.binds = vec![BindMount::parse("/srv/www:/var/www:ro").unwrap()];
    let spec = build(&opts).unwrap();
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(r.memory().unwrap().limit(), Some(64 << 20));
    assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
    assert_eq!(r.pids().unwrap().limit(), 32);
    let rl = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
    assert_eq!((rl[0].soft(), rl[0].hard()), (1024, 2048));
    let dests: Vec<String> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    assert_eq!(&dests[7..], ["/run", "/var/www"]);
}

#[test]
fn ulimit_above_the_host_fails_the_build_clearly() {
    let mut opts = options();
    opts.ulimits = vec![Ulimit::parse("nofile=1048576").unwrap()];
    let msg = build(&opts).unwrap_err().to_string();
    assert!(
        msg.contains("20000") && msg.contains("CAP_SYS_RESOURCE"),
        "{msg}"
    );
}

#[test]
fn bad_identity_and_capabilities_are_refused() {
    let mut opts = options();
    opts.identity.container_id = "../escape".into();
    assert!(matches!(
        build(&opts).unwrap_err(),
        SpecError::Invalid {
            field: "container_id",
            ..
        }
    ));
    let mut opts = options();
    opts.cap_add = vec!["CAP_WIZARDRY".into()];
    let err = build(&opts).unwrap_err();
    assert!(err.to_string().contains("CAP_WIZARDRY"));
}

#[test]
fn native_build_uses_this_machines_architecture() {
    let root = busybox_root();
    let spec = build_spec(
        &busybox_image(),
        &options(),
        &DirRootfs::new(root.path()),
        &HostLimits::current(),
    )
    .unwrap();
    let arches = seccomp_of(&spec).architectures().clone().unwrap();
    if cfg!(target_arch = "x86_64") {
        assert_eq!(arches[0], oci_spec::runtime::Arch::ScmpArchX86_64);
    } else if cfg!(target_arch = "aarch64") {
        assert_eq!(arches[0], oci_spec::runtime::Arch::ScmpArchAarch64);
    }
}
