//! The agent's HTTP surfaces with a stand-in agent state: the public listener (metrics,
//! health, readiness, the git webhook) on real loopback TCP, and the admin API on a real unix
//! socket driven by the real `dockmaster` CLI, and on TCP behind a bearer token.
//! (The real agent behind this state is tested end to end elsewhere.)

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dockmaster::agent::status::{
    AgentStatus, ErrorRecord, Event, HistoryEntry, ProjectStatus, ServiceStatus, SourceStatus,
    Trigger,
};
use dockmaster::api::client::{AdminClient, ClientError};
use dockmaster::api::{AdminSocket, ApiError, ApiState, EventHub, WebhookSecrets};
use dockmaster::jobs::{
    Concurrency, JobDir, JobInfo, RunNowError, RunRecord, RunResult, Trigger as JobTrigger,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};

use support::TempRoot;

const METRICS_TEXT: &str = "# HELP dockmaster_up Whether the agent runs.\n\
# TYPE dockmaster_up gauge\ndockmaster_up 1\n# EOF\n";
const API_TOKEN: &str = "t0ken-for-tests";
const SECRET: &str = "webhook secret";
const GITLAB_TOKEN: &str = "gitlab-token";

/// A real push payload (GitHub's shape, trimmed).
const PUSH: &str = r#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"0000000000000000000000000000000000000000","repository":{"id":1296269,"full_name":"octo/infra","clone_url":"https://github.com/octo/infra.git"},"pusher":{"name":"octo"},"commits":[{"id":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","message":"web: bump nginx"}]}"#;

fn hmac_hex(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn sample_status() -> AgentStatus {
    AgentStatus {
        version: "0.1.0-test".into(),
        started_at: 1_700_000_000,
        ready: false,
        labels: [("site".to_string(), "lab".to_string())].into(),
        sources: vec![SourceStatus {
            name: "infra".into(),
            url: "https://git.example/octo/infra.git".into(),
            reference: "branch main".into(),
            revision: Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246".into()),
            last_fetch: Some(1_700_000_100),
            last_error: None,
        }],
        projects: vec![ProjectStatus {
            name: "shop".into(),
            source: "infra".into(),
            path: "stacks/shop".into(),
            revision: Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246".into()),
            generation: Some(3),
            state: "converged".into(),
            last_error: Some(ErrorRecord {
                revision: Some("deadbeefcafe0000".into()),
                reason: "health gate failed for web".into(),
                at: 1_700_000_050,
            }),
            pending: vec!["recreate worker (image update)".into()],
            services: vec![ServiceStatus {
                name: "web".into(),
                image: "localhost/busybox:test".into(),
                digest: Some(format!("sha256:{}", "5e".repeat(32))),
                desired: 2,
                running: 2,
                state: "running".into(),
                health: Some("healthy".into()),
                restarts: 1,
                update: None,
            }],
        }],
    }
}

fn sample_history() -> Vec<HistoryEntry> {
    let entry = |project: &str, generation: u64, status: &str, error: Option<&str>| HistoryEntry {
        project: project.into(),
        generation,
        revision: Some(format!("{generation:040x}")),
        status: status.into(),
        error: error.map(String::from),
        at: 1_700_000_000 + generation,
        images: Default::default(),
    };
    vec![
        entry("shop", 2, "good", None),
        entry(
            "shop",
            3,
            "failed",
            Some("image localhost/missing:1 not found"),
        ),
        entry("blog", 1, "good", None),
    ]
}

/// The servers on a runtime of their own, with a stand-in agent behind them.
struct Harness {
    rt: tokio::runtime::Runtime,
    _root: TempRoot,
    root: PathBuf,
    socket: PathBuf,
    public: SocketAddr,
    admin_tcp: SocketAddr,
    status: watch::Sender<AgentStatus>,
    triggers: mpsc::Receiver<Trigger>,
    events: EventHub,
    webhook_results: Arc<Mutex<Vec<String>>>,
    metrics_calls: Arc<Mutex<u32>>,
    stop: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<Result<(), ApiError>>>,
    /// The stand-in scheduler, when the state has one.
    jobs: Option<Arc<FakeJobs>>,
}

impl Harness {
    fn start(webhook: WebhookSecrets) -> Harness {
        Harness::start_with(webhook, false)
    }

    /// With `jobs`, the state has a [`FakeJobs`] writing its runs under the harness's root.
    fn start_with(webhook: WebhookSecrets, jobs: bool) -> Harness {
        let root = TempRoot::new();
        let fake_jobs = jobs.then(|| Arc::new(FakeJobs::new(root.root())));
        let socket = root.root().join("agent.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (status_tx, status_rx) = watch::channel(sample_status());
        // A small queue, like the agent's: a full one means a sync is pending anyway.
        let (trigger_tx, trigger_rx) = mpsc::channel(4);
        let events = EventHub::new(16, 64);
        let webhook_results = Arc::new(Mutex::new(Vec::new()));
        let metrics_calls = Arc::new(Mutex::new(0));
        let history = sample_history();
        let results = webhook_results.clone();
        let calls = metrics_calls.clone();
        let state = ApiState {
            status: status_rx,
            history: Arc::new(move |project| {
                history
                    .iter()
                    .filter(|e| project.map_or(true, |p| p == e.project))
                    .cloned()
                    .collect()
            }),
            triggers: trigger_tx,
            events: events.clone(),
            metrics: Arc::new(move || {
                *calls.lock().unwrap() += 1;
                METRICS_TEXT.to_string()
            }),
            webhook,
            api_token: Some(API_TOKEN.into()),
            on_webhook: Arc::new(move |label| results.lock().unwrap().push(label.to_string())),
            jobs: fake_jobs
                .clone()
                .map(|j| j as Arc<dyn dockmaster::jobs::JobsControl>),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let shutdown = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let admin_socket = AdminSocket::bind(&socket).unwrap();
        let (public_l, admin_l) = rt.block_on(async {
            (
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
        });
        let public = public_l.local_addr().unwrap();
        let admin_tcp = admin_l.local_addr().unwrap();
        let servers = vec![
            rt.spawn(dockmaster::api::serve_public(
                public_l,
                state.clone(),
                shutdown(),
            )),
            rt.spawn(dockmaster::api::serve_admin_tcp(
                admin_l,
                state.clone(),
                shutdown(),
            )),
            rt.spawn(dockmaster::api::serve_admin_unix(
                admin_socket,
                state,
                shutdown(),
            )),
        ];
        Harness {
            rt,
            root: root.root(),
            _root: root,
            socket,
            public,
            admin_tcp,
            status: status_tx,
            triggers: trigger_rx,
            events,
            webhook_results,
            metrics_calls,
            stop: stop_tx,
            servers,
            jobs: fake_jobs,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    fn next_trigger(&mut self) -> Option<Trigger> {
        let rx = &mut self.triggers;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .ok()
                .flatten()
        })
    }

    fn no_trigger(&mut self) {
        assert_eq!(self.triggers.try_recv().ok(), None);
    }

    fn webhook_results(&self) -> Vec<String> {
        self.webhook_results.lock().unwrap().clone()
    }

    /// Signals shutdown and waits for every server to return.
    fn stop(&mut self) {
        let _ = self.stop.send(true);
        let servers = std::mem::take(&mut self.servers);
        self.rt.block_on(async {
            for s in servers {
                let r = tokio::time::timeout(Duration::from_secs(10), s)
                    .await
                    .expect("server stops within 10 s")
                    .expect("server task");
                r.expect("server ends cleanly");
            }
        });
    }

    fn cli(&self) -> Command {
        let mut cmd = self._root.dockmaster();
        cmd.stdin(Stdio::null());
        cmd
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn output_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn secrets() -> WebhookSecrets {
    WebhookSecrets {
        secret: Some(SECRET.into()),
        gitlab_token: Some(GITLAB_TOKEN.into()),
    }
}

#[test]
fn health_readiness_and_metrics() {
    let h = Harness::start(secrets());
    let c = http();
    let r = c.get(h.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(h.url("/readyz")).send().unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().unwrap(), "not ready\n");
    h.status.send_modify(|s| s.ready = true);
    let r = c.get(h.url("/readyz")).send().unwrap();
    assert_eq!(r.status(), 200);
    h.status.send_modify(|s| s.ready = false);
    assert_eq!(c.get(h.url("/readyz")).send().unwrap().status(), 503);

    let r = c.get(h.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(r.text().unwrap(), METRICS_TEXT);
    assert_eq!(*h.metrics_calls.lock().unwrap(), 1);

    // Admin routes are not on the public listener, and public ones only answer their method.
    assert_eq!(c.get(h.url("/v1/status")).send().unwrap().status(), 404);
    assert_eq!(c.get(h.url("/hooks/git")).send().unwrap().status(), 405);
}

#[test]
fn webhooks_from_each_provider_trigger_a_sync() {
    let mut h = Harness::start(secrets());
    let c = http();
    let hook = h.url("/hooks/git");
    let body = PUSH.as_bytes();
    let sig = hmac_hex(SECRET, body);

    // GitHub.
    let r = c
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", format!("sha256={sig}"))
        .header("Content-Type", "application/json")
        .body(PUSH)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text());
    assert_eq!(h.next_trigger(), Some(Trigger::Webhook));
    let event = h.events.recent().pop().expect("a webhook event");
    assert_eq!(event.kind, "webhook");
    assert_eq!(
        event.message,
        "github webhook: push to refs/heads/main of octo/infra"
    );

    // Gitea: its own header with bare hex (it sends X-Hub-Signature-256 too; this request
    // relies on the Gitea header alone).
    let r = c
        .post(&hook)
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Signature", &sig)
        .body(PUSH)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(h.next_trigger(), Some(Trigger::Webhook));
    assert!(h
        .events
        .recent()
        .pop()
        .unwrap()
        .message
        .starts_with("gitea webhook"));

    // GitLab: the token, whatever the body (not even JSON).
    let r = c
        .post(&hook)
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", GITLAB_TOKEN)
        .body("not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(h.next_trigger(), Some(Trigger::Webhook));

    // Wrong signature, signature of another body, wrong token, no signature: 401, no sync.
    let other = hmac_hex(SECRET, b"{}");
    for (name, value) in [
        (
            "X-Hub-Signature-256",
            format!("sha256={}", hmac_hex("wrong", body)),
        ),
        ("X-Hub-Signature-256", format!("sha256={other}")),
        ("X-Gitlab-Token", "gitlab-tokeN".to_string()),
    ] {
        let r = c
            .post(&hook)
            .header(name, &value)
            .body(PUSH)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{name}: {value}");
    }
    assert_eq!(c.post(&hook).body(PUSH).send().unwrap().status(), 401);
    // A malformed signature header.
    let r = c
        .post(&hook)
        .header("X-Hub-Signature-256", "sha1=abc")
        .body(PUSH)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    h.no_trigger();

    // Many webhooks at once: the queue fills, every request is still accepted (a sync is
    // pending), and nothing blocks.
    for _ in 0..10 {
        let r = c
            .post(&hook)
            .header("X-Hub-Signature-256", format!("sha256={sig}"))
            .body(PUSH)
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let mut queued = 0;
    while h.triggers.try_recv().is_ok() {
        queued += 1;
    }
    assert_eq!(queued, 4, "the channel holds 4");

    let results = h.webhook_results();
    let count = |l: &str| results.iter().filter(|r| *r == l).count();
    assert_eq!(count("accepted"), 13, "{results:?}");
    assert_eq!(count("bad_signature"), 4, "{results:?}");
    assert_eq!(count("bad_request"), 1, "{results:?}");
}

/// Sends a raw request with a body of `len` bytes from a writer thread (the server may answer
/// before reading it all) and returns the status code.
fn raw_post(addr: SocketAddr, headers: &str, len: usize, chunked: bool) -> u16 {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let head = if chunked {
        format!(
            "POST /hooks/git HTTP/1.1\r\nHost: x\r\n{headers}Transfer-Encoding: chunked\r\n\r\n"
        )
    } else {
        format!("POST /hooks/git HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len}\r\n\r\n")
    };
    let t = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let chunk = vec![b'{'; 64 << 10];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            let r = if chunked {
                writer
                    .write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|()| writer.write_all(&chunk[..n]))
                    .and_then(|()| writer.write_all(b"\r\n"))
            } else {
                writer.write_all(&chunk[..n])
            };
            if r.is_err() {
                return;
            }
            left -= n;
        }
        if chunked {
            let _ = writer.write_all(b"0\r\n\r\n");
        }
    });
    let mut status_line = String::new();
    BufReader::new(&stream).read_line(&mut status_line).unwrap();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    t.join().unwrap();
    status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"))
}

#[test]
fn oversized_webhook_bodies_are_refused() {
    let mut h = Harness::start(secrets());
    let max = dockmaster::api::server::WEBHOOK_BODY_MAX;
    // Signed correctly, so only the size is wrong.
    let big = vec![b'{'; max + 1];
    let sig = format!("X-Hub-Signature-256: sha256={}\r\n", hmac_hex(SECRET, &big));
    assert_eq!(raw_post(h.public, &sig, max + 1, false), 413);
    assert_eq!(raw_post(h.public, &sig, max + 1, true), 413);
    // Exactly the limit is read and checked.
    let exact = vec![b'{'; max];
    let sig = format!(
        "X-Hub-Signature-256: sha256={}\r\n",
        hmac_hex(SECRET, &exact)
    );
    assert_eq!(raw_post(h.public, &sig, max, true), 202);
    assert_eq!(h.next_trigger(), Some(Trigger::Webhook));
    h.no_trigger();
    assert_eq!(
        h.webhook_results(),
        ["bad_request", "bad_request", "accepted"]
    );
}

#[test]
fn webhook_without_secret_is_disabled() {
    let mut h = Harness::start(WebhookSecrets::default());
    let c = http();
    let sig = hmac_hex(SECRET, PUSH.as_bytes());
    for (name, value) in [
        ("X-Hub-Signature-256", format!("sha256={sig}")),
        ("X-Gitlab-Token", GITLAB_TOKEN.to_string()),
        ("X-Other", "x".to_string()),
    ] {
        let r = c
            .post(h.url("/hooks/git"))
            .header(name, value)
            .body(PUSH)
            .send()
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.text().unwrap(), "webhook disabled\n");
    }
    h.no_trigger();
    assert_eq!(h.webhook_results(), ["disabled", "disabled", "disabled"]);
}

#[test]
fn cli_status_history_and_sync_over_the_unix_socket() {
    let mut h = Harness::start(secrets());
    let socket = h.socket.to_str().unwrap().to_string();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&h.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // The default socket is <root>/agent.sock.
    let table = output_ok(h.cli().arg("status"));
    let explicit = output_ok(h.cli().args(["status", "--socket", &socket]));
    assert_eq!(table, explicit);
    for needle in [
        "agent 0.1.0-test",
        "not ready",
        "labels site=lab",
        "https://git.example/octo/infra.git",
        "branch main",
        "6113728f27",
        "project shop (infra:stacks/shop)",
        "state converged  revision 6113728f27  generation 3",
        "last error (revision deadbeefca",
        "health gate failed for web",
        "pending: recreate worker (image update)",
        "sha256:5e5e5e5e5e5e",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from:\n{table}");
    }
    let service_row = table
        .lines()
        .find(|l| l.trim_start().starts_with("web "))
        .unwrap_or_else(|| panic!("no service row in:\n{table}"));
    let cells: Vec<&str> = service_row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "web",
            "2/2",
            "running",
            "healthy",
            "1",
            "localhost/busybox:test",
            "sha256:5e5e5e5e5e5e",
            "-"
        ]
    );

    let json = output_ok(
        h.cli()
            .args(["status", "--format", "json", "--socket", &socket]),
    );
    let parsed: AgentStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, sample_status());
    // The snapshot is live: a change shows up on the next call.
    h.status.send_modify(|s| s.ready = true);
    let json = output_ok(h.cli().args(["status", "--format", "json"]));
    assert!(serde_json::from_str::<AgentStatus>(&json).unwrap().ready);

    let history = output_ok(h.cli().arg("history"));
    let rows: Vec<Vec<&str>> = history
        .lines()
        .map(|l| l.split_whitespace().take(4).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["PROJECT", "GENERATION", "REVISION", "STATUS"],
            vec!["shop", "2", "0000000000", "good"],
            vec!["shop", "3", "0000000000", "failed"],
            vec!["blog", "1", "0000000000", "good"],
        ]
    );
    assert!(
        history.contains("image localhost/missing:1 not found"),
        "{history}"
    );
    let json = output_ok(h.cli().args(["history", "blog", "--format", "json"]));
    let entries: Vec<HistoryEntry> = serde_json::from_str(&json).unwrap();
    assert_eq!(entries, sample_history()[2..]);
    // A project name that needs escaping reaches the agent intact.
    let json = output_ok(h.cli().args(["history", "a b&c", "--format", "json"]));
    assert_eq!(json.trim(), "[]");

    let out = output_ok(h.cli().args(["sync", "--now", "--socket", &socket]));
    assert!(out.starts_with("sync requested"), "{out}");
    assert_eq!(h.next_trigger(), Some(Trigger::Manual { now: true }));
    output_ok(h.cli().arg("sync"));
    assert_eq!(h.next_trigger(), Some(Trigger::Manual { now: false }));
    h.no_trigger();

    // Once the servers stop, the socket file is gone and the CLI says so.
    h.stop();
    assert!(!h.socket.exists());
    let out = h.cli().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "no agent listening on {}: is `dockmaster agent` running?",
            h.root.join("agent.sock").display()
        )),
        "{stderr}"
    );
    let out = h
        .cli()
        .args(["sync", "--socket", "/nonexistent/agent.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no agent listening on /nonexistent/agent.sock"));
}

fn event(kind: &str, project: &str, message: &str) -> Event {
    Event {
        at_ms: 1_714_564_800_000,
        kind: kind.into(),
        source: Some("infra".into()),
        project: Some(project.into()),
        message: message.into(),
    }
}

/// Kills the child on drop (a failed assertion must not leave `events -f` running).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cli_events_replay_and_follow_until_the_agent_stops() {
    let mut h = Harness::start(secrets());
    h.events
        .publish(event("apply", "shop", "applied generation 3"));
    h.events.publish(event(
        "drift",
        "shop",
        "web-1 was removed by hand; recreated",
    ));

    let out = output_ok(h.cli().arg("events"));
    assert_eq!(
        out,
        "2024-05-01T12:00:00Z  apply  shop  applied generation 3\n\
         2024-05-01T12:00:00Z  drift  shop  web-1 was removed by hand; recreated\n"
    );
    let json = output_ok(h.cli().args(["events", "--format", "json"]));
    let first: Event = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first, event("apply", "shop", "applied generation 3"));

    let child = h
        .cli()
        .args(["events", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || lines_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(next().ends_with("applied generation 3"));
    assert!(next().ends_with("recreated"));
    // Live events arrive while it follows (the replay was read, so it is subscribed).
    h.events
        .publish(event("sync", "blog", "revision 0123abc applied"));
    assert_eq!(
        next(),
        "2024-05-01T12:00:00Z  sync  blog  revision 0123abc applied"
    );
    for i in 0..3 {
        h.events
            .publish(event("image-update", "shop", &format!("update {i}")));
    }
    for i in 0..3 {
        assert!(next().ends_with(&format!("update {i}")));
    }

    // The agent stops: the stream ends and the follower exits on its own.
    let started = Instant::now();
    h.stop();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "events -f still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("the agent closed the event stream"),
        "{stderr}"
    );
}

#[test]
fn admin_api_on_tcp_needs_the_bearer_token() {
    let mut h = Harness::start(secrets());
    let c = http();
    let admin = h.admin_tcp;
    let url = |p: &str| format!("http://{admin}{p}");
    let r = c.get(url("/v1/status")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    for wrong in [
        "Bearer nope",
        "Bearer t0ken-for-test",
        "t0ken-for-tests",
        "Basic dDp0",
    ] {
        let r = c
            .get(url("/v1/status"))
            .header("Authorization", wrong)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{wrong}");
    }
    let r = c
        .post(url("/v1/sync"))
        .body(r#"{"now":true}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    h.no_trigger();

    let bearer = format!("Bearer {API_TOKEN}");
    let r = c
        .get(url("/v1/status"))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        serde_json::from_str::<AgentStatus>(&r.text().unwrap()).unwrap(),
        sample_status()
    );
    let r = c
        .get(url("/v1/history?project=shop"))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<HistoryEntry>>(&r.text().unwrap()).unwrap(),
        sample_history()[..2]
    );
    let r = c
        .post(url("/v1/sync"))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(h.next_trigger(), Some(Trigger::Manual { now: false }));
    let r = c
        .post(url("/v1/sync"))
        .header("Authorization", &bearer)
        .body("{\"now\": \"yes\"}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    h.no_trigger();
    h.events.publish(event("apply", "shop", "applied"));
    let r = c
        .get(url("/v1/events?follow=false"))
        .header("Authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let body = r.text().unwrap();
    let events: Vec<Event> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events, [event("apply", "shop", "applied")]);

    // Without a token the TCP admin API refuses to start.
    let err = h.rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_, rx) = watch::channel(sample_status());
        let state = ApiState {
            status: rx,
            history: Arc::new(|_| Vec::new()),
            triggers: mpsc::channel(1).0,
            events: EventHub::default(),
            metrics: Arc::new(String::new),
            webhook: WebhookSecrets::default(),
            api_token: None,
            on_webhook: Arc::new(|_| {}),
            jobs: None,
        };
        dockmaster::api::serve_admin_tcp(l, state, std::future::pending()).await
    });
    assert!(
        matches!(err, Err(ApiError::TcpWithoutToken { .. })),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Jobs

/// A stand-in scheduler that records every call. `shop/backup` is a job whose manual runs
/// are written under the root the way the agent writes them (running first, finished a
/// moment later with exit code 3 and a log); `shop/busy` is refused by its concurrency
/// policy, `shop/down` answers that the scheduler is stopping, anything else is not a job.
struct FakeJobs {
    root: PathBuf,
    calls: Mutex<Vec<String>>,
    next_seq: std::sync::atomic::AtomicU64,
}

/// How long a fake run stays running.
const FAKE_RUN: Duration = Duration::from_millis(600);

fn job_info(service: &str, last_run: Option<RunRecord>) -> JobInfo {
    JobInfo {
        project: "shop".into(),
        service: service.into(),
        schedule: "0 3 * * *".into(),
        time_zone: "Europe/Berlin".into(),
        concurrency: Concurrency::Forbid,
        timeout: Some("10m".into()),
        generation: 4,
        next_run: Some("2024-05-02T03:00:00+02:00".into()),
        running: vec![],
        last_run,
    }
}

fn fake_run(seq: u64, result: RunResult, exit_code: Option<i32>) -> RunRecord {
    let started = std::time::UNIX_EPOCH + Duration::from_secs(1_714_525_200 + seq);
    RunRecord {
        seq,
        project: "shop".into(),
        service: "backup".into(),
        trigger: if seq < 8 {
            JobTrigger::Schedule
        } else {
            JobTrigger::Manual
        },
        scheduled_for: (seq < 8).then_some(started),
        attempt: 1,
        generation: 4,
        container: Some(format!("shop-backup-run-{seq}")),
        container_id: None,
        started,
        finished: (result != RunResult::Running).then(|| started + Duration::from_secs(2)),
        result,
        exit_code,
        error: None,
    }
}

fn sample_jobs() -> Vec<JobInfo> {
    vec![
        job_info("backup", Some(fake_run(7, RunResult::Succeeded, Some(0)))),
        job_info("report", None),
    ]
}

fn sample_runs() -> Vec<RunRecord> {
    vec![
        fake_run(6, RunResult::Failed, Some(1)),
        fake_run(7, RunResult::Succeeded, Some(0)),
    ]
}

impl FakeJobs {
    fn new(root: PathBuf) -> FakeJobs {
        FakeJobs {
            root,
            calls: Mutex::new(Vec::new()),
            next_seq: 8.into(),
        }
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn not_found(project: &str, service: &str) -> RunNowError {
        RunNowError::NotFound {
            project: project.into(),
            service: service.into(),
        }
    }
}

impl dockmaster::jobs::JobsControl for FakeJobs {
    fn list(&self) -> Vec<JobInfo> {
        self.calls.lock().unwrap().push("list".into());
        sample_jobs()
    }

    fn history(&self, project: &str, service: &str) -> Result<Vec<RunRecord>, RunNowError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("history {project}/{service}"));
        match (project, service) {
            ("shop", "backup") => Ok(sample_runs()),
            ("shop", "report") => Ok(vec![]),
            _ => Err(FakeJobs::not_found(project, service)),
        }
    }

    fn run_now(&self, project: &str, service: &str) -> Result<u64, RunNowError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("run {project}/{service}"));
        match (project, service) {
            ("shop", "backup") => {
                let seq = self
                    .next_seq
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let dir = JobDir::new(&self.root, project, service);
                dir.save(&fake_run(seq, RunResult::Running, None)).unwrap();
                std::thread::spawn(move || {
                    std::thread::sleep(FAKE_RUN);
                    let log = [
                        ("stdout", "dumping shop\n"),
                        ("stderr", "disk almost full\n"),
                    ]
                    .map(|(stream, text)| {
                        serde_json::json!({
                            "log": text, "stream": stream, "time": "2024-05-01T01:00:09Z"
                        })
                        .to_string()
                            + "\n"
                    })
                    .concat();
                    std::fs::write(dir.log_path(seq), log).unwrap();
                    dir.save(&fake_run(seq, RunResult::Failed, Some(3)))
                        .unwrap();
                });
                Ok(seq)
            }
            ("shop", "busy") => Err(RunNowError::Busy {
                project: project.into(),
                service: service.into(),
                seq: 4,
            }),
            ("shop", "down") => Err(RunNowError::Unavailable("the scheduler is stopping".into())),
            _ => Err(FakeJobs::not_found(project, service)),
        }
    }
}

#[test]
fn jobs_routes_map_the_scheduler() {
    let h = Harness::start_with(secrets(), true);
    let jobs = h.jobs.clone().unwrap();
    let c = http();
    let admin = h.admin_tcp;
    let bearer = format!("Bearer {API_TOKEN}");
    let get = |p: &str| {
        c.get(format!("http://{admin}{p}"))
            .header("Authorization", &bearer)
            .send()
            .unwrap()
    };
    let post = |p: &str| {
        c.post(format!("http://{admin}{p}"))
            .header("Authorization", &bearer)
            .send()
            .unwrap()
    };

    let r = get("/v1/jobs");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Vec<JobInfo>>(&r.text().unwrap()).unwrap(),
        sample_jobs()
    );
    let r = get("/v1/jobs/shop/backup/runs");
    assert_eq!(r.status(), 200);
    assert_eq!(
        serde_json::from_str::<Vec<RunRecord>>(&r.text().unwrap()).unwrap(),
        sample_runs()
    );
    let r = get("/v1/jobs/shop/nope/runs");
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.text().unwrap(),
        "shop/nope is not a job of a deployed project (see `dockmaster jobs`)\n"
    );

    let r = post("/v1/jobs/shop/backup/run");
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.text().unwrap()).unwrap(),
        serde_json::json!({"run": 8})
    );
    let r = post("/v1/jobs/shop/busy/run");
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.text().unwrap(),
        "shop/busy: run 4 is still running and the job's concurrency is forbid\n"
    );
    let r = post("/v1/jobs/shop/down/run");
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().unwrap(), "the scheduler is stopping\n");
    assert_eq!(post("/v1/jobs/other/backup/run").status(), 404);
    // Percent-encoded names arrive decoded.
    assert_eq!(get("/v1/jobs/sh%6Fp/backup/runs").status(), 200);
    assert_eq!(
        jobs.calls(),
        [
            "list",
            "history shop/backup",
            "history shop/nope",
            "run shop/backup",
            "run shop/busy",
            "run shop/down",
            "run other/backup",
            "history shop/backup",
        ]
    );

    // Names that could leave a directory, or are too long, never reach the scheduler.
    let long = "x".repeat(dockmaster::api::server::JOB_NAME_MAX + 1);
    for path in [
        "/v1/jobs/shop/a%2Fb/runs".to_string(),
        format!("/v1/jobs/shop/{long}/runs"),
        "/v1/jobs/shop/%00/runs".to_string(),
        "/v1/jobs/shop/%0A/runs".to_string(),
    ] {
        assert_eq!(get(&path).status(), 400, "{path}");
        let run = path.trim_end_matches("/runs").to_string() + "/run";
        assert_eq!(post(&run).status(), 400, "{run}");
    }
    let r = post("/v1/jobs/shop/a%2Fb/run");
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().unwrap(), "invalid service name \"a/b\"\n");
    assert_eq!(
        post(&format!("/v1/jobs/{long}/backup/run")).text().unwrap(),
        "project name longer than 255 bytes\n"
    );
    // Only their methods; the TCP API still wants its token.
    assert_eq!(post("/v1/jobs").status(), 405);
    assert_eq!(get("/v1/jobs/shop/backup/run").status(), 405);
    assert_eq!(
        c.post(format!("http://{admin}/v1/jobs/shop/backup/run"))
            .send()
            .unwrap()
            .status(),
        401
    );
    assert!(jobs.calls().is_empty());

    // The client over the unix socket.
    let client = AdminClient::new(&h.socket);
    assert_eq!(client.jobs().unwrap(), sample_jobs());
    assert_eq!(client.job_runs("shop", "backup").unwrap(), sample_runs());
    assert_eq!(client.job_runs("shop", "report").unwrap(), []);
    assert_eq!(client.run_job("shop", "backup").unwrap(), 9);
    match client.run_job("shop", "busy").unwrap_err() {
        ClientError::Status {
            status, message, ..
        } => {
            assert_eq!(status, 409);
            assert!(message.contains("run 4 is still running"), "{message}");
        }
        e => panic!("{e}"),
    }
    match client.job_runs("shop", "nope").unwrap_err() {
        ClientError::Status { status, .. } => assert_eq!(status, 404),
        e => panic!("{e}"),
    }
    // Names are escaped as path segments: a `/` inside one is refused, not split; `..`
    // (sent as is: dots are unreserved) is refused too.
    for (project, service) in [("shop", "a/b"), ("..", "backup"), ("shop", ".")] {
        match client.job_runs(project, service).unwrap_err() {
            ClientError::Status { status, .. } => assert_eq!(status, 400, "{project}/{service}"),
            e => panic!("{e}"),
        }
    }
    assert_eq!(
        jobs.calls(),
        [
            "list",
            "history shop/backup",
            "history shop/report",
            "run shop/backup",
            "run shop/busy",
            "history shop/nope",
        ]
    );
}

#[test]
fn jobs_routes_without_a_scheduler() {
    let h = Harness::start(secrets());
    let client = AdminClient::new(&h.socket);
    let unavailable = |e: ClientError| match e {
        ClientError::Status {
            status, message, ..
        } => assert_eq!((status, message.as_str()), (503, "jobs are not available")),
        e => panic!("{e}"),
    };
    unavailable(client.jobs().unwrap_err());
    unavailable(client.job_runs("shop", "backup").unwrap_err());
    unavailable(client.run_job("shop", "backup").unwrap_err());
    // A bad name is still a bad request.
    match client.run_job("..", "backup").unwrap_err() {
        ClientError::Status { status, .. } => assert_eq!(status, 400),
        e => panic!("{e}"),
    }
    // The CLI passes the agent's answer on.
    let out = h
        .cli()
        .args(["job", "run", "shop/backup"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("503 jobs are not available"), "{stderr}");
}

#[test]
fn cli_job_run_through_the_agent() {
    let h = Harness::start_with(secrets(), true);
    let jobs = h.jobs.clone().unwrap();
    // --detach: the run's number, at once.
    let out = output_ok(h.cli().args(["job", "run", "--detach", "shop/backup"]));
    assert_eq!(out, "8\n");
    // Waiting: the record turns finished a moment later; its log is printed on the
    // streams it came from and the run's exit code is the command's.
    let started = Instant::now();
    let out = h
        .cli()
        .args(["job", "run", "shop/backup"])
        .output()
        .unwrap();
    assert!(started.elapsed() >= FAKE_RUN, "it waited for the run");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "dumping shop\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("disk almost full\n"), "{stderr}");
    assert!(
        stderr.contains("dockmaster: run 9 of shop/backup: failed (exit code 3)"),
        "{stderr}"
    );
    // The agent's refusals, in its words.
    for (job, message) in [
        (
            "shop/busy",
            "shop/busy: run 4 is still running and the job's concurrency is forbid",
        ),
        (
            "shop/nope",
            "shop/nope is not a job of a deployed project (see `dockmaster jobs`)",
        ),
    ] {
        let out = h.cli().args(["job", "run", job]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("dockmaster: {message}\n")
        );
    }
    assert_eq!(
        jobs.calls(),
        [
            "run shop/backup",
            "run shop/backup",
            "run shop/busy",
            "run shop/nope"
        ]
    );
    // The runs were recorded where `job history` reads them.
    let history = output_ok(
        h.cli()
            .args(["job", "history", "shop/backup", "--format", "json"]),
    );
    let runs: Vec<RunRecord> = serde_json::from_str(&history).unwrap();
    assert_eq!(runs.iter().map(|r| r.seq).collect::<Vec<_>>(), [8, 9]);
}
