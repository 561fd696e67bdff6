//! Compose manifests: parse (YAML), interpolate (`${VAR…}`, `.env`), merge, normalize and
//! validate a project into the typed model the planner works from. Pure: no I/O beyond reading
//! the project's own files through a seam, no tokio, no unsafe.

pub mod convert;
pub mod dotenv;
pub mod error;
pub mod files;
pub mod interpolate;
pub mod load;
pub mod merge;
pub mod model;
pub mod syntax;
pub mod yaml;

pub use error::{LoadError, LoadErrors, Location, Subject};
pub use files::{ConfinedFiles, MemFiles, OsFiles, ProjectFiles};
pub use model::*;
pub use load::{load_project, LoadOptions};
