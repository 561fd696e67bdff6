//! Stopping and removing containers, for the CLI and the apply executor alike: through the
//! shim when it answers, by the container's cgroup when the shim is gone.

use std::time::{Duration, Instant};

use crate::error::{Categorized, Category};
use crate::runtime::container::{
    observe, process_is_shim, read_pid, ContainerError, ContainerPaths, ContainerRecord,
    ContainerStore, Observed,
};
use crate::runtime::engine;
use crate::runtime::protocol::{Client, ProtocolError};
use crate::runtime::shim::{self, ShimError};

/// How long to wait for a shim to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a killed container's shim gets to record the exit and release it.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("container {name} is running: stop it first or remove it with -f")]
    Running { name: String },
    #[error("stop container {name}")]
    Stop {
        name: String,
        #[source]
        source: ProtocolError,
    },
    #[error("remove container {name}")]
    Release {
        name: String,
        #[source]
        source: Box<ShimError>,
    },
    #[error(transparent)]
    Store(#[from] ContainerError),
}

impl Categorized for LifecycleError {
    fn category(&self) -> Category {
        match self {
            LifecycleError::Running { .. } => Category::Conflict,
            LifecycleError::Stop { .. } => Category::Transient,
            LifecycleError::Release { .. } => Category::Internal,
            LifecycleError::Store(e) => e.category(),
        }
    }
}

/// Stops a container: its stop signal, then SIGKILL after `grace` (through its shim); a
/// container whose shim is gone has its leftover processes killed.
pub fn stop(
    store: &ContainerStore,
    record: &ContainerRecord,
    grace: Duration,
) -> Result<(), LifecycleError> {
    let paths = store.paths(&record.id);
    match observe(&paths, record) {
        Observed::Live(_) => Client::connect(paths.socket(), CONNECT_TIMEOUT)
            .and_then(|mut c| c.stop(grace))
            .map_err(|source| LifecycleError::Stop {
                name: record.name.clone(),
                source,
            }),
        Observed::ShimLost { container_pids, .. } if !container_pids.is_empty() => {
            kill_orphans(&record.id);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Removes a container: refuses a running one unless `force`, which kills it first. Leaves no
/// mount, cgroup or file behind.
pub fn remove(
    store: &ContainerStore,
    record: &ContainerRecord,
    force: bool,
) -> Result<(), LifecycleError> {
    let paths = store.paths(&record.id);
    let observed = observe(&paths, record);
    if observed.is_running() {
        if !force {
            return Err(LifecycleError::Running {
                name: record.name.clone(),
            });
        }
        match &observed {
            Observed::Live(_) => {
                if let Ok(mut c) = Client::connect(paths.socket(), CONNECT_TIMEOUT) {
                    let _ = c.signal(libc::SIGKILL);
                }
                wait_for_exit(&paths, EXIT_TIMEOUT);
            }
            _ => kill_orphans(&record.id),
        }
    }
    // A shim writes the exit record before it releases the container: let a live one finish,
    // so two releases never race over the engine's state.
    if read_pid(&paths.shim_pid()).is_some_and(|pid| process_is_shim(pid, &record.id)) {
        wait_for_exit(&paths, EXIT_TIMEOUT);
    }
    // Whatever the shim did not get to (it died, or the host lost power).
    shim::release(&record.id, &paths).map_err(|source| LifecycleError::Release {
        name: record.name.clone(),
        source: Box::new(source),
    })?;
    store.remove(&record.id)?;
    Ok(())
}

/// SIGKILL to every process left in the container's cgroup (its shim is gone).
fn kill_orphans(id: &str) {
    if let Some(cg) = engine::container_cgroup(id) {
        let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && cg.pids().map(|p| !p.is_empty()).unwrap_or(false) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits until the shim recorded the exit (or the container is gone) and removed its socket,
/// which it does last.
fn wait_for_exit(paths: &ContainerPaths, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if (paths.exit().exists() || !paths.dir.exists()) && !paths.socket().exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
