//! Opaque TCP through the mesh with socat: bytes both ways with half-close, and a
//! server-speaks-first protocol whose greeting must not wait on protocol detection forever.

use crate::support::*;

/// Uploads 1 MiB and half-closes: the server (sha256sum) only answers after it saw end of input,
/// so the digest coming back proves data and FIN crossed both proxies while the return direction
/// stayed open. Then the server sends 1 MiB and closes, and the client gets all of it.
#[test]
fn opaque_tcp_both_ways_with_half_close() {
    require(&[("socat", "socat"), ("sha256sum", "coreutils")]);
    let scratch = Scratch::new("opaque");
    let down = scratch.random_file("down", 1 << 20);
    let send_file = format!("OPEN:{},rdonly", down.display());
    let tb = up(&[
        client_pod(),
        pod(
            "server",
            &[
                "socat",
                "TCP-LISTEN:7000,fork,reuseaddr",
                "SYSTEM:sha256sum",
            ],
        )
        .container(
            "sender",
            &["socat", "TCP-LISTEN:7001,fork,reuseaddr", &send_file],
        )
        .port(7000)
        .port(7001),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let before = counter(
        &tb,
        "client",
        "weft_tcp_open_total",
        &[("direction", "outbound"), ("protocol", "opaque")],
    );

    let up_file = scratch.random_file("up", 1 << 20);
    let script = format!(
        "socat -t 20 -T 20 - TCP:{ip}:7000 < '{}'",
        up_file.display()
    );
    let out = exec_ok(&tb, "client", &["timeout", "30", "sh", "-c", &script]);
    let digest = out.split_whitespace().next().unwrap_or_default();
    assert_eq!(
        digest,
        sha256_file(&up_file),
        "server's digest of the upload differs: {out}"
    );

    let got = scratch.path("got");
    let script = format!("socat -u -T 20 TCP:{ip}:7001 - > '{}'", got.display());
    exec_ok(&tb, "client", &["timeout", "30", "sh", "-c", &script]);
    assert_eq!(
        sha256_file(&got),
        sha256_file(&down),
        "download from the server differs"
    );

    let moved = counter(
        &tb,
        "client",
        "weft_tcp_open_total",
        &[("direction", "outbound"), ("protocol", "opaque")],
    ) - before;
    assert!(
        moved >= 2.0,
        "client proxy counted {moved} of 2 opaque connections"
    );
}

/// An SMTP-like server greets first while the client stays silent: the greeting arrives well
/// within a generous bound (detection gives up on the silent client), then the exchange goes on.
/// Port 2525 goes through detection; 2526 is declared opaque and skips it.
#[test]
fn server_speaks_first_greeting_arrives_promptly() {
    require(&[("socat", "socat")]);
    let greeter = |port: u16| {
        [
            "socat".to_string(),
            format!("TCP-LISTEN:{port},fork,reuseaddr"),
            format!("SYSTEM:echo 220 weft-smtp-{port} ready; cat"),
        ]
    };
    let (g1, g2) = (greeter(2525), greeter(2526));
    let g1: Vec<&str> = g1.iter().map(String::as_str).collect();
    let g2: Vec<&str> = g2.iter().map(String::as_str).collect();
    let tb = up(&[
        client_pod().annotate("opaque-ports", "2526"),
        pod("server", &g1)
            .container("opaque", &g2)
            .annotate("opaque-ports", "2526")
            .port(2525)
            .port(2526),
    ]);
    let ip = tb
        .service_ip("server")
        .expect("server has a ClusterIP")
        .to_string();
    let before = counter(
        &tb,
        "client",
        "weft_tcp_open_total",
        &[("direction", "outbound"), ("protocol", "opaque")],
    );
    let (py, raw) = (python(), fixture("raw_tcp_client.py"));

    for port in ["2525", "2526"] {
        let out = exec_ok(
            &tb,
            "client",
            &[
                &py,
                &raw,
                &ip,
                port,
                "--expect-greeting",
                "--send",
                "QUIT\\r\\n",
                "--half-close",
                "--timeout",
                "5",
            ],
        );
        let reply: serde_json::Value =
            serde_json::from_str(out.trim()).expect("raw client prints JSON");
        assert_eq!(
            reply["greeting"],
            format!("220 weft-smtp-{port} ready\n"),
            "port {port}: {out}"
        );
        let greeting_s = reply["greeting_s"].as_f64().unwrap_or(f64::MAX);
        assert!(
            greeting_s < 5.0,
            "port {port}: greeting took {greeting_s} s"
        );
        assert_eq!(
            reply["received"], "QUIT\r\n",
            "port {port}: exchange after the greeting: {out}"
        );
        assert_eq!(
            reply["eof"], true,
            "port {port}: half-close did not end the session: {out}"
        );
    }
    let moved = counter(
        &tb,
        "client",
        "weft_tcp_open_total",
        &[("direction", "outbound"), ("protocol", "opaque")],
    ) - before;
    assert!(
        moved >= 2.0,
        "client proxy counted {moved} of 2 connections"
    );
}
