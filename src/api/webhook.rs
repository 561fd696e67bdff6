//! Git webhook verification (`POST /hooks/git`): pure functions over headers and the raw body,
//! no I/O. GitHub and Gitea sign the body with HMAC-SHA256; GitLab sends a shared token.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Categorized, Category};

type HmacSha256 = Hmac<Sha256>;

/// GitHub (and Gitea, Forgejo): `sha256=<hex>`.
pub const HEADER_HUB_SIGNATURE: &str = "x-hub-signature-256";
/// Gitea: `<hex>`, no prefix.
pub const HEADER_GITEA_SIGNATURE: &str = "x-gitea-signature";
/// Forgejo's name for the same thing.
pub const HEADER_FORGEJO_SIGNATURE: &str = "x-forgejo-signature";
/// GitLab: the configured secret token in plain text.
pub const HEADER_GITLAB_TOKEN: &str = "x-gitlab-token";

/// The secrets the agent was configured with; `None` means that kind of webhook is disabled.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookSecrets {
    /// The HMAC key shared with GitHub / Gitea (also GitLab's token when `gitlab_token` is
    /// not set).
    pub secret: Option<String>,
    /// GitLab's `X-Gitlab-Token`.
    pub gitlab_token: Option<String>,
}

impl std::fmt::Debug for WebhookSecrets {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field(
                "gitlab_token",
                &self.gitlab_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl WebhookSecrets {
    /// True when at least one kind of webhook can be verified.
    pub fn enabled(&self) -> bool {
        self.hmac_key().is_some() || self.gitlab().is_some()
    }

    fn hmac_key(&self) -> Option<&str> {
        self.secret.as_deref().filter(|s| !s.is_empty())
    }

    fn gitlab(&self) -> Option<&str> {
        self.gitlab_token
            .as_deref()
            .or(self.secret.as_deref())
            .filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    Gitea,
    GitLab,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::Gitea => "gitea",
            Provider::GitLab => "gitlab",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An accepted webhook: who sent it and, when the body said so, what was pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub provider: Provider,
    pub push: PushInfo,
}

/// Best-effort facts from the JSON body, for the event message only (never trusted for
/// anything else: the agent fetches its sources itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushInfo {
    /// `refs/heads/main`.
    pub reference: Option<String>,
    /// `owner/name` (or the repository's URL when the body has no full name).
    pub repository: Option<String>,
}

impl Verified {
    /// `github webhook: push to refs/heads/main of org/repo`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} webhook", self.provider);
        match (&self.push.reference, &self.push.repository) {
            (Some(r), Some(repo)) => s.push_str(&format!(": push to {r} of {repo}")),
            (Some(r), None) => s.push_str(&format!(": push to {r}")),
            (None, Some(repo)) => s.push_str(&format!(": {repo}")),
            (None, None) => {}
        }
        s
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("webhook disabled: no {provider} secret is configured")]
    NotConfigured { provider: Provider },
    #[error("webhook has no signature (X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token)")]
    MissingSignature,
    #[error("webhook {header} header is malformed")]
    MalformedSignature {
        provider: Provider,
        header: &'static str,
    },
    #[error("webhook {provider} signature does not match")]
    BadSignature { provider: Provider },
}

impl Categorized for WebhookError {
    fn category(&self) -> Category {
        Category::Invalid
    }
}

impl WebhookError {
    /// The `result` label of the webhook request counter.
    pub fn label(&self) -> &'static str {
        match self {
            WebhookError::NotConfigured { .. } => "disabled",
            WebhookError::MissingSignature | WebhookError::BadSignature { .. } => "bad_signature",
            WebhookError::MalformedSignature { .. } => "bad_request",
        }
    }
}

/// Verifies a webhook request. The provider is chosen by the signature header present:
/// `X-Gitlab-Token` (GitLab), `X-Gitea-Signature` / `X-Forgejo-Signature` (Gitea), else
/// `X-Hub-Signature-256` (GitHub; Gitea when `X-Gitea-Event` is present too, since Gitea
/// sends both).
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &WebhookSecrets,
) -> Result<Verified, WebhookError> {
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let (provider, result) = if let Some(token) = header(HEADER_GITLAB_TOKEN) {
        let provider = Provider::GitLab;
        let Some(expected) = secrets.gitlab() else {
            return Err(WebhookError::NotConfigured { provider });
        };
        (provider, token_eq(token, expected.as_bytes()))
    } else if let Some((name, value)) = header(HEADER_GITEA_SIGNATURE)
        .map(|v| (HEADER_GITEA_SIGNATURE, v))
        .or_else(|| header(HEADER_FORGEJO_SIGNATURE).map(|v| (HEADER_FORGEJO_SIGNATURE, v)))
    {
        let provider = Provider::Gitea;
        let Some(key) = secrets.hmac_key() else {
            return Err(WebhookError::NotConfigured { provider });
        };
        let sig = decode_hex(value).ok_or(WebhookError::MalformedSignature {
            provider,
            header: name,
        })?;
        (provider, hmac_ok(key, body, &sig))
    } else if let Some(value) = header(HEADER_HUB_SIGNATURE) {
        let provider = if headers.contains_key("x-gitea-event") {
            Provider::Gitea
        } else {
            Provider::GitHub
        };
        let Some(key) = secrets.hmac_key() else {
            return Err(WebhookError::NotConfigured { provider });
        };
        let malformed = WebhookError::MalformedSignature {
            provider,
            header: HEADER_HUB_SIGNATURE,
        };
        let hex = value.strip_prefix(b"sha256=").ok_or(malformed.clone())?;
        let sig = decode_hex(hex).ok_or(malformed)?;
        (provider, hmac_ok(key, body, &sig))
    } else if !secrets.enabled() {
        // Nothing to check against: report "disabled" rather than "unsigned".
        return Err(WebhookError::NotConfigured {
            provider: Provider::GitHub,
        });
    } else {
        return Err(WebhookError::MissingSignature);
    };
    if !result {
        return Err(WebhookError::BadSignature { provider });
    }
    Ok(Verified {
        provider,
        push: push_info(body),
    })
}

/// HMAC-SHA256 of `body` under `key` compared with `sig` in constant time.
fn hmac_ok(key: &str, body: &[u8], sig: &[u8]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(key.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(sig).is_ok()
}

/// Constant-time token comparison that does not leak the length either: both sides are
/// reduced to an HMAC under a fixed key and the digests compared with `verify_slice`.
pub fn token_eq(given: &[u8], expected: &[u8]) -> bool {
    const KEY: &[u8] = b"dockmaster token comparison";
    let digest = |v: &[u8]| {
        let mut mac = HmacSha256::new_from_slice(KEY).expect("hmac accepts any key length");
        mac.update(v);
        mac
    };
    let expected = digest(expected).finalize().into_bytes();
    digest(given).verify_slice(&expected).is_ok()
}

/// Lower- or upper-case hex of exactly a SHA-256 length; anything else is malformed.
fn decode_hex(v: &[u8]) -> Option<Vec<u8>> {
    let v = v.trim_ascii();
    if v.len() != 64 {
        return None;
    }
    hex::decode(v).ok()
}

/// Largest body worth parsing for the event message (the route caps bodies anyway).
const PUSH_INFO_MAX: usize = 1 << 20;

/// The pushed ref and repository from a GitHub/Gitea/GitLab push payload, when present.
pub fn push_info(body: &[u8]) -> PushInfo {
    if body.len() > PUSH_INFO_MAX {
        return PushInfo::default();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return PushInfo::default();
    };
    let text = |v: Option<&serde_json::Value>| {
        v.and_then(|v| v.as_str())
            .map(|s| s.chars().take(256).collect::<String>())
    };
    let reference = text(v.get("ref"));
    let repo = v.get("repository");
    let repository = text(repo.and_then(|r| r.get("full_name")))
        .or_else(|| text(repo.and_then(|r| r.get("path_with_namespace"))))
        .or_else(|| text(v.get("project").and_then(|p| p.get("path_with_namespace"))))
        .or_else(|| text(repo.and_then(|r| r.get("clone_url"))))
        .or_else(|| text(repo.and_then(|r| r.get("git_http_url"))));
    PushInfo {
        reference,
        repository,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn secrets(secret: Option<&str>, gitlab: Option<&str>) -> WebhookSecrets {
        WebhookSecrets {
            secret: secret.map(String::from),
            gitlab_token: gitlab.map(String::from),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    // GitHub's documented example ("Validating webhook deliveries"): secret "It's a Secret
    // to Everybody", payload "Hello, World!".
    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_documented_vector_is_accepted() {
        let h = headers(&[(HEADER_HUB_SIGNATURE, &format!("sha256={GH_SIG}"))]);
        let v = verify(&h, GH_BODY, &secrets(Some(GH_SECRET), None)).unwrap();
        assert_eq!(v.provider, Provider::GitHub);
        assert_eq!(v.push, PushInfo::default());
    }

    #[test]
    fn rfc4231_case_2_as_gitea_signature() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let h = headers(&[(HEADER_GITEA_SIGNATURE, sig)]);
        let body = b"what do ya want for nothing?";
        let v = verify(&h, body, &secrets(Some("Jefe"), None)).unwrap();
        assert_eq!(v.provider, Provider::Gitea);
        // Upper-case hex is the same signature.
        let h = headers(&[(HEADER_GITEA_SIGNATURE, &sig.to_uppercase())]);
        assert!(verify(&h, body, &secrets(Some("Jefe"), None)).is_ok());
    }

    #[test]
    fn hub_signature_with_gitea_event_is_gitea() {
        let h = headers(&[
            (HEADER_HUB_SIGNATURE, &format!("sha256={GH_SIG}")),
            ("x-gitea-event", "push"),
        ]);
        let v = verify(&h, GH_BODY, &secrets(Some(GH_SECRET), None)).unwrap();
        assert_eq!(v.provider, Provider::Gitea);
    }

    #[test]
    fn wrong_signature_body_or_key_is_rejected() {
        let good = format!("sha256={GH_SIG}");
        let h = headers(&[(HEADER_HUB_SIGNATURE, &good)]);
        let bad = Err(WebhookError::BadSignature {
            provider: Provider::GitHub,
        });
        assert_eq!(
            verify(&h, b"Hello, World?", &secrets(Some(GH_SECRET), None)),
            bad
        );
        assert_eq!(verify(&h, GH_BODY, &secrets(Some("other"), None)), bad);
        let mut flipped = GH_SIG.to_string();
        flipped.replace_range(0..1, "6");
        let h = headers(&[(HEADER_HUB_SIGNATURE, &format!("sha256={flipped}"))]);
        assert_eq!(verify(&h, GH_BODY, &secrets(Some(GH_SECRET), None)), bad);
    }

    #[test]
    fn malformed_signatures_are_bad_requests() {
        let s = secrets(Some(GH_SECRET), None);
        for value in [
            GH_SIG.to_string(),                  // no sha256= prefix
            format!("sha1={GH_SIG}"),            // other algorithm
            format!("sha256={}", &GH_SIG[..62]), // too short
            format!("sha256={}zz", &GH_SIG[..62]),
        ] {
            let err = verify(&headers(&[(HEADER_HUB_SIGNATURE, &value)]), GH_BODY, &s);
            assert_eq!(
                err.as_ref().map_err(|e| e.label()),
                Err("bad_request"),
                "{value}"
            );
        }
    }

    #[test]
    fn missing_and_unconfigured() {
        let none = secrets(None, None);
        let err = verify(&HeaderMap::new(), GH_BODY, &none).unwrap_err();
        assert_eq!(err.label(), "disabled");
        let h = headers(&[(HEADER_HUB_SIGNATURE, &format!("sha256={GH_SIG}"))]);
        let err = verify(&h, GH_BODY, &none).unwrap_err();
        assert_eq!(
            err,
            WebhookError::NotConfigured {
                provider: Provider::GitHub
            }
        );
        // Only a GitLab token: HMAC webhooks are disabled, unsigned requests are refused.
        let gl = secrets(None, Some("tok"));
        assert_eq!(verify(&h, GH_BODY, &gl).unwrap_err().label(), "disabled");
        let err = verify(&HeaderMap::new(), GH_BODY, &gl).unwrap_err();
        assert_eq!(err, WebhookError::MissingSignature);
        assert_eq!(err.label(), "bad_signature");
        // Empty secrets count as not configured.
        assert!(!secrets(Some(""), Some("")).enabled());
    }

    #[test]
    fn gitlab_token() {
        let h = headers(&[(HEADER_GITLAB_TOKEN, "s3cret")]);
        let v = verify(&h, b"{}", &secrets(None, Some("s3cret"))).unwrap();
        assert_eq!(v.provider, Provider::GitLab);
        // Falls back to the shared secret.
        assert!(verify(&h, b"{}", &secrets(Some("s3cret"), None)).is_ok());
        for wrong in ["s3cre", "s3cret ", "S3cret", ""] {
            let h = headers(&[(HEADER_GITLAB_TOKEN, wrong)]);
            assert_eq!(
                verify(&h, b"{}", &secrets(None, Some("s3cret"))),
                Err(WebhookError::BadSignature {
                    provider: Provider::GitLab
                }),
                "{wrong:?}"
            );
        }
        let err = verify(&h, b"{}", &secrets(None, None)).unwrap_err();
        assert_eq!(err.label(), "disabled");
    }

    #[test]
    fn token_eq_compares_exactly() {
        assert!(token_eq(b"abc", b"abc"));
        assert!(!token_eq(b"abc", b"abd"));
        assert!(!token_eq(b"abc", b"abcd"));
        assert!(!token_eq(b"", b"a"));
        assert!(token_eq(b"", b""));
    }

    #[test]
    fn push_info_from_payloads() {
        let gh = br#"{"ref":"refs/heads/main","repository":{"full_name":"org/infra"}}"#;
        let p = push_info(gh);
        assert_eq!(p.reference.as_deref(), Some("refs/heads/main"));
        assert_eq!(p.repository.as_deref(), Some("org/infra"));
        let gl = br#"{"ref":"refs/tags/v1","project":{"path_with_namespace":"g/p"}}"#;
        assert_eq!(push_info(gl).repository.as_deref(), Some("g/p"));
        assert_eq!(push_info(b"not json"), PushInfo::default());
        assert_eq!(push_info(br#"{"ref": 5}"#), PushInfo::default());
        let v = Verified {
            provider: Provider::GitHub,
            push: p,
        };
        assert_eq!(
            v.describe(),
            "github webhook: push to refs/heads/main of org/infra"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = format!("{:?}", secrets(Some("hunter2"), Some("tok")));
        assert!(!s.contains("hunter2") && !s.contains("tok\""), "{s}");
    }
}
