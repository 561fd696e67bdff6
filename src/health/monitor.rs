//! The probe state machine, Docker's (`daemon/health.go`): a container with a healthcheck is
//! `starting` until a probe succeeds (`healthy`) or `retries` consecutive probes fail
//! (`unhealthy`); failures while still `starting` inside the start period do not count, and
//! the start interval replaces the interval then. Pure: the caller passes the clock.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::config::Probe;
use super::output::go_duration;
use crate::runtime::protocol::rfc3339;

/// Results kept (Docker's `maxLogEntries`).
pub const MAX_LOG_ENTRIES: usize = 5;
/// Largest health.json accepted when loading: 5 results of at most 4 KiB output each, with
/// room for JSON escaping.
const MAX_STATE_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One probe's outcome: Docker's `HealthcheckResult`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProbeResult {
    #[serde(with = "rfc3339")]
    pub start: SystemTime,
    #[serde(with = "rfc3339")]
    pub end: SystemTime,
    /// 0 healthy; anything else (-1: the probe could not run or timed out) a failure.
    pub exit_code: i32,
    pub output: String,
}

impl ProbeResult {
    /// The probe was killed at its timeout (Docker's message).
    pub fn timed_out(start: SystemTime, end: SystemTime, timeout: Duration) -> ProbeResult {
        ProbeResult {
            start,
            end,
            exit_code: -1,
            output: format!("Health check exceeded timeout ({})", go_duration(timeout)),
        }
    }

    /// The probe could not be started (`message` says why).
    pub fn not_started(start: SystemTime, end: SystemTime, message: String) -> ProbeResult {
        ProbeResult {
            start,
            end,
            exit_code: -1,
            output: message,
        }
    }
}

/// Docker's `State.Health`: also the content of `containers/<id>/health.json` and of the shim
/// protocol's state answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// The last [`MAX_LOG_ENTRIES`] results, oldest first.
    #[serde(default)]
    pub log: Vec<ProbeResult>,
}

impl HealthState {
    pub fn starting() -> HealthState {
        HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// Writes the state atomically (temp file + rename), synced when `durable`.
    pub fn write(&self, path: &Path, durable: bool) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        crate::fsutil::write_replace(path, &bytes, durable)
    }

    /// Loads a state written by [`HealthState::write`]; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> io::Result<Option<HealthState>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is larger than {MAX_STATE_BYTES} bytes", path.display()),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The health of one container across its runs.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    probe: Probe,
    state: HealthState,
    /// When the current run of the container started.
    started: Instant,
}

impl HealthMonitor {
    /// A container that just started: `starting`, nothing logged.
    pub fn new(probe: Probe, started: Instant) -> HealthMonitor {
        HealthMonitor {
            probe,
            state: HealthState::starting(),
            started,
        }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn state(&self) -> &HealthState {
        &self.state
    }

    pub fn status(&self) -> HealthStatus {
        self.state.status
    }

    /// How long after `now` (the container's start, or the end of the previous probe) the
    /// next probe runs: the start interval while `starting` inside the start period, else the
    /// interval. As in Docker, the first probe waits too.
    pub fn next_delay(&self, now: Instant) -> Duration {
        let in_start_period = now.saturating_duration_since(self.started) < self.probe.start_period;
        if in_start_period && self.state.status == HealthStatus::Starting {
            self.probe.start_interval
        } else {
            self.probe.interval
        }
    }

    /// Records a finished probe that began at `probe_started`; returns the new status when it
    /// changed.
    pub fn record(&mut self, result: ProbeResult, probe_started: Instant) -> Option<HealthStatus> {
        let before = self.state.status;
        let passed = result.exit_code == 0;
        if self.state.log.len() >= MAX_LOG_ENTRIES {
            let drop = self.state.log.len() + 1 - MAX_LOG_ENTRIES;
            self.state.log.drain(..drop);
        }
        self.state.log.push(result);
        if passed {
            self.state.failing_streak = 0;
            self.state.status = HealthStatus::Healthy;
        } else {
            // A container that never passed does not count failures inside its start period.
            let grace = self.state.status == HealthStatus::Starting
                && probe_started.saturating_duration_since(self.started) < self.probe.start_period;
            if !grace {
                self.state.failing_streak = self.state.failing_streak.saturating_add(1);
                if self.state.failing_streak >= self.probe.retries {
                    self.state.status = HealthStatus::Unhealthy;
                }
            }
        }
        (self.state.status != before).then_some(self.state.status)
    }

    /// The container was started again: `starting` with no failing streak; the log stays
    /// (Docker's `initHealthMonitor`). Returns whether the status changed.
    pub fn restarted(&mut self, started: Instant) -> bool {
        self.started = started;
        self.state.failing_streak = 0;
        let changed = self.state.status != HealthStatus::Starting;
        self.state.status = HealthStatus::Starting;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::config::HealthConfig;

    /// A fake clock: instants and wall-clock times that advance together.
    struct Clock {
        base: Instant,
        wall: SystemTime,
        now: Duration,
    }

    impl Clock {
        fn new() -> Clock {
            Clock {
                base: Instant::now(),
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                now: Duration::ZERO,
            }
        }
        fn instant(&self) -> Instant {
            self.base + self.now
        }
        fn advance(&mut self, d: Duration) {
            self.now += d;
        }
        /// Runs a probe that takes 10 ms and ends with `code`; returns the status change.
        fn probe(
            &mut self,
            m: &mut HealthMonitor,
            code: i32,
            output: &str,
        ) -> Option<HealthStatus> {
            let started = self.instant();
            let start = self.wall + self.now;
            self.advance(ms(10));
            let result = ProbeResult {
                start,
                end: self.wall + self.now,
                exit_code: code,
                output: output.into(),
            };
            m.record(result, started)
        }
        /// Waits for the next probe as the shim does.
        fn wait_next(&mut self, m: &HealthMonitor) -> Duration {
            let d = m.next_delay(self.instant());
            self.advance(d);
            d
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn monitor(clock: &Clock, config: HealthConfig) -> HealthMonitor {
        HealthMonitor::new(config.probe(&[]).unwrap(), clock.instant())
    }

    fn config(interval: u64, retries: u32, start_period: u64, start_interval: u64) -> HealthConfig {
        HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: secs(interval),
            retries,
            start_period: secs(start_period),
            start_interval: secs(start_interval),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn starting_then_healthy_then_unhealthy_after_retries() {
        let mut clock = Clock::new();
        let mut m = monitor(&clock, config(2, 3, 0, 0));
        assert_eq!(m.status(), HealthStatus::Starting);
        // No start period: the interval from the start.
        assert_eq!(clock.wait_next(&m), secs(2));
        assert_eq!(clock.probe(&mut m, 0, "ok"), Some(HealthStatus::Healthy));
        assert_eq!(m.state().failing_streak, 0);
        clock.wait_next(&m);
        assert_eq!(
            clock.probe(&mut m, 1, "down"),
            None,
            "one failure is not enough"
        );
        assert_eq!(m.state().failing_streak, 1);
        clock.wait_next(&m);
        assert_eq!(clock.probe(&mut m, 2, "down"), None);
        clock.wait_next(&m);
        assert_eq!(
            clock.probe(&mut m, 1, "down"),
            Some(HealthStatus::Unhealthy)
        );
        assert_eq!(m.state().failing_streak, 3);
        clock.wait_next(&m);
        assert_eq!(clock.probe(&mut m, 1, "down"), None, "stays unhealthy");
        assert_eq!(m.state().failing_streak, 4);
        // One success is enough to recover.
        assert_eq!(clock.probe(&mut m, 0, "up"), Some(HealthStatus::Healthy));
        assert_eq!(m.state().failing_streak, 0);
    }

    #[test]
    fn a_success_resets_the_streak() {
        let mut clock = Clock::new();
        let mut m = monitor(&clock, config(1, 2, 0, 0));
        clock.probe(&mut m, 0, "");
        clock.probe(&mut m, 1, "");
        clock.probe(&mut m, 0, "");
        assert_eq!(clock.probe(&mut m, 1, ""), None);
        assert_eq!(m.status(), HealthStatus::Healthy);
    }

    #[test]
    fn never_healthy_becomes_unhealthy_from_starting() {
        let mut clock = Clock::new();
        let mut m = monitor(&clock, config(1, 2, 0, 0));
        assert_eq!(clock.probe(&mut m, 1, ""), None);
        assert_eq!(m.status(), HealthStatus::Starting);
        assert_eq!(clock.probe(&mut m, 1, ""), Some(HealthStatus::Unhealthy));
    }

    #[test]
    fn start_period_failures_do_not_count_and_use_the_start_interval() {
        let mut clock = Clock::new();
        // interval 30 s, start period 10 s, start interval 2 s, 1 retry.
        let mut m = monitor(&clock, config(30, 1, 10, 2));
        assert_eq!(clock.wait_next(&m), secs(2));
        for _ in 0..3 {
            assert_eq!(clock.probe(&mut m, 1, "not yet"), None);
            assert_eq!(m.state().failing_streak, 0, "inside the start period");
            assert_eq!(clock.wait_next(&m), secs(2));
        }
        // Now ~8.03 s after start: still inside. Then past the period: the interval, and
        // failures count.
        assert_eq!(clock.probe(&mut m, 1, ""), None);
        assert_eq!(clock.wait_next(&m), secs(2));
        assert!(clock.now >= secs(10));
        assert_eq!(clock.probe(&mut m, 1, ""), Some(HealthStatus::Unhealthy));
        assert_eq!(clock.wait_next(&m), secs(30));
    }

    #[test]
    fn the_start_interval_ends_with_the_first_success() {
        let mut clock = Clock::new();
        let mut m = monitor(&clock, config(30, 3, 60, 1));
        assert_eq!(clock.wait_next(&m), secs(1));
        assert_eq!(clock.probe(&mut m, 0, ""), Some(HealthStatus::Healthy));
        // Healthy inside the start period: the regular interval, and failures count.
        assert_eq!(clock.wait_next(&m), secs(30));
        clock.probe(&mut m, 1, "");
        assert_eq!(m.state().failing_streak, 1);
    }

    #[test]
    fn the_probe_start_decides_the_grace_not_its_end() {
        let mut clock = Clock::new();
        let mut m = monitor(&clock, config(30, 1, 1, 1));
        clock.advance(ms(995));
        let started = clock.instant();
        clock.advance(secs(5));
        let r = ProbeResult::timed_out(clock.wall, clock.wall + secs(5), secs(5));
        assert_eq!(m.record(r, started), None, "began inside the start period");
        assert_eq!(m.state().failing_streak, 0);
    }

    #[test]
    fn the_log_keeps_the_last_five_results() {
        let mut clock = Clock::new();
        let mut m = monitor(&clock, config(1, 100, 0, 0));
        for i in 0..8 {
            clock.probe(&mut m, i % 2, &format!("run {i}"));
        }
        let outputs: Vec<&str> = m.state().log.iter().map(|r| r.output.as_str()).collect();
        assert_eq!(outputs, ["run 3", "run 4", "run 5", "run 6", "run 7"]);
        assert!(m.state().log.windows(2).all(|w| w[0].end <= w[1].start));
    }

    #[test]
    fn timeouts_and_failed_starts_are_failures_with_docker_messages() {
        let clock = Clock::new();
        let mut m = monitor(&clock, config(1, 2, 0, 0));
        let t = clock.wall;
        let timeout = ProbeResult::timed_out(t, t + ms(1500), ms(1500));
        assert_eq!(timeout.exit_code, -1);
        assert_eq!(timeout.output, "Health check exceeded timeout (1.5s)");
        assert_eq!(m.record(timeout, clock.instant()), None);
        let failed = ProbeResult::not_started(t, t, "exec: no such file".into());
        assert_eq!(
            m.record(failed, clock.instant()),
            Some(HealthStatus::Unhealthy)
        );
    }

    #[test]
    fn a_restart_starts_over_but_keeps_the_log() {
        let mut clock = Clock::new();
        let mut m = monitor(&clock, config(1, 1, 5, 1));
        clock.advance(secs(6));
        assert_eq!(clock.probe(&mut m, 1, "bad"), Some(HealthStatus::Unhealthy));
        clock.advance(secs(1));
        assert!(m.restarted(clock.instant()));
        assert_eq!(m.status(), HealthStatus::Starting);
        assert_eq!(m.state().failing_streak, 0);
        assert_eq!(m.state().log.len(), 1);
        // The new run has its own start period.
        assert_eq!(m.next_delay(clock.instant()), secs(1));
        assert_eq!(clock.probe(&mut m, 1, ""), None);
        assert!(!m.restarted(clock.instant()), "already starting");
    }

    #[test]
    fn state_round_trips_in_dockers_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("health.json");
        assert_eq!(HealthState::load(&path).unwrap(), None);
        let mut clock = Clock::new();
        let mut m = monitor(&clock, config(1, 3, 0, 0));
        clock.probe(&mut m, 0, "fine\n");
        m.state().write(&path, false).unwrap();
        let loaded = HealthState::load(&path).unwrap().unwrap();
        assert_eq!(&loaded, m.state());
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["Status"], "healthy");
        assert_eq!(v["FailingStreak"], 0);
        assert_eq!(v["Log"][0]["ExitCode"], 0);
        assert_eq!(v["Log"][0]["Output"], "fine\n");
        assert!(v["Log"][0]["Start"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T"));
        std::fs::write(&path, vec![b' '; 300 * 1024]).unwrap();
        assert!(HealthState::load(&path).is_err());
    }
}
