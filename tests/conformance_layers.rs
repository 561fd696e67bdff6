//! External conformance data (../shared/conformance/oci/layers): layer tars with containerd's
//! resulting trees (whiteouts, opaque directories, symlink and hardlink breakouts), checked
//! through `dockmaster debug apply-layer` by the suite's own runner, as root.

use std::process::Command;

#[path = "common/conformance.rs"]
mod conformance;
use conformance::conformance_dir;

#[test]
fn oci_layers_conformance() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the layer conformance suite must run as root"
    );
    let dir = conformance_dir();
    let bin = env!("CARGO_BIN_EXE_dockmaster");
    let out = Command::new("python3")
        .arg(dir.join("oci/run_layers.py"))
        .arg("--cmd")
        .arg(format!(
            "'{bin}' debug apply-layer --root {{root}} {{layer}}"
        ))
        // The runner's scratch dirs must not inherit a state directory from the environment.
        .env_remove("DOCKMASTER_ROOT")
        .output()
        .expect("run python3 oci/run_layers.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "layer conformance failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The summary line proves cases actually ran.
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("runner summary line");
    let stats: serde_json::Value = serde_json::from_str(summary).expect("summary is JSON");
    assert!(
        stats["pass"].as_u64().unwrap_or(0) > 0,
        "no case passed: {summary}"
    );
    assert_eq!(stats["fail"].as_u64(), Some(0), "{summary}");
}
