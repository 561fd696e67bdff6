//! `image import PATH`: images for air-gapped hosts. Accepts an OCI image layout directory,
//! an oci-archive (a tar of such a layout) or a docker-archive (`docker save` output).
//! Every blob is verified on its way into the content store; archive paths are only used as
//! lookup keys, never as file system paths, so a hostile archive cannot write anywhere.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use serde::Deserialize;

use super::digest::Digest;
use super::manifest::{self, media_types, Descriptor, ImageIndex, Manifest, Platform};
use super::metadata::ImageRecord;
use super::unpack::Compression;
use super::{ImageError, ImageStore, Reference};

/// Metadata files (index.json, manifest.json, configs) are small; refuse absurd ones.
const MAX_METADATA: u64 = 4 * 1024 * 1024;
const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Brings one blob (digest, expected size) into the content store, verified.
type FetchBlob<'a> = dyn Fn(&Digest, Option<u64>) -> Result<(), ImageError> + 'a;

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub platform: Platform,
    /// Name for images that carry none (or to override the archive's).
    pub tag: Option<String>,
}

fn invalid(path: &Path, msg: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(format!("import {}: {msg}", path.display()))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Imports every image found at `path`; returns the records written.
pub fn import(
    store: &ImageStore,
    path: &Path,
    opts: &ImportOptions,
) -> Result<Vec<ImageRecord>, ImageError> {
    let _guard = store.gc_shared()?;
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        import_layout_dir(store, path, opts)
    } else {
        import_archive(store, path, opts)
    }
}

fn read_capped(mut r: impl Read, path: &Path, what: &str) -> Result<Vec<u8>, ImageError> {
    let mut buf = Vec::new();
    (&mut r)
        .take(MAX_METADATA + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() as u64 > MAX_METADATA {
        return Err(invalid(
            path,
            format!("{what} is larger than {MAX_METADATA} bytes"),
        ));
    }
    Ok(buf)
}

fn import_layout_dir(
    store: &ImageStore,
    dir: &Path,
    opts: &ImportOptions,
) -> Result<Vec<ImageRecord>, ImageError> {
    let layout = dir.join("oci-layout");
    if !layout.is_file() {
        return Err(invalid(dir, "not an OCI image layout (no oci-layout file)"));
    }
    let index_path = dir.join("index.json");
    let index_bytes = read_capped(
        File::open(&index_path).map_err(io_err(&index_path))?,
        &index_path,
        "index.json",
    )?;
    // Copy a blob from the layout into the store, verified; symlinks are not followed.
    let fetch = |d: &Digest, size: Option<u64>| -> Result<(), ImageError> {
        if store.content.contains(d) {
            return Ok(());
        }
        let p = dir
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.encoded());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(io_err(&p))?;
        let mut w = store.content.writer(Some(d.clone()), size)?;
        io::copy(&mut BufReader::with_capacity(1 << 20, f), &mut w).map_err(io_err(&p))?;
        w.commit()?;
        Ok(())
    };
    import_oci_index(store, dir, &index_bytes, &fetch, opts)
}

fn import_oci_index(
    store: &ImageStore,
    source: &Path,
    index_bytes: &[u8],
    fetch: &FetchBlob,
    opts: &ImportOptions,
) -> Result<Vec<ImageRecord>, ImageError> {
    let index: ImageIndex =
        match manifest::parse_manifest(index_bytes, Some(media_types::OCI_INDEX))
            .map_err(|e| invalid(source, format!("index.json: {e}")))?
        {
            Manifest::Index(i) => i,
            Manifest::Image(_) => return Err(invalid(source, "index.json is not an image index")),
        };
    if index.manifests.is_empty() {
        return Err(invalid(source, "index.json lists no images"));
    }
    let mut out = Vec::new();
    for desc in &index.manifests {
        let name = desc
            .annotations
            .get(NAME_ANNOTATION)
            .or_else(|| desc.annotations.get(REF_NAME_ANNOTATION))
            .cloned();
        let reference = image_name(source, name.as_deref(), opts)?;
        fetch(&desc.digest, Some(desc.size))?;
        let bytes = store.content.read(&desc.digest, MAX_METADATA)?;
        let parsed = manifest::parse_manifest(&bytes, Some(&desc.media_type))
            .map_err(|e| invalid(source, format!("manifest {}: {e}", desc.digest)))?;
        let (image_desc, image) = match parsed {
            Manifest::Image(m) => (desc.clone(), m),
            Manifest::Index(idx) => {
                let chosen = manifest::select_platform(&idx, &opts.platform)
                    .map_err(|e| invalid(source, format!("index {}: {e}", desc.digest)))?
                    .clone();
                fetch(&chosen.digest, Some(chosen.size))?;
                let b = store.content.read(&chosen.digest, MAX_METADATA)?;
                match manifest::parse_manifest(&b, Some(&chosen.media_type))
                    .map_err(|e| invalid(source, format!("manifest {}: {e}", chosen.digest)))?
                {
                    Manifest::Image(m) => (chosen, m),
                    Manifest::Index(_) => {
                        return Err(ImageError::NestedIndex {
                            reference: reference.to_string(),
                        })
                    }
                }
            }
        };
        fetch(&image.config.digest, Some(image.config.size))?;
        for l in &image.layers {
            fetch(&l.digest, Some(l.size))?;
        }
        let media_type = image
            .media_type
            .clone()
            .unwrap_or_else(|| image_desc.media_type.clone());
        let rec = materialize(
            store,
            &reference,
            desc.digest.clone(),
            image_desc.digest.clone(),
            media_type,
            &image.config,
            &image.layers,
        )?;
        out.push(rec);
    }
    Ok(out)
}

/// The name an imported image is recorded under.
fn image_name(
    source: &Path,
    annotated: Option<&str>,
    opts: &ImportOptions,
) -> Result<Reference, ImageError> {
    let candidate = match (&opts.tag, annotated) {
        (Some(t), _) => t.clone(),
        (None, Some(a)) if Reference::parse_normalized(a).is_ok() && (a.contains('/') || a.contains(':')) => {
            a.to_string()
        }
        (None, _) => {
            return Err(invalid(
                source,
                "image has no full name (io.containerd.image.name or a ref.name with a repository); pass --tag NAME",
            ))
        }
    };
    Reference::parse_pullable(&candidate)
        .map_err(|e| invalid(source, format!("image name {candidate:?}: {e}")))
}

/// Unpacks the layers of a manifest whose blobs are all in the store, and records it.
fn materialize(
    store: &ImageStore,
    reference: &Reference,
    repo_digest: Digest,
    manifest_digest: Digest,
    manifest_media_type: String,
    config_desc: &Descriptor,
    layers: &[Descriptor],
) -> Result<ImageRecord, ImageError> {
    let config_bytes = store
        .content
        .read(&config_desc.digest, super::pull::MAX_CONFIG_SIZE)?;
    let config = manifest::parse_config(&config_bytes).map_err(|e| ImageError::Manifest {
        reference: reference.to_string(),
        source: e,
    })?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != layers.len() {
        return Err(ImageError::LayerCountMismatch {
            reference: reference.to_string(),
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    for (l, diff_id) in layers.iter().zip(diff_ids) {
        let compression = super::layer::compression(&l.digest, &l.media_type)?;
        let _lock = store.content.lock(&l.digest)?;
        let f = store.content.open_blob(&l.digest)?;
        store.unpack_snapshot(
            BufReader::with_capacity(1 << 20, f),
            l,
            compression,
            diff_id,
        )?;
    }
    let rec = ImageRecord::new(
        reference.to_string(),
        repo_digest,
        manifest_digest,
        manifest_media_type,
        config_desc,
        layers,
        diff_ids,
        config.platform(),
    );
    store.db.put(rec.clone())?;
    Ok(rec)
}

/// Normalizes a path inside an archive to `a/b/c` (no `.`, no leading `/`); `..` that would
/// climb above the archive root makes it unusable.
fn archive_key(p: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                parts.pop()?;
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// What a single pass over an archive leaves: metadata in memory, blobs in the store.
#[derive(Default)]
struct ArchiveContents {
    small: BTreeMap<String, Vec<u8>>,
    /// Archive path -> stored blob (digest, size).
    files: BTreeMap<String, (Digest, u64)>,
    symlinks: BTreeMap<String, String>,
}

impl ArchiveContents {
    fn resolve(&self, key: &str) -> Option<&(Digest, u64)> {
        let mut k = key.to_string();
        for _ in 0..16 {
            if let Some(f) = self.files.get(&k) {
                return Some(f);
            }
            k = self.symlinks.get(&k)?.clone();
        }
        None
    }
}

fn import_archive(
    store: &ImageStore,
    path: &Path,
    opts: &ImportOptions,
) -> Result<Vec<ImageRecord>, ImageError> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let prefix = {
        use std::io::BufRead;
        reader.fill_buf().map_err(io_err(path))?.to_vec()
    };
    // Archives may be compressed as a whole (`docker save | gzip`).
    let compression = Compression::detect(&prefix);
    let decompressed = super::unpack::decompress(reader, compression)
        .map_err(|e| invalid(path, format!("decompressing: {e}")))?;
    let mut archive = tar::Archive::new(decompressed);
    let mut contents = ArchiveContents::default();
    let entries = archive
        .entries()
        .map_err(|e| invalid(path, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(path, format!("reading tar: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| invalid(path, format!("entry name: {e}")))?
            .into_owned();
        let Some(key) = archive_key(&raw) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                let base = if kind.is_symlink() {
                    Path::new(&key)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(target)
                } else {
                    target.into_owned()
                };
                if let Some(t) = archive_key(&base) {
                    contents.symlinks.insert(key, t);
                }
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let named_blob = key
            .strip_prefix("blobs/")
            .and_then(|rest| Digest::parse(&rest.replacen('/', ":", 1)).ok());
        let is_metadata = key.ends_with(".json") || key == "oci-layout" || key == "repositories";
        if named_blob.is_none() && is_metadata {
            let bytes = read_capped(&mut entry, path, &key)?;
            contents.small.insert(key, bytes);
            continue;
        }
        if let Some(d) = &named_blob {
            if store.content.contains(d) {
                contents.files.insert(key, (d.clone(), entry.size()));
                continue;
            }
        }
        let mut w = store
            .content
            .writer(named_blob.clone(), Some(entry.size()))?;
        io::copy(&mut entry, &mut w).map_err(|e| invalid(path, format!("{key}: {e}")))?;
        let (d, size) = w
            .commit()
            .map_err(|e| invalid(path, format!("{key}: {e}")))?;
        contents.files.insert(key, (d, size));
    }

    if let Some(m) = contents.small.get("manifest.json") {
        import_docker_archive(store, path, &contents, m, opts)
    } else if let Some(index) = contents.small.get("index.json") {
        let fetch = |d: &Digest, _size: Option<u64>| -> Result<(), ImageError> {
            if store.content.contains(d) {
                Ok(())
            } else {
                Err(invalid(
                    path,
                    format!("blob {d} is missing from the archive"),
                ))
            }
        };
        import_oci_index(store, path, index, &fetch, opts)
    } else {
        Err(invalid(
            path,
            "neither an oci-archive (index.json) nor a docker-archive (manifest.json)",
        ))
    }
}

fn import_docker_archive(
    store: &ImageStore,
    path: &Path,
    contents: &ArchiveContents,
    manifest_json: &[u8],
    opts: &ImportOptions,
) -> Result<Vec<ImageRecord>, ImageError> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(manifest_json)
        .map_err(|e| invalid(path, format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for entry in entries {
        let config_key = archive_key(Path::new(&entry.config))
            .ok_or_else(|| invalid(path, format!("bad config path {:?}", entry.config)))?;
        let (config_digest, config_size) = match contents.resolve(&config_key) {
            Some(found) => found.clone(),
            None => {
                let bytes = contents.small.get(&config_key).ok_or_else(|| {
                    invalid(
                        path,
                        format!("config {config_key} missing from the archive"),
                    )
                })?;
                let d = Digest::sha256_of(bytes);
                store.content.write_bytes(&d, bytes)?;
                (d, bytes.len() as u64)
            }
        };
        let mut layers = Vec::new();
        for l in &entry.layers {
            let key = archive_key(Path::new(l))
                .ok_or_else(|| invalid(path, format!("bad layer path {l:?}")))?;
            let (d, size) = contents
                .resolve(&key)
                .ok_or_else(|| invalid(path, format!("layer {key} missing from the archive")))?
                .clone();
            let mut f = store.content.open_blob(&d)?;
            let mut magic = [0u8; 4];
            let n = f.read(&mut magic).map_err(io_err(path))?;
            let media_type = match Compression::detect(&magic[..n]) {
                Compression::Gzip => media_types::DOCKER_LAYER_GZIP,
                Compression::Zstd => media_types::OCI_LAYER_ZSTD,
                Compression::None => media_types::DOCKER_LAYER_TAR,
            };
            layers.push(Descriptor::new(media_type, d, size));
        }
        let config_desc = Descriptor::new(media_types::DOCKER_CONFIG, config_digest, config_size);
        // A schema2 manifest for what `docker save` left out, so the image can be pushed,
        // inspected and exported like a pulled one.
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::DOCKER_MANIFEST_V2,
            "config": config_desc,
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
        let manifest_digest = Digest::sha256_of(&manifest_bytes);
        store
            .content
            .write_bytes(&manifest_digest, &manifest_bytes)?;
        let names: Vec<String> = match (&opts.tag, &entry.repo_tags) {
            (Some(t), _) => vec![t.clone()],
            (None, Some(tags)) if !tags.is_empty() => tags.clone(),
            _ => {
                return Err(invalid(path, "image has no RepoTags; pass --tag NAME"));
            }
        };
        for name in names {
            let reference = Reference::parse_pullable(&name)
                .map_err(|e| invalid(path, format!("image name {name:?}: {e}")))?;
            out.push(materialize(
                store,
                &reference,
                manifest_digest.clone(),
                manifest_digest.clone(),
                media_types::DOCKER_MANIFEST_V2.to_string(),
                &config_desc,
                &layers,
            )?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_keys_never_climb_out() {
        assert_eq!(archive_key(Path::new("./a/b")).as_deref(), Some("a/b"));
        assert_eq!(archive_key(Path::new("/a/../b")).as_deref(), Some("b"));
        assert_eq!(archive_key(Path::new("../x")), None);
        assert_eq!(archive_key(Path::new(".")), None);
    }
}
