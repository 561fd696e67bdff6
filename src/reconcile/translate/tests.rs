use std::path::{Path, PathBuf};

use super::*;
use crate::manifest::{load_project, LoadOptions, MemFiles};

struct Paths;

impl HostPaths for Paths {
    fn volume(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/var/lib/dm/volumes/{name}/_data"))
    }
    fn generated_file(&self, kind: FileKind, name: &str) -> PathBuf {
        PathBuf::from(format!("/var/lib/dm/projects/p/{kind:?}/{name}"))
    }
    fn bind_allowed(&self, path: &Path) -> bool {
        path.starts_with("/srv/shop") || path.starts_with("/data")
    }
}

fn project(yaml: &str) -> Project {
    let files = MemFiles::new().with("/srv/shop/compose.yaml", yaml);
    let options = LoadOptions {
        project_directory: Some("/srv/shop".into()),
        cwd: "/srv/shop".into(),
        ..LoadOptions::default()
    };
    load_project(&files, &options).unwrap_or_else(|e| panic!("{e}"))
}

fn plan_for(p: &Project, service: &str, replica: u32) -> Result<ContainerPlan, TranslateError> {
    container_plan(
        p,
        &p.services[service],
        replica,
        "busybox@sha256:00",
        "hash1",
        7,
        &Paths,
    )
}

#[test]
fn a_service_becomes_a_create_request_with_compose_labels() {
    let p = project(
        r#"
services:
  web:
    image: busybox
    command: ["httpd", "-f"]
    environment: {A: "1", UNSET: null}
    user: "1000"
    read_only: true
    cap_drop: [ALL]
    mem_limit: 64m
    ulimits: {nofile: {soft: 100, hard: 200}}
    stop_grace_period: 3s
    stop_signal: SIGINT
    labels: {tier: front}
    ports: ["8080:80", "127.0.0.1:5353:53/udp"]
    tmpfs: ["/run:size=1m"]
    volumes:
      - ./html:/www:ro
      - data:/data
      - /cache
networks: {}
volumes:
  data: {}
"#,
    );
    let c = plan_for(&p, "web", 2).unwrap();
    let r = &c.request;
    assert_eq!(r.name.as_deref(), Some("shop-web-2"));
    assert_eq!(r.image, "busybox@sha256:00");
    assert_eq!(r.options.command, ["httpd", "-f"]);
    assert_eq!(r.options.env, ["A=1"]);
    assert_eq!(r.options.user.as_deref(), Some("1000"));
    assert!(r.options.read_only);
    assert_eq!(r.options.memory, Some(64 << 20));
    assert_eq!(r.options.ulimits.len(), 1);
    assert_eq!(r.stop_grace_secs, Some(3));
    assert_eq!(r.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(r.labels["tier"], "front");
    assert_eq!(r.labels[LABEL_PROJECT], "shop");
    assert_eq!(r.labels[LABEL_SERVICE], "web");
    assert_eq!(r.labels[LABEL_NUMBER], "2");
    assert_eq!(r.labels[LABEL_CONFIG_HASH], "hash1");
    assert_eq!(r.labels[LABEL_GENERATION], "7");
    assert_eq!(r.options.identity.project.as_deref(), Some("shop"));
    assert_eq!(r.network.ports, ["8080:80/tcp", "127.0.0.1:5353:53/udp"]);
    // The default network, with the service name as alias.
    assert_eq!(r.network.networks.len(), 1);
    assert_eq!(r.network.networks[0].network, "shop_default");
    assert_eq!(r.network.networks[0].aliases, ["web"]);
    assert_eq!(r.options.tmpfs[0].destination, "/run");
    let binds: Vec<(String, String, bool)> = r
        .options
        .binds
        .iter()
        .map(|b| {
            (
                b.source.display().to_string(),
                b.destination.clone(),
                b.read_only,
            )
        })
        .collect();
    let anon = anonymous_volume("shop", "web", 2, "/cache");
    assert_eq!(
        binds,
        [
            ("/srv/shop/html".to_string(), "/www".to_string(), true),
            (
                "/var/lib/dm/volumes/shop_data/_data".into(),
                "/data".into(),
                false
            ),
            (
                format!("/var/lib/dm/volumes/{anon}/_data"),
                "/cache".into(),
                false
            ),
        ]
    );
    assert_eq!(c.volumes.len(), 2);
    assert_eq!(c.volumes[0].name, "shop_data");
    assert_eq!(c.host_dirs, [PathBuf::from("/srv/shop/html")]);
}

#[test]
fn binds_outside_the_project_and_allow_list_are_refused() {
    let p = project("services:\n  web:\n    image: busybox\n    volumes: [\"/etc:/host-etc\"]\n");
    let err = plan_for(&p, "web", 1).unwrap_err();
    assert_eq!(err.field, "volumes");
    assert!(
        err.to_string()
            .contains("/etc is outside the project directory"),
        "{err}"
    );
    let p = project("services:\n  web:\n    image: busybox\n    volumes: [\"/data/x:/x\"]\n");
    assert!(plan_for(&p, "web", 1).is_ok());
}

#[test]
fn networks_aliases_addresses_and_modes() {
    let p = project(
        r#"
services:
  api:
    image: busybox
    networks:
      back: {aliases: [db-client], ipv4_address: 10.9.0.10}
      front: {}
  sidecar:
    image: busybox
    network_mode: "service:api"
  hosty:
    image: busybox
    network_mode: host
networks:
  front: {}
  back:
    ipam: {config: [{subnet: 10.9.0.0/24}]}
"#,
    );
    let api = plan_for(&p, "api", 1).unwrap().request.network;
    let nets: Vec<(&str, Vec<String>, Option<Ipv4Addr>)> = api
        .networks
        .iter()
        .map(|n| (n.network.as_str(), n.aliases.clone(), n.ip))
        .collect();
    assert_eq!(
        nets,
        [
            (
                "shop_back",
                vec!["api".to_string(), "db-client".into()],
                Some(Ipv4Addr::new(10, 9, 0, 10))
            ),
            ("shop_front", vec!["api".to_string()], None),
        ]
    );
    let sidecar = plan_for(&p, "sidecar", 1).unwrap().request.network;
    assert_eq!(sidecar.mode, NetMode::Container("shop-api-1".into()));
    let hosty = plan_for(&p, "hosty", 1).unwrap().request.network;
    assert_eq!(hosty.mode, NetMode::Host);
}

#[test]
fn configs_and_secrets_are_read_only_file_mounts() {
    let p = project(
        r#"
services:
  web:
    image: busybox
    configs: [app, {source: inline, target: /etc/inline.conf}]
    secrets: [token]
configs:
  app: {file: ./app.conf}
  inline: {content: "x=1"}
secrets:
  token: {file: ./token.txt}
"#,
    );
    let binds: Vec<(String, String, bool)> = plan_for(&p, "web", 1)
        .unwrap()
        .request
        .options
        .binds
        .iter()
        .map(|b| {
            (
                b.source.display().to_string(),
                b.destination.clone(),
                b.read_only,
            )
        })
        .collect();
    assert_eq!(
        binds,
        [
            ("/srv/shop/app.conf".to_string(), "/app".to_string(), true),
            (
                "/var/lib/dm/projects/p/Config/inline".into(),
                "/etc/inline.conf".into(),
                true
            ),
            (
                "/srv/shop/token.txt".into(),
                "/run/secrets/token".into(),
                true
            ),
        ]
    );
}

#[test]
fn container_names_follow_compose() {
    let p = project("services:\n  web:\n    image: busybox\n    container_name: front\n  db:\n    image: busybox\n");
    assert_eq!(container_name("shop", &p.services["web"], 1), "front");
    assert_eq!(container_name("shop", &p.services["db"], 3), "shop-db-3");
}

#[test]
fn restart_and_healthcheck_become_the_shims_supervision() {
    let p = project(
        r#"
services:
  web:
    image: busybox
    restart: on-failure:3
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ok"]
      interval: 2s
      retries: 4
  quiet:
    image: busybox
    restart: always
    healthcheck: {disable: true}
    x-dockmaster: {restart_unhealthy: false}
"#,
    );
    let web = plan_for(&p, "web", 1).unwrap().supervision;
    assert_eq!(web.restart, RestartPolicy::OnFailure { max_retries: 3 });
    let h = web.healthcheck.unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "test -f /tmp/ok"]);
    assert_eq!(h.interval, std::time::Duration::from_secs(2));
    assert_eq!(h.retries, 4);
    assert!(web.restart_unhealthy);
    let quiet = plan_for(&p, "quiet", 1).unwrap().supervision;
    assert_eq!(quiet.restart, RestartPolicy::Always);
    assert_eq!(quiet.healthcheck.unwrap().test, ["NONE"]);
    assert!(!quiet.restart_unhealthy);
}
