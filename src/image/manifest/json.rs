//! A small JSON reader for validation that keeps what `serde_json::Value` loses and decodes
//! strings the way Go's encoding/json does:
//! - duplicate object keys, in document order;
//! - number literals as written (`-0`, `2.0`, `1e3` and `1e400` differ for Go's int decoding);
//! - invalid UTF-8 and unpaired surrogate escapes become U+FFFD instead of failing.

/// Deeper documents are refused (Go allows 10000; this bounds our recursion).
const MAX_DEPTH: usize = 1000;

pub(super) enum J {
    Null,
    Bool,
    /// The literal, e.g. `-0`, `7682`, `1.5e3`.
    Num(String),
    Str(JStr),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

/// A decoded string that remembers whether its literal used escapes: Go's time.Time reads
/// the raw literal without unescaping it.
pub(super) struct JStr {
    pub(super) text: String,
    pub(super) escaped: bool,
}

impl std::ops::Deref for JStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Debug for JStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.text, f)
    }
}

impl J {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            J::Null => "null",
            J::Bool => "boolean",
            J::Num(n) if number_is_integral(n) => "integer",
            J::Num(_) => "number",
            J::Str(_) => "string",
            J::Arr(_) => "array",
            J::Obj(_) => "object",
        }
    }
}

/// Whether a JSON number literal denotes an integer (`2.0` and `1e3` do), as JSON Schema's
/// "integer" type means it.
pub(super) fn number_is_integral(lit: &str) -> bool {
    let lit = lit.strip_prefix('-').unwrap_or(lit);
    let (mantissa, exp) = match lit.find(['e', 'E']) {
        Some(i) => (&lit[..i], Some(&lit[i + 1..])),
        None => (lit, None),
    };
    let (int_part, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // value = digits * 10^(exp - frac.len()); trailing zeros of digits raise the exponent.
    let digits = format!("{int_part}{frac}");
    let significant = digits.trim_end_matches('0');
    if significant.trim_start_matches('0').is_empty() {
        return true;
    }
    let trailing = (digits.len() - significant.len()) as i128;
    let exp = match exp.map(str::parse::<i128>) {
        None => 0,
        Some(Ok(e)) => e,
        // An exponent beyond i128: integral exactly when it is positive.
        Some(Err(_)) => return !exp.is_some_and(|e| e.starts_with('-')),
    };
    exp - frac.len() as i128 + trailing >= 0
}

/// Parses one JSON document. With `first_value_only`, anything after the first value is
/// ignored (Go's json.Decoder, as gojsonschema uses it); otherwise only whitespace may follow
/// (json.Unmarshal).
pub(super) fn parse(bytes: &[u8], first_value_only: bool) -> Result<J, String> {
    let mut p = Parser { b: bytes, i: 0 };
    p.ws();
    if p.i == bytes.len() {
        return Err("unexpected end of input".into());
    }
    let v = p.value(0)?;
    if !first_value_only {
        p.ws();
        if p.i != bytes.len() {
            return Err(p.err("invalid character after top-level value"));
        }
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("{what} at byte {}", self.i)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }

    fn literal(&mut self, word: &str, v: J) -> Result<J, String> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<J, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(J::Obj(entries));
                }
                loop {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.err("expected a string key"));
                    }
                    let k = self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    entries.push((k, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(J::Obj(entries));
                        }
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(J::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(J::Arr(items));
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => {
                let start = self.i;
                let text = self.string()?;
                let escaped = self.b[start..self.i].contains(&b'\\');
                Ok(J::Str(JStr { text, escaped }))
            }
            Some(b't') => self.literal("true", J::Bool),
            Some(b'f') => self.literal("false", J::Bool),
            Some(b'n') => self.literal("null", J::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("invalid character")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<J, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        // The slice is ASCII by construction.
        Ok(J::Num(
            String::from_utf8_lossy(&self.b[start..self.i]).into_owned(),
        ))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.b.get(at..at + 4)?;
        let s = std::str::from_utf8(h).ok()?;
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(s, 16).ok()
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    // Go coerces invalid UTF-8 to U+FFFD.
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                0..=0x1f => return Err(self.err("control character in string")),
                b'\\' => {
                    let Some(e) = self.b.get(self.i + 1).copied() else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.i += 2;
                    let simple = match e {
                        b'"' => Some(b'"'),
                        b'\\' => Some(b'\\'),
                        b'/' => Some(b'/'),
                        b'b' => Some(0x08),
                        b'f' => Some(0x0c),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'u' => None,
                        _ => return Err(self.err("invalid escape")),
                    };
                    if let Some(s) = simple {
                        out.push(s);
                        continue;
                    }
                    let Some(u) = self.hex4(self.i) else {
                        return Err(self.err("invalid \\u escape"));
                    };
                    self.i += 4;
                    let ch = if (0xD800..0xDC00).contains(&u) {
                        // A high surrogate pairs only with an immediately following low one;
                        // otherwise Go substitutes U+FFFD and leaves the next escape alone.
                        let low = (self.b.get(self.i..self.i + 2) == Some(b"\\u"))
                            .then(|| self.hex4(self.i + 2))
                            .flatten()
                            .filter(|l| (0xDC00..0xE000).contains(l));
                        match low {
                            Some(l) => {
                                self.i += 6;
                                char::from_u32(0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00))
                            }
                            None => None,
                        }
                    } else {
                        char::from_u32(u)
                    };
                    let ch = ch.unwrap_or(char::REPLACEMENT_CHARACTER);
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> String {
        match parse(s.as_bytes(), false) {
            Ok(J::Num(n)) => n,
            _ => panic!("{s} is not a number"),
        }
    }

    #[test]
    fn numbers_keep_their_literal() {
        assert_eq!(num("-0"), "-0");
        assert_eq!(num(" 1.50e1 "), "1.50e1");
        assert_eq!(num("1e400"), "1e400");
        for bad in ["01", "1.", ".5", "-", "1e", "+1", "0x10", "1 2"] {
            assert!(parse(bad.as_bytes(), false).is_err(), "{bad}");
        }
        for (lit, integral) in [
            ("0", true),
            ("-0", true),
            ("2.0", true),
            ("1e3", true),
            ("1.50e1", true),
            ("1.5", false),
            ("1e-1", false),
            ("0.0e-5", true),
            ("1e99999999999999999999", true),
            ("1e-99999999999999999999", false),
        ] {
            assert_eq!(number_is_integral(lit), integral, "{lit}");
        }
    }

    #[test]
    fn strings_decode_like_go() {
        let s = |src: &[u8]| match parse(src, false) {
            Ok(J::Str(s)) => s.text,
            Ok(_) => panic!("not a string"),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s(br#""a\u00e9\ud83d\ude00\n""#), "a\u{e9}\u{1F600}\n");
        assert_eq!(s(br#""\ud800x""#), "\u{FFFD}x");
        assert_eq!(s(br#""\ud800\u0041""#), "\u{FFFD}A");
        assert_eq!(s(b"\"\xff\""), "\u{FFFD}");
        for bad in [&b"\"\x01\""[..], br#""\x""#, br#""\u12""#, b"\"abc"] {
            assert!(parse(bad, false).is_err());
        }
    }

    #[test]
    fn structure_and_trailing_data() {
        let Ok(J::Obj(e)) = parse(br#"{"a":1,"a":[true,null,{}]}"#, false) else {
            panic!("not an object")
        };
        assert_eq!(e.len(), 2);
        assert!(parse(b"{} x", false).is_err());
        assert!(parse(b"{} x", true).is_ok());
        assert!(parse(b"", false).is_err());
        assert!(parse(b"{\"a\" 1}", false).is_err());
        assert!(parse(b"[1,]", false).is_err());
        assert!(parse(b"{,}", false).is_err());
        let deep = "[".repeat(MAX_DEPTH + 5);
        assert!(parse(deep.as_bytes(), false).is_err());
    }
}
