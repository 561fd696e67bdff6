//! Loading a project the way `docker compose` (compose-go) does: find the files, build the
//! interpolation environment (`.env` / `--env-file`, the given environment winning), choose the
//! project name, then for every file and YAML document: interpolate, resolve relative paths,
//! apply `extends`, import `include`s, and merge into the model with the override rules. The
//! merged tree is then converted into the typed model (`convert`), which reports every problem
//! at once.
//!
//! All file access goes through `ProjectFiles`; the environment is a map given by the caller.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dotenv;
use super::error::{LoadError, LoadErrors, Location, Subject};
use super::files::{normalize, ConfinedFiles, ProjectFiles};
use super::interpolate;
use super::merge::{merge, merge_mappings, strip_tags};
use super::model::{Project, Warning};
use super::syntax::{normalize_project_name, parse_volume_spec};
use super::yaml::{self, Key, Node, Value, MAX_FILE_BYTES};

/// File names looked up in the project directory when no `-f` is given, in compose's order.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];
/// Override files picked up next to the default file.
pub const DEFAULT_OVERRIDES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// Bounds on include/extends chains (untrusted input).
const MAX_CHAIN: usize = 32;
/// Env files are small; anything bigger is a mistake or an attack.
const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// How to load a project: what `docker compose` takes from its flags and environment.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `-f` files in order (relative to `cwd`); empty: the default files of the project
    /// directory, or `COMPOSE_FILE`.
    pub files: Vec<PathBuf>,
    /// `--project-directory` (relative to `cwd`); default: the first file's directory.
    pub project_directory: Option<PathBuf>,
    /// `-p`; default: `COMPOSE_PROJECT_NAME`, then `name:`, then the directory name.
    pub project_name: Option<String>,
    /// `--profile`; default: `COMPOSE_PROFILES` (comma separated).
    pub profiles: Vec<String>,
    /// `--env-file` (relative to `cwd`); default: `.env` in the project directory if present.
    pub env_files: Vec<PathBuf>,
    /// The environment interpolation sees (the CLI passes the process environment). It wins
    /// over values from env files.
    pub environment: BTreeMap<String, String>,
    /// Base for the relative paths above (the CLI passes the current directory).
    pub cwd: PathBuf,
    /// When set, no file outside this directory is read (include, extends, env files,
    /// `.env`): what an agent loading an untrusted repository wants.
    pub confine_to: Option<PathBuf>,
}

/// Loads, validates and normalizes a project. Every problem found is returned at once.
pub fn load_project(
    files: &dyn ProjectFiles,
    options: &LoadOptions,
) -> Result<Project, LoadErrors> {
    let confined;
    let files: &dyn ProjectFiles = match &options.confine_to {
        Some(root) => {
            confined = ConfinedFiles::new(files, normalize(&options.cwd.join(root)));
            &confined
        }
        None => files,
    };
    let mut l = Loader {
        fs: files,
        errors: Vec::new(),
        warnings: Vec::new(),
        parsed: HashMap::new(),
        extends_files: HashMap::new(),
        source_files: Vec::new(),
        seen_sources: BTreeSet::new(),
        broken: BTreeSet::new(),
        reported_cycles: BTreeSet::new(),
    };
    let project = l.run(options);
    if l.errors.is_empty() {
        if let Some(mut p) = project {
            p.warnings.extend(l.warnings);
            p.source_files = l.source_files;
            return Ok(p);
        }
    }
    if l.errors.is_empty() {
        l.errors.push(LoadError::invalid(
            None,
            None,
            "",
            "the project could not be loaded",
        ));
    }
    Err(LoadErrors(l.errors))
}

/// The interpolation environment.
pub(crate) type Env = BTreeMap<String, String>;

pub(crate) struct Loader<'a> {
    fs: &'a dyn ProjectFiles,
    pub(crate) errors: Vec<LoadError>,
    pub(crate) warnings: Vec<Warning>,
    /// Parsed documents per file (a file reached twice is parsed once).
    parsed: HashMap<PathBuf, Option<Vec<Node>>>,
    /// Files used as `extends` bases, interpolated and resolved, by (path, env identity).
    extends_files: HashMap<PathBuf, Option<Node>>,
    source_files: Vec<PathBuf>,
    seen_sources: BTreeSet<PathBuf>,
    /// Services dropped because their `extends` failed (already reported).
    pub(crate) broken: BTreeSet<String>,
    /// Extends cycles already reported (by their members).
    reported_cycles: BTreeSet<Vec<String>>,
}

/// Context of one compose file being processed.
#[derive(Clone)]
struct FileCtx<'e> {
    path: PathBuf,
    /// Base for its relative paths.
    working_dir: PathBuf,
    env: &'e Env,
}

impl<'a> Loader<'a> {
    fn run(&mut self, o: &LoadOptions) -> Option<Project> {
        let cwd = normalize(&o.cwd);
        let abs = |p: &Path| normalize(&cwd.join(p));
        let mut env: Env = o.environment.clone();

        // Project directory: explicit, else the first -f file's directory, else cwd.
        let explicit_files: Vec<PathBuf> = o.files.iter().map(|f| abs(f)).collect();
        let mut project_dir = match (&o.project_directory, explicit_files.first()) {
            (Some(d), _) => abs(d),
            (None, Some(f)) => f.parent().map(Path::to_path_buf).unwrap_or(cwd.clone()),
            (None, None) => cwd.clone(),
        };

        // .env / --env-file: the given environment wins over their values.
        let env_files: Vec<(PathBuf, bool)> = if o.env_files.is_empty() {
            vec![(project_dir.join(".env"), false)]
        } else {
            o.env_files.iter().map(|f| (abs(f), true)).collect()
        };
        let mut from_files: Env = Env::new();
        for (path, required) in env_files {
            if !self.fs.is_file(&path) {
                if required {
                    self.errors.push(LoadError::MissingFile {
                        location: None,
                        subject: Subject::default(),
                        what: "env file",
                        path,
                        hint: Some("check the --env-file path".into()),
                    });
                }
                continue;
            }
            if let Some(vars) = self.read_env_file(&path, &|k| {
                env.get(k).cloned().or_else(|| from_files.get(k).cloned())
            }) {
                for (k, v) in vars {
                    from_files.insert(k, v);
                }
            }
        }
        for (k, v) in from_files {
            env.entry(k).or_insert(v);
        }

        // Compose files: -f, else COMPOSE_FILE, else the defaults in the project directory.
        let mut compose_files = explicit_files;
        if compose_files.is_empty() {
            if let Some(list) = env.get("COMPOSE_FILE").filter(|s| !s.is_empty()) {
                let sep = env
                    .get("COMPOSE_PATH_SEPARATOR")
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .unwrap_or_else(|| ":".to_string());
                compose_files = list
                    .split(sep.as_str())
                    .filter(|s| !s.is_empty())
                    .map(|f| normalize(&project_dir.join(f)))
                    .collect();
                if o.project_directory.is_none() {
                    if let Some(d) = compose_files.first().and_then(|f| f.parent()) {
                        project_dir = d.to_path_buf();
                    }
                }
            } else {
                match DEFAULT_FILES
                    .iter()
                    .map(|n| project_dir.join(n))
                    .find(|p| self.fs.is_file(p))
                {
                    Some(main) => {
                        compose_files.push(main);
                        if let Some(ov) = DEFAULT_OVERRIDES
                            .iter()
                            .map(|n| project_dir.join(n))
                            .find(|p| self.fs.is_file(p))
                        {
                            compose_files.push(ov);
                        }
                    }
                    None => {
                        self.errors.push(LoadError::NoComposeFile {
                            dir: project_dir.clone(),
                        });
                        return None;
                    }
                }
            }
        }
        for f in &compose_files {
            if f.as_os_str() == "-" || f.ends_with("-") && f.file_name() == Some("-".as_ref()) {
                self.errors.push(LoadError::unsupported(
                    None,
                    None,
                    "",
                    "reading a compose file from standard input",
                ));
                return None;
            }
        }

        // Profiles.
        let mut profiles: BTreeSet<String> = o.profiles.iter().cloned().collect();
        if profiles.is_empty() {
            if let Some(p) = env.get("COMPOSE_PROFILES") {
                profiles = p
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
        }

        // Project name: -p, COMPOSE_PROJECT_NAME, `name:`, the directory name.
        let imperative = o
            .project_name
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                env.get("COMPOSE_PROJECT_NAME")
                    .filter(|s| !s.is_empty())
                    .cloned()
            });
        let name = match imperative {
            Some(n) => {
                if normalize_project_name(&n) != n {
                    self.errors.push(LoadError::invalid(
                        None,
                        None,
                        "project name",
                        format!("invalid project name {n:?}: must consist only of lowercase alphanumeric characters, hyphens, and underscores as well as start with a letter or number"),
                    ));
                    return None;
                }
                n
            }
            None => {
                let from_files = self.name_from_files(&compose_files, &env);
                match from_files {
                    Some(n) if !n.is_empty() => n,
                    _ => normalize_project_name(
                        &project_dir
                            .file_name()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                }
            }
        };
        if name.is_empty() {
            self.errors.push(LoadError::invalid(
                None,
                None,
                "project name",
                "project name must not be empty (pass -p NAME or set name: in the compose file)",
            ));
            return None;
        }
        env.insert("COMPOSE_PROJECT_NAME".to_string(), name.clone());

        // The model.
        let dict = self.load_model(&compose_files, &project_dir, &env, &[]);
        let mut dict = dict?;
        strip_tags(&mut dict);
        if dict.as_map().map_or(true, |m| m.is_empty()) {
            self.errors.push(LoadError::invalid(
                Some(dict.loc.clone()),
                None,
                "",
                "empty compose file",
            ));
            return None;
        }
        let mut conv = super::convert::Converter::new(
            &name,
            &project_dir,
            &env,
            self.fs,
            &mut self.errors,
            &mut self.warnings,
        );
        conv.broken = &self.broken;
        let mut project = conv.project(&dict, &profiles)?;
        project.compose_files = compose_files;
        for f in conv.read_files.drain(..) {
            if self.seen_sources.insert(f.clone()) {
                self.source_files.push(f);
            }
        }
        Some(project)
    }

    /// The last non-empty top-level `name:` of the files, interpolated and normalized.
    fn name_from_files(&mut self, files: &[PathBuf], env: &Env) -> Option<String> {
        let mut name = None;
        for f in files {
            let Some(docs) = self.parse_file(f, None) else {
                continue;
            };
            for d in docs {
                if let Some(n) = d.get("name").and_then(Node::as_str) {
                    if !n.is_empty() {
                        name = Some((n.to_string(), d.get("name").map(|n| n.loc.clone())));
                    }
                }
            }
        }
        let (raw, loc) = name?;
        match interpolate::substitute(&raw, &|k| env.get(k).cloned()) {
            Ok(v) => Some(normalize_project_name(&v)),
            Err(e) => {
                self.errors.push(LoadError::Interpolation {
                    location: loc,
                    subject: Subject {
                        service: None,
                        field: "name".into(),
                    },
                    message: e.to_string(),
                });
                None
            }
        }
    }

    fn note_source(&mut self, path: &Path) {
        if self.seen_sources.insert(path.to_path_buf()) {
            self.source_files.push(path.to_path_buf());
        }
    }

    /// Reads a file through the seam with the size cap; reports failures.
    pub(crate) fn read_text(
        &mut self,
        path: &Path,
        limit: u64,
        location: Option<Location>,
        what: &'static str,
    ) -> Option<String> {
        match self.fs.read(path, limit) {
            Ok(bytes) => {
                self.note_source(path);
                match String::from_utf8(bytes) {
                    Ok(s) => Some(s),
                    Err(_) => {
                        self.errors.push(LoadError::invalid(
                            location,
                            None,
                            "",
                            format!("{what} {} is not valid UTF-8", path.display()),
                        ));
                        None
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.errors.push(LoadError::MissingFile {
                    location,
                    subject: Subject::default(),
                    what,
                    path: path.to_path_buf(),
                    hint: None,
                });
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.errors.push(LoadError::Limit {
                    location,
                    what: format!("size of {what} {}", path.display()),
                    limit: limit as usize,
                });
                None
            }
            Err(e) => {
                self.errors.push(LoadError::Read {
                    path: path.to_path_buf(),
                    source: e,
                    hint: None,
                });
                None
            }
        }
    }

    fn read_env_file(
        &mut self,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Vec<(String, String)>> {
        let text = self.read_text(path, MAX_ENV_FILE_BYTES, None, "env file")?;
        match dotenv::parse(&text, lookup) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(LoadError::EnvFile {
                    path: path.to_path_buf(),
                    line: e.line(),
                    message: e.to_string(),
                });
                None
            }
        }
    }

    /// Parses a compose file once; `None` when it could not be read or parsed (reported).
    fn parse_file(&mut self, path: &Path, location: Option<Location>) -> Option<Vec<Node>> {
        if let Some(d) = self.parsed.get(path) {
            return d.clone();
        }
        let result = self
            .read_text(path, MAX_FILE_BYTES, location, "compose file")
            .and_then(|text| {
                let p: Arc<Path> = Arc::from(path);
                match yaml::parse(&p, &text) {
                    Ok(docs) => Some(docs),
                    Err(e) => {
                        self.errors.push(*e);
                        None
                    }
                }
            });
        self.parsed.insert(path.to_path_buf(), result.clone());
        result
    }

    /// Loads files as one model (compose-go `loadYamlModel`): returns the merged tree.
    fn load_model(
        &mut self,
        files: &[PathBuf],
        working_dir: &Path,
        env: &Env,
        include_chain: &[PathBuf],
    ) -> Option<Node> {
        let mut dict: Option<Node> = None;
        let mut ok = true;
        for f in files {
            let Some(docs) = self.parse_file(f, None) else {
                ok = false;
                continue;
            };
            let ctx = FileCtx {
                path: f.clone(),
                working_dir: working_dir.to_path_buf(),
                env,
            };
            for mut doc in docs {
                if doc.as_map().is_none() {
                    self.errors.push(LoadError::invalid(
                        Some(doc.loc.clone()),
                        None,
                        "",
                        "top-level object must be a mapping",
                    ));
                    ok = false;
                    continue;
                }
                self.interpolate(&mut doc, env, &mut Vec::new());
                resolve_paths(&mut doc, &ctx.working_dir, env);
                self.apply_extends(&mut doc, &ctx, &[]);
                let mut chain = include_chain.to_vec();
                chain.push(f.clone());
                self.apply_include(&mut doc, &ctx, &chain);
                if let Some(m) = doc.as_map_mut() {
                    if let Some(i) = m.iter().position(|(k, _)| k.name == "version") {
                        let (k, _) = m.remove(i);
                        self.warnings.push(Warning {
                            location: Some(k.loc),
                            service: None,
                            field: "version".into(),
                            message: "the attribute `version` is obsolete, it will be ignored, please remove it to avoid potential confusion".into(),
                        });
                    }
                }
                dict = Some(match dict {
                    None => doc,
                    Some(base) => merge(base, doc, &mut Vec::new()),
                });
            }
        }
        if !ok {
            return None;
        }
        if let Some(d) = dict.as_mut() {
            resolve_environment(d, env);
        }
        Some(dict.unwrap_or_else(|| {
            let loc = Location {
                file: Arc::from(
                    files
                        .first()
                        .map(PathBuf::as_path)
                        .unwrap_or(Path::new("-")),
                ),
                line: 1,
                column: 1,
            };
            Node::new(Value::Map(Vec::new()), loc)
        }))
    }

    /// Substitutes `${VAR…}` in every string value (keys are left alone).
    fn interpolate(&mut self, node: &mut Node, env: &Env, path: &mut Vec<String>) {
        match &mut node.value {
            Value::Str(s) => {
                if !s.contains('$') {
                    return;
                }
                match interpolate::substitute(s, &|k| env.get(k).cloned()) {
                    Ok(v) => {
                        // A value that becomes a number/bool after substitution stays a string;
                        // typed fields accept numeric strings, as compose's cast does.
                        *s = v;
                    }
                    Err(e) => {
                        let (service, field) = split_path(path);
                        self.errors.push(LoadError::Interpolation {
                            location: Some(node.loc.clone()),
                            subject: Subject { service, field },
                            message: e.to_string(),
                        });
                    }
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(format!("[{i}]"));
                    self.interpolate(item, env, path);
                    path.pop();
                }
            }
            Value::Map(m) => {
                for (k, v) in m.iter_mut() {
                    path.push(k.name.clone());
                    self.interpolate(v, env, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// Resolves `extends` of every service of a document.
    fn apply_extends(&mut self, doc: &mut Node, ctx: &FileCtx<'_>, chain: &[(PathBuf, String)]) {
        let Some(services) = doc.as_map_mut().and_then(|m| {
            m.iter_mut()
                .find(|(k, _)| k.name == "services")
                .map(|(_, v)| v)
        }) else {
            return;
        };
        let Some(map) = services.as_map_mut() else {
            return;
        };
        let names: Vec<String> = map.iter().map(|(k, _)| k.name.clone()).collect();
        let mut done = BTreeSet::new();
        let mut failed = Vec::new();
        for name in names {
            let is_map = map
                .iter()
                .find(|(k, _)| k.name == name)
                .is_some_and(|(_, v)| v.as_map().is_some());
            if is_map && !self.extend_service(map, &name, ctx, chain, &mut done) {
                failed.push(name);
            }
        }
        // A service whose extends failed (reported) is dropped, so it causes no follow-up
        // errors; references to it are not reported either.
        map.retain(|(k, _)| !failed.contains(&k.name));
        self.broken.extend(failed);
    }

    /// Applies `extends` of `services[name]` in place (recursively, memoized in `done`).
    fn extend_service(
        &mut self,
        services: &mut Vec<(Key, Node)>,
        name: &str,
        ctx: &FileCtx<'_>,
        chain: &[(PathBuf, String)],
        done: &mut BTreeSet<String>,
    ) -> bool {
        if done.contains(name) {
            return true;
        }
        let Some(idx) = services.iter().position(|(k, _)| k.name == name) else {
            return false;
        };
        let service = &services[idx].1;
        let Some(ext) = service.get("extends").cloned() else {
            done.insert(name.to_string());
            return true;
        };
        if service.as_map().is_none() {
            return false;
        }
        let (file, base_name) = match &ext.value {
            Value::Str(s) => (None, s.clone()),
            Value::Map(_) => {
                let Some(svc) = ext.get("service").and_then(Node::as_str) else {
                    self.errors.push(
                        LoadError::invalid(
                            Some(ext.loc.clone()),
                            Some(name),
                            "extends.service",
                            format!("extends.{name}.service is required"),
                        )
                        .with_hint("name the service to extend"),
                    );
                    return false;
                };
                for (k, _) in ext.as_map().into_iter().flatten() {
                    if !matches!(k.name.as_str(), "service" | "file") {
                        self.errors.push(LoadError::invalid(
                            Some(k.loc.clone()),
                            Some(name),
                            format!("extends.{}", k.name),
                            "additional property not allowed (expected service, file)",
                        ));
                    }
                }
                let file = match ext.get("file") {
                    None => None,
                    Some(f) => match f.as_str() {
                        Some(s) => Some(PathBuf::from(s)),
                        None => {
                            self.errors.push(LoadError::invalid(
                                Some(f.loc.clone()),
                                Some(name),
                                "extends.file",
                                "must be a string",
                            ));
                            return false;
                        }
                    },
                };
                (file, svc.to_string())
            }
            _ => {
                self.errors.push(LoadError::invalid(
                    Some(ext.loc.clone()),
                    Some(name),
                    "extends",
                    "must be a service name or a mapping with service and file",
                ));
                return false;
            }
        };
        let me = (ctx.path.clone(), name.to_string());
        if chain.len() >= MAX_CHAIN {
            self.errors.push(LoadError::Limit {
                location: Some(ext.loc.clone()),
                what: "depth of the extends chain".into(),
                limit: MAX_CHAIN,
            });
            return false;
        }
        if chain.contains(&me) {
            let mut names: Vec<String> = chain
                .iter()
                .map(|(f, s)| format!("{s} in {}", f.display()))
                .collect();
            names.push(format!("{name} in {}", ctx.path.display()));
            let mut key = names.clone();
            key.sort();
            key.dedup();
            if self.reported_cycles.insert(key) {
                self.errors.push(LoadError::ExtendsCycle {
                    location: Some(ext.loc.clone()),
                    chain: names,
                });
            }
            return false;
        }
        let mut next_chain = chain.to_vec();
        next_chain.push(me);

        let base: Node = match file {
            None => {
                if base_name == name || !services.iter().any(|(k, _)| k.name == base_name) {
                    if base_name == name {
                        let mut names: Vec<String> =
                            vec![format!("{name} in {}", ctx.path.display())];
                        names.push(format!("{name} in {}", ctx.path.display()));
                        self.errors.push(LoadError::ExtendsCycle {
                            location: Some(ext.loc.clone()),
                            chain: names,
                        });
                    } else {
                        self.errors.push(
                            LoadError::invalid(
                                Some(ext.loc.clone()),
                                Some(name),
                                "extends",
                                format!(
                                    "cannot extend service {name:?} in {}: service {base_name:?} not found",
                                    ctx.path.display()
                                ),
                            )
                            .with_hint("define the base service or fix the name"),
                        );
                    }
                    return false;
                }
                if !self.extend_service(services, &base_name, ctx, &next_chain, done) {
                    return false;
                }
                match services.iter().find(|(k, _)| k.name == base_name) {
                    Some((_, b)) => b.clone(),
                    None => return false,
                }
            }
            Some(file) => {
                // `file` was made absolute by resolve_paths.
                let path = normalize(&ctx.working_dir.join(&file));
                let Some(base) =
                    self.extends_base(&path, &base_name, name, &ext.loc, ctx.env, &next_chain)
                else {
                    return false;
                };
                base
            }
        };
        let Some((key, mut local)) = services.get(idx).cloned() else {
            return false;
        };
        if let Some(m) = local.as_map_mut() {
            m.retain(|(k, _)| k.name != "extends");
        }
        let mut base = base;
        if let Some(m) = base.as_map_mut() {
            m.retain(|(k, _)| k.name != "extends");
        }
        let mut path = vec!["services".to_string(), name.to_string()];
        let merged = merge(base, local, &mut path);
        services[idx] = (key, merged);
        done.insert(name.to_string());
        true
    }

    /// The service `base_name` of another file, with its own `extends` applied.
    fn extends_base(
        &mut self,
        path: &Path,
        base_name: &str,
        name: &str,
        loc: &Location,
        env: &Env,
        chain: &[(PathBuf, String)],
    ) -> Option<Node> {
        if !self.extends_files.contains_key(path) {
            let loaded = self.parse_file(path, Some(loc.clone())).map(|docs| {
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                let mut merged: Option<Node> = None;
                for mut d in docs {
                    self.interpolate(&mut d, env, &mut Vec::new());
                    resolve_paths(&mut d, &dir, env);
                    merged = Some(match merged {
                        None => d,
                        Some(b) => merge(b, d, &mut Vec::new()),
                    });
                }
                merged.unwrap_or_else(|| Node::new(Value::Map(Vec::new()), loc.clone()))
            });
            self.extends_files.insert(path.to_path_buf(), loaded);
        }
        // Taken out of the cache while in use (no copy of the whole file per extending service).
        let mut file_node = self.extends_files.remove(path).flatten()?;
        let base = self.extends_base_in(&mut file_node, path, base_name, name, loc, env, chain);
        // Keep the memoized result for other services extending the same base.
        self.extends_files
            .insert(path.to_path_buf(), Some(file_node));
        base
    }

    #[allow(clippy::too_many_arguments)]
    fn extends_base_in(
        &mut self,
        file_node: &mut Node,
        path: &Path,
        base_name: &str,
        name: &str,
        loc: &Location,
        env: &Env,
        chain: &[(PathBuf, String)],
    ) -> Option<Node> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let ctx = FileCtx {
            path: path.to_path_buf(),
            working_dir: dir,
            env,
        };
        let services = file_node.as_map_mut().and_then(|m| {
            m.iter_mut()
                .find(|(k, _)| k.name == "services")
                .and_then(|(_, v)| v.as_map_mut())
        });
        let Some(services) = services else {
            self.errors.push(LoadError::invalid(
                Some(loc.clone()),
                Some(name),
                "extends.file",
                format!(
                    "cannot extend service {name:?} in {}: no services section",
                    path.display()
                ),
            ));
            return None;
        };
        if !services.iter().any(|(k, _)| k.name == base_name) {
            self.errors.push(LoadError::invalid(
                Some(loc.clone()),
                Some(name),
                "extends.service",
                format!(
                    "cannot extend service {name:?}: service {base_name:?} not found in {}",
                    path.display()
                ),
            ));
            return None;
        }
        let mut done = BTreeSet::new();
        if !self.extend_service(services, base_name, &ctx, chain, &mut done) {
            return None;
        }
        services
            .iter()
            .find(|(k, _)| k.name == base_name)
            .map(|(_, v)| v.clone())
    }

    /// Imports the `include`d models into `doc` (compose-go `ApplyInclude`): what the
    /// document defines itself overrides what it includes.
    fn apply_include(&mut self, doc: &mut Node, ctx: &FileCtx<'_>, chain: &[PathBuf]) {
        let Some(m) = doc.as_map_mut() else {
            return;
        };
        let Some(i) = m.iter().position(|(k, _)| k.name == "include") else {
            return;
        };
        let (_, include) = m.remove(i);
        let entries: Vec<Node> = match include.value {
            Value::Seq(items) => items,
            Value::Null => Vec::new(),
            _ => {
                self.errors.push(LoadError::invalid(
                    Some(include.loc.clone()),
                    None,
                    "include",
                    "`include` must be a list",
                ));
                return;
            }
        };
        for entry in entries {
            let Some(inc) = self.include_entry(&entry, ctx) else {
                continue;
            };
            if let Some(main) = inc.paths.first() {
                if chain.len() >= MAX_CHAIN {
                    self.errors.push(LoadError::Limit {
                        location: Some(entry.loc.clone()),
                        what: "depth of the include chain".into(),
                        limit: MAX_CHAIN,
                    });
                    continue;
                }
                if chain.contains(main) {
                    let mut c = chain.to_vec();
                    c.push(main.clone());
                    self.errors.push(LoadError::IncludeCycle {
                        location: Some(entry.loc.clone()),
                        chain: c,
                    });
                    continue;
                }
            }
            // Environment: the parent's, plus the include's env files (parent values win).
            let mut env = ctx.env.clone();
            let mut from_files = Env::new();
            for (f, required) in &inc.env_files {
                if !self.fs.is_file(f) {
                    if *required {
                        self.errors.push(LoadError::MissingFile {
                            location: Some(entry.loc.clone()),
                            subject: Subject {
                                service: None,
                                field: "include.env_file".into(),
                            },
                            what: "env file",
                            path: f.clone(),
                            hint: None,
                        });
                    }
                    continue;
                }
                if let Some(vars) = self.read_env_file(f, &|k| {
                    ctx.env
                        .get(k)
                        .cloned()
                        .or_else(|| from_files.get(k).cloned())
                }) {
                    from_files.extend(vars);
                }
            }
            for (k, v) in from_files {
                env.entry(k).or_insert(v);
            }
            let Some(mut imported) = self.load_model(&inc.paths, &inc.project_dir, &env, chain)
            else {
                continue;
            };
            strip_tags(&mut imported);
            import_resources(doc, imported);
        }
    }

    fn include_entry(&mut self, entry: &Node, ctx: &FileCtx<'_>) -> Option<Include> {
        let dir = &ctx.working_dir;
        let bad = |this: &mut Self, n: &Node, field: &str, msg: &str| {
            this.errors.push(LoadError::invalid(
                Some(n.loc.clone()),
                None,
                format!("include.{field}"),
                msg.to_string(),
            ));
        };
        let str_list = |this: &mut Self, n: &Node, field: &str| -> Option<Vec<String>> {
            match &n.value {
                Value::Str(s) => Some(vec![s.clone()]),
                Value::Seq(items) => {
                    let mut out = Vec::new();
                    for it in items {
                        match it.as_str() {
                            Some(s) => out.push(s.to_string()),
                            None => {
                                bad(this, it, field, "must be a string");
                                return None;
                            }
                        }
                    }
                    Some(out)
                }
                _ => {
                    bad(this, n, field, "must be a string or a list of strings");
                    None
                }
            }
        };
        let (paths, project_directory, env_file) = match &entry.value {
            Value::Str(s) => (vec![s.clone()], None, None),
            Value::Map(m) => {
                let mut paths = None;
                let mut pd = None;
                let mut ef = None;
                for (k, v) in m {
                    match k.name.as_str() {
                        "path" => paths = str_list(self, v, "path"),
                        "project_directory" => match v.as_str() {
                            Some(s) => pd = Some(s.to_string()),
                            None => bad(self, v, "project_directory", "must be a string"),
                        },
                        "env_file" => ef = str_list(self, v, "env_file"),
                        other if other.starts_with("x-") => {}
                        other => bad(
                            self,
                            v,
                            other,
                            "additional property not allowed (expected path, project_directory, env_file)",
                        ),
                    }
                }
                let Some(paths) = paths else {
                    bad(self, entry, "path", "is required");
                    return None;
                };
                (paths, pd, ef)
            }
            _ => {
                bad(
                    self,
                    entry,
                    "",
                    "an include entry must be a path or a mapping",
                );
                return None;
            }
        };
        if paths.is_empty() {
            bad(self, entry, "path", "must not be empty");
            return None;
        }
        let paths: Vec<PathBuf> = paths.iter().map(|p| normalize(&dir.join(p))).collect();
        let project_dir = match project_directory {
            Some(p) => normalize(&dir.join(p)),
            None => paths[0]
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or(dir.clone()),
        };
        let env_files = match env_file {
            Some(list) => list
                .iter()
                .filter(|f| f.as_str() != "/dev/null")
                .map(|f| (normalize(&dir.join(f)), true))
                .collect(),
            None => vec![(project_dir.join(".env"), false)],
        };
        Some(Include {
            paths,
            project_dir,
            env_files,
        })
    }
}

struct Include {
    paths: Vec<PathBuf>,
    project_dir: PathBuf,
    env_files: Vec<(PathBuf, bool)>,
}

/// Adds the imported resources to `doc`; a resource `doc` defines too is merged with the
/// imported one as its base.
fn import_resources(doc: &mut Node, imported: Node) {
    let Value::Map(imported) = imported.value else {
        return;
    };
    let Some(target) = doc.as_map_mut() else {
        return;
    };
    for (key, section) in imported {
        if !matches!(
            key.name.as_str(),
            "services" | "volumes" | "networks" | "secrets" | "configs" | "models"
        ) {
            continue;
        }
        let Value::Map(from) = section.value else {
            continue;
        };
        match target.iter_mut().find(|(k, _)| k.name == key.name) {
            None => target.push((key, Node::new(Value::Map(from), section.loc))),
            Some((_, existing)) => {
                let Some(to) = existing.as_map_mut() else {
                    continue;
                };
                // Imported resources are the base; the including file's own override them.
                let local = std::mem::take(to);
                let mut path = vec![key.name.clone()];
                *to = merge_mappings(from, local, &mut path);
            }
        }
    }
}

/// Gives `environment` entries without a value the value of the model's environment, when
/// it has one (compose-go `ResolveEnvironment`; included models use their own environment).
fn resolve_environment(dict: &mut Node, env: &Env) {
    let Some(services) = map_get_mut(dict, "services").and_then(|s| s.as_map_mut()) else {
        return;
    };
    for (_, svc) in services.iter_mut() {
        let Some(environment) = map_get_mut(svc, "environment") else {
            continue;
        };
        match &mut environment.value {
            Value::Map(m) => {
                for (k, v) in m.iter_mut() {
                    if v.is_null() {
                        if let Some(val) = env.get(&k.name) {
                            v.value = Value::Str(val.clone());
                        }
                    }
                }
            }
            Value::Seq(items) => {
                for it in items.iter_mut() {
                    if let Value::Str(s) = &mut it.value {
                        if !s.contains('=') {
                            if let Some(val) = env.get(s.as_str()) {
                                *s = format!("{s}={val}");
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// `services.web.ports[0]` → (Some("web"), "ports[0]").
pub(crate) fn split_path(path: &[String]) -> (Option<String>, String) {
    let join = |p: &[String]| p.join(".").replace(".[", "[");
    if path.len() >= 2 && path[0] == "services" {
        (Some(path[1].clone()), join(&path[2..]))
    } else {
        (None, join(path))
    }
}

/// Makes relative paths of a document absolute against `dir` (compose's
/// `ResolveRelativePaths`): bind mount sources, env files, configs/secrets files, `extends`
/// files, `include` paths, `local` volume bind devices; `~` expands with `HOME`.
fn resolve_paths(doc: &mut Node, dir: &Path, env: &Env) {
    let home = env.get("HOME").filter(|h| !h.is_empty()).cloned();
    let abs = |p: &str| -> String { absolutize(p, dir, home.as_deref()) };
    let Some(top) = doc.as_map_mut() else {
        return;
    };
    for (k, section) in top.iter_mut() {
        match k.name.as_str() {
            "services" => {
                for (_, svc) in section.as_map_mut().into_iter().flatten() {
                    resolve_service_paths(svc, &abs);
                }
            }
            "configs" | "secrets" => {
                for (_, obj) in section.as_map_mut().into_iter().flatten() {
                    if let Some(f) = map_get_mut(obj, "file") {
                        rewrite_str(f, &abs);
                    }
                }
            }
            "volumes" => {
                for (_, vol) in section.as_map_mut().into_iter().flatten() {
                    let is_local = vol
                        .get("driver")
                        .and_then(Node::as_str)
                        .map_or(true, |d| d == "local");
                    let is_bind = vol
                        .get("driver_opts")
                        .and_then(|o| o.get("o"))
                        .and_then(Node::scalar_string)
                        .is_some_and(|o| o.split(',').any(|x| x == "bind"));
                    if is_local && is_bind {
                        if let Some(dev) =
                            map_get_mut(vol, "driver_opts").and_then(|o| map_get_mut(o, "device"))
                        {
                            rewrite_str(dev, &abs);
                        }
                    }
                }
            }
            "include" => {
                for entry in seq_mut(section) {
                    match &mut entry.value {
                        Value::Str(_) => rewrite_str(entry, &abs),
                        Value::Map(_) => {
                            if let Some(p) = map_get_mut(entry, "path") {
                                rewrite_str_or_list(p, &abs);
                            }
                            if let Some(p) = map_get_mut(entry, "project_directory") {
                                rewrite_str(p, &abs);
                            }
                            if let Some(p) = map_get_mut(entry, "env_file") {
                                rewrite_str_or_list(p, &abs);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn resolve_service_paths(svc: &mut Node, abs: &dyn Fn(&str) -> String) {
    let Some(m) = svc.as_map_mut() else {
        return;
    };
    for (k, v) in m.iter_mut() {
        match k.name.as_str() {
            "env_file" | "label_file" => match &mut v.value {
                Value::Str(_) => rewrite_str(v, abs),
                Value::Seq(items) => {
                    for it in items.iter_mut() {
                        match &it.value {
                            Value::Str(_) => rewrite_str(it, abs),
                            Value::Map(_) => {
                                if let Some(p) = map_get_mut(it, "path") {
                                    rewrite_str(p, abs);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            },
            "extends" => {
                if let Some(f) = map_get_mut(v, "file") {
                    rewrite_str(f, abs);
                }
            }
            "volumes" => {
                for vol in seq_mut(v) {
                    match &mut vol.value {
                        Value::Str(spec) => {
                            if let Ok(parsed) = parse_volume_spec(spec) {
                                if parsed.is_bind && !is_absolute_any(&parsed.source) {
                                    let rest = spec[parsed.source.len()..].to_string();
                                    *spec = format!("{}{rest}", abs(&parsed.source));
                                }
                            }
                        }
                        Value::Map(_) => {
                            let is_bind = vol.get("type").and_then(Node::as_str) == Some("bind");
                            if is_bind {
                                if let Some(src) = map_get_mut(vol, "source") {
                                    rewrite_str(src, abs);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn absolutize(p: &str, dir: &Path, home: Option<&str>) -> String {
    if let Some(home) = home {
        if p == "~" {
            return home.to_string();
        }
        if let Some(rest) = p.strip_prefix("~/") {
            return normalize(&Path::new(home).join(rest))
                .to_string_lossy()
                .into_owned();
        }
    }
    if is_absolute_any(p) {
        return p.to_string();
    }
    normalize(&dir.join(p)).to_string_lossy().into_owned()
}

/// Absolute on Unix, or a Windows absolute path (`C:\…`, `\\server`), which compose keeps.
fn is_absolute_any(p: &str) -> bool {
    if p.starts_with('/') || p.starts_with("\\\\") {
        return true;
    }
    let mut c = p.chars();
    matches!((c.next(), c.next(), c.next()), (Some(d), Some(':'), Some('\\' | '/')) if d.is_ascii_alphabetic())
        || matches!((p.len(), p.chars().next(), p.chars().nth(1)), (2, Some(d), Some(':')) if d.is_ascii_alphabetic())
}

fn rewrite_str(n: &mut Node, abs: &dyn Fn(&str) -> String) {
    if let Value::Str(s) = &mut n.value {
        if !s.is_empty() {
            *s = abs(s);
        }
    }
}

fn rewrite_str_or_list(n: &mut Node, abs: &dyn Fn(&str) -> String) {
    match &mut n.value {
        Value::Str(_) => rewrite_str(n, abs),
        Value::Seq(items) => {
            for it in items.iter_mut() {
                rewrite_str(it, abs);
            }
        }
        _ => {}
    }
}

fn map_get_mut<'n>(n: &'n mut Node, key: &str) -> Option<&'n mut Node> {
    n.as_map_mut()?
        .iter_mut()
        .find(|(k, _)| k.name == key)
        .map(|(_, v)| v)
}

fn seq_mut(n: &mut Node) -> std::slice::IterMut<'_, Node> {
    match &mut n.value {
        Value::Seq(items) => items.iter_mut(),
        _ => [].iter_mut(),
    }
}
