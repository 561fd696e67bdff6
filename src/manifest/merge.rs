//! Compose's override rules on the positioned tree (compose-go `override.MergeYaml`): used for
//! `-f` files merged in order, for multi-document files, for `extends` (the extending service
//! overrides its base) and for `include` (the including file overrides what it includes).
//!
//! Rules: mappings merge key by key; sequences append; scalars are replaced; `command`,
//! `entrypoint` and `healthcheck.test` are replaced whole; `environment`, `labels`, `sysctls`,
//! `extra_hosts`, `dns*`, `tmpfs`, `env_file`... are appended as `KEY=VALUE` lists (the later
//! value of a key wins when the list becomes a mapping again); `depends_on` and service
//! `networks` merge as mappings whatever syntax each side uses; `ulimits` entries and `logging`
//! have their own rules; `networks.*.ipam.config` merges by subnet. A value tagged `!reset`
//! removes the key, `!override` replaces instead of merging. Duplicates in ports, volumes,
//! secrets... are removed later, when the typed model is built (compose's "unicity").
//!
//! Each merge is linear in the size of its inputs: mappings with many keys are indexed.

use std::collections::HashMap;

use super::yaml::{Key, Map, Node, Tag, Value};

/// Merges `over` onto `base` at `path` (the keys from the document root).
pub fn merge(base: Node, over: Node, path: &mut Vec<String>) -> Node {
    if over.tag == Tag::Override {
        let mut over = over;
        over.tag = Tag::None;
        return over;
    }
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    if let Some(rule) = special(&p) {
        return match rule {
            Rule::Replace => over,
            Rule::Sequence => {
                if over.is_null() {
                    return base;
                }
                let loc = over.loc.clone();
                let mut items = into_sequence(base);
                items.extend(into_sequence(over));
                Node::new(Value::Seq(items), loc)
            }
            Rule::DependsOn | Rule::Networks => {
                if over.is_null() {
                    return base;
                }
                let with_defaults = rule == Rule::DependsOn;
                let loc = over.loc.clone();
                let b = into_mapping(base, with_defaults);
                let o = into_mapping(over, with_defaults);
                Node::new(Value::Map(merge_mappings(b, o, path)), loc)
            }
            Rule::Ulimit => match (&base.value, &over.value) {
                (Value::Map(_), Value::Map(_)) => generic(base, over, path),
                _ => over,
            },
            Rule::Logging => {
                let bd = base.get("driver").and_then(Node::scalar_string);
                let od = over.get("driver").and_then(Node::scalar_string);
                if bd.is_none() || od.is_none() || bd == od {
                    generic(base, over, path)
                } else {
                    over
                }
            }
            Rule::IpamConfig => merge_ipam_config(base, over, path),
        };
    }
    generic(base, over, path)
}

fn generic(base: Node, over: Node, path: &mut Vec<String>) -> Node {
    if over.is_null() {
        return base;
    }
    match (base.value, over.value) {
        (Value::Map(b), Value::Map(o)) => Node {
            value: Value::Map(merge_mappings(b, o, path)),
            loc: over.loc,
            tag: over.tag,
        },
        (Value::Seq(mut b), Value::Seq(o)) => {
            b.extend(o);
            Node {
                value: Value::Seq(b),
                loc: over.loc,
                tag: over.tag,
            }
        }
        (_, o) => Node {
            value: o,
            loc: over.loc,
            tag: over.tag,
        },
    }
}

/// Merges mapping `over` into `base`: new keys are added in order, existing keys merged,
/// `!reset` keys removed.
pub fn merge_mappings(base: Map, over: Map, path: &mut Vec<String>) -> Map {
    let mut out: Vec<Option<(Key, Node)>> = base.into_iter().map(Some).collect();
    let mut index: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|(k, _)| (k.name.clone(), i)))
        .collect();
    for (k, v) in over {
        let existing = index.get(&k.name).copied();
        if v.tag == Tag::Reset {
            if let Some(i) = existing {
                out[i] = None;
                index.remove(&k.name);
            }
            // Kept (tagged) when there was nothing to reset: a later strip removes it, and a
            // file merged after this one may still set the key.
            if existing.is_none() {
                index.insert(k.name.clone(), out.len());
                out.push(Some((k, v)));
            }
            continue;
        }
        match existing {
            Some(i) => {
                let Some((bk, bv)) = out[i].take() else {
                    continue;
                };
                path.push(k.name.clone());
                let merged = merge(bv, v, path);
                path.pop();
                out[i] = Some((bk, merged));
            }
            None => {
                index.insert(k.name.clone(), out.len());
                out.push(Some((k, v)));
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// Removes what `!reset` marked (when nothing overrode it) and forgets merge tags.
pub fn strip_tags(node: &mut Node) {
    node.tag = Tag::None;
    match &mut node.value {
        Value::Map(m) => {
            m.retain(|(_, v)| v.tag != Tag::Reset);
            for (_, v) in m.iter_mut() {
                strip_tags(v);
            }
        }
        Value::Seq(s) => {
            s.retain(|v| v.tag != Tag::Reset);
            for v in s.iter_mut() {
                strip_tags(v);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Replace,
    Sequence,
    DependsOn,
    Networks,
    Ulimit,
    Logging,
    IpamConfig,
}

fn special(p: &[&str]) -> Option<Rule> {
    match p {
        ["services", _, "command" | "entrypoint"] => Some(Rule::Replace),
        ["services", _, "healthcheck", "test"] => Some(Rule::Replace),
        ["services", _, "environment" | "labels" | "annotations" | "sysctls" | "extra_hosts" | "dns"
        | "dns_opt" | "dns_search" | "tmpfs" | "env_file" | "label_file"] => Some(Rule::Sequence),
        ["services", _, "deploy", "labels"] => Some(Rule::Sequence),
        ["services", _, "build", "args" | "labels" | "extra_hosts" | "additional_contexts"] => {
            Some(Rule::Sequence)
        }
        ["networks" | "volumes", _, "labels"] => Some(Rule::Sequence),
        ["services", _, "depends_on"] => Some(Rule::DependsOn),
        ["services", _, "networks"] => Some(Rule::Networks),
        ["services", _, "ulimits", _] => Some(Rule::Ulimit),
        ["services", _, "logging"] => Some(Rule::Logging),
        ["networks", _, "ipam", "config"] => Some(Rule::IpamConfig),
        _ => None,
    }
}

/// A mapping as `KEY=VALUE` entries (`KEY` for a null value), a scalar as a one-entry list.
fn into_sequence(node: Node) -> Vec<Node> {
    let loc = node.loc.clone();
    match node.value {
        Value::Seq(items) => items,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| {
                let text = match v.scalar_string() {
                    Some(s) => format!("{}={s}", k.name),
                    None => k.name.clone(),
                };
                Node::new(Value::Str(text), v.loc)
            })
            .collect(),
        Value::Null => Vec::new(),
        other => vec![Node::new(other, loc)],
    }
}

/// A list of names as a mapping (`depends_on` gets compose's defaults for each entry).
fn into_mapping(node: Node, depends_on_defaults: bool) -> Map {
    match node.value {
        Value::Map(m) => m,
        Value::Seq(items) => items
            .into_iter()
            .filter_map(|item| {
                let name = item.scalar_string()?;
                let value = if depends_on_defaults {
                    let loc = item.loc.clone();
                    let key = |n: &str| Key {
                        name: n.to_string(),
                        loc: loc.clone(),
                    };
                    Node::new(
                        Value::Map(vec![
                            (
                                key("condition"),
                                Node::new(Value::Str("service_started".into()), loc.clone()),
                            ),
                            (key("required"), Node::new(Value::Bool(true), loc.clone())),
                        ]),
                        loc.clone(),
                    )
                } else {
                    Node::new(Value::Null, item.loc.clone())
                };
                Some((
                    Key {
                        name,
                        loc: item.loc,
                    },
                    value,
                ))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn merge_ipam_config(base: Node, over: Node, path: &mut Vec<String>) -> Node {
    let loc = over.loc.clone();
    let (Value::Seq(b), Value::Seq(o)) = (base.value.clone(), over.value.clone()) else {
        return generic(base, over, path);
    };
    let subnet = |n: &Node| n.get("subnet").and_then(Node::scalar_string);
    let mut out: Vec<Node> = Vec::new();
    let mut by_subnet: HashMap<Option<String>, usize> = HashMap::new();
    for n in b {
        by_subnet.insert(subnet(&n), out.len());
        out.push(n);
    }
    for n in o {
        match by_subnet.get(&subnet(&n)).copied() {
            Some(i) => {
                let prev = std::mem::replace(&mut out[i], Node::new(Value::Null, loc.clone()));
                out[i] = generic(prev, n, path);
            }
            None => {
                by_subnet.insert(subnet(&n), out.len());
                out.push(n);
            }
        }
    }
    Node::new(Value::Seq(out), loc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml;
    use std::path::Path;
    use std::sync::Arc;

    fn doc(text: &str) -> Node {
        let p: Arc<Path> = Arc::from(Path::new("/p/c.yaml"));
        yaml::parse(&p, text).unwrap().remove(0)
    }

    fn merged(a: &str, b: &str) -> Node {
        let mut n = merge(doc(a), doc(b), &mut Vec::new());
        strip_tags(&mut n);
        n
    }

    fn strs(n: &Node) -> Vec<String> {
        n.as_seq()
            .unwrap()
            .iter()
            .map(|x| x.scalar_string().unwrap())
            .collect()
    }

    #[test]
    fn override_rules() {
        let n = merged(
            "services:\n  a:\n    image: x\n    command: [a, b]\n    ports: ['80']\n    environment: {A: 1, B: 2}\n    depends_on: [db]\n    networks: [front]\n",
            "services:\n  a:\n    image: y\n    command: [c]\n    ports: ['81']\n    environment: [B=3, C]\n    depends_on:\n      db: {condition: service_healthy}\n    networks:\n      back: {}\n",
        );
        let a = n.get("services").unwrap().get("a").unwrap();
        assert_eq!(a.get("image").unwrap().as_str(), Some("y"));
        assert_eq!(strs(a.get("command").unwrap()), ["c"]);
        assert_eq!(strs(a.get("ports").unwrap()), ["80", "81"]);
        assert_eq!(
            strs(a.get("environment").unwrap()),
            ["A=1", "B=2", "B=3", "C"]
        );
        let db = a.get("depends_on").unwrap().get("db").unwrap();
        assert_eq!(
            db.get("condition").unwrap().as_str(),
            Some("service_healthy")
        );
        assert_eq!(db.get("required").unwrap().value, Value::Bool(true));
        let nets = a.get("networks").unwrap().as_map().unwrap();
        assert_eq!(nets.len(), 2);
    }

    #[test]
    fn reset_and_override_tags() {
        let n = merged(
            "services:\n  a:\n    image: x\n    ports: ['80']\n    labels: {a: b}\n    deploy: {replicas: 2, resources: {limits: {cpus: '1'}}}\n",
            "services:\n  a:\n    ports: !reset []\n    deploy: !override {replicas: 3}\n",
        );
        let a = n.get("services").unwrap().get("a").unwrap();
        assert!(a.get("ports").is_none());
        assert!(a.get("labels").is_some());
        let d = a.get("deploy").unwrap();
        assert!(d.get("resources").is_none());
        assert_eq!(d.get("replicas").unwrap().value, Value::Int(3));
        // A !reset with nothing to reset disappears.
        let n = merged("a: 1\n", "b: !reset 2\n");
        assert!(n.get("b").is_none());
    }

    #[test]
    fn ulimits_logging_ipam() {
        let n = merged(
            "services:\n  a:\n    ulimits: {nofile: {soft: 1, hard: 2}, nproc: 5}\n    logging: {driver: json-file, options: {max-size: 1m}}\nnetworks:\n  n:\n    ipam:\n      config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.1}]\n",
            "services:\n  a:\n    ulimits: {nofile: {hard: 3}, nproc: {soft: 1, hard: 2}}\n    logging: {driver: syslog}\nnetworks:\n  n:\n    ipam:\n      config: [{subnet: 10.0.0.0/24, ip_range: 10.0.0.0/25}, {subnet: 10.1.0.0/24}]\n",
        );
        let a = n.get("services").unwrap().get("a").unwrap();
        let nofile = a.get("ulimits").unwrap().get("nofile").unwrap();
        assert_eq!(nofile.get("soft").unwrap().value, Value::Int(1));
        assert_eq!(nofile.get("hard").unwrap().value, Value::Int(3));
        assert!(a.get("logging").unwrap().get("options").is_none());
        let cfg = n
            .get("networks")
            .unwrap()
            .get("n")
            .unwrap()
            .get("ipam")
            .unwrap()
            .get("config")
            .unwrap();
        let cfg = cfg.as_seq().unwrap();
        assert_eq!(cfg.len(), 2);
        assert!(cfg[0].get("gateway").is_some() && cfg[0].get("ip_range").is_some());
    }
}
