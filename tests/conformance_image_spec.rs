//! External conformance data (../shared/conformance/oci/image-spec): manifest, index, config,
//! descriptor and layout documents with image-spec's schema validator verdicts.

use dockmaster::image::manifest::{self, Kind, Manifest};
use dockmaster::image::Digest;
use serde_json::Value;

#[path = "common/conformance.rs"]
mod conformance;
use conformance::conformance_dir;

fn load_vectors() -> Value {
    let p = conformance_dir().join("oci/image-spec/vectors.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not json: {e}", p.display()))
}

/// Every digest string in the document parses with our strict `Digest` (the algorithms we
/// can verify), so our own parsers must accept the document when the spec does.
fn digests_supported(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().all(|(k, x)| match (k.as_str(), x) {
            ("digest", Value::String(s)) => Digest::parse(s).is_ok(),
            ("diff_ids", Value::Array(ids)) => ids
                .iter()
                .all(|d| d.as_str().is_some_and(|s| Digest::parse(s).is_ok())),
            _ => digests_supported(x),
        }),
        Value::Array(a) => a.iter().all(digests_supported),
        _ => true,
    }
}

/// Checks one vector; returns a description of each disagreement.
fn check(v: &Value) -> Vec<String> {
    let id = v["id"].as_str().unwrap_or("?");
    let validate_as = v["validate_as"].as_str().unwrap_or("");
    let expect = v["expect"].as_str().unwrap_or("");
    let reason = v.get("reason").and_then(Value::as_str).unwrap_or("");
    // Upstream validates Docker documents after swapping in OCI media types.
    let json = v
        .get("json_converted")
        .or_else(|| v.get("json"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(kind) = Kind::from_media_type(validate_as) else {
        return vec![format!("{id}: unknown validate_as {validate_as:?}")];
    };
    let got = manifest::validate(kind, json.as_bytes());
    if std::env::var_os("DOCKMASTER_VERBOSE").is_some() {
        eprintln!("{id} [{expect}]: {got:?}");
    }
    let mut out = Vec::new();
    match (expect, &got) {
        ("valid", Ok(())) | ("invalid", Err(_)) => {}
        ("valid", Err(e)) => out.push(format!("{id}: want valid, got error: {e} [{reason}]")),
        ("invalid", Ok(())) => out.push(format!("{id}: want invalid ({reason}), got valid")),
        _ => out.push(format!("{id}: unknown expect {expect:?}")),
    }

    // Spec-valid documents must also go through the parsers the pull path uses, as long as
    // their digests use algorithms we support. The original (Docker) body is what a
    // registry would serve.
    if expect == "valid" {
        let original = v.get("json").and_then(Value::as_str).unwrap_or(json);
        let parsed: Value = serde_json::from_str(original).unwrap_or(Value::Null);
        if digests_supported(&parsed) {
            let res = match kind {
                Kind::Manifest | Kind::Index => manifest::parse_manifest(original.as_bytes(), None)
                    .map(|m| match (kind, m) {
                        (Kind::Manifest, Manifest::Index(_)) => {
                            out.push(format!("{id}: parse_manifest saw an index"))
                        }
                        (Kind::Index, Manifest::Image(_)) => {
                            out.push(format!("{id}: parse_manifest saw an image manifest"))
                        }
                        _ => {}
                    }),
                Kind::Config => manifest::parse_config(original.as_bytes()).map(|_| ()),
                _ => Ok(()),
            };
            if let Err(e) = res {
                out.push(format!(
                    "{id}: valid per spec but our parser refused it: {e}"
                ));
            }
        }
    }
    out
}

#[test]
fn image_spec_vectors() {
    let doc = load_vectors();
    let mut total = 0;
    let mut mismatches = Vec::new();
    for set in ["vectors", "spec_examples"] {
        let vectors = doc[set]
            .as_array()
            .unwrap_or_else(|| panic!("vectors.json has no {set:?} array"));
        for v in vectors {
            total += 1;
            mismatches.extend(check(v));
        }
    }
    assert!(total > 50, "only {total} vectors loaded");
    assert!(
        mismatches.is_empty(),
        "{} of {total} image-spec vectors disagree:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// Vectors with a `digest` carry the exact upstream bytes: the digest must verify.
#[test]
fn backwards_compatibility_digests() {
    let doc = load_vectors();
    let mut checked = 0;
    for v in doc["vectors"].as_array().expect("vectors array") {
        let (Some(d), Some(json)) = (v["digest"].as_str(), v["json"].as_str()) else {
            continue;
        };
        let digest = Digest::parse(d).expect("vector digest parses");
        assert!(
            digest.verifies(json.as_bytes()),
            "{}: body does not hash to {d}",
            v["id"]
        );
        checked += 1;
    }
    assert!(checked > 0, "no vector carried a digest");
}

/// Untrusted bytes never panic: every prefix and a spread of single-byte corruptions of every
/// vector go through `validate`, `parse_manifest` and `parse_config`. A prefix is only valid
/// when nothing but whitespace was cut.
#[test]
fn truncated_and_corrupted_documents_are_handled() {
    let doc = load_vectors();
    let mut checked = 0usize;
    for set in ["vectors", "spec_examples"] {
        for v in doc[set].as_array().expect("vector array") {
            let json = v
                .get("json_converted")
                .or_else(|| v.get("json"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(kind) = v["validate_as"].as_str().and_then(Kind::from_media_type) else {
                continue;
            };
            let bytes = json.as_bytes();
            for cut in 0..bytes.len() {
                let prefix = &bytes[..cut];
                let ok = manifest::validate(kind, prefix).is_ok();
                let only_space_cut = bytes[cut..].iter().all(u8::is_ascii_whitespace);
                assert!(
                    !ok || only_space_cut,
                    "{}: prefix of {cut} bytes validated",
                    v["id"]
                );
                let _ = manifest::parse_manifest(prefix, None);
                let _ = manifest::parse_config(prefix);
                checked += 1;
            }
            for (i, corrupt) in [b'"', b'{', b']', b'\\', 0xff, b'-', b'9']
                .iter()
                .enumerate()
            {
                let mut m = bytes.to_vec();
                if m.is_empty() {
                    continue;
                }
                let at = (i * 7919) % m.len();
                m[at] = *corrupt;
                let _ = manifest::validate(kind, &m);
                let _ = manifest::parse_manifest(&m, Some("application/json"));
                let _ = manifest::parse_config(&m);
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} documents tried");
}
