//! End-to-end image pipeline against a real registry (Debian's docker-registry): pull,
//! platform selection, media types, auth modes, TLS, tampering, resume, crash, dedupe,
//! export, import, prune. Runs as root; every registry, proxy and temp dir is cleaned up.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Runs a command expected to fail; returns its stderr.
fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn dockmaster");
    assert!(
        !out.status.success(),
        "{cmd:?} unexpectedly succeeded\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pull(t: &TempRoot, reference: &str) -> String {
    run_ok(t.dockmaster().args(["pull", reference]))
}

fn export_tree(t: &TempRoot, reference: &str) -> Tree {
    let out = t.path().join(format!(
        "export-{}",
        reference.replace(['/', ':', '@'], "_")
    ));
    run_ok(
        t.dockmaster()
            .args(["image", "export", reference, "--output"])
            .arg(&out),
    );
    let tree = Tree::from_dir(&out);
    fs::remove_dir_all(&out).expect("remove export");
    tree
}

/// Checks an export of an image built from raw tars: every regular file of every layer is
/// there with its exact content.
fn assert_export_has_layer_files(t: &TempRoot, reference: &str, img: &Image) {
    let out = t.path().join("export-raw");
    run_ok(
        t.dockmaster()
            .args(["image", "export", reference, "--output"])
            .arg(&out),
    );
    let mut files = 0;
    for l in &img.layers {
        let tar_bytes = l.tar();
        let mut a = tar::Archive::new(&tar_bytes[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = out.join(e.path().unwrap());
            let mut want = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut want).unwrap();
            assert!(
                fs::read(&path).unwrap() == want,
                "content of {}",
                path.display()
            );
            files += 1;
        }
    }
    assert!(files > 0);
    fs::remove_dir_all(&out).unwrap();
}

fn write_config(t: &TempRoot, yaml: &str) -> std::path::PathBuf {
    let p = t.path().join("config.yaml");
    fs::write(&p, yaml).expect("write config");
    p
}

fn blob_in_store(t: &TempRoot, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    t.root().join("content/blobs/sha256").join(hex).exists()
}

fn snapshot_in_store(t: &TempRoot, diff_id: &str) -> bool {
    let hex = diff_id.strip_prefix("sha256:").expect("sha256 digest");
    t.root().join("snapshots/sha256").join(hex).is_dir()
}

fn images_json(t: &TempRoot) -> Vec<serde_json::Value> {
    let out = run_ok(t.dockmaster().args(["images", "--format", "json"]));
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("images json")
}

#[test]
fn multilayer_whiteouts_pull_export_inspect() {
    let reg = Registry::start(Mode::Plain);
    let img = multilayer_whiteouts();
    reg.push("fixtures/multilayer", "v1", &img);
    let t = TempRoot::new();
    let reference = reg.reference("fixtures/multilayer", "v1");
    let printed = pull(&t, &reference);
    assert_eq!(printed.trim(), reference);

    // the flattened tree is exactly what stacking the layers gives
    img.expected_tree()
        .assert_matches(&export_tree(&t, &reference));

    // each layer has its own snapshot in overlayfs form
    for l in &img.layers {
        assert!(blob_in_store(&t, l.digest()), "blob {}", l.digest());
        assert!(snapshot_in_store(&t, &l.diff_id), "snapshot {}", l.diff_id);
    }
    let middle = t
        .root()
        .join("snapshots/sha256")
        .join(img.layers[1].diff_id.strip_prefix("sha256:").unwrap());
    let wh = fs::symlink_metadata(middle.join("data/remove-me.txt")).expect("whiteout node");
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "0/0 char device whiteout"
    );
    let top = t
        .root()
        .join("snapshots/sha256")
        .join(img.layers[2].diff_id.strip_prefix("sha256:").unwrap());
    let opaque = xattr::get(top.join("opt/app"), "trusted.overlay.opaque").expect("xattr");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));

    let inspect: serde_json::Value = serde_json::from_str(&run_ok(
        t.dockmaster().args(["image", "inspect", &reference]),
    ))
    .expect("inspect json");
    assert_eq!(inspect["Id"], img.id());
    assert_eq!(inspect["ManifestDigest"], img.digest());
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(inspect["Config"]["config"]["WorkingDir"], "/data");
    assert_eq!(inspect["Size"].as_u64().unwrap(), img.layers_size());

    let listed = images_json(&t);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["reference"], reference);

    // a second pull downloads nothing
    let again = t.dockmaster().args(["pull", &reference]).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already present"));
}

#[test]
fn platform_selection_from_oci_index_and_docker_manifest_list() {
    let reg = Registry::start(Mode::Plain);
    for (oci, repo) in [
        (true, "fixtures/oci-index"),
        (false, "fixtures/docker-list"),
    ] {
        let index = platform_index(oci);
        reg.push(repo, "multi", &index);
        let reference = reg.reference(repo, "multi");
        for (platform, want) in [
            ("linux/arm64", "arm64/v8\n"),
            ("linux/arm64/v8", "arm64/v8\n"),
            ("linux/arm/v7", "arm/v7\n"),
            ("linux/amd64", "amd64\n"),
        ] {
            let t = TempRoot::new();
            run_ok(
                t.dockmaster()
                    .args(["pull", "--platform", platform, &reference]),
            );
            let tree = export_tree(&t, &reference);
            let arch = tree.get("/etc/arch").or_else(|| tree.get("etc/arch"));
            let Some(node) = arch else {
                panic!("no /etc/arch in export for {platform}: {:?}", tree.paths())
            };
            assert_eq!(
                node.kind,
                support::layer::NodeKind::File(want.as_bytes().to_vec()),
                "{repo} {platform}"
            );
            let listed = images_json(&t);
            assert_eq!(
                listed[0]["repo_digest"],
                index.digest(),
                "repo digest is the index"
            );
        }
        // the host's default (this machine is amd64)
        let t = TempRoot::new();
        pull(&t, &reference);
        let amd64 = index.image_for("amd64", None).unwrap();
        assert_eq!(images_json(&t)[0]["manifest_digest"], amd64.digest());

        let t = TempRoot::new();
        let err = run_err(
            t.dockmaster()
                .args(["pull", "--platform", "linux/s390x", &reference]),
        );
        assert!(err.contains("linux/s390x"), "{err}");
        assert!(
            err.contains("linux/arm64"),
            "error lists what the index offers: {err}"
        );
    }
}

#[test]
fn docker_and_oci_media_types_and_every_compression() {
    let reg = Registry::start(Mode::Plain);
    let cases = [
        (
            "docker-gzip",
            busybox_with(Format::Docker, Compression::Gzip),
        ),
        ("oci-zstd", busybox_with(Format::Oci, Compression::Zstd)),
        ("oci-plain", busybox_with(Format::Oci, Compression::None)),
        (
            "no-media-type",
            ImageBuilder::new()
                .layer(busybox_rootfs().build())
                .omit_media_type()
                .build(),
        ),
    ];
    for (tag, img) in &cases {
        reg.push("fixtures/types", tag, img);
    }
    let t = TempRoot::new();
    for (tag, img) in &cases {
        let reference = reg.reference("fixtures/types", tag);
        pull(&t, &reference);
        img.expected_tree()
            .assert_matches(&export_tree(&t, &reference));
    }
    // all four share the same rootfs content, but not the same blobs: one snapshot each
    // compression, since the diff ID (uncompressed) is equal
    let snaps = fs::read_dir(t.root().join("snapshots/sha256"))
        .unwrap()
        .count();
    assert_eq!(
        snaps, 1,
        "one snapshot serves every image with the same layer content"
    );
}

#[test]
fn basic_auth_with_config_json_and_wrong_credentials() {
    let reg = Registry::start(Mode::basic("alice", "s3cret"));
    reg.push("private/app", "v1", &busybox());
    let reference = reg.reference("private/app", "v1");

    let t = TempRoot::new();
    let err = run_err(t.dockmaster().args(["pull", &reference]));
    assert!(err.contains(&reg.host()) && err.contains("401"), "{err}");

    write_docker_config(&t.docker_config_dir(), &[(&reg.host(), "alice", "wrong")]);
    let err = run_err(t.dockmaster().args(["pull", &reference]));
    assert!(err.contains("alice"), "error names the user: {err}");
    assert!(err.contains(&reg.host()), "error names the registry: {err}");

    write_docker_config(&t.docker_config_dir(), &[(&reg.host(), "alice", "s3cret")]);
    pull(&t, &reference);

    // the agent configuration's auth_file wins over $DOCKER_CONFIG
    let t2 = TempRoot::new();
    let auth_dir = t2.path().join("agent-auth");
    let auth_file = write_docker_config(&auth_dir, &[(&reg.host(), "alice", "s3cret")]);
    let cfg = write_config(
        &t2,
        &format!("registries:\n  auth_file: {}\n", auth_file.display()),
    );
    run_ok(
        t2.dockmaster()
            .arg("--config")
            .arg(&cfg)
            .args(["pull", &reference]),
    );
}

#[test]
fn bearer_token_auth_caches_tokens_and_uses_credential_helpers() {
    let reg = Registry::start(Mode::token("bob", "hunter2"));
    let img = multilayer_whiteouts();
    reg.push("team/app", "v1", &img);
    let reference = reg.reference("team/app", "v1");

    let t = TempRoot::new();
    write_docker_config(&t.docker_config_dir(), &[(&reg.host(), "bob", "hunter2")]);
    let before = reg.token_requests();
    pull(&t, &reference);
    let used = reg.token_requests() - before;
    assert!(
        (1..=2).contains(&used),
        "one token for the repository scope, reused for manifest, config and 3 layers; got {used}"
    );
    img.expected_tree()
        .assert_matches(&export_tree(&t, &reference));

    // credentials from a docker-credential-* helper program
    let t2 = TempRoot::new();
    let bin = t2.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-dmtest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\n[ \"$server\" = \"{}\" ] || {{ echo \"credentials not found in native keychain\"; exit 1; }}\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"bob\",\"Secret\":\"hunter2\"}}'\n",
            reg.host()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        t2.docker_config_dir().join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "dmtest"}}}}"#, reg.host()),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_ok(
        t2.dockmaster()
            .env("PATH", &path)
            .args(["pull", &reference]),
    );

    // wrong password through the token server: a clear error, no retry storm
    let t3 = TempRoot::new();
    write_docker_config(&t3.docker_config_dir(), &[(&reg.host(), "bob", "nope")]);
    let err = run_err(t3.dockmaster().args(["pull", &reference]));
    assert!(err.contains("bob") && err.contains(&reg.host()), "{err}");
}

#[test]
fn tls_registry_needs_its_ca_in_certs_d() {
    let reg = Registry::start(Mode::Tls);
    reg.push("secure/app", "v1", &busybox());
    let reference = reg.reference("secure/app", "v1");

    let t = TempRoot::new();
    let empty_certs = t.path().join("no-certs");
    fs::create_dir_all(&empty_certs).unwrap();
    let cfg = write_config(
        &t,
        &format!("registries:\n  certs_dir: {}\n", empty_certs.display()),
    );
    let err = run_err(
        t.dockmaster()
            .arg("--config")
            .arg(&cfg)
            .args(["pull", &reference]),
    );
    assert!(err.contains(&reg.host()), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("certs.d"),
        "error explains the TLS failure: {err}"
    );

    let certs = certs_d(
        &t.path().join("certs.d"),
        &reg.host(),
        reg.ca_cert().unwrap(),
    );
    let cfg = write_config(
        &t,
        &format!("registries:\n  certs_dir: {}\n", certs.display()),
    );
    run_ok(
        t.dockmaster()
            .arg("--config")
            .arg(&cfg)
            .args(["pull", &reference]),
    );
}

#[test]
fn tampered_blob_is_refused_and_never_used() {
    let reg = Registry::start(Mode::Plain);
    let img = tampered(&reg, "fixtures/tampered", "v1");
    let reference = reg.reference("fixtures/tampered", "v1");
    let t = TempRoot::new();
    let err = run_err(t.dockmaster().args(["pull", &reference]));
    let bad = img.layers.last().unwrap();
    assert!(err.contains(bad.digest()), "error names the blob: {err}");
    assert!(
        err.contains("verification") || err.contains("mismatch"),
        "{err}"
    );
    assert!(!blob_in_store(&t, bad.digest()));
    assert!(!snapshot_in_store(&t, &bad.diff_id));
    assert!(images_json(&t).is_empty(), "no image recorded");
    // nothing half-written is left under a final name, and no partial files remain
    let ingest: Vec<_> = fs::read_dir(t.root().join("content/ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(ingest.is_empty(), "{ingest:?}");
}

#[test]
fn cut_download_resumes_with_range() {
    let reg = Registry::start(Mode::Plain);
    let img = large_incompressible(4 * 1024 * 1024, 1);
    reg.push("fixtures/big", "v1", &img);
    let proxy = FaultProxy::start(&reg.host());
    proxy.cut_blob_once_after(1024 * 1024 + 17);
    let t = TempRoot::new();
    let reference = format!("{}/fixtures/big:v1", proxy.host());
    pull(&t, &reference);
    let layer = img.layers[0].digest();
    assert_eq!(proxy.blob_gets(layer), 2, "one cut request, one resumed");
    let ranged: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.range.is_some())
        .collect();
    assert_eq!(ranged.len(), 1, "{ranged:?}");
    assert_eq!(ranged[0].range.as_deref(), Some("bytes=1048593-"));
    assert_export_has_layer_files(&t, &reference, &img);
}

#[test]
fn breakout_layers_are_refused_with_nothing_written_outside() {
    let reg = Registry::start(Mode::Plain);
    let outside = tempfile::tempdir().unwrap();
    let sentinel = outside.path().join("sentinel");
    fs::write(&sentinel, "untouched").unwrap();

    // a symlink to a directory outside, then a file written through it
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "escape", outside.path()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    b.append_data(&mut h, "escape/pwned", &b"owned"[..])
        .unwrap();
    let symlink_tar = b.into_inner().unwrap();

    // a raw `../` path (the tar crate refuses to write one, so patch the header)
    let mut raw = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(5);
    h.set_mode(0o644);
    raw.append_data(&mut h, "xx/yy/zz/pwned", &b"owned"[..])
        .unwrap();
    let mut dotdot_tar = raw.into_inner().unwrap();
    let name = b"../../../../../../../../tmp/dm-breakout-pwned";
    dotdot_tar[..100].fill(0);
    dotdot_tar[..name.len()].copy_from_slice(name);
    fix_checksum(&mut dotdot_tar[..512]);

    // a hardlink to a host file
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    b.append_link(&mut h, "pwned-passwd", "/etc/passwd")
        .unwrap();
    let hardlink_tar = b.into_inner().unwrap();

    // Refused outright: a `..` escape and a hardlink to something outside the layer.
    for (tag, tar_bytes) in [("dotdot", dotdot_tar), ("hardlink", hardlink_tar)] {
        let img = ImageBuilder::new()
            .layer(Layer::from_tar(tar_bytes, Compression::Gzip))
            .build();
        reg.push("fixtures/evil", tag, &img);
        let t = TempRoot::new();
        let err = run_err(
            t.dockmaster()
                .args(["pull", &reg.reference("fixtures/evil", tag)]),
        );
        assert!(
            err.contains(img.layers[0].digest()),
            "names the layer: {err}"
        );
        assert!(err.contains("pwned"), "names the entry: {err}");
        assert!(images_json(&t).is_empty());
        assert!(!snapshot_in_store(&t, &img.layers[0].diff_id));
    }

    // An absolute symlink is resolved inside the layer's root, as containerd does (the
    // external conformance data expects this): the file lands inside the snapshot.
    let img = ImageBuilder::new()
        .layer(Layer::from_tar(symlink_tar, Compression::Gzip))
        .build();
    reg.push("fixtures/evil", "symlink", &img);
    let t = TempRoot::new();
    let r = t
        .dockmaster()
        .args(["pull", &reg.reference("fixtures/evil", "symlink")])
        .output()
        .unwrap();
    if r.status.success() {
        let snap = t
            .root()
            .join("snapshots/sha256")
            .join(img.layers[0].diff_id.strip_prefix("sha256:").unwrap());
        let inside = snap
            .join(outside.path().strip_prefix("/").unwrap())
            .join("pwned");
        assert_eq!(fs::read_to_string(&inside).unwrap(), "owned");
    } else {
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains("pwned"), "names the entry: {err}");
    }
    assert_eq!(fs::read_to_string(&sentinel).unwrap(), "untouched");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    assert!(!Path::new("/tmp/dm-breakout-pwned").exists());
}

fn fix_checksum(header: &mut [u8]) {
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(s.as_bytes());
}

#[test]
fn kill_9_during_pull_then_pull_completes() {
    let reg = Registry::start(Mode::Plain);
    let img = large_incompressible(24 * 1024 * 1024, 3);
    reg.push("fixtures/slow", "v1", &img);
    let proxy = FaultProxy::start(&reg.host());
    proxy.throttle(Some(4 * 1024 * 1024));
    let reference = format!("{}/fixtures/slow:v1", proxy.host());
    let t = TempRoot::new();

    let mut child = t
        .dockmaster()
        .args(["pull", &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // wait until blobs are streaming, then kill mid-download
    let start = Instant::now();
    while proxy.requests().iter().filter(|r| r.is_blob()).count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pull never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    let pid = child.id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(
        images_json(&t).is_empty(),
        "no record for an unfinished pull"
    );
    // whatever is under a final name is complete and verified
    for e in fs::read_dir(t.root().join("content/blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let want = format!("sha256:{}", p.file_name().unwrap().to_string_lossy());
        assert_eq!(support::layer::sha256_digest(&fs::read(&p).unwrap()), want);
    }

    proxy.throttle(None);
    pull(&t, &reference);
    assert_export_has_layer_files(&t, &reference, &img);
    // the dead process's leftovers are garbage that prune clears
    run_ok(t.dockmaster().args(["image", "prune"]));
    let leftovers: Vec<_> = fs::read_dir(t.root().join("content/ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        fs::read_dir(t.root().join("snapshots/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn concurrent_pulls_fetch_each_blob_once() {
    let reg = Registry::start(Mode::Plain);
    let img = large_incompressible(6 * 1024 * 1024, 3);
    reg.push("fixtures/shared", "v1", &img);
    let proxy = FaultProxy::start(&reg.host());
    proxy.throttle(Some(8 * 1024 * 1024));
    let reference = format!("{}/fixtures/shared:v1", proxy.host());
    let t = TempRoot::new();
    let children: Vec<_> = (0..2)
        .map(|_| {
            t.dockmaster()
                .args(["pull", &reference])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for l in &img.layers {
        assert_eq!(
            proxy.blob_gets(l.digest()),
            1,
            "layer {} fetched once",
            l.digest()
        );
    }
    assert_eq!(proxy.blob_gets(img.id()), 1, "config fetched once");
    assert_export_has_layer_files(&t, &reference, &img);
}

#[test]
fn prune_and_rmi_remove_exactly_what_is_unreferenced() {
    let reg = Registry::start(Mode::Plain);
    let base = busybox_rootfs().build();
    let a = ImageBuilder::new().layer(base.clone()).cmd(&["sh"]).build();
    let b = ImageBuilder::new()
        .layer(base.clone())
        .layer(LayerBuilder::new().file("b.txt", "only in b\n").build())
        .cmd(&["cat", "/b.txt"])
        .build();
    let c = ImageBuilder::new()
        .layer(base.clone())
        .layer(LayerBuilder::new().file("c.txt", "only in c\n").build())
        .build();
    reg.push("p/a", "v1", &a);
    reg.push("p/b", "v1", &b);
    reg.push("p/c", "v1", &c);
    let t = TempRoot::new();
    for r in ["p/a", "p/b", "p/c"] {
        pull(&t, &reg.reference(r, "v1"));
    }

    // prune with everything referenced removes nothing
    let before = fs::read_dir(t.root().join("content/blobs/sha256"))
        .unwrap()
        .count();
    run_ok(t.dockmaster().args(["image", "prune"]));
    assert_eq!(
        fs::read_dir(t.root().join("content/blobs/sha256"))
            .unwrap()
            .count(),
        before
    );

    // drop b's record only (as if the name were retagged elsewhere): prune removes b's
    // manifest, config and unique layer, and keeps the shared base layer
    let store = dockmaster::image::ImageStore::open(&t.root()).unwrap();
    let b_ref = dockmaster::image::Reference::parse_pullable(&reg.reference("p/b", "v1"))
        .unwrap()
        .to_string();
    store.db.remove(&[b_ref]).unwrap();
    run_ok(t.dockmaster().args(["image", "prune"]));
    assert!(!blob_in_store(&t, b.digest()));
    assert!(!blob_in_store(&t, b.id()));
    assert!(!blob_in_store(&t, b.layers[1].digest()));
    assert!(!snapshot_in_store(&t, &b.layers[1].diff_id));
    for keep in [
        a.digest(),
        a.id(),
        c.digest(),
        c.id(),
        base.digest(),
        c.layers[1].digest(),
    ] {
        assert!(blob_in_store(&t, keep), "kept {keep}");
    }
    assert!(snapshot_in_store(&t, &base.diff_id));
    assert!(snapshot_in_store(&t, &c.layers[1].diff_id));

    // rmi c: c's own content goes, the base layer stays for a
    run_ok(t.dockmaster().args(["rmi", &reg.reference("p/c", "v1")]));
    assert!(!blob_in_store(&t, c.layers[1].digest()));
    assert!(!snapshot_in_store(&t, &c.layers[1].diff_id));
    assert!(blob_in_store(&t, base.digest()));
    assert!(snapshot_in_store(&t, &base.diff_id));
    a.expected_tree()
        .assert_matches(&export_tree(&t, &reg.reference("p/a", "v1")));
    let listed = images_json(&t);
    assert_eq!(listed.len(), 1);

    let err = run_err(t.dockmaster().args(["rmi", "nosuch/image"]));
    assert!(err.contains("nosuch/image"), "{err}");
}

#[test]
fn import_oci_layout_oci_archive_and_docker_archive() {
    let img = multilayer_whiteouts();
    let index = platform_index(true);
    let work = tempfile::tempdir().unwrap();

    let layout = work.path().join("layout");
    write_oci_layout(
        &layout,
        &[
            ("example.com/app:v1", &img),
            ("example.com/multi:v2", &index),
        ],
    );
    let t = TempRoot::new();
    run_ok(t.dockmaster().args(["image", "import"]).arg(&layout));
    img.expected_tree()
        .assert_matches(&export_tree(&t, "example.com/app:v1"));
    let refs: Vec<String> = images_json(&t)
        .iter()
        .map(|r| r["reference"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refs, ["example.com/app:v1", "example.com/multi:v2"]);

    let archive = work.path().join("oci.tar");
    write_oci_archive(&archive, &[("example.com/app:v1", &img)]);
    let t = TempRoot::new();
    run_ok(t.dockmaster().args(["image", "import"]).arg(&archive));
    img.expected_tree()
        .assert_matches(&export_tree(&t, "example.com/app:v1"));

    let docker = work.path().join("docker.tar");
    let httpd = httpd_with_healthcheck();
    write_docker_archive(&docker, &[("registry.lan/httpd:1.0", &httpd)]);
    let t = TempRoot::new();
    run_ok(t.dockmaster().args(["image", "import"]).arg(&docker));
    httpd
        .expected_tree()
        .assert_matches(&export_tree(&t, "registry.lan/httpd:1.0"));
    let inspect: serde_json::Value = serde_json::from_str(&run_ok(t.dockmaster().args([
        "image",
        "inspect",
        "registry.lan/httpd:1.0",
    ])))
    .unwrap();
    assert_eq!(inspect["Config"]["config"]["Healthcheck"]["Test"][0], "CMD");

    // garbage is refused with the path in the message
    let junk = work.path().join("junk.tar");
    fs::write(&junk, b"not a tar at all").unwrap();
    let err = run_err(
        TempRoot::new()
            .dockmaster()
            .args(["image", "import"])
            .arg(&junk),
    );
    assert!(err.contains("junk.tar"), "{err}");
}

#[test]
fn docker_io_mirror_is_used_for_short_names() {
    let mirror = Registry::start(Mode::Plain);
    let img = busybox();
    mirror.push("library/busybox", "latest", &img);
    let t = TempRoot::new();
    let cfg = write_config(
        &t,
        &format!(
            "registries:\n  mirrors:\n    docker.io: [\"http://{}\"]\n",
            mirror.host()
        ),
    );
    let out = run_ok(
        t.dockmaster()
            .arg("--config")
            .arg(&cfg)
            .args(["pull", "busybox"]),
    );
    assert_eq!(out.trim(), "docker.io/library/busybox:latest");
    img.expected_tree()
        .assert_matches(&export_tree(&t, "busybox"));
}

#[test]
fn parse_ref_prints_normalized_json_and_refuses_bad_references() {
    let t = TempRoot::new();
    let out = run_ok(t.dockmaster().args(["debug", "parse-ref", "nginx"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["normalized"]["with_default_tag"],
        "docker.io/library/nginx:latest"
    );
    assert_eq!(v["normalized"]["domain"], "docker.io");
    let err = run_err(t.dockmaster().args(["debug", "parse-ref", "Foo/Bar:x"]));
    assert!(err.contains("must be lowercase"), "{err}");
    let err = run_err(t.dockmaster().args(["pull", "a//b"]));
    assert!(err.contains("invalid reference format"), "{err}");
}

#[test]
fn pull_by_digest_and_find_by_id_or_digest() {
    let reg = Registry::start(Mode::Plain);
    let img = busybox();
    reg.push("fixtures/pinned", "v1", &img);
    let t = TempRoot::new();
    let pinned = format!("{}/fixtures/pinned@{}", reg.host(), img.digest());
    assert_eq!(pull(&t, &pinned).trim(), pinned);
    // a digest that the registry does not have is a clear not-found error
    let missing = format!("{}/fixtures/pinned@sha256:{}", reg.host(), "0".repeat(64));
    let err = run_err(t.dockmaster().args(["pull", &missing]));
    assert!(err.contains("fixtures/pinned"), "{err}");
    // inspect by short image ID (config digest prefix) and by the pinned reference
    let short = &img.id()["sha256:".len().."sha256:".len() + 12];
    for query in [short, pinned.as_str()] {
        let v: serde_json::Value =
            serde_json::from_str(&run_ok(t.dockmaster().args(["image", "inspect", query])))
                .unwrap();
        assert_eq!(v["Id"], img.id(), "{query}");
    }
    let err = run_err(t.dockmaster().args(["image", "inspect", "deadbeef"]));
    assert!(
        err.contains("deadbeef") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn explicit_platform_must_match_a_single_platform_image() {
    let reg = Registry::start(Mode::Plain);
    let arm = ImageBuilder::new()
        .layer(busybox_rootfs().build())
        .platform("linux", "arm64", Some("v8"))
        .build();
    reg.push("fixtures/armonly", "v1", &arm);
    let reference = reg.reference("fixtures/armonly", "v1");
    let t = TempRoot::new();
    let err = run_err(
        t.dockmaster()
            .args(["pull", "--platform", "linux/amd64", &reference]),
    );
    assert!(
        err.contains("linux/arm64") && err.contains("linux/amd64"),
        "{err}"
    );
    assert!(images_json(&t).is_empty());
    run_ok(
        t.dockmaster()
            .args(["pull", "--platform", "linux/arm64", &reference]),
    );
    // without --platform it is pulled with a warning, like docker
    let t = TempRoot::new();
    pull(&t, &reference);
}
