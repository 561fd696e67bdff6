//! The cgroup v1 files: one directory per controller hierarchy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::fsio;
use super::{clamp_shares, CgroupError, Controller, Resources, Stats};

/// v1 reports "no limit" as LONG_MAX rounded down to a page; anything this large is no
/// real limit.
const UNLIMITED_THRESHOLD: u64 = 1 << 62;

fn need<'a>(
    dirs: &'a BTreeMap<Controller, PathBuf>,
    controller: Controller,
    needed_for: &'static str,
) -> Result<&'a Path, CgroupError> {
    dirs.get(&controller)
        .map(PathBuf::as_path)
        .ok_or(CgroupError::ControllerUnavailable {
            controller,
            needed_for,
        })
}

pub(super) fn apply(
    dirs: &BTreeMap<Controller, PathBuf>,
    r: &Resources,
) -> Result<(), CgroupError> {
    if r.touches_memory() {
        apply_memory(need(dirs, Controller::Memory, "memory limits")?, r)?;
    }
    if r.touches_cpu() {
        let dir = need(dirs, Controller::Cpu, "cpu limits")?;
        // Period before quota, as runc: the quota is meant relative to the new period.
        if let Some(period) = r.cpu_period {
            fsio::write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
        }
        if let Some(quota) = r.cpu_quota {
            fsio::write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let Some(shares) = r.cpu_shares {
            fsio::write(&dir.join("cpu.shares"), &clamp_shares(shares).to_string())?;
        }
    }
    if let Some(limit) = r.pids_limit {
        let dir = need(dirs, Controller::Pids, "the pids limit")?;
        fsio::write(&dir.join("pids.max"), &pids_value(limit))?;
    }
    Ok(())
}

/// `pids.max` content for Docker's `--pids-limit` (0 or negative: unlimited).
pub(super) fn pids_value(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

fn apply_memory(dir: &Path, r: &Resources) -> Result<(), CgroupError> {
    let limit_file = dir.join("memory.limit_in_bytes");
    let memsw_file = dir.join("memory.memsw.limit_in_bytes");
    let mut swap = r.memory_swap;
    // Unlimited memory with swap unset means unlimited swap too, or the kernel refuses
    // a memory limit above the old memsw limit (runc does the same).
    if r.memory_limit == Some(-1) && swap.is_none() {
        swap = Some(-1);
    }
    if swap.is_some() && !memsw_file.exists() {
        tracing::debug!(path = %memsw_file.display(), "no swap accounting, memory_swap not applied");
        swap = None;
    }
    match (r.memory_limit, swap) {
        (Some(limit), Some(swap)) => {
            // The kernel wants limit <= memsw at every moment: raise memsw first when
            // growing, lower the limit first when shrinking.
            let current = fsio::read_u64(&limit_file)?.unwrap_or(0);
            let swap_first = swap == -1 || i128::from(current) < i128::from(swap);
            if swap_first {
                fsio::write(&memsw_file, &swap.to_string())?;
                fsio::write(&limit_file, &limit.to_string())?;
            } else {
                fsio::write(&limit_file, &limit.to_string())?;
                fsio::write(&memsw_file, &swap.to_string())?;
            }
        }
        (Some(limit), None) => fsio::write(&limit_file, &limit.to_string())?,
        (None, Some(swap)) => fsio::write(&memsw_file, &swap.to_string())?,
        (None, None) => {}
    }
    if let Some(reservation) = r.memory_reservation {
        fsio::write(
            &dir.join("memory.soft_limit_in_bytes"),
            &reservation.to_string(),
        )?;
    }
    Ok(())
}

pub(super) fn stats(dirs: &BTreeMap<Controller, PathBuf>) -> Result<Stats, CgroupError> {
    let read = |controller: Controller, file: &str| -> Result<Option<u64>, CgroupError> {
        match dirs.get(&controller) {
            Some(dir) => fsio::read_u64(&dir.join(file)),
            None => Ok(None),
        }
    };
    let oom_kills = match dirs.get(&Controller::Memory) {
        Some(dir) => fsio::read_keyed(&dir.join("memory.oom_control"), "oom_kill")?,
        None => None,
    };
    Ok(Stats {
        cpu_usage_ns: read(Controller::Cpuacct, "cpuacct.usage")?,
        memory_usage_bytes: read(Controller::Memory, "memory.usage_in_bytes")?,
        memory_limit_bytes: read(Controller::Memory, "memory.limit_in_bytes")?
            .filter(|v| *v < UNLIMITED_THRESHOLD),
        oom_kills,
        pids_current: read(Controller::Pids, "pids.current")?,
    })
}
