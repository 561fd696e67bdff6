//! The Compose loader on the project's own corpus (tests/data/compose): valid projects with
//! their model values asserted, invalid ones with their exact messages (file:line:column,
//! service, field, hint), all problems reported at once; plus in-memory projects (the GitOps
//! agent's path) and the CLI commands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dockmaster::error::{Categorized, Category};
use dockmaster::manifest::{
    load_project, DependCondition, HealthTest, LoadErrors, LoadOptions, MemFiles, MountKind,
    NetworkMode, OsFiles, PortMode, PortRange, Project, Protocol, PullPolicy, RestartPolicy,
    Ulimit, UpdateOrder,
};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/compose")
        .join(rel)
}

fn options(dir: &Path, files: &[&str], env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        files: files.iter().map(PathBuf::from).collect(),
        environment: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cwd: dir.to_path_buf(),
        ..LoadOptions::default()
    }
}

fn load(dir: &Path, files: &[&str], env: &[(&str, &str)]) -> Project {
    match load_project(&OsFiles, &options(dir, files, env)) {
        Ok(p) => p,
        Err(e) => panic!("{} failed to load:\n{e}", dir.display()),
    }
}

fn env_of(p: &Project, svc: &str) -> BTreeMap<String, Option<String>> {
    p.services[svc].environment.clone()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

const MIB: i64 = 1 << 20;

#[test]
fn anchors_merge_keys_and_extensions() {
    let dir = data("valid/anchors");
    let p = load(&dir, &[], &[]);
    assert_eq!(p.name, "anchors");
    let api = &p.services["api"];
    assert_eq!(api.image, "registry.local/api:1.2");
    assert_eq!(api.restart, Some(RestartPolicy::UnlessStopped));
    assert_eq!(env_of(&p, "api")["TZ"], some("UTC"));
    assert_eq!(env_of(&p, "api")["LOG"], some("debug"));
    assert_eq!(api.labels["team"], "edge");
    assert_eq!(api.mem_limit, Some(256 * MIB));
    assert_eq!(api.cpus, Some(0.5));
    assert_eq!(api.resources.memory, Some(256 << 20));
    assert_eq!(api.x_dockmaster.as_ref().unwrap()["update"], "pin");
    assert_eq!(p.x_dockmaster.as_ref().unwrap()["update"], "notify");
    let worker = &p.services["worker"];
    assert_eq!(
        worker.restart,
        Some(RestartPolicy::OnFailure {
            max_retries: Some(3)
        })
    );
    assert_eq!(worker.mem_limit, None);
    assert_eq!(env_of(&p, "worker")["LOG"], some("info"));
    // Other x- fields are echoed by `config`, not interpreted.
    assert!(p.extensions.contains_key("x-common"));
    // The default network is added, named after the project.
    assert_eq!(p.networks["default"].name, "anchors_default");
    assert!(api.networks.contains_key("default"));
}

#[test]
fn default_override_file_is_merged() {
    let dir = data("valid/override");
    let p = load(&dir, &[], &[]);
    assert_eq!(p.compose_files.len(), 2);
    let web = &p.services["web"];
    assert_eq!(
        web.command.as_deref(),
        Some(&["nginx-debug".to_string(), "-g".into(), "daemon off;".into()][..])
    );
    // Ports merged by key: 8080:80 is not duplicated.
    let ports: Vec<(u16, Option<PortRange>)> =
        web.ports.iter().map(|p| (p.target, p.published)).collect();
    assert_eq!(
        ports,
        vec![
            (
                80,
                Some(PortRange {
                    start: 8080,
                    end: 8080
                })
            ),
            (
                443,
                Some(PortRange {
                    start: 8443,
                    end: 8443
                })
            ),
        ]
    );
    assert_eq!(env_of(&p, "web")["MODE"], some("override"));
    assert_eq!(env_of(&p, "web")["KEEP"], some("yes"));
    assert_eq!(web.labels["a"], "1");
    assert_eq!(web.labels["b"], "2");
    // Volumes merged by target: the override's bind mount replaces the base one.
    assert_eq!(web.volumes.len(), 1);
    assert_eq!(web.volumes[0].kind, MountKind::Bind);
    assert_eq!(
        web.volumes[0].source.as_deref(),
        Some(dir.join("conf").to_str().unwrap())
    );
    assert!(!web.volumes[0].read_only);
}

#[test]
fn explicit_files_merge_with_reset_and_override_tags() {
    let dir = data("valid/multi");
    let p = load(&dir, &["base.yaml", "prod.yaml"], &[]);
    assert_eq!(p.name, "multiapp");
    let app = &p.services["app"];
    assert_eq!(app.image, "app:2");
    assert!(app.ports.is_empty(), "!reset removes the ports");
    assert_eq!(app.dns, vec!["10.0.0.54"], "!override replaces the list");
    let deploy = app.deploy.as_ref().unwrap();
    assert_eq!(deploy.replicas, Some(3));
    assert_eq!(app.replicas(), 3);
    let limits = deploy.resources.limits.as_ref().unwrap();
    assert_eq!(limits.memory, Some(1 << 30));
    assert_eq!(app.resources.cpus, Some(1.0));
    let hc = app.healthcheck.as_ref().unwrap();
    assert_eq!(
        hc.test,
        Some(HealthTest::Shell(
            "curl -f http://localhost:3000/health".into()
        ))
    );
    assert_eq!(hc.interval, Some(Duration::from_secs(30)));
}

#[test]
fn extends_same_file_and_other_file() {
    let dir = data("valid/extends");
    let p = load(&dir, &[], &[("TAG", "7")]);
    let local = &p.services["local"];
    assert_eq!(local.image, "base:1");
    assert_eq!(env_of(&p, "local")["A"], some("1"));
    assert_eq!(env_of(&p, "local")["B"], some("2"));
    assert_eq!(
        local.volumes[0].source.as_deref(),
        Some(dir.join("data").to_str().unwrap())
    );
    let remote = &p.services["remote"];
    assert_eq!(remote.image, "shared:7");
    assert_eq!(
        remote.command.as_deref(),
        Some(&["run".to_string(), "--fast".into()][..])
    );
    // Paths of the extended file are relative to that file.
    assert_eq!(remote.env_files[0].path, dir.join("common/shared.env"));
    assert_eq!(env_of(&p, "remote")["SHARED"], some("1"));
    assert_eq!(
        remote.volumes[0].source.as_deref(),
        Some(dir.join("common/cache").to_str().unwrap())
    );
    assert!(p.source_files.contains(&dir.join("common/base.yaml")));
    assert!(p.source_files.contains(&dir.join("common/shared.env")));
}

#[test]
fn include_with_its_own_env_and_directory() {
    let dir = data("valid/include");
    let p = load(&dir, &[], &[]);
    let db = &p.services["db"];
    assert_eq!(db.image, "postgres:16", "lib/.env feeds the included file");
    assert_eq!(env_of(&p, "db")["POSTGRES_DB"], some("app"));
    assert_eq!(
        db.volumes[0].source.as_deref(),
        Some(dir.join("lib/initdb").to_str().unwrap())
    );
    assert_eq!(db.volumes[1].kind, MountKind::Volume);
    assert_eq!(p.volumes["pgdata"].name, "include_pgdata");
    assert_eq!(
        p.services["app"].depends_on["db"].condition,
        DependCondition::Healthy
    );
}

#[test]
fn profiles_from_flags_and_environment() {
    let dir = data("valid/profiles");
    let p = load(&dir, &[], &[]);
    assert_eq!(p.services.keys().collect::<Vec<_>>(), ["app"]);
    assert_eq!(
        p.disabled_services.iter().collect::<Vec<_>>(),
        ["debug", "devtools", "metrics"]
    );
    // What dockmaster cannot run in a disabled service only warns...
    let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter().any(|w| w.contains("service \"devtools\": devices: unsupported devices is not supported by dockmaster's runtime, ignored while the service is disabled by its profiles")),
        "{w:?}"
    );
    // ...and refuses the project once the profile is active.
    let mut o = options(&dir, &[], &[]);
    o.profiles = vec!["dev".into()];
    let e = load_project(&OsFiles, &o).unwrap_err();
    assert_eq!(e.iter().filter(|e| e.is_unsupported()).count(), 2, "{e}");
    let mut o = options(&dir, &[], &[]);
    o.profiles = vec!["debug".into()];
    let p = load_project(&OsFiles, &o).unwrap();
    assert_eq!(p.services.len(), 3);
    let mut o = options(&dir, &[], &[]);
    o.profiles = vec!["*".into()];
    assert!(
        load_project(&OsFiles, &o).is_err(),
        "devtools is enabled by *"
    );
    let p = load(&dir, &[], &[("COMPOSE_PROFILES", "monitoring")]);
    assert_eq!(p.services.keys().collect::<Vec<_>>(), ["app", "metrics"]);
}

#[test]
fn env_files_required_optional_raw() {
    let dir = data("valid/envfile");
    let p = load(&dir, &[], &[("HOST_VALUE", "from-host")]);
    let env = env_of(&p, "app");
    assert_eq!(env["COMMON"], some("1"));
    assert_eq!(
        env["REF"],
        some("1-x"),
        "env files interpolate earlier keys"
    );
    assert_eq!(env["OVERRIDDEN"], some("by-environment"));
    assert_eq!(env["FROM_ENVIRONMENT"], some("yes"));
    assert_eq!(env["HOST_VALUE"], some("from-host"));
    assert_eq!(env["UNSET_VALUE"], None);
    assert_eq!(env["RAW"], some("$NOT_EXPANDED \"quoted\""));
    let files = &p.services["app"].env_files;
    assert_eq!(files.len(), 3);
    assert!(!files[1].required);
    assert_eq!(files[2].format.as_deref(), Some("raw"));
    assert!(p.source_files.contains(&dir.join("common.env")));
}

#[test]
fn short_and_long_syntaxes() {
    let dir = data("valid/syntax");
    let p = load(&dir, &[], &[("CERT_PEM", "-----BEGIN-----")]);
    let s = &p.services["full"];
    assert_eq!(
        s.entrypoint.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".into()][..])
    );
    assert_eq!(s.user.as_deref(), Some("1000:1000"));
    // Ports: one entry per container port, ranges expanded.
    let ports: Vec<String> = s
        .ports
        .iter()
        .map(|p| {
            format!(
                "{:?}|{:?}|{}|{}|{}",
                p.host_ip,
                p.published.map(|r| r.to_string()),
                p.target,
                p.protocol.as_str(),
                matches!(p.mode, PortMode::Host)
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            "None|None|80|tcp|false",
            "Some(127.0.0.1)|Some(\"8080\")|80|tcp|false",
            "None|Some(\"9000\")|9000|udp|false",
            "None|Some(\"9001\")|9001|udp|false",
            "Some(0.0.0.0)|Some(\"8443\")|443|tcp|true",
        ]
    );
    assert_eq!(s.ports[2].protocol, Protocol::Udp);
    assert_eq!(s.expose, ["3000", "3001"]);
    // Volumes: named, anonymous, bind (read-only), tmpfs, bind without host path creation.
    let kinds: Vec<MountKind> = s.volumes.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            MountKind::Volume,
            MountKind::Volume,
            MountKind::Bind,
            MountKind::Tmpfs,
            MountKind::Bind
        ]
    );
    assert_eq!(s.volumes[0].source.as_deref(), Some("data"));
    assert_eq!(s.volumes[1].source, None);
    assert!(s.volumes[2].read_only);
    assert_eq!(
        s.volumes[2].source.as_deref(),
        Some(dir.join("conf").to_str().unwrap())
    );
    let tmpfs = s.volumes[3].tmpfs.as_ref().unwrap();
    assert_eq!((tmpfs.size, tmpfs.mode), (Some(64 * MIB), Some(0o1777)));
    assert!(!s.volumes[4].bind.as_ref().unwrap().create_host_path);
    assert_eq!(s.tmpfs, ["/run"]);
    // Networks with aliases and a fixed address.
    let front = s.networks["front"].as_ref().unwrap();
    assert_eq!(front.aliases, ["web"]);
    assert_eq!(front.ipv4_address, Some("172.30.0.10".parse().unwrap()));
    assert_eq!(s.networks["back"], None);
    assert_eq!(p.networks["front"].name, "syntax_front");
    let pool = &p.networks["front"].ipam.config[0];
    assert_eq!(pool.subnet, Some("172.30.0.0/24".parse().unwrap()));
    assert_eq!(pool.gateway, Some("172.30.0.1".parse().unwrap()));
    assert!(p.networks["back"].internal);
    assert!(p.networks["outside"].external);
    assert_eq!(p.networks["outside"].name, "corp-net");
    // depends_on long syntax.
    assert_eq!(
        s.depends_on["init"].condition,
        DependCondition::CompletedSuccessfully
    );
    assert!(s.depends_on["cache"].restart);
    assert!(!s.depends_on["cache"].required);
    // Healthcheck durations.
    let hc = s.healthcheck.as_ref().unwrap();
    assert_eq!(
        hc.test,
        Some(HealthTest::Shell("wget -qO- localhost".into()))
    );
    assert_eq!(hc.interval, Some(Duration::from_secs(90)));
    assert_eq!(hc.timeout, Some(Duration::from_secs(10)));
    assert_eq!(hc.retries, Some(3));
    assert_eq!(hc.start_period, Some(Duration::from_secs(5)));
    assert_eq!(hc.start_interval, Some(Duration::from_millis(500)));
    // Deploy and the effective limits.
    assert_eq!(s.restart, Some(RestartPolicy::Always));
    assert_eq!(s.replicas(), 2);
    assert_eq!(s.update_order(), UpdateOrder::StartFirst);
    assert_eq!(s.resources.memory, Some(512 << 20));
    assert_eq!(s.resources.memory_reservation, Some(128 << 20));
    assert_eq!(s.resources.cpus, Some(0.5));
    assert_eq!(s.resources.pids, Some(100));
    assert_eq!(s.resources.shm_size, Some(128 << 20));
    assert_eq!(s.ulimits["nproc"], Ulimit::Single(65535));
    assert_eq!(
        s.ulimits["nofile"],
        Ulimit::Range {
            soft: 1024,
            hard: 2048
        }
    );
    assert!(s.read_only && !s.privileged && s.tty && s.stdin_open);
    assert_eq!(s.init, Some(true));
    assert_eq!(s.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(s.stop_grace_period, Some(Duration::from_secs(20)));
    let hosts: Vec<(String, String)> = s
        .extra_hosts
        .iter()
        .map(|h| (h.host.clone(), h.ip.clone()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("db.local".to_string(), "10.0.0.2".to_string()),
            ("host.docker.internal".into(), "host-gateway".into())
        ]
    );
    assert_eq!(s.dns, ["1.1.1.1"]);
    assert_eq!(s.secrets[0].target.as_deref(), Some("/run/secrets/token"));
    assert_eq!(s.secrets[1].mode, Some(0o400));
    assert_eq!(p.secrets["token"].file, Some(dir.join("secrets/token.txt")));
    assert_eq!(
        p.secrets["cert"].resolved_content.as_deref(),
        Some("-----BEGIN-----")
    );
    assert_eq!(
        p.configs["app_conf"].content.as_deref(),
        Some("key = value\n")
    );
    assert_eq!(s.pull_policy, Some(PullPolicy::Missing));
    assert_eq!(p.services["init"].restart, Some(RestartPolicy::No));
    assert_eq!(
        p.services["init"].container_name.as_deref(),
        Some("syntax-init")
    );
    let cache = &p.services["cache"];
    assert_eq!(cache.network_mode, Some(NetworkMode::Host));
    assert!(cache.networks.is_empty());
    assert_eq!(cache.resources.memory, Some(1 << 30));
    assert_eq!(cache.resources.pids, Some(50));
    assert_eq!(p.volumes["data"].name, "syntax_data");
    assert_eq!(p.startup_order(), ["cache", "init", "full"]);
    assert_eq!(cache.effective_restart(), RestartPolicy::No);
    assert_eq!(p.volumes["kept"].name, "kept");

    // The compose-spec JSON form.
    let json = serde_json::to_value(&p).unwrap();
    let full = &json["services"]["full"];
    assert_eq!(full["healthcheck"]["interval"], "1m30s");
    assert_eq!(full["ports"][1]["published"], "8080");
    assert_eq!(full["ports"][1]["host_ip"], "127.0.0.1");
    assert_eq!(full["volumes"][3]["tmpfs"]["size"], "67108864");
    assert_eq!(full["deploy"]["resources"]["limits"]["memory"], "536870912");
    assert_eq!(full["secrets"][1]["mode"], "0400");
    assert_eq!(full["pull_policy"], "missing");
    assert_eq!(full["extra_hosts"][0], "db.local=10.0.0.2");
    assert_eq!(
        json["services"]["cache"]["entrypoint"],
        serde_json::Value::Null
    );
    assert_eq!(
        json["services"]["init"]["networks"]["default"],
        serde_json::Value::Null
    );
    assert!(
        json["secrets"]["cert"].get("content").is_none(),
        "secret content is never printed"
    );
}

/// Each invalid case: every message, exactly, in order (`{dir}` is the case directory).
#[test]
fn invalid_projects_report_every_problem() {
    let root = data("invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8);
    let mut mismatches = Vec::new();
    for dir in cases {
        let expected = std::fs::read_to_string(dir.join("expected.txt"))
            .unwrap_or_else(|_| panic!("{}/expected.txt", dir.display()))
            .replace("{dir}", dir.to_str().unwrap());
        let errors: LoadErrors = match load_project(&OsFiles, &options(&dir, &[], &[])) {
            Ok(_) => panic!("{} loaded but should not", dir.display()),
            Err(e) => e,
        };
        // Not worth retrying: the input has to change.
        assert!(
            matches!(errors.category(), Category::Invalid | Category::NotFound),
            "{}",
            dir.display()
        );
        let got = errors.to_string();
        if got.trim_end() != expected.trim_end() {
            mismatches.push(format!(
                "--- {}\nexpected:\n{}\ngot:\n{}",
                dir.display(),
                expected.trim_end(),
                got
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn in_memory_project_like_a_git_tree() {
    // The agent loads a commit's tree without a working tree: paths are virtual.
    let files = MemFiles::new()
        .with(
            "/repo/stack/compose.yaml",
            "services:\n  web:\n    image: nginx\n    env_file: web.env\n    volumes: [./site:/usr/share/nginx/html:ro]\n    depends_on: [api]\n  api:\n    extends: {file: ../common/api.yaml, service: api}\n",
        )
        .with("/repo/stack/web.env", "GREETING=hello\n")
        .with("/repo/stack/.env", "API_TAG=3\n")
        .with(
            "/repo/common/api.yaml",
            "services:\n  api:\n    image: api:${API_TAG}\n    volumes: [./data:/data]\n",
        );
    let o = LoadOptions {
        cwd: "/repo/stack".into(),
        ..LoadOptions::default()
    };
    let p = load_project(&files, &o).unwrap();
    assert_eq!(p.name, "stack");
    assert_eq!(p.working_dir, Path::new("/repo/stack"));
    assert_eq!(env_of(&p, "web")["GREETING"], some("hello"));
    assert_eq!(
        p.services["web"].volumes[0].source.as_deref(),
        Some("/repo/stack/site")
    );
    assert_eq!(p.services["api"].image, "api:3");
    assert_eq!(
        p.services["api"].volumes[0].source.as_deref(),
        Some("/repo/common/data")
    );
    assert_eq!(
        p.source_files,
        [
            PathBuf::from("/repo/stack/.env"),
            "/repo/stack/compose.yaml".into(),
            "/repo/common/api.yaml".into(),
            "/repo/stack/web.env".into()
        ]
    );
}

#[test]
fn untrusted_input_limits() {
    // Oversized file: refused before parsing.
    let big = format!(
        "services:\n  a:\n    image: x\n    labels:\n{}",
        "      k: v\n".repeat(500_000)
    );
    let files = MemFiles::new().with("/p/compose.yaml", big);
    let o = LoadOptions {
        cwd: "/p".into(),
        ..LoadOptions::default()
    };
    let e = load_project(&files, &o).unwrap_err().to_string();
    assert!(e.contains("exceeds the limit"), "{e}");
    // Deep nesting.
    let deep = format!(
        "x-deep: {}{}\nservices: {{}}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    let files = MemFiles::new().with("/p/compose.yaml", deep);
    let e = load_project(&files, &o).unwrap_err().to_string();
    assert!(e.contains("/p/compose.yaml:1:"), "{e}");
    // Include chain longer than the cap (no cycle): refused, not a stack overflow.
    let mut files = MemFiles::new();
    for i in 0..100 {
        files.insert(
            format!("/p/f{i}.yaml"),
            format!(
                "include: [f{}.yaml]\nservices:\n  s{i}:\n    image: x\n",
                i + 1
            ),
        );
    }
    files.insert("/p/f100.yaml", "services: {}\n");
    let o2 = LoadOptions {
        files: vec!["f0.yaml".into()],
        cwd: "/p".into(),
        ..LoadOptions::default()
    };
    let e = load_project(&files, &o2).unwrap_err().to_string();
    assert!(
        e.contains("depth of the include chain exceeds the limit of 32"),
        "{e}"
    );
}

#[test]
fn project_name_precedence() {
    let files = MemFiles::new().with(
        "/work/My Stack/compose.yaml",
        "name: ${PREFIX:-Named}-app\nservices:\n  a:\n    image: x\n    container_name: ${COMPOSE_PROJECT_NAME}-a\n",
    );
    let base = LoadOptions {
        cwd: "/work/My Stack".into(),
        ..LoadOptions::default()
    };
    let p = load_project(&files, &base).unwrap();
    assert_eq!(p.name, "named-app");
    assert_eq!(
        p.services["a"].container_name.as_deref(),
        Some("named-app-a")
    );
    let mut o = base.clone();
    o.environment
        .insert("COMPOSE_PROJECT_NAME".into(), "fromenv".into());
    assert_eq!(load_project(&files, &o).unwrap().name, "fromenv");
    o.project_name = Some("flag".into());
    assert_eq!(load_project(&files, &o).unwrap().name, "flag");
    o.project_name = Some("Not Valid".into());
    let e = load_project(&files, &o).unwrap_err().to_string();
    assert!(e.contains("invalid project name \"Not Valid\""), "{e}");
    // Without name: the directory, normalized.
    let files = MemFiles::new().with(
        "/work/My Stack/compose.yaml",
        "services:\n  a:\n    image: x\n",
    );
    assert_eq!(load_project(&files, &base).unwrap().name, "mystack");
}

#[test]
fn cli_config_and_validate() {
    let bin = env!("CARGO_BIN_EXE_dockmaster");
    let dir = data("valid/anchors");
    let out = Command::new(bin)
        .args(["config", "--format", "json"])
        .current_dir(&dir)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["services"]["api"]["restart"], "unless-stopped");
    assert_eq!(json["services"]["api"]["command"], serde_json::Value::Null);
    let yaml = Command::new(bin)
        .args(["config"])
        .current_dir(&dir)
        .env_clear()
        .output()
        .unwrap();
    assert!(yaml.status.success());
    let text = String::from_utf8(yaml.stdout).unwrap();
    assert!(text.contains("name: anchors"), "{text}");
    assert!(!text.contains("command: null"), "{text}");

    let bad = data("invalid/many");
    let out = Command::new(bin)
        .arg("validate")
        .current_dir(&bad)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("error: ").count(), 9, "{stderr}");
    assert!(stderr.ends_with("9 problems found\n"), "{stderr}");
    let out = Command::new(bin)
        .args(["validate", "-f"])
        .arg(data("valid/multi/base.yaml"))
        .arg("-f")
        .arg(data("valid/multi/prod.yaml"))
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn confined_loading_refuses_files_outside_the_root() {
    let files = MemFiles::new()
        .with(
            "/repo/app/compose.yaml",
            "services:\n  a:\n    image: x\n    env_file: /etc/shadow\n  b:\n    extends: {file: ../../etc/base.yaml, service: b}\n",
        )
        .with("/etc/shadow", "ROOT=x\n")
        .with("/etc/base.yaml", "services:\n  b:\n    image: y\n");
    let mut o = LoadOptions {
        cwd: "/repo/app".into(),
        ..LoadOptions::default()
    };
    // Unconfined (the CLI, like docker compose) reads them.
    assert!(load_project(&files, &o).is_ok());
    o.confine_to = Some("/repo".into());
    let e = load_project(&files, &o).unwrap_err().to_string();
    assert!(
        e.contains("cannot read /etc/base.yaml: outside the project root /repo"),
        "{e}"
    );
    assert!(
        e.contains("cannot read /etc/shadow: outside the project root /repo"),
        "{e}"
    );
}

#[test]
fn json_output_loads_back_to_the_same_model() {
    // The executor records a generation as compose JSON and loads it again later.
    let dir = data("valid/syntax");
    let env = [("CERT_PEM", "-----BEGIN-----")];
    let p = load(&dir, &[], &env);
    let json = serde_json::to_vec(&p).unwrap();
    let file = dir.join("recorded.json");
    let files = MemFiles::new()
        .with(&file, json)
        .with(dir.join("secrets/token.txt"), "s3cret\n");
    let o = LoadOptions {
        files: vec![file.clone()],
        environment: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cwd: dir.clone(),
        ..LoadOptions::default()
    };
    let again = load_project(&files, &o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.services, p.services);
    assert_eq!(again.networks, p.networks);
    assert_eq!(again.volumes, p.volumes);
    assert_eq!(again.secrets, p.secrets);
    assert_eq!(again.configs, p.configs);
}

#[test]
fn our_own_extension_keys_are_checked() {
    let o = LoadOptions {
        cwd: "/p".into(),
        ..LoadOptions::default()
    };
    let files = MemFiles::new().with(
        "/p/compose.yaml",
        "services:\n  web:\n    image: x\n    x-dockmaster:\n      image_update: folow\n      restart_unhealthy: maybe\n",
    );
    let e = load_project(&files, &o).unwrap_err().to_string();
    assert!(
        e.contains("/p/compose.yaml:5:")
            && e.contains("x-dockmaster.image_update")
            && e.contains("follow, pin or notify"),
        "{e}"
    );
    assert!(
        e.contains("/p/compose.yaml:6:") && e.contains("x-dockmaster.restart_unhealthy"),
        "{e}"
    );
    let files = MemFiles::new().with(
        "/p/compose.yaml",
        "services:\n  web:\n    image: x\n    x-dockmaster: {image_update: notify, restart_unhealthy: false, colour: blue}\n",
    );
    let p = load_project(&files, &o).unwrap();
    let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("colour") && w.contains("ignored")),
        "{w:?}"
    );
    assert_eq!(
        p.services["web"].x_dockmaster.as_ref().unwrap()["image_update"],
        "notify"
    );
}

#[test]
fn job_keys_are_checked_and_jobs_cannot_be_waited_for() {
    let o = LoadOptions {
        cwd: "/p".into(),
        ..LoadOptions::default()
    };
    let compose = r#"services:
  app:
    image: x
    x-dockmaster: {time_zone: UTC, history: 3}
  backup:
    image: x
    scale: 3
    x-dockmaster:
      schedule: "30 2 * * *"
      time_zone: Europe/Berlin
      concurrency: replace
      timeout: 1h30m
      missed_run_deadline: 600
      history: 5
  sync:
    image: x
    depends_on: [app]
    x-dockmaster: {schedule: "@every 30s", colour: blue}
"#;
    let p = load_project(&MemFiles::new().with("/p/compose.yaml", compose), &o)
        .unwrap_or_else(|e| panic!("{e}"));
    let backup = &p.services["backup"];
    assert_eq!(
        backup.x_dockmaster.as_ref().unwrap()["schedule"],
        "30 2 * * *"
    );
    assert!(dockmaster::jobs::spec::is_job(backup));
    let spec = dockmaster::jobs::JobSpec::from_service(backup)
        .unwrap()
        .unwrap();
    assert_eq!(spec.history, 5);
    assert!(!dockmaster::jobs::spec::is_job(&p.services["app"]));
    let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        [
            // Job keys on a service without schedule do nothing: said where they are.
            "/p/compose.yaml:4:31: service \"app\": x-dockmaster.time_zone: only applies to jobs (services with x-dockmaster.schedule) and is ignored",
            "/p/compose.yaml:4:45: service \"app\": x-dockmaster.history: only applies to jobs (services with x-dockmaster.schedule) and is ignored",
            // The unknown-key warning names the job keys among the known ones.
            "/p/compose.yaml:18:52: service \"sync\": x-dockmaster.colour: unknown x-dockmaster key \"colour\" is ignored (known: image_update, restart_unhealthy, schedule, time_zone, concurrency, timeout, missed_run_deadline, history)",
            // One container per run: the replica count is ignored.
            "/p/compose.yaml:7:12: service \"backup\": scale: ignored: \"backup\" is a job; each run is one container (3 replicas asked)",
        ]
    );

    // links to a job are a dependency too: refused where written.
    let files = MemFiles::new().with(
        "/p/compose.yaml",
        "services:\n  web:\n    image: x\n    links: [backup]\n  backup:\n    image: x\n    deploy: {replicas: 2}\n    x-dockmaster: {schedule: \"@daily\"}\n",
    );
    let e = load_project(&files, &o).unwrap_err().to_string();
    assert!(
        e.contains("/p/compose.yaml:4:12: service \"web\": depends_on.backup: service \"web\" depends on \"backup\", a job"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}
