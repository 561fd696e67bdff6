//! The agent's own process metrics (`process_*`, the names every Prometheus client library
//! uses), read from procfs at scrape time: prometheus-client has no process collector.
//!
//! - `<pid dir>/stat`: user + system CPU ticks, thread count, start time (ticks after boot),
//!   virtual memory size;
//! - `<pid dir>/status`: `VmRSS` (kB);
//! - `<pid dir>/fd`: one entry per open descriptor;
//! - `<pid dir>/limits`: the soft `Max open files`;
//! - `<proc>/stat`: `btime`, the boot time in unix seconds.
//!
//! The paths are parameters so the parsers are tested on fake files as well as on the real
//! `/proc/self`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{Categorized, Category};

/// procfs text files here are a few KiB; anything larger is refused rather than read whole.
const READ_CAP: u64 = 256 * 1024;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub open_fds: u64,
    /// The soft limit on open descriptors; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// When the process started, in unix seconds.
    pub start_time_seconds: f64,
    pub threads: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is larger than {cap} bytes")]
    TooLarge { path: PathBuf, cap: u64 },
    #[error("unexpected content in {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("the kernel's clock tick rate is unknown (sysconf(_SC_CLK_TCK) failed)")]
    ClockTicks,
}

impl Categorized for ProcessError {
    fn category(&self) -> Category {
        match self {
            ProcessError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Category::NotFound
            }
            _ => Category::Internal,
        }
    }
}

impl ProcessStats {
    /// The calling process, from `/proc/self` and `/proc/stat`.
    pub fn read_self() -> Result<ProcessStats, ProcessError> {
        ProcessStats::read(
            Path::new("/proc/self"),
            Path::new("/proc/stat"),
            clock_ticks()?,
        )
    }

    /// The process whose procfs directory is `pid_dir`; `proc_stat` is the system-wide
    /// `/proc/stat` (for the boot time); `ticks_per_second` the kernel's USER_HZ.
    pub fn read(
        pid_dir: &Path,
        proc_stat: &Path,
        ticks_per_second: u64,
    ) -> Result<ProcessStats, ProcessError> {
        let stat_path = pid_dir.join("stat");
        let stat = parse_stat(&stat_path, &read_capped(&stat_path)?)?;
        let status_path = pid_dir.join("status");
        let rss_kib = status_value_kib(&status_path, &read_capped(&status_path)?, "VmRSS")?;
        let limits_path = pid_dir.join("limits");
        let max_fds = max_open_files(&limits_path, &read_capped(&limits_path)?)?;
        let boot = boot_time(proc_stat, &read_capped(proc_stat)?)?;
        let open_fds = count_fds(&pid_dir.join("fd"))?;
        let ticks = ticks_per_second.max(1) as f64;
        Ok(ProcessStats {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            // Kernel threads and zombies have no VmRSS line.
            resident_memory_bytes: rss_kib.unwrap_or(0).saturating_mul(1024),
            virtual_memory_bytes: stat.vsize,
            open_fds,
            max_fds,
            start_time_seconds: boot as f64 + stat.starttime as f64 / ticks,
            threads: stat.threads,
        })
    }
}

/// USER_HZ, the unit of the tick counts in `/proc/<pid>/stat`.
pub fn clock_ticks() -> Result<u64, ProcessError> {
    // SAFETY: sysconf only reads a configuration value; it has no pointer arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|t| *t > 0)
        .ok_or(ProcessError::ClockTicks)
}

fn read_capped(path: &Path) -> Result<String, ProcessError> {
    let read_err = |source| ProcessError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(READ_CAP + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > READ_CAP {
        return Err(ProcessError::TooLarge {
            path: path.to_path_buf(),
            cap: READ_CAP,
        });
    }
    Ok(text)
}

fn parse_err(path: &Path, reason: impl Into<String>) -> ProcessError {
    ProcessError::Parse {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The fields of `/proc/<pid>/stat` the metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    starttime: u64,
    vsize: u64,
}

/// `pid (comm) state ppid …`: comm may hold spaces and parentheses, so the fields are
/// counted from the last `)`. Field numbers are proc(5)'s (1-based; state is 3).
fn parse_stat(path: &Path, text: &str) -> Result<Stat, ProcessError> {
    let close = text
        .rfind(')')
        .ok_or_else(|| parse_err(path, "no \")\" after the command name"))?;
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |number: usize, name: &str| -> Result<u64, ProcessError> {
        // fields[0] is field 3 (state).
        let value = fields
            .get(number - 3)
            .ok_or_else(|| parse_err(path, format!("field {number} ({name}) is missing")))?;
        value.parse().map_err(|_| {
            parse_err(
                path,
                format!(
                    "field {number} ({name}) is not a number: {:?}",
                    truncate(value)
                ),
            )
        })
    };
    Ok(Stat {
        utime: field(14, "utime")?,
        stime: field(15, "stime")?,
        threads: field(20, "num_threads")?,
        starttime: field(22, "starttime")?,
        vsize: field(23, "vsize")?,
    })
}

/// A `Key:   123 kB` line of `/proc/<pid>/status`, in KiB; `None` when the key is absent.
fn status_value_kib(path: &Path, text: &str, key: &str) -> Result<Option<u64>, ProcessError> {
    for line in text.lines() {
        let Some((k, rest)) = line.split_once(':') else {
            continue;
        };
        if k != key {
            continue;
        }
        let mut parts = rest.split_whitespace();
        let value = parts.next().unwrap_or("");
        if parts.next().is_some_and(|unit| unit != "kB") {
            return Err(parse_err(
                path,
                format!("{key} is not in kB: {:?}", truncate(rest)),
            ));
        }
        return value
            .parse()
            .map(Some)
            .map_err(|_| parse_err(path, format!("{key} is not a number: {:?}", truncate(rest))));
    }
    Ok(None)
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`; `None` when unlimited.
fn max_open_files(path: &Path, text: &str) -> Result<Option<u64>, ProcessError> {
    const NAME: &str = "Max open files";
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(NAME))
        .ok_or_else(|| parse_err(path, format!("no {NAME:?} line")))?;
    match line.split_whitespace().next() {
        Some("unlimited") => Ok(None),
        Some(soft) => soft
            .parse()
            .map(Some)
            .map_err(|_| parse_err(path, format!("{NAME} soft limit {:?}", truncate(soft)))),
        None => Err(parse_err(path, format!("{NAME} has no value"))),
    }
}

/// `btime` of `/proc/stat`: boot time in unix seconds.
fn boot_time(path: &Path, text: &str) -> Result<u64, ProcessError> {
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or_else(|| parse_err(path, "no btime line"))?;
    value
        .trim()
        .parse()
        .map_err(|_| parse_err(path, format!("btime {:?}", truncate(value))))
}

fn count_fds(dir: &Path) -> Result<u64, ProcessError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ProcessError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    // A descriptor closed while we iterate is simply not counted.
    Ok(entries.filter(|e| e.is_ok()).count() as u64)
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    /// A stat line as the kernel writes it, for a command name with spaces and `)`.
    const STAT: &str = "4242 (dock) (master x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
        250 150 0 0 20 0 7 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 \
        0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    fn fake_proc(dir: &Path, stat: &str, limits_soft: &str) -> (PathBuf, PathBuf) {
        let pid = dir.join("4242");
        std::fs::create_dir_all(pid.join("fd")).unwrap();
        for fd in ["0", "1", "2", "7"] {
            std::fs::write(pid.join("fd").join(fd), "").unwrap();
        }
        std::fs::write(pid.join("stat"), stat).unwrap();
        std::fs::write(
            pid.join("status"),
            "Name:\tdockmaster\nState:\tS (sleeping)\nVmPeak:\t  20000 kB\n\
             VmRSS:\t   10240 kB\nThreads:\t7\n",
        )
        .unwrap();
        std::fs::write(
            pid.join("limits"),
            format!(
                "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max processes             96365                96365                processes \n\
                 Max open files            {limits_soft:<20} 20000                files     \n"
            ),
        )
        .unwrap();
        let stat_path = dir.join("stat");
        std::fs::write(
            &stat_path,
            "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1700000000\nprocesses 7\n",
        )
        .unwrap();
        (pid, stat_path)
    }

    #[test]
    fn parses_fake_procfs() {
        let tmp = tempfile::tempdir().unwrap();
        let (pid, stat) = fake_proc(tmp.path(), STAT, "1024");
        let s = ProcessStats::read(&pid, &stat, 100).unwrap();
        assert_eq!(
            s,
            ProcessStats {
                cpu_seconds: 4.0,
                resident_memory_bytes: 10 * 1024 * 1024,
                virtual_memory_bytes: 104_857_600,
                open_fds: 4,
                max_fds: Some(1024),
                start_time_seconds: 1_700_000_000.0 + 1234.56,
                threads: 7,
            }
        );

        let (pid, stat) = fake_proc(tmp.path(), STAT, "unlimited");
        assert_eq!(ProcessStats::read(&pid, &stat, 100).unwrap().max_fds, None);
    }

    #[test]
    fn bad_procfs_content_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (pid, stat) = fake_proc(tmp.path(), "4242 (truncated", "1024");
        let err = ProcessStats::read(&pid, &stat, 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("4242/stat"), "{err}");

        let (pid, stat) = fake_proc(tmp.path(), "4242 (x) S 1 2 3\n", "1024");
        let err = ProcessStats::read(&pid, &stat, 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("field 14 (utime) is missing"), "{err}");

        let bad = STAT.replacen(" 250 ", " lots ", 1);
        let (pid, stat) = fake_proc(tmp.path(), &bad, "1024");
        let err = ProcessStats::read(&pid, &stat, 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("utime") && err.contains("lots"), "{err}");

        let (pid, stat) = fake_proc(tmp.path(), STAT, "many");
        let err = ProcessStats::read(&pid, &stat, 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits") && err.contains("many"), "{err}");

        let (pid, stat) = fake_proc(tmp.path(), STAT, "1024");
        std::fs::write(&stat, "cpu 1 2 3\n").unwrap();
        let err = ProcessStats::read(&pid, &stat, 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("btime"), "{err}");

        std::fs::write(&stat, "x".repeat(READ_CAP as usize + 1)).unwrap();
        assert!(matches!(
            ProcessStats::read(&pid, &stat, 100),
            Err(ProcessError::TooLarge { .. })
        ));
    }

    /// The real `/proc/self`, checked against what this test process knows of itself.
    #[test]
    fn reads_the_real_proc_self() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Burn a little CPU and hold a few descriptors so the readings have something to show.
        let files: Vec<File> = (0..8)
            .map(|_| File::open("/proc/self/stat").unwrap())
            .collect();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let block = vec![1u8; 8 * 1024 * 1024];
        std::hint::black_box(&block);

        let s = ProcessStats::read_self().unwrap();
        assert!(s.cpu_seconds > 0.0, "{s:?}");
        assert!(s.resident_memory_bytes >= 8 * 1024 * 1024, "{s:?}");
        assert!(s.virtual_memory_bytes > s.resident_memory_bytes, "{s:?}");
        assert!(s.open_fds >= files.len() as u64 + 3, "{s:?}");
        // This machine's hard limit is 20000; the soft one is at most that.
        let max = s.max_fds.expect("open files are limited");
        assert!(max >= s.open_fds, "{s:?}");
        // The test binary started before this test and after the machine booted.
        assert!(s.start_time_seconds <= before + 1.0, "{s:?}");
        let boot = boot_time(
            Path::new("/proc/stat"),
            &std::fs::read_to_string("/proc/stat").unwrap(),
        )
        .unwrap();
        assert!(s.start_time_seconds >= boot as f64, "{s:?} booted {boot}");
        assert!(s.threads >= 1, "{s:?}");
        let tasks = std::fs::read_dir("/proc/self/task").unwrap().count() as u64;
        // Other test threads may come and go between the two readings.
        assert!(s.threads.abs_diff(tasks) <= 8, "{s:?} vs {tasks} tasks");
        drop(files);
    }
}
