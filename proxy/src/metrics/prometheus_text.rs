//! The Prometheus 0.0.4 text format, derived from prometheus-client's OpenMetrics output, for
//! scrapers and tools that do not negotiate OpenMetrics (promtool, curl, older Prometheus).
//! The two differ in three ways: a counter's family is named with its `_total` suffix,
//! there are no `# UNIT` lines, and there is no `# EOF` terminator.

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn from_openmetrics(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 256);
    // HELP precedes TYPE in prometheus-client's output; hold it until the type is known.
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, pending_help.take(), "");
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            match pending_help.take() {
                Some((help_name, text)) if help_name == name => {
                    flush_help(&mut out, Some((name, text)), suffix);
                }
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
        flush_help(&mut out, pending_help.take(), "");
        out.push_str(line);
        out.push('\n');
    }
    flush_help(&mut out, pending_help, "");
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, suffix: &str) {
    if let Some((name, text)) = help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push_str(suffix);
        out.push(' ');
        out.push_str(text);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_and_eof_goes() {
        let om = "# HELP weft_x Things.\n# TYPE weft_x counter\nweft_x_total{a=\"b\"} 1\n# EOF\n";
        assert_eq!(
            from_openmetrics(om),
            "# HELP weft_x_total Things.\n# TYPE weft_x_total counter\nweft_x_total{a=\"b\"} 1\n"
        );
    }

    #[test]
    fn gauges_histograms_and_units_pass() {
        let om = "# HELP weft_g Open.\n# TYPE weft_g gauge\nweft_g 3\n\
                  # HELP weft_l_seconds Latency.\n# TYPE weft_l_seconds histogram\n# UNIT weft_l_seconds seconds\n\
                  weft_l_seconds_sum 0.5\nweft_l_seconds_count 1\nweft_l_seconds_bucket{le=\"+Inf\"} 1\n# EOF\n";
        let text = from_openmetrics(om);
        assert!(text.contains("# TYPE weft_g gauge\nweft_g 3\n"), "{text}");
        assert!(
            text.contains("# HELP weft_l_seconds Latency.\n# TYPE weft_l_seconds histogram\n"),
            "{text}"
        );
        assert!(!text.contains("UNIT"), "{text}");
        assert!(!text.contains("EOF"), "{text}");
    }
}
