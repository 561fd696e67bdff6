//! Per-registry TLS: system roots plus `<certs_dir>/<host:port>/*.crt`, and an optional
//! client certificate (`*.cert` + `*.key`, Docker's certs.d layout).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::RegistryError;

/// Largest certificate or key file read.
const PEM_MAX: u64 = 1 << 20;

/// What the certs.d directory of one host holds.
#[derive(Default)]
pub struct HostTls {
    pub roots: Vec<reqwest::Certificate>,
    pub identity: Option<reqwest::Identity>,
    /// Files used, for logs.
    pub files: Vec<PathBuf>,
}

/// The certs.d directory for `host` (`host` or `host:port`), refusing names that could
/// leave `certs_dir`.
pub fn host_dir(certs_dir: &Path, host: &str) -> Option<PathBuf> {
    if host.is_empty() || host.contains(['/', '\\', '\0']) || host.starts_with('.') {
        return None;
    }
    Some(certs_dir.join(host))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, RegistryError> {
    use std::io::Read;
    let err = |detail: String| {
        RegistryError::Config(format!(
            "reading certificate file {}: {detail}",
            path.display()
        ))
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut buf = Vec::new();
    f.take(PEM_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| err(e.to_string()))?;
    if buf.len() as u64 > PEM_MAX {
        return Err(err(format!("larger than {PEM_MAX} bytes")));
    }
    Ok(buf)
}

/// Loads `<certs_dir>/<host>/`: every `*.crt` as extra roots, and the first `X.cert` with a
/// matching `X.key` as client identity. A missing directory is no error.
pub fn load_host_tls(certs_dir: &Path, host: &str) -> Result<HostTls, RegistryError> {
    let mut out = HostTls::default();
    let Some(dir) = host_dir(certs_dir, host) else {
        return Ok(out);
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(RegistryError::Config(format!(
                "reading certificate directory {}: {e}",
                dir.display()
            )))
        }
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for p in &names {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let pem = read_pem(p)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    RegistryError::Config(format!("certificate file {}: {e}", p.display()))
                })?;
                if certs.is_empty() {
                    return Err(RegistryError::Config(format!(
                        "certificate file {} holds no PEM certificate",
                        p.display()
                    )));
                }
                out.roots.extend(certs);
                out.files.push(p.clone());
            }
            Some("cert") if out.identity.is_none() => {
                let key = p.with_extension("key");
                if !key.exists() {
                    return Err(RegistryError::Config(format!(
                        "client certificate {} has no matching key {}",
                        p.display(),
                        key.display()
                    )));
                }
                let mut pem = read_pem(p)?;
                pem.push(b'\n');
                pem.extend(read_pem(&key)?);
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    RegistryError::Config(format!("client certificate {}: {e}", p.display()))
                })?;
                out.identity = Some(id);
                out.files.push(p.clone());
                out.files.push(key);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Settings shared by every per-host client.
pub struct ClientSettings<'a> {
    pub user_agent: &'a str,
    pub connect_timeout: Duration,
    /// Docker's insecure-registries: HTTPS without certificate verification.
    pub accept_invalid_certs: bool,
    /// The normalized `insecure` list: redirects to plain HTTP must stay within it (or
    /// loopback).
    pub insecure: Vec<String>,
}

/// Builds the client for one registry host.
pub fn build_client(s: &ClientSettings, tls: HostTls) -> Result<reqwest::Client, RegistryError> {
    let mut b = reqwest::Client::builder()
        .user_agent(s.user_agent)
        .connect_timeout(s.connect_timeout)
        .tls_built_in_root_certs(true)
        .redirect(redirect_policy(s.insecure.clone()))
        .danger_accept_invalid_certs(s.accept_invalid_certs);
    for c in tls.roots {
        b = b.add_root_certificate(c);
    }
    if let Some(id) = tls.identity {
        b = b.identity(id);
    }
    b.build()
        .map_err(|e| RegistryError::Config(format!("building http client: {e}")))
}

/// Blob downloads are redirected to storage; follow up to 10 hops, never from HTTPS down to
/// plain HTTP, and to plain HTTP only on hosts allowed it. reqwest drops `Authorization`
/// when the host changes.
fn redirect_policy(insecure: Vec<String>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let url = attempt.url();
        let plain = url.scheme() == "http";
        let downgrade = plain
            && attempt
                .previous()
                .last()
                .is_some_and(|u| u.scheme() == "https");
        let host_port = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if downgrade {
            attempt.error("refusing a redirect from https to plain http")
        } else if plain && !super::client::plain_http_allowed(&insecure, &host_port) {
            attempt.error(format!("refusing a redirect to plain http on {host_port}"))
        } else {
            attempt.follow()
        }
    })
}

/// The error chain as one line, outermost first.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The innermost error's message (for TLS: "invalid peer certificate: UnknownIssuer").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Whether a request failed because the peer's certificate was not accepted (as opposed to
/// the peer not speaking TLS at all). rustls reports these as "invalid peer certificate".
pub fn is_certificate_error(e: &reqwest::Error) -> bool {
    let chain = error_chain(e).to_ascii_lowercase();
    chain.contains("invalid peer certificate")
        || chain.contains("unknownissuer")
        || chain.contains("certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_dir_stays_inside() {
        let base = Path::new("/etc/certs.d");
        assert_eq!(
            host_dir(base, "127.0.0.1:5000"),
            Some(PathBuf::from("/etc/certs.d/127.0.0.1:5000"))
        );
        for bad in ["", "..", "../x", "a/b", ".hidden"] {
            assert_eq!(host_dir(base, bad), None, "{bad}");
        }
    }

    #[test]
    fn loads_crt_files_and_refuses_junk() {
        let d = tempfile::tempdir().unwrap();
        assert!(load_host_tls(d.path(), "none:1").unwrap().roots.is_empty());
        let host = d.path().join("reg:5000");
        std::fs::create_dir(&host).unwrap();
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-days", "1", "-subj", "/CN=test-ca", "-keyout"])
            .arg(host.join("client.key"))
            .arg("-out")
            .arg(host.join("ca.crt"))
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        std::fs::copy(host.join("ca.crt"), host.join("client.cert")).unwrap();
        let t = load_host_tls(d.path(), "reg:5000").unwrap();
        assert_eq!(t.roots.len(), 1);
        assert!(t.identity.is_some());
        let settings = ClientSettings {
            user_agent: "t",
            connect_timeout: Duration::from_secs(1),
            accept_invalid_certs: false,
            insecure: vec![],
        };
        build_client(&settings, t).unwrap();
        std::fs::write(host.join("junk.crt"), "not pem").unwrap();
        let e = load_host_tls(d.path(), "reg:5000")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("junk.crt"), "{e}");
    }
}
