//! What a container is asked to be, after the CLI or manifest has read its input (flags, env
//! files) and before the spec builder checks it against the image and the host. The builder
//! validates every field and names the field in its error; the small `parse` helpers turn
//! Docker's string forms (`--tmpfs`, `-v`, `--ulimit`, `--security-opt`) into these types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::rlimits::Ulimit;
use super::SpecError;

/// Who the container is: goes into errors, the default hostname and the spec's annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The container's id: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 bytes.
    pub container_id: String,
    /// The container's name (`--name`), may equal the id.
    pub name: String,
    /// The image as the user named it (or its digest); used in messages.
    pub image: String,
    pub project: Option<String>,
    pub service: Option<String>,
    pub replica: Option<u32>,
    pub config_hash: Option<String>,
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// A new network namespace with only loopback (`--network none`).
    #[default]
    None,
    /// The host's network namespace (`--network host`).
    Host,
    /// Join an existing network namespace at this path (set up by the network module).
    Join(PathBuf),
}

/// A `--tmpfs` mount: fstab-style options such as `size=64m`, `mode=1777`, `exec`, `ro`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    pub destination: String,
    pub options: Vec<String>,
}

impl TmpfsMount {
    /// Docker's `DST[:OPT,OPT...]` form.
    pub fn parse(spec: &str) -> Result<TmpfsMount, SpecError> {
        let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
        if dst.is_empty() {
            return Err(SpecError::invalid("tmpfs", spec, "expected DST[:OPTIONS]"));
        }
        Ok(TmpfsMount {
            destination: dst.to_string(),
            options: opts
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

/// A host path bind-mounted into the container (`-v /src:/dst[:ro]`). The host path must exist
/// when the container starts; creating it is the caller's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

impl BindMount {
    /// Docker's `SRC:DST[:ro|rw]` form with an absolute host path (named volumes are resolved
    /// to host paths elsewhere).
    pub fn parse(spec: &str) -> Result<BindMount, SpecError> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (src, dst, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            [_, _, mode] => {
                return Err(SpecError::invalid(
                    "volume",
                    spec,
                    format!("unknown mode {mode:?} (expected ro or rw)"),
                ))
            }
            _ => {
                return Err(SpecError::invalid(
                    "volume",
                    spec,
                    "expected SRC:DST[:ro|rw]",
                ))
            }
        };
        if !src.starts_with('/') {
            return Err(SpecError::invalid(
                "volume",
                spec,
                "the source must be an absolute host path",
            ));
        }
        Ok(BindMount {
            source: PathBuf::from(src),
            destination: dst.to_string(),
            read_only,
        })
    }
}

/// The `--security-opt` values this runtime understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityOpt {
    /// `seccomp=unconfined`: no seccomp filter.
    SeccompUnconfined,
    /// `no-new-privileges[=true|false]` (also Docker's legacy `:` separator).
    NoNewPrivileges(bool),
}

impl SecurityOpt {
    pub fn parse(spec: &str) -> Result<SecurityOpt, SpecError> {
        let (key, value) = match spec.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (spec, None),
        };
        match (key, value) {
            ("no-new-privileges", None | Some("true")) => Ok(SecurityOpt::NoNewPrivileges(true)),
            ("no-new-privileges", Some("false")) => Ok(SecurityOpt::NoNewPrivileges(false)),
            ("no-new-privileges", Some(_)) => Err(SpecError::invalid(
                "security_opt",
                spec,
                "no-new-privileges takes true or false",
            )),
            ("seccomp", Some("unconfined")) => Ok(SecurityOpt::SeccompUnconfined),
            ("seccomp", _) => Err(SpecError::invalid(
                "security_opt",
                spec,
                "only seccomp=unconfined is supported (custom profiles are not)",
            )),
            _ => Err(SpecError::invalid(
                "security_opt",
                spec,
                "unsupported (known: seccomp=unconfined, no-new-privileges[=true|false])",
            )),
        }
    }
}

/// An init process that becomes PID 1, reaps zombies and forwards signals to the command:
/// `host_path` is bind-mounted read-only at `container_path`, and the process's arguments
/// become `[container_path] ++ args ++ [command...]`. `/dev/init` sits on the container's own
/// /dev tmpfs, so the mount point can be created even with a read-only root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProcess {
    pub host_path: PathBuf,
    pub container_path: String,
    pub args: Vec<String>,
}

impl InitProcess {
    pub const DEFAULT_PATH: &'static str = "/dev/init";

    /// `host_path` at `/dev/init`, called as `/dev/init -- COMMAND...`.
    pub fn new(host_path: impl Into<PathBuf>) -> InitProcess {
        InitProcess {
            host_path: host_path.into(),
            container_path: InitProcess::DEFAULT_PATH.to_string(),
            args: vec!["--".to_string()],
        }
    }
}

/// Everything the user may ask of a container. `Default` is `docker run IMAGE`.
#[derive(Debug, Clone, Default)]
pub struct ContainerOptions {
    pub identity: Identity,
    /// Replaces the image's Cmd when not empty.
    pub command: Vec<String>,
    /// Replaces the image's Entrypoint and drops its Cmd; `Some(vec![])` resets both.
    pub entrypoint: Option<Vec<String>>,
    /// `K=V` entries from `--env-file`s (comments and blank lines already dropped), in order;
    /// `env` wins over them.
    pub env_files: Vec<String>,
    /// `-e K=V`; a bare `K` unsets an image variable (Docker's rule).
    pub env: Vec<String>,
    /// `-u`; `None` keeps the image's user.
    pub user: Option<String>,
    /// `--group-add`: group names from the image's /etc/group, or numeric gids.
    pub group_add: Vec<String>,
    /// `-w`; `None` keeps the image's working dir (default `/`). Must be absolute.
    pub working_dir: Option<String>,
    /// `None`: the first 12 characters of the container id. (With the host's network Docker
    /// uses the host's name; a caller wanting that passes it here.)
    pub hostname: Option<String>,
    pub tty: bool,
    pub read_only: bool,
    pub tmpfs: Vec<TmpfsMount>,
    pub binds: Vec<BindMount>,
    /// Bytes.
    pub memory: Option<u64>,
    /// Bytes (soft limit); must not exceed `memory`.
    pub memory_reservation: Option<u64>,
    /// Memory plus swap in bytes, `-1` unlimited; `None` leaves swap alone.
    pub memory_swap: Option<i64>,
    /// CPUs as a fraction: quota = cpus × 100000 per 100000 µs period.
    pub cpus: Option<f64>,
    /// Relative weight, 2..=262144.
    pub cpu_shares: Option<u64>,
    /// A positive limit; zero or negative means unlimited (Docker's rule).
    pub pids_limit: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opts: Vec<SecurityOpt>,
    pub privileged: bool,
    pub init: Option<InitProcess>,
    pub network: NetworkMode,
    pub sysctls: BTreeMap<String, String>,
    pub ulimits: Vec<Ulimit>,
    /// Bytes of /dev/shm; default 64 MiB.
    pub shm_size: Option<u64>,
}

/// Docker's byte sizes (`units.RAMInBytes`): a number with an optional binary suffix
/// `b`, `k`, `m`, `g`, `t`, `p`, optionally followed by `b` or `ib` (`64m`, `1.5GiB`, `512`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, suffix) = lower.split_at(digits_end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let suffix = suffix.trim();
    let unit: u64 = match suffix {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return None,
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut bytes = whole.checked_mul(unit)?;
    if !frac.is_empty() {
        // Fractions in exact integer arithmetic, truncated like Docker's int64 conversion.
        let digits = frac.len().min(18) as u32;
        let frac_num: u64 = frac[..digits as usize].parse().ok()?;
        let scaled = u128::from(frac_num) * u128::from(unit) / 10u128.pow(digits);
        bytes = bytes.checked_add(u64::try_from(scaled).ok()?)?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("10k"), Some(10240));
        for bad in [
            "",
            "m",
            "1x",
            "-1",
            "1.2.3m",
            ".5m",
            "5.m",
            "99999999999999999999p",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn tmpfs_forms() {
        let t = TmpfsMount::parse("/run:size=64m,mode=1777").unwrap();
        assert_eq!(t.destination, "/run");
        assert_eq!(t.options, vec!["size=64m", "mode=1777"]);
        assert!(TmpfsMount::parse("/tmp").unwrap().options.is_empty());
        assert!(TmpfsMount::parse(":size=1m").is_err());
    }

    #[test]
    fn bind_forms() {
        let b = BindMount::parse("/srv/data:/data:ro").unwrap();
        assert_eq!(
            b,
            BindMount {
                source: "/srv/data".into(),
                destination: "/data".into(),
                read_only: true
            }
        );
        assert!(!BindMount::parse("/a:/b").unwrap().read_only);
        assert!(!BindMount::parse("/a:/b:rw").unwrap().read_only);
        for bad in ["/a", "vol:/data", "/a:/b:rx", "/a:/b:ro:z"] {
            let err = BindMount::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn security_opts() {
        assert_eq!(
            SecurityOpt::parse("seccomp=unconfined").unwrap(),
            SecurityOpt::SeccompUnconfined
        );
        assert_eq!(
            SecurityOpt::parse("no-new-privileges").unwrap(),
            SecurityOpt::NoNewPrivileges(true)
        );
        assert_eq!(
            SecurityOpt::parse("no-new-privileges=true").unwrap(),
            SecurityOpt::NoNewPrivileges(true)
        );
        assert_eq!(
            SecurityOpt::parse("no-new-privileges:false").unwrap(),
            SecurityOpt::NoNewPrivileges(false)
        );
        for bad in [
            "seccomp=/etc/profile.json",
            "no-new-privileges=maybe",
            "apparmor=unconfined",
            "label=disable",
        ] {
            let err = SecurityOpt::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn init_defaults() {
        let i = InitProcess::new("/usr/bin/dockmaster");
        assert_eq!(i.container_path, "/dev/init");
        assert_eq!(i.args, vec!["--"]);
    }
}
