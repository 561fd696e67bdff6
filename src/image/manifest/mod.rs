//! Image manifests, indexes and configs: media types, parsing, validation, platform selection.
//!
//! Our own serde types rather than oci-spec's: Docker's config extensions (Healthcheck, OnBuild,
//! Shell) must survive, and registries serve documents oci-spec's strict types refuse (null
//! lists, missing optional fields). Callers keep the raw bytes for digests and re-serving, so
//! these types never need to round-trip unknown fields.

mod config;
mod json;
mod platform;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::digest::Digest;
use crate::error::{Categorized, Category};

pub use config::{ContainerConfig, Healthcheck, History, ImageConfig, RootFs};
pub use platform::{select_platform, Platform};
pub use validate::{validate, Kind};

/// Largest manifest or index we read. distribution and containerd refuse bigger ones too.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Largest image config we parse. Long histories make configs big, but not this big.
pub const MAX_CONFIG_SIZE: usize = 8 << 20;

pub mod media_types {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_DESCRIPTOR: &str = "application/vnd.oci.descriptor.v1+json";
    pub const OCI_LAYOUT_HEADER: &str = "application/vnd.oci.layout.header.v1+json";
    /// The `{}` blob artifacts use as config.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_NONDISTRIBUTABLE_TAR: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const OCI_LAYER_NONDISTRIBUTABLE_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_LAYER_NONDISTRIBUTABLE_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

    pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    pub const DOCKER_FOREIGN_LAYER_TAR: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// Schema 1 (deprecated, refused).
    pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_MANIFEST_V1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// What we send in `Accept` when fetching a manifest: indexes first so a registry picks
    /// the multi-platform document when it has one.
    pub const ACCEPT: &[&str] = &[
        OCI_INDEX,
        DOCKER_MANIFEST_LIST,
        OCI_MANIFEST,
        DOCKER_MANIFEST_V2,
    ];

    /// Image manifest media types (OCI or Docker schema 2).
    pub fn is_image_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST_V2
    }
    /// Index media types (OCI index or Docker manifest list).
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }
    /// Docker schema 1 media types.
    pub fn is_schema1(media_type: &str) -> bool {
        media_type == DOCKER_MANIFEST_V1 || media_type == DOCKER_MANIFEST_V1_SIGNED
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a layer media type we can unpack, or `None` for anything else
/// (encrypted layers, artifacts, unknown types).
pub fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    use media_types::*;
    // Parameters (`;…`) do not change the format.
    match media_type.split(';').next().unwrap_or("").trim() {
        OCI_LAYER_TAR
        | OCI_LAYER_NONDISTRIBUTABLE_TAR
        | DOCKER_LAYER_TAR
        | DOCKER_FOREIGN_LAYER_TAR => Some(LayerCompression::None),
        OCI_LAYER_GZIP
        | OCI_LAYER_NONDISTRIBUTABLE_GZIP
        | DOCKER_LAYER_GZIP
        | DOCKER_FOREIGN_LAYER_GZIP => Some(LayerCompression::Gzip),
        OCI_LAYER_ZSTD | OCI_LAYER_NONDISTRIBUTABLE_ZSTD | DOCKER_LAYER_ZSTD => {
            Some(LayerCompression::Zstd)
        }
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what} is {size} bytes, more than the {limit} byte limit")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("malformed {what} json: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error(
        "image manifest schema 1 ({media_type}) is deprecated and unsupported; \
         re-push the image with a current docker, buildx or skopeo to convert it to schema 2 or oci"
    )]
    Schema1 { media_type: String },
    #[error("unsupported manifest media type {media_type:?}")]
    UnsupportedMediaType { media_type: String },
    #[error(
        "cannot tell the manifest type: no mediaType in the body or content-type, \
         and it has neither \"manifests\" nor \"config\" or \"layers\""
    )]
    UnknownShape,
    #[error(
        "cannot tell the manifest type: no mediaType in the body or content-type, \
         and it has both \"manifests\" and \"config\" or \"layers\""
    )]
    AmbiguousShape,
    #[error("manifest body has mediaType {body:?} but the registry sent content-type {header:?}")]
    MediaTypeConflict { body: String, header: String },
    #[error("unsupported {what} schemaVersion {found} (expected 2)")]
    SchemaVersion { what: &'static str, found: String },
    #[error("invalid {kind}: {path}: {reason}")]
    Invalid {
        kind: Kind,
        path: String,
        reason: String,
    },
    #[error("invalid platform {value:?}: {reason}")]
    InvalidPlatform { value: String, reason: String },
    #[error("no image for platform {want} in the index; it offers: {}", list_or_none(.available))]
    NoMatchingPlatform {
        want: String,
        available: Vec<String>,
    },
    #[error("layer {digest} has media type {media_type:?}, which cannot be unpacked")]
    UnsupportedLayer { digest: Digest, media_type: String },
    #[error(
        "not a runnable container image: config {digest} has media type {media_type:?} \
         (an artifact such as a helm chart or signature?)"
    )]
    NotRunnable { digest: Digest, media_type: String },
    #[error("image config does not match the manifest: {reason}")]
    ConfigMismatch { reason: String },
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "no platforms".to_string()
    } else {
        v.join(", ")
    }
}

impl Categorized for ManifestError {
    fn category(&self) -> Category {
        match self {
            ManifestError::NoMatchingPlatform { .. } => Category::NotFound,
            _ => Category::Invalid,
        }
    }
}

/// `null` in a registry document means "absent": Go clients treat it so, and real configs
/// carry `"Env": null`, `"Labels": null` and friends.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An optional string where `""` also means absent.
pub(crate) fn empty_as_none<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// A map of strings whose values may be `null` (Go decodes those as "").
pub(crate) fn string_map<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    let m: Option<BTreeMap<String, Option<String>>> = Option::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A content descriptor: what a manifest or index says about a blob it references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Embedded content, base64 as in the document; see [`Descriptor::embedded_data`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
            data: None,
        }
    }

    /// The embedded `data`, only when it decodes and matches both size and digest, so a
    /// caller may use it instead of fetching the blob.
    pub fn embedded_data(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.data.as_deref()?)
            .ok()?;
        (bytes.len() as u64 == self.size && self.digest.verifies(&bytes)).then_some(bytes)
    }
}

/// An image manifest: OCI (`application/vnd.oci.image.manifest.v1+json`) or Docker schema 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schema_version: u32,
    /// The body's `mediaType`, or the type [`parse_manifest`] resolved when the body had none.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "null_as_default")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// Whether we can run this: a container image config and layers we know how to unpack.
    /// The error names the offending descriptor and media type.
    pub fn check_runnable(&self) -> Result<(), ManifestError> {
        let cfg = self.config.media_type.as_str();
        // Very old Docker pushes labelled the config application/octet-stream.
        if cfg != media_types::OCI_CONFIG
            && cfg != media_types::DOCKER_CONFIG
            && cfg != "application/octet-stream"
        {
            return Err(ManifestError::NotRunnable {
                digest: self.config.digest.clone(),
                media_type: cfg.to_string(),
            });
        }
        self.check_layers_supported()
    }

    /// Every layer has a media type we can unpack (tar, gzip, zstd; OCI, Docker, foreign and
    /// non-distributable variants).
    pub fn check_layers_supported(&self) -> Result<(), ManifestError> {
        for l in &self.layers {
            if layer_compression(&l.media_type).is_none() {
                return Err(ManifestError::UnsupportedLayer {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                });
            }
        }
        Ok(())
    }
}

/// An image index: OCI (`application/vnd.oci.image.index.v1+json`) or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schema_version: u32,
    /// The body's `mediaType`, or the type [`parse_manifest`] resolved when the body had none.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

// One per pull, matched by value at the call sites: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl Manifest {
    /// The resolved media type (always set by [`parse_manifest`]).
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image(m) => m.media_type.as_deref().unwrap_or(media_types::OCI_MANIFEST),
            Manifest::Index(i) => i.media_type.as_deref().unwrap_or(media_types::OCI_INDEX),
        }
    }
    pub fn as_image(&self) -> Option<&ImageManifest> {
        match self {
            Manifest::Image(m) => Some(m),
            Manifest::Index(_) => None,
        }
    }
    pub fn as_index(&self) -> Option<&ImageIndex> {
        match self {
            Manifest::Index(i) => Some(i),
            Manifest::Image(_) => None,
        }
    }
}

/// Just enough of a body to decide what it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<serde_json::Value>,
    #[serde(default)]
    media_type: Option<serde_json::Value>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    config: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    layers: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    fs_layers: Option<serde::de::IgnoredAny>,
}

/// The media type part of a Content-Type header, lower case, without parameters. `None` for
/// generic types that say nothing about the document (registries send those for manifests
/// stored without a type).
fn content_type_media_type(ct: &str) -> Option<String> {
    let mt = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mt.as_str() {
        "" | "application/json" | "text/plain" | "application/octet-stream" => None,
        _ => Some(mt),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DocClass {
    Image,
    Index,
    Schema1,
    Unknown,
}

/// Media types compare case-insensitively (RFC 6838).
fn classify(media_type: &str) -> DocClass {
    let media_type = media_type.to_ascii_lowercase();
    let media_type = media_type.as_str();
    if media_types::is_image_manifest(media_type) {
        DocClass::Image
    } else if media_types::is_index(media_type) {
        DocClass::Index
    } else if media_types::is_schema1(media_type) {
        DocClass::Schema1
    } else {
        DocClass::Unknown
    }
}

/// Parses a manifest body. The media type is the body's `mediaType` when present, else the
/// Content-Type (parameters stripped), else inferred from the shape like containerd does
/// (`manifests` -> OCI index, `config` or `layers` -> OCI manifest, both -> error). Docker schema 1 is refused with an error saying so;
/// unknown media types are refused with an error naming the type. When body and Content-Type
/// disagree the body wins, unless one says index and the other image manifest.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(ManifestError::TooLarge {
            what: "manifest",
            size: bytes.len(),
            limit: MAX_MANIFEST_SIZE,
        });
    }
    let probe: Probe = json_object(bytes, "manifest")?;
    let header = content_type.and_then(content_type_media_type);
    let body = match &probe.media_type {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.is_empty() => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ManifestError::Invalid {
                kind: Kind::Manifest,
                path: "/mediaType".into(),
                reason: format!("expected a string, got {other}"),
            })
        }
    };
    let schema1_version = matches!(&probe.schema_version, Some(v) if v.as_i64() == Some(1));
    if schema1_version || (probe.fs_layers.is_some() && probe.layers.is_none()) {
        let media_type = [body.as_deref(), header.as_deref()]
            .into_iter()
            .flatten()
            .find(|m| media_types::is_schema1(m))
            .unwrap_or(media_types::DOCKER_MANIFEST_V1);
        return Err(ManifestError::Schema1 {
            media_type: media_type.to_string(),
        });
    }

    let media_type = match (&body, &header) {
        (Some(b), Some(h)) => {
            let (cb, ch) = (classify(b), classify(h));
            let crossed = matches!(
                (cb, ch),
                (DocClass::Image, DocClass::Index) | (DocClass::Index, DocClass::Image)
            );
            if crossed {
                return Err(ManifestError::MediaTypeConflict {
                    body: b.clone(),
                    header: h.clone(),
                });
            }
            b.clone()
        }
        (Some(b), None) => b.clone(),
        (None, Some(h)) => h.clone(),
        (None, None) => {
            // containerd's DetectManifestMediaType.
            let image_like = probe.config.is_some() || probe.layers.is_some();
            match (probe.manifests.is_some(), image_like) {
                (true, true) => return Err(ManifestError::AmbiguousShape),
                (true, false) => media_types::OCI_INDEX.to_string(),
                (false, true) => media_types::OCI_MANIFEST.to_string(),
                (false, false) => return Err(ManifestError::UnknownShape),
            }
        }
    };

    let json_err = |source| ManifestError::Json {
        what: "manifest",
        source,
    };
    match classify(&media_type) {
        DocClass::Schema1 => Err(ManifestError::Schema1 { media_type }),
        DocClass::Unknown => Err(ManifestError::UnsupportedMediaType { media_type }),
        DocClass::Image => {
            let mut m: ImageManifest = serde_json::from_slice(bytes).map_err(json_err)?;
            if m.schema_version != 2 {
                return Err(schema_version_error(
                    "image manifest",
                    &probe.schema_version,
                ));
            }
            m.media_type.get_or_insert(media_type);
            Ok(Manifest::Image(m))
        }
        DocClass::Index => {
            let mut i: ImageIndex = serde_json::from_slice(bytes).map_err(json_err)?;
            if i.schema_version != 2 {
                return Err(schema_version_error("image index", &probe.schema_version));
            }
            i.media_type.get_or_insert(media_type);
            Ok(Manifest::Index(i))
        }
    }
}

fn schema_version_error(what: &'static str, v: &Option<serde_json::Value>) -> ManifestError {
    ManifestError::SchemaVersion {
        what,
        found: match v {
            None | Some(serde_json::Value::Null) => "missing".to_string(),
            Some(v) => v.to_string(),
        },
    }
}

/// Parses an image config (OCI and Docker share the shape). Unknown fields are ignored;
/// callers keep the raw bytes.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, ManifestError> {
    if bytes.len() > MAX_CONFIG_SIZE {
        return Err(ManifestError::TooLarge {
            what: "image config",
            size: bytes.len(),
            limit: MAX_CONFIG_SIZE,
        });
    }
    json_object(bytes, "image config")
}

/// Deserializes a document that must be a JSON object (serde would also build structs from
/// arrays).
fn json_object<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<T, ManifestError> {
    let json_err = |source| ManifestError::Json { what, source };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(json_err(serde::de::Error::custom("expected a json object")));
    }
    serde_json::from_slice(bytes).map_err(json_err)
}
