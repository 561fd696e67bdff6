//! The merged tree → the typed model: every field checked (type, format, allowed values,
//! references), short syntaxes expanded, defaults applied as compose applies them, and what
//! dockmaster does not support refused (or warned about when harmless), never ignored. Every
//! problem is recorded and conversion continues, so one run reports them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::dotenv;
use super::error::{LoadError, Location, Subject};
use super::files::{normalize, ProjectFiles};
use super::load::Env;
use super::model::*;
use super::syntax::{
    parse_bytes, parse_duration, parse_port_range, parse_port_spec, parse_volume_spec, shell_split,
};
use super::yaml::{format_float, Node, Value};

const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

static NO_NAMES: BTreeSet<String> = BTreeSet::new();

pub(crate) struct Converter<'a> {
    name: &'a str,
    project_dir: &'a Path,
    env: &'a Env,
    fs: &'a dyn ProjectFiles,
    errors: &'a mut Vec<LoadError>,
    warnings: &'a mut Vec<Warning>,
    /// Env files read while converting (for `Project::source_files`).
    pub(crate) read_files: Vec<PathBuf>,
    /// The service being converted (for messages).
    service: Option<String>,
    /// Locations of service entries, for consistency errors.
    service_locs: HashMap<String, Location>,
    /// Where each reference of a service is written ((service, "depends_on.db") → location),
    /// so consistency errors point at the entry.
    ref_locs: HashMap<(String, String), Location>,
    /// Services without an image: (location, has build:), reported if they stay active.
    no_image: BTreeMap<String, (Location, bool)>,
    /// Range of `errors` each service's conversion produced.
    service_errors: HashMap<String, (usize, usize)>,
    /// Services dropped by the loader after an error (references to them are not reported).
    pub(crate) broken: &'a BTreeSet<String>,
}

impl<'a> Converter<'a> {
    pub(crate) fn new(
        name: &'a str,
        project_dir: &'a Path,
        env: &'a Env,
        fs: &'a dyn ProjectFiles,
        errors: &'a mut Vec<LoadError>,
        warnings: &'a mut Vec<Warning>,
    ) -> Converter<'a> {
        Converter {
            name,
            project_dir,
            env,
            fs,
            errors,
            warnings,
            read_files: Vec::new(),
            service: None,
            service_locs: HashMap::new(),
            ref_locs: HashMap::new(),
            no_image: BTreeMap::new(),
            service_errors: HashMap::new(),
            broken: &NO_NAMES,
        }
    }

    // ---- reporting -----------------------------------------------------------------------

    fn subject(&self, field: &str) -> Subject {
        Subject {
            service: self.service.clone(),
            field: field.to_string(),
        }
    }

    fn err(&mut self, n: &Node, field: &str, msg: impl Into<String>) {
        self.errors.push(LoadError::Invalid {
            location: Some(n.loc.clone()),
            subject: self.subject(field),
            message: msg.into(),
            hint: None,
        });
    }

    fn err_hint(&mut self, n: &Node, field: &str, msg: impl Into<String>, hint: impl Into<String>) {
        self.errors.push(LoadError::Invalid {
            location: Some(n.loc.clone()),
            subject: self.subject(field),
            message: msg.into(),
            hint: Some(hint.into()),
        });
    }

    fn unsupported(&mut self, n: &Node, field: &str, msg: impl Into<String>, hint: &str) {
        self.errors.push(LoadError::Unsupported {
            location: Some(n.loc.clone()),
            subject: self.subject(field),
            message: msg.into(),
            hint: if hint.is_empty() {
                None
            } else {
                Some(hint.to_string())
            },
        });
    }

    fn warn(&mut self, n: &Node, field: &str, msg: impl Into<String>) {
        self.warnings.push(Warning {
            location: Some(n.loc.clone()),
            service: self.service.clone(),
            field: field.to_string(),
            message: msg.into(),
        });
    }

    fn unknown_key(&mut self, k: &super::yaml::Key, field: &str, expected: &str) {
        let f = if field.is_empty() {
            k.name.clone()
        } else {
            format!("{field}.{}", k.name)
        };
        let candidates: Vec<&str> = if expected == SERVICE_FIELDS_HINT {
            SERVICE_FIELDS.to_vec()
        } else {
            expected.split(", ").collect()
        };
        let hint = match closest(&k.name, &candidates) {
            Some(c) => format!("did you mean {c:?}?"),
            None => format!("check the spelling; allowed here: {expected}"),
        };
        self.errors.push(LoadError::Invalid {
            location: Some(k.loc.clone()),
            subject: self.subject(&f),
            message: format!("additional property {:?} not allowed", k.name),
            hint: Some(hint),
        });
    }

    fn note(&mut self, key: String, loc: &Location) {
        if let Some(s) = &self.service {
            self.ref_locs
                .entry((s.clone(), key))
                .or_insert_with(|| loc.clone());
        }
    }

    // ---- scalar readers --------------------------------------------------------------------

    /// A string where empty means unset (compose's omitempty).
    fn opt_string(&mut self, n: &Node, field: &str) -> Option<String> {
        self.string(n, field).filter(|s| !s.is_empty())
    }

    fn string(&mut self, n: &Node, field: &str) -> Option<String> {
        match &n.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.err_hint(
                    n,
                    field,
                    format!("must be a string, not {}", n.type_name()),
                    "quote the value",
                );
                None
            }
        }
    }

    /// A string, number or boolean, as a string.
    fn scalar(&mut self, n: &Node, field: &str) -> Option<String> {
        match n.scalar_string() {
            Some(s) => Some(s),
            None => {
                self.err(
                    n,
                    field,
                    format!("must be a string, number or boolean, not {}", n.type_name()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, n: &Node, field: &str) -> Option<bool> {
        match &n.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s == "true" || s == "false" => Some(s == "true"),
            _ => {
                self.err_hint(
                    n,
                    field,
                    format!("must be a boolean, not {}", n.type_name()),
                    "write true or false",
                );
                None
            }
        }
    }

    fn integer(&mut self, n: &Node, field: &str) -> Option<i64> {
        match &n.value {
            Value::Int(i) => Some(*i),
            Value::Str(s) => match s.trim().parse::<i64>() {
                Ok(i) => Some(i),
                Err(_) => {
                    self.err(n, field, format!("must be an integer, not {s:?}"));
                    None
                }
            },
            _ => {
                self.err(
                    n,
                    field,
                    format!("must be an integer, not {}", n.type_name()),
                );
                None
            }
        }
    }

    fn non_negative(&mut self, n: &Node, field: &str) -> Option<u64> {
        let i = self.integer(n, field)?;
        if i < 0 {
            self.err(n, field, "must be greater than or equal to 0");
            return None;
        }
        Some(i as u64)
    }

    fn number(&mut self, n: &Node, field: &str) -> Option<f64> {
        match &n.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f, _) => Some(*f),
            Value::Str(s) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Some(f),
                _ => {
                    self.err(n, field, format!("must be a number, not {s:?}"));
                    None
                }
            },
            _ => {
                self.err(n, field, format!("must be a number, not {}", n.type_name()));
                None
            }
        }
    }

    fn duration(&mut self, n: &Node, field: &str) -> Option<Duration> {
        match &n.value {
            Value::Str(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(n, field, e);
                    None
                }
            },
            _ => {
                self.err_hint(
                    n,
                    field,
                    format!("must be a duration string, not {}", n.type_name()),
                    "write it with a unit, like 10s or 1m30s",
                );
                None
            }
        }
    }

    fn bytes(&mut self, n: &Node, field: &str) -> Option<i64> {
        match &n.value {
            Value::Int(i) => Some(*i),
            Value::Str(s) => match parse_bytes(s) {
                Ok(b) => Some(b),
                Err(e) => {
                    if let Ok(i) = s.parse::<i64>() {
                        return Some(i);
                    }
                    self.err(n, field, e);
                    None
                }
            },
            _ => {
                self.err(
                    n,
                    field,
                    format!("must be a byte size like 512m or 1g, not {}", n.type_name()),
                );
                None
            }
        }
    }

    fn string_list(&mut self, n: &Node, field: &str) -> Vec<String> {
        match &n.value {
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    if let Some(s) = self.string(it, &format!("{field}[{i}]")) {
                        out.push(s);
                    }
                }
                out
            }
            Value::Null => Vec::new(),
            _ => {
                self.err(
                    n,
                    field,
                    format!("must be a list of strings, not {}", n.type_name()),
                );
                Vec::new()
            }
        }
    }

    /// A string or a list of scalars (numbers allowed, as strings).
    fn string_or_list(&mut self, n: &Node, field: &str) -> Vec<String> {
        match &n.value {
            Value::Str(s) => vec![s.clone()],
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    if let Some(s) = self.scalar(it, &format!("{field}[{i}]")) {
                        out.push(s);
                    }
                }
                out
            }
            Value::Null => Vec::new(),
            _ => {
                self.err(
                    n,
                    field,
                    format!(
                        "must be a string or a list of strings, not {}",
                        n.type_name()
                    ),
                );
                Vec::new()
            }
        }
    }

    /// A mapping `KEY: value` or a list `KEY=value` (`KEY` alone gives `None`).
    fn kv(
        &mut self,
        n: &Node,
        field: &str,
        list_key_only_is_empty: bool,
    ) -> Vec<(String, Option<String>, Location)> {
        let mut out = Vec::new();
        match &n.value {
            Value::Map(m) => {
                for (k, v) in m {
                    let f = format!("{field}.{}", k.name);
                    let value = match &v.value {
                        Value::Null => None,
                        Value::Seq(_) | Value::Map(_) => {
                            self.err(v, &f, "must be a boolean, null, number or string");
                            continue;
                        }
                        _ => v.scalar_string(),
                    };
                    out.push((k.name.clone(), value, k.loc.clone()));
                }
            }
            Value::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    let f = format!("{field}[{i}]");
                    let Some(s) = self.scalar(it, &f) else {
                        continue;
                    };
                    match s.split_once('=') {
                        Some((k, v)) => {
                            out.push((k.to_string(), Some(v.to_string()), it.loc.clone()))
                        }
                        None if list_key_only_is_empty => {
                            out.push((s, Some(String::new()), it.loc.clone()))
                        }
                        None => out.push((s, None, it.loc.clone())),
                    }
                }
            }
            Value::Null => {}
            _ => self.err(n, field, "must be a mapping"),
        }
        out
    }

    /// Labels-like mapping: values always strings.
    fn string_map(&mut self, n: &Node, field: &str) -> BTreeMap<String, String> {
        self.kv(n, field, true)
            .into_iter()
            .map(|(k, v, _)| (k, v.unwrap_or_default()))
            .collect()
    }

    fn extension(&mut self, n: &Node, field: &str) -> Option<Extension> {
        match n.to_json() {
            serde_json::Value::Object(m) => Some(m),
            serde_json::Value::Null => Some(Extension::new()),
            _ => {
                self.err(n, field, "must be a mapping");
                None
            }
        }
    }

    /// Our own per-service keys: a typo must not silently fall back to a default (for
    /// example `image_update: folow` behaving as `pin`).
    fn service_extension_keys(&mut self, n: &Node) {
        let Some(map) = n.as_map() else {
            return;
        };
        let job = map.iter().any(|(k, _)| k.name == "schedule");
        for (k, v) in map {
            let field = format!("x-dockmaster.{}", k.name);
            match k.name.as_str() {
                "image_update" => match v.as_str() {
                    Some("follow" | "pin" | "notify") => {}
                    _ => self.err_hint(
                        v,
                        &field,
                        "must be follow, pin or notify",
                        "follow redeploys when the tag moves, notify only reports it, pin (the default) never looks",
                    ),
                },
                "restart_unhealthy" => {
                    if !matches!(v.value, Value::Bool(_)) {
                        self.err(v, &field, "must be true or false");
                    }
                }
                key if crate::jobs::spec::is_job_key(key) => {
                    if let Err(msg) = crate::jobs::spec::check_key(key, &v.to_json()) {
                        if key == "schedule" {
                            self.err_hint(
                                v,
                                &field,
                                msg,
                                "check an expression with `dockmaster schedule next \"SPEC\"`",
                            );
                        } else {
                            self.err(v, &field, msg);
                        }
                    } else if !job {
                        self.warn(
                            v,
                            &field,
                            "only applies to jobs (services with x-dockmaster.schedule) and is ignored",
                        );
                    }
                }
                other => self.warn(
                    v,
                    &field,
                    format!(
                        "unknown x-dockmaster key {other:?} is ignored (known: image_update, restart_unhealthy, {})",
                        crate::jobs::spec::JOB_KEYS.join(", ")
                    ),
                ),
            }
        }
    }

    fn map_entries<'n>(&mut self, n: &'n Node, field: &str) -> &'n [(super::yaml::Key, Node)] {
        match &n.value {
            Value::Map(m) => m,
            Value::Null => &[],
            _ => {
                self.err(
                    n,
                    field,
                    format!("must be a mapping, not {}", n.type_name()),
                );
                &[]
            }
        }
    }

    // ---- the project ---------------------------------------------------------------------

    pub(crate) fn project(&mut self, dict: &Node, profiles: &BTreeSet<String>) -> Option<Project> {
        let errors_before = self.errors.len();
        let mut project = Project {
            configs: BTreeMap::new(),
            name: self.name.to_string(),
            networks: BTreeMap::new(),
            secrets: BTreeMap::new(),
            services: BTreeMap::new(),
            volumes: BTreeMap::new(),
            x_dockmaster: None,
            extensions: BTreeMap::new(),
            working_dir: self.project_dir.to_path_buf(),
            compose_files: Vec::new(),
            source_files: Vec::new(),
            profiles: profiles.clone(),
            disabled_services: BTreeSet::new(),
            warnings: Vec::new(),
        };
        let mut services_node = None;
        for (k, v) in dict.as_map().map(Vec::as_slice).unwrap_or(&[]) {
            match k.name.as_str() {
                "name" => {
                    if v.as_str().is_none() {
                        self.err(v, "name", "must be a string");
                    }
                }
                "services" => services_node = Some(v),
                "networks" => {
                    for (nk, nv) in self.map_entries(v, "networks") {
                        if let Some(n) = self.network(&nk.name, nv) {
                            project.networks.insert(nk.name.clone(), n);
                        }
                    }
                }
                "volumes" => {
                    for (vk, vv) in self.map_entries(v, "volumes") {
                        if let Some(n) = self.volume(&vk.name, vv) {
                            project.volumes.insert(vk.name.clone(), n);
                        }
                    }
                }
                "configs" | "secrets" => {
                    let section = k.name.as_str();
                    for (ck, cv) in self.map_entries(v, section) {
                        if let Some(o) = self.file_object(section, &ck.name, cv) {
                            if section == "configs" {
                                project.configs.insert(ck.name.clone(), o);
                            } else {
                                project.secrets.insert(ck.name.clone(), o);
                            }
                        }
                    }
                }
                "x-dockmaster" => project.x_dockmaster = self.extension(v, "x-dockmaster"),
                "models" => self.unsupported(
                    v,
                    "models",
                    "top-level models (AI model runner)",
                    "remove the models section",
                ),
                n if n.starts_with("x-") => {
                    project.extensions.insert(n.to_string(), v.to_json());
                }
                _ => self.unknown_key(
                    k,
                    "",
                    "name, services, networks, volumes, configs, secrets, include, x-*",
                ),
            }
        }
        if let Some(sn) = services_node {
            let entries: Vec<(String, Node)> = self
                .map_entries(sn, "services")
                .iter()
                .map(|(k, v)| (k.name.clone(), v.clone()))
                .collect();
            for (name, node) in entries {
                self.service_locs.insert(name.clone(), node.loc.clone());
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    self.err_hint(
                        &node,
                        &format!("services.{name}"),
                        format!("invalid service name {name:?}"),
                        "use only letters, digits, '.', '_' and '-'",
                    );
                    continue;
                }
                self.service = Some(name.clone());
                if node.as_map().is_none() {
                    self.service = None;
                    self.err(&node, &format!("services.{name}"), "must be a mapping");
                    continue;
                }
                let first_error = self.errors.len();
                let s = self.service(&name, &node);
                self.service = None;
                self.service_errors
                    .insert(name.clone(), (first_error, self.errors.len()));
                if let Some(s) = s {
                    project.services.insert(name, s);
                }
            }
        }
        self.apply_profiles(&mut project);
        self.relax_disabled(&project);
        self.normalize(&mut project);
        self.check(&mut project);
        if self.errors.len() > errors_before {
            return None;
        }
        Some(project)
    }

    fn apply_profiles(&mut self, p: &mut Project) {
        let active = &p.profiles;
        let all = active.contains("*");
        let disabled: Vec<String> = p
            .services
            .iter()
            .filter(|(_, s)| {
                !s.profiles.is_empty() && !all && !s.profiles.iter().any(|x| active.contains(x))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in disabled {
            p.services.remove(&n);
            p.disabled_services.insert(n);
        }
    }

    /// A service left out by its profiles is not deployed: what dockmaster does not support
    /// in it is only a warning (a `build:`-only dev service must not block the project).
    fn relax_disabled(&mut self, p: &Project) {
        let mut relaxed: BTreeSet<usize> = BTreeSet::new();
        for name in &p.disabled_services {
            if let Some(&(from, to)) = self.service_errors.get(name) {
                for i in from..to.min(self.errors.len()) {
                    if self.errors[i].is_unsupported() {
                        relaxed.insert(i);
                    }
                }
            }
        }
        if relaxed.is_empty() {
            return;
        }
        let errors = std::mem::take(self.errors);
        for (i, e) in errors.into_iter().enumerate() {
            if !relaxed.contains(&i) {
                self.errors.push(e);
                continue;
            }
            if let LoadError::Unsupported {
                location,
                subject,
                message,
                ..
            } = e
            {
                self.warnings.push(Warning {
                    location,
                    service: subject.service,
                    field: subject.field,
                    message: format!("unsupported {message}, ignored while the service is disabled by its profiles"),
                });
            }
        }
    }

    /// compose's normalization: default network, resource names, implicit dependencies.
    fn normalize(&mut self, p: &mut Project) {
        let mut uses_default = false;
        for s in p.services.values_mut() {
            if s.networks.is_empty() && s.network_mode.is_none() {
                s.networks.insert("default".to_string(), None);
            }
            if s.networks.contains_key("default") {
                uses_default = true;
            }
        }
        if uses_default && !p.networks.contains_key("default") {
            p.networks.insert("default".to_string(), Network::default());
        }
        for (k, n) in p.networks.iter_mut() {
            if n.name.is_empty() {
                n.name = if n.external {
                    k.clone()
                } else {
                    format!("{}_{k}", p.name)
                };
            }
        }
        for (k, v) in p.volumes.iter_mut() {
            if v.name.is_empty() {
                v.name = if v.external {
                    k.clone()
                } else {
                    format!("{}_{k}", p.name)
                };
            }
        }
        for objs in [&mut p.configs, &mut p.secrets] {
            for (k, o) in objs.iter_mut() {
                if o.name.is_empty() {
                    o.name = if o.external {
                        k.clone()
                    } else {
                        format!("{}_{k}", p.name)
                    };
                }
            }
        }
        for s in p.services.values_mut() {
            if let Some(NetworkMode::Service(dep)) = &s.network_mode {
                s.depends_on.entry(dep.clone()).or_insert(Dependency {
                    condition: DependCondition::Started,
                    restart: true,
                    required: true,
                });
            }
            s.resources = effective_resources(s);
        }
    }

    /// compose's consistency checks, plus what a single host needs.
    fn check(&mut self, p: &mut Project) {
        let names: BTreeSet<String> = p.services.keys().cloned().collect();
        let mut container_names: HashMap<String, String> = HashMap::new();
        let ref_locs = std::mem::take(&mut self.ref_locs);
        for (name, (loc, has_build)) in std::mem::take(&mut self.no_image) {
            if !p.services.contains_key(&name) {
                continue;
            }
            let subject = Subject {
                service: Some(name.clone()),
                field: if has_build { "build" } else { "image" }.to_string(),
            };
            self.errors.push(if has_build {
                LoadError::Unsupported {
                    location: Some(loc),
                    subject,
                    message: "building images (build: without image:)".into(),
                    hint: Some("build and push the image elsewhere and set image:".into()),
                }
            } else {
                LoadError::Invalid {
                    location: Some(loc),
                    subject,
                    message: format!(
                        "service {name:?} has neither an image nor a build context specified"
                    ),
                    hint: Some("set image:".into()),
                }
            });
        }
        for (name, s) in &p.services {
            let loc = self.service_locs.get(name).cloned();
            let at = |field: &str, msg: String, hint: Option<&str>| LoadError::Invalid {
                location: ref_locs
                    .get(&(name.clone(), field.to_string()))
                    .cloned()
                    .or_else(|| loc.clone()),
                subject: Subject {
                    service: Some(name.clone()),
                    field: field.to_string(),
                },
                message: msg,
                hint: hint.map(str::to_string),
            };
            let uses_network_of = match &s.network_mode {
                Some(NetworkMode::Service(dep)) => Some(dep.as_str()),
                _ => None,
            };
            for (dep, d) in &s.depends_on {
                if let Some(job) = p.services.get(dep).filter(|j| crate::jobs::spec::is_job(j)) {
                    // network_mode: service:<job> adds this dependency itself: reported there
                    // unless it is also written.
                    let written =
                        ref_locs.contains_key(&(name.clone(), format!("depends_on.{dep}")));
                    if uses_network_of != Some(dep.as_str()) || written {
                        self.errors.push(at(
                            &format!("depends_on.{dep}"),
                            format!(
                                "service {name:?} depends on {:?}, a job: a job is not kept running (it runs at its schedule), so nothing can wait for it",
                                job.name
                            ),
                            Some("run that work in the dependent service, or drop the dependency"),
                        ));
                    }
                    continue;
                }
                if names.contains(dep) || self.broken.contains(dep) {
                    continue;
                }
                if p.disabled_services.contains(dep) {
                    if d.required {
                        self.errors.push(at(
                            &format!("depends_on.{dep}"),
                            format!("service {name:?} depends on service {dep:?}, which is disabled by its profiles"),
                            Some("activate one of its profiles (--profile / COMPOSE_PROFILES) or set required: false"),
                        ));
                    }
                    continue;
                }
                self.errors.push(at(
                    &format!("depends_on.{dep}"),
                    format!("service {name:?} depends on undefined service {dep:?}"),
                    Some("define the service or remove the dependency"),
                ));
            }
            if let Some(NetworkMode::Service(dep)) = &s.network_mode {
                if !names.contains(dep) {
                    self.errors.push(at(
                        "network_mode",
                        format!("service {name:?} uses the network of undefined service {dep:?}"),
                        None,
                    ));
                } else if p.services.get(dep).is_some_and(crate::jobs::spec::is_job) {
                    self.errors.push(at(
                        "network_mode",
                        format!("service {name:?} uses the network of {dep:?}, a job: a job is not kept running, so there is no network to share"),
                        Some("attach both services to a network instead"),
                    ));
                }
            }
            if crate::jobs::spec::is_job(s) && s.replicas() > 1 {
                // deploy.replicas wins over scale (Service::replicas).
                let field = if s.deploy.as_ref().and_then(|d| d.replicas).is_some() {
                    "deploy.replicas"
                } else {
                    "scale"
                };
                self.warnings.push(Warning {
                    location: ref_locs
                        .get(&(name.clone(), field.to_string()))
                        .cloned()
                        .or_else(|| loc.clone()),
                    service: Some(name.clone()),
                    field: field.into(),
                    message: format!(
                        "ignored: {name:?} is a job; each run is one container ({} replicas asked)",
                        s.replicas()
                    ),
                });
            }
            for net in s.networks.keys() {
                if !p.networks.contains_key(net) {
                    self.errors.push(at(
                        &format!("networks.{net}"),
                        format!("service {name:?} refers to undefined network {net}"),
                        Some("declare it under the top-level networks"),
                    ));
                }
            }
            for m in &s.volumes {
                if m.kind == MountKind::Volume {
                    if let Some(src) = &m.source {
                        if !p.volumes.contains_key(src) {
                            self.errors.push(at(
                                &format!("volumes.{src}"),
                                format!("service {name:?} refers to undefined volume {src}"),
                                Some("declare it under the top-level volumes, or use ./path for a bind mount"),
                            ));
                        }
                    }
                }
            }
            for (kind, refs, defined) in [
                ("secret", &s.secrets, &p.secrets),
                ("config", &s.configs, &p.configs),
            ] {
                for r in refs {
                    if !defined.contains_key(&r.source) {
                        self.errors.push(at(
                            &format!("{kind}s.{}", r.source),
                            format!("service {name:?} refers to undefined {kind} {}", r.source),
                            Some(if kind == "secret" {
                                "declare it under the top-level secrets"
                            } else {
                                "declare it under the top-level configs"
                            }),
                        ));
                    }
                }
            }
            if let Some(cn) = &s.container_name {
                if let Some(other) = container_names.insert(cn.clone(), name.clone()) {
                    self.errors.push(at(
                        "container_name",
                        format!("container name {cn:?} is already used by service {other:?}"),
                        Some("container names must be unique"),
                    ));
                }
                if s.replicas() > 1 {
                    // Compose accepts this in `config` and fails at `up`; say so up front.
                    self.errors.push(LoadError::Unsupported {
                        location: ref_locs
                            .get(&(name.clone(), "container_name".to_string()))
                            .cloned()
                            .or_else(|| loc.clone()),
                        subject: Subject {
                            service: Some(name.clone()),
                            field: "container_name".into(),
                        },
                        message: format!(
                            "container_name with {} replicas (container names are unique)",
                            s.replicas()
                        ),
                        hint: Some("remove container_name or run one replica".into()),
                    });
                }
            }
        }
        // Dependency cycles (depends_on), reported once each, in name order.
        let mut state: HashMap<&str, u8> = HashMap::new();
        let mut stack: Vec<&str> = Vec::new();
        let mut cycles: Vec<Vec<String>> = Vec::new();
        fn visit<'s>(
            n: &'s str,
            p: &'s Project,
            state: &mut HashMap<&'s str, u8>,
            stack: &mut Vec<&'s str>,
            cycles: &mut Vec<Vec<String>>,
        ) {
            state.insert(n, 1);
            stack.push(n);
            if let Some(s) = p.services.get(n) {
                for dep in s.depends_on.keys() {
                    match state.get(dep.as_str()) {
                        Some(1) => {
                            let start = stack.iter().position(|x| *x == dep).unwrap_or(0);
                            let mut c: Vec<String> =
                                stack[start..].iter().map(|s| s.to_string()).collect();
                            c.push(dep.clone());
                            cycles.push(c);
                        }
                        Some(_) => {}
                        None => {
                            if p.services.contains_key(dep) {
                                visit(dep, p, state, stack, cycles);
                            }
                        }
                    }
                }
            }
            stack.pop();
            state.insert(n, 2);
        }
        for n in p.services.keys() {
            if !state.contains_key(n.as_str()) {
                visit(n, p, &mut state, &mut stack, &mut cycles);
            }
        }
        for c in cycles {
            let location = match (c.first(), c.get(1)) {
                (Some(a), Some(b)) => ref_locs
                    .get(&(a.clone(), format!("depends_on.{b}")))
                    .cloned(),
                _ => None,
            };
            self.errors
                .push(LoadError::DependencyCycle { location, chain: c });
        }
    }

    // ---- services ------------------------------------------------------------------------

    fn service(&mut self, name: &str, node: &Node) -> Option<Service> {
        let mut s = Service {
            name: name.to_string(),
            profiles: Vec::new(),
            annotations: BTreeMap::new(),
            attach: None,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            cpus: None,
            cpu_shares: None,
            command: None,
            configs: Vec::new(),
            container_name: None,
            depends_on: BTreeMap::new(),
            deploy: None,
            dns: Vec::new(),
            dns_opt: Vec::new(),
            dns_search: Vec::new(),
            domainname: None,
            entrypoint: None,
            environment: BTreeMap::new(),
            env_files: Vec::new(),
            expose: Vec::new(),
            extra_hosts: Vec::new(),
            group_add: Vec::new(),
            hostname: None,
            healthcheck: None,
            image: String::new(),
            init: None,
            labels: BTreeMap::new(),
            mem_limit: None,
            mem_reservation: None,
            memswap_limit: None,
            network_mode: None,
            networks: BTreeMap::new(),
            pids_limit: None,
            platform: None,
            ports: Vec::new(),
            privileged: false,
            pull_policy: None,
            read_only: false,
            restart: None,
            scale: None,
            secrets: Vec::new(),
            security_opt: Vec::new(),
            shm_size: None,
            stdin_open: false,
            stop_grace_period: None,
            stop_signal: None,
            sysctls: BTreeMap::new(),
            tmpfs: Vec::new(),
            tty: false,
            ulimits: BTreeMap::new(),
            user: None,
            volumes: Vec::new(),
            working_dir: None,
            x_dockmaster: None,
            resources: EffectiveResources::default(),
        };
        let mut environment: Option<&Node> = None;
        let mut build: Option<&Node> = None;
        let mut links: Option<&Node> = None;
        let map = node.as_map().map(Vec::as_slice).unwrap_or(&[]);
        for (k, v) in map {
            let f = k.name.as_str();
            match f {
                "image" => s.image = self.string(v, f).unwrap_or_default(),
                "command" => s.command = self.command(v, f),
                "entrypoint" => s.entrypoint = self.command(v, f),
                "environment" => environment = Some(v),
                "env_file" => s.env_files = self.env_files(v),
                "ports" => s.ports = self.ports(v),
                "expose" => {
                    let mut seen = BTreeSet::new();
                    for e in self.string_or_list(v, f) {
                        if seen.insert(e.clone()) {
                            s.expose.push(e);
                        }
                    }
                    for e in &s.expose {
                        let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
                        if parse_port_range(port).is_err()
                            || !matches!(proto, "tcp" | "udp" | "sctp")
                        {
                            self.err(
                                v,
                                f,
                                format!("invalid port {e:?} (expected PORT[-PORT][/PROTOCOL])"),
                            );
                        }
                    }
                }
                "volumes" => s.volumes = self.mounts(v),
                "tmpfs" => s.tmpfs = self.string_or_list(v, f),
                "networks" => s.networks = self.service_networks(v),
                "network_mode" => {
                    self.note("network_mode".into(), &v.loc);
                    s.network_mode = self.network_mode(v)
                }
                "depends_on" => s.depends_on = self.depends_on(v),
                "links" => links = Some(v),
                "healthcheck" => s.healthcheck = self.healthcheck(v),
                "restart" => s.restart = self.restart(v),
                "deploy" => s.deploy = self.deploy(v),
                "mem_limit" => s.mem_limit = self.bytes(v, f),
                "mem_reservation" => s.mem_reservation = self.bytes(v, f),
                "memswap_limit" => s.memswap_limit = self.bytes(v, f),
                "shm_size" => s.shm_size = self.bytes(v, f),
                "cpus" => {
                    s.cpus = self.number(v, f);
                    if s.cpus.is_some_and(|c| c < 0.0) {
                        self.err(v, f, "must not be negative");
                    }
                }
                "cpu_shares" => s.cpu_shares = self.non_negative(v, f),
                "pids_limit" => s.pids_limit = self.integer(v, f),
                "user" => s.user = self.opt_string(v, f),
                "working_dir" => {
                    s.working_dir = self.opt_string(v, f);
                    if let Some(w) = &s.working_dir {
                        if !w.starts_with('/') {
                            self.err_hint(
                                v,
                                f,
                                format!("working_dir {w:?} is not an absolute path"),
                                "start it with /",
                            );
                        }
                    }
                }
                "hostname" => s.hostname = self.opt_string(v, f),
                "domainname" => self.unsupported(
                    v,
                    f,
                    "domainname (the container's NIS domain name)",
                    "remove domainname",
                ),
                "container_name" => {
                    self.note("container_name".into(), &v.loc);
                    s.container_name = self.opt_string(v, f);
                    if let Some(c) = &s.container_name {
                        let ok = c.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                            && c.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                        if !ok {
                            self.err(v, f, format!("invalid container name {c:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"));
                        }
                    }
                }
                "labels" => s.labels = self.string_map(v, f),
                "cap_add" => s.cap_add = self.string_list(v, f),
                "cap_drop" => s.cap_drop = self.string_list(v, f),
                "privileged" => s.privileged = self.boolean(v, f).unwrap_or(false),
                "read_only" => s.read_only = self.boolean(v, f).unwrap_or(false),
                "tty" => s.tty = self.boolean(v, f).unwrap_or(false),
                "stdin_open" => s.stdin_open = self.boolean(v, f).unwrap_or(false),
                "init" => s.init = self.boolean(v, f),
                "security_opt" => s.security_opt = self.string_list(v, f),
                "sysctls" => s.sysctls = self.string_map(v, f),
                "ulimits" => s.ulimits = self.ulimits(v),
                "stop_signal" => s.stop_signal = self.opt_string(v, f),
                "stop_grace_period" => s.stop_grace_period = self.duration(v, f),
                "extra_hosts" => s.extra_hosts = self.extra_hosts(v),
                "dns" => s.dns = non_empty(self.string_or_list(v, f)),
                "dns_search" => s.dns_search = non_empty(self.string_or_list(v, f)),
                "dns_opt" => s.dns_opt = self.string_list(v, f),
                "group_add" => s.group_add = self.string_or_list(v, f),
                "configs" => s.configs = self.file_refs(v, "configs"),
                "secrets" => s.secrets = self.file_refs(v, "secrets"),
                "pull_policy" => s.pull_policy = self.pull_policy(v),
                "platform" => s.platform = self.opt_string(v, f),
                "profiles" => s.profiles = self.string_list(v, f),
                "scale" => {
                    self.note("scale".into(), &v.loc);
                    if let Some(n) = self.non_negative(v, f) {
                        s.scale = u32::try_from(n).ok();
                    }
                }
                "x-dockmaster" => {
                    self.service_extension_keys(v);
                    s.x_dockmaster = self.extension(v, f);
                }
                "extends" => {} // applied by the loader
                "build" | "dockerfile" => build = Some(v),
                "develop" => self.develop(v),
                "logging" | "log_driver" | "log_opt" => self.logging(v, f),
                "annotations" => s.annotations = self.string_map(v, f),
                "attach" => s.attach = self.boolean(v, f),
                "label_file" => {
                    self.unsupported(v, f, "label_file", "move the labels into labels:")
                }
                "credential_spec" | "isolation" => {
                    self.unsupported(v, f, format!("{f} (Windows containers)"), "remove it")
                }
                "mac_address" => self.unsupported(
                    v,
                    f,
                    "mac_address",
                    "remove it; addresses are assigned by dockmaster",
                ),
                "oom_kill_disable"
                | "oom_score_adj"
                | "mem_swappiness"
                | "cpu_count"
                | "cpu_percent"
                | "cpu_period"
                | "cpu_quota"
                | "cpu_rt_period"
                | "cpu_rt_runtime"
                | "cpuset"
                | "blkio_config"
                | "cgroup"
                | "cgroup_parent"
                | "device_cgroup_rules"
                | "devices"
                | "gpus"
                | "ipc"
                | "pid"
                | "uts"
                | "userns_mode"
                | "runtime"
                | "storage_opt"
                | "volume_driver"
                | "volumes_from"
                | "external_links"
                | "provider"
                | "models"
                | "use_api_socket"
                | "post_start"
                | "pre_start"
                | "pre_stop"
                | "net" => self.unsupported(
                    v,
                    f,
                    format!("{f} is not supported by dockmaster's runtime"),
                    "remove it",
                ),
                n if n.starts_with("x-") => {}
                _ => self.unknown_key(k, "", SERVICE_FIELDS_HINT),
            }
        }
        // image / build: checked for active services only (as compose's consistency check).
        match (s.image.is_empty(), build) {
            (true, b) => {
                let loc = b.map(|b| b.loc.clone()).unwrap_or_else(|| node.loc.clone());
                self.no_image.insert(name.to_string(), (loc, b.is_some()));
            }
            (false, Some(b)) => self.warn(
                b,
                "build",
                format!(
                    "ignored: dockmaster does not build images; it pulls {}",
                    s.image
                ),
            ),
            (false, None) => {}
        }
        // links: compose adds a dependency (restart: true) for each.
        if let Some(l) = links {
            for link in self.string_list(l, "links") {
                let (svc, alias) = link
                    .split_once(':')
                    .unwrap_or((link.as_str(), link.as_str()));
                if svc != alias {
                    self.warn(l, "links", format!("the alias {alias:?} of link {link:?} is not created; reach the service by its name {svc:?}"));
                }
                self.note(format!("depends_on.{svc}"), &l.loc);
                s.depends_on.entry(svc.to_string()).or_insert(Dependency {
                    condition: DependCondition::Started,
                    restart: true,
                    required: true,
                });
            }
        }
        if s.network_mode.is_some() && map.iter().any(|(k, _)| k.name == "networks") {
            self.err_hint(
                node,
                "network_mode",
                format!("service {name} declares mutually exclusive `network_mode` and `networks`"),
                "keep only one of them",
            );
        }
        if let (Some(scale), Some(replicas)) = (s.scale, s.deploy.as_ref().and_then(|d| d.replicas))
        {
            if scale != replicas {
                self.err(node, "scale", "can't use both 'scale' (deprecated) and 'deploy.replicas' with different values");
            }
        }
        // Environment: env files first, then environment: (values from the project env).
        s.environment = self.environment(&s.env_files, environment);
        // Kept even when invalid (the load fails anyway), so references to it are checked too.
        Some(s)
    }

    /// `develop` is ignored (it drives `docker compose watch`) but still checked like compose.
    fn develop(&mut self, v: &Node) {
        let errors_before = self.errors.len();
        for (k, val) in self.map_entries(v, "develop") {
            match k.name.as_str() {
                "watch" => {
                    let Some(items) = val.as_seq() else {
                        self.err(val, "develop.watch", "must be a list");
                        continue;
                    };
                    for (i, w) in items.iter().enumerate() {
                        let f = format!("develop.watch[{i}]");
                        if w.as_map().is_none() {
                            self.err(w, &f, "must be a mapping");
                            continue;
                        }
                        for required in ["path", "action"] {
                            if w.get(required).is_none() {
                                self.err(w, &f, format!("missing property '{required}'"));
                            }
                        }
                        if let Some(a) = w.get("action") {
                            let ok = a.as_str().is_some_and(|a| {
                                matches!(
                                    a,
                                    "sync" | "rebuild" | "restart" | "sync+restart" | "sync+exec"
                                )
                            });
                            if !ok {
                                self.err(a, &format!("{f}.action"), "must be one of sync, rebuild, restart, sync+restart, sync+exec");
                            }
                        }
                    }
                }
                n if n.starts_with("x-") => {}
                _ => self.unknown_key(k, "develop", "watch"),
            }
        }
        if self.errors.len() == errors_before {
            self.warn(
                v,
                "develop",
                "ignored: develop (watch) is for `docker compose watch` during development",
            );
        }
    }

    fn logging(&mut self, v: &Node, f: &str) {
        let driver = match f {
            "logging" => v.get("driver").and_then(Node::scalar_string),
            "log_driver" => v.scalar_string(),
            _ => None,
        };
        match driver.as_deref() {
            None | Some("json-file") | Some("local") => self.warn(
                v,
                f,
                "ignored: dockmaster writes json-file logs with its own rotation",
            ),
            Some(d) => self.warn(
                v,
                f,
                format!("unsupported logging driver {d:?}: the logs stay in dockmaster's json-file logs (dockmaster logs PROJECT SERVICE)"),
            ),
        }
    }

    fn command(&mut self, v: &Node, f: &str) -> Option<Vec<String>> {
        match &v.value {
            Value::Null => None,
            Value::Str(s) => match shell_split(s) {
                Ok(w) => {
                    if let Some(at) = w.dropped_from {
                        self.warn(
                            v,
                            f,
                            format!(
                                "everything from {:?} is dropped (compose splits {f} like a shell word list and stops at ; & | < >); use the list form [\"sh\", \"-c\", \"...\"] to run a shell",
                                &s[at..]
                            ),
                        );
                    }
                    Some(w.words)
                }
                Err(e) => {
                    self.err(v, f, e);
                    None
                }
            },
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    if let Some(s) = self.scalar(it, &format!("{f}[{i}]")) {
                        out.push(s);
                    }
                }
                Some(out)
            }
            _ => {
                self.err(
                    v,
                    f,
                    format!(
                        "must be a string or a list of strings, not {}",
                        v.type_name()
                    ),
                );
                None
            }
        }
    }

    fn env_files(&mut self, v: &Node) -> Vec<EnvFile> {
        let items: Vec<&Node> = match &v.value {
            Value::Str(_) => vec![v],
            Value::Seq(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            _ => {
                self.err(v, "env_file", "must be a path or a list");
                return Vec::new();
            }
        };
        let mut out: Vec<EnvFile> = Vec::new();
        for (i, it) in items.into_iter().enumerate() {
            let f = format!("env_file[{i}]");
            let ef = match &it.value {
                Value::Str(p) => Some(EnvFile {
                    path: self.abs(p),
                    required: true,
                    format: None,
                }),
                Value::Map(m) => {
                    let mut path = None;
                    let mut required = true;
                    let mut format = None;
                    for (k, val) in m {
                        match k.name.as_str() {
                            "path" => path = self.string(val, &format!("{f}.path")),
                            "required" => {
                                required =
                                    self.boolean(val, &format!("{f}.required")).unwrap_or(true)
                            }
                            "format" => {
                                format = self.string(val, &format!("{f}.format"));
                                if let Some(fm) = &format {
                                    if fm != "raw" {
                                        self.unsupported(
                                            val,
                                            &format!("{f}.format"),
                                            format!("env file format {fm:?}"),
                                            "use the default format or raw",
                                        );
                                    }
                                }
                            }
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(k, &f, "path, required, format"),
                        }
                    }
                    match path {
                        Some(p) => Some(EnvFile {
                            path: self.abs(&p),
                            required,
                            format,
                        }),
                        None => {
                            self.err(it, &f, "missing property 'path'");
                            None
                        }
                    }
                }
                _ => {
                    self.err(it, &f, "must be a path or a mapping with path and required");
                    None
                }
            };
            if let Some(ef) = ef {
                if ef.required && !self.fs.is_file(&ef.path) {
                    self.errors.push(LoadError::MissingFile {
                        location: Some(it.loc.clone()),
                        subject: self.subject(&f),
                        what: "env file",
                        path: ef.path.clone(),
                        hint: Some("create the file or mark it required: false".into()),
                    });
                }
                if !out.iter().any(|e| e.path == ef.path) {
                    out.push(ef);
                }
            }
        }
        out
    }

    fn abs(&self, p: &str) -> PathBuf {
        normalize(&self.project_dir.join(p))
    }

    fn environment(
        &mut self,
        env_files: &[EnvFile],
        environment: Option<&Node>,
    ) -> BTreeMap<String, Option<String>> {
        let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
        for ef in env_files {
            if !self.fs.is_file(&ef.path) {
                // Reported by env_files() when required.
                continue;
            }
            let text = match self.fs.read(&ef.path, MAX_ENV_FILE_BYTES) {
                Ok(b) => {
                    if !self.read_files.contains(&ef.path) {
                        self.read_files.push(ef.path.clone());
                    }
                    String::from_utf8_lossy(&b).into_owned()
                }
                Err(e) => {
                    self.errors.push(LoadError::Read {
                        path: ef.path.clone(),
                        source: e,
                        hint: None,
                    });
                    continue;
                }
            };
            if ef.format.as_deref() == Some("raw") {
                for line in text.lines() {
                    let line = line.trim_end_matches('\r');
                    if line.trim().is_empty() || line.trim_start().starts_with('#') {
                        continue;
                    }
                    match line.split_once('=') {
                        Some((k, v)) => out.insert(k.trim().to_string(), Some(v.to_string())),
                        None => out.insert(line.trim().to_string(), None),
                    };
                }
                continue;
            }
            let env = self.env;
            let lookup = |k: &str| -> Option<String> {
                match out.get(k) {
                    Some(Some(v)) => Some(v.clone()),
                    _ => env.get(k).cloned(),
                }
            };
            match dotenv::parse(&text, &lookup) {
                Ok(vars) => {
                    for (k, v) in vars {
                        out.insert(k, Some(v));
                    }
                }
                Err(e) => self.errors.push(LoadError::EnvFile {
                    path: ef.path.clone(),
                    line: e.line(),
                    message: e.to_string(),
                }),
            }
        }
        if let Some(n) = environment {
            if !matches!(n.value, Value::Map(_) | Value::Seq(_) | Value::Null) {
                self.err(n, "environment", "must be a mapping or a list of KEY=VALUE");
                return out;
            }
            for (k, v, loc) in self.kv(n, "environment", false) {
                if k.ends_with(char::is_whitespace) {
                    self.errors.push(LoadError::Invalid {
                        location: Some(loc),
                        subject: self.subject("environment"),
                        message: format!(
                            "environment variable {k} is declared with a trailing space"
                        ),
                        hint: Some("remove the spaces around =".into()),
                    });
                    continue;
                }
                if k.is_empty() {
                    self.errors.push(LoadError::Invalid {
                        location: Some(loc),
                        subject: self.subject("environment"),
                        message: "environment variable with an empty name".into(),
                        hint: None,
                    });
                    continue;
                }
                match v {
                    Some(v) => {
                        out.insert(k, Some(v));
                    }
                    None => {
                        // A bare name takes the project environment's value.
                        match self.env.get(&k) {
                            Some(v) => {
                                out.insert(k, Some(v.clone()));
                            }
                            None => {
                                out.entry(k).or_insert(None);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn ports(&mut self, v: &Node) -> Vec<Port> {
        let Some(items) = v.as_seq() else {
            if !v.is_null() {
                self.err(v, "ports", "must be a list");
            }
            return Vec::new();
        };
        let mut out: Vec<Port> = Vec::new();
        let mut index: HashMap<(Option<IpAddrKey>, Option<PortRange>, u16, Protocol), usize> =
            HashMap::new();
        for (i, it) in items.iter().enumerate() {
            let f = format!("ports[{i}]");
            let ports: Vec<Port> = match &it.value {
                Value::Str(_) | Value::Int(_) => {
                    let spec = it.scalar_string().unwrap_or_default();
                    match parse_port_spec(&spec) {
                        Ok(list) => list
                            .into_iter()
                            .map(|p| Port {
                                name: None,
                                mode: p.mode,
                                host_ip: p.host_ip,
                                target: p.target,
                                published: p.published,
                                protocol: p.protocol,
                                app_protocol: None,
                            })
                            .collect(),
                        Err(e) => {
                            self.err_hint(
                                it,
                                &f,
                                e,
                                "write [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
                            );
                            continue;
                        }
                    }
                }
                Value::Map(m) => {
                    let mut p = Port {
                        name: None,
                        mode: PortMode::Ingress,
                        host_ip: None,
                        target: 0,
                        published: None,
                        protocol: Protocol::Tcp,
                        app_protocol: None,
                    };
                    let mut has_target = false;
                    for (k, val) in m {
                        let ff = format!("{f}.{}", k.name);
                        match k.name.as_str() {
                            "target" => {
                                if let Some(t) = self.integer(val, &ff) {
                                    match u16::try_from(t) {
                                        Ok(t) => {
                                            p.target = t;
                                            has_target = true;
                                        }
                                        Err(_) => self.err(val, &ff, format!("invalid port {t}")),
                                    }
                                }
                            }
                            "published" => {
                                if let Some(s) = self.scalar(val, &ff) {
                                    if !s.is_empty() {
                                        match parse_port_range(&s) {
                                            Ok((a, b)) => {
                                                p.published = Some(PortRange { start: a, end: b })
                                            }
                                            Err(e) => self.err(val, &ff, e),
                                        }
                                    }
                                }
                            }
                            "host_ip" => {
                                if let Some(s) = self.opt_string(val, &ff) {
                                    match s.parse() {
                                        Ok(ip) => p.host_ip = Some(ip),
                                        Err(_) => {
                                            self.err(val, &ff, format!("invalid IP address {s:?}"))
                                        }
                                    }
                                }
                            }
                            "protocol" => {
                                if let Some(s) = self.string(val, &ff) {
                                    p.protocol = match s.to_ascii_lowercase().as_str() {
                                        "tcp" => Protocol::Tcp,
                                        "udp" => Protocol::Udp,
                                        "sctp" => Protocol::Sctp,
                                        _ => {
                                            self.err(val, &ff, format!("invalid protocol {s:?} (expected tcp, udp or sctp)"));
                                            Protocol::Tcp
                                        }
                                    }
                                }
                            }
                            "mode" => {
                                if let Some(s) = self.string(val, &ff) {
                                    p.mode = match s.as_str() {
                                        "host" => PortMode::Host,
                                        "ingress" => PortMode::Ingress,
                                        _ => {
                                            self.err(
                                                val,
                                                &ff,
                                                format!(
                                                    "invalid mode {s:?} (expected host or ingress)"
                                                ),
                                            );
                                            PortMode::Ingress
                                        }
                                    }
                                }
                            }
                            "app_protocol" => p.app_protocol = self.string(val, &ff),
                            "name" => p.name = self.string(val, &ff),
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(
                                k,
                                &f,
                                "target, published, host_ip, protocol, mode, app_protocol, name",
                            ),
                        }
                    }
                    if !has_target {
                        self.err(it, &f, "missing property 'target'");
                        continue;
                    }
                    vec![p]
                }
                _ => {
                    self.err(
                        it,
                        &f,
                        format!(
                            "must be a port string, a number or a mapping, not {}",
                            it.type_name()
                        ),
                    );
                    continue;
                }
            };
            for p in ports {
                let key = (p.host_ip.map(IpAddrKey), p.published, p.target, p.protocol);
                match index.get(&key) {
                    Some(&j) => out[j] = p,
                    None => {
                        index.insert(key, out.len());
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    fn mounts(&mut self, v: &Node) -> Vec<Mount> {
        let Some(items) = v.as_seq() else {
            if !v.is_null() {
                self.err(v, "volumes", "must be a list");
            }
            return Vec::new();
        };
        let mut out: Vec<Mount> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            let f = format!("volumes[{i}]");
            let m = match &it.value {
                Value::Str(spec) => self.short_mount(it, spec, &f),
                Value::Map(_) => self.long_mount(it, &f),
                _ => {
                    self.err(
                        it,
                        &f,
                        format!(
                            "must be a volume string or a mapping, not {}",
                            it.type_name()
                        ),
                    );
                    None
                }
            };
            let Some(m) = m else { continue };
            if let (MountKind::Volume, Some(src)) = (m.kind, &m.source) {
                self.note(format!("volumes.{src}"), &it.loc);
            }
            match index.get(&m.target) {
                Some(&j) => out[j] = m,
                None => {
                    index.insert(m.target.clone(), out.len());
                    out.push(m);
                }
            }
        }
        out
    }

    fn short_mount(&mut self, it: &Node, spec: &str, f: &str) -> Option<Mount> {
        let v = match parse_volume_spec(spec) {
            Ok(v) => v,
            Err(e) => {
                self.err_hint(it, f, e, "write [SOURCE:]TARGET[:ro|rw]");
                return None;
            }
        };
        if !v.unknown_options.is_empty() {
            self.warn(
                it,
                f,
                format!(
                    "ignored volume options {:?} (compose ignores them too)",
                    v.unknown_options
                ),
            );
        }
        if v.is_bind {
            Some(Mount {
                kind: MountKind::Bind,
                source: Some(v.source),
                target: v.target,
                read_only: v.read_only,
                bind: Some(BindOptions {
                    selinux: v.selinux,
                    propagation: v.propagation,
                    create_host_path: true,
                    recursive: None,
                }),
                volume: None,
                tmpfs: None,
            })
        } else {
            Some(Mount {
                kind: MountKind::Volume,
                source: (!v.source.is_empty()).then_some(v.source),
                target: v.target,
                read_only: v.read_only,
                bind: None,
                volume: Some(VolumeOptions {
                    nocopy: v.nocopy,
                    ..VolumeOptions::default()
                }),
                tmpfs: None,
            })
        }
    }

    fn long_mount(&mut self, it: &Node, f: &str) -> Option<Mount> {
        let mut kind = None;
        let mut source = None;
        let mut target = None;
        let mut read_only = false;
        let mut bind = None;
        let mut volume = None;
        let mut tmpfs = None;
        let errors_before = self.errors.len();
        for (k, val) in it.as_map().map(Vec::as_slice).unwrap_or(&[]) {
            let ff = format!("{f}.{}", k.name);
            match k.name.as_str() {
                "type" => {
                    if let Some(t) = self.string(val, &ff) {
                        kind = match t.as_str() {
                            "bind" => Some(MountKind::Bind),
                            "volume" => Some(MountKind::Volume),
                            "tmpfs" => Some(MountKind::Tmpfs),
                            "npipe" | "cluster" | "image" => {
                                self.unsupported(
                                    val,
                                    &ff,
                                    format!("volume type {t:?}"),
                                    "use bind, volume or tmpfs",
                                );
                                None
                            }
                            _ => {
                                self.err(val, &ff, format!("invalid volume type {t:?} (expected bind, volume or tmpfs)"));
                                None
                            }
                        }
                    }
                }
                "source" => source = self.string(val, &ff),
                "target" => target = self.string(val, &ff),
                "read_only" => read_only = self.boolean(val, &ff).unwrap_or(false),
                "consistency" => self.warn(
                    val,
                    &ff,
                    "ignored: consistency only matters on Docker Desktop",
                ),
                "bind" => {
                    let mut b = BindOptions {
                        create_host_path: true,
                        ..BindOptions::default()
                    };
                    for (bk, bv) in self.map_entries(val, &ff) {
                        let fff = format!("{ff}.{}", bk.name);
                        match bk.name.as_str() {
                            "propagation" => {
                                b.propagation = self.string(bv, &fff);
                                if let Some(p) = &b.propagation {
                                    if !matches!(
                                        p.as_str(),
                                        "rprivate"
                                            | "private"
                                            | "rshared"
                                            | "shared"
                                            | "rslave"
                                            | "slave"
                                    ) {
                                        self.err(bv, &fff, format!("invalid propagation {p:?}"));
                                    }
                                }
                            }
                            "create_host_path" => {
                                b.create_host_path = self.boolean(bv, &fff).unwrap_or(true)
                            }
                            "selinux" => {
                                b.selinux = self.string(bv, &fff);
                                if b.selinux.as_deref().is_some_and(|s| s != "z" && s != "Z") {
                                    self.err(bv, &fff, "must be z or Z");
                                }
                            }
                            "recursive" => b.recursive = self.string(bv, &fff),
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(
                                bk,
                                &ff,
                                "propagation, create_host_path, selinux, recursive",
                            ),
                        }
                    }
                    bind = Some(b);
                }
                "volume" => {
                    let mut o = VolumeOptions::default();
                    for (vk, vv) in self.map_entries(val, &ff) {
                        let fff = format!("{ff}.{}", vk.name);
                        match vk.name.as_str() {
                            "nocopy" => o.nocopy = self.boolean(vv, &fff).unwrap_or(false),
                            "subpath" => o.subpath = self.string(vv, &fff),
                            "labels" => o.labels = self.string_map(vv, &fff),
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(vk, &ff, "nocopy, subpath, labels"),
                        }
                    }
                    volume = Some(o);
                }
                "tmpfs" => {
                    let mut o = TmpfsOptions::default();
                    for (tk, tv) in self.map_entries(val, &ff) {
                        let fff = format!("{ff}.{}", tk.name);
                        match tk.name.as_str() {
                            "size" => match &tv.value {
                                Value::Int(i) if *i < 0 => {
                                    self.err(tv, &fff, "must be greater than or equal to 0")
                                }
                                Value::Int(i) => o.size = Some(*i),
                                Value::Str(_) => o.size = self.bytes(tv, &fff),
                                _ => self.err(
                                    tv,
                                    &fff,
                                    "must be an integer (bytes) or a size like 64m",
                                ),
                            },
                            "mode" => {
                                if let Some(m) = self.non_negative(tv, &fff) {
                                    o.mode = u32::try_from(m).ok();
                                }
                            }
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(tk, &ff, "size, mode"),
                        }
                    }
                    tmpfs = Some(o);
                }
                "image" => self.unsupported(val, &ff, "image volumes", "use a named volume"),
                n if n.starts_with("x-") => {}
                _ => self.unknown_key(k, f, "type, source, target, read_only, bind, volume, tmpfs"),
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        if !it
            .as_map()
            .is_some_and(|m| m.iter().any(|(k, _)| k.name == "type"))
        {
            self.err(it, f, "missing property 'type'");
            return None;
        }
        let kind = kind?;
        let Some(target) = target else {
            self.err(it, f, "missing property 'target'");
            return None;
        };
        if kind == MountKind::Bind && source.as_deref().map_or(true, str::is_empty) {
            self.err(it, f, "a bind mount needs a source");
            return None;
        }
        Some(Mount {
            kind,
            source: source.filter(|s| !s.is_empty()),
            target,
            read_only,
            bind,
            volume,
            tmpfs,
        })
    }

    fn service_networks(&mut self, v: &Node) -> BTreeMap<String, Option<ServiceNetwork>> {
        let mut out = BTreeMap::new();
        match &v.value {
            Value::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    if let Some(n) = self.string(it, &format!("networks[{i}]")) {
                        self.note(format!("networks.{n}"), &it.loc);
                        out.insert(n, None);
                    }
                }
            }
            Value::Map(m) => {
                for (k, val) in m {
                    let f = format!("networks.{}", k.name);
                    self.note(f.clone(), &k.loc);
                    if val.is_null() {
                        out.insert(k.name.clone(), None);
                        continue;
                    }
                    let mut sn = ServiceNetwork::default();
                    for (nk, nv) in self.map_entries(val, &f) {
                        let ff = format!("{f}.{}", nk.name);
                        match nk.name.as_str() {
                            "aliases" => sn.aliases = self.string_list(nv, &ff),
                            "ipv4_address" => {
                                if let Some(s) = self.string(nv, &ff) {
                                    match s.parse() {
                                        Ok(ip) => sn.ipv4_address = Some(ip),
                                        Err(_) => self.err(nv, &ff, format!("invalid IPv4 address {s:?}")),
                                    }
                                }
                            }
                            "ipv6_address" => {
                                if let Some(s) = self.string(nv, &ff) {
                                    match s.parse() {
                                        Ok(ip) => sn.ipv6_address = Some(ip),
                                        Err(_) => self.err(nv, &ff, format!("invalid IPv6 address {s:?}")),
                                    }
                                }
                            }
                            "priority" => sn.priority = self.integer(nv, &ff).and_then(|i| i32::try_from(i).ok()).unwrap_or(0),
                            "gw_priority" => sn.gw_priority = self.integer(nv, &ff).and_then(|i| i32::try_from(i).ok()).unwrap_or(0),
                            "driver_opts" => sn.driver_opts = self.string_map(nv, &ff),
                            "mac_address" => sn.mac_address = self.string(nv, &ff),
                            "link_local_ips" | "interface_name" => self.unsupported(nv, &ff, format!("network {}", nk.name), "remove it"),
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(nk, &f, "aliases, ipv4_address, ipv6_address, priority, gw_priority, driver_opts, mac_address"),
                        }
                    }
                    out.insert(k.name.clone(), Some(sn));
                }
            }
            Value::Null => {}
            _ => self.err(v, "networks", "must be a list or a mapping"),
        }
        out
    }

    fn network_mode(&mut self, v: &Node) -> Option<NetworkMode> {
        let s = self.string(v, "network_mode")?;
        Some(match s.as_str() {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            "bridge" | "default" => NetworkMode::Bridge,
            _ => {
                if let Some(n) = s.strip_prefix("service:") {
                    NetworkMode::Service(n.to_string())
                } else if let Some(c) = s.strip_prefix("container:") {
                    NetworkMode::Container(c.to_string())
                } else {
                    self.unsupported(
                        v,
                        "network_mode",
                        format!("network_mode {s:?}"),
                        "use none, host, bridge, service:NAME or container:NAME, or attach with networks:",
                    );
                    return None;
                }
            }
        })
    }

    fn depends_on(&mut self, v: &Node) -> BTreeMap<String, Dependency> {
        let mut out = BTreeMap::new();
        match &v.value {
            Value::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    if let Some(n) = self.string(it, &format!("depends_on[{i}]")) {
                        self.note(format!("depends_on.{n}"), &it.loc);
                        out.insert(
                            n,
                            Dependency {
                                condition: DependCondition::Started,
                                restart: false,
                                required: true,
                            },
                        );
                    }
                }
            }
            Value::Map(m) => {
                for (k, val) in m {
                    let f = format!("depends_on.{}", k.name);
                    self.note(f.clone(), &k.loc);
                    let mut d = Dependency {
                        condition: DependCondition::Started,
                        restart: false,
                        required: true,
                    };
                    let mut has_condition = false;
                    for (dk, dv) in self.map_entries(val, &f) {
                        let ff = format!("{f}.{}", dk.name);
                        match dk.name.as_str() {
                            "condition" => {
                                has_condition = true;
                                if let Some(c) = self.string(dv, &ff) {
                                    d.condition = match c.as_str() {
                                        "service_started" => DependCondition::Started,
                                        "service_healthy" => DependCondition::Healthy,
                                        "service_completed_successfully" => {
                                            DependCondition::CompletedSuccessfully
                                        }
                                        _ => {
                                            self.err(dv, &ff, format!("invalid condition {c:?} (expected service_started, service_healthy or service_completed_successfully)"));
                                            DependCondition::Started
                                        }
                                    }
                                }
                            }
                            "restart" => d.restart = self.boolean(dv, &ff).unwrap_or(false),
                            "required" => d.required = self.boolean(dv, &ff).unwrap_or(true),
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(dk, &f, "condition, restart, required"),
                        }
                    }
                    if !has_condition {
                        self.err_hint(
                            val,
                            &f,
                            "missing property 'condition'",
                            "add condition: service_started",
                        );
                    }
                    out.insert(k.name.clone(), d);
                }
            }
            Value::Null => {}
            _ => self.err(v, "depends_on", "must be a list or a mapping"),
        }
        out
    }

    fn healthcheck(&mut self, v: &Node) -> Option<Healthcheck> {
        let mut h = Healthcheck::default();
        for (k, val) in self.map_entries(v, "healthcheck") {
            let f = format!("healthcheck.{}", k.name);
            match k.name.as_str() {
                "test" => {
                    h.test = match &val.value {
                        Value::Str(s) => Some(HealthTest::Shell(s.clone())),
                        Value::Seq(_) => {
                            let list = self.string_or_list(val, &f);
                            match list.first().map(String::as_str) {
                                None => None,
                                Some("NONE") => Some(HealthTest::None),
                                Some("CMD") => Some(HealthTest::Cmd(list[1..].to_vec())),
                                Some("CMD-SHELL") => Some(HealthTest::Shell(list[1..].join(" "))),
                                Some(other) => {
                                    self.err_hint(
                                        val,
                                        &f,
                                        format!("invalid healthcheck test {other:?}"),
                                        "start the list with CMD, CMD-SHELL or NONE",
                                    );
                                    None
                                }
                            }
                        }
                        Value::Null => None,
                        _ => {
                            self.err(val, &f, "must be a string or a list");
                            None
                        }
                    }
                }
                "interval" => h.interval = self.duration(val, &f),
                "timeout" => h.timeout = self.duration(val, &f),
                "start_period" => h.start_period = self.duration(val, &f),
                "start_interval" => h.start_interval = self.duration(val, &f),
                "retries" => h.retries = self.non_negative(val, &f),
                "disable" => h.disable = self.boolean(val, &f).unwrap_or(false),
                n if n.starts_with("x-") => {}
                _ => self.unknown_key(
                    k,
                    "healthcheck",
                    "test, interval, timeout, retries, start_period, start_interval, disable",
                ),
            }
        }
        if h.disable
            && matches!(
                h.test,
                Some(HealthTest::Cmd(_)) | Some(HealthTest::Shell(_))
            )
        {
            self.err(
                v,
                "healthcheck",
                "test and disable can't be set at the same time",
            );
        }
        Some(h)
    }

    fn restart(&mut self, v: &Node) -> Option<RestartPolicy> {
        let s = self.string(v, "restart")?;
        Some(match s.as_str() {
            "no" | "" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure { max_retries: None },
            other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(n)) => RestartPolicy::OnFailure {
                    max_retries: Some(n),
                },
                _ => {
                    self.err(v, "restart", format!("invalid restart policy {s:?} (expected no, always, on-failure[:N] or unless-stopped)"));
                    return None;
                }
            },
        })
    }

    fn pull_policy(&mut self, v: &Node) -> Option<PullPolicy> {
        let s = self.string(v, "pull_policy")?;
        Some(match s.as_str() {
            "always" => PullPolicy::Always,
            "never" => PullPolicy::Never,
            "missing" | "if_not_present" => PullPolicy::Missing,
            "daily" => PullPolicy::Every(Duration::from_secs(86400)),
            "weekly" => PullPolicy::Every(Duration::from_secs(7 * 86400)),
            "build" => {
                self.unsupported(
                    v,
                    "pull_policy",
                    "pull_policy: build (dockmaster does not build images)",
                    "use always, missing or never",
                );
                return None;
            }
            other => match other.strip_prefix("every_").map(parse_duration) {
                Some(Ok(d)) => PullPolicy::Every(d),
                _ => {
                    self.err(v, "pull_policy", format!("invalid pull_policy {s:?} (expected always, never, missing, daily, weekly or every_<duration>)"));
                    return None;
                }
            },
        })
    }

    fn ulimits(&mut self, v: &Node) -> BTreeMap<String, Ulimit> {
        let mut out = BTreeMap::new();
        for (k, val) in self.map_entries(v, "ulimits") {
            let f = format!("ulimits.{}", k.name);
            match &val.value {
                Value::Map(m) => {
                    let (mut soft, mut hard) = (None, None);
                    for (uk, uv) in m {
                        match uk.name.as_str() {
                            "soft" => soft = self.integer(uv, &format!("{f}.soft")),
                            "hard" => hard = self.integer(uv, &format!("{f}.hard")),
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(uk, &f, "soft, hard"),
                        }
                    }
                    match (soft, hard) {
                        (Some(soft), Some(hard)) => {
                            if soft > hard {
                                self.err(
                                    val,
                                    &f,
                                    format!("soft limit {soft} is above the hard limit {hard}"),
                                );
                            }
                            out.insert(k.name.clone(), Ulimit::Range { soft, hard });
                        }
                        _ => self.err(val, &f, "needs both soft and hard"),
                    }
                }
                _ => {
                    if let Some(i) = self.integer(val, &f) {
                        out.insert(k.name.clone(), Ulimit::Single(i));
                    }
                }
            }
        }
        out
    }

    fn extra_hosts(&mut self, v: &Node) -> Vec<ExtraHost> {
        let mut out: Vec<ExtraHost> = Vec::new();
        let mut push = |host: String, ip: String| {
            let e = ExtraHost { host, ip };
            if !out.contains(&e) {
                out.push(e);
            }
        };
        match &v.value {
            Value::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    let f = format!("extra_hosts[{i}]");
                    let Some(s) = self.string(it, &f) else {
                        continue;
                    };
                    let split = s.split_once('=').or_else(|| s.split_once(':'));
                    match split {
                        Some((h, ips)) if !h.is_empty() && !ips.is_empty() => {
                            for ip in ips.split(',') {
                                let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
                                push(h.to_string(), ip.to_string())
                            }
                        }
                        _ => self.err_hint(
                            it,
                            &f,
                            format!("invalid extra host {s:?}"),
                            "write HOST:IP or HOST=IP",
                        ),
                    }
                }
            }
            Value::Map(m) => {
                for (k, val) in m {
                    let f = format!("extra_hosts.{}", k.name);
                    match &val.value {
                        Value::Seq(ips) => {
                            for ip in ips {
                                if let Some(ip) = self.string(ip, &f) {
                                    push(k.name.clone(), ip);
                                }
                            }
                        }
                        _ => {
                            if let Some(ip) = self.string(val, &f) {
                                push(k.name.clone(), ip);
                            }
                        }
                    }
                }
            }
            Value::Null => {}
            _ => self.err(v, "extra_hosts", "must be a list or a mapping"),
        }
        out
    }

    fn file_refs(&mut self, v: &Node, section: &str) -> Vec<FileRef> {
        let Some(items) = v.as_seq() else {
            if !v.is_null() {
                self.err(v, section, "must be a list");
            }
            return Vec::new();
        };
        let secrets = section == "secrets";
        let default_target = |src: &str| {
            if secrets {
                format!("/run/secrets/{src}")
            } else {
                format!("/{src}")
            }
        };
        let mut out: Vec<FileRef> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            let f = format!("{section}[{i}]");
            let r = match &it.value {
                Value::Str(s) => Some(FileRef {
                    source: s.clone(),
                    target: secrets.then(|| default_target(s)),
                    uid: None,
                    gid: None,
                    mode: None,
                }),
                Value::Map(m) => {
                    let mut r = FileRef {
                        source: String::new(),
                        target: None,
                        uid: None,
                        gid: None,
                        mode: None,
                    };
                    for (k, val) in m {
                        let ff = format!("{f}.{}", k.name);
                        match k.name.as_str() {
                            "source" => r.source = self.string(val, &ff).unwrap_or_default(),
                            "target" => r.target = self.string(val, &ff),
                            "uid" => r.uid = self.scalar(val, &ff),
                            "gid" => r.gid = self.scalar(val, &ff),
                            "mode" => {
                                r.mode = match &val.value {
                                    Value::Int(i) => u32::try_from(*i).ok(),
                                    Value::Str(s) => match u32::from_str_radix(s, 8) {
                                        Ok(m) => Some(m),
                                        Err(_) => {
                                            self.err(val, &ff, format!("invalid file mode {s:?} (expected octal like 0440)"));
                                            None
                                        }
                                    },
                                    _ => {
                                        self.err(val, &ff, "must be a number");
                                        None
                                    }
                                }
                            }
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(k, &f, "source, target, uid, gid, mode"),
                        }
                    }
                    if r.source.is_empty() {
                        self.err(it, &f, "missing property 'source'");
                        None
                    } else {
                        if secrets && r.target.is_none() {
                            r.target = Some(default_target(&r.source));
                        }
                        Some(r)
                    }
                }
                _ => {
                    self.err(it, &f, "must be a name or a mapping");
                    None
                }
            };
            let Some(r) = r else { continue };
            let key = r
                .target
                .clone()
                .unwrap_or_else(|| default_target(&r.source));
            match index.get(&key) {
                Some(&j) => out[j] = r,
                None => {
                    index.insert(key, out.len());
                    out.push(r);
                }
            }
        }
        out
    }

    fn deploy(&mut self, v: &Node) -> Option<Deploy> {
        let mut d = Deploy::default();
        for (k, val) in self.map_entries(v, "deploy") {
            let f = format!("deploy.{}", k.name);
            match k.name.as_str() {
                "mode" => {
                    d.mode = self.string(val, &f);
                    match d.mode.as_deref() {
                        Some("replicated") | None => {}
                        Some(m) => self.unsupported(val, &f, format!("deploy mode {m:?}"), "use replicated (the default)"),
                    }
                }
                "replicas" => {
                    self.note("deploy.replicas".into(), &val.loc);
                    if let Some(n) = self.non_negative(val, &f) {
                        d.replicas = u32::try_from(n).ok();
                    }
                }
                "labels" => d.labels = self.string_map(val, &f),
                "update_config" => d.update_config = self.update_config(val, &f, true),
                "rollback_config" => {
                    d.rollback_config = self.update_config(val, &f, false);
                    self.warn(val, &f, "ignored: dockmaster rolls back to the previous generation by itself");
                }
                "resources" => {
                    for (rk, rv) in self.map_entries(val, &f) {
                        let ff = format!("{f}.{}", rk.name);
                        match rk.name.as_str() {
                            "limits" => d.resources.limits = self.resource(rv, &ff),
                            "reservations" => d.resources.reservations = self.resource(rv, &ff),
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(rk, &f, "limits, reservations"),
                        }
                    }
                }
                "restart_policy" => {
                    let mut r = DeployRestartPolicy::default();
                    for (rk, rv) in self.map_entries(val, &f) {
                        let ff = format!("{f}.{}", rk.name);
                        match rk.name.as_str() {
                            "condition" => {
                                r.condition = self.string(rv, &ff);
                                if !matches!(r.condition.as_deref(), Some("none" | "on-failure" | "any")) {
                                    self.err(rv, &ff, "must be none, on-failure or any");
                                }
                            }
                            "delay" => r.delay = self.duration(rv, &ff),
                            "max_attempts" => r.max_attempts = self.non_negative(rv, &ff),
                            "window" => r.window = self.duration(rv, &ff),
                            n if n.starts_with("x-") => {}
                            _ => self.unknown_key(rk, &f, "condition, delay, max_attempts, window"),
                        }
                    }
                    d.restart_policy = Some(r);
                }
                "placement" => {
                    if val.as_map().is_some_and(|m| !m.is_empty()) {
                        self.warn(val, &f, "ignored: placement only matters in a swarm; dockmaster runs on one host");
                    }
                }
                "endpoint_mode" => {
                    d.endpoint_mode = self.string(val, &f);
                    self.warn(val, &f, "ignored: endpoint_mode only matters in a swarm");
                }
                n if n.starts_with("x-") => {}
                _ => self.unknown_key(k, "deploy", "mode, replicas, labels, update_config, rollback_config, resources, restart_policy, placement, endpoint_mode"),
            }
        }
        Some(d)
    }

    fn update_config(&mut self, v: &Node, f: &str, warn: bool) -> Option<UpdateConfig> {
        let mut u = UpdateConfig::default();
        for (k, val) in self.map_entries(v, f) {
            let ff = format!("{f}.{}", k.name);
            match k.name.as_str() {
                "order" => {
                    u.order = match self.string(val, &ff).as_deref() {
                        Some("stop-first") => Some(UpdateOrder::StopFirst),
                        Some("start-first") => Some(UpdateOrder::StartFirst),
                        Some(o) => {
                            self.err(
                                val,
                                &ff,
                                format!("invalid order {o:?} (expected stop-first or start-first)"),
                            );
                            None
                        }
                        None => None,
                    }
                }
                "parallelism" => u.parallelism = self.non_negative(val, &ff),
                "delay" => u.delay = self.duration(val, &ff),
                "failure_action" => u.failure_action = self.string(val, &ff),
                "monitor" => u.monitor = self.duration(val, &ff),
                "max_failure_ratio" => u.max_failure_ratio = self.number(val, &ff),
                n if n.starts_with("x-") => {}
                _ => self.unknown_key(
                    k,
                    f,
                    "parallelism, delay, failure_action, monitor, max_failure_ratio, order",
                ),
            }
            if warn && k.name != "order" && !k.name.starts_with("x-") {
                self.warn(val, &ff, "ignored: only update_config.order is used (dockmaster updates replicas one at a time, health-gated)");
            }
        }
        Some(u)
    }

    fn resource(&mut self, v: &Node, f: &str) -> Option<Resource> {
        let mut r = Resource::default();
        for (k, val) in self.map_entries(v, f) {
            let ff = format!("{f}.{}", k.name);
            match k.name.as_str() {
                "cpus" => {
                    r.cpus = self.number(val, &ff);
                    if r.cpus.is_some_and(|c| c < 0.0) {
                        self.err(val, &ff, "must not be negative");
                    }
                }
                "memory" => r.memory = self.bytes(val, &ff),
                "pids" => r.pids = self.integer(val, &ff),
                "devices" | "generic_resources" => self.unsupported(
                    val,
                    &ff,
                    format!("deploy resources {}", k.name),
                    "remove it",
                ),
                n if n.starts_with("x-") => {}
                _ => self.unknown_key(k, f, "cpus, memory, pids"),
            }
        }
        Some(r)
    }

    // ---- top-level resources -----------------------------------------------------------------

    fn network(&mut self, key: &str, v: &Node) -> Option<Network> {
        let f = format!("networks.{key}");
        if !matches!(v.value, Value::Map(_) | Value::Null) {
            self.err(v, &f, "must be a mapping or null");
            return None;
        }
        let mut n = Network::default();
        let mut external_name = None;
        for (k, val) in self.map_entries(v, &f) {
            let ff = format!("{f}.{}", k.name);
            match k.name.as_str() {
                "name" => n.name = self.string(val, &ff).unwrap_or_default(),
                "driver" => {
                    n.driver = self.opt_string(val, &ff);
                    match n.driver.as_deref() {
                        Some("bridge") | Some("default") | Some("") | None => {}
                        Some(d) => self.unsupported(val, &ff, format!("network driver {d:?}"), "dockmaster creates bridge networks only; remove driver: or set bridge"),
                    }
                }
                "driver_opts" => n.driver_opts = self.string_map(val, &ff),
                "ipam" => n.ipam = self.ipam(val, &ff),
                "external" => {
                    let (ext, name) = self.external(val, &ff);
                    n.external = ext;
                    external_name = name;
                }
                "internal" => n.internal = self.boolean(val, &ff).unwrap_or(false),
                "attachable" => {
                    n.attachable = self.boolean(val, &ff).unwrap_or(false);
                    if n.attachable {
                        self.warn(val, &ff, "ignored: attachable only matters in a swarm");
                    }
                }
                "labels" => n.labels = self.string_map(val, &ff),
                "enable_ipv4" => n.enable_ipv4 = self.boolean(val, &ff),
                "enable_ipv6" => n.enable_ipv6 = self.boolean(val, &ff),
                x if x.starts_with("x-") => {}
                _ => self.unknown_key(k, &f, "name, driver, driver_opts, ipam, external, internal, attachable, labels, enable_ipv4, enable_ipv6"),
            }
        }
        if let Some(en) = external_name {
            if !n.name.is_empty() && n.name != en {
                self.err(v, &f, "name and external.name conflict; only use name");
            } else {
                self.warn(v, &f, "external.name is deprecated; use name:");
                n.name = en;
            }
        }
        if n.external {
            for (k, val) in v.as_map().map(Vec::as_slice).unwrap_or(&[]) {
                // Empty values (`ipam: {}` as `config` prints it) conflict with nothing.
                if !matches!(k.name.as_str(), "name" | "external")
                    && !k.name.starts_with("x-")
                    && !is_empty_value(val)
                {
                    self.err(
                        v,
                        &f,
                        format!(
                            "conflicting parameters \"external\" and {:?} specified",
                            k.name
                        ),
                    );
                }
            }
        }
        // Kept even when invalid (the load fails anyway): references to it resolve.
        Some(n)
    }

    fn ipam(&mut self, v: &Node, f: &str) -> Ipam {
        let mut ipam = Ipam::default();
        for (k, val) in self.map_entries(v, f) {
            let ff = format!("{f}.{}", k.name);
            match k.name.as_str() {
                "driver" => {
                    ipam.driver = self.string(val, &ff);
                    if ipam.driver.as_deref().is_some_and(|d| d != "default") {
                        self.unsupported(
                            val,
                            &ff,
                            format!("IPAM driver {:?}", ipam.driver.as_deref().unwrap_or("")),
                            "remove it (dockmaster's own IPAM is used)",
                        );
                    }
                }
                "options" => ipam.options = self.string_map(val, &ff),
                "config" => {
                    let Some(items) = val.as_seq() else {
                        self.err(val, &ff, "must be a list");
                        continue;
                    };
                    for (i, it) in items.iter().enumerate() {
                        let fff = format!("{ff}[{i}]");
                        let mut pool = IpamPool {
                            subnet: None,
                            gateway: None,
                            ip_range: None,
                            aux_addresses: BTreeMap::new(),
                        };
                        for (pk, pv) in self.map_entries(it, &fff) {
                            let p = format!("{fff}.{}", pk.name);
                            match pk.name.as_str() {
                                "subnet" => {
                                    if let Some(s) = self.string(pv, &p) {
                                        match s.parse() {
                                            Ok(n) => pool.subnet = Some(n),
                                            Err(_) => self.err(pv, &p, format!("invalid subnet {s:?} (expected CIDR like 172.28.0.0/16)")),
                                        }
                                    }
                                }
                                "ip_range" => {
                                    if let Some(s) = self.string(pv, &p) {
                                        match s.parse() {
                                            Ok(n) => pool.ip_range = Some(n),
                                            Err(_) => self.err(
                                                pv,
                                                &p,
                                                format!("invalid ip_range {s:?} (expected CIDR)"),
                                            ),
                                        }
                                    }
                                }
                                "gateway" => {
                                    if let Some(s) = self.string(pv, &p) {
                                        match s.parse() {
                                            Ok(n) => pool.gateway = Some(n),
                                            Err(_) => {
                                                self.err(pv, &p, format!("invalid gateway {s:?}"))
                                            }
                                        }
                                    }
                                }
                                "aux_addresses" => {
                                    for (ak, av) in self.string_map(pv, &p) {
                                        match av.parse() {
                                            Ok(ip) => {
                                                pool.aux_addresses.insert(ak, ip);
                                            }
                                            Err(_) => self.err(
                                                pv,
                                                &p,
                                                format!("invalid address {av:?} for {ak}"),
                                            ),
                                        }
                                    }
                                }
                                x if x.starts_with("x-") => {}
                                _ => self.unknown_key(
                                    pk,
                                    &fff,
                                    "subnet, ip_range, gateway, aux_addresses",
                                ),
                            }
                        }
                        if let (Some(net), Some(gw)) = (pool.subnet, pool.gateway) {
                            if !net.contains(&gw) {
                                self.err(
                                    it,
                                    &fff,
                                    format!("gateway {gw} is outside the subnet {net}"),
                                );
                            }
                        }
                        ipam.config.push(pool);
                    }
                }
                x if x.starts_with("x-") => {}
                _ => self.unknown_key(k, f, "driver, config, options"),
            }
        }
        ipam
    }

    /// `external: true|false` or the deprecated `external: {name: X}`.
    fn external(&mut self, v: &Node, f: &str) -> (bool, Option<String>) {
        match &v.value {
            Value::Map(m) => {
                let mut name = None;
                for (k, val) in m {
                    match k.name.as_str() {
                        "name" => name = self.string(val, &format!("{f}.name")),
                        x if x.starts_with("x-") => {}
                        _ => self.unknown_key(k, f, "name"),
                    }
                }
                (true, name)
            }
            _ => (self.boolean(v, f).unwrap_or(false), None),
        }
    }

    fn volume(&mut self, key: &str, v: &Node) -> Option<Volume> {
        let f = format!("volumes.{key}");
        if !matches!(v.value, Value::Map(_) | Value::Null) {
            self.err(v, &f, "must be a mapping or null");
            return None;
        }
        let mut vol = Volume::default();
        let mut external_name = None;
        for (k, val) in self.map_entries(v, &f) {
            let ff = format!("{f}.{}", k.name);
            match k.name.as_str() {
                "name" => vol.name = self.string(val, &ff).unwrap_or_default(),
                "driver" => {
                    vol.driver = self.opt_string(val, &ff);
                    if vol
                        .driver
                        .as_deref()
                        .is_some_and(|d| !matches!(d, "local" | "default" | ""))
                    {
                        self.unsupported(
                            val,
                            &ff,
                            format!("volume driver {:?}", vol.driver.as_deref().unwrap_or("")),
                            "use the local driver (the default)",
                        );
                    }
                }
                "driver_opts" => vol.driver_opts = self.string_map(val, &ff),
                "external" => {
                    let (ext, name) = self.external(val, &ff);
                    vol.external = ext;
                    external_name = name;
                }
                "labels" => vol.labels = self.string_map(val, &ff),
                x if x.starts_with("x-") => {}
                _ => self.unknown_key(k, &f, "name, driver, driver_opts, external, labels"),
            }
        }
        if let Some(en) = external_name {
            if !vol.name.is_empty() && vol.name != en {
                self.err(v, &f, "name and external.name conflict; only use name");
            } else {
                self.warn(v, &f, "external.name is deprecated; use name:");
                vol.name = en;
            }
        }
        if vol.external {
            for (k, val) in v.as_map().map(Vec::as_slice).unwrap_or(&[]) {
                // Empty values (`ipam: {}` as `config` prints it) conflict with nothing.
                if !matches!(k.name.as_str(), "name" | "external")
                    && !k.name.starts_with("x-")
                    && !is_empty_value(val)
                {
                    self.err(
                        v,
                        &f,
                        format!(
                            "conflicting parameters \"external\" and {:?} specified",
                            k.name
                        ),
                    );
                }
            }
        }
        Some(vol)
    }

    fn file_object(&mut self, section: &str, key: &str, v: &Node) -> Option<FileObject> {
        let f = format!("{section}.{key}");
        if !matches!(v.value, Value::Map(_) | Value::Null) {
            self.err(v, &f, "must be a mapping");
            return None;
        }
        let mut o = FileObject::default();
        let mut external_name = None;
        for (k, val) in self.map_entries(v, &f) {
            let ff = format!("{f}.{}", k.name);
            match k.name.as_str() {
                "name" => o.name = self.string(val, &ff).unwrap_or_default(),
                "file" => o.file = self.string(val, &ff).map(PathBuf::from),
                "environment" => {
                    o.environment = self.string(val, &ff);
                    if let Some(var) = &o.environment {
                        match self.env.get(var) {
                            Some(val) => o.resolved_content = Some(val.clone()),
                            None => self.err_hint(
                                val,
                                &ff,
                                format!("environment variable {var:?} is not set"),
                                "set it in the environment or .env",
                            ),
                        }
                    }
                }
                "content" => o.content = self.string(val, &ff),
                "external" => {
                    let (ext, name) = self.external(val, &ff);
                    o.external = ext;
                    external_name = name;
                }
                "labels" => o.labels = self.string_map(val, &ff),
                "driver" | "driver_opts" | "template_driver" => self.unsupported(
                    val,
                    &ff,
                    format!("{section} {} (swarm)", k.name),
                    "use file:, environment: or content:",
                ),
                x if x.starts_with("x-") => {}
                _ => self.unknown_key(k, &f, "name, file, environment, content, external, labels"),
            }
        }
        if let Some(en) = external_name {
            if !o.name.is_empty() && o.name != en {
                self.err(v, &f, "name and external.name conflict; only use name");
            } else {
                o.name = en;
            }
        }
        if o.external {
            self.unsupported(
                v,
                &f,
                format!("external {section} (swarm objects)"),
                "use file:, environment: or content:",
            );
        } else {
            let sources = [
                o.file.is_some(),
                o.environment.is_some(),
                o.content.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if sources != 1 {
                self.err_hint(
                    v,
                    &f,
                    "needs exactly one of file, environment or content",
                    "set one source",
                );
            }
            if section == "secrets" {
                if let Some(c) = o.content.take() {
                    o.resolved_content = Some(c);
                }
            }
        }
        Some(o)
    }
}

const SERVICE_FIELDS_HINT: &str = "the Compose service fields";

/// Service fields dockmaster reads (for "did you mean" hints).
const SERVICE_FIELDS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "networks",
    "network_mode",
    "depends_on",
    "links",
    "healthcheck",
    "restart",
    "deploy",
    "mem_limit",
    "mem_reservation",
    "memswap_limit",
    "shm_size",
    "cpus",
    "cpu_shares",
    "pids_limit",
    "user",
    "working_dir",
    "hostname",
    "container_name",
    "labels",
    "cap_add",
    "cap_drop",
    "privileged",
    "read_only",
    "tty",
    "stdin_open",
    "init",
    "security_opt",
    "sysctls",
    "ulimits",
    "stop_signal",
    "stop_grace_period",
    "extra_hosts",
    "dns",
    "dns_search",
    "dns_opt",
    "group_add",
    "configs",
    "secrets",
    "pull_policy",
    "platform",
    "profiles",
    "scale",
    "extends",
    "build",
    "develop",
    "logging",
    "annotations",
    "attach",
];

/// The candidate within edit distance 2 of `name` (closest first), for typo hints.
fn closest<'c>(name: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let mut best: Option<(usize, &str)> = None;
    for &c in candidates {
        let d = edit_distance(name, c);
        if d <= 2 && d < name.len() && best.map_or(true, |(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn is_empty_value(n: &Node) -> bool {
    match &n.value {
        Value::Null => true,
        Value::Map(m) => m.is_empty(),
        Value::Seq(s) => s.is_empty(),
        _ => false,
    }
}

/// Drops empty entries (an unset variable in `dns: ${X}` means no entry, as in compose).
fn non_empty(v: Vec<String>) -> Vec<String> {
    v.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Hashable stand-in for an IP address in the port unicity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IpAddrKey(std::net::IpAddr);

/// deploy.resources wins over the service-level fields when both are set (Docker Compose).
fn effective_resources(s: &Service) -> EffectiveResources {
    let limits = s.deploy.as_ref().and_then(|d| d.resources.limits.as_ref());
    let reservations = s
        .deploy
        .as_ref()
        .and_then(|d| d.resources.reservations.as_ref());
    let pos = |v: Option<i64>| v.filter(|b| *b > 0).map(|b| b as u64);
    EffectiveResources {
        memory: pos(limits.and_then(|l| l.memory).or(s.mem_limit)),
        memory_reservation: pos(reservations.and_then(|r| r.memory).or(s.mem_reservation)),
        memory_swap: s.memswap_limit,
        cpus: limits.and_then(|l| l.cpus).or(s.cpus).filter(|c| *c > 0.0),
        cpu_shares: s.cpu_shares,
        pids: limits.and_then(|l| l.pids).or(s.pids_limit),
        shm_size: pos(s.shm_size),
    }
}

#[allow(dead_code)]
fn float_string(f: f64) -> String {
    format_float(f)
}
