use super::*;

const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const D2: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const D3: &str = "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270";
const D4: &str = "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f";
const D5: &str = "sha256:c86f7763873b6c0aae22d963bab59b4f5debbed6685761b5951584f6efb0633b";

fn digest(s: &str) -> Digest {
    Digest::parse(s).unwrap()
}

/// A Docker schema 2 manifest as Docker Hub serves it.
fn docker_manifest(with_media_type: bool) -> String {
    let mt = if with_media_type {
        format!("\"mediaType\": \"{}\",", media_types::DOCKER_MANIFEST_V2)
    } else {
        String::new()
    };
    format!(
        r#"{{
   "schemaVersion": 2,
   {mt}
   "config": {{
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1469,
      "digest": "{D1}"
   }},
   "layers": [
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 2479,
         "digest": "{D2}"
      }}
   ]
}}"#
    )
}

fn docker_list() -> String {
    format!(
        r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "manifests": [
    {{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 525,
      "digest": "{D1}", "platform": {{"architecture": "amd64", "os": "linux"}}}},
    {{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 525,
      "digest": "{D2}", "platform": {{"architecture": "arm", "os": "linux", "variant": "v7"}}}},
    {{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 525,
      "digest": "{D3}", "platform": {{"architecture": "arm64", "os": "linux", "variant": "v8",
      "features": ["sse4"]}}}}
  ]
}}"#
    )
}

#[test]
fn docker_schema2_and_manifest_list_parse() {
    let m = parse_manifest(docker_manifest(true).as_bytes(), None).unwrap();
    assert_eq!(m.media_type(), media_types::DOCKER_MANIFEST_V2);
    let img = m.as_image().unwrap();
    assert_eq!(img.schema_version, 2);
    assert_eq!(img.config.media_type, media_types::DOCKER_CONFIG);
    assert_eq!(img.config.digest, digest(D1));
    assert_eq!(img.config.size, 1469);
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.layers[0].media_type, media_types::DOCKER_LAYER_GZIP);
    img.check_runnable().unwrap();

    let l = parse_manifest(
        docker_list().as_bytes(),
        Some(media_types::DOCKER_MANIFEST_LIST),
    )
    .unwrap();
    assert_eq!(l.media_type(), media_types::DOCKER_MANIFEST_LIST);
    let idx = l.as_index().unwrap();
    assert_eq!(idx.manifests.len(), 3);
    let arm64 = idx.manifests[2].platform.as_ref().unwrap();
    assert_eq!(arm64.variant.as_deref(), Some("v8"));
    assert_eq!(arm64.features, vec!["sse4".to_string()]);
}

#[test]
fn media_type_from_content_type_when_body_lacks_it() {
    let body = docker_manifest(false);
    let m = parse_manifest(
        body.as_bytes(),
        Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    )
    .unwrap();
    assert_eq!(m.media_type(), media_types::DOCKER_MANIFEST_V2);
    assert_eq!(
        m.as_image().unwrap().media_type.as_deref(),
        Some(media_types::DOCKER_MANIFEST_V2)
    );
    // Media types are case-insensitive; parameters and blanks are stripped.
    let m = parse_manifest(
        body.as_bytes(),
        Some(" Application/VND.OCI.image.manifest.v1+json ;foo=bar"),
    )
    .unwrap();
    assert_eq!(m.media_type(), media_types::OCI_MANIFEST);
}

#[test]
fn media_type_inferred_from_shape() {
    // Generic content types say nothing: the shape decides.
    for ct in [
        None,
        Some("application/json"),
        Some("text/plain; charset=utf-8"),
    ] {
        let m = parse_manifest(docker_manifest(false).as_bytes(), ct).unwrap();
        assert_eq!(m.media_type(), media_types::OCI_MANIFEST, "{ct:?}");
    }
    let idx = r#"{"schemaVersion":2,"manifests":[]}"#;
    let m = parse_manifest(idx.as_bytes(), None).unwrap();
    assert_eq!(m.media_type(), media_types::OCI_INDEX);
    assert!(m.as_index().unwrap().manifests.is_empty());

    let err = parse_manifest(br#"{"schemaVersion":2}"#, None).unwrap_err();
    assert!(matches!(err, ManifestError::UnknownShape), "{err}");
    let err = parse_manifest(br#"[{"schemaVersion":2,"manifests":[]}]"#, None).unwrap_err();
    assert!(matches!(err, ManifestError::Json { .. }), "{err}");
    let both = br#"{"schemaVersion":2,"manifests":[],"layers":[]}"#;
    let err = parse_manifest(both, None).unwrap_err();
    assert!(matches!(err, ManifestError::AmbiguousShape), "{err}");
}

#[test]
fn body_media_type_wins_unless_index_and_manifest_are_crossed() {
    let body = docker_manifest(true);
    let m = parse_manifest(body.as_bytes(), Some(media_types::OCI_MANIFEST)).unwrap();
    assert_eq!(m.media_type(), media_types::DOCKER_MANIFEST_V2);
    let shouting = body.replace("vnd.docker.distribution", "VND.DOCKER.DISTRIBUTION");
    let m = parse_manifest(shouting.as_bytes(), None).unwrap();
    assert!(m.as_image().is_some());

    let err = parse_manifest(body.as_bytes(), Some(media_types::OCI_INDEX)).unwrap_err();
    assert!(
        matches!(err, ManifestError::MediaTypeConflict { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(media_types::DOCKER_MANIFEST_V2) && msg.contains(media_types::OCI_INDEX));

    let err =
        parse_manifest(docker_list().as_bytes(), Some(media_types::OCI_MANIFEST)).unwrap_err();
    assert!(
        matches!(err, ManifestError::MediaTypeConflict { .. }),
        "{err}"
    );
}

#[test]
fn schema1_is_refused_with_a_clear_message() {
    let signed = br#"{
       "schemaVersion": 1,
       "name": "library/hello",
       "tag": "latest",
       "architecture": "amd64",
       "fsLayers": [{"blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],
       "history": [{"v1Compatibility": "{}"}],
       "signatures": []
    }"#;
    for ct in [
        None,
        Some(media_types::DOCKER_MANIFEST_V1_SIGNED),
        Some(media_types::DOCKER_MANIFEST_V1),
        Some("application/json"),
    ] {
        let err = parse_manifest(signed, ct).unwrap_err();
        assert!(
            matches!(err, ManifestError::Schema1 { .. }),
            "{ct:?}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("schema 1"), "{msg}");
        assert!(
            msg.contains("deprecated") && msg.contains("re-push"),
            "{msg}"
        );
        assert_eq!(err.category(), Category::Invalid);
    }
    // The Content-Type alone is enough, whatever the body looks like.
    let err = parse_manifest(
        docker_manifest(false).as_bytes(),
        Some(media_types::DOCKER_MANIFEST_V1_SIGNED),
    )
    .unwrap_err();
    assert!(err.to_string().contains("prettyjws"), "{err}");
}

#[test]
fn unknown_media_types_are_refused_by_name() {
    let body = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json",
        "blobs":[]}"#;
    let err = parse_manifest(body.as_bytes(), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("application/vnd.oci.artifact.manifest.v1+json"),
        "{err}"
    );
    let err = parse_manifest(
        docker_manifest(false).as_bytes(),
        Some("application/vnd.example.thing+json"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ManifestError::UnsupportedMediaType { media_type } if media_type == "application/vnd.example.thing+json"),
        "{err}"
    );
}

#[test]
fn malformed_and_oversized_bodies_are_refused() {
    assert!(matches!(
        parse_manifest(b"{not json", None),
        Err(ManifestError::Json { .. })
    ));
    assert!(matches!(
        parse_manifest(b"", None),
        Err(ManifestError::Json { .. })
    ));
    let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
    assert!(matches!(
        parse_manifest(&big, None),
        Err(ManifestError::TooLarge { .. })
    ));
    let big = vec![b' '; MAX_CONFIG_SIZE + 1];
    assert!(matches!(
        parse_config(&big),
        Err(ManifestError::TooLarge { .. })
    ));
    // schemaVersion other than 2.
    let v3 = docker_manifest(true).replace("\"schemaVersion\": 2", "\"schemaVersion\": 3");
    let err = parse_manifest(v3.as_bytes(), None).unwrap_err();
    assert!(matches!(err, ManifestError::SchemaVersion { .. }), "{err}");
    let none = docker_manifest(true).replace("\"schemaVersion\": 2,", "");
    let err = parse_manifest(none.as_bytes(), None).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // A digest we cannot verify is refused by the parser (validate() is more lenient).
    let bad = docker_manifest(true).replace(D2, "sha256:abc");
    assert!(matches!(
        parse_manifest(bad.as_bytes(), None),
        Err(ManifestError::Json { .. })
    ));
    // Duplicate fields are refused rather than guessed at.
    let dup = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"a/b","size":1,"digest":"{D1}"}},"layers":[],"layers":[]}}"#
    );
    assert!(parse_manifest(dup.as_bytes(), None).is_err());
}

#[test]
fn nulls_mean_absent() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":null,"annotations":null,
        "config":{{"mediaType":"{}","size":2,"digest":"{D2}","urls":null,"annotations":{{"a":null}}}},
        "layers":null}}"#,
        media_types::OCI_CONFIG
    );
    let m = parse_manifest(body.as_bytes(), None).unwrap();
    let img = m.as_image().unwrap();
    assert!(img.layers.is_empty());
    assert_eq!(
        img.config.annotations.get("a").map(String::as_str),
        Some("")
    );
    assert_eq!(img.media_type.as_deref(), Some(media_types::OCI_MANIFEST));
    let plat: Platform = serde_json::from_str(
        r#"{"architecture":"amd64","os":"linux","variant":"","os.features":null}"#,
    )
    .unwrap();
    assert_eq!(plat, p("linux/amd64"));
}

#[test]
fn runnable_checks_name_the_offender() {
    let m = parse_manifest(docker_manifest(true).as_bytes(), None).unwrap();
    let Manifest::Image(mut img) = m else {
        panic!("not an image")
    };
    for (mt, c) in [
        (media_types::OCI_LAYER_TAR, LayerCompression::None),
        (media_types::OCI_LAYER_GZIP, LayerCompression::Gzip),
        (media_types::OCI_LAYER_ZSTD, LayerCompression::Zstd),
        (
            media_types::OCI_LAYER_NONDISTRIBUTABLE_GZIP,
            LayerCompression::Gzip,
        ),
        (
            media_types::DOCKER_FOREIGN_LAYER_GZIP,
            LayerCompression::Gzip,
        ),
        (media_types::DOCKER_LAYER_TAR, LayerCompression::None),
    ] {
        assert_eq!(layer_compression(mt), Some(c), "{mt}");
    }
    img.layers[0].media_type = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into();
    let err = img.check_runnable().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("+encrypted") && msg.contains(D2), "{msg}");

    img.layers[0].media_type = media_types::OCI_LAYER_GZIP.into();
    img.config.media_type = "application/vnd.cncf.helm.config.v1+json".into();
    let err = img.check_runnable().unwrap_err();
    assert!(matches!(err, ManifestError::NotRunnable { .. }), "{err}");
    assert!(err.to_string().contains("helm"), "{err}");
}

#[test]
fn descriptor_serializes_like_the_spec() {
    let mut d = Descriptor::new(media_types::OCI_MANIFEST, digest(D3), 7682);
    let j = serde_json::to_value(&d).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"mediaType": media_types::OCI_MANIFEST, "digest": D3, "size": 7682})
    );
    d.platform = Some(Platform::parse("linux/arm64").unwrap());
    d.annotations.insert("k".into(), "v".into());
    let j = serde_json::to_value(&d).unwrap();
    assert_eq!(
        j["platform"],
        serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
    );
    assert_eq!(j["annotations"]["k"], "v");
    let back: Descriptor = serde_json::from_value(j).unwrap();
    assert_eq!(back, d);

    // Whole documents round-trip through our types.
    let m = parse_manifest(docker_list().as_bytes(), None).unwrap();
    let again = parse_manifest(&serde_json::to_vec(&m).unwrap(), None).unwrap();
    assert_eq!(m, again);
    validate(Kind::Index, &serde_json::to_vec(&m).unwrap()).unwrap();
}

#[test]
fn embedded_data_must_match_size_and_digest() {
    let mut d = Descriptor::new(media_types::OCI_EMPTY, digest(D2), 2);
    d.data = Some("e30=".into());
    assert_eq!(d.embedded_data().as_deref(), Some(&b"{}"[..]));
    d.size = 3;
    assert_eq!(d.embedded_data(), None);
    d.size = 2;
    d.data = Some("e31=".into());
    assert_eq!(d.embedded_data(), None);
}

// ---------------------------------------------------------------------------------------------
// Platforms

fn p(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

#[test]
fn platform_parse_normalizes_like_containerd() {
    for (input, want) in [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("Linux/X86-64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/arm64/8", "linux/arm64/v8"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("linux/ppc64le", "linux/ppc64le"),
        ("macos/arm64", "darwin/arm64/v8"),
        ("arm64", "linux/arm64/v8"),
        ("x86_64", "linux/amd64"),
        ("windows(10.0.17763)/amd64", "windows(10.0.17763)/amd64"),
    ] {
        assert_eq!(p(input).to_string(), want, "{input}");
    }
    assert_eq!(
        p("windows(10.0.17763)/amd64").os_version.as_deref(),
        Some("10.0.17763")
    );
    // A lone OS takes this machine's architecture.
    let host = Platform::host();
    let linux = p("linux");
    assert_eq!(linux.architecture, host.architecture);
    assert_eq!(linux.variant, host.variant);

    for bad in [
        "",
        "linux/",
        "/amd64",
        "linux/amd64/v8/extra",
        "linux/am d64",
        "linux/amd64$",
        "nonsense",
        "windows(10/amd64",
        "windows()/amd64",
    ] {
        let err = Platform::parse(bad).unwrap_err();
        assert!(
            matches!(err, ManifestError::InvalidPlatform { .. }),
            "{bad:?}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn host_platform_uses_go_names() {
    let h = Platform::host();
    assert_eq!(h.os, "linux");
    let want = match std::env::consts::ARCH {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64/v8",
        "arm" => "linux/arm/v7",
        _ => return,
    };
    assert_eq!(h.to_string(), want);
    assert!(h.matches(&p(want)));
    assert_eq!(h.to_string().parse::<Platform>().unwrap(), h);
}

#[test]
fn platform_matching_is_normalized() {
    let arm64_bare = Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        ..Platform::default()
    };
    assert!(arm64_bare.matches(&p("linux/arm64/v8")));
    assert!(p("linux/aarch64").matches(&arm64_bare));
    assert!(!arm64_bare.matches(&p("linux/arm64/v9")));
    let arm_bare = Platform {
        os: "linux".into(),
        architecture: "arm".into(),
        variant: Some(String::new()),
        ..Platform::default()
    };
    assert!(arm_bare.matches(&p("linux/arm/v7")));
    assert!(!arm_bare.matches(&p("linux/arm/v6")));
    assert!(!p("linux/amd64").matches(&p("linux/arm64")));
    assert!(!p("linux/amd64").matches(&p("windows/amd64")));
    assert!(p("linux/amd64").matches(&p("linux/amd64/v1")));
    assert_eq!(arm64_bare.normalized(), p("linux/arm64"));
}

fn entry(digest_s: &str, platform: Option<&str>) -> Descriptor {
    let mut d = Descriptor::new(media_types::OCI_MANIFEST, digest(digest_s), 100);
    d.platform = platform.map(|s| {
        let mut it = s.split('/');
        Platform {
            os: it.next().unwrap_or_default().to_string(),
            architecture: it.next().unwrap_or_default().to_string(),
            variant: it.next().map(str::to_string),
            ..Platform::default()
        }
    });
    d
}

fn index(entries: Vec<Descriptor>) -> ImageIndex {
    ImageIndex {
        schema_version: 2,
        media_type: Some(media_types::OCI_INDEX.into()),
        artifact_type: None,
        manifests: entries,
        subject: None,
        annotations: BTreeMap::new(),
    }
}

#[test]
fn select_platform_picks_the_right_manifest() {
    let mut attest = entry(D5, Some("unknown/unknown"));
    attest.annotations.insert(
        "vnd.docker.reference.type".into(),
        "attestation-manifest".into(),
    );
    let idx = index(vec![
        attest,
        entry(D1, Some("linux/amd64")),
        entry(D2, Some("linux/arm64")),
        entry(D3, Some("linux/arm/v7")),
        entry(D4, Some("linux/arm/v6")),
    ]);
    let pick = |want: &str| select_platform(&idx, &p(want)).unwrap().digest.to_string();
    assert_eq!(pick("linux/amd64"), D1);
    assert_eq!(pick("linux/x86_64"), D1);
    assert_eq!(pick("linux/arm64"), D2);
    assert_eq!(pick("linux/arm64/v8"), D2);
    assert_eq!(pick("linux/arm/v7"), D3);
    assert_eq!(pick("linux/arm"), D3);
    assert_eq!(pick("linux/arm/v6"), D4);
    // arm/v8 (32-bit on a v8 core) falls back to the best older variant.
    assert_eq!(pick("linux/arm/v8"), D3);
}

#[test]
fn select_platform_falls_back_like_containerd() {
    // arm/v7 runs v6 before v5; arm64 runs 32-bit arm; amd64 runs 386.
    let idx = index(vec![
        entry(D1, Some("linux/arm/v5")),
        entry(D2, Some("linux/arm/v6")),
        entry(D3, Some("linux/386")),
    ]);
    let pick = |want: &str| select_platform(&idx, &p(want)).unwrap().digest.to_string();
    assert_eq!(pick("linux/arm/v7"), D2);
    assert_eq!(pick("linux/arm64"), D2);
    assert_eq!(pick("linux/amd64"), D3);
    assert!(select_platform(&idx, &p("linux/arm/v5")).is_ok());
    // amd64 without a variant does not run amd64/v3 binaries.
    let idx = index(vec![entry(D1, Some("linux/amd64/v3"))]);
    assert!(select_platform(&idx, &p("linux/amd64")).is_err());
    assert!(select_platform(&idx, &p("linux/amd64/v3")).is_ok());
    // Exact matches win over fallbacks wherever they sit; the first of equals wins.
    let idx = index(vec![
        entry(D1, Some("linux/arm/v6")),
        entry(D2, Some("linux/arm/v7")),
        entry(D3, Some("linux/arm/v7")),
    ]);
    assert_eq!(
        select_platform(&idx, &p("linux/arm/v7")).unwrap().digest,
        digest(D2)
    );
    // Entries without a platform are the last resort.
    let idx = index(vec![entry(D1, None), entry(D2, Some("linux/arm64"))]);
    assert_eq!(
        select_platform(&idx, &p("linux/arm64")).unwrap().digest,
        digest(D2)
    );
    assert_eq!(
        select_platform(&idx, &p("linux/amd64")).unwrap().digest,
        digest(D1)
    );
}

#[test]
fn select_platform_error_lists_what_is_offered() {
    let mut attest = entry(D5, Some("unknown/unknown"));
    attest.annotations.insert(
        "vnd.docker.reference.type".into(),
        "attestation-manifest".into(),
    );
    let mut xml = entry(D4, Some("linux/s390x"));
    xml.media_type = "application/xml".into();
    let idx = index(vec![
        entry(D1, Some("linux/amd64")),
        attest,
        entry(D2, Some("linux/arm64/v8")),
        entry(D3, Some("linux/amd64")),
        xml,
    ]);
    let err = select_platform(&idx, &p("linux/s390x")).unwrap_err();
    let ManifestError::NoMatchingPlatform { want, available } = &err else {
        panic!("{err}")
    };
    assert_eq!(want, "linux/s390x");
    assert_eq!(
        available,
        &vec!["linux/amd64".to_string(), "linux/arm64/v8".to_string()]
    );
    let msg = err.to_string();
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/amd64, linux/arm64/v8"),
        "{msg}"
    );
    assert!(!msg.contains("unknown"), "{msg}");
    assert_eq!(err.category(), Category::NotFound);

    let empty = index(vec![]);
    let msg = select_platform(&empty, &p("linux/amd64"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no platforms"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Configs

#[test]
fn config_with_healthcheck_parses() {
    let body = format!(
        r#"{{
      "architecture": "arm64", "variant": "v8", "os": "linux",
      "created": "2024-01-02T03:04:05.123456789Z",
      "config": {{
        "User": "1000:1000",
        "ExposedPorts": {{"80/tcp": {{}}, "443/tcp": {{}}}},
        "Env": ["PATH=/usr/bin:/bin", "A=b=c"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": "nginx -g 'daemon off;'",
        "WorkingDir": "/srv",
        "Labels": {{"maintainer": "someone", "x": null}},
        "Volumes": {{"/data": {{}}}},
        "StopSignal": "SIGQUIT",
        "StopTimeout": 20,
        "Healthcheck": {{
          "Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
          "Interval": 30000000000, "Timeout": 5000000000, "StartPeriod": 10000000000,
          "StartInterval": 1000000000, "Retries": 3
        }},
        "ArgsEscaped": true,
        "OnBuild": null,
        "Shell": ["/bin/bash", "-c"],
        "Hostname": "ignored"
      }},
      "container_config": {{"Cmd": ["ignored"]}},
      "rootfs": {{"type": "layers", "diff_ids": ["{D1}", "{D2}"]}},
      "history": [{{"created_by": "ADD rootfs", "empty_layer": null}}, {{"empty_layer": true}}]
    }}"#
    );
    let c = parse_config(body.as_bytes()).unwrap();
    assert_eq!(c.platform().to_string(), "linux/arm64/v8");
    assert_eq!(c.created.as_deref(), Some("2024-01-02T03:04:05.123456789Z"));
    let cc = &c.config;
    assert_eq!(cc.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        cc.exposed_ports.iter().collect::<Vec<_>>(),
        vec!["443/tcp", "80/tcp"]
    );
    assert_eq!(cc.env, vec!["PATH=/usr/bin:/bin", "A=b=c"]);
    assert_eq!(
        cc.entrypoint.as_deref(),
        Some(&["/docker-entrypoint.sh".to_string()][..])
    );
    assert_eq!(cc.cmd, Some(vec!["nginx -g 'daemon off;'".to_string()]));
    assert_eq!(cc.working_dir.as_deref(), Some("/srv"));
    assert_eq!(
        cc.labels.get("maintainer").map(String::as_str),
        Some("someone")
    );
    assert_eq!(cc.labels.get("x").map(String::as_str), Some(""));
    assert!(cc.volumes.contains("/data"));
    assert_eq!(cc.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(cc.stop_timeout, Some(20));
    assert!(cc.args_escaped);
    assert!(cc.on_build.is_empty());
    assert_eq!(cc.shell, vec!["/bin/bash", "-c"]);
    let hc = cc.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test[0], "CMD-SHELL");
    assert!(!hc.is_disabled());
    assert_eq!(hc.interval(), Some(std::time::Duration::from_secs(30)));
    assert_eq!(hc.timeout(), Some(std::time::Duration::from_secs(5)));
    assert_eq!(hc.start_period(), Some(std::time::Duration::from_secs(10)));
    assert_eq!(hc.start_interval(), Some(std::time::Duration::from_secs(1)));
    assert_eq!(hc.retries(), Some(3));
    assert_eq!(c.rootfs.fs_type, "layers");
    assert_eq!(c.rootfs.diff_ids, vec![digest(D1), digest(D2)]);
    assert_eq!(c.history.len(), 2);
    assert!(!c.history[0].empty_layer && c.history[1].empty_layer);

    // Serialising keeps the Docker spelling, and the result is a valid OCI config.
    let out = serde_json::to_value(&c).unwrap();
    assert_eq!(out["config"]["Healthcheck"]["Retries"], 3);
    assert_eq!(
        out["config"]["ExposedPorts"]["80/tcp"],
        serde_json::json!({})
    );
    validate(Kind::Config, &serde_json::to_vec(&c).unwrap()).unwrap();
    assert_eq!(parse_config(&serde_json::to_vec(&c).unwrap()).unwrap(), c);
}

#[test]
fn config_nulls_and_disabled_healthcheck() {
    let body = format!(
        r#"{{"architecture":"amd64","os":"linux",
        "config":{{"Env":null,"Cmd":null,"Entrypoint":null,"Volumes":null,"ExposedPorts":null,
                   "Labels":null,"Healthcheck":{{"Test":["NONE"]}}}},
        "rootfs":{{"type":"layers","diff_ids":["{D1}"]}}}}"#
    );
    let c = parse_config(body.as_bytes()).unwrap();
    assert!(c.config.env.is_empty() && c.config.cmd.is_none() && c.config.entrypoint.is_none());
    let hc = c.config.healthcheck.as_ref().unwrap();
    assert!(hc.is_disabled());
    assert_eq!(hc.interval(), None);
    assert_eq!(hc.retries(), None);
    // Empty configs still parse; the caller decides what is missing.
    let c = parse_config(b"{}").unwrap();
    assert_eq!(c.rootfs.fs_type, "layers");
    assert!(matches!(
        parse_config(b"[]"),
        Err(ManifestError::Json { .. })
    ));
}

#[test]
fn config_must_describe_the_manifest_layers() {
    let m = parse_manifest(docker_manifest(true).as_bytes(), None).unwrap();
    let img = m.as_image().unwrap();
    let one = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{D1}"]}}}}"#
    );
    parse_config(one.as_bytes())
        .unwrap()
        .verify_layers(img)
        .unwrap();
    let two = one.replace(&format!("\"{D1}\""), &format!("\"{D1}\",\"{D2}\""));
    let err = parse_config(two.as_bytes())
        .unwrap()
        .verify_layers(img)
        .unwrap_err();
    assert!(err.to_string().contains("2 diff ids") && err.to_string().contains("1 layers"));
    let other = one.replace("\"layers\",", "\"tarball\",");
    assert!(parse_config(other.as_bytes())
        .unwrap()
        .verify_layers(img)
        .is_err());
}

// ---------------------------------------------------------------------------------------------
// validate(): rules beyond the sample vectors.

fn config_with(extra_config: &str) -> String {
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{{extra_config}}},
        "rootfs":{{"type":"layers","diff_ids":["{D1}"]}}}}"#
    )
}

#[test]
fn validate_config_rules() {
    let ok = |s: String| validate(Kind::Config, s.as_bytes());
    ok(config_with(r#""Env":["A=1","B="]"#)).unwrap();
    assert!(ok(config_with(r#""Env":[7353]"#)).is_err());
    assert!(ok(config_with(r#""Env":["=x"]"#)).is_err());
    assert!(ok(config_with(r#""Env":["A=1\n2"]"#)).is_err());
    assert!(ok(config_with(r#""Env":null"#)).is_err());
    assert!(ok(config_with(r#""Volumes":["/a"]"#)).is_err());
    ok(config_with(
        r#""Volumes":null,"Cmd":null,"Entrypoint":null,"Labels":null"#,
    ))
    .unwrap();
    assert!(ok(config_with(r#""ExposedPorts":null"#)).is_err());
    assert!(ok(config_with(r#""ExposedPorts":{"80/tcp":[]}"#)).is_err());
    assert!(ok(config_with(r#""Labels":{"a":1}"#)).is_err());
    assert!(ok(config_with(r#""ArgsEscaped":"yes""#)).is_err());
    // Docker extensions are not in the schema: anything goes for them.
    ok(config_with(
        r#""Healthcheck":{"Test":["NONE"]},"OnBuild":null"#,
    ))
    .unwrap();
    // Go matches field names case-insensitively, so "env" is type-checked as Env.
    assert!(ok(config_with(r#""env":[1]"#)).is_err());

    let created = |c: &str| {
        let body = config_with("").replacen('{', &format!("{{\"created\":\"{c}\","), 1);
        validate(Kind::Config, body.as_bytes())
    };
    created("2015-10-31T22:22:56.015925234Z").unwrap();
    created("2015-10-31T22:22:56-07:00").unwrap();
    assert!(created("2015-10-31 22:22:56Z").is_err());
    assert!(created("yesterday").is_err());
    // Go parses the raw literal: an escaped character is not part of a time.
    assert!(created("2015-10-31T22:22:56\\u002e5Z").is_err());
    assert!(created("2015-13-01T00:00:00Z").is_err());

    let missing_rootfs = r#"{"architecture":"amd64","os":"linux"}"#;
    assert!(validate(Kind::Config, missing_rootfs.as_bytes()).is_err());
    let bad_type = config_with("").replace("\"layers\"", "\"tarball\"");
    assert!(validate(Kind::Config, bad_type.as_bytes()).is_err());
}

#[test]
fn validate_manifest_and_index_rules() {
    let manifest = |layer_digest: &str, size: &str| {
        format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","size":{size},"digest":"{D1}"}},
            "layers":[{{"mediaType":"{}","size":1,"digest":"{layer_digest}"}}]}}"#,
            media_types::OCI_CONFIG,
            media_types::OCI_LAYER_GZIP
        )
    };
    validate(Kind::Manifest, manifest(D2, "1").as_bytes()).unwrap();
    // Inside manifests only the digest pattern applies (upstream never runs go-digest there)...
    validate(Kind::Manifest, manifest("sha256:abc", "1").as_bytes()).unwrap();
    // ...while a descriptor document's digest must be valid for a known algorithm.
    let desc =
        |d: &str| format!(r#"{{"mediaType":"application/octet-stream","size":0,"digest":"{d}"}}"#);
    assert!(validate(Kind::Descriptor, desc("sha256:abc").as_bytes()).is_err());
    assert!(validate(
        Kind::Descriptor,
        desc(&format!("sha512:{}", &D1[7..])).as_bytes()
    )
    .is_err());
    validate(Kind::Descriptor, desc("sha999:abc").as_bytes()).unwrap();
    // Go's strconv.ParseInt takes "-0"; numbers in unknown fields are never decoded.
    validate(Kind::Manifest, manifest(D2, "-0").as_bytes()).unwrap();
    let huge = manifest(D2, "1").replacen('{', "{\"x\":1e400,", 1);
    validate(Kind::Manifest, huge.as_bytes()).unwrap();
    for size in ["1.5", "2.0", "1e3", "-1", "9223372036854775808"] {
        assert!(
            validate(Kind::Manifest, manifest(D2, size).as_bytes()).is_err(),
            "{size}"
        );
    }
    let v = |body: String| validate(Kind::Manifest, body.as_bytes());
    assert!(v(manifest(D2, "1").replace("\"schemaVersion\":2", "\"schemaVersion\":1")).is_err());
    assert!(v(manifest(D2, "1").replace("\"schemaVersion\":2,", "")).is_err());
    assert!(v(manifest(D2, "1").replace(
        "{\"schemaVersion\"",
        "{\"annotations\":{\"a\":1},\"schemaVersion\""
    ))
    .is_err());
    assert!(v(manifest(D2, "1").replace(
        "{\"schemaVersion\"",
        "{\"annotations\":{\"\":null},\"schemaVersion\""
    ))
    .is_ok());
    assert!(v(format!("{} trailing", manifest(D2, "1"))).is_err());
    assert!(v("null".into()).is_err());

    let index = |entry: &str| format!(r#"{{"schemaVersion":2,"manifests":[{entry}]}}"#);
    let vi = |body: String| validate(Kind::Index, body.as_bytes());
    vi(index("")).unwrap();
    // The index schema types an entry's size as any int64, so negative sizes pass upstream.
    vi(index(&format!(
        r#"{{"mediaType":"a/b","size":-1,"digest":"{D1}"}}"#
    )))
    .unwrap();
    assert!(vi(index(&format!(
        r#"{{"mediaType":"a/b","size":1,"digest":"{D1}","platform":{{"architecture":"amd64","os":"linux","os.features":[1]}}}}"#
    )))
    .is_err());
    assert!(vi(index(&format!(
        r#"{{"mediaType":"a/b","size":1,"digest":"{D1}","urls":["https://ok.example/x","http://bad host/"]}}"#
    )))
    .is_err());
    assert!(vi(r#"{"schemaVersion":2}"#.into()).is_err());
}

#[test]
fn validate_layout_rules() {
    let v = |s: &str| validate(Kind::Layout, s.as_bytes());
    v(r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    v(r#"{"imageLayoutVersion":"1.0.0","extra":1}"#).unwrap();
    assert!(v(r#"{"imageLayoutVersion":"1.0.1"}"#).is_err());
    assert!(v(r#"{"imageLayoutVersion":1}"#).is_err());
    assert!(v(r#"{}"#).is_err());
    assert!(v("").is_err());
}

#[test]
fn kinds_map_to_media_types() {
    for k in [
        Kind::Manifest,
        Kind::Index,
        Kind::Config,
        Kind::Descriptor,
        Kind::Layout,
    ] {
        assert_eq!(Kind::from_media_type(k.media_type()), Some(k));
    }
    assert_eq!(
        Kind::from_media_type(media_types::DOCKER_MANIFEST_LIST),
        Some(Kind::Index)
    );
    assert_eq!(Kind::from_media_type("text/plain"), None);
    let err = validate(Kind::Descriptor, b"{}").unwrap_err();
    assert!(err.to_string().starts_with("invalid descriptor: "), "{err}");
}
