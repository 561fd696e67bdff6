//! The loader's input representation: a positioned YAML tree built from the parser's events.
//!
//! Built here rather than through serde because Compose needs what serde hides: the line of
//! every value (errors name it), the `!reset` / `!override` tags (merge semantics), YAML 1.1
//! style merge keys (`<<`) resolved like go-yaml, and control over alias expansion (an alias
//! bomb must fail, not exhaust memory). Scalars are resolved with go-yaml's rules (YAML 1.2 core
//! schema plus `0755`-style octal ints).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, Span, Tag as YamlTag};

use super::error::{LoadError, Location};

/// Limits on untrusted input.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// Nodes per document after alias expansion.
pub const MAX_NODES: usize = 500_000;
/// Nesting depth of collections.
pub const MAX_DEPTH: usize = 64;

/// Compose's merge-control tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tag {
    #[default]
    None,
    /// `!reset`: drop the value inherited from earlier files / the extended service.
    Reset,
    /// `!override`: replace the inherited value instead of merging with it.
    Override,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// The value and its source text (kept for messages and string conversion).
    Float(f64, String),
    Str(String),
    Seq(Vec<Node>),
    Map(Map),
}

/// A mapping, in source order.
pub type Map = Vec<(Key, Node)>;

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub loc: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Location,
    pub tag: Tag,
}

impl Node {
    pub fn new(value: Value, loc: Location) -> Node {
        Node {
            value,
            loc,
            tag: Tag::None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar as the string Go's `fmt` would print (numbers, bools); `None` for
    /// null and collections.
    pub fn scalar_string(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f, _) => Some(format_float(*f)),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// Entry of a mapping by key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// A short name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(..) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Number of nodes in this subtree (keys count as nodes).
    pub fn count(&self) -> usize {
        match &self.value {
            Value::Seq(s) => 1 + s.iter().map(Node::count).sum::<usize>(),
            Value::Map(m) => 1 + m.iter().map(|(_, v)| 1 + v.count()).sum::<usize>(),
            _ => 1,
        }
    }

    /// The value as JSON (extension fields, `x-…` output).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f, _) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(s) => J::Array(s.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Go's `%v` of a float64: shortest representation, no trailing `.0`.
pub fn format_float(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if f.is_nan() {
        return "NaN".to_string();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        // Go switches to exponent form outside [1e-4, 1e21).
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

/// Parses one YAML file into its documents (empty documents dropped).
pub fn parse(path: &Arc<Path>, text: &str) -> Result<Vec<Node>, Box<LoadError>> {
    let mut options = Options::default();
    options.emit_comments = false;
    options.block_scalar_eof_without_line_feed = true;
    options.block_nesting_limit = MAX_DEPTH;
    options.flow_nesting_limit = MAX_DEPTH;
    let parser = Parser::new_from_str_with_options(text, options);
    let mut b = Builder {
        parser,
        path: path.clone(),
        anchors: HashMap::new(),
        open: HashSet::new(),
        nodes: 0,
        alias_nodes: 0,
        keys: Vec::new(),
    };
    let mut docs = Vec::new();
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                b.anchors.clear();
                b.nodes = 0;
                b.alias_nodes = 0;
                let (ev, span) = b.next()?;
                if matches!(ev, Event::DocumentEnd) {
                    continue;
                }
                let node = b.node(ev, span, 0)?;
                b.check_aliasing(&node.loc)?;
                if !node.is_null() {
                    docs.push(node);
                }
            }
            _ => return Err(b.syntax(&span, "unexpected event at top level")),
        }
    }
    Ok(docs)
}

struct Builder<'a> {
    parser: Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>,
    path: Arc<Path>,
    /// Completed anchored nodes and their sizes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Anchors whose node is still being built (an alias to one is a cycle).
    open: HashSet<usize>,
    nodes: usize,
    alias_nodes: usize,
    /// Key path, for messages.
    keys: Vec<String>,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), Box<LoadError>> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(Box::new(LoadError::Syntax {
                location: Location {
                    file: self.path.clone(),
                    line: e.marker().line() as u32,
                    column: e.marker().col() as u32 + 1,
                },
                message: e.info(),
            })),
            None => Err(Box::new(LoadError::Syntax {
                location: self.loc_of(None),
                message: "unexpected end of input".to_string(),
            })),
        }
    }

    fn loc_of(&self, span: Option<&Span>) -> Location {
        let (line, column) = span
            .map(|s| (s.start.line() as u32, s.start.col() as u32 + 1))
            .unwrap_or((1, 1));
        Location {
            file: self.path.clone(),
            line,
            column,
        }
    }

    fn syntax(&self, span: &Span, message: impl Into<String>) -> Box<LoadError> {
        Box::new(LoadError::Syntax {
            location: self.loc_of(Some(span)),
            message: message.into(),
        })
    }

    fn path_string(&self) -> String {
        self.keys.join(".").replace(".[", "[")
    }

    fn count_node(&mut self, span: &Span) -> Result<(), Box<LoadError>> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Box::new(LoadError::Limit {
                location: Some(self.loc_of(Some(span))),
                what: "number of YAML nodes".to_string(),
                limit: MAX_NODES,
            }));
        }
        Ok(())
    }

    /// go-yaml's rule against alias bombs: many expansions relative to the document size.
    fn check_aliasing(&self, loc: &Location) -> Result<(), Box<LoadError>> {
        let total = self.nodes;
        let aliased = self.alias_nodes;
        let ratio = if total <= 400_000 {
            0.99
        } else if total >= 4_000_000 {
            0.1
        } else {
            0.99 - 0.89 * (total - 400_000) as f64 / 3_600_000.0
        };
        if aliased > 100 && total > 1000 && aliased as f64 / total as f64 > ratio {
            return Err(Box::new(LoadError::Syntax {
                location: loc.clone(),
                message: "document contains excessive aliasing".to_string(),
            }));
        }
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, Box<LoadError>> {
        if depth > MAX_DEPTH {
            return Err(Box::new(LoadError::Limit {
                location: Some(self.loc_of(Some(&span))),
                what: "nesting depth".to_string(),
                limit: MAX_DEPTH,
            }));
        }
        let loc = self.loc_of(Some(&span));
        match ev {
            Event::Alias(id) => {
                if self.open.contains(&id) {
                    return Err(Box::new(LoadError::Syntax {
                        location: loc,
                        message: format!(
                            "cycle detected: an alias at {} refers to the node that contains it",
                            self.path_string()
                        ),
                    }));
                }
                let Some((node, size)) = self.anchors.get(&id) else {
                    return Err(self.syntax(&span, "alias to an unknown anchor"));
                };
                let (node, size) = (node.clone(), *size);
                self.nodes += size;
                self.alias_nodes += size;
                if self.nodes > MAX_NODES {
                    // Checked before anything bigger is built from it.
                    return Err(Box::new(LoadError::Syntax {
                        location: loc,
                        message: "document contains excessive aliasing".to_string(),
                    }));
                }
                Ok(node)
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count_node(&span)?;
                let (value, t) = self.scalar(&text, style, tag.as_deref(), &span)?;
                let node = Node { value, loc, tag: t };
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.count_node(&span)?;
                let t = self.collection_tag(tag.as_deref(), "seq", &span)?;
                if anchor != 0 {
                    self.open.insert(anchor);
                }
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    self.keys.push(format!("[{}]", items.len()));
                    let item = self.node(ev, span, depth + 1);
                    self.keys.pop();
                    items.push(item?);
                }
                let node = Node {
                    value: Value::Seq(items),
                    loc,
                    tag: t,
                };
                if anchor != 0 {
                    self.open.remove(&anchor);
                }
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(_, anchor, tag) => {
                self.count_node(&span)?;
                let t = self.collection_tag(tag.as_deref(), "map", &span)?;
                if anchor != 0 {
                    self.open.insert(anchor);
                }
                let map = self.mapping(depth)?;
                let node = Node {
                    value: Value::Map(map),
                    loc,
                    tag: t,
                };
                if anchor != 0 {
                    self.open.remove(&anchor);
                }
                self.remember(anchor, &node);
                Ok(node)
            }
            _ => Err(self.syntax(&span, "unexpected YAML event")),
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), node.count()));
        }
    }

    fn mapping(&mut self, depth: usize) -> Result<Map, Box<LoadError>> {
        let mut entries: Map = Vec::new();
        let mut merges: Vec<Node> = Vec::new();
        let mut seen: HashMap<String, u32> = HashMap::new();
        loop {
            let (ev, span) = self.next()?;
            if matches!(ev, Event::MappingEnd) {
                break;
            }
            let key_loc = self.loc_of(Some(&span));
            let key = match ev {
                Event::Scalar(text, style, _, tag) => {
                    self.count_node(&span)?;
                    if style == ScalarStyle::Plain && text == "<<" && tag.is_none() {
                        let (ev, vspan) = self.next()?;
                        self.keys.push("<<".to_string());
                        let v = self.node(ev, vspan, depth + 1);
                        self.keys.pop();
                        merges.push(v?);
                        continue;
                    }
                    let (value, _) = self.scalar(&text, style, tag.as_deref(), &span)?;
                    match value {
                        Value::Str(s) => s,
                        other => {
                            let shown = match other {
                                Value::Null => "null".to_string(),
                                Value::Bool(b) => b.to_string(),
                                Value::Int(i) => i.to_string(),
                                Value::Float(_, raw) => raw,
                                _ => String::new(),
                            };
                            return Err(self.non_string_key(key_loc, &shown));
                        }
                    }
                }
                Event::Alias(_) | Event::SequenceStart(..) | Event::MappingStart(..) => {
                    let n = self.node(ev, span, depth + 1)?;
                    match n.value {
                        Value::Str(s) => s,
                        _ => return Err(self.non_string_key(key_loc, "a collection")),
                    }
                }
                _ => return Err(self.syntax(&span, "unexpected YAML event in a mapping key")),
            };
            if let Some(line) = seen.get(&key) {
                return Err(Box::new(LoadError::Syntax {
                    location: key_loc,
                    message: format!("mapping key {key:?} already defined at line {line}"),
                }));
            }
            seen.insert(key.clone(), key_loc.line);
            let (ev, vspan) = self.next()?;
            self.keys.push(key.clone());
            let value = self.node(ev, vspan, depth + 1);
            self.keys.pop();
            entries.push((
                Key {
                    name: key,
                    loc: key_loc,
                },
                value?,
            ));
        }
        // Merge keys: explicit keys win, then earlier sources over later ones.
        for source in merges {
            let loc = source.loc.clone();
            let maps: Vec<Node> = match source.value {
                Value::Map(_) => vec![source],
                Value::Seq(items) => items,
                _ => {
                    return Err(Box::new(LoadError::Syntax {
                        location: loc,
                        message: "a merge key (<<) must refer to a mapping or a list of mappings"
                            .to_string(),
                    }))
                }
            };
            for m in maps {
                let Value::Map(src) = m.value else {
                    return Err(Box::new(LoadError::Syntax {
                        location: m.loc,
                        message: "a merge key (<<) list may only contain mappings".to_string(),
                    }));
                };
                for (k, v) in src {
                    if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(k.name.clone())
                    {
                        e.insert(k.loc.line);
                        entries.push((k, v));
                    }
                }
            }
        }
        Ok(entries)
    }

    fn non_string_key(&self, loc: Location, shown: &str) -> Box<LoadError> {
        let path = self.path_string();
        Box::new(LoadError::Syntax {
            location: loc,
            message: if path.is_empty() {
                format!("non-string key at the top level: {shown}")
            } else {
                format!("non-string key in {path}: {shown} (quote the key)")
            },
        })
    }

    fn collection_tag(
        &self,
        tag: Option<&YamlTag>,
        core: &str,
        span: &Span,
    ) -> Result<Tag, Box<LoadError>> {
        match tag {
            None => Ok(Tag::None),
            Some(t) if t.is_yaml_core_schema() && t.suffix() == core => Ok(Tag::None),
            Some(t) => custom_tag(t)
                .ok_or_else(|| self.syntax(span, format!("unsupported YAML tag {}", t.original()))),
        }
    }

    fn scalar(
        &self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&YamlTag>,
        span: &Span,
    ) -> Result<(Value, Tag), Box<LoadError>> {
        let Some(t) = tag else {
            return Ok((
                if style == ScalarStyle::Plain {
                    resolve_plain(text)
                } else {
                    Value::Str(text.to_string())
                },
                Tag::None,
            ));
        };
        if let Some(custom) = custom_tag(t) {
            // `!reset` / `!override` on a scalar: the scalar resolves as usual.
            let value = if style == ScalarStyle::Plain {
                resolve_plain(text)
            } else {
                Value::Str(text.to_string())
            };
            return Ok((value, custom));
        }
        if !t.is_yaml_core_schema() {
            return Err(self.syntax(span, format!("unsupported YAML tag {}", t.original())));
        }
        let bad = || {
            self.syntax(
                span,
                format!("invalid value {text:?} for tag {}", t.original()),
            )
        };
        let value = match t.suffix() {
            "str" => Value::Str(text.to_string()),
            "null" => Value::Null,
            "bool" => match resolve_plain(text) {
                v @ Value::Bool(_) => v,
                _ => return Err(bad()),
            },
            "int" => match resolve_plain(text) {
                v @ Value::Int(_) => v,
                _ => return Err(bad()),
            },
            "float" => match resolve_plain(text) {
                Value::Int(i) => Value::Float(i as f64, text.to_string()),
                v @ Value::Float(..) => v,
                _ => return Err(bad()),
            },
            other => {
                return Err(
                    self.syntax(span, format!("YAML tag !!{other} cannot apply to a scalar"))
                )
            }
        };
        Ok((value, Tag::None))
    }
}

fn custom_tag(t: &YamlTag) -> Option<Tag> {
    if t.handle() != "!" {
        return None;
    }
    match t.suffix() {
        "reset" => Some(Tag::Reset),
        "override" => Some(Tag::Override),
        _ => None,
    }
}

/// go-yaml's resolution of a plain scalar: null, bool, int (decimal, `0o`/`0x`/`0b`, and a
/// leading `0` meaning octal), float, else string.
pub fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY, text.to_string())
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY, text.to_string()),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN, text.to_string()),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i);
    }
    if is_float(text) {
        if let Ok(f) = text.replace('_', "").parse::<f64>() {
            return Value::Float(f, text.to_string());
        }
    }
    Value::Str(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if body.is_empty() {
        return None;
    }
    let (radix, digits) = if let Some(d) = body.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = body.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = body.strip_prefix("0b") {
        (2, d)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix) || c == '_') {
        return None;
    }
    if digits.starts_with('_') {
        return None;
    }
    let magnitude = i128::from_str_radix(&digits.replace('_', ""), radix).ok()?;
    let v = if neg { -magnitude } else { magnitude };
    i64::try_from(v).ok()
}

fn is_float(text: &str) -> bool {
    // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    let b = text.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && (b[i].is_ascii_digit() || (b[i] == b'_' && i > int_start)) {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - s;
    } else if int_digits == 0 {
        return false;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        let p: Arc<Path> = Arc::from(Path::new("/p/compose.yaml"));
        let mut d = parse(&p, text).unwrap();
        assert_eq!(d.len(), 1);
        d.remove(0)
    }

    fn err(text: &str) -> String {
        let p: Arc<Path> = Arc::from(Path::new("/p/compose.yaml"));
        parse(&p, text).unwrap_err().to_string()
    }

    #[test]
    fn scalars_resolve_like_go_yaml() {
        assert_eq!(resolve_plain("0440"), Value::Int(0o440));
        assert_eq!(resolve_plain("0x1F"), Value::Int(31));
        assert_eq!(resolve_plain("-12"), Value::Int(-12));
        assert_eq!(resolve_plain("yes"), Value::Str("yes".into()));
        assert_eq!(resolve_plain("~"), Value::Null);
        assert!(matches!(resolve_plain("2.5"), Value::Float(f, _) if f == 2.5));
        assert!(matches!(resolve_plain(".5"), Value::Float(f, _) if f == 0.5));
        assert_eq!(resolve_plain("1.2.3"), Value::Str("1.2.3".into()));
        assert_eq!(resolve_plain("8080:80"), Value::Str("8080:80".into()));
        assert_eq!(resolve_plain("1_000"), Value::Int(1000));
    }

    #[test]
    fn positions_tags_and_merge_keys() {
        let n = doc("x-base: &b\n  image: nginx\n  restart: always\nservices:\n  s:\n    <<: *b\n    restart: no\n    ports: !reset []\n");
        let s = n.get("services").unwrap().get("s").unwrap();
        assert_eq!(s.get("image").unwrap().as_str(), Some("nginx"));
        assert_eq!(s.get("restart").unwrap().as_str(), Some("no"));
        assert_eq!(s.get("restart").unwrap().loc.line, 7);
        assert_eq!(s.get("ports").unwrap().tag, Tag::Reset);
    }

    #[test]
    fn merge_key_lists_earlier_wins() {
        let n = doc("a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n");
        let c = n.get("c").unwrap();
        assert_eq!(c.get("x").unwrap().value, Value::Int(1));
        assert_eq!(c.get("y").unwrap().value, Value::Int(1));
        assert_eq!(c.get("z").unwrap().value, Value::Int(3));
    }

    #[test]
    fn bad_documents() {
        assert!(err("a: 1\na: 2\n").contains("already defined at line 1"));
        assert!(err("x:\n  1: FOO\n").contains("non-string key in x: 1"));
        assert!(err("x: &h\n  y:\n    <<: *h\n").contains("cycle"));
        let bomb = "a: &a {k: v}\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: &d [*c, *c, *c]\ne: &e [*d, *d, *d]\nf: &f [*e, *e, *e]\ng: &g [*f, *f, *f]\nh: &h [*g, *g, *g]\ni: &i [*h, *h, *h]\nj: &j [*i, *i, *i]\nk: &k [*j, *j, *j]\n";
        assert!(err(bomb).contains("excessive aliasing"), "{}", err(bomb));
        assert!(err("a: !custom x\n").contains("unsupported YAML tag"));
        assert!(err("a: [1, 2\n").contains("invalid YAML"));
    }

    #[test]
    fn multi_documents() {
        let p: Arc<Path> = Arc::from(Path::new("/p/c.yaml"));
        let d = parse(&p, "a: 1\n---\nb: 2\n---\n").unwrap();
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn floats_print_like_go() {
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(1e21), "1e+21");
        assert_eq!(format_float(0.0001), "0.0001");
        assert_eq!(format_float(0.00001), "1e-05");
    }
}
