//! Images and indexes built from layers, pushed to a registry over HTTP(S) or written as an
//! OCI layout, an OCI archive or a `docker save` archive.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use super::layer::{media, Blob, Layer, Tree};
use super::registry::Registry;

/// Manifest flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    /// Docker schema2 manifests and manifest lists.
    Docker,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    /// linux and the GOARCH name of the machine running the tests.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            "x86" => "386",
            other => other,
        };
        Platform::new("linux", arch, None)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "architecture": self.architecture, "os": self.os });
        if let Some(var) = &self.variant {
            v["variant"] = var.clone().into();
        }
        v
    }
}

/// Docker's `Healthcheck` in an image config (durations in nanoseconds on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub retries: u32,
}

impl Healthcheck {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "Test": self.test,
            "Interval": self.interval.as_nanos() as u64,
            "Timeout": self.timeout.as_nanos() as u64,
            "StartPeriod": self.start_period.as_nanos() as u64,
            "Retries": self.retries,
        })
    }
}

/// The default `PATH` of fixture images.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds an image: config JSON, manifest, and the layers' blobs.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    format: Format,
    omit_media_type: bool,
    platform: Platform,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: BTreeMap<String, String>,
    exposed: BTreeSet<String>,
    volumes: BTreeSet<String>,
    stop_signal: Option<String>,
    healthcheck: Option<Healthcheck>,
    annotations: BTreeMap<String, String>,
    created: String,
    tweak: Vec<fn(&mut serde_json::Value)>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder::new()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl ImageBuilder {
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            layers: Vec::new(),
            format: Format::Oci,
            omit_media_type: false,
            platform: Platform::host(),
            cmd: None,
            entrypoint: None,
            env: vec![DEFAULT_PATH.to_string()],
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            exposed: BTreeSet::new(),
            volumes: BTreeSet::new(),
            stop_signal: None,
            healthcheck: None,
            annotations: BTreeMap::new(),
            created: "2024-01-01T00:00:00Z".into(),
            tweak: Vec::new(),
        }
    }

    pub fn layer(mut self, l: Layer) -> Self {
        self.layers.push(l);
        self
    }

    pub fn format(mut self, f: Format) -> Self {
        self.format = f;
        self
    }

    /// Leaves the manifest's top-level `mediaType` out, as umoci does (OCI allows it); the
    /// media type is then only known from the Content-Type header.
    pub fn omit_media_type(mut self) -> Self {
        self.omit_media_type = true;
        self
    }

    pub fn platform(mut self, os: &str, arch: &str, variant: Option<&str>) -> Self {
        self.platform = Platform::new(os, arch, variant);
        self
    }

    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = Some(strings(cmd));
        self
    }

    pub fn entrypoint(mut self, ep: &[&str]) -> Self {
        self.entrypoint = Some(strings(ep));
        self
    }

    /// Adds `KEY=VALUE` to `Env` (a `PATH` is there by default).
    pub fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.to_string());
        self
    }

    /// Replaces the whole `Env` (also the default `PATH`).
    pub fn env_exact(mut self, env: &[&str]) -> Self {
        self.env = strings(env);
        self
    }

    pub fn workdir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// `8080/tcp`, `53/udp`.
    pub fn expose(mut self, port: &str) -> Self {
        self.exposed.insert(port.into());
        self
    }

    pub fn volume(mut self, path: &str) -> Self {
        self.volumes.insert(path.into());
        self
    }

    pub fn stop_signal(mut self, sig: &str) -> Self {
        self.stop_signal = Some(sig.into());
        self
    }

    pub fn healthcheck(mut self, h: Healthcheck) -> Self {
        self.healthcheck = Some(h);
        self
    }

    /// A manifest annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    /// Edits the config JSON just before it is serialized (for odd or broken configs).
    pub fn tweak_config(mut self, f: fn(&mut serde_json::Value)) -> Self {
        self.tweak.push(f);
        self
    }

    pub fn config_json(&self) -> serde_json::Value {
        let mut c = serde_json::Map::new();
        if !self.env.is_empty() {
            c.insert("Env".into(), self.env.clone().into());
        }
        if let Some(v) = &self.cmd {
            c.insert("Cmd".into(), v.clone().into());
        }
        if let Some(v) = &self.entrypoint {
            c.insert("Entrypoint".into(), v.clone().into());
        }
        if let Some(v) = &self.working_dir {
            c.insert("WorkingDir".into(), v.clone().into());
        }
        if let Some(v) = &self.user {
            c.insert("User".into(), v.clone().into());
        }
        if !self.labels.is_empty() {
            c.insert("Labels".into(), serde_json::json!(self.labels));
        }
        if !self.exposed.is_empty() {
            let m: serde_json::Map<_, _> = self
                .exposed
                .iter()
                .map(|p| (p.clone(), serde_json::json!({})))
                .collect();
            c.insert("ExposedPorts".into(), m.into());
        }
        if !self.volumes.is_empty() {
            let m: serde_json::Map<_, _> = self
                .volumes
                .iter()
                .map(|p| (p.clone(), serde_json::json!({})))
                .collect();
            c.insert("Volumes".into(), m.into());
        }
        if let Some(v) = &self.stop_signal {
            c.insert("StopSignal".into(), v.clone().into());
        }
        if let Some(h) = &self.healthcheck {
            c.insert("Healthcheck".into(), h.to_json());
        }
        let history: Vec<serde_json::Value> = (0..self.layers.len())
            .map(|i| {
                serde_json::json!({
                    "created": self.created,
                    "created_by": format!("dockmaster test fixture, layer {i}"),
                })
            })
            .collect();
        let mut v = serde_json::json!({
            "created": self.created,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": c,
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": history,
        });
        if let Some(var) = &self.platform.variant {
            v["variant"] = var.clone().into();
        }
        v
    }

    pub fn build(self) -> Image {
        let docker = self.format == Format::Docker;
        let mut config_json = self.config_json();
        for f in &self.tweak {
            f(&mut config_json);
        }
        let config = Blob::new(
            if docker {
                media::DOCKER_CONFIG
            } else {
                media::OCI_CONFIG
            },
            serde_json::to_vec(&config_json).expect("serialize config"),
        );
        let mut layers = self.layers;
        for l in &mut layers {
            l.blob.media_type = match &l.media_type_override {
                Some(mt) => mt.clone(),
                None => l.compression.layer_media_type(docker).to_string(),
            };
        }
        let manifest_type = if docker {
            media::DOCKER_MANIFEST
        } else {
            media::OCI_MANIFEST
        };
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "config": config.descriptor(),
            "layers": layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>(),
        });
        if !self.omit_media_type {
            m["mediaType"] = manifest_type.into();
        }
        if !self.annotations.is_empty() {
            m["annotations"] = serde_json::json!(self.annotations);
        }
        let manifest = Blob::new(
            manifest_type,
            serde_json::to_vec(&m).expect("serialize manifest"),
        );
        Image {
            manifest,
            config,
            layers,
            platform: self.platform,
            format: self.format,
        }
    }
}

/// A built image. `manifest.media_type` is the Content-Type to push it with (also when the
/// JSON omits `mediaType`).
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Layer>,
    pub platform: Platform,
    pub format: Format,
}

impl Image {
    /// The manifest digest (what `name@sha256:...` pins).
    pub fn digest(&self) -> &str {
        &self.manifest.digest
    }

    /// The config digest (Docker's image ID).
    pub fn id(&self) -> &str {
        &self.config.digest
    }

    pub fn diff_ids(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.diff_id.as_str()).collect()
    }

    pub fn config_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.config.data).expect("config is json")
    }

    /// The flattened root filesystem unpacking this image must produce.
    pub fn expected_tree(&self) -> Tree {
        Tree::from_layers(&self.layers)
    }

    /// Total bytes of the layer blobs.
    pub fn layers_size(&self) -> u64 {
        self.layers.iter().map(|l| l.blob.size()).sum()
    }
}

/// An OCI image index or Docker manifest list over several images.
#[derive(Debug, Clone)]
pub struct Index {
    pub manifest: Blob,
    pub images: Vec<Image>,
    pub format: Format,
}

impl Index {
    /// Indexes `images` (each with its own platform). `Format::Docker` gives a manifest list.
    pub fn new(format: Format, images: Vec<Image>) -> Index {
        Index::build(format, images, false)
    }

    /// Like [`Index::new`] without the top-level `mediaType`.
    pub fn new_without_media_type(format: Format, images: Vec<Image>) -> Index {
        Index::build(format, images, true)
    }

    fn build(format: Format, images: Vec<Image>, omit_media_type: bool) -> Index {
        let mt = match format {
            Format::Oci => media::OCI_INDEX,
            Format::Docker => media::DOCKER_LIST,
        };
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                let mut d = i.manifest.descriptor();
                d["platform"] = i.platform.to_json();
                d
            })
            .collect();
        let mut v = serde_json::json!({ "schemaVersion": 2, "manifests": manifests });
        if !omit_media_type {
            v["mediaType"] = mt.into();
        }
        Index {
            manifest: Blob::new(mt, serde_json::to_vec(&v).expect("serialize index")),
            images,
            format,
        }
    }

    pub fn digest(&self) -> &str {
        &self.manifest.digest
    }

    /// The entry for an architecture (and variant, if given).
    pub fn image_for(&self, arch: &str, variant: Option<&str>) -> Option<&Image> {
        self.images.iter().find(|i| {
            i.platform.architecture == arch
                && (variant.is_none() || i.platform.variant.as_deref() == variant)
        })
    }
}

/// Something a registry or layout can hold under a tag: an image or an index.
pub trait Pushable {
    /// The manifest or index the tag points at.
    fn top(&self) -> &Blob;
    /// The images it consists of (one for an image).
    fn images(&self) -> Vec<&Image>;
}

impl Pushable for Image {
    fn top(&self) -> &Blob {
        &self.manifest
    }
    fn images(&self) -> Vec<&Image> {
        vec![self]
    }
}

impl Pushable for Index {
    fn top(&self) -> &Blob {
        &self.manifest
    }
    fn images(&self) -> Vec<&Image> {
        self.images.iter().collect()
    }
}

/// Every blob (configs, layers, child manifests, then the top) without duplicates, in an
/// order a registry accepts.
pub fn all_blobs<'a>(p: &'a dyn Pushable) -> Vec<&'a Blob> {
    let mut candidates: Vec<&'a Blob> = Vec::new();
    for img in p.images() {
        candidates.push(&img.config);
        candidates.extend(img.layers.iter().map(|l| &l.blob));
    }
    candidates.extend(p.images().into_iter().map(|i| &i.manifest));
    candidates.push(p.top());
    let mut seen = BTreeSet::new();
    candidates
        .into_iter()
        .filter(|b| seen.insert(b.digest.clone()))
        .collect()
}

/// Pushes blobs and manifests to a registry with reqwest (blocking), answering Basic and
/// Bearer challenges with the given credentials.
pub struct Pusher {
    client: reqwest::blocking::Client,
    base: String,
    creds: Option<(String, String)>,
    auth: Option<String>,
}

impl Pusher {
    /// `base` is `http://HOST:PORT` or `https://HOST:PORT`.
    pub fn new(
        client: reqwest::blocking::Client,
        base: &str,
        creds: Option<(&str, &str)>,
    ) -> Pusher {
        Pusher {
            client,
            base: base.trim_end_matches('/').to_string(),
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            auth: None,
        }
    }

    /// For a [`Registry`]: its scheme, CA and credentials.
    pub fn for_registry(reg: &Registry) -> Pusher {
        Pusher::new(reg.client(), &reg.url(""), reg.credentials())
    }

    /// Sends the request built by `make`, answering one auth challenge if needed.
    pub fn send(
        &mut self,
        repo: &str,
        make: &dyn Fn(&reqwest::blocking::Client) -> reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::Response {
        for _ in 0..2 {
            let mut rb = make(&self.client);
            if let Some(a) = &self.auth {
                rb = rb.header("Authorization", a);
            }
            let resp = rb.send().expect("send request to registry");
            if resp.status().as_u16() != 401 {
                return resp;
            }
            let chal = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.auth = Some(self.answer(&chal, repo));
        }
        panic!("registry still answers 401 after authenticating for {repo}");
    }

    fn answer(&self, challenge: &str, repo: &str) -> String {
        let (user, pass) = self
            .creds
            .clone()
            .unwrap_or_else(|| panic!("registry wants credentials ({challenge}) and none given"));
        if challenge.to_ascii_lowercase().starts_with("basic") {
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            return format!("Basic {b}");
        }
        let params = challenge_params(challenge);
        let realm = params.get("realm").expect("bearer challenge has a realm");
        let mut url = format!("{realm}?scope=repository:{repo}:pull,push");
        if let Some(s) = params.get("service") {
            url.push_str(&format!("&service={}", super::http::url_encode(s)));
        }
        let resp = self
            .client
            .get(&url)
            .basic_auth(&user, Some(&pass))
            .send()
            .expect("token request");
        assert!(
            resp.status().is_success(),
            "token server said {}",
            resp.status()
        );
        let v: serde_json::Value =
            serde_json::from_slice(&resp.bytes().expect("token body")).expect("token json");
        let tok = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .expect("token in answer");
        format!("Bearer {tok}")
    }

    /// Whether the repository already has the blob.
    pub fn has_blob(&mut self, repo: &str, digest: &str) -> bool {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let r = self.send(repo, &|c| c.head(&url));
        r.status().is_success()
    }

    /// Monolithic upload: POST an upload session, then PUT the bytes with `?digest=`.
    pub fn put_blob(&mut self, repo: &str, blob: &Blob) {
        if self.has_blob(repo, &blob.digest) {
            return;
        }
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let r = self.send(repo, &|c| c.post(&url));
        assert_eq!(r.status().as_u16(), 202, "start upload of {}", blob.digest);
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("upload location")
            .to_string();
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={}", blob.digest);
        let data = blob.data.clone();
        let r = self.send(repo, &|c| {
            c.put(&put)
                .header("Content-Type", "application/octet-stream")
                .body(data.as_ref().clone())
        });
        let status = r.status();
        assert_eq!(
            status.as_u16(),
            201,
            "upload of {}: {}",
            blob.digest,
            r.text().unwrap_or_default()
        );
    }

    /// PUTs a manifest or index under `reference` (a tag or its digest).
    pub fn put_manifest(&mut self, repo: &str, reference: &str, m: &Blob) {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let r = self.send(repo, &|c| {
            c.put(&url)
                .header("Content-Type", &m.media_type)
                .body(m.data.as_ref().clone())
        });
        let status = r.status();
        assert_eq!(
            status.as_u16(),
            201,
            "put manifest {repo}:{reference}: {}",
            r.text().unwrap_or_default()
        );
    }

    /// Pushes every blob, child manifests by digest, then the top manifest under `tag` (a tag,
    /// or the top's digest to push without a tag).
    pub fn push(&mut self, repo: &str, tag: &str, p: &dyn Pushable) {
        for img in p.images() {
            self.put_blob(repo, &img.config);
            for l in &img.layers {
                self.put_blob(repo, &l.blob);
            }
        }
        let top = p.top();
        for img in p.images() {
            if img.manifest.digest != top.digest {
                self.put_manifest(repo, &img.manifest.digest, &img.manifest);
            }
        }
        self.put_manifest(repo, tag, top);
    }
}

fn challenge_params(ch: &str) -> BTreeMap<String, String> {
    let rest = ch.split_once(' ').map_or("", |(_, r)| r);
    let mut out = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, v)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let v = v.trim_start();
        let (val, next) = if let Some(q) = v.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match v.find(',') {
                Some(end) => (v[..end].to_string(), &v[end..]),
                None => (v.to_string(), ""),
            }
        };
        out.insert(k, val);
        s = next.trim_start_matches([',', ' ']);
    }
    out
}

/// Pushes to a plain-HTTP registry at `host` (`127.0.0.1:PORT`), answering Basic or Bearer
/// challenges with `creds`.
pub fn push(host: &str, repo: &str, tag: &str, p: &dyn Pushable, creds: Option<(&str, &str)>) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("http client");
    Pusher::new(client, &format!("http://{host}"), creds).push(repo, tag, p);
}

impl Registry {
    /// Pushes with this registry's scheme, CA and credentials.
    pub fn push(&self, repo: &str, tag: &str, p: &dyn Pushable) {
        Pusher::for_registry(self).push(repo, tag, p);
    }

    /// `127.0.0.1:PORT/REPO:TAG`.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.host())
    }
}

fn write_blob(dir: &Path, b: &Blob) {
    let p = dir.join("blobs/sha256").join(b.hex());
    if !p.exists() {
        fs::write(&p, b.data.as_slice()).expect("write layout blob");
    }
}

/// Writes an OCI image layout: `oci-layout`, `index.json` with one entry per (ref name,
/// image or index), annotated `org.opencontainers.image.ref.name`, and `blobs/sha256/*`.
pub fn write_oci_layout(dir: &Path, refs: &[(&str, &dyn Pushable)]) {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("create layout");
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let mut manifests = Vec::new();
    for (name, p) in refs {
        for b in all_blobs(*p) {
            write_blob(dir, b);
        }
        let mut d = p.top().descriptor();
        d["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": name });
        manifests.push(d);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index json"),
    )
    .expect("write index.json");
}

/// Appends the tree under `dir` to a tar at `tar_path` (paths relative to `dir`).
fn tar_dir(dir: &Path, tar_path: &Path) {
    let f = fs::File::create(tar_path).expect("create archive");
    let mut b = tar::Builder::new(f);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(".", dir).expect("tar directory");
    b.into_inner().expect("finish archive");
}

/// `write_oci_layout` into a tar file (what `oci-archive:` transports read).
pub fn write_oci_archive(tar_path: &Path, refs: &[(&str, &dyn Pushable)]) {
    let tmp = tempfile::tempdir().expect("temp dir");
    write_oci_layout(tmp.path(), refs);
    tar_dir(tmp.path(), tar_path);
}

/// Writes a classic `docker save` archive: `manifest.json` (Config, RepoTags, Layers),
/// `repositories`, `<config hex>.json`, and `<diff id hex>/layer.tar` (uncompressed).
pub fn write_docker_archive(tar_path: &Path, images: &[(&str, &Image)]) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (repo_tag, img) in images {
        let config_name = format!("{}.json", img.config.hex());
        fs::write(dir.join(&config_name), img.config.data.as_slice()).expect("write config");
        let mut layers = Vec::new();
        for l in &img.layers {
            let id = l.diff_id.trim_start_matches("sha256:").to_string();
            let ldir = dir.join(&id);
            if !ldir.exists() {
                fs::create_dir_all(&ldir).expect("layer dir");
                fs::write(ldir.join("layer.tar"), l.tar()).expect("write layer.tar");
                fs::write(ldir.join("VERSION"), "1.0").expect("write VERSION");
            }
            layers.push(format!("{id}/layer.tar"));
        }
        if let (Some((repo, tag)), Some(last)) = (repo_tag.rsplit_once(':'), layers.last()) {
            repositories.entry(repo.to_string()).or_default().insert(
                tag.to_string(),
                last.trim_end_matches("/layer.tar").to_string(),
            );
        }
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layers,
        }));
    }
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).expect("manifest json"),
    )
    .expect("write manifest.json");
    fs::write(
        dir.join("repositories"),
        serde_json::to_vec(&repositories).expect("repositories json"),
    )
    .expect("write repositories");
    tar_dir(dir, tar_path);
}
