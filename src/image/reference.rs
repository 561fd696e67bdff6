//! Image references with distribution/reference's grammar and Docker's normalization
//! (`nginx` -> `docker.io/library/nginx:latest`).

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use super::digest::{Digest, DigestError};

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a reference was refused. Messages follow distribution/reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("repository name must be lowercase")]
    NameContainsUppercase,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    RemainderNotLowercase(String),
    #[error("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong,
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    NameNotCanonical(String),
    #[error("{0}")]
    Digest(#[from] DigestError),
}

struct Grammar {
    reference: Regex,
    anchored_name: Regex,
    anchored_identifier: Regex,
}

fn grammar() -> &'static Grammar {
    static G: OnceLock<Grammar> = OnceLock::new();
    G.get_or_init(|| {
        // Same building blocks as distribution/reference/regexp.go. `\w` is spelled out
        // because Go's is ASCII-only and Rust's is Unicode.
        let alnum = "[a-z0-9]+";
        let sep = "(?:[._]|__|[-]+)";
        let path_component = format!("{alnum}(?:{sep}{alnum})*");
        let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain_name = format!(r"{domain_component}(?:\.{domain_component})*");
        let ipv6 = r"\[(?:[a-fA-F0-9:]+)\]";
        let host = format!("(?:{domain_name}|{ipv6})");
        let domain_and_port = format!("{host}(?::[0-9]+)?");
        let remote_name = format!("{path_component}(?:/{path_component})*");
        let name = format!("(?:{domain_and_port}/)?{remote_name}");
        let tag = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
        let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}";
        Grammar {
            reference: Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$")).unwrap(),
            anchored_name: Regex::new(&format!("^(?:({domain_and_port})/)?({remote_name})$"))
                .unwrap(),
            anchored_identifier: Regex::new("^[a-f0-9]{64}$").unwrap(),
        }
    })
}

/// A parsed reference. `domain` is empty only for strictly parsed references without one;
/// every reference dockmaster pulls is normalized first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// distribution/reference `Parse`: strict, no defaults.
    pub fn parse_strict(s: &str) -> Result<Self, ReferenceError> {
        let g = grammar();
        let Some(caps) = g.reference.captures(s) else {
            if s.is_empty() {
                return Err(ReferenceError::NameEmpty);
            }
            if g.reference.is_match(&s.to_lowercase()) {
                return Err(ReferenceError::NameContainsUppercase);
            }
            return Err(ReferenceError::InvalidFormat);
        };
        let name = caps.get(1).map_or("", |m| m.as_str());
        if name.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let name_caps = g
            .anchored_name
            .captures(name)
            .ok_or(ReferenceError::InvalidFormat)?;
        let domain = name_caps.get(1).map_or("", |m| m.as_str()).to_string();
        let path = name_caps.get(2).map_or("", |m| m.as_str()).to_string();
        let tag = caps.get(2).map(|m| m.as_str().to_string());
        let digest = match caps.get(3) {
            Some(m) => Some(Digest::parse(m.as_str())?),
            None => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// distribution/reference `ParseNormalizedNamed`: what `docker pull NAME` resolves.
    /// No default tag is added; see [`Reference::with_default_tag`].
    pub fn parse_normalized(s: &str) -> Result<Self, ReferenceError> {
        let g = grammar();
        if g.anchored_identifier.is_match(s) {
            return Err(ReferenceError::NameNotCanonical(s.to_string()));
        }
        let (domain, remainder) = split_docker_domain(s);
        // Only the repository part must be lowercase; tags may have uppercase letters.
        let repo = match remainder.find(':') {
            Some(i) => &remainder[..i],
            None => remainder.as_str(),
        };
        if repo.to_lowercase() != repo {
            return Err(ReferenceError::RemainderNotLowercase(repo.to_string()));
        }
        Self::parse_strict(&format!("{domain}/{remainder}"))
    }

    /// The reference dockmaster pulls: normalized, with `:latest` when neither tag nor digest.
    pub fn parse_pullable(s: &str) -> Result<Self, ReferenceError> {
        Ok(Self::parse_normalized(s)?.with_default_tag())
    }

    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_string());
        }
        self
    }

    pub fn with_digest(mut self, digest: Digest) -> Self {
        self.digest = Some(digest);
        self
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/path`, the repository name.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The name with Docker's defaults stripped (`docker.io/library/nginx` -> `nginx`).
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    pub fn familiar(&self) -> String {
        format!("{}{}", self.familiar_name(), self.suffix())
    }

    /// The repository within the registry, as used in `/v2/<repository>/...` URLs.
    pub fn repository(&self) -> &str {
        &self.path
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// All parts as the JSON `dockmaster debug parse-ref` prints.
    pub fn parts(&self) -> ReferenceParts {
        ReferenceParts {
            domain: self.domain.clone(),
            path: self.path.clone(),
            name: self.name(),
            tag: self.tag.clone(),
            digest: self.digest.as_ref().map(|d| d.to_string()),
            string: self.to_string(),
            familiar: self.familiar(),
            familiar_name: self.familiar_name(),
            with_default_tag: self.clone().with_default_tag().to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name(), self.suffix())
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReferenceParts {
    pub domain: String,
    pub path: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub string: String,
    pub familiar: String,
    pub familiar_name: String,
    pub with_default_tag: String,
}

/// Docker's rule: the first component is a registry only if it looks like a host
/// (has a dot or port, is `localhost`, or has uppercase letters).
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.find('/') {
        Some(i)
            if name[..i].contains(['.', ':'])
                || &name[..i] == "localhost"
                || name[..i].to_lowercase() != name[..i] =>
        {
            (name[..i].to_string(), name[i + 1..].to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_docker_hub_names() {
        let r = Reference::parse_pullable("nginx").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
        assert_eq!(r.familiar(), "nginx:latest");
        let r = Reference::parse_pullable("localhost:5000/a/b:v1").unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("v1"));
    }

    #[test]
    fn keeps_tag_and_digest() {
        let d = "sha256:e58fcf7418d4390dec8e8fb69d88c06ec07039d651fedd3aa72af9972e7d046b";
        let r = Reference::parse_pullable(&format!("host:5000/a/b:tag@{d}")).unwrap();
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.manifest_selector(), d);
    }

    #[test]
    fn refuses_bad_references() {
        assert_eq!(
            Reference::parse_normalized("FOO").unwrap_err().to_string(),
            "invalid reference format: repository name (library/FOO) must be lowercase"
        );
        assert_eq!(
            Reference::parse_normalized("a/b:").unwrap_err(),
            ReferenceError::InvalidFormat
        );
        assert_eq!(
            Reference::parse_strict("").unwrap_err(),
            ReferenceError::NameEmpty
        );
    }
}
