//! Client tests against the fake server in `fake.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;

use super::fake::{FakeServer, Reply, Seen};
use super::*;
use crate::error::{Categorized, Category};
use crate::image::{Digest, Reference};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn opts(dir: &Path) -> ClientOptions {
    ClientOptions {
        auth_file: None,
        default_auth_file: None,
        certs_dir: dir.join("certs.d"),
        max_attempts: 3,
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(5),
        retry_base_delay: Duration::from_millis(5),
        retry_max_delay: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

fn with_auths(dir: &Path, host: &str, user: &str, pass: &str) -> ClientOptions {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let p = dir.join("config.json");
    std::fs::write(
        &p,
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    ClientOptions {
        auth_file: Some(p),
        ..opts(dir)
    }
}

fn reference(host: &str, rest: &str) -> Reference {
    Reference::parse_pullable(&format!("{host}/{rest}")).unwrap()
}

fn manifest_body() -> Vec<u8> {
    br#"{"schemaVersion":2,"config":{},"layers":[]}"#.to_vec()
}

fn basic_of(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

async fn collect(
    client: &RegistryClient,
    r: &Reference,
    d: &Digest,
    size: u64,
    offset: u64,
) -> (Result<u64, RegistryError>, Vec<Bytes>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let fetch = client.fetch_blob(r, d, size, offset, tx);
    let recv = async {
        let mut got = Vec::new();
        while let Some(c) = rx.recv().await {
            got.push(c);
        }
        got
    };
    tokio::join!(fetch, recv)
}

fn blob(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn anonymous_manifest_over_probed_plain_http() {
    let body = manifest_body();
    let b2 = body.clone();
    let srv = FakeServer::start(move |s| {
        assert_eq!(s.path(), "/v2/foo/bar/manifests/v1");
        Reply::ok(b2.clone()).with_header("Content-Type", MANIFEST_TYPE)
    });
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let r = reference(&srv.host(), "foo/bar:v1");
    let m = c
        .fetch_manifest(&r, &[MANIFEST_TYPE, "application/x-other"])
        .await
        .unwrap();
    assert_eq!(&m.bytes[..], &body[..]);
    assert_eq!(m.content_type.as_deref(), Some(MANIFEST_TYPE));
    assert_eq!(m.digest, Digest::sha256_of(&body));
    let seen = srv.seen();
    assert_eq!(
        seen[0].header("accept"),
        Some(format!("{MANIFEST_TYPE}, application/x-other").as_str())
    );
    assert!(seen[0]
        .header("user-agent")
        .unwrap()
        .starts_with("dockmaster/"));
    // The scheme is remembered: one HTTPS probe for two fetches.
    c.fetch_manifest(&r, &[MANIFEST_TYPE]).await.unwrap();
    assert_eq!(srv.tls_probes(), 1);
    assert_eq!(srv.count("/v2/"), 2);
}

#[tokio::test]
async fn manifest_digest_checks() {
    let body = manifest_body();
    let good = Digest::sha256_of(&body);
    let other = Digest::sha256_of(b"other");
    let (b2, o2) = (body.clone(), other.to_string());
    let srv = FakeServer::start(move |s| {
        let r = Reply::ok(b2.clone());
        if s.path().ends_with("/lying") {
            r.with_header("Docker-Content-Digest", &o2)
        } else {
            r
        }
    });
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    // Pinned and matching.
    let r = reference(&srv.host(), &format!("foo@{good}"));
    let m = c.fetch_manifest(&r, &[MANIFEST_TYPE]).await.unwrap();
    assert_eq!(m.digest, good);
    assert_eq!(m.content_type, None);
    assert_eq!(srv.seen()[0].path(), format!("/v2/foo/manifests/{good}"));
    // Pinned to something else.
    let r = reference(&srv.host(), &format!("foo@{other}"));
    let e = c.fetch_manifest(&r, &[MANIFEST_TYPE]).await.unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    assert_eq!(e.category(), Category::Invalid);
    let msg = e.to_string();
    assert!(
        msg.contains(&other.to_string()) && msg.contains("foo"),
        "{msg}"
    );
    // Header disagrees with the body.
    let r = reference(&srv.host(), "foo:lying");
    let e = c.fetch_manifest(&r, &[MANIFEST_TYPE]).await.unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
}

#[tokio::test]
async fn manifest_size_cap() {
    let srv = FakeServer::start(|_| Reply::ok(vec![b' '; MANIFEST_MAX as usize + 1]));
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let e = c
        .fetch_manifest(&reference(&srv.host(), "big:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::TooLarge { .. }), "{e}");
}

#[tokio::test]
async fn basic_auth_flow_and_preemptive_header() {
    let want = basic_of("bob", "secret");
    let srv = FakeServer::start(move |s| {
        if s.header("authorization") == Some(want.as_str()) {
            Reply::ok(manifest_body())
        } else {
            Reply::status(401).with_header("WWW-Authenticate", r#"Basic realm="Registry Realm""#)
        }
    });
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(with_auths(d.path(), &srv.host(), "bob", "secret")).unwrap();
    let r = reference(&srv.host(), "foo:v1");
    c.fetch_manifest(&r, &[MANIFEST_TYPE]).await.unwrap();
    assert_eq!(srv.count("/v2/"), 2, "one 401, then with credentials");
    c.fetch_manifest(&reference(&srv.host(), "other:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap();
    assert_eq!(
        srv.count("/v2/"),
        3,
        "basic auth is sent up front once known"
    );
}

#[tokio::test]
async fn wrong_basic_credentials_fail_clearly_without_retry() {
    let srv = FakeServer::start(|_| {
        Reply::status(401).with_header("WWW-Authenticate", r#"Basic realm="r""#)
    });
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(with_auths(d.path(), &srv.host(), "bob", "wrong")).unwrap();
    let e = c
        .fetch_manifest(&reference(&srv.host(), "foo:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "authentication to {} failed for user 'bob': 401",
            srv.host()
        )),
        "{msg}"
    );
    assert_eq!(e.category(), Category::Invalid);
    assert_eq!(srv.count("/v2/"), 2);
}

#[tokio::test]
async fn anonymous_on_protected_registry_says_what_is_missing() {
    let srv = FakeServer::start(|_| {
        Reply::status(401).with_header("WWW-Authenticate", r#"Basic realm="r""#)
    });
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let e = c
        .fetch_manifest(&reference(&srv.host(), "foo:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{msg}");
    assert!(
        msg.contains(&srv.host()) && msg.contains("foo") && msg.contains("credentials"),
        "{msg}"
    );
}

/// A registry and its token server on one fake: tokens are `tok-N`; the registry accepts the
/// latest token only, for the scope it was issued for.
struct TokenFake {
    srv: FakeServer,
    issued: Arc<AtomicUsize>,
}

fn token_fake(user_pass: Option<(&'static str, &'static str)>, expires_in: u64) -> TokenFake {
    let issued = Arc::new(AtomicUsize::new(0));
    let scopes: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let port: Arc<std::sync::OnceLock<u16>> = Arc::default();
    let (i2, s2, p2) = (issued.clone(), scopes.clone(), port.clone());
    let srv = FakeServer::start(move |s: &Seen| {
        let port = *p2.get().unwrap();
        if s.path() == "/token" {
            if let Some((u, p)) = user_pass {
                if s.header("authorization") != Some(basic_of(u, p).as_str()) {
                    return Reply::status(401);
                }
            }
            let q = s.query();
            assert!(
                q.contains(&("service".into(), "fake-registry".into())),
                "{q:?}"
            );
            let scope = q
                .iter()
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let n = i2.fetch_add(1, Ordering::SeqCst) + 1;
            let tok = format!("tok-{n}");
            s2.lock().unwrap().push((tok.clone(), scope));
            // Alternate the field names: both must be understood.
            let body = if n % 2 == 1 {
                format!(r#"{{"token":"{tok}","expires_in":{expires_in}}}"#)
            } else {
                format!(r#"{{"access_token":"{tok}","expires_in":{expires_in}}}"#)
            };
            return Reply::ok(body);
        }
        let repo = s
            .path()
            .trim_start_matches("/v2/")
            .split("/manifests/")
            .next()
            .unwrap_or("")
            .to_string();
        let latest = format!("tok-{}", i2.load(Ordering::SeqCst));
        let ok = s
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| {
                t == latest
                    && s2
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|(tk, sc)| tk == t && *sc == format!("repository:{repo}:pull"))
            });
        if ok {
            Reply::ok(manifest_body())
        } else {
            Reply::status(401).with_header(
                "WWW-Authenticate",
                &format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake-registry",scope="repository:{repo}:pull""#
                ),
            )
        }
    });
    port.set(srv.port).unwrap();
    TokenFake { srv, issued }
}

#[tokio::test]
async fn bearer_flow_caches_tokens_per_scope() {
    let f = token_fake(Some(("bob", "pw")), 300);
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(with_auths(d.path(), &f.srv.host(), "bob", "pw")).unwrap();
    let host = f.srv.host();
    for _ in 0..3 {
        c.fetch_manifest(&reference(&host, "foo:v1"), &[MANIFEST_TYPE])
            .await
            .unwrap();
    }
    assert_eq!(f.srv.count("/token"), 1);
    // One 401 to learn the realm, then three authorised requests.
    assert_eq!(f.srv.count("/v2/"), 4);
    // Another repository needs another scope, fetched up front now that the realm is known.
    c.fetch_manifest(&reference(&host, "bar:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap();
    assert_eq!(f.srv.count("/token"), 2);
    assert_eq!(f.srv.count("/v2/"), 5);
    let tok_req = f
        .srv
        .seen()
        .into_iter()
        .find(|s| s.path() == "/token")
        .unwrap();
    assert_eq!(
        tok_req.header("authorization"),
        Some(basic_of("bob", "pw").as_str())
    );
}

#[tokio::test]
async fn bearer_reauth_once_when_cached_token_is_refused() {
    let f = token_fake(None, 300);
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let host = f.srv.host();
    let foo = reference(&host, "foo:v1");
    c.fetch_manifest(&foo, &[MANIFEST_TYPE]).await.unwrap();
    // Another repository's token makes foo's cached token stale (the fake only accepts the
    // latest), so the next foo request gets a 401 and must fetch a new token once.
    c.fetch_manifest(&reference(&host, "bar:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap();
    assert_eq!(f.issued.load(Ordering::SeqCst), 2);
    let before = f.srv.count("/v2/");
    c.fetch_manifest(&foo, &[MANIFEST_TYPE]).await.unwrap();
    assert_eq!(f.issued.load(Ordering::SeqCst), 3);
    assert_eq!(f.srv.count("/v2/") - before, 2);
    // Anonymous token request: no Authorization header.
    assert!(f
        .srv
        .seen()
        .iter()
        .filter(|s| s.path() == "/token")
        .all(|s| s.header("authorization").is_none()));
}

#[tokio::test]
async fn concurrent_cold_requests_share_one_token() {
    let f = token_fake(None, 300);
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let r = reference(&f.srv.host(), "foo:v1");
    let all =
        futures_util::future::join_all((0..4).map(|_| c.fetch_manifest(&r, &[MANIFEST_TYPE])));
    for res in all.await {
        res.unwrap();
    }
    assert_eq!(f.srv.count("/token"), 1);
}

#[tokio::test]
async fn bearer_token_expiry_is_honoured() {
    let f = token_fake(None, 1);
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let foo = reference(&f.srv.host(), "foo:v1");
    c.fetch_manifest(&foo, &[MANIFEST_TYPE]).await.unwrap();
    c.fetch_manifest(&foo, &[MANIFEST_TYPE]).await.unwrap();
    assert_eq!(f.srv.count("/token"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.fetch_manifest(&foo, &[MANIFEST_TYPE]).await.unwrap();
    assert_eq!(f.srv.count("/token"), 2);
}

#[tokio::test]
async fn wrong_token_credentials_name_the_user() {
    let f = token_fake(Some(("bob", "pw")), 300);
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(with_auths(d.path(), &f.srv.host(), "bob", "nope")).unwrap();
    let e = c
        .fetch_manifest(&reference(&f.srv.host(), "foo:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "authentication to {} failed for user 'bob': 401",
            f.srv.host()
        )),
        "{msg}"
    );
    assert_eq!(f.srv.count("/token"), 1, "no retry on auth failure");
}

#[tokio::test]
async fn identity_token_from_helper_is_exchanged_with_post() {
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-test");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread s\nprintf '{\"Username\":\"<token>\",\"Secret\":\"refresh-me\"}'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let port: Arc<std::sync::OnceLock<u16>> = Arc::default();
    let p2 = port.clone();
    let srv = FakeServer::start(move |s| {
        let port = *p2.get().unwrap();
        if s.path() == "/token" {
            let body = String::from_utf8_lossy(&s.body);
            if s.method == "POST"
                && body.contains("grant_type=refresh_token")
                && body.contains("refresh_token=refresh-me")
                && body.contains("scope=repository%3Afoo%3Apull")
            {
                return Reply::ok(r#"{"access_token":"oauth-tok"}"#);
            }
            return Reply::status(401);
        }
        if s.header("authorization") == Some("Bearer oauth-tok") {
            return Reply::ok(manifest_body());
        }
        Reply::status(401).with_header(
            "WWW-Authenticate",
            &format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="svc""#),
        )
    });
    port.set(srv.port).unwrap();
    let cfg = d.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(r#"{{"credHelpers": {{"{}": "test"}}}}"#, srv.host()),
    )
    .unwrap();
    let c = RegistryClient::new(ClientOptions {
        auth_file: Some(cfg),
        helper_path: Some(bin.into_os_string()),
        ..opts(d.path())
    })
    .unwrap();
    c.fetch_manifest(&reference(&srv.host(), "foo:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap();
    let t = srv
        .seen()
        .into_iter()
        .find(|s| s.path() == "/token")
        .unwrap();
    assert_eq!(t.method, "POST");
}

#[tokio::test]
async fn retries_503_and_not_404() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let srv = FakeServer::start(move |s| {
        if s.path().contains("/missing/") {
            return Reply::status(404);
        }
        if s.path().contains("/down/") {
            return Reply::status(503);
        }
        if n2.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::status(503).with_header("Retry-After", "0")
        } else {
            Reply::ok(manifest_body())
        }
    });
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    c.fetch_manifest(&reference(&srv.host(), "flaky:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap();
    assert_eq!(srv.count("/v2/flaky/"), 3);

    let e = c
        .fetch_manifest(&reference(&srv.host(), "missing:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e}");
    assert!(e.to_string().contains("manifest v1") && e.to_string().contains("missing"));
    assert_eq!(srv.count("/v2/missing/"), 1);

    let e = c
        .fetch_manifest(&reference(&srv.host(), "down:v1"), &[MANIFEST_TYPE])
        .await
        .unwrap_err();
    assert_eq!(e.category(), Category::Transient, "{e}");
    assert!(
        e.to_string().contains("503") && e.to_string().contains("X503"),
        "{e}"
    );
    assert_eq!(srv.count("/v2/down/"), 3, "max_attempts");
}

#[tokio::test]
async fn connection_refused_is_transient_and_names_registry() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(ClientOptions {
        max_attempts: 2,
        ..opts(d.path())
    })
    .unwrap();
    let e = c
        .fetch_manifest(
            &reference(&format!("127.0.0.1:{port}"), "x:v1"),
            &[MANIFEST_TYPE],
        )
        .await
        .unwrap_err();
    assert_eq!(e.category(), Category::Transient, "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

fn blob_server(data: Vec<u8>, mode: &'static str) -> FakeServer {
    let calls = Arc::new(AtomicUsize::new(0));
    FakeServer::start(move |s| {
        let call = calls.fetch_add(1, Ordering::SeqCst);
        let start: usize = s
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        match (mode, call) {
            // Cut the first answer after 40% of the body.
            ("cut", 0) => Reply::Cut {
                status: 200,
                headers: vec![],
                body: data[..data.len() * 2 / 5].to_vec(),
                content_length: data.len() as u64,
            },
            ("stall", 0) => Reply::Stall {
                status: 200,
                headers: vec![],
                body: data[..1000].to_vec(),
                content_length: data.len() as u64,
                stall: Duration::from_secs(3),
            },
            // Ignores Range: the client must skip what it already has.
            ("norange", 0) => Reply::Cut {
                status: 200,
                headers: vec![],
                body: data[..5000].to_vec(),
                content_length: data.len() as u64,
            },
            ("norange", _) => Reply::ok(data.clone()),
            ("long", _) => Reply::ok([data.clone(), b"extra".to_vec()].concat()),
            _ if start > 0 => Reply::Full {
                status: 206,
                headers: vec![(
                    "Content-Range".into(),
                    format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
                )],
                body: data[start..].to_vec(),
            },
            _ => Reply::ok(data.clone()),
        }
    })
}

#[tokio::test]
async fn cut_blob_is_resumed_with_range() {
    let data = blob(100_000);
    let dg = Digest::sha256_of(&data);
    let srv = blob_server(data.clone(), "cut");
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let r = reference(&srv.host(), "foo:v1");
    let (res, chunks) = collect(&c, &r, &dg, data.len() as u64, 0).await;
    assert_eq!(res.unwrap(), data.len() as u64);
    assert_eq!(chunks.concat(), data);
    let seen = srv.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path(), format!("/v2/foo/blobs/{dg}"));
    assert_eq!(seen[0].header("range"), None);
    assert_eq!(seen[1].header("range"), Some("bytes=40000-"));
}

#[tokio::test]
async fn resume_when_server_ignores_range_and_from_offset() {
    let data = blob(50_000);
    let dg = Digest::sha256_of(&data);
    let srv = blob_server(data.clone(), "norange");
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let r = reference(&srv.host(), "foo:v1");
    let (res, chunks) = collect(&c, &r, &dg, data.len() as u64, 0).await;
    assert_eq!(res.unwrap(), data.len() as u64);
    assert_eq!(chunks.concat(), data);
    assert_eq!(srv.seen()[1].header("range"), Some("bytes=5000-"));

    // Starting at an offset (a partial file on disk): only the rest is sent.
    let srv = blob_server(data.clone(), "plain");
    let r = reference(&srv.host(), "foo:v1");
    let (res, chunks) = collect(&c, &r, &dg, data.len() as u64, 123).await;
    assert_eq!(res.unwrap(), data.len() as u64 - 123);
    assert_eq!(chunks.concat(), &data[123..]);
    assert_eq!(srv.seen()[0].header("range"), Some("bytes=123-"));
}

#[tokio::test]
async fn stalled_blob_body_times_out_and_resumes() {
    let data = blob(20_000);
    let dg = Digest::sha256_of(&data);
    let srv = blob_server(data.clone(), "stall");
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(ClientOptions {
        stall_timeout: Duration::from_millis(300),
        ..opts(d.path())
    })
    .unwrap();
    let r = reference(&srv.host(), "foo:v1");
    let started = std::time::Instant::now();
    let (res, chunks) = collect(&c, &r, &dg, data.len() as u64, 0).await;
    assert_eq!(res.unwrap(), data.len() as u64);
    assert_eq!(chunks.concat(), data);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(srv.seen()[1].header("range"), Some("bytes=1000-"));
}

#[tokio::test]
async fn longer_blob_is_refused_and_never_oversent() {
    let data = blob(10_000);
    let dg = Digest::sha256_of(&data);
    let srv = blob_server(data.clone(), "long");
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let r = reference(&srv.host(), "foo:v1");
    let (res, chunks) = collect(&c, &r, &dg, data.len() as u64, 0).await;
    let e = res.unwrap_err();
    assert!(matches!(e, RegistryError::TooLarge { .. }), "{e}");
    assert!(chunks.concat().len() <= data.len());
    assert_eq!(srv.count("/v2/"), 1, "not retried");
}

#[tokio::test]
async fn blob_bytes_checks_size_and_digest() {
    let data = blob(3000);
    let dg = Digest::sha256_of(&data);
    let srv = blob_server(data.clone(), "plain");
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let r = reference(&srv.host(), "foo:v1");
    assert_eq!(
        &c.fetch_blob_bytes(&r, &dg, 3000).await.unwrap()[..],
        &data[..]
    );
    let e = c.fetch_blob_bytes(&r, &dg, 2999).await.unwrap_err();
    assert!(matches!(e, RegistryError::TooLarge { .. }), "{e}");
    let e = c.fetch_blob_bytes(&r, &dg, 3001).await.unwrap_err();
    assert!(matches!(e, RegistryError::SizeMismatch { .. }), "{e}");
    let wrong = Digest::sha256_of(b"x");
    let e = c.fetch_blob_bytes(&r, &wrong, 3000).await.unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    let e = c
        .fetch_blob_bytes(&r, &dg, BLOB_BYTES_MAX + 1)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::TooLarge { .. }), "{e}");
}

#[tokio::test]
async fn receiver_going_away_stops_the_download() {
    let data = blob(2_000_000);
    let dg = Digest::sha256_of(&data);
    let srv = blob_server(data.clone(), "plain");
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let r = reference(&srv.host(), "foo:v1");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let e = c
        .fetch_blob(&r, &dg, data.len() as u64, 0, tx)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::ReceiverClosed { .. }), "{e}");
    assert_eq!(srv.count("/v2/"), 1);
}

#[tokio::test]
async fn docker_io_mirrors_in_order() {
    let body = manifest_body();
    let empty = FakeServer::start(|_| Reply::status(404));
    let b2 = body.clone();
    let full = FakeServer::start(move |s| {
        assert_eq!(s.path(), "/v2/library/busybox/manifests/latest");
        Reply::ok(b2.clone())
    });
    let d = tempfile::tempdir().unwrap();
    let mut o = opts(d.path());
    o.mirrors.insert(
        "docker.io".into(),
        vec![format!("http://{}", empty.host()), full.host()],
    );
    let c = RegistryClient::new(o).unwrap();
    let r = Reference::parse_pullable("busybox").unwrap();
    let m = c.fetch_manifest(&r, &[MANIFEST_TYPE]).await.unwrap();
    assert_eq!(&m.bytes[..], &body[..]);
    assert_eq!(empty.count("/v2/"), 1, "404 is not retried on a mirror");
    assert_eq!(empty.tls_probes(), 0, "an http:// mirror is not probed");
    assert_eq!(full.count("/v2/"), 1);
}

#[test]
fn plain_http_only_for_loopback_and_insecure() {
    assert!(client::is_loopback_host("127.0.0.1:5000"));
    assert!(client::is_loopback_host("127.3.4.5"));
    assert!(client::is_loopback_host("[::1]:5000"));
    assert!(client::is_loopback_host("localhost:80"));
    assert!(!client::is_loopback_host("10.0.0.1:5000"));
    assert!(!client::is_loopback_host("example.com"));
    let d = tempfile::tempdir().unwrap();
    let mut o = opts(d.path());
    o.mirrors
        .insert("docker.io".into(), vec!["http://mirror.example".into()]);
    let e = RegistryClient::new(o.clone()).err().unwrap().to_string();
    assert!(e.contains("plain http"), "{e}");
    o.insecure = vec!["mirror.example".into()];
    assert!(RegistryClient::new(o.clone()).is_ok());
    o.mirrors
        .insert("docker.io".into(), vec!["https://m.example/path".into()]);
    assert!(RegistryClient::new(o).is_err());
}

#[test]
fn from_config_defaults() {
    let c = crate::config::RegistriesConfig::default();
    let o = ClientOptions::from_config(&c);
    assert_eq!(o.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(o.certs_dir, Path::new(crate::config::DEFAULT_CERTS_DIR));
    let c = crate::config::RegistriesConfig {
        max_attempts: Some(0),
        insecure: vec!["reg:5000".into()],
        ..Default::default()
    };
    let o = ClientOptions::from_config(&c);
    assert_eq!(o.max_attempts, 1);
    assert_eq!(o.insecure, ["reg:5000"]);
}

#[tokio::test]
async fn redirects_to_plain_http_only_on_allowed_hosts() {
    let data = blob(5000);
    let dg = Digest::sha256_of(&data);
    let port: Arc<std::sync::OnceLock<u16>> = Arc::default();
    let p2 = port.clone();
    let d2 = data.clone();
    let srv = FakeServer::start(move |s| {
        let port = *p2.get().unwrap();
        match s.path() {
            "/storage" | "/elsewhere" => Reply::ok(d2.clone()),
            p if p.starts_with("/v2/ok/") => Reply::status(307)
                .with_header("Location", &format!("http://127.0.0.1:{port}/storage")),
            // 0.0.0.0 is not loopback by our rules (and would still reach this machine if
            // the policy failed, which the request count would show).
            _ => Reply::status(307)
                .with_header("Location", &format!("http://0.0.0.0:{port}/elsewhere")),
        }
    });
    port.set(srv.port).unwrap();
    let d = tempfile::tempdir().unwrap();
    let c = RegistryClient::new(opts(d.path())).unwrap();
    let ok = reference(&srv.host(), "ok:v1");
    let (res, chunks) = collect(&c, &ok, &dg, data.len() as u64, 0).await;
    assert_eq!(res.unwrap(), data.len() as u64);
    assert_eq!(chunks.concat(), data);
    assert_eq!(srv.count("/storage"), 1);
    let bad = reference(&srv.host(), "bad:v1");
    let (res, _) = collect(&c, &bad, &dg, data.len() as u64, 0).await;
    let e = res.unwrap_err();
    assert!(
        e.to_string().contains("refusing a redirect to plain http"),
        "{e}"
    );
    assert_eq!(e.category(), Category::Invalid);
    assert_eq!(srv.count("/elsewhere"), 0);
    assert_eq!(srv.count("/v2/bad/"), 1, "not retried");
}
