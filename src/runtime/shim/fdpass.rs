//! File descriptors across the shim socket (SCM_RIGHTS): an exec request carries the caller's
//! stdio, an exec answer carries a pseudo-terminal's master.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most descriptors one message may carry; more are closed and ignored.
pub const MAX_FDS: usize = 4;

/// Sends `bytes` with `fds` attached, retrying until every byte is written (the descriptors
/// go with the first chunk).
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut sent = 0;
    let mut first = true;
    while sent < bytes.len() {
        let iov = [IoSlice::new(&bytes[sent..])];
        let cmsgs_with = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if first && !fds.is_empty() {
            &cmsgs_with
        } else {
            &[]
        };
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => {
                sent += n;
                first = false;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                // The shim's sockets are non-blocking; answers are tiny, so wait briefly.
                wait_writable(stream)?;
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(())
}

fn wait_writable(stream: &UnixStream) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 5000) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if rc == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "socket not writable",
        ));
    }
    Ok(())
}

/// Receives bytes into `buf`, appending any descriptors that came with them to `fds` (at most
/// [`MAX_FDS`] kept; extra ones are closed).
pub fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    };
    let n = msg.bytes;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = c {
            for fd in received {
                // SAFETY: the kernel just installed `fd` in our table for us; we own it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if fds.len() < MAX_FDS {
                    fds.push(owned);
                }
            }
        }
    }
    Ok(n)
}

/// A `Read` over a unix stream that keeps the descriptors arriving with the bytes.
pub struct FdReader<'a> {
    pub stream: &'a UnixStream,
    pub fds: &'a mut Vec<OwnedFd>,
}

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        recv_with_fds(self.stream, buf, self.fds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn descriptors_travel_with_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, mut w) = std::io::pipe().unwrap();
        send_with_fds(&a, b"hello", &[w.as_raw_fd()]).unwrap();
        let mut fds = Vec::new();
        let mut buf = [0u8; 16];
        let n = recv_with_fds(&b, &mut buf, &mut fds).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        // The received descriptor is the pipe's write end: bytes written to it arrive.
        let mut received = std::fs::File::from(fds.pop().unwrap());
        received.write_all(b"x").unwrap();
        drop(received);
        w.flush().unwrap();
        drop(w);
        let mut got = String::new();
        let mut r = r;
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "x");
    }
}
