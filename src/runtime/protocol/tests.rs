use std::io::{Cursor, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::error::{Categorized, Category};

fn frame_bytes(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, payload).unwrap();
    out
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn frames_round_trip() {
    let payloads: Vec<Vec<u8>> = vec![
        b"{}".to_vec(),
        Vec::new(),
        vec![b'x'; 5000],
        vec![b'y'; MAX_FRAME],
    ];
    let mut wire = Vec::new();
    for p in &payloads {
        write_frame(&mut wire, p).unwrap();
    }
    assert_eq!(&wire[..6], &[0, 0, 0, 2, b'{', b'}']);
    let mut r = Cursor::new(wire);
    for p in &payloads {
        assert_eq!(read_frame(&mut r).unwrap().as_deref(), Some(&p[..]));
    }
    assert!(read_frame(&mut r).unwrap().is_none(), "clean end of stream");
}

#[test]
fn truncated_and_oversized_frames_are_refused() {
    let whole = frame_bytes(b"{\"type\":\"state\"}");
    for cut in [1, 3, 4, 10] {
        let err = read_frame(&mut Cursor::new(&whole[..cut])).unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "cut {cut}: {err}");
    }
    // A length over the limit is refused from the header alone: nothing is allocated.
    let mut huge = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    huge.extend_from_slice(b"xx");
    let err = read_frame(&mut Cursor::new(&huge)).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { len, .. } if len == MAX_FRAME + 1));
    let err = read_frame(&mut Cursor::new(&u32::MAX.to_be_bytes())).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    assert_eq!(err.category(), Category::Invalid);
    let err = write_frame(&mut Vec::new(), &vec![0u8; MAX_FRAME + 1]).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }));
    assert!(encode_frame(&vec![0u8; MAX_FRAME + 1]).is_err());
}

#[test]
fn messages_have_the_documented_shape() {
    assert_eq!(
        to_json(&Request::Hello {
            major: 1,
            minor: 0,
            client: "c".into()
        }),
        json!({"type": "hello", "major": 1, "minor": 0, "client": "c"})
    );
    assert_eq!(to_json(&Request::State), json!({"type": "state"}));
    assert_eq!(
        to_json(&Request::Signal { signal: 15 }),
        json!({"type": "signal", "signal": 15})
    );
    assert_eq!(
        to_json(&Request::Stop { grace_secs: 10 }),
        json!({"type": "stop", "grace_secs": 10})
    );
    assert_eq!(
        to_json(&Request::Exec(ExecRequest {
            args: vec!["sh".into(), "-c".into(), "id".into()],
            env: vec!["A=1".into()],
            cwd: Some("/tmp".into()),
            user: Some("1000:1000".into()),
            tty: true,
        })),
        json!({"type": "exec", "args": ["sh", "-c", "id"], "env": ["A=1"], "cwd": "/tmp",
               "user": "1000:1000", "tty": true})
    );
    assert_eq!(to_json(&Request::Stats), json!({"type": "stats"}));

    let state = ContainerState {
        status: Status::Stopped,
        pid: None,
        exit_code: Some(137),
        signal: Some(9),
        oom_killed: true,
        started_at: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
        finished_at: Some(UNIX_EPOCH + Duration::new(1_700_000_060, 0)),
        restart_count: 0,
        health: None,
    };
    assert_eq!(
        to_json(&Response::State(state.clone())),
        json!({"type": "state", "status": "stopped", "pid": null, "exit_code": 137,
               "signal": 9, "oom_killed": true,
               "started_at": "2023-11-14T22:13:20.000000005Z",
               "finished_at": "2023-11-14T22:14:20Z", "restart_count": 0})
    );
    assert_eq!(
        to_json(&Response::Stats(ContainerStats {
            cpu_ns: 1,
            memory_bytes: 2,
            memory_limit: None,
            oom_kills: 3,
            pids: 4
        })),
        json!({"type": "stats", "cpu_ns": 1, "memory_bytes": 2, "memory_limit": null,
               "oom_kills": 3, "pids": 4})
    );
    assert_eq!(to_json(&Response::Ok), json!({"type": "ok"}));
    assert_eq!(
        to_json(&Response::error(ErrorKind::NotFound, "no such user")),
        json!({"type": "error", "kind": "not_found", "message": "no such user"})
    );

    // Everything decodes back to itself.
    let responses = vec![
        Response::Hello {
            major: 1,
            minor: 0,
            server: "s".into(),
        },
        Response::State(state),
        Response::Stats(ContainerStats::default()),
        Response::ExecStarted { pid: 7 },
        Response::ExecExited {
            exit_code: 130,
            signal: Some(2),
        },
        Response::Ok,
        Response::error(ErrorKind::VersionMismatch, "m"),
    ];
    for r in responses {
        let back: Response = serde_json::from_value(to_json(&r)).unwrap();
        assert_eq!(back, r);
    }
}

#[test]
fn decoding_is_lenient_where_it_should_be() {
    // Optional fields may be absent; unknown fields (from newer minor versions) are ignored.
    let r: Request =
        serde_json::from_value(json!({"type": "exec", "args": ["true"], "new": 1})).unwrap();
    assert_eq!(
        r,
        Request::Exec(ExecRequest {
            args: vec!["true".into()],
            ..Default::default()
        })
    );
    let s: Response =
        serde_json::from_value(json!({"type": "state", "status": "running", "pid": 5})).unwrap();
    assert!(matches!(
        s,
        Response::State(ContainerState { pid: Some(5), .. })
    ));
    // An error kind from a newer shim is still an error.
    let e: Response =
        serde_json::from_value(json!({"type": "error", "kind": "quota", "message": "m"})).unwrap();
    assert!(matches!(
        e,
        Response::Error {
            kind: ErrorKind::Unknown,
            ..
        }
    ));
    // Bad timestamps are not silently dropped.
    assert!(serde_json::from_value::<ContainerState>(
        json!({"status": "running", "started_at": "yesterday"})
    )
    .is_err());
}

#[test]
fn decoder_assembles_frames_from_partial_reads() {
    let messages = [
        json!({"type": "hello", "major": 1, "minor": 0}),
        json!({"type": "state"}),
        json!({"type": "signal", "signal": 9}),
    ];
    let mut wire = Vec::new();
    for m in &messages {
        write_message(&mut wire, m).unwrap();
    }
    // Byte by byte: each frame appears exactly when its last byte arrives.
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    let mut ends = Vec::new();
    let mut pos = 0;
    for m in &messages {
        pos += 4 + serde_json::to_vec(m).unwrap().len();
        ends.push(pos);
    }
    for (i, b) in wire.iter().enumerate() {
        dec.feed(std::slice::from_ref(b));
        if let Some(frame) = dec.next_frame().unwrap() {
            got.push(serde_json::from_slice::<serde_json::Value>(&frame).unwrap());
            assert!(ends.contains(&(i + 1)), "frame completed at byte {}", i + 1);
        }
    }
    assert_eq!(got, messages);
    assert_eq!(dec.buffered(), 0);

    // Uneven pieces through a reader that returns at most 3 bytes per read.
    struct Trickle(Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3);
            self.0.read(&mut buf[..n])
        }
    }
    let mut src = Trickle(Cursor::new(wire.clone()));
    let mut dec = FrameDecoder::new();
    let mut frames = 0;
    while dec.read_from(&mut src).unwrap() > 0 {
        while dec.next_frame().unwrap().is_some() {
            frames += 1;
        }
    }
    assert_eq!(frames, 3);
    // The blocking reader copes with the same trickle.
    let mut src = Trickle(Cursor::new(wire));
    for m in &messages {
        assert_eq!(
            read_message::<_, serde_json::Value>(&mut src)
                .unwrap()
                .as_ref(),
            Some(m)
        );
    }
}

#[test]
fn decoder_refuses_oversized_frames_from_the_header() {
    let mut dec = FrameDecoder::new();
    dec.feed(&((MAX_FRAME + 1) as u32).to_be_bytes()[..3]);
    assert!(dec.next_frame().unwrap().is_none());
    dec.feed(&((MAX_FRAME + 1) as u32).to_be_bytes()[3..]);
    assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge { .. })));
    let mut small = FrameDecoder::with_max(10);
    small.feed(&frame_bytes(&[b'a'; 11]));
    assert!(matches!(
        small.next_frame(),
        Err(FrameError::TooLarge { len: 11, max: 10 })
    ));
}

/// Drives a connection with in-memory bytes: feeds `input`, answers requests with
/// `handler`, returns the decoded responses and whether the connection finished.
fn drive(
    input: &[serde_json::Value],
    mut handler: impl FnMut(Request) -> Response,
) -> (Vec<serde_json::Value>, Connection) {
    let mut conn = Connection::new("test-shim");
    for m in input {
        let mut wire = Vec::new();
        write_message(&mut wire, m).unwrap();
        conn.feed(&wire);
        while let Some(req) = conn.next_request() {
            let resp = handler(req);
            conn.respond(&resp);
        }
    }
    let mut out = Vec::new();
    assert!(conn.write_to(&mut out).unwrap());
    let mut r = Cursor::new(out);
    let mut responses = Vec::new();
    while let Some(v) = read_message::<_, serde_json::Value>(&mut r).unwrap() {
        responses.push(v);
    }
    (responses, conn)
}

fn hello(major: u16, minor: u16) -> serde_json::Value {
    json!({"type": "hello", "major": major, "minor": minor, "client": "t"})
}

#[test]
fn connection_negotiates_then_serves() {
    let (responses, conn) = drive(&[hello(1, 7), json!({"type": "state"})], |req| {
        assert_eq!(req, Request::State);
        Response::Ok
    });
    assert_eq!(
        responses,
        vec![
            json!({"type": "hello", "major": 1, "minor": PROTOCOL_MINOR, "server": "test-shim"}),
            json!({"type": "ok"}),
        ]
    );
    assert_eq!(
        conn.version(),
        Some(Version {
            major: 1,
            minor: PROTOCOL_MINOR
        })
    );
    assert!(!conn.is_finished());
}

#[test]
fn connection_refuses_another_major_version() {
    let (responses, conn) = drive(&[hello(2, 0), json!({"type": "state"})], |_| {
        panic!("no request may reach the shim")
    });
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0]["kind"], "version_mismatch");
    let message = responses[0]["message"].as_str().unwrap();
    assert!(
        message.contains("2.0") && message.contains("1."),
        "{message}"
    );
    assert!(conn.is_finished());
    assert!(!conn.wants_read());
}

#[test]
fn connection_requires_hello_first() {
    let (responses, conn) = drive(&[json!({"type": "state"})], |_| panic!("not served"));
    assert_eq!(responses[0]["kind"], "protocol");
    assert!(conn.is_finished());
    let (responses, conn) = drive(&[json!("not an object")], |_| panic!("not served"));
    assert_eq!(responses[0]["kind"], "protocol");
    assert!(conn.is_finished());
}

#[test]
fn connection_survives_unknown_and_malformed_requests() {
    let mut served = Vec::new();
    let (responses, conn) = drive(
        &[
            hello(1, 0),
            json!({"type": "checkpoint", "to": "/x"}),
            json!({"type": "signal", "signal": "TERM"}),
            json!({"type": "hello", "major": 1, "minor": 0}),
            json!({"type": "signal", "signal": 15}),
        ],
        |req| {
            served.push(req);
            Response::Ok
        },
    );
    let kinds: Vec<&str> = responses
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or(r["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec!["hello", "unsupported", "invalid", "protocol", "ok"]
    );
    assert_eq!(served, vec![Request::Signal { signal: 15 }]);
    assert!(!conn.is_finished());
}

#[test]
fn connection_hands_out_one_request_at_a_time() {
    let mut conn = Connection::new("s");
    let mut wire = Vec::new();
    write_message(&mut wire, &hello(1, 0)).unwrap();
    for sig in [1, 2, 3] {
        write_message(&mut wire, &Request::Signal { signal: sig }).unwrap();
    }
    conn.feed(&wire);
    assert_eq!(conn.next_request(), Some(Request::Signal { signal: 1 }));
    // Not answered yet: the next one waits, so answers stay in order.
    assert_eq!(conn.next_request(), None);
    conn.respond(&Response::Ok);
    assert_eq!(conn.next_request(), Some(Request::Signal { signal: 2 }));
    conn.respond(&Response::Ok);
    assert_eq!(conn.next_request(), Some(Request::Signal { signal: 3 }));
    conn.respond(&Response::Ok);
    assert_eq!(conn.next_request(), None);
}

#[test]
fn connection_closes_on_an_oversized_frame() {
    let mut conn = Connection::new("s");
    let mut wire = Vec::new();
    write_message(&mut wire, &hello(1, 0)).unwrap();
    wire.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
    conn.feed(&wire);
    assert_eq!(conn.next_request(), None);
    let mut out = Vec::new();
    conn.write_to(&mut out).unwrap();
    let mut r = Cursor::new(out);
    read_message::<_, serde_json::Value>(&mut r).unwrap();
    let err: serde_json::Value = read_message(&mut r).unwrap().unwrap();
    assert_eq!(err["kind"], "protocol");
    assert!(conn.is_finished());
}

/// A fake shim: a non-blocking listener and connections driven by a small poll loop, like
/// the real shim's. Runs until `stop` is set, answering with `handler`.
struct FakeShim {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeShim {
    fn start(path: &Path, handler: impl FnMut(Request) -> Response + Send + 'static) -> FakeShim {
        let listener = bind_listener(path).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || poll_loop(listener, handler, &flag));
        FakeShim {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeShim {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn poll_loop(
    listener: UnixListener,
    mut handler: impl FnMut(Request) -> Response,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut conns: Vec<(UnixStream, Connection)> = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let mut fds = vec![libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for (s, c) in &conns {
            let mut events = 0;
            if c.wants_read() {
                events |= libc::POLLIN;
            }
            if c.wants_write() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        // SAFETY: fds is a valid array of pollfd for the length passed.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        assert!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
        if fds[0].revents & libc::POLLIN != 0 {
            while let Ok((s, _)) = listener.accept() {
                s.set_nonblocking(true).unwrap();
                conns.push((s, Connection::new("fake-shim 1")));
            }
        }
        for (i, (s, c)) in conns.iter_mut().enumerate() {
            if fds.get(i + 1).is_some_and(|p| p.revents != 0) {
                while c.wants_read() {
                    match c.read_from(s).unwrap() {
                        ReadOutcome::Data(_) => {}
                        ReadOutcome::WouldBlock | ReadOutcome::Closed => break,
                    }
                }
            }
            while let Some(req) = c.next_request() {
                let resp = handler(req);
                c.respond(&resp);
            }
            c.write_to(s).unwrap();
        }
        conns.retain(|(_, c)| !c.is_finished());
    }
}

fn running_state() -> ContainerState {
    ContainerState {
        status: Status::Running,
        pid: Some(4242),
        exit_code: None,
        signal: None,
        oom_killed: false,
        started_at: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        finished_at: None,
        restart_count: 0,
        health: None,
    }
}

#[test]
fn state_1_1_restarting_restart_count_and_health() {
    use crate::health::{HealthState, HealthStatus, ProbeResult};
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let state = ContainerState {
        status: Status::Restarting,
        pid: None,
        exit_code: Some(1),
        restart_count: 3,
        health: Some(HealthState {
            status: HealthStatus::Unhealthy,
            failing_streak: 3,
            log: vec![ProbeResult {
                start: at,
                end: at + Duration::from_millis(20),
                exit_code: 1,
                output: "down\n".into(),
            }],
        }),
        ..running_state()
    };
    let v = to_json(&Response::State(state.clone()));
    assert_eq!(v["status"], "restarting");
    assert_eq!(v["restart_count"], 3);
    assert_eq!(v["health"]["Status"], "unhealthy");
    assert_eq!(v["health"]["FailingStreak"], 3);
    assert_eq!(v["health"]["Log"][0]["Output"], "down\n");
    assert_eq!(v["health"]["Log"][0]["End"], "2023-11-14T22:13:20.02Z");
    let back: Response = serde_json::from_value(v).unwrap();
    assert_eq!(back, Response::State(state));
    // From a 1.0 shim: no count, no health.
    let old: ContainerState =
        serde_json::from_value(json!({"status": "running", "pid": 5})).unwrap();
    assert_eq!((old.restart_count, old.health), (0, None));
}

#[test]
fn exit_record_1_1_fields_are_optional() {
    let old: ExitRecord =
        serde_json::from_value(json!({"exit_code": 1, "finished_at": "2023-11-14T22:13:20Z"}))
            .unwrap();
    assert_eq!(old.restart_count, 0);
    assert!(!old.manually_stopped);
    assert_eq!(old.error, None);
    let mut new = old.clone();
    new.restart_count = 2;
    new.manually_stopped = true;
    new.error = Some("restart failed".into());
    let v = serde_json::to_value(&new).unwrap();
    assert_eq!(v["restart_count"], 2);
    assert_eq!(v["manually_stopped"], true);
    assert_eq!(serde_json::from_value::<ExitRecord>(v).unwrap(), new);
    // Defaults are left out, so records stay as they were.
    let v = serde_json::to_value(&old).unwrap();
    assert!(v.get("restart_count").is_none() && v.get("manually_stopped").is_none());
}

#[test]
fn client_and_shim_over_a_real_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shim.sock");
    let _shim = FakeShim::start(&path, |req| match req {
        Request::State => Response::State(running_state()),
        Request::Stats => Response::Stats(ContainerStats {
            cpu_ns: 123,
            memory_bytes: 4096,
            memory_limit: Some(1 << 20),
            oom_kills: 0,
            pids: 2,
        }),
        Request::Signal { signal: 15 } => Response::Ok,
        Request::Signal { signal } => {
            Response::error(ErrorKind::Invalid, format!("bad signal {signal}"))
        }
        Request::Stop { grace_secs } => {
            thread::sleep(Duration::from_millis(200));
            assert_eq!(grace_secs, 1);
            Response::Ok
        }
        other => Response::error(ErrorKind::Unsupported, other.name()),
    });

    let mut client = Client::connect(&path, Duration::from_secs(5)).unwrap();
    assert_eq!(
        client.version(),
        Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR
        }
    );
    assert_eq!(client.server(), "fake-shim 1");
    assert_eq!(client.state().unwrap(), running_state());
    assert_eq!(client.stats().unwrap().memory_bytes, 4096);
    client.signal(15).unwrap();
    let err = client.signal(99).unwrap_err();
    assert!(
        matches!(&err, ProtocolError::Refused { kind: ErrorKind::Invalid, message, .. } if message == "bad signal 99"),
        "{err}"
    );
    assert_eq!(err.category(), Category::Invalid);
    assert!(err.to_string().contains("shim.sock"), "{err}");
    // Stop waits for the shim's answer beyond the plain timeout's worth of grace.
    let mut slow = Client::connect(&path, Duration::from_millis(100)).unwrap();
    slow.stop(Duration::from_secs(1)).unwrap();
    // One-shot helper on a fresh connection.
    assert_eq!(
        request(&path, &Request::State, Duration::from_secs(5)).unwrap(),
        Response::State(running_state())
    );
    // Several clients at once.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let p = path.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&p, Duration::from_secs(5)).unwrap();
                (0..20).all(|_| c.state().unwrap() == running_state())
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
}

#[test]
fn client_reports_version_refusal_and_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    for (answer, expect_refused) in [
        (
            Response::error(ErrorKind::VersionMismatch, "this shim speaks 0.9"),
            true,
        ),
        (
            Response::Hello {
                major: PROTOCOL_MAJOR + 1,
                minor: 0,
                server: "future".into(),
            },
            false,
        ),
    ] {
        let path = dir.path().join(format!("v{expect_refused}.sock"));
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let hello: Request = read_message(&mut s).unwrap().unwrap();
            assert!(matches!(
                hello,
                Request::Hello {
                    major: PROTOCOL_MAJOR,
                    ..
                }
            ));
            write_message(&mut s, &answer).unwrap();
        });
        let err = Client::connect(&path, Duration::from_secs(5)).unwrap_err();
        server.join().unwrap();
        if expect_refused {
            assert!(matches!(err, ProtocolError::VersionRefused { .. }), "{err}");
            assert!(err.to_string().contains("this shim speaks 0.9"), "{err}");
        } else {
            assert!(
                matches!(err, ProtocolError::VersionMismatch { .. }),
                "{err}"
            );
            assert!(err.to_string().contains("2.0"), "{err}");
        }
        assert_eq!(err.category(), Category::Invalid);
    }
}

#[test]
fn a_real_shim_connection_refuses_a_newer_major() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shim.sock");
    let _shim = FakeShim::start(&path, |_| panic!("not served"));
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write_message(&mut s, &hello(PROTOCOL_MAJOR + 1, 3)).unwrap();
    let answer: Response = read_message(&mut s).unwrap().unwrap();
    assert!(
        matches!(&answer, Response::Error { kind: ErrorKind::VersionMismatch, message } if message.contains("2.3")),
        "{answer:?}"
    );
    // Then the shim closes the connection.
    assert!(read_frame(&mut s).unwrap().is_none());
}

#[test]
fn connect_errors_name_the_socket_and_are_categorized() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.sock");
    let err = Client::connect(&missing, Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("gone.sock"), "{err}");
    assert_eq!(err.category(), Category::NotFound);

    // A socket file whose shim died: refused, also "not found" for the caller.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let err = Client::connect(&stale, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.category(), Category::NotFound, "{err}");
    // bind_listener replaces the stale file, but not a live socket or another file.
    let live = bind_listener(&stale).unwrap();
    let err = bind_listener(&stale).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    drop(live);
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    assert!(bind_listener(&plain).is_err());
    assert!(plain.exists());
}

#[test]
fn a_shim_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mute.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let start = Instant::now();
    // Accepted by the kernel (backlog) but never read: the hello gets no answer.
    let err = Client::connect(&path, Duration::from_millis(200)).unwrap_err();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        matches!(
            err,
            ProtocolError::Timeout {
                request: "hello",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("did not answer hello within 200ms"),
        "{err}"
    );
    assert_eq!(err.category(), Category::Transient, "{err}");
    drop(listener);
}

#[test]
fn connect_times_out_when_the_backlog_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // SAFETY: listen(2) on a socket we own, to shrink its backlog to the minimum.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let mut held = Vec::new();
    let timeout = Duration::from_millis(150);
    let mut timed_out = None;
    for _ in 0..16 {
        let start = Instant::now();
        match client::connect_for_test(&path, timeout) {
            Ok(s) => held.push(s),
            Err(e) => {
                timed_out = Some((e, start.elapsed()));
                break;
            }
        }
    }
    let (err, took) = timed_out.expect("the backlog filled up");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(took >= timeout && took < Duration::from_secs(3), "{took:?}");
    assert!(err.to_string().contains("busy.sock"), "{err}");
    // bind_listener does not hang on such a socket, nor take it over.
    let start = Instant::now();
    let err = bind_listener(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
    drop(held);
}

#[test]
fn socket_paths_longer_than_sun_path_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_path_buf();
    while deep.as_os_str().len() < 150 {
        deep.push("a-rather-long-directory-name");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let path = deep.join("shim.sock");
    assert!(path.as_os_str().len() > 108);
    let _shim = FakeShim::start(&path, |_| Response::State(running_state()));
    let mut c = Client::connect(&path, Duration::from_secs(5)).unwrap();
    assert_eq!(c.state().unwrap(), running_state());
}

#[test]
fn serve_blocking_answers_until_the_client_leaves() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || {
        let mut n = 0;
        serve_blocking(&mut b, "blocking", |req| {
            n += 1;
            assert_eq!(req, Request::Stats);
            Response::Stats(ContainerStats {
                pids: n,
                ..Default::default()
            })
        })
        .unwrap();
        n
    });
    write_message(&mut a, &hello(1, 0)).unwrap();
    let _: Response = read_message(&mut a).unwrap().unwrap();
    for i in 1..=3 {
        write_message(&mut a, &Request::Stats).unwrap();
        let r: Response = read_message(&mut a).unwrap().unwrap();
        assert!(matches!(r, Response::Stats(ContainerStats { pids, .. }) if pids == i));
    }
    a.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap(), 3);
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn exit_record_writes_atomically_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exit.json");
    assert_eq!(ExitRecord::load(&path).unwrap(), None);

    let started = UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000);
    let finished = SystemTime::now();
    let first = ExitRecord::from_wait_status(3 << 8, false, Some(started), finished);
    assert_eq!((first.exit_code, first.signal), (3, None));
    first.write(&path).unwrap();
    assert_eq!(ExitRecord::load(&path).unwrap(), Some(first.clone()));

    let killed = ExitRecord::from_wait_status(libc::SIGKILL, true, None, finished);
    assert_eq!((killed.exit_code, killed.signal), (137, Some(9)));
    killed.write(&path).unwrap();
    assert_eq!(ExitRecord::load(&path).unwrap(), Some(killed));

    // Only the record is left: the temp file was renamed over it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["exit_code"], 137);
    assert_eq!(v["oom_killed"], true);
    assert!(v["finished_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn exit_record_from_real_processes() {
    let exited = Command::new("sh").args(["-c", "exit 7"]).status().unwrap();
    let r = ExitRecord::from_wait_status(exited.into_raw(), false, None, SystemTime::now());
    assert_eq!((r.exit_code, r.signal), (7, None));
    let killed = Command::new("sh")
        .args(["-c", "kill -KILL $$"])
        .status()
        .unwrap();
    let r = ExitRecord::from_wait_status(killed.into_raw(), false, None, SystemTime::now());
    assert_eq!((r.exit_code, r.signal), (137, Some(libc::SIGKILL)));
}

#[test]
fn exit_record_load_refuses_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exit.json");
    std::fs::write(&path, b"{\"exit_code\": 1").unwrap();
    let err = ExitRecord::load(&path).unwrap_err();
    assert!(matches!(err, ProtocolError::BadExitRecord { .. }), "{err}");
    assert!(err.to_string().contains("exit.json"), "{err}");
    std::fs::write(&path, vec![b' '; 100 * 1024]).unwrap();
    let err = ExitRecord::load(&path).unwrap_err();
    assert!(matches!(err, ProtocolError::ReadExitRecord { .. }), "{err}");
    // A directory in the way is an error, not "no record".
    let as_dir = dir.path().join("dir.json");
    std::fs::create_dir(&as_dir).unwrap();
    assert!(ExitRecord::load(&as_dir).is_err());
}
