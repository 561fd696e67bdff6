//! Finding the cgroup hierarchies from the mount table (`/proc/self/mountinfo`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::fsio;
use super::{CgroupError, Controller};

/// Default place of the mount table.
pub const PROC_MOUNTINFO: &str = "/proc/self/mountinfo";

/// The mount table is small on any real host; a bigger one is refused rather than read whole.
const MOUNTINFO_CAP: u64 = 16 * 1024 * 1024;

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSetup {
    /// Only v1 hierarchies: one mount point per controller (comounted controllers such as
    /// `cpu,cpuacct` share one path).
    V1 {
        mounts: BTreeMap<Controller, PathBuf>,
    },
    /// The unified hierarchy only, mounted at `root`.
    V2 { root: PathBuf },
    /// v1 hierarchies for the controllers plus a unified hierarchy at `unified` (systemd's
    /// "hybrid" layout). Controllers are used through v1: the unified tree may list some
    /// (such as hugetlb) but the ones a container needs live in v1.
    Hybrid {
        mounts: BTreeMap<Controller, PathBuf>,
        unified: PathBuf,
    },
}

impl CgroupSetup {
    /// Detects the setup of the calling process from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self, CgroupError> {
        Self::from_mountinfo_file(Path::new(PROC_MOUNTINFO))
    }

    /// Detects the setup from a mount table at `path` (injectable for tests).
    pub fn from_mountinfo_file(path: &Path) -> Result<Self, CgroupError> {
        let text = fsio::read_capped(path, MOUNTINFO_CAP)?;
        Self::from_mountinfo(&text).ok_or_else(|| CgroupError::NotMounted {
            path: path.to_path_buf(),
        })
    }

    /// Parses mount table text; `None` when no cgroup filesystem is mounted. Lines that do
    /// not parse are skipped: the kernel writes this file, but it must never panic us.
    pub fn from_mountinfo(text: &str) -> Option<Self> {
        let mut mounts: BTreeMap<Controller, PathBuf> = BTreeMap::new();
        let mut unified: Option<PathBuf> = None;
        for line in text.lines() {
            let Some(entry) = parse_line(line) else {
                continue;
            };
            match entry.fstype {
                // The first cgroup2 mount wins; later ones are bind mounts of it.
                "cgroup2" => {
                    unified.get_or_insert(entry.mount_point);
                }
                "cgroup" => {
                    for opt in entry.super_options.split(',') {
                        if let Some(controller) = Controller::from_name(opt) {
                            mounts
                                .entry(controller)
                                .or_insert_with(|| entry.mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        match (mounts.is_empty(), unified) {
            (true, None) => None,
            (true, Some(root)) => Some(CgroupSetup::V2 { root }),
            (false, None) => Some(CgroupSetup::V1 { mounts }),
            (false, Some(unified)) => Some(CgroupSetup::Hybrid { mounts, unified }),
        }
    }

    /// The v1 mount points per controller (empty on pure v2).
    pub fn v1_mounts(&self) -> Option<&BTreeMap<Controller, PathBuf>> {
        match self {
            CgroupSetup::V1 { mounts } | CgroupSetup::Hybrid { mounts, .. } => Some(mounts),
            CgroupSetup::V2 { .. } => None,
        }
    }

    /// Whether controllers are driven through the v1 interface (v1 and hybrid hosts).
    pub fn uses_v1(&self) -> bool {
        self.v1_mounts().is_some()
    }

    /// The controllers this host offers to containers: the mounted v1 controllers, or on
    /// pure v2 those listed in the root's `cgroup.controllers`.
    pub fn available_controllers(&self) -> Result<BTreeSet<Controller>, CgroupError> {
        match self {
            CgroupSetup::V1 { mounts } | CgroupSetup::Hybrid { mounts, .. } => {
                Ok(mounts.keys().copied().collect())
            }
            CgroupSetup::V2 { root } => {
                let text = fsio::read_small(&root.join("cgroup.controllers"))?;
                Ok(text
                    .split_whitespace()
                    .filter_map(Controller::from_name)
                    .collect())
            }
        }
    }
}

struct Entry<'a> {
    mount_point: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

/// One mountinfo line: `id parent maj:min root mount-point opts [optional…] - fstype source
/// super-opts`.
fn parse_line(line: &str) -> Option<Entry<'_>> {
    let mut fields = line.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let _dev = fields.next()?;
    let _root = fields.next()?;
    let mount_point = fields.next()?;
    let _opts = fields.next()?;
    // Optional fields (shared:N, master:N, …) run until the lone "-".
    loop {
        if fields.next()? == "-" {
            break;
        }
    }
    let fstype = fields.next()?;
    let _source = fields.next()?;
    let super_options = fields.next().unwrap_or("");
    Some(Entry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype,
        super_options,
    })
}

/// A mount point with the kernel's escapes undone.
fn unescape(field: &str) -> String {
    String::from_utf8_lossy(&crate::fsutil::unescape_mountinfo(field.as_bytes())).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's layout (Debian 12 guest): separate v1 hierarchies, a named systemd one
    /// and an empty unified tree.
    pub(crate) const HYBRID: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd v1 host (CentOS 7 style): comounted cpu,cpuacct and net_cls,net_prio, with
    /// optional fields, and no unified mount.
    const V1: &str = "\
25 22 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
33 25 0:30 / /sys/fs/cgroup/my\\040cgroups rw,relatime shared:14 - cgroup cgroup rw,freezer
";

    /// A modern systemd host: cgroup2 at /sys/fs/cgroup, nothing else.
    const V2: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 24 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn detects_hybrid_from_this_hosts_layout() {
        let setup = CgroupSetup::from_mountinfo(HYBRID).expect("cgroups found");
        let CgroupSetup::Hybrid { mounts, unified } = &setup else {
            panic!("expected hybrid, got {setup:?}");
        };
        assert_eq!(unified, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            mounts[&Controller::Memory],
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(mounts[&Controller::Cpu], Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(
            mounts[&Controller::Cpuacct],
            Path::new("/sys/fs/cgroup/cpuacct")
        );
        assert_eq!(mounts[&Controller::Pids], Path::new("/sys/fs/cgroup/pids"));
        // name=systemd is not a controller.
        assert_eq!(mounts.len(), 8);
        assert!(setup.uses_v1());
        let available = setup.available_controllers().unwrap();
        assert!(available.contains(&Controller::Freezer));
        assert!(!available.contains(&Controller::Io));
    }

    #[test]
    fn detects_v1_with_comounted_controllers_and_escaped_paths() {
        let setup = CgroupSetup::from_mountinfo(V1).expect("cgroups found");
        let CgroupSetup::V1 { mounts } = &setup else {
            panic!("expected v1, got {setup:?}");
        };
        let comounted = Path::new("/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(mounts[&Controller::Cpu], comounted);
        assert_eq!(mounts[&Controller::Cpuacct], comounted);
        assert_eq!(
            mounts[&Controller::Memory],
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            mounts[&Controller::Freezer],
            Path::new("/sys/fs/cgroup/my cgroups")
        );
        assert_eq!(
            mounts[&Controller::NetCls],
            Path::new("/sys/fs/cgroup/net_cls,net_prio")
        );
        assert_eq!(
            mounts[&Controller::NetPrio],
            Path::new("/sys/fs/cgroup/net_cls,net_prio")
        );
        assert_eq!(mounts.len(), 7);
    }

    #[test]
    fn detects_v2_and_reads_its_controllers() {
        let setup = CgroupSetup::from_mountinfo(V2).expect("cgroups found");
        assert_eq!(
            setup,
            CgroupSetup::V2 {
                root: PathBuf::from("/sys/fs/cgroup")
            }
        );
        assert!(!setup.uses_v1());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        let fake = CgroupSetup::V2 {
            root: dir.path().to_path_buf(),
        };
        let expected: BTreeSet<_> = [
            Controller::Cpu,
            Controller::Cpuset,
            Controller::Io,
            Controller::Memory,
            Controller::Hugetlb,
            Controller::Pids,
            Controller::Rdma,
            Controller::Misc,
        ]
        .into_iter()
        .collect();
        assert_eq!(fake.available_controllers().unwrap(), expected);
    }

    #[test]
    fn no_cgroups_and_garbage_lines() {
        assert_eq!(CgroupSetup::from_mountinfo(""), None);
        let garbage = "x\n1 2 3\n1 2 3 4 5 6 no-separator cgroup2\n\\\\\\ \n";
        assert_eq!(CgroupSetup::from_mountinfo(garbage), None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mountinfo");
        std::fs::write(&path, "22 1 254:0 / / rw - ext4 /dev/vda rw\n").unwrap();
        let err = CgroupSetup::from_mountinfo_file(&path).unwrap_err();
        assert!(matches!(err, CgroupError::NotMounted { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));

        std::fs::write(&path, HYBRID).unwrap();
        assert!(matches!(
            CgroupSetup::from_mountinfo_file(&path).unwrap(),
            CgroupSetup::Hybrid { .. }
        ));
    }

    #[test]
    fn unescape_handles_edges() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("\\134"), "\\");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\999"), "\\999");
        assert_eq!(unescape("\\777"), "\\777");
    }
}
