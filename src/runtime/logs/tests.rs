//! Writer and reader together, on real files in temp dirs.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;

/// 2009-11-10T23:00:00.123456789Z, always.
fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_257_894_000, 123_456_789)
}

/// A clock that moves one millisecond per call, so each stamp is distinct.
fn ticking_clock() -> SystemTime {
    static TICKS: AtomicU64 = AtomicU64::new(0);
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + TICKS.fetch_add(1, Ordering::Relaxed))
}

fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join(LOG_FILE_NAME)
}

fn read_all(path: &Path) -> Vec<LogRecord> {
    LogReader::open(path)
        .expect("open reader")
        .records()
        .collect::<Result<Vec<_>, _>>()
        .expect("read records")
}

fn texts(records: &[LogRecord]) -> Vec<String> {
    records.iter().map(|r| r.log.clone()).collect()
}

fn config(max_size: u64, max_files: usize) -> LogConfig {
    LogConfig {
        max_size,
        max_files,
    }
}

#[test]
fn records_round_trip_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"one\ntwo\n");
    w.write(Stream::Stderr, b"oops\n");
    w.write(Stream::Stdout, b"three \"quoted\" <tag> & \\ \t\n");
    let stats = w.close().unwrap();
    assert_eq!(stats.records, 4);
    assert_eq!(stats.dropped, 0);

    let records = read_all(&path);
    let got: Vec<(Stream, &str)> = records.iter().map(|r| (r.stream, r.log.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Stream::Stdout, "one\n"),
            (Stream::Stdout, "two\n"),
            (Stream::Stderr, "oops\n"),
            (Stream::Stdout, "three \"quoted\" <tag> & \\ \t\n"),
        ]
    );
    let now = SystemTime::now();
    for r in &records {
        let t = r.timestamp().expect("timestamp parses");
        assert!(now.duration_since(t).unwrap() < Duration::from_secs(60));
        assert!(r.time.ends_with('Z'));
    }
}

#[test]
fn file_bytes_are_exactly_dockers() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default())
        .unwrap()
        .with_clock(fixed_clock);
    w.write(Stream::Stdout, b"hello <world> & \"you\"\n");
    w.write(Stream::Stderr, b"bad \xff byte\tand \x1b[1mansi\r\n");
    w.close().unwrap();
    let expected = concat!(
        r#"{"log":"hello \u003cworld\u003e \u0026 \"you\"\n","stream":"stdout","time":"2009-11-10T23:00:00.123456789Z"}"#,
        "\n",
        r#"{"log":"bad \ufffd byte\u0009and \u001b[1mansi\r\n","stream":"stderr","time":"2009-11-10T23:00:00.123456789Z"}"#,
        "\n",
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), expected);
    let records = read_all(&path);
    assert_eq!(records[1].log, "bad \u{fffd} byte\tand \u{1b}[1mansi\r\n");
}

#[test]
fn partial_lines_are_joined_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"ab");
    w.write(Stream::Stderr, b"err");
    w.write(Stream::Stdout, b"c");
    w.write(Stream::Stderr, b"or\nnext");
    w.write(Stream::Stdout, b"d\ne");
    w.write(Stream::Stdout, b"\n");
    w.write(Stream::Stdout, b"");
    w.close().unwrap();
    let got: Vec<(Stream, String)> = read_all(&path)
        .into_iter()
        .map(|r| (r.stream, r.log))
        .collect();
    assert_eq!(
        got,
        vec![
            (Stream::Stderr, "error\n".to_string()),
            (Stream::Stdout, "abcd\n".to_string()),
            (Stream::Stdout, "e\n".to_string()),
            // The unterminated rest at close is written without a newline, like Docker.
            (Stream::Stderr, "next".to_string()),
        ]
    );
}

#[test]
fn close_stream_flushes_only_that_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"prompt> ");
    w.write(Stream::Stderr, b"half");
    w.close_stream(Stream::Stdout);
    assert_eq!(texts(&read_all(&path)), vec!["prompt> "]);
    w.write(Stream::Stderr, b" done\n");
    drop(w); // dropping flushes too; nothing is pending here
    assert_eq!(texts(&read_all(&path)), vec!["prompt> ", "half done\n"]);
}

#[test]
fn long_lines_split_at_the_cap_and_share_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default())
        .unwrap()
        .with_clock(ticking_clock);
    let long = vec![b'x'; 2 * LINE_CAP + 100];
    // Fed in odd-sized pieces, as a pipe would deliver it.
    for piece in long.chunks(1000) {
        w.write(Stream::Stdout, piece);
    }
    w.write(Stream::Stdout, b"\nshort\n");
    w.close().unwrap();
    let records = read_all(&path);
    let lens: Vec<usize> = records.iter().map(|r| r.log.len()).collect();
    assert_eq!(lens, vec![LINE_CAP, LINE_CAP, 101, 6]);
    assert!(!records[0].log.ends_with('\n'));
    assert!(records[2].log.ends_with('\n'));
    assert_eq!(records[0].time, records[1].time);
    assert_eq!(records[1].time, records[2].time);
    assert_ne!(records[2].time, records[3].time);
    let joined: String = records[..3].iter().map(|r| r.log.as_str()).collect();
    assert_eq!(joined.len(), long.len() + 1);
}

#[test]
fn a_line_of_exactly_the_cap_is_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    let mut line = vec![b'y'; LINE_CAP];
    line.push(b'\n');
    w.write(Stream::Stdout, &line);
    w.close().unwrap();
    let records = read_all(&path);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].log.len(), LINE_CAP + 1);
}

#[test]
fn splitting_keeps_utf8_characters_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    let mut line = vec![b'a'; LINE_CAP - 1];
    line.extend_from_slice("é🦀".as_bytes());
    line.push(b'\n');
    w.write(Stream::Stdout, &line);
    w.close().unwrap();
    let records = read_all(&path);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].log.len(), LINE_CAP - 1);
    assert_eq!(records[1].log, "é🦀\n");
    assert!(!fs::read_to_string(&path).unwrap().contains("ufffd"));
}

#[test]
fn writer_memory_stays_bounded_without_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..64 {
        w.write(Stream::Stderr, &chunk);
        assert!(w.buffered() < LINE_CAP);
        assert!(w.encode_buffer_capacity() <= 16 * 1024);
    }
    assert_eq!(w.stats().records, 64 * 64 * 1024 / LINE_CAP as u64);
    // After a burst of short lines, no big buffer is kept.
    let burst = "short line\n".repeat(20_000);
    w.write(Stream::Stdout, burst.as_bytes());
    w.write(Stream::Stderr, b"\n");
    assert!(w.encode_buffer_capacity() <= 16 * 1024);
    assert_eq!(w.buffered(), 0);
}

#[test]
fn rotation_keeps_max_files_and_bounds_size() {
    // Line by line, and in big pipe-sized chunks (records batched into one write).
    for chunked in [false, true] {
        rotation_case(chunked);
    }
}

fn rotation_case(chunked: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let cfg = config(1000, 3);
    let mut w = LogWriter::open(&path, cfg).unwrap();
    let mut written = Vec::new();
    for i in 0..500 {
        written.push(format!("line {i:04} {}\n", "#".repeat(i % 37)));
    }
    if chunked {
        let all = written.concat();
        for piece in all.as_bytes().chunks(4000) {
            w.write(Stream::Stdout, piece);
        }
    } else {
        for line in &written {
            w.write(Stream::Stdout, line.as_bytes());
        }
    }
    let stats = w.close().unwrap();
    assert_eq!(stats.records, 500);
    assert!(stats.rotations > 10, "{stats:?}");

    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["container.log", "container.log.1", "container.log.2"]
    );
    let mut total = 0;
    for name in &names {
        let len = fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len <= cfg.max_size, "{name} is {len} bytes");
        total += len;
    }
    assert!(total <= cfg.max_total_bytes());

    // What survives is a contiguous, ordered suffix of what was written.
    let got = texts(&read_all(&path));
    assert!(got.len() > 10);
    assert_eq!(got[..], written[written.len() - got.len()..]);
}

#[test]
fn single_file_rotation_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, config(500, 1)).unwrap();
    for i in 0..100 {
        w.write(Stream::Stdout, format!("message {i}\n").as_bytes());
    }
    w.close().unwrap();
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(fs::metadata(&path).unwrap().len() <= 500);
    let got = texts(&read_all(&path));
    assert_eq!(got.last().unwrap(), "message 99\n");
}

#[test]
fn a_record_larger_than_max_size_still_gets_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, config(100, 2)).unwrap();
    w.write(Stream::Stdout, b"small\n");
    w.write(Stream::Stdout, &[b'L'; 300]);
    w.write(Stream::Stdout, b"\nafter\n");
    w.close().unwrap();
    let got = texts(&read_all(&path));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].len(), 301);
    assert_eq!(got[1], "after\n");
}

#[test]
fn reopening_repairs_a_torn_last_line_and_drops_surplus_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    {
        let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
        w.write(Stream::Stdout, b"before crash\n");
        w.close().unwrap();
    }
    // A crash mid-write leaves half a record; a lower max_files leaves an extra file.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(br#"{"log":"cut off"#)
        .unwrap();
    fs::write(dir.path().join("container.log.7"), b"stale\n").unwrap();
    fs::write(dir.path().join("container.log.01"), b"not ours\n").unwrap();

    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"after restart\n");
    w.close().unwrap();
    assert!(!dir.path().join("container.log.7").exists());
    assert!(dir.path().join("container.log.01").exists());

    let reader = LogReader::open(&path).unwrap();
    let mut records = reader.records();
    let got: Vec<String> = records.by_ref().map(|r| r.unwrap().log).collect();
    assert_eq!(got, vec!["before crash\n", "after restart\n"]);
    assert_eq!(records.skipped(), 1);
}

#[test]
fn malformed_and_torn_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let good = |s: &str| {
        format!(r#"{{"log":"{s}\n","stream":"stdout","time":"2024-01-01T00:00:00Z"}}"#) + "\n"
    };
    let mut content = String::new();
    content += &good("a");
    content += "not json at all\n";
    content += "\n";
    content += r#"{"log":"x\n","stream":"stdin","time":"2024-01-01T00:00:00Z"}"#;
    content += "\n";
    content += &good("b");
    content += r#"{"log":"torn"#; // no newline: a crash cut it
    fs::write(&path, &content).unwrap();

    let reader = LogReader::open(&path).unwrap();
    let mut records = reader.records();
    let got: Vec<String> = records.by_ref().map(|r| r.unwrap().log).collect();
    assert_eq!(got, vec!["a\n", "b\n"]);
    assert_eq!(records.skipped(), 3);
    assert_eq!(texts(&reader.tail(10).unwrap()), vec!["a\n", "b\n"]);
    assert_eq!(texts(&reader.tail(1).unwrap()), vec!["b\n"]);
}

#[test]
fn reads_docker_written_records_with_attrs() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    fs::write(
        &path,
        concat!(
            r#"{"log":"hi\n","stream":"stdout","attrs":{"tag":"x"},"time":"2024-03-01T10:00:00.5+01:00"}"#,
            "\n"
        ),
    )
    .unwrap();
    let records = read_all(&path);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].timestamp(),
        Some(UNIX_EPOCH + Duration::new(1_709_283_600, 500_000_000))
    );
}

#[test]
fn missing_log_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let reader = LogReader::open(log_path(&dir)).unwrap();
    assert_eq!(reader.records().count(), 0);
    assert!(reader.tail(5).unwrap().is_empty());
}

/// Writes `n` numbered lines through a rotating writer and returns them.
fn write_numbered(path: &Path, cfg: LogConfig, n: usize, width: usize) -> Vec<String> {
    let mut w = LogWriter::open(path, cfg).unwrap();
    let mut written = Vec::new();
    for i in 0..n {
        let line = format!("{i:06} {}\n", "=".repeat(i * 7 % width));
        w.write(
            if i % 3 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            },
            line.as_bytes(),
        );
        written.push(line);
    }
    w.close().unwrap();
    written
}

#[test]
fn tail_across_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_numbered(&path, config(4_000, 30), 400, 50);
    let reader = LogReader::open(&path).unwrap();
    let all = texts(&reader.records().collect::<Result<Vec<_>, _>>().unwrap());
    assert_eq!(all.len(), 400);
    assert!(rotated_files(&path).unwrap().len() > 5);
    for n in [0, 1, 2, 17, 50, 199, 399, 400, 1000] {
        let tail = texts(&reader.tail(n).unwrap());
        assert_eq!(tail[..], all[all.len() - n.min(all.len())..], "tail {n}");
    }
}

#[test]
fn tail_handles_records_longer_than_a_read_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    // Control bytes are escaped to six bytes each: a ~98 KiB line spans two read blocks.
    for i in 0..6u8 {
        let mut line = vec![i + 1; LINE_CAP - 1];
        line.push(b'\n');
        w.write(Stream::Stdout, &line);
        w.write(Stream::Stderr, format!("marker {i}\n").as_bytes());
    }
    w.close().unwrap();
    assert!(fs::metadata(&path).unwrap().len() > 6 * 90 * 1024);
    let reader = LogReader::open(&path).unwrap();
    let all = reader.records().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(all.len(), 12);
    for n in 0..=12 {
        assert_eq!(reader.tail(n).unwrap()[..], all[12 - n..], "tail {n}");
    }
}

#[test]
fn oversized_garbage_is_skipped_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let good = |s: &str| {
        format!(r#"{{"log":"{s}\n","stream":"stdout","time":"2024-01-01T00:00:00Z"}}"#) + "\n"
    };
    let mut content = good("first").into_bytes();
    content.extend(std::iter::repeat_n(b'g', MAX_RECORD_LINE + 3 * 64 * 1024));
    content.push(b'\n');
    content.extend(good("last").into_bytes());
    fs::write(&path, &content).unwrap();
    let reader = LogReader::open(&path).unwrap();
    let mut records = reader.records();
    let got: Vec<String> = records.by_ref().map(|r| r.unwrap().log).collect();
    assert_eq!(got, vec!["first\n", "last\n"]);
    assert_eq!(records.skipped(), 1);
    assert_eq!(texts(&reader.tail(5).unwrap()), vec!["first\n", "last\n"]);
}

#[test]
fn write_errors_are_counted_not_fatal() {
    // /dev/full accepts the open and fails every write with ENOSPC.
    let mut w = LogWriter::open("/dev/full", LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"lost\nlost too\n");
    let stats = w.stats();
    assert_eq!(stats.records, 0);
    assert_eq!(stats.dropped, 2);
    let err = w.take_error().expect("error kept");
    assert!(matches!(err, LogError::Write { .. }), "{err}");
    assert!(err.to_string().contains("/dev/full"), "{err}");
    assert!(w.take_error().is_none());
}

#[test]
fn invalid_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in [config(0, 3), config(10, 0), config(10, 100_000)] {
        let err = LogWriter::open(log_path(&dir), cfg).unwrap_err();
        assert!(matches!(err, LogError::InvalidConfig { .. }), "{err}");
        assert_eq!(
            crate::error::Categorized::category(&err),
            crate::error::Category::Invalid
        );
    }
}

/// Runs a follower on another thread until it has seen `want` records or 20 s passed.
fn spawn_follower(
    path: &Path,
    tail: Option<usize>,
    want: usize,
) -> (mpsc::Receiver<String>, std::thread::JoinHandle<u64>) {
    let reader = LogReader::open(path).unwrap();
    let (tx, rx) = mpsc::channel();
    if let Some(n) = tail {
        for r in reader.tail(n).unwrap() {
            tx.send(r.log).unwrap();
        }
    }
    let seen = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let handle = std::thread::spawn(move || {
        let stop_seen = seen.clone();
        let mut follow = reader.follow(Duration::from_millis(5), move || {
            stop_seen.load(Ordering::SeqCst) >= want as u64 || Instant::now() > deadline
        });
        for r in follow.by_ref() {
            tx.send(r.unwrap().log).unwrap();
            seen.fetch_add(1, Ordering::SeqCst);
        }
        follow.skipped()
    });
    (rx, handle)
}

#[test]
fn follow_sees_appended_lines_after_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    for i in 0..5 {
        w.write(Stream::Stdout, format!("old {i}\n").as_bytes());
    }
    let (rx, handle) = spawn_follower(&path, Some(2), 3);
    std::thread::sleep(Duration::from_millis(30));
    for i in 0..3 {
        w.write(Stream::Stdout, format!("new {i}\n").as_bytes());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(handle.join().unwrap(), 0);
    let got: Vec<String> = rx.iter().collect();
    assert_eq!(
        got,
        vec!["old 3\n", "old 4\n", "new 0\n", "new 1\n", "new 2\n"]
    );
}

#[test]
fn follow_waits_for_a_record_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let full =
        r#"{"log":"slow\n","stream":"stdout","time":"2024-01-01T00:00:00Z"}"#.to_string() + "\n";
    let (head, rest) = full.split_at(20);
    fs::write(&path, head).unwrap();
    let (rx, handle) = spawn_follower(&path, None, 1);
    std::thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "half a record must not be yielded");
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(rest.as_bytes())
        .unwrap();
    assert_eq!(handle.join().unwrap(), 0);
    assert_eq!(rx.iter().collect::<Vec<_>>(), vec!["slow\n"]);
}

#[test]
fn follow_starts_before_the_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let (rx, handle) = spawn_follower(&path, None, 2);
    std::thread::sleep(Duration::from_millis(30));
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"first\nsecond\n");
    handle.join().unwrap();
    assert_eq!(rx.iter().collect::<Vec<_>>(), vec!["first\n", "second\n"]);
}

#[test]
fn follow_survives_rotations() {
    for max_files in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let cfg = config(600, max_files);
        let mut w = LogWriter::open(&path, cfg).unwrap();
        w.write(Stream::Stdout, b"before follow\n");
        let total = 200;
        let (rx, handle) = spawn_follower(&path, None, total);
        let mut written = Vec::new();
        let mut got = Vec::new();
        for i in 0..total {
            let line = format!("line {i:04} {}\n", "-".repeat(i % 40));
            w.write(Stream::Stdout, line.as_bytes());
            written.push(line);
            // Let the follower catch up now and then (a file is ~10 lines): a reader more
            // than max_files behind loses the files rotation dropped, like Docker's.
            if i % 4 == 3 {
                while got.len() < written.len() {
                    got.push(rx.recv_timeout(Duration::from_secs(10)).expect("follower"));
                }
            }
        }
        assert!(w.stats().rotations > 10, "{:?}", w.stats());
        let skipped = handle.join().unwrap();
        got.extend(rx.iter());
        assert_eq!(got, written, "max_files {max_files}");
        assert_eq!(skipped, 0);
    }
}

#[test]
fn follow_ends_at_its_deadline_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut w = LogWriter::open(&path, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"only\n");
    let start = Instant::now();
    let deadline = start + Duration::from_millis(100);
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let got: Vec<String> = LogReader::open(&path)
        .unwrap()
        .follow(Duration::from_millis(10), move || {
            let done = Instant::now() >= deadline;
            flag.store(done, Ordering::SeqCst);
            done
        })
        .map(|r| r.unwrap().log)
        .collect();
    // Follow starts at the end of the snapshot: nothing old is repeated.
    assert!(got.is_empty());
    assert!(stopped.load(Ordering::SeqCst));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn follow_keeps_up_with_rapid_rotation_when_nothing_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    // Hundreds of rotations while the follower runs, but enough files that none is dropped:
    // every record must arrive exactly once, in order, however the threads interleave.
    let cfg = config(600, 1000);
    let total = 1500;
    let (rx, handle) = spawn_follower(&path, None, total);
    let mut w = LogWriter::open(&path, cfg).unwrap();
    let mut written = Vec::new();
    for i in 0..total {
        let line = format!("rapid {i:05} {}\n", "+".repeat(i % 30));
        w.write(Stream::Stdout, line.as_bytes());
        written.push(line);
    }
    assert!(w.stats().rotations > 100, "{:?}", w.stats());
    assert_eq!(handle.join().unwrap(), 0);
    let got = rx.iter().collect::<Vec<_>>();
    if let Some(i) = (0..got.len().min(written.len())).find(|&i| got[i] != written[i]) {
        panic!(
            "record {i}: got {:?}, want {:?}",
            &got[i.saturating_sub(2)..(i + 3).min(got.len())],
            &written[i.saturating_sub(2)..(i + 3).min(written.len())]
        );
    }
    assert_eq!(got.len(), written.len());
}
