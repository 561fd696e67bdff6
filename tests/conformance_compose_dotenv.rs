//! External conformance data (../shared/conformance/compose/dotenv): env files and lines with
//! the map compose-go's dotenv.ParseWithLookup returns, or its error.

use std::collections::BTreeMap;

use dockmaster::manifest::dotenv::parse;
use serde_json::Value;

#[path = "common/conformance.rs"]
mod conformance;
use conformance::conformance_dir;

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// Parses `content` with the case's environment as lookup and compares with the case; returns
/// a description of the mismatch.
fn check(content: &str, case: &Value) -> Option<String> {
    let env = string_map(&case["env"]);
    let got = parse(content, &|k: &str| env.get(k).cloned());
    match (got, case.get("expected"), case.get("error")) {
        (Ok(pairs), Some(want), _) => {
            let keys = pairs.len();
            let got: BTreeMap<String, String> = pairs.into_iter().collect();
            if keys != got.len() {
                return Some(format!("duplicate keys in {got:?}"));
            }
            let want = string_map(want);
            (got != want).then(|| format!("got {got:?}\n  want {want:?}"))
        }
        (Ok(pairs), None, e) => Some(format!("got {pairs:?}, want error {e:?}")),
        (Err(err), _, Some(e)) => {
            let e = e.as_str().unwrap();
            let msg = err.to_string();
            (!msg.to_lowercase().contains(&e.to_lowercase()))
                .then(|| format!("error {msg:?} does not contain {e:?}"))
        }
        (Err(err), _, None) => Some(format!("unexpected error {err}")),
    }
}

#[test]
fn dotenv_matches_compose_go() {
    let dir = conformance_dir().join("compose/dotenv");
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in data["fixtures"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let content = std::fs::read_to_string(dir.join(file)).unwrap();
        checked += 1;
        if let Some(p) = check(&content, case) {
            failures.push(format!("{file} with {}: {p}", case["env"]));
        }
    }
    for set in ["lines", "expansion"] {
        for case in data[set].as_array().unwrap() {
            let content = case["content"].as_str().unwrap();
            checked += 1;
            if let Some(p) = check(content, case) {
                failures.push(format!("{set} {content:?}: {p}"));
            }
        }
    }
    assert!(checked >= 81, "only {checked} cases");
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{checked} dotenv cases match compose-go");
}
