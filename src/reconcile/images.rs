//! Resolving a project's images to digests: from the local store, pulling what the pull
//! policy asks for (all pulls happen before anything is stopped). Every resolved image is also
//! recorded under `repo@digest`, so a rollback finds it after the tag moved on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::AgentConfig;
use crate::image::metadata::ImageRecord;
use crate::image::pull::{NoProgress, PullOptions, Puller};
use crate::image::reference::Reference;
use crate::image::registry::{ClientOptions, RegistryClient};
use crate::image::ImageStore;
use crate::manifest::model::{Project, PullPolicy, Service};

use super::ReconcileError;

/// What a service's image resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// As written in the manifest.
    pub reference: String,
    /// `repo@sha256:…`: what containers are created from.
    pub pinned: String,
    /// The manifest digest (`sha256:…`), part of the config hash.
    pub digest: String,
    /// Layer diff IDs, bottom first (volume copy-up reads them).
    pub layers: Vec<String>,
}

impl Resolved {
    fn of(reference: &str, pinned: String, record: &ImageRecord) -> Resolved {
        Resolved {
            reference: reference.to_string(),
            pinned,
            digest: record.manifest_digest.to_string(),
            layers: record
                .layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect(),
        }
    }
}

/// When images are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Only what is stored (plan): a missing image resolves to nothing.
    LocalOnly,
    /// As each service's `pull_policy` says (apply).
    AsPolicy,
}

/// Images (as written in manifests) pulled again even though a copy is stored: a `follow`
/// tag that moved.
pub type Refresh = std::collections::BTreeSet<String>;

/// Service -> (image as written, manifest digest) to keep resolving to while the manifest
/// still names that image, even if the local tag moved meanwhile (a `follow` service's pull of
/// the same tag must not move `pin` and `notify` services along).
pub type Keep = BTreeMap<String, (String, String)>;

/// What an agent's apply adds to resolving: tags to pull again, digests to keep, and who is
/// told about pulls.
#[derive(Clone, Copy)]
pub struct ResolveWith<'a> {
    pub refresh: &'a Refresh,
    pub keep: &'a Keep,
    pub observer: Option<&'a PullObserver>,
}

/// Told about every pull: whether it succeeded, the bytes of the image's layers, how long
/// it took (the agent's image pull metrics).
#[derive(Clone)]
pub struct PullObserver(pub Arc<dyn Fn(bool, u64, std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for PullObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullObserver")
    }
}

fn pinned(record: &ImageRecord) -> Result<(Reference, String), ReconcileError> {
    let r = Reference::parse_pullable(&record.reference).map_err(|e| ReconcileError::Image {
        image: record.reference.clone(),
        reason: e.to_string(),
    })?;
    let pinned = format!("{}@{}", r.name(), record.manifest_digest);
    Ok((r, pinned))
}

/// Makes `repo@digest` find this image even after its tag moves.
fn record_pinned(store: &ImageStore, record: &ImageRecord) -> Result<String, ReconcileError> {
    let (_, pinned) = pinned(record)?;
    let have = store
        .db
        .get(&pinned)
        .map_err(|e| ReconcileError::Image {
            image: pinned.clone(),
            reason: e.to_string(),
        })?
        .is_some();
    if !have {
        let mut alias = record.clone();
        alias.reference = pinned.clone();
        store.db.put(alias).map_err(|e| ReconcileError::Image {
            image: pinned.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(pinned)
}

/// Resolves every service's image: service name -> image (absent when `LocalOnly` and
/// not stored).
pub fn resolve(
    root: &Path,
    config: &AgentConfig,
    project: &Project,
    fetch: Fetch,
    log: &mut dyn FnMut(String),
) -> Result<BTreeMap<String, Resolved>, ReconcileError> {
    resolve_refreshing(
        root,
        config,
        project,
        fetch,
        &ResolveWith {
            refresh: &Refresh::new(),
            keep: &Keep::new(),
            observer: None,
        },
        log,
    )
}

/// [`resolve`], pulling the images in `refresh` again (unless `LocalOnly`).
pub fn resolve_refreshing(
    root: &Path,
    config: &AgentConfig,
    project: &Project,
    fetch: Fetch,
    with: &ResolveWith<'_>,
    log: &mut dyn FnMut(String),
) -> Result<BTreeMap<String, Resolved>, ReconcileError> {
    let ResolveWith {
        refresh,
        keep,
        observer,
    } = *with;
    let store = ImageStore::open(root).map_err(|e| ReconcileError::Image {
        image: String::new(),
        reason: e.to_string(),
    })?;
    // Looked up once per image, however many services use it (each lookup reads the
    // image records).
    let mut stored: BTreeMap<&str, Option<ImageRecord>> = BTreeMap::new();
    for service in project.services.values() {
        stored
            .entry(service.image.as_str())
            .or_insert_with(|| store.find(&service.image).ok());
    }
    // Which references to pull, once each.
    let mut to_pull: BTreeMap<String, Reference> = BTreeMap::new();
    for service in project.services.values() {
        let stored = &stored[service.image.as_str()];
        let policy = service.pull_policy.unwrap_or(PullPolicy::Missing);
        let pull = match (fetch, &policy) {
            (Fetch::LocalOnly, _) => false,
            (_, PullPolicy::Always) => true,
            (_, PullPolicy::Never) => {
                if stored.is_none() {
                    return Err(ReconcileError::Image {
                        image: service.image.clone(),
                        reason: format!(
                            "service {}: pull_policy is never and the image is not stored",
                            service.name
                        ),
                    });
                }
                false
            }
            _ => stored.is_none() || refresh.contains(&service.image),
        };
        if pull {
            let r =
                Reference::parse_pullable(&service.image).map_err(|e| ReconcileError::Image {
                    image: service.image.clone(),
                    reason: format!("service {}: {e}", service.name),
                })?;
            to_pull.insert(service.image.clone(), r);
        }
    }
    if !to_pull.is_empty() {
        let client =
            RegistryClient::new(ClientOptions::from_config(&config.registries)).map_err(|e| {
                ReconcileError::Image {
                    image: String::new(),
                    reason: e.to_string(),
                }
            })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| ReconcileError::Image {
                image: String::new(),
                reason: format!("start the async runtime: {e}"),
            })?;
        let puller = Arc::new(Puller::new(store.clone(), client, Arc::new(NoProgress)));
        for image in to_pull.keys() {
            log(format!("pulling {image}"));
        }
        let results = rt.block_on(async {
            let mut tasks = Vec::new();
            for (image, r) in &to_pull {
                let puller = puller.clone();
                let r = r.clone();
                let image = image.clone();
                let observer = observer.cloned();
                tasks.push(tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let result = puller.pull(&r, &PullOptions::default()).await;
                    if let Some(o) = observer {
                        let bytes = result
                            .as_ref()
                            .map_or(0, |rec| rec.layers.iter().map(|l| l.size).sum());
                        (o.0)(result.is_ok(), bytes, started.elapsed());
                    }
                    (image, result)
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await);
            }
            out
        });
        let mut failures = Vec::new();
        let mut failed = Vec::new();
        for joined in results {
            match joined {
                Ok((_, Ok(_))) => {}
                Ok((image, Err(e))) => {
                    failures.push(format!("{image}: {e}"));
                    failed.push(image);
                }
                Err(e) => failures.push(format!("pull task: {e}")),
            }
        }
        if !failures.is_empty() {
            return Err(ReconcileError::Image {
                image: failed.join(", "),
                reason: format!("pull failed (nothing was changed): {}", failures.join("; ")),
            });
        }
    }
    // What each image resolved to, once per image.
    let mut resolved: BTreeMap<&str, Option<Resolved>> = BTreeMap::new();
    for (image, record) in stored {
        let record = match (to_pull.contains_key(image), record) {
            (true, _) => store.find(image).ok(),
            (false, record) => record,
        };
        let Some(record) = record else {
            resolved.insert(image, None);
            continue;
        };
        let pinned = match fetch {
            Fetch::AsPolicy => record_pinned(&store, &record)?,
            Fetch::LocalOnly => pinned(&record)?.1,
        };
        resolved.insert(image, Some(Resolved::of(image, pinned, &record)));
    }
    let kept = |service: &Service| -> Option<Resolved> {
        let (image, digest) = keep.get(&service.name)?;
        if image != &service.image {
            return None;
        }
        let r = Reference::parse_pullable(image).ok()?;
        let alias = format!("{}@{digest}", r.name());
        let record = store.find(&alias).ok()?;
        Some(Resolved::of(image, alias, &record))
    };
    Ok(project
        .services
        .values()
        .filter_map(|s| {
            if let Some(r) = kept(s) {
                return Some((s.name.clone(), r));
            }
            let r = resolved.get(s.image.as_str())?.clone()?;
            Some((s.name.clone(), r))
        })
        .collect())
}
