//! Reading Prometheus text exposition: enough to assert on counters in tests.

/// Sum of the samples of metric `name` whose labels include every pair in `labels`; None when no
/// sample matches. `name` is matched exactly (ask for `x_total`, or `x_bucket` with an `le`).
pub fn metric_value(metrics_text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in metrics_text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((sample_name, sample_labels, value)) = parse_sample(line) else {
            continue;
        };
        if sample_name != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| sample_labels.iter().any(|(sk, sv)| sk == k && sv == v))
        {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// Label pairs of one sample, in exposition order.
type Labels = Vec<(String, String)>;

/// `name{a="b",c="d"} 1.5 [timestamp]` -> (name, labels, value).
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
        let (labels, after) = parse_labels(body)?;
        (labels, after)
    } else {
        (Vec::new(), rest)
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// Parses label pairs up to the closing brace, honouring `\"`, `\\` and `\n` escapes.
fn parse_labels(body: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    let mut rest = body.trim_start();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        let mut chars = rest[eq + 1..].trim_start().char_indices();
        let value_start = rest.len() - rest[eq + 1..].trim_start().len();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in chars {
            if escaped {
                value.push(if c == 'n' { '\n' } else { c });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else {
                value.push(c);
            }
        }
        labels.push((key, value));
        rest = &rest[value_start + end? + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP weft_requests_total Requests.
# TYPE weft_requests_total counter
weft_requests_total{direction="outbound",status_code="200",upstream="catalog"} 3
weft_requests_total{direction="outbound",status_code="503",upstream="catalog"} 1
weft_requests_total{direction="inbound",status_code="200",upstream="x,\"y\"}"} 7
weft_connections_open 2
weft_latency_bucket{le="+Inf"} 11 1700000000000
"#;

    #[test]
    fn sums_matching_samples() {
        assert_eq!(metric_value(TEXT, "weft_requests_total", &[]), Some(11.0));
        assert_eq!(
            metric_value(TEXT, "weft_requests_total", &[("direction", "outbound")]),
            Some(4.0)
        );
        assert_eq!(
            metric_value(
                TEXT,
                "weft_requests_total",
                &[("direction", "outbound"), ("status_code", "503")]
            ),
            Some(1.0)
        );
        assert_eq!(
            metric_value(TEXT, "weft_requests_total", &[("upstream", "x,\"y\"}")]),
            Some(7.0)
        );
    }

    #[test]
    fn unlabelled_and_timestamped_samples() {
        assert_eq!(metric_value(TEXT, "weft_connections_open", &[]), Some(2.0));
        assert_eq!(
            metric_value(TEXT, "weft_latency_bucket", &[("le", "+Inf")]),
            Some(11.0)
        );
    }

    #[test]
    fn no_match_is_none() {
        assert_eq!(metric_value(TEXT, "weft_requests", &[]), None);
        assert_eq!(
            metric_value(TEXT, "weft_requests_total", &[("direction", "sideways")]),
            None
        );
    }
}
