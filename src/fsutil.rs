//! Crash-safe file helpers shared by the stores: write to a temp file, fsync, rename, fsync dir.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Atomically replaces `path` with `bytes`: after a crash either the old or the new content
/// is there, never a torn file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replace(path, bytes, true)
}

/// Replaces `path` with `bytes` through a rename, so readers never see a torn file; with
/// `durable` the data and the rename are also on disk when this returns. State that a power
/// loss makes moot anyway (a `--rm` container's files, a shim's pid) skips the two fsyncs.
pub fn write_replace(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".tmp-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes a rename or create in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether the process that made a temp entry named `<anything>-<pid>-<seq>` still runs.
/// Entries of dead processes are garbage a crash left behind.
pub fn temp_owner_alive(name: &str) -> bool {
    name.rsplit('-')
        .nth(1)
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
}

/// Undoes the kernel's octal escapes in a /proc/*/mountinfo field (`\040` space, `\011`
/// tab, `\012` newline, `\134` backslash); malformed escapes are kept as they are.
pub fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            let digits = field.get(i + 1..i + 4).unwrap_or_default();
            if digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Lexical normalization: removes `.` and resolves `..` against the preceding component
/// (never above the root), like Go's `filepath.Clean`. Symlinks are not consulted.
pub fn clean_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() && !path.is_absolute() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The files `<n>.json` of `dir` (`n` a decimal number, e.g. `00000012.json`) with their
/// numbers, unordered; a missing directory has none.
pub fn numbered_json_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let n = name.to_str()?.strip_suffix(".json")?.parse().ok()?;
            Some((n, entry.path()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_owner_is_read_from_the_name() {
        let me = std::process::id();
        assert!(temp_owner_alive(&format!("abc-{me}-7")));
        assert!(!temp_owner_alive("abc-notapid-7"));
        assert!(!temp_owner_alive("plain"));
        // pid_max here is far below this
        assert!(!temp_owner_alive("abc-4000000000-1"));
    }

    #[test]
    fn write_atomic_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn mountinfo_escapes_are_decoded_and_malformed_ones_kept() {
        assert_eq!(unescape_mountinfo(br"/a\040b\011c\134d"), b"/a b\tc\\d");
        assert_eq!(unescape_mountinfo(br"/x\04"), br"/x\04");
        assert_eq!(unescape_mountinfo(br"/x\999"), br"/x\999");
        assert_eq!(unescape_mountinfo(b"a\\134b"), b"a\\b");
        assert_eq!(unescape_mountinfo(b"a\\9xx"), b"a\\9xx");
        assert_eq!(unescape_mountinfo(b"end\\04"), b"end\\04");
        assert_eq!(unescape_mountinfo(b"big\\777"), b"big\\777");
    }
}
