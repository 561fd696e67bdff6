//! prometheus-client writes OpenMetrics text; `/metrics` serves the Prometheus text format
//! 0.0.4, which every Prometheus and `promtool check metrics` read.
//!
//! The two differ, for what we emit, in three places only:
//! - a counter's HELP and TYPE lines name the family without `_total` in OpenMetrics
//!   (`# TYPE x counter`, samples `x_total`); Prometheus text names it like the samples
//!   (`# TYPE x_total counter`), or the parser takes the samples for another, untyped family;
//! - `# UNIT` lines and the final `# EOF` exist only in OpenMetrics;
//! - nothing else we use (no info or gauge-histogram types, no exemplars, no timestamps).
//!
//! Sample lines, label escaping (`\\`, `\"`, `\n`) and number formatting are the same.

/// The content type of [`to_prometheus_text`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites an OpenMetrics text exposition (as prometheus-client encodes it) into the
/// Prometheus text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 256);
    // A HELP line waits for its TYPE line: only the TYPE says whether the name gets `_total`.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), "");
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            // prometheus-client appends `_total` to every counter sample.
            let suffix = if kind == "counter" { "_total" } else { "" };
            match help.take() {
                Some(h) if h.0 == name => flush_help(&mut out, Some(h), suffix),
                other => flush_help(&mut out, other, ""),
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(suffix);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        flush_help(&mut out, help.take(), "");
        out.push_str(line);
        out.push('\n');
    }
    flush_help(&mut out, help, "");
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, suffix: &str) {
    if let Some((name, text)) = help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push_str(suffix);
        out.push(' ');
        // Prometheus text escapes backslash and newline in HELP; OpenMetrics writes the
        // text raw from prometheus-client (our help texts have neither, but be exact).
        for c in text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_like_their_samples_and_openmetrics_lines_go() {
        let om = "\
# HELP a_runs Runs.
# TYPE a_runs counter
a_runs_total{x=\"1\"} 2
# HELP b_seconds Took.
# TYPE b_seconds histogram
# UNIT b_seconds seconds
b_seconds_sum 0.5
b_seconds_count 1
b_seconds_bucket{le=\"+Inf\"} 1
# HELP c Level.
# TYPE c gauge
c{y=\"a\\\"b\\\\c\\nd\"} 1.5
# EOF
";
        assert_eq!(
            to_prometheus_text(om),
            "\
# HELP a_runs_total Runs.
# TYPE a_runs_total counter
a_runs_total{x=\"1\"} 2
# HELP b_seconds Took.
# TYPE b_seconds histogram
b_seconds_sum 0.5
b_seconds_count 1
b_seconds_bucket{le=\"+Inf\"} 1
# HELP c Level.
# TYPE c gauge
c{y=\"a\\\"b\\\\c\\nd\"} 1.5
"
        );
    }

    #[test]
    fn help_without_type_is_kept() {
        assert_eq!(to_prometheus_text("# HELP x a\\b\n"), "# HELP x a\\\\b\n");
        assert_eq!(
            to_prometheus_text("# HELP x a\n# TYPE y counter\n"),
            "# HELP x a\n# TYPE y_total counter\n"
        );
    }
}
