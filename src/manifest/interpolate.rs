//! Compose variable interpolation, as compose-go's `template` package does it (the code behind
//! `docker compose`): `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
//! `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` for a literal `$`.
//!
//! compose-go finds substitutions with the regex
//! `\$(?i:(\$)|([_a-z][_a-z0-9]*)|{(?:([_a-z][_a-z0-9]*(?::?[-+?](.*))?)}|()))`, so a braced
//! expression with an operator first reaches greedily to the last `}` of its line; it then cuts
//! that match at the `}` balancing the opening `{` (counting every `{`) and interpolates the
//! remainder as a template of its own. The hand-written scanner below reproduces that, including
//! its corners: the operator's argument is interpolated only when it is used (so an error inside
//! an unused default never surfaces), a `${` that starts no valid expression is an invalid
//! template, and a `$` followed by anything else is literal.

use crate::error::{Categorized, Category};

/// How deeply expressions may nest in defaults/alternatives/messages (`${a:-${b:-…}}`). Real
/// files use two or three levels; the cap keeps recursion off untrusted depth.
pub const MAX_NESTING: usize = 32;
/// Upper bound on the bytes one substitution produces (results of nested arguments included),
/// so a template cannot make memory grow without bound.
pub const MAX_OUTPUT: usize = 16 << 20;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum InterpolationError {
    /// A `${` that starts no valid expression. `template` is the (sub)template compose-go names:
    /// the whole string, or the default/remainder being interpolated when the error is there.
    #[error("invalid template: {}", go_quote(.template))]
    InvalidTemplate { template: String },
    /// `${NAME:?reason}` / `${NAME?reason}` with the variable missing (or empty for `:?`).
    #[error("required variable {name} is missing a value{}", reason_suffix(.reason))]
    MissingRequired { name: String, reason: String },
    #[error("invalid template: expressions nested more than {MAX_NESTING} levels deep")]
    TooDeep,
    #[error("interpolated value larger than {limit} bytes")]
    TooLarge { limit: usize },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl Categorized for InterpolationError {
    fn category(&self) -> Category {
        Category::Invalid
    }
}

/// One variable a template references, as compose-go's `template.ExtractVariables` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Variable {
    pub name: String,
    /// The text after `:-` / `-` (not interpolated), empty when none.
    pub default_value: String,
    /// The text after `:+` / `+` (not interpolated), empty when none.
    pub presence_value: String,
    /// `:?` or `?`.
    pub required: bool,
}

/// Substitutes `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?e}`, `${VAR?e}`, `${VAR:+a}`,
/// `${VAR+a}`, `$$` (nested templates inside defaults etc.), as compose-go template.Substitute
/// does. `lookup` returns `None` for an unset variable, `Some("")` for a set but empty one.
pub fn substitute(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolationError> {
    substitute_limited(template, lookup, MAX_OUTPUT)
}

/// [`substitute`] with another bound than [`MAX_OUTPUT`] on the bytes produced (results of
/// nested defaults included).
pub fn substitute_limited(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    max_output: usize,
) -> Result<String, InterpolationError> {
    let mut out = String::new();
    let mut budget = max_output;
    substitute_into(template, lookup, 0, &mut budget, &mut out).map_err(|e| match e {
        InterpolationError::TooLarge { .. } => InterpolationError::TooLarge { limit: max_output },
        e => e,
    })?;
    Ok(out)
}

/// The variables a template references (name, default, presence value, required), what
/// compose-go's ExtractVariables returns for one string: one entry per name (a later reference
/// replaces an earlier one, as in its map), sorted by name. Defaults and alternatives are
/// searched for variables too; `?` messages are not. A `${` starting no valid expression is
/// reported as a variable with an empty name, as compose-go does.
pub fn variables(template: &str) -> Result<Vec<Variable>, InterpolationError> {
    let mut found = Vec::new();
    extract_into(template, 0, &mut found)?;
    let mut by_name = std::collections::BTreeMap::new();
    for v in found {
        by_name.insert(v.name.clone(), v);
    }
    Ok(by_name.into_values().collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `:?`
    RequiredNonEmpty,
    /// `?`
    Required,
    /// `:-`
    DefaultIfEmpty,
    /// `-`
    DefaultIfUnset,
    /// `:+`
    AltIfNonEmpty,
    /// `+`
    AltIfSet,
}

/// One regex match of compose-go's pattern, with positions in the scanned string.
enum Match<'a> {
    /// `$$`
    Escaped,
    /// `$NAME` or `${NAME}`; `end` is just past it.
    Plain { name: &'a str, end: usize },
    /// `${NAME<op>arg}`: `close` is the `}` balancing the `${`, `greedy_end` is just past the
    /// last `}` of the line (what the regex matched); `close + 1 .. greedy_end` is the
    /// remainder compose-go interpolates as a separate template.
    Op {
        name: &'a str,
        op: Op,
        arg: &'a str,
        close: usize,
        greedy_end: usize,
    },
    /// `${` starting nothing valid (the regex's `invalid` group): two bytes long.
    Invalid,
}

/// Length in bytes of the variable name starting at `t[at..]` (0 if none). The pattern is
/// `(?i)[_a-z][_a-z0-9]*`; Go's case folding also lets U+017F (ſ) and U+212A (Kelvin sign)
/// match `s` and `k`, so they count as name characters too.
fn name_len(t: &str, at: usize) -> usize {
    let mut len = 0;
    for (i, c) in t[at..].char_indices() {
        let ok = c == '_'
            || c.is_ascii_alphabetic()
            || c == '\u{17F}'
            || c == '\u{212A}'
            || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// Remembers the line last searched for its final `}`, so a long line with many expressions
/// is searched once, not once per expression.
#[derive(Default)]
struct LineCache {
    from: usize,
    line_end: usize,
    last_brace: Option<usize>,
    valid: bool,
}

impl LineCache {
    /// Index of the last `}` in `t[from..]` before the next newline (`.` never matches `\n`).
    fn last_brace(&mut self, t: &str, from: usize) -> Option<usize> {
        if !(self.valid && self.from <= from && from <= self.line_end) {
            let line_end = t[from..].find('\n').map_or(t.len(), |i| from + i);
            *self = LineCache {
                from,
                line_end,
                last_brace: t[from..line_end].rfind('}').map(|i| from + i),
                valid: true,
            };
        }
        self.last_brace.filter(|&b| b >= from)
    }
}

/// compose-go's getFirstBraceClosingIndex on `t[start..end]`: the `}` that brings the count of
/// `{` back to zero, if any. It counts every `{` (not only `${`) and skips the character after
/// one, quirks included, because that decides where compose-go cuts an expression.
fn balancing_brace(t: &str, start: usize, end: usize) -> Option<usize> {
    let b = t.as_bytes();
    let mut open = 0i64;
    let mut i = start;
    while i < end {
        if b[i] == b'}' {
            open -= 1;
            if open == 0 {
                return Some(i);
            }
        }
        if b[i] == b'{' {
            open += 1;
            i += 1;
        }
        i += 1;
    }
    None
}

/// The leftmost match at or after `from`: its start and what it is.
fn find_match<'a>(t: &'a str, from: usize, lines: &mut LineCache) -> Option<(usize, Match<'a>)> {
    let b = t.as_bytes();
    let mut search = from;
    while let Some(off) = t[search..].find('$') {
        let s = search + off;
        match b.get(s + 1) {
            Some(b'$') => return Some((s, Match::Escaped)),
            Some(b'{') => return Some((s, braced(t, s, lines))),
            Some(_) => {
                let n = name_len(t, s + 1);
                if n > 0 {
                    let name = &t[s + 1..s + 1 + n];
                    return Some((
                        s,
                        Match::Plain {
                            name,
                            end: s + 1 + n,
                        },
                    ));
                }
            }
            None => {}
        }
        search = s + 1;
    }
    None
}

/// Matches the braced alternatives at `t[s..]` (which starts with `${`).
fn braced<'a>(t: &'a str, s: usize, lines: &mut LineCache) -> Match<'a> {
    let b = t.as_bytes();
    let name_start = s + 2;
    let n = name_len(t, name_start);
    if n == 0 {
        return Match::Invalid;
    }
    let q = name_start + n;
    let name = &t[name_start..q];
    let (op, op_len) = match (b.get(q), b.get(q + 1)) {
        (Some(b':'), Some(b'?')) => (Some(Op::RequiredNonEmpty), 2),
        (Some(b':'), Some(b'-')) => (Some(Op::DefaultIfEmpty), 2),
        (Some(b':'), Some(b'+')) => (Some(Op::AltIfNonEmpty), 2),
        (Some(b'?'), _) => (Some(Op::Required), 1),
        (Some(b'-'), _) => (Some(Op::DefaultIfUnset), 1),
        (Some(b'+'), _) => (Some(Op::AltIfSet), 1),
        _ => (None, 0),
    };
    match op {
        None if b.get(q) == Some(&b'}') => Match::Plain { name, end: q + 1 },
        None => Match::Invalid,
        Some(op) => {
            let arg_start = q + op_len;
            // `(.*)}`: the greedy match ends at the last `}` of the line; without one the
            // optional operator group fails, and then `}` must follow the name: it does not.
            let Some(last) = lines.last_brace(t, arg_start) else {
                return Match::Invalid;
            };
            let greedy_end = last + 1;
            let close = balancing_brace(t, s, greedy_end).unwrap_or(last);
            Match::Op {
                name,
                op,
                arg: &t[arg_start..close],
                close,
                greedy_end,
            }
        }
    }
}

fn push(out: &mut String, s: &str, budget: &mut usize) -> Result<(), InterpolationError> {
    *budget = budget
        .checked_sub(s.len())
        .ok_or(InterpolationError::TooLarge { limit: 0 })?;
    out.push_str(s);
    Ok(())
}

fn substitute_into(
    t: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    budget: &mut usize,
    out: &mut String,
) -> Result<(), InterpolationError> {
    if depth > MAX_NESTING {
        return Err(InterpolationError::TooDeep);
    }
    let mut lines = LineCache::default();
    let mut pos = 0;
    // The remainder after a cut braced expression, which compose-go interpolates as a template
    // of its own: an invalid `${` inside it is reported with that text.
    let mut remainder: Option<(usize, usize)> = None;
    while let Some((s, m)) = find_match(t, pos, &mut lines) {
        if remainder.is_some_and(|(_, end)| s >= end) {
            remainder = None;
        }
        push(out, &t[pos..s], budget)?;
        match m {
            Match::Escaped => {
                push(out, "$", budget)?;
                pos = s + 2;
            }
            Match::Plain { name, end } => {
                push(out, &lookup(name).unwrap_or_default(), budget)?;
                pos = end;
            }
            Match::Invalid => {
                let template = remainder.map_or(t, |(a, b)| &t[a..b]).to_string();
                return Err(InterpolationError::InvalidTemplate { template });
            }
            Match::Op {
                name,
                op,
                arg,
                close,
                greedy_end,
            } => {
                let value = lookup(name);
                // The argument is interpolated only when it is used, as compose-go does.
                let arg_value = |budget: &mut usize| {
                    let mut v = String::new();
                    substitute_into(arg, lookup, depth + 1, budget, &mut v).map(|()| v)
                };
                let result = match op {
                    Op::RequiredNonEmpty | Op::Required => {
                        let ok = match (&value, op) {
                            (Some(v), Op::RequiredNonEmpty) => !v.is_empty(),
                            (Some(_), _) => true,
                            (None, _) => false,
                        };
                        if !ok {
                            return Err(InterpolationError::MissingRequired {
                                name: name.to_string(),
                                reason: arg_value(budget)?,
                            });
                        }
                        value.unwrap_or_default()
                    }
                    Op::DefaultIfEmpty => match value {
                        Some(v) if !v.is_empty() => v,
                        _ => arg_value(budget)?,
                    },
                    Op::DefaultIfUnset => match value {
                        Some(v) => v,
                        None => arg_value(budget)?,
                    },
                    Op::AltIfNonEmpty => match value {
                        Some(v) if !v.is_empty() => arg_value(budget)?,
                        v => v.unwrap_or_default(),
                    },
                    Op::AltIfSet => match value {
                        Some(_) => arg_value(budget)?,
                        None => String::new(),
                    },
                };
                push(out, &result, budget)?;
                if close + 1 < greedy_end {
                    remainder = Some((close + 1, greedy_end));
                }
                pos = close + 1;
            }
        }
    }
    push(out, &t[pos..], budget)
}

fn extract_into(t: &str, depth: usize, out: &mut Vec<Variable>) -> Result<(), InterpolationError> {
    if depth > MAX_NESTING {
        return Err(InterpolationError::TooDeep);
    }
    let mut lines = LineCache::default();
    let mut pos = 0;
    // compose-go lists the variables of a cut expression's remainder before the expression's
    // own (which matters for which duplicate wins): hold those back until the remainder ends.
    let mut held: Vec<Vec<Variable>> = Vec::new();
    let mut held_until = 0;
    while let Some((s, m)) = find_match(t, pos, &mut lines) {
        if !held.is_empty() && s >= held_until {
            out.extend(held.drain(..).rev().flatten());
        }
        // `val` is what compose-go takes apart: the name and everything up to the cut `}`.
        let (val, next, remainder_end) = match m {
            Match::Escaped => {
                pos = s + 2;
                continue;
            }
            Match::Invalid => ("", s + 2, None),
            Match::Plain { name, end } => (name, end, None),
            Match::Op {
                close, greedy_end, ..
            } => (&t[s + 2..close], close + 1, Some(greedy_end)),
        };
        let v = variable_from(val);
        // At most one of them is set; `?` messages are not searched (compose-go doesn't).
        let nested = if v.default_value.is_empty() {
            v.presence_value.clone()
        } else {
            v.default_value.clone()
        };
        let mut group = vec![v];
        if !nested.is_empty() {
            extract_into(&nested, depth + 1, &mut group)?;
        }
        match remainder_end {
            Some(end) if next < end => {
                held.push(group);
                held_until = end;
            }
            _ => out.extend(group),
        }
        pos = next;
    }
    out.extend(held.drain(..).rev().flatten());
    Ok(())
}

/// Splits `NAME<op>arg` the way compose-go's extractVariable does: at the first character
/// outside `[A-Za-z0-9_]` (when not the first), then by the operator prefix.
fn variable_from(val: &str) -> Variable {
    let mut v = Variable {
        name: val.to_string(),
        ..Variable::default()
    };
    let Some(i) = val.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) else {
        return v;
    };
    if i == 0 {
        return v;
    }
    v.name = val[..i].to_string();
    let rest = &val[i..];
    if rest.starts_with(":?") || rest.starts_with('?') {
        v.required = true;
    } else if let Some(d) = rest.strip_prefix(":-").or_else(|| rest.strip_prefix('-')) {
        v.default_value = d.to_string();
    } else if let Some(p) = rest.strip_prefix(":+").or_else(|| rest.strip_prefix('+')) {
        v.presence_value = p.to_string();
    }
    v
}

/// A string quoted the way Go's `%q` / `%#v` prints it (strconv.Quote), so messages read like
/// compose-go's. Printability follows Go's only approximately (Rust's std has no Unicode
/// categories): controls, non-ASCII spaces, format characters, private use and noncharacters
/// are escaped.
pub(crate) fn go_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\u{7}' => q.push_str("\\a"),
            '\u{8}' => q.push_str("\\b"),
            '\u{c}' => q.push_str("\\f"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            '\u{b}' => q.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => q.push_str(&format!("\\x{:02x}", c as u32)),
            c if go_printable(c) => q.push(c),
            c if (c as u32) < 0x10000 => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    q.push('"');
    q
}

fn go_printable(c: char) -> bool {
    let u = c as u32;
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || u == 0xAD
        || (0x200B..=0x200F).contains(&u)
        || (0x202A..=0x202E).contains(&u)
        || (0x2060..=0x206F).contains(&u)
        || u == 0xFEFF
        || (0xFFF9..=0xFFFB).contains(&u)
        || (0xE000..=0xF8FF).contains(&u)
        || u >= 0xF0000
        || (u & 0xFFFE) == 0xFFFE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sub(template: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
        let env = env(pairs);
        substitute(template, &|k: &str| env.get(k).cloned()).map_err(|e| e.to_string())
    }

    #[test]
    fn substitution_edge_cases() {
        let set = [("A", "a"), ("E", ""), ("FOObar", "long")];
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("$$", Ok("$")),
            ("$$$A", Ok("$a")),
            ("$$$$", Ok("$$")),
            ("cost: $5 $-x $ $", Ok("cost: $5 $-x $ $")),
            ("$FOObar", Ok("long")),
            ("${A}bar $A-b $Ab", Ok("abar a-b ")),
            ("${A-x} ${E-x} ${U-x}", Ok("a  x")),
            ("${A:-x} ${E:-x} ${U:-x}", Ok("a x x")),
            ("${A+x} ${E+x} ${U+x}", Ok("x x ")),
            ("${A:+x} ${E:+x} ${U:+x}", Ok("x  ")),
            ("${U-}${U:-}${A:+}", Ok("")),
            ("${E?}", Ok("")),
            ("${E:?}", Err("required variable E is missing a value")),
            (
                "${U?why: ${A}}",
                Err("required variable U is missing a value: why: a"),
            ),
            // The reason ends at the `}` balancing the expression; the rest is literal.
            (
                "${U:?x}y}",
                Err("required variable U is missing a value: x"),
            ),
            ("${A:?x}y}", Ok("ay}")),
            // Arguments are interpolated only when used: a required error inside an unused
            // default never fires.
            ("${A:-${U:?boom}}", Ok("a")),
            (
                "${U:-${U2:?boom}}",
                Err("required variable U2 is missing a value: boom"),
            ),
            ("${E:+${U:?boom}}", Ok("")),
            // `$$` inside an argument.
            ("${U:-$$A}", Ok("$A")),
            // Invalid templates name the (sub)template compose-go was interpolating.
            ("${A} ${}", Err("invalid template: \"${A} ${}\"")),
            ("${A:-x} ${}", Err("invalid template: \" ${}\"")),
            ("${U:-${}}", Err("invalid template: \"${}\"")),
            ("${A:-x", Err("invalid template: \"${A:-x\"")),
            ("${A:x}", Err("invalid template: \"${A:x}\"")),
            ("${1A}", Err("invalid template: \"${1A}\"")),
            ("${A\n}", Err("invalid template: \"${A\\n}\"")),
            // `.` does not match a newline: the greedy argument stops at the line's end.
            ("${U:-x\ny}", Err("invalid template: \"${U:-x\\ny}\"")),
            ("${U:-x}\n${U:-y}", Ok("x\ny")),
            // compose-go counts every `{` and skips the character after one, so `{}` inside
            // an argument hides its `}`.
            ("${U:-{}x}y}", Ok("{}x}y")),
            ("${U:-{\"a\":1}}", Ok("{\"a\":1}")),
            // Go's case-insensitive `[a-z]` also matches the Kelvin sign and the long s.
            ("$\u{212A}x", Ok("")),
            ("é$é", Ok("é$é")),
        ];
        for (template, want) in cases {
            let got = sub(template, &set);
            let want = want.map(str::to_string).map_err(str::to_string);
            assert_eq!(got, want, "template {template:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let nest = |n: usize| format!("{}x{}", "${a:-".repeat(n), "}".repeat(n));
        assert_eq!(sub(&nest(MAX_NESTING), &[]), Ok("x".to_string()));
        let deep = nest(100_000);
        let err = substitute(&deep, &|_: &str| None).unwrap_err();
        assert_eq!(err, InterpolationError::TooDeep);
        assert!(err.to_string().contains("nested more than 32 levels"));
        assert_eq!(variables(&deep), Err(InterpolationError::TooDeep));
        assert_eq!(err.category(), Category::Invalid);
    }

    #[test]
    fn long_lines_of_expressions_are_linear_and_iterative() {
        // Each expression's remainder is the rest of the line: compose-go recurses once per
        // expression, we loop. 200k expressions must neither overflow nor crawl.
        let n = 200_000;
        let line = "${A:-x}".repeat(n);
        let started = std::time::Instant::now();
        let out = sub(&line, &[]).unwrap();
        assert_eq!(out, "x".repeat(n));
        let vars = variables(&line).unwrap();
        assert_eq!(vars.len(), 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn output_is_bounded() {
        let big = "y".repeat(1000);
        let env = env(&[("B", &big)]);
        let lookup = |k: &str| env.get(k).cloned();
        let template = "$B".repeat(100);
        assert_eq!(substitute(&template, &lookup).unwrap().len(), 100_000);
        let err = substitute_limited(&template, &lookup, 50_000).unwrap_err();
        assert_eq!(err, InterpolationError::TooLarge { limit: 50_000 });
        assert_eq!(
            err.to_string(),
            "interpolated value larger than 50000 bytes"
        );
    }

    fn var(name: &str, default: &str, presence: &str, required: bool) -> Variable {
        Variable {
            name: name.into(),
            default_value: default.into(),
            presence_value: presence.into(),
            required,
        }
    }

    #[test]
    fn variables_edge_cases() {
        let cases: Vec<(&str, Vec<Variable>)> = vec![
            ("no vars $$A $1 $", vec![]),
            (
                "$A ${B}",
                vec![var("A", "", "", false), var("B", "", "", false)],
            ),
            (
                "${A:-$B}",
                vec![var("A", "$B", "", false), var("B", "", "", false)],
            ),
            // `?` messages are not searched.
            ("${A:?${B}}", vec![var("A", "", "", true)]),
            (
                "${A+${B:-b}}",
                vec![var("A", "", "${B:-b}", false), var("B", "b", "", false)],
            ),
            // One entry per name; the remainder's variables come first, so the earlier text
            // wins here, and a later plain reference wins over an earlier default.
            ("${A:-x} ${A:-y}", vec![var("A", "x", "", false)]),
            ("${A:-x} $A", vec![var("A", "", "", false)]),
            ("${ ", vec![var("", "", "", false)]),
        ];
        for (template, want) in cases {
            assert_eq!(variables(template).unwrap(), want, "template {template:?}");
        }
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\n\t\r\u{7}\u{0}\u{7f}"), r#""\n\t\r\a\x00\x7f""#);
        assert_eq!(go_quote("é ü"), "\"é ü\"");
        assert_eq!(
            go_quote("\u{a0}\u{feff}\u{10ffff}"),
            r#""\u00a0\ufeff\U0010ffff""#
        );
    }

    /// A small deterministic generator: no extra dependency, same cases on every run.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn arbitrary_templates_never_panic() {
        let alphabet: Vec<char> = "${}:-+?aZ_1 \n\\\"'é\u{212A}".chars().collect();
        let env = env(&[("a", "v"), ("Z", "")]);
        let lookup = |k: &str| env.get(k).cloned();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..30_000 {
            let len = (rng.next() % 40) as usize;
            let t: String = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            let result = substitute(&t, &lookup);
            let _ = variables(&t);
            if !t.contains('$') {
                assert_eq!(result, Ok(t.clone()), "{t:?}");
            }
        }
    }
}
