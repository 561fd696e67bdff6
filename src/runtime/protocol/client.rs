//! The agent's and CLI's side: connect with a timeout, hello, request, response.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::frame::{read_message, write_message};
use super::{
    ContainerState, ContainerStats, FrameError, ProtocolError, Request, Response, Version,
    PROTOCOL_MAJOR, PROTOCOL_MINOR,
};

/// A connection to one shim, past the hello.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    version: Version,
    server: String,
    timeout: Duration,
}

impl Client {
    /// Connects to the shim socket at `path` and negotiates the version. `timeout` bounds the
    /// connect and each later read and write.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Client, ProtocolError> {
        let path = path.as_ref().to_path_buf();
        let stream = connect_unix(&path, timeout).map_err(|source| ProtocolError::Connect {
            path: path.clone(),
            source,
        })?;
        let exchange = |source| ProtocolError::Exchange {
            path: path.clone(),
            source,
        };
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| exchange(FrameError::Io(e)))?;
        let mut client = Client {
            stream,
            path: path.clone(),
            version: Version {
                major: PROTOCOL_MAJOR,
                minor: PROTOCOL_MINOR,
            },
            server: String::new(),
            timeout,
        };
        let hello = Request::Hello {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
            client: format!("dockmaster {}", env!("CARGO_PKG_VERSION")),
        };
        let ours = client.version;
        match client.exchange(&hello, "hello")? {
            Response::Hello {
                major,
                minor,
                server,
            } => {
                let theirs = Version { major, minor };
                if major != PROTOCOL_MAJOR || minor > PROTOCOL_MINOR {
                    return Err(ProtocolError::VersionMismatch { path, ours, theirs });
                }
                client.version = theirs;
                client.server = server;
                Ok(client)
            }
            Response::Error {
                kind: super::ErrorKind::VersionMismatch,
                message,
            } => Err(ProtocolError::VersionRefused {
                path,
                ours,
                message,
            }),
            other => Err(client.refused_or_unexpected("hello", other)),
        }
    }

    /// The negotiated version: only what it includes may be used on this connection.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The shim's self-description from its hello.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `request` and returns the shim's response as it is (an `Error` response is a
    /// value here, not an `Err`).
    pub fn call(&mut self, request: &Request) -> Result<Response, ProtocolError> {
        self.exchange(request, request.name())
    }

    /// The container's state.
    pub fn state(&mut self) -> Result<ContainerState, ProtocolError> {
        match self.call(&Request::State)? {
            Response::State(state) => Ok(state),
            other => Err(self.refused_or_unexpected("state", other)),
        }
    }

    /// The container's resource usage.
    pub fn stats(&mut self) -> Result<ContainerStats, ProtocolError> {
        match self.call(&Request::Stats)? {
            Response::Stats(stats) => Ok(stats),
            other => Err(self.refused_or_unexpected("stats", other)),
        }
    }

    /// Sends a signal to the container's init process.
    pub fn signal(&mut self, signal: i32) -> Result<(), ProtocolError> {
        match self.call(&Request::Signal { signal })? {
            Response::Ok => Ok(()),
            other => Err(self.refused_or_unexpected("signal", other)),
        }
    }

    /// Stops the container: the shim answers once it has stopped, so the read timeout is
    /// extended by the grace period for this call.
    pub fn stop(&mut self, grace: Duration) -> Result<(), ProtocolError> {
        let request = Request::Stop {
            grace_secs: grace.as_secs(),
        };
        let wait = self.timeout + Duration::from_secs(grace.as_secs());
        self.stream
            .set_read_timeout(Some(wait))
            .map_err(|e| self.exchange_error(FrameError::Io(e)))?;
        let result = self.call(&request);
        self.stream
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| self.exchange_error(FrameError::Io(e)))?;
        match result? {
            Response::Ok => Ok(()),
            other => Err(self.refused_or_unexpected("stop", other)),
        }
    }

    /// The socket, for exchanges that continue outside this request/response pattern (exec
    /// streams), with the timeouts set at connect.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    fn exchange(
        &mut self,
        request: &Request,
        name: &'static str,
    ) -> Result<Response, ProtocolError> {
        let timeout = |e: &FrameError| matches!(e, FrameError::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        let sent = write_message(&mut self.stream, request);
        let received = sent.and_then(|()| read_message::<_, Response>(&mut self.stream));
        match received {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(ProtocolError::Closed {
                path: self.path.clone(),
                request: name,
            }),
            // A socket timeout surfaces as EAGAIN: say what it means.
            Err(e) if timeout(&e) => Err(ProtocolError::Timeout {
                path: self.path.clone(),
                request: name,
                timeout: self
                    .stream
                    .read_timeout()
                    .ok()
                    .flatten()
                    .unwrap_or(self.timeout),
            }),
            Err(e) => Err(self.exchange_error(e)),
        }
    }

    fn exchange_error(&self, source: FrameError) -> ProtocolError {
        ProtocolError::Exchange {
            path: self.path.clone(),
            source,
        }
    }

    fn unexpected(&self, request: &'static str, got: Response) -> ProtocolError {
        ProtocolError::Unexpected {
            path: self.path.clone(),
            request,
            got: got.name(),
        }
    }

    fn refused_or_unexpected(&self, request: &'static str, got: Response) -> ProtocolError {
        match got {
            Response::Error { kind, message } => ProtocolError::Refused {
                path: self.path.clone(),
                request,
                kind,
                message,
            },
            other => self.unexpected(request, other),
        }
    }
}

/// One request on a fresh connection: connect, hello, request, response.
pub fn request(
    path: impl AsRef<Path>,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ProtocolError> {
    Client::connect(path, timeout)?.call(request)
}

/// Binds the shim's listening socket at `path`, non-blocking, for the poll loop. A socket
/// file left by a dead shim is replaced; one a live process still accepts on is not
/// (`AddrInUse`). Paths longer than a socket address can hold are reached through the
/// parent directory's descriptor.
pub fn bind_listener(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        // Bounded: a live but stuck shim with a full backlog must not hang us.
        match connect_unix(path, STALE_CHECK_TIMEOUT) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a live process", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is in use by a process that does not accept",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path)?,
            Err(e) => return Err(e),
        }
    }
    let listener = with_short_path(path, |p| UnixListener::bind(p))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// How long [`bind_listener`] tries to reach a process behind an existing socket file.
const STALE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

/// Calls `f` with `path`, or with `/proc/self/fd/N/<name>` (N an `O_PATH` descriptor of the
/// parent directory) when `path` is too long for a socket address.
fn with_short_path<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(too_long(path));
    };
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
    let mut short = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    short.extend_from_slice(name.as_bytes());
    if short.len() > SUN_PATH_MAX {
        return Err(too_long(path));
    }
    let result = f(Path::new(OsStr::from_bytes(&short)));
    drop::<File>(dir);
    result
}

fn too_long(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("socket path {} is too long", path.display()),
    )
}

/// Connects a Unix stream socket without blocking longer than `timeout`, also when the
/// listener's backlog is full because the shim is not accepting.
fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    with_short_path(path, |p| {
        let deadline = Instant::now() + timeout;
        let bytes = p.as_os_str().as_bytes();
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
            return Err(too_long(p));
        }
        for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        let addr_len =
            (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        loop {
            // SAFETY: addr is an initialized sockaddr_un and addr_len does not exceed it.
            let rc = unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
                    addr_len,
                )
            };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Backlog full: the shim is busy or stuck. Retry until the deadline.
                Some(libc::EAGAIN) => {
                    if Instant::now() >= deadline {
                        return Err(timed_out(p, timeout));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Some(libc::EINPROGRESS) => {
                    wait_writable(&fd, deadline).map_err(|e| {
                        if e.kind() == io::ErrorKind::TimedOut {
                            timed_out(p, timeout)
                        } else {
                            e
                        }
                    })?;
                    break;
                }
                _ => return Err(err),
            }
        }
        let stream = UnixStream::from(fd);
        stream.set_nonblocking(false)?;
        Ok(stream)
    })
}

#[cfg(test)]
pub(super) fn connect_for_test(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    connect_unix(path, timeout)
}

fn timed_out(path: &Path, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connect to {} timed out after {timeout:?}", path.display()),
    )
}

/// Waits for an in-progress connect to finish and returns its result.
fn wait_writable(fd: &OwnedFd, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: pfd is a valid pollfd array of length 1 for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if rc == 0 {
            continue;
        }
        let mut so_error: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: so_error and len are valid for writes of the sizes passed.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut so_error as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        return if so_error == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(so_error))
        };
    }
}
