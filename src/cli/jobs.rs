//! Scheduled jobs: `dockmaster jobs` (every job on the host), `dockmaster job run` (a manual
//! run, through the agent when it answers, else in this process), `dockmaster job history`
//! and `dockmaster job logs` (the runs kept on disk). Everything but `job run` reads the
//! root directly, so it works without a running agent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};

use super::admin::{one_line, or_dash, Format};
use super::container::follow_until_stopped;
use crate::api::client::{AdminClient, ClientError};
use crate::config::AgentConfig;
use crate::jobs::catalog::{self, humantime_short, to_timestamp};
use crate::jobs::{split_job_name, JobDir, JobInfo, RunRecord, RunResult};
use crate::runtime::container::ContainerStore;
use crate::runtime::logs::{LogReader, LogRecord};
use crate::schedule::{format_rfc3339, TimeZone, Timestamp};

/// How often `job run` looks at the run's record while it waits.
const POLL: Duration = Duration::from_millis(200);
/// How often `job run` checks that the agent is still there while it waits.
const AGENT_CHECK: Duration = Duration::from_secs(5);
/// How long `job run` waits for the record of a run the agent accepted to appear (it is
/// saved before the agent answers; a different `--root` than the agent's never shows it).
const RECORD_APPEARS: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run a job now (a manual trigger; the job's concurrency policy applies).
    ///
    /// Waits for the run, prints its output and exits with its exit code (like `docker
    /// compose run`). Without a running agent the run happens in this process.
    Run(RunArgs),
    /// Show the runs kept of a job.
    History(HistoryArgs),
    /// Show the output of a run (default: the newest finished one).
    Logs(LogsArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job.
    #[arg(value_name = "PROJECT/SERVICE")]
    pub job: String,
    /// Print the run's number and return at once (needs a running agent).
    #[arg(short, long)]
    pub detach: bool,
    /// The agent's API socket (default: from the agent config, else <root>/agent.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The job.
    #[arg(value_name = "PROJECT/SERVICE")]
    pub job: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job.
    #[arg(value_name = "PROJECT/SERVICE")]
    pub job: String,
    /// The run's number (see `dockmaster job history`); default: the newest finished run.
    pub run: Option<u64>,
    /// Only the last N lines ("all" for everything).
    #[arg(long, default_value = "all")]
    pub tail: String,
    /// Prefix each line with its timestamp.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// For a run still going: follow its output until it ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `PROJECT/SERVICE` → the two names; both become directory names under the root, so
/// nothing that could leave it is accepted.
pub fn parse_job_name(name: &str) -> anyhow::Result<(&str, &str)> {
    let (project, service) = split_job_name(name)
        .ok_or_else(|| anyhow!("invalid job name {name:?}: expected PROJECT/SERVICE"))?;
    for (what, n) in [("project", project), ("service", service)] {
        if let Some(problem) = crate::api::server::job_name_problem(what, n) {
            bail!("invalid job name {name:?}: {problem}");
        }
    }
    Ok((project, service))
}

// ---------------------------------------------------------------------------------------------
// dockmaster jobs

pub fn jobs(root: &Path, args: JobsArgs) -> anyhow::Result<i32> {
    let now = Timestamp::now();
    // A project whose generation cannot be read is named, not silently left out.
    let found = catalog::all(root, &mut |problem| {
        eprintln!("dockmaster: warning: {problem}")
    });
    let infos: Vec<JobInfo> = found.iter().map(|j| catalog::info(root, j, now)).collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&infos)?),
        Format::Table => print!("{}", render_jobs(&infos, SystemTime::now())),
    }
    Ok(0)
}

/// The human `dockmaster jobs`.
pub fn render_jobs(jobs: &[JobInfo], now: SystemTime) -> String {
    if jobs.is_empty() {
        return "no jobs\n".into();
    }
    let mut rows = vec![[
        "JOB", "SCHEDULE", "ZONE", "NEXT RUN", "LAST RUN", "RESULT", "RUNNING",
    ]
    .map(String::from)
    .to_vec()];
    for j in jobs {
        rows.push(vec![
            format!("{}/{}", j.project, j.service),
            j.schedule.clone(),
            j.time_zone.clone(),
            or_dash(j.next_run.as_deref()),
            j.last_run
                .as_ref()
                .map_or_else(|| "-".into(), |r| age(now, r.started)),
            j.last_run.as_ref().map_or_else(|| "-".into(), result_text),
            j.running.len().to_string(),
        ]);
    }
    table(&rows)
}

/// `succeeded`, `failed (exit 3)`, `timeout`.
fn result_text(r: &RunRecord) -> String {
    match r.exit_code {
        Some(code) if r.result != RunResult::Succeeded => {
            format!("{} (exit {code})", r.result.as_str())
        }
        _ => r.result.as_str().to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// dockmaster job ...

pub fn job(root: &Path, config: Option<&Path>, cmd: JobCommand) -> anyhow::Result<i32> {
    match cmd {
        JobCommand::Run(a) => run(root, &AgentConfig::load(config)?, a),
        JobCommand::History(a) => history(root, a),
        JobCommand::Logs(a) => logs(root, a),
    }
}

/// The job as the catalog has it (`None`: not a job of a deployed project, or its
/// generation cannot be read).
fn find_job(root: &Path, project: &str, service: &str) -> Option<catalog::Job> {
    catalog::project_jobs(root, project)
        .ok()?
        .into_iter()
        .find(|j| j.service == service)
}

fn unknown_job(project: &str, service: &str) -> anyhow::Error {
    anyhow!(
        "{project}/{service} is not a job of a deployed project and has no kept runs (see `dockmaster jobs`)"
    )
}

// ---- run -----------------------------------------------------------------------------------

fn run(root: &Path, config: &AgentConfig, args: RunArgs) -> anyhow::Result<i32> {
    let (project, service) = parse_job_name(&args.job)?;
    let client = AdminClient::new(
        args.socket
            .clone()
            .unwrap_or_else(|| config.socket_path(root)),
    );
    match client.run_job(project, service) {
        Ok(seq) if args.detach => {
            println!("{seq}");
            Ok(0)
        }
        Ok(seq) => {
            let streamed = stream_run(root, project, service, seq);
            let record = wait_for_run(root, &client, project, service, seq)?;
            if streamed {
                finish_quietly(&record)
            } else {
                finish(root, &record)
            }
        }
        Err(e @ ClientError::NotRunning { .. }) => {
            if args.detach {
                bail!("--detach needs a running agent: {e}");
            }
            run_here(root, config, project, service)
        }
        // The agent's own words: "… is not a job …", "… run 3 is still running …".
        Err(ClientError::Status {
            status: 404 | 409,
            message,
            ..
        }) => Err(anyhow!(message)),
        Err(e) => Err(e.into()),
    }
}

/// Waits until the agent has recorded run `seq` as finished.
fn wait_for_run(
    root: &Path,
    client: &AdminClient,
    project: &str,
    service: &str,
    seq: u64,
) -> anyhow::Result<RunRecord> {
    let dir = JobDir::new(root, project, service);
    let started = Instant::now();
    let mut checked = Instant::now();
    let mut seen = false;
    loop {
        match dir.load(seq) {
            Some(r) if r.result != RunResult::Running => return Ok(r),
            Some(_) => seen = true,
            None if seen => bail!(
                "run {seq} of {project}/{service}: its record {} is gone (the project was removed?)",
                dir.record_path(seq).display()
            ),
            None if started.elapsed() > RECORD_APPEARS => bail!(
                "run {seq} of {project}/{service} started, but its record {} did not appear (is the agent's root {}?)",
                dir.record_path(seq).display(),
                root.display()
            ),
            None => {}
        }
        if checked.elapsed() >= AGENT_CHECK {
            checked = Instant::now();
            if let Err(e @ ClientError::NotRunning { .. }) = client.status() {
                bail!(
                    "{e}: the agent stopped while run {seq} of {project}/{service} was going; \
                     the agent takes it up again when it starts (see `dockmaster job history {project}/{service}`)"
                );
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Prints the output of run `seq` while it runs, from its container's live log (the agent
/// keeps the run's own copy only when it ends). False when the run was over, or its
/// container never showed up, before anything could be followed: the kept log is printed then.
fn stream_run(root: &Path, project: &str, service: &str, seq: u64) -> bool {
    let dir = JobDir::new(root, project, service);
    let deadline = Instant::now() + RECORD_APPEARS;
    let id = loop {
        match dir.load(seq) {
            Some(r) if r.result != RunResult::Running => return false,
            Some(r) => {
                if let Some(id) = r
                    .container_id
                    .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
                {
                    break id;
                }
            }
            None => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    };
    let paths = ContainerStore::new(root).paths(&id);
    let Ok(reader) = LogReader::open(paths.log()) else {
        return false;
    };
    if print_records(&reader, None, false).is_err() {
        return false;
    }
    // A broken pipe or a log read error ends the streaming; the exit code still follows.
    let _ = follow_until_stopped(reader, &paths, Duration::from_millis(20), false, "");
    true
}

/// The run's exit code after its output was streamed; why it failed on stderr.
fn finish_quietly(record: &RunRecord) -> anyhow::Result<i32> {
    report_failure(record);
    Ok(exit_code_of(record))
}

/// The run in this process, when no agent answers.
fn run_here(
    root: &Path,
    config: &AgentConfig,
    project: &str,
    service: &str,
) -> anyhow::Result<i32> {
    // Said once the run starts (a name that is not a job fails first, without it).
    let mut told = false;
    let record = crate::jobs::runner::run_local(root, config, project, service, &mut |line| {
        if !told {
            told = true;
            eprintln!("dockmaster: no agent is running; the run happens in this process");
        }
        eprintln!("dockmaster: {line}")
    })?;
    finish(root, &record)
}

/// Prints a finished run's output and returns its exit code (1 when it failed without one).
fn finish(root: &Path, record: &RunRecord) -> anyhow::Result<i32> {
    let log = JobDir::new(root, &record.project, &record.service).log_path(record.seq);
    print_records(&LogReader::open(&log)?, None, false)?;
    report_failure(record);
    Ok(exit_code_of(record))
}

/// Says on stderr why a run did not succeed.
fn report_failure(record: &RunRecord) {
    if record.result == RunResult::Succeeded {
        return;
    }
    let why = record
        .error
        .as_deref()
        .map(one_line)
        .or_else(|| record.exit_code.map(|c| format!("exit code {c}")))
        .unwrap_or_default();
    eprintln!(
        "dockmaster: run {} of {}/{}: {}{}",
        record.seq,
        record.project,
        record.service,
        record.result.as_str(),
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        }
    );
}

/// The process exit code for a run: its own, 1 when it failed without one.
fn exit_code_of(record: &RunRecord) -> i32 {
    match record.exit_code {
        Some(code) => process_code(code),
        None if record.result == RunResult::Succeeded => 0,
        None => 1,
    }
}

/// An exit code as a process can return it (0..=255): a non-zero code never becomes 0.
fn process_code(code: i32) -> i32 {
    match code & 0xff {
        0 if code != 0 => 1,
        c => c,
    }
}

// ---- history -------------------------------------------------------------------------------

fn history(root: &Path, args: HistoryArgs) -> anyhow::Result<i32> {
    let (project, service) = parse_job_name(&args.job)?;
    let runs = JobDir::new(root, project, service).list()?;
    let job = find_job(root, project, service);
    if runs.is_empty() && job.is_none() {
        return Err(unknown_job(project, service));
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
        Format::Table if runs.is_empty() => println!("no runs of {project}/{service} yet"),
        Format::Table => {
            // Times in the job's zone, like its next run in `dockmaster jobs`.
            let tz = job
                .map(|j| j.spec.schedule.time_zone().clone())
                .unwrap_or(TimeZone::UTC);
            print!("{}", render_history(&runs, &tz, SystemTime::now()));
        }
    }
    Ok(0)
}

/// The human `dockmaster job history`.
pub fn render_history(runs: &[RunRecord], tz: &TimeZone, now: SystemTime) -> String {
    let time = |t: SystemTime| format_rfc3339(to_timestamp(t), tz);
    let mut rows = vec![[
        "RUN",
        "TRIGGER",
        "SCHEDULED FOR",
        "STARTED",
        "DURATION",
        "RESULT",
        "EXIT",
        "ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for r in runs {
        rows.push(vec![
            r.seq.to_string(),
            r.trigger.as_str().to_string(),
            r.scheduled_for.map_or_else(|| "-".into(), time),
            time(r.started),
            humantime_short(r.duration(now).as_secs()),
            r.result.as_str().to_string(),
            r.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
            or_dash(r.error.as_deref()),
        ]);
    }
    table(&rows)
}

// ---- logs ----------------------------------------------------------------------------------

fn logs(root: &Path, args: LogsArgs) -> anyhow::Result<i32> {
    let (project, service) = parse_job_name(&args.job)?;
    let tail = if args.tail == "all" {
        None
    } else {
        Some(
            args.tail
                .parse::<usize>()
                .map_err(|_| anyhow!("invalid --tail {:?}: a number or \"all\"", args.tail))?,
        )
    };
    let dir = JobDir::new(root, project, service);
    let record = match args.run {
        Some(seq) => match dir.load(seq) {
            Some(r) => r,
            None => {
                let runs = dir.list()?;
                if runs.is_empty() && find_job(root, project, service).is_none() {
                    return Err(unknown_job(project, service));
                }
                let kept: Vec<String> = runs.iter().map(|r| r.seq.to_string()).collect();
                bail!(
                    "{project}/{service} has no run {seq} (kept: {})",
                    if kept.is_empty() {
                        "none".to_string()
                    } else {
                        kept.join(", ")
                    }
                );
            }
        },
        None => {
            let runs = dir.list()?;
            if runs.is_empty() && find_job(root, project, service).is_none() {
                return Err(unknown_job(project, service));
            }
            match runs.iter().rev().find(|r| r.result != RunResult::Running) {
                Some(r) => r.clone(),
                None => match runs.last() {
                    Some(r) => bail!(
                        "{project}/{service} has no finished run yet; run {} is going \
                         (`dockmaster job logs {project}/{service} {} -f` follows it)",
                        r.seq,
                        r.seq
                    ),
                    None => bail!("{project}/{service} has no runs yet"),
                },
            }
        }
    };
    if record.result == RunResult::Running {
        return live_log(root, &record, tail, &args);
    }
    let path = dir.log_path(record.seq);
    if !path.exists() {
        // A run that never started a container has no output; say why instead.
        eprintln!(
            "dockmaster: run {} of {project}/{service} kept no output{}",
            record.seq,
            record
                .error
                .as_deref()
                .map(|e| format!(" ({})", one_line(e)))
                .unwrap_or_default()
        );
        return Ok(0);
    }
    print_records(&LogReader::open(&path)?, tail, args.timestamps)?;
    Ok(0)
}

/// A run still going has no kept log yet: its container's log, followed with `-f`.
fn live_log(
    root: &Path,
    record: &RunRecord,
    tail: Option<usize>,
    args: &LogsArgs,
) -> anyhow::Result<i32> {
    let Some(id) = record
        .container_id
        .as_deref()
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
    else {
        eprintln!(
            "dockmaster: run {} of {}/{} is starting; no output yet",
            record.seq, record.project, record.service
        );
        return Ok(0);
    };
    let paths = ContainerStore::new(root).paths(id);
    let reader = LogReader::open(paths.log())
        .with_context(|| format!("reading the log of run {}", record.seq))?;
    print_records(&reader, tail, args.timestamps)?;
    if args.follow {
        follow_until_stopped(
            reader,
            &paths,
            Duration::from_millis(100),
            args.timestamps,
            "",
        )?;
    }
    Ok(0)
}

/// Prints the records of a log (the last `tail` of them), each on the stream it came from,
/// like `dockmaster logs`.
fn print_records(reader: &LogReader, tail: Option<usize>, timestamps: bool) -> anyhow::Result<()> {
    match tail {
        Some(n) => {
            for rec in reader.tail(n)? {
                emit(&rec, timestamps)?;
            }
        }
        None => {
            for rec in reader.records() {
                emit(&rec?, timestamps)?;
            }
        }
    }
    Ok(())
}

fn emit(rec: &LogRecord, timestamps: bool) -> std::io::Result<()> {
    super::container::print_log_record(rec, timestamps, "")
}

// ---------------------------------------------------------------------------------------------
// Rendering (the same table shape as `status` and `history`)

fn table(rows: &[Vec<String>]) -> String {
    super::admin::table(rows, "")
}

/// `5m ago`, `1h2m ago`, `just now`.
fn age(now: SystemTime, at: SystemTime) -> String {
    match now.duration_since(at) {
        Ok(d) if d.as_secs() > 0 => format!("{} ago", super::admin::duration_text(d.as_secs())),
        _ => "just now".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{Concurrency, Trigger};

    const NOW: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn record(seq: u64, result: RunResult, exit_code: Option<i32>) -> RunRecord {
        RunRecord {
            seq,
            project: "shop".into(),
            service: "backup".into(),
            trigger: Trigger::Schedule,
            scheduled_for: Some(at(NOW - 3600)),
            attempt: 1,
            generation: 2,
            container: None,
            container_id: None,
            started: at(NOW - 3599),
            finished: (result != RunResult::Running).then(|| at(NOW - 3509)),
            result,
            exit_code,
            error: (result == RunResult::Failed).then(|| "exited with code 3\nfor real".into()),
        }
    }

    #[test]
    fn job_names() {
        assert_eq!(parse_job_name("shop/backup").unwrap(), ("shop", "backup"));
        for bad in ["shop", "/backup", "shop/", "a/b/c", "../x", "shop/..", ""] {
            let err = parse_job_name(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid job name"), "{bad}: {err}");
        }
        let long = format!("shop/{}", "x".repeat(300));
        assert!(parse_job_name(&long).is_err());
    }

    #[test]
    fn jobs_table() {
        let info = JobInfo {
            project: "shop".into(),
            service: "backup".into(),
            schedule: "0 3 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            concurrency: Concurrency::Forbid,
            timeout: None,
            generation: 2,
            next_run: Some("2023-11-15T03:00:00+01:00".into()),
            running: vec![4],
            last_run: Some(record(3, RunResult::Failed, Some(3))),
        };
        let idle = JobInfo {
            service: "report".into(),
            schedule: "@hourly".into(),
            time_zone: "UTC".into(),
            next_run: None,
            running: vec![],
            last_run: None,
            ..info.clone()
        };
        assert_eq!(
            render_jobs(&[info, idle], at(NOW)),
            "\
JOB          SCHEDULE   ZONE           NEXT RUN                   LAST RUN  RESULT           RUNNING
shop/backup  0 3 * * *  Europe/Berlin  2023-11-15T03:00:00+01:00  59m ago   failed (exit 3)  1
shop/report  @hourly    UTC            -                          -         -                0
"
        );
        assert_eq!(render_jobs(&[], at(NOW)), "no jobs\n");
    }

    #[test]
    fn history_table_in_the_jobs_zone() {
        let mut manual = record(5, RunResult::Running, None);
        manual.trigger = Trigger::Manual;
        manual.scheduled_for = None;
        let runs = [record(3, RunResult::Failed, Some(3)), manual];
        let tz = crate::schedule::parse_time_zone("Europe/Berlin").unwrap();
        assert_eq!(
            render_history(&runs, &tz, at(NOW)),
            "\
RUN  TRIGGER   SCHEDULED FOR              STARTED                    DURATION  RESULT   EXIT  ERROR
3    schedule  2023-11-14T22:13:20+01:00  2023-11-14T22:13:21+01:00  1m30s     failed   3     exited with code 3; for real
5    manual    -                          2023-11-14T22:13:21+01:00  59m59s    running  -     -
"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(process_code(0), 0);
        assert_eq!(process_code(3), 3);
        assert_eq!(process_code(137), 137);
        assert_eq!(process_code(256), 1);
        assert_eq!(process_code(-1), 255);
    }
}
