//! gRPC (Python grpcio) through the mesh: a unary call with trailers and a bidirectional stream
//! driven ping-pong, so a proxy that buffered either direction would stall it.

use crate::support::*;

const PORT: u16 = 50051;

#[test]
fn grpc_unary_and_bidi_streaming() {
    require(&[]);
    let (py, server, port) = (python(), fixture("grpc_echo_server.py"), PORT.to_string());
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
    let server_before = counter(
        &tb,
        "server",
        "weft_request_total",
        &[("direction", "inbound"), ("protocol", "http2")],
    );

    let client = fixture("grpc_echo_client.py");
    let out = exec_ok(
        &tb,
        "client",
        &[
            &py,
            &client,
            &format!("{ip}:{PORT}"),
            "--rounds",
            "20",
            "--timeout",
            "20",
        ],
    );
    assert!(
        out.contains("unary ok") && out.contains("pod=server"),
        "unary call:\n{out}"
    );
    assert!(
        out.contains("bidi ok rounds=20"),
        "bidirectional stream:\n{out}"
    );

    let moved = counter(
        &tb,
        "client",
        "weft_request_total",
        &[("direction", "outbound")],
    ) - before;
    let server_moved = counter(
        &tb,
        "server",
        "weft_request_total",
        &[("direction", "inbound"), ("protocol", "http2")],
    ) - server_before;
    assert!(moved >= 2.0, "client proxy counted {moved} of 2 gRPC calls");
    assert!(
        server_moved >= 2.0,
        "server proxy counted {server_moved} of 2 gRPC calls"
    );
}
