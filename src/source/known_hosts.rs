//! OpenSSH `known_hosts` matching for SSH sources: plain, wildcard, negated, `[host]:port`
//! and hashed (`|1|salt|hash`) host patterns, and `@revoked` lines. `@cert-authority` lines
//! are ignored (host certificates are not supported), so such a host is unknown.

use base64::Engine as _;

/// How a presented host key compares with a known_hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// A line for this host lists exactly this key.
    Match,
    /// The host is listed, but with other keys (possible man in the middle).
    Mismatch,
    /// No line names this host.
    Unknown,
    /// A `@revoked` line lists this key.
    Revoked,
}

/// The largest known_hosts file read (a real one is a few KiB).
pub const MAX_KNOWN_HOSTS_BYTES: u64 = 4 << 20;

/// Checks `key` (the raw SSH wire-format public key blob, as in the base64 field of a
/// known_hosts line) of `host` reached on `port` (`None` = 22) against `text`.
pub fn check(text: &str, host: &str, port: Option<u16>, key: &[u8]) -> HostKeyCheck {
    let lookup = lookup_name(host, port);
    let mut known = false;
    let mut matched = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or("");
        let mut revoked = false;
        if first.starts_with('@') {
            match first {
                "@revoked" => revoked = true,
                // Host certificates are not supported: the line says nothing about keys.
                _ => continue,
            }
            first = fields.next().unwrap_or("");
        }
        let (Some(_keytype), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !patterns_match(first, &lookup) {
            continue;
        }
        let Ok(line_key) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        let same = line_key == key;
        if revoked {
            if same {
                return HostKeyCheck::Revoked;
            }
            continue;
        }
        known = true;
        matched |= same;
    }
    if matched {
        HostKeyCheck::Match
    } else if known {
        HostKeyCheck::Mismatch
    } else {
        HostKeyCheck::Unknown
    }
}

/// The name OpenSSH looks up: `host` on port 22, `[host]:port` otherwise; lower case.
pub fn lookup_name(host: &str, port: Option<u16>) -> String {
    let host = host.to_ascii_lowercase();
    match port {
        None | Some(22) => host,
        Some(p) => format!("[{host}]:{p}"),
    }
}

/// The comma-separated host patterns of one line against `lookup`: some positive pattern
/// matches and no negated one does.
fn patterns_match(patterns: &str, lookup: &str) -> bool {
    let mut positive = false;
    for pat in patterns.split(',') {
        let (negated, pat) = match pat.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pat),
        };
        let hit = if let Some(hashed) = pat.strip_prefix("|1|") {
            hashed_match(hashed, lookup)
        } else {
            wildcard_match(pat.to_ascii_lowercase().as_bytes(), lookup.as_bytes())
        };
        if hit && negated {
            return false;
        }
        positive |= hit;
    }
    positive
}

/// `salt|hash` (both base64): HMAC-SHA1 keyed with the salt over the lookup name.
fn hashed_match(hashed: &str, lookup: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    hmac_sha1(&salt, lookup.as_bytes()).as_slice() == hash.as_slice()
}

/// OpenSSH's `match_pattern`: `*` any run, `?` one character.
fn wildcard_match(pat: &[u8], s: &[u8]) -> bool {
    // Iterative with one backtrack point: linear-ish and no recursion on hostile input.
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..20].copy_from_slice(&sha1(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Vec::with_capacity(BLOCK + msg.len());
    inner.extend(k.iter().map(|b| b ^ 0x36));
    inner.extend_from_slice(msg);
    let mut outer = Vec::with_capacity(BLOCK + 20);
    outer.extend(k.iter().map(|b| b ^ 0x5c));
    outer.extend_from_slice(&sha1(&inner));
    sha1(&outer)
}

/// SHA-1 (FIPS 180-4). Only for matching hashed known_hosts names, which OpenSSH defines
/// with HMAC-SHA1; the host key itself is compared byte for byte.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (t, word) in chunk.chunks_exact(4).enumerate() {
            w[t] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for t in 16..80 {
            w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (t, &wt) in w.iter().enumerate() {
            let (f, k) = match t {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wt);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEnW0ruvglqVSpmqjpnZvdQZcgI4orUXgdMNE3tUlMvC";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA9Kye21jac6+E6eZ/XGfFVawVDfVpb45miTC9fOQtcJ";

    fn key(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn sha1_and_hmac_vectors() {
        assert_eq!(
            hex::encode(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(sha1(b"")),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            hex::encode(sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            hex::encode(sha1(&million_a)),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
        // RFC 2202 test cases 1 and 6 (a key longer than the block).
        assert_eq!(
            hex::encode(hmac_sha1(&[0x0b; 20], b"Hi There")),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex::encode(hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn plain_and_bracketed_hosts() {
        let text = format!(
            "# comment\n\ngithub.com ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_B} me@host\n"
        );
        assert_eq!(
            check(&text, "github.com", None, &key(KEY_A)),
            HostKeyCheck::Match
        );
        assert_eq!(
            check(&text, "GitHub.com", Some(22), &key(KEY_A)),
            HostKeyCheck::Match
        );
        assert_eq!(
            check(&text, "github.com", None, &key(KEY_B)),
            HostKeyCheck::Mismatch
        );
        assert_eq!(
            check(&text, "github.com", Some(2222), &key(KEY_A)),
            HostKeyCheck::Unknown,
            "a plain entry covers port 22 only"
        );
        assert_eq!(
            check(&text, "127.0.0.1", Some(2222), &key(KEY_B)),
            HostKeyCheck::Match
        );
        assert_eq!(
            check(&text, "127.0.0.1", None, &key(KEY_B)),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            check(&text, "other", None, &key(KEY_A)),
            HostKeyCheck::Unknown
        );
    }

    #[test]
    fn hashed_hosts() {
        // Written by `ssh-keygen -H` (OpenSSH 9.2) from "example.com ..." and
        // "[127.0.0.1]:2222 ..." lines with KEY_A.
        let text = format!(
            "|1|kbgaNHlij/14q4ka3/urdA3rFwU=|kqxreQAWLokpYLysiXftiVN494k= ssh-ed25519 {KEY_A}\n\
             |1|5XRyLsTnAE8PuucjSaOVQpE5H6c=|0z60yKXzxRV0+dF46Gjq5/6cV+s= ssh-ed25519 {KEY_A}\n"
        );
        assert_eq!(
            check(&text, "example.com", None, &key(KEY_A)),
            HostKeyCheck::Match
        );
        assert_eq!(
            check(&text, "example.com", None, &key(KEY_B)),
            HostKeyCheck::Mismatch
        );
        assert_eq!(
            check(&text, "example.org", None, &key(KEY_A)),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            check(&text, "127.0.0.1", Some(2222), &key(KEY_A)),
            HostKeyCheck::Match
        );
        assert_eq!(
            check(&text, "127.0.0.1", Some(2223), &key(KEY_A)),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            check(&text, "127.0.0.1", None, &key(KEY_A)),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            check(&text, "127.0.0.1", Some(2222), &key(KEY_B)),
            HostKeyCheck::Mismatch
        );
    }

    #[test]
    fn wildcards_negation_revoked_and_cert_authority() {
        let text = format!(
            "*.example.com,!evil.example.com ssh-ed25519 {KEY_A}\n\
             @revoked * ssh-ed25519 {KEY_B}\n\
             @cert-authority *.corp ssh-ed25519 {KEY_A}\n\
             h?st ssh-ed25519 {KEY_A}\n\
             garbage-line\n\
             badkey ssh-ed25519 !!!notbase64\n"
        );
        assert_eq!(
            check(&text, "git.example.com", None, &key(KEY_A)),
            HostKeyCheck::Match
        );
        assert_eq!(
            check(&text, "evil.example.com", None, &key(KEY_A)),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            check(&text, "git.example.com", None, &key(KEY_B)),
            HostKeyCheck::Revoked
        );
        assert_eq!(
            check(&text, "a.corp", None, &key(KEY_A)),
            HostKeyCheck::Unknown
        );
        assert_eq!(check(&text, "host", None, &key(KEY_A)), HostKeyCheck::Match);
        assert_eq!(
            check(&text, "hoost", None, &key(KEY_A)),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            check(&text, "badkey", None, &key(KEY_A)),
            HostKeyCheck::Unknown
        );
    }

    #[test]
    fn wildcard_matcher() {
        assert!(wildcard_match(b"*", b""));
        assert!(wildcard_match(b"a*b*c", b"aXXbYYc"));
        assert!(!wildcard_match(b"a*b*c", b"aXXbYY"));
        assert!(wildcard_match(b"[*]:22?2", b"[h]:2202"));
        let long = vec![b'a'; 10_000];
        assert!(!wildcard_match(b"*a*a*a*a*b", &long));
    }
}
