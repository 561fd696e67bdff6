//! Proves the integration-test harness in tests/support works against the real components.

mod support;

#[test]
fn temp_root_and_docker_config() {
    let root = support::TempRoot::new();
    let cfg = support::write_docker_config(&root.docker_config_dir(), &[("127.0.0.1:1", "u", "p")]);
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(text.contains("dTpw"), "{text}");
}
