use serde_json::json;

use super::*;

fn inputs(image: &str, digest: &str, env: &str) -> ServiceInputs {
    ServiceInputs {
        spec: json!({"image": image, "environment": {"A": env}, "ports": []}),
        image: image.into(),
        digest: digest.into(),
        files: BTreeMap::new(),
    }
}

fn service(name: &str, replicas: u32, deps: &[(&str, DependCondition, bool)]) -> DesiredService {
    let depends_on = deps
        .iter()
        .map(|(d, condition, restart)| {
            (
                d.to_string(),
                Dependency {
                    condition: *condition,
                    restart: *restart,
                    required: true,
                },
            )
        })
        .collect();
    DesiredService::new(
        name,
        replicas,
        depends_on,
        inputs("busybox:1", "sha256:aaaa", "1"),
        false,
        UpdateOrder::StopFirst,
    )
}

fn desired(services: Vec<DesiredService>) -> DesiredState {
    DesiredState {
        project: "shop".into(),
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        networks: ["shop_default".to_string()].into(),
        volumes: BTreeSet::new(),
    }
}

fn running(d: &DesiredService, replica: u32) -> ActualContainer {
    ActualContainer {
        id: format!("{}-{replica}-id", d.name),
        name: format!("shop-{}-{replica}", d.name),
        service: d.name.clone(),
        replica,
        hash: d.hash.clone(),
        inputs: Some(d.inputs.clone()),
        state: RunState::Running,
    }
}

fn actual_for(d: &DesiredState) -> ActualState {
    let mut containers = Vec::new();
    for s in d.services.values().filter(|s| !s.job) {
        for r in 1..=s.replicas {
            containers.push(running(s, r));
        }
    }
    ActualState {
        containers,
        networks: d.networks.clone(),
        volumes: d.volumes.clone(),
        jobs: d
            .services
            .values()
            .filter(|s| s.job)
            .map(|s| {
                (
                    s.name.clone(),
                    ActualJob {
                        hash: s.hash.clone(),
                        inputs: Some(s.inputs.clone()),
                    },
                )
            })
            .collect(),
    }
}

fn kinds(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| match &s.action {
            Action::CreateNetwork { network } => format!("net {network}"),
            Action::CreateVolume { volume } => format!("vol {volume}"),
            Action::Create { service, replica } => format!("create {service}#{replica}"),
            Action::Recreate {
                service, replica, ..
            } => format!("recreate {service}#{replica}"),
            Action::Remove { name, .. } => format!("remove {name}"),
            Action::ScheduleJob { service } => format!("schedule {service}"),
            Action::UnscheduleJob { service } => format!("unschedule {service}"),
        })
        .collect()
}

#[test]
fn a_fresh_project_creates_networks_then_services_in_dependency_order() {
    let d = desired(vec![
        service("web", 1, &[("db", DependCondition::Healthy, false)]),
        service(
            "db",
            1,
            &[("init", DependCondition::CompletedSuccessfully, false)],
        ),
        service("init", 1, &[]),
        service("worker", 2, &[("web", DependCondition::Started, false)]),
    ]);
    let p = plan(&d, &ActualState::default()).unwrap();
    assert_eq!(
        kinds(&p),
        [
            "net shop_default",
            "create init#1",
            "create db#1",
            "create web#1",
            "create worker#1",
            "create worker#2"
        ]
    );
    assert_eq!(p.order, ["init", "db", "web", "worker"]);
    assert_eq!(p.steps[1].reasons, ["new service"]);
}

#[test]
fn nothing_changed_means_an_empty_plan() {
    let d = desired(vec![service("web", 2, &[]), service("db", 1, &[])]);
    let p = plan(&d, &actual_for(&d)).unwrap();
    assert!(p.is_empty(), "{p}");
    assert!(p.to_string().contains("no changes"));
}

#[test]
fn a_changed_input_recreates_only_that_service_and_says_why() {
    let before = desired(vec![service("web", 1, &[]), service("db", 1, &[])]);
    let actual = actual_for(&before);
    let mut after = before.clone();
    let mut web = service("web", 1, &[]);
    web.inputs.digest = "sha256:bbbbbbbbbbbbbbbbbbbb".into();
    web.inputs.spec = json!({"image": "busybox:1", "environment": {"A": "2"}, "ports": []});
    web.inputs
        .files
        .insert("env_file .env".into(), "1234".into());
    web.hash = web.inputs.hash();
    after.services.insert("web".into(), web);
    let p = plan(&after, &actual).unwrap();
    assert_eq!(kinds(&p), ["recreate web#1"]);
    assert_eq!(
        p.steps[0].reasons,
        [
            "image digest aaaa -> bbbbbbbbbbbb",
            "environment changed",
            "env_file .env added"
        ]
    );
}

#[test]
fn file_content_changes_are_named() {
    let mut a = inputs("x", "sha256:1", "1");
    a.files.insert("env_file .env".into(), "h1".into());
    a.files.insert("config app.conf".into(), "h2".into());
    let mut b = a.clone();
    b.files.insert("env_file .env".into(), "h3".into());
    b.files.remove("config app.conf");
    assert_ne!(a.hash(), b.hash());
    assert_eq!(
        b.changes_since(&a),
        ["config app.conf removed", "env_file .env changed"]
    );
    assert!(a.changes_since(&a).is_empty());
}

#[test]
fn the_hash_is_stable_and_covers_every_input() {
    let a = inputs("busybox:1", "sha256:aaaa", "1");
    assert_eq!(a.hash(), inputs("busybox:1", "sha256:aaaa", "1").hash());
    assert_eq!(a.hash().len(), 64);
    for other in [
        inputs("busybox:2", "sha256:aaaa", "1"),
        inputs("busybox:1", "sha256:bbbb", "1"),
        inputs("busybox:1", "sha256:aaaa", "2"),
    ] {
        assert_ne!(a.hash(), other.hash());
    }
}

#[test]
fn orphans_and_extra_replicas_are_removed_before_anything_starts() {
    let d = desired(vec![service("web", 1, &[])]);
    let mut actual = actual_for(&desired(vec![
        service("web", 3, &[]),
        service("old", 1, &[]),
    ]));
    let fresh = plan(&d, &actual).unwrap();
    assert_eq!(
        kinds(&fresh),
        [
            "remove shop-old-1",
            "remove shop-web-2",
            "remove shop-web-3"
        ]
    );
    assert_eq!(
        fresh.steps[0].reasons,
        ["service is no longer in the project"]
    );
    assert_eq!(fresh.steps[1].reasons, ["scaled down to 1 replica(s)"]);
    // A duplicate of a replica (e.g. left by a crash mid-update) goes; the matching one stays.
    let web = &d.services["web"];
    let mut stale = running(web, 1);
    stale.id = "aaa-stale".into();
    stale.hash = "other".into();
    actual.containers = vec![stale, running(web, 1)];
    let p = plan(&d, &actual).unwrap();
    assert_eq!(kinds(&p), ["remove shop-web-1"]);
    assert!(
        matches!(&p.steps[0].action, Action::Remove { container, .. } if container == "aaa-stale")
    );
}

#[test]
fn dead_and_exited_containers_are_recreated_but_finished_one_shots_are_not() {
    let mut init = service("init", 1, &[]);
    init.one_shot = true;
    let d = desired(vec![init, service("web", 1, &[]), service("db", 1, &[])]);
    let mut actual = actual_for(&d);
    for c in &mut actual.containers {
        c.state = match c.service.as_str() {
            "init" => RunState::Exited(0),
            "web" => RunState::Exited(137),
            _ => RunState::Dead,
        };
    }
    let p = plan(&d, &actual).unwrap();
    assert_eq!(kinds(&p), ["recreate db#1", "recreate web#1"]);
    assert_eq!(p.steps[0].reasons, ["container is dead (its shim is gone)"]);
    assert_eq!(p.steps[1].reasons, ["container exited (code 137)"]);
    // A failed one-shot runs again.
    actual.containers[1].state = RunState::Exited(1);
    let p = plan(&d, &actual).unwrap();
    assert!(kinds(&p).contains(&"recreate init#1".to_string()), "{p}");
}

#[test]
fn restart_true_follows_a_recreated_dependency() {
    let before = desired(vec![
        service("db", 1, &[]),
        service("web", 1, &[("db", DependCondition::Healthy, true)]),
        service("cache", 1, &[("db", DependCondition::Started, false)]),
    ]);
    let actual = actual_for(&before);
    let mut after = before.clone();
    let mut db = service("db", 1, &[]);
    db.inputs.digest = "sha256:cccc".into();
    db.hash = db.inputs.hash();
    after.services.insert("db".into(), db);
    let p = plan(&after, &actual).unwrap();
    assert_eq!(kinds(&p), ["recreate db#1", "recreate web#1"]);
    assert_eq!(
        p.steps[1].reasons,
        ["dependency db is recreated (restart: true)"]
    );
}

#[test]
fn cycles_and_unknown_dependencies_are_errors() {
    let d = desired(vec![
        service("a", 1, &[("b", DependCondition::Started, false)]),
        service("b", 1, &[("c", DependCondition::Started, false)]),
        service("c", 1, &[("a", DependCondition::Started, false)]),
    ]);
    let err = plan(&d, &ActualState::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "project shop: dependency cycle: a -> b -> c -> a"
    );
    let d = desired(vec![service(
        "a",
        1,
        &[("ghost", DependCondition::Started, false)],
    )]);
    let err = plan(&d, &ActualState::default()).unwrap_err();
    assert!(err.to_string().contains("a depends on ghost"), "{err}");
    // An optional dependency that is absent is ignored.
    let mut a = service("a", 1, &[("ghost", DependCondition::Started, false)]);
    a.depends_on.get_mut("ghost").unwrap().required = false;
    assert!(plan(&desired(vec![a]), &ActualState::default()).is_ok());
}

#[test]
fn plans_print_for_people_and_as_json() {
    let d = desired(vec![service("web", 1, &[])]);
    let mut actual = actual_for(&d);
    actual.containers[0].state = RunState::Exited(2);
    let p = plan(&d, &actual).unwrap();
    let text = p.to_string();
    assert!(
        text.contains("~ web #1: container exited (code 2)"),
        "{text}"
    );
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["steps"][0]["action"], "recreate");
    assert_eq!(v["steps"][0]["service"], "web");
    assert_eq!(v["steps"][0]["order"], "stop-first");
    assert_eq!(v["steps"][0]["reasons"][0], "container exited (code 2)");
}

#[test]
fn a_large_project_plans_in_linear_time() {
    // 100 services in a chain: the order is computed once per service, not per edge pair.
    let services: Vec<DesiredService> = (0..100)
        .map(|i| {
            let name = format!("s{i:03}");
            let dep = format!("s{:03}", i.max(1) - 1);
            if i == 0 {
                service(&name, 1, &[])
            } else {
                service(&name, 1, &[(dep.as_str(), DependCondition::Started, false)])
            }
        })
        .collect();
    let d = desired(services);
    let p = plan(&d, &actual_for(&d)).unwrap();
    assert!(p.is_empty());
    assert_eq!(p.order.first().map(String::as_str), Some("s000"));
    assert_eq!(p.order.last().map(String::as_str), Some("s099"));
}

fn job(name: &str, schedule: &str) -> DesiredService {
    let spec = json!({"image": "busybox:1", "command": ["backup"], "x-dockmaster": {"schedule": schedule}});
    DesiredService::new(
        name,
        0,
        BTreeMap::new(),
        ServiceInputs {
            spec,
            image: "busybox:1".into(),
            digest: "sha256:aaaa".into(),
            files: BTreeMap::new(),
        },
        true,
        UpdateOrder::StopFirst,
    )
    .with_job(true)
}

fn with_schedule(mut d: DesiredState, name: &str, schedule: &str) -> DesiredState {
    d.services.insert(name.into(), job(name, schedule));
    d
}

#[test]
fn a_new_job_is_scheduled_and_gets_no_containers() {
    let before = desired(vec![service("web", 1, &[])]);
    let actual = actual_for(&before);
    let after = with_schedule(before, "backup", "0 3 * * *");
    let p = plan(&after, &actual).unwrap();
    assert_eq!(kinds(&p), ["schedule backup"]);
    assert_eq!(p.steps[0].reasons, [NEW_JOB]);
    // Nothing waits for a job: no health gate, not brought up.
    assert!(p.changed_services().is_empty());
    assert_eq!(p.order, ["web"]);
    assert!(p.to_string().contains("  + job backup: new job\n"), "{p}");
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["steps"][0]["action"], "schedule_job");
    assert_eq!(v["steps"][0]["service"], "backup");
    assert_eq!(v["steps"][0]["reasons"][0], "new job");
    // A fresh project: networks, then the service, then the job.
    let p = plan(&after, &ActualState::default()).unwrap();
    assert_eq!(
        kinds(&p),
        ["net shop_default", "create web#1", "schedule backup"]
    );
    // Scheduled with the same definition: nothing to do.
    assert!(plan(&after, &actual_for(&after)).unwrap().is_empty());
}

#[test]
fn a_changed_job_is_scheduled_again_and_says_what_changed() {
    let before = with_schedule(desired(vec![service("web", 1, &[])]), "backup", "0 3 * * *");
    let actual = actual_for(&before);
    let after = with_schedule(before, "backup", "*/5 * * * *");
    let p = plan(&after, &actual).unwrap();
    assert_eq!(kinds(&p), ["schedule backup"]);
    assert_eq!(p.steps[0].reasons, ["x-dockmaster.schedule changed"]);
    assert!(
        p.to_string()
            .contains("  ~ job backup: x-dockmaster.schedule changed\n"),
        "{p}"
    );
    assert!(p.changed_services().is_empty());
    // Without the old inputs, only the hash says so.
    let mut unknown = actual.clone();
    unknown.jobs.get_mut("backup").unwrap().inputs = None;
    let p = plan(&after, &unknown).unwrap();
    assert_eq!(p.steps[0].reasons, ["config hash changed"]);
    assert!(
        p.to_string().contains("~ job backup: config hash changed"),
        "{p}"
    );
}

#[test]
fn a_removed_job_is_unscheduled() {
    let before = with_schedule(desired(vec![service("web", 1, &[])]), "backup", "@daily");
    let actual = actual_for(&before);
    let after = desired(vec![service("web", 1, &[])]);
    let p = plan(&after, &actual).unwrap();
    assert_eq!(kinds(&p), ["unschedule backup"]);
    assert_eq!(p.steps[0].reasons, ["service is no longer in the project"]);
    assert!(
        p.to_string()
            .contains("  - job backup: service is no longer in the project\n"),
        "{p}"
    );
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["steps"][0]["action"], "unschedule_job");
    assert_eq!(v["steps"][0]["service"], "backup");
}

#[test]
fn a_service_that_becomes_a_job_loses_its_containers() {
    let before = desired(vec![service("web", 1, &[]), service("backup", 2, &[])]);
    let actual = actual_for(&before);
    let after = with_schedule(before, "backup", "@hourly");
    let p = plan(&after, &actual).unwrap();
    assert_eq!(
        kinds(&p),
        [
            "remove shop-backup-1",
            "remove shop-backup-2",
            "schedule backup"
        ]
    );
    for step in &p.steps[..2] {
        assert_eq!(
            step.reasons,
            ["is a job now: runs at its schedule, not kept running"]
        );
    }
    assert_eq!(p.steps[2].reasons, [NEW_JOB]);
    assert!(p.changed_services().is_empty());
    // Even a replica count left on the job does not create containers.
    let mut counted = after.clone();
    counted.services.get_mut("backup").unwrap().replicas = 3;
    let p = plan(&counted, &actual_for(&after)).unwrap();
    assert!(p.is_empty(), "{p}");
}

#[test]
fn a_job_that_becomes_a_service_is_unscheduled_and_started() {
    let before = with_schedule(desired(vec![service("web", 1, &[])]), "backup", "@daily");
    let actual = actual_for(&before);
    let after = desired(vec![service("web", 1, &[]), service("backup", 1, &[])]);
    let p = plan(&after, &actual).unwrap();
    assert_eq!(kinds(&p), ["unschedule backup", "create backup#1"]);
    assert_eq!(
        p.steps[0].reasons,
        ["no longer a job: kept running from now on"]
    );
    assert_eq!(p.steps[1].reasons, ["new service"]);
    assert_eq!(
        p.changed_services().into_iter().collect::<Vec<_>>(),
        ["backup"]
    );
}

#[test]
fn changes_in_our_extension_name_its_keys() {
    let with_x = |x: serde_json::Value| {
        let mut i = inputs("busybox:1", "sha256:aaaa", "1");
        if !x.is_null() {
            i.spec["x-dockmaster"] = x;
        }
        i
    };
    let old = with_x(json!({"schedule": "@daily", "timeout": "1h", "history": 5}));
    let new = with_x(json!({"schedule": "@hourly", "timeout": "1h", "concurrency": "allow"}));
    assert_eq!(
        new.changes_since(&old),
        [
            "x-dockmaster.concurrency added",
            "x-dockmaster.history removed",
            "x-dockmaster.schedule changed"
        ]
    );
    // Added or removed as a whole: its keys are named too.
    let none = with_x(serde_json::Value::Null);
    assert_eq!(
        old.changes_since(&none),
        [
            "x-dockmaster.history added",
            "x-dockmaster.schedule added",
            "x-dockmaster.timeout added"
        ]
    );
    assert_eq!(
        with_x(json!({"image_update": "follow"})).changes_since(&none),
        ["x-dockmaster.image_update added"]
    );
    // An empty extension added, or a value that is not a mapping: the key itself.
    assert_eq!(
        with_x(json!({})).changes_since(&none),
        ["x-dockmaster added"]
    );
    assert_eq!(
        with_x(json!("odd")).changes_since(&old),
        ["x-dockmaster changed"]
    );
    // Other mappings keep one line (environment values may be secrets).
    assert_eq!(
        inputs("busybox:1", "sha256:aaaa", "2").changes_since(&none),
        ["environment changed"]
    );
}
