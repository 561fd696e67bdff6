//! Project commands on Compose files: `config` (print the normalized project like
//! `docker compose config`) and `validate` (only check). Both load the project with the
//! process environment and the current directory; every problem is printed, not just the first.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::manifest::{load_project, LoadOptions, OsFiles, Project};

/// The flags `docker compose` takes to find and name a project.
#[derive(Debug, Clone, Args)]
pub struct ProjectArgs {
    /// Compose file (repeatable; later files override earlier ones). Default: compose.yaml
    /// (or compose.yml, docker-compose.yml, docker-compose.yaml) plus its override file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Project name (default: COMPOSE_PROJECT_NAME, the top-level name:, the directory name).
    #[arg(short = 'p', long = "project-name", value_name = "NAME")]
    pub project_name: Option<String>,
    /// Directory relative paths are resolved against (default: the first file's directory).
    #[arg(long, value_name = "DIR")]
    pub project_directory: Option<PathBuf>,
    /// Profile to enable (repeatable; default: COMPOSE_PROFILES).
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// Environment file for interpolation (repeatable; default: .env in the project directory).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// The project directory (same as --project-directory; default: the current directory).
    #[arg(value_name = "DIR", conflicts_with = "project_directory")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: Format,
    /// Only validate, print nothing on success.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the service names, one per line.
    #[arg(long)]
    pub services: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
}

pub(crate) fn options(a: &ProjectArgs) -> anyhow::Result<LoadOptions> {
    let environment: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    Ok(LoadOptions {
        files: a.files.clone(),
        project_directory: a.project_directory.clone().or_else(|| a.dir.clone()),
        project_name: a.project_name.clone(),
        profiles: a.profiles.clone(),
        env_files: a.env_files.clone(),
        environment,
        cwd: std::env::current_dir()?,
        confine_to: None,
    })
}

/// Loads the project, printing warnings; `None` (errors printed) when it is invalid.
pub(crate) fn load(a: &ProjectArgs) -> anyhow::Result<Option<Project>> {
    let opts = options(a)?;
    let mut err = std::io::stderr().lock();
    match load_project(&OsFiles, &opts) {
        Ok(p) => {
            print_warnings(&mut err, &p)?;
            Ok(Some(p))
        }
        Err(errors) => {
            for e in errors.iter() {
                writeln!(err, "error: {e}")?;
            }
            let unsupported = errors.iter().filter(|e| e.is_unsupported()).count();
            write!(
                err,
                "{} problem{} found",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )?;
            // Last line, so tools reading the tail see that unsupported features are involved.
            if unsupported > 0 {
                write!(err, " ({unsupported} unsupported)")?;
            }
            writeln!(err)?;
            Ok(None)
        }
    }
}

/// Prints warnings once per place: a warning coming from a shared anchor or base service is
/// listed with every service it applies to rather than repeated.
fn print_warnings(out: &mut impl Write, p: &Project) -> std::io::Result<()> {
    // (location, field, message) → services, in first-seen order.
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for w in &p.warnings {
        let location = w
            .location
            .as_ref()
            .map(|l| format!("{l}: "))
            .unwrap_or_default();
        let rest = if w.field.is_empty() {
            w.message.clone()
        } else {
            format!("{}: {}", w.field, w.message)
        };
        let key = format!("{location}\0{rest}");
        let i = *index.entry(key).or_insert_with(|| {
            groups.push((location, rest, Vec::new()));
            groups.len() - 1
        });
        if let Some(s) = &w.service {
            groups[i].2.push(format!("{s:?}"));
        }
    }
    for (location, rest, services) in groups {
        let who = match services.len() {
            0 => String::new(),
            1 => format!("service {}: ", services[0]),
            n if n <= 5 => format!("services {}: ", services.join(", ")),
            n => format!("services {} and {} more: ", services[..5].join(", "), n - 5),
        };
        writeln!(out, "warning: {location}{who}{rest}")?;
    }
    Ok(())
}

/// `dockmaster config`.
pub fn config(a: ConfigArgs) -> anyhow::Result<i32> {
    let Some(project) = load(&a.project)? else {
        return Ok(1);
    };
    if a.quiet {
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    if a.services {
        for name in project.services.keys() {
            writeln!(out, "{name}")?;
        }
        return Ok(0);
    }
    match a.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &project)?;
            writeln!(out)?;
        }
        Format::Yaml => out.write_all(to_yaml(&project)?.as_bytes())?,
    }
    Ok(0)
}

/// `dockmaster validate`.
pub fn validate(a: ValidateArgs) -> anyhow::Result<i32> {
    Ok(if load(&a.project)?.is_some() { 0 } else { 1 })
}

/// The project as YAML (compose omits the `command: null` / `entrypoint: null` JSON needs).
pub fn to_yaml(project: &Project) -> anyhow::Result<String> {
    let text = serde_saphyr::to_string(project)?;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if indent == 4 && (t == "command: null" || t == "entrypoint: null") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}
