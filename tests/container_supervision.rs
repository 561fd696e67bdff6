//! Supervision by the shim, with real containers: restart policies and their backoff, manual
//! stops during the backoff, healthchecks (starting, healthy, unhealthy, timeouts, output
//! cap, the image's HEALTHCHECK and the flags over it), restarts of unhealthy containers, and
//! exit/OOM reporting across restarts.
mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use support::containers::{assert_gone, err_text, mounts_under, Host, BUSYBOX};
use support::netns::NetnsHost;

fn out_text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `inspect` until `pred` holds; fails with the last answer otherwise.
fn wait_for(
    host: &Host,
    id: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let out = host.run(&["inspect", id]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let v = v[0].clone();
        if out.status.success() && pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "container {id}: not {what} within {within:?}: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn health_status(v: &Value) -> &str {
    v["State"]["Health"]["Status"].as_str().unwrap_or("")
}

fn shim_pid(host: &Host, id: &str) -> i32 {
    std::fs::read_to_string(host.container_dir(id).join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn exit_record(host: &Host, id: &str) -> Value {
    serde_json::from_slice(&std::fs::read(host.container_dir(id).join("exit.json")).unwrap())
        .unwrap()
}

/// The log's records as (time, text) from `logs -t`.
fn stamped_logs(host: &Host, id: &str) -> Vec<(SystemTime, String)> {
    out_text(&host.run(&["logs", "-t", id]))
        .lines()
        .map(|l| {
            let (ts, text) = l.split_once(' ').unwrap();
            let t = dockmaster::runtime::logs::parse_rfc3339(ts).expect("a timestamp");
            (t, text.to_string())
        })
        .collect()
}

#[test]
fn bad_supervision_flags_are_refused_naming_the_flag() {
    let host = Host::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--restart", "sometimes"], "--restart"),
        (&["--restart", "on-failure:-2"], "--restart"),
        (&["--restart", "always:3"], "--restart"),
        (&["--rm", "--restart", "always"], "--rm"),
        (&["--health-interval", "-1s"], "--health-interval"),
        (&["--health-timeout", "soon"], "--health-timeout"),
        (&["--health-timeout", "10us"], "--health-timeout"),
        (&["--health-start-period", "-5s"], "--health-start-period"),
        (
            &["--health-start-interval", "1x"],
            "--health-start-interval",
        ),
        (&["--health-retries", "-1"], "--health-retries"),
        (&["--health-retries", "three"], "--health-retries"),
        (
            &["--no-healthcheck", "--health-cmd", "true"],
            "--no-healthcheck",
        ),
    ];
    for (flags, named) in cases {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[BUSYBOX, "true"]);
        let out = host.run(&args);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{flags:?}: {}",
            err_text(&out)
        );
        assert!(
            err_text(&out).contains(named),
            "{flags:?}: {}",
            err_text(&out)
        );
    }
    assert!(host.all_ids().is_empty(), "nothing was created");
}

#[test]
fn on_failure_restarts_twice_then_stops_with_the_exit_code() {
    let host = Host::new();
    // Each run appends to a file in the container: the rootfs is kept across restarts.
    let id = host.detached(
        &["--restart", "on-failure:2"],
        &[
            "sh",
            "-c",
            "echo run >> /tmp/runs; wc -l < /tmp/runs; exit 3",
        ],
    );
    let v = host.wait_status(&id, "exited", Duration::from_secs(20));
    assert_eq!(v["State"]["ExitCode"], 3, "{v:#}");
    assert_eq!(v["RestartCount"], 2, "{v:#}");
    assert_eq!(v["State"]["Restarting"], false);
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
    assert_eq!(out_text(&host.run(&["logs", &id])), "1\n2\n3\n");
    let exit = exit_record(&host, &id);
    assert_eq!(exit["restart_count"], 2);
    assert!(exit.get("manually_stopped").is_none(), "{exit}");
    let ps = host.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (3)"), "{ps}");
    // The shim goes away (it writes the exit record first, then releases and removes its
    // socket), and removal leaves nothing.
    let sock = host.container_dir(&id).join("shim.sock");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!sock.exists(), "the shim's socket outlived it");
    host.ok(&["rm", &id]);
    assert_gone(&host, &id);

    // A successful exit is final for on-failure.
    let id = host.detached(&["--restart", "on-failure"], &["true"]);
    let v = host.wait_status(&id, "exited", Duration::from_secs(20));
    assert_eq!(
        (v["State"]["ExitCode"].as_i64(), v["RestartCount"].as_i64()),
        (Some(0), Some(0))
    );
}

#[test]
fn a_foreground_run_returns_with_the_first_exit() {
    let host = Host::new();
    let out = host.run(&[
        "run",
        "--name",
        "fg",
        "--restart",
        "on-failure:1",
        BUSYBOX,
        "sh",
        "-c",
        "echo once; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", err_text(&out));
    assert_eq!(out_text(&out), "once\n");
    // The container goes on in the background: restarted once, then done.
    let v = wait_for(
        &host,
        "fg",
        Duration::from_secs(20),
        "exited after 1 restart",
        |v| v["State"]["Status"] == "exited" && v["RestartCount"] == 1,
    );
    assert_eq!(v["State"]["ExitCode"], 4);
    assert_eq!(out_text(&host.run(&["logs", "fg"])), "once\nonce\n");
}

#[test]
fn always_backs_off_with_growing_delays_and_a_stop_ends_the_backoff() {
    let host = Host::new();
    let id = host.detached(
        &["--restart", "always"],
        &["sh", "-c", "echo crash; exit 1"],
    );
    // 100, 200, 400, 800, 1600 ms of backoff: six runs in ~3.1 s plus start times. The count
    // goes up when a restart is scheduled: at 6, the sixth run has ended and logged.
    let v = wait_for(
        &host,
        &id,
        Duration::from_secs(30),
        "restarted 6 times",
        |v| v["RestartCount"].as_u64() >= Some(6),
    );
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "always");
    let stamps = stamped_logs(&host, &id);
    assert!(stamps.len() >= 6, "{stamps:?}");
    let gaps: Vec<Duration> = stamps
        .windows(2)
        .take(5)
        .map(|w| w[1].0.duration_since(w[0].0).unwrap())
        .collect();
    for (i, gap) in gaps.iter().enumerate() {
        let backoff = Duration::from_millis(100 << i);
        assert!(
            *gap >= backoff && *gap < backoff + Duration::from_millis(1500),
            "gap {i} is {gap:?}, the backoff {backoff:?}: {gaps:?}"
        );
    }
    assert!(gaps[4] > gaps[0] * 8, "delays grow: {gaps:?}");

    // In the backoff (3.2 s after the 6th run, 6.4 s after the 7th): restarting.
    let v = wait_for(&host, &id, Duration::from_secs(20), "restarting", |v| {
        v["State"]["Status"] == "restarting"
    });
    assert_eq!(v["State"]["Restarting"], true);
    assert_eq!(
        v["State"]["Running"], true,
        "Docker counts restarting as running"
    );
    assert_eq!(v["State"]["ExitCode"], 1);
    assert_eq!(v["State"]["Pid"], 0);
    let ps = host.ok(&["ps"]);
    assert!(ps.contains("Restarting (1)"), "{ps}");
    // A signal that is not a stop has nothing to reach during the backoff.
    let usr1 = host.run(&["kill", "-s", "USR1", &id]);
    assert!(!usr1.status.success());
    assert!(
        err_text(&usr1).contains("restarting"),
        "{}",
        err_text(&usr1)
    );
    // A stop cancels the restart and ends the shim at once.
    let shim = shim_pid(&host, &id);
    let count = v["RestartCount"].as_u64().unwrap();
    let started = Instant::now();
    host.ok(&["stop", &id]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let v = host.inspect(&id);
    assert_eq!(v["State"]["Status"], "exited", "{v:#}");
    assert_eq!(v["State"]["ExitCode"], 1);
    assert_eq!(v["RestartCount"].as_u64(), Some(count));
    assert_eq!(exit_record(&host, &id)["manually_stopped"], true);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{shim}")).exists() {
        assert!(Instant::now() < deadline, "the shim {shim} did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing restarts it later.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(host.inspect(&id)["RestartCount"].as_u64(), Some(count));
    host.ok(&["rm", &id]);
    assert_gone(&host, &id);
}

#[test]
fn manual_stops_are_never_restarted() {
    let host = Host::new();
    // stop of a running container with the always policy.
    let id = host.detached(&["--restart", "always"], &["sleep", "300"]);
    host.wait_status(&id, "running", Duration::from_secs(10));
    host.ok(&["stop", "-t", "1", &id]);
    let v = host.wait_status(&id, "exited", Duration::from_secs(10));
    assert_eq!(v["RestartCount"], 0, "{v:#}");
    assert_eq!(exit_record(&host, &id)["manually_stopped"], true);

    // kill -s KILL: a stop too.
    let id = host.detached(&["--restart", "unless-stopped"], &["sleep", "300"]);
    host.wait_status(&id, "running", Duration::from_secs(10));
    host.ok(&["kill", &id]);
    let v = host.wait_status(&id, "exited", Duration::from_secs(10));
    assert_eq!(
        (v["State"]["ExitCode"].as_i64(), v["RestartCount"].as_i64()),
        (Some(137), Some(0))
    );

    // A signal the process dies of, that is neither SIGKILL nor the stop signal, is a crash.
    let id = host.detached(
        &["--restart", "on-failure:1"],
        &[
            "sh",
            "-c",
            "trap 'exit 9' USR1; echo ready; while true; do sleep 0.05; done",
        ],
    );
    wait_for(&host, &id, Duration::from_secs(10), "ready", |_| {
        out_text(&host.run(&["logs", &id])) == "ready\n"
    });
    host.ok(&["kill", "-s", "USR1", &id]);
    let v = wait_for(&host, &id, Duration::from_secs(10), "restarted", |v| {
        v["RestartCount"] == 1
    });
    assert!(
        v["State"]["Status"] == "running" || v["State"]["Status"] == "restarting",
        "{v:#}"
    );

    // rm -f during a backoff removes everything.
    let id = host.detached(&["--restart", "always"], &["sh", "-c", "exit 2"]);
    wait_for(
        &host,
        &id,
        Duration::from_secs(20),
        "in a long backoff",
        |v| v["RestartCount"].as_u64() >= Some(4) && v["State"]["Status"] == "restarting",
    );
    host.ok(&["rm", "-f", &id]);
    assert_gone(&host, &id);
}

#[test]
fn healthcheck_goes_starting_healthy_unhealthy_without_restart_when_opted_out() {
    let host = Host::new();
    // Failures inside the start period do not count: /tmp/ok appears after 1.5 s, the
    // probe fails until then, yet with 2 retries it never turns unhealthy.
    let id = host.detached(
        &[
            "--health-cmd",
            "echo probe-says-hi; test -f /tmp/ok",
            "--health-interval",
            "300ms",
            "--health-start-period",
            "10s",
            "--health-start-interval",
            "200ms",
            "--health-retries",
            "2",
            "--no-restart-unhealthy",
        ],
        &["sh", "-c", "sleep 1.5; touch /tmp/ok; exec sleep 300"],
    );
    let v = host.inspect(&id);
    assert_eq!(health_status(&v), "starting", "{v:#}");
    assert_eq!(v["Config"]["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(v["HostConfig"]["RestartUnhealthy"], false);
    let ps = host.ok(&["ps"]);
    assert!(ps.contains("(health: starting)"), "{ps}");
    let v = wait_for(&host, &id, Duration::from_secs(15), "healthy", |v| {
        health_status(v) == "healthy"
    });
    let log = v["State"]["Health"]["Log"].as_array().unwrap().clone();
    assert!(log.len() >= 2, "{v:#}");
    // Failures were logged while starting, none counted.
    assert!(log.iter().any(|r| r["ExitCode"] == 1), "{v:#}");
    assert_eq!(log.last().unwrap()["ExitCode"], 0);
    assert_eq!(log.last().unwrap()["Output"], "probe-says-hi\n");
    assert_eq!(v["State"]["Health"]["FailingStreak"], 0);
    let ps = host.ok(&["ps"]);
    assert!(ps.contains("(healthy)"), "{ps}");

    // The check starts failing: unhealthy after 2 consecutive failures, and it stays so.
    host.ok(&["exec", &id, "rm", "/tmp/ok"]);
    let v = wait_for(&host, &id, Duration::from_secs(15), "unhealthy", |v| {
        health_status(v) == "unhealthy"
    });
    assert!(
        v["State"]["Health"]["FailingStreak"].as_u64() >= Some(2),
        "{v:#}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let v = host.inspect(&id);
    assert_eq!(health_status(&v), "unhealthy", "{v:#}");
    assert_eq!(v["State"]["Status"], "running");
    assert_eq!(v["RestartCount"], 0, "opted out: never restarted");
    let log = v["State"]["Health"]["Log"].as_array().unwrap();
    assert_eq!(log.len(), 5, "the last five results: {v:#}");
    for r in log {
        assert!(
            r["Start"].as_str().unwrap() <= r["End"].as_str().unwrap(),
            "{r}"
        );
    }
    assert!(host.ok(&["ps"]).contains("(unhealthy)"));
    // health.json holds the same, for readers that do not ask the shim.
    let file: Value = serde_json::from_slice(
        &std::fs::read(host.container_dir(&id).join("health.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["Status"], "unhealthy");
    // Recovers with one success.
    host.ok(&["exec", &id, "touch", "/tmp/ok"]);
    wait_for(&host, &id, Duration::from_secs(10), "healthy again", |v| {
        health_status(v) == "healthy"
    });
    // After the stop the last state stays readable.
    host.ok(&["stop", "-t", "1", &id]);
    let v = host.wait_status(&id, "exited", Duration::from_secs(10));
    assert_eq!(health_status(&v), "healthy", "{v:#}");
}

#[test]
fn an_unhealthy_container_is_restarted() {
    let host = Host::new();
    // sh as PID 1 ignores SIGTERM: the stop takes the grace period (1 s), then SIGKILL.
    let id = host.detached(
        &[
            "--health-cmd",
            "test -f /tmp/ok",
            "--health-interval",
            "300ms",
            "--health-retries",
            "2",
            "--stop-timeout",
            "1",
        ],
        &["sh", "-c", "touch /tmp/ok; exec sleep 300"],
    );
    wait_for(&host, &id, Duration::from_secs(10), "healthy", |v| {
        health_status(v) == "healthy"
    });
    let first_pid = host.inspect(&id)["State"]["Pid"].as_i64().unwrap();
    host.ok(&["exec", &id, "rm", "/tmp/ok"]);
    let v = wait_for(&host, &id, Duration::from_secs(20), "restarted", |v| {
        v["RestartCount"] == 1
    });
    assert_eq!(
        v["HostConfig"]["RestartPolicy"]["Name"], "no",
        "restarted whatever the policy"
    );
    // The new run creates /tmp/ok again: starting, then healthy, in a new process.
    let v = wait_for(
        &host,
        &id,
        Duration::from_secs(15),
        "healthy after the restart",
        |v| v["State"]["Status"] == "running" && health_status(v) == "healthy",
    );
    assert_ne!(v["State"]["Pid"].as_i64().unwrap(), first_pid);
    assert_eq!(v["RestartCount"], 1);
    let log = v["State"]["Health"]["Log"].as_array().unwrap();
    assert!(
        log.iter().any(|r| r["ExitCode"] == 1),
        "the failures are kept: {v:#}"
    );
    let shim_log =
        std::fs::read_to_string(host.container_dir(&id).join("shim.log")).unwrap_or_default();
    assert!(shim_log.contains("unhealthy"), "{shim_log}");
    host.ok(&["rm", "-f", &id]);
    assert_gone(&host, &id);
}

#[test]
fn probes_time_out_and_their_output_is_capped() {
    let host = Host::new();
    let slow = host.detached(
        &[
            "--health-cmd",
            "sleep 30",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "1",
            "--no-restart-unhealthy",
        ],
        &["sleep", "300"],
    );
    let chatty = host.detached(
        &[
            "--health-cmd",
            "head -c 6000 /dev/zero | tr '\\0' x",
            "--health-interval",
            "200ms",
        ],
        &["sleep", "300"],
    );
    let v = wait_for(&host, &slow, Duration::from_secs(15), "unhealthy", |v| {
        health_status(v) == "unhealthy"
    });
    let r = &v["State"]["Health"]["Log"][0];
    assert_eq!(r["ExitCode"], -1, "{v:#}");
    assert_eq!(r["Output"], "Health check exceeded timeout (300ms)");
    // Killed at the timeout, not left to run: well under the 30 s of the command.
    let ms = |s: &Value| dockmaster::runtime::logs::parse_rfc3339(s.as_str().unwrap()).unwrap();
    let took = ms(&r["End"]).duration_since(ms(&r["Start"])).unwrap();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The killed probes do not pile up in the container.
    std::thread::sleep(Duration::from_secs(1));
    let sleeping = host.ok(&["exec", &slow, "ps", "-o", "args"]);
    assert!(
        sleeping.lines().filter(|l| l.contains("sleep 30")).count() <= 1,
        "{sleeping}"
    );

    let v = wait_for(&host, &chatty, Duration::from_secs(15), "healthy", |v| {
        health_status(v) == "healthy"
    });
    let output = v["State"]["Health"]["Log"][0]["Output"].as_str().unwrap();
    assert_eq!(output.len(), 4096 + 3, "4 KiB and an ellipsis");
    assert!(output.starts_with("xxxx") && output.ends_with("x..."));
}

#[test]
fn the_images_healthcheck_is_the_default_and_flags_override_it() {
    // In a namespace of its own on a bridge network: `--network none` leaves loopback down,
    // and the image's probe fetches from 127.0.0.1.
    let host = NetnsHost::new("hc");
    let layout = host.root.path().join("httpd-layout");
    let tag = "localhost/httpd:health";
    support::write_oci_layout(&layout, &[(tag, &support::httpd_with_healthcheck())]);
    host.ok(&["image", "import", layout.to_str().unwrap(), "--tag", tag]);

    // The image's wget probe every second: healthy.
    let id = host.ok(&["run", "-d", tag]).trim().to_string();
    let v = wait_for(&host, &id, Duration::from_secs(15), "healthy", |v| {
        health_status(v) == "healthy"
    });
    assert_eq!(v["Config"]["Healthcheck"]["Test"][1], "wget");
    assert_eq!(v["Config"]["Healthcheck"]["Interval"], 1_000_000_000u64);

    // A flag replaces one field; the image's test stays.
    let id = host
        .ok(&[
            "run",
            "-d",
            "--health-interval",
            "250ms",
            "--health-retries",
            "7",
            tag,
        ])
        .trim()
        .to_string();
    let v = wait_for(&host, &id, Duration::from_secs(15), "healthy", |v| {
        health_status(v) == "healthy"
    });
    let hc = &v["Config"]["Healthcheck"];
    assert_eq!(hc["Test"][1], "wget");
    assert_eq!(hc["Interval"], 250_000_000u64);
    assert_eq!(hc["Retries"], 7);
    assert_eq!(hc["Timeout"], 2_000_000_000u64, "kept from the image");

    // A command of our own.
    let id = host
        .ok(&[
            "run",
            "-d",
            "--health-cmd",
            "exit 1",
            "--health-interval",
            "200ms",
            "--health-retries",
            "1",
            "--no-restart-unhealthy",
            tag,
        ])
        .trim()
        .to_string();
    let v = wait_for(&host, &id, Duration::from_secs(15), "unhealthy", |v| {
        health_status(v) == "unhealthy"
    });
    assert_eq!(
        v["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "exit 1"])
    );

    // --no-healthcheck: no probe, no State.Health.
    let id = host
        .ok(&["run", "-d", "--no-healthcheck", tag])
        .trim()
        .to_string();
    host.wait_status(&id, "running", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    let v = host.inspect(&id);
    assert!(v["State"].get("Health").is_none(), "{v:#}");
    assert_eq!(
        v["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
    assert!(!host.container_dir(&id).join("health.json").exists());
    let ps = host.ok(&["ps"]);
    let row = ps.lines().find(|l| l.starts_with(&id[..12])).unwrap();
    assert!(!row.contains("(health"), "{row}");
}

#[test]
fn oom_kills_are_reported_after_restarts() {
    let host = Host::new();
    // busybox tail keeps the last lines of a file without newlines: it grows without bound.
    let id = host.detached(
        &["-m", "16m", "--restart", "on-failure:1"],
        &["tail", "/dev/zero"],
    );
    let v = host.wait_status(&id, "exited", Duration::from_secs(60));
    assert_eq!(v["RestartCount"], 1, "{v:#}");
    assert_eq!(v["State"]["OOMKilled"], true, "{v:#}");
    assert_eq!(v["State"]["ExitCode"], 137, "{v:#}");
    // The restarted run had its own cgroup, with the limit.
    host.ok(&["rm", &id]);
    assert_gone(&host, &id);
}

#[test]
fn restarts_keep_the_network_namespace_and_address() {
    let host = NetnsHost::new("sup");
    let id = host.detached(
        &["--restart", "on-failure:2"],
        &[
            "sh",
            "-c",
            "ip -4 -o addr show eth0 | awk '{print $4}'; cat /etc/hostname; exit 1",
        ],
    );
    let v = host.wait_status(&id, "exited", Duration::from_secs(30));
    assert_eq!(v["RestartCount"], 2, "{v:#}");
    let logs = out_text(&host.run(&["logs", &id]));
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 6, "{logs}");
    assert!(lines[0].contains('/'), "an address: {logs}");
    for run in lines.chunks(2) {
        assert_eq!(
            run,
            &lines[..2],
            "every run has the same address and hostname: {logs}"
        );
    }
    // Released once the container ended for good (the shim removes its socket last).
    let socket = host.container_dir(&id).join("shim.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while socket.exists() {
        assert!(Instant::now() < deadline, "the shim did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let netns = host.root.root().join("netns").join(&id);
    assert!(
        !netns.exists() || mounts_under(&netns).is_empty(),
        "{}",
        netns.display()
    );
    let endpoints = std::fs::read_dir(host.root.root().join("networks/bridge/endpoints"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(endpoints, 0);
}
