//! The one error type of the spec builder: every variant names the field and the value.

use std::io;

use crate::error::{Categorized, Category};

/// Why a container's OCI spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("image {image}: no command specified (the image has no entrypoint or cmd and none was given)")]
    NoCommand { image: String },
    #[error("{field}: {value:?} is invalid: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("user {user:?}: no such user in the /etc/passwd of image {image}")]
    UnknownUser { user: String, image: String },
    #[error("group {group:?}: no such group in the /etc/group of image {image}")]
    UnknownGroup { group: String, image: String },
    #[error("image {image}: reading {path} from the root filesystem: {source}")]
    Rootfs {
        image: String,
        path: String,
        source: io::Error,
    },
    #[error("capability {value:?} is unknown")]
    UnknownCapability { value: String },
    #[error("mount point {destination} is given twice")]
    DuplicateMount { destination: String },
    #[error(
        "ulimit {name}: hard limit {requested} is above the host's hard limit {host} and this \
         process lacks CAP_SYS_RESOURCE to raise it; use a value of at most {host}"
    )]
    UlimitAboveHost {
        name: &'static str,
        requested: String,
        host: u64,
    },
    #[error("sysctl {key}: {reason}")]
    Sysctl { key: String, reason: String },
    #[error("building the oci spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

impl SpecError {
    pub(crate) fn invalid(
        field: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        SpecError::Invalid {
            field,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

impl Categorized for SpecError {
    fn category(&self) -> Category {
        match self {
            SpecError::Rootfs { .. } | SpecError::Build(_) => Category::Internal,
            SpecError::NoCommand { .. }
            | SpecError::Invalid { .. }
            | SpecError::UnknownUser { .. }
            | SpecError::UnknownGroup { .. }
            | SpecError::UnknownCapability { .. }
            | SpecError::DuplicateMount { .. }
            | SpecError::UlimitAboveHost { .. }
            | SpecError::Sysctl { .. } => Category::Invalid,
        }
    }
}
