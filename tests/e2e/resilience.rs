//! Timeouts, retries, limits and the inbound rate limit in real pods, set by pod annotations the
//! injector turns into the proxy's settings, against the echo fixture's /fault route (fail the
//! first N requests of a key, hang, ...). curl in the client pod is the app.

use crate::support::*;

const PORT: u16 = 8080;

/// `curl` in `pod`: the response head (with the status line) and the status code.
fn curl(tb: &weft_testbed::Testbed, pod: &str, args: &[&str], url: &str) -> (String, u16) {
    let mut argv = vec![
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-D",
        "-",
        "-o",
        "/dev/null",
    ];
    argv.extend(args);
    argv.push(url);
    let head = exec_ok(tb, pod, &argv);
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line from {url}:\n{head}"));
    (head, status)
}

#[test]
fn retries_and_the_request_timeout_follow_the_pod_annotations() {
    require(&[("curl", "curl")]);
    let tb = up(&[
        client_pod().annotate("timeout", "1s"),
        http_echo_pod("server", PORT),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let url = |q: &str| format!("http://{ip}:{PORT}/fault?{q}");

    // The first two GETs of this key fail with 503; the proxy's two default retries hide them.
    let (head, status) = curl(&tb, "client", &[], &url("fail_first=2&key=get"));
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "X-Fault-Count"), Some("3"), "{head}");

    // A POST is not retried by default: the client sees the 503.
    let (head, status) = curl(
        &tb,
        "client",
        &["-X", "POST"],
        &url("fail_first=1&key=post"),
    );
    assert_eq!(status, 503, "{head}");

    // A hanging server: the request timeout answers 504 and names itself.
    let (head, status) = curl(&tb, "client", &[], &url("hang=1"));
    assert_eq!(status, 504, "{head}");
    assert_eq!(
        header(&head, "weft-error"),
        Some("request timeout"),
        "{head}"
    );

    let retries = counter(
        &tb,
        "client",
        "weft_retry_total",
        &[("direction", "outbound")],
    );
    assert_eq!(retries, 2.0);
    let timeouts = counter(
        &tb,
        "client",
        "weft_timeout_total",
        &[("direction", "outbound"), ("kind", "request")],
    );
    assert_eq!(timeouts, 1.0);
}

#[test]
fn non_idempotent_retries_and_limits_follow_the_pod_annotations() {
    require(&[("curl", "curl"), ("sh", "dash")]);
    let tb = up(&[
        client_pod()
            .annotate("retry-non-idempotent", "true")
            .annotate("max-in-flight", "1")
            .annotate("max-pending", "0"),
        http_echo_pod("server", PORT),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");

    let url = format!("http://{ip}:{PORT}/fault?fail_first=1&key=post");
    let (head, status) = curl(&tb, "client", &["-X", "POST", "--data", "order"], &url);
    assert_eq!(
        status, 200,
        "POST retried as the annotation allows:\n{head}"
    );

    // One slow request holds the only in-flight slot; the next is refused at once.
    let script = format!(
        "curl -s -o /dev/null -w 'slow=%{{http_code}}\\n' http://{ip}:{PORT}/slow?ms=3000 & \
         sleep 1; \
         curl -s -D - -o /dev/null -w 'fast_secs=%{{time_total}}\\n' http://{ip}:{PORT}/fault; \
         wait"
    );
    let out = exec_ok(&tb, "client", &["sh", "-c", &script]);
    assert!(out.contains("slow=200"), "{out}");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert_eq!(header(&out, "weft-error"), Some("overloaded"), "{out}");
    let overloaded = counter(
        &tb,
        "client",
        "weft_overload_rejected_total",
        &[("direction", "outbound"), ("limit", "in_flight")],
    );
    assert_eq!(overloaded, 1.0);
}

#[test]
fn inbound_rate_limit_answers_429() {
    require(&[("curl", "curl")]);
    let tb = up(&[
        client_pod(),
        http_echo_pod("server", PORT).annotate("inbound-rate-limit", "3/m"),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let url = format!("http://{ip}:{PORT}/fault");
    let statuses: Vec<u16> = (0..5).map(|_| curl(&tb, "client", &[], &url).1).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let (head, _) = curl(&tb, "client", &[], &url);
    assert_eq!(header(&head, "weft-error"), Some("rate limited"), "{head}");
    let limited = counter(
        &tb,
        "server",
        "weft_rate_limited_total",
        &[("direction", "inbound"), ("scope", "overall")],
    );
    assert_eq!(limited, 3.0);
}
