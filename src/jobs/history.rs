//! The runs of each job, kept on disk next to the project's generations:
//! `<root>/projects/<project>/jobs/<service>/runs/<seq>.json` (the record) and `<seq>.log`
//! (its output, in the runtime's JSON-lines log format, the last [`MAX_LOG_BYTES`]), plus
//! `state.json` (the last fire time handled, for missed runs after downtime). Records are
//! written atomically; `down` removes them with the project.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::runtime::logs::LogReader;

/// The most log kept per run (the end of it).
pub const MAX_LOG_BYTES: u64 = 1 << 20;
/// A run record is a few hundred bytes; anything bigger is not ours.
const MAX_RECORD_BYTES: u64 = 64 << 10;

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A fire time of the schedule.
    Schedule,
    /// A fire time missed while the agent was down, run at start.
    Missed,
    /// `dockmaster job run`.
    Manual,
    /// A retry of a failed run (restart policy).
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Missed => "missed",
            Trigger::Manual => "manual",
            Trigger::Retry => "retry",
        }
    }
}

/// How a run ended (`dockmaster_job_runs_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    Running,
    /// Exit code 0.
    Succeeded,
    /// Another exit code, or the container could not be created or started.
    Failed,
    /// Stopped after the job's timeout.
    Timeout,
    /// Stopped because a new run replaced it (`concurrency: replace`).
    Replaced,
    /// Its container vanished without an exit code (removed by hand, or the host lost
    /// power and the shim with it).
    Lost,
}

impl RunResult {
    /// Results a finished run can have (metrics create their series at zero), plus
    /// `skipped`, counted for fire times dropped by `concurrency: forbid`.
    pub const METRIC_RESULTS: [&'static str; 6] = [
        "succeeded",
        "failed",
        "timeout",
        "replaced",
        "lost",
        "skipped",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Running => "running",
            RunResult::Succeeded => "succeeded",
            RunResult::Failed => "failed",
            RunResult::Timeout => "timeout",
            RunResult::Replaced => "replaced",
            RunResult::Lost => "lost",
        }
    }

    /// Counts as a failure (last failure timestamp, retries).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            RunResult::Failed | RunResult::Timeout | RunResult::Lost
        )
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Per job, increasing from 1.
    pub seq: u64,
    pub project: String,
    pub service: String,
    pub trigger: Trigger,
    /// The fire time it stands for (none for manual runs).
    #[serde(
        default,
        with = "crate::runtime::protocol::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduled_for: Option<SystemTime>,
    /// 1 for the first attempt, then one more per retry.
    pub attempt: u32,
    /// The generation whose definition it ran.
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(with = "crate::runtime::protocol::rfc3339")]
    pub started: SystemTime,
    #[serde(
        default,
        with = "crate::runtime::protocol::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished: Option<SystemTime>,
    pub result: RunResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it failed when that is not an exit code (could not start, timed out, lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunRecord {
    /// How long it ran (so far, for a running one).
    pub fn duration(&self, now: SystemTime) -> Duration {
        self.finished
            .unwrap_or(now)
            .duration_since(self.started)
            .unwrap_or_default()
    }
}

/// What the scheduler keeps of a job across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// Fire times up to this one were handled (run, skipped, or before the job existed).
    #[serde(
        default,
        with = "crate::runtime::protocol::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_fire: Option<SystemTime>,
}

/// The directory of one job.
#[derive(Debug, Clone)]
pub struct JobDir {
    dir: PathBuf,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> std::io::Error {
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl JobDir {
    pub fn new(root: &Path, project: &str, service: &str) -> JobDir {
        JobDir {
            dir: root
                .join("projects")
                .join(project)
                .join("jobs")
                .join(service),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn runs(&self) -> PathBuf {
        self.dir.join("runs")
    }

    pub fn record_path(&self, seq: u64) -> PathBuf {
        self.runs().join(format!("{seq:08}.json"))
    }

    pub fn log_path(&self, seq: u64) -> PathBuf {
        self.runs().join(format!("{seq:08}.log"))
    }

    /// Every readable run record, oldest first.
    pub fn list(&self) -> std::io::Result<Vec<RunRecord>> {
        let runs = self.runs();
        let files = crate::fsutil::numbered_json_files(&runs)
            .map_err(io(format!("read {}", runs.display())))?;
        let mut out: Vec<RunRecord> = files
            .into_iter()
            .filter_map(|(_, path)| read_bounded(&path))
            .collect();
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    /// One run.
    pub fn load(&self, seq: u64) -> Option<RunRecord> {
        read_bounded(&self.record_path(seq))
    }

    /// The number the next run gets.
    pub fn next_seq(&self) -> std::io::Result<u64> {
        Ok(self.list()?.last().map_or(1, |r| r.seq + 1))
    }

    pub fn save(&self, record: &RunRecord) -> std::io::Result<()> {
        let runs = self.runs();
        std::fs::create_dir_all(&runs).map_err(io(format!("create {}", runs.display())))?;
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let path = self.record_path(record.seq);
        crate::fsutil::write_atomic(&path, &bytes).map_err(io(format!("write {}", path.display())))
    }

    /// Drops the oldest finished runs beyond `keep` (running ones are never dropped).
    pub fn prune(&self, keep: usize) -> std::io::Result<()> {
        let finished: Vec<u64> = self
            .list()?
            .into_iter()
            .filter(|r| r.result != RunResult::Running)
            .map(|r| r.seq)
            .collect();
        if finished.len() > keep {
            for seq in &finished[..finished.len() - keep] {
                let _ = std::fs::remove_file(self.log_path(*seq));
                let _ = std::fs::remove_file(self.record_path(*seq));
            }
        }
        Ok(())
    }

    pub fn state(&self) -> JobState {
        std::fs::read(self.dir.join("state.json"))
            .ok()
            .filter(|b| b.len() as u64 <= MAX_RECORD_BYTES)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_state(&self, state: &JobState) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(io(format!("create {}", self.dir.display())))?;
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        let path = self.dir.join("state.json");
        crate::fsutil::write_atomic(&path, &bytes).map_err(io(format!("write {}", path.display())))
    }

    /// Copies the end of a container's log (`container_log`, the live file; rotated ones
    /// are read too) into the run's log: at most [`MAX_LOG_BYTES`], whole records.
    pub fn keep_log(&self, seq: u64, container_log: &Path) -> std::io::Result<()> {
        let reader = LogReader::open(container_log).map_err(std::io::Error::other)?;
        let mut kept: VecDeque<Vec<u8>> = VecDeque::new();
        let mut bytes = 0u64;
        for record in reader.records().flatten() {
            let line = serde_json::to_vec(&serde_json::json!({
                "log": record.log,
                "stream": record.stream.as_str(),
                "time": record.time,
            }))
            .map_err(std::io::Error::other)?;
            bytes += line.len() as u64 + 1;
            kept.push_back(line);
            while bytes > MAX_LOG_BYTES {
                match kept.pop_front() {
                    Some(old) => bytes -= old.len() as u64 + 1,
                    None => break,
                }
            }
        }
        let runs = self.runs();
        std::fs::create_dir_all(&runs).map_err(io(format!("create {}", runs.display())))?;
        let mut out = Vec::with_capacity(bytes as usize);
        for line in kept {
            out.write_all(&line)?;
            out.push(b'\n');
        }
        let path = self.log_path(seq);
        crate::fsutil::write_atomic(&path, &out).map_err(io(format!("write {}", path.display())))
    }
}

fn read_bounded(path: &Path) -> Option<RunRecord> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_RECORD_BYTES {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The jobs with a directory under `project` (services with runs or state).
pub fn job_services(root: &Path, project: &str) -> Vec<String> {
    let dir = root.join("projects").join(project).join("jobs");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, result: RunResult) -> RunRecord {
        RunRecord {
            seq,
            project: "p".into(),
            service: "backup".into(),
            trigger: Trigger::Schedule,
            scheduled_for: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(60)),
            attempt: 1,
            generation: 3,
            container: Some(format!("p-backup-run-{seq}")),
            container_id: None,
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(61),
            finished: (result != RunResult::Running)
                .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(64)),
            result,
            exit_code: (result == RunResult::Succeeded).then_some(0),
            error: None,
        }
    }

    #[test]
    fn records_round_trip_and_prune_keeps_the_newest_and_running() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = JobDir::new(tmp.path(), "p", "backup");
        assert_eq!(dir.next_seq().unwrap(), 1);
        dir.save(&record(1, RunResult::Running)).unwrap();
        for seq in 2..=6 {
            dir.save(&record(seq, RunResult::Succeeded)).unwrap();
            std::fs::write(dir.log_path(seq), b"{}\n").unwrap();
        }
        assert_eq!(dir.next_seq().unwrap(), 7);
        assert_eq!(dir.load(3), Some(record(3, RunResult::Succeeded)));
        assert_eq!(
            dir.load(3).unwrap().duration(SystemTime::now()),
            Duration::from_secs(3)
        );
        dir.prune(2).unwrap();
        let seqs: Vec<u64> = dir.list().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 5, 6]);
        assert!(!dir.log_path(4).exists());
        assert!(dir.log_path(6).exists());
        assert_eq!(job_services(tmp.path(), "p"), vec!["backup".to_string()]);
    }

    #[test]
    fn state_survives_and_garbage_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = JobDir::new(tmp.path(), "p", "backup");
        assert_eq!(dir.state(), JobState::default());
        let s = JobState {
            last_fire: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(120)),
        };
        dir.save_state(&s).unwrap();
        assert_eq!(dir.state(), s);
        std::fs::create_dir_all(dir.record_path(9).parent().unwrap()).unwrap();
        std::fs::write(dir.record_path(9), b"not json").unwrap();
        assert!(dir.list().unwrap().is_empty());
    }

    #[test]
    fn keep_log_keeps_the_end_in_whole_records() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("container.log");
        let mut text = String::new();
        // 3 MiB of records: only the last MiB is kept.
        let line = "x".repeat(1000);
        for i in 0..3000 {
            text.push_str(
                &serde_json::json!({"log": format!("{i} {line}\n"), "stream": "stdout",
                    "time": "2026-11-24T00:00:00.000000000Z"})
                .to_string(),
            );
            text.push('\n');
        }
        std::fs::write(&log, text).unwrap();
        let dir = JobDir::new(tmp.path(), "p", "backup");
        dir.keep_log(1, &log).unwrap();
        let kept = std::fs::read_to_string(dir.log_path(1)).unwrap();
        assert!(kept.len() as u64 <= MAX_LOG_BYTES);
        assert!(kept.len() as u64 > MAX_LOG_BYTES - 2000);
        let last = kept.lines().last().unwrap();
        assert!(last.contains("\"2999 x"), "{last}");
        for l in kept.lines() {
            assert!(serde_json::from_str::<serde_json::Value>(l).is_ok());
        }
    }
}
