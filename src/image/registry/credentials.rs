//! Credentials from a Docker-style `config.json`: `auths`, `credHelpers` and `credsStore`
//! (the latter two run `docker-credential-<name> get`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::RegistryError;

/// Largest `config.json` read.
const CONFIG_MAX: u64 = 1 << 20;
/// Largest helper output kept.
const HELPER_OUTPUT_MAX: usize = 64 << 10;
/// A helper that has not answered in this time is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The server name Docker uses for Docker Hub in `auths` and with helpers.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// What a registry login gave us.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth refresh token (`identitytoken`, or a helper's `<token>` user): exchanged at
    /// the token realm with `grant_type=refresh_token`.
    IdentityToken {
        username: String,
        token: String,
    },
    /// A bearer token sent as is (`registrytoken`).
    RegistryToken(String),
}

impl Credential {
    /// The user name for messages.
    pub fn username(&self) -> &str {
        match self {
            Credential::Basic { username, .. } | Credential::IdentityToken { username, .. } => {
                username
            }
            Credential::RegistryToken(_) => "<registry token>",
        }
    }
}

impl fmt::Debug for Credential {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username:?}, ***)"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username:?}, ***)")
            }
            Credential::RegistryToken(_) => write!(f, "RegistryToken(***)"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HelperOutput {
    #[serde(default, rename = "Username")]
    username: String,
    #[serde(default, rename = "Secret")]
    secret: String,
}

/// Docker's `ConvertToHostname` plus Docker Hub's aliases: `https://host:port/v1/` ->
/// `host:port`; `index.docker.io`, `registry-1.docker.io` -> `docker.io`.
pub fn normalize_registry(key: &str) -> String {
    let s = key.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// The server name passed to credential helpers for a registry.
fn helper_server(registry: &str) -> String {
    if normalize_registry(registry) == "docker.io" {
        DOCKER_HUB_SERVER.to_string()
    } else {
        registry.to_string()
    }
}

/// Looks credentials up for a registry host. The file is read on every lookup so a
/// `docker login` while the agent runs takes effect; the client caches results briefly.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    /// The explicit file: it must exist.
    explicit: Option<PathBuf>,
    /// The default location: absent is fine.
    default: Option<PathBuf>,
    helper_path: Option<OsString>,
}

impl CredentialStore {
    pub fn new(
        explicit: Option<PathBuf>,
        default: Option<PathBuf>,
        helper_path: Option<OsString>,
    ) -> Self {
        CredentialStore {
            explicit,
            default,
            helper_path,
        }
    }

    /// Where credentials are looked for, for messages.
    pub fn describe(&self) -> String {
        match (&self.explicit, &self.default) {
            (Some(p), _) | (None, Some(p)) => p.display().to_string(),
            (None, None) => {
                "no docker config file: no auth_file, $DOCKER_CONFIG or $HOME".to_string()
            }
        }
    }

    async fn load(&self) -> Result<Option<(PathBuf, DockerConfig)>, RegistryError> {
        let (path, required) = match (&self.explicit, &self.default) {
            (Some(p), _) => (p, true),
            (None, Some(p)) => (p, false),
            (None, None) => return Ok(None),
        };
        let err = |detail: String| RegistryError::CredentialsFile {
            path: path.clone(),
            detail,
        };
        let file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
        };
        let mut buf = Vec::new();
        file.take(CONFIG_MAX + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| err(e.to_string()))?;
        if buf.len() as u64 > CONFIG_MAX {
            return Err(err(format!("larger than {CONFIG_MAX} bytes")));
        }
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Some((path.clone(), DockerConfig::default())));
        }
        let cfg = serde_json::from_slice(&buf).map_err(|e| err(e.to_string()))?;
        Ok(Some((path.clone(), cfg)))
    }

    /// Credentials for `registry` (`host`, `host:port` or `docker.io`), or `None` for
    /// anonymous access. Order: `credHelpers[registry]`, `credsStore`, then `auths`.
    pub async fn lookup(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
        let Some((path, cfg)) = self.load().await? else {
            return Ok(None);
        };
        let want = normalize_registry(registry);
        let helper = cfg
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize_registry(k) == want)
            .map(|(_, v)| v.clone());
        if let Some(h) = helper {
            return self.run_helper(&h, &helper_server(registry)).await;
        }
        if let Some(store) = cfg.creds_store.as_deref().filter(|s| !s.is_empty()) {
            if let Some(c) = self.run_helper(store, &helper_server(registry)).await? {
                return Ok(Some(c));
            }
        }
        // An exact key wins over a normalized one (`https://host/v1/` vs `host`).
        let entry = cfg.auths.get(registry).or_else(|| {
            cfg.auths
                .iter()
                .find(|(k, _)| normalize_registry(k) == want)
                .map(|(_, v)| v)
        });
        match entry {
            Some(e) => decode_entry(&path, registry, e),
            None => Ok(None),
        }
    }

    /// Runs `docker-credential-<name> get` with the server on stdin. A helper reporting
    /// "credentials not found" means anonymous; any other failure is an error.
    pub async fn run_helper(
        &self,
        name: &str,
        server: &str,
    ) -> Result<Option<Credential>, RegistryError> {
        let fail = |detail: String| RegistryError::CredentialHelper {
            helper: name.to_string(),
            server: server.to_string(),
            detail,
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(fail("invalid helper name".to_string()));
        }
        let program = format!("docker-credential-{name}");
        let path = self
            .helper_path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        let Some(exe) = find_in_path(&program, &path) else {
            return Err(fail(format!("{program} not found in PATH")));
        };
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = &self.helper_path {
            cmd.env("PATH", p);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", exe.display())))?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let run = async {
            if let Some(mut stdin) = stdin {
                // A helper may exit without reading stdin; a broken pipe is not our failure.
                let _ = stdin.write_all(server.as_bytes()).await;
                drop(stdin);
            }
            let (out, err) = tokio::join!(read_capped(stdout), read_capped(stderr));
            let status = child.wait().await;
            (status, out, err)
        };
        let (status, out, err) = tokio::time::timeout(HELPER_TIMEOUT, run)
            .await
            .map_err(|_| fail(format!("no answer within {}s", HELPER_TIMEOUT.as_secs())))?;
        let status = status.map_err(|e| fail(e.to_string()))?;
        let out_text = String::from_utf8_lossy(&out);
        if !status.success() {
            if out_text.contains("credentials not found") {
                return Ok(None);
            }
            let err_text = String::from_utf8_lossy(&err);
            let msg = [out_text.trim(), err_text.trim()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(fail(format!("{status}: {}", truncate(&msg, 300))));
        }
        let o: HelperOutput =
            serde_json::from_slice(&out).map_err(|e| fail(format!("invalid output: {e}")))?;
        if o.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if o.username == "<token>" {
            Credential::IdentityToken {
                username: o.username,
                token: o.secret,
            }
        } else {
            Credential::Basic {
                username: o.username,
                password: o.secret,
            }
        }))
    }
}

fn decode_entry(
    path: &Path,
    registry: &str,
    e: &AuthEntry,
) -> Result<Option<Credential>, RegistryError> {
    let bad = |detail: String| RegistryError::CredentialsFile {
        path: path.to_path_buf(),
        detail: format!("auths entry for {registry}: {detail}"),
    };
    let (mut username, mut password) = (e.username.clone(), e.password.clone());
    if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|err| bad(format!("auth is not base64: {err}")))?;
        let text = String::from_utf8(raw).map_err(|_| bad("auth is not utf-8".into()))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| bad("auth is not user:password".into()))?;
        username = Some(u.to_string());
        password = Some(p.to_string());
    }
    if let Some(t) = e.registrytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential::RegistryToken(t.to_string())));
    }
    if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential::IdentityToken {
            username: username.unwrap_or_default(),
            token: t.to_string(),
        }));
    }
    match (username, password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credential::Basic {
            username: u,
            password: p,
        })),
        _ => Ok(None),
    }
}

fn find_in_path(program: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Reads all of `r`, keeping the first [`HELPER_OUTPUT_MAX`] bytes: draining the rest keeps
/// a chatty helper from blocking on a full pipe.
async fn read_capped<R: AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut r) = r else { return kept };
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = HELPER_OUTPUT_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn store(dir: &Path, json: &str, helper_dir: Option<&Path>) -> CredentialStore {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        CredentialStore::new(
            Some(p),
            None,
            helper_dir.map(|d| d.as_os_str().to_os_string()),
        )
    }

    fn basic(u: &str, p: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn normalizes_keys() {
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("registry-1.docker.io"), "docker.io");
        assert_eq!(
            normalize_registry("http://Reg.Example:5000/v2/"),
            "reg.example:5000"
        );
        assert_eq!(normalize_registry("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[tokio::test]
    async fn auths_entries_in_all_key_forms() {
        let d = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5000": {{"auth": "{}"}},
                "https://reg.example/v1/": {{"username": "u3", "password": "p3"}},
                "tok.example": {{"identitytoken": "refresh", "username": "u4"}},
                "empty.example": {{}}
            }}, "HttpHeaders": {{"X": "y"}}}}"#,
            b64("hub:pw:with:colons"),
            b64("bob:secret")
        );
        let s = store(d.path(), &json, None);
        assert_eq!(
            s.lookup("docker.io").await.unwrap(),
            basic("hub", "pw:with:colons")
        );
        assert_eq!(
            s.lookup("127.0.0.1:5000").await.unwrap(),
            basic("bob", "secret")
        );
        assert_eq!(s.lookup("127.0.0.1:5001").await.unwrap(), None);
        assert_eq!(s.lookup("reg.example").await.unwrap(), basic("u3", "p3"));
        assert_eq!(
            s.lookup("tok.example").await.unwrap(),
            Some(Credential::IdentityToken {
                username: "u4".into(),
                token: "refresh".into()
            })
        );
        assert_eq!(s.lookup("empty.example").await.unwrap(), None);
    }

    #[tokio::test]
    async fn missing_files_and_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope.json");
        let s = CredentialStore::new(None, Some(missing.clone()), None);
        assert_eq!(s.lookup("x").await.unwrap(), None);
        let s = CredentialStore::new(Some(missing.clone()), None, None);
        let e = s.lookup("x").await.unwrap_err().to_string();
        assert!(e.contains("nope.json"), "{e}");
        let s = store(d.path(), r#"{"auths": {"h": {"auth": "%%%"}}}"#, None);
        let e = s.lookup("h").await.unwrap_err().to_string();
        assert!(e.contains("not base64") && e.contains("config.json"), "{e}");
        let s = store(d.path(), "{not json", None);
        assert!(s.lookup("h").await.is_err());
    }

    fn write_helper(dir: &Path, name: &str, script: &str) {
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn cred_helpers_and_store() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // Echoes the server it was asked about into the user name, proving stdin was sent.
        write_helper(
            &bin,
            "test",
            r#"[ "$1" = get ] || exit 2
read server
case "$server" in
  *nothere*) echo "credentials not found in native keychain"; exit 1 ;;
  *broken*) echo "boom from helper" >&2; exit 3 ;;
  *token*) printf '{"ServerURL":"%s","Username":"<token>","Secret":"rt"}' "$server" ;;
  *) printf '{"ServerURL":"%s","Username":"u-%s","Secret":"s3"}' "$server" "$server" ;;
esac"#,
        );
        let json = r#"{
            "credHelpers": {"helped.example:5000": "test", "broken.example": "test",
                            "nothere.example": "test", "token.example": "test",
                            "index.docker.io": "test", "missing.example": "absent"},
            "credsStore": "test",
            "auths": {"stored.example": {}, "nothere2.example": {"auth": "dTpw"}}
        }"#;
        let s = store(d.path(), json, Some(&bin));
        assert_eq!(
            s.lookup("helped.example:5000").await.unwrap(),
            basic("u-helped.example:5000", "s3")
        );
        assert_eq!(
            s.lookup("docker.io").await.unwrap(),
            basic("u-https://index.docker.io/v1/", "s3")
        );
        assert_eq!(s.lookup("nothere.example").await.unwrap(), None);
        assert_eq!(
            s.lookup("token.example").await.unwrap(),
            Some(Credential::IdentityToken {
                username: "<token>".into(),
                token: "rt".into()
            })
        );
        // credsStore answers for hosts without their own helper.
        assert_eq!(
            s.lookup("stored.example").await.unwrap(),
            basic("u-stored.example", "s3")
        );
        // credsStore has nothing: the inline auths entry is used.
        let s2 = store(
            d.path(),
            r#"{"credsStore": "test", "auths": {"nothere2.example": {"auth": "dTpw"}}}"#,
            Some(&bin),
        );
        assert_eq!(
            s2.lookup("nothere2.example").await.unwrap(),
            basic("u", "p")
        );
        let s = store(d.path(), json, Some(&bin));
        let e = s.lookup("broken.example").await.unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-test") && e.contains("boom from helper"),
            "{e}"
        );
        let e = s.lookup("missing.example").await.unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-absent") && e.contains("not found"),
            "{e}"
        );
        let e = s.run_helper("../evil", "x").await.unwrap_err().to_string();
        assert!(e.contains("invalid helper name"), "{e}");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = basic("bob", "hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
