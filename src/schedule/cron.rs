//! Cron expressions with the semantics of robfig/cron v3 (what Go tools and Kubernetes-style
//! schedulers accept), checked against ../shared/conformance/cron.
//!
//! Accepted: 5 fields (`minute hour day-of-month month day-of-week`) or 6 with a leading
//! seconds field; `*`, `?` (same as `*`), numbers, names (`JAN`..`DEC`, `SUN`..`SAT`, any
//! case), ranges `a-b`, lists `a,b`, steps `*/n`, `a-b/n` and `a/n` (= `a-max/n`);
//! `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`,
//! `@every <Go duration>`; an optional `CRON_TZ=<zone>` or `TZ=<zone>` prefix. When both
//! day-of-month and day-of-week are restricted (neither starts with `*`/`?`, or one is a
//! `*/n` step with n > 1), a day matches if either matches (vixie cron). Day-of-week is 0..6
//! (Sunday is 0; robfig rejects 7).
//!
//! The next fire time is computed with robfig's own field-by-field walk, with Go's rules for
//! building a wall-clock time in a zone, so daylight saving time behaves exactly like robfig:
//! a fire time inside a skipped hour does not happen that day, and a wall-clock time that
//! occurs twice (autumn) fires at both occurrences. [`RepeatedHour::Once`] changes the
//! latter for jobs that must run once per wall-clock time (see there).
//!
//! Deliberate differences from robfig, each where robfig misbehaves: a field made only of
//! commas (`0 2 * * ,`) is refused instead of meaning "no values"; a day that does not exist
//! at all (Pacific/Apia skipped 2011-12-30) is stepped over where robfig loops forever; the
//! search gives up after a bounded number of steps. A differential run against robfig's
//! algorithm on Go's own time package (two dozen zones with DST quirks, 10,000 random
//! expressions, most starting near a transition) found no other difference.

use std::fmt;

use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;

use crate::error::{Categorized, Category};

/// Longest schedule text accepted (manifests are untrusted input).
pub const SPEC_MAX: usize = 1024;

/// Set in a field's bits when the field was written as `*` or `?` (or `*/1`): robfig's
/// marker that decides between the AND and the OR rule for the two day fields.
const STAR: u64 = 1 << 63;
/// Bits 0..=23: every hour.
const ALL_HOURS: u64 = (1 << 24) - 1;
/// Upper bound on the steps of one search, far above what a valid schedule needs (five years
/// of a sparse schedule take a few thousand), so a bug can never hang a caller.
const STEP_LIMIT: u32 = 1_000_000;
/// Upper bound on fire times skipped in repeated wall-clock hours ([`RepeatedHour::Once`]):
/// a one-hour fold with a per-second schedule skips 3600.
const REPEAT_SKIP_LIMIT: u32 = 200_000;

/// One of the six fields of a cron expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl Field {
    fn bounds(self) -> (u32, u32) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 6),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            // Index = value - 1.
            Field::Month => &[
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ],
            // Index = value.
            Field::DayOfWeek => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
            _ => &[],
        }
    }

    fn name_value(self, token: &str) -> Option<u32> {
        let offset = if self == Field::Month { 1 } else { 0 };
        self.names()
            .iter()
            .position(|n| n.eq_ignore_ascii_case(token))
            .map(|i| i as u32 + offset)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        })
    }
}

/// What is wrong with one entry of a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0:?} is not a number{1}")]
    NotANumber(String, &'static str),
    #[error("{value} is below the minimum {min}")]
    BelowMinimum { value: String, min: u32 },
    #[error("{value} is above the maximum {max}")]
    AboveMaximum { value: String, max: u32 },
    #[error("range start {start} is after its end {end}")]
    StartAfterEnd { start: u32, end: u32 },
    #[error("step must be a positive number")]
    ZeroStep,
    #[error("too many hyphens")]
    TooManyHyphens,
    #[error("too many slashes")]
    TooManySlashes,
    #[error("empty list")]
    EmptyList,
}

/// Why a schedule was refused. Every variant names the part of the text that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("empty schedule")]
    Empty,
    #[error("schedule is {len} bytes long, at most {SPEC_MAX} are allowed")]
    TooLong { len: usize },
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading \
         seconds field, found {found}: {spec:?}"
    )]
    FieldCount { spec: String, found: usize },
    #[error("{field} field {token:?}: {problem}")]
    Field {
        field: Field,
        token: String,
        problem: Problem,
    },
    #[error("time zone prefix {prefix:?} is not followed by a schedule")]
    MissingSchedule { prefix: String },
    #[error("unknown time zone {name:?}: {reason}")]
    TimeZone { name: String, reason: String },
    #[error(
        "unknown descriptor {descriptor:?} (expected @yearly, @annually, @monthly, @weekly, \
         @daily, @midnight, @hourly or @every <duration>)"
    )]
    Descriptor { descriptor: String },
    #[error("invalid duration {value:?}: {reason}")]
    Duration { value: String, reason: String },
}

impl Categorized for CronError {
    fn category(&self) -> Category {
        Category::Invalid
    }
}

/// What a schedule does with a wall-clock time that happens twice (when clocks go back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepeatedHour {
    /// robfig/cron: fire at every occurrence (`30 1 * * *` in New York fires at 01:30 EDT and
    /// again at 01:30 EST on the first Sunday of November). The conformance data expects this.
    #[default]
    EachOccurrence,
    /// Fire once per wall-clock time: a fire time in the second pass through a repeated hour
    /// is dropped, unless the hour field is every hour (`0 * * * *` still fires each real
    /// hour, like vixie cron's wildcard jobs). What jobs want ("repeated hours fired once").
    Once,
}

/// The six fields as bit sets (bit n = value n; bit 63 = written as `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    second: u64,
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spec(Spec),
    /// `@every`: a constant delay in whole seconds (robfig rounds down, at least 1s).
    Every {
        seconds: i64,
    },
}

/// A parsed schedule with its time zone. Pure: it never reads the clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    source: String,
    tz: TimeZone,
    kind: Kind,
    repeated: RepeatedHour,
}

impl Schedule {
    /// Parses `spec`; times are evaluated in its `CRON_TZ=`/`TZ=` zone if it has one, else in
    /// `default_tz`.
    pub fn parse(spec: &str, default_tz: &TimeZone) -> Result<Schedule, CronError> {
        if spec.len() > SPEC_MAX {
            return Err(CronError::TooLong { len: spec.len() });
        }
        let mut rest = spec.trim();
        if rest.is_empty() {
            return Err(CronError::Empty);
        }
        let mut tz = default_tz.clone();
        if rest.starts_with("TZ=") || rest.starts_with("CRON_TZ=") {
            let (prefix, after) = match rest.find([' ', '\t']) {
                Some(i) => (&rest[..i], rest[i..].trim()),
                None => (rest, ""),
            };
            if after.is_empty() {
                return Err(CronError::MissingSchedule {
                    prefix: prefix.to_string(),
                });
            }
            let name = prefix.split_once('=').map(|(_, n)| n).unwrap_or_default();
            tz = parse_time_zone(name)?;
            rest = after;
        }
        let kind = if rest.starts_with('@') {
            parse_descriptor(rest)?
        } else {
            Kind::Spec(parse_fields(rest)?)
        };
        Ok(Schedule {
            source: spec.to_string(),
            tz,
            kind,
            repeated: RepeatedHour::default(),
        })
    }

    /// The same schedule with another rule for repeated wall-clock hours.
    pub fn with_repeated_hour(mut self, repeated: RepeatedHour) -> Schedule {
        self.repeated = repeated;
        self
    }

    /// The text this schedule was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The zone fire times are evaluated in (the spec's prefix, else the default zone).
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    pub fn repeated_hour(&self) -> RepeatedHour {
        self.repeated
    }

    /// True for `@every` schedules: they have no calendar, each fire time is a constant delay
    /// after the previous one (or after the start).
    pub fn is_interval(&self) -> bool {
        matches!(self.kind, Kind::Every { .. })
    }

    /// The first fire time strictly after `after`, or None when there is none within five
    /// years (e.g. `0 0 30 2 *`), like robfig.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let mut cursor = after;
        for _ in 0..REPEAT_SKIP_LIMIT {
            let t = self.next_robfig(cursor)?;
            if !self.drops_repeated(t) {
                return Some(t);
            }
            cursor = t;
        }
        None
    }

    /// The first fire time in `(after, until]`, if any: e.g. whether a run was missed while
    /// the agent was down (`after` = the last run, or `now - deadline` if later).
    pub fn first_between(&self, after: Timestamp, until: Timestamp) -> Option<Timestamp> {
        self.next_after(after).filter(|t| *t <= until)
    }

    /// True when `t` is a fire time.
    pub fn fires_at(&self, t: Timestamp) -> bool {
        t.subsec_nanosecond() == 0
            && Timestamp::from_second(t.as_second() - 1)
                .ok()
                .and_then(|before| self.next_after(before))
                == Some(t)
    }

    /// The fire times strictly after `after`, in order (`.take(n)` for the next n).
    pub fn upcoming(&self, after: Timestamp) -> Upcoming<'_> {
        Upcoming {
            schedule: self,
            cursor: Some(after),
        }
    }

    fn next_robfig(&self, after: Timestamp) -> Option<Timestamp> {
        let after_second = floor_second(after);
        match self.kind {
            Kind::Every { seconds } => {
                Timestamp::from_second(after_second.checked_add(seconds)?).ok()
            }
            Kind::Spec(spec) => {
                let zone = Zone(&self.tz);
                let t = spec_next(&spec, &zone, after_second.checked_add(1)?)?;
                Timestamp::from_second(t).ok()
            }
        }
    }

    fn drops_repeated(&self, t: Timestamp) -> bool {
        let Kind::Spec(spec) = self.kind else {
            return false;
        };
        self.repeated == RepeatedHour::Once
            && spec.hour & ALL_HOURS != ALL_HOURS
            && is_second_occurrence(&self.tz, t)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Iterator over a schedule's fire times, see [`Schedule::upcoming`].
#[derive(Debug, Clone)]
pub struct Upcoming<'a> {
    schedule: &'a Schedule,
    cursor: Option<Timestamp>,
}

impl Iterator for Upcoming<'_> {
    type Item = Timestamp;

    fn next(&mut self) -> Option<Timestamp> {
        let next = self.schedule.next_after(self.cursor?);
        self.cursor = next;
        next
    }
}

/// True when `t`'s wall-clock time in `tz` also happened earlier (the second pass through an
/// hour repeated when clocks went back).
fn is_second_occurrence(tz: &TimeZone, t: Timestamp) -> bool {
    let wall = tz.to_datetime(t);
    tz.to_ambiguous_timestamp(wall)
        .earlier()
        .is_ok_and(|first| first < t)
}

fn floor_second(t: Timestamp) -> i64 {
    // jiff keeps the sub-second part with the sign of the whole; Go's is never negative.
    if t.subsec_nanosecond() < 0 {
        t.as_second() - 1
    } else {
        t.as_second()
    }
}

/// A zone zero-offset name or a fixed offset (`UTC`, `+05:30`, `-0800`), `Local` (the host's
/// zone) or an IANA name (`Europe/Berlin`) from the system's tz database (or the copy built
/// into dockmaster when the host has none).
pub fn parse_time_zone(name: &str) -> Result<TimeZone, CronError> {
    let bad = |reason: &str| CronError::TimeZone {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    match name {
        // Go's time.LoadLocation("") is UTC too.
        "" | "UTC" | "Z" | "z" => return Ok(TimeZone::UTC),
        "Local" => return TimeZone::try_system().map_err(|e| bad(&e.to_string())),
        _ => {}
    }
    if let Some(offset) = parse_fixed_offset(name) {
        return offset
            .map(TimeZone::fixed)
            .ok_or_else(|| bad("offset out of range"));
    }
    let plausible = name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
        && !name.starts_with('/')
        && !name.split('/').any(|part| part.is_empty() || part == "..");
    if !plausible {
        return Err(bad("not an IANA time zone name"));
    }
    TimeZone::get(name).map_err(|e| bad(&e.to_string()))
}

/// `±HH:MM`, `±HHMM` or `±HH`: Some(None) when it has that shape but is out of range.
fn parse_fixed_offset(s: &str) -> Option<Option<Offset>> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|&c| c != ':').collect();
    let colon_ok = match rest.find(':') {
        None => true,
        Some(i) => i == 2 && rest.len() == 5,
    };
    if !colon_ok || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    if h > 25 || m > 59 {
        return Some(None);
    }
    Some(Offset::from_seconds(sign * (h * 3600 + m * 60)).ok())
}

/// `t` as RFC 3339 in `tz`, the way Go prints time.RFC3339: `Z` for a zero offset, else
/// `±HH:MM`; whole seconds.
pub fn format_rfc3339(t: Timestamp, tz: &TimeZone) -> String {
    let offset = tz.to_offset(t).seconds();
    let wall = tz.to_datetime(t);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        wall.year(),
        wall.month(),
        wall.day(),
        wall.hour(),
        wall.minute(),
        wall.second()
    );
    if offset == 0 {
        out.push('Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.unsigned_abs();
        out.push_str(&format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60));
    }
    out
}

fn parse_descriptor(spec: &str) -> Result<Kind, CronError> {
    let at = |second: u64, minute: u64, hour: u64, dom: u64, month: u64, dow: u64| {
        Kind::Spec(Spec {
            second,
            minute,
            hour,
            dom,
            month,
            dow,
        })
    };
    let all = |f: Field| {
        let (min, max) = f.bounds();
        bits(min, max, 1) | STAR
    };
    let first = |f: Field| 1u64 << f.bounds().0;
    use Field::*;
    Ok(match spec {
        "@yearly" | "@annually" => at(1, 1, 1, first(DayOfMonth), first(Month), all(DayOfWeek)),
        "@monthly" => at(1, 1, 1, first(DayOfMonth), all(Month), all(DayOfWeek)),
        "@weekly" => at(1, 1, 1, all(DayOfMonth), all(Month), first(DayOfWeek)),
        "@daily" | "@midnight" => at(1, 1, 1, all(DayOfMonth), all(Month), all(DayOfWeek)),
        "@hourly" => at(1, 1, all(Hour), all(DayOfMonth), all(Month), all(DayOfWeek)),
        _ => {
            let Some(value) = spec.strip_prefix("@every ") else {
                return Err(CronError::Descriptor {
                    descriptor: spec.to_string(),
                });
            };
            let value = value.trim();
            let nanos = parse_go_duration(value).map_err(|reason| CronError::Duration {
                value: value.to_string(),
                reason: reason.to_string(),
            })?;
            // robfig's Every: below one second means one second; sub-seconds are dropped.
            let seconds = (nanos / 1_000_000_000).max(1);
            Kind::Every {
                seconds: seconds as i64,
            }
        }
    })
}

fn parse_fields(spec: &str) -> Result<Spec, CronError> {
    let fields: Vec<&str> = spec.split_whitespace().collect();
    let (second, rest) = match fields.len() {
        5 => (None, &fields[..]),
        6 => (Some(fields[0]), &fields[1..]),
        found => {
            return Err(CronError::FieldCount {
                spec: spec.to_string(),
                found,
            })
        }
    };
    Ok(Spec {
        second: match second {
            Some(text) => parse_field(text, Field::Second)?,
            None => 1,
        },
        minute: parse_field(rest[0], Field::Minute)?,
        hour: parse_field(rest[1], Field::Hour)?,
        dom: parse_field(rest[2], Field::DayOfMonth)?,
        month: parse_field(rest[3], Field::Month)?,
        dow: parse_field(rest[4], Field::DayOfWeek)?,
    })
}

/// A field: a comma-separated list of ranges (empty entries ignored, like robfig).
fn parse_field(text: &str, field: Field) -> Result<u64, CronError> {
    let mut out = 0;
    let mut any = false;
    for expr in text.split(',').filter(|e| !e.is_empty()) {
        any = true;
        out |= parse_range(expr, field).map_err(|problem| CronError::Field {
            field,
            token: expr.to_string(),
            problem,
        })?;
    }
    if !any {
        // robfig accepts a field of only commas as "never"; refuse it instead.
        return Err(CronError::Field {
            field,
            token: text.to_string(),
            problem: Problem::EmptyList,
        });
    }
    Ok(out)
}

/// `number | name | * | ?` optionally `-end`, optionally `/step` (robfig's getRange).
fn parse_range(expr: &str, field: Field) -> Result<u64, Problem> {
    let (min, max) = field.bounds();
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let mut star = 0;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        star = STAR;
        (min as u64, max as u64)
    } else {
        let start = parse_value(low_and_high[0], field)?;
        match low_and_high.len() {
            1 => (start, start),
            2 => (start, parse_value(low_and_high[1], field)?),
            _ => return Err(Problem::TooManyHyphens),
        }
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_number(range_and_step[1], "")?;
            // "N/step" means "N-max/step".
            if single {
                end = max as u64;
            }
            if step > 1 {
                star = 0;
            }
            step
        }
        _ => return Err(Problem::TooManySlashes),
    };
    if start < min as u64 {
        return Err(Problem::BelowMinimum {
            value: start.to_string(),
            min,
        });
    }
    if end > max as u64 {
        return Err(Problem::AboveMaximum {
            value: end.to_string(),
            max,
        });
    }
    if start > end {
        return Err(Problem::StartAfterEnd {
            start: start as u32,
            end: end as u32,
        });
    }
    if step == 0 {
        return Err(Problem::ZeroStep);
    }
    Ok(bits(start as u32, end as u32, step) | star)
}

fn parse_value(token: &str, field: Field) -> Result<u64, Problem> {
    if let Some(v) = field.name_value(token) {
        return Ok(v as u64);
    }
    let names = match field {
        Field::Month => " or a month name (jan..dec)",
        Field::DayOfWeek => " or a day name (sun..sat)",
        _ => "",
    };
    parse_number(token, names)
}

/// Go's strconv.Atoi for non-negative values: ASCII digits with an optional `+`. Too large
/// numbers saturate (and then fail the range check naming the digits).
fn parse_number(token: &str, names: &'static str) -> Result<u64, Problem> {
    let digits = token.strip_prefix('+').unwrap_or(token);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::NotANumber(token.to_string(), names));
    }
    Ok(digits.parse::<u64>().unwrap_or(u64::MAX))
}

/// Bits min..=max every `step` values.
fn bits(min: u32, max: u32, step: u64) -> u64 {
    let mut out = 0;
    let mut i = min as u64;
    while i <= max as u64 {
        out |= 1 << i;
        i = match i.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
    out
}

/// Go's time.ParseDuration: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, e.g. `1h30m`, `1.5h`, `300ms`;
/// units ns, us (µs, μs), ms, s, m, h. Returns nanoseconds.
pub fn parse_go_duration(text: &str) -> Result<i128, &'static str> {
    const LIMIT: u128 = 1 << 63;
    let (neg, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err("empty duration");
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let b = s.as_bytes()[0];
        if !(b == b'.' || b.is_ascii_digit()) {
            return Err("expected a number");
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &s[..int_len];
        s = &s[int_len..];
        let mut frac_digits = "";
        if let Some(after_dot) = s.strip_prefix('.') {
            let len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &after_dot[..len];
            s = &after_dot[len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err("expected digits");
        }
        let unit_len = s
            .bytes()
            .take_while(|b| !(*b == b'.' || b.is_ascii_digit()))
            .count();
        if unit_len == 0 {
            return Err("missing unit (ns, us, ms, s, m or h)");
        }
        let unit: u128 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err("unknown unit (expected ns, us, ms, s, m or h)"),
        };
        s = &s[unit_len..];
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| "duration too large")?
        };
        let mut value = int.checked_mul(unit).ok_or("duration too large")?;
        // Digits past the 18th cannot change the nanoseconds of any unit.
        let frac = &frac_digits[..frac_digits.len().min(18)];
        if !frac.is_empty() {
            let f: u128 = frac.parse().map_err(|_| "bad fraction")?;
            value += f * unit / 10u128.pow(frac.len() as u32);
        }
        total = total.checked_add(value).ok_or("duration too large")?;
        if total > LIMIT {
            return Err("duration too large");
        }
    }
    if neg {
        Ok(-(total as i128))
    } else if total >= LIMIT {
        Err("duration too large")
    } else {
        Ok(total as i128)
    }
}

/// Civil fields of an instant in a zone.
#[derive(Debug, Clone, Copy)]
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// 0 = Sunday.
    weekday: i64,
}

/// Go's time operations in one zone, on Unix seconds: what robfig's walk is written in.
struct Zone<'a>(&'a TimeZone);

impl Zone<'_> {
    fn offset(&self, unix: i64) -> Option<i64> {
        let ts = Timestamp::from_second(unix).ok()?;
        Some(self.0.to_offset(ts).seconds() as i64)
    }

    fn civil(&self, unix: i64) -> Option<Civil> {
        let local = unix + self.offset(unix)?;
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Some(Civil {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs % 3600 / 60,
            second: secs % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7),
        })
    }

    /// Go's time.Date: out-of-range fields carry over; a wall-clock time that does not exist
    /// or exists twice is resolved the way Go does (offset looked up at the wall-clock time
    /// read as UTC, then at the resulting instant).
    fn date(&self, year: i64, month: i64, day: i64, hour: i64, min: i64, sec: i64) -> Option<i64> {
        let m0 = month - 1;
        let year = year + m0.div_euclid(12);
        let month = m0.rem_euclid(12) + 1;
        let days = days_from_civil(year, month, 1) + day - 1;
        let local = days * 86_400 + hour * 3600 + min * 60 + sec;
        let first = self.offset(local)?;
        Some(local - self.offset(local - first)?)
    }

    /// Go's t.AddDate.
    fn add_date(&self, c: &Civil, months: i64, days: i64) -> Option<i64> {
        self.date(
            c.year,
            c.month + months,
            c.day + days,
            c.hour,
            c.minute,
            c.second,
        )
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

fn has(bits: u64, value: i64) -> bool {
    (0..63).contains(&value) && bits & (1 << value) != 0
}

/// robfig: with `*` in either day field both must match, else either may.
fn day_matches(spec: &Spec, c: &Civil) -> bool {
    let dom = has(spec.dom, c.day);
    let dow = has(spec.dow, c.weekday);
    if spec.dom & STAR != 0 || spec.dow & STAR != 0 {
        dom && dow
    } else {
        dom || dow
    }
}

/// robfig's correction after moving to the next day: midnight may not exist (DST at 00:00),
/// so an hour past 12 is moved forward to the next midnight, a small one back to the day's
/// first hour.
fn to_midnight(zone: &Zone<'_>, t: i64) -> Option<(i64, Civil)> {
    let c = zone.civil(t)?;
    if c.hour == 0 {
        return Some((t, c));
    }
    let t = t + if c.hour > 12 {
        (24 - c.hour) * 3600
    } else {
        -c.hour * 3600
    };
    Some((t, zone.civil(t)?))
}

/// robfig/cron v3 SpecSchedule.Next, starting at `start` (already the next whole second):
/// find the month, then the day, hour, minute and second, restarting from the month when a
/// field wraps. Gives up five years after the start.
fn spec_next(spec: &Spec, zone: &Zone<'_>, start: i64) -> Option<i64> {
    let mut t = start;
    let mut added = false;
    let year_limit = zone.civil(t)?.year + 5;
    let mut steps = 0u32;
    let mut step = || {
        steps += 1;
        (steps < STEP_LIMIT).then_some(())
    };
    'wrap: loop {
        step()?;
        let mut c = zone.civil(t)?;
        if c.year > year_limit {
            return None;
        }
        while !has(spec.month, c.month) {
            step()?;
            if !added {
                added = true;
                t = zone.date(c.year, c.month, 1, 0, 0, 0)?;
                c = zone.civil(t)?;
            }
            t = zone.add_date(&c, 1, 0)?;
            c = zone.civil(t)?;
            if c.month == 1 {
                continue 'wrap;
            }
        }
        while !day_matches(spec, &c) {
            step()?;
            if !added {
                added = true;
                t = zone.date(c.year, c.month, c.day, 0, 0, 0)?;
                c = zone.civil(t)?;
            }
            let before = t;
            t = zone.add_date(&c, 0, 1)?;
            (t, c) = to_midnight(zone, t)?;
            if t <= before {
                // The next day does not exist at all (Pacific/Apia skipped 2011-12-30), so
                // AddDate lands on the same day again and robfig loops forever; step a day of
                // real time instead.
                (t, c) = to_midnight(zone, before + 86_400)?;
                if t <= before {
                    return None;
                }
            }
            if c.day == 1 {
                continue 'wrap;
            }
        }
        while !has(spec.hour, c.hour) {
            step()?;
            if !added {
                added = true;
                t = zone.date(c.year, c.month, c.day, c.hour, 0, 0)?;
            }
            t += 3600;
            c = zone.civil(t)?;
            if c.hour == 0 {
                continue 'wrap;
            }
        }
        while !has(spec.minute, c.minute) {
            step()?;
            if !added {
                added = true;
                // Go's Truncate works on absolute time, not the wall clock.
                t -= t.rem_euclid(60);
            }
            t += 60;
            c = zone.civil(t)?;
            if c.minute == 0 {
                continue 'wrap;
            }
        }
        while !has(spec.second, c.second) {
            step()?;
            added = true;
            t += 1;
            c = zone.civil(t)?;
            if c.second == 0 {
                continue 'wrap;
            }
        }
        return Some(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        parse_time_zone(name).expect("zone")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    /// The next `n` fire times after `from`, printed in the schedule's zone.
    fn next_n(spec: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(spec, &tz(zone)).expect("spec");
        s.upcoming(at(from))
            .take(n)
            .map(|t| format_rfc3339(t, s.time_zone()))
            .collect()
    }

    fn next_once(spec: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(spec, &tz(zone))
            .expect("spec")
            .with_repeated_hour(RepeatedHour::Once);
        s.upcoming(at(from))
            .take(n)
            .map(|t| format_rfc3339(t, s.time_zone()))
            .collect()
    }

    fn err(spec: &str) -> CronError {
        Schedule::parse(spec, &TimeZone::UTC).expect_err(spec)
    }

    fn field_err(spec: &str) -> (Field, String, Problem) {
        match err(spec) {
            CronError::Field {
                field,
                token,
                problem,
            } => (field, token, problem),
            other => panic!("{spec}: expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn month_ends_skip_short_months() {
        assert_eq!(
            next_n("0 0 31 * *", "UTC", "2024-01-31T00:00:00Z", 4),
            [
                "2024-03-31T00:00:00Z",
                "2024-05-31T00:00:00Z",
                "2024-07-31T00:00:00Z",
                "2024-08-31T00:00:00Z"
            ]
        );
        assert_eq!(
            next_n("59 23 30 * *", "UTC", "2024-01-31T00:00:00Z", 2),
            ["2024-03-30T23:59:00Z", "2024-04-30T23:59:00Z"]
        );
        // Year end: the walk wraps into January of the next year.
        assert_eq!(
            next_n("0 0 1 1 *", "UTC", "2024-12-31T23:59:59Z", 1),
            ["2025-01-01T00:00:00Z"]
        );
    }

    #[test]
    fn leap_day_fires_only_in_leap_years() {
        assert_eq!(
            next_n("0 0 29 2 *", "UTC", "2023-01-01T00:00:00Z", 2),
            ["2024-02-29T00:00:00Z", "2028-02-29T00:00:00Z"]
        );
        assert_eq!(
            next_n("0 12 29 FEB *", "UTC", "2024-02-29T12:00:00Z", 1),
            ["2028-02-29T12:00:00Z"]
        );
        // 2100 is not a leap year: from 2097 the next Feb 29 is beyond the five-year horizon.
        assert_eq!(
            next_n("0 0 29 2 *", "UTC", "2097-03-01T00:00:00Z", 1),
            Vec::<String>::new()
        );
        // A date that never exists: no fire time, no hang.
        assert_eq!(
            next_n("0 0 30 2 *", "UTC", "2024-01-01T00:00:00Z", 1),
            Vec::<String>::new()
        );
        assert_eq!(
            next_n("0 0 31 4 *", "UTC", "2024-01-01T00:00:00Z", 1),
            Vec::<String>::new()
        );
    }

    #[test]
    fn spring_forward_new_york_skips_the_missing_hour() {
        // 2024-03-10: 02:00 EST becomes 03:00 EDT; 02:30 does not exist that day.
        assert_eq!(
            next_n(
                "30 2 * * *",
                "America/New_York",
                "2024-03-09T12:00:00-05:00",
                2
            ),
            ["2024-03-11T02:30:00-04:00", "2024-03-12T02:30:00-04:00"]
        );
        assert_eq!(
            next_n(
                "0 * * * *",
                "America/New_York",
                "2024-03-10T00:30:00-05:00",
                3
            ),
            [
                "2024-03-10T01:00:00-05:00",
                "2024-03-10T03:00:00-04:00",
                "2024-03-10T04:00:00-04:00"
            ]
        );
        // Once changes nothing for skipped hours.
        assert_eq!(
            next_once(
                "30 2 * * *",
                "America/New_York",
                "2024-03-09T12:00:00-05:00",
                1
            ),
            ["2024-03-11T02:30:00-04:00"]
        );
    }

    #[test]
    fn fall_back_new_york_repeated_hour() {
        // 2024-11-03: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
        let from = "2024-11-03T00:00:00-04:00";
        // robfig fires at both occurrences.
        assert_eq!(
            next_n("30 1 * * *", "America/New_York", from, 3),
            [
                "2024-11-03T01:30:00-04:00",
                "2024-11-03T01:30:00-05:00",
                "2024-11-04T01:30:00-05:00"
            ]
        );
        // Jobs: once per wall-clock time.
        assert_eq!(
            next_once("30 1 * * *", "America/New_York", from, 2),
            ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]
        );
        assert_eq!(
            next_once("*/20 1 * * *", "America/New_York", from, 4),
            [
                "2024-11-03T01:00:00-04:00",
                "2024-11-03T01:20:00-04:00",
                "2024-11-03T01:40:00-04:00",
                "2024-11-04T01:00:00-05:00"
            ]
        );
        // Every hour is every real hour, under both rules.
        let hourly = [
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T02:00:00-05:00",
        ];
        assert_eq!(next_n("0 * * * *", "America/New_York", from, 3), hourly);
        assert_eq!(next_once("0 * * * *", "America/New_York", from, 3), hourly);
        // Starting inside the second pass: the 01:30 of this pass is already a repeat.
        assert_eq!(
            next_once(
                "30 1 * * *",
                "America/New_York",
                "2024-11-03T01:10:00-05:00",
                1
            ),
            ["2024-11-04T01:30:00-05:00"]
        );
    }

    #[test]
    fn europe_berlin_both_transitions() {
        // 2024-03-31: 02:00 CET becomes 03:00 CEST.
        assert_eq!(
            next_n(
                "30 2 * * *",
                "Europe/Berlin",
                "2024-03-30T12:00:00+01:00",
                2
            ),
            ["2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00"]
        );
        // A job at 03:00 exists on both days.
        assert_eq!(
            next_n("0 3 * * *", "Europe/Berlin", "2024-03-30T12:00:00+01:00", 2),
            ["2024-03-31T03:00:00+02:00", "2024-04-01T03:00:00+02:00"]
        );
        // 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let from = "2024-10-27T00:00:00+02:00";
        assert_eq!(
            next_n("30 2 * * *", "Europe/Berlin", from, 3),
            [
                "2024-10-27T02:30:00+02:00",
                "2024-10-27T02:30:00+01:00",
                "2024-10-28T02:30:00+01:00"
            ]
        );
        assert_eq!(
            next_once("30 2 * * *", "Europe/Berlin", from, 2),
            ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]
        );
        // A CRON_TZ prefix wins over the default zone.
        assert_eq!(
            next_n(
                "CRON_TZ=Europe/Berlin 30 2 * * *",
                "America/New_York",
                from,
                1
            ),
            ["2024-10-27T02:30:00+02:00"]
        );
    }

    #[test]
    fn midnight_that_does_not_exist() {
        // Sao Paulo 2018-11-04: 00:00 -03 became 01:00 -02, so that day has no midnight.
        assert_eq!(
            next_n(
                "@daily",
                "America/Sao_Paulo",
                "2018-11-03T12:00:00-03:00",
                2
            ),
            ["2018-11-05T00:00:00-02:00", "2018-11-06T00:00:00-02:00"]
        );
        assert_eq!(
            next_n(
                "0 9 * * *",
                "America/Sao_Paulo",
                "2018-11-03T12:00:00-03:00",
                2
            ),
            ["2018-11-04T09:00:00-02:00", "2018-11-05T09:00:00-02:00"]
        );
    }

    #[test]
    fn a_day_that_does_not_exist() {
        // Pacific/Apia skipped 2011-12-30 (UTC-10 to UTC+14). robfig's walk cannot step over
        // it and loops forever; here the next existing day is used.
        assert_eq!(
            next_n(
                "15 15-21 */10 * *",
                "Pacific/Apia",
                "2011-12-27T10:55:00-10:00",
                2
            ),
            ["2011-12-31T15:15:00+14:00", "2011-12-31T16:15:00+14:00"]
        );
        assert_eq!(
            next_n("0 12 * * *", "Pacific/Apia", "2011-12-29T13:00:00-10:00", 2),
            ["2011-12-31T12:00:00+14:00", "2012-01-01T12:00:00+14:00"]
        );
    }

    #[test]
    fn every_is_a_constant_delay_in_whole_seconds() {
        assert_eq!(
            next_n("@every 1h30m", "UTC", "2024-01-01T10:00:00.700Z", 2),
            ["2024-01-01T11:30:00Z", "2024-01-01T13:00:00Z"]
        );
        // Below one second is one second; fractions of a second are dropped (robfig).
        assert_eq!(
            next_n("@every 500ms", "UTC", "2024-01-01T10:00:00Z", 2),
            ["2024-01-01T10:00:01Z", "2024-01-01T10:00:02Z"]
        );
        assert_eq!(
            next_n("@every 1.9s", "UTC", "2024-01-01T10:00:00Z", 1),
            ["2024-01-01T10:00:01Z"]
        );
        let s = Schedule::parse("@every 5m", &TimeZone::UTC).expect("every");
        assert!(s.is_interval());
        assert!(matches!(
            err("@every 5"),
            CronError::Duration { ref value, .. } if value == "5"
        ));
        assert!(matches!(err("@every 1d"), CronError::Duration { .. }));
        assert!(matches!(err("@every"), CronError::Descriptor { .. }));
    }

    #[test]
    fn descriptors() {
        let from = "2024-07-10T15:20:00Z";
        assert_eq!(next_n("@hourly", "UTC", from, 1), ["2024-07-10T16:00:00Z"]);
        assert_eq!(next_n("@daily", "UTC", from, 1), ["2024-07-11T00:00:00Z"]);
        assert_eq!(
            next_n("@midnight", "UTC", from, 1),
            ["2024-07-11T00:00:00Z"]
        );
        // 2024-07-14 is a Sunday.
        assert_eq!(next_n("@weekly", "UTC", from, 1), ["2024-07-14T00:00:00Z"]);
        assert_eq!(next_n("@monthly", "UTC", from, 1), ["2024-08-01T00:00:00Z"]);
        assert_eq!(next_n("@yearly", "UTC", from, 1), ["2025-01-01T00:00:00Z"]);
        assert_eq!(
            next_n("@annually", "UTC", from, 1),
            ["2025-01-01T00:00:00Z"]
        );
        assert!(matches!(err("@daly"), CronError::Descriptor { .. }));
    }

    #[test]
    fn six_fields_have_seconds() {
        assert_eq!(
            next_n("*/20 * * * * *", "UTC", "2024-01-01T00:00:00Z", 3),
            [
                "2024-01-01T00:00:20Z",
                "2024-01-01T00:00:40Z",
                "2024-01-01T00:01:00Z"
            ]
        );
        assert_eq!(
            next_n("15 30 12 * * MON-FRI", "UTC", "2024-07-12T12:30:15Z", 1),
            ["2024-07-15T12:30:15Z"]
        );
        // Five fields fire at second 0.
        assert_eq!(
            next_n("* * * * *", "UTC", "2024-01-01T00:00:00.5Z", 1),
            ["2024-01-01T00:01:00Z"]
        );
    }

    #[test]
    fn day_of_month_and_week_either_matches_when_both_are_restricted() {
        // September 2024 starts on a Sunday: Fridays are 6, 13, 20, 27; October 13 is a Sunday.
        assert_eq!(
            next_n("0 0 13 * FRI", "UTC", "2024-09-01T00:00:00Z", 7),
            [
                "2024-09-06T00:00:00Z",
                "2024-09-13T00:00:00Z",
                "2024-09-20T00:00:00Z",
                "2024-09-27T00:00:00Z",
                "2024-10-04T00:00:00Z",
                "2024-10-11T00:00:00Z",
                "2024-10-13T00:00:00Z"
            ]
        );
        // With a star in one of them, the other alone decides.
        assert_eq!(
            next_n("0 0 * * FRI", "UTC", "2024-09-01T00:00:00Z", 1),
            ["2024-09-06T00:00:00Z"]
        );
        assert_eq!(
            next_n("0 0 13 * ?", "UTC", "2024-09-01T00:00:00Z", 1),
            ["2024-09-13T00:00:00Z"]
        );
        // A */n step (n > 1) counts as restricted (robfig v3): 2024-09-01 is day 1 and Sunday,
        // 2024-09-08 is Sunday, 2024-09-11 is day 11.
        assert_eq!(
            next_n("0 0 */10 * SUN", "UTC", "2024-08-31T12:00:00Z", 4),
            [
                "2024-09-01T00:00:00Z",
                "2024-09-08T00:00:00Z",
                "2024-09-11T00:00:00Z",
                "2024-09-15T00:00:00Z"
            ]
        );
    }

    #[test]
    fn steps_ranges_lists_and_names() {
        let from = "2024-01-01T00:00:00Z";
        assert_eq!(
            next_n("10-30/7 * * * *", "UTC", from, 4),
            [
                "2024-01-01T00:10:00Z",
                "2024-01-01T00:17:00Z",
                "2024-01-01T00:24:00Z",
                "2024-01-01T01:10:00Z"
            ]
        );
        // "N/step" is "N-max/step".
        assert_eq!(
            next_n("5/20 * * * *", "UTC", from, 4),
            [
                "2024-01-01T00:05:00Z",
                "2024-01-01T00:25:00Z",
                "2024-01-01T00:45:00Z",
                "2024-01-01T01:05:00Z"
            ]
        );
        assert_eq!(
            next_n("0 0 1 jan-jun/2 *", "UTC", from, 3),
            [
                "2024-03-01T00:00:00Z",
                "2024-05-01T00:00:00Z",
                "2025-01-01T00:00:00Z"
            ]
        );
        assert_eq!(
            next_n("0 8,12,18 * * *", "UTC", from, 3),
            [
                "2024-01-01T08:00:00Z",
                "2024-01-01T12:00:00Z",
                "2024-01-01T18:00:00Z"
            ]
        );
        // Names in any case; 2024-01-01 is a Monday.
        assert_eq!(
            next_n("0 0 * Jan sAt", "UTC", from, 1),
            ["2024-01-06T00:00:00Z"]
        );
        assert_eq!(
            next_n("0 0 * * sun-sat/3", "UTC", from, 3),
            [
                "2024-01-03T00:00:00Z",
                "2024-01-06T00:00:00Z",
                "2024-01-07T00:00:00Z"
            ]
        );
    }

    #[test]
    fn fixed_offsets_and_prefixes() {
        assert_eq!(
            next_n("14 14 * * *", "+05:30", "2016-01-03T13:09:03+05:30", 1),
            ["2016-01-03T14:14:00+05:30"]
        );
        assert_eq!(
            next_n(
                "TZ=UTC  0 5 * * * *",
                "Europe/Berlin",
                "2024-01-01T00:00:00Z",
                1
            ),
            ["2024-01-01T00:05:00Z"]
        );
        assert_eq!(
            next_n("CRON_TZ=-0800 0 9 * * *", "UTC", "2024-01-01T00:00:00Z", 1),
            ["2024-01-01T09:00:00-08:00"]
        );
    }

    #[test]
    fn errors_name_the_field_and_token() {
        use Field::*;
        assert_eq!(
            field_err("60 * * * *"),
            (
                Minute,
                "60".into(),
                Problem::AboveMaximum {
                    value: "60".into(),
                    max: 59
                }
            )
        );
        assert_eq!(field_err("* 24 * * *").0, Hour);
        assert_eq!(
            field_err("* * 0 * *"),
            (
                DayOfMonth,
                "0".into(),
                Problem::BelowMinimum {
                    value: "0".into(),
                    min: 1
                }
            )
        );
        assert_eq!(field_err("* * * 13 *").0, Month);
        // robfig's day-of-week is 0..6.
        assert_eq!(field_err("* * * * 7").0, DayOfWeek);
        assert_eq!(field_err("60 * * * * *").0, Second);
        let (f, token, problem) = field_err("* * * foo *");
        assert_eq!((f, token.as_str()), (Month, "foo"));
        assert!(matches!(problem, Problem::NotANumber(..)));
        assert_eq!(
            field_err("* * * * MON,XYZ").1,
            "XYZ",
            "the bad entry of a list"
        );
        assert_eq!(
            field_err("5-1 * * * *").2,
            Problem::StartAfterEnd { start: 5, end: 1 }
        );
        assert_eq!(field_err("15/0 * * * *").2, Problem::ZeroStep);
        assert_eq!(field_err("1-2-3 * * * *").2, Problem::TooManyHyphens);
        assert_eq!(field_err("1/2/3 * * * *").2, Problem::TooManySlashes);
        assert_eq!(field_err("* , * * *").2, Problem::EmptyList);
        assert!(matches!(field_err("*/ * * * *").2, Problem::NotANumber(..)));
        assert!(matches!(field_err("1- * * * *").2, Problem::NotANumber(..)));
        assert!(matches!(field_err("-1 * * * *").2, Problem::NotANumber(..)));
        assert!(matches!(
            field_err("99999999999999999999999 * * * *").2,
            Problem::AboveMaximum { .. }
        ));
        assert!(matches!(
            err("* * * *"),
            CronError::FieldCount { found: 4, .. }
        ));
        assert!(matches!(
            err("* * * * * * *"),
            CronError::FieldCount { found: 7, .. }
        ));
        assert_eq!(err("   "), CronError::Empty);
        assert!(matches!(err("TZ=UTC"), CronError::MissingSchedule { .. }));
        assert!(matches!(
            err("TZ=Mars/Base * * * * *"),
            CronError::TimeZone { .. }
        ));
        assert!(matches!(
            err("TZ=../../etc/passwd * * * * *"),
            CronError::TimeZone { .. }
        ));
        assert!(matches!(
            err(&format!("0 0 * * {}", "1,".repeat(600))),
            CronError::TooLong { .. }
        ));
        let message = err("0 0 * * XYZ").to_string();
        assert!(
            message.contains("day-of-week") && message.contains("XYZ"),
            "{message}"
        );
        assert_eq!(
            err("60 0 * * *").category(),
            crate::error::Category::Invalid
        );
    }

    #[test]
    fn lenient_like_robfig() {
        // Empty list entries are ignored, a leading + is a number, `*-n` is `*`.
        let a = Schedule::parse("0 1,,2 * * *", &TimeZone::UTC).expect("1,,2");
        let b = Schedule::parse("0 1,2 * * *", &TimeZone::UTC).expect("1,2");
        assert_eq!(a.kind, b.kind);
        let c = Schedule::parse("+5 * * * *", &TimeZone::UTC).expect("+5");
        let d = Schedule::parse("5 * * * *", &TimeZone::UTC).expect("5");
        assert_eq!(c.kind, d.kind);
    }

    #[test]
    fn fires_at_and_upcoming() {
        let s = Schedule::parse("*/15 * * * *", &TimeZone::UTC).expect("spec");
        assert!(s.fires_at(at("2024-01-01T10:45:00Z")));
        assert!(!s.fires_at(at("2024-01-01T10:40:00Z")));
        assert!(!s.fires_at(at("2024-01-01T10:45:00.5Z")));
        let times: Vec<_> = s.upcoming(at("2024-01-01T23:50:00Z")).take(3).collect();
        assert_eq!(
            times,
            [
                at("2024-01-02T00:00:00Z"),
                at("2024-01-02T00:15:00Z"),
                at("2024-01-02T00:30:00Z")
            ]
        );
        // A fire time is never the start itself.
        assert_eq!(
            s.next_after(at("2024-01-01T10:45:00Z")),
            Some(at("2024-01-01T11:00:00Z"))
        );
    }

    #[test]
    fn first_between_finds_missed_runs() {
        let s = Schedule::parse("0 3 * * *", &TimeZone::UTC).expect("spec");
        let down = at("2024-05-01T02:00:00Z");
        assert_eq!(
            s.first_between(down, at("2024-05-01T05:00:00Z")),
            Some(at("2024-05-01T03:00:00Z"))
        );
        assert_eq!(s.first_between(down, at("2024-05-01T02:59:59Z")), None);
        // The end is inclusive, the start is not.
        assert_eq!(
            s.first_between(down, at("2024-05-01T03:00:00Z")),
            Some(at("2024-05-01T03:00:00Z"))
        );
        assert_eq!(
            s.first_between(at("2024-05-01T03:00:00Z"), at("2024-05-01T04:00:00Z")),
            None
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("-1m"), Ok(-60_000_000_000));
        assert_eq!(parse_go_duration("+2s300ms"), Ok(2_300_000_000));
        assert_eq!(parse_go_duration("1\u{b5}s"), Ok(1_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("1").is_err());
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_go_duration(".s").is_err());
        assert!(
            parse_go_duration("3000000h").is_err(),
            "past Go's 292 years"
        );
    }

    #[test]
    fn time_zone_names() {
        assert_eq!(parse_time_zone("UTC").expect("utc"), TimeZone::UTC);
        assert!(parse_time_zone("Europe/Berlin").is_ok());
        assert!(parse_time_zone("+05:30").is_ok());
        assert!(parse_time_zone("+26:00").is_err());
        assert!(parse_time_zone("Nowhere/City").is_err());
        assert!(parse_time_zone("/etc/localtime").is_err());
    }

    #[test]
    fn civil_arithmetic_round_trips() {
        for days in [-800_000, -1, 0, 59, 365, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
