//! Volume commands, as Docker has them: `volume create|ls|inspect|rm|prune`.
//!
//! Only Docker's `local` driver exists, without driver options (no NFS or device mounts): a
//! volume is a directory under `<root>/volumes/`. `prune` follows Docker 23+: without `--all`
//! it removes only unused anonymous volumes (label `com.docker.volume.anonymous`), with it
//! every unused volume.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::runtime::logs::format_rfc3339_nano;
use crate::volume::{Volume, VolumeError, VolumeStore};

const DRIVER: &str = "local";

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given); prints its name.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes' details as JSON.
    Inspect(InspectArgs),
    /// Remove volumes (refused while a container uses them).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused anonymous volumes (every unused volume with --all).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Volume name: letters, digits, '_', '.' and '-', starting with a letter or digit, at
    /// least two characters.
    pub name: Option<String>,
    /// Volume driver (only `local`).
    #[arg(short = 'd', long, default_value = DRIVER)]
    pub driver: String,
    /// Driver option KEY=VALUE (none is supported).
    #[arg(short = 'o', long = "opt")]
    pub opts: Vec<String>,
    /// Label KEY=VALUE (or KEY, for an empty value).
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// `table` (default) or `json` (one object per line).
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub volumes: Vec<String>,
    /// Do not fail when a volume does not exist.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every unused volume, not only anonymous ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn run(root: &Path, cmd: VolumeCommand) -> anyhow::Result<i32> {
    match cmd {
        VolumeCommand::Create(a) => create(root, a),
        VolumeCommand::Ls(a) => ls(root, a),
        VolumeCommand::Inspect(a) => inspect(root, a),
        VolumeCommand::Rm(a) => rm(root, a),
        VolumeCommand::Prune(a) => prune(root, a),
    }
}

fn open_store(root: &Path) -> anyhow::Result<VolumeStore> {
    VolumeStore::open(root)
        .with_context(|| format!("open the volume store under {}", root.display()))
}

/// `KEY=VALUE` (or `KEY`, an empty value) items; a later key wins, as with Docker.
fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        if key.is_empty() {
            bail!("invalid --label {item:?}: expected KEY=VALUE");
        }
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

pub fn create(root: &Path, args: CreateArgs) -> anyhow::Result<i32> {
    let name = match args.name {
        Some(n) => n,
        // Docker's unnamed volumes get 64 random hex digits (not anonymous: not pruned by
        // default).
        None => crate::runtime::container::generate_id().context("generate a volume name")?,
    };
    if args.driver != DRIVER {
        bail!(
            "volume {name}: driver {:?} is not supported: only {DRIVER}",
            args.driver
        );
    }
    if let Some(opt) = args.opts.first() {
        bail!("volume {name}: driver option {opt:?} is not supported: {DRIVER} volumes take none");
    }
    let labels = parse_labels(&args.labels)?;
    let volume = open_store(root)?.create(&name, labels)?;
    println!("{}", volume.name);
    Ok(0)
}

/// Docker's `Labels` column: `k=v,k2=v2`.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn ls(root: &Path, args: LsArgs) -> anyhow::Result<i32> {
    if args.format != "table" && args.format != "json" {
        bail!("unknown --format {:?}: use table or json", args.format);
    }
    let volumes = open_store(root)?.list()?;
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for v in &volumes {
            writeln!(out, "{}", v.name)?;
        }
        return Ok(0);
    }
    if args.format == "json" {
        for v in &volumes {
            let line = serde_json::json!({
                "Availability": "N/A",
                "Driver": DRIVER,
                "Group": "N/A",
                "Labels": labels_text(&v.labels),
                "Links": "N/A",
                "Mountpoint": v.path,
                "Name": v.name,
                "Scope": "local",
                "Size": "N/A",
                "Status": "N/A",
            });
            writeln!(out, "{line}")?;
        }
        return Ok(0);
    }
    // Docker's tabwriter: columns at least 10 wide, 3 spaces of padding.
    writeln!(out, "{:<10}VOLUME NAME", "DRIVER")?;
    for v in &volumes {
        writeln!(out, "{DRIVER:<10}{}", v.name)?;
    }
    Ok(0)
}

/// `docker volume inspect`'s shape, fields in Docker's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeJson {
    created_at: String,
    driver: &'static str,
    labels: BTreeMap<String, String>,
    mountpoint: String,
    name: String,
    options: BTreeMap<String, String>,
    scope: &'static str,
}

fn inspect_json(v: &Volume) -> VolumeJson {
    // Docker stamps volumes with RFC 3339 to the second.
    let secs = v
        .created
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    VolumeJson {
        created_at: format_rfc3339_nano(UNIX_EPOCH + Duration::from_secs(secs)),
        driver: DRIVER,
        labels: v.labels.clone(),
        mountpoint: v.path.display().to_string(),
        name: v.name.clone(),
        options: BTreeMap::new(),
        scope: "local",
    }
}

fn not_found(name: &str) -> anyhow::Error {
    VolumeError::NotFound {
        name: name.to_string(),
    }
    .into()
}

pub fn inspect(root: &Path, args: InspectArgs) -> anyhow::Result<i32> {
    let store = open_store(root)?;
    let mut out = Vec::new();
    let mut failed = false;
    for name in &args.volumes {
        match store.get(name) {
            Ok(Some(v)) => out.push(inspect_json(&v)),
            Ok(None) => {
                eprintln!("dockmaster: {}", not_found(name));
                failed = true;
            }
            Err(e) => {
                eprintln!("dockmaster: {e}");
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if failed { 1 } else { 0 })
}

pub fn rm(root: &Path, args: RmArgs) -> anyhow::Result<i32> {
    let store = open_store(root)?;
    let mut failed = false;
    for name in &args.volumes {
        match store.remove(name) {
            Ok(()) => println!("{name}"),
            Err(VolumeError::NotFound { .. }) if args.force => {}
            Err(e) => {
                eprintln!("dockmaster: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// go-units' `HumanSize`: decimal units, four significant digits (`%.4g`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", format_g4(size), UNITS[unit])
}

/// C's `%.4g` for values below 10000: fixed notation with four significant digits, trailing
/// zeros dropped.
fn format_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let decimals = |v: f64| (3 - v.abs().log10().floor() as i32).max(0) as usize;
    let mut text = format!("{:.*}", decimals(v), v);
    // Rounding can carry into a new digit (9.9995 -> 10.000): one digit fewer then.
    if let Ok(rounded) = text.parse::<f64>() {
        if rounded != 0.0 && decimals(rounded) != decimals(v) {
            text = format!("{:.*}", decimals(rounded), v);
        }
    }
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    text
}

pub fn prune(root: &Path, args: PruneArgs) -> anyhow::Result<i32> {
    let question = if args.all {
        "WARNING! This will remove all local volumes not used by at least one container.\n\
         Are you sure you want to continue?"
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one \
         container.\nAre you sure you want to continue?"
    };
    if !args.force && !super::confirm(question)? {
        return Ok(0);
    }
    let report = open_store(root)?.prune(args.all)?;
    if !report.removed.is_empty() {
        println!("Deleted Volumes:");
        for name in &report.removed {
            println!("{name}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(report.reclaimed));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn sizes_read_like_dockers() {
        let cases = [
            (0, "0B"),
            (1, "1B"),
            (999, "999B"),
            (1000, "1kB"),
            (1234, "1.234kB"),
            (1_500, "1.5kB"),
            (12_345_678, "12.35MB"),
            (999_950, "1000kB"),
            (9_999_600, "10MB"),
            (9_999_500, "9.999MB"),
            (1_000_000_000_000, "1TB"),
            (u64::MAX, "18.45EB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(human_size(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn inspect_has_dockers_shape() {
        let v = Volume {
            name: "data".into(),
            path: "/var/lib/dockmaster/volumes/data/_data".into(),
            created: SystemTime::UNIX_EPOCH + Duration::new(1_714_557_600, 123_456_789),
            labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
        };
        let json = serde_json::to_value(inspect_json(&v)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "CreatedAt": "2024-05-01T10:00:00Z",
                "Driver": "local",
                "Labels": {"k": "v"},
                "Mountpoint": "/var/lib/dockmaster/volumes/data/_data",
                "Name": "data",
                "Options": {},
                "Scope": "local",
            })
        );
        let text = serde_json::to_string(&inspect_json(&v)).unwrap();
        assert!(text.starts_with(r#"{"CreatedAt""#), "{text}");
    }

    #[test]
    fn labels_parse_like_dockers() {
        let l = parse_labels(&["a=1".into(), "b".into(), "a=2".into(), "c=x=y".into()]).unwrap();
        assert_eq!(labels_text(&l), "a=2,b=,c=x=y");
        let e = parse_labels(&["=v".into()]).unwrap_err().to_string();
        assert!(e.contains("invalid --label \"=v\""), "{e}");
    }
}
