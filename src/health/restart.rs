//! Restart policies (Docker's `--restart`) and the crash-loop backoff.
//!
//! The decision follows Docker's restart manager (`restartmanager.ShouldRestart`): `always` and
//! `unless-stopped` restart after any exit, `on-failure[:N]` after a non-zero exit while fewer
//! than N restarts happened (N = 0 or absent: no limit), `no` never. A container stopped through
//! dockmaster (`stop`, `kill` with SIGKILL or its stop signal, `rm -f`) is never restarted,
//! whatever the policy: Docker cancels its restart manager in those cases too. `always` and
//! `unless-stopped` only differ after a reboot (Docker: a daemon restart), which the exit
//! record's `manually_stopped` lets a future agent decide.
//!
//! Restarts of unhealthy containers (the shim's `restart_unhealthy`, on by default) do not ask
//! the policy, but they are restarts like the others: they take the same backoff and count
//! in the restart count, so `on-failure:N` gives up after N restarts of any cause.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Categorized, Category};

/// First delay of a crash loop (Docker's `defaultTimeout`).
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// The delay doubles after each restart...
pub const BACKOFF_MULTIPLIER: u32 = 2;
/// ...up to this (Docker's `maxRestartTimeout`).
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay to [`BACKOFF_INITIAL`] (Docker: 10 s).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// When a container's init is started again after it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RestartPolicy {
    /// Never (the default).
    #[default]
    No,
    /// After every exit.
    Always,
    /// After a non-zero exit, at most `max_retries` times in all (0: no limit, as Docker's
    /// `MaximumRetryCount`).
    OnFailure { max_retries: u32 },
    /// Like `always`; differs only in what happens after a reboot.
    UnlessStopped,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartPolicyError {
    #[error(
        "invalid restart policy {0:?}: use no, always, on-failure[:max-retries] or unless-stopped"
    )]
    Unknown(String),
    #[error("invalid restart policy {policy:?}: maximum retry count {count:?} is not a non-negative number")]
    BadCount { policy: String, count: String },
    #[error(
        "invalid restart policy {0:?}: a maximum retry count can only be used with on-failure"
    )]
    CountNotAllowed(String),
}

impl Categorized for RestartPolicyError {
    fn category(&self) -> Category {
        Category::Invalid
    }
}

impl RestartPolicy {
    /// Docker's grammar: `no` (or empty), `always`, `on-failure`, `on-failure:N`,
    /// `unless-stopped`.
    pub fn parse(s: &str) -> Result<RestartPolicy, RestartPolicyError> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => {
                let max_retries = match count {
                    None => 0,
                    Some(c) => c.parse().map_err(|_| RestartPolicyError::BadCount {
                        policy: s.to_string(),
                        count: c.to_string(),
                    })?,
                };
                return Ok(RestartPolicy::OnFailure { max_retries });
            }
            _ => return Err(RestartPolicyError::Unknown(s.to_string())),
        };
        if count.is_some() {
            return Err(RestartPolicyError::CountNotAllowed(s.to_string()));
        }
        Ok(policy)
    }

    pub fn is_no(&self) -> bool {
        *self == RestartPolicy::No
    }

    /// Docker's `HostConfig.RestartPolicy.Name`.
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// Docker's `HostConfig.RestartPolicy.MaximumRetryCount`.
    pub fn max_retries(&self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max_retries } => *max_retries,
            _ => 0,
        }
    }

    /// Whether the init that just ended with `exit_code` is started again, after
    /// `restarts_so_far` restarts of this container. Never once it was stopped through
    /// dockmaster.
    pub fn should_restart(
        &self,
        exit_code: i32,
        restarts_so_far: u32,
        manually_stopped: bool,
    ) -> bool {
        if manually_stopped {
            return false;
        }
        match *self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && (max_retries == 0 || restarts_so_far < max_retries)
            }
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::OnFailure { max_retries } if *max_retries > 0 => {
                write!(f, "on-failure:{max_retries}")
            }
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = RestartPolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RestartPolicy::parse(s)
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = RestartPolicyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RestartPolicy::parse(&s)
    }
}

impl From<RestartPolicy> for String {
    fn from(p: RestartPolicy) -> String {
        p.to_string()
    }
}

/// The delay before each restart of a crash loop: [`BACKOFF_INITIAL`], doubled after each
/// restart up to [`BACKOFF_MAX`], back to the start once a run lasted
/// [`BACKOFF_RESET_AFTER`]. Docker's schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    /// The last delay handed out; zero before the first.
    current: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// The delay before the next start, after a run that lasted `ran`.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran >= BACKOFF_RESET_AFTER {
            self.current = Duration::ZERO;
        }
        self.current = if self.current.is_zero() {
            BACKOFF_INITIAL
        } else {
            (self.current * BACKOFF_MULTIPLIER).min(BACKOFF_MAX)
        };
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_like_docker() {
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(RestartPolicy::parse("").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("always").unwrap(),
            RestartPolicy::Always
        );
        assert_eq!(
            RestartPolicy::parse("unless-stopped").unwrap(),
            RestartPolicy::UnlessStopped
        );
        assert_eq!(
            RestartPolicy::parse("on-failure").unwrap(),
            RestartPolicy::OnFailure { max_retries: 0 }
        );
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap(),
            RestartPolicy::OnFailure { max_retries: 3 }
        );
        for bad in ["sometimes", "on-failure:-1", "on-failure:x", "Always"] {
            let e = RestartPolicy::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(matches!(
            RestartPolicy::parse("always:2"),
            Err(RestartPolicyError::CountNotAllowed(_))
        ));
    }

    #[test]
    fn policies_round_trip_as_strings() {
        for s in [
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:5",
        ] {
            let p = RestartPolicy::parse(s).unwrap();
            assert_eq!(p.to_string(), s);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<RestartPolicy>(&json).unwrap(), p);
        }
        assert!(serde_json::from_str::<RestartPolicy>("\"nope\"").is_err());
        assert_eq!(
            RestartPolicy::parse("on-failure:0").unwrap().to_string(),
            "on-failure"
        );
    }

    #[test]
    fn restart_decisions() {
        let on_failure = RestartPolicy::OnFailure { max_retries: 2 };
        assert!(on_failure.should_restart(1, 0, false));
        assert!(on_failure.should_restart(1, 1, false));
        assert!(!on_failure.should_restart(1, 2, false), "limit reached");
        assert!(!on_failure.should_restart(0, 0, false), "success is final");
        let unlimited = RestartPolicy::OnFailure { max_retries: 0 };
        assert!(unlimited.should_restart(137, 1000, false));
        for p in [RestartPolicy::Always, RestartPolicy::UnlessStopped] {
            assert!(p.should_restart(0, 50, false));
            assert!(p.should_restart(3, 50, false));
            assert!(!p.should_restart(3, 0, true), "manually stopped");
        }
        assert!(!RestartPolicy::No.should_restart(1, 0, false));
        assert!(!unlimited.should_restart(1, 0, true));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_and_resets_after_a_stable_run() {
        let mut b = Backoff::new();
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..12).map(|_| b.next(short).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]
        );
        // A run of 10 s or more starts the schedule over.
        assert_eq!(b.next(Duration::from_secs(10)), BACKOFF_INITIAL);
        assert_eq!(b.next(Duration::from_millis(9_999)), BACKOFF_INITIAL * 2);
        assert_eq!(b.next(Duration::from_secs(3600)), BACKOFF_INITIAL);
    }
}
