//! `WWW-Authenticate` challenges (RFC 7235) and bearer tokens (distribution token spec).

use std::time::{Duration, Instant};

use serde::Deserialize;

/// One challenge: the scheme (lowercased) and its parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses every challenge in the given header values. Unparseable parts are skipped, never
/// fatal: the caller decides what to do when no usable challenge remains.
pub fn parse_www_authenticate<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for v in values {
        Parser {
            b: v.as_bytes(),
            i: 0,
        }
        .challenges(&mut out);
    }
    out
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> String {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.b[start..self.i]).into_owned()
    }
    fn quoted(&mut self) -> String {
        // Called on the opening quote; an unterminated string takes the rest of the input.
        self.i += 1;
        let mut v = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        v.push(n);
                        self.i += 1;
                    }
                }
                _ => v.push(c),
            }
        }
        String::from_utf8_lossy(&v).into_owned()
    }
    /// Skips to just after the next comma (or the end): resynchronises after garbage.
    fn skip_past_comma(&mut self) {
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == b',' {
                break;
            }
        }
    }

    fn challenges(&mut self, out: &mut Vec<Challenge>) {
        loop {
            while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
                self.i += 1;
            }
            if self.peek().is_none() {
                return;
            }
            let scheme = self.token();
            if scheme.is_empty() {
                self.skip_past_comma();
                continue;
            }
            let mut ch = Challenge {
                scheme: scheme.to_ascii_lowercase(),
                params: Vec::new(),
            };
            self.params(&mut ch);
            out.push(ch);
        }
    }

    fn params(&mut self, ch: &mut Challenge) {
        loop {
            self.skip_ws();
            let save = self.i;
            let name = self.token();
            self.skip_ws();
            if name.is_empty() || self.peek() != Some(b'=') {
                // The start of the next challenge (or a token68 we do not use).
                self.i = save;
                if name.is_empty() {
                    // Not a token at all: drop the rest of this element.
                    self.skip_past_comma();
                }
                return;
            }
            self.i += 1;
            // token68 padding (`abc==`): consume the extra '='s and ignore the value.
            while self.peek() == Some(b'=') {
                self.i += 1;
            }
            self.skip_ws();
            let value = if self.peek() == Some(b'"') {
                self.quoted()
            } else {
                self.token()
            };
            ch.params.push((name.to_ascii_lowercase(), value));
            self.skip_ws();
            match self.peek() {
                None => return,
                Some(b',') => self.i += 1,
                Some(_) => self.skip_past_comma(),
            }
        }
    }
}

/// The token endpoint's answer. Docker Hub sends both `token` and `access_token`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn bearer(&self) -> Option<&str> {
        [self.token.as_deref(), self.access_token.as_deref()]
            .into_iter()
            .flatten()
            .find(|t| !t.is_empty())
    }
}

/// Tokens live `expires_in` seconds (60 when absent, per the token spec).
pub(crate) const DEFAULT_TOKEN_LIFETIME: u64 = 60;

#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub token: String,
    pub valid_until: Instant,
}

impl CachedToken {
    /// Valid until the lifetime minus a margin (a tenth, at most 10 s) for clock skew and
    /// the time the request takes to reach the registry.
    pub fn new(token: String, expires_in: Option<u64>, obtained: Instant) -> Self {
        let secs = expires_in
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let life = Duration::from_secs(secs);
        let margin = (life / 10).min(Duration::from_secs(10));
        CachedToken {
            token,
            valid_until: obtained + (life - margin),
        }
    }
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Vec<Challenge> {
        parse_www_authenticate([s])
    }

    #[test]
    fn bearer_with_quoted_params() {
        let c = one(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn basic_and_case_and_spaces() {
        let c = one(r#"BASIC  Realm = "Registry Realm" , charset="UTF-8""#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[0].param("charset"), Some("UTF-8"));
    }

    #[test]
    fn multiple_challenges_in_one_header_and_across_headers() {
        let c = parse_www_authenticate([
            r#"Bearer realm="http://a/t",service="s", Basic realm="b""#,
            "Negotiate abc123==, Basic realm=plain",
        ]);
        let schemes: Vec<_> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["bearer", "basic", "negotiate", "basic"]);
        assert_eq!(c[0].param("service"), Some("s"));
        assert_eq!(c[1].param("realm"), Some("b"));
        assert_eq!(c[3].param("realm"), Some("plain"));
    }

    #[test]
    fn escapes_commas_inside_quotes_and_garbage() {
        let c = one(
            r#"Bearer realm="a\"b,c",scope="repository:x:pull,push", error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("realm"), Some("a\"b,c"));
        assert_eq!(c[0].param("scope"), Some("repository:x:pull,push"));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        // Garbage never panics and never loops.
        for s in [
            "",
            ",,,",
            "=",
            "Bearer realm=\"unterminated",
            "Bearer =x, ==, \"q\"",
            "\u{00e9}\u{00e9} realm=x",
            "Basic",
        ] {
            let _ = one(s);
        }
        assert_eq!(one("Basic")[0].scheme, "basic");
        assert_eq!(
            one("Bearer realm=\"unterminated")[0].param("realm"),
            Some("unterminated")
        );
    }

    #[test]
    fn token_lifetime_has_margin_and_default() {
        let now = Instant::now();
        let t = CachedToken::new("x".into(), None, now);
        assert_eq!(t.valid_until - now, Duration::from_secs(54));
        let t = CachedToken::new("x".into(), Some(300), now);
        assert_eq!(t.valid_until - now, Duration::from_secs(290));
        let t = CachedToken::new("x".into(), Some(0), now);
        assert_eq!(t.valid_until - now, Duration::from_secs(54));
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"a","token":""}"#).unwrap();
        assert_eq!(r.bearer(), Some("a"));
    }
}
