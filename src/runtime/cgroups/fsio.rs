//! Reading and writing cgroupfs files: bounded reads, one write per value, errors that
//! name the file and the value.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::Path;

use super::CgroupError;

/// Cap for the small control files (limits, counters, stat files).
pub(crate) const SMALL_CAP: u64 = 64 * 1024;

/// Cap for `cgroup.procs`: pid_max is at most 2^22, so 4 MiB holds every PID of a host.
pub(crate) const PROCS_CAP: u64 = 4 * 1024 * 1024;

/// Reads a file whole, refusing one longer than `cap` bytes.
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<String, CgroupError> {
    let read_err = |source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(cap + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > cap {
        return Err(CgroupError::TooLarge {
            path: path.to_path_buf(),
            cap,
        });
    }
    Ok(text)
}

pub(crate) fn read_small(path: &Path) -> Result<String, CgroupError> {
    read_capped(path, SMALL_CAP)
}

/// Reads a control file, `None` when it does not exist (an optional kernel feature).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match read_small(path) {
        Ok(text) => Ok(Some(text)),
        Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Reads a file holding one unsigned number, as `memory.usage_in_bytes`.
pub(crate) fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    parse_u64(path, text.trim()).map(Some)
}

pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: truncate(text),
    })
}

/// The value of `key` in a flat keyed file (`key value` lines, as `cpu.stat`,
/// `memory.events`, `memory.oom_control`); `None` when the file or the key is absent.
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() == Some(key) {
            let value = parts.next().unwrap_or("");
            return parse_u64(path, value).map(Some);
        }
    }
    Ok(None)
}

/// Writes `value` to an existing control file in a single `write(2)`, as cgroupfs wants.
/// The file is never created: a missing file means the controller is not there, and that
/// must surface as an error naming the file.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let write_err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(write_err)?;
    let written = file.write(value.as_bytes()).map_err(write_err)?;
    if written != value.len() {
        return Err(write_err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write of {written} bytes"),
        )));
    }
    Ok(())
}

/// Keeps error messages short when a file holds something unexpected.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_reads_and_caps() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("cpu.stat");
        std::fs::write(&stat, "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n").unwrap();
        assert_eq!(read_keyed(&stat, "usage_usec").unwrap(), Some(1500));
        assert_eq!(read_keyed(&stat, "system_usec").unwrap(), Some(500));
        assert_eq!(read_keyed(&stat, "nr_periods").unwrap(), None);
        assert_eq!(read_keyed(&dir.path().join("missing"), "x").unwrap(), None);

        std::fs::write(&stat, "usage_usec lots\n").unwrap();
        let err = read_keyed(&stat, "usage_usec").unwrap_err();
        assert!(err.to_string().contains("cpu.stat"), "{err}");
        assert!(err.to_string().contains("lots"), "{err}");

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'1'; 100]).unwrap();
        assert!(matches!(
            read_capped(&big, 99),
            Err(CgroupError::TooLarge { cap: 99, .. })
        ));
        assert_eq!(read_capped(&big, 100).unwrap().len(), 100);
    }

    #[test]
    fn write_replaces_but_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pids.max");
        let err = write(&file, "5").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pids.max") && msg.contains("\"5\""), "{msg}");
        assert!(!file.exists());

        std::fs::write(&file, "max\n").unwrap();
        write(&file, "5").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "5");
    }
}
