//! Validation equivalent to image-spec's `schema` package: a document is valid when it passes
//! both the JSON schemas (schema/*.json, checked the way gojsonschema does) and the Go-side
//! checks image-spec runs first (decoding into the specs-go types with encoding/json, go-digest
//! validation of a descriptor's digest, the `KEY=value` shape of config Env entries).
//!
//! Documents are read into [`J`], which keeps duplicate keys and integer-vs-float literals:
//! gojsonschema sees the last of duplicate keys, while Go's decoder type-checks every one and
//! matches struct fields case-insensitively.

use std::fmt;

use super::json::{self, number_is_integral, J};
use super::{media_types, ManifestError, MAX_CONFIG_SIZE};
use crate::image::digest::{Digest, DigestError};

/// Which schema to validate against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Manifest,
    Index,
    Config,
    Descriptor,
    /// The `oci-layout` file of an image layout.
    Layout,
}

impl Kind {
    /// The kind for an OCI media type (as image-spec's validators are named), accepting the
    /// Docker equivalents too.
    pub fn from_media_type(media_type: &str) -> Option<Kind> {
        use media_types::*;
        match media_type {
            OCI_MANIFEST | DOCKER_MANIFEST_V2 => Some(Kind::Manifest),
            OCI_INDEX | DOCKER_MANIFEST_LIST => Some(Kind::Index),
            OCI_CONFIG | DOCKER_CONFIG => Some(Kind::Config),
            OCI_DESCRIPTOR => Some(Kind::Descriptor),
            OCI_LAYOUT_HEADER => Some(Kind::Layout),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Kind::Manifest => media_types::OCI_MANIFEST,
            Kind::Index => media_types::OCI_INDEX,
            Kind::Config => media_types::OCI_CONFIG,
            Kind::Descriptor => media_types::OCI_DESCRIPTOR,
            Kind::Layout => media_types::OCI_LAYOUT_HEADER,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Manifest => "image manifest",
            Kind::Index => "image index",
            Kind::Config => "image config",
            Kind::Descriptor => "descriptor",
            Kind::Layout => "oci-layout header",
        })
    }
}

/// Validates `bytes` as a `kind` document the way image-spec's schema validator does.
pub fn validate(kind: Kind, bytes: &[u8]) -> Result<(), ManifestError> {
    if bytes.len() > MAX_CONFIG_SIZE {
        return Err(ManifestError::TooLarge {
            what: "document",
            size: bytes.len(),
            limit: MAX_CONFIG_SIZE,
        });
    }
    let fail = |f: Fail| ManifestError::Invalid {
        kind,
        path: if f.path.is_empty() {
            "/".into()
        } else {
            f.path
        },
        reason: f.reason,
    };
    // Only gojsonschema reads the layout header, and its decoder stops after the first value;
    // the other kinds also go through json.Unmarshal, which wants nothing after it.
    let doc = json::parse(bytes, kind == Kind::Layout)
        .map_err(|e| fail(Fail::new("", format!("malformed json: {e}"))))?;
    match kind {
        Kind::Manifest => {
            go_check(&doc, &GO_MANIFEST, "").map_err(fail)?;
            schema_manifest(&doc).map_err(fail)
        }
        Kind::Index => {
            go_check(&doc, &GO_INDEX, "").map_err(fail)?;
            schema_index(&doc).map_err(fail)
        }
        Kind::Config => {
            go_check(&doc, &GO_IMAGE, "").map_err(fail)?;
            go_config_env(&doc).map_err(fail)?;
            schema_config(&doc).map_err(fail)
        }
        Kind::Descriptor => {
            go_check(&doc, &GO_DESCRIPTOR, "").map_err(fail)?;
            go_descriptor_digest(&doc).map_err(fail)?;
            schema_descriptor(&doc, "").map_err(fail)
        }
        Kind::Layout => schema_layout(&doc).map_err(fail),
    }
}

struct Fail {
    path: String,
    reason: String,
}

impl Fail {
    fn new(path: &str, reason: impl Into<String>) -> Fail {
        Fail {
            path: path.to_string(),
            reason: reason.into(),
        }
    }
}

type R = Result<(), Fail>;

fn sub(path: &str, key: &str) -> String {
    format!("{path}/{key}")
}

// ---------------------------------------------------------------------------------------------
// Go side: encoding/json into the specs-go types, plus schema.Validator's extra checks.

/// The shape of a specs-go type, as far as encoding/json cares.
enum Go {
    Str,
    /// int / int64: only integer literals in range.
    Int,
    Bool,
    /// []byte: standard padded base64.
    Bytes,
    /// *time.Time: strict RFC 3339.
    Time,
    Slice(&'static Go),
    Map(&'static Go),
    Struct(&'static [(&'static str, &'static Go)]),
}

const GO_STRINGS: Go = Go::Slice(&Go::Str);
const GO_STRING_MAP: Go = Go::Map(&Go::Str);
const GO_EMPTY_STRUCT: Go = Go::Struct(&[]);

const GO_PLATFORM: Go = Go::Struct(&[
    ("architecture", &Go::Str),
    ("os", &Go::Str),
    ("os.version", &Go::Str),
    ("os.features", &GO_STRINGS),
    ("variant", &Go::Str),
]);

const GO_DESCRIPTOR: Go = Go::Struct(&[
    ("mediaType", &Go::Str),
    ("digest", &Go::Str),
    ("size", &Go::Int),
    ("urls", &GO_STRINGS),
    ("annotations", &GO_STRING_MAP),
    ("data", &Go::Bytes),
    ("platform", &GO_PLATFORM),
    ("artifactType", &Go::Str),
]);

const GO_MANIFEST: Go = Go::Struct(&[
    ("schemaVersion", &Go::Int),
    ("mediaType", &Go::Str),
    ("artifactType", &Go::Str),
    ("config", &GO_DESCRIPTOR),
    ("layers", &Go::Slice(&GO_DESCRIPTOR)),
    ("subject", &GO_DESCRIPTOR),
    ("annotations", &GO_STRING_MAP),
]);

const GO_INDEX: Go = Go::Struct(&[
    ("schemaVersion", &Go::Int),
    ("mediaType", &Go::Str),
    ("artifactType", &Go::Str),
    ("manifests", &Go::Slice(&GO_DESCRIPTOR)),
    ("subject", &GO_DESCRIPTOR),
    ("annotations", &GO_STRING_MAP),
]);

const GO_IMAGE_CONFIG: Go = Go::Struct(&[
    ("User", &Go::Str),
    ("ExposedPorts", &Go::Map(&GO_EMPTY_STRUCT)),
    ("Env", &GO_STRINGS),
    ("Entrypoint", &GO_STRINGS),
    ("Cmd", &GO_STRINGS),
    ("Volumes", &Go::Map(&GO_EMPTY_STRUCT)),
    ("WorkingDir", &Go::Str),
    ("Labels", &GO_STRING_MAP),
    ("StopSignal", &Go::Str),
    ("ArgsEscaped", &Go::Bool),
]);

const GO_IMAGE: Go = Go::Struct(&[
    ("created", &Go::Time),
    ("author", &Go::Str),
    ("architecture", &Go::Str),
    ("os", &Go::Str),
    ("os.version", &Go::Str),
    ("os.features", &GO_STRINGS),
    ("variant", &Go::Str),
    ("config", &GO_IMAGE_CONFIG),
    (
        "rootfs",
        &Go::Struct(&[("type", &Go::Str), ("diff_ids", &GO_STRINGS)]),
    ),
    (
        "history",
        &Go::Slice(&Go::Struct(&[
            ("created", &Go::Time),
            ("created_by", &Go::Str),
            ("author", &Go::Str),
            ("comment", &Go::Str),
            ("empty_layer", &Go::Bool),
        ])),
    ),
]);

/// encoding/json's case folding of a key byte against an ASCII field-name byte, including
/// the two non-ASCII runes that fold to ASCII letters (KELVIN SIGN, LATIN SMALL LONG S).
fn go_fold_eq(key: &str, field: &str) -> bool {
    let mut k = key.chars();
    for f in field.chars() {
        let Some(c) = k.next() else { return false };
        let same = c.eq_ignore_ascii_case(&f)
            || (c == '\u{212A}' && f.eq_ignore_ascii_case(&'k'))
            || (c == '\u{017F}' && f.eq_ignore_ascii_case(&'s'));
        if !same {
            return false;
        }
    }
    k.next().is_none()
}

/// The struct field a JSON key decodes into: exact name first, then case-insensitive.
fn go_field<'a>(fields: &'a [(&'static str, &'static Go)], key: &str) -> Option<&'a Go> {
    fields
        .iter()
        .find(|(name, _)| *name == key)
        .or_else(|| fields.iter().find(|(name, _)| go_fold_eq(key, name)))
        .map(|(_, t)| *t)
}

fn go_check(v: &J, t: &Go, path: &str) -> R {
    let mismatch =
        |want: &str| Fail::new(path, format!("cannot decode {} into {want}", v.type_name()));
    // null decodes into anything as "leave unset".
    if matches!(v, J::Null) {
        return Ok(());
    }
    match (t, v) {
        (Go::Str, J::Str(_)) => Ok(()),
        (Go::Str, _) => Err(mismatch("a string")),
        // strconv.ParseInt of the literal: no fraction, no exponent, in range.
        (Go::Int, J::Num(n)) if n.parse::<i64>().is_ok() => Ok(()),
        (Go::Int, _) => Err(mismatch("a 64-bit integer")),
        (Go::Bool, J::Bool) => Ok(()),
        (Go::Bool, _) => Err(mismatch("a boolean")),
        (Go::Bytes, J::Str(s)) if go_base64_ok(s) => Ok(()),
        (Go::Bytes, J::Str(_)) => Err(Fail::new(path, "not valid padded base64")),
        (Go::Bytes, _) => Err(mismatch("base64 bytes")),
        (Go::Time, J::Str(s)) if !s.escaped && go_rfc3339_ok(s) => Ok(()),
        (Go::Time, J::Str(s)) => Err(Fail::new(path, format!("{s:?} is not an RFC 3339 time"))),
        (Go::Time, _) => Err(mismatch("a time string")),
        (Go::Slice(e), J::Arr(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| go_check(x, e, &sub(path, &i.to_string()))),
        (Go::Slice(_), _) => Err(mismatch("an array")),
        (Go::Map(e), J::Obj(entries)) => entries
            .iter()
            .try_for_each(|(k, x)| go_check(x, e, &sub(path, k))),
        (Go::Map(_), _) => Err(mismatch("an object")),
        (Go::Struct(fields), J::Obj(entries)) => {
            entries
                .iter()
                .try_for_each(|(k, x)| match go_field(fields, k) {
                    Some(ft) => go_check(x, ft, &sub(path, k)),
                    None => Ok(()),
                })
        }
        (Go::Struct(_), _) => Err(mismatch("an object")),
    }
}

/// Entries of `obj` that decode into Go field `field` (declared in `fields`), in order.
fn go_entries<'a>(
    obj: &'a J,
    fields: &'static [(&'static str, &'static Go)],
    field: &'static str,
) -> impl Iterator<Item = &'a J> {
    let entries: &[(String, J)] = match obj {
        J::Obj(e) => e,
        _ => &[],
    };
    entries.iter().filter_map(move |(k, v)| {
        let exact = fields.iter().any(|(n, _)| *n == k.as_str());
        let hit = if exact {
            k == field
        } else {
            go_fold_eq(k, field)
        };
        hit.then_some(v)
    })
}

fn struct_fields(t: &'static Go) -> &'static [(&'static str, &'static Go)] {
    match t {
        Go::Struct(f) => f,
        _ => &[],
    }
}

/// schema.Validator checks the decoded descriptor's digest with go-digest, only tolerating
/// algorithms it does not know.
fn go_descriptor_digest(doc: &J) -> R {
    // The decoded value: the last non-null entry (null leaves the field as it was).
    let mut digest = String::new();
    for v in go_entries(doc, struct_fields(&GO_DESCRIPTOR), "digest") {
        if let J::Str(s) = v {
            digest = s.text.clone();
        }
    }
    match Digest::parse(&digest) {
        Ok(_) | Err(DigestError::Unsupported) => Ok(()),
        Err(e) => Err(Fail::new("/digest", format!("digest {digest:?}: {e}"))),
    }
}

/// schema.Validator requires every decoded config Env entry to match `^[^=]+=.*$`.
fn go_config_env(doc: &J) -> R {
    let mut env: Vec<String> = Vec::new();
    // Each `config` object decodes into the same struct; each `Env` array replaces the slice.
    for cfg in go_entries(doc, struct_fields(&GO_IMAGE), "config") {
        for e in go_entries(cfg, struct_fields(&GO_IMAGE_CONFIG), "Env") {
            if let J::Arr(items) = e {
                env = items
                    .iter()
                    .map(|x| match x {
                        J::Str(s) => s.text.clone(),
                        _ => String::new(),
                    })
                    .collect();
            }
        }
    }
    for (i, e) in env.iter().enumerate() {
        let ok = match e.find('=') {
            Some(eq) => eq > 0 && !e[eq + 1..].contains('\n'),
            None => false,
        };
        if !ok {
            return Err(Fail::new(
                &format!("/config/Env/{i}"),
                format!("{e:?} is not KEY=value"),
            ));
        }
    }
    Ok(())
}

/// Go's base64.StdEncoding as encoding/json uses it: padding required, CR and LF ignored,
/// non-zero trailing bits tolerated.
fn go_base64_ok(s: &str) -> bool {
    let v: Vec<u8> = s.bytes().filter(|b| *b != b'\r' && *b != b'\n').collect();
    let n = v.len();
    if n % 4 != 0 {
        return false;
    }
    v.iter().enumerate().all(|(i, &c)| {
        if c == b'=' {
            // Only in the last two places of the final quantum, and "x=x" is no padding.
            i + 2 >= n && i % 4 >= 2 && (i == n - 1 || v[n - 1] == b'=')
        } else {
            c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
        }
    })
}

/// Go's strict RFC 3339 parsing of time.Time in JSON (gojsonschema's date-time format
/// accepts a superset): `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` with ranges checked.
fn go_rfc3339_ok(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(min), Some(sec)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day < 1 || day > days || hour > 23 || min > 59 || sec > 59 {
        return false;
    }
    let mut rest = &b[19..];
    if rest.len() >= 2 && rest[0] == b'.' && rest[1].is_ascii_digit() {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        rest = &rest[1 + digits..];
    }
    match rest {
        [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2] if *sign == b'+' || *sign == b'-' => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            };
            matches!((two(*h1, *h2), two(*m1, *m2)), (Some(h), Some(m)) if h < 24 && m < 60)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Schema side: image-spec's schema/*.json as gojsonschema evaluates them (draft 4).

fn s_object<'a>(v: &'a J, path: &str) -> Result<&'a [(String, J)], Fail> {
    match v {
        J::Obj(e) => Ok(e),
        _ => Err(Fail::new(
            path,
            format!("expected an object, got {}", v.type_name()),
        )),
    }
}

/// gojsonschema reads objects into Go maps: the last duplicate wins.
fn s_get<'a>(entries: &'a [(String, J)], key: &str) -> Option<&'a J> {
    entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn s_required(entries: &[(String, J)], keys: &[&str], path: &str) -> R {
    for k in keys {
        if s_get(entries, k).is_none() {
            return Err(Fail::new(path, format!("{k:?} is required")));
        }
    }
    Ok(())
}

fn s_string<'a>(v: &'a J, path: &str) -> Result<&'a str, Fail> {
    match v {
        J::Str(s) => Ok(s),
        _ => Err(Fail::new(
            path,
            format!("expected a string, got {}", v.type_name()),
        )),
    }
}

fn s_opt(entries: &[(String, J)], key: &str, path: &str, check: impl Fn(&J, &str) -> R) -> R {
    match s_get(entries, key) {
        Some(v) => check(v, &sub(path, key)),
        None => Ok(()),
    }
}

fn s_string_prop(v: &J, path: &str) -> R {
    s_string(v, path).map(|_| ())
}

fn s_bool_prop(v: &J, path: &str) -> R {
    match v {
        J::Bool => Ok(()),
        _ => Err(Fail::new(
            path,
            format!("expected a boolean, got {}", v.type_name()),
        )),
    }
}

fn s_string_array(v: &J, path: &str) -> R {
    match v {
        J::Arr(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| s_string_prop(x, &sub(path, &i.to_string()))),
        _ => Err(Fail::new(
            path,
            format!("expected an array, got {}", v.type_name()),
        )),
    }
}

/// JSON schema "integer" (gojsonschema also takes 2.0 and 1e3) within [min, max].
fn s_integer(v: &J, path: &str, min: i128, max: i128) -> R {
    let J::Num(lit) = v else {
        return Err(Fail::new(
            path,
            format!("expected an integer, got {}", v.type_name()),
        ));
    };
    if !number_is_integral(lit) {
        return Err(Fail::new(path, format!("expected an integer, got {lit}")));
    }
    let in_range = match lit.parse::<i128>() {
        Ok(n) => (min..=max).contains(&n),
        Err(_) => lit
            .parse::<f64>()
            .is_ok_and(|f| f >= min as f64 && f <= max as f64),
    };
    if !in_range {
        return Err(Fail::new(path, format!("{lit} is outside [{min}, {max}]")));
    }
    Ok(())
}

/// The schemas' int64 bound, written 9223372036854776000 (gojsonschema compares exactly).
const SCHEMA_INT64_MAX: i128 = 9_223_372_036_854_776_000;

/// defs-descriptor.json#/definitions/mediaType:
/// `^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`
fn media_type_pattern_ok(s: &str) -> bool {
    fn part(p: &str) -> bool {
        let b = p.as_bytes();
        !b.is_empty()
            && b.len() <= 127
            && b[0].is_ascii_alphanumeric()
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(c))
    }
    s.split_once('/').is_some_and(|(t, st)| part(t) && part(st))
}

fn s_media_type(v: &J, path: &str) -> R {
    let s = s_string(v, path)?;
    if media_type_pattern_ok(s) {
        Ok(())
    } else {
        Err(Fail::new(
            path,
            format!("{s:?} is not a valid media type (type/subtype)"),
        ))
    }
}

/// defs-descriptor.json#/definitions/digest: `^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`
fn digest_pattern_ok(s: &str) -> bool {
    let Some((alg, enc)) = s.split_once(':') else {
        return false;
    };
    alg.split(['+', '.', '_', '-']).all(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }) && !enc.is_empty()
        && enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-')
}

fn s_digest(v: &J, path: &str) -> R {
    let s = s_string(v, path)?;
    if digest_pattern_ok(s) {
        Ok(())
    } else {
        Err(Fail::new(
            path,
            format!("{s:?} is not a valid digest (algorithm:encoded)"),
        ))
    }
}

fn s_urls(v: &J, path: &str) -> R {
    let J::Arr(items) = v else {
        return Err(Fail::new(
            path,
            format!("expected an array, got {}", v.type_name()),
        ));
    };
    for (i, x) in items.iter().enumerate() {
        let p = sub(path, &i.to_string());
        let s = s_string(x, &p)?;
        if !go_uri_ok(s) {
            return Err(Fail::new(&p, format!("{s:?} is not a uri with a scheme")));
        }
    }
    Ok(())
}

/// defs.json mapStringString / mapStringObject: an object whose values under keys matching
/// `.{1,}` (at least one character other than a newline) have the given type.
fn s_map(v: &J, path: &str, object_values: bool) -> R {
    for (k, x) in s_object(v, path)? {
        if !k.chars().any(|c| c != '\n') {
            continue;
        }
        let p = sub(path, k);
        if object_values {
            s_object(x, &p)?;
        } else {
            s_string(x, &p)?;
        }
    }
    Ok(())
}

fn s_string_map(v: &J, path: &str) -> R {
    s_map(v, path, false)
}

fn s_object_map(v: &J, path: &str) -> R {
    s_map(v, path, true)
}

fn s_nullable(v: &J, path: &str, check: impl Fn(&J, &str) -> R) -> R {
    match v {
        J::Null => Ok(()),
        _ => check(v, path),
    }
}

/// content-descriptor.json
fn schema_descriptor(v: &J, path: &str) -> R {
    let e = s_object(v, path)?;
    s_opt(e, "mediaType", path, s_media_type)?;
    s_opt(e, "size", path, |v, p| s_integer(v, p, 0, SCHEMA_INT64_MAX))?;
    s_opt(e, "digest", path, s_digest)?;
    s_opt(e, "urls", path, s_urls)?;
    s_opt(e, "data", path, s_string_prop)?;
    s_opt(e, "artifactType", path, s_media_type)?;
    s_opt(e, "annotations", path, s_string_map)?;
    s_required(e, &["mediaType", "size", "digest"], path)
}

fn s_schema_version(v: &J, path: &str) -> R {
    s_integer(v, path, 2, 2)
}

/// image-manifest-schema.json
fn schema_manifest(v: &J) -> R {
    let e = s_object(v, "")?;
    s_opt(e, "schemaVersion", "", s_schema_version)?;
    s_opt(e, "mediaType", "", s_media_type)?;
    s_opt(e, "artifactType", "", s_media_type)?;
    s_opt(e, "config", "", schema_descriptor)?;
    s_opt(e, "subject", "", schema_descriptor)?;
    s_opt(e, "layers", "", |v, p| match v {
        J::Arr(items) if items.is_empty() => Err(Fail::new(p, "at least one layer is required")),
        J::Arr(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| schema_descriptor(x, &sub(p, &i.to_string()))),
        _ => Err(Fail::new(
            p,
            format!("expected an array, got {}", v.type_name()),
        )),
    })?;
    s_opt(e, "annotations", "", s_string_map)?;
    s_required(e, &["schemaVersion", "config", "layers"], "")
}

/// The platform object of an index entry.
fn schema_platform(v: &J, path: &str) -> R {
    let e = s_object(v, path)?;
    s_opt(e, "architecture", path, s_string_prop)?;
    s_opt(e, "os", path, s_string_prop)?;
    s_opt(e, "os.version", path, s_string_prop)?;
    s_opt(e, "os.features", path, s_string_array)?;
    s_opt(e, "variant", path, s_string_prop)?;
    s_required(e, &["architecture", "os"], path)
}

/// image-index-schema.json's manifestDescriptor (size is any int64 there).
fn schema_manifest_descriptor(v: &J, path: &str) -> R {
    let e = s_object(v, path)?;
    s_opt(e, "mediaType", path, s_media_type)?;
    s_opt(e, "size", path, |v, p| {
        s_integer(v, p, -SCHEMA_INT64_MAX, SCHEMA_INT64_MAX)
    })?;
    s_opt(e, "digest", path, s_digest)?;
    s_opt(e, "urls", path, s_urls)?;
    s_opt(e, "platform", path, schema_platform)?;
    s_opt(e, "annotations", path, s_string_map)?;
    s_required(e, &["mediaType", "size", "digest"], path)
}

/// image-index-schema.json
fn schema_index(v: &J) -> R {
    let e = s_object(v, "")?;
    s_opt(e, "schemaVersion", "", s_schema_version)?;
    s_opt(e, "mediaType", "", s_media_type)?;
    s_opt(e, "artifactType", "", s_media_type)?;
    s_opt(e, "subject", "", schema_descriptor)?;
    s_opt(e, "manifests", "", |v, p| match v {
        J::Arr(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| schema_manifest_descriptor(x, &sub(p, &i.to_string()))),
        _ => Err(Fail::new(
            p,
            format!("expected an array, got {}", v.type_name()),
        )),
    })?;
    s_opt(e, "annotations", "", s_string_map)?;
    s_required(e, &["schemaVersion", "manifests"], "")
}

/// config-schema.json. The date-time format of `created` is enforced by the Go side, whose
/// strict RFC 3339 is narrower than gojsonschema's.
fn schema_config(v: &J) -> R {
    let e = s_object(v, "")?;
    for k in [
        "created",
        "author",
        "architecture",
        "variant",
        "os",
        "os.version",
    ] {
        s_opt(e, k, "", s_string_prop)?;
    }
    s_opt(e, "os.features", "", s_string_array)?;
    s_opt(e, "config", "", |v, p| {
        let c = s_object(v, p)?;
        for k in ["User", "WorkingDir", "StopSignal"] {
            s_opt(c, k, p, s_string_prop)?;
        }
        s_opt(c, "ExposedPorts", p, s_object_map)?;
        s_opt(c, "Env", p, s_string_array)?;
        s_opt(c, "Entrypoint", p, |v, p| s_nullable(v, p, s_string_array))?;
        s_opt(c, "Cmd", p, |v, p| s_nullable(v, p, s_string_array))?;
        s_opt(c, "Volumes", p, |v, p| s_nullable(v, p, s_object_map))?;
        s_opt(c, "Labels", p, |v, p| s_nullable(v, p, s_string_map))?;
        s_opt(c, "ArgsEscaped", p, s_bool_prop)
    })?;
    s_opt(e, "rootfs", "", |v, p| {
        let r = s_object(v, p)?;
        s_opt(r, "diff_ids", p, s_string_array)?;
        s_opt(r, "type", p, |v, p| {
            if s_string(v, p)? == "layers" {
                Ok(())
            } else {
                Err(Fail::new(p, "rootfs type must be \"layers\""))
            }
        })?;
        s_required(r, &["diff_ids", "type"], p)
    })?;
    s_opt(e, "history", "", |v, p| {
        let J::Arr(items) = v else {
            return Err(Fail::new(
                p,
                format!("expected an array, got {}", v.type_name()),
            ));
        };
        for (i, x) in items.iter().enumerate() {
            let hp = sub(p, &i.to_string());
            let h = s_object(x, &hp)?;
            for k in ["created", "author", "created_by", "comment"] {
                s_opt(h, k, &hp, s_string_prop)?;
            }
            s_opt(h, "empty_layer", &hp, s_bool_prop)?;
        }
        Ok(())
    })?;
    s_required(e, &["architecture", "os", "rootfs"], "")
}

/// image-layout-schema.json
fn schema_layout(v: &J) -> R {
    let e = s_object(v, "")?;
    s_opt(e, "imageLayoutVersion", "", |v, p| {
        if s_string(v, p)? == "1.0.0" {
            Ok(())
        } else {
            Err(Fail::new(p, "imageLayoutVersion must be \"1.0.0\""))
        }
    })?;
    s_required(e, &["imageLayoutVersion"], "")
}

// ---------------------------------------------------------------------------------------------
// gojsonschema's "uri" format: Go's url.Parse succeeds, the scheme is not empty, and there is
// no backslash.

fn go_uri_ok(s: &str) -> bool {
    if s.contains('\\') || s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return false;
    }
    let (rest, fragment) = match s.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (s, None),
    };
    if fragment.is_some_and(|f| !percent_escapes_ok(f)) {
        return false;
    }
    // Scheme: a letter, then letters, digits, '+', '-', '.', up to ':'.
    let Some(colon) = rest.find(':') else {
        return false;
    };
    let scheme = &rest[..colon];
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
    if !scheme_ok {
        return false;
    }
    let rest = &rest[colon + 1..];
    // The query is kept raw and never validated.
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    if !rest.starts_with('/') {
        // Opaque ("mailto:x"): not unescaped either.
        return true;
    }
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let (authority, path) = match after.find('/') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            };
            if !authority_ok(authority) {
                return false;
            }
            path
        }
        None => rest,
    };
    percent_escapes_ok(path)
}

fn percent_escapes_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn authority_ok(authority: &str) -> bool {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if let Some(u) = userinfo {
        let chars_ok = u
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&b));
        if !chars_ok || !percent_escapes_ok(u) {
            return false;
        }
    }
    host_ok(host)
}

fn valid_optional_port(p: &str) -> bool {
    match p.strip_prefix(':') {
        None => p.is_empty(),
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Go's parseHost plus unescape(host, encodeHost).
fn host_ok(host: &str) -> bool {
    let name = if host.starts_with('[') {
        let Some(close) = host.rfind(']') else {
            return false;
        };
        if !valid_optional_port(&host[close + 1..]) {
            return false;
        }
        &host[..=close]
    } else if let Some(i) = host.rfind(':') {
        if !valid_optional_port(&host[i..]) {
            return false;
        }
        &host[..i]
    } else {
        host
    };
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |j: usize| b.get(j).copied().filter(u8::is_ascii_hexdigit);
            let (Some(h1), Some(_)) = (hex(i + 1), hex(i + 2)) else {
                return false;
            };
            // Escapes of bytes below 0x80 are only allowed as %25 (Go: "invalid URL escape").
            if (h1 as char).to_digit(16).unwrap_or(0) < 8 && &b[i..i + 3] != b"%25" {
                return false;
            }
            i += 3;
            continue;
        }
        let allowed =
            c >= 0x80 || c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c);
        if !allowed {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_like_go() {
        assert!(go_rfc3339_ok("2015-10-31T22:22:56.015925234Z"));
        assert!(go_rfc3339_ok("2016-02-29T00:00:00+23:59"));
        assert!(!go_rfc3339_ok("2015-02-29T00:00:00Z"));
        assert!(!go_rfc3339_ok("2015-10-31t22:22:56Z"));
        assert!(!go_rfc3339_ok("2015-10-31T22:22:56z"));
        assert!(!go_rfc3339_ok("2015-10-31T24:00:00Z"));
        assert!(!go_rfc3339_ok("2015-10-31T22:22:56,5Z"));
        assert!(!go_rfc3339_ok("2015-10-31T22:22:56+24:00"));
        assert!(!go_rfc3339_ok("2015-10-31"));
    }

    #[test]
    fn base64_like_go() {
        assert!(go_base64_ok(""));
        assert!(go_base64_ok("e30="));
        assert!(go_base64_ok("YQ=="));
        assert!(go_base64_ok("YQ=\n="));
        assert!(!go_base64_ok("YQ"));
        assert!(!go_base64_ok("YQ=x"));
        assert!(!go_base64_ok("Y==="));
        assert!(!go_base64_ok("YQ==YQ=="));
        assert!(!go_base64_ok("e3-="));
    }

    #[test]
    fn uri_like_gojsonschema() {
        for ok in [
            "https://example.com/foo",
            "http://user:pw@host:8080/p?q=%zz#f",
            "mailto:someone@example.com",
            "s3://bucket/key%20x",
            "http://[::1]:5000/v2/",
        ] {
            assert!(go_uri_ok(ok), "{ok}");
        }
        for bad in [
            "value",
            "/relative/path",
            ":nope",
            "1http://x",
            "http://host:port/",
            "http://x/%zz",
            "http://x/a b\u{7f}",
            "http://x\\y",
            "http://ho st/",
        ] {
            assert!(!go_uri_ok(bad), "{bad}");
        }
    }

    #[test]
    fn go_field_folding() {
        assert!(go_fold_eq("MEDIATYPE", "mediaType"));
        assert!(go_fold_eq("\u{212A}ey", "key"));
        assert!(!go_fold_eq("mediaTyp", "mediaType"));
        let bad = br#"{"architecture":"amd64","os":"linux","OS":7,"rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert!(validate(Kind::Config, bad).is_err());
    }

    #[test]
    fn duplicate_keys_are_all_type_checked() {
        let d = br#"{"mediaType":"a/b","size":"1","size":1,
            "digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#;
        assert!(validate(Kind::Descriptor, d).is_err());
        let ok = br#"{"mediaType":"a/b","size":1,
            "digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#;
        assert!(validate(Kind::Descriptor, ok).is_ok());
    }
}
