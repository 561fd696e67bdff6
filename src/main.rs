//! Decides what this process is (CLI command, agent, or shim) before any runtime is built.

use clap::Parser;

fn main() {
    // `/dev/init -- CMD...` (or `dockmaster init -- CMD...`): the container's PID 1. It must
    // stay single-threaded and signal-driven, so it runs before logging, clap or any runtime.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(command) = dockmaster::runtime::init::command_from_args(&args) {
        std::process::exit(dockmaster::runtime::init::main(command));
    }
    use std::io::IsTerminal;
    let cli = dockmaster::cli::Cli::parse();
    // The agent logs what it does (info) and may log JSON (`log_format: json`); every other
    // command only warns.
    let agent_format = match &cli.command {
        dockmaster::cli::Command::Agent(_) => Some(
            dockmaster::config::AgentConfig::load(cli.config.as_deref())
                .map(|c| c.log_format)
                .unwrap_or_default(),
        ),
        _ => None,
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DOCKMASTER_LOG").unwrap_or_else(|_| {
            // libcgroups warns about every v1 controller the host lacks, on each create.
            tracing_subscriber::EnvFilter::new(match agent_format {
                Some(_) => "info,libcgroups=error,hyper=warn,axum=warn",
                None => "warn,libcgroups=error",
            })
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if agent_format == Some(dockmaster::config::LogFormat::Json) {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    match dockmaster::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("dockmaster: {e:#}");
            std::process::exit(1);
        }
    }
}
