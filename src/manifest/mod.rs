//! Compose manifests: parse (YAML), interpolate (`${VAR…}`, `.env`), merge, normalize and
//! validate a project into the typed model the planner works from. Pure: no I/O beyond reading
//! the project's own files through a seam, no tokio, no unsafe.
//!
//! Entry point: [`load_project`]`(&dyn ProjectFiles, &LoadOptions) -> Result<Project,
//! LoadErrors>`. The pipeline follows compose-go (what `docker compose` runs):
//!
//! - `load`: files (`-f`, `COMPOSE_FILE` or the default names plus override), the
//!   interpolation environment (given map wins over `.env` / `--env-file`), the project name;
//!   then per file and YAML document: interpolation ([`interpolate`]), relative paths made
//!   absolute, `extends`, `include`, and the override merge ([`merge`]) into one tree.
//! - [`yaml`]: the positioned tree (line/column of every value, `!reset`/`!override`, merge
//!   keys, alias-bomb and size limits) that is the input representation.
//! - `convert`: tree → [`model`] (the validated representation), every problem collected;
//!   profiles, compose's normalization (default network, resource names) and consistency
//!   checks (references, dependency cycles).
//! - [`syntax`]: the short syntaxes and units (ports, volumes, durations, sizes, shell words).
//!
//! Serializing a [`Project`] gives `docker compose config --format json`; that JSON loads back
//! to the same model.

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
pub use load::{load_project, LoadOptions};
pub use model::*;
