//! `dockmaster debug ...`: building blocks exposed for conformance checks.

use std::path::Path;

use clap::Subcommand;

use crate::image::Reference;

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Parse an image reference and print its parts as JSON (strict and Docker-normalized).
    ParseRef { reference: String },
    /// Apply one layer tar (uncompressed; gzip and zstd are sniffed) onto the directory given
    /// by the global --root, the way an image's layers stack (whiteouts applied).
    ApplyLayer {
        /// The layer tar file.
        layer: std::path::PathBuf,
    },
}

/// `root` is the global `--root`; `apply-layer` uses it as the directory to apply onto.
pub fn run(cmd: DebugCommand, root: &Path) -> anyhow::Result<i32> {
    let _ = root;
    match cmd {
        DebugCommand::ParseRef { reference } => {
            let strict = Reference::parse_strict(&reference)
                .map(|r| serde_json::to_value(r.parts()).expect("parts serialize"))
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
            let normalized = Reference::parse_normalized(&reference);
            let ok = normalized.is_ok();
            let normalized = normalized
                .map(|r| serde_json::to_value(r.parts()).expect("parts serialize"))
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
            let out = serde_json::json!({
                "input": reference,
                "normalized": normalized,
                "parse": strict,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            if !ok {
                eprintln!(
                    "dockmaster: invalid image reference {reference:?}: {}",
                    out["normalized"]["error"].as_str().unwrap_or("")
                );
            }
            Ok(if ok { 0 } else { 1 })
        }
        DebugCommand::ApplyLayer { layer } => apply_layer(root, &layer),
    }
}

/// `debug apply-layer`: the target must already be a directory (a mistyped --root must not
/// turn the state directory into a root filesystem).
fn apply_layer(root: &Path, layer: &Path) -> anyhow::Result<i32> {
    use std::io::BufRead;

    use anyhow::Context;

    use crate::image::unpack::{self, ApplyOptions, Compression, WhiteoutMode};

    if !root.is_dir() {
        anyhow::bail!("--root {}: not a directory", root.display());
    }
    let file = std::fs::File::open(layer).with_context(|| format!("{}", layer.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let compression = Compression::detect(
        reader
            .fill_buf()
            .with_context(|| format!("{}", layer.display()))?,
    );
    let name = layer.display().to_string();
    let stream = unpack::decompress(reader, compression)?;
    unpack::apply_layer(
        stream,
        root,
        &ApplyOptions {
            layer: &name,
            whiteouts: WhiteoutMode::Apply,
        },
    )?;
    Ok(0)
}
