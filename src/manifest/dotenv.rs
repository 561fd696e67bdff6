//! `.env` / `env_file` parsing, as compose-go's `dotenv.ParseWithLookup` does it (the parser
//! behind `docker compose`), quirks included, because users' files were tested against it:
//!
//! - `KEY=value`, `KEY: value`, `export KEY=value`; spaces around the separator are dropped;
//!   keys may hold letters, digits, `_ . - [ ]`.
//! - Unquoted values end at the newline, lose a ` #` comment and trailing spaces, and are
//!   interpolated (`${VAR:-x}` …). Single-quoted values are literal (only `\'` loses its
//!   backslash). Double-quoted values may span lines, expand `\a \b \f \n \r \t \v \\ \" \$` and
//!   octal `\0NNN`, then are interpolated. Anything after a closing quote on the same line is
//!   parsed as the next statement (a `#` there starts a comment).
//! - A bare `KEY` line takes its value from `lookup`, or is left out when `lookup` has none.
//! - Interpolation sees `lookup` first, then the keys defined earlier in the file.
//! - A leading UTF-8 BOM is skipped.

use std::collections::HashMap;

use super::interpolate::{go_quote, substitute_limited, InterpolationError};
use crate::error::{Categorized, Category};

/// Upper bound on the total size of the parsed values, so references to earlier keys
/// (`B=$A$A$A…`, `C=$B$B$B…`) cannot make memory grow without bound.
pub const MAX_TOTAL_VALUES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    #[error("line {line}: key cannot contain a space")]
    KeyWithSpace { line: usize },
    #[error("line {line}: unexpected character {} in variable name {}", go_quote(&.character.to_string()), go_quote(.name))]
    UnexpectedCharacter {
        line: usize,
        character: char,
        name: String,
    },
    /// `export` followed only by spaces at the end of the file.
    #[error("line {line}: zero length string")]
    ZeroLength { line: usize },
    /// compose-go counts `line` to the end of the file it searched for the closing quote;
    /// `start_line` is where the quote opened.
    #[error("line {line}: unterminated quoted value {value}{}", opened_at(*.line, *.start_line))]
    Unterminated {
        line: usize,
        start_line: usize,
        value: String,
    },
    #[error("line {line}: {source}")]
    Interpolation {
        line: usize,
        source: InterpolationError,
    },
    #[error(
        "line {line}: values larger than {MAX_TOTAL_VALUES} bytes in total after interpolation"
    )]
    TooLarge { line: usize },
}

fn opened_at(line: usize, start: usize) -> String {
    if line == start {
        String::new()
    } else {
        format!(" (the quote opens on line {start})")
    }
}

impl DotenvError {
    /// The 1-based line the error is reported on.
    pub fn line(&self) -> usize {
        match self {
            DotenvError::KeyWithSpace { line }
            | DotenvError::UnexpectedCharacter { line, .. }
            | DotenvError::ZeroLength { line }
            | DotenvError::Unterminated { line, .. }
            | DotenvError::Interpolation { line, .. }
            | DotenvError::TooLarge { line } => *line,
        }
    }
}

impl Categorized for DotenvError {
    fn category(&self) -> Category {
        Category::Invalid
    }
}

/// Parses an env file's content; values may reference earlier keys of the same file and
/// `lookup` (compose-go dotenv.ParseWithLookup semantics, incl. a bare `KEY` line taking its
/// value from lookup or being omitted). Returns the pairs in the order keys first appear; a later
/// duplicate replaces the value in place (compose-go returns a map, so only the values matter).
pub fn parse(
    content: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, DotenvError> {
    let src = content.strip_prefix('\u{FEFF}').unwrap_or(content);
    let mut p = Parser {
        line: 1,
        out: Vec::new(),
        index: HashMap::new(),
        total: 0,
    };
    let mut cutset = src;
    loop {
        cutset = p.statement_start(cutset);
        if cutset.is_empty() {
            break;
        }
        cutset = p.statement(cutset, lookup)?;
    }
    Ok(p.out)
}

struct Parser {
    line: usize,
    out: Vec<(String, String)>,
    index: HashMap<String, usize>,
    total: usize,
}

/// compose-go's isSpace: a space that is not a line break.
fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    )
}

/// `[_.\-\[\]]`, letters and numbers (Go's unicode.IsLetter/IsNumber; Rust's
/// `is_alphabetic` also admits a few combining marks Go does not).
fn is_key_char(c: char) -> bool {
    matches!(c, '_' | '.' | '-' | '[' | ']') || c.is_alphabetic() || c.is_numeric()
}

impl Parser {
    fn set(&mut self, key: String, value: String) -> Result<(), DotenvError> {
        let line = self.line;
        match self.index.get(&key) {
            Some(&i) => {
                self.total = self.total - self.out[i].1.len() + value.len();
                self.out[i].1 = value;
            }
            None => {
                self.total += value.len();
                self.index.insert(key.clone(), self.out.len());
                self.out.push((key, value));
            }
        }
        if self.total > MAX_TOTAL_VALUES {
            return Err(DotenvError::TooLarge { line });
        }
        Ok(())
    }

    /// Skips blank space and comment lines (getStatementStart), counting lines.
    fn statement_start<'a>(&mut self, mut src: &'a str) -> &'a str {
        loop {
            let mut start = None;
            for (i, c) in src.char_indices() {
                if c == '\n' {
                    self.line += 1;
                }
                if !c.is_whitespace() {
                    start = Some(i);
                    break;
                }
            }
            let Some(start) = start else { return "" };
            src = &src[start..];
            if !src.starts_with('#') {
                return src;
            }
            match src.find('\n') {
                Some(nl) => src = &src[nl..],
                None => return "",
            }
        }
    }

    /// One `KEY=value` or bare `KEY` statement (parseStatement); returns what follows it.
    fn statement<'a>(
        &mut self,
        src: &'a str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<&'a str, DotenvError> {
        let (key, left, inherited) = self.key_name(src)?;
        if key.contains(' ') {
            return Err(DotenvError::KeyWithSpace { line: self.line });
        }
        if inherited {
            if let Some(value) = lookup(&key) {
                self.set(key, value)?;
            }
            return Ok(left);
        }
        let (value, left) = self.value(left, lookup)?;
        self.set(key, value)?;
        Ok(left)
    }

    /// locateKeyName: the key, the text after its separator, and whether it is a bare key.
    fn key_name<'a>(&mut self, mut src: &'a str) -> Result<(String, &'a str, bool), DotenvError> {
        // `^export\s+` (Go's `\s` is `[\t\n\f\r ]`).
        if src.starts_with("export")
            && matches!(
                src.as_bytes().get(6),
                Some(b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
            )
        {
            src = src["export".len()..].trim_start_matches(is_space);
        }
        // Without a separator before the end, compose-go takes an empty key and reads the rest
        // as its value.
        let mut end = (0, 0, false);
        for (i, c) in src.char_indices() {
            if is_space(c) {
                continue;
            }
            match c {
                '=' | ':' | '\n' => {
                    end = (i, i + 1, c == '\n');
                    break;
                }
                c if is_key_char(c) => {}
                c => {
                    return Err(DotenvError::UnexpectedCharacter {
                        line: self.line,
                        character: c,
                        name: src.split('\n').next().unwrap_or_default().to_string(),
                    })
                }
            }
        }
        let (key_end, offset, inherited) = end;
        if src.is_empty() {
            return Err(DotenvError::ZeroLength { line: self.line });
        }
        let raw_key = &src[..key_end];
        // compose-go's line count skips a bare key's newline when the raw key has a space.
        if inherited && !raw_key.contains(' ') {
            self.line += 1;
        }
        let key = raw_key.trim_end_matches(char::is_whitespace).to_string();
        Ok((key, src[offset..].trim_start_matches(is_space), inherited))
    }

    /// extractVarValue: the value starting at `src`, and what follows it.
    fn value<'a>(
        &mut self,
        src: &'a str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(String, &'a str), DotenvError> {
        let line = self.line;
        let quote = match src.as_bytes().first() {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => {
                let (value, rest) = src.split_once('\n').unwrap_or((src, ""));
                self.line += 1;
                let value = value.split_once(" #").map_or(value, |(v, _)| v);
                let value = value.trim_end_matches(char::is_whitespace);
                return Ok((self.expand(value, line, lookup)?, rest));
            }
        };
        let b = src.as_bytes();
        let mut raw = Vec::new();
        let mut escaped = false;
        for i in 1..b.len() {
            let c = b[i];
            if c == b'\n' {
                self.line += 1;
            }
            if escaped {
                escaped = false;
                // An escaped quote loses its backslash; any other escaped byte keeps it.
                if c != quote {
                    raw.push(b'\\');
                }
                raw.push(c);
                continue;
            }
            if c == b'\\' {
                escaped = true;
            } else if c == quote {
                // Only ASCII bytes were split on, so `raw` is whole UTF-8 sequences.
                let value = String::from_utf8_lossy(&raw).into_owned();
                let value = if quote == b'"' {
                    self.expand(&expand_escapes(&value), line, lookup)?
                } else {
                    value
                };
                return Ok((value, &src[i + 1..]));
            } else {
                raw.push(c);
            }
        }
        Err(DotenvError::Unterminated {
            line: self.line,
            start_line: line,
            value: src.split('\n').next().unwrap_or_default().to_string(),
        })
    }

    /// Interpolates a value with `lookup` first, then the keys defined so far.
    fn expand(
        &self,
        value: &str,
        line: usize,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, DotenvError> {
        let env = |k: &str| lookup(k).or_else(|| self.index.get(k).map(|&i| self.out[i].1.clone()));
        let limit = MAX_TOTAL_VALUES.saturating_sub(self.total);
        substitute_limited(value, &env, limit).map_err(|source| match source {
            InterpolationError::TooLarge { .. } => DotenvError::TooLarge { line },
            source => DotenvError::Interpolation { line, source },
        })
    }
}

/// compose-go's expandEscapes: `\a \b \f \n \r \t \v \\ \"` become the character, `\$` becomes
/// `$$` (a literal `$` after interpolation), `\0` plus up to three digits is an octal byte
/// value when exactly three octal digits up to `\0377` follow, and otherwise loses its `0`
/// (Go's UnquoteChar fails and compose-go keeps the rewritten text). `\c` and every other
/// backslash stay as written.
fn expand_escapes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        let replacement: Option<(String, usize)> = match b.get(i + 1) {
            Some(b'a') => Some(("\u{7}".into(), 2)),
            Some(b'b') => Some(("\u{8}".into(), 2)),
            Some(b'c') => Some(("\\c".into(), 2)),
            Some(b'f') => Some(("\u{c}".into(), 2)),
            Some(b'n') => Some(("\n".into(), 2)),
            Some(b'r') => Some(("\r".into(), 2)),
            Some(b't') => Some(("\t".into(), 2)),
            Some(b'v') => Some(("\u{b}".into(), 2)),
            Some(b'$') => Some(("$$".into(), 2)),
            Some(b'"') => Some(("\"".into(), 2)),
            Some(b'\\') => Some(("\\".into(), 2)),
            Some(b'0') => {
                let digits = b[i + 2..]
                    .iter()
                    .take(3)
                    .take_while(|d| d.is_ascii_digit())
                    .count();
                let ds = &s[i + 2..i + 2 + digits];
                let octal = (digits == 3 && ds.bytes().all(|d| (b'0'..=b'7').contains(&d)))
                    .then(|| u32::from_str_radix(ds, 8).ok())
                    .flatten()
                    .filter(|&v| v <= 0xFF)
                    .and_then(char::from_u32);
                Some(match octal {
                    Some(c) => (c.to_string(), 2 + digits),
                    None => (format!("\\{ds}"), 2 + digits),
                })
            }
            _ => None,
        };
        match replacement {
            Some((r, len)) => {
                out.push_str(&s[last..i]);
                out.push_str(&r);
                i += len;
                last = i;
            }
            None => i += 1,
        }
    }
    out.push_str(&s[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(content: &str, env: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(content, &|k: &str| env.get(k).cloned()).map_err(|e| e.to_string())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (content, lookup, expected pairs)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);

    #[test]
    fn parsing_edge_cases() {
        let cases: &[Case] = &[
            // compose-go's TestParseBytes: brackets, dots, non-ASCII letters in keys.
            (
                "\na=b\na[1]=c\na.propertyKey=d\nárvíztűrő-TÜKÖRFÚRÓGÉP=ÁRVÍZTŰRŐ-tükörfúrógép\n",
                &[],
                &[
                    ("a", "b"),
                    ("a[1]", "c"),
                    ("a.propertyKey", "d"),
                    ("árvíztűrő-TÜKÖRFÚRÓGÉP", "ÁRVÍZTŰRŐ-tükörfúrógép"),
                ],
            ),
            // A duplicate keeps its first position and takes the last value.
            ("A=1\nB=2\nA=3\n", &[], &[("A", "3"), ("B", "2")]),
            // A bare key not in lookup leaves an earlier value alone.
            ("A=1\nA\n", &[], &[("A", "1")]),
            ("A=1\nA\n", &[("A", "env")], &[("A", "env")]),
            // Interpolation looks at lookup first, then earlier keys.
            ("A=1\nB=$A\n", &[("A", "5")], &[("A", "1"), ("B", "5")]),
            ("A=1\nB=${A}${C:-c}\n", &[], &[("A", "1"), ("B", "1c")]),
            // Double quotes: escapes, then interpolation; `\$` stays literal.
            (
                "FOO=test\nBAR=\"foo\\${FOO} ${FOO} \\$FOO\"",
                &[],
                &[("FOO", "test"), ("BAR", "foo${FOO} test $FOO")],
            ),
            (
                "A='quote $FOO \\n \\' x'",
                &[("FOO", "f")],
                &[("A", "quote $FOO \\n ' x")],
            ),
            (
                "A=un\\tquoted $FOO",
                &[("FOO", "f")],
                &[("A", "un\\tquoted f")],
            ),
            // Octal: exactly three octal digits up to 0377; otherwise the `0` is dropped.
            (
                "A=\"\\0101|\\0400|\\08|\\0|\\01234|\\c|\\x41\"",
                &[],
                &[("A", "A|\\400|\\8|\\|S4|\\c|\\x41")],
            ),
            ("A=\"\\0377\"", &[], &[("A", "\u{ff}")]),
            // Multi-line double-quoted value (compose-go's TestVariableStringValueSeparator).
            (
                "TEST_URLS=\"stratum+tcp://a:3333\nstratum+tcp://b:443\"",
                &[],
                &[("TEST_URLS", "stratum+tcp://a:3333\nstratum+tcp://b:443")],
            ),
            // CRLF line ends.
            (
                "A=1\r\nB=\"x\"\r\nC\r\n",
                &[("C", "c")],
                &[("A", "1"), ("B", "x"), ("C", "c")],
            ),
            // Text after a closing quote starts the next statement.
            ("A=\"x\"B=2\n", &[], &[("A", "x"), ("B", "2")]),
            ("A=\"x\" y\n", &[("y", "why")], &[("A", "x"), ("y", "why")]),
            // Only ` #` starts an inline comment; a value may begin with `#`.
            (
                "A=x\t# c\nB= #b\nC=x #c",
                &[],
                &[("A", "x\t# c"), ("B", "#b"), ("C", "x")],
            ),
            // `export` with nothing after it is an empty bare key.
            ("export\nA=1", &[], &[("A", "1")]),
            ("export=1", &[], &[("export", "1")]),
            // compose-go reads a last line without separator nor newline as the value of
            // an empty key.
            ("A=1\nFOO", &[("FOO", "env")], &[("A", "1"), ("", "FOO")]),
            // A leading BOM is skipped; spaces of other kinds around keys are dropped.
            ("\u{feff}A\u{a0}=\u{a0}1", &[], &[("A", "1")]),
            ("", &[], &[]),
            ("# only a comment", &[], &[]),
        ];
        for (content, env, want) in cases {
            assert_eq!(
                parse_with(content, env),
                Ok(pairs(want)),
                "content {content:?}"
            );
        }
    }

    #[test]
    fn errors_name_their_line() {
        let cases: &[(&str, &str)] = &[
            (
                "%!(EXTRA string)=foo",
                "line 1: unexpected character \"%\" in variable name \"%!(EXTRA string)=foo\"",
            ),
            (
                "A=1\nlol$wut\n",
                "line 2: unexpected character \"$\" in variable name \"lol$wut\"",
            ),
            ("A\nB C=1", "line 2: key cannot contain a space"),
            // compose-go does not count a bare key's line when the raw key has a space.
            ("A \nB C=1", "line 1: key cannot contain a space"),
            (
                "A=1\nB=${X:?need X}\n",
                "line 2: required variable X is missing a value: need X",
            ),
            ("A=\"${\"\n", "line 1: invalid template: \"${\""),
            ("A=1\nB=\"abc", "line 2: unterminated quoted value \"abc"),
            (
                "A=1\nB='abc\ndef\n",
                "line 4: unterminated quoted value 'abc (the quote opens on line 2)",
            ),
            ("export  ", "line 1: zero length string"),
        ];
        for (content, want) in cases {
            assert_eq!(
                parse_with(content, &[]),
                Err(want.to_string()),
                "content {content:?}"
            );
        }
        let err = parse("A\nB C=1", &|_: &str| None).unwrap_err();
        assert_eq!(err.line(), 2);
        assert_eq!(err.category(), Category::Invalid);
    }

    #[test]
    fn growth_through_references_is_bounded() {
        let mut content = format!("A={}\n", "x".repeat(1000));
        for (key, prev) in [("B", "A"), ("C", "B"), ("D", "C")] {
            content.push_str(&format!("{key}={}\n", format!("${prev}").repeat(100)));
        }
        let err = parse(&content, &|_: &str| None).unwrap_err();
        assert!(matches!(err, DotenvError::TooLarge { line: 4 }), "{err}");
    }

    #[test]
    fn many_keys() {
        let content: Vec<String> = (0..1000).map(|i| format!("KEY{i}=VALUE{i}")).collect();
        let out = parse(&content.join("\n"), &|_: &str| None).unwrap();
        assert_eq!(out.len(), 1000);
        assert_eq!(out[999], ("KEY999".to_string(), "VALUE999".to_string()));
    }

    #[test]
    fn arbitrary_content_never_panics() {
        let alphabet: Vec<char> = "A=:\"'\\#${}\n\r\t -_.[]é\u{85}\u{feff}0x"
            .chars()
            .collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..30_000 {
            let len = (next() % 60) as usize;
            let mut s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if i % 3 == 0 {
                s.insert_str(0, "export ");
            }
            let _ = parse(&s, &|k: &str| (k == "A").then(|| "a".to_string()));
        }
    }
}
