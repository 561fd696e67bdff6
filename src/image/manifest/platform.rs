//! Platforms (`os/arch[/variant]`), normalized and matched the way containerd does, and the
//! choice of one manifest from a multi-platform index.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{empty_as_none, media_types, null_as_default, Descriptor, ImageIndex, ManifestError};

/// A platform as found in index descriptors and image configs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
    /// CPU features; dropped from the OCI spec but still found in old Docker manifest lists.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub features: Vec<String>,
}

/// Normalized (os, architecture, variant), compared for matching.
type Key = (String, String, String);

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        "darwin".to_string()
    } else {
        os
    }
}

/// containerd's normalizeArch: canonical Go architecture names; arm64 v8 is the default
/// variant and so becomes empty, arm without variant means v7.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl Platform {
    /// This machine: the OS and the Go-style architecture name of the build target.
    pub fn host() -> Platform {
        let little = cfg!(target_endian = "little");
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            // Without reading /proc/cpuinfo, v7 is the safe common answer.
            "arm" => ("arm", Some("v7")),
            "powerpc64" if little => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "powerpc" => ("ppc", None),
            "mips" if little => ("mipsle", None),
            "mips64" if little => ("mips64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: normalize_os(std::env::consts::OS),
            architecture: arch.to_string(),
            variant: variant.map(str::to_string),
            ..Platform::default()
        }
    }

    /// Parses `os[(version)]/arch[/variant]` as `--platform` takes it, or a lone OS or
    /// architecture, normalized like containerd (`aarch64` -> `arm64`, `x86_64` -> `amd64`).
    /// arm64 without variant gets `v8`, arm without variant `v7`.
    pub fn parse(s: &str) -> Result<Platform, ManifestError> {
        let err = |reason: String| ManifestError::InvalidPlatform {
            value: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty platform".into()));
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() > 3 {
            return Err(err("expected os/arch[/variant]".into()));
        }
        let (os_part, os_version) = match parts[0].find('(') {
            Some(open) => {
                let rest = &parts[0][open + 1..];
                let Some(version) = rest.strip_suffix(')') else {
                    return Err(err("unbalanced parenthesis in os version".into()));
                };
                if version.is_empty() || version.contains(['(', ')']) {
                    return Err(err(format!("invalid os version {version:?}")));
                }
                (&parts[0][..open], Some(version.to_string()))
            }
            None => (parts[0], None),
        };
        for c in std::iter::once(os_part).chain(parts[1..].iter().copied()) {
            if !valid_component(c) {
                return Err(err(format!(
                    "{c:?} is not a valid platform component (letters, digits, '_', '.', '-')"
                )));
            }
        }

        let (os, arch, variant) = match parts.len() {
            1 => {
                let os = normalize_os(os_part);
                if KNOWN_OS.contains(&os.as_str()) {
                    let host = Platform::host();
                    (os, host.architecture, host.variant.unwrap_or_default())
                } else {
                    let (arch, variant) = normalize_arch(os_part, "");
                    if os_version.is_some() || !KNOWN_ARCH.contains(&arch.as_str()) {
                        return Err(err("unknown operating system or architecture".into()));
                    }
                    (Platform::host().os, arch, variant)
                }
            }
            2 => {
                let (arch, variant) = normalize_arch(parts[1], "");
                (normalize_os(os_part), arch, variant)
            }
            _ => {
                let (arch, variant) = normalize_arch(parts[1], parts[2]);
                (normalize_os(os_part), arch, variant)
            }
        };
        let variant = if arch == "arm64" && variant.is_empty() {
            "v8".to_string()
        } else {
            variant
        };
        Ok(Platform {
            os,
            architecture: arch,
            variant: non_empty(variant),
            os_version,
            ..Platform::default()
        })
    }

    fn key(&self) -> Key {
        let (arch, variant) =
            normalize_arch(&self.architecture, self.variant.as_deref().unwrap_or(""));
        (normalize_os(&self.os), arch, variant)
    }

    /// Same OS, architecture and variant after normalization (`aarch64` = `arm64` =
    /// `arm64/v8`, `arm` = `arm/v7`, `x86_64` = `amd64`). OS version and features are ignored.
    pub fn matches(&self, other: &Platform) -> bool {
        self.key() == other.key()
    }

    /// The normalized form of this platform (arm64 carries `v8`, arm its variant).
    pub fn normalized(&self) -> Platform {
        let (os, arch, variant) = self.key();
        let variant = if arch == "arm64" && variant.is_empty() {
            "v8".to_string()
        } else {
            variant
        };
        Platform {
            os,
            architecture: arch,
            variant: non_empty(variant),
            ..self.clone()
        }
    }

    fn is_unknown(&self) -> bool {
        self.os == "unknown" && self.architecture == "unknown"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.os.is_empty() {
            "unknown"
        } else {
            &self.os
        })?;
        if let Some(v) = self.os_version.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "({v})")?;
        }
        let arch = if self.architecture.is_empty() {
            "unknown"
        } else {
            &self.architecture
        };
        write!(f, "/{arch}")?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

/// containerd's platformVector: what a machine of this platform can run, best first.
/// amd64/vN runs vN-1 .. v1 and 386; arm/vN runs vN-1 .. v5; arm64 also runs 32-bit arm.
fn platform_vector(os: &str, arch: &str, variant: &str) -> Vec<Key> {
    let mut raw: Vec<(String, String)> = vec![(arch.to_string(), variant.to_string())];
    let version = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
    match arch {
        "amd64" => {
            if let Some(n) = version(variant).filter(|n| *n > 1) {
                for k in (1..n).rev() {
                    raw.push(("amd64".into(), format!("v{k}")));
                }
            }
            raw.push(("386".into(), String::new()));
        }
        "arm" => {
            if let Some(n) = version(variant).filter(|n| *n > 5) {
                for k in (5..n).rev() {
                    raw.push(("arm".into(), format!("v{k}")));
                }
            }
        }
        "arm64" => {
            let v = if variant.is_empty() { "v8" } else { variant };
            let (a, v) = normalize_arch("arm", v);
            for (_, a, v) in platform_vector(os, &a, &v) {
                raw.push((a, v));
            }
        }
        _ => {}
    }
    raw.into_iter()
        .map(|(a, v)| {
            let (a, v) = normalize_arch(&a, &v);
            (os.to_string(), a, v)
        })
        .collect()
}

/// BuildKit attaches provenance/SBOM manifests to indexes; they are not runnable images.
fn is_attestation(d: &Descriptor) -> bool {
    d.annotations
        .get("vnd.docker.reference.type")
        .is_some_and(|t| t == "attestation-manifest")
        || d.platform.as_ref().is_some_and(Platform::is_unknown)
}

/// Picks the manifest for `want` from an index, containerd-style: the exact normalized
/// os/arch/variant first, then what the platform can also run (arm/v7 runs v6 and v5, arm64
/// runs arm, amd64 runs 386), index order breaking ties. Attestation manifests and entries
/// that are neither manifests nor indexes are skipped. Entries without a platform are a last
/// resort (the caller should then check the config's platform). A nested index may be
/// returned; the caller fetches it and selects again. The error lists what the index offers.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    want: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    let (os, arch, variant) = want.key();
    let vector = platform_vector(&os, &arch, &variant);
    let mut best: Option<(usize, &Descriptor)> = None;
    let mut no_platform: Option<&Descriptor> = None;
    let mut available: Vec<String> = Vec::new();
    for d in &index.manifests {
        if is_attestation(d)
            || !(media_types::is_image_manifest(&d.media_type)
                || media_types::is_index(&d.media_type))
        {
            continue;
        }
        let Some(p) = &d.platform else {
            no_platform = no_platform.or(Some(d));
            continue;
        };
        let shown = p.to_string();
        if !available.contains(&shown) {
            available.push(shown);
        }
        let key = p.key();
        if let Some(rank) = vector.iter().position(|k| *k == key) {
            if !matches!(best, Some((b, _)) if b <= rank) {
                best = Some((rank, d));
            }
        }
    }
    best.map(|(_, d)| d)
        .or(no_platform)
        .ok_or_else(|| ManifestError::NoMatchingPlatform {
            want: want.to_string(),
            available,
        })
}
