//! HTTP/1.x through two proxies (client outbound, server inbound), driven by curl and a raw client.

use crate::support::*;

const PORT: u16 = 8080;

fn pods() -> Vec<PodSpec> {
    vec![client_pod(), http_echo_pod("server", PORT)]
}

fn outbound(tb: &weft_testbed::Testbed) -> f64 {
    counter(
        tb,
        "client",
        "weft_request_total",
        &[("direction", "outbound")],
    )
}

fn inbound(tb: &weft_testbed::Testbed) -> f64 {
    counter(
        tb,
        "server",
        "weft_request_total",
        &[("direction", "inbound")],
    )
}

/// Bodies of 0 B to 10 MiB, uploaded (fixed length and chunked) and downloaded (chunked), arrive
/// byte for byte, and every request is counted by both proxies.
#[test]
fn http1_get_and_post_bodies_0_to_10mib() {
    require(&[("curl", "curl"), ("sha256sum", "coreutils")]);
    let tb = up(&pods());
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let scratch = Scratch::new("http1-bodies");
    let (out_before, in_before) = (outbound(&tb), inbound(&tb));

    let sizes: [u64; 6] = [0, 1, 1000, 65_536, 1 << 20, 10 << 20];
    let mut requests = 0.0;
    for size in sizes {
        let body = scratch.random_file(&format!("body-{size}"), size);
        let want = sha256_file(&body);
        let out = scratch.path(&format!("out-{size}"));
        let url = format!("http://{ip}:{PORT}/echo");
        for chunked in [false, true] {
            let mut argv = vec!["curl", "-sS", "--fail", "--max-time", "60", "-D", "-"];
            if chunked {
                argv.extend(["-H", "Transfer-Encoding: chunked"]);
            }
            let data = format!("@{}", body.display());
            let out_s = out.display().to_string();
            argv.extend(["-o", &out_s, "--data-binary", &data, &url]);
            let head = exec_ok(&tb, "client", &argv);
            requests += 1.0;
            let what = format!("POST of {size} bytes (chunked: {chunked})");
            assert_eq!(sha256_file(&out), want, "{what}: echoed body differs");
            assert_eq!(
                header(&head, "X-Received-Sha256"),
                Some(want.as_str()),
                "{what}: server got other bytes\n{head}"
            );
            assert_eq!(
                header(&head, "X-Received-Bytes"),
                Some(size.to_string().as_str()),
                "{what}\n{head}"
            );
        }

        let url = format!("http://{ip}:{PORT}/bytes?n={size}");
        let out_s = out.display().to_string();
        let head = exec_ok(
            &tb,
            "client",
            &[
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "60",
                "-D",
                "-",
                "-o",
                &out_s,
                &url,
            ],
        );
        requests += 1.0;
        let got = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        assert_eq!(got, size, "GET of {size} bytes: received {got}\n{head}");
        assert_eq!(
            header(&head, "X-Body-Sha256"),
            Some(sha256_file(&out).as_str()),
            "GET of {size} bytes: body differs\n{head}"
        );
    }

    let (out_moved, in_moved) = (outbound(&tb) - out_before, inbound(&tb) - in_before);
    assert!(
        out_moved >= requests,
        "client proxy counted {out_moved} outbound requests of {requests}"
    );
    assert!(
        in_moved >= requests,
        "server proxy counted {in_moved} inbound requests of {requests}"
    );
}

/// Two requests on one curl connection reach the server on one connection too: both proxies keep
/// the client's connection alive and reuse their pooled upstream connection.
#[test]
fn http1_keepalive_reuses_one_connection() {
    require(&[("curl", "curl")]);
    let tb = up(&pods());
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let url = format!("http://{ip}:{PORT}/echo");
    let before = outbound(&tb);
    let once = [
        "-sS",
        "--fail",
        "--max-time",
        "20",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-w",
        "connects=%{num_connects}\n",
    ];
    let mut argv = vec!["curl"];
    argv.extend(once);
    argv.extend([url.as_str(), "--next"]);
    argv.extend(once);
    argv.push(url.as_str());
    let out = exec_ok(&tb, "client", &argv);

    let connects: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("connects="))
        .collect();
    assert_eq!(
        connects,
        ["1", "0"],
        "curl did not reuse its connection:\n{out}"
    );
    let conn_ids: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("X-Conn-Id"))
        .map(|(_, v)| v.trim())
        .collect();
    assert_eq!(conn_ids.len(), 2, "expected two responses:\n{out}");
    assert_eq!(
        conn_ids[0], conn_ids[1],
        "the server saw two connections for one client connection:\n{out}"
    );
    assert!(
        outbound(&tb) - before >= 2.0,
        "client proxy did not count both requests"
    );
}

/// An HTTP/1.0 client (no keep-alive, fixed-length body) gets its answer through the mesh.
#[test]
fn http1_0_request_is_answered() {
    require(&[("curl", "curl")]);
    let tb = up(&pods());
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let before = outbound(&tb);

    let url = format!("http://{ip}:{PORT}/head");
    let out = exec_ok(
        &tb,
        "client",
        &[
            "curl",
            "-sS",
            "--fail",
            "--http1.0",
            "--max-time",
            "20",
            "-i",
            &url,
        ],
    );
    assert!(
        out.contains("GET /head HTTP/1."),
        "server did not see the request:\n{out}"
    );
    assert!(
        out.to_ascii_lowercase().contains("x-pod: server"),
        "answer is not the server's:\n{out}"
    );

    let url = format!("http://{ip}:{PORT}/echo");
    let out = exec_ok(
        &tb,
        "client",
        &[
            "curl",
            "-sS",
            "--fail",
            "--http1.0",
            "--max-time",
            "20",
            "--data-binary",
            "hello from HTTP/1.0",
            &url,
        ],
    );
    assert_eq!(out, "hello from HTTP/1.0");
    assert!(
        outbound(&tb) - before >= 2.0,
        "client proxy did not count the HTTP/1.0 requests"
    );
}

/// Header names keep their case both ways: the app sees `X-MiXeD-CaSe`, the client sees
/// `X-ReSpOnSe-CaSe`, exactly as sent. Only between proxies without identity (plaintext hop):
/// over mTLS, HTTP/1 rides HTTP/2, whose header names are lowercase (tests/e2e/mtls.rs).
#[test]
fn http1_header_case_preserved() {
    require(&[("curl", "curl")]);
    let opts = weft_testbed::TestbedOptions {
        control_plane: weft_testbed::ControlPlane::Discovery,
        ..Default::default()
    };
    let tb = weft_testbed::Testbed::up(&manifests(&pods()), opts).expect("testbed up");
    wait_listening(&tb, "server", PORT);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let (out_before, in_before) = (outbound(&tb), inbound(&tb));
    let url = format!("http://{ip}:{PORT}/head");
    let out = exec_ok(
        &tb,
        "client",
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "20",
            "-i",
            "-H",
            "X-MiXeD-CaSe: Value",
            &url,
        ],
    );
    assert!(
        out.contains("\r\nX-MiXeD-CaSe: Value\r\n"),
        "request header case lost on the way in:\n{out}"
    );
    assert!(
        out.contains("\r\nX-ReSpOnSe-CaSe: preserved\r\n"),
        "response header case lost on the way out:\n{out}"
    );
    assert!(
        outbound(&tb) > out_before,
        "the request did not cross the client proxy"
    );
    assert!(
        inbound(&tb) > in_before,
        "the request did not cross the server proxy"
    );
}

/// Malformed requests get 400 from the proxy (not the app) and the connection is closed.
#[test]
fn http1_malformed_request_gets_400_and_close() {
    require(&[]);
    let tb = up(&pods());
    let ip = tb
        .service_ip("server")
        .expect("server has a ClusterIP")
        .to_string();
    let (py, raw) = (python(), fixture("raw_tcp_client.py"));
    let port = PORT.to_string();
    let cases = [
        "GET /echo HTTP/1.1\\r\\nHost: server\\r\\nThis is not a header\\r\\n\\r\\n",
        "POST /echo HTTP/1.1\\r\\nHost: server\\r\\nContent-Length: ten\\r\\n\\r\\n",
    ];
    for request in cases {
        let out = exec_ok(
            &tb,
            "client",
            &[&py, &raw, &ip, &port, "--send", request, "--timeout", "10"],
        );
        let reply: serde_json::Value =
            serde_json::from_str(out.trim()).expect("raw client prints JSON");
        let received = reply["received"].as_str().unwrap_or_default();
        assert!(
            received.starts_with("HTTP/1.1 400"),
            "{request}: expected 400, got:\n{received}"
        );
        assert!(
            !received.contains("X-Conn-Id"),
            "{request}: the app answered, not the proxy:\n{received}"
        );
        assert_eq!(
            reply["eof"], true,
            "{request}: connection left open after 400"
        );
    }
}
