//! Loader errors: every problem names where it is (file:line:column), what it is about
//! (service and field, or the top-level section) and what to do. The loader collects them all and
//! returns a `LoadErrors`, so one run shows every problem.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Categorized, Category};

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: Arc<Path>,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// What a finding is about: a service's field, or a top-level path such as `networks.front`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub service: Option<String>,
    /// Dotted path inside the service (`ports[1].published`) or from the top level.
    pub field: String,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.service, self.field.is_empty()) {
            (Some(s), false) => write!(f, "service {s:?}: {}", self.field),
            (Some(s), true) => write!(f, "service {s:?}"),
            (None, false) => f.write_str(&self.field),
            (None, true) => Ok(()),
        }
    }
}

fn prefix(location: &Option<Location>, subject: &Subject) -> String {
    let mut out = String::new();
    if let Some(l) = location {
        out.push_str(&l.to_string());
        out.push_str(": ");
    }
    let s = subject.to_string();
    if !s.is_empty() {
        out.push_str(&s);
        out.push_str(": ");
    }
    out
}

fn fmt_hint(h: &Option<String>) -> String {
    match h {
        Some(h) => format!(" ({h})"),
        None => String::new(),
    }
}

/// One loader problem.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {}: {source}{}", .path.display(), fmt_hint(.hint))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
        hint: Option<String>,
    },
    /// A file or document is over a safety limit (size, nesting, aliases, count).
    #[error("{}{what} exceeds the limit of {limit}; simplify the file", prefix(.location, &Subject::default()))]
    Limit {
        location: Option<Location>,
        what: String,
        limit: usize,
    },
    /// No compose file in the project directory.
    #[error("no compose file in {}: expected one of compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml (or pass -f FILE)", .dir.display())]
    NoComposeFile { dir: PathBuf },
    /// The YAML itself is malformed.
    #[error("{location}: invalid YAML: {message}")]
    Syntax { location: Location, message: String },
    /// A value is wrong (type, format, reference, conflict).
    #[error("{}{message}{}", prefix(.location, .subject), fmt_hint(.hint))]
    Invalid {
        location: Option<Location>,
        subject: Subject,
        message: String,
        hint: Option<String>,
    },
    /// A Compose feature dockmaster deliberately does not support.
    #[error("{}unsupported: {message}{}", prefix(.location, .subject), fmt_hint(.hint))]
    Unsupported {
        location: Option<Location>,
        subject: Subject,
        message: String,
        hint: Option<String>,
    },
    /// `${VAR…}` substitution failed.
    #[error("{}{message} (set the variable in the environment or .env, or escape `$` as `$$`)", prefix(.location, .subject))]
    Interpolation {
        location: Option<Location>,
        subject: Subject,
        message: String,
    },
    /// An env file (`.env`, `--env-file`, `env_file:`) is malformed.
    #[error("{}:{line}: {message}", .path.display())]
    EnvFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A required file is missing.
    #[error("{}{what} {} not found{}", prefix(.location, .subject), .path.display(), fmt_hint(.hint))]
    MissingFile {
        location: Option<Location>,
        subject: Subject,
        what: &'static str,
        path: PathBuf,
        hint: Option<String>,
    },
    /// `include` (or `-f` files including each other) loops.
    #[error("{}include cycle: {}; remove one of the includes", prefix(.location, &Subject::default()), fmt_chain(.chain))]
    IncludeCycle {
        location: Option<Location>,
        chain: Vec<PathBuf>,
    },
    /// `extends` loops.
    #[error("{}extends cycle: {}; break the chain", prefix(.location, &Subject::default()), .chain.join(" -> "))]
    ExtendsCycle {
        location: Option<Location>,
        chain: Vec<String>,
    },
    /// `depends_on` loops.
    #[error("{}dependency cycle detected: {}; remove one of the depends_on entries", prefix(.location, &Subject::default()), .chain.join(" -> "))]
    DependencyCycle {
        location: Option<Location>,
        chain: Vec<String>,
    },
}

fn fmt_chain(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

impl LoadError {
    pub fn invalid(
        location: Option<Location>,
        service: Option<&str>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> LoadError {
        LoadError::Invalid {
            location,
            subject: Subject {
                service: service.map(str::to_string),
                field: field.into(),
            },
            message: message.into(),
            hint: None,
        }
    }

    pub fn unsupported(
        location: Option<Location>,
        service: Option<&str>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> LoadError {
        LoadError::Unsupported {
            location,
            subject: Subject {
                service: service.map(str::to_string),
                field: field.into(),
            },
            message: message.into(),
            hint: None,
        }
    }

    /// Adds (or replaces) the "what to do" part.
    pub fn with_hint(mut self, h: impl Into<String>) -> LoadError {
        match &mut self {
            LoadError::Invalid { hint, .. }
            | LoadError::Unsupported { hint, .. }
            | LoadError::MissingFile { hint, .. }
            | LoadError::Read { hint, .. } => *hint = Some(h.into()),
            _ => {}
        }
        self
    }

    /// Where the problem is, when known.
    pub fn location(&self) -> Option<&Location> {
        match self {
            LoadError::Limit { location, .. }
            | LoadError::Invalid { location, .. }
            | LoadError::Unsupported { location, .. }
            | LoadError::Interpolation { location, .. }
            | LoadError::MissingFile { location, .. }
            | LoadError::IncludeCycle { location, .. }
            | LoadError::ExtendsCycle { location, .. }
            | LoadError::DependencyCycle { location, .. } => location.as_ref(),
            LoadError::Syntax { location, .. } => Some(location),
            _ => None,
        }
    }

    pub fn is_unsupported(&self) -> bool {
        matches!(self, LoadError::Unsupported { .. })
    }
}

impl Categorized for LoadError {
    fn category(&self) -> Category {
        match self {
            LoadError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Category::NotFound
            }
            LoadError::Read { .. } => Category::Internal,
            LoadError::NoComposeFile { .. } | LoadError::MissingFile { .. } => Category::NotFound,
            _ => Category::Invalid,
        }
    }
}

/// Every problem found in one load, in source order where known.
#[derive(Debug)]
pub struct LoadErrors(pub Vec<LoadError>);

impl LoadErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, LoadError> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<LoadError> for LoadErrors {
    fn from(e: LoadError) -> LoadErrors {
        LoadErrors(vec![e])
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

impl Categorized for LoadErrors {
    fn category(&self) -> Category {
        // Invalid input wins: fixing the files is what helps.
        let cats: Vec<Category> = self.0.iter().map(Categorized::category).collect();
        if cats.contains(&Category::Invalid) || cats.is_empty() {
            Category::Invalid
        } else {
            cats[0]
        }
    }
}
