//! `dockmaster jobs` and `dockmaster job history|logs|run` through the real binary, against a
//! temporary root holding what an apply and the agent leave behind: a good generation made
//! from a small compose file with job services (loaded and recorded through the library),
//! run records and kept logs. (Real runs of real containers are covered by the jobs
//! end-to-end tests.)

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use dockmaster::jobs::{JobDir, JobInfo, RunRecord, RunResult, Trigger};
use dockmaster::manifest::{load_project, LoadOptions, OsFiles};
use dockmaster::reconcile::generations::{self, Generation, Status};
use dockmaster::schedule::{format_rfc3339, parse_time_zone, Schedule, Timestamp};

use support::TempRoot;

const COMPOSE: &str = r#"name: shop
services:
  web:
    image: localhost/busybox:test
    command: ["sleep", "1000"]
  backup:
    image: localhost/busybox:test
    command: ["sh", "-c", "echo backing up"]
    x-dockmaster:
      schedule: "0 3 * * *"
      time_zone: Europe/Berlin
      history: 5
  report:
    image: localhost/busybox:test
    x-dockmaster: {schedule: "@hourly"}
"#;

/// Records `compose` as generation 1 (good) of its project under `root`, the way `apply`
/// records one (loaded, normalized, hashed per service).
fn deploy(root: &Path, dir: &Path, compose: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("compose.yaml");
    std::fs::write(&file, compose).unwrap();
    let options = LoadOptions {
        files: vec![file],
        cwd: dir.to_path_buf(),
        ..Default::default()
    };
    let project = load_project(&OsFiles, &options).unwrap();
    let d = dockmaster::reconcile::apply::desired(project, BTreeMap::new(), &OsFiles);
    let g = Generation {
        number: 1,
        created: SystemTime::now(),
        status: Status::Good,
        error: None,
        revision: None,
        working_dir: d.project.working_dir.clone(),
        project: serde_json::to_value(&d.project).unwrap(),
        services: dockmaster::reconcile::apply::service_records(&d),
    };
    generations::save(root, &d.project.name, &g).unwrap();
}

/// Whole seconds: records round-trip through RFC 3339 text.
fn secs_ago(now: u64, ago: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(now - ago)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn record(seq: u64, result: RunResult, exit_code: Option<i32>, started: SystemTime) -> RunRecord {
    RunRecord {
        seq,
        project: "shop".into(),
        service: "backup".into(),
        trigger: Trigger::Schedule,
        scheduled_for: Some(started - Duration::from_secs(1)),
        attempt: 1,
        generation: 1,
        container: Some(format!("shop-backup-run-{seq}")),
        container_id: None,
        started,
        finished: (result != RunResult::Running).then(|| started + Duration::from_secs(90)),
        result,
        exit_code,
        error: (result == RunResult::Failed).then(|| "exited with code 3".to_string()),
    }
}

fn log_line(stream: &str, text: &str, time: &str) -> String {
    serde_json::json!({"log": text, "stream": stream, "time": time}).to_string() + "\n"
}

/// The fixture: project `shop` with jobs `backup` and `report` (and a plain service), and
/// three runs of `backup`: 1 succeeded, 2 failed with exit code 3, 3 still running.
struct Fixture {
    tmp: TempRoot,
    runs: Vec<RunRecord>,
}

fn fixture() -> Fixture {
    let tmp = TempRoot::new();
    let root = tmp.root();
    deploy(&root, &tmp.path().join("shop"), COMPOSE);
    let now = now_secs();
    let dir = JobDir::new(&root, "shop", "backup");
    let mut runs = vec![
        record(1, RunResult::Succeeded, Some(0), secs_ago(now, 7200)),
        record(2, RunResult::Failed, Some(3), secs_ago(now, 3600)),
        record(3, RunResult::Running, None, secs_ago(now, 30)),
    ];
    runs[2].trigger = Trigger::Manual;
    runs[2].scheduled_for = None;
    for r in &runs {
        dir.save(r).unwrap();
    }
    std::fs::write(
        dir.log_path(1),
        log_line("stdout", "backing up\n", "2024-05-01T03:00:01.000000001Z")
            + &log_line("stdout", "done\n", "2024-05-01T03:00:02Z"),
    )
    .unwrap();
    std::fs::write(
        dir.log_path(2),
        log_line("stdout", "backing up\n", "2024-05-01T04:00:01Z")
            + &log_line("stderr", "disk full\n", "2024-05-01T04:00:02Z")
            + "not a record\n"
            + &log_line("stdout", "giving up\n", "2024-05-01T04:00:03Z"),
    )
    .unwrap();
    Fixture { tmp, runs }
}

impl Fixture {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.tmp.dockmaster();
        cmd.args(args).stdin(std::process::Stdio::null());
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail with exit code 1; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

/// The next fire time of `spec` in `zone` as the CLI prints it, computed before and after
/// the command ran (the command's own `now` lies in between).
fn next_runs(spec: &str, zone: &str, before: Timestamp, after: Timestamp) -> [String; 2] {
    let tz = parse_time_zone(zone).unwrap();
    let s = Schedule::parse(spec, &tz).unwrap();
    [before, after].map(|t| format_rfc3339(s.next_after(t).unwrap(), &tz))
}

/// The cells of a table line (columns are separated by at least two spaces).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn jobs_lists_every_job_with_its_next_and_last_run() {
    let f = fixture();
    let before = Timestamp::now();
    let json = f.ok(&["jobs", "--format", "json"]);
    let table = f.ok(&["jobs"]);
    let after = Timestamp::now();

    let jobs: Vec<JobInfo> = serde_json::from_str(&json).unwrap();
    let names: Vec<String> = jobs
        .iter()
        .map(|j| format!("{}/{}", j.project, j.service))
        .collect();
    assert_eq!(names, ["shop/backup", "shop/report"], "web is not a job");
    let backup = &jobs[0];
    assert_eq!(backup.schedule, "0 3 * * *");
    assert_eq!(backup.time_zone, "Europe/Berlin");
    assert_eq!(backup.generation, 1);
    let expected = next_runs("0 3 * * *", "Europe/Berlin", before, after);
    let next = backup.next_run.clone().unwrap();
    assert!(expected.contains(&next), "{next} not in {expected:?}");
    assert!(next.contains("T03:00:00+0"), "{next}");
    assert_eq!(backup.running, [3]);
    assert_eq!(backup.last_run.as_ref(), Some(&f.runs[1]));
    let report = &jobs[1];
    assert_eq!(
        (report.time_zone.as_str(), report.schedule.as_str()),
        ("UTC", "@hourly")
    );
    assert!(report.next_run.as_deref().unwrap().ends_with(":00:00Z"));
    assert!(report.last_run.is_none() && report.running.is_empty());

    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(
        cells(lines[0]),
        ["JOB", "SCHEDULE", "ZONE", "NEXT RUN", "LAST RUN", "RESULT", "RUNNING"]
    );
    let row = cells(lines[1]);
    assert_eq!(row[..3], ["shop/backup", "0 3 * * *", "Europe/Berlin"]);
    assert!(expected.contains(&row[3]), "{table}");
    assert_eq!(row[4], "1h0m ago");
    assert_eq!(row[5..], ["failed (exit 3)", "1"]);
    let row = cells(lines[2]);
    assert_eq!(row[..3], ["shop/report", "@hourly", "UTC"]);
    assert_eq!(row[4..], ["-", "-", "0"]);

    // A host without deployed projects.
    let empty = TempRoot::new();
    let out = support::run_ok(empty.dockmaster().arg("jobs"));
    assert_eq!(out, "no jobs\n");
    let out = support::run_ok(empty.dockmaster().args(["jobs", "--format", "json"]));
    assert_eq!(out.trim(), "[]");
}

#[test]
fn history_shows_the_kept_runs() {
    let f = fixture();
    let json = f.ok(&["job", "history", "shop/backup", "--format", "json"]);
    let runs: Vec<RunRecord> = serde_json::from_str(&json).unwrap();
    assert_eq!(runs, f.runs);

    let table = f.ok(&["job", "history", "shop/backup"]);
    let berlin = parse_time_zone("Europe/Berlin").unwrap();
    let time = |t: SystemTime| format_rfc3339(Timestamp::try_from(t).unwrap(), &berlin);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert_eq!(
        cells(lines[0]),
        [
            "RUN",
            "TRIGGER",
            "SCHEDULED FOR",
            "STARTED",
            "DURATION",
            "RESULT",
            "EXIT",
            "ERROR"
        ]
    );
    let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    let r = &f.runs;
    assert_eq!(
        words(lines[1]),
        [
            "1".to_string(),
            "schedule".into(),
            time(r[0].scheduled_for.unwrap()),
            time(r[0].started),
            "1m30s".into(),
            "succeeded".into(),
            "0".into(),
            "-".into()
        ]
    );
    assert_eq!(
        words(lines[2])[4..],
        ["1m30s", "failed", "3", "exited", "with", "code", "3"]
    );
    let third = words(lines[3]);
    assert_eq!(third[..3], ["3", "manual", "-"]);
    assert_eq!(third[5..], ["running", "-", "-"]);
    // Still going: its duration so far (30 s when written, a little more now).
    assert!(third[4].ends_with('s'), "{table}");

    // A job without runs yet, and a job with no definition left but kept runs.
    assert_eq!(
        f.ok(&["job", "history", "shop/report"]),
        "no runs of shop/report yet\n"
    );
    assert_eq!(
        f.ok(&["job", "history", "shop/report", "--format", "json"])
            .trim(),
        "[]"
    );
    let mut gone = record(7, RunResult::Timeout, None, secs_ago(now_secs(), 60));
    gone.project = "old".into();
    gone.service = "cleanup".into();
    JobDir::new(&f.tmp.root(), "old", "cleanup")
        .save(&gone)
        .unwrap();
    let table = f.ok(&["job", "history", "old/cleanup"]);
    assert!(table.lines().nth(1).unwrap().starts_with("7  "), "{table}");
    assert!(table.contains(" timeout "), "{table}");
    // Without the job's zone: UTC.
    assert!(table.lines().nth(1).unwrap().contains("Z  "), "{table}");
}

#[test]
fn unknown_jobs_and_bad_names_are_errors() {
    let f = fixture();
    for args in [
        ["job", "history", "shop/web"],
        ["job", "history", "nope/backup"],
        ["job", "logs", "shop/web"],
    ] {
        let err = f.fails(&args);
        let name = args[2];
        assert!(
            err.contains(&format!(
                "{name} is not a job of a deployed project and has no kept runs"
            )),
            "{args:?}: {err}"
        );
    }
    for name in [
        "shop",
        "shop/",
        "/backup",
        "shop/backup/x",
        "../shop/backup",
        "shop/..",
    ] {
        for verb in ["history", "logs", "run"] {
            let err = f.fails(&["job", verb, name]);
            assert!(
                err.contains(&format!("invalid job name {name:?}")),
                "{verb} {name}: {err}"
            );
        }
    }
}

#[test]
fn logs_print_a_runs_output() {
    let f = fixture();
    // Default: the newest finished run (2; 3 is still going). Each record on its stream,
    // a malformed line skipped.
    let out = f.run(&["job", "logs", "shop/backup"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "backing up\ngiving up\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "disk full\n");

    assert_eq!(
        f.ok(&["job", "logs", "shop/backup", "1"]),
        "backing up\ndone\n"
    );
    assert_eq!(
        f.ok(&["job", "logs", "shop/backup", "1", "-t"]),
        "2024-05-01T03:00:01.000000001Z backing up\n2024-05-01T03:00:02Z done\n"
    );
    assert_eq!(
        f.ok(&["job", "logs", "--tail", "1", "shop/backup", "1"]),
        "done\n"
    );
    let err = f.fails(&["job", "logs", "shop/backup", "9"]);
    assert!(
        err.contains("shop/backup has no run 9 (kept: 1, 2, 3)"),
        "{err}"
    );
    let err = f.fails(&["job", "logs", "shop/backup", "--tail", "some"]);
    assert!(err.contains("invalid --tail"), "{err}");
    // The running run has no container yet: nothing to show, and it says so.
    let out = f.run(&["job", "logs", "shop/backup", "3"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run 3 of shop/backup is starting"));
    // A finished run without a kept log (it never started) names why.
    let dir = JobDir::new(&f.tmp.root(), "shop", "backup");
    let mut never = record(4, RunResult::Failed, None, secs_ago(now_secs(), 10));
    never.error = Some("could not start: image localhost/busybox:test not found".into());
    dir.save(&never).unwrap();
    let out = f.run(&["job", "logs", "shop/backup"]);
    assert!(out.status.success() && out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("run 4 of shop/backup kept no output (could not start: image"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A job whose only run is going.
    let mut going = record(1, RunResult::Running, None, secs_ago(now_secs(), 5));
    going.service = "report".into();
    JobDir::new(&f.tmp.root(), "shop", "report")
        .save(&going)
        .unwrap();
    let err = f.fails(&["job", "logs", "shop/report"]);
    assert!(
        err.contains("shop/report has no finished run yet; run 1 is going"),
        "{err}"
    );
    let err = f.fails(&["job", "logs", "shop/nothing-yet"]);
    assert!(err.contains("is not a job"), "{err}");
}

#[test]
fn run_without_an_agent() {
    let f = fixture();
    let socket = f.tmp.path().join("no-agent.sock");
    let socket = socket.to_str().unwrap();
    // No agent: the run would happen in this process, but the project does not exist.
    let err = f.fails(&["job", "run", "nope/backup", "--socket", socket]);
    assert!(
        err.contains("nope/backup is not a job of a deployed project"),
        "{err}"
    );
    // The default socket (<root>/agent.sock) is not there either.
    let err = f.fails(&["job", "run", "shop/web"]);
    assert!(
        err.contains("shop/web is not a job of a deployed project"),
        "{err}"
    );
    // --detach needs an agent to hand the run to.
    let err = f.fails(&["job", "run", "-d", "shop/backup", "--socket", socket]);
    assert!(err.contains("--detach needs a running agent"), "{err}");
    assert!(err.contains("no agent listening on"), "{err}");
    // Nothing was run or recorded.
    let runs = JobDir::new(&f.tmp.root(), "shop", "backup").list().unwrap();
    assert_eq!(runs, f.runs);
}
