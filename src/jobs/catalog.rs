//! Which jobs exist: those of each project's last good generation (a job of a commit that
//! failed its apply never runs; the previous definition keeps running).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::manifest::model::Project;
use crate::reconcile::generations::{self, Generation};
use crate::schedule::{format_rfc3339, Timestamp};

use super::history::{JobDir, RunResult};
use super::spec::JobSpec;
use super::JobInfo;

/// One job of a deployed project.
#[derive(Debug, Clone)]
pub struct Job {
    pub project: String,
    pub service: String,
    pub spec: JobSpec,
    /// The generation it comes from, with its project (pinned images) for creating runs.
    pub generation: Arc<Generation>,
    pub loaded: Arc<Project>,
    /// The service's config hash in that generation: a change means a new definition.
    pub hash: String,
}

impl Job {
    pub fn key(&self) -> (String, String) {
        (self.project.clone(), self.service.clone())
    }
}

/// Projects with recorded generations.
pub fn projects(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join("projects"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("generations").is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The jobs of `project`'s last good generation.
pub fn project_jobs(root: &Path, project: &str) -> Result<Vec<Job>, String> {
    let Some(generation) =
        generations::last_good(root, project, None).map_err(|e| e.to_string())?
    else {
        return Ok(Vec::new());
    };
    jobs_of(project, generation)
}

/// The jobs recorded in `generation`.
pub fn jobs_of(project: &str, generation: Generation) -> Result<Vec<Job>, String> {
    let has_job = generation.services.values().any(|r| {
        r.inputs
            .spec
            .get("x-dockmaster")
            .and_then(|x| x.get("schedule"))
            .is_some()
    });
    if !has_job {
        return Ok(Vec::new());
    }
    let loaded =
        Arc::new(crate::reconcile::apply::load_recorded(&generation).map_err(|e| e.to_string())?);
    let generation = Arc::new(generation);
    let mut out = Vec::new();
    for service in loaded.services.values() {
        let spec = match JobSpec::from_service(service) {
            Ok(Some(spec)) => spec,
            Ok(None) => continue,
            Err(e) => {
                return Err(format!(
                    "project {project}, generation {}: {e}",
                    generation.number
                ))
            }
        };
        out.push(Job {
            project: project.to_string(),
            service: service.name.clone(),
            spec,
            hash: generation
                .services
                .get(&service.name)
                .map(|r| r.hash.clone())
                .unwrap_or_default(),
            generation: generation.clone(),
            loaded: loaded.clone(),
        });
    }
    Ok(out)
}

/// Every job on the host; a project whose generation cannot be read is reported through
/// `problem` and skipped.
pub fn all(root: &Path, problem: &mut dyn FnMut(String)) -> Vec<Job> {
    let mut out = Vec::new();
    for project in projects(root) {
        match project_jobs(root, &project) {
            Ok(jobs) => out.extend(jobs),
            Err(e) => problem(e),
        }
    }
    out
}

/// What `dockmaster jobs` shows of `job` at `now`.
pub fn info(root: &Path, job: &Job, now: Timestamp) -> JobInfo {
    let runs = JobDir::new(root, &job.project, &job.service)
        .list()
        .unwrap_or_default();
    let tz = job.spec.schedule.time_zone();
    JobInfo {
        project: job.project.clone(),
        service: job.service.clone(),
        schedule: job.spec.schedule.as_str().to_string(),
        time_zone: tz.iana_name().unwrap_or("UTC").to_string(),
        concurrency: job.spec.concurrency,
        timeout: job.spec.timeout.map(|d| humantime_short(d.as_secs())),
        generation: job.generation.number,
        next_run: job
            .spec
            .schedule
            .next_after(now)
            .map(|t| format_rfc3339(t, tz)),
        running: runs
            .iter()
            .filter(|r| r.result == RunResult::Running)
            .map(|r| r.seq)
            .collect(),
        last_run: runs
            .into_iter()
            .rev()
            .find(|r| r.result != RunResult::Running),
    }
}

/// Every job's [`JobInfo`], by project and service.
pub fn list(root: &Path, now: Timestamp) -> Vec<JobInfo> {
    all(root, &mut |_| {})
        .iter()
        .map(|j| info(root, j, now))
        .collect()
}

/// `90` → `1m30s`, `3600` → `1h`.
pub fn humantime_short(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// A [`SystemTime`] as the scheduler's [`Timestamp`] (saturating at the representable range).
pub fn to_timestamp(t: SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or(if t < SystemTime::UNIX_EPOCH {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// A [`Timestamp`] as a [`SystemTime`].
pub fn to_system_time(t: Timestamp) -> SystemTime {
    SystemTime::from(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations() {
        assert_eq!(humantime_short(0), "0s");
        assert_eq!(humantime_short(90), "1m30s");
        assert_eq!(humantime_short(3600), "1h");
        assert_eq!(humantime_short(3661), "1h1m1s");
    }
}
