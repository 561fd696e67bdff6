//! `dockmaster agent [--check]`: the GitOps agent in the foreground.

use std::path::Path;

use clap::Args;

use crate::config::{AgentConfig, DEFAULT_ROOT};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Only validate the configuration (exit 0 when valid, 1 with the error otherwise).
    #[arg(long)]
    pub check: bool,
}

/// The root the agent uses: `--root`/DOCKMASTER_ROOT when given explicitly, else `root:` from
/// the configuration, else the default.
pub fn effective_root(cli_root: &Path, config: &AgentConfig) -> std::path::PathBuf {
    let explicit =
        cli_root != Path::new(DEFAULT_ROOT) || std::env::var_os("DOCKMASTER_ROOT").is_some();
    match (&config.root, explicit) {
        (Some(r), false) => r.clone(),
        _ => cli_root.to_path_buf(),
    }
}

pub fn run(
    root: &Path,
    config_path: Option<&Path>,
    config: AgentConfig,
    args: AgentArgs,
) -> anyhow::Result<i32> {
    let root = effective_root(root, &config);
    if args.check {
        for s in &config.sources {
            crate::agent::worker::source_spec(s).map_err(anyhow::Error::msg)?;
        }
        println!(
            "configuration valid: {} source(s), root {}",
            config.sources.len(),
            root.display()
        );
        return Ok(0);
    }
    let root = if root.is_absolute() {
        root
    } else {
        std::env::current_dir()?.join(root)
    };
    crate::agent::run(root, config_path.map(Path::to_path_buf), config)
}
