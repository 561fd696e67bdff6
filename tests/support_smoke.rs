//! Proves the integration-test harness in tests/support works against the real components:
//! docker-registry in every mode, our pushes read back by skopeo and podman, layouts and
//! archives read by skopeo, the expected trees equal to podman's export, the fault proxy.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::fixtures;
use support::image::Format;
use support::layer::{media, sha256_digest, Compression};
use support::{FaultProxy, ImageBuilder, Mode, Registry, TempRoot};

fn get(
    reg: &Registry,
    path: &str,
    auth: Option<&str>,
    accept: &str,
) -> reqwest::blocking::Response {
    let mut rb = reg.client().get(reg.url(path)).header("Accept", accept);
    if let Some(a) = auth {
        rb = rb.header("Authorization", a);
    }
    rb.send().unwrap()
}

const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

#[test]
fn temp_root_config_and_certs_d() {
    let root = TempRoot::new();
    let cfg = support::write_docker_config(&root.docker_config_dir(), &[("127.0.0.1:1", "u", "p")]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(cfg).unwrap()).unwrap();
    assert_eq!(v["auths"]["127.0.0.1:1"]["auth"], "dTpw");
    let ca = root.path().join("some-ca.pem");
    std::fs::write(&ca, "pem").unwrap();
    let d = support::certs_d(&root.path().join("certs.d"), "127.0.0.1:5000", &ca);
    assert_eq!(
        std::fs::read(d.join("127.0.0.1:5000/ca.crt")).unwrap(),
        b"pem"
    );
    let out = root.dockmaster().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("dockmaster"));
    let path = root.path().to_path_buf();
    drop(root);
    assert!(!path.exists());
}

#[test]
fn plain_mode_push_and_read_back_with_skopeo() {
    let reg = Registry::start(Mode::Plain);
    let r = get(&reg, "/v2/", None, "*/*");
    assert_eq!(r.status().as_u16(), 200, "{}", reg.log());

    let bb = fixtures::busybox();
    reg.push("library/busybox", "latest", &bb);
    let idx = fixtures::platform_index(true);
    reg.push("multi", "oci", &idx);
    let list = fixtures::platform_index(false);
    reg.push("multi", "docker", &list);

    let r = get(
        &reg,
        "/v2/library/busybox/manifests/latest",
        None,
        ACCEPT_ALL,
    );
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["docker-content-digest"], bb.digest());
    assert_eq!(r.headers()["content-type"], media::OCI_MANIFEST);
    assert_eq!(r.bytes().unwrap().as_ref(), bb.manifest.data.as_slice());

    let r = get(&reg, "/v2/multi/manifests/docker", None, ACCEPT_ALL);
    assert_eq!(r.headers()["content-type"], media::DOCKER_LIST);
    assert_eq!(r.headers()["docker-content-digest"], list.digest());

    // skopeo verifies every digest it copies.
    let tmp = tempfile::tempdir().unwrap();
    for (src, all) in [
        ("library/busybox:latest", false),
        ("multi:oci", true),
        ("multi:docker", true),
    ] {
        let dest = tmp.path().join(src.replace(['/', ':'], "_"));
        let mut c = support::skopeo(tmp.path());
        c.args(["copy", "--src-tls-verify=false"]);
        if all {
            c.arg("--all");
        }
        c.arg(format!("docker://{}/{src}", reg.host()))
            .arg(format!("oci:{}:x", dest.display()));
        support::run_ok(&mut c);
    }
}

#[test]
fn manifest_without_media_type_is_served_with_content_type() {
    let reg = Registry::start(Mode::Plain);
    let img = ImageBuilder::new()
        .layer(fixtures::busybox_rootfs().build())
        .omit_media_type()
        .build();
    assert!(!String::from_utf8_lossy(&img.manifest.data)
        .contains("mediaType\":\"application/vnd.oci.image.manifest"));
    reg.push("umoci", "v1", &img);
    let r = get(&reg, "/v2/umoci/manifests/v1", None, ACCEPT_ALL);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], media::OCI_MANIFEST);
    assert_eq!(r.bytes().unwrap().as_ref(), img.manifest.data.as_slice());
}

#[test]
fn basic_mode_wants_credentials() {
    let reg = Registry::start(Mode::basic("alice", "s3cret"));
    let c = reg.client();
    let r = c.get(reg.url("/v2/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
    let ok = c
        .get(reg.url("/v2/"))
        .basic_auth("alice", Some("s3cret"))
        .send()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let bad = c
        .get(reg.url("/v2/"))
        .basic_auth("alice", Some("nope"))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);

    let bb = fixtures::busybox();
    reg.push("busybox", "latest", &bb);
    support::push(
        &reg.host(),
        "multi",
        "oci",
        &fixtures::platform_index(true),
        Some(("alice", "s3cret")),
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = support::skopeo(tmp.path())
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "alice:s3cret",
        ])
        .arg(format!("docker://{}/busybox:latest", reg.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_digest(&out.stdout), bb.digest());
}

#[test]
fn token_mode_issues_tokens_the_registry_accepts() {
    let reg = Registry::start(Mode::token("bob", "pw"));
    let c = reg.client();
    let r = c.get(reg.url("/v2/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let chal = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(chal.starts_with("Bearer "), "{chal}");
    let ts = reg.token_server().unwrap();
    assert!(chal.contains(&ts.realm()), "{chal}");
    assert_eq!(ts.kid().len(), 59);

    let bb = fixtures::busybox();
    reg.push("busybox", "latest", &bb);
    reg.push("multi", "docker", &fixtures::platform_index(false));
    let pushes = reg.token_requests();
    assert!(pushes >= 2, "each push authenticates once: {pushes}");

    // A pull token from the token server opens the manifest.
    let url = format!(
        "{}?service={}&scope=repository:busybox:pull",
        ts.realm(),
        support::token::SERVICE
    );
    let r = c.get(&url).basic_auth("bob", Some("pw")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    assert_eq!(v["token"], v["access_token"]);
    assert_eq!(v["expires_in"], 300);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    let tok = v["token"].as_str().unwrap();
    let bearer = format!("Bearer {tok}");
    let r = get(
        &reg,
        "/v2/busybox/manifests/latest",
        Some(&bearer),
        ACCEPT_ALL,
    );
    assert_eq!(r.status().as_u16(), 200, "{}", reg.log());
    assert_eq!(r.headers()["docker-content-digest"], bb.digest());
    // The token's access list matters: it does not open another repository.
    let r = get(
        &reg,
        "/v2/multi/manifests/docker",
        Some(&bearer),
        ACCEPT_ALL,
    );
    assert_eq!(r.status().as_u16(), 401);

    // Wrong and missing credentials are refused and counted.
    let r = c.get(&url).basic_auth("bob", Some("wrong")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c.get(&url).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(reg.token_requests(), pushes + 3);
    let log = ts.requests();
    assert_eq!(log.last().unwrap().account, None);
    assert_eq!(log.last().unwrap().scopes, vec!["repository:busybox:pull"]);

    // OAuth2 password grant (POST form) works too.
    let r = c
        .post(ts.realm())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=bob&password=pw&service=x&scope=repository%3Abusybox%3Apull")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // skopeo follows the challenge to our token server with basic credentials.
    let tmp = tempfile::tempdir().unwrap();
    let out = support::skopeo(tmp.path())
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "bob:pw",
        ])
        .arg(format!("docker://{}/busybox:latest", reg.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_digest(&out.stdout), bb.digest());
}

#[test]
fn token_mode_anonymous_and_expiry_options() {
    let reg = Registry::builder(Mode::token("bob", "pw"))
        .anonymous_tokens(true)
        .token_expires_in(7)
        .start();
    let ts = reg.token_server().unwrap();
    let url = format!("{}?service=s&scope=repository:a:pull", ts.realm());
    let r = reg.client().get(&url).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    assert_eq!(v["expires_in"], 7);
    let claims = v["token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        7
    );
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull"]));
    assert_eq!(claims["sub"], "");
    let bearer = format!("Bearer {}", v["token"].as_str().unwrap());
    assert_eq!(
        get(&reg, "/v2/", Some(&bearer), "*/*").status().as_u16(),
        200
    );
    let realm = ts.realm();
    drop(reg);
    // The token server's port is closed with the registry.
    assert!(reqwest::blocking::get(realm).is_err());
}

#[test]
fn tls_mode_needs_the_ca() {
    let reg = Registry::start(Mode::Tls);
    let ca = reg.ca_cert().unwrap().to_path_buf();
    assert!(reg.url("/v2/").starts_with("https://"));
    // Without the CA: the handshake fails; over plain HTTP: no HTTP answer (Go answers 400).
    let no_ca = reqwest::blocking::Client::new();
    assert!(no_ca.get(reg.url("/v2/")).send().is_err());
    let plain = no_ca
        .get(format!("http://{}/v2/", reg.host()))
        .send()
        .map(|r| r.status().as_u16());
    assert!(plain.as_ref().map_or(true, |s| *s == 400), "{plain:?}");
    let r = reg.client().get(reg.url("/v2/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let bb = fixtures::busybox();
    reg.push("busybox", "latest", &bb);
    reg.push("multi", "oci", &fixtures::platform_index(true));

    // skopeo with a certs.d directory for this host verifies against our CA.
    let tmp = tempfile::tempdir().unwrap();
    let certs = support::certs_d(&tmp.path().join("certs.d"), &reg.host(), &ca);
    let out = support::skopeo(tmp.path())
        .arg("inspect")
        .arg("--raw")
        .arg("--cert-dir")
        .arg(certs.join(reg.host()))
        .arg(format!("docker://{}/busybox:latest", reg.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_digest(&out.stdout), bb.digest());
    // ... and fails without it.
    let out = support::skopeo(tmp.path())
        .args(["inspect", "--raw"])
        .arg(format!("docker://{}/busybox:latest", reg.host()))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn storage_survives_a_restart_in_another_mode() {
    let mut plain = Registry::start(Mode::Plain);
    let bb = fixtures::busybox();
    plain.push("busybox", "latest", &bb);
    plain.stop();
    let basic = Registry::start_on_storage(Mode::basic("u", "p"), plain.storage());
    let r = basic
        .client()
        .get(basic.url("/v2/busybox/manifests/latest"))
        .header("Accept", ACCEPT_ALL)
        .basic_auth("u", Some("p"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["docker-content-digest"], bb.digest());
    let storage = basic.storage().to_path_buf();
    drop(basic);
    assert!(storage.exists(), "a given storage dir is left in place");
    drop(plain);
    assert!(!storage.exists(), "the owner's temp storage is removed");
}

#[test]
fn expected_trees_equal_podman_exports() {
    let reg = Registry::start(Mode::Plain);
    let multi = fixtures::multilayer_whiteouts();
    reg.push("multi", "v1", &multi);
    let zstd = support::busybox_with(Format::Oci, Compression::Zstd);
    reg.push("zstd", "v1", &zstd);
    // containers/image refuses zstd in Docker schema2; uncompressed schema2 is fine.
    let plain_tar = support::busybox_with(Format::Docker, Compression::None);
    reg.push("uncompressed", "v1", &plain_tar);
    let podman = support::Podman::new();

    let expected = multi.expected_tree();
    let actual = podman.export(&reg.reference("multi", "v1"));
    // podman export leaves extended attributes out of its tar.
    let no_xattrs = |t: support::Tree| {
        support::Tree(
            t.0.into_iter()
                .map(|(p, mut n)| {
                    n.xattrs.clear();
                    (p, n)
                })
                .collect(),
        )
    };
    assert!(!expected.get("data/new.txt").unwrap().xattrs.is_empty());
    no_xattrs(expected.clone()).assert_matches(&no_xattrs(actual));
    for gone in [
        "data/remove-me.txt",
        "data/sub/deep.txt",
        "opt/app/a.txt",
        "hl/link",
    ] {
        assert!(expected.get(gone).is_none(), "{gone}");
    }
    assert_eq!(expected.get("opt/app").unwrap().mode, 0o750);

    let actual = podman.export(&reg.reference("zstd", "v1"));
    zstd.expected_tree().assert_matches(&actual);
    let actual = podman.export(&reg.reference("uncompressed", "v1"));
    plain_tar.expected_tree().assert_matches(&actual);
}

#[test]
fn fixture_configs_and_layers() {
    let httpd = fixtures::httpd_with_healthcheck();
    assert_eq!(httpd.manifest.media_type, media::DOCKER_MANIFEST);
    let c = httpd.config_json();
    assert_eq!(c["config"]["Healthcheck"]["Test"][0], "CMD");
    assert_eq!(c["config"]["Healthcheck"]["Interval"], 1_000_000_000u64);
    assert_eq!(
        c["config"]["ExposedPorts"]["8080/tcp"],
        serde_json::json!({})
    );
    assert_eq!(c["rootfs"]["diff_ids"][0], httpd.layers[0].diff_id.as_str());
    assert_eq!(
        httpd.expected_tree().get("www/index.html").unwrap().kind,
        support::layer::NodeKind::File(fixtures::HTTPD_INDEX.as_bytes().to_vec())
    );

    // Every layer's digest is its bytes' sha256 and its diff ID the uncompressed tar's;
    // GNU tar reads the layers (end-of-archive blocks present).
    let tmp = tempfile::tempdir().unwrap();
    let multi = fixtures::multilayer_whiteouts();
    for (i, l) in multi.layers.iter().enumerate() {
        assert_eq!(sha256_digest(&l.blob.data), l.blob.digest);
        let tar = l.tar();
        assert_eq!(sha256_digest(&tar), l.diff_id);
        let p = tmp.path().join(format!("l{i}.tar"));
        std::fs::write(&p, &tar).unwrap();
        let listing = support::run_ok(Command::new("tar").arg("-tvf").arg(&p));
        if i == 1 {
            assert!(listing.contains("data/.wh.remove-me.txt"), "{listing}");
            assert!(listing.contains("data/.wh.sub"), "{listing}");
        }
        if i == 2 {
            assert!(listing.contains("opt/app/.wh..wh..opq"), "{listing}");
        }
    }

    let idx = fixtures::platform_index(true);
    let v: serde_json::Value = serde_json::from_slice(&idx.manifest.data).unwrap();
    assert_eq!(v["mediaType"], media::OCI_INDEX);
    assert_eq!(v["manifests"][1]["platform"]["architecture"], "arm64");
    let arm = idx.image_for("arm", Some("v7")).unwrap();
    assert_eq!(
        arm.expected_tree().get("etc/arch").unwrap().kind,
        support::layer::NodeKind::File(b"arm/v7\n".to_vec())
    );
    assert_eq!(arm.config_json()["variant"], "v7");

    let big = fixtures::large_incompressible(4 << 20, 2);
    assert_eq!(big.layers.len(), 2);
    assert!(big.layers_size() >= 4 << 20, "{}", big.layers_size());
    assert_eq!(
        fixtures::large_incompressible(4 << 20, 2).digest(),
        big.digest(),
        "deterministic"
    );
}

#[test]
fn layouts_and_archives_are_readable_by_skopeo() {
    let reg = Registry::start(Mode::Plain);
    let tmp = tempfile::tempdir().unwrap();
    let bb = fixtures::busybox();
    let httpd = fixtures::httpd_with_healthcheck();
    let idx = fixtures::platform_index(true);

    let layout = tmp.path().join("layout");
    support::write_oci_layout(&layout, &[("busybox", &bb), ("multi", &idx)]);
    let oci_archive = tmp.path().join("oci.tar");
    // skopeo skips index.json entries with Docker media types, so the OCI image goes here.
    let multi = fixtures::multilayer_whiteouts();
    support::write_oci_archive(&oci_archive, &[("multi", &multi)]);
    let docker_archive = tmp.path().join("docker.tar");
    support::write_docker_archive(
        &docker_archive,
        &[("example.com/httpd:v1", &httpd), ("busybox:latest", &bb)],
    );

    let copies = [
        (
            format!("oci:{}:busybox", layout.display()),
            "bb-layout",
            false,
        ),
        (
            format!("oci:{}:multi", layout.display()),
            "idx-layout",
            true,
        ),
        (
            format!("oci-archive:{}:multi", oci_archive.display()),
            "multi-oci-archive",
            false,
        ),
        (
            format!(
                "docker-archive:{}:example.com/httpd:v1",
                docker_archive.display()
            ),
            "httpd-docker-archive",
            false,
        ),
    ];
    for (src, name, all) in &copies {
        let mut c = support::skopeo(tmp.path());
        c.args(["copy", "--dest-tls-verify=false"]);
        if *all {
            c.arg("--all");
        }
        c.arg(src).arg(format!("docker://{}/{name}:v1", reg.host()));
        support::run_ok(&mut c);
    }
    // Layouts are copied verbatim; a docker archive keeps the config (image ID).
    let digest_of = |name: &str| {
        let r = get(&reg, &format!("/v2/{name}/manifests/v1"), None, ACCEPT_ALL);
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(digest_of("bb-layout"), bb.digest());
    assert_eq!(digest_of("idx-layout"), idx.digest());
    assert_eq!(digest_of("multi-oci-archive"), multi.digest());
    let r = get(
        &reg,
        "/v2/httpd-docker-archive/manifests/v1",
        None,
        ACCEPT_ALL,
    );
    let m: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    assert_eq!(m["config"]["digest"], httpd.id());
}

#[test]
fn tampered_blob_fails_verification() {
    let reg = Registry::start(Mode::Plain);
    let img = fixtures::tampered(&reg, "bad", "v1");
    let layer = &img.layers[0].blob;
    let r = get(
        &reg,
        &format!("/v2/bad/blobs/{}", layer.digest),
        None,
        "*/*",
    );
    assert_eq!(r.status().as_u16(), 200);
    let body = r.bytes().unwrap();
    assert_eq!(body.len() as u64, layer.size());
    assert_ne!(sha256_digest(&body), layer.digest);

    let tmp = tempfile::tempdir().unwrap();
    let out = support::skopeo(tmp.path())
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/bad:v1", reg.host()))
        .arg(format!("oci:{}:x", tmp.path().join("o").display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("digest did not match"), "{err}");
}

#[test]
fn fault_proxy_cuts_once_logs_ranges_and_throttles() {
    let reg = Registry::start(Mode::Plain);
    let bb = fixtures::busybox();
    reg.push("busybox", "latest", &bb);
    let proxy = FaultProxy::start(&reg.host());
    let layer = &bb.layers[0].blob;
    let path = format!("/v2/busybox/blobs/{}", layer.digest);
    let url = format!("http://{}{path}", proxy.host());
    let client = reqwest::blocking::Client::new();

    proxy.cut_blob_once_after(100_000);
    let r = client.get(&url).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.bytes().is_err(), "the body ends early");

    let r = client
        .get(&url)
        .header("Range", "bytes=100000-")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    let rest = r.bytes().unwrap();
    let mut whole = layer.data[..100_000].to_vec();
    whole.extend_from_slice(&rest);
    assert_eq!(sha256_digest(&whole), layer.digest);

    let log = proxy.requests();
    assert_eq!(log.len(), 2);
    assert!(log[0].cut && log[0].range.is_none() && log[0].body_bytes == 100_000);
    assert_eq!(log[1].range.as_deref(), Some("bytes=100000-"));
    assert_eq!((log[1].status, log[1].cut), (206, false));
    assert_eq!(proxy.blob_gets(&layer.digest), 2);

    // Manifests pass through; requests are logged with method and path.
    let r = client
        .get(format!(
            "http://{}/v2/busybox/manifests/latest",
            proxy.host()
        ))
        .header("Accept", ACCEPT_ALL)
        .send()
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], bb.digest());
    assert_eq!(proxy.count("GET", "/manifests/latest"), 1);

    // Pushing through the proxy works too (request bodies are relayed).
    support::push(
        &proxy.host(),
        "via-proxy",
        "v1",
        &fixtures::platform_index(false),
        None,
    );
    assert!(proxy.count("PUT", "/v2/via-proxy/manifests/v1") == 1);

    // Throttled: ~1 MB at 2 MB/s takes about half a second.
    proxy.throttle(Some(2_000_000));
    let t = Instant::now();
    let body = client.get(&url).send().unwrap().bytes().unwrap();
    let took = t.elapsed();
    assert_eq!(sha256_digest(&body), layer.digest);
    let expected = Duration::from_secs_f64(layer.size() as f64 / 2_000_000.0);
    assert!(took >= expected.mul_f64(0.8), "{took:?} < {expected:?}");
    proxy.throttle(None);
}

#[test]
fn nothing_leaks() {
    let mut pids = Vec::new();
    let mut dirs = Vec::new();
    for mode in [
        Mode::Plain,
        Mode::basic("a", "b"),
        Mode::token("a", "b"),
        Mode::Tls,
    ] {
        let reg = Registry::start(mode);
        assert!(support::pid_alive(reg.pid()));
        pids.push(reg.pid());
        dirs.push(reg.dir().to_path_buf());
        dirs.push(reg.storage().to_path_buf());
    }
    for pid in pids {
        assert!(!support::pid_alive(pid), "registry {pid} still running");
    }
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
