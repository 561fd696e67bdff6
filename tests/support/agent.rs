//! A `dockmaster agent` process for end-to-end tests, and the helpers that read its status.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::containers::Host;
use super::env::free_port;
use super::git_server::{GitRepos, WorkClone};

/// A running agent; dropped: SIGTERM (containers stay; the Host removes them), then SIGKILL.
pub struct Agent {
    pub child: Option<Child>,
    pub http: String,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(host: &Host, config: &str) -> Agent {
        let dir = host.root.path();
        let http = format!("127.0.0.1:{}", free_port());
        let config = format!("{config}\nlisten: {{http: \"{http}\"}}\n");
        let path = dir.join("agent.yaml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!(
            "agent-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let child = host
            .cmd(&["agent", "--config", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the agent");
        let agent = Agent {
            child: Some(child),
            http,
            log,
        };
        eventually(&agent, "the agent serves /healthz", 30, || {
            get(&format!("http://{}/healthz", agent.http)).map(|_| ())
        });
        agent
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        get(&format!("http://{}/metrics", self.http)).unwrap_or_default()
    }

    /// The value of one sample (`name{labels}` exactly as exposed), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child we own and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn get(url: &str) -> Option<String> {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?
        .get(url)
        .send()
        .ok()?;
    r.status().is_success().then(|| r.text().ok()).flatten()
}

pub fn eventually<T>(agent: &Agent, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s: {what}\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn status(host: &Host) -> serde_json::Value {
    let out = host.ok(&["status", "--format", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON {out:?}: {e}"))
}

pub fn project<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["projects"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// Name -> id of the containers `ps -a` lists.
pub fn ids(host: &Host) -> std::collections::BTreeMap<String, String> {
    let out = host.ok(&["ps", "-a", "--format", "json"]);
    let mut map = std::collections::BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let items = match v {
            serde_json::Value::Array(a) => a,
            other => vec![other],
        };
        for c in items {
            map.insert(
                c["Names"].as_str().unwrap_or_default().to_string(),
                c["ID"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    map
}

/// A bare repository `fleet.git` with one commit writing `content` to `file`; the working
/// clone pushes to it. Returns the repositories, the clone and the commit.
pub fn fleet_repo(file: &str, content: &str, message: &str) -> (GitRepos, WorkClone, String) {
    let repos = GitRepos::new();
    let bare = repos.create("fleet");
    let work = WorkClone::new(&bare);
    work.write(file, content);
    let commit = work.commit(message);
    work.push();
    (repos, work, commit)
}

/// Waits until project `name` is converged at `revision`; returns its status.
pub fn converged(
    agent: &Agent,
    host: &Host,
    name: &str,
    revision: &str,
    secs: u64,
) -> serde_json::Value {
    eventually(
        agent,
        &format!("{name} converged at {revision}"),
        secs,
        || {
            let s = status(host);
            let p = project(&s, name)?;
            (p["state"] == "converged"
                && p["revision"] == revision
                && p["services"]
                    .as_array()?
                    .iter()
                    .all(|s| s["running"] == s["desired"]))
            .then(|| p.clone())
        },
    )
}
