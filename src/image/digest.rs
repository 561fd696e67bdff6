//! Content digests (`algorithm:encoded`) with go-digest's validation rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// Why a digest string was refused; messages match go-digest's so users can search them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid checksum digest format")]
    InvalidFormat,
    #[error("invalid checksum digest length")]
    InvalidLength,
    #[error("unsupported digest algorithm")]
    Unsupported,
}

/// Registered algorithms. sha384 is accepted as go-digest does, though registries use sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }
    fn from_name(s: &str) -> Option<Self> {
        match s {
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// A validated digest. The encoded part is lowercase hex of the algorithm's length, so it is
/// safe to use as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    encoded: String,
}

fn is_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// go-digest's DigestRegexp: `[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`.
fn matches_generic_grammar(alg: &str, encoded: &str) -> bool {
    let alg_ok = alg.split(['.', '+', '_', '-']).all(is_component);
    let enc_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
    alg_ok && enc_ok
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let Some(i) = s.find(':') else {
            return Err(DigestError::InvalidFormat);
        };
        if i == 0 || i + 1 == s.len() {
            return Err(DigestError::InvalidFormat);
        }
        let (alg, encoded) = (&s[..i], &s[i + 1..]);
        let Some(algorithm) = Algorithm::from_name(alg) else {
            return Err(if matches_generic_grammar(alg, encoded) {
                DigestError::Unsupported
            } else {
                DigestError::InvalidFormat
            });
        };
        if encoded.len() != algorithm.hex_len() {
            return Err(DigestError::InvalidLength);
        }
        if !encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::InvalidFormat);
        }
        Ok(Digest {
            algorithm,
            encoded: encoded.to_string(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// Digest of a byte slice with sha256 (the canonical algorithm).
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// Whether `bytes` hash to this digest.
    pub fn verifies(&self, bytes: &[u8]) -> bool {
        let mut h = Hasher::new(self.algorithm);
        h.update(bytes);
        h.finish() == *self
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.encoded)
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(|e| serde::de::Error::custom(format!("digest {s:?}: {e}")))
    }
}

/// Streaming hasher for any registered algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }
    pub fn finish(self) -> Digest {
        let (algorithm, encoded) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha384(h) => (Algorithm::Sha384, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, encoded }
    }
}

/// A writer adaptor that hashes and counts everything passing through.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: std::io::Write> HashingWriter<W> {
    pub fn new(inner: W, algorithm: Algorithm) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(algorithm),
            written: 0,
        }
    }
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.written)
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader adaptor that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
}

impl<R: std::io::Read> HashingReader<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(algorithm),
            read: 0,
        }
    }
    pub fn finish(self) -> (R, Digest, u64) {
        (self.inner, self.hasher.finish(), self.read)
    }
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_like_go_digest() {
        let good = "sha256:e58fcf7418d4390dec8e8fb69d88c06ec07039d651fedd3aa72af9972e7d046b";
        assert_eq!(Digest::parse(good).unwrap().to_string(), good);
        assert_eq!(Digest::parse("sha256:"), Err(DigestError::InvalidFormat));
        assert_eq!(Digest::parse("sha256:abc"), Err(DigestError::InvalidLength));
        assert_eq!(Digest::parse("foo:abc"), Err(DigestError::Unsupported));
        assert_eq!(Digest::parse("a__b:abc"), Err(DigestError::InvalidFormat));
        assert_eq!(
            Digest::parse(&good.to_uppercase().replace("SHA256", "sha256")),
            Err(DigestError::InvalidFormat)
        );
    }

    #[test]
    fn sha256_of_empty_is_well_known() {
        assert_eq!(
            Digest::sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
