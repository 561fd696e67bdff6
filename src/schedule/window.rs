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
        self.schedule.first_between(since, now)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{parse_time_zone, Clock, ManualClock};

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn window(spec: &str, duration: &str, zone: &str) -> Window {
        Window::parse(spec, duration, &parse_time_zone(zone).expect("zone")).expect("window")
    }

    #[test]
    fn open_from_each_fire_time_for_the_duration() {
        let w = window("0 2 * * *", "2h", "UTC");
        assert!(!w.is_open(at("2024-05-01T01:59:59Z")));
        assert!(!w.is_open(at("2024-05-01T01:59:59.999Z")));
        assert!(w.is_open(at("2024-05-01T02:00:00Z")));
        assert!(w.is_open(at("2024-05-01T03:59:59.999Z")));
        assert!(!w.is_open(at("2024-05-01T04:00:00Z")));
        assert_eq!(
            w.opened_at(at("2024-05-01T03:00:00Z")),
            Some(at("2024-05-01T02:00:00Z"))
        );
        assert_eq!(
            w.closes_at(at("2024-05-01T03:00:00Z")),
            Some(at("2024-05-01T04:00:00Z"))
        );
        assert_eq!(w.closes_at(at("2024-05-01T05:00:00Z")), None);
    }

    #[test]
    fn next_open_is_now_or_the_next_fire_time() {
        let w = window("0 2 * * *", "2h", "UTC");
        let inside = at("2024-05-01T02:30:00Z");
        assert_eq!(w.next_open(inside), Some(inside));
        assert_eq!(
            w.next_open(at("2024-05-01T04:00:00Z")),
            Some(at("2024-05-02T02:00:00Z"))
        );
        assert_eq!(
            w.next_open(at("2024-05-01T01:00:00Z")),
            Some(at("2024-05-01T02:00:00Z"))
        );
        // A schedule that never fires never opens.
        let never = window("0 0 30 2 *", "1h", "UTC");
        assert_eq!(never.next_open(at("2024-05-01T00:00:00Z")), None);
        assert!(!never.is_open(at("2024-05-01T00:00:00Z")));
    }

    #[test]
    fn window_across_midnight_and_weekdays() {
        // Saturdays 23:00 for 3h: open into Sunday. 2024-05-04 is a Saturday.
        let w = window("0 23 * * SAT", "3h", "UTC");
        assert!(w.is_open(at("2024-05-05T01:30:00Z")));
        assert!(!w.is_open(at("2024-05-05T02:00:00Z")));
        assert!(!w.is_open(at("2024-05-06T01:30:00Z")));
        assert_eq!(
            w.next_open(at("2024-05-05T02:00:00Z")),
            Some(at("2024-05-11T23:00:00Z"))
        );
    }

    #[test]
    fn overlapping_openings_close_together() {
        // Every 2 hours for 3 hours: 00:00-03:00 and 02:00-05:00 join.
        let w = window("0 0,2 * * *", "3h", "UTC");
        assert_eq!(
            w.closes_at(at("2024-05-01T00:30:00Z")),
            Some(at("2024-05-01T05:00:00Z"))
        );
        assert_eq!(
            w.opened_at(at("2024-05-01T02:30:00Z")),
            Some(at("2024-05-01T00:00:00Z"))
        );
        // Touching openings (an hour every hour) never close: a far lower bound.
        let always = window("0 * * * *", "1h", "UTC");
        let now = at("2024-05-01T00:30:00Z");
        let end = always.closes_at(now).expect("open");
        assert!(end >= at("2025-01-01T00:00:00Z"), "{end}");
    }

    #[test]
    fn window_in_a_named_zone_across_dst() {
        // Berlin, 2024-03-31: 02:00 does not exist, so that night has no window.
        let w = window("0 2 * * *", "2h", "Europe/Berlin");
        assert!(!w.is_open(at("2024-03-31T03:30:00+02:00")));
        assert_eq!(
            w.next_open(at("2024-03-31T01:00:00+01:00")),
            Some(at("2024-04-01T02:00:00+02:00"))
        );
        // 2024-10-27: 02:00 happens twice; the window opens at 02:00 CEST and its two hours
        // end at 03:00 CET; robfig's second 02:00 (CET) opens it again until 04:00 CET.
        let now = at("2024-10-27T02:30:00+01:00");
        assert!(w.is_open(now));
        assert_eq!(w.closes_at(now), Some(at("2024-10-27T04:00:00+01:00")));
        let once = Window::new(
            w.schedule()
                .clone()
                .with_repeated_hour(crate::schedule::RepeatedHour::Once),
            w.duration(),
        )
        .expect("window");
        assert_eq!(
            once.closes_at(at("2024-10-27T02:30:00+02:00")),
            Some(at("2024-10-27T03:00:00+01:00"))
        );
        assert!(!once.is_open(at("2024-10-27T03:30:00+01:00")));
    }

    #[test]
    fn a_manual_clock_drives_a_window() {
        let w = window("30 1 * * *", "30m", "UTC");
        let clock = ManualClock::new(at("2024-05-01T01:00:00Z"));
        assert!(!w.is_open(clock.now()));
        clock.advance(Duration::from_secs(30 * 60));
        assert!(w.is_open(clock.now()));
        clock.advance(Duration::from_secs(30 * 60));
        assert!(!w.is_open(clock.now()));
        clock.set(at("2024-05-02T01:45:00Z"));
        assert!(w.is_open(clock.now()));
    }

    #[test]
    fn bad_windows() {
        let utc = TimeZone::UTC;
        assert!(matches!(
            Window::parse("@every 1h", "30m", &utc),
            Err(WindowError::Interval { .. })
        ));
        assert!(matches!(
            Window::parse("0 2 * * *", "0s", &utc),
            Err(WindowError::Duration { .. })
        ));
        assert!(matches!(
            Window::parse("0 2 * * *", "-1h", &utc),
            Err(WindowError::Duration { .. })
        ));
        assert!(matches!(
            Window::parse("0 2 * * *", "2 hours", &utc),
            Err(WindowError::Duration { .. })
        ));
        assert!(matches!(
            Window::parse("0 2 * * *", "9000h", &utc),
            Err(WindowError::Duration { .. })
        ));
        let e = Window::parse("0 25 * * *", "1h", &utc).expect_err("hour 25");
        assert!(e.to_string().contains("hour field \"25\""), "{e}");
        assert_eq!(e.category(), Category::Invalid);
        assert_eq!(
            window("0 2 * * *", "1h30m", "UTC").duration(),
            Duration::from_secs(5400)
        );
    }
}
