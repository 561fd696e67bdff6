//! Command-line interface: clap definitions and dispatch, one file per verb family.

pub mod admin;
pub mod agent;
pub mod container;
pub mod debug;
pub mod deploy;
pub mod image;
pub mod jobs;
pub mod network;
pub mod oci;
pub mod project;
pub mod schedule;
pub mod volume;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{AgentConfig, DEFAULT_ROOT};

#[derive(Debug, Parser)]
#[command(
    name = "dockmaster",
    version,
    about = "Declarative GitOps agent for single Linux hosts"
)]
pub struct Cli {
    /// State directory (content store, snapshots, containers).
    #[arg(long, global = true, env = "DOCKMASTER_ROOT", default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Agent configuration file (default /etc/dockmaster/config.yaml when it exists).
    #[arg(long, global = true, env = "DOCKMASTER_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image from a registry into the local store.
    Pull(image::PullArgs),
    /// List images.
    Images(image::ImagesArgs),
    /// Remove images and the content only they used.
    Rmi { references: Vec<String> },
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Tools for checking dockmaster's building blocks one at a time.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Run a command in a new container.
    Run(Box<container::RunArgs>),
    /// List containers.
    Ps(container::PsArgs),
    /// Show a container's output.
    Logs(container::LogsArgs),
    /// Stop containers: the stop signal, then SIGKILL after the grace period.
    Stop(container::StopArgs),
    /// Send a signal to containers.
    Kill(container::KillArgs),
    /// Remove containers.
    Rm(container::RmArgs),
    /// Run a command in a running container.
    Exec(container::ExecArgs),
    /// Show containers' details as JSON.
    Inspect(container::InspectArgs),
    /// The per-container shim (started by dockmaster itself).
    #[command(hide = true)]
    Shim(container::ShimArgs),
    /// The per-root network daemon: DNS for containers, repair after crashes (started by
    /// dockmaster itself).
    #[command(hide = true)]
    Netd,
    /// runc-compatible low-level runtime commands (for OCI tooling).
    #[command(subcommand)]
    Oci(oci::OciCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage named volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Print the normalized Compose project (like `docker compose config`).
    Config(project::ConfigArgs),
    /// Check a Compose project; prints every problem.
    Validate(project::ValidateArgs),
    /// Show what `apply` would change in a project, and why (exit 2 when changes are pending).
    Plan(deploy::PlanArgs),
    /// Converge the host to a project: pull, create, recreate, remove; health-gated with
    /// automatic rollback.
    Apply(deploy::ApplyArgs),
    /// Remove a project's containers and networks (and volumes with -v).
    Down(deploy::DownArgs),
    /// Return a project to its previous good generation.
    Rollback(deploy::RollbackArgs),
    /// Run the GitOps agent: follow git sources, converge the host, serve metrics and the API.
    Agent(agent::AgentArgs),
    /// Show the running agent's sources, revisions, services and pending changes.
    Status(admin::StatusArgs),
    /// Show the generations the agent applied.
    History(admin::HistoryArgs),
    /// Ask the running agent to fetch and reconcile now.
    Sync(admin::SyncArgs),
    /// Show the agent's events (`-f` to follow).
    Events(admin::EventsArgs),
    /// Check cron expressions: `schedule next SPEC` prints the next fire times.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// List the scheduled jobs of every deployed project: next run, last result.
    Jobs(jobs::JobsArgs),
    /// Run a job now, or show a job's runs and their output.
    #[command(subcommand)]
    Job(jobs::JobCommand),
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = || AgentConfig::load(cli.config.as_deref());
    match cli.command {
        Command::Pull(a) => image::pull(&cli.root, &config()?, a),
        Command::Images(a) => image::images(&cli.root, a),
        Command::Rmi { references } => image::rmi(&cli.root, references),
        Command::Image(cmd) => image::run(&cli.root, &config()?, cmd),
        Command::Debug(cmd) => debug::run(cmd, &cli.root),
        Command::Oci(cmd) => oci::run(&cli.root, cmd),
        Command::Network(cmd) => network::run(&cli.root, cmd),
        Command::Volume(cmd) => volume::run(&cli.root, cmd),
        Command::Run(a) => container::run(&cli.root, &config()?, *a),
        Command::Ps(a) => container::ps(&cli.root, a),
        Command::Logs(a) => container::logs(&cli.root, a),
        Command::Stop(a) => container::stop(&cli.root, a),
        Command::Kill(a) => container::kill(&cli.root, a),
        Command::Rm(a) => container::rm(&cli.root, a),
        Command::Exec(a) => container::exec(&cli.root, a),
        Command::Inspect(a) => container::inspect(&cli.root, a),
        Command::Shim(a) => Ok(container::shim(&cli.root, a)),
        Command::Config(a) => project::config(a),
        Command::Validate(a) => project::validate(a),
        Command::Plan(a) => deploy::plan(&cli.root, &config()?, a),
        Command::Apply(a) => deploy::apply(&cli.root, &config()?, a),
        Command::Down(a) => deploy::down(&cli.root, a),
        Command::Rollback(a) => deploy::rollback(&cli.root, &config()?, a),
        Command::Agent(a) => agent::run(&cli.root, cli.config.as_deref(), config()?, a),
        Command::Status(a) => admin::status(&cli.root, &config()?, a),
        Command::History(a) => admin::history(&cli.root, &config()?, a),
        Command::Sync(a) => admin::sync(&cli.root, &config()?, a),
        Command::Events(a) => admin::events(&cli.root, &config()?, a),
        Command::Schedule(cmd) => schedule::run(cmd),
        Command::Jobs(a) => jobs::jobs(&cli.root, a),
        Command::Job(cmd) => jobs::job(&cli.root, cli.config.as_deref(), cmd),
        Command::Netd => crate::network::netd::run(&cli.root)
            .map(|()| 0)
            .map_err(Into::into),
    }
}

/// Longest answer read from a confirmation prompt.
const ANSWER_MAX: u64 = 256;

/// Docker's confirmation prompt (`prune` without `-f`); true only for `y` or `yes`.
pub(crate) fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, Read, Write};
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .take(ANSWER_MAX)
        .read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
