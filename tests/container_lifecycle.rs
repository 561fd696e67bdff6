//! Container lifecycle with real containers: run, logs, stop, kill, exec, rm, shims that
//! outlive their launcher, crash and shim-loss reporting, cleanup.
mod support;

use std::time::Duration;

use support::containers::{assert_gone, err_text, Host, BUSYBOX};

#[test]
fn foreground_run_streams_output_and_returns_the_exit_code() {
    let host = Host::new();
    let out = host.sh(&[], "echo out; echo err >&2; exit 7");
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // --rm: nothing is left.
    assert!(host.all_ids().is_empty());
}

fn out_text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn detached_container_logs_tail_timestamps_and_rotation() {
    let host = Host::new();
    let id = host.detached(
        &["--log-opt", "max-size=2k", "--log-opt", "max-file=2"],
        &[
            "sh",
            "-c",
            "for i in $(seq 1 300); do echo line-$i; done; echo oops >&2",
        ],
    );
    host.wait_status(&id, "exited", Duration::from_secs(20));
    let logs = host.run(&["logs", &id]);
    let stdout = out_text(&logs);
    // Rotation dropped the oldest lines and kept the newest, in order.
    assert!(stdout.ends_with("line-299\nline-300\n"), "{stdout}");
    assert!(
        !stdout.contains("line-1\n"),
        "oldest lines should be rotated away"
    );
    assert_eq!(err_text(&logs), "oops\n");
    let lines: Vec<&str> = stdout.lines().collect();
    let first: u32 = lines[0].trim_start_matches("line-").parse().unwrap();
    let expected: Vec<String> = (first..=300).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, expected);
    // At most two files, each within the size (plus one record).
    let files: Vec<_> = std::fs::read_dir(host.container_dir(&id))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .collect();
    assert!(files.len() <= 2, "{} log files", files.len());
    for f in &files {
        assert!(f.metadata().unwrap().len() <= 2048 + 512);
    }
    let tail = out_text(&host.run(&["logs", "--tail", "2", &id]));
    assert_eq!(
        tail, "line-300\n",
        "stderr line is the other of the last two"
    );
    let stamped = out_text(&host.run(&["logs", "-t", "--tail", "1", &id]));
    assert!(
        stamped.is_empty(),
        "the last record is on stderr: {stamped}"
    );
    let stamped = host.run(&["logs", "-t", "--tail", "3", &id]);
    let first_line = out_text(&stamped).lines().next().unwrap().to_string();
    let (ts, text) = first_line.split_once(' ').unwrap();
    assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
    assert_eq!(text, "line-299");
    host.ok(&["rm", &id]);
    assert_gone(&host, &id);
}

#[test]
fn logs_follow_ends_when_the_container_stops() {
    let host = Host::new();
    let id = host.detached(&[], &["sh", "-c", "echo a; sleep 1; echo b"]);
    let out = host.run(&["logs", "-f", &id]);
    assert!(out.status.success());
    assert_eq!(out_text(&out), "a\nb\n");
}

#[test]
fn stop_waits_for_the_grace_period_then_kills() {
    let host = Host::new();
    // busybox httpd as PID 1 has no SIGTERM handler: the kernel drops the signal.
    let id = host.detached(&[], &["httpd", "-f", "-p", "8080"]);
    host.wait_status(&id, "running", Duration::from_secs(10));
    let started = std::time::Instant::now();
    host.ok(&["stop", "-t", "2", &id]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "stop returned after {took:?}"
    );
    let v = host.inspect(&id);
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 137);
    assert_eq!(v["State"]["Signal"], 9);

    // A process that handles SIGTERM stops at once, with its own exit code.
    let id = host.detached(
        &[],
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; while true; do sleep 0.05; done",
        ],
    );
    host.wait_status(&id, "running", Duration::from_secs(10));
    let started = std::time::Instant::now();
    host.ok(&["stop", "-t", "30", &id]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(host.inspect(&id)["State"]["ExitCode"], 42);
}

#[test]
fn kill_sends_the_signal() {
    let host = Host::new();
    let id = host.detached(
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-usr1; exit 3' USR1; echo ready; while true; do sleep 0.05; done",
        ],
    );
    // PID 1 ignores a signal it has no handler for yet: wait until the trap is set.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while out_text(&host.run(&["logs", &id])) != "ready\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the trap was never set"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    host.ok(&["kill", "-s", "USR1", &id]);
    let v = host.wait_status(&id, "exited", Duration::from_secs(10));
    assert_eq!(v["State"]["ExitCode"], 3);
    assert_eq!(out_text(&host.run(&["logs", &id])), "ready\ngot-usr1\n");
    let bad = host.run(&["kill", "-s", "NOPE", &id]);
    assert!(!bad.status.success());
    assert!(err_text(&bad).contains("NOPE"), "{}", err_text(&bad));
}

#[test]
fn init_reaps_zombies_and_forwards_signals() {
    let host = Host::new();
    // Orphans re-parented to PID 1; `exec sleep` never waits for them.
    let script = "(sleep 0.1 &); (sleep 0.1 &); (sleep 0.1 &); exec sleep 30";
    let with_init = host.detached(&["--init"], &["sh", "-c", script]);
    let without = host.detached(&[], &["sh", "-c", script]);
    std::thread::sleep(Duration::from_millis(800));
    let zombies = |id: &str| {
        host.ok(&["exec", id, "ps", "-o", "stat"])
            .lines()
            .filter(|l| l.trim_start().starts_with('Z'))
            .count()
    };
    assert_eq!(zombies(&with_init), 0, "--init must reap orphans");
    assert_eq!(
        zombies(&without),
        3,
        "control: without --init the orphans stay zombies"
    );
    let pid1 = host.ok(&["exec", &with_init, "cat", "/proc/1/cmdline"]);
    assert!(pid1.starts_with("/dev/init\0"), "{pid1:?}");
    // SIGTERM reaches `sleep` through the init, which exits with 128+15.
    host.ok(&["stop", "-t", "20", &with_init]);
    assert_eq!(host.inspect(&with_init)["State"]["ExitCode"], 143);
}

#[test]
fn exec_exit_codes_user_env_and_workdir() {
    let host = Host::new();
    let id = host.detached(&["-e", "FROM_RUN=1", "-w", "/tmp"], &["sleep", "30"]);
    host.wait_status(&id, "running", Duration::from_secs(10));
    assert_eq!(
        host.run(&["exec", &id, "sh", "-c", "exit 5"]).status.code(),
        Some(5)
    );
    assert_eq!(host.run(&["exec", &id, "true"]).status.code(), Some(0));
    let missing = host.run(&["exec", &id, "no-such-program"]);
    assert_eq!(missing.status.code(), Some(127), "{}", err_text(&missing));
    assert!(
        err_text(&missing).contains("no-such-program"),
        "{}",
        err_text(&missing)
    );
    assert_eq!(host.ok(&["exec", "-u", "www", &id, "id", "-u"]), "33\n");
    assert_eq!(host.ok(&["exec", &id, "pwd"]), "/tmp\n");
    assert_eq!(host.ok(&["exec", "-w", "/bin", &id, "pwd"]), "/bin\n");
    let env = host.ok(&["exec", "-e", "X=y", &id, "env"]);
    assert!(
        env.contains("X=y\n") && env.contains("FROM_RUN=1\n"),
        "{env}"
    );
    // The exec joins the container's PID namespace: it sees the init as PID 1.
    assert_eq!(host.ok(&["exec", &id, "cat", "/proc/1/comm"]), "sleep\n");
    // Input only with -i.
    let mut cmd = host.cmd(&["exec", "-i", &id, "cat"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out_text(&out), "piped\n");
    // A tty: the process sees a terminal.
    let tty = host.run(&["exec", "-t", &id, "sh", "-c", "test -t 1 && echo is-a-tty"]);
    assert!(out_text(&tty).contains("is-a-tty"), "{tty:?}");
    host.ok(&["rm", "-f", &id]);
    let stopped = host.run(&["exec", &id, "true"]);
    assert!(!stopped.status.success());
}

#[test]
fn container_outlives_its_launcher_and_is_found_again() {
    let host = Host::new();
    let mut launcher = host
        .cmd(&[
            "run",
            "--name",
            "survivor",
            BUSYBOX,
            "sh",
            "-c",
            "echo up; sleep 30",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let v = host.wait_status("survivor", "running", Duration::from_secs(10));
    let id = v["Id"].as_str().unwrap().to_string();
    // SIGKILL the CLI that started it: nothing forwards, nothing cleans up.
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let ps = host.ok(&["ps", "--format", "json"]);
    let row: serde_json::Value = serde_json::from_str(ps.lines().next().unwrap()).unwrap();
    assert_eq!(row["ID"], id);
    assert_eq!(row["State"], "running");
    assert_eq!(out_text(&host.run(&["logs", "survivor"])), "up\n");
    host.ok(&["rm", "-f", "survivor"]);
    assert_gone(&host, &id);
}

#[test]
fn crashed_container_and_killed_shim_are_reported() {
    let host = Host::new();
    // The process behind the init dies of SIGSEGV: 128 + 11, like Docker.
    let crashed = host.detached(&["--init"], &["sh", "-c", "kill -SEGV $$"]);
    let v = host.wait_status(&crashed, "exited", Duration::from_secs(10));
    assert_eq!(v["State"]["ExitCode"], 139);
    let ps = host.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (139)"), "{ps}");

    let id = host.detached(&[], &["sleep", "30"]);
    let v = host.wait_status(&id, "running", Duration::from_secs(10));
    let container_pid = v["State"]["Pid"].as_i64().unwrap();
    let shim_pid: i32 = std::fs::read_to_string(host.container_dir(&id).join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY-free: plain kill of a process this test started (through dockmaster).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let v = host.inspect(&id);
    assert_eq!(v["State"]["Status"], "dead", "{v:#}");
    assert!(
        v["State"]["Error"].as_str().unwrap().contains("shim"),
        "{v:#}"
    );
    let ps = host.ok(&["ps", "-a"]);
    assert!(ps.contains("Dead"), "{ps}");
    // rm refuses while the orphaned process runs; -f kills it and cleans everything.
    assert!(!host.run(&["rm", &id]).status.success());
    host.ok(&["rm", "-f", &id]);
    assert_gone(&host, &id);
    assert!(
        !std::path::Path::new(&format!("/proc/{container_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{container_pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "the container's process must be gone"
    );
}

#[test]
fn names_prefixes_and_removal() {
    let host = Host::new();
    let id = host.detached(&["--name", "web"], &["sleep", "30"]);
    let dup = host.run(&["run", "-d", "--name", "web", BUSYBOX, "true"]);
    assert_eq!(dup.status.code(), Some(125));
    assert!(
        err_text(&dup).contains("already used"),
        "{}",
        err_text(&dup)
    );
    assert_eq!(host.inspect(&id[..8])["Name"], "/web");
    let running = host.run(&["rm", "web"]);
    assert!(!running.status.success());
    assert!(
        err_text(&running).contains("is running"),
        "{}",
        err_text(&running)
    );
    host.ok(&["stop", "-t", "1", "web"]);
    host.ok(&["rm", "web"]);
    assert_gone(&host, &id);
    let missing = host.run(&["inspect", "web"]);
    assert!(err_text(&missing).contains("no such container: web"));
}

#[test]
fn containers_keep_their_image_from_rmi_and_prune() {
    let host = Host::new();
    let id = host.detached(&[], &["true"]);
    host.wait_status(&id, "exited", Duration::from_secs(10));
    let refused = host.run(&["rmi", BUSYBOX]);
    assert!(!refused.status.success());
    assert!(
        err_text(&refused).contains(&id[..12]),
        "{}",
        err_text(&refused)
    );
    host.ok(&["image", "prune"]);
    // The stopped container's layer snapshots survive the prune.
    let snapshots = host.root.root().join("snapshots/sha256");
    assert!(std::fs::read_dir(&snapshots).unwrap().count() >= 1);
    host.ok(&["rm", &id]);
    host.ok(&["rmi", BUSYBOX]);
    host.ok(&["image", "prune"]);
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), 0);
}

#[test]
fn shim_reports_state_and_stats_over_its_socket() {
    use dockmaster::runtime::protocol::{Client, Status};
    let host = Host::new();
    let id = host.detached(
        &["-m", "64m"],
        &[
            "sh",
            "-c",
            "x=$(head -c 2000000 /dev/zero | tr '\\0' a); sleep 30; echo ${#x}",
        ],
    );
    host.wait_status(&id, "running", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let socket = host.container_dir(&id).join("shim.sock");
    let mut client = Client::connect(&socket, Duration::from_secs(5)).unwrap();
    let state = client.state().unwrap();
    assert_eq!(state.status, Status::Running);
    assert!(state.pid.unwrap() > 1);
    let stats = client.stats().unwrap();
    assert_eq!(stats.memory_limit, Some(64 * 1024 * 1024));
    assert!(stats.memory_bytes > 1_000_000, "{stats:?}");
    assert!(stats.cpu_ns > 0, "{stats:?}");
    assert!(stats.pids >= 2, "{stats:?}");
    assert_eq!(stats.oom_kills, 0);
    host.ok(&["rm", "-f", &id]);
}
