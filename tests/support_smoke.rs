//! Proves the integration-test harness in tests/support works against the real components.

mod support;

#[test]
fn temp_root_and_docker_config() {
    let root = support::TempRoot::new();
    let cfg = support::write_docker_config(&root.docker_config_dir(), &[("127.0.0.1:1", "u", "p")]);
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(text.contains("dTpw"), "{text}");
}

use support::{Mode, Registry};

#[test]
fn plain_registry_answers() {
    let reg = Registry::start(Mode::Plain);
    let r = reg.client().get(reg.url("/v2/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", reg.log());
}

#[test]
fn basic_registry_wants_credentials() {
    let reg = Registry::start(Mode::basic("alice", "s3cret"));
    let c = reg.client();
    let r = c.get(reg.url("/v2/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .get(reg.url("/v2/"))
        .basic_auth("alice", Some("s3cret"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .get(reg.url("/v2/"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn token_registry_accepts_our_tokens() {
    let reg = Registry::start(Mode::token("bob", "pw"));
    let c = reg.client();
    let r = c.get(reg.url("/v2/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let chal = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(chal.starts_with("Bearer "), "{chal}");
    let t = reg.token_server().unwrap();
    let url = format!(
        "{}?service={}&scope=repository:x:pull",
        t.realm(),
        support::token::SERVICE
    );
    let r = c.get(&url).basic_auth("bob", Some("pw")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    let tok = v["token"].as_str().unwrap();
    let r = c.get(reg.url("/v2/")).bearer_auth(tok).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", reg.log());
    assert_eq!(reg.token_requests(), 1);
}

#[test]
fn tls_registry_needs_the_ca() {
    let reg = Registry::start(Mode::Tls);
    let r = reg.client().get(reg.url("/v2/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
