//! `dockmaster debug ...`: building blocks exposed for conformance checks.

use std::path::Path;

use clap::Subcommand;

use crate::image::Reference;

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Parse an image reference and print its parts as JSON (strict and Docker-normalized).
    ParseRef { reference: String },
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
    }
}
