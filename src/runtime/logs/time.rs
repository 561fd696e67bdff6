//! RFC 3339 timestamps as Go writes them (`time.RFC3339Nano` in UTC), without a date crate.
//!
//! Go's `RFC3339Nano` layout trims trailing zeros of the fraction and drops the dot when the
//! fraction is zero: `2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.5Z`. Docker stamps every
//! json-file record this way, so readers written for Docker parse ours.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats `t` in UTC like Go's `t.UTC().Format(time.RFC3339Nano)`.
pub fn format_rfc3339_nano(t: SystemTime) -> String {
    let (secs, nanos) = unix_parts(t);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`), the subset Go's
/// `time.Parse(time.RFC3339Nano, …)` accepts. Returns `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(&b[start..i])? * 10i64.pow(9 - n as u32);
    }
    let offset = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    from_unix(secs, nanos as u32)
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut v: i64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Seconds and nanoseconds since the epoch; negative seconds before 1970 (nanos stay >= 0).
fn unix_parts(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let mut secs = -(d.as_secs() as i64);
            let mut nanos = d.subsec_nanos();
            if nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            (secs, nanos)
        }
    }
}

fn from_unix(secs: i64, nanos: u32) -> Option<SystemTime> {
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs as u64, nanos))
    } else {
        let back = Duration::new(secs.unsigned_abs(), 0);
        UNIX_EPOCH
            .checked_sub(back)?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

// Howard Hinnant's days <-> civil date algorithms (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn formats_like_go_rfc3339nano() {
        assert_eq!(format_rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
        // 2009-11-10T23:00:00Z is Go's playground time.
        assert_eq!(
            format_rfc3339_nano(at(1_257_894_000, 0)),
            "2009-11-10T23:00:00Z"
        );
        assert_eq!(
            format_rfc3339_nano(at(1_257_894_000, 500_000_000)),
            "2009-11-10T23:00:00.5Z"
        );
        assert_eq!(
            format_rfc3339_nano(at(1_257_894_000, 123_456_789)),
            "2009-11-10T23:00:00.123456789Z"
        );
        assert_eq!(
            format_rfc3339_nano(at(1_257_894_000, 1_000)),
            "2009-11-10T23:00:00.000001Z"
        );
        // Leap day and end of a leap year.
        assert_eq!(
            format_rfc3339_nano(at(951_782_400, 0)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339_nano(at(1_735_689_599, 999_999_999)),
            "2024-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            format_rfc3339_nano(UNIX_EPOCH - Duration::new(1, 0)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(
            format_rfc3339_nano(UNIX_EPOCH - Duration::from_millis(1500)),
            "1969-12-31T23:59:58.5Z"
        );
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for (secs, nanos) in [
            (0u64, 0u32),
            (951_782_400, 0),
            (1_257_894_000, 123_456_789),
            (1_735_689_599, 999_999_999),
            (4_102_444_800, 1),
        ] {
            let t = at(secs, nanos);
            assert_eq!(parse_rfc3339(&format_rfc3339_nano(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2009-11-11T01:30:00.25+02:30"),
            Some(at(1_257_894_000, 250_000_000))
        );
        assert_eq!(
            parse_rfc3339("2009-11-10T20:00:00-03:00"),
            Some(at(1_257_894_000, 0))
        );
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2009-11-10",
            "2009-11-10 23:00:00Z",
            "2009-11-10T23:00:00",
            "2009-11-10T23:00:00.Z",
            "2009-11-10T23:00:00.1234567890Z",
            "2009-13-10T23:00:00Z",
            "2009-02-29T23:00:00Z",
            "2009-11-10T24:00:00Z",
            "2009-11-10T23:00:00+0200",
            "2009-11-10T23:00:00Zjunk",
            "20a9-11-10T23:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
