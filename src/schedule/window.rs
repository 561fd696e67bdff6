//! Update windows: a cron schedule plus a duration. The window is open at `now` when some
//! fire time `t` has `t <= now < t + duration`; outside it the agent holds disruptive changes.
//! Pure: every question takes `now`.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::cron::{parse_go_duration, CronError, Schedule};
use crate::error::{Categorized, Category};

/// Longest window accepted: longer ones would need the schedule searched further back than
/// its five-year horizon allows, and mean "always open" anyway.
pub const WINDOW_MAX: Duration = Duration::from_secs(366 * 24 * 3600);
/// Fire times followed when working out when overlapping openings end.
const CLOSE_SCAN_LIMIT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("update window schedule: {0}")]
    Schedule(#[from] CronError),
    #[error(
        "update window schedule {spec:?} is an interval (@every); a window needs a calendar \
         schedule such as \"0 2 * * *\""
    )]
    Interval { spec: String },
    #[error("update window duration {value:?}: {reason}")]
    Duration { value: String, reason: String },
}

impl Categorized for WindowError {
    fn category(&self) -> Category {
        Category::Invalid
    }
}

/// A recurring update window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    schedule: Schedule,
    duration: Duration,
}

impl Window {
    /// A window opening at each fire time of `schedule` for `duration` (1s to 366 days).
    pub fn new(schedule: Schedule, duration: Duration) -> Result<Window, WindowError> {
        if schedule.is_interval() {
            return Err(WindowError::Interval {
                spec: schedule.as_str().to_string(),
            });
        }
        let value = || format!("{}s", duration.as_secs_f64());
        if duration < Duration::from_secs(1) {
            return Err(WindowError::Duration {
                value: value(),
                reason: "must be at least one second".to_string(),
            });
        }
        if duration > WINDOW_MAX {
            return Err(WindowError::Duration {
                value: value(),
                reason: "must be at most 366 days".to_string(),
            });
        }
        Ok(Window { schedule, duration })
    }

    /// A window from manifest text: a cron schedule and a Go-style duration (`2h`, `90m`,
    /// `1h30m`).
    pub fn parse(
        schedule: &str,
        duration: &str,
        default_tz: &TimeZone,
    ) -> Result<Window, WindowError> {
        let schedule = Schedule::parse(schedule, default_tz)?;
        let bad = |reason: &str| WindowError::Duration {
            value: duration.to_string(),
            reason: reason.to_string(),
        };
        let nanos = parse_go_duration(duration.trim()).map_err(bad)?;
        if nanos <= 0 {
            return Err(bad("must be positive"));
        }
        let nanos = u64::try_from(nanos).map_err(|_| bad("too large"))?;
        Window::new(schedule, Duration::from_nanos(nanos))
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The earliest fire time whose opening covers `now`, if the window is open.
    pub fn opened_at(&self, now: Timestamp) -> Option<Timestamp> {
        // Fire times t with now - duration < t <= now.
        let since = now.checked_sub(self.duration).unwrap_or(Timestamp::MIN);
        self.schedule.next_after(since).filter(|t| *t <= now)
    }

    pub fn is_open(&self, now: Timestamp) -> bool {
        self.opened_at(now).is_some()
    }

    /// `now` when the window is open, else the next time it opens (None if the schedule has
    /// no fire time within five years).
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        if self.is_open(now) {
            Some(now)
        } else {
            self.schedule.next_after(now)
        }
    }

    /// When the window closes, if it is open at `now`; openings that overlap or touch count
    /// as one. For a window that never closes (openings always overlapping) this is the end of
    /// the first ten thousand openings, a lower bound.
    pub fn closes_at(&self, now: Timestamp) -> Option<Timestamp> {
        let first = self.opened_at(now)?;
        let span = SignedDuration::try_from(self.duration).ok()?;
        let mut end = first.checked_add(span).ok()?;
        for t in self.schedule.upcoming(first).take(CLOSE_SCAN_LIMIT) {
            if t > end {
                break;
            }
            end = end.max(t.checked_add(span).ok()?);
        }
        Some(end)
    }
}
