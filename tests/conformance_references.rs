//! External conformance data (../shared/conformance/oci): image references and digests,
//! with distribution/reference's and go-digest's answers.

use dockmaster::image::reference::Reference;
use dockmaster::image::Digest;
use serde_json::Value;

#[path = "common/conformance.rs"]
mod conformance;
use conformance::conformance_dir;

fn load(rel: &str) -> Value {
    let p = conformance_dir().join(rel);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn compare(
    kind: &str,
    input: &str,
    got: Result<Reference, String>,
    want: &Value,
) -> Option<String> {
    match (got, want.get("error")) {
        (Err(_), Some(_)) => None,
        (Err(e), None) => Some(format!("{kind} {input:?}: unexpected error {e}")),
        (Ok(r), Some(e)) => Some(format!("{kind} {input:?}: accepted as {r}, want error {e}")),
        (Ok(r), None) => {
            let got = serde_json::to_value(r.parts()).unwrap();
            for field in [
                "domain",
                "path",
                "name",
                "tag",
                "digest",
                "string",
                "familiar",
                "familiar_name",
                "with_default_tag",
            ] {
                if got.get(field) != want.get(field) {
                    return Some(format!(
                        "{kind} {input:?}: {field} = {:?}, want {:?}",
                        got.get(field),
                        want.get(field)
                    ));
                }
            }
            None
        }
    }
}

#[test]
fn references_match_distribution_reference() {
    let data = load("oci/references/cases.json");
    let cases = data["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for c in cases {
        let input = c["input"].as_str().unwrap();
        let strict = Reference::parse_strict(input).map_err(|e| e.to_string());
        failures.extend(compare("parse", input, strict, &c["parse"]));
        let norm = Reference::parse_normalized(input).map_err(|e| e.to_string());
        failures.extend(compare("normalized", input, norm, &c["normalized"]));
    }
    assert!(cases.len() > 100);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reference_errors_name_the_reason() {
    let data = load("oci/references/cases.json");
    let mut failures = Vec::new();
    for c in data["cases"].as_array().unwrap() {
        let input = c["input"].as_str().unwrap();
        if let (Some(want), Err(got)) = (
            c["normalized"]["error"].as_str(),
            Reference::parse_normalized(input),
        ) {
            if got.to_string() != want {
                failures.push(format!("{input:?}: {got} != {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn digests_match_go_digest() {
    let data = load("oci/digest/vectors.json");
    let mut failures = Vec::new();
    for c in data["parse"].as_array().unwrap() {
        let input = c["input"].as_str().unwrap();
        let valid = c["valid"].as_bool().unwrap();
        let got = Digest::parse(input);
        if got.is_ok() != valid {
            failures.push(format!("{input:?}: got {got:?}, want valid={valid}"));
            continue;
        }
        if let (Err(e), Some(want)) = (&got, c.get("error").and_then(|e| e.as_str())) {
            let want_variant = match want {
                "ErrDigestInvalidFormat" => "invalid checksum digest format",
                "ErrDigestInvalidLength" => "invalid checksum digest length",
                "ErrDigestUnsupported" => "unsupported digest algorithm",
                other => other,
            };
            if e.to_string() != want_variant {
                failures.push(format!("{input:?}: error {e}, want {want}"));
            }
        }
    }
    for v in data["verify"].as_array().unwrap() {
        let bytes = std::fs::read(
            conformance_dir()
                .join("oci/digest")
                .join(v["bytes_file"].as_str().unwrap()),
        )
        .unwrap();
        let want = Digest::parse(v["expected_digest"].as_str().unwrap()).unwrap();
        if !want.verifies(&bytes) {
            failures.push(format!("verify {}: digest mismatch", v["id"]));
        }
        if want.verifies(&[bytes.as_slice(), b" "].concat()) {
            failures.push(format!("verify {}: tampered bytes accepted", v["id"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
