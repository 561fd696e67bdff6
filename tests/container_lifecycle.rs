//! Container lifecycle with real containers: run, logs, stop, kill, exec, rm, shims that
//! outlive their launcher, crash and shim-loss reporting, cleanup.
mod support;

use std::time::Duration;

use support::containers::{cgroup_dirs, mounts_under, Host, BUSYBOX};

#[test]
fn foreground_run_streams_output_and_returns_the_exit_code() {
    let host = Host::new();
    let out = host.sh(&[], "echo out; echo err >&2; exit 7");
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // --rm: nothing is left.
    assert!(host.all_ids().is_empty());
}
