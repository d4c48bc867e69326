//! Idle timeouts in meshed pods, set by the client pod's annotations (1 s each): an idle opaque
//! TCP connection is closed while a busy one lives on, an HTTP exchange whose server stops
//! sending is ended (504 before the response head, a broken body after), and a client dribbling
//! request headers is cut off. The peers are `tests/fixtures/idle_peers.py`, plus socat and
//! curl.

use crate::support::*;

const STALL_PORT: u16 = 8080;
const ECHO_PORT: u16 = 7000;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn timeouts(tb: &weft_testbed::Testbed, kind: &str) -> f64 {
    counter(
        tb,
        "client",
        "weft_timeout_total",
        &[("direction", "outbound"), ("kind", kind)],
    )
}

#[test]
fn idle_connections_stalled_streams_and_slow_headers_are_cut_off() {
    require(&[("socat", "socat"), ("curl", "curl")]);
    let (py, peers) = (python(), fixture("idle_peers.py"));
    let stall_port = STALL_PORT.to_string();
    let tb = up(&[
        client_pod()
            .annotate("idle-timeout", "1s")
            .annotate("stream-idle-timeout", "1s")
            .annotate("header-read-timeout", "1s")
            .annotate("opaque-ports", &ECHO_PORT.to_string()),
        pod(
            "server",
            &[&py, &peers, "serve-stall", "--port", &stall_port],
        )
        .container(
            "echo",
            &["socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"],
        )
        .annotate("opaque-ports", &ECHO_PORT.to_string())
        .port(STALL_PORT)
        .port(ECHO_PORT),
    ]);
    let ip = tb
        .service_ip("server")
        .expect("server has a ClusterIP")
        .to_string();

    // Opaque TCP: the silent connection is closed after about 1 s; the one that sends every
    // 300 ms for 3 s (three idle timeouts) keeps working.
    let out = exec_ok(
        &tb,
        "client",
        &[&py, &peers, "opaque", &ip, &ECHO_PORT.to_string()],
    );
    eprintln!("opaque: {}", out.trim());
    let opaque = json(&out);
    assert_eq!(opaque["silent_closed"], true, "{out}");
    assert!(
        opaque["silent_closed_after_s"].as_f64().unwrap_or(0.0) >= 0.9,
        "closed before the idle timeout: {out}"
    );
    assert_eq!(opaque["active_rounds"], 10, "{out}");
    assert!(opaque["active_error"].is_null(), "{out}");
    assert!(timeouts(&tb, "idle") >= 1.0);

    // A response body that stops after its first chunk: curl gets "first", then the broken
    // body (exit 18: transfer closed with outstanding read data).
    let url = |path: &str| format!("http://{ip}:{STALL_PORT}{path}");
    let out = exec(
        &tb,
        "client",
        &["curl", "-sS", "--max-time", "20", &url("/stall-body")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "first", "{stderr}");
    assert!(
        !out.status.success() && out.status.code() != Some(28),
        "curl should see a broken body, not its own timeout: {:?} {stderr}",
        out.status
    );

    // No response head at all: 504 naming the cause.
    let head = exec_ok(
        &tb,
        "client",
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &url("/stall-head"),
        ],
    );
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert_eq!(
        header(&head, "weft-error"),
        Some("stream idle timeout"),
        "{head}"
    );
    assert_eq!(timeouts(&tb, "stream_idle"), 2.0);

    // Slowloris: a header line every 200 ms, never the end of the head.
    let out = exec_ok(
        &tb,
        "client",
        &[&py, &peers, "dribble", &ip, &STALL_PORT.to_string()],
    );
    eprintln!("dribble: {}", out.trim());
    let dribble = json(&out);
    assert_eq!(dribble["closed"], true, "{out}");
    assert!(
        dribble["after_s"].as_f64().unwrap_or(0.0) >= 0.9,
        "closed before the header timeout: {out}"
    );
    assert_eq!(timeouts(&tb, "header_read"), 1.0);
    assert!(
        logs(&tb, "client", "weft-proxy").contains("WEFT_HEADER_READ_TIMEOUT"),
        "the proxy logs why it closed the connection"
    );
}
