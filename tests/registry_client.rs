//! The registry client against a real `docker-registry` in plain, basic, token and TLS
//! modes, and through a fault-injecting proxy that cuts blob bodies.

mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use dockmaster::error::{Categorized, Category};
use dockmaster::image::registry::{ClientOptions, RegistryClient, RegistryError};
use dockmaster::image::{Digest, Reference};
use support::{Mode, Registry};

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Options for a test: nothing from the environment, short retry delays.
fn options(dir: &Path) -> ClientOptions {
    ClientOptions {
        auth_file: None,
        default_auth_file: None,
        certs_dir: dir.join("certs.d"),
        retry_base_delay: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

/// Options that trust the registry's CA (TLS mode) and know its credentials (auth modes).
fn options_for(reg: &Registry, dir: &Path) -> ClientOptions {
    let mut o = options(dir);
    if let Some(ca) = reg.ca_cert() {
        support::certs_d(&o.certs_dir, &reg.host(), ca);
    }
    if let Some((u, p)) = reg.credentials() {
        o.auth_file = Some(support::write_docker_config(
            &dir.join("docker"),
            &[(&reg.host(), u, p)],
        ));
    }
    o
}

async fn stream_blob(
    c: &RegistryClient,
    r: &Reference,
    d: &Digest,
    size: u64,
) -> Result<Vec<u8>, RegistryError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let (res, data) = tokio::join!(c.fetch_blob(r, d, size, 0, tx), async {
        let mut v = Vec::new();
        while let Some(b) = rx.recv().await {
            v.extend_from_slice(&b);
        }
        v
    });
    assert_eq!(res?, size);
    Ok(data)
}

/// Pulls the whole image (manifest, config, layers) and checks every byte.
fn pull_and_check(reg: &Registry, client: &RegistryClient, img: &support::Image, repo: &str) {
    let r = Reference::parse_pullable(&reg.reference(repo, "v1")).unwrap();
    rt().block_on(async {
        let m = client.fetch_manifest(&r, ACCEPT).await.unwrap();
        assert_eq!(m.digest.to_string(), img.digest());
        assert_eq!(&m.bytes[..], &img.manifest.data[..]);
        assert_eq!(
            m.content_type.as_deref(),
            Some(img.manifest.media_type.as_str())
        );
        let cd = Digest::parse(&img.config.digest).unwrap();
        let cfg = client
            .fetch_blob_bytes(&r, &cd, img.config.data.len() as u64)
            .await
            .unwrap();
        assert_eq!(&cfg[..], &img.config.data[..]);
        for l in &img.layers {
            let d = Digest::parse(&l.blob.digest).unwrap();
            let data = stream_blob(client, &r, &d, l.blob.data.len() as u64)
                .await
                .unwrap();
            assert!(data == l.blob.data[..], "layer {} differs", l.blob.digest);
        }
        // Pinned by digest too.
        let pinned =
            Reference::parse_pullable(&format!("{}/{repo}@{}", reg.host(), img.digest())).unwrap();
        client.fetch_manifest(&pinned, ACCEPT).await.unwrap();
    });
}

#[test]
fn pulls_from_plain_registry() {
    let reg = Registry::start(Mode::Plain);
    let img = support::busybox();
    reg.push("lib/busybox", "v1", &img);
    let dir = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(options_for(&reg, dir.path())).unwrap();
    pull_and_check(&reg, &client, &img, "lib/busybox");
    let missing = Reference::parse_pullable(&reg.reference("lib/busybox", "nope")).unwrap();
    let e = rt()
        .block_on(client.fetch_manifest(&missing, ACCEPT))
        .unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e}");
}

#[test]
fn pulls_with_basic_auth_and_refuses_wrong_password() {
    let reg = Registry::start(Mode::basic("alice", "s3cret"));
    let img = support::busybox();
    reg.push("lib/busybox", "v1", &img);
    let dir = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(options_for(&reg, dir.path())).unwrap();
    pull_and_check(&reg, &client, &img, "lib/busybox");

    let mut o = options(dir.path());
    o.auth_file = Some(support::write_docker_config(
        &dir.path().join("wrong"),
        &[(&reg.host(), "alice", "wrong")],
    ));
    let client = RegistryClient::new(o).unwrap();
    let r = Reference::parse_pullable(&reg.reference("lib/busybox", "v1")).unwrap();
    let e = rt()
        .block_on(client.fetch_manifest(&r, ACCEPT))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "authentication to {} failed for user 'alice': 401",
            reg.host()
        )),
        "{msg}"
    );

    let client = RegistryClient::new(options(dir.path())).unwrap();
    let e = rt()
        .block_on(client.fetch_manifest(&r, ACCEPT))
        .unwrap_err();
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e}");
}

#[test]
fn pulls_with_bearer_tokens_fetching_one_token() {
    let reg = Registry::start(Mode::token("bob", "pw"));
    let img = support::busybox();
    reg.push("lib/busybox", "v1", &img);
    let pushed = reg.token_requests();
    let dir = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(options_for(&reg, dir.path())).unwrap();
    pull_and_check(&reg, &client, &img, "lib/busybox");
    assert_eq!(
        reg.token_requests() - pushed,
        1,
        "one token for the whole pull"
    );
    let t = reg.token_server().unwrap().requests();
    let last = t.last().unwrap();
    assert_eq!(last.account.as_deref(), Some("bob"));
    assert_eq!(last.scopes, ["repository:lib/busybox:pull"]);

    let mut o = options(dir.path());
    o.auth_file = Some(support::write_docker_config(
        &dir.path().join("wrong"),
        &[(&reg.host(), "bob", "wrong")],
    ));
    let client = RegistryClient::new(o).unwrap();
    let r = Reference::parse_pullable(&reg.reference("lib/busybox", "v1")).unwrap();
    let e = rt()
        .block_on(client.fetch_manifest(&r, ACCEPT))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "authentication to {} failed for user 'bob': 401",
            reg.host()
        )),
        "{msg}"
    );
}

#[test]
fn pulls_over_tls_with_certs_d_and_explains_unknown_ca() {
    let reg = Registry::start(Mode::Tls);
    let img = support::busybox();
    reg.push("lib/busybox", "v1", &img);
    let dir = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(options_for(&reg, dir.path())).unwrap();
    pull_and_check(&reg, &client, &img, "lib/busybox");

    // Without the CA: a clear error, no fallback to plain HTTP, no retries.
    let bare = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(options(bare.path())).unwrap();
    let r = Reference::parse_pullable(&reg.reference("lib/busybox", "v1")).unwrap();
    let e = rt()
        .block_on(client.fetch_manifest(&r, ACCEPT))
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Tls { .. }), "{msg}");
    assert!(msg.contains(&reg.host()), "{msg}");
    assert!(
        msg.contains(&format!("certs.d/{}/ca.crt", reg.host())),
        "{msg}"
    );

    // Listed as insecure: like Docker, HTTPS without certificate verification.
    let mut o = options(bare.path());
    o.insecure = vec![reg.host()];
    let client = RegistryClient::new(o).unwrap();
    let m = rt().block_on(client.fetch_manifest(&r, ACCEPT)).unwrap();
    assert_eq!(m.digest.to_string(), img.digest());
}

#[test]
fn cut_blob_resumes_with_range_through_proxy() {
    let reg = Registry::start(Mode::Plain);
    let img = support::large_incompressible(3 << 20, 1);
    reg.push("big", "v1", &img);
    let proxy = support::proxy::FaultProxy::start(&reg.host());
    let dir = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(options(dir.path())).unwrap();
    let layer = &img.layers[0].blob;
    let d = Digest::parse(&layer.digest).unwrap();
    let r = Reference::parse_pullable(&format!("{}/big:v1", proxy.host())).unwrap();
    proxy.cut_blob_once_after(1_000_000);
    let data = rt()
        .block_on(stream_blob(&client, &r, &d, layer.data.len() as u64))
        .unwrap();
    assert!(data == layer.data[..], "resumed blob differs");
    let gets: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|q| q.is_blob() && q.method == "GET")
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(gets[0].cut);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=1000000-"));
}
