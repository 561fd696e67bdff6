//! The cgroup v2 files: one unified directory, controllers enabled from the parents.

use std::path::Path;

use super::fsio;
use super::{
    shares_to_weight, v1::pids_value, CgroupError, Controller, Resources, Stats,
    DEFAULT_CPU_PERIOD, V2_CONTROLLERS,
};

/// The controllers of [`V2_CONTROLLERS`] that the root offers.
pub(super) fn wanted_controllers(root: &Path) -> Result<Vec<Controller>, CgroupError> {
    let offered = fsio::read_small(&root.join("cgroup.controllers"))?;
    let offered: Vec<&str> = offered.split_whitespace().collect();
    Ok(V2_CONTROLLERS
        .into_iter()
        .filter(|c| offered.contains(&c.name()))
        .collect())
}

/// Enables `wanted` in `dir/cgroup.subtree_control`, writing only those not yet enabled,
/// in one write (`+cpu +memory +pids`).
pub(super) fn enable_controllers(dir: &Path, wanted: &[Controller]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let current = fsio::read_small(&path)?;
    let enabled: Vec<&str> = current.split_whitespace().collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !enabled.contains(&c.name()))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fsio::write(&path, &missing.join(" "))
}

/// "max" for unlimited (-1), else the number.
fn limit_value(value: i64) -> String {
    if value < 0 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

/// `memory.swap.max` from the OCI memory+swap value: v2 limits swap alone.
fn swap_value(r: &Resources) -> Option<String> {
    match (r.memory_limit, r.memory_swap) {
        (Some(-1), None) | (_, Some(-1)) => Some("max".to_string()),
        // validate() guarantees limit > 0 and swap >= limit here.
        (Some(limit), Some(swap)) => Some((swap - limit).to_string()),
        (_, None) => None,
        (None, Some(_)) => None,
    }
}

pub(super) fn apply(dir: &Path, r: &Resources) -> Result<(), CgroupError> {
    if let Some(swap) = swap_value(r) {
        let path = dir.join("memory.swap.max");
        if path.exists() {
            fsio::write(&path, &swap)?;
        } else {
            tracing::debug!(path = %path.display(), "no swap accounting, memory_swap not applied");
        }
    }
    if let Some(limit) = r.memory_limit {
        fsio::write(&dir.join("memory.max"), &limit_value(limit))?;
    }
    if let Some(reservation) = r.memory_reservation {
        fsio::write(&dir.join("memory.low"), &limit_value(reservation))?;
    }
    if r.cpu_quota.is_some() || r.cpu_period.is_some() {
        let path = dir.join("cpu.max");
        let quota = match r.cpu_quota {
            Some(quota) => limit_value(quota),
            // Only the period changes: keep the quota in force.
            None => fsio::read_small(&path)?
                .split_whitespace()
                .next()
                .unwrap_or("max")
                .to_string(),
        };
        let period = r.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD);
        fsio::write(&path, &format!("{quota} {period}"))?;
    }
    if let Some(shares) = r.cpu_shares {
        fsio::write(
            &dir.join("cpu.weight"),
            &shares_to_weight(shares).to_string(),
        )?;
    }
    if let Some(limit) = r.pids_limit {
        fsio::write(&dir.join("pids.max"), &pids_value(limit))?;
    }
    Ok(())
}

pub(super) fn stats(dir: &Path) -> Result<Stats, CgroupError> {
    let max_path = dir.join("memory.max");
    let memory_limit_bytes = match fsio::read_optional(&max_path)? {
        Some(text) if text.trim() == "max" => None,
        Some(text) => Some(fsio::parse_u64(&max_path, text.trim())?),
        None => None,
    };
    Ok(Stats {
        cpu_usage_ns: fsio::read_keyed(&dir.join("cpu.stat"), "usage_usec")?
            .map(|usec| usec.saturating_mul(1000)),
        memory_usage_bytes: fsio::read_u64(&dir.join("memory.current"))?,
        memory_limit_bytes,
        oom_kills: fsio::read_keyed(&dir.join("memory.events"), "oom_kill")?,
        pids_current: fsio::read_u64(&dir.join("pids.current"))?,
    })
}
