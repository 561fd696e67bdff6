//! Per-container metrics, collected at scrape time from the state directory: every container
//! with Compose labels (`com.docker.compose.project` and `.service`), observed through its
//! shim ([`observe`]), plus its cgroup's usage ([`CgroupReader`]).
//!
//! Containers are labelled by name, never by id: a recreated container keeps its series
//! (counters restart from zero, which `rate()` and `increase()` handle as a reset).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::health::HealthStatus;
use crate::reconcile::translate::{LABEL_PROJECT, LABEL_SERVICE};
use crate::runtime::container::{
    observe, ContainerError, ContainerRecord, ContainerStore, Observed,
};
use crate::runtime::protocol::Status;

use super::cgroup::{CgroupReader, CgroupUsage};
use super::Index;

/// One Compose container as seen at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSample {
    pub project: String,
    pub service: String,
    /// The container's name (unique on the host).
    pub name: String,
    /// `created`, `running`, `restarting`, `exited` or `dead`; `None` when the shim is
    /// alive but does not answer (the state is unknown).
    pub state: Option<&'static str>,
    /// Counted in `containers_running`: running or restarting (and an unresponsive shim,
    /// as the planner counts it; and a lost shim whose processes still run).
    pub running: bool,
    /// The healthcheck's status while the container lives; `None` without a healthcheck.
    pub health: Option<HealthStatus>,
    /// Restarts by the shim (restart policy or unhealthy); `None` when unknown.
    pub restarts: Option<u32>,
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// The cgroup's OOM kill count while the cgroup exists; once the cgroup is released
    /// (exited, or waiting for a restart), 1 when the last run was OOM-killed, else 0.
    pub oom_kills: Option<u64>,
}

/// Observes every Compose container of `root`. Containers without both Compose labels are
/// not the agent's and are skipped. Sorted by project, service and name.
pub fn scrape(root: &Path, cgroups: &CgroupReader) -> Result<Vec<ContainerSample>, ContainerError> {
    let store = ContainerStore::new(root);
    let records: Vec<ContainerRecord> = store
        .list()?
        .into_iter()
        .filter(|r| r.labels.contains_key(LABEL_PROJECT) && r.labels.contains_key(LABEL_SERVICE))
        .collect();
    // A few workers, so a shim that does not answer (up to SHIM_TIMEOUT each) delays the
    // scrape by its timeout once, not once per stuck shim in turn.
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(records.len()));
    let workers = records.len().min(SCRAPE_WORKERS);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(record) = records.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let sample = observe_one(&store, cgroups, record);
                    results
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(sample);
                }
            });
        }
    });
    let mut out = results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    out.sort_by(|a, b| (&a.project, &a.service, &a.name).cmp(&(&b.project, &b.service, &b.name)));
    Ok(out)
}

/// Threads observing containers during a scrape.
const SCRAPE_WORKERS: usize = 4;

fn observe_one(
    store: &ContainerStore,
    cgroups: &CgroupReader,
    record: &ContainerRecord,
) -> ContainerSample {
    let observed = observe(&store.paths(&record.id), record);
    let usage = if matches!(observed, Observed::Exited(_)) {
        // The shim released the cgroup before recording the exit.
        None
    } else {
        cgroups.usage(&record.id).unwrap_or_else(|err| {
            tracing::debug!(container = %record.name, "cgroup usage not read: {err}");
            None
        })
    };
    // The filter in scrape() kept only records with both labels.
    let label = |key| {
        record
            .labels
            .get(key)
            .map(String::as_str)
            .unwrap_or_default()
    };
    sample(
        label(LABEL_PROJECT),
        label(LABEL_SERVICE),
        &record.name,
        &observed,
        usage,
    )
}

/// The sample of one observation (separate from the I/O so every case is unit-tested).
pub fn sample(
    project: &str,
    service: &str,
    name: &str,
    observed: &Observed,
    usage: Option<CgroupUsage>,
) -> ContainerSample {
    let state = match observed {
        Observed::Unresponsive { .. } => None,
        o => Some(o.status_word()),
    };
    let (health, restarts, oom_killed_last) = match observed {
        Observed::Live(s) => {
            // Health means something only while the container lives.
            let health = match s.status {
                Status::Created | Status::Running | Status::Restarting => {
                    s.health.as_ref().map(|h| h.status)
                }
                Status::Stopped => None,
            };
            (health, Some(s.restart_count), s.oom_killed)
        }
        Observed::Exited(e) => (None, Some(e.restart_count), e.oom_killed),
        Observed::ShimLost { .. } | Observed::Unresponsive { .. } => (None, None, false),
    };
    let oom_kills = match usage.and_then(|u| u.oom_kills) {
        Some(n) => Some(n),
        None if matches!(observed, Observed::Live(_) | Observed::Exited(_)) => {
            Some(u64::from(oom_killed_last))
        }
        None => None,
    };
    ContainerSample {
        project: project.to_string(),
        service: service.to_string(),
        name: name.to_string(),
        state,
        running: observed.is_running(),
        health,
        restarts,
        cpu_seconds: usage.and_then(|u| u.cpu_seconds),
        memory_bytes: usage.and_then(|u| u.memory_bytes),
        oom_kills,
    }
}

/// The scrape-time collector registered in the agent's registry.
pub(super) struct ContainerCollector {
    pub root: PathBuf,
    pub cgroups: CgroupReader,
    /// For the (project, service) pairs with a desired count: they get a running count even
    /// with no container at all (0).
    pub index: Arc<Mutex<Index>>,
}

impl fmt::Debug for ContainerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerCollector")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Collector for ContainerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let samples = scrape(&self.root, &self.cgroups).unwrap_or_else(|err| {
            tracing::warn!("container metrics not collected: {err}");
            Vec::new()
        });
        let desired = super::lock(&self.index).desired_services();
        encode(&mut encoder, &samples, &desired)
    }
}

/// Writes the container families. Every family is described even without a sample, so the
/// set of families never depends on what runs.
pub(super) fn encode(
    encoder: &mut DescriptorEncoder,
    samples: &[ContainerSample],
    desired: &BTreeSet<(String, String)>,
) -> Result<(), fmt::Error> {
    let mut running: BTreeMap<(&str, &str), u64> = desired
        .iter()
        .map(|(p, s)| ((p.as_str(), s.as_str()), 0))
        .collect();
    for s in samples {
        *running.entry((&s.project, &s.service)).or_default() += u64::from(s.running);
    }
    let mut m = encoder.encode_descriptor(
        "dockmaster_containers_running",
        "Containers of a Compose service that are running (or restarting), at scrape time.",
        None,
        MetricType::Gauge,
    )?;
    for ((project, service), n) in &running {
        ConstGauge::new(*n)
            .encode(m.encode_family(&[("project", *project), ("service", *service)])?)?;
    }

    let mut m = encoder.encode_descriptor(
        "dockmaster_container_state",
        "1 for the container's current state (created, running, restarting, exited, dead).",
        None,
        MetricType::Gauge,
    )?;
    for s in samples {
        if let Some(state) = s.state {
            ConstGauge::new(1u64).encode(m.encode_family(&s.labels_with("state", state))?)?;
        }
    }

    let mut m = encoder.encode_descriptor(
        "dockmaster_container_health",
        "1 for the container's current healthcheck status (starting, healthy, unhealthy).",
        None,
        MetricType::Gauge,
    )?;
    for s in samples {
        if let Some(health) = s.health {
            ConstGauge::new(1u64)
                .encode(m.encode_family(&s.labels_with("health", health.as_str()))?)?;
        }
    }

    let mut m = encoder.encode_descriptor(
        "dockmaster_container_restarts",
        "Times the container's shim started it again (restart policy or unhealthy).",
        None,
        MetricType::Counter,
    )?;
    for s in samples {
        if let Some(n) = s.restarts {
            ConstCounter::new(u64::from(n)).encode(m.encode_family(&s.labels())?)?;
        }
    }

    let mut m = encoder.encode_descriptor(
        "dockmaster_container_oom_kills",
        "Processes of the container killed by the kernel's OOM killer (cgroup counter).",
        None,
        MetricType::Counter,
    )?;
    for s in samples {
        if let Some(n) = s.oom_kills {
            ConstCounter::new(n).encode(m.encode_family(&s.labels())?)?;
        }
    }

    let mut m = encoder.encode_descriptor(
        "dockmaster_container_cpu_seconds",
        "CPU time used by the container's cgroup, user and system.",
        None,
        MetricType::Counter,
    )?;
    for s in samples {
        if let Some(secs) = s.cpu_seconds {
            ConstCounter::new(secs).encode(m.encode_family(&s.labels())?)?;
        }
    }

    let mut m = encoder.encode_descriptor(
        "dockmaster_container_memory_bytes",
        "Memory charged to the container's cgroup.",
        None,
        MetricType::Gauge,
    )?;
    for s in samples {
        if let Some(bytes) = s.memory_bytes {
            ConstGauge::new(bytes).encode(m.encode_family(&s.labels())?)?;
        }
    }
    Ok(())
}

impl ContainerSample {
    fn labels(&self) -> [(&'static str, &str); 3] {
        [
            ("project", &self.project),
            ("service", &self.service),
            ("container", &self.name),
        ]
    }

    fn labels_with<'a>(
        &'a self,
        key: &'static str,
        value: &'a str,
    ) -> [(&'static str, &'a str); 4] {
        let [p, s, c] = self.labels();
        [p, s, c, (key, value)]
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::health::HealthState;
    use crate::runtime::protocol::{ContainerState, ExitRecord};

    fn live(status: Status) -> ContainerState {
        ContainerState {
            status,
            pid: Some(42),
            exit_code: None,
            signal: None,
            oom_killed: false,
            started_at: Some(SystemTime::now()),
            finished_at: None,
            restart_count: 0,
            health: None,
        }
    }

    fn exited(oom_killed: bool, restart_count: u32) -> ExitRecord {
        ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed,
            started_at: None,
            finished_at: SystemTime::now(),
            restart_count,
            manually_stopped: false,
            error: None,
        }
    }

    const USAGE: CgroupUsage = CgroupUsage {
        cpu_seconds: Some(1.25),
        memory_bytes: Some(4096),
        oom_kills: Some(2),
    };

    #[test]
    fn running_with_health_and_cgroup() {
        let mut state = live(Status::Running);
        state.restart_count = 3;
        state.health = Some(HealthState::starting());
        let s = sample("p", "web", "p-web-1", &Observed::Live(state), Some(USAGE));
        assert_eq!(
            s,
            ContainerSample {
                project: "p".into(),
                service: "web".into(),
                name: "p-web-1".into(),
                state: Some("running"),
                running: true,
                health: Some(HealthStatus::Starting),
                restarts: Some(3),
                cpu_seconds: Some(1.25),
                memory_bytes: Some(4096),
                oom_kills: Some(2),
            }
        );
    }

    #[test]
    fn restarting_after_an_oom_kill_keeps_the_verdict_without_a_cgroup() {
        let mut state = live(Status::Restarting);
        state.oom_killed = true;
        state.restart_count = 1;
        let s = sample("p", "web", "c", &Observed::Live(state), None);
        assert_eq!(s.state, Some("restarting"));
        assert!(
            s.running,
            "a restarting container counts as running, as in Docker"
        );
        assert_eq!((s.restarts, s.oom_kills), (Some(1), Some(1)));
        assert_eq!((s.cpu_seconds, s.memory_bytes), (None, None));
    }

    #[test]
    fn stopped_containers_have_no_health() {
        let mut state = live(Status::Stopped);
        state.health = Some(HealthState::starting());
        let s = sample("p", "web", "c", &Observed::Live(state), None);
        assert_eq!(
            (s.state, s.running, s.health),
            (Some("exited"), false, None)
        );
        assert_eq!(s.oom_kills, Some(0));

        let s = sample("p", "web", "c", &Observed::Exited(exited(true, 4)), None);
        assert_eq!(
            (s.state, s.running, s.health),
            (Some("exited"), false, None)
        );
        assert_eq!((s.restarts, s.oom_kills), (Some(4), Some(1)));
        let s = sample("p", "web", "c", &Observed::Exited(exited(false, 0)), None);
        assert_eq!((s.restarts, s.oom_kills), (Some(0), Some(0)));
    }

    #[test]
    fn lost_and_unresponsive_shims() {
        let lost = Observed::ShimLost {
            shim_pid: None,
            container_pids: vec![77],
        };
        let s = sample("p", "db", "c", &lost, Some(USAGE));
        assert_eq!((s.state, s.running, s.restarts), (Some("dead"), true, None));
        assert_eq!(
            s.memory_bytes,
            Some(4096),
            "the orphaned processes still use memory"
        );
        let gone = Observed::ShimLost {
            shim_pid: Some(5),
            container_pids: vec![],
        };
        let s = sample("p", "db", "c", &gone, None);
        assert_eq!(
            (s.state, s.running, s.oom_kills),
            (Some("dead"), false, None)
        );

        let busy = Observed::Unresponsive {
            shim_pid: 9,
            error: "timed out".into(),
        };
        let s = sample("p", "db", "c", &busy, None);
        assert_eq!(s.state, None, "an unknown state is not reported");
        assert!(s.running, "counted as running, as the planner does");
    }

    #[derive(Debug)]
    struct Fixed(Vec<ContainerSample>, BTreeSet<(String, String)>);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
            encode(&mut encoder, &self.0, &self.1)
        }
    }

    fn render(samples: Vec<ContainerSample>, desired: &[(&str, &str)]) -> String {
        let mut registry = Registry::default();
        let desired = desired
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect();
        registry.register_collector(Box::new(Fixed(samples, desired)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &registry).unwrap();
        super::super::exposition::to_prometheus_text(&text)
    }

    #[test]
    fn running_counts_cover_desired_services_without_containers() {
        let mut a = sample(
            "p",
            "web",
            "p-web-1",
            &Observed::Live(live(Status::Running)),
            Some(USAGE),
        );
        let b = sample(
            "p",
            "web",
            "p-web-2",
            &Observed::Exited(exited(false, 0)),
            None,
        );
        a.health = Some(HealthStatus::Unhealthy);
        let text = render(vec![a, b], &[("p", "web"), ("p", "worker")]);
        for line in [
            "dockmaster_containers_running{project=\"p\",service=\"web\"} 1",
            "dockmaster_containers_running{project=\"p\",service=\"worker\"} 0",
            "dockmaster_container_state{project=\"p\",service=\"web\",container=\"p-web-1\",state=\"running\"} 1",
            "dockmaster_container_state{project=\"p\",service=\"web\",container=\"p-web-2\",state=\"exited\"} 1",
            "dockmaster_container_health{project=\"p\",service=\"web\",container=\"p-web-1\",health=\"unhealthy\"} 1",
            "dockmaster_container_restarts_total{project=\"p\",service=\"web\",container=\"p-web-2\"} 0",
            "dockmaster_container_oom_kills_total{project=\"p\",service=\"web\",container=\"p-web-1\"} 2",
            "dockmaster_container_cpu_seconds_total{project=\"p\",service=\"web\",container=\"p-web-1\"} 1.25",
            "dockmaster_container_memory_bytes{project=\"p\",service=\"web\",container=\"p-web-1\"} 4096",
            "# TYPE dockmaster_container_cpu_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("p-web-2\",health"), "{text}");
        assert!(!text.contains("memory_bytes{project=\"p\",service=\"web\",container=\"p-web-2\""));

        // Nothing runs and nothing is desired: every family is still described.
        let empty = render(Vec::new(), &[]);
        assert_eq!(empty.lines().filter(|l| l.starts_with("# TYPE")).count(), 7);
        assert!(empty.lines().all(|l| l.starts_with('#')), "{empty}");
    }
}
