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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOCKMASTER_LOG").unwrap_or_else(|_| {
                // libcgroups warns about every v1 controller the host lacks, on each create.
                tracing_subscriber::EnvFilter::new("warn,libcgroups=error")
            }),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = dockmaster::cli::Cli::parse();
    match dockmaster::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("dockmaster: {e:#}");
            std::process::exit(1);
        }
    }
}
