//! `dockmaster schedule next` through the real binary: output format (RFC 3339 in the
//! schedule's zone, one per line), --from/--count/--tz/--repeated-hour, and errors.

use std::process::{Command, Output};

fn dockmaster(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockmaster"))
        .args(args)
        .output()
        .expect("run dockmaster")
}

fn lines(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn prints_five_by_default_in_utc() {
    let out = dockmaster(&[
        "schedule",
        "next",
        "*/15 * * * *",
        "--from",
        "2024-01-01T23:40:00Z",
    ]);
    assert_eq!(
        lines(&out),
        [
            "2024-01-01T23:45:00Z",
            "2024-01-02T00:00:00Z",
            "2024-01-02T00:15:00Z",
            "2024-01-02T00:30:00Z",
            "2024-01-02T00:45:00Z"
        ]
    );
}

#[test]
fn named_zone_skips_the_spring_forward_hour() {
    let out = dockmaster(&[
        "schedule",
        "next",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2024-03-30T12:00:00+01:00",
        "--count",
        "2",
    ]);
    assert_eq!(
        lines(&out),
        ["2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00"]
    );
}

#[test]
fn repeated_hour_each_or_once() {
    let args = [
        "schedule",
        "next",
        "30 1 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2024-11-03T00:00:00-04:00",
        "-n",
        "2",
    ];
    assert_eq!(
        lines(&dockmaster(&args)),
        ["2024-11-03T01:30:00-04:00", "2024-11-03T01:30:00-05:00"]
    );
    let mut once = args.to_vec();
    once.extend(["--repeated-hour", "once"]);
    assert_eq!(
        lines(&dockmaster(&once)),
        ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]
    );
}

#[test]
fn prefix_zone_wins_and_words_are_joined() {
    // Unquoted words make one expression; the CRON_TZ prefix decides the zone printed.
    let out = dockmaster(&[
        "schedule",
        "next",
        "CRON_TZ=Asia/Kolkata",
        "0",
        "9",
        "*",
        "*",
        "MON-FRI",
        "--tz",
        "America/New_York",
        "--from",
        "2024-07-05T00:00:00Z",
        "-n",
        "2",
    ]);
    // 2024-07-05 is a Friday.
    assert_eq!(
        lines(&out),
        ["2024-07-05T09:00:00+05:30", "2024-07-08T09:00:00+05:30"]
    );
    let every = dockmaster(&[
        "schedule",
        "next",
        "@every",
        "90m",
        "--from",
        "2024-01-01T00:00:00.25Z",
        "-n",
        "2",
    ]);
    assert_eq!(
        lines(&every),
        ["2024-01-01T01:30:00Z", "2024-01-01T03:00:00Z"]
    );
}

#[test]
fn seconds_field_and_leap_day() {
    let out = dockmaster(&[
        "schedule",
        "next",
        "0 0 0 29 Feb ?",
        "--from",
        "2012-07-09T23:35:00Z",
        "-n",
        "2",
    ]);
    assert_eq!(
        lines(&out),
        ["2016-02-29T00:00:00Z", "2020-02-29T00:00:00Z"]
    );
}

#[test]
fn default_start_is_now() {
    let before = std::time::SystemTime::now();
    let out = dockmaster(&["schedule", "next", "* * * * * *", "-n", "3"]);
    let got: Vec<std::time::SystemTime> = lines(&out)
        .iter()
        .map(|l| {
            let t: jiff::Timestamp = l.parse().expect("RFC 3339");
            std::time::SystemTime::from(t)
        })
        .collect();
    assert_eq!(got.len(), 3);
    assert!(got[0] > before - std::time::Duration::from_secs(1));
    assert!(got
        .windows(2)
        .all(|w| w[1].duration_since(w[0]).is_ok_and(|d| d.as_secs() == 1)));
}

#[test]
fn a_schedule_that_never_fires_prints_nothing() {
    let out = dockmaster(&[
        "schedule",
        "next",
        "0 0 30 2 *",
        "--from",
        "2024-01-01T00:00:00Z",
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("no further fire time"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn errors_name_the_problem() {
    let out = dockmaster(&["schedule", "next", "0 60 * * *"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("hour field \"60\""), "{e}");
    assert!(e.contains("above the maximum 23"), "{e}");

    let out = dockmaster(&["schedule", "next", "0 0 * * XYZ"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("day-of-week field \"XYZ\""),
        "{}",
        stderr(&out)
    );

    let out = dockmaster(&["schedule", "next", "* * *"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("found 3"), "{}", stderr(&out));

    let out = dockmaster(&["schedule", "next", "0 2 * * *", "--tz", "Mars/Olympus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Mars/Olympus"), "{}", stderr(&out));

    let out = dockmaster(&["schedule", "next", "0 2 * * *", "--from", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--from"), "{}", stderr(&out));

    // Usage errors are clap's (exit 2).
    let out = dockmaster(&["schedule", "next", "0 2 * * *", "--count", "0"]);
    assert_eq!(out.status.code(), Some(2));
}
