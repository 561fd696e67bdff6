//! The json-file record encoder, byte for byte what Docker's `jsonlog.JSONLogs.MarshalJSONBuf`
//! writes: `{"log":…,"stream":…,"time":…}` plus a newline.
//!
//! Docker's string escaping is Go's `encoding/json` escaping with HTML-safe characters
//! (`<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`), `\u2028`/`\u2029` escaped, every byte of
//! invalid UTF-8 replaced by `\ufffd` (one per byte, as Go's `utf8.DecodeRune` reports it),
//! and only `\n`, `\r`, `\\`, `\"` as short escapes: other control bytes, tab included, are
//! `\u00XX` (encoding/json writes `\t`; Docker's hand-written encoder does not, and we match
//! Docker). serde_json escapes differently, hence this file.

use super::Stream;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends one encoded record and its trailing newline to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, log: &[u8], stream: Stream, time: &str) {
    out.push(b'{');
    // Docker omits an empty "log" (omitempty); a record we write always has content.
    if !log.is_empty() {
        out.extend_from_slice(b"\"log\":");
        write_json_string(out, log);
        out.push(b',');
    }
    out.extend_from_slice(b"\"stream\":");
    write_json_string(out, stream.as_str().as_bytes());
    out.extend_from_slice(b",\"time\":\"");
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// Writes `s` as a JSON string literal with Docker's escaping rules.
pub(crate) fn write_json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            if b >= 0x20 && b != b'\\' && b != b'"' && b != b'<' && b != b'>' && b != b'&' {
                i += 1;
                continue;
            }
            out.extend_from_slice(&s[start..i]);
            match b {
                b'\\' | b'"' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]),
            }
            i += 1;
            start = i;
            continue;
        }
        match utf8_sequence_len(&s[i..]) {
            None => {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(b"\\ufffd");
                i += 1;
                start = i;
            }
            // U+2028 and U+2029 (E2 80 A8/A9) break JavaScript string literals.
            Some(3)
                if s[i] == 0xe2 && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9) =>
            {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(b"\\u202");
                out.push(HEX[usize::from(s[i + 2] & 0xf)]);
                i += 3;
                start = i;
            }
            Some(n) => i += n,
        }
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Length of the valid UTF-8 sequence starting `s` (whose first byte is >= 0x80), or `None`
/// when Go's `utf8.DecodeRune` would return `(RuneError, 1)`: bad lead byte, overlong form,
/// surrogate, value above U+10FFFF, or a truncated sequence.
pub(crate) fn utf8_sequence_len(s: &[u8]) -> Option<usize> {
    let cont = |i: usize, lo: u8, hi: u8| s.get(i).is_some_and(|&c| (lo..=hi).contains(&c));
    let (len, lo, hi) = match s[0] {
        0xc2..=0xdf => (2, 0x80, 0xbf),
        0xe0 => (3, 0xa0, 0xbf),
        0xe1..=0xec | 0xee..=0xef => (3, 0x80, 0xbf),
        0xed => (3, 0x80, 0x9f),
        0xf0 => (4, 0x90, 0xbf),
        0xf1..=0xf3 => (4, 0x80, 0xbf),
        0xf4 => (4, 0x80, 0x8f),
        _ => return None,
    };
    if !cont(1, lo, hi) {
        return None;
    }
    if (2..len).all(|i| cont(i, 0x80, 0xbf)) {
        Some(len)
    } else {
        None
    }
}

/// How many bytes at the end of `s` are the start of a multi-byte UTF-8 character that the
/// next bytes may complete (0 to 3). Used to split long lines on character boundaries.
pub(crate) fn incomplete_utf8_tail(s: &[u8]) -> usize {
    for back in 1..=3.min(s.len()) {
        let b = s[s.len() - back];
        if b & 0xc0 == 0x80 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let need = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return 0,
        };
        return if back < need { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &[u8]) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        String::from_utf8(out).expect("encoder output is UTF-8")
    }

    #[test]
    fn escapes_like_docker() {
        assert_eq!(enc(b"hello world"), r#""hello world""#);
        assert_eq!(enc(b"a\"b\\c/"), r#""a\"b\\c/""#);
        assert_eq!(enc(b"line\n"), r#""line\n""#);
        assert_eq!(enc(b"cr\r\n"), r#""cr\r\n""#);
        assert_eq!(
            enc(b"<a href=\"x\">&</a>"),
            r#""\u003ca href=\"x\"\u003e\u0026\u003c/a\u003e""#
        );
        // Tab, backspace and form feed are \u00XX in Docker's encoder; DEL passes through.
        assert_eq!(enc(b"tab\there"), r#""tab\u0009here""#);
        assert_eq!(
            enc(b"\x00\x01\x08\x0c\x1b\x1f\x7f"),
            "\"\\u0000\\u0001\\u0008\\u000c\\u001b\\u001f\x7f\""
        );
        assert_eq!(enc(b""), r#""""#);
    }

    #[test]
    fn non_ascii_and_invalid_utf8_like_go() {
        // Valid multi-byte characters pass through unescaped.
        assert_eq!(enc("héllo ✓ 🦀".as_bytes()), "\"héllo ✓ 🦀\"");
        // A literal U+FFFD that is valid UTF-8 also passes through.
        assert_eq!(enc("\u{fffd}".as_bytes()), "\"\u{fffd}\"");
        assert_eq!(
            enc("a\u{2028}b\u{2029}c".as_bytes()),
            r#""a\u2028b\u2029c""#
        );
        // Each invalid byte is one \ufffd, as Go's utf8.DecodeRune consumes one byte.
        assert_eq!(enc(b"\xff"), r#""\ufffd""#);
        assert_eq!(enc(b"a\xc3"), r#""a\ufffd""#);
        // Truncated 4-byte sequence: three replacement characters (Rust's lossy would give one).
        assert_eq!(enc(b"\xf0\x9f\xa6x"), r#""\ufffd\ufffd\ufffdx""#);
        // Overlong encodings, surrogates, and values above U+10FFFF are invalid per byte.
        assert_eq!(enc(b"\xc0\xaf"), r#""\ufffd\ufffd""#);
        assert_eq!(enc(b"\xe0\x80\xaf"), r#""\ufffd\ufffd\ufffd""#);
        assert_eq!(enc(b"\xed\xa0\x80"), r#""\ufffd\ufffd\ufffd""#);
        assert_eq!(enc(b"\xf4\x90\x80\x80"), r#""\ufffd\ufffd\ufffd\ufffd""#);
        assert_eq!(enc(b"\xf5\x80"), r#""\ufffd\ufffd""#);
        // The highest valid code point and the first 4-byte one survive.
        assert_eq!(enc(b"\xf4\x8f\xbf\xbf"), "\"\u{10ffff}\"");
        assert_eq!(enc(b"\xf0\x90\x80\x80"), "\"\u{10000}\"");
    }

    #[test]
    fn every_encoding_decodes_back_with_serde() {
        // All single bytes and a sample of pairs: the output must be valid JSON whose value is
        // the input with invalid bytes replaced.
        let mut inputs: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b'x', b, b'y']).collect();
        for a in [0x00u8, 0x22, 0x5c, 0x7f, 0x80, 0xc3, 0xe2, 0xed, 0xf0, 0xff] {
            for b in [0x80u8, 0x9f, 0xa0, 0xa8, 0xbf, 0xc0, 0x41] {
                inputs.push(vec![a, b, 0x80, 0xbf]);
            }
        }
        for input in inputs {
            let encoded = enc(&input);
            let decoded: String = serde_json::from_str(&encoded)
                .unwrap_or_else(|e| panic!("{input:?} -> {encoded}: {e}"));
            let mut expected = String::new();
            let mut i = 0;
            while i < input.len() {
                if input[i] < 0x80 {
                    expected.push(char::from(input[i]));
                    i += 1;
                } else if let Some(n) = utf8_sequence_len(&input[i..]) {
                    expected.push_str(std::str::from_utf8(&input[i..i + n]).expect("valid"));
                    i += n;
                } else {
                    expected.push('\u{fffd}');
                    i += 1;
                }
            }
            assert_eq!(decoded, expected, "{input:?}");
        }
    }

    #[test]
    fn record_layout_matches_docker() {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            b"hi <there>\n",
            Stream::Stderr,
            "2024-01-02T03:04:05.6Z",
        );
        assert_eq!(
            out,
            b"{\"log\":\"hi \\u003cthere\\u003e\\n\",\"stream\":\"stderr\",\"time\":\"2024-01-02T03:04:05.6Z\"}\n"
        );
    }

    #[test]
    fn incomplete_tail_detection() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail(b""), 0);
        assert_eq!(incomplete_utf8_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(b"a\xc3"), 1);
        assert_eq!(incomplete_utf8_tail(b"a\xe2\x9c"), 2);
        assert_eq!(incomplete_utf8_tail(b"a\xf0\x9f\xa6"), 3);
        assert_eq!(incomplete_utf8_tail("🦀".as_bytes()), 0);
        // Stray continuation bytes or invalid leads are not worth carrying.
        assert_eq!(incomplete_utf8_tail(b"a\x80\x80\x80"), 0);
        assert_eq!(incomplete_utf8_tail(b"a\xff"), 0);
    }
}
