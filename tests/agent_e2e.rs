//! `dockmaster agent` end to end, as root: real git servers on 127.0.0.1 (git daemon, smart
//! HTTP with basic auth), the real registry behind a proxy that can play unreachable, real
//! containers (network_mode none: the agent's HTTP listener is on the host's loopback only),
//! and a real Prometheus server scraping the agent.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use support::agent::{converged, eventually, fleet_repo, get, ids, project, status, Agent};
use support::containers::{Host, BUSYBOX};
use support::env::free_port;
use support::git_server::{GitDaemon, GitHttp, GitRepos, WorkClone};

fn stack(message: &str) -> String {
    format!(
        r#"services:
  app:
    image: {BUSYBOX}
    command: ["sh", "-c", "echo $$MESSAGE; exec sleep 1000"]
    environment: {{MESSAGE: "{message}"}}
    network_mode: none
    healthcheck:
      test: ["CMD", "true"]
      interval: 300ms
  worker:
    image: {BUSYBOX}
    command: ["sleep", "1000"]
    network_mode: none
"#
    )
}

#[test]
fn pushed_commits_converge_bad_ones_change_nothing_and_drift_is_put_back() {
    let host = Host::new();
    let repos = GitRepos::new();
    let bare = repos.create("fleet");
    let work = WorkClone::new(&bare);
    work.write("stacks/demo/compose.yaml", &stack("one"));
    work.write("README.md", "not a project\n");
    let c1 = work.commit("one");
    work.push();
    let daemon = GitDaemon::start(repos.path());
    let agent = Agent::start(
        &host,
        &format!(
            "sources:\n  - name: fleet\n    url: {}\n    paths: [stacks]\npoll_interval: 1s\ndrift_interval: 1s\napply: {{stabilization: 1s, timeout: 60s}}\n",
            daemon.url("fleet.git")
        ),
    );
    let p = converged(&agent, &host, "demo", &c1, 60);
    assert_eq!(p["source"], "fleet");
    assert_eq!(p["path"], "stacks/demo");
    let before = ids(&host);
    assert!(before.contains_key("demo-app-1") && before.contains_key("demo-worker-1"));
    // Counters of events that have not happened yet exist at 0 (increase() sees the first).
    let m = agent.metrics();
    for series in [
        "dockmaster_rollbacks_total{project=\"demo\"} 0",
        "dockmaster_drift_corrections_total{project=\"demo\",service=\"worker\"} 0",
    ] {
        assert!(m.contains(series), "{series} missing:\n{m}");
    }

    // A change to one service: only it is recreated, within the poll interval (plus the
    // apply's own 1 s stabilization).
    work.write("stacks/demo/compose.yaml", &stack("two"));
    let c2 = work.commit("two");
    let pushed = Instant::now();
    work.push();
    converged(&agent, &host, "demo", &c2, 30);
    let took = pushed.elapsed();
    let after = ids(&host);
    assert_ne!(
        after["demo-app-1"], before["demo-app-1"],
        "app not recreated"
    );
    assert_eq!(
        after["demo-worker-1"], before["demo-worker-1"],
        "worker touched"
    );
    eprintln!("commit to converged with a 1 s poll: {took:?}");

    // A bad commit: recorded with its reason, in status and metrics; nothing changes.
    work.write("stacks/demo/compose.yaml", "services:\n  app: [\n");
    let c3 = work.commit("broken");
    work.push();
    let err = eventually(&agent, "the bad commit is reported", 30, || {
        let s = status(&host);
        let e = project(&s, "demo")?["last_error"].clone();
        (e["revision"] == c3.as_str()).then_some(e)
    });
    let reason = err["reason"].as_str().unwrap();
    assert!(
        reason.contains("stacks/demo/compose.yaml:2") && reason.contains(&c3[..12]),
        "{reason}"
    );
    assert!(
        agent.metric("dockmaster_sync_failures_total{source=\"fleet\",reason=\"manifest\"}") >= 1.0
    );
    let s = status(&host);
    let p = project(&s, "demo").unwrap();
    assert_eq!(p["state"], "failed");
    assert_eq!(
        p["revision"],
        c2.as_str(),
        "the last good revision keeps running"
    );
    // Not retried in a loop: the failure count stays put over several polls.
    let failures =
        agent.metric("dockmaster_sync_failures_total{source=\"fleet\",reason=\"manifest\"}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        agent.metric("dockmaster_sync_failures_total{source=\"fleet\",reason=\"manifest\"}"),
        failures
    );
    assert_eq!(ids(&host), after, "a bad commit changed containers");

    // The fixing commit is applied.
    work.write("stacks/demo/compose.yaml", &stack("three"));
    let c4 = work.commit("fixed");
    work.push();
    converged(&agent, &host, "demo", &c4, 30);
    assert!(project(&status(&host), "demo").unwrap()["last_error"].is_null());

    // A container removed by hand is put back by the drift check.
    let worker = ids(&host)["demo-worker-1"].clone();
    host.ok(&["rm", "-f", "demo-worker-1"]);
    let back = eventually(&agent, "the removed worker is back", 30, || {
        let id = ids(&host).get("demo-worker-1").cloned()?;
        (id != worker).then_some(id)
    });
    assert_eq!(
        host.inspect(&back)["State"]["Status"],
        "running",
        "{}",
        agent.log()
    );
    eventually(&agent, "the drift correction is counted", 10, || {
        (agent.metric("dockmaster_drift_corrections_total{project=\"demo\",service=\"worker\"}")
            >= 1.0)
            .then_some(())
    });
    // A container whose process is killed by hand (no restart policy) is brought back too.
    let app = ids(&host)["demo-app-1"].clone();
    host.ok(&["kill", "demo-app-1"]);
    eventually(&agent, "the killed app runs again", 30, || {
        let id = ids(&host).get("demo-app-1").cloned()?;
        (host.inspect(&id)["State"]["Status"] == "running" && id != app).then_some(())
    });
    // `history` lists the generations with their revisions.
    let history = host.ok(&["history", "demo", "--format", "json"]);
    assert!(history.contains(&c4) && history.contains(&c1), "{history}");

    // A project directory removed from the repository is taken down.
    work.remove("stacks/demo/compose.yaml");
    work.write("stacks/.keep", "");
    work.commit("remove demo");
    work.push();
    eventually(&agent, "the removed project is taken down", 30, || {
        let s = status(&host);
        (project(&s, "demo").is_none() && !ids(&host).keys().any(|n| n.starts_with("demo-")))
            .then_some(())
    });
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn a_webhook_converges_at_once_over_smart_http_with_basic_auth() {
    let host = Host::new();
    let (repos, work, c1) = fleet_repo("compose.yaml", &stack("one"), "one");
    let http = GitHttp::start(repos.path(), Some(("deploy", "s3cret")));
    let dir = host.root.path();
    std::fs::write(dir.join("git-password"), "s3cret\n").unwrap();
    std::fs::write(dir.join("hook-secret"), "hook-key\n").unwrap();
    // Polls hourly: only the webhook (and the first sync at start) can bring changes.
    let agent = Agent::start(
        &host,
        &format!(
            "sources:\n  - name: site\n    url: {}\n    auth: {{username: deploy, password_file: {}}}\npoll_interval: 1h\napply: {{stabilization: 0s}}\nwebhook: {{secret_file: {}}}\n",
            http.url("fleet.git"),
            dir.join("git-password").display(),
            dir.join("hook-secret").display()
        ),
    );
    // The repository root is the project, named after the source.
    converged(&agent, &host, "site", &c1, 60);
    let mirror_config =
        std::fs::read_to_string(host.root.root().join("sources/site.git/config")).unwrap();
    assert!(!mirror_config.contains("s3cret"), "{mirror_config}");

    work.write("compose.yaml", &stack("two"));
    let c2 = work.commit("two");
    work.push();
    let body = br#"{"ref":"refs/heads/main","repository":{"full_name":"ops/fleet"}}"#;
    let client = reqwest::blocking::Client::new();
    let hook = format!("http://{}/hooks/git", agent.http);
    let bad = client
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", github_signature("wrong", body))
        .body(body.to_vec())
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let sent = Instant::now();
    let ok = client
        .post(&hook)
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", github_signature("hook-key", body))
        .body(body.to_vec())
        .send()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 202);
    converged(&agent, &host, "site", &c2, 15);
    eprintln!("webhook to converged: {:?}", sent.elapsed());
    assert_eq!(
        agent.metric("dockmaster_webhook_requests_total{result=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        agent.metric("dockmaster_webhook_requests_total{result=\"bad_signature\"}"),
        1.0
    );
    assert!(!agent.log().contains("s3cret"), "a credential was logged");
}

#[test]
fn kill_9_during_an_apply_then_restart_converges_without_restarting_healthy_containers() {
    let host = Host::new();
    let (repos, work, c1) = fleet_repo("compose.yaml", &stack("one"), "one");
    let config = format!(
        "sources:\n  - name: edge\n    url: {}\npoll_interval: 1s\napply: {{stabilization: 4s, timeout: 60s}}\n",
        repos.file_url("fleet")
    );
    let mut agent = Agent::start(&host, &config);
    converged(&agent, &host, "edge", &c1, 60);
    let worker = ids(&host)["edge-worker-1"].clone();

    // Commit 2 changes app only; the agent is killed while it waits out the 4 s
    // stabilization of the new app container.
    work.write("compose.yaml", &stack("two"));
    let c2 = work.commit("two");
    work.push();
    eventually(&agent, "the apply of commit 2 started", 30, || {
        agent
            .log()
            .contains(&format!("applying commit {}", &c2[..12]))
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let pid = agent.pid();
    agent.kill9();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    // Its containers live on without it.
    assert_eq!(host.inspect("edge-worker-1")["State"]["Status"], "running");

    let agent = Agent::start(&host, &config);
    converged(&agent, &host, "edge", &c2, 60);
    let now = ids(&host);
    assert_eq!(
        now["edge-worker-1"], worker,
        "the healthy worker was recreated"
    );
    assert_eq!(
        host.inspect("edge-worker-1")["RestartCount"]
            .as_u64()
            .unwrap_or(0),
        0,
        "the healthy worker was restarted"
    );
    assert_eq!(host.inspect("edge-app-1")["State"]["Status"], "running");
}

#[test]
fn an_unreachable_registry_is_retried_and_loses_nothing() {
    use support::image::ImageBuilder;
    let host = Host::new();
    let registry = support::registry::Registry::start(support::registry::Mode::Plain);
    let proxy = support::proxy::FaultProxy::start(&registry.host());
    for v in ["1", "2"] {
        let image = ImageBuilder::new()
            .layer(support::fixtures::busybox_rootfs().build())
            .env(&format!("VERSION={v}"))
            .build();
        registry.push("app", &format!("v{v}"), &image);
    }
    let compose = |v: &str| {
        format!(
            "services:\n  app:\n    image: {}/app:v{v}\n    command: [\"sleep\", \"1000\"]\n    network_mode: none\n",
            proxy.host()
        )
    };
    let (repos, work, c1) = fleet_repo("compose.yaml", &compose("1"), "v1");
    let agent = Agent::start(
        &host,
        &format!(
            "sources:\n  - name: reg\n    url: {}\npoll_interval: 1s\napply: {{stabilization: 0s}}\nregistries: {{max_attempts: 1}}\n",
            repos.file_url("fleet")
        ),
    );
    converged(&agent, &host, "reg", &c1, 60);
    let running = ids(&host)["reg-app-1"].clone();

    proxy.set_down(true);
    work.write("compose.yaml", &compose("2"));
    let c2 = work.commit("v2");
    work.push();
    let err = eventually(&agent, "the pull failure is reported", 60, || {
        let s = status(&host);
        let e = project(&s, "reg")?["last_error"].clone();
        (e["revision"] == c2.as_str()).then_some(e)
    });
    assert!(err["reason"].as_str().unwrap().contains("app:v2"), "{err}");
    assert!(agent.metric("dockmaster_sync_failures_total{source=\"reg\",reason=\"image\"}") >= 1.0);
    assert_eq!(
        ids(&host)["reg-app-1"],
        running,
        "a failed pull changed containers"
    );
    assert_eq!(host.inspect(&running)["State"]["Status"], "running");
    assert!(agent.log().contains("retrying in"), "{}", agent.log());

    assert!(agent.metric("dockmaster_image_pulls_total{result=\"failure\"}") >= 1.0);

    // Back online: the next retry (10 s backoff) applies v2.
    proxy.set_down(false);
    converged(&agent, &host, "reg", &c2, 60);
    assert_ne!(ids(&host)["reg-app-1"], running);
    assert_eq!(
        agent.metric("dockmaster_image_pulls_total{result=\"success\"}"),
        2.0,
        "v1 and v2 pulled once each"
    );
    assert!(agent.metric("dockmaster_image_pull_bytes_total") > 100_000.0);
}

/// A Prometheus server on 127.0.0.1 with its own temp storage, killed by PID on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: dockmaster\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus (apt package prometheus)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_agent() {
    let host = Host::new();
    let (repos, _work, c1) = fleet_repo("compose.yaml", &stack("one"), "one");
    let agent = Agent::start(
        &host,
        &format!(
            "sources:\n  - name: prom\n    url: {}\npoll_interval: 1s\napply: {{stabilization: 0s}}\n",
            repos.file_url("fleet")
        ),
    );
    converged(&agent, &host, "prom", &c1, 60);
    let prometheus = Prometheus::start(&agent.http);
    let query = format!(
        "http://127.0.0.1:{}/api/v1/query?query=dockmaster_containers_running%7Bproject%3D%22prom%22%2Cservice%3D%22app%22%7D",
        prometheus.port
    );
    let value = eventually(&agent, "prometheus returns the scraped metric", 60, || {
        let body = get(&query)?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?.first()?.clone();
        Some(result["value"][1].as_str()?.to_string())
    });
    assert_eq!(value, "1");
    // The applied revision reached Prometheus as an info metric too.
    let info = format!(
        "http://127.0.0.1:{}/api/v1/query?query=dockmaster_applied_revision_info",
        prometheus.port
    );
    let body = eventually(&agent, "the revision info metric", 30, || {
        get(&info).filter(|b| b.contains(&c1))
    });
    assert!(body.contains("\"project\":\"prom\""), "{body}");
    // The shared conformance check of the exposition (promtool lint, and a second parser
    // when python's prometheus_client is there).
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/prometheus/check-metrics.sh");
    if script.exists() {
        let out = Command::new("sh")
            .arg(&script)
            .arg(format!("http://{}/metrics", agent.http))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_moved_tag_redeploys_follow_services_and_only_reports_notify_ones() {
    use support::image::ImageBuilder;
    let host = Host::new();
    let registry = support::registry::Registry::start(support::registry::Mode::Plain);
    let proxy = support::proxy::FaultProxy::start(&registry.host());
    let version = |v: &str| {
        ImageBuilder::new()
            .layer(support::fixtures::busybox_rootfs().build())
            .env(&format!("VERSION={v}"))
            .build()
    };
    registry.push("app", "stable", &version("1"));
    let service = |name: &str, policy: &str| {
        format!(
            "  {name}:\n    image: {}/app:stable\n    command: [\"sleep\", \"1000\"]\n    network_mode: none\n    x-dockmaster: {{image_update: {policy}}}\n",
            proxy.host()
        )
    };
    let repos = GitRepos::new();
    let bare = repos.create("fleet");
    let work = WorkClone::new(&bare);
    work.write(
        "compose.yaml",
        &format!(
            "services:\n{}{}{}",
            service("follower", "follow"),
            service("watcher", "notify"),
            service("pinned", "pin")
        ),
    );
    let c1 = work.commit("v1");
    work.push();
    let agent = Agent::start(
        &host,
        &format!(
            "sources:\n  - name: tags\n    url: {}\npoll_interval: 1s\nimage_check_interval: 1s\napply: {{stabilization: 0s}}\n",
            repos.file_url("fleet")
        ),
    );
    converged(&agent, &host, "tags", &c1, 60);
    let before = ids(&host);
    let env_of = |name: &str| {
        host.run(&["exec", name, "sh", "-c", "echo VERSION=$VERSION"])
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
    };
    assert!(env_of("tags-follower-1").contains("VERSION=1"));

    // The tag moves: follow redeploys with the new digest, notify reports, pin ignores.
    proxy.clear_log();
    registry.push("app", "stable", &version("2"));
    eventually(&agent, "the follow service runs the new image", 60, || {
        let id = ids(&host).get("tags-follower-1").cloned()?;
        (id != before["tags-follower-1"] && env_of("tags-follower-1").contains("VERSION=2"))
            .then_some(())
    });
    let s = eventually(&agent, "the notify service reports the update", 30, || {
        let s = status(&host);
        let p = project(&s, "tags")?.clone();
        let watcher = p["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "watcher")?
            .clone();
        watcher["update"].as_str().map(|_| p)
    });
    assert!(
        s["pending"].to_string().contains("watcher"),
        "pending changes: {s}"
    );
    let now = ids(&host);
    assert_eq!(
        now["tags-watcher-1"],
        before["tags-watcher-1"],
        "{}",
        agent.log()
    );
    assert_eq!(now["tags-pinned-1"], before["tags-pinned-1"]);
    assert!(env_of("tags-watcher-1").contains("VERSION=1"));
    assert_eq!(
        agent.metric("dockmaster_image_updates_available{project=\"tags\",service=\"watcher\"}"),
        1.0
    );
    // Checked with HEAD requests (the manifest body is fetched only to pull).
    assert!(
        proxy.count("HEAD", "/manifests/stable") >= 2,
        "{:?}",
        proxy.requests()
    );
    // The checks run every second, but the follow service is redeployed once.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ids(&host)["tags-follower-1"], now["tags-follower-1"]);
}

#[test]
fn sighup_reloads_the_configuration_and_logs_can_be_json() {
    let host = Host::new();
    let repos = GitRepos::new();
    for name in ["first", "second"] {
        let bare = repos.create(name);
        let work = WorkClone::new(&bare);
        work.write("compose.yaml", &stack(name));
        work.commit(name);
        work.push();
    }
    let source = |name: &str| format!("  - name: {name}\n    url: {}\n", repos.file_url(name));
    let common = "poll_interval: 1s\napply: {stabilization: 0s}\nlog_format: json\n";
    let agent = Agent::start(&host, &format!("sources:\n{}{common}", source("first")));
    eventually(&agent, "the first source's project runs", 60, || {
        project(&status(&host), "first").map(|_| ())
    });
    // Every log line is a JSON object.
    let log = agent.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }

    // A broken file is refused on SIGHUP: the old configuration stays.
    let path = host.root.path().join("agent.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, "sources: [\n").unwrap();
    // SAFETY: kill(2) on the PID of the agent this test started and still owns.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    eventually(&agent, "the bad configuration is reported", 10, || {
        agent
            .log()
            .contains("configuration not reloaded")
            .then_some(())
    });
    // A second source is added and picked up on SIGHUP.
    std::fs::write(
        &path,
        good.replacen("sources:\n", &format!("sources:\n{}", source("second")), 1),
    )
    .unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    eventually(&agent, "the second source's project runs", 60, || {
        let s = status(&host);
        (project(&s, "second").is_some() && project(&s, "first").is_some()).then_some(())
    });
    assert_eq!(status(&host)["sources"].as_array().unwrap().len(), 2);
}

#[test]
fn changes_wait_for_the_update_window_while_self_healing_goes_on() {
    let host = Host::new();
    let (repos, work, c1) = fleet_repo("compose.yaml", &stack("one"), "one");
    // Open for 4 s every 20 s (a seconds field): short enough to see it open in a test.
    let agent = Agent::start(
        &host,
        &format!(
            "sources:\n  - name: win\n    url: {}\npoll_interval: 1s\ndrift_interval: 1s\napply: {{stabilization: 0s}}\nupdate_window: {{schedule: \"*/20 * * * * *\", duration: 4s}}\n",
            repos.file_url("fleet")
        ),
    );
    // The first deployment waits for the window too (it is a change), then converges.
    converged(&agent, &host, "win", &c1, 60);
    let before = ids(&host);

    // Push right after a window closed: the change is held and shown as pending.
    let in_window = || {
        let s = jiff::Timestamp::now().as_second().rem_euclid(20);
        s < 4
    };
    eventually(&agent, "the window is closed", 30, || {
        (!in_window() && jiff::Timestamp::now().as_second().rem_euclid(20) < 8).then_some(())
    });
    work.write("compose.yaml", &stack("two"));
    let c2 = work.commit("two");
    work.push();
    let p = eventually(&agent, "the change is pending", 10, || {
        let s = status(&host);
        let p = project(&s, "win")?.clone();
        (p["state"] == "pending").then_some(p)
    });
    assert!(p["pending"].to_string().contains(&c2[..12]), "{p}");
    assert_eq!(p["revision"], c1.as_str());
    assert!(agent.metric("dockmaster_pending_changes{project=\"win\"}") >= 1.0);
    assert_eq!(ids(&host)["win-app-1"], before["win-app-1"]);
    // Self-healing is not held: a removed container comes back at once.
    host.ok(&["rm", "-f", "win-worker-1"]);
    eventually(
        &agent,
        "the worker is put back outside the window",
        8,
        || ids(&host).contains_key("win-worker-1").then_some(()),
    );
    assert!(!in_window() || agent.log().contains("drifted"));
    // When the window opens, the held commit is applied.
    converged(&agent, &host, "win", &c2, 40);
    assert_ne!(ids(&host)["win-app-1"], before["win-app-1"]);
    assert_eq!(
        agent.metric("dockmaster_pending_changes{project=\"win\"}"),
        0.0
    );

    // `sync --now` overrides the window.
    eventually(&agent, "the window is closed again", 30, || {
        (!in_window() && jiff::Timestamp::now().as_second().rem_euclid(20) < 10).then_some(())
    });
    work.write("compose.yaml", &stack("three"));
    let c3 = work.commit("three");
    work.push();
    eventually(&agent, "the third commit is pending", 10, || {
        let s = status(&host);
        (project(&s, "win")?["state"] == "pending").then_some(())
    });
    host.ok(&["sync", "--now"]);
    // (Within the stop grace period of the old container: `sleep` as PID 1 ignores SIGTERM.)
    converged(&agent, &host, "win", &c3, 25);
}
