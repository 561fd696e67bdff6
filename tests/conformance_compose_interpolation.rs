//! External conformance data (../shared/conformance/compose/interpolation): templates × named
//! environments with the value compose-go's template.Substitute produces or the error it
//! raises, and the variables its ExtractVariables reports.

use std::collections::BTreeMap;

use dockmaster::manifest::interpolate::{substitute, variables, Variable};
use serde_json::Value;

#[path = "common/conformance.rs"]
mod conformance;
use conformance::conformance_dir;

fn load() -> Value {
    let p = conformance_dir().join("compose/interpolation/cases.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn environments(data: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut envs = BTreeMap::new();
    for (name, vars) in data["environments"].as_object().unwrap() {
        let vars = vars
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        envs.insert(name.clone(), vars);
    }
    envs
}

#[test]
fn substitute_matches_compose_go() {
    let data = load();
    let envs = environments(&data);
    let templates = data["templates"].as_array().unwrap();
    assert!(templates.len() >= 90, "only {} templates", templates.len());
    let (mut checked, mut failures) = (0, Vec::new());
    for case in templates {
        let template = case["template"].as_str().unwrap();
        for (env_name, want) in case["results"].as_object().unwrap() {
            let env = &envs[env_name];
            let got = substitute(template, &|k: &str| env.get(k).cloned());
            checked += 1;
            let problem = match (got, want.get("expected"), want.get("error")) {
                (Ok(v), Some(e), _) if Some(v.as_str()) == e.as_str() => None,
                (Ok(v), Some(e), _) => Some(format!("got {v:?}, want {e}")),
                (Ok(v), None, e) => Some(format!("got {v:?}, want error {e:?}")),
                (Err(err), _, Some(e)) => {
                    let e = e.as_str().unwrap();
                    let msg = err.to_string();
                    (!msg.to_lowercase().contains(&e.to_lowercase()))
                        .then(|| format!("error {msg:?} does not contain {e:?}"))
                }
                (Err(err), _, None) => Some(format!("unexpected error {err}")),
            };
            if let Some(p) = problem {
                failures.push(format!("{template:?} in {env_name}: {p}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{checked} template × environment results match compose-go");
}

#[test]
fn variables_match_compose_go_extract_variables() {
    let data = load();
    let mut failures = Vec::new();
    let templates = data["templates"].as_array().unwrap();
    for case in templates {
        let template = case["template"].as_str().unwrap();
        let mut want: Vec<Variable> = case["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| Variable {
                name: v["name"].as_str().unwrap().to_string(),
                default_value: v["default"].as_str().unwrap().to_string(),
                presence_value: v["presence_value"].as_str().unwrap().to_string(),
                required: v["required"].as_bool().unwrap(),
            })
            .collect();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        match variables(template) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{template:?}: got {got:?}\n  want {want:?}")),
            Err(e) => failures.push(format!("{template:?}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        templates.len(),
        failures.join("\n")
    );
}
