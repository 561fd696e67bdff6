//! Converging commands on a Compose project: `plan DIR` (what would change, and why),
//! `apply DIR [--wait]`, `down PROJECT [-v]` and `rollback PROJECT`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::config::AgentConfig;
use crate::manifest::OsFiles;
use crate::reconcile::apply::{self, ApplyOptions, Outcome};
use crate::reconcile::generations;

use super::project::ProjectArgs;

/// Exit code of `plan` when changes are pending (like `terraform plan -detailed-exitcode`).
pub const EXIT_CHANGES: i32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The project (its directory is the optional DIR argument).
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The project (its directory is the optional DIR argument).
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Also wait until every service (not only the updated ones) is running and healthy.
    #[arg(long)]
    pub wait: bool,
    /// Seconds updated services must stay up (and healthy) before the update counts as good.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub stabilization: u64,
    /// Longest wait, in seconds, for a dependency or a container to become ready.
    #[arg(long = "wait-timeout", default_value_t = 120, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The project name.
    pub project: String,
    /// Also remove the project's named and anonymous volumes.
    #[arg(short = 'v', long = "volumes")]
    pub volumes: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The project name.
    pub project: String,
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub stabilization: u64,
    #[arg(long = "wait-timeout", default_value_t = 120, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

fn absolute(root: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(root).with_context(|| format!("resolve {}", root.display()))
}

/// `dockmaster plan DIR`: prints the plan; exit 0 when nothing would change, 2 when changes
/// are pending, 1 on errors.
pub fn plan(root: &Path, config: &AgentConfig, args: PlanArgs) -> anyhow::Result<i32> {
    let root = absolute(root)?;
    let Some(project) = super::project::load(&args.project)? else {
        return Ok(1);
    };
    let (_, plan) = apply::plan_project(&root, config, project, &OsFiles)?;
    match args.format {
        PlanFormat::Text => print!("{plan}"),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
    }
    Ok(if plan.is_empty() { 0 } else { EXIT_CHANGES })
}

/// `dockmaster apply DIR`.
pub fn apply(root: &Path, config: &AgentConfig, args: ApplyArgs) -> anyhow::Result<i32> {
    let root = absolute(root)?;
    let Some(project) = super::project::load(&args.project)? else {
        return Ok(1);
    };
    let opts = ApplyOptions {
        stabilization: Duration::from_secs(args.stabilization),
        timeout: Duration::from_secs(args.wait_timeout),
        wait_all: args.wait,
        ..ApplyOptions::default()
    };
    let name = project.name.clone();
    let report = apply::apply(&root, config, project, &OsFiles, &opts, &mut |line| {
        eprintln!("{line}")
    })?;
    match report.outcome {
        Outcome::NoChanges => {
            eprintln!("project {name}: no changes");
            Ok(0)
        }
        Outcome::Applied => {
            eprintln!(
                "project {name}: generation {} applied",
                report.generation.unwrap_or_default()
            );
            Ok(0)
        }
        Outcome::RolledBack { reason, to } => {
            eprintln!(
                "project {name}: generation {} failed ({reason}); rolled back to generation {}",
                report.generation.unwrap_or_default(),
                to.map_or("-".to_string(), |n| n.to_string())
            );
            Ok(1)
        }
    }
}

/// `dockmaster down PROJECT [-v]`: removes the project's containers and networks (and
/// volumes with `-v`), and forgets its generations.
pub fn down(root: &Path, args: DownArgs) -> anyhow::Result<i32> {
    let existed = crate::reconcile::down::down(root, &args.project, args.volumes, &mut |line| {
        eprintln!("{line}")
    })?;
    if !existed {
        eprintln!("project {}: nothing to remove", args.project);
    }
    Ok(0)
}

/// `dockmaster rollback PROJECT`: re-applies the newest good generation before the current
/// one.
pub fn rollback(root: &Path, config: &AgentConfig, args: RollbackArgs) -> anyhow::Result<i32> {
    let all = generations::list(root, &args.project)?;
    let Some(current) = all
        .iter()
        .rev()
        .find(|g| g.status == generations::Status::Good)
    else {
        bail!("project {}: no good generation recorded", args.project);
    };
    let Some(target) = all
        .iter()
        .rev()
        .find(|g| g.status == generations::Status::Good && g.number < current.number)
    else {
        bail!(
            "project {}: generation {} is the only good one; nothing to roll back to",
            args.project,
            current.number
        );
    };
    let opts = ApplyOptions {
        stabilization: Duration::from_secs(args.stabilization),
        timeout: Duration::from_secs(args.wait_timeout),
        ..ApplyOptions::default()
    };
    eprintln!(
        "project {}: rolling back from generation {} to {}",
        args.project, current.number, target.number
    );
    apply::restore(root, config, target, &opts, &mut |line| eprintln!("{line}"))?;
    // The restored generation becomes the newest good one.
    let mut again = target.clone();
    again.number = generations::next_number(root, &args.project)?;
    again.created = std::time::SystemTime::now();
    again.status = generations::Status::Good;
    generations::save(root, &args.project, &again)?;
    eprintln!(
        "project {}: generation {} restored as generation {}",
        args.project, target.number, again.number
    );
    Ok(0)
}
