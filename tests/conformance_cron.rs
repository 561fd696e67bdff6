//! External conformance data (../shared/conformance/cron/cases.json): robfig/cron v3's own
//! test tables (activation, next fire time incl. DST in America/New_York and Sao Paulo, fixed
//! offsets, invalid specs) with robfig's answers. Every row is checked against the library,
//! and the next-fire-time rows once more through `dockmaster schedule next`. Any difference
//! fails, unless listed in ALLOWED_FAILURES with a reason.

use std::collections::BTreeMap;
use std::process::Command;

use dockmaster::schedule::{format_rfc3339, parse_time_zone, Schedule, Timestamp};
use serde_json::Value;

#[path = "common/conformance.rs"]
mod conformance;
use conformance::conformance_dir;

/// Rows (`set:index`) allowed to differ, with the reason. Empty: dockmaster agrees with
/// robfig on every row.
const ALLOWED_FAILURES: &[(&str, &str)] = &[];

fn cases() -> Value {
    let path = conformance_dir().join("cron/cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("cases.json is JSON")
}

fn field<'a>(row: &'a Value, name: &str) -> &'a str {
    row[name]
        .as_str()
        .unwrap_or_else(|| panic!("row without string {name}: {row}"))
}

fn ts(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("bad time {text:?}: {e}"))
}

fn schedule(row: &Value) -> Result<Schedule, String> {
    let tz = parse_time_zone(field(row, "tz")).map_err(|e| e.to_string())?;
    Schedule::parse(field(row, "spec"), &tz).map_err(|e| e.to_string())
}

/// Checks one row against the library; Err describes the difference.
fn check(set: &str, row: &Value) -> Result<(), String> {
    match set {
        "activation" => {
            let s = schedule(row)?;
            let t = ts(field(row, "time"));
            let want = row["fires_at_time"].as_bool().expect("fires_at_time");
            let before = t
                .checked_sub(jiff::SignedDuration::from_secs(1))
                .expect("time");
            let got = s.next_after(before) == Some(t);
            if got != want {
                return Err(format!("fires at {t}: expected {want}, got {got}"));
            }
            if s.fires_at(t) != want {
                return Err(format!("fires_at({t}) disagrees with next_after"));
            }
            Ok(())
        }
        "next" | "next_with_tz" => {
            let s = schedule(row)?;
            let got = s.next_after(ts(field(row, "start")));
            // Compared as instants: robfig prints in the start time's own location, which the
            // data does not always carry (the Sao Paulo rows start in New York time).
            let want = row["expected_next"].as_str().map(ts);
            if got != want {
                let shown = got.map(|t| format_rfc3339(t, s.time_zone()));
                return Err(format!(
                    "next: expected {:?}, got {shown:?}",
                    row["expected_next"]
                ));
            }
            Ok(())
        }
        "invalid" => {
            let spec = field(row, "spec");
            let tz = parse_time_zone("UTC").expect("UTC");
            match Schedule::parse(spec, &tz) {
                Ok(_) => Err("accepted an invalid spec".to_string()),
                Err(e) => {
                    // The message must name the bad token: the longest word of the spec that
                    // robfig's message names too.
                    let oracle = field(row, "oracle_error");
                    let token = spec
                        .split_whitespace()
                        .filter(|w| !w.contains('=') && oracle.contains(w))
                        .max_by_key(|w| w.len())
                        .ok_or_else(|| format!("robfig's error {oracle:?} names no token"))?;
                    let msg = e.to_string();
                    if msg.contains(token) {
                        Ok(())
                    } else {
                        Err(format!("error {msg:?} does not name {token:?}"))
                    }
                }
            }
        }
        other => Err(format!("unknown set {other}: teach this test about it")),
    }
}

#[test]
fn cron_upstream_rows_match_robfig() {
    let data = cases();
    let allowed: BTreeMap<&str, &str> = ALLOWED_FAILURES.iter().copied().collect();
    let upstream = data["upstream"].as_object().expect("upstream sets");
    let mut failures = Vec::new();
    let mut total = 0;
    for (set, rows) in upstream {
        let rows = rows.as_array().expect("rows");
        let mut pass = 0;
        for (i, row) in rows.iter().enumerate() {
            let id = format!("{set}:{i}");
            match check(set, row) {
                Ok(()) => pass += 1,
                Err(why) if allowed.contains_key(id.as_str()) => {
                    println!("{id} allowed ({}): {why}", allowed[id.as_str()])
                }
                Err(why) => failures.push(format!("{id} {:?}: {why}", row["spec"])),
            }
        }
        total += rows.len();
        println!("{set}: {pass}/{} pass", rows.len());
    }
    println!("upstream: {} rows, {} failures", total, failures.len());
    assert!(total > 0, "no rows in cases.json");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The cross-check section is a summary today (croniter against robfig); if it ever carries
/// rows, this test must learn to check them rather than skip them silently.
#[test]
fn cron_cross_check_section_is_known() {
    let data = cases();
    match &data["cross_check"] {
        Value::String(summary) => println!("cross_check (summary only): {summary}"),
        Value::Null => println!("no cross_check section"),
        other => panic!(
            "cross_check now holds data ({}); check its rows here",
            &other.to_string()[..other.to_string().len().min(200)]
        ),
    }
    let known = [
        "description",
        "parsers",
        "semantics",
        "upstream",
        "cross_check",
    ];
    for key in data.as_object().expect("object").keys() {
        assert!(
            known.contains(&key.as_str()),
            "unknown section {key}: check it here"
        );
    }
}

#[test]
fn cron_next_rows_through_the_binary() {
    let data = cases();
    let bin = env!("CARGO_BIN_EXE_dockmaster");
    let mut failures = Vec::new();
    let mut count = 0;
    let mut exact = 0;
    for set in ["next", "next_with_tz"] {
        for (i, row) in data["upstream"][set]
            .as_array()
            .expect("rows")
            .iter()
            .enumerate()
        {
            count += 1;
            let out = Command::new(bin)
                .args(["schedule", "next", "--count", "1"])
                .args(["--from", field(row, "start"), "--tz", field(row, "tz")])
                .arg("--")
                .arg(field(row, "spec"))
                .output()
                .expect("run dockmaster");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let got = stdout.lines().next().map(str::to_string);
            let want = row["expected_next"].as_str().map(str::to_string);
            // Same instant; the exact text too unless robfig printed in another zone.
            let same_instant = got.as_deref().map(ts) == want.as_deref().map(ts);
            if got == want {
                exact += 1;
            }
            if !out.status.success() || !same_instant {
                failures.push(format!(
                    "{set}:{i} {:?}: expected {want:?}, got {got:?} ({}; {})",
                    row["spec"],
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    println!(
        "binary: {count} rows, {} failures, {exact} printed exactly as robfig",
        failures.len()
    );
    assert!(count > 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
