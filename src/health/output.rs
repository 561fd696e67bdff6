//! A probe's output, capped like Docker's (`limitedBuffer`): the first
//! [`MAX_OUTPUT_BYTES`] bytes of stdout and stderr together, then `...` when more came.

/// Docker's `maxOutputLen`.
pub const MAX_OUTPUT_BYTES: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeOutput {
    bytes: Vec<u8>,
    truncated: bool,
}

impl ProbeOutput {
    pub fn new() -> ProbeOutput {
        ProbeOutput::default()
    }

    /// Keeps what fits; anything beyond the cap only marks the output as truncated.
    pub fn push(&mut self, data: &[u8]) {
        let room = MAX_OUTPUT_BYTES - self.bytes.len();
        let keep = room.min(data.len());
        self.bytes.extend_from_slice(&data[..keep]);
        if keep < data.len() {
            self.truncated = true;
        }
    }

    /// Whether more output is wanted (the rest is read and thrown away).
    pub fn is_full(&self) -> bool {
        self.bytes.len() >= MAX_OUTPUT_BYTES
    }

    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The text as `inspect` shows it: invalid UTF-8 replaced, `...` appended when cut.
    pub fn into_string(self) -> String {
        let mut s = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.truncated {
            s.push_str("...");
        }
        s
    }
}

/// Go's `time.Duration.String()` for the messages Docker writes (`30s`, `1m30s`, `500ms`).
pub fn go_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    // Below a second: one unit with a fraction (1.5ms, 200µs, 7ns).
    if ns < 1_000_000_000 {
        let (unit, per) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(ns, per));
    }
    let secs = ns / 1_000_000_000;
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    let s = fraction(ns % 60_000_000_000, 1_000_000_000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

/// `value / per` with the fraction's trailing zeros dropped.
fn fraction(value: u128, per: u128) -> String {
    let whole = value / per;
    let frac = value % per;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = per.ilog10() as usize;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn output_is_capped_at_4_kib_with_an_ellipsis() {
        let mut o = ProbeOutput::new();
        o.push(b"ok\n");
        assert!(!o.is_full());
        assert_eq!(o.clone().into_string(), "ok\n");
        o.push(&[b'x'; 5000]);
        assert!(o.is_full() && o.is_truncated());
        o.push(b"more");
        let s = o.into_string();
        assert_eq!(s.len(), MAX_OUTPUT_BYTES + 3);
        assert!(s.starts_with("ok\nxxx") && s.ends_with("x..."));
        // Exactly the cap is not truncated.
        let mut exact = ProbeOutput::new();
        exact.push(&[b'y'; MAX_OUTPUT_BYTES]);
        assert!(exact.is_full() && !exact.is_truncated());
        assert_eq!(exact.into_string().len(), MAX_OUTPUT_BYTES);
        // Invalid UTF-8 does not fail.
        let mut bad = ProbeOutput::new();
        bad.push(&[0xff, b'a']);
        assert_eq!(bad.into_string(), "\u{fffd}a");
    }

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_micros(200), "200µs"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_millis(3_723_250), "1h2m3.25s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }
}
