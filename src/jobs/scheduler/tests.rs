use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::jobs::catalog::Job;
use crate::jobs::spec::JobSpec;
use crate::manifest::model::{Project, RestartPolicy, Service};
use crate::reconcile::generations::{Generation, Status};
use crate::schedule::{Clock, ManualClock};

/// Records what the scheduler asks for; `adopt` answers from `alive`.
#[derive(Default)]
struct Recorder {
    launched: Vec<RunRecord>,
    cancelled: Vec<(JobKey, u64)>,
    adopted: Vec<u64>,
    alive: Vec<u64>,
}

impl Launcher for Recorder {
    fn launch(&mut self, _job: &Job, record: &RunRecord) {
        self.launched.push(record.clone());
    }
    fn cancel(&mut self, key: &JobKey, seq: u64) {
        self.cancelled.push((key.clone(), seq));
    }
    fn adopt(&mut self, _job: Option<&Job>, record: &RunRecord) -> bool {
        self.adopted.push(record.seq);
        self.alive.contains(&record.seq)
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn job(x: serde_json::Value, restart: Option<RestartPolicy>, generation: u64) -> Job {
    let mut service = Service {
        name: "backup".into(),
        restart,
        ..Default::default()
    };
    service.x_dockmaster = x.as_object().cloned();
    let spec = JobSpec::from_service(&service).unwrap().unwrap();
    let hash = format!("{x}{restart:?}");
    Job {
        project: "p".into(),
        service: "backup".into(),
        spec,
        generation: Arc::new(Generation {
            number: generation,
            created: SystemTime::UNIX_EPOCH,
            status: Status::Good,
            error: None,
            revision: None,
            working_dir: PathBuf::from("/nonexistent"),
            project: json!({}),
            services: BTreeMap::new(),
        }),
        loaded: Arc::new(Project::default()),
        hash,
    }
}

fn key() -> JobKey {
    ("p".to_string(), "backup".to_string())
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    clock: ManualClock,
    metrics: Arc<Metrics>,
    s: Scheduler<Recorder>,
}

fn fixture(start: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let metrics = Arc::new(Metrics::new(&root, "test"));
    let s = Scheduler::new(&root, Recorder::default(), Some(metrics.clone()));
    Fixture {
        _tmp: tmp,
        root,
        clock: ManualClock::new(ts(start)),
        metrics,
        s,
    }
}

impl Fixture {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }
    fn set(&mut self, t: &str) {
        self.clock.set(ts(t));
        let now = self.now();
        self.s.tick(now);
    }
    /// Ends run `seq` as the launcher would: record saved, then reported.
    fn end(&mut self, seq: u64, result: RunResult) {
        let dir = JobDir::new(&self.root, "p", "backup");
        let mut r = dir.load(seq).unwrap();
        r.result = result;
        r.finished = Some(to_system_time(self.now()));
        r.exit_code = match result {
            RunResult::Succeeded => Some(0),
            RunResult::Failed => Some(3),
            _ => None,
        };
        dir.save(&r).unwrap();
        let now = self.now();
        self.s.finished(Finished::of(&r), now);
    }
    fn launched(&self) -> Vec<(u64, Trigger, u32)> {
        self.s
            .launcher
            .launched
            .iter()
            .map(|r| (r.seq, r.trigger, r.attempt))
            .collect()
    }
    fn metric(&self, needle: &str) -> f64 {
        let text = self.metrics.encode();
        text.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {needle} in\n{text}"))
    }
}

#[test]
fn fires_at_each_fire_time_of_a_seconds_schedule_and_records_the_run() {
    let mut f = fixture("2026-11-24T10:00:03Z");
    let now = f.now();
    f.s.reload(
        vec![job(json!({"schedule": "*/10 * * * * *"}), None, 4)],
        now,
    );
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T10:00:10Z")));
    f.set("2026-11-24T10:00:09.999Z");
    assert!(f.launched().is_empty());
    f.set("2026-11-24T10:00:10.020Z");
    assert_eq!(f.launched(), vec![(1, Trigger::Schedule, 1)]);
    let r = &f.s.launcher.launched[0];
    assert_eq!(
        r.scheduled_for,
        Some(to_system_time(ts("2026-11-24T10:00:10Z")))
    );
    assert_eq!(r.generation, 4);
    assert_eq!(r.result, RunResult::Running);
    assert_eq!(
        JobDir::new(&f.root, "p", "backup").load(1).as_ref(),
        Some(r)
    );
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T10:00:20Z")));
    f.end(1, RunResult::Succeeded);
    assert_eq!(
        f.metric(
            "dockmaster_job_runs_total{project=\"p\",service=\"backup\",result=\"succeeded\"}"
        ),
        1.0
    );
    assert_eq!(
        f.metric("dockmaster_job_last_success_timestamp_seconds{project=\"p\",service=\"backup\"}"),
        ts("2026-11-24T10:00:10Z").as_second() as f64
    );
    assert_eq!(
        f.metric("dockmaster_job_duration_seconds_count{project=\"p\",service=\"backup\"}"),
        1.0
    );
    // A late tick (suspended host) runs once, not once per fire time passed over.
    f.set("2026-11-24T10:01:05Z");
    assert_eq!(f.launched().len(), 2);
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T10:01:10Z")));
}

#[test]
fn forbid_skips_a_fire_time_while_a_run_is_active() {
    let mut f = fixture("2026-11-24T10:00:00Z");
    let now = f.now();
    f.s.reload(vec![job(json!({"schedule": "* * * * * *"}), None, 1)], now);
    f.set("2026-11-24T10:00:01Z");
    f.set("2026-11-24T10:00:02Z");
    f.set("2026-11-24T10:00:03Z");
    assert_eq!(f.launched(), vec![(1, Trigger::Schedule, 1)]);
    assert_eq!(
        f.metric("dockmaster_job_runs_total{project=\"p\",service=\"backup\",result=\"skipped\"}"),
        2.0
    );
    assert!(matches!(
        f.s.run_now("p", "backup", ts("2026-11-24T10:00:03Z")),
        Err(RunNowError::Busy { seq: 1, .. })
    ));
    f.end(1, RunResult::Succeeded);
    f.set("2026-11-24T10:00:04Z");
    assert_eq!(f.launched().len(), 2);
}

#[test]
fn allow_overlaps_and_replace_stops_the_active_run() {
    let mut f = fixture("2026-11-24T10:00:00Z");
    let now = f.now();
    f.s.reload(
        vec![job(
            json!({"schedule": "* * * * * *", "concurrency": "allow"}),
            None,
            1,
        )],
        now,
    );
    f.set("2026-11-24T10:00:01Z");
    f.set("2026-11-24T10:00:02Z");
    assert_eq!(f.s.active(&key()), vec![1, 2]);
    assert!(f.s.launcher.cancelled.is_empty());

    let mut f = fixture("2026-11-24T10:00:00Z");
    let now = f.now();
    f.s.reload(
        vec![job(
            json!({"schedule": "* * * * * *", "concurrency": "replace"}),
            None,
            1,
        )],
        now,
    );
    f.set("2026-11-24T10:00:01Z");
    f.set("2026-11-24T10:00:02Z");
    assert_eq!(f.s.launcher.cancelled, vec![(key(), 1)]);
    assert_eq!(f.launched().len(), 2);
    f.end(1, RunResult::Replaced);
    assert_eq!(f.s.active(&key()), vec![2]);
    // A manual run replaces too.
    assert_eq!(
        f.s.run_now("p", "backup", ts("2026-11-24T10:00:02.5Z")),
        Ok(3)
    );
    assert_eq!(f.s.launcher.cancelled, vec![(key(), 1), (key(), 2)]);
    assert_eq!(f.launched()[2], (3, Trigger::Manual, 1));
}

#[test]
fn failures_are_retried_per_the_restart_policy_with_backoff() {
    let mut f = fixture("2026-11-24T10:00:00Z");
    let now = f.now();
    let max2 = Some(RestartPolicy::OnFailure {
        max_retries: Some(2),
    });
    f.s.reload(vec![job(json!({"schedule": "0 * * * *"}), max2, 1)], now);
    f.set("2026-11-24T11:00:00Z");
    f.end(1, RunResult::Failed);
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T11:00:00.1Z")));
    f.set("2026-11-24T11:00:00.1Z");
    assert_eq!(f.launched()[1], (2, Trigger::Retry, 2));
    assert_eq!(
        f.s.launcher.launched[1].scheduled_for,
        Some(to_system_time(ts("2026-11-24T11:00:00Z")))
    );
    f.end(2, RunResult::Failed);
    f.set("2026-11-24T11:00:00.3Z");
    assert_eq!(f.launched()[2], (3, Trigger::Retry, 3));
    f.end(3, RunResult::Failed);
    // Two retries were allowed: nothing more before the next hour.
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T12:00:00Z")));
    assert_eq!(
        f.metric("dockmaster_job_runs_total{project=\"p\",service=\"backup\",result=\"failed\"}"),
        3.0
    );

    // restart: no never retries; a timeout is not retried either.
    let mut f = fixture("2026-11-24T10:00:00Z");
    let now = f.now();
    f.s.reload(vec![job(json!({"schedule": "0 * * * *"}), None, 1)], now);
    f.set("2026-11-24T11:00:00Z");
    f.end(1, RunResult::Failed);
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T12:00:00Z")));
    let mut f = fixture("2026-11-24T10:00:00Z");
    let now = f.now();
    f.s.reload(
        vec![job(
            json!({"schedule": "0 * * * *"}),
            Some(RestartPolicy::Always),
            1,
        )],
        now,
    );
    f.set("2026-11-24T11:00:00Z");
    f.end(1, RunResult::Timeout);
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T12:00:00Z")));
    assert!(
        f.metric("dockmaster_job_last_failure_timestamp_seconds{project=\"p\",service=\"backup\"}")
            > 0.0
    );
}

#[test]
fn a_retry_never_runs_past_the_next_fire_time() {
    let mut f = fixture("2026-11-24T10:00:00Z");
    let now = f.now();
    f.s.reload(
        vec![job(
            json!({"schedule": "* * * * * *"}),
            Some(RestartPolicy::Always),
            1,
        )],
        now,
    );
    f.set("2026-11-24T10:00:01Z");
    // Failed attempts double their delay: 0.1 s, 0.2 s, ... until the next second wins.
    f.clock.set(ts("2026-11-24T10:00:01.95Z"));
    let now = f.now();
    f.s.run_now("p", "backup", now).unwrap_err();
    f.end(1, RunResult::Failed);
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T10:00:02Z")));
    f.set("2026-11-24T10:00:02Z");
    assert_eq!(f.launched()[1], (2, Trigger::Schedule, 1));
}

#[test]
fn a_fire_time_missed_while_down_runs_once_within_the_deadline() {
    let f = fixture("2026-11-24T10:00:00Z");
    let dir = JobDir::new(&f.root, "p", "backup");
    dir.save_state(&JobState {
        last_fire: Some(to_system_time(ts("2026-11-24T06:30:00Z"))),
    })
    .unwrap();
    let j = |deadline: &str| {
        job(
            json!({"schedule": "30 * * * *", "missed_run_deadline": deadline}),
            None,
            1,
        )
    };
    // Down from 06:30 to 10:00: 07:30, 08:30 and 09:30 were missed; one run, for 09:30.
    let mut s = Scheduler::new(&f.root, Recorder::default(), None);
    s.reload(vec![j("1h")], ts("2026-11-24T10:00:00Z"));
    let launched: Vec<_> = s
        .launcher
        .launched
        .iter()
        .map(|r| (r.trigger, r.scheduled_for))
        .collect();
    assert_eq!(
        launched,
        vec![(
            Trigger::Missed,
            Some(to_system_time(ts("2026-11-24T09:30:00Z")))
        )]
    );
    assert_eq!(
        dir.state().last_fire,
        Some(to_system_time(ts("2026-11-24T09:30:00Z")))
    );
    // Outside the deadline: nothing runs.
    dir.save_state(&JobState {
        last_fire: Some(to_system_time(ts("2026-11-24T06:30:00Z"))),
    })
    .unwrap();
    let mut s = Scheduler::new(&f.root, Recorder::default(), None);
    s.reload(vec![j("20m")], ts("2026-11-24T10:00:00Z"));
    assert!(s.launcher.launched.is_empty());
    // Only at start: a later reload does not look back.
    let mut s = Scheduler::new(&f.root, Recorder::default(), None);
    s.reload(vec![], ts("2026-11-24T10:00:00Z"));
    s.reload(vec![j("1h")], ts("2026-11-24T10:00:00Z"));
    assert!(s.launcher.launched.is_empty());
}

#[test]
fn a_new_job_does_not_count_fire_times_before_it_existed() {
    let f = fixture("2026-11-24T10:00:00Z");
    let mut s = Scheduler::new(&f.root, Recorder::default(), None);
    s.reload(
        vec![job(
            json!({"schedule": "30 * * * *", "missed_run_deadline": "2h"}),
            None,
            1,
        )],
        ts("2026-11-24T10:00:00Z"),
    );
    assert!(s.launcher.launched.is_empty());
    assert_eq!(
        JobDir::new(&f.root, "p", "backup").state().last_fire,
        Some(to_system_time(ts("2026-11-24T10:00:00Z")))
    );
}

#[test]
fn runs_left_running_are_adopted_or_recorded_as_lost() {
    let mut f = fixture("2026-11-24T10:00:00Z");
    let dir = JobDir::new(&f.root, "p", "backup");
    // A generation directory makes the project known.
    std::fs::create_dir_all(f.root.join("projects/p/generations")).unwrap();
    for seq in [1, 2] {
        dir.save(&RunRecord {
            seq,
            project: "p".into(),
            service: "backup".into(),
            trigger: Trigger::Schedule,
            scheduled_for: None,
            attempt: 1,
            generation: 1,
            container: None,
            container_id: None,
            started: to_system_time(ts("2026-11-24T09:59:00Z")),
            finished: None,
            result: RunResult::Running,
            exit_code: None,
            error: None,
        })
        .unwrap();
    }
    f.s.launcher.alive = vec![2];
    let now = f.now();
    f.s.reload(vec![job(json!({"schedule": "* * * * * *"}), None, 1)], now);
    assert_eq!(f.s.launcher.adopted, vec![1, 2]);
    let lost = dir.load(1).unwrap();
    assert_eq!(lost.result, RunResult::Lost);
    assert!(lost.error.unwrap().contains("gone"));
    assert_eq!(f.s.active(&key()), vec![2]);
    assert_eq!(
        f.metric("dockmaster_job_runs_total{project=\"p\",service=\"backup\",result=\"lost\"}"),
        1.0
    );
    // The adopted run still counts for forbid.
    f.set("2026-11-24T10:00:01Z");
    assert!(f.launched().is_empty());
}

#[test]
fn a_repeated_wall_clock_hour_fires_once_and_a_skipped_one_not_at_all() {
    // New York, 2026-11-01: 01:00-02:00 happens twice (EDT, then EST).
    let mut f = fixture("2026-11-01T04:00:00Z");
    let now = f.now();
    f.s.reload(
        vec![job(
            json!({"schedule": "30 1 * * *", "time_zone": "America/New_York"}),
            None,
            1,
        )],
        now,
    );
    let mut t = f.now();
    while t < ts("2026-11-01T08:00:00Z") {
        t = t.checked_add(Duration::from_secs(60)).unwrap();
        f.clock.set(t);
        f.s.tick(t);
    }
    let fired: Vec<_> =
        f.s.launcher
            .launched
            .iter()
            .map(|r| r.scheduled_for)
            .collect();
    assert_eq!(
        fired,
        vec![Some(to_system_time(ts("2026-11-01T05:30:00Z")))]
    );

    // 2026-03-08: 02:00-03:00 does not exist; `30 2 * * *` does not fire that day.
    let mut f = fixture("2026-03-08T05:00:00Z");
    let now = f.now();
    f.s.reload(
        vec![job(
            json!({"schedule": "30 2 * * *", "time_zone": "America/New_York"}),
            None,
            1,
        )],
        now,
    );
    assert_eq!(f.s.next_wake(), Some(ts("2026-03-09T06:30:00Z")));
}

#[test]
fn a_changed_definition_reschedules_and_a_removed_job_stops() {
    let mut f = fixture("2026-11-24T10:00:00Z");
    let now = f.now();
    f.s.reload(vec![job(json!({"schedule": "0 * * * *"}), None, 1)], now);
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T11:00:00Z")));
    f.s.reload(vec![job(json!({"schedule": "*/5 * * * *"}), None, 2)], now);
    assert_eq!(f.s.next_wake(), Some(ts("2026-11-24T10:05:00Z")));
    f.s.reload(vec![], now);
    assert_eq!(f.s.next_wake(), None);
    assert!(!f.metrics.encode().contains("service=\"backup\""));
    assert!(matches!(
        f.s.run_now("p", "backup", now),
        Err(RunNowError::NotFound { .. })
    ));
}

#[test]
fn history_keeps_the_newest_runs() {
    let mut f = fixture("2026-11-24T10:00:00Z");
    let now = f.now();
    f.s.reload(
        vec![job(
            json!({"schedule": "* * * * * *", "history": 2}),
            None,
            1,
        )],
        now,
    );
    for (i, t) in ["01", "02", "03", "04"].iter().enumerate() {
        f.set(&format!("2026-11-24T10:00:{t}Z"));
        f.end(i as u64 + 1, RunResult::Succeeded);
    }
    let seqs: Vec<u64> = JobDir::new(&f.root, "p", "backup")
        .list()
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, vec![3, 4]);
}

#[test]
fn retry_delays_double_up_to_a_minute() {
    assert_eq!(retry_delay(1), Duration::from_millis(100));
    assert_eq!(retry_delay(2), Duration::from_millis(200));
    assert_eq!(retry_delay(11), Duration::from_secs(60));
    assert_eq!(retry_delay(u32::MAX), Duration::from_secs(60));
}
