//! The agent's Prometheus exposition: it passes the real `promtool check metrics`, it matches
//! docs/METRICS.md family for family (names, types, label names), and the scrape-time
//! container families follow a real container from `run` to `rm -f`.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dockmaster::metrics::{FailureReason, Metrics, SyncResult, WebhookResult, CONTENT_TYPE};
use support::containers::Host;

const PROMTOOL: &str = "/usr/bin/promtool";

/// Runs the real `promtool check metrics` on `text`; fails the test with promtool's output
/// when it reports anything (it exits non-zero on lint problems).
fn promtool_check(text: &str) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{PROMTOOL} cannot run ({e}): scripts/install-test-deps.sh installs it")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\nstdout: {}\nstderr: {}\nexposition:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// Every API family touched, so each has samples.
fn touch_everything(m: &Metrics) {
    m.sync_finished("main", SyncResult::Success, Duration::from_millis(1500));
    m.sync_finished("main", SyncResult::Noop, Duration::from_millis(20));
    m.sync_finished(
        "main",
        SyncResult::Failure(FailureReason::Manifest),
        Duration::from_millis(80),
    );
    m.sync_succeeded_at("edge", 1_700_000_000);
    m.applied_revision("main", "p", "0123456789abcdef0123456789abcdef01234567");
    m.project_generation("p", 7);
    m.pending_changes("p", 0);
    m.containers_desired("p", "s", 1);
    m.image_pull(true, 3_000_000, Duration::from_millis(900));
    m.image_pull(false, 0, Duration::from_secs(3));
    m.image_update_available("p", "s", true);
    m.rollback("p");
    m.drift_corrected("p", "s");
    for r in WebhookResult::ALL {
        m.webhook_request(r);
    }
    m.job_known("p", "backup");
    let at = Duration::from_secs(1_700_000_000);
    m.job_run_finished(
        "p",
        "backup",
        dockmaster::jobs::RunResult::Succeeded,
        Duration::from_secs(42),
        at,
    );
    m.job_run_finished(
        "p",
        "backup",
        dockmaster::jobs::RunResult::Timeout,
        Duration::from_secs(60),
        at,
    );
    m.job_run_skipped("p", "backup");
}

/// A family as docs/METRICS.md documents it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Doc {
    kind: String,
    labels: BTreeSet<String>,
}

/// The `### \`name\`` sections of docs/METRICS.md with their `- **Type:**` and
/// `- **Labels:**` lines (the backquoted words before the first `(` are the label names).
fn documented() -> BTreeMap<String, Doc> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/METRICS.md");
    let text = std::fs::read_to_string(&path).expect("docs/METRICS.md");
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Option<String>, Option<BTreeSet<String>>)> = None;
    let mut finish = |c: Option<(String, Option<String>, Option<BTreeSet<String>>)>| {
        if let Some((name, kind, labels)) = c {
            let kind = kind.unwrap_or_else(|| panic!("{name}: no **Type:** line"));
            let labels = labels.unwrap_or_else(|| panic!("{name}: no **Labels:** line"));
            assert!(
                out.insert(name.clone(), Doc { kind, labels }).is_none(),
                "{name} is documented twice"
            );
        }
    };
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            finish(current.take());
            let name = h.trim().trim_matches('`').to_string();
            current = Some((name, None, None));
        } else if let Some((_, kind, labels)) = current.as_mut() {
            if let Some(t) = line.strip_prefix("- **Type:** ") {
                *kind = Some(t.trim().to_string());
            } else if let Some(l) = line.strip_prefix("- **Labels:** ") {
                let names = l.split('(').next().unwrap_or("");
                *labels = Some(
                    names
                        .split('`')
                        .skip(1)
                        .step_by(2)
                        .map(str::to_string)
                        .collect(),
                );
            }
        }
    }
    finish(current);
    out
}

/// `# TYPE` lines: family name -> type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// One sample line: name, labels (unescaped values) and value.
fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let (head, value) = line.rsplit_once(' ').unwrap();
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("value of {line:?}"));
    let Some((name, rest)) = head.split_once('{') else {
        return (head.to_string(), BTreeMap::new(), value);
    };
    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "{line:?}");
        let mut value = String::new();
        loop {
            match chars.next().unwrap_or_else(|| panic!("{line:?}")) {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("{line:?}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    (name.to_string(), labels, value)
}

fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(parse_sample)
        .collect()
}

/// The family a sample belongs to (histogram series carry a suffix).
fn family_of<'a>(name: &str, families: &'a BTreeMap<String, String>) -> &'a str {
    if let Some((f, _)) = families.get_key_value(name) {
        return f;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some((f, kind)) = families.get_key_value(base) {
                assert_eq!(kind, "histogram", "{name}");
                return f;
            }
        }
    }
    panic!("sample {name} belongs to no described family")
}

/// The exposition and docs/METRICS.md list the same families with the same types; and for
/// every family with samples, the documented labels are exactly the sample's labels.
/// Returns the families without samples. With `all_families` false, documented families may
/// be missing from the exposition (prometheus-client leaves out a family with no series yet).
fn check_against_docs(text: &str, all_families: bool) -> BTreeSet<String> {
    let docs = documented();
    let exposed = families(text);
    let undocumented: Vec<_> = exposed.keys().filter(|n| !docs.contains_key(*n)).collect();
    assert!(
        undocumented.is_empty(),
        "exposed but not in docs/METRICS.md: {undocumented:?}"
    );
    let unused: Vec<_> = docs
        .keys()
        .filter(|n| n.starts_with("dockmaster_") || n.starts_with("process_"))
        .filter(|n| all_families && !exposed.contains_key(*n))
        .collect();
    assert!(unused.is_empty(), "documented but not exposed: {unused:?}");
    for (name, kind) in &exposed {
        assert_eq!(&docs[name].kind, kind, "type of {name}");
    }
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, labels, _) in samples(text) {
        let family = family_of(&name, &exposed);
        let names: BTreeSet<String> = labels.into_keys().filter(|k| k != "le").collect();
        assert_eq!(names, docs[family].labels, "labels of {name}");
        seen.insert(family, names);
    }
    exposed
        .keys()
        .filter(|f| !seen.contains_key(f.as_str()))
        .cloned()
        .collect()
}

fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(n, labels, _)| {
            n == name
                && labels.len() == want.len()
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
}

#[test]
fn exposition_passes_promtool_and_matches_the_docs() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Metrics::new(tmp.path(), env!("CARGO_PKG_VERSION"));
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");

    // Untouched: families without series yet are left out by prometheus-client, except the
    // scrape-time ones (described even when empty), which promtool accepts.
    let fresh = m.encode();
    promtool_check(&fresh);
    check_against_docs(&fresh, false);
    assert!(
        fresh.contains("# TYPE dockmaster_container_memory_bytes gauge"),
        "{fresh}"
    );

    touch_everything(&m);
    let text = m.encode();
    promtool_check(&text);
    let without_samples = check_against_docs(&text, true);
    // Only the per-container families need a container (the test below has one).
    let container_families: BTreeSet<String> = [
        "dockmaster_container_state",
        "dockmaster_container_health",
        "dockmaster_container_restarts_total",
        "dockmaster_container_oom_kills_total",
        "dockmaster_container_cpu_seconds_total",
        "dockmaster_container_memory_bytes",
    ]
    .map(String::from)
    .into();
    assert_eq!(without_samples, container_families, "{text}");
    assert_eq!(
        value(
            &text,
            "dockmaster_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "dockmaster_containers_running",
            &[("project", "p"), ("service", "s")]
        ),
        Some(0.0),
        "a desired service without containers runs 0"
    );
}

#[test]
fn real_container_series_follow_run_and_rm() {
    let host = Host::new();
    let root = host.root.root();
    let id = host.detached(
        &[
            "--name",
            "x",
            "--label",
            "com.docker.compose.project=p",
            "--label",
            "com.docker.compose.service=s",
            "--health-cmd",
            "true",
            "--health-interval",
            "1s",
        ],
        &["sleep", "100"],
    );
    // Not a Compose container: never in the metrics.
    host.detached(&["--name", "loose"], &["sleep", "100"]);
    host.wait_status(&id, "running", Duration::from_secs(10));

    let m = Metrics::new(&root, "test");
    touch_everything(&m);
    let text = m.encode();
    promtool_check(&text);
    let without_samples = check_against_docs(&text, true);
    assert!(
        without_samples.is_empty(),
        "families without samples: {without_samples:?}\n{text}"
    );
    assert!(!text.contains("loose"), "{text}");
    assert!(!text.contains(&id), "container ids are no labels:\n{text}");

    let c = [("project", "p"), ("service", "s"), ("container", "x")];
    let with = |extra: (&'static str, &'static str)| {
        let mut l = c.to_vec();
        l.push(extra);
        l
    };
    assert_eq!(
        value(&text, "dockmaster_containers_running", &c[..2]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "dockmaster_container_state",
            &with(("state", "running"))
        ),
        Some(1.0),
        "{text}"
    );
    let health = samples(&text)
        .into_iter()
        .filter(|(n, _, _)| n == "dockmaster_container_health")
        .map(|(_, l, v)| (l["health"].clone(), v))
        .collect::<Vec<_>>();
    assert!(
        matches!(health.as_slice(), [(h, 1.0)] if h == "starting" || h == "healthy"),
        "{health:?}"
    );
    assert_eq!(
        value(&text, "dockmaster_container_restarts_total", &c),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "dockmaster_container_oom_kills_total", &c),
        Some(0.0)
    );
    // The container started a shell and sleep: some CPU, well under a second.
    let cpu = value(&text, "dockmaster_container_cpu_seconds_total", &c).expect("cpu series");
    assert!(cpu > 0.0 && cpu < 5.0, "cpu {cpu}");
    // busybox sleep: more than a page, less than 256 MiB.
    let mem = value(&text, "dockmaster_container_memory_bytes", &c).expect("memory series");
    assert!(
        mem > 4096.0 && mem < 256.0 * 1024.0 * 1024.0,
        "memory {mem}"
    );

    // The cgroup reading is the kernel's: the CPU counter never goes back.
    std::thread::sleep(Duration::from_millis(200));
    let again = m.encode();
    let cpu2 = value(&again, "dockmaster_container_cpu_seconds_total", &c).unwrap();
    assert!(cpu2 >= cpu, "{cpu2} < {cpu}");

    host.ok(&["rm", "-f", "x"]);
    let gone = m.encode();
    promtool_check(&gone);
    assert!(!gone.contains("container=\"x\""), "{gone}");
    // Still desired: the running count stays (at 0) until the project forgets the service.
    assert_eq!(
        value(&gone, "dockmaster_containers_running", &c[..2]),
        Some(0.0),
        "{gone}"
    );
    m.forget_project("p");
    let forgotten = m.encode();
    assert!(!forgotten.contains("project=\"p\""), "{forgotten}");
}

/// Polls the exposition until `pred` holds on it; fails with the last one otherwise.
fn wait_for(m: &Metrics, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = m.encode();
        if pred(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not seen within {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// OOM kills on this v1 host, for real: one inside a running container (read from its cgroup)
/// and one that ended a container (from its exit record, the cgroup being released).
#[test]
fn oom_kills_from_the_cgroup_and_from_the_exit() {
    let host = Host::new();
    let labels = |name: &'static str| {
        [
            "--name",
            name,
            "-m",
            "16m",
            "--label",
            "com.docker.compose.project=oom",
            "--label",
            "com.docker.compose.service=s",
        ]
    };
    // busybox tail keeps the last line of a file without newlines: it grows until the OOM
    // killer ends it (the biggest process), and the shell goes on sleeping.
    host.detached(
        &labels("survivor"),
        &["sh", "-c", "tail /dev/zero; sleep 100"],
    );
    let ended = host.detached(&labels("ended"), &["tail", "/dev/zero"]);
    host.wait_status(&ended, "exited", Duration::from_secs(60));

    let m = Metrics::new(&host.root.root(), "test");
    let c = |name| [("project", "oom"), ("service", "s"), ("container", name)];
    let text = wait_for(
        &m,
        Duration::from_secs(60),
        "the survivor's OOM kill",
        |t| value(t, "dockmaster_container_oom_kills_total", &c("survivor")) == Some(1.0),
    );
    let state = |name, state| {
        let mut l = c(name).to_vec();
        l.push(("state", state));
        value(&text, "dockmaster_container_state", &l)
    };
    assert_eq!(state("survivor", "running"), Some(1.0), "{text}");
    assert_eq!(state("ended", "exited"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "dockmaster_container_oom_kills_total", &c("ended")),
        Some(1.0),
        "{text}"
    );
    // The ended container's cgroup is gone: no usage series.
    assert_eq!(
        value(&text, "dockmaster_container_memory_bytes", &c("ended")),
        None
    );
    let mem = value(&text, "dockmaster_container_memory_bytes", &c("survivor")).unwrap();
    assert!(
        mem <= 16.0 * 1024.0 * 1024.0,
        "memory {mem} above the limit"
    );
    assert_eq!(
        value(
            &text,
            "dockmaster_containers_running",
            &[("project", "oom"), ("service", "s")]
        ),
        Some(1.0)
    );
    promtool_check(&text);
}
