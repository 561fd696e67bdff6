//! Layer tarballs written from a list of entries, and the flattened file tree that applying
//! layers (with whiteouts) must produce, to compare unpacks and exports exactly.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use sha2::Digest as _;

/// Media types (OCI and Docker schema2).
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
}

/// `sha256:HEX` of bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Content addressed by digest: a config, layer, manifest or index.
#[derive(Clone)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub data: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("media_type", &self.media_type)
            .field("digest", &self.digest)
            .field("size", &self.data.len())
            .finish()
    }
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            data: Arc::new(data),
        }
    }

    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// `sha256` hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.split_once(':').map_or("", |(_, h)| h)
    }

    /// An OCI descriptor (`mediaType`, `digest`, `size`).
    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                // GzEncoder writes mtime 0 and no file name: output is deterministic.
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 2),
                    flate2::Compression::default(),
                );
                e.write_all(data).expect("gzip to memory");
                e.finish().expect("gzip to memory")
            }
            Compression::Zstd => zstd::encode_all(data, 3).expect("zstd to memory"),
        }
    }

    pub fn decompress(self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .expect("gunzip layer");
            }
            Compression::Zstd => out = zstd::decode_all(data).expect("unzstd layer"),
        }
        out
    }

    /// The layer media type for this compression in OCI or Docker schema2 images.
    pub fn layer_media_type(self, docker: bool) -> &'static str {
        match (self, docker) {
            (Compression::None, false) => media::OCI_LAYER,
            (Compression::Gzip, false) => media::OCI_LAYER_GZIP,
            (Compression::Zstd, false) => media::OCI_LAYER_ZSTD,
            (Compression::None, true) => media::DOCKER_LAYER,
            (Compression::Gzip, true) => media::DOCKER_LAYER_GZIP,
            (Compression::Zstd, true) => media::DOCKER_LAYER_ZSTD,
        }
    }
}

/// Ownership, permissions, time and extended attributes of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (0o7777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    pub fn mode(mode: u32) -> Meta {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime: FIXTURE_MTIME,
            xattrs: Vec::new(),
        }
    }

    pub fn owned(mode: u32, uid: u64, gid: u64) -> Meta {
        Meta {
            uid,
            gid,
            ..Meta::mode(mode)
        }
    }
}

/// 2024-01-01T00:00:00Z: every fixture entry has this mtime unless told otherwise.
pub const FIXTURE_MTIME: u64 = 1_704_067_200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// Hard link to another path of the image (as a tar link name, no leading '/').
    Hardlink(String),
    Fifo,
    /// Deletes `path` of lower layers: written as `DIR/.wh.NAME`.
    Whiteout,
    /// Hides everything lower layers put in the directory `path`: `path/.wh..wh..opq`.
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path without leading or trailing '/'.
    pub path: String,
    pub kind: EntryKind,
    pub meta: Meta,
}

/// Strips leading `/` and `./` and trailing `/`.
pub fn clean(path: &str) -> String {
    let mut p = path.trim_end_matches('/');
    loop {
        if let Some(r) = p.strip_prefix("./") {
            p = r;
        } else if let Some(r) = p.strip_prefix('/') {
            p = r;
        } else {
            break;
        }
    }
    p.to_string()
}

fn parent_and_name(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    }
}

impl Entry {
    /// The path as written in the tar (whiteout names included).
    pub fn tar_path(&self) -> String {
        match self.kind {
            EntryKind::Whiteout => {
                let (parent, name) = parent_and_name(&self.path);
                if parent.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{parent}/.wh.{name}")
                }
            }
            EntryKind::Opaque => {
                if self.path.is_empty() {
                    ".wh..wh..opq".to_string()
                } else {
                    format!("{}/.wh..wh..opq", self.path)
                }
            }
            EntryKind::Dir => format!("{}/", self.path),
            _ => self.path.clone(),
        }
    }
}

/// Writes entries to an uncompressed tar stream (GNU headers, PAX records for xattrs).
pub fn write_tar<W: Write>(out: W, entries: &[Entry]) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    for e in entries {
        if !e.meta.xattrs.is_empty() {
            let recs: Vec<(String, Vec<u8>)> = e
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
                .collect();
            b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.meta.mode);
        h.set_uid(e.meta.uid);
        h.set_gid(e.meta.gid);
        h.set_mtime(e.meta.mtime);
        h.set_size(0);
        let path = e.tar_path();
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, &path, io::empty())?;
            }
            EntryKind::File(content) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, &path, content.as_slice())?;
            }
            EntryKind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, &path, target)?;
            }
            EntryKind::Hardlink(target) => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, &path, target)?;
            }
            EntryKind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, &path, io::empty())?;
            }
            EntryKind::Whiteout | EntryKind::Opaque => {
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, &path, io::empty())?;
            }
        }
    }
    b.into_inner()
}

/// Builds one layer from entries, in order.
#[derive(Debug, Clone)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
    compression: Compression,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        LayerBuilder::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder {
            entries: Vec::new(),
            compression: Compression::Gzip,
        }
    }

    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    pub fn entry(mut self, path: &str, kind: EntryKind, meta: Meta) -> Self {
        self.entries.push(Entry {
            path: clean(path),
            kind,
            meta,
        });
        self
    }

    /// A directory with mode 0755, owned by root.
    pub fn dir(self, path: &str) -> Self {
        self.entry(path, EntryKind::Dir, Meta::mode(0o755))
    }

    pub fn dir_with(self, path: &str, meta: Meta) -> Self {
        self.entry(path, EntryKind::Dir, meta)
    }

    /// A regular file with mode 0644, owned by root.
    pub fn file(self, path: &str, content: impl Into<Vec<u8>>) -> Self {
        self.entry(path, EntryKind::File(content.into()), Meta::mode(0o644))
    }

    pub fn file_mode(self, path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.entry(path, EntryKind::File(content.into()), Meta::mode(mode))
    }

    pub fn file_with(self, path: &str, content: impl Into<Vec<u8>>, meta: Meta) -> Self {
        self.entry(path, EntryKind::File(content.into()), meta)
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(
            path,
            EntryKind::Symlink(target.to_string()),
            Meta::mode(0o777),
        )
    }

    /// A hard link at `path` to `target` (an image path, written without leading '/').
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(path, EntryKind::Hardlink(clean(target)), Meta::mode(0o644))
    }

    pub fn fifo(self, path: &str, mode: u32) -> Self {
        self.entry(path, EntryKind::Fifo, Meta::mode(mode))
    }

    /// Deletes `path` (file or directory) of lower layers.
    pub fn whiteout(self, path: &str) -> Self {
        self.entry(path, EntryKind::Whiteout, Meta::mode(0o644))
    }

    /// Makes directory `dir` opaque: lower layers' contents of it disappear.
    pub fn opaque(self, dir: &str) -> Self {
        self.entry(dir, EntryKind::Opaque, Meta::mode(0o644))
    }

    /// Adds an extended attribute to the most recent entry at `path`.
    pub fn xattr(mut self, path: &str, name: &str, value: &[u8]) -> Self {
        let p = clean(path);
        let e = self
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("xattr: no entry {p} in this layer"));
        e.meta.xattrs.push((name.to_string(), value.to_vec()));
        self
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn build(self) -> Layer {
        let tar = write_tar(Vec::new(), &self.entries).expect("write layer tar to memory");
        let mut layer = Layer::from_tar(tar, self.compression);
        layer.entries = Some(self.entries);
        layer
    }
}

/// A built layer: the compressed blob, its diff ID, and (when built from entries) the
/// entries, so the expected unpacked tree is known.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The blob as uploaded; its media type is OCI's for the compression, and images in
    /// Docker format map it to Docker's.
    pub blob: Blob,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    pub compression: Compression,
    /// Written into manifests instead of the type derived from format and compression.
    pub media_type_override: Option<String>,
    pub entries: Option<Vec<Entry>>,
}

impl Layer {
    /// A layer from a hand-made uncompressed tar (e.g. hostile entries).
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Layer {
        let diff_id = sha256_digest(&tar);
        let data = compression.compress(&tar);
        Layer {
            blob: Blob::new(compression.layer_media_type(false), data),
            diff_id,
            compression,
            media_type_override: None,
            entries: None,
        }
    }

    /// Writes `media_type` into manifests for this layer (foreign or unknown types).
    pub fn with_media_type(mut self, media_type: &str) -> Layer {
        self.media_type_override = Some(media_type.to_string());
        self
    }

    pub fn digest(&self) -> &str {
        &self.blob.digest
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        self.compression.decompress(&self.blob.data)
    }
}

/// One node of a flattened file tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits (0o7777); 0o777 for symlinks.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// A file tree keyed by relative path (no leading '/'); the root itself is not a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, Node>);

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

impl Tree {
    /// What unpacking `layers` in order must produce, applying whiteouts and opaque
    /// directories. Panics for layers built from raw tars (no entries known).
    pub fn from_layers(layers: &[Layer]) -> Tree {
        let mut t = Tree::default();
        for l in layers {
            let entries = l
                .entries
                .as_ref()
                .expect("layer was built from a raw tar: no expected tree");
            t.apply_layer(entries);
        }
        t
    }

    /// Applies one layer: deletions (whiteouts, opaque dirs) hide lower layers first, then
    /// the layer's entries are added in order.
    pub fn apply_layer(&mut self, entries: &[Entry]) {
        for e in entries {
            match e.kind {
                EntryKind::Whiteout => self.remove(&e.path),
                EntryKind::Opaque => self.0.retain(|p, _| !is_under(p, &e.path)),
                _ => {}
            }
        }
        for e in entries {
            let node = |kind| Node {
                kind,
                mode: e.meta.mode & 0o7777,
                uid: e.meta.uid,
                gid: e.meta.gid,
                xattrs: e.meta.xattrs.iter().cloned().collect(),
            };
            match &e.kind {
                EntryKind::Whiteout | EntryKind::Opaque => {}
                EntryKind::Dir => {
                    // An existing directory keeps its children and takes the new metadata.
                    if !matches!(self.0.get(&e.path), Some(n) if n.kind == NodeKind::Dir) {
                        self.remove(&e.path);
                    }
                    self.0.insert(e.path.clone(), node(NodeKind::Dir));
                }
                EntryKind::File(c) => self.put(&e.path, node(NodeKind::File(c.clone()))),
                EntryKind::Symlink(t) => {
                    let mut n = node(NodeKind::Symlink(t.clone()));
                    n.mode = 0o777;
                    self.put(&e.path, n)
                }
                EntryKind::Fifo => self.put(&e.path, node(NodeKind::Fifo)),
                EntryKind::Hardlink(target) => {
                    let n = self
                        .0
                        .get(target)
                        .unwrap_or_else(|| panic!("hard link {} to missing {target}", e.path))
                        .clone();
                    self.put(&e.path, n)
                }
            }
        }
    }

    fn remove(&mut self, path: &str) {
        self.0.remove(path);
        self.0.retain(|p, _| !is_under(p, path));
    }

    fn put(&mut self, path: &str, node: Node) {
        self.remove(path);
        self.0.insert(path.to_string(), node);
    }

    /// Reads a directory tree from disk (not following symlinks). Extended attributes in
    /// the `security.` and `trusted.overlay.` namespaces are left out.
    pub fn from_dir(root: &Path) -> Tree {
        let mut t = Tree::default();
        walk(root, root, &mut t);
        t
    }

    /// Reads a flattened tar (an export): entries are applied in order, hard links resolve
    /// to their target's content, whiteout names are kept literally.
    pub fn from_tar(r: impl Read) -> Tree {
        let mut t = Tree::default();
        let mut a = tar::Archive::new(r);
        for entry in a.entries().expect("read tar") {
            let mut entry = entry.expect("read tar entry");
            let path = clean(&entry.path().expect("tar path").to_string_lossy());
            if path.is_empty() || path == "." {
                continue;
            }
            let h = entry.header().clone();
            let mut xattrs = BTreeMap::new();
            if let Ok(Some(exts)) = entry.pax_extensions() {
                for ext in exts.flatten() {
                    if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr."))
                    {
                        xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                    }
                }
            }
            let mut node = Node {
                kind: NodeKind::Dir,
                mode: h.mode().expect("tar mode") & 0o7777,
                uid: h.uid().expect("tar uid"),
                gid: h.gid().expect("tar gid"),
                xattrs,
            };
            match h.entry_type() {
                tar::EntryType::Directory => {}
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut c = Vec::new();
                    entry.read_to_end(&mut c).expect("read tar file");
                    node.kind = NodeKind::File(c);
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name().expect("link").expect("link name");
                    node.kind = NodeKind::Symlink(target.to_string_lossy().into_owned());
                    node.mode = 0o777;
                }
                tar::EntryType::Link => {
                    let target = entry.link_name().expect("link").expect("link name");
                    let target = clean(&target.to_string_lossy());
                    node =
                        t.0.get(&target)
                            .unwrap_or_else(|| panic!("hard link {path} to missing {target}"))
                            .clone();
                }
                tar::EntryType::Fifo => node.kind = NodeKind::Fifo,
                other => panic!("{path}: unexpected tar entry type {other:?}"),
            }
            if node.kind == NodeKind::Dir {
                if let Some(old) = t.0.get_mut(&path) {
                    if old.kind == NodeKind::Dir {
                        *old = node;
                        continue;
                    }
                }
            }
            t.put(&path, node);
        }
        t
    }

    /// Paths only.
    pub fn paths(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.0.get(&clean(path))
    }

    /// Drops paths for which `keep` is false (e.g. mount points a runtime adds).
    pub fn filter(mut self, keep: impl Fn(&str) -> bool) -> Tree {
        self.0.retain(|p, _| keep(p));
        self
    }

    /// Human-readable differences, empty when equal.
    pub fn diff(&self, actual: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        for (p, n) in &self.0 {
            match actual.0.get(p) {
                None => out.push(format!("missing: {p} ({})", describe(n))),
                Some(a) if a != n => out.push(format!(
                    "differs: {p}: expected {}, got {}",
                    describe(n),
                    describe(a)
                )),
                Some(_) => {}
            }
        }
        for (p, a) in &actual.0 {
            if !self.0.contains_key(p) {
                out.push(format!("unexpected: {p} ({})", describe(a)));
            }
        }
        out
    }

    /// Panics with the differences when `actual` differs from this expected tree.
    pub fn assert_matches(&self, actual: &Tree) {
        let d = self.diff(actual);
        assert!(d.is_empty(), "trees differ:\n  {}", d.join("\n  "));
    }
}

fn describe(n: &Node) -> String {
    let kind = match &n.kind {
        NodeKind::Dir => "dir".to_string(),
        NodeKind::File(c) => format!("file {} bytes {}", c.len(), &sha256_digest(c)[7..19]),
        NodeKind::Symlink(t) => format!("symlink -> {t}"),
        NodeKind::Fifo => "fifo".to_string(),
    };
    let x: Vec<&String> = n.xattrs.keys().collect();
    format!(
        "{kind} mode {:o} uid {} gid {} xattrs {x:?}",
        n.mode, n.uid, n.gid
    )
}

fn walk(root: &Path, dir: &Path, t: &mut Tree) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    names.sort();
    for p in names {
        let md = fs::symlink_metadata(&p).expect("lstat");
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_file() {
            NodeKind::File(fs::read(&p).expect("read file"))
        } else if ft.is_symlink() {
            NodeKind::Symlink(
                fs::read_link(&p)
                    .expect("readlink")
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            panic!("{}: unexpected file type", p.display())
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(names) = xattr::list(&p) {
            for name in names {
                let name = name.to_string_lossy().into_owned();
                if name.starts_with("security.") || name.starts_with("trusted.overlay.") {
                    continue;
                }
                if let Ok(Some(v)) = xattr::get(&p, &name) {
                    xattrs.insert(name, v);
                }
            }
        }
        let is_symlink = ft.is_symlink();
        t.0.insert(
            rel,
            Node {
                kind,
                mode: if is_symlink {
                    0o777
                } else {
                    md.permissions().mode() & 0o7777
                },
                uid: u64::from(md.uid()),
                gid: u64::from(md.gid()),
                xattrs,
            },
        );
        if ft.is_dir() {
            walk(root, &p, t);
        }
    }
}
