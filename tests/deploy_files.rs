//! deploy/ and manifests/, checked with the real tools: promtool (alert rules, their unit tests,
//! a Prometheus config with the scrape example, every dashboard query), systemd-analyze (the
//! unit), the dockmaster binary (the example manifests) and bash (install.sh under a prefix,
//! with a stand-in systemctl). Metric names are checked against docs/METRICS.md.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use regex::Regex;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dockmaster")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` and fails the test with its output unless it exits 0.
fn success(cmd: &mut Command) -> Output {
    let o = output(cmd);
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// ---- metric names -------------------------------------------------------------------------

/// The metric names docs/METRICS.md documents, and those of them that are histograms: a
/// `Type: histogram` line marks the metric its section's heading names, another line saying
/// "histogram" the names on that line.
struct Documented {
    names: BTreeSet<String>,
    histograms: BTreeSet<String>,
}

fn documented() -> Documented {
    let d = parse_documented(&read("docs/METRICS.md"));
    assert!(
        d.names.len() > 20,
        "docs/METRICS.md names only {} metrics: {:?}",
        d.names.len(),
        d.names
    );
    d
}

fn parse_documented(doc: &str) -> Documented {
    let name = Regex::new(r"\b(?:dockmaster|process)_[a-z0-9_]*[a-z0-9]").unwrap();
    let histogram = Regex::new(r"(?i)\bhistogram\b").unwrap();
    let type_histogram = Regex::new(r"(?i)\btype\b\W*histogram\b").unwrap();
    let mut names = BTreeSet::new();
    let mut histograms = BTreeSet::new();
    let mut section: Option<String> = None;
    for line in doc.lines() {
        let on_line: Vec<String> = name
            .find_iter(line)
            .map(|m| m.as_str().to_string())
            .collect();
        if line.starts_with('#') {
            section = match on_line.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            };
        }
        if type_histogram.is_match(line) {
            histograms.extend(section.iter().cloned());
        } else if histogram.is_match(line) {
            histograms.extend(on_line.iter().cloned());
        }
        names.extend(on_line);
    }
    Documented { names, histograms }
}

#[test]
fn documented_names_and_histograms_are_read_from_markdown() {
    let d = parse_documented(
        "# Metrics\n\n## Syncs\n\n### `dockmaster_a_seconds`\n\n- **Type:** histogram\n\n\
         ### `dockmaster_b_total`\n\n- **Type:** counter\n- example: \
         `histogram_quantile(0.9, rate(dockmaster_a_seconds_bucket[5m]))`\n\n\
         - dockmaster_c_seconds{x}  histogram (buckets)\n- process_threads gauge\n",
    );
    for known in [
        "dockmaster_a_seconds",
        "dockmaster_a_seconds_bucket",
        "dockmaster_a_seconds_sum",
        "dockmaster_b_total",
        "dockmaster_c_seconds_count",
        "process_threads",
        "up",
    ] {
        assert!(d.knows(known), "{known}");
    }
    for unknown in [
        "dockmaster_b_total_bucket",
        "dockmaster_b",
        "dockmaster_d_total",
        "process_threads_count",
        "node_load1",
    ] {
        assert!(!d.knows(unknown), "{unknown}");
    }
    assert_eq!(d.base("dockmaster_a_seconds_sum"), "dockmaster_a_seconds");
    assert_eq!(d.base("dockmaster_b_total"), "dockmaster_b_total");
}

impl Documented {
    /// Whether `name` is a documented series: a documented name, `up`, or the `_bucket`,
    /// `_sum` or `_count` series of a documented histogram.
    fn knows(&self, name: &str) -> bool {
        if name == "up" || self.names.contains(name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| self.histograms.contains(base))
        })
    }

    /// The documented metric a series belongs to (histogram suffixes removed).
    fn base<'a>(&self, name: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if self.histograms.contains(base) {
                    return base;
                }
            }
        }
        name
    }
}

/// The metric names a PromQL expression selects: strings, label matchers, ranges and grouping
/// clauses are removed; what remains that is neither a function call, a keyword nor a number
/// is a metric name.
fn metric_names(expr: &str) -> Vec<String> {
    let strings = Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"#).unwrap();
    let matchers = Regex::new(r"\{[^}]*\}").unwrap();
    let ranges = Regex::new(r"\[[^\]]*\]").unwrap();
    let grouping =
        Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)").unwrap();
    let token = Regex::new(r"[A-Za-z0-9_:.$]+").unwrap();
    const KEYWORDS: [&str; 8] = [
        "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
    ];
    let e = strings.replace_all(expr, "\"\"");
    let e = matchers.replace_all(&e, " ");
    let e = ranges.replace_all(&e, " ");
    let e = grouping.replace_all(&e, " ");
    let mut names = Vec::new();
    for m in token.find_iter(&e) {
        let t = m.as_str();
        let first = t.chars().next().unwrap_or('0');
        if first.is_ascii_digit() || first == '.' || first == '$' {
            continue;
        }
        if KEYWORDS.contains(&t.to_ascii_lowercase().as_str()) {
            continue;
        }
        if e[m.end()..].trim_start().starts_with('(') {
            continue;
        }
        names.push(t.to_string());
    }
    names
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let e = r#"histogram_quantile(0.9, sum by (le, source) (rate(dockmaster_sync_duration_seconds_bucket{job=~"$job", source!="a b"}[$__rate_interval]))) / on (source) group_left(x) up offset 1h > bool 0.5 and time() - foo:bar"#;
    assert_eq!(
        metric_names(e),
        ["dockmaster_sync_duration_seconds_bucket", "up", "foo:bar"]
    );
}

/// Checks `exprs` with promtool: written as recording rules, Grafana's `$__rate_interval`
/// replaced by a range (its `$variables` sit inside label matcher strings, which PromQL
/// accepts as they are).
fn promtool_parses(what: &str, exprs: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: parse\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m");
        rules.push_str(&format!(
            "      - record: q{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let path = dir.path().join("queries.yaml");
    fs::write(&path, rules).unwrap();
    let o = output(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&path),
    );
    assert!(
        o.status.success(),
        "{what}: promtool rejects a query: {}",
        text(&o)
    );
}

// ---- Prometheus ---------------------------------------------------------------------------

fn alert_rules() -> Vec<Value> {
    let rules = yaml("deploy/prometheus/alerts.yaml");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let o = success(
        Command::new("promtool")
            .args(["check", "rules", "alerts.yaml"])
            .current_dir(&dir),
    );
    let rules = alert_rules();
    assert!(
        stdout(&o).contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{}",
        text(&o)
    );
    success(
        Command::new("promtool")
            .args(["test", "rules", "alerts.test.yaml"])
            .current_dir(&dir),
    );

    let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for required in [
        "DockmasterAgentDown",
        "DockmasterSyncFailed",
        "DockmasterSyncStale",
        "DockmasterContainersNotRunning",
        "DockmasterContainerUnhealthy",
        "DockmasterContainerCrashLooping",
        "DockmasterContainerOOMKilled",
        "DockmasterRollback",
        "DockmasterChangesPending",
        "DockmasterImageUpdateAvailable",
        "DockmasterFrequentDriftCorrections",
    ] {
        assert!(names.contains(required), "alerts.yaml lacks {required}");
    }
    for r in &rules {
        let name = r["alert"].as_str().unwrap_or("?");
        let severity = r["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{name}: severity {severity:?}"
        );
        assert!(
            r["annotations"]["summary"].is_string() && r["annotations"]["description"].is_string(),
            "{name}: summary and description"
        );
    }

    // Every alert is tested firing and quiet.
    let tests = yaml("deploy/prometheus/alerts.test.yaml");
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for t in tests["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().expect("alert_rule_test") {
            let alert = case["alertname"].as_str().expect("alertname").to_string();
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let seen = cases.entry(alert).or_default();
            if fires {
                seen.0 = true;
            } else {
                seen.1 = true;
            }
        }
    }
    for name in &names {
        assert_eq!(
            cases.get(*name),
            Some(&(true, true)),
            "alerts.test.yaml must test {name} both firing and not firing"
        );
    }
}

/// The unit tests notice a broken rule: without its `for`, DockmasterAgentDown fires at the
/// 6 minute evaluation where the tests expect it to be pending still.
#[test]
fn alert_unit_tests_catch_a_changed_rule() {
    let dir = tempfile::tempdir().unwrap();
    let rules = read("deploy/prometheus/alerts.yaml");
    let needle = "expr: up{job=\"dockmaster\"} == 0\n        for: 5m\n";
    assert!(rules.contains(needle), "DockmasterAgentDown changed shape");
    fs::write(
        dir.path().join("alerts.yaml"),
        rules.replace(needle, "expr: up{job=\"dockmaster\"} == 0\n"),
    )
    .unwrap();
    fs::copy(
        repo().join("deploy/prometheus/alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    let o = output(
        Command::new("promtool")
            .args(["test", "rules", "alerts.test.yaml"])
            .current_dir(dir.path()),
    );
    assert!(!o.status.success(), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains("alertname: DockmasterAgentDown, time: 6m"),
        "{all}"
    );
}

#[test]
fn alert_rules_use_documented_metrics_only() {
    let doc = documented();
    let mut exprs: Vec<String> = alert_rules()
        .iter()
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect();
    let tests = yaml("deploy/prometheus/alerts.test.yaml");
    for t in tests["tests"].as_array().expect("tests") {
        for s in t["input_series"].as_array().expect("input_series") {
            exprs.push(s["series"].as_str().expect("series").to_string());
        }
    }
    for e in &exprs {
        for name in metric_names(e) {
            assert!(
                doc.knows(&name),
                "{name} (in {e}) is not in docs/METRICS.md"
            );
        }
    }
}

#[test]
fn scrape_example_passes_promtool_check_config() {
    let scrape = read("deploy/prometheus/scrape.yaml");
    let parsed = yaml("deploy/prometheus/scrape.yaml");
    let jobs: Vec<&str> = parsed["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .filter_map(|c| c["job_name"].as_str())
        .collect();
    // alerts.yaml and the dashboard select job="dockmaster".
    assert_eq!(jobs, ["dockmaster"]);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\nrule_files:\n  - {}\n{scrape}",
            repo().join("deploy/prometheus/alerts.yaml").display()
        ),
    )
    .unwrap();
    let o = success(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&config),
    );
    assert!(stdout(&o).contains("1 rule files found"), "{}", text(&o));
}

// ---- Grafana ------------------------------------------------------------------------------

struct Query {
    context: String,
    expr: String,
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dockmaster.json")).expect("dashboard JSON")
}

/// Every PromQL expression of the dashboard: panel targets, annotation queries and the
/// metric selector of `label_values(...)` variables.
fn dashboard_queries(d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                context: format!("panel {:?}", p["title"]),
                expr: t["expr"].as_str().expect("target expr").to_string(),
            });
        }
    }
    for a in d["annotations"]["list"].as_array().expect("annotations") {
        if let Some(e) = a["expr"].as_str() {
            out.push(Query {
                context: format!("annotation {:?}", a["name"]),
                expr: e.to_string(),
            });
        }
    }
    let label_values = Regex::new(r"^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$").unwrap();
    for v in d["templating"]["list"].as_array().expect("templating") {
        let q = v["definition"].as_str().expect("variable definition");
        let c = label_values
            .captures(q)
            .unwrap_or_else(|| panic!("variable {:?}: {q}", v["name"]));
        out.push(Query {
            context: format!("variable {:?}", v["name"]),
            expr: c[1].to_string(),
        });
    }
    out
}

#[test]
fn dashboard_is_importable_and_queries_documented_metrics() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let vars: BTreeSet<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["job", "instance", "project", "service"] {
        assert!(vars.contains(v), "template variable {v} missing: {vars:?}");
    }

    // Panels: unique ids, a Prometheus datasource from the input, no overlapping positions.
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let b = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(b[0] + b[2] <= 24, "{title} is wider than the dashboard");
        for (other, o) in &boxes {
            let apart = b[0] + b[2] <= o[0]
                || o[0] + o[2] <= b[0]
                || b[1] + b[3] <= o[1]
                || o[1] + o[3] <= b[1];
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title.clone(), b));
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
    }

    let doc = documented();
    let queries = dashboard_queries(&d);
    let mut used = BTreeSet::new();
    for q in &queries {
        let names = metric_names(&q.expr);
        assert!(!names.is_empty(), "{}: no metric in {}", q.context, q.expr);
        for name in names {
            assert!(
                doc.knows(&name),
                "{}: {name} is not in docs/METRICS.md ({})",
                q.context,
                q.expr
            );
            used.insert(doc.base(&name).to_string());
        }
    }
    // The dashboard shows every dockmaster metric there is.
    let unused: Vec<&String> = doc
        .names
        .iter()
        .filter(|n| n.starts_with("dockmaster_") && !used.contains(doc.base(n)))
        .collect();
    assert!(
        unused.is_empty(),
        "metrics on no dashboard panel: {unused:?}"
    );

    let exprs: Vec<String> = queries.into_iter().map(|q| q.expr).collect();
    promtool_parses("deploy/grafana/dockmaster.json", &exprs);
}

// ---- manifests ----------------------------------------------------------------------------

/// The example projects: manifests/hello and every directory of manifests/stacks with a
/// compose file.
fn example_projects() -> Vec<PathBuf> {
    let mut projects = vec![PathBuf::from("manifests/hello")];
    let stacks = repo().join("manifests/stacks");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&stacks)
        .expect("manifests/stacks")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("compose.yaml").is_file())
        .map(|p| p.strip_prefix(repo()).expect("in repo").to_path_buf())
        .collect();
    dirs.sort();
    assert!(
        dirs.contains(&PathBuf::from("manifests/stacks/demo")),
        "{dirs:?}"
    );
    projects.extend(dirs);
    projects
}

/// `dockmaster` run from the repository with only the .env files as interpolation input.
fn dockmaster(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(repo())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    c
}

#[test]
fn example_manifests_validate() {
    for project in example_projects() {
        let p = project.to_str().expect("utf-8 path");
        let o = success(&mut dockmaster(&["validate", p]));
        assert!(o.stderr.is_empty(), "{p}: {}", text(&o));

        let o = success(&mut dockmaster(&["config", "--format", "json", p]));
        let config: Value = serde_json::from_slice(&o.stdout).expect("config JSON");
        for (name, service) in config["services"].as_object().expect("services") {
            let x = &service["x-dockmaster"];
            if x.is_null() {
                continue;
            }
            for key in x.as_object().expect("x-dockmaster mapping").keys() {
                assert!(
                    ["image_update", "restart_unhealthy"].contains(&key.as_str()),
                    "{p} {name}: x-dockmaster.{key}"
                );
            }
            if let Some(policy) = x.get("image_update") {
                assert!(
                    ["follow", "pin", "notify"].contains(&policy.as_str().unwrap_or("")),
                    "{p} {name}: image_update {policy}"
                );
            }
            if let Some(r) = x.get("restart_unhealthy") {
                assert!(r.is_boolean(), "{p} {name}: restart_unhealthy {r}");
            }
        }
    }

    // The demo stack is what manifests/README.md describes.
    let o = success(&mut dockmaster(&[
        "config",
        "--format",
        "json",
        "manifests/stacks/demo",
    ]));
    let demo: Value = serde_json::from_slice(&o.stdout).expect("config JSON");
    assert_eq!(demo["name"], "demo");
    let s = &demo["services"];
    assert_eq!(s["init"]["restart"], "no");
    assert_eq!(
        s["web"]["depends_on"]["init"]["condition"],
        "service_completed_successfully"
    );
    assert!(s["web"]["healthcheck"]["test"].is_array());
    assert_eq!(
        s["web"]["ports"][0]["published"], "8081",
        "WEB_PORT from .env"
    );
    assert_eq!(
        s["worker"]["depends_on"]["web"]["condition"],
        "service_healthy"
    );
    let policies: BTreeSet<&str> = ["init", "web", "worker"]
        .iter()
        .map(|n| {
            s[n]["x-dockmaster"]["image_update"]
                .as_str()
                .expect("policy")
        })
        .collect();
    assert_eq!(policies, BTreeSet::from(["follow", "pin", "notify"]));
}

// ---- systemd unit -------------------------------------------------------------------------

/// `[Section] Key=value` settings of a unit file (comments and blank lines skipped).
fn unit_settings(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=value");
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    out
}

#[test]
fn unit_file_has_the_required_settings_and_verifies() {
    let unit = read("deploy/dockmaster.service");
    let settings = unit_settings(&unit);
    let get = |section: &str, key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    for (section, key, value) in [
        ("Service", "Type", "notify"),
        ("Service", "NotifyAccess", "main"),
        ("Service", "WatchdogSec", "60"),
        ("Service", "KillMode", "process"),
        ("Service", "Delegate", "yes"),
        ("Service", "Restart", "always"),
        (
            "Service",
            "ExecStart",
            "/usr/local/bin/dockmaster agent --config /etc/dockmaster/agent.yaml",
        ),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Install", "WantedBy", "multi-user.target"),
    ] {
        assert_eq!(get(section, key), [value], "[{section}] {key}");
    }
    for key in ["RestartSec", "LimitNOFILE"] {
        assert_eq!(get("Service", key).len(), 1, "[Service] {key}");
    }
    for key in ["After", "Wants"] {
        assert!(
            get("Unit", key)
                .iter()
                .any(|v| v.split_whitespace().any(|u| u == "network-online.target")),
            "[Unit] {key}=network-online.target"
        );
    }
    // Sandboxing that would break a container runtime (see the unit's comments).
    for key in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "NoNewPrivileges",
        "SystemCallFilter",
        "RestrictNamespaces",
        "MemoryDenyWriteExecute",
        "CapabilityBoundingSet",
        "PrivateNetwork",
        "User",
    ] {
        assert!(get("Service", key).is_empty(), "[Service] {key} is set");
    }

    // systemd's own check, on a copy whose ExecStart names the built binary (verify wants
    // the executable to exist). Warnings (unknown keys, bad values) fail the test too.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("dockmaster.service");
    fs::write(&copy, unit.replace("/usr/local/bin/dockmaster", bin())).unwrap();
    let o = output(Command::new("systemd-analyze").arg("verify").arg(&copy));
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&o)
    );
}

// ---- install.sh ---------------------------------------------------------------------------

/// The host files install.sh would write without a prefix: (exists, mtime) of each, to show
/// that a prefixed run leaves them alone.
fn host_files() -> Vec<(PathBuf, Option<i64>)> {
    [
        "/usr/local/bin/dockmaster",
        "/etc/dockmaster",
        "/etc/dockmaster/agent.yaml",
        "/etc/systemd/system/dockmaster.service",
        "/var/lib/dockmaster",
    ]
    .iter()
    .map(|p| {
        let path = PathBuf::from(p);
        // A directory's mtime changes with its contents (other tests may use
        // /var/lib/dockmaster): only whether it exists.
        let mtime = fs::metadata(&path)
            .ok()
            .map(|m| if m.is_dir() { 0 } else { m.mtime() });
        (path, mtime)
    })
    .collect()
}

/// A stand-in `systemctl` that logs its arguments; `is-active` answers from a flag file.
struct Systemctl {
    dir: tempfile::TempDir,
}

impl Systemctl {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("systemctl");
        fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$*\" >> {log}\nif [ \"$1\" = is-active ]; then [ -e {flag} ] && exit 0; exit 3; fi\nexit 0\n",
                log = dir.path().join("calls").display(),
                flag = dir.path().join("active").display(),
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        Systemctl { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("systemctl")
    }

    /// The calls since the last `take`, without `is-active` queries.
    fn take(&self) -> Vec<String> {
        let log = self.dir.path().join("calls");
        let calls = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        calls
            .lines()
            .filter(|l| !l.starts_with("is-active"))
            .map(str::to_string)
            .collect()
    }

    fn set_active(&self, active: bool) {
        let flag = self.dir.path().join("active");
        if active {
            fs::write(flag, "").unwrap();
        } else {
            let _ = fs::remove_file(flag);
        }
    }
}

/// `bash deploy/install.sh ARGS` with the stand-in systemctl first in PATH (so that even a
/// wrong code path could not reach the host's).
fn install(systemctl: &Systemctl, args: &[&OsStr]) -> Output {
    let mut c = Command::new("bash");
    c.arg(repo().join("deploy/install.sh"))
        .args(args)
        .env(
            "PATH",
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                systemctl.dir.path().display()
            ),
        )
        .env_remove("DOCKMASTER_INSTALL_SYSTEMCTL");
    output(&mut c)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    Command::new("cmp")
        .arg("-s")
        .arg(a)
        .arg(b)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn install_script_dry_run_changes_nothing() {
    let before = host_files();
    let systemctl = Systemctl::new();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    let o = install(
        &systemctl,
        &[
            "--dry-run".as_ref(),
            "--prefix".as_ref(),
            prefix.as_os_str(),
            bin().as_ref(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    for path in [
        "usr/local/bin/dockmaster",
        "etc/dockmaster/agent.yaml",
        "var/lib/dockmaster",
        "etc/systemd/system/dockmaster.service",
    ] {
        assert!(
            out.contains(&prefix.join(path).display().to_string()),
            "dry run does not mention {path}: {out}"
        );
    }
    assert!(!prefix.exists(), "the dry run created {}", prefix.display());
    assert_eq!(systemctl.take(), Vec::<String>::new());
    assert_eq!(host_files(), before);
}

#[test]
fn install_script_installs_below_a_prefix_idempotently() {
    let before = host_files();
    let systemctl = Systemctl::new();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    let args: [&OsStr; 3] = ["--prefix".as_ref(), prefix.as_os_str(), bin().as_ref()];
    let o = install(&systemctl, &args);
    assert!(o.status.success(), "{}", text(&o));

    let installed = prefix.join("usr/local/bin/dockmaster");
    let config = prefix.join("etc/dockmaster/agent.yaml");
    let unit = prefix.join("etc/systemd/system/dockmaster.service");
    assert!(same_bytes(&installed, Path::new(bin())), "binary differs");
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        read("deploy/agent.yaml")
    );
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(&prefix.join("etc/dockmaster")), 0o700);
    assert_eq!(mode(&prefix.join("var/lib/dockmaster")), 0o711);
    assert_eq!(
        fs::read_to_string(&unit).unwrap(),
        read("deploy/dockmaster.service")
    );
    assert_eq!(mode(&unit), 0o644);
    assert!(
        !prefix.join("usr/local/bin/.dockmaster.new").exists(),
        "temporary binary left behind"
    );
    // The installed binary runs.
    success(Command::new(&installed).arg("--version"));

    // Again: nothing changes, and a configuration edited by the admin is kept.
    fs::write(&config, "# edited\n").unwrap();
    let mtimes = |paths: &[&PathBuf]| -> Vec<i64> {
        paths
            .iter()
            .map(|p| fs::metadata(p).unwrap().mtime_nsec())
            .collect()
    };
    let stamps = mtimes(&[&installed, &config, &unit]);
    let o = install(&systemctl, &args);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        !out.lines().any(|l| l.starts_with("+ ")),
        "second run changed something: {out}"
    );
    assert_eq!(mtimes(&[&installed, &config, &unit]), stamps);
    assert_eq!(fs::read_to_string(&config).unwrap(), "# edited\n");

    assert_eq!(systemctl.take(), Vec::<String>::new());
    assert_eq!(host_files(), before);
}

/// install.sh with systemd (a stand-in systemctl): a fresh install enables but does not start
/// the example configuration; a valid configuration is started; an upgrade restarts a running
/// agent; a configuration that does not validate stops the install.
#[test]
fn install_script_drives_systemctl() {
    let before = host_files();
    let systemctl = Systemctl::new();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    // A stand-in binary: logs its arguments, exits with the code in `rc`.
    let stub = tmp.path().join("dockmaster");
    let calls = tmp.path().join("stub-calls");
    let rc = tmp.path().join("rc");
    let write_stub = |version: &str| {
        fs::write(
            &stub,
            format!(
                "#!/bin/sh\n# {version}\necho \"$*\" >> {}\nexit $(cat {})\n",
                calls.display(),
                rc.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_stub("v1");
    fs::write(&rc, "0").unwrap();
    let run = || {
        let mut c = Command::new("bash");
        c.arg(repo().join("deploy/install.sh"))
            .arg("--prefix")
            .arg(&prefix)
            .arg(&stub)
            .env("DOCKMASTER_INSTALL_SYSTEMCTL", systemctl.path());
        output(&mut c)
    };
    let config = prefix.join("etc/dockmaster/agent.yaml");
    let check = format!("agent --config {} --check", config.display());
    let stub_calls = || {
        let c = fs::read_to_string(&calls).unwrap_or_default();
        let _ = fs::remove_file(&calls);
        c.lines().map(str::to_string).collect::<Vec<_>>()
    };

    // Fresh: the example config points at git.example.com, so enable only.
    let o = run();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        systemctl.take(),
        ["daemon-reload", "enable dockmaster.service"]
    );
    assert!(stub_calls().is_empty());
    assert!(
        stdout(&o).contains("systemctl start dockmaster"),
        "{}",
        text(&o)
    );

    // The admin configured it: checked, then enabled and started.
    let o = run();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        systemctl.take(),
        ["enable --now --no-block dockmaster.service"]
    );
    assert_eq!(stub_calls(), std::slice::from_ref(&check));

    // Running and nothing changed: only (re-)enabled, not restarted.
    systemctl.set_active(true);
    let o = run();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(systemctl.take(), ["enable dockmaster.service"]);
    assert_eq!(stub_calls(), std::slice::from_ref(&check));

    // Upgrade while running: the agent restarts (containers keep running, KillMode=process).
    write_stub("v2");
    let o = run();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        systemctl.take(),
        [
            "restart --no-block dockmaster.service",
            "enable dockmaster.service"
        ]
    );
    assert_eq!(stub_calls(), std::slice::from_ref(&check));

    // A configuration that does not validate: no restart, exit 1.
    write_stub("v3");
    fs::write(&rc, "1").unwrap();
    let o = run();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(systemctl.take(), ["enable dockmaster.service"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not validate"),
        "{}",
        text(&o)
    );
    assert_eq!(stub_calls(), [check]);
    assert_eq!(host_files(), before);
}

// ---- agent.yaml ---------------------------------------------------------------------------

/// deploy/agent.yaml passes `dockmaster agent --check`, moved to a temporary /etc/dockmaster
/// holding the files it names (the check reads the git token file).
#[test]
fn example_agent_config_passes_the_agents_check() {
    let example = read("deploy/agent.yaml");
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc/dockmaster");
    fs::create_dir_all(etc.join("certs.d")).unwrap();
    let named = Regex::new(r"(?m)^[^#\n]*?/etc/dockmaster/([A-Za-z0-9._-]+)").unwrap();
    let files: BTreeSet<&str> = named
        .captures_iter(&example)
        .map(|c| c.get(1).expect("file name").as_str())
        .collect();
    assert!(files.contains("git-token"), "{files:?}");
    for f in &files {
        let path = etc.join(f);
        if !path.exists() {
            fs::write(
                &path,
                if f.ends_with(".json") {
                    "{}"
                } else {
                    "secret\n"
                },
            )
            .unwrap();
        }
    }
    let config = tmp.path().join("agent.yaml");
    fs::write(
        &config,
        example.replace("/etc/dockmaster/", &format!("{}/", etc.display())),
    )
    .unwrap();
    let o = success(
        Command::new(bin())
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .arg("--check")
            .env_remove("DOCKMASTER_ROOT")
            .env_remove("DOCKMASTER_CONFIG"),
    );
    assert_eq!(
        stdout(&o).trim(),
        "configuration valid: 1 source(s), root /var/lib/dockmaster"
    );

    // The check does look at the file: an unknown field fails it.
    fs::write(
        &config,
        fs::read_to_string(&config).unwrap() + "no_such_setting: 1\n",
    )
    .unwrap();
    let o = output(
        Command::new(bin())
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .arg("--check"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no_such_setting"),
        "{}",
        text(&o)
    );
}
