//! `plan` / `apply` / `down` / `rollback` end to end, as root, with real containers and
//! networking inside a throwaway network namespace playing the host.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::netns::NetnsHost;

const STACK: &str = r#"
name: shop
services:
  init:
    image: localhost/busybox:test
    command: ["sh", "-c", "echo seeded | tee /data/init-done"]
    volumes: [data:/data]
  web:
    image: localhost/busybox:test
    command: ["sh", "-c", "mkdir -p /www && echo hello-$$GREETING > /www/index.html && exec httpd -f -p 80 -h /www"]
    env_file: web.env
    ports: ["8080:80"]
    healthcheck:
      test: ["CMD-SHELL", "test -f /www/index.html"]
      interval: 1s
      start_interval: 200ms
      start_period: 10s
      retries: 2
    depends_on:
      init: {condition: service_completed_successfully}
    volumes: [data:/data]
  worker:
    image: localhost/busybox:test
    command: ["sh", "-c", "while true; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 web 80 > /tmp/last.new && mv /tmp/last.new /tmp/last; sleep 0.5; done"]
    depends_on:
      web: {condition: service_healthy}
volumes:
  data: {}
"#;

struct Project {
    host: NetnsHost,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Project {
    fn new(compose: &str, greeting: &str) -> Project {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shop");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("compose.yaml"), compose).unwrap();
        std::fs::write(dir.join("web.env"), format!("GREETING={greeting}\n")).unwrap();
        Project {
            host: NetnsHost::new("compose"),
            dir,
            _tmp: tmp,
        }
    }

    fn dm(&self, args: &[&str]) -> Output {
        let mut full: Vec<&str> = args.to_vec();
        if matches!(args.first(), Some(&"apply") | Some(&"plan")) {
            full.insert(1, self.dir.to_str().unwrap());
        }
        self.host.run(&full)
    }

    fn apply(&self) -> Output {
        self.dm(&["apply", "--stabilization", "1", "--wait-timeout", "60"])
    }

    fn ids(&self) -> std::collections::BTreeMap<String, String> {
        let out = self.host.ok(&["ps", "-a", "--format", "json"]);
        let mut map = std::collections::BTreeMap::new();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let items = match v {
                serde_json::Value::Array(a) => a,
                other => vec![other],
            };
            for c in items {
                let name = c["Names"].as_str().unwrap_or_default().to_string();
                let id = c["ID"].as_str().unwrap_or_default().to_string();
                map.insert(name, id);
            }
        }
        map
    }

    fn exec(&self, container: &str, cmd: &[&str]) -> String {
        let mut args = vec!["exec", container];
        args.extend_from_slice(cmd);
        self.host.ok(&args)
    }

    fn get(&self) -> Option<String> {
        self.host.in_ns(|| {
            let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            Some(body)
        })
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write(dir: &Path, file: &str, content: &str) {
    std::fs::write(dir.join(file), content).unwrap();
}

#[test]
fn a_three_service_stack_converges_and_updates_only_what_changed() {
    let p = Project::new(STACK, "one");
    let plan = p.dm(&["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let out = String::from_utf8_lossy(&plan.stdout);
    assert!(out.contains("+ web #1: new service"), "{out}");

    let applied = p.apply();
    assert!(applied.status.success(), "{}", text(&applied));
    let body = eventually(
        "web answers on the published port",
        Duration::from_secs(10),
        || p.get(),
    );
    assert!(body.contains("hello-one"), "{body}");
    // The worker reaches web by its service name.
    let last = eventually(
        "the worker fetched from web",
        Duration::from_secs(10),
        || {
            let out = p.host.run(&["exec", "shop-worker-1", "cat", "/tmp/last"]);
            let s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.contains("hello-one").then_some(s)
        },
    );
    assert!(last.contains("hello-one"));
    // The one-shot init ran first and wrote into the named volume web mounts too.
    assert_eq!(
        p.exec("shop-web-1", &["cat", "/data/init-done"]).trim(),
        "seeded"
    );
    let before = p.ids();
    assert_eq!(before.len(), 3, "{before:?}");
    // ps groups by project and service and shows health; logs PROJECT SERVICE.
    let ps = p
        .host
        .ok(&["ps", "-a", "--project", "shop", "--format", "json"]);
    let rows: Vec<serde_json::Value> = ps
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let services: Vec<&str> = rows
        .iter()
        .map(|r| r["Service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["init", "web", "worker"], "{ps}");
    assert_eq!(rows[1]["Health"], "healthy", "{ps}");
    assert_eq!(p.host.ok(&["logs", "shop", "init"]).trim(), "seeded");

    // Applying again changes nothing.
    let plan = p.dm(&["plan"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let again = p.apply();
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no changes"),
        "{}",
        text(&again)
    );
    assert_eq!(p.ids(), before);

    // A changed env file recreates only the service that uses it, and the plan says why.
    write(&p.dir, "web.env", "GREETING=two\n");
    let plan = p.dm(&["plan", "--format", "json"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{v:#}");
    assert_eq!(steps[0]["service"], "web");
    let reasons = steps[0]["reasons"].to_string();
    assert!(reasons.contains("env_file web.env changed"), "{reasons}");
    let applied = p.apply();
    assert!(applied.status.success(), "{}", text(&applied));
    let after = p.ids();
    assert_ne!(after["shop-web-1"], before["shop-web-1"]);
    assert_eq!(after["shop-worker-1"], before["shop-worker-1"]);
    assert_eq!(after["shop-init-1"], before["shop-init-1"]);
    let body = eventually("the new web answers", Duration::from_secs(10), || {
        p.get().filter(|b| b.contains("hello-two"))
    });
    assert!(body.contains("hello-two"));
    // The named volume survived the recreation.
    assert_eq!(
        p.exec("shop-web-1", &["cat", "/data/init-done"]).trim(),
        "seeded"
    );

    // down removes everything but the named volume.
    let down = p.host.run(&["down", "shop"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(p.ids().is_empty());
    assert!(p
        .host
        .root
        .root()
        .join("volumes/shop_data/_data/init-done")
        .exists());
}

#[test]
fn an_update_that_fails_its_healthcheck_is_rolled_back() {
    let p = Project::new(STACK, "stable");
    let applied = p.apply();
    assert!(applied.status.success(), "{}", text(&applied));
    let before = p.ids();

    // The new version never becomes healthy.
    let broken = STACK.replace("test -f /www/index.html", "test -f /www/missing");
    write(&p.dir, "compose.yaml", &broken);
    let failed = p.apply();
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("rolled back to generation 1"), "{err}");
    assert!(err.contains("web"), "{err}");
    // The previous version runs again and answers.
    let body = eventually("the restored web answers", Duration::from_secs(10), || {
        p.get()
    });
    assert!(body.contains("hello-stable"), "{body}");
    let after = p.ids();
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after["shop-worker-1"], before["shop-worker-1"]);
    // Nothing pending against the restored generation's compose file.
    write(&p.dir, "compose.yaml", STACK);
    let plan = p.dm(&["plan"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
}

#[test]
fn invalid_projects_are_refused_before_anything_changes() {
    let p = Project::new(
        "services:\n  a:\n    image: localhost/busybox:test\n    depends_on: [b]\n  b:\n    image: localhost/busybox:test\n    depends_on: [a]\n",
        "x",
    );
    let out = p.apply();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cycle"), "{err}");
    assert!(p.ids().is_empty());
}

fn restart_count(p: &Project, container: &str) -> u64 {
    p.host.inspect(container)["RestartCount"]
        .as_u64()
        .unwrap_or_default()
}

#[test]
fn a_crash_loop_backs_off_and_fails_the_apply() {
    let p = Project::new(
        "services:\n  crasher:\n    image: localhost/busybox:test\n    command: [\"sh\", \"-c\", \"exit 3\"]\n    restart: always\n",
        "x",
    );
    let out = p.dm(&["apply", "--stabilization", "1", "--wait-timeout", "20"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("crasher")
            && (err.contains("restarting") || err.contains("exited with code 3")),
        "{err}"
    );
    // The shim keeps restarting it with growing delays (100 ms doubling): a few restarts in
    // seconds, not hundreds.
    let first = restart_count(&p, "shop-crasher-1");
    std::thread::sleep(Duration::from_secs(3));
    let later = restart_count(&p, "shop-crasher-1");
    assert!(later > first, "no restart between {first} and {later}");
    assert!(later < 40, "restarted {later} times: no backoff");
}

#[test]
fn an_unhealthy_container_is_restarted() {
    let p = Project::new(
        r#"
services:
  app:
    image: localhost/busybox:test
    command: ["sh", "-c", "touch /tmp/ok && exec sleep 1000"]
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ok"]
      interval: 500ms
      start_interval: 200ms
      start_period: 5s
      retries: 2
"#,
        "x",
    );
    let out = p.apply();
    assert!(out.status.success(), "{}", text(&out));
    let id = p.ids()["shop-app-1"].clone();
    assert_eq!(restart_count(&p, "shop-app-1"), 0);
    p.exec("shop-app-1", &["rm", "/tmp/ok"]);
    eventually(
        "the unhealthy container is restarted",
        Duration::from_secs(30),
        || (restart_count(&p, "shop-app-1") >= 1).then_some(()),
    );
    // Same container, restarted in place, healthy again (the command recreates the file).
    assert_eq!(p.ids()["shop-app-1"], id);
    eventually("healthy again", Duration::from_secs(20), || {
        (p.host.inspect("shop-app-1")["State"]["Health"]["Status"] == "healthy").then_some(())
    });
}

/// Imports busybox under `tag`, with `env` in its config (a different image each time).
fn import_app(p: &Project, tag: &str, env: &str) {
    let image = support::ImageBuilder::new()
        .layer(support::busybox_rootfs().build())
        .cmd(&["sh"])
        .env(env)
        .build();
    let layout = p
        ._tmp
        .path()
        .join(format!("layout-{}", env.replace('=', "-")));
    support::write_oci_layout(&layout, &[(tag, &image)]);
    p.host
        .ok(&["image", "import", layout.to_str().unwrap(), "--tag", tag]);
}

const APP: &str = r#"
name: shop
services:
  app:
    image: localhost/app:current
    command: ["sh", "-c", "mkdir -p /www && echo version-$$VERSION > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["8080:80"]
    deploy:
      replicas: 2
      update_config: {order: start-first}
    healthcheck:
      test: ["CMD-SHELL", "test \"$$VERSION\" != broken"]
      interval: 500ms
      start_interval: 200ms
      start_period: 3s
      retries: 2
"#;

#[test]
fn a_new_image_that_fails_its_healthcheck_is_rolled_back_by_digest() {
    let p = Project::new(APP.replace("8080:80", "8080-8081:80").as_str(), "x");
    import_app(&p, "localhost/app:current", "VERSION=1");
    let out = p.apply();
    assert!(out.status.success(), "{}", text(&out));
    let v1 = p.ids();
    assert_eq!(v1.len(), 2, "{v1:?}");

    // The tag moves to a new image whose healthcheck fails: the digest change is the reason,
    // start-first keeps the old replicas serving, and the rollback finds the old image by
    // its digest although the tag now names the new one.
    import_app(&p, "localhost/app:current", "VERSION=broken");
    let plan = p.dm(&["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("image digest"),
        "{}",
        text(&plan)
    );
    let failed = p.apply();
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("rolled back to generation 1"),
        "{}",
        text(&failed)
    );
    let after = p.ids();
    assert_eq!(after.len(), 2, "{after:?}");
    for name in after.keys() {
        let env = p.exec(name, &["sh", "-c", "echo $VERSION"]);
        assert_eq!(env.trim(), "1", "{name} runs the old image");
    }
    let body = eventually("the old version answers", Duration::from_secs(10), || {
        p.get()
    });
    assert!(body.contains("version-1"), "{body}");

    // A good new version applies; `rollback` then returns to the previous good generation.
    import_app(&p, "localhost/app:current", "VERSION=2");
    let out = p.apply();
    assert!(out.status.success(), "{}", text(&out));
    for name in p.ids().keys() {
        assert_eq!(p.exec(name, &["sh", "-c", "echo $VERSION"]).trim(), "2");
    }
    let back = p.host.run(&["rollback", "shop", "--stabilization", "1"]);
    assert!(back.status.success(), "{}", text(&back));
    for name in p.ids().keys() {
        assert_eq!(
            p.exec(name, &["sh", "-c", "echo $VERSION"]).trim(),
            "1",
            "{name}"
        );
    }
}

#[test]
fn services_that_do_not_wait_are_started_while_others_wait_for_health() {
    // `api` waits for db to be healthy (first probe 1.5 s after start); `aaa`, `zzz` and
    // `queue-user` (on queue, service_started) need nothing from db, so they are created during
    // that wait, whatever their names' order.
    let p = Project::new(
        r#"
services:
  db:
    image: localhost/busybox:test
    command: ["sleep", "1000"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1500ms
  api:
    image: localhost/busybox:test
    command: ["sleep", "1000"]
    depends_on:
      db: {condition: service_healthy}
  aaa:
    image: localhost/busybox:test
    command: ["sleep", "1000"]
  queue:
    image: localhost/busybox:test
    command: ["sleep", "1000"]
  queue-user:
    image: localhost/busybox:test
    command: ["sleep", "1000"]
    depends_on: [queue]
  zzz:
    image: localhost/busybox:test
    command: ["sleep", "1000"]
"#,
        "x",
    );
    let out = p.apply();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let at = |what: &str| {
        err.find(what)
            .unwrap_or_else(|| panic!("{what:?} not in the apply's output:\n{err}"))
    };
    let waiting = at("api: waiting for db (service_healthy)");
    let api = at("creating api #1");
    assert!(at("creating db #1") < waiting, "{err}");
    for other in ["aaa", "queue", "queue-user", "zzz"] {
        let created = at(&format!("creating {other} #1"));
        assert!(created < api, "{other} waited for db's health:\n{err}");
    }
    assert!(waiting < api, "{err}");
    for name in [
        "shop-db-1",
        "shop-api-1",
        "shop-aaa-1",
        "shop-queue-user-1",
        "shop-zzz-1",
    ] {
        assert_eq!(p.host.inspect(name)["State"]["Status"], "running", "{name}");
    }
}

const JOBS: &str = r#"
name: shop
services:
  app:
    image: localhost/busybox:test
    command: ["sleep", "1000"]
  backup:
    image: localhost/busybox:test
    command: ["sh", "-c", "echo backed up > /data/last"]
    volumes: [data:/data]
    x-dockmaster: {schedule: "0 3 * * *"}
volumes:
  data: {}
"#;

/// The project's generations, oldest first.
fn generations(p: &Project) -> Vec<dockmaster::reconcile::generations::Generation> {
    dockmaster::reconcile::generations::list(&p.host.root.root(), "shop").unwrap()
}

fn schedule_of(g: &dockmaster::reconcile::generations::Generation, service: &str) -> String {
    g.services[service].inputs.spec["x-dockmaster"]["schedule"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn jobs_are_planned_and_recorded_but_not_kept_running() {
    use dockmaster::reconcile::generations::Status;
    let p = Project::new(JOBS, "x");
    let plan = p.dm(&["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let out = String::from_utf8_lossy(&plan.stdout);
    assert!(out.contains("  + job backup: new job\n"), "{out}");
    assert!(out.contains("+ app #1: new service"), "{out}");
    // A run needs the job's volume: it is created with the project.
    assert!(out.contains("+ volume shop_data"), "{out}");
    assert!(!out.contains("backup #"), "{out}");

    // Only the long-running service gets a container; the generation records the job with
    // its pinned image for the scheduler.
    let applied = p.apply();
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(
        String::from_utf8_lossy(&applied.stderr).contains("scheduling job backup (new job)"),
        "{}",
        text(&applied)
    );
    let first = p.ids();
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        ["shop-app-1"],
        "{first:?}"
    );
    let gens = generations(&p);
    assert_eq!(gens.len(), 1);
    assert_eq!(gens[0].status, Status::Good);
    assert_eq!(schedule_of(&gens[0], "backup"), "0 3 * * *");
    assert!(gens[0].services.contains_key("app"));
    let pinned = gens[0].project["services"]["backup"]["image"]
        .as_str()
        .unwrap_or_default();
    assert!(pinned.contains("@sha256:"), "{pinned}");
    assert!(p.host.root.root().join("volumes/shop_data").exists());

    // Nothing changed: nothing to do, no new generation.
    let plan = p.dm(&["plan"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let again = p.apply();
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no changes"),
        "{}",
        text(&again)
    );
    assert_eq!(generations(&p).len(), 1);

    // A run of the job (as the scheduler starts them) is not a replica of the service: the
    // plan does not see it.
    p.host.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "shop-backup-run-1",
        "--label",
        "com.docker.compose.project=shop",
        "--label",
        "com.docker.compose.service=backup",
        "--label",
        "com.docker.compose.container-number=1",
        "--label",
        "dockmaster.job.run=1",
        "localhost/busybox:test",
        "sleep",
        "1000",
    ]);
    let plan = p.dm(&["plan"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));

    // Only the schedule changes: the job is scheduled again, the service is left alone.
    write(
        &p.dir,
        "compose.yaml",
        &JOBS.replace("0 3 * * *", "*/5 * * * *"),
    );
    let plan = p.dm(&["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let out = String::from_utf8_lossy(&plan.stdout);
    assert!(
        out.contains("project shop: 1 change\n  ~ job backup: x-dockmaster.schedule changed\n"),
        "{out}"
    );
    let applied = p.apply();
    assert!(applied.status.success(), "{}", text(&applied));
    assert_eq!(p.ids()["shop-app-1"], first["shop-app-1"]);
    let gens = generations(&p);
    assert_eq!(gens.len(), 2);
    assert_eq!(gens[1].status, Status::Good);
    assert_eq!(schedule_of(&gens[1], "backup"), "*/5 * * * *");
    // A drift check plans against that same good generation: no job steps (and the job run
    // is no drift either).
    let drift = dockmaster::reconcile::apply::restore_plan(
        &p.host.root.root(),
        &dockmaster::config::AgentConfig::default(),
        &gens[1],
    )
    .unwrap();
    assert!(drift.is_empty(), "{drift}");

    // The long-running service becomes a job: its container goes.
    let both = JOBS.replace("0 3 * * *", "*/5 * * * *").replace(
        r#"command: ["sleep", "1000"]"#,
        "command: [\"sleep\", \"1000\"]\n    x-dockmaster: {schedule: \"@hourly\"}",
    );
    write(&p.dir, "compose.yaml", &both);
    let plan = p.dm(&["plan"]);
    let out = String::from_utf8_lossy(&plan.stdout);
    assert!(
        out.contains("- app (shop-app-1): is a job now: runs at its schedule, not kept running\n")
            && out.contains("+ job app: new job\n"),
        "{out}"
    );
    let applied = p.apply();
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(!p.ids().contains_key("shop-app-1"), "{:?}", p.ids());

    // The job is removed from the project.
    let only_app = "name: shop\nservices:\n  app:\n    image: localhost/busybox:test\n    command: [\"sleep\", \"1000\"]\n    x-dockmaster: {schedule: \"@hourly\"}\n";
    write(&p.dir, "compose.yaml", only_app);
    let plan = p.dm(&["plan"]);
    let out = String::from_utf8_lossy(&plan.stdout);
    assert!(
        out.contains(
            "project shop: 1 change\n  - job backup: service is no longer in the project\n"
        ),
        "{out}"
    );
    let applied = p.apply();
    assert!(applied.status.success(), "{}", text(&applied));
    let gens = generations(&p);
    let last = gens.last().unwrap();
    assert_eq!(last.status, Status::Good);
    assert_eq!(last.services.keys().collect::<Vec<_>>(), ["app"]);

    // down also takes the job's runs.
    let down = p.host.run(&["down", "shop"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(p.ids().is_empty(), "{:?}", p.ids());
}
