//! Creating a container: from a stored image and [`ContainerOptions`] to a container directory
//! with its record and OCI bundle, ready for a shim. Shared by `run` and (later) the agent.

use std::path::Path;
use std::time::SystemTime;

use crate::error::{Categorized, Category};
use crate::health::{HealthConfig, HealthConfigError, RestartPolicy};
use crate::image::manifest::{parse_config, ImageConfig, MAX_CONFIG_SIZE};
use crate::image::{ImageError, ImageStore};
use crate::network::sandbox::{ContainerNetwork, NetMode};
use crate::runtime::container::{
    generate_id, generate_name, ContainerError, ContainerPaths, ContainerRecord, ContainerStore,
};
use crate::runtime::logs::LogConfig;
use crate::runtime::signal::parse_signal;
use crate::runtime::spec::{
    build_spec, BindMount, ContainerOptions, HostLimits, NetworkMode, OverlayRootfs, SpecError,
};

/// Docker's default `stop` grace period.
pub const DEFAULT_STOP_GRACE_SECS: u64 = 10;

/// What to create besides the spec options.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The image as the user names it (reference, id or digest); it must be stored.
    pub image: String,
    /// `--name`; generated when absent.
    pub name: Option<String>,
    pub options: ContainerOptions,
    /// `--rm`.
    pub auto_remove: bool,
    /// `stop_grace_period`; Docker's 10 s when absent.
    pub stop_grace_secs: Option<u64>,
    /// `stop_signal`; the image's StopSignal, else SIGTERM, when absent.
    pub stop_signal: Option<String>,
    /// User labels (`--label`), kept with the identity annotations.
    pub labels: std::collections::BTreeMap<String, String>,
    pub log: LogConfig,
    /// How the container is networked (its shim sets it up at each start).
    pub network: ContainerNetwork,
}

/// How the shim supervises the container: given to [`create_supervised`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervision {
    /// `--restart` / Compose `restart:`.
    pub restart: RestartPolicy,
    /// The container's own healthcheck (`--health-*`, `--no-healthcheck`, Compose
    /// `healthcheck:`), merged over the image's HEALTHCHECK as Docker does; `None` keeps the
    /// image's.
    pub healthcheck: Option<HealthConfig>,
    /// Restart the container when it turns unhealthy (ours; Docker never does).
    pub restart_unhealthy: bool,
}

impl Default for Supervision {
    /// No restart policy, the image's healthcheck, unhealthy containers restarted.
    fn default() -> Self {
        Supervision {
            restart: RestartPolicy::No,
            healthcheck: None,
            restart_unhealthy: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("image {image}: read its config: {reason}")]
    Config { image: String, reason: String },
    #[error("container {name} (image {image})")]
    Spec {
        name: String,
        image: String,
        #[source]
        source: SpecError,
    },
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("invalid stop signal {0:?}")]
    StopSignal(String),
    #[error("invalid log options: {0}")]
    Log(String),
    #[error("container {name}: {source}")]
    Healthcheck {
        name: String,
        #[source]
        source: HealthConfigError,
    },
    #[error("restart policy {0} cannot be combined with automatic removal (--rm)")]
    AutoRemoveRestart(RestartPolicy),
    #[error("container {id}: {what}")]
    Io {
        id: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Categorized for CreateError {
    fn category(&self) -> Category {
        match self {
            CreateError::Image(e) => e.category(),
            CreateError::Spec { source, .. } => source.category(),
            CreateError::Container(e) => e.category(),
            CreateError::StopSignal(_)
            | CreateError::Log(_)
            | CreateError::Healthcheck { .. }
            | CreateError::AutoRemoveRestart(_) => Category::Invalid,
            CreateError::Config { .. } | CreateError::Io { .. } => Category::Internal,
        }
    }
}

/// Reads a stored image's config.
pub fn image_config(
    store: &ImageStore,
    image: &str,
) -> Result<(crate::image::metadata::ImageRecord, ImageConfig), CreateError> {
    let record = store.find(image)?;
    let bytes = store
        .content
        .read(&record.config_digest, MAX_CONFIG_SIZE as u64)
        .map_err(|e| CreateError::Config {
            image: image.to_string(),
            reason: e.to_string(),
        })?;
    let config = parse_config(&bytes).map_err(|e| CreateError::Config {
        image: image.to_string(),
        reason: e.to_string(),
    })?;
    Ok((record, config))
}

/// Creates the container's directory, record and bundle, with the default [`Supervision`].
/// Nothing runs yet.
pub fn create(
    root: &Path,
    req: CreateRequest,
) -> Result<(ContainerRecord, ContainerPaths), CreateError> {
    create_supervised(root, req, Supervision::default())
}

/// [`create`] with a restart policy and healthcheck.
pub fn create_supervised(
    root: &Path,
    req: CreateRequest,
    supervision: Supervision,
) -> Result<(ContainerRecord, ContainerPaths), CreateError> {
    let images = ImageStore::open(root)?;
    let (image, config) = image_config(&images, &req.image)?;
    req.log
        .validate()
        .map_err(|e| CreateError::Log(e.to_string()))?;
    if req.auto_remove && !supervision.restart.is_no() {
        return Err(CreateError::AutoRemoveRestart(supervision.restart));
    }
    let id = generate_id().map_err(|source| CreateError::Io {
        id: String::new(),
        what: "generate an id".into(),
        source,
    })?;
    let name = req.name.clone().unwrap_or_else(|| generate_name(&id));
    let mut options = req.options;
    // Bridge mode and `container:` join a namespace prepared by the shim at start (the
    // latter's path is only known then: the shim rewrites it in the engine's spec).
    options.network = match req.network.mode {
        NetMode::None => NetworkMode::None,
        NetMode::Host => NetworkMode::Host,
        NetMode::Bridge | NetMode::Container(_) => {
            NetworkMode::Join(crate::network::manager::netns_path(root, &id))
        }
    };
    let sandbox = ContainerStore::new(root).paths(&id).sandbox_files();
    for (source, destination) in sandbox.mounts() {
        options.binds.push(BindMount {
            source,
            destination: destination.to_string(),
            read_only: false,
        });
    }
    options.identity.container_id = id.clone();
    options.identity.name = name.clone();
    if options.identity.image.is_empty() {
        options.identity.image = req.image.clone();
    }
    let layers_top_first = image
        .layers
        .iter()
        .rev()
        .map(|l| images.snapshots.path(&l.diff_id))
        .collect();
    let spec = build_spec(
        &config,
        &options,
        &OverlayRootfs::new(layers_top_first),
        &HostLimits::current(),
    )
    .map_err(|source| CreateError::Spec {
        name: name.clone(),
        image: req.image.clone(),
        source,
    })?;
    let stop_signal = match req
        .stop_signal
        .as_deref()
        .or(config.config.stop_signal.as_deref())
    {
        None | Some("") => libc::SIGTERM,
        Some(s) => parse_signal(s).ok_or_else(|| CreateError::StopSignal(s.to_string()))?,
    };
    let healthcheck = HealthConfig::merge(
        supervision.healthcheck,
        config
            .config
            .healthcheck
            .as_ref()
            .map(HealthConfig::from_image),
    );
    if let Some(h) = &healthcheck {
        h.validate().map_err(|source| CreateError::Healthcheck {
            name: name.clone(),
            source,
        })?;
    }
    let process_args = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let record = ContainerRecord {
        id: id.clone(),
        name,
        image: req.image,
        image_id: image.config_digest.to_string(),
        layers: image.layers.iter().map(|l| l.diff_id.to_string()).collect(),
        command: process_args,
        created: SystemTime::now(),
        auto_remove: req.auto_remove,
        stop_signal,
        stop_grace_secs: req.stop_grace_secs.unwrap_or(DEFAULT_STOP_GRACE_SECS),
        labels: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(req.labels)
            .collect(),
        log_max_bytes: req.log.max_size,
        log_max_files: req.log.max_files,
        network: Some(req.network),
        restart: supervision.restart,
        healthcheck,
        restart_unhealthy: supervision.restart_unhealthy,
        shell: config.config.shell.clone(),
    };
    let store = ContainerStore::new(root);
    let paths = store.create(&record)?;
    let bytes = serde_json::to_vec_pretty(&spec).map_err(|e| CreateError::Io {
        id: id.clone(),
        what: "serialize the spec".into(),
        source: e.into(),
    })?;
    if let Err(source) = crate::fsutil::write_replace(&paths.spec(), &bytes, !record.auto_remove) {
        let _ = store.remove(&id);
        return Err(CreateError::Io {
            id,
            what: format!("write {}", paths.spec().display()),
            source,
        });
    }
    Ok((record, paths))
}
