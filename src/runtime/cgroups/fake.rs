//! Tests against fake cgroupfs trees in a temp dir: plain files where the kernel would
//! have control files, so the exact bytes written can be checked for v1 and v2.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

const MIB: i64 = 1024 * 1024;
const V1_UNLIMITED: &str = "9223372036854771712\n";

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A hybrid host like this one but with cpu and cpuacct comounted, as mountinfo text whose
/// mount points are in `root`; the directories are made with the root's kernel files.
fn hybrid_tree(root: &Path) -> CgroupSetup {
    let r = root.display();
    let mountinfo = format!(
        "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / {r} rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {r}/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / {r}/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / {r}/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / {r}/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / {r}/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / {r}/unified rw,relatime - cgroup2 cgroup2 rw
"
    );
    let info = root.join("mountinfo");
    write(&info, &mountinfo);
    for dir in ["cpu,cpuacct", "cpuset", "memory", "pids", "systemd"] {
        write(&root.join(dir).join("cgroup.procs"), "1\n");
    }
    write(&root.join("unified/cgroup.controllers"), "hugetlb\n");
    CgroupSetup::from_mountinfo_file(&info).unwrap()
}

/// What the kernel puts in a new v1 cgroup's directories.
fn populate_v1(cgroup: &Cgroup) {
    let cpu = cgroup.controller_dir(Controller::Cpu).unwrap();
    write(&cpu.join("cpu.cfs_quota_us"), "-1\n");
    write(&cpu.join("cpu.cfs_period_us"), "100000\n");
    write(&cpu.join("cpu.shares"), "1024\n");
    write(&cpu.join("cpuacct.usage"), "0\n");
    let mem = cgroup.controller_dir(Controller::Memory).unwrap();
    write(&mem.join("memory.limit_in_bytes"), V1_UNLIMITED);
    write(&mem.join("memory.soft_limit_in_bytes"), V1_UNLIMITED);
    write(&mem.join("memory.memsw.limit_in_bytes"), V1_UNLIMITED);
    write(&mem.join("memory.usage_in_bytes"), "0\n");
    write(
        &mem.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    );
    if let Some(pids) = cgroup.controller_dir(Controller::Pids) {
        write(&pids.join("pids.max"), "max\n");
        write(&pids.join("pids.current"), "0\n");
    }
    for dir in cgroup.dirs() {
        write(&dir.join("cgroup.procs"), "");
    }
}

/// A v2 root offering `controllers`, with an existing `dockmaster` parent.
fn v2_tree(root: &Path, controllers: &str) -> CgroupSetup {
    write(&root.join("cgroup.controllers"), controllers);
    write(&root.join("cgroup.subtree_control"), "");
    write(&root.join("dockmaster/cgroup.controllers"), "");
    write(&root.join("dockmaster/cgroup.subtree_control"), "");
    CgroupSetup::V2 {
        root: root.to_path_buf(),
    }
}

/// What the kernel puts in a new v2 cgroup with cpu, memory and pids enabled.
fn populate_v2(dir: &Path) {
    write(&dir.join("cgroup.procs"), "");
    write(&dir.join("memory.max"), "max\n");
    write(&dir.join("memory.low"), "0\n");
    write(&dir.join("memory.swap.max"), "max\n");
    write(&dir.join("cpu.max"), "max 100000\n");
    write(&dir.join("cpu.weight"), "100\n");
    write(&dir.join("pids.max"), "max\n");
}

fn full_resources() -> Resources {
    Resources {
        memory_limit: Some(32 * MIB),
        memory_reservation: Some(16 * MIB),
        memory_swap: Some(64 * MIB),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpu_shares: Some(512),
        pids_limit: Some(5),
    }
}

#[test]
fn v1_create_makes_leaf_in_each_hierarchy_once() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = hybrid_tree(tmp.path());
    let cgroup = Cgroup::create(&setup, "dockmaster/abc").unwrap();
    assert!(cgroup.is_v1());
    let root = tmp.path();
    let mut dirs: Vec<PathBuf> = cgroup.dirs().into_iter().map(Path::to_path_buf).collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            root.join("cpu,cpuacct/dockmaster/abc"),
            root.join("memory/dockmaster/abc"),
            root.join("pids/dockmaster/abc"),
        ]
    );
    for dir in &dirs {
        assert!(dir.is_dir(), "{}", dir.display());
    }
    // Not in cpuset (empty cpus/mems would refuse tasks) nor in the unified tree.
    assert!(!root.join("cpuset/dockmaster").exists());
    assert!(!root.join("unified/dockmaster").exists());
    // Creating again is harmless and gives the same handle as open().
    assert_eq!(Cgroup::create(&setup, "dockmaster/abc").unwrap(), cgroup);
    assert_eq!(Cgroup::open(&setup, "./dockmaster//abc").unwrap(), cgroup);
}

#[test]
fn v1_apply_writes_exact_values() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = hybrid_tree(tmp.path());
    let cgroup = Cgroup::create(&setup, "dockmaster/abc").unwrap();
    populate_v1(&cgroup);
    cgroup.apply(&full_resources()).unwrap();

    let cpu = tmp.path().join("cpu,cpuacct/dockmaster/abc");
    let mem = tmp.path().join("memory/dockmaster/abc");
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "33554432");
    assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "67108864");
    assert_eq!(read(&mem.join("memory.soft_limit_in_bytes")), "16777216");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.shares")), "512");
    assert_eq!(read(&tmp.path().join("pids/dockmaster/abc/pids.max")), "5");

    // Unlimited everything: -1 in v1 files (memsw follows memory), "max" for pids,
    // shares clamped like the kernel does.
    cgroup
        .apply(&Resources {
            memory_limit: Some(-1),
            cpu_quota: Some(-1),
            cpu_shares: Some(1),
            pids_limit: Some(0),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "-1");
    assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "-1");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "-1");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.shares")), "2");
    assert_eq!(
        read(&tmp.path().join("pids/dockmaster/abc/pids.max")),
        "max"
    );

    cgroup
        .apply(&Resources {
            cpu_shares: Some(1 << 30),
            pids_limit: Some(-1),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(read(&cpu.join("cpu.shares")), "262144");
    assert_eq!(
        read(&tmp.path().join("pids/dockmaster/abc/pids.max")),
        "max"
    );
}

#[test]
fn v1_swap_is_skipped_without_swap_accounting() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = hybrid_tree(tmp.path());
    let cgroup = Cgroup::create(&setup, "c").unwrap();
    populate_v1(&cgroup);
    let mem = tmp.path().join("memory/c");
    fs::remove_file(mem.join("memory.memsw.limit_in_bytes")).unwrap();
    cgroup.apply(&full_resources()).unwrap();
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "33554432");
    assert!(!mem.join("memory.memsw.limit_in_bytes").exists());
}

#[test]
fn v1_missing_controller_and_missing_file_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = hybrid_tree(tmp.path());
    let CgroupSetup::Hybrid {
        mut mounts,
        unified,
    } = setup
    else {
        panic!("hybrid expected");
    };
    mounts.remove(&Controller::Pids);
    let setup = CgroupSetup::Hybrid { mounts, unified };
    let cgroup = Cgroup::create(&setup, "c").unwrap();
    populate_v1(&cgroup);
    let err = cgroup
        .apply(&Resources {
            pids_limit: Some(5),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(matches!(
        err,
        CgroupError::ControllerUnavailable {
            controller: Controller::Pids,
            ..
        }
    ));
    assert_eq!(err.category(), Category::NotFound);
    assert!(err.to_string().contains("pids"), "{err}");

    // A control file the kernel would have made but is missing: the error names it.
    let mem = tmp.path().join("memory/c");
    fs::remove_file(mem.join("memory.soft_limit_in_bytes")).unwrap();
    let err = cgroup
        .apply(&Resources {
            memory_reservation: Some(MIB),
            ..Resources::default()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("memory.soft_limit_in_bytes") && msg.contains("1048576"),
        "{msg}"
    );
}

#[test]
fn invalid_resources_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = hybrid_tree(tmp.path());
    let cgroup = Cgroup::create(&setup, "c").unwrap();
    populate_v1(&cgroup);
    let cases = [
        (
            Resources {
                memory_swap: Some(64 * MIB),
                pids_limit: Some(3),
                ..Resources::default()
            },
            "memory_swap",
        ),
        (
            Resources {
                memory_limit: Some(64 * MIB),
                memory_swap: Some(32 * MIB),
                ..Resources::default()
            },
            "memory_swap",
        ),
        (
            Resources {
                memory_limit: Some(0),
                ..Resources::default()
            },
            "memory_limit",
        ),
        (
            Resources {
                memory_reservation: Some(-2),
                ..Resources::default()
            },
            "memory_reservation",
        ),
        (
            Resources {
                cpu_quota: Some(0),
                ..Resources::default()
            },
            "cpu_quota",
        ),
        (
            Resources {
                cpu_quota: Some(1000),
                cpu_period: Some(10),
                ..Resources::default()
            },
            "cpu_period",
        ),
    ];
    for (resources, name) in cases {
        let err = cgroup.apply(&resources).unwrap_err();
        assert!(
            matches!(&err, CgroupError::InvalidResource { name: n, .. } if *n == name),
            "{resources:?}: {err}"
        );
        assert_eq!(err.category(), Category::Invalid);
    }
    assert_eq!(read(&tmp.path().join("pids/c/pids.max")), "max\n");
    assert_eq!(
        read(&tmp.path().join("memory/c/memory.limit_in_bytes")),
        V1_UNLIMITED
    );
    assert_eq!(
        read(&tmp.path().join("cpu,cpuacct/c/cpu.cfs_quota_us")),
        "-1\n"
    );
}

#[test]
fn v1_stats_parse_kernel_files() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = hybrid_tree(tmp.path());
    let cgroup = Cgroup::create(&setup, "dockmaster/abc").unwrap();
    populate_v1(&cgroup);
    let cpu = tmp.path().join("cpu,cpuacct/dockmaster/abc");
    let mem = tmp.path().join("memory/dockmaster/abc");
    write(&cpu.join("cpuacct.usage"), "2503411007\n");
    write(&mem.join("memory.usage_in_bytes"), "33513472\n");
    write(&mem.join("memory.limit_in_bytes"), "33554432\n");
    write(
        &mem.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    write(&tmp.path().join("pids/dockmaster/abc/pids.current"), "4\n");
    assert_eq!(
        cgroup.stats().unwrap(),
        Stats {
            cpu_usage_ns: Some(2_503_411_007),
            memory_usage_bytes: Some(33_513_472),
            memory_limit_bytes: Some(33_554_432),
            oom_kills: Some(3),
            pids_current: Some(4),
        }
    );

    // No limit reads as None; an old kernel without the oom_kill line gives None too.
    write(&mem.join("memory.limit_in_bytes"), V1_UNLIMITED);
    write(
        &mem.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\n",
    );
    let stats = cgroup.stats().unwrap();
    assert_eq!(stats.memory_limit_bytes, None);
    assert_eq!(stats.oom_kills, None);

    write(&mem.join("memory.usage_in_bytes"), "lots\n");
    let err = cgroup.stats().unwrap_err();
    assert!(err.to_string().contains("memory.usage_in_bytes"), "{err}");

    let gone = Cgroup::open(&setup, "dockmaster/gone").unwrap();
    assert!(matches!(gone.stats(), Err(CgroupError::Missing { .. })));
}

#[test]
fn procs_add_and_list() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = hybrid_tree(tmp.path());
    let cgroup = Cgroup::create(&setup, "c").unwrap();
    populate_v1(&cgroup);
    cgroup.add_pid(4242).unwrap();
    for dir in cgroup.dirs() {
        assert_eq!(read(&dir.join("cgroup.procs")), "4242");
    }
    assert!(cgroup.add_pid(0).is_err());

    // Listed from the pids hierarchy, sorted and deduplicated.
    write(&tmp.path().join("pids/c/cgroup.procs"), "12\n5\n12\n");
    assert_eq!(cgroup.pids().unwrap(), [5, 12]);
    write(&tmp.path().join("pids/c/cgroup.procs"), "12\nx\n");
    let err = cgroup.pids().unwrap_err();
    assert!(err.to_string().contains("cgroup.procs"), "{err}");
}

#[test]
fn remove_takes_only_leaf_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = hybrid_tree(tmp.path());
    let cgroup = Cgroup::create(&setup, "dockmaster/abc").unwrap();
    let leaves: Vec<PathBuf> = cgroup.dirs().into_iter().map(Path::to_path_buf).collect();
    cgroup.remove().unwrap();
    for leaf in &leaves {
        assert!(!leaf.exists(), "{}", leaf.display());
        assert!(leaf.parent().unwrap().is_dir(), "parent kept");
    }
    // Removing again is fine, and kill_all on a removed cgroup signals nobody.
    cgroup.remove().unwrap();
    assert_eq!(cgroup.kill_all(Signal::SIGKILL).unwrap(), 0);

    // A leaf that cannot go (here: a child cgroup inside) gives an error naming it.
    let cgroup = Cgroup::create(&setup, "dockmaster/abc").unwrap();
    let child = tmp.path().join("memory/dockmaster/abc/child");
    fs::create_dir(&child).unwrap();
    let err = cgroup.remove_within(Duration::from_millis(50)).unwrap_err();
    assert!(
        err.to_string().contains(
            &tmp.path()
                .join("memory/dockmaster/abc")
                .display()
                .to_string()
        ),
        "{err}"
    );
}

#[test]
fn paths_stay_inside_the_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = hybrid_tree(tmp.path());
    for bad in ["../escape", "a/../../b", "/abs", "", "."] {
        let err = Cgroup::create(&setup, bad).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidPath { .. }),
            "{bad}: {err}"
        );
        assert_eq!(err.category(), Category::Invalid);
    }
    assert!(!tmp.path().join("escape").exists());
    assert_eq!(
        Cgroup::open(&setup, "a/./b").unwrap().path(),
        Path::new("a/b")
    );
}

#[test]
fn shares_to_weight_matches_runc() {
    // Values from runc's ConvertCPUSharesToCgroupV2Value tests and the formula's ends.
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(shares_to_weight(0), 1);
    assert_eq!(shares_to_weight(u64::MAX), 10_000);
}

#[test]
fn v2_create_enables_controllers_top_down() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = v2_tree(tmp.path(), "cpuset cpu io memory hugetlb pids rdma misc\n");
    let cgroup = Cgroup::create(&setup, "dockmaster/abc").unwrap();
    assert!(!cgroup.is_v1());
    assert_eq!(cgroup.dirs(), [tmp.path().join("dockmaster/abc")]);
    assert!(tmp.path().join("dockmaster/abc").is_dir());
    assert_eq!(
        read(&tmp.path().join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        read(&tmp.path().join("dockmaster/cgroup.subtree_control")),
        "+cpu +memory +pids"
    );

    // Already enabled (the kernel lists them without '+'): nothing rewritten; only what
    // the root offers is asked for.
    let tmp = tempfile::tempdir().unwrap();
    let setup = v2_tree(tmp.path(), "memory pids\n");
    write(&tmp.path().join("cgroup.subtree_control"), "memory pids\n");
    Cgroup::create(&setup, "dockmaster/abc").unwrap();
    assert_eq!(
        read(&tmp.path().join("cgroup.subtree_control")),
        "memory pids\n"
    );
    assert_eq!(
        read(&tmp.path().join("dockmaster/cgroup.subtree_control")),
        "+memory +pids"
    );
}

#[test]
fn v2_apply_writes_exact_values() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = v2_tree(tmp.path(), "cpu memory pids\n");
    let cgroup = Cgroup::create(&setup, "dockmaster/abc").unwrap();
    let dir = tmp.path().join("dockmaster/abc");
    populate_v2(&dir);

    cgroup
        .apply(&Resources {
            cpu_period: None,
            cpu_shares: Some(1024),
            ..full_resources()
        })
        .unwrap();
    assert_eq!(read(&dir.join("memory.max")), "33554432");
    assert_eq!(read(&dir.join("memory.low")), "16777216");
    // v2 limits swap alone: memory+swap 64 MiB minus memory 32 MiB.
    assert_eq!(read(&dir.join("memory.swap.max")), "33554432");
    // Quota without a period gets the default period.
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("cpu.weight")), "39");
    assert_eq!(read(&dir.join("pids.max")), "5");

    // A new period alone keeps the quota in force.
    cgroup
        .apply(&Resources {
            cpu_period: Some(200_000),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(read(&dir.join("cpu.max")), "50000 200000");

    // Unlimited: "max" everywhere.
    cgroup
        .apply(&Resources {
            memory_limit: Some(-1),
            memory_reservation: Some(-1),
            cpu_quota: Some(-1),
            cpu_period: Some(50_000),
            cpu_shares: Some(2),
            pids_limit: Some(-1),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(read(&dir.join("memory.max")), "max");
    assert_eq!(read(&dir.join("memory.low")), "max");
    assert_eq!(read(&dir.join("memory.swap.max")), "max");
    assert_eq!(read(&dir.join("cpu.max")), "max 50000");
    assert_eq!(read(&dir.join("cpu.weight")), "1");
    assert_eq!(read(&dir.join("pids.max")), "max");

    // memory+swap equal to memory means no swap at all.
    cgroup
        .apply(&Resources {
            memory_limit: Some(64 * MIB),
            memory_swap: Some(64 * MIB),
            ..Resources::default()
        })
        .unwrap();
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("memory.max")), "67108864");

    // Without swap accounting the swap value is skipped, the rest applied.
    fs::remove_file(dir.join("memory.swap.max")).unwrap();
    cgroup.apply(&full_resources()).unwrap();
    assert_eq!(read(&dir.join("memory.max")), "33554432");
    assert!(!dir.join("memory.swap.max").exists());

    // A controller that is not enabled has no files: the error names the file.
    fs::remove_file(dir.join("pids.max")).unwrap();
    let err = cgroup
        .apply(&Resources {
            pids_limit: Some(7),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("pids.max"), "{err}");
}

#[test]
fn v2_stats_parse_kernel_files() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = v2_tree(tmp.path(), "cpu memory pids\n");
    let cgroup = Cgroup::create(&setup, "dockmaster/abc").unwrap();
    let dir = tmp.path().join("dockmaster/abc");
    populate_v2(&dir);
    write(
        &dir.join("cpu.stat"),
        "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
    );
    write(&dir.join("memory.current"), "1048576\n");
    write(&dir.join("memory.max"), "33554432\n");
    write(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n",
    );
    write(&dir.join("pids.current"), "3\n");
    assert_eq!(
        cgroup.stats().unwrap(),
        Stats {
            cpu_usage_ns: Some(123_456_000),
            memory_usage_bytes: Some(1_048_576),
            memory_limit_bytes: Some(33_554_432),
            oom_kills: Some(2),
            pids_current: Some(3),
        }
    );
    write(&dir.join("memory.max"), "max\n");
    assert_eq!(cgroup.stats().unwrap().memory_limit_bytes, None);

    write(&dir.join("cgroup.procs"), "7\n3\n");
    assert_eq!(cgroup.pids().unwrap(), [3, 7]);

    cgroup.remove().unwrap_err(); // plain files inside: a fake tree cannot rmdir
    for file in fs::read_dir(&dir).unwrap() {
        fs::remove_file(file.unwrap().path()).unwrap();
    }
    cgroup.remove().unwrap();
    assert!(!dir.exists());
    assert!(tmp.path().join("dockmaster").is_dir());
}
