//! Converging the host to a project: translate services into containers, observe what
//! runs, execute the planner's steps in dependency order, gate updates on health and roll
//! back, and record each generation.

pub mod apply;
pub mod down;
pub mod generations;
pub mod images;
pub mod networks;
pub mod observe;
pub mod translate;
pub mod volumes;

use crate::error::{Categorized, Category};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("project {project}: {what}: {reason}")]
    Invalid {
        project: String,
        what: String,
        reason: String,
    },
    #[error(transparent)]
    Plan(crate::plan::PlanError),
    #[error(transparent)]
    Translate(translate::TranslateError),
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Volume(String),
    #[error("list containers: {0}")]
    Containers(crate::runtime::container::ContainerError),
    #[error("service {service}: {reason}")]
    Container { service: String, reason: String },
    #[error("service {service}: dependency {dependency} ({condition}): {reason}")]
    Dependency {
        service: String,
        dependency: String,
        condition: String,
        reason: String,
    },
    #[error("service {service}: {reason}")]
    Gate { service: String, reason: String },
    #[error("project {project}: the update failed ({reason}) and so did the rollback: {rollback}")]
    Rollback {
        project: String,
        reason: String,
        rollback: String,
    },
    #[error("{what}")]
    State {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Categorized for ReconcileError {
    fn category(&self) -> Category {
        match self {
            ReconcileError::Invalid { .. }
            | ReconcileError::Plan(_)
            | ReconcileError::Translate(_) => Category::Invalid,
            ReconcileError::Image { .. } | ReconcileError::Network(_) => Category::Transient,
            ReconcileError::Gate { .. } | ReconcileError::Dependency { .. } => Category::Conflict,
            _ => Category::Internal,
        }
    }
}
