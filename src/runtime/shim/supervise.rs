//! Supervision inside the shim: restart policies and healthchecks, driven by the shim's one
//! poll loop (timers are deadlines in its poll timeout; no threads).
//!
//! Restarts. When the init ended and its output is drained, the shim asks the restart policy
//! (`health::RestartPolicy`, Docker's rules). To restart it releases the engine's state and the
//! cgroup of the run that ended, but keeps the rootfs mount, the network namespace and
//! endpoints and the generated /etc files, waits the backoff (`health::Backoff`: 100 ms
//! doubling up to 1 min, reset after a run of 10 s) in state `restarting`, then creates and
//! starts the container again from the same bundle, logging to the same json-file log. The
//! exit record is written only when the shim ends for good. A container stopped through
//! dockmaster (`stop`; `kill` with SIGKILL or its stop signal; `rm -f`) is never restarted;
//! such a request during the backoff ends the shim at once.
//!
//! Healthchecks. Each probe is an exec of the test in the container (the same engine exec as
//! `dockmaster exec`, without a client): its stdout and stderr go to one pipe the shim reads
//! into a 4 KiB buffer, and it is killed at its timeout. Results feed `health::HealthMonitor`;
//! the state is written to `health.json` after every probe (synced when the status changes)
//! and served in the state answer. When the container turns unhealthy and its record has
//! `restart_unhealthy`, the shim stops it with its stop signal and grace period and restarts
//! it like a crash (same backoff), whatever the restart policy: the policy decides what
//! happens after an exit, the healthcheck restart is a separate opt-out feature.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use super::{exec, launch_init, release_engine, PendingStop, Shim, ShimError};
use crate::health::{Backoff, HealthMonitor, HealthStatus, ProbeOutput, ProbeResult};
use crate::runtime::container::{ContainerPaths, ContainerRecord};
use crate::runtime::engine::{self, Engine, ExecIo, Stdio};
use crate::runtime::logs::Stream;
use crate::runtime::protocol::{exit_code_and_signal, ErrorKind, ExecRequest, Response};

/// Reads of a probe's pipe per wakeup or drain (4 KiB each): a pipe holds 64 KiB.
const PROBE_READS: usize = 16;

/// What the shim knows about supervising its container.
#[derive(Debug)]
pub(super) struct Supervisor {
    /// Restarts so far (Docker's `RestartCount`).
    pub restart_count: u32,
    backoff: Backoff,
    /// Stopped through dockmaster: never restarted.
    pub manually_stopped: bool,
    /// The shim stopped the init because it turned unhealthy.
    unhealthy_stop: bool,
    /// While waiting to start the container again (state `restarting`).
    pub restart_at: Option<Instant>,
    /// Whether the OOM killer acted in the run that ended (its cgroup is gone by now).
    pub last_oom: bool,
    /// Why the shim gave up (a restart that could not start).
    pub error: Option<String>,
    pub health: Option<HealthMonitor>,
    next_probe_at: Option<Instant>,
    probe: Option<RunningProbe>,
}

/// A probe in flight.
#[derive(Debug)]
struct RunningProbe {
    pid: i32,
    pipe: Option<File>,
    output: ProbeOutput,
    start: SystemTime,
    started: Instant,
    deadline: Instant,
}

impl Supervisor {
    /// For a container that just started: the healthcheck, if any, is `starting`.
    pub fn new(record: &ContainerRecord, paths: &ContainerPaths) -> Supervisor {
        let now = Instant::now();
        let health = record
            .healthcheck
            .as_ref()
            .and_then(|h| h.probe(&record.shell))
            .map(|probe| HealthMonitor::new(probe, now));
        let next_probe_at = health.as_ref().map(|h| now + h.next_delay(now));
        let sup = Supervisor {
            restart_count: 0,
            backoff: Backoff::new(),
            manually_stopped: false,
            unhealthy_stop: false,
            restart_at: None,
            last_oom: false,
            error: None,
            health,
            next_probe_at,
            probe: None,
        };
        sup.persist_health(&record.id, paths, !record.auto_remove);
        sup
    }

    fn persist_health(&self, id: &str, paths: &ContainerPaths, durable: bool) {
        if let Some(h) = &self.health {
            if let Err(e) = h.state().write(&paths.health(), durable) {
                eprintln!("shim {id}: write {}: {e}", paths.health().display());
            }
        }
    }
}

impl Shim {
    // ---- restarts --------------------------------------------------------------------------

    /// Whether the init that ended (and whose output is drained) is started again.
    pub(super) fn should_restart(&self) -> bool {
        let Some((status, _)) = self.init_status else {
            return false;
        };
        if self.record.auto_remove || self.sup.manually_stopped {
            return false;
        }
        if self.sup.unhealthy_stop && self.record.restart_unhealthy {
            return true;
        }
        let (exit_code, _) = exit_code_and_signal(status);
        self.record
            .restart
            .should_restart(exit_code, self.sup.restart_count, false)
    }

    /// Waiting for a restart: in the backoff, or ended and about to be restarted once its
    /// output is drained (observers never see `exited` for a run that will be restarted).
    pub(super) fn restarting(&self) -> bool {
        self.sup.restart_at.is_some() || self.should_restart()
    }

    /// The init ended for a restart: releases the run's engine state and cgroup, and waits
    /// the backoff (state `restarting`).
    pub(super) fn schedule_restart(&mut self) {
        let Some((status, finished_at)) = self.init_status else {
            return;
        };
        // The drain may have timed out: whatever still holds the old pipes is cut off.
        if let Some(logs) = self.logs.as_mut() {
            logs.close_stream(Stream::Stdout);
            logs.close_stream(Stream::Stderr);
        }
        self.stdout = None;
        self.stderr = None;
        self.sup.last_oom = self.oom_killed();
        self.abandon_probe();
        // Exec'd processes died with the PID namespace; answer whoever still waits.
        self.reap();
        let waiting: Vec<u64> = std::mem::take(&mut self.execs).into_values().collect();
        for client in waiting {
            self.respond(
                client,
                &Response::error(ErrorKind::Conflict, "the container stopped"),
            );
        }
        // Only the shim's own (unhealthy) stops can be pending: a client's stop is a manual
        // stop, which is never restarted.
        self.stops.clear();
        if let Err(e) = release_engine(&self.id, &self.paths) {
            eprintln!("shim {}: release the run that ended: {e:#}", self.id);
        }
        self.cgroup = None;
        let ran = finished_at
            .duration_since(self.started_at)
            .unwrap_or_default();
        let delay = self.sup.backoff.next(ran);
        self.sup.restart_count += 1;
        let now = Instant::now();
        self.sup.restart_at = Some(now + delay);
        // Deleting the engine's state allocated: give it back once quiet.
        if self.trim_at.is_none() {
            self.trim_at = Some(now + super::TRIM_AFTER_START);
        }
        let (exit_code, _) = exit_code_and_signal(status);
        let why = if self.sup.unhealthy_stop {
            "it was unhealthy"
        } else {
            "restart policy"
        };
        self.sup.unhealthy_stop = false;
        eprintln!(
            "shim {}: exited with {exit_code} after {ran:?}; restart {} in {delay:?} ({why})",
            self.id, self.sup.restart_count
        );
        // A foreground `run` returns with the first exit, as `docker run` does; the
        // container goes on in the background.
        if let Some(s) = self.status.as_mut() {
            let _ = writeln!(s, "exited {exit_code}");
        }
        self.status = None;
        self.attach_out = None;
        self.attach_err = None;
    }

    /// Starts the container again after the backoff.
    pub(super) fn restart(&mut self) -> Result<(), ShimError> {
        self.sup.restart_at = None;
        let (pid, stdout, stderr) = launch_init(&self.engine, &self.id, &self.paths, &self.record)?;
        let now = Instant::now();
        self.init_pid = pid;
        self.started_at = SystemTime::now();
        self.stdout = Some(stdout);
        self.stderr = Some(stderr);
        self.init_status = None;
        self.drain_deadline = None;
        self.cgroup = engine::container_cgroup(&self.id);
        // Starting the engine allocated: give it back once quiet again.
        self.trim_at = Some(now + super::TRIM_AFTER_START);
        if let Some(h) = self.sup.health.as_mut() {
            let changed = h.restarted(now);
            self.sup.next_probe_at = Some(now + h.next_delay(now));
            self.sup
                .persist_health(&self.id, &self.paths, changed && !self.record.auto_remove);
        }
        Ok(())
    }

    /// Stopped through dockmaster: a pending restart is cancelled, none will follow.
    pub(super) fn stop_for_good(&mut self) {
        self.sup.manually_stopped = true;
        self.sup.restart_at = None;
    }

    // ---- healthchecks ----------------------------------------------------------------------

    /// Starts a due probe and kills one past its timeout. Called on every loop turn.
    pub(super) fn supervise_tick(&mut self) {
        let now = Instant::now();
        if self.sup.probe.as_ref().is_some_and(|p| now >= p.deadline) {
            self.probe_timed_out();
        }
        // Not while stopping: the container is going away.
        let due = self.sup.next_probe_at.is_some_and(|t| now >= t);
        if due && self.sup.probe.is_none() && self.init_status.is_none() && self.stops.is_empty() {
            self.sup.next_probe_at = None;
            self.start_probe();
        }
    }

    /// The next moment [`Shim::supervise_tick`] or the restart has something to do.
    pub(super) fn supervision_deadline(&self) -> Option<Instant> {
        let probe_deadline = self.sup.probe.as_ref().map(|p| p.deadline);
        let next_probe = self
            .sup
            .next_probe_at
            .filter(|_| self.sup.probe.is_none() && self.init_status.is_none());
        [probe_deadline, next_probe, self.sup.restart_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The running probe's output pipe, for the poll set (-1: none).
    pub(super) fn probe_fd(&self) -> RawFd {
        self.sup
            .probe
            .as_ref()
            .and_then(|p| p.pipe.as_ref())
            .map_or(-1, |f| f.as_raw_fd())
    }

    pub(super) fn is_probe(&self, pid: i32) -> bool {
        self.sup.probe.as_ref().is_some_and(|p| p.pid == pid)
    }

    fn start_probe(&mut self) {
        let Some(health) = &self.sup.health else {
            return;
        };
        let args = health.probe().args.clone();
        let timeout = health.probe().timeout;
        let started = Instant::now();
        let start = SystemTime::now();
        match self.spawn_probe(args) {
            Ok((pid, pipe)) => {
                self.sup.probe = Some(RunningProbe {
                    pid,
                    pipe: Some(pipe),
                    output: ProbeOutput::new(),
                    start,
                    started,
                    deadline: started + timeout,
                });
                // It may have ended already.
                self.reap();
            }
            Err(message) => {
                let result = ProbeResult::not_started(start, SystemTime::now(), message);
                self.record_probe(result, started);
            }
        }
    }

    /// Execs the probe in the container with stdout and stderr on one pipe; returns its pid
    /// and the pipe's read end (non-blocking).
    fn spawn_probe(&mut self, args: Vec<String>) -> Result<(i32, File), String> {
        let req = ExecRequest {
            args,
            ..ExecRequest::default()
        };
        let process = exec::exec_process(
            &self.process,
            &req,
            &self.paths.rootfs(),
            &self.record.image,
        )
        .map_err(|(_, message)| message)?;
        let (r, w) = super::pipe().map_err(|e| format!("create the probe's pipe: {e}"))?;
        let w2 = w
            .try_clone()
            .map_err(|e| format!("create the probe's pipe: {e}"))?;
        let stdin = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
        let pid = self
            .engine
            .exec(
                &self.id,
                &process,
                ExecIo::Fds(Stdio {
                    stdin: stdin.into(),
                    stdout: w,
                    stderr: w2,
                }),
            )
            .map_err(|e| e.to_string())?;
        super::set_nonblocking(r.as_raw_fd());
        Ok((pid, File::from(r)))
    }

    /// Moves what the probe wrote into its capped buffer (the rest is read and dropped, so a
    /// chatty probe never blocks on a full pipe).
    pub(super) fn read_probe_output(&mut self) {
        let Some(probe) = self.sup.probe.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        for _ in 0..PROBE_READS {
            let Some(pipe) = probe.pipe.as_mut() else {
                return;
            };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    probe.pipe = None;
                    return;
                }
                Ok(n) => probe.output.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// The probe's process was reaped with wait status `status`.
    pub(super) fn probe_exited(&mut self, status: i32) {
        // What is already in the pipe is part of the result; a background process the probe
        // left holding the pipe is not waited for.
        self.read_probe_output();
        let Some(probe) = self.sup.probe.take() else {
            return;
        };
        // The container ended meanwhile: the probe died with it, its verdict means nothing.
        if self.init_status.is_some() {
            return;
        }
        let (exit_code, _) = exit_code_and_signal(status);
        let result = ProbeResult {
            start: probe.start,
            end: SystemTime::now(),
            exit_code,
            output: probe.output.into_string(),
        };
        self.record_probe(result, probe.started);
    }

    /// Kills the probe at its timeout and records the failure; its process is reaped later
    /// like any other child.
    fn probe_timed_out(&mut self) {
        let Some(probe) = self.sup.probe.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child, not yet reaped (reaping clears `probe`).
        unsafe { libc::kill(probe.pid, libc::SIGKILL) };
        let timeout = probe.deadline.saturating_duration_since(probe.started);
        let result = ProbeResult::timed_out(probe.start, SystemTime::now(), timeout);
        self.record_probe(result, probe.started);
    }

    /// Forgets a probe in flight (the container ended or the shim is ending).
    pub(super) fn abandon_probe(&mut self) {
        if let Some(probe) = self.sup.probe.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(probe.pid, libc::SIGKILL) };
        }
        self.sup.next_probe_at = None;
    }

    fn record_probe(&mut self, result: ProbeResult, started: Instant) {
        let Some(health) = self.sup.health.as_mut() else {
            return;
        };
        let changed = health.record(result, started);
        let now = Instant::now();
        self.sup.next_probe_at = Some(now + health.next_delay(now));
        self.sup.persist_health(
            &self.id,
            &self.paths,
            changed.is_some() && !self.record.auto_remove,
        );
        if changed == Some(HealthStatus::Unhealthy) {
            self.stop_unhealthy();
        }
        // The exec allocated: give it back once quiet.
        if self.trim_at.is_none() {
            self.trim_at = Some(now + super::TRIM_AFTER_START);
        }
    }

    /// The container turned unhealthy: stop it (stop signal, then SIGKILL after its grace
    /// period) so that the restart path starts it again.
    fn stop_unhealthy(&mut self) {
        if !self.record.restart_unhealthy
            || self.sup.manually_stopped
            || self.sup.unhealthy_stop
            || self.init_status.is_some()
        {
            return;
        }
        eprintln!(
            "shim {}: unhealthy: stopping it to restart it ({} s grace)",
            self.id, self.record.stop_grace_secs
        );
        self.sup.unhealthy_stop = true;
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.init_pid, self.record.stop_signal) };
        self.stops.push(PendingStop {
            client: None,
            deadline: Instant::now() + Duration::from_secs(self.record.stop_grace_secs),
            killed: false,
        });
    }
}
