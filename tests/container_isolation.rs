//! Runtime isolation and limits with real containers, observed from inside (what the process
//! sees in /proc, its mounts, its credentials) and from the host (cgroup files, mount tables,
//! exit records). Runs as root on the cgroup v1 (hybrid) host of TESTBED.md.
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use support::containers::{err_text, Host, BUSYBOX};
use support::image::DEFAULT_PATH;

/// Docker's default capability set (moby `oci/caps/defaults.go`): CHOWN, DAC_OVERRIDE,
/// FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT,
/// MKNOD, AUDIT_WRITE, SETFCAP.
const DOCKER_DEFAULT_CAPS: u64 = 0x0000_0000_a804_25fb;
const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_RESOURCE: u32 = 24;

fn out_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The value of `Key:` in a /proc/PID/status text.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in status:\n{status}"))
        .trim()
        .to_string()
}

/// A hex capability mask from a /proc/PID/status text.
fn cap_field(status: &str, key: &str) -> u64 {
    let v = status_field(status, key);
    u64::from_str_radix(&v, 16).unwrap_or_else(|e| panic!("{key} {v:?} is not hex: {e}"))
}

fn host_status() -> String {
    std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status")
}

/// /proc/self/status of a container run with `flags`.
fn container_status(host: &Host, flags: &[&str]) -> String {
    host.sh_ok(flags, "cat /proc/self/status")
}

/// Interface names listed in a /proc/net/dev text.
fn interfaces(net_dev: &str) -> BTreeSet<String> {
    net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
        .collect()
}

/// The mount points (field 5) of a mountinfo text.
fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

/// A v1 cgroup file of a running container, trimmed.
fn cgroup_value(id: &str, controller: &str, file: &str) -> String {
    let path = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("dockmaster")
        .join(id)
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Waits until the container's stdout log contains `needle`; returns the log.
fn wait_log(host: &Host, id: &str, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let logs = out_text(&host.run(&["logs", id]));
        if logs.contains(needle) {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not log {needle:?} within {within:?}; logs so far: {logs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `run` that must fail before the container starts: Docker's exit code 125, a message on
/// stderr containing every `needle`, and no container left behind (the runs use `--rm`).
fn assert_refused(host: &Host, out: &Output, needles: &[&str]) -> String {
    let err = err_text(out);
    assert_eq!(
        out.status.code(),
        Some(125),
        "stdout: {}\nstderr: {err}",
        out_text(out)
    );
    for n in needles {
        assert!(err.contains(n), "stderr does not mention {n:?}: {err}");
    }
    assert!(
        host.all_ids().is_empty(),
        "a refused --rm run left a container behind"
    );
    err
}

/// /proc/self/limits "Max open files" (soft, hard) of this process: the host's limits.
fn host_nofile() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/self/limits");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

// ---- 1. PID 1, hostname, network namespaces ----

#[test]
fn the_command_is_pid_1_and_the_hostname_is_the_short_id() {
    let host = Host::new();
    let out = host.run(&[
        "run",
        BUSYBOX,
        "sh",
        "-c",
        "echo $$; hostname; echo $HOSTNAME",
    ]);
    assert!(out.status.success(), "{}", err_text(&out));
    let ids = host.all_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let short = &ids[0][..12];
    assert_eq!(out_text(&out), format!("1\n{short}\n{short}\n"));
}

#[test]
fn hostname_flag_sets_the_uts_name_without_touching_the_hosts() {
    let host = Host::new();
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = host.sh_ok(
        &["--hostname", "box-7"],
        "hostname; echo $HOSTNAME; cat /proc/sys/kernel/hostname",
    );
    assert_eq!(out, "box-7\nbox-7\nbox-7\n");
    let after = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(before, after);
}

#[test]
fn network_none_has_only_loopback() {
    let host = Host::new();
    let explicit = host.sh_ok(&["--network", "none"], "cat /proc/net/dev");
    assert_eq!(interfaces(&explicit), BTreeSet::from(["lo".to_string()]));
    // Loopback is up, as with Docker: IFF_UP (0x1) set in its flags.
    let flags = host.sh_ok(&["--network", "none"], "cat /sys/class/net/lo/flags");
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo flags {flags:#x}");
    // none is the default.
    let default = host.sh_ok(&[], "cat /proc/net/dev");
    assert_eq!(interfaces(&default), BTreeSet::from(["lo".to_string()]));
    let host_ifaces = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    assert!(
        host_ifaces.len() > 1,
        "the host has only {host_ifaces:?}: the test would not tell namespaces apart"
    );
}

#[test]
fn network_host_sees_the_hosts_interfaces() {
    let host = Host::new();
    let before = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    let out = host.sh_ok(&["--network", "host"], "hostname; cat /proc/net/dev");
    let (name, dev) = out.split_once('\n').unwrap();
    // Like Docker: the host's name, not the container id.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(name, host_name.trim());
    let inside = interfaces(dev);
    let after = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    // Other tests may add or remove links meanwhile: compare with what was stable.
    let stable: BTreeSet<_> = before.intersection(&after).cloned().collect();
    let seen: BTreeSet<_> = before.union(&after).cloned().collect();
    assert!(stable.len() > 1, "host interfaces {stable:?}");
    assert!(
        inside.is_superset(&stable),
        "inside {inside:?}, host {stable:?}"
    );
    assert!(inside.is_subset(&seen), "inside {inside:?}, host {seen:?}");
}

// ---- 2. Mounts ----

#[test]
fn a_mount_made_inside_stays_inside() {
    let host = Host::new();
    let marker = format!("dm-marker-{}", std::process::id());
    let script = format!(
        "mkdir -p /mnt && mount -t tmpfs {marker} /mnt && grep -q {marker} /proc/self/mountinfo \
         && echo mounted; sleep 30"
    );
    let id = host.detached(&["--cap-add", "SYS_ADMIN"], &["sh", "-c", &script]);
    wait_log(&host, &id, "mounted", Duration::from_secs(10));
    let pid = host.inspect(&id)["State"]["Pid"]
        .as_u64()
        .expect("a running container has a Pid");
    // The mount exists, in the container's mount namespace only.
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(theirs.contains(&marker), "{theirs}");
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !ours.contains(&marker),
        "the container's mount leaked to the host"
    );
    let init = std::fs::read_to_string("/proc/1/mountinfo").unwrap();
    assert!(
        !init.contains(&marker),
        "the container's mount leaked to PID 1"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        std::fs::read_link("/proc/self/ns/mnt").unwrap()
    );
    host.ok(&["rm", "-f", &id]);
}

#[test]
fn the_rootfs_is_this_containers_overlay_and_host_paths_are_not_mounted() {
    let host = Host::new();
    let tmp = host.root.path().to_string_lossy().into_owned();
    let script =
        format!("cat /proc/self/mountinfo; echo ---; test -e {tmp} && echo host-dir-visible; true");
    let out = host.run(&["run", BUSYBOX, "sh", "-c", &script]);
    assert!(out.status.success(), "{}", err_text(&out));
    let text = out_text(&out);
    let (mountinfo, rest) = text.split_once("---\n").expect("separator");
    assert_eq!(rest, "", "the host's temp dir {tmp} is reachable inside");
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("a / mount");
    let fstype = root.split(" - ").nth(1).and_then(|s| s.split(' ').next());
    assert_eq!(fstype, Some("overlay"), "{root}");
    let id = &host.all_ids()[0];
    let upper = format!("upperdir={}", host.container_dir(id).display());
    assert!(root.contains(&upper), "{root} does not use {upper}");
    for point in mount_points(mountinfo) {
        assert!(
            !point.starts_with(&tmp),
            "host path {point} is mounted inside"
        );
    }
}

// ---- 3. Masked and read-only paths ----

#[test]
fn dockers_masked_paths_are_masked() {
    let host = Host::new();
    // Files are masked with /dev/null (char 1:3, empty), directories with an empty read-only
    // tmpfs. Only paths the host's kernel has are masked.
    let files: Vec<&str> = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/latency_stats",
        "/proc/sched_debug",
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .collect();
    let dirs: Vec<&str> = ["/sys/firmware", "/proc/acpi", "/proc/scsi"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(
        files.contains(&"/proc/keys") && dirs.contains(&"/sys/firmware"),
        "this host lacks the paths the test relies on: {files:?} {dirs:?}"
    );
    let mut script = String::new();
    for f in &files {
        script.push_str(&format!(
            "echo {f} $(stat -c '%t:%T' {f}) $(cat {f} | wc -c)\n"
        ));
    }
    for d in &dirs {
        script.push_str(&format!(
            "echo {d} $(stat -f -c %T {d}) $(ls -A {d} | wc -l) \
             $(touch {d}/x 2>/dev/null && echo writable || echo ro)\n"
        ));
    }
    let out = host.sh_ok(&[], &script);
    let mut expected = String::new();
    for f in &files {
        expected.push_str(&format!("{f} 1:3 0\n"));
    }
    for d in &dirs {
        expected.push_str(&format!("{d} tmpfs 0 ro\n"));
    }
    assert_eq!(out, expected);
}

#[test]
fn proc_sys_is_read_only() {
    let host = Host::new();
    let out = host.sh(&[], "echo changed > /proc/sys/kernel/hostname");
    assert!(!out.status.success());
    assert!(
        err_text(&out).contains("Read-only file system"),
        "{}",
        err_text(&out)
    );
    let out = host.sh_ok(&[], "grep ' /proc/sys ' /proc/mounts");
    let opts = out.split(' ').nth(3).unwrap_or_default();
    assert!(opts.split(',').any(|o| o == "ro"), "{out}");
}

#[test]
fn privileged_masks_nothing() {
    let host = Host::new();
    let out = host.sh_ok(
        &["--privileged"],
        "stat -c '%t:%T' /proc/keys; stat -f -c %T /sys/firmware; \
         echo priv-box > /proc/sys/kernel/hostname && hostname",
    );
    // /proc/keys is the kernel's file (not /dev/null), /sys/firmware is sysfs, and /proc/sys
    // is writable (the hostname written is the container's own: UTS is namespaced).
    assert_eq!(out, "0:0\nsysfs\npriv-box\n");
}

// ---- 4. Capabilities ----

#[test]
fn default_capabilities_are_dockers_set() {
    let host = Host::new();
    let status = container_status(&host, &[]);
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            cap_field(&status, key),
            DOCKER_DEFAULT_CAPS,
            "{key}: {status}"
        );
    }
    assert_eq!(cap_field(&status, "CapInh"), 0);
    assert_eq!(cap_field(&status, "CapAmb"), 0);
    // The profile is loaded from the compiled cache by the init: mode 2 is a filter.
    assert!(status.contains("Seccomp:\t2\n"), "{status}");
}

#[test]
fn exec_processes_get_the_containers_capabilities_and_filter() {
    let host = Host::new();
    let id = host.detached(&[], &["sleep", "60"]);
    let status = host.ok(&["exec", &id, "cat", "/proc/self/status"]);
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            cap_field(&status, key),
            DOCKER_DEFAULT_CAPS,
            "{key}: {status}"
        );
    }
    assert_eq!(cap_field(&status, "CapInh"), 0);
    assert!(status.contains("Seccomp:\t2\n"), "{status}");
    // A blocked syscall fails in an exec'd process too.
    let out = host.run(&["exec", &id, "unshare", "-U", "true"]);
    assert!(!out.status.success(), "{out:?}");
    // A non-root user ends with no capabilities at all.
    let status = host.ok(&["exec", "-u", "1000", &id, "cat", "/proc/self/status"]);
    assert_eq!(cap_field(&status, "CapEff"), 0);
    assert_eq!(cap_field(&status, "CapPrm"), 0);
    assert_eq!(cap_field(&status, "CapBnd"), DOCKER_DEFAULT_CAPS);
    host.ok(&["rm", "-f", &id]);
}

#[test]
fn cap_drop_all_leaves_none() {
    let host = Host::new();
    let status = container_status(&host, &["--cap-drop", "ALL"]);
    assert_eq!(cap_field(&status, "CapEff"), 0);
    assert_eq!(cap_field(&status, "CapPrm"), 0);
    assert_eq!(cap_field(&status, "CapBnd"), 0);
    assert!(status.contains("Seccomp:\t2\n"), "{status}");
    let status = container_status(&host, &["--cap-drop", "ALL", "--cap-add", "CHOWN"]);
    assert_eq!(cap_field(&status, "CapEff"), 1 << CAP_CHOWN);
    assert_eq!(cap_field(&status, "CapBnd"), 1 << CAP_CHOWN);
}

#[test]
fn cap_add_and_cap_drop_change_single_bits() {
    let host = Host::new();
    let status = container_status(&host, &["--cap-add", "NET_ADMIN"]);
    assert_eq!(
        cap_field(&status, "CapEff"),
        DOCKER_DEFAULT_CAPS | 1 << CAP_NET_ADMIN
    );
    // Docker's spellings: lower case, and with the CAP_ prefix.
    let status = container_status(
        &host,
        &["--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN"],
    );
    assert_eq!(
        cap_field(&status, "CapEff"),
        (DOCKER_DEFAULT_CAPS | 1 << CAP_NET_ADMIN) & !(1 << CAP_CHOWN)
    );
}

#[test]
fn privileged_gets_every_capability_the_host_has_and_no_seccomp() {
    let host = Host::new();
    let ours = cap_field(&host_status(), "CapBnd");
    let status = container_status(&host, &["--privileged"]);
    assert_eq!(cap_field(&status, "CapEff"), ours, "{status}");
    assert_eq!(cap_field(&status, "CapBnd"), ours, "{status}");
    assert_eq!(status_field(&status, "Seccomp"), "0");
}

#[test]
fn a_capability_the_host_lacks_is_refused_by_name() {
    let ours = cap_field(&host_status(), "CapBnd");
    if ours & (1 << CAP_SYS_RESOURCE) != 0 {
        // A host with CAP_SYS_RESOURCE grants it: that is the other half of the contract.
        let host = Host::new();
        let status = container_status(&host, &["--cap-add", "SYS_RESOURCE"]);
        assert_ne!(cap_field(&status, "CapEff") & (1 << CAP_SYS_RESOURCE), 0);
        return;
    }
    // TESTBED.md: this host's bounding set lacks CAP_SYS_RESOURCE.
    let host = Host::new();
    let out = host.sh(&["--cap-add", "SYS_RESOURCE"], "true");
    assert_refused(&host, &out, &["SYS_RESOURCE"]);
}

// ---- 5, 6. seccomp and no_new_privs ----

#[test]
fn the_default_seccomp_profile_forbids_unshare() {
    let host = Host::new();
    // Creating a user namespace needs no capability, so only the seccomp profile (Docker's
    // blocks unshare without CAP_SYS_ADMIN) stands in the way. `busybox unshare`: the image's
    // busybox has the applet, there is just no link for it.
    let script = "grep '^Seccomp:' /proc/self/status; busybox unshare -U true && echo unshared";
    let out = host.sh(&[], script);
    assert_eq!(out_text(&out), "Seccomp:\t2\n");
    assert!(!out.status.success());
    assert!(
        err_text(&out).contains("Operation not permitted"),
        "{}",
        err_text(&out)
    );
    // The same call, same capabilities, without the filter.
    let out = host.sh_ok(&["--security-opt", "seccomp=unconfined"], script);
    assert_eq!(out, "Seccomp:\t0\nunshared\n");
}

#[test]
fn no_new_privileges_only_when_asked() {
    let host = Host::new();
    let status = container_status(&host, &[]);
    assert_eq!(status_field(&status, "NoNewPrivs"), "0");
    for opt in ["no-new-privileges", "no-new-privileges:true"] {
        let status = container_status(&host, &["--security-opt", opt]);
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{opt}");
        // The seccomp filter still applies.
        assert_eq!(status_field(&status, "Seccomp"), "2", "{opt}");
    }
    let status = container_status(&host, &["--security-opt", "no-new-privileges:false"]);
    assert_eq!(status_field(&status, "NoNewPrivs"), "0");
}

// ---- 7. Users, groups, environment, working directory ----

#[test]
fn user_by_name_sets_ids_groups_and_home() {
    let host = Host::new();
    let out = host.sh_ok(
        &["-u", "www"],
        "id -u; id -g; echo $HOME; grep '^Groups:' /proc/self/status",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["33", "33", "/www"], "{out}");
    let groups: BTreeSet<&str> = lines[3]["Groups:".len()..].split_whitespace().collect();
    assert!(!groups.contains("0"), "root's group leaked: {out}");
}

#[test]
fn numeric_user_and_group_need_no_passwd_entry() {
    let host = Host::new();
    let out = host.sh_ok(&["-u", "1234:5678"], "id -u; id -g; echo $HOME");
    assert_eq!(out, "1234\n5678\n/\n");
    // name:group
    let out = host.sh_ok(&["-u", "www:daemon"], "id -u; id -g");
    assert_eq!(out, "33\n1\n");
}

#[test]
fn group_add_gives_supplementary_groups() {
    let host = Host::new();
    let out = host.sh_ok(
        &["-u", "www", "--group-add", "daemon", "--group-add", "4242"],
        "id -u; id -g; grep '^Groups:' /proc/self/status",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["33", "33"], "{out}");
    let groups: BTreeSet<&str> = lines[2]["Groups:".len()..].split_whitespace().collect();
    assert!(groups.contains("1") && groups.contains("4242"), "{out}");
    assert!(!groups.contains("0"), "{out}");
    let bad = host.sh(&["--group-add", "no-such-group"], "true");
    assert_refused(&host, &bad, &["no-such-group"]);
}

#[test]
fn environment_is_merged_over_the_images() {
    let host = Host::new();
    let env_file = host.root.path().join("app.env");
    std::fs::write(
        &env_file,
        "# a comment\n\nB=two\nC=three words\nA=from-file\n",
    )
    .unwrap();
    let mut cmd = host.cmd(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-e",
        "PASSED",
        "--env-file",
        env_file.to_str().unwrap(),
        BUSYBOX,
        "env",
    ]);
    cmd.env("PASSED", "through");
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", err_text(&out));
    let env: BTreeSet<String> = out_text(&out).lines().map(str::to_string).collect();
    for want in [
        "A=1",
        "B=two",
        "C=three words",
        "PASSED=through",
        DEFAULT_PATH,
    ] {
        assert!(env.contains(want), "{want} missing from {env:?}");
    }
    assert!(
        !env.contains("A=from-file"),
        "-e must win over --env-file: {env:?}"
    );
    assert!(!env.iter().any(|e| e.starts_with('#')), "{env:?}");
}

#[test]
fn workdir_sets_the_current_directory() {
    let host = Host::new();
    assert_eq!(host.sh_ok(&["-w", "/tmp"], "pwd"), "/tmp\n");
    // Docker creates a missing working directory.
    assert_eq!(host.sh_ok(&["-w", "/srv/app"], "pwd"), "/srv/app\n");
    assert_eq!(host.sh_ok(&[], "pwd"), "/\n");
}

#[test]
fn an_unknown_user_is_a_clear_error() {
    let host = Host::new();
    let out = host.sh(&["-u", "nosuchuser"], "true");
    let err = assert_refused(&host, &out, &["nosuchuser", "no such user"]);
    assert_eq!(
        err.matches("no such user").count(),
        1,
        "the message repeats itself: {err}"
    );
    let out = host.sh(&["-u", "www:nosuchgroup"], "true");
    assert_refused(&host, &out, &["nosuchgroup"]);
}

// ---- 8. Read-only rootfs, tmpfs and bind mounts ----

#[test]
fn read_only_rootfs_refuses_writes() {
    let host = Host::new();
    let out = host.sh(&["--read-only"], "touch /x");
    assert!(!out.status.success());
    assert!(
        err_text(&out).contains("Read-only file system"),
        "{}",
        err_text(&out)
    );
    let out = host.sh(&["--read-only"], "touch /tmp/x");
    assert!(
        !out.status.success(),
        "without --tmpfs /tmp is part of the rootfs"
    );
}

#[test]
fn tmpfs_is_writable_on_a_read_only_rootfs() {
    let host = Host::new();
    let out = host.sh_ok(
        &["--read-only", "--tmpfs", "/tmp"],
        "echo hi > /tmp/x && cat /tmp/x; stat -f -c %T /tmp",
    );
    assert_eq!(out, "hi\ntmpfs\n");
}

#[test]
fn bind_mounts_are_writable_or_read_only() {
    let host = Host::new();
    let dir = host.root.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("from-host"), "host says hi\n").unwrap();
    let rw = format!("{}:/data", dir.display());
    let out = host.sh_ok(
        &["-v", &rw],
        "cat /data/from-host; echo written > /data/inside",
    );
    assert_eq!(out, "host says hi\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("inside")).unwrap(),
        "written\n"
    );

    let ro = format!("{}:/data:ro", dir.display());
    let out = host.sh(
        &["-v", &ro],
        "cat /data/from-host; echo nope > /data/ro-write",
    );
    assert_eq!(out_text(&out), "host says hi\n");
    assert!(!out.status.success());
    assert!(
        err_text(&out).contains("Read-only file system"),
        "{}",
        err_text(&out)
    );
    assert!(!dir.join("ro-write").exists());
}

// ---- 9. cgroup limits ----

#[test]
fn memory_limit_and_reservation_are_in_the_cgroup() {
    let host = Host::new();
    let id = host.detached(
        &["-m", "32m", "--memory-reservation", "16m"],
        &["sleep", "30"],
    );
    host.wait_status(&id, "running", Duration::from_secs(10));
    assert_eq!(
        cgroup_value(&id, "memory", "memory.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(
        cgroup_value(&id, "memory", "memory.soft_limit_in_bytes"),
        (16u64 << 20).to_string()
    );
    // The container's process is in that cgroup.
    let pid = host.inspect(&id)["State"]["Pid"].as_u64().unwrap();
    let procs = cgroup_value(&id, "memory", "cgroup.procs");
    assert!(
        procs.lines().any(|p| p == pid.to_string()),
        "{pid} not in {procs}"
    );
    host.ok(&["rm", "-f", &id]);
}

#[test]
fn cpus_set_the_cfs_quota() {
    let host = Host::new();
    let id = host.detached(&["--cpus", "0.5"], &["sleep", "30"]);
    host.wait_status(&id, "running", Duration::from_secs(10));
    assert_eq!(cgroup_value(&id, "cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(cgroup_value(&id, "cpu", "cpu.cfs_quota_us"), "50000");
    host.ok(&["rm", "-f", &id]);
}

#[test]
fn cpu_shares_are_in_the_cgroup() {
    let host = Host::new();
    let id = host.detached(&["--cpu-shares", "512"], &["sleep", "30"]);
    host.wait_status(&id, "running", Duration::from_secs(10));
    assert_eq!(cgroup_value(&id, "cpu", "cpu.shares"), "512");
    host.ok(&["rm", "-f", &id]);
}

#[test]
fn pids_limit_is_in_the_cgroup_and_stops_forks() {
    let host = Host::new();
    let id = host.detached(&["--pids-limit", "20"], &["sleep", "30"]);
    host.wait_status(&id, "running", Duration::from_secs(10));
    assert_eq!(cgroup_value(&id, "pids", "pids.max"), "20");
    host.ok(&["rm", "-f", &id]);

    let out = host.sh(
        &["--pids-limit", "20"],
        "for i in $(seq 40); do sleep 5 & done; wait",
    );
    let err = err_text(&out);
    assert!(
        !out.status.success(),
        "40 forks under a limit of 20 succeeded"
    );
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "{err}"
    );
}

// ---- 10. OOM kill ----

#[test]
fn the_memory_limit_oom_kills_and_is_reported() {
    let host = Host::new();
    // busybox tail keeps the last lines of a file without newlines: it grows without bound.
    let id = host.detached(&["-m", "16m"], &["tail", "/dev/zero"]);
    let v = host.wait_status(&id, "exited", Duration::from_secs(30));
    assert_eq!(v["State"]["OOMKilled"], true, "{v:#}");
    assert_eq!(v["State"]["ExitCode"], 137, "{v:#}");

    // Control: a SIGKILL that is not an OOM kill has the same exit code, and is not reported
    // as one.
    let id = host.detached(&["-m", "16m"], &["sleep", "30"]);
    host.wait_status(&id, "running", Duration::from_secs(10));
    host.ok(&["kill", "-s", "KILL", &id]);
    let v = host.wait_status(&id, "exited", Duration::from_secs(30));
    assert_eq!(v["State"]["ExitCode"], 137, "{v:#}");
    assert_eq!(v["State"]["OOMKilled"], false, "{v:#}");
}

// ---- 11. ulimits ----

#[test]
fn ulimit_sets_soft_and_hard_limits() {
    let host = Host::new();
    let out = host.sh_ok(&["--ulimit", "nofile=100:200"], "ulimit -n; ulimit -Hn");
    assert_eq!(out, "100\n200\n");
    // SOFT alone sets both.
    let out = host.sh_ok(&["--ulimit", "nofile=300"], "ulimit -n; ulimit -Hn");
    assert_eq!(out, "300\n300\n");
}

#[test]
fn a_ulimit_above_the_hosts_hard_limit_is_refused_clearly() {
    let host = Host::new();
    let (_, hard) = host_nofile();
    let want = hard + 10_000;
    let flag = format!("nofile={want}:{want}");
    if cap_field(&host_status(), "CapEff") & (1 << CAP_SYS_RESOURCE) != 0 {
        // With CAP_SYS_RESOURCE the limit can be raised: it must then be applied.
        let out = host.sh_ok(&["--ulimit", &flag], "ulimit -Hn");
        assert_eq!(out, format!("{want}\n"));
        return;
    }
    let out = host.sh(&["--ulimit", &flag], "true");
    let err = assert_refused(
        &host,
        &out,
        &["nofile", "hard limit", &want.to_string(), &hard.to_string()],
    );
    assert!(!err.contains("failed syscall"), "an obscure failure: {err}");
}

// ---- 12. sysctls ----

#[test]
fn a_namespaced_sysctl_changes_only_the_container() {
    let host = Host::new();
    let before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let out = host.sh_ok(
        &["--network", "none", "--sysctl", "net.ipv4.ip_forward=1"],
        "cat /proc/sys/net/ipv4/ip_forward",
    );
    assert_eq!(out, "1\n");
    let after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(before, after, "the host's ip_forward changed");
    // Not applicable when the network namespace is the host's.
    let out = host.sh(
        &["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
        "true",
    );
    assert_refused(&host, &out, &["net.ipv4.ip_forward"]);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        before
    );
}

#[test]
fn a_host_wide_sysctl_is_refused() {
    let host = Host::new();
    let before = std::fs::read_to_string("/proc/sys/kernel/panic").unwrap();
    let out = host.sh(&["--sysctl", "kernel.panic=1"], "true");
    assert_refused(&host, &out, &["kernel.panic", "not namespaced"]);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/panic").unwrap(),
        before
    );
}

// ---- /dev/shm ----

#[test]
fn shm_size_sizes_dev_shm() {
    let host = Host::new();
    let line = host.sh_ok(&["--shm-size", "32m"], "grep ' /dev/shm ' /proc/mounts");
    assert!(line.contains("size=32768k"), "{line}");
    let line = host.sh_ok(&[], "grep ' /dev/shm ' /proc/mounts");
    assert!(
        line.contains("size=65536k"),
        "Docker's default is 64m: {line}"
    );
}
