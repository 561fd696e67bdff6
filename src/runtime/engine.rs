//! The seam between the shim and the code that creates namespaces, cgroups, the pivoted rootfs,
//! seccomp and capabilities: [`Engine`], implemented by [`Libcontainer`] (youki's
//! libcontainer). The shim owns the lifecycle around it (stdio, logs, exit records, the
//! socket); the engine only turns a bundle into processes.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use crate::error::{Categorized, Category};
use crate::runtime::cgroups::{Cgroup, CgroupSetup};
use crate::runtime::seccomp::{self, FilterExecutor, FilterLoad};

/// The three standard streams handed to a container process.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// How an exec'd process gets its streams.
#[derive(Debug)]
pub enum ExecIo {
    /// Plain file descriptors (pipes, files, the caller's own stdio).
    Fds(Stdio),
    /// A pseudo-terminal: the engine creates it inside the container and sends its master to
    /// this unix socket (runc's `--console-socket` protocol).
    Console(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("container {id}: {operation} failed: {message}")]
    Failed {
        id: String,
        operation: &'static str,
        message: String,
    },
    #[error("container {id}: {operation}: {path}: {source}")]
    Io {
        id: String,
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Categorized for EngineError {
    fn category(&self) -> Category {
        Category::Internal
    }
}

/// Creates, starts, execs into and deletes containers described by OCI bundles.
pub trait Engine {
    /// Creates the container from `bundle/config.json`; its init process waits for
    /// [`Engine::start`]. Returns the init's host PID, a child of the caller.
    fn create(&self, id: &str, bundle: &Path, stdio: Stdio) -> Result<i32, EngineError>;
    /// Lets a created container's init run its process.
    fn start(&self, id: &str) -> Result<(), EngineError>;
    /// Starts `process` (a complete OCI process) inside the running container: its
    /// namespaces, cgroup, user, capabilities and seccomp profile. Returns the host PID, a
    /// child of the caller.
    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: ExecIo,
    ) -> Result<i32, EngineError>;
    /// Removes every trace of the container (killing what still runs): cgroup, state.
    fn delete(&self, id: &str) -> Result<(), EngineError>;
}

/// youki's libcontainer, with its state under `state_root/<id>`.
#[derive(Debug, Clone)]
pub struct Libcontainer {
    state_root: PathBuf,
    /// Set when the bundle's spec had its seccomp profile taken out to be loaded from the
    /// cache by the executor hook (`runtime::seccomp`).
    seccomp: Option<FilterLoad>,
}

impl Libcontainer {
    pub fn new(state_root: impl Into<PathBuf>) -> Libcontainer {
        Libcontainer {
            state_root: state_root.into(),
            seccomp: None,
        }
    }

    /// The container's init (and every exec) loads `load.filter` right before exec.
    pub fn with_seccomp(mut self, load: Option<FilterLoad>) -> Libcontainer {
        self.seccomp = load;
        self
    }

    fn failed<'a>(id: &'a str, operation: &'static str) -> impl FnOnce(String) -> EngineError + 'a {
        move |message| EngineError::Failed {
            id: id.to_string(),
            operation,
            message,
        }
    }

    fn load(&self, id: &str, operation: &'static str) -> Result<Container, EngineError> {
        Container::load(self.state_root.join(id))
            .map_err(|e| Self::failed(id, operation)(e.to_string()))
    }
}

impl Engine for Libcontainer {
    fn create(&self, id: &str, bundle: &Path, stdio: Stdio) -> Result<i32, EngineError> {
        std::fs::create_dir_all(&self.state_root).map_err(|source| EngineError::Io {
            id: id.to_string(),
            operation: "create",
            path: self.state_root.clone(),
            source,
        })?;
        let fail =
            |e: libcontainer::error::LibcontainerError| Self::failed(id, "create")(e.to_string());
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
            .with_root_path(&self.state_root)
            .map_err(fail)?;
        if let Some(load) = &self.seccomp {
            builder = builder.with_executor(FilterExecutor { load: load.clone() });
        }
        let container = builder
            .with_stdin(stdio.stdin)
            .with_stdout(stdio.stdout)
            .with_stderr(stdio.stderr)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(fail)?;
        container
            .pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| Self::failed(id, "create")("no init pid recorded".into()))
    }

    fn start(&self, id: &str) -> Result<(), EngineError> {
        self.load(id, "start")?
            .start()
            .map_err(|e| Self::failed(id, "start")(e.to_string()))
    }

    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: ExecIo,
    ) -> Result<i32, EngineError> {
        let container_dir = self.state_root.join(id);
        // libcontainer reads the process from a file; a unique name per exec, removed after.
        let path = container_dir.join(format!(
            "exec-{}-{}.json",
            std::process::id(),
            crate::runtime::container::generate_id()
                .map(|s| s[..12].to_string())
                .unwrap_or_default()
        ));
        // The tenant's process borrows the filter loader's capabilities like the init did.
        let (process, executor) = match &self.seccomp {
            Some(load) => {
                let (process, target, borrowed_bounding) = seccomp::engine_process(process);
                let load = FilterLoad {
                    filter: load.filter.clone(),
                    target,
                    borrowed_bounding,
                };
                (process, Some(FilterExecutor { load }))
            }
            None => (process.clone(), None),
        };
        let bytes = serde_json::to_vec(&process)
            .map_err(|e| Self::failed(id, "exec")(format!("serialize process: {e}")))?;
        std::fs::write(&path, bytes).map_err(|source| EngineError::Io {
            id: id.to_string(),
            operation: "exec",
            path: path.clone(),
            source,
        })?;
        let fail =
            |e: libcontainer::error::LibcontainerError| Self::failed(id, "exec")(e.to_string());
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
            .with_root_path(&self.state_root)
            .map_err(fail)?;
        if let Some(executor) = executor {
            builder = builder.with_executor(executor);
        }
        builder = match io {
            ExecIo::Fds(stdio) => builder
                .with_stdin(stdio.stdin)
                .with_stdout(stdio.stdout)
                .with_stderr(stdio.stderr),
            ExecIo::Console(socket) => builder.with_console_socket(Some(socket)),
        };
        let result = builder
            .as_tenant()
            .with_process(Some(&path))
            .with_detach(true)
            .build();
        let _ = std::fs::remove_file(&path);
        result.map(|p| p.as_raw()).map_err(fail)
    }

    fn delete(&self, id: &str) -> Result<(), EngineError> {
        if !self.state_root.join(id).exists() {
            return Ok(());
        }
        self.load(id, "delete")?
            .delete(true)
            .map_err(|e| Self::failed(id, "delete")(e.to_string()))
    }
}

/// The cgroup path every container gets (the spec's `cgroupsPath`).
pub fn cgroup_path(id: &str) -> String {
    format!("dockmaster/{id}")
}

/// The container's cgroup on this host, if cgroups are mounted.
pub fn container_cgroup(id: &str) -> Option<Cgroup> {
    let setup = CgroupSetup::detect().ok()?;
    Cgroup::open(&setup, cgroup_path(id)).ok()
}

/// Processes still in the container's cgroup (empty when it is gone).
pub fn container_pids(id: &str) -> Vec<i32> {
    container_cgroup(id)
        .and_then(|c| c.pids().ok())
        .unwrap_or_default()
}
