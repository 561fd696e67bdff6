//! Exec: a process started inside a running container by its shim, so that it is the shim's
//! child (reaped, its exit code reported) whoever asked for it.
//!
//! Without a terminal the caller sends its three stdio descriptors with the request and the
//! process uses them directly: no copying through the shim. With a terminal the engine
//! creates a pseudo-terminal inside the container and the shim hands its master back to the
//! caller with the `exec_started` answer; the caller copies between its terminal and it.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::{Process, UserBuilder};

use super::{fdpass, Shim};
use crate::error::{Categorized, Category};
use crate::runtime::engine::{Engine, ExecIo, Stdio};
use crate::runtime::protocol::{
    encode_frame, Client, ErrorKind, ExecRequest, FrameDecoder, ProtocolError, Request, Response,
};
use crate::runtime::spec::{user::resolve_user, DirRootfs};

/// How long the engine may take to hand over a terminal.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

type Refusal = (ErrorKind, String);

/// Starts the exec'd process; returns its pid and, with a terminal, the terminal's master.
pub(super) fn start(
    shim: &mut Shim,
    req: &ExecRequest,
    mut fds: Vec<OwnedFd>,
) -> Result<(i32, Option<OwnedFd>), Refusal> {
    if req.args.is_empty() || req.args[0].is_empty() {
        return Err((ErrorKind::Invalid, "exec needs a command".into()));
    }
    let process = exec_process(&shim.process, req, &shim.paths.rootfs(), &shim.record.image)?;
    let engine_err = |e: crate::runtime::engine::EngineError| {
        let message = e.to_string();
        let kind = match super::StartFailure::classify(&message) {
            super::StartFailure::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Internal,
        };
        (kind, message)
    };
    if req.tty {
        let socket = std::env::temp_dir().join(format!(
            "dockmaster-console-{}-{}.sock",
            std::process::id(),
            shim.exec_counter
        ));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|e| {
            (
                ErrorKind::Internal,
                format!("bind {}: {e}", socket.display()),
            )
        })?;
        let result = shim
            .engine
            .exec(&shim.id, &process, ExecIo::Console(socket.clone()));
        let _ = std::fs::remove_file(&socket);
        let pid = result.map_err(engine_err)?;
        let master = receive_master(&listener)
            .map_err(|e| (ErrorKind::Internal, format!("receive the terminal: {e}")))?;
        Ok((pid, Some(master)))
    } else {
        if fds.len() != 3 {
            return Err((
                ErrorKind::Invalid,
                format!(
                    "exec without a terminal needs 3 descriptors (stdin, stdout, stderr) sent \
                     with the request, got {}",
                    fds.len()
                ),
            ));
        }
        let stderr = fds.pop().expect("three descriptors");
        let stdout = fds.pop().expect("three descriptors");
        let stdin = fds.pop().expect("three descriptors");
        let pid = shim
            .engine
            .exec(
                &shim.id,
                &process,
                ExecIo::Fds(Stdio {
                    stdin,
                    stdout,
                    stderr,
                }),
            )
            .map_err(engine_err)?;
        Ok((pid, None))
    }
}

fn receive_master(listener: &UnixListener) -> io::Result<OwnedFd> {
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + CONSOLE_TIMEOUT;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no terminal sent"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_read_timeout(Some(CONSOLE_TIMEOUT))?;
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = fdpass::recv_with_fds(&stream, &mut buf, &mut fds)?;
        if let Some(fd) = fds.pop() {
            return Ok(fd);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "console socket closed without a terminal",
            ));
        }
    }
}

/// The exec'd process: the container's process (capabilities, rlimits, no_new_privileges,
/// user, env, cwd) with the request's arguments, extra environment, working dir and user.
pub fn exec_process(
    container: &Process,
    req: &ExecRequest,
    rootfs: &Path,
    image: &str,
) -> Result<Process, Refusal> {
    let mut process = container.clone();
    process.set_args(Some(req.args.clone()));
    let mut env = process.env().clone().unwrap_or_default();
    for entry in &req.env {
        let Some((key, _)) = entry.split_once('=') else {
            return Err((
                ErrorKind::Invalid,
                format!("environment entry {entry:?} is not KEY=VALUE"),
            ));
        };
        env.retain(|e| e.split_once('=').map_or(e != key, |(k, _)| k != key));
        env.push(entry.clone());
    }
    if req.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if let Some(user) = &req.user {
        let resolved = resolve_user(user, &[], &DirRootfs::new(rootfs), image)
            .map_err(|e| (ErrorKind::NotFound, e.to_string()))?;
        let user = UserBuilder::default()
            .uid(resolved.uid)
            .gid(resolved.gid)
            .additional_gids(resolved.additional_gids)
            .build()
            .map_err(|e| (ErrorKind::Internal, e.to_string()))?;
        process.set_user(user);
        env.retain(|e| !e.starts_with("HOME="));
        env.push(format!("HOME={}", resolved.home));
    }
    process.set_env(Some(env));
    if let Some(cwd) = &req.cwd {
        if !cwd.starts_with('/') {
            return Err((
                ErrorKind::Invalid,
                format!("working directory {cwd:?} is not absolute"),
            ));
        }
        process.set_cwd(cwd.into());
    }
    process.set_terminal(Some(req.tty));
    // The init's console size does not apply to a new terminal.
    process.set_console_size(None);
    Ok(process)
}

// ---- the caller's side ---------------------------------------------------------------------

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Exit status, or 128 + signal.
    pub exit_code: i32,
    pub signal: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("exec in container {container}: {message}")]
    Refused {
        container: String,
        kind: ErrorKind,
        message: String,
    },
    #[error("exec in container {container}: {what}: {source}")]
    Io {
        container: String,
        what: &'static str,
        source: io::Error,
    },
    #[error(
        "exec in container {container}: the shim closed the connection before the process ended"
    )]
    Lost { container: String },
}

impl Categorized for ExecError {
    fn category(&self) -> Category {
        match self {
            ExecError::Protocol(e) => e.category(),
            ExecError::Refused { kind, .. } => kind.category(),
            ExecError::Io { .. } | ExecError::Lost { .. } => Category::Internal,
        }
    }
}

/// Runs `req` in the container whose shim listens on `socket` and waits for it to end.
/// Without a terminal the process uses `stdio` (stdin, stdout, stderr) directly; with one,
/// this process's stdin/stdout are copied to and from the terminal (raw mode when stdin is a
/// terminal) and `stdio` is ignored.
pub fn exec_in_container(
    container: &str,
    socket: &Path,
    req: &ExecRequest,
    stdio: [RawFd; 3],
    interactive: bool,
) -> Result<ExecOutcome, ExecError> {
    let io_err = |what| {
        let container = container.to_string();
        move |source| ExecError::Io {
            container,
            what,
            source,
        }
    };
    let client = Client::connect(socket, Duration::from_secs(10))?;
    let stream = client.into_stream();
    // An exec runs as long as it runs.
    stream
        .set_read_timeout(None)
        .map_err(io_err("configure the socket"))?;
    let frame = serde_json::to_vec(&Request::Exec(req.clone()))
        .ok()
        .and_then(|b| encode_frame(&b).ok())
        .ok_or_else(|| ExecError::Refused {
            container: container.to_string(),
            kind: ErrorKind::Invalid,
            message: "the request is too large".into(),
        })?;
    let fds: &[RawFd] = if req.tty { &[] } else { &stdio };
    fdpass::send_with_fds(&stream, &frame, fds).map_err(io_err("send the request"))?;

    let mut reader = ResponseReader::new(&stream);
    let (first, master) = reader.next(container)?;
    match first {
        Response::ExecStarted { .. } => {}
        Response::Error { kind, message } => {
            return Err(ExecError::Refused {
                container: container.to_string(),
                kind,
                message,
            })
        }
        other => {
            return Err(ExecError::Refused {
                container: container.to_string(),
                kind: ErrorKind::Protocol,
                message: format!("unexpected answer {}", other.name()),
            })
        }
    }
    let done = match master {
        Some(master) if req.tty => {
            relay_terminal(&stream, &mut reader, master, interactive, container)?
        }
        _ => reader.next(container)?.0,
    };
    match done {
        Response::ExecExited { exit_code, signal } => Ok(ExecOutcome { exit_code, signal }),
        Response::Error { kind, message } => Err(ExecError::Refused {
            container: container.to_string(),
            kind,
            message,
        }),
        other => Err(ExecError::Refused {
            container: container.to_string(),
            kind: ErrorKind::Protocol,
            message: format!("unexpected answer {}", other.name()),
        }),
    }
}

/// Reads responses (and a descriptor that may come with one) from the shim.
struct ResponseReader<'a> {
    stream: &'a UnixStream,
    decoder: FrameDecoder,
    fds: Vec<OwnedFd>,
}

impl<'a> ResponseReader<'a> {
    fn new(stream: &'a UnixStream) -> Self {
        ResponseReader {
            stream,
            decoder: FrameDecoder::new(),
            fds: Vec::new(),
        }
    }

    /// A complete response if one is buffered.
    fn buffered(
        &mut self,
        container: &str,
    ) -> Result<Option<(Response, Option<OwnedFd>)>, ExecError> {
        let protocol = |message: String| ExecError::Refused {
            container: container.to_string(),
            kind: ErrorKind::Protocol,
            message,
        };
        match self.decoder.next_frame() {
            Ok(Some(frame)) => {
                let response: Response =
                    serde_json::from_slice(&frame).map_err(|e| protocol(e.to_string()))?;
                Ok(Some((response, self.fds.pop())))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(protocol(e.to_string())),
        }
    }

    /// Reads once from the socket; false at end of stream.
    fn fill(&mut self, container: &str) -> Result<bool, ExecError> {
        let mut reader = fdpass::FdReader {
            stream: self.stream,
            fds: &mut self.fds,
        };
        match self.decoder.read_from(&mut reader) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(source) => Err(ExecError::Io {
                container: container.to_string(),
                what: "read the answer",
                source,
            }),
        }
    }

    fn next(&mut self, container: &str) -> Result<(Response, Option<OwnedFd>), ExecError> {
        loop {
            if let Some(r) = self.buffered(container)? {
                return Ok(r);
            }
            if !self.fill(container)? {
                return Err(ExecError::Lost {
                    container: container.to_string(),
                });
            }
        }
    }
}

/// Copies between this process's terminal and the exec's terminal until the shim reports the
/// exit; returns that report.
fn relay_terminal(
    stream: &UnixStream,
    reader: &mut ResponseReader<'_>,
    master: OwnedFd,
    interactive: bool,
    container: &str,
) -> Result<Response, ExecError> {
    let _raw = RawMode::enter(libc::STDIN_FILENO);
    copy_window_size(libc::STDIN_FILENO, master.as_raw_fd());
    let mut master_file = std::fs::File::from(master);
    let mut stdin_open = interactive;
    let mut master_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    let mut exit: Option<Response> = None;
    loop {
        if exit.is_some() && !master_open {
            break;
        }
        let mut fds = [
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: if exit.is_none() { libc::POLLIN } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: if master_open {
                    master_file.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { libc::STDIN_FILENO } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // After the exit, drain the terminal for a short while only.
        let timeout = if exit.is_some() { 200 } else { -1 };
        // SAFETY: valid pollfd array for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) };
        if rc == 0 {
            break;
        }
        if rc < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            match master_file.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
                // EIO: every slave side is closed (the process ended).
                _ => master_open = false,
            }
        }
        if fds[2].revents != 0 {
            // SAFETY: read(2) into our own buffer.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || master_file.write_all(&buf[..n as usize]).is_err() {
                stdin_open = false;
            }
        }
        if fds[0].revents != 0 && exit.is_none() {
            if let Some((r, _)) = reader.buffered(container)? {
                exit = Some(r);
            } else if !reader.fill(container)? {
                return Err(ExecError::Lost {
                    container: container.to_string(),
                });
            } else if let Some((r, _)) = reader.buffered(container)? {
                exit = Some(r);
            }
        }
    }
    exit.ok_or_else(|| ExecError::Lost {
        container: container.to_string(),
    })
}

fn copy_window_size(from: RawFd, to: RawFd) {
    // SAFETY: winsize is plain data; both ioctls only read/write it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Puts a terminal into raw mode and restores it on drop; does nothing for a non-terminal.
struct RawMode {
    fd: RawFd,
    saved: Option<libc::termios>,
}

impl RawMode {
    fn enter(fd: RawFd) -> RawMode {
        // SAFETY: termios is plain data; tcgetattr/tcsetattr only read/write it.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(fd) != 1 || libc::tcgetattr(fd, &mut t) != 0 {
                return RawMode { fd, saved: None };
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            RawMode {
                fd,
                saved: Some(saved),
            }
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the attributes read in `enter` on the same descriptor.
            unsafe {
                libc::tcsetattr(self.fd, libc::TCSANOW, saved);
            }
        }
    }
}
