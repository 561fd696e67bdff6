//! The `--init` PID 1 (`dockmaster init -- CMD...`), run for real: exit codes, signal
//! forwarding and zombie reaping inside a new PID namespace (needs root for `unshare --pid`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const DOCKMASTER: &str = env!("CARGO_BIN_EXE_dockmaster");
const TIMEOUT: Duration = Duration::from_secs(20);

/// Kills and reaps the child by PID on drop, so no test leaves a process behind.
struct Guard(Option<Child>);

impl Guard {
    fn spawn(cmd: &mut Command) -> Guard {
        Guard(Some(cmd.spawn().expect("spawn")))
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.as_ref().expect("child").id() as i32)
    }

    fn stdout_line(&mut self) -> String {
        let out = self
            .0
            .as_mut()
            .and_then(|c| c.stdout.as_mut())
            .expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read");
        line
    }

    fn output(mut self) -> (ExitStatus, String, String) {
        let status = self.wait();
        let child = self.0.take().expect("child");
        let Output { stdout, stderr, .. } = child.wait_with_output().expect("output");
        (
            status,
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    }

    /// Waits up to TIMEOUT for the exit status; panics (and the drop kills) on timeout. std
    /// remembers the status, so the drop never signals a reaped (reusable) PID.
    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        let child = self.0.as_mut().expect("child");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(start.elapsed() < TIMEOUT, "process did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn init(args: &[&str]) -> Command {
    let mut cmd = Command::new(DOCKMASTER);
    cmd.arg("init").arg("--").args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn exit_code_of_the_command_is_propagated() {
    let (status, _, _) = Guard::spawn(&mut init(&["sh", "-c", "echo hi; exit 7"])).output();
    assert_eq!(status.code(), Some(7));
    let (status, out, _) = Guard::spawn(&mut init(&["sh", "-c", "echo hello"])).output();
    assert_eq!(status.code(), Some(0));
    assert_eq!(out, "hello\n", "stdout passes through");
}

#[test]
fn argv0_named_init_selects_the_init() {
    // As inside a container: the binary called as `/dev/init -- CMD...`.
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("init");
    std::os::unix::fs::symlink(DOCKMASTER, &link).expect("symlink");
    let mut cmd = Command::new(&link);
    cmd.args(["--", "sh", "-c", "exit 5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, _, _) = Guard::spawn(&mut cmd).output();
    assert_eq!(status.code(), Some(5));
}

#[test]
fn missing_command_exits_127_and_names_it() {
    let (status, _, err) =
        Guard::spawn(&mut init(&["/nonexistent/dockmaster-no-such-command"])).output();
    assert_eq!(status.code(), Some(127));
    assert!(
        err.contains("/nonexistent/dockmaster-no-such-command"),
        "stderr: {err}"
    );
}

#[test]
fn non_executable_command_exits_126() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("script");
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").expect("write");
    let path = file.to_str().expect("utf-8 path");
    let (status, _, err) = Guard::spawn(&mut init(&[path])).output();
    assert_eq!(status.code(), Some(126));
    assert!(err.contains(path), "stderr: {err}");
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    let script = r#"trap "exit 42" TERM; echo ready; while true; do sleep 0.1; done"#;
    let mut g = Guard::spawn(&mut init(&["sh", "-c", script]));
    assert_eq!(g.stdout_line(), "ready\n");
    kill(g.pid(), Signal::SIGTERM).expect("kill");
    assert_eq!(g.wait().code(), Some(42));
}

#[test]
fn signals_go_to_the_process_group_when_the_command_leads_one() {
    // setsid makes the command a group leader; the inner sleep shares its group and must get
    // the forwarded SIGUSR1 too (it has no handler, so it dies and the shell reports 128+10;
    // the shell's own trap runs once sleep is gone).
    let script = r#"trap "echo trapped" USR1; echo ready; sleep 30; echo "sleep=$?"; exit 3"#;
    let mut g = Guard::spawn(&mut init(&["setsid", "sh", "-c", script]));
    assert_eq!(g.stdout_line(), "ready\n");
    std::thread::sleep(Duration::from_millis(200)); // let sh start the sleep
    kill(g.pid(), Signal::SIGUSR1).expect("kill");
    let (status, out, _) = g.output();
    assert_eq!(status.code(), Some(3));
    assert_eq!(out, "trapped\nsleep=138\n");
}

#[test]
fn command_killed_by_a_signal_exits_128_plus_signal() {
    let (status, _, _) = Guard::spawn(&mut init(&["sh", "-c", "kill -KILL $$"])).output();
    assert_eq!(status.code(), Some(137));
    let mut g = Guard::spawn(&mut init(&["sh", "-c", "echo ready; exec sleep 30"]));
    assert_eq!(g.stdout_line(), "ready\n");
    // SIGINT to the init reaches sleep, which has no handler and dies of it.
    kill(g.pid(), Signal::SIGINT).expect("kill");
    assert_eq!(g.wait().code(), Some(128 + 2));
}

/// Creates three orphans that exit, then prints the number of zombies in the PID namespace
/// while the script itself is still running.
const ORPHANS: &str = r#"for i in 1 2 3; do (sleep 0.1 &); done; sleep 1; echo zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | grep -c "^[0-9]* ([^)]*) Z")"#;

fn in_new_pid_namespace(args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new("unshare");
    // --kill-child: if the guard kills unshare, the namespace's PID 1 dies with it.
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Guard::spawn(&mut cmd).output()
}

#[test]
fn orphaned_zombies_are_reaped_as_pid_1() {
    // Control: with a PID 1 that never waits, the same script does see its zombies, so the
    // check below can fail.
    let control = format!("sh -c '{ORPHANS}' & exec sleep 2");
    let (status, out, err) = in_new_pid_namespace(&["sh", "-c", &control]);
    assert!(status.success(), "control: {err}");
    assert_eq!(out, "zombies=3\n", "control: {err}");

    let script = format!(r#"echo "pid1=$(cat /proc/1/comm)"; {ORPHANS}; exit 9"#);
    let (status, out, err) = in_new_pid_namespace(&[DOCKMASTER, "init", "--", "sh", "-c", &script]);
    assert_eq!(status.code(), Some(9), "stderr: {err}");
    assert_eq!(out, "pid1=dockmaster\nzombies=0\n", "stderr: {err}");
}

#[test]
fn command_starts_with_no_blocked_signals() {
    // The init blocks everything for its signalfd; the command must not inherit that mask.
    let (status, out, _) =
        Guard::spawn(&mut init(&["grep", "SigBlk", "/proc/self/status"])).output();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        out.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{out}"
    );
}
