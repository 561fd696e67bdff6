//! Time-based behaviour: cron schedules (jobs, `dockmaster schedule next`) and update
//! windows. Everything here is pure: callers pass the current time, which they take from a
//! [`Clock`] so that tests can inject one.
//!
//! - Jobs: `Schedule::parse(spec, &zone)?.with_repeated_hour(RepeatedHour::Once)` (the issue
//!   asks for repeated wall-clock hours to fire once; robfig, and so the default and the
//!   conformance data, fires at both occurrences). Next run: `next_after(last fire time)`;
//!   `@every` schedules ([`Schedule::is_interval`]) count from the previous run. A run missed
//!   while down: `first_between(max(last run, now - deadline), now)`.
//! - Update windows: [`Window::parse`]`(spec, "2h", &zone)`, then `is_open(now)`,
//!   `next_open(now)` (when to wake up) and `closes_at(now)`.
//! - Zones: [`parse_time_zone`] takes IANA names, `UTC`, `Local` and fixed offsets; the tz
//!   database is the host's, with a copy built in for hosts without one.

pub mod cron;
pub mod window;

use std::sync::Mutex;

pub use cron::{
    format_rfc3339, parse_go_duration, parse_time_zone, CronError, Field, Problem, RepeatedHour,
    Schedule, Upcoming,
};
pub use jiff::tz::TimeZone;
pub use jiff::Timestamp;
pub use window::{Window, WindowError};

/// Where the current time comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to (for tests and simulations).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn set(&self, now: Timestamp) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// Moves the clock forward (saturating at the end of the representable range).
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = now.checked_add(by).unwrap_or(Timestamp::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
