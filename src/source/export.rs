//! Writing a tree of a commit into a fresh directory. Repository content is untrusted: names
//! are checked, symlinks must stay inside the exported tree, and size, entry count and depth
//! are capped. Submodules (gitlinks) are skipped with a warning.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use git2::{ObjectType, Oid, Repository};

/// What one export may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    /// Sum of all file sizes.
    pub max_total_bytes: u64,
    /// Files, directories, symlinks and skipped submodules together.
    pub max_entries: u64,
    /// Directory nesting below the exported root.
    pub max_depth: usize,
}

impl Default for ExportLimits {
    fn default() -> Self {
        ExportLimits {
            max_total_bytes: 512 << 20,
            max_entries: 100_000,
            max_depth: 128,
        }
    }
}

/// The longest symlink target accepted (Linux's PATH_MAX).
const MAX_LINK_TARGET: usize = 4096;

pub(crate) enum Failure {
    Exists,
    Io(&'static str, PathBuf, io::Error),
    Refused(String),
    Git(git2::Error),
}

impl From<git2::Error> for Failure {
    fn from(e: git2::Error) -> Self {
        Failure::Git(e)
    }
}

/// A tree entry name fit for a file system: not empty, `.`, `..` or `.git` (any case), and
/// without `/` or NUL.
pub(crate) fn check_entry_name(name: &[u8]) -> Result<(), String> {
    let shown = String::from_utf8_lossy(name);
    if name.is_empty() || name == b"." || name == b".." {
        return Err(format!("bad name {shown:?}"));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(format!("name {shown:?} contains / or NUL"));
    }
    if name.eq_ignore_ascii_case(b".git") {
        return Err("a .git entry".into());
    }
    Ok(())
}

/// Removes the temporary directory unless the export completed.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

pub(crate) fn export_tree(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    dest: &Path,
    limits: &ExportLimits,
) -> Result<(), Failure> {
    if dest.symlink_metadata().is_ok() {
        return Err(Failure::Exists);
    }
    let file_name = dest
        .file_name()
        .ok_or_else(|| Failure::Refused(format!("destination {} has no name", dest.display())))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    remove_stale_temps(&parent, file_name);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&tmp)
        .map_err(|e| Failure::Io("create", tmp.clone(), e))?;
    let mut guard = TempDir(Some(tmp.clone()));
    set_mode(&tmp, 0o755)?;

    let odb = repo.odb()?;
    let mut entries = 0u64;
    let mut bytes = 0u64;
    // (tree, path relative to the export root as components); iterative: no recursion on
    // hostile depth.
    let mut stack: Vec<(Oid, Vec<Vec<u8>>)> = vec![(tree.id(), Vec::new())];
    while let Some((tree_id, rel)) = stack.pop() {
        let t = repo.find_tree(tree_id)?;
        let dir = rel
            .iter()
            .fold(tmp.clone(), |p, c| p.join(OsStr::from_bytes(c)));
        for entry in t.iter() {
            let name = entry.name_bytes().to_vec();
            let shown = show(&rel, &name);
            check_entry_name(&name).map_err(|r| Failure::Refused(format!("{shown}: {r}")))?;
            entries += 1;
            if entries > limits.max_entries {
                return Err(Failure::Refused(format!(
                    "more than {} entries",
                    limits.max_entries
                )));
            }
            let path = dir.join(OsStr::from_bytes(&name));
            match entry.filemode() {
                0o040000 => {
                    if rel.len() + 1 > limits.max_depth {
                        return Err(Failure::Refused(format!(
                            "{shown}: nested deeper than {}",
                            limits.max_depth
                        )));
                    }
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(|e| exists_refused(e, &shown, &path))?;
                    set_mode(&path, 0o755)?;
                    let mut sub = rel.clone();
                    sub.push(name);
                    stack.push((entry.id(), sub));
                }
                mode @ (0o100644 | 0o100664 | 0o100755) => {
                    let (size, kind) = odb.read_header(entry.id())?;
                    if kind != ObjectType::Blob {
                        return Err(Failure::Refused(format!("{shown}: not a blob")));
                    }
                    bytes += size as u64;
                    if bytes > limits.max_total_bytes {
                        return Err(Failure::Refused(format!(
                            "more than {} bytes of files (at {shown})",
                            limits.max_total_bytes
                        )));
                    }
                    let blob = repo.find_blob(entry.id())?;
                    let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(perm)
                        .open(&path)
                        .map_err(|e| exists_refused(e, &shown, &path))?;
                    f.write_all(blob.content())
                        .map_err(|e| Failure::Io("write", path.clone(), e))?;
                    // The umask must not strip what the repository says.
                    f.set_permissions(fs::Permissions::from_mode(perm))
                        .map_err(|e| Failure::Io("chmod", path.clone(), e))?;
                }
                0o120000 => {
                    let (size, _) = odb.read_header(entry.id())?;
                    if size > MAX_LINK_TARGET {
                        return Err(Failure::Refused(format!(
                            "{shown}: symlink target longer than {MAX_LINK_TARGET} bytes"
                        )));
                    }
                    let blob = repo.find_blob(entry.id())?;
                    let target = blob.content();
                    check_link_target(target, rel.len()).map_err(|r| {
                        Failure::Refused(format!(
                            "{shown}: symlink to {:?} {r}",
                            String::from_utf8_lossy(target)
                        ))
                    })?;
                    std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
                        .map_err(|e| exists_refused(e, &shown, &path))?;
                }
                0o160000 => {
                    tracing::warn!(path = %shown, commit = %entry.id(), "skipping a submodule (not exported)");
                }
                other => {
                    return Err(Failure::Refused(format!(
                        "{shown}: unsupported file mode {other:o}"
                    )))
                }
            }
        }
    }

    // One syncfs instead of an fsync per file: the directory is complete on disk before its
    // name appears.
    let dirf = File::open(&tmp).map_err(|e| Failure::Io("open", tmp.clone(), e))?;
    rustix::fs::syncfs(&dirf).map_err(|e| Failure::Io("sync", tmp.clone(), e.into()))?;
    drop(dirf);
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp,
        rustix::fs::CWD,
        dest,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => return Err(Failure::Exists),
        Err(e) => {
            return Err(Failure::Io(
                "rename into place",
                dest.to_path_buf(),
                e.into(),
            ))
        }
    }
    guard.0 = None;
    crate::fsutil::sync_dir(&parent).map_err(|e| Failure::Io("sync", parent.clone(), e))?;
    Ok(())
}

/// A relative target that cannot leave the exported tree: `..` only as leading components
/// (never after a name, which might be a symlink to somewhere deeper or shallower), and
/// no more of them than the link's own depth below the root.
pub(crate) fn check_link_target(target: &[u8], depth: usize) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("is empty");
    }
    if target.contains(&0) {
        return Err("contains NUL");
    }
    if target.starts_with(b"/") {
        return Err("is absolute");
    }
    let mut ups = 0usize;
    let mut named = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if named => return Err("goes up after a name (not checkable)"),
            b".." => {
                ups += 1;
                if ups > depth {
                    return Err("escapes the exported tree");
                }
            }
            _ => named = true,
        }
    }
    Ok(())
}

fn exists_refused(e: io::Error, shown: &str, path: &Path) -> Failure {
    if e.kind() == io::ErrorKind::AlreadyExists {
        Failure::Refused(format!("{shown}: duplicate entry"))
    } else {
        Failure::Io("create", path.to_path_buf(), e)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Failure> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Failure::Io("chmod", path.to_path_buf(), e))
}

fn show(rel: &[Vec<u8>], name: &[u8]) -> String {
    let mut s = String::new();
    for c in rel {
        s.push_str(&String::from_utf8_lossy(c));
        s.push('/');
    }
    s.push_str(&String::from_utf8_lossy(name));
    s
}

/// Removes `.NAME.tmp-PID-N` siblings left by exports whose process is gone.
fn remove_stale_temps(parent: &Path, name: &OsStr) {
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(rd) = fs::read_dir(parent) else { return };
    for e in rd.filter_map(Result::ok) {
        let n = e.file_name();
        let Some(rest) = n.to_str().and_then(|s| s.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert!(check_entry_name(b"compose.yaml").is_ok());
        assert!(check_entry_name(b"..data").is_ok());
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", b".git", b".GIT"] {
            assert!(check_entry_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn link_targets() {
        assert!(check_link_target(b"file", 0).is_ok());
        assert!(check_link_target(b"./a/b", 0).is_ok());
        assert!(check_link_target(b"../shared/x", 1).is_ok());
        assert!(check_link_target(b"../../x", 2).is_ok());
        assert_eq!(
            check_link_target(b"../x", 0),
            Err("escapes the exported tree")
        );
        assert_eq!(
            check_link_target(b"../../x", 1),
            Err("escapes the exported tree")
        );
        assert_eq!(check_link_target(b"/etc/passwd", 3), Err("is absolute"));
        assert!(check_link_target(b"a/../b", 3).is_err());
        assert!(
            check_link_target(b"r/..", 3).is_err(),
            "r may itself be a link to ."
        );
        assert!(check_link_target(b"", 0).is_err());
        assert!(check_link_target(b"a\0", 0).is_err());
    }
}
