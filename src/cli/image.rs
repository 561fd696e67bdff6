//! Image commands: pull, images, image inspect/export/import/prune, rmi.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::config::AgentConfig;
use crate::image::manifest::Platform;
use crate::image::metadata::ImageRecord;
use crate::image::pull::{NoProgress, PullOptions, PullProgress, Puller};
use crate::image::registry::{ClientOptions, RegistryClient};
use crate::image::{export, gc, import, Digest, ImageStore, Reference};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. `nginx`, `registry:5000/app:v1`, `app@sha256:…`.
    pub reference: String,
    /// Platform to pick from a multi-platform image: os/arch[/variant] (default: this host).
    #[arg(long)]
    pub platform: Option<String>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON instead of a table.
    #[arg(long, value_parser = ["table", "json"], default_value = "table")]
    pub format: String,
    /// Only image IDs.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image (same as `dockmaster pull`).
    Pull(PullArgs),
    /// List images (same as `dockmaster images`).
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Show an image's digests, config, layers and size as JSON.
    Inspect { reference: String },
    /// Write the flattened root filesystem of an image to a directory.
    Export {
        reference: String,
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Import images from an OCI layout directory, an oci-archive or a docker-archive tar.
    Import {
        path: PathBuf,
        /// Name to record the image under (required when the archive names none).
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        platform: Option<String>,
    },
    /// Remove images (same as `dockmaster rmi`).
    Rm { references: Vec<String> },
    /// Remove blobs and snapshots that no image references.
    Prune,
}

fn open_store(root: &Path) -> anyhow::Result<ImageStore> {
    ImageStore::open(root).with_context(|| format!("opening state directory {}", root.display()))
}

fn platform_arg(p: &Option<String>) -> anyhow::Result<Platform> {
    match p {
        Some(s) => Platform::parse(s).map_err(|e| anyhow::anyhow!("--platform {s:?}: {e}")),
        None => Ok(Platform::host()),
    }
}

pub fn pull(root: &Path, config: &AgentConfig, args: PullArgs) -> anyhow::Result<i32> {
    let reference = Reference::parse_pullable(&args.reference)
        .map_err(|e| anyhow::anyhow!("invalid image reference {:?}: {e}", args.reference))?;
    let opts = PullOptions {
        platform: platform_arg(&args.platform)?,
        platform_explicit: args.platform.is_some(),
        ..PullOptions::default()
    };
    let store = open_store(root)?;
    let client = RegistryClient::new(ClientOptions::from_config(&config.registries))?;
    let progress: Arc<dyn PullProgress> = if args.quiet {
        Arc::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Arc::new(BarProgress::default())
    } else {
        Arc::new(LineProgress)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let puller = Puller::new(store, client, progress);
    let rec = rt.block_on(puller.pull(&reference, &opts))?;
    if !args.quiet {
        eprintln!("digest: {}", rec.repo_digest);
    }
    println!("{}", rec.reference);
    Ok(0)
}

/// Pulls an image `run` needs and does not find, reporting progress on stderr only (stdout
/// carries the container id or output).
pub fn pull_for_run(root: &Path, config: &AgentConfig, image: &str) -> anyhow::Result<()> {
    let reference = Reference::parse_pullable(image)
        .map_err(|e| anyhow::anyhow!("invalid image reference {image:?}: {e}"))?;
    eprintln!("Unable to find image '{image}' locally");
    let store = open_store(root)?;
    let client = RegistryClient::new(ClientOptions::from_config(&config.registries))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let puller = Puller::new(store, client, Arc::new(LineProgress));
    rt.block_on(puller.pull(&reference, &PullOptions::default()))?;
    Ok(())
}

/// Plain lines for logs and pipes.
struct LineProgress;

impl PullProgress for LineProgress {
    fn resolved(&self, reference: &Reference, digest: &Digest) {
        eprintln!("{reference}: resolved to {digest}");
    }
    fn layer_cached(&self, digest: &Digest, _size: u64) {
        eprintln!("{}: already present", short(digest));
    }
    fn layer_started(&self, digest: &Digest, size: u64) {
        eprintln!("{}: pulling {}", short(digest), human(size));
    }
    fn layer_done(&self, digest: &Digest) {
        eprintln!("{}: done", short(digest));
    }
}

/// Progress bars on a terminal.
#[derive(Default)]
struct BarProgress {
    multi: MultiProgress,
    bars: Mutex<std::collections::HashMap<Digest, ProgressBar>>,
}

impl PullProgress for BarProgress {
    fn resolved(&self, reference: &Reference, digest: &Digest) {
        let _ = self
            .multi
            .println(format!("{reference}: resolved to {digest}"));
    }
    fn layer_cached(&self, digest: &Digest, _size: u64) {
        let _ = self
            .multi
            .println(format!("{}: already present", short(digest)));
    }
    fn layer_started(&self, digest: &Digest, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(short(digest));
        if let Ok(mut m) = self.bars.lock() {
            m.insert(digest.clone(), bar);
        }
    }
    fn bytes(&self, digest: &Digest, n: u64) {
        if let Ok(m) = self.bars.lock() {
            if let Some(b) = m.get(digest) {
                b.inc(n);
            }
        }
    }
    fn layer_done(&self, digest: &Digest) {
        if let Ok(mut m) = self.bars.lock() {
            if let Some(b) = m.remove(digest) {
                b.finish();
            }
        }
    }
}

fn short(d: &Digest) -> String {
    d.encoded()[..12].to_string()
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

fn split_name_tag(reference: &str) -> (String, String) {
    match Reference::parse_normalized(reference) {
        Ok(r) => (
            r.familiar_name(),
            r.tag()
                .map(str::to_string)
                .unwrap_or_else(|| "<none>".into()),
        ),
        Err(_) => (reference.to_string(), "<none>".into()),
    }
}

pub fn images(root: &Path, args: ImagesArgs) -> anyhow::Result<i32> {
    let store = open_store(root)?;
    let records = store.db.list()?;
    if args.quiet {
        for r in &records {
            println!("{}", short(r.id()));
        }
    } else if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        println!(
            "{:<40} {:<16} {:<14} {:<16} {:>10}",
            "REPOSITORY", "TAG", "IMAGE ID", "PLATFORM", "SIZE"
        );
        for r in &records {
            let (name, tag) = split_name_tag(&r.reference);
            println!(
                "{:<40} {:<16} {:<14} {:<16} {:>10}",
                name,
                tag,
                short(r.id()),
                r.platform.to_string(),
                human(r.size())
            );
        }
    }
    Ok(0)
}

fn inspect(store: &ImageStore, rec: &ImageRecord) -> anyhow::Result<serde_json::Value> {
    let config_bytes = store
        .content
        .read(&rec.config_digest, crate::image::pull::MAX_CONFIG_SIZE)?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("config {} is not JSON", rec.config_digest))?;
    let (name, tag) = split_name_tag(&rec.reference);
    Ok(serde_json::json!({
        "Id": rec.config_digest,
        "Reference": rec.reference,
        "RepoTags": [format!("{name}:{tag}")],
        "RepoDigests": [format!("{}@{}", Reference::parse_normalized(&rec.reference).map(|r| r.name()).unwrap_or_default(), rec.repo_digest)],
        "ManifestDigest": rec.manifest_digest,
        "ManifestMediaType": rec.manifest_media_type,
        "Platform": rec.platform.to_string(),
        "Os": rec.platform.os,
        "Architecture": rec.platform.architecture,
        "Size": rec.size(),
        "Layers": rec.layers,
        "Config": config,
        "Created": rec.created,
    }))
}

pub fn run(root: &Path, config: &AgentConfig, cmd: ImageCommand) -> anyhow::Result<i32> {
    match cmd {
        ImageCommand::Pull(a) => pull(root, config, a),
        ImageCommand::Ls(a) => images(root, a),
        ImageCommand::Inspect { reference } => {
            let store = open_store(root)?;
            let rec = store.find(&reference)?;
            println!("{}", serde_json::to_string_pretty(&inspect(&store, &rec)?)?);
            Ok(0)
        }
        ImageCommand::Export { reference, output } => {
            let store = open_store(root)?;
            let rec = store.find(&reference)?;
            export::export(&store, &rec, &output)?;
            eprintln!("exported {} to {}", rec.reference, output.display());
            Ok(0)
        }
        ImageCommand::Import {
            path,
            tag,
            platform,
        } => {
            let store = open_store(root)?;
            let opts = import::ImportOptions {
                platform: platform_arg(&platform)?,
                tag,
            };
            let recs = import::import(&store, &path, &opts)?;
            for r in recs {
                println!("{} {}", r.reference, r.manifest_digest);
            }
            Ok(0)
        }
        ImageCommand::Rm { references } => rmi(root, references),
        ImageCommand::Prune => {
            let store = open_store(root)?;
            let report = gc::prune(&store)?;
            for d in &report.blobs_removed {
                println!("deleted blob {d}");
            }
            for d in &report.snapshots_removed {
                println!("deleted snapshot {d}");
            }
            eprintln!("total reclaimed space: {}", human(report.bytes_freed));
            Ok(0)
        }
    }
}

pub fn rmi(root: &Path, references: Vec<String>) -> anyhow::Result<i32> {
    if references.is_empty() {
        anyhow::bail!("rmi needs at least one image");
    }
    let store = open_store(root)?;
    let mut keys = Vec::new();
    for r in &references {
        keys.push(store.find(r)?.reference);
    }
    let (removed, report) = gc::remove_images(&store, &keys)?;
    for r in removed {
        println!("untagged: {}", r.reference);
    }
    for d in report.blobs_removed {
        println!("deleted: {d}");
    }
    Ok(0)
}
