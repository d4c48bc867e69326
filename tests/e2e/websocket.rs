//! A WebSocket session (HTTP/1.1 Upgrade, then frames both ways) through the mesh.

use crate::support::*;

const PORT: u16 = 8765;

#[test]
fn websocket_echo() {
    require(&[]);
    let (py, server, port) = (python(), fixture("ws_echo_server.py"), PORT.to_string());
    let tb = up(&[
        client_pod(),
        pod("server", &[&py, &server, "--port", &port]).port(PORT),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let before = counter(
        &tb,
        "client",
        "weft_request_total",
        &[("direction", "outbound")],
    );

    let client = fixture("ws_echo_client.py");
    let url = format!("ws://{ip}:{PORT}/echo");
    let out = exec_ok(
        &tb,
        "client",
        &[&py, &client, &url, "--rounds", "10", "--timeout", "20"],
    );
    assert!(
        out.contains("websocket ok rounds=10"),
        "websocket session:\n{out}"
    );

    let moved = counter(
        &tb,
        "client",
        "weft_request_total",
        &[("direction", "outbound")],
    ) - before;
    assert!(moved >= 1.0, "client proxy did not see the Upgrade request");
}
