//! The shim's side of a connection, as a state machine its poll loop drives.

use std::io::{self, Read, Write};

use serde::Deserialize;

use super::frame::{FrameDecoder, OutBuffer};
use super::{
    ErrorKind, FrameError, Request, Response, Version, MAX_FRAME, PROTOCOL_MAJOR, PROTOCOL_MINOR,
};

/// What one read from the socket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes arrived.
    Data(usize),
    /// Nothing to read now (non-blocking socket).
    WouldBlock,
    /// The peer closed its side.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHello,
    Ready,
    /// A fatal protocol error was answered; close once it is written.
    Closing,
}

/// One client connection on the shim's side.
///
/// The poll loop calls [`Connection::read_from`] when the socket is readable (and
/// [`Connection::wants_read`]), takes requests with [`Connection::next_request`], answers
/// each with [`Connection::respond`] (possibly later: at most one request is handed out until
/// it is answered, which keeps responses in order), writes with [`Connection::write_to`] when
/// [`Connection::wants_write`], and drops the connection when [`Connection::is_finished`].
/// The hello exchange, malformed frames and unknown request types are answered here.
#[derive(Debug)]
pub struct Connection {
    decoder: FrameDecoder,
    out: OutBuffer,
    phase: Phase,
    version: Option<Version>,
    server: String,
    awaiting_response: bool,
    peer_closed: bool,
}

impl Connection {
    /// `server` names the shim in the hello answer (`dockmaster-shim 0.1.0`).
    pub fn new(server: impl Into<String>) -> Connection {
        Connection {
            decoder: FrameDecoder::new(),
            out: OutBuffer::default(),
            phase: Phase::AwaitingHello,
            version: None,
            server: server.into(),
            awaiting_response: false,
            peer_closed: false,
        }
    }

    /// The negotiated version, once the hello is done.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Whether to poll the socket for reading: false after the peer closed, when closing,
    /// or while a frame's worth of unhandled bytes is buffered (memory stays bounded even if
    /// a client sends requests without waiting for answers).
    pub fn wants_read(&self) -> bool {
        !self.peer_closed
            && self.phase != Phase::Closing
            && self.decoder.buffered() <= MAX_FRAME + 4
    }

    /// Whether responses are waiting to be written.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// Nothing more will happen on this connection: drop it (and close the socket).
    pub fn is_finished(&self) -> bool {
        self.out.is_empty()
            && (self.phase == Phase::Closing || (self.peer_closed && !self.awaiting_response))
    }

    /// Does one read from the socket (works for blocking and non-blocking sockets).
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> io::Result<ReadOutcome> {
        match self.decoder.read_from(r) {
            Ok(0) => {
                self.peer_closed = true;
                Ok(ReadOutcome::Closed)
            }
            Ok(n) => Ok(ReadOutcome::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.peer_closed = true;
                Ok(ReadOutcome::Closed)
            }
            Err(e) => Err(e),
        }
    }

    /// Feeds bytes received some other way (tests, or a caller doing its own reads).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.decoder.feed(bytes);
    }

    /// The next request for the shim to answer, if a complete one is buffered and the
    /// previous one was answered. Hellos and protocol errors are answered internally.
    pub fn next_request(&mut self) -> Option<Request> {
        while !self.awaiting_response && self.phase != Phase::Closing {
            let frame = match self.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(e) => {
                    // A bad length: the stream cannot be resynchronized.
                    self.fail(ErrorKind::Protocol, format!("unreadable frame: {e}"));
                    return None;
                }
            };
            if let Some(request) = self.handle_frame(&frame) {
                self.awaiting_response = true;
                return Some(request);
            }
        }
        None
    }

    /// Queues the answer to the request last returned by [`Connection::next_request`].
    pub fn respond(&mut self, response: &Response) {
        self.awaiting_response = false;
        self.queue(response);
    }

    /// Writes queued responses; `Ok(true)` once all are written.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        self.out.write_to(w)
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Option<Request> {
        let request = match serde_json::from_slice::<Request>(frame) {
            Ok(r) => r,
            Err(e) => {
                self.refuse_undecodable(frame, &e);
                return None;
            }
        };
        match (self.phase, request) {
            (Phase::AwaitingHello, Request::Hello { major, minor, .. }) => {
                let theirs = Version { major, minor };
                if major != PROTOCOL_MAJOR {
                    self.fail(
                        ErrorKind::VersionMismatch,
                        format!(
                            "protocol version {theirs} is not supported: this shim speaks \
                             {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"
                        ),
                    );
                    return None;
                }
                // The lower minor version.
                let agreed = Version {
                    major,
                    minor: minor.min(PROTOCOL_MINOR),
                };
                self.version = Some(agreed);
                self.phase = Phase::Ready;
                let hello = Response::Hello {
                    major: agreed.major,
                    minor: agreed.minor,
                    server: self.server.clone(),
                };
                self.queue(&hello);
                None
            }
            (Phase::AwaitingHello, other) => {
                self.fail(
                    ErrorKind::Protocol,
                    format!("expected hello first, got {}", other.name()),
                );
                None
            }
            (Phase::Ready, Request::Hello { .. }) => {
                self.queue(&Response::error(
                    ErrorKind::Protocol,
                    "hello was already exchanged on this connection",
                ));
                None
            }
            (Phase::Ready, request) => Some(request),
            (Phase::Closing, _) => None,
        }
    }

    /// Answers a frame that is not a request we know. A well-formed message of an unknown
    /// type comes from a newer client of the same major version: say so and carry on.
    fn refuse_undecodable(&mut self, frame: &[u8], error: &serde_json::Error) {
        #[derive(Deserialize)]
        struct Tagged {
            #[serde(rename = "type")]
            kind: String,
        }
        let known = ["hello", "state", "signal", "stop", "exec", "stats"];
        match serde_json::from_slice::<Tagged>(frame) {
            Ok(t) if !known.contains(&t.kind.as_str()) && self.phase == Phase::Ready => {
                let kind: String = t.kind.chars().take(64).collect();
                self.queue(&Response::error(
                    ErrorKind::Unsupported,
                    format!("unsupported request type {kind:?}"),
                ));
            }
            Ok(_) if self.phase == Phase::Ready => self.queue(&Response::error(
                ErrorKind::Invalid,
                format!("malformed request: {error}"),
            )),
            _ => self.fail(ErrorKind::Protocol, format!("malformed message: {error}")),
        }
    }

    /// Answers with an error and closes the connection once it is written.
    fn fail(&mut self, kind: ErrorKind, message: String) {
        self.queue(&Response::Error { kind, message });
        self.phase = Phase::Closing;
    }

    fn queue(&mut self, response: &Response) {
        if let Err(e) = self.out.push(response) {
            // Only an oversized message can fail: answer with a short error instead.
            let fallback = Response::error(
                ErrorKind::Internal,
                format!("response {} could not be sent: {e}", response.name()),
            );
            let _ = self.out.push(&fallback);
        }
    }
}

/// Serves one connection with blocking I/O until the peer closes it, answering each request
/// with `handler`. For simple servers and tests; the shim drives [`Connection`] from its poll
/// loop instead.
pub fn serve_blocking<S: Read + Write>(
    stream: &mut S,
    server: &str,
    mut handler: impl FnMut(Request) -> Response,
) -> Result<(), FrameError> {
    let mut conn = Connection::new(server);
    loop {
        while let Some(request) = conn.next_request() {
            let response = handler(request);
            conn.respond(&response);
        }
        conn.write_to(stream)?;
        if conn.is_finished() {
            return Ok(());
        }
        if conn.read_from(stream)? == ReadOutcome::WouldBlock {
            return Err(FrameError::Io(io::ErrorKind::WouldBlock.into()));
        }
    }
}
