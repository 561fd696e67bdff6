//! The container `--init` process: a tiny PID 1 like tini/docker-init.
//!
//! The logic is in `init_core.rs`, which builds twice: into this crate (so `dockmaster init
//! -- COMMAND...` works and is tested) and, by `build.rs`, as a small static program
//! ([`STATIC_INIT`]) that the spec builder bind-mounts at `/dev/init`: the container's rootfs
//! has no dynamic loader or C library of ours, so the (dynamically linked) dockmaster binary
//! itself cannot run there. [`command_from_args`] recognises `dockmaster init -- COMMAND...`
//! (or argv0 `init`) before clap or any async runtime exists.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Categorized, Category};

#[path = "init_core.rs"]
mod init_core;

pub use init_core::{main, run, InitError, EXIT_CANNOT_EXECUTE, EXIT_INIT_FAILED, EXIT_NOT_FOUND};

/// The static init program (see the module docs).
pub static STATIC_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dockmaster-init"));

impl Categorized for InitError {
    fn category(&self) -> Category {
        match self {
            InitError::NoCommand => Category::Invalid,
            InitError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Category::NotFound
            }
            InitError::Spawn { .. } => Category::Invalid,
            InitError::Signals(_) | InitError::Wait(_) => Category::Internal,
        }
    }
}

/// Writes [`STATIC_INIT`] to `<root>/bin/init-<digest prefix>` unless it is already there
/// (named by content, so an upgraded dockmaster never changes the file running containers
/// have mounted); returns its path.
pub fn install_static_init(root: &Path) -> io::Result<PathBuf> {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(STATIC_INIT));
    let dir = root.join("bin");
    let path = dir.join(format!("init-{}", &hash[..16]));
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".init-{}.tmp", std::process::id()));
    std::fs::write(&tmp, STATIC_INIT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The command after `--` when this process was started as the init: `init -- CMD...` by
/// argv0, or `dockmaster init -- CMD...`.
pub fn command_from_args(args: &[OsString]) -> Option<&[OsString]> {
    let rest = match args {
        [argv0, rest @ ..] if Path::new(argv0).file_name() == Some(OsStr::new("init")) => rest,
        [_, sub, rest @ ..] if sub == "init" => rest,
        _ => return None,
    };
    match rest {
        [dashdash, command @ ..] if dashdash == "--" => Some(command),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn recognises_init_invocations() {
        let a = args(&["/dev/init", "--", "sleep", "1"]);
        assert_eq!(command_from_args(&a), Some(&a[2..]));
        let a = args(&["/usr/bin/dockmaster", "init", "--", "sh"]);
        assert_eq!(command_from_args(&a), Some(&a[3..]));
        let a = args(&["init", "--"]);
        assert_eq!(command_from_args(&a).map(<[_]>::len), Some(0));
    }

    #[test]
    fn other_invocations_go_to_the_cli() {
        for v in [
            &["dockmaster", "run", "alpine"][..],
            &["dockmaster", "init"],
            &["dockmaster", "init", "sh"],
            &["/dev/init", "sh"],
            &["/sbin/initx", "--", "sh"],
            &["dockmaster"],
            &[],
        ] {
            assert_eq!(command_from_args(&args(v)), None, "{v:?}");
        }
    }

    #[test]
    fn exit_codes_follow_docker_init() {
        let e = |kind| InitError::Spawn {
            command: "x".into(),
            source: std::io::Error::from(kind),
        };
        assert_eq!(e(std::io::ErrorKind::NotFound).exit_code(), 127);
        assert_eq!(e(std::io::ErrorKind::PermissionDenied).exit_code(), 126);
        assert_eq!(InitError::NoCommand.exit_code(), 1);
        assert_eq!(InitError::NoCommand.category(), Category::Invalid);
    }
}
