//! Commands that talk to a running agent over its local API: status, history, sync, events.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::AgentConfig;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's API socket (default: from the agent config, else <root>/agent.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this project.
    pub project: Option<String>,
    #[arg(long)]
    pub socket: Option<PathBuf>,
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Apply even outside update windows.
    #[arg(long)]
    pub now: bool,
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep following new events.
    #[arg(short, long)]
    pub follow: bool,
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

pub fn status(root: &Path, config: &AgentConfig, args: StatusArgs) -> anyhow::Result<i32> {
    let _ = (root, config, args);
    anyhow::bail!("status: the agent API client is not built yet")
}

pub fn history(root: &Path, config: &AgentConfig, args: HistoryArgs) -> anyhow::Result<i32> {
    let _ = (root, config, args);
    anyhow::bail!("history: the agent API client is not built yet")
}

pub fn sync(root: &Path, config: &AgentConfig, args: SyncArgs) -> anyhow::Result<i32> {
    let _ = (root, config, args);
    anyhow::bail!("sync: the agent API client is not built yet")
}

pub fn events(root: &Path, config: &AgentConfig, args: EventsArgs) -> anyhow::Result<i32> {
    let _ = (root, config, args);
    anyhow::bail!("events: the agent API client is not built yet")
}
