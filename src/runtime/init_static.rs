//! Entry point of the static init binary built by `build.rs` (see `init_core.rs`): it is
//! bind-mounted into containers at `/dev/init` and run as `/dev/init -- COMMAND...`.

#[path = "init_core.rs"]
mod init_core;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = match args.get(1) {
        Some(a) if a == "--" => &args[2..],
        _ => &args[1..],
    };
    std::process::exit(init_core::main(command));
}
