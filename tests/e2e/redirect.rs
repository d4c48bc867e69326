//! What the iptables rules of `weft-proxy init` send to the proxy and what they leave alone:
//! skipped outbound ports bypass it, and the proxy's own connections are never looped back to it.

use crate::support::*;

/// The client skips outbound port 9090: a request to it works but the client's proxy never sees
/// it (while the server's inbound proxy does, which shows the counters are read right); a request
/// to 8080 on the same server does cross the client's proxy.
#[test]
fn skipped_outbound_port_bypasses_proxy() {
    require(&[("curl", "curl")]);
    let (py, echo) = (python(), fixture("http_echo.py"));
    let tb = up(&[
        client_pod().annotate("skip-outbound-ports", "9090"),
        http_echo_pod("server", 8080)
            .container("skipped", &[&py, &echo, "--port", "9090"])
            .port(9090),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let outbound_conns = |tb: &weft_testbed::Testbed| {
        counter(
            tb,
            "client",
            "weft_tcp_open_total",
            &[("direction", "outbound")],
        )
    };
    let outbound_reqs = |tb: &weft_testbed::Testbed| {
        counter(
            tb,
            "client",
            "weft_request_total",
            &[("direction", "outbound")],
        )
    };
    let inbound_reqs = |tb: &weft_testbed::Testbed| {
        counter(
            tb,
            "server",
            "weft_request_total",
            &[("direction", "inbound")],
        )
    };

    let (conns, reqs, inbound) = (outbound_conns(&tb), outbound_reqs(&tb), inbound_reqs(&tb));
    let out = exec_ok(
        &tb,
        "client",
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "20",
            &format!("http://{ip}:9090/skipped"),
        ],
    );
    assert!(
        out.contains("hello from server GET /skipped"),
        "skipped port answer:\n{out}"
    );
    assert_eq!(
        outbound_conns(&tb),
        conns,
        "a skipped port's connection went through the client proxy"
    );
    assert_eq!(
        outbound_reqs(&tb),
        reqs,
        "a skipped port's request went through the client proxy"
    );
    assert!(
        inbound_reqs(&tb) > inbound,
        "the server's proxy did not see the request to 9090"
    );

    exec_ok(
        &tb,
        "client",
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "20",
            &format!("http://{ip}:8080/meshed"),
        ],
    );
    assert!(
        outbound_reqs(&tb) > reqs,
        "a request to a port that is not skipped bypassed the client proxy"
    );
}

/// Normal traffic never makes a proxy refuse a loop (its own upstream connections are exempt from
/// redirection by UID), while connecting straight to the outbound port is refused and counted.
#[test]
fn proxy_traffic_is_not_looped() {
    require(&[("curl", "curl")]);
    let tb = up(&[client_pod(), http_echo_pod("server", 8080)]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let loops =
        |tb: &weft_testbed::Testbed, pod: &str| counter(tb, pod, "weft_loop_refused_total", &[]);

    for i in 0..5 {
        exec_ok(
            &tb,
            "client",
            &[
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "20",
                &format!("http://{ip}:8080/n{i}"),
            ],
        );
    }
    assert_eq!(
        loops(&tb, "client"),
        0.0,
        "client proxy refused a loop under normal traffic"
    );
    assert_eq!(
        loops(&tb, "server"),
        0.0,
        "server proxy refused a loop under normal traffic"
    );
    assert!(
        counter(
            &tb,
            "client",
            "weft_request_total",
            &[("direction", "outbound")]
        ) >= 5.0,
        "the requests did not cross the client proxy"
    );

    let direct = exec(
        &tb,
        "client",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:4140/",
        ],
    );
    let code = String::from_utf8_lossy(&direct.stdout);
    assert!(
        !direct.status.success() || !code.starts_with('2'),
        "a direct connection to the outbound port was proxied (HTTP {code})"
    );
    assert!(
        loops(&tb, "client") >= 1.0,
        "client proxy did not count the refused loop"
    );
}
