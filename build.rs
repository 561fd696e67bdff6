//! Builds the container init (`src/runtime/init_static.rs`) as a small statically linked
//! program with the same compiler: it runs inside containers, whose rootfs has no dynamic
//! loader of ours. The main binary embeds it (`runtime::init::STATIC_INIT`).
//!
//! It also links the `dockmaster` binary as a position-dependent executable: a PIE's
//! relocated read-only data (576 KiB here: vtables, string tables of clap, rustls, regex...)
//! becomes private dirty memory in every process, which would put each idle shim over its
//! 1 MiB budget. The trade-off is no ASLR for the binary's own code (libraries, heap and
//! stack stay randomized), as with containerd's statically linked shims. See
//! docs/BENCHMARKS.md (runtime) and docs/ARCHITECTURE.md.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("TARGET");
    if target.contains("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=src/runtime/init_static.rs");
    println!("cargo:rerun-if-changed=src/runtime/init_core.rs");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "dockmaster_init",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "target-feature=+crt-static", "-C", "codegen-units=1"])
        .arg("-o")
        .arg(out.join("dockmaster-init"))
        .arg("src/runtime/init_static.rs")
        .status()
        .expect("run rustc for the static init");
    assert!(
        status.success(),
        "building the static container init failed: a static C library is needed \
         (Debian: libc6-dev, installed with gcc)"
    );
}
