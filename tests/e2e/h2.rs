//! HTTP/2 with prior knowledge (h2c) through the mesh, driven by nghttp and h2load.

use crate::support::*;

const PORT: u16 = 8082;

fn pods() -> Vec<PodSpec> {
    let (py, server, port) = (python(), fixture("h2c_echo_server.py"), PORT.to_string());
    vec![
        client_pod(),
        pod("server", &[&py, &server, "--port", &port]).port(PORT),
    ]
}

/// nghttp (GET, and a 1 MiB POST echoed back) and h2load (200 requests over 4 connections, 10
/// streams each) all succeed, and both proxies counted the requests.
#[test]
fn h2_prior_knowledge_nghttp_and_h2load() {
    require(&[
        ("nghttp", "nghttp2-client"),
        ("h2load", "nghttp2-client"),
        ("sha256sum", "coreutils"),
    ]);
    let tb = up(&pods());
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let base = format!("http://{ip}:{PORT}");
    let client_before = counter(
        &tb,
        "client",
        "weft_request_total",
        &[("direction", "outbound"), ("protocol", "http2")],
    );
    let server_before = counter(
        &tb,
        "server",
        "weft_request_total",
        &[("direction", "inbound"), ("protocol", "http2")],
    );

    let out = exec_ok(
        &tb,
        "client",
        &["nghttp", "-v", "-t", "20", &format!("{base}/hello")],
    );
    assert!(out.contains(":status: 200"), "nghttp GET:\n{out}");
    assert!(
        out.contains("x-pod: server"),
        "nghttp GET not answered by the server:\n{out}"
    );
    assert!(out.contains("hello h2 /hello"), "nghttp GET body:\n{out}");

    let scratch = Scratch::new("h2-post");
    let body = scratch.random_file("body", 1 << 20);
    let echoed = scratch.path("echoed");
    let script = format!(
        "nghttp -t 30 -d '{}' '{base}/upload' > '{}'",
        body.display(),
        echoed.display()
    );
    exec_ok(&tb, "client", &["sh", "-c", &script]);
    assert_eq!(
        sha256_file(&echoed),
        sha256_file(&body),
        "nghttp POST: echoed body differs"
    );

    let out = exec_ok(
        &tb,
        "client",
        &[
            "h2load",
            "-n",
            "200",
            "-c",
            "4",
            "-m",
            "10",
            "-T",
            "30",
            &format!("{base}/load"),
        ],
    );
    assert!(out.contains("200 succeeded, 0 failed"), "h2load:\n{out}");
    assert!(out.contains("status codes: 200 2xx"), "h2load:\n{out}");

    let client_moved = counter(
        &tb,
        "client",
        "weft_request_total",
        &[("direction", "outbound"), ("protocol", "http2")],
    ) - client_before;
    let server_moved = counter(
        &tb,
        "server",
        "weft_request_total",
        &[("direction", "inbound"), ("protocol", "http2")],
    ) - server_before;
    assert!(
        client_moved >= 202.0,
        "client proxy counted {client_moved} of 202 h2 requests"
    );
    assert!(
        server_moved >= 202.0,
        "server proxy counted {server_moved} of 202 h2 requests"
    );
}
