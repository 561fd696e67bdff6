//! Scheduled jobs end to end, as root: `dockmaster agent` following a real git repository,
//! job services with real short schedules (6-field, seconds), real containers (network_mode
//! none), the runs' records read back from the state directory and the metrics from the
//! agent's /metrics.

mod support;

use std::time::{Duration, SystemTime};

use dockmaster::jobs::{JobDir, RunRecord, RunResult, Trigger};

use support::agent::{converged, eventually, fleet_repo, ids, project, status, Agent};
use support::containers::{Host, BUSYBOX};

fn runs(host: &Host, project: &str, service: &str) -> Vec<RunRecord> {
    JobDir::new(&host.root.root(), project, service)
        .list()
        .unwrap()
}

fn finished(host: &Host, project: &str, service: &str) -> Vec<RunRecord> {
    runs(host, project, service)
        .into_iter()
        .filter(|r| r.result != RunResult::Running)
        .collect()
}

fn log_of(host: &Host, project: &str, service: &str, seq: u64) -> String {
    std::fs::read_to_string(JobDir::new(&host.root.root(), project, service).log_path(seq))
        .unwrap_or_default()
}

fn config(repos: &support::git_server::GitRepos, name: &str) -> String {
    format!(
        "sources:\n  - name: {name}\n    url: {}\npoll_interval: 1s\ndrift_interval: 1s\napply: {{stabilization: 0s}}\n",
        repos.file_url("fleet")
    )
}

/// Containers of job runs that exist now.
fn run_containers(host: &Host) -> Vec<String> {
    ids(host)
        .into_keys()
        .filter(|n| n.contains("-run-"))
        .collect()
}

#[test]
fn a_job_runs_at_its_fire_times_and_keeps_history_logs_and_metrics() {
    let host = Host::new();
    let compose = format!(
        r#"services:
  app:
    image: {BUSYBOX}
    command: ["sleep", "1000"]
    network_mode: none
  tick:
    image: {BUSYBOX}
    command: ["sh", "-c", "echo tick at $$(date +%s); echo to-stderr >&2"]
    network_mode: none
    x-dockmaster:
      schedule: "*/2 * * * * *"
      history: 3
  by-hand:
    image: {BUSYBOX}
    command: ["sh", "-c", "echo run by hand; exit 7"]
    network_mode: none
    x-dockmaster: {{schedule: "@yearly"}}
  slow:
    image: {BUSYBOX}
    command: ["sh", "-c", "echo first; sleep 2; echo second; exit 3"]
    network_mode: none
    x-dockmaster: {{schedule: "@yearly"}}
"#
    );
    let (repos, _work, c1) = fleet_repo("compose.yaml", &compose, "tick");
    let agent = Agent::start(&host, &config(&repos, "cron"));
    let p = converged(&agent, &host, "cron", &c1, 60);
    let tick = p["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "tick")
        .unwrap()
        .clone();
    assert_eq!(tick["state"], "job", "{p}");
    assert_eq!(tick["desired"], 0);
    // Only the long-running service has a container of its own.
    assert!(ids(&host).contains_key("cron-app-1"));
    assert!(!ids(&host).contains_key("cron-tick-1"));

    // Runs keep coming every 2 s; the history keeps the newest 3.
    // (A run's record is saved before the scheduler hears of its end and prunes.)
    let done = eventually(&agent, "4 runs of tick finished, 3 kept", 30, || {
        let all = finished(&host, "cron", "tick");
        (all.last().is_some_and(|r| r.seq >= 4) && all.len() <= 3).then_some(all)
    });
    for r in &done {
        assert_eq!(r.result, RunResult::Succeeded, "{r:?}");
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(r.trigger, Trigger::Schedule);
        let at = r
            .scheduled_for
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(at.subsec_nanos(), 0, "{r:?}");
        assert_eq!(at.as_secs() % 2, 0, "{r:?}");
        // Started within a second of its fire time (container creation included).
        let late = r
            .started
            .duration_since(r.scheduled_for.unwrap())
            .unwrap_or_default();
        assert!(
            late < Duration::from_secs(1),
            "started {late:?} late: {r:?}"
        );
        let log = log_of(&host, "cron", "tick", r.seq);
        assert!(log.contains("tick at "), "{log}");
        assert!(log.contains("\"stream\":\"stderr\""), "{log}");
    }
    // Finished runs leave no container.
    eventually(&agent, "no leftover run container", 10, || {
        let left = run_containers(&host);
        (left.len() <= 1).then_some(())
    });

    let succeeded = agent.metric(
        "dockmaster_job_runs_total{project=\"cron\",service=\"tick\",result=\"succeeded\"}",
    );
    assert!(succeeded >= 4.0, "{}", agent.metrics());
    assert_eq!(
        agent.metric(
            "dockmaster_job_runs_total{project=\"cron\",service=\"tick\",result=\"failed\"}"
        ),
        0.0
    );
    assert!(agent.metrics().contains(
        "dockmaster_job_runs_total{project=\"cron\",service=\"tick\",result=\"timeout\"} 0"
    ));
    let last = agent
        .metric("dockmaster_job_last_success_timestamp_seconds{project=\"cron\",service=\"tick\"}");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!(last > now - 10.0 && last <= now, "{last} vs {now}");
    assert!(
        agent.metric("dockmaster_job_duration_seconds_count{project=\"cron\",service=\"tick\"}")
            >= 4.0
    );
    // The agent explains each run in its log and its event stream.
    assert!(agent.log().contains("starting run"), "{}", agent.log());
    let events = host.ok(&["events"]);
    assert!(events.contains("job tick: starting run"), "{events}");
    assert!(events.contains("finished: succeeded"), "{events}");

    // The commands: every job with its next run, the history, a manual run through the agent
    // that waits, prints the run's output and exits with its code.
    let jobs = host.ok(&["jobs", "--format", "json"]);
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&jobs).unwrap();
    let names: Vec<_> = jobs
        .iter()
        .map(|j| j["service"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["by-hand", "slow", "tick"]);
    assert_eq!(jobs[2]["schedule"], "*/2 * * * * *");
    assert!(jobs[2]["next_run"].as_str().unwrap().starts_with("20"));
    assert_eq!(jobs[2]["last_run"]["result"], "succeeded");
    let table = host.ok(&["jobs"]);
    assert!(table.contains("cron/tick"), "{table}");
    let history = host.ok(&["job", "history", "cron/tick"]);
    assert!(history.contains("succeeded"), "{history}");
    let out = host.run(&["job", "run", "cron/by-hand"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("run by hand"),
        "{out:?}"
    );
    let by_hand = finished(&host, "cron", "by-hand");
    assert_eq!(by_hand.len(), 1);
    assert_eq!(by_hand[0].trigger, Trigger::Manual);
    assert_eq!(by_hand[0].result, RunResult::Failed);
    let logs = host.ok(&["job", "logs", "cron/by-hand"]);
    assert!(logs.contains("run by hand"), "{logs}");

    // A waiting `job run` streams the output while the run goes, then exits with its code.
    let mut child = host
        .cmd(&["job", "run", "cron/slow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "first\n");
    let slow = runs(&host, "cron", "slow");
    assert_eq!(slow.len(), 1);
    assert_eq!(
        slow[0].result,
        RunResult::Running,
        "the first line came before the end"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "second\n");
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn concurrency_policies_timeouts_and_retries_with_real_containers() {
    let host = Host::new();
    let job = |name: &str, command: &str, x: &str, extra: &str| {
        format!(
            r#"  {name}:
    image: {BUSYBOX}
    command: ["sh", "-c", "{command}"]
    network_mode: none
    stop_grace_period: 1s
{extra}    x-dockmaster: {{{x}}}
"#
        )
    };
    let compose = format!(
        "services:\n{}{}{}{}{}",
        job("forbid", "sleep 2.5", "schedule: \"* * * * * *\"", ""),
        job(
            "allow",
            "sleep 3",
            "schedule: \"*/2 * * * * *\", concurrency: allow",
            ""
        ),
        job(
            "replace",
            "sleep 30",
            "schedule: \"*/3 * * * * *\", concurrency: replace",
            ""
        ),
        job(
            "hang",
            "sleep 30",
            "schedule: \"*/4 * * * * *\", timeout: 1s",
            ""
        ),
        job(
            "flaky",
            "echo attempt; exit 3",
            "schedule: \"0 0 1 1 *\"",
            "    restart: on-failure:2\n"
        ),
    );
    let (repos, _work, c1) = fleet_repo("compose.yaml", &compose, "jobs");
    let agent = Agent::start(&host, &config(&repos, "conc"));
    converged(&agent, &host, "conc", &c1, 60);

    // A manual run of a failing job is retried per its restart policy (on-failure:2).
    let out = host.ok(&["job", "run", "conc/flaky", "--detach"]);
    assert!(out.trim().ends_with('1') || out.contains("run 1"), "{out}");
    let flaky = eventually(&agent, "flaky: 1 run and 2 retries", 20, || {
        let all = finished(&host, "conc", "flaky");
        (all.len() == 3).then_some(all)
    });
    let attempts: Vec<_> = flaky
        .iter()
        .map(|r| (r.trigger, r.attempt, r.exit_code))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (Trigger::Manual, 1, Some(3)),
            (Trigger::Retry, 2, Some(3)),
            (Trigger::Retry, 3, Some(3))
        ]
    );
    assert!(flaky.iter().all(|r| r.result == RunResult::Failed));
    assert!(log_of(&host, "conc", "flaky", 3).contains("attempt"));

    eventually(&agent, "every policy showed itself", 40, || {
        let hang = finished(&host, "conc", "hang");
        let replaced = finished(&host, "conc", "replace");
        let allow = runs(&host, "conc", "allow");
        let overlapping = allow.windows(2).any(|w| match w[0].finished {
            None => true,
            Some(end) => w[1].started < end,
        });
        (!hang.is_empty()
            && replaced.iter().any(|r| r.result == RunResult::Replaced)
            && overlapping
            && agent.metric(
                "dockmaster_job_runs_total{project=\"conc\",service=\"forbid\",result=\"skipped\"}",
            ) >= 1.0)
            .then_some(())
    });
    // forbid: runs never overlap, and skipped fire times were counted.
    let forbid = finished(&host, "conc", "forbid");
    assert!(!forbid.is_empty());
    for w in forbid.windows(2) {
        assert!(w[1].started >= w[0].finished.unwrap(), "{w:?}");
    }
    assert!(
        forbid.iter().all(|r| r.result == RunResult::Succeeded),
        "{forbid:?}"
    );
    // replace: the stopped run is recorded as replaced, and its successor runs.
    let replaced: Vec<_> = finished(&host, "conc", "replace")
        .into_iter()
        .filter(|r| r.result == RunResult::Replaced)
        .collect();
    assert!(replaced[0].error.as_deref().unwrap().contains("replaced"));
    // timeout: stopped after 1 s (plus the 1 s grace), counted as a failure.
    let hang = &finished(&host, "conc", "hang")[0];
    assert_eq!(hang.result, RunResult::Timeout, "{hang:?}");
    let took = hang.finished.unwrap().duration_since(hang.started).unwrap();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(hang.error.as_deref().unwrap().contains("timeout of 1s"));
    assert!(
        agent.metric(
            "dockmaster_job_runs_total{project=\"conc\",service=\"hang\",result=\"timeout\"}"
        ) >= 1.0
    );
    assert!(
        agent.metric(
            "dockmaster_job_last_failure_timestamp_seconds{project=\"conc\",service=\"hang\"}"
        ) > 0.0
    );
    // A timed-out run is not retried: hang has no retry records.
    assert!(runs(&host, "conc", "hang")
        .iter()
        .all(|r| r.trigger == Trigger::Schedule));

    let s = status(&host);
    assert_eq!(project(&s, "conc").unwrap()["state"], "converged");
}

#[test]
fn a_run_missed_while_the_agent_was_down_runs_once_at_start_and_a_running_one_is_adopted() {
    let host = Host::new();
    let compose = format!(
        r#"services:
  nightly:
    image: {BUSYBOX}
    command: ["sh", "-c", "echo caught up"]
    network_mode: none
    x-dockmaster:
      schedule: "*/6 * * * * *"
      missed_run_deadline: 1m
  strict:
    image: {BUSYBOX}
    command: ["true"]
    network_mode: none
    x-dockmaster:
      schedule: "*/6 * * * * *"
      missed_run_deadline: 1s
  long:
    image: {BUSYBOX}
    command: ["sh", "-c", "sleep 4; echo long done"]
    network_mode: none
    x-dockmaster:
      schedule: "0 0 1 1 *"
"#
    );
    let (repos, _work, c1) = fleet_repo("compose.yaml", &compose, "missed");
    let mut agent = Agent::start(&host, &config(&repos, "miss"));
    converged(&agent, &host, "miss", &c1, 60);
    // A first scheduled run, so the job's state is on disk.
    eventually(&agent, "nightly ran once", 20, || {
        (!finished(&host, "miss", "nightly").is_empty()).then_some(())
    });
    // A long run is going when the agent dies.
    host.ok(&["job", "run", "miss/long", "--detach"]);
    eventually(&agent, "long is running", 10, || {
        runs(&host, "miss", "long")
            .iter()
            .any(|r| r.container_id.is_some())
            .then_some(())
    });
    agent.kill9();
    let before_nightly = runs(&host, "miss", "nightly").len();
    let before_strict = runs(&host, "miss", "strict").len();
    // Down across a fire time (every 6 s) for 7-8 s.
    std::thread::sleep(Duration::from_secs(7));
    let agent = Agent::start(&host, &config(&repos, "miss"));
    let missed = eventually(&agent, "the missed run", 10, || {
        runs(&host, "miss", "nightly")
            .into_iter()
            .find(|r| r.trigger == Trigger::Missed)
    });
    // Exactly one missed run; the strict job's deadline (1 s) had passed: no missed run.
    assert_eq!(
        runs(&host, "miss", "nightly")
            .iter()
            .filter(|r| r.trigger == Trigger::Missed)
            .count(),
        1
    );
    assert!(runs(&host, "miss", "nightly").len() > before_nightly);
    assert!(runs(&host, "miss", "strict")
        .iter()
        .all(|r| r.trigger != Trigger::Missed));
    let _ = before_strict;
    let at = missed.scheduled_for.unwrap();
    assert!(at < missed.started, "{missed:?}");
    // The run started before the crash is watched to its end, not lost.
    let long = eventually(&agent, "the adopted run finished", 20, || {
        finished(&host, "miss", "long").into_iter().next()
    });
    assert_eq!(long.result, RunResult::Succeeded, "{long:?}");
    assert!(log_of(&host, "miss", "long", long.seq).contains("long done"));
    assert!(agent
        .log()
        .contains("watching a run started before the agent restarted"));
}
