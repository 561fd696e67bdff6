//! `dockmaster schedule next SPEC`: the next fire times of a cron expression, one RFC 3339
//! time per line in the schedule's zone (for people checking an expression, and for the
//! conformance data in ../shared/conformance/cron).

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::schedule::{format_rfc3339, parse_time_zone, RepeatedHour, Schedule, Timestamp};

/// Most fire times one call prints.
pub const COUNT_MAX: u32 = 10_000;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Print the next fire times of a cron expression.
    Next(NextArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Repeated {
    /// Fire at each occurrence of a repeated wall-clock time (robfig/cron).
    Each,
    /// Fire once per wall-clock time unless the hour field is every hour (what jobs do).
    Once,
}

#[derive(Debug, Args)]
pub struct NextArgs {
    /// The expression: 5 fields (minute hour day-of-month month day-of-week), 6 with a
    /// leading seconds field, @hourly/@daily/@weekly/@monthly/@yearly, or @every 1h30m;
    /// optionally prefixed with CRON_TZ=ZONE. Several words are joined with spaces.
    #[arg(required = true, value_name = "SPEC")]
    pub spec: Vec<String>,
    /// Start instant (RFC 3339, e.g. 2024-03-31T00:00:00+01:00); fire times strictly after it
    /// are printed. Default: now.
    #[arg(long, value_name = "RFC3339")]
    pub from: Option<String>,
    /// How many fire times to print.
    #[arg(short = 'n', long, default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=COUNT_MAX as i64))]
    pub count: u32,
    /// Time zone the expression is evaluated and printed in, unless it has a CRON_TZ= prefix:
    /// an IANA name (Europe/Berlin), UTC, Local, or a fixed offset (+05:30). Default: UTC.
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// What a wall-clock time that happens twice (clocks going back) does.
    #[arg(long, value_enum, default_value = "each")]
    pub repeated_hour: Repeated,
}

pub fn run(cmd: ScheduleCommand) -> anyhow::Result<i32> {
    match cmd {
        ScheduleCommand::Next(args) => next(args),
    }
}

fn next(args: NextArgs) -> anyhow::Result<i32> {
    let tz = parse_time_zone(args.tz.as_deref().unwrap_or("UTC")).context("--tz")?;
    let spec = args.spec.join(" ");
    let schedule = Schedule::parse(&spec, &tz)
        .with_context(|| format!("invalid schedule {spec:?}"))?
        .with_repeated_hour(match args.repeated_hour {
            Repeated::Each => RepeatedHour::EachOccurrence,
            Repeated::Once => RepeatedHour::Once,
        });
    let from = match &args.from {
        Some(text) => text
            .trim()
            .parse::<Timestamp>()
            .with_context(|| format!("--from {text:?} is not an RFC 3339 time with an offset"))?,
        None => Timestamp::now(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0;
    for t in schedule.upcoming(from).take(args.count as usize) {
        writeln!(out, "{}", format_rfc3339(t, schedule.time_zone()))?;
        printed += 1;
    }
    out.flush()?;
    if printed < args.count {
        eprintln!(
            "dockmaster: {spec:?} has no further fire time within five years after the last one \
             printed"
        );
    }
    Ok(0)
}
