//! A container's cgroup usage, read at scrape time.
//!
//! The seam is the cgroup setup (which hierarchies are mounted where): production detects it
//! from `/proc/self/mountinfo`, tests point it at fake cgroupfs trees in a temp dir through a
//! mount table of their own. The files themselves are read by
//! [`crate::runtime::cgroups`], the same code the shim uses, at the path the runtime gives a
//! container ([`crate::runtime::engine::cgroup_path`]): v1 `cpuacct.usage`,
//! `memory.usage_in_bytes`, `memory.oom_control`; v2 `cpu.stat`, `memory.current`,
//! `memory.events`. Hybrid hosts are read through v1, as the runtime writes them.

use std::path::Path;

use crate::runtime::cgroups::{Cgroup, CgroupError, CgroupSetup, Stats, PROC_MOUNTINFO};
use crate::runtime::engine::cgroup_path;

/// What the metrics take from a container's cgroup. `None` where the controller or the
/// file is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupUsage {
    /// CPU time, user and system, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Memory charged to the cgroup, in bytes.
    pub memory_bytes: Option<u64>,
    /// Processes of the cgroup the kernel's OOM killer ended.
    pub oom_kills: Option<u64>,
}

impl From<Stats> for CgroupUsage {
    fn from(s: Stats) -> CgroupUsage {
        CgroupUsage {
            // f64 holds integers exactly up to 2^53 ns (104 days of CPU); beyond that the
            // rounding is far below a scrape's resolution.
            cpu_seconds: s.cpu_usage_ns.map(|ns| ns as f64 / 1e9),
            memory_bytes: s.memory_usage_bytes,
            oom_kills: s.oom_kills,
        }
    }
}

/// Reads containers' cgroups on one cgroup setup.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    /// `None` when no cgroup filesystem is mounted: every container then has no usage.
    setup: Option<CgroupSetup>,
}

impl CgroupReader {
    /// The setup of this host, from `/proc/self/mountinfo`. A host without cgroups (or an
    /// unreadable mount table) gives a reader that finds no usage, logged once here.
    pub fn detect() -> CgroupReader {
        match CgroupReader::from_mountinfo_file(Path::new(PROC_MOUNTINFO)) {
            Ok(reader) => reader,
            Err(err) => {
                tracing::warn!("container cgroup metrics are off: {err}");
                CgroupReader { setup: None }
            }
        }
    }

    /// The setup described by a mount table at `path` (tests: mount points in a temp dir).
    pub fn from_mountinfo_file(path: &Path) -> Result<CgroupReader, CgroupError> {
        Ok(CgroupReader::with_setup(CgroupSetup::from_mountinfo_file(
            path,
        )?))
    }

    pub fn with_setup(setup: CgroupSetup) -> CgroupReader {
        CgroupReader { setup: Some(setup) }
    }

    /// The usage of container `id`'s cgroup; `Ok(None)` when it has none (not started,
    /// exited and released, or no cgroups on this host).
    pub fn usage(&self, id: &str) -> Result<Option<CgroupUsage>, CgroupError> {
        let Some(setup) = &self.setup else {
            return Ok(None);
        };
        let cgroup = Cgroup::open(setup, cgroup_path(id))?;
        match cgroup.stats() {
            Ok(stats) => Ok(Some(stats.into())),
            Err(CgroupError::Missing { .. }) => Ok(None),
            // Released between the directory check and the reads.
            Err(CgroupError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn write(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// A mount table whose cgroup mount points are `root/<dir>`, one line per (dir, fstype,
    /// super options).
    fn mountinfo(root: &Path, mounts: &[(&str, &str, &str)]) -> PathBuf {
        let r = root.display();
        let mut text = format!(
            "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
             31 23 0:28 / {r} rw,relatime - tmpfs tmpfs rw,mode=755\n"
        );
        for (i, (dir, fstype, opts)) in mounts.iter().enumerate() {
            let mount_point = if dir.is_empty() {
                r.to_string()
            } else {
                format!("{r}/{dir}")
            };
            text.push_str(&format!(
                "{} 31 0:{} / {mount_point} rw,relatime - {fstype} {fstype} {opts}\n",
                40 + i,
                40 + i
            ));
        }
        let path = root.join("mountinfo");
        write(&path, &text);
        path
    }

    /// This host's layout: separate v1 cpu and cpuacct hierarchies plus an empty unified
    /// tree (hybrid).
    #[test]
    fn v1_hybrid_host_reads_cpuacct_memory_and_oom_control() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let info = mountinfo(
            root,
            &[
                ("cpu", "cgroup", "rw,cpu"),
                ("cpuacct", "cgroup", "rw,cpuacct"),
                ("memory", "cgroup", "rw,memory"),
                ("pids", "cgroup", "rw,pids"),
                ("unified", "cgroup2", "rw"),
            ],
        );
        let reader = CgroupReader::from_mountinfo_file(&info).unwrap();
        // Not created yet (or already released): no usage, no error.
        assert_eq!(reader.usage(ID).unwrap(), None);

        let leaf = |c: &str| root.join(c).join("dockmaster").join(ID);
        write(&leaf("cpu").join("cpu.shares"), "1024\n");
        write(&leaf("cpuacct").join("cpuacct.usage"), "2500000000\n");
        write(&leaf("memory").join("memory.usage_in_bytes"), "1048576\n");
        write(
            &leaf("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        write(&leaf("pids").join("cgroup.procs"), "12\n");
        write(&leaf("pids").join("pids.current"), "1\n");
        // The unified tree holds nothing for the container: v1 is what counts.
        write(
            &root.join("unified/dockmaster").join(ID).join("cpu.stat"),
            "usage_usec 999\n",
        );
        assert_eq!(
            reader.usage(ID).unwrap(),
            Some(CgroupUsage {
                cpu_seconds: Some(2.5),
                memory_bytes: Some(1_048_576),
                oom_kills: Some(3),
            })
        );

        // A kernel without the oom_kill line (before 4.13): counted as unknown, not zero.
        write(
            &leaf("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\n",
        );
        assert_eq!(reader.usage(ID).unwrap().unwrap().oom_kills, None);

        // Garbage in a counter file is an error naming the file.
        write(&leaf("cpuacct").join("cpuacct.usage"), "lots\n");
        let err = reader.usage(ID).unwrap_err().to_string();
        assert!(
            err.contains("cpuacct.usage") && err.contains("lots"),
            "{err}"
        );
    }

    /// Distributions that comount cpu and cpuacct (one `cpu,cpuacct` directory).
    #[test]
    fn v1_comounted_cpu_cpuacct() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let info = mountinfo(
            root,
            &[
                ("cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
                ("memory", "cgroup", "rw,memory"),
            ],
        );
        let reader = CgroupReader::from_mountinfo_file(&info).unwrap();
        let cpu = root.join("cpu,cpuacct/dockmaster").join(ID);
        let mem = root.join("memory/dockmaster").join(ID);
        write(&cpu.join("cpuacct.usage"), "1000000\n");
        write(&mem.join("cgroup.procs"), "");
        write(&mem.join("memory.usage_in_bytes"), "4096\n");
        write(&mem.join("memory.oom_control"), "oom_kill 0\n");
        assert_eq!(
            reader.usage(ID).unwrap(),
            Some(CgroupUsage {
                cpu_seconds: Some(0.001),
                memory_bytes: Some(4096),
                oom_kills: Some(0),
            })
        );
    }

    #[test]
    fn v2_reads_cpu_stat_memory_current_and_events() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let info = mountinfo(root, &[("", "cgroup2", "rw,nsdelegate")]);
        let reader = CgroupReader::from_mountinfo_file(&info).unwrap();
        assert_eq!(reader.usage(ID).unwrap(), None);

        let dir = root.join("dockmaster").join(ID);
        write(&dir.join("cgroup.procs"), "42\n");
        write(
            &dir.join("cpu.stat"),
            "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
        );
        write(&dir.join("memory.current"), "8388608\n");
        write(
            &dir.join("memory.events"),
            "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        assert_eq!(
            reader.usage(ID).unwrap(),
            Some(CgroupUsage {
                cpu_seconds: Some(1.5),
                memory_bytes: Some(8_388_608),
                oom_kills: Some(1),
            })
        );

        // Without the memory controller enabled: CPU only.
        fs::remove_file(dir.join("memory.current")).unwrap();
        fs::remove_file(dir.join("memory.events")).unwrap();
        let usage = reader.usage(ID).unwrap().unwrap();
        assert_eq!(usage.cpu_seconds, Some(1.5));
        assert_eq!((usage.memory_bytes, usage.oom_kills), (None, None));
    }

    #[test]
    fn no_cgroups_no_usage() {
        let tmp = tempfile::tempdir().unwrap();
        let info = mountinfo(tmp.path(), &[]);
        assert!(matches!(
            CgroupReader::from_mountinfo_file(&info),
            Err(CgroupError::NotMounted { .. })
        ));
        let reader = CgroupReader { setup: None };
        assert_eq!(reader.usage(ID).unwrap(), None);
    }

    #[test]
    fn ids_never_escape_the_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let info = mountinfo(tmp.path(), &[("", "cgroup2", "rw")]);
        let reader = CgroupReader::from_mountinfo_file(&info).unwrap();
        assert!(matches!(
            reader.usage("../../etc"),
            Err(CgroupError::InvalidPath { .. })
        ));
    }
}
