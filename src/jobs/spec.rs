//! What makes a service a job, from its `x-dockmaster` keys: the schedule and how runs are
//! handled. The loader checks every key with [`check_key`] (so a bad value is reported with
//! its file and line); [`JobSpec::from_service`] builds the validated spec afterwards.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::model::{RestartPolicy, Service};
use crate::schedule::{parse_go_duration, parse_time_zone, RepeatedHour, Schedule, TimeZone};

/// The keys of `x-dockmaster` that describe a job.
pub const JOB_KEYS: [&str; 6] = [
    "schedule",
    "time_zone",
    "concurrency",
    "timeout",
    "missed_run_deadline",
    "history",
];

/// Runs kept per job when `history` is not given.
pub const DEFAULT_HISTORY: usize = 10;
/// The most runs a job may keep (each keeps up to [`super::history::MAX_LOG_BYTES`] of log).
pub const MAX_HISTORY: usize = 100;
/// The longest `timeout` or `missed_run_deadline` accepted (a year).
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// What happens when a run is due while another run of the same job is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// The new run is skipped (counted as `skipped`). The default: a backup that is still
    /// writing is not started twice.
    #[default]
    Forbid,
    /// Runs overlap.
    Allow,
    /// The active run is stopped (`replaced`) and the new one starts.
    Replace,
}

impl Concurrency {
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
            Concurrency::Replace => "replace",
        }
    }
}

/// How a failed run is retried: from the service's `restart:` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// `restart: no` (the default): a failed run stays failed.
    Never,
    /// `restart: on-failure:N`: up to N more attempts.
    Upto(u32),
    /// `restart: on-failure`, `always` or `unless-stopped`: attempts go on until one
    /// succeeds or the next scheduled run is due.
    UntilNextRun,
}

impl Retry {
    pub fn from_restart(policy: RestartPolicy) -> Retry {
        match policy {
            RestartPolicy::No => Retry::Never,
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => Retry::Upto(n),
            RestartPolicy::OnFailure { max_retries: None }
            | RestartPolicy::Always
            | RestartPolicy::UnlessStopped => Retry::UntilNextRun,
        }
    }

    /// Whether attempt number `attempt` (1 is the first run) may be followed by another.
    pub fn allows_after(self, attempt: u32) -> bool {
        match self {
            Retry::Never => false,
            Retry::Upto(n) => attempt <= n,
            Retry::UntilNextRun => true,
        }
    }
}

/// A validated job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Repeated wall-clock hours fire once ([`RepeatedHour::Once`]).
    pub schedule: Schedule,
    pub concurrency: Concurrency,
    /// A run still going after this long is stopped and counts as `timeout`.
    pub timeout: Option<Duration>,
    /// After downtime, a fire time missed no longer ago than this is run once at start.
    pub missed_run_deadline: Option<Duration>,
    /// Finished runs kept (record and log).
    pub history: usize,
    pub retry: Retry,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {service}: x-dockmaster.{key}: {reason}")]
pub struct JobSpecError {
    pub service: String,
    pub key: String,
    pub reason: String,
}

impl crate::error::Categorized for JobSpecError {
    fn category(&self) -> crate::error::Category {
        crate::error::Category::Invalid
    }
}

/// Whether `key` is one of the job keys.
pub fn is_job_key(key: &str) -> bool {
    JOB_KEYS.contains(&key)
}

/// Whether a service's extension makes it a job.
pub fn is_job(service: &Service) -> bool {
    service
        .x_dockmaster
        .as_ref()
        .is_some_and(|x| x.contains_key("schedule"))
}

/// Checks one job key's value as written in a manifest. `Err` says what is wrong.
pub fn check_key(key: &str, value: &serde_json::Value) -> Result<(), String> {
    match key {
        "schedule" => schedule_text(value).map(drop),
        "time_zone" => time_zone(value).map(drop),
        "concurrency" => concurrency(value).map(drop),
        "timeout" | "missed_run_deadline" => duration(value).map(drop),
        "history" => history(value).map(drop),
        _ => Ok(()),
    }
}

fn schedule_text(value: &serde_json::Value) -> Result<Schedule, String> {
    let text = value
        .as_str()
        .ok_or("must be a cron expression in a string (\"*/15 * * * *\", \"@daily\")")?;
    // The zone only matters for evaluation; parsing checks the expression and its prefix.
    Schedule::parse(text, &TimeZone::UTC).map_err(|e| e.to_string())
}

fn time_zone(value: &serde_json::Value) -> Result<TimeZone, String> {
    let name = value
        .as_str()
        .ok_or("must be a time zone name (\"Europe/Berlin\", \"UTC\", \"Local\")")?;
    parse_time_zone(name).map_err(|e| e.to_string())
}

fn concurrency(value: &serde_json::Value) -> Result<Concurrency, String> {
    match value.as_str() {
        Some("forbid") => Ok(Concurrency::Forbid),
        Some("allow") => Ok(Concurrency::Allow),
        Some("replace") => Ok(Concurrency::Replace),
        _ => Err("must be forbid, allow or replace".to_string()),
    }
}

fn duration(value: &serde_json::Value) -> Result<Duration, String> {
    let d = match value {
        serde_json::Value::String(s) => {
            let nanos = parse_go_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
            if nanos <= 0 {
                return Err("must be positive".to_string());
            }
            Duration::from_nanos(u64::try_from(nanos).map_err(|_| "too large".to_string())?)
        }
        // Compose writes bare numbers as seconds in a few places; accept them the same way.
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(s) if s > 0 => Duration::from_secs(s),
            _ => return Err("must be a positive number of seconds or a duration".to_string()),
        },
        _ => return Err("must be a duration (\"30s\", \"10m\", \"1h30m\")".to_string()),
    };
    if d > MAX_DURATION {
        return Err("must be at most 366 days".to_string());
    }
    Ok(d)
}

fn history(value: &serde_json::Value) -> Result<usize, String> {
    match value.as_u64() {
        Some(n) if (1..=MAX_HISTORY as u64).contains(&n) => Ok(n as usize),
        _ => Err(format!("must be a number of runs from 1 to {MAX_HISTORY}")),
    }
}

impl JobSpec {
    /// The job of `service`, or `None` when it has no `x-dockmaster.schedule`.
    pub fn from_service(service: &Service) -> Result<Option<JobSpec>, JobSpecError> {
        let Some(x) = service.x_dockmaster.as_ref() else {
            return Ok(None);
        };
        let Some(schedule) = x.get("schedule") else {
            return Ok(None);
        };
        let err = |key: &str, reason: String| JobSpecError {
            service: service.name.clone(),
            key: key.to_string(),
            reason,
        };
        let tz = match x.get("time_zone") {
            Some(v) => time_zone(v).map_err(|e| err("time_zone", e))?,
            None => TimeZone::UTC,
        };
        let text = schedule.as_str().unwrap_or_default();
        schedule_text(schedule).map_err(|e| err("schedule", e))?;
        let schedule = Schedule::parse(text, &tz)
            .map_err(|e| err("schedule", e.to_string()))?
            .with_repeated_hour(RepeatedHour::Once);
        let opt_duration = |key: &str| -> Result<Option<Duration>, JobSpecError> {
            x.get(key)
                .map(|v| duration(v).map_err(|e| err(key, e)))
                .transpose()
        };
        Ok(Some(JobSpec {
            schedule,
            concurrency: x
                .get("concurrency")
                .map(|v| concurrency(v).map_err(|e| err("concurrency", e)))
                .transpose()?
                .unwrap_or_default(),
            timeout: opt_duration("timeout")?,
            missed_run_deadline: opt_duration("missed_run_deadline")?,
            history: x
                .get("history")
                .map(|v| history(v).map_err(|e| err("history", e)))
                .transpose()?
                .unwrap_or(DEFAULT_HISTORY),
            retry: Retry::from_restart(service.effective_restart()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(x: serde_json::Value) -> Service {
        let mut s = Service {
            name: "backup".into(),
            ..Default::default()
        };
        s.x_dockmaster = x.as_object().cloned();
        s
    }

    #[test]
    fn a_service_without_schedule_is_not_a_job() {
        assert_eq!(
            JobSpec::from_service(&service(json!({"image_update": "pin"}))),
            Ok(None)
        );
        assert!(!is_job(&service(json!({}))));
    }

    #[test]
    fn defaults_and_every_key() {
        let spec = JobSpec::from_service(&service(json!({"schedule": "*/15 * * * *"})))
            .unwrap()
            .unwrap();
        assert_eq!(spec.concurrency, Concurrency::Forbid);
        assert_eq!(spec.timeout, None);
        assert_eq!(spec.missed_run_deadline, None);
        assert_eq!(spec.history, DEFAULT_HISTORY);
        assert_eq!(spec.retry, Retry::Never);
        assert_eq!(spec.schedule.repeated_hour(), RepeatedHour::Once);

        let mut s = service(json!({
            "schedule": "30 2 * * *", "time_zone": "Europe/Berlin", "concurrency": "replace",
            "timeout": "1h30m", "missed_run_deadline": 600, "history": 3
        }));
        s.restart = Some(RestartPolicy::OnFailure {
            max_retries: Some(2),
        });
        let spec = JobSpec::from_service(&s).unwrap().unwrap();
        assert_eq!(spec.concurrency, Concurrency::Replace);
        assert_eq!(spec.timeout, Some(Duration::from_secs(5400)));
        assert_eq!(spec.missed_run_deadline, Some(Duration::from_secs(600)));
        assert_eq!(spec.history, 3);
        assert_eq!(spec.retry, Retry::Upto(2));
        assert_eq!(
            spec.schedule.time_zone(),
            &parse_time_zone("Europe/Berlin").unwrap()
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (x, key) in [
            (json!({"schedule": "61 * * * *"}), "schedule"),
            (json!({"schedule": 5}), "schedule"),
            (
                json!({"schedule": "@daily", "time_zone": "Mars/Base"}),
                "time_zone",
            ),
            (
                json!({"schedule": "@daily", "concurrency": "queue"}),
                "concurrency",
            ),
            (json!({"schedule": "@daily", "timeout": "-5s"}), "timeout"),
            (json!({"schedule": "@daily", "timeout": "soon"}), "timeout"),
            (json!({"schedule": "@daily", "history": 0}), "history"),
            (json!({"schedule": "@daily", "history": 1000}), "history"),
        ] {
            let e = JobSpec::from_service(&service(x.clone())).unwrap_err();
            assert_eq!(e.key, key, "{x}");
            assert!(e.to_string().contains("service backup"), "{e}");
            let value = &x[key];
            assert!(check_key(key, value).is_err(), "{x}");
        }
        assert!(check_key("image_update", &json!("anything")).is_ok());
    }

    #[test]
    fn retries_follow_the_restart_policy() {
        assert_eq!(Retry::from_restart(RestartPolicy::No), Retry::Never);
        assert_eq!(
            Retry::from_restart(RestartPolicy::Always),
            Retry::UntilNextRun
        );
        assert!(!Retry::Never.allows_after(1));
        assert!(Retry::Upto(2).allows_after(2));
        assert!(!Retry::Upto(2).allows_after(3));
        assert!(Retry::UntilNextRun.allows_after(100));
    }
}
