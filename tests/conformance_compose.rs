//! External conformance data (../shared/conformance/compose): compose files with what
//! `docker compose config --format json` (compose-go) prints for them, or its error. The
//! suite's own runner drives `dockmaster config --format json`; this test classifies its
//! results: a valid case dockmaster refuses with an "unsupported" message counts as unsupported
//! (a deliberately missing feature, e.g. `build:` without `image:`), anything else that
//! differs is a failure.

use std::collections::BTreeMap;
use std::process::Command;

#[path = "common/conformance.rs"]
mod conformance;
use conformance::conformance_dir;

/// Case ids allowed to fail for a named reason (keep it short and honest). Empty: every
/// difference is either fixed or an explicit "unsupported" refusal.
const ALLOWED_FAILURES: &[(&str, &str)] = &[];

#[derive(Default, Debug)]
struct Counts {
    pass: usize,
    unsupported: usize,
    fail: Vec<String>,
}

fn run_set(set: &str) -> Counts {
    let dir = conformance_dir().join("compose");
    let bin = env!("CARGO_BIN_EXE_dockmaster");
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results.json");
    let out = Command::new("python3")
        .arg(dir.join("run_compose_suite.py"))
        .arg("--cmd")
        .arg(format!("'{bin}' config --format json {{file_args}}"))
        .args([
            "--set",
            set,
            "--mode",
            "strict",
            "--compare",
            "--skip-missing-file",
        ])
        .arg("--json-out")
        .arg(&results)
        .output()
        .expect("run python3 compose/run_compose_suite.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no runner summary line:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("{set}: runner summary {summary}");
    let text = std::fs::read_to_string(&results).expect("runner results");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).expect("results are JSON");
    let allowed: BTreeMap<&str, &str> = ALLOWED_FAILURES.iter().copied().collect();
    let mut c = Counts::default();
    for case in &cases {
        let id = case["id"].as_str().unwrap_or("?");
        if case["ok"].as_bool() == Some(true) {
            c.pass += 1;
            continue;
        }
        let expected_valid = case["expected"]["result"].as_str() == Some("valid");
        let refused = case["exit"].as_i64().is_some_and(|e| e != 0);
        let stderr = case["stderr"].as_str().unwrap_or("");
        if expected_valid && refused && stderr.contains("unsupported") {
            c.unsupported += 1;
        } else if !allowed.contains_key(id) {
            c.fail.push(format!(
                "{id}: expected {}, exit {}, diffs {}, stderr {}",
                case["expected"]["result"],
                case["exit"],
                case["diffs"],
                stderr.trim()
            ));
        }
    }
    println!(
        "{set}: pass {}, unsupported {}, fail {}",
        c.pass,
        c.unsupported,
        c.fail.len()
    );
    c
}

#[test]
fn compose_loader_cases() {
    let c = run_set("loader-cases");
    assert!(
        c.fail.is_empty(),
        "{} compose conformance failures:\n{}",
        c.fail.len(),
        c.fail.join("\n")
    );
    // Proves the runner really exercised the loader (the sample has ~245 runnable cases).
    assert!(c.pass >= 170, "only {} cases passed", c.pass);
}

#[test]
fn compose_real_world() {
    let c = run_set("real-world");
    assert!(
        c.fail.is_empty(),
        "{} compose conformance failures:\n{}",
        c.fail.len(),
        c.fail.join("\n")
    );
}
