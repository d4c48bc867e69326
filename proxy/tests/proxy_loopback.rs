//! The real `weft-proxy` binary in a throwaway network namespace: iptables REDIRECTs connections
//! to 127.0.0.2 (outbound) and 127.0.0.3 (inbound) to it, it runs as UID 2102 (exempt from the
//! rules), and clients and backends are real sockets on loopback. Needs root, `ip`, iptables and
//! setpriv.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
fn http1_get_post_keep_alive_and_counters() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.2:8080").await, false, Duration::ZERO);
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = h1_client("127.0.0.2:8080").await;

        let get = http::Request::get("/hello")
            .header("host", "app")
            .body(Full::default())
            .unwrap();
        let resp = within("GET", client.send_request(get)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"GET /hello\n");

        // 10 MiB up and back on the same (keep-alive) client connection.
        let big = Bytes::from(vec![b'x'; 10 << 20]);
        let post = http::Request::post("/upload")
            .header("host", "app")
            .body(Full::new(big.clone()))
            .unwrap();
        client.ready().await.unwrap();
        let resp = within("POST", client.send_request(post)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = within("POST body", resp.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body.len(), "POST /upload\n".len() + big.len());
        assert!(body.starts_with(b"POST /upload\n"));

        let m = metrics().await;
        let up = r#"direction="outbound",upstream="127.0.0.2:8080""#;
        assert_eq!(
            sample(
                &m,
                &format!("weft_request_total{{{up},protocol=\"http1\"}}")
            ),
            Some(2.0),
            "{m}"
        );
        assert_eq!(
            sample(
                &m,
                &format!("weft_response_total{{{up},status_code=\"200\",protocol=\"http1\",tls=\"false\"}}")
            ),
            Some(2.0),
            "{m}"
        );
        assert_eq!(
            sample(&m, &format!("weft_response_latency_seconds_count{{{up}}}")),
            Some(2.0),
            "{m}"
        );
        assert_eq!(
            sample(
                &m,
                r#"weft_tcp_open_total{direction="outbound",protocol="http1"}"#
            ),
            Some(1.0),
            "one client connection carried both requests: {m}"
        );
        assert_eq!(
            sample(
                &m,
                r#"weft_detect_total{direction="outbound",protocol="http1",outcome="detected"}"#
            ),
            Some(1.0),
            "{m}"
        );
        let read = sample(&m, r#"weft_tcp_read_bytes_total{direction="outbound"}"#).unwrap();
        assert!(read > (10 << 20) as f64, "{m}");
    });
}

#[test]
fn http1_forwards_header_case_and_adds_nothing() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        // A raw backend that answers with the exact request head it received.
        let listener = listen("127.0.0.2:8081").await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                sock.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend-Case: Kept\r\n\r\n",
                head.len()
            );
            sock.write_all(reply.as_bytes()).await.unwrap();
            sock.write_all(&head).await.unwrap();
        });
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = TcpStream::connect("127.0.0.2:8081").await.unwrap();
        let request =
            "GET /case HTTP/1.1\r\nHost: app\r\nX-Mixed-Case: Yes\r\nconnection: close\r\n\r\n";
        client.write_all(request.as_bytes()).await.unwrap();
        let reply = String::from_utf8(read_to_end(&mut client).await.unwrap()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("X-Backend-Case: Kept\r\n"), "{reply}");
        let (_, forwarded) = reply.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            forwarded,
            "GET /case HTTP/1.1\r\nHost: app\r\nX-Mixed-Case: Yes\r\n\r\n"
        );
    });
}

#[test]
fn dead_upstream_is_502_with_cause() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = h1_client("127.0.0.2:8099").await;
        let req = http::Request::get("/").header("host", "app").body(Full::default()).unwrap();
        let resp = within("GET", client.send_request(req)).await.unwrap();
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.headers()["weft-error"], "upstream refused connection");
        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_response_total{direction="outbound",upstream="127.0.0.2:8099",status_code="502",protocol="http1",tls="false"}"#
            ),
            Some(1.0),
            "{m}"
        );
    });
}

#[test]
fn malformed_http_gets_400_and_is_closed() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.2:8080").await, false, Duration::ZERO);
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = TcpStream::connect("127.0.0.2:8080").await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nthis is not a header\r\n\r\n")
            .await
            .unwrap();
        // read_to_end returning proves the proxy closed the connection.
        let reply = String::from_utf8(read_to_end(&mut client).await.unwrap()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    });
}

#[test]
fn h2c_prior_knowledge_with_trailers() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.2:8082").await, true, Duration::ZERO);
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = h2_client("127.0.0.2:8082").await;
        for i in 0..3 {
            let req = http::Request::post(format!("http://app/rpc/{i}"))
                .body(Full::new(Bytes::from_static(b"payload")))
                .unwrap();
            let resp = within("h2 request", client.send_request(req)).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let collected = resp.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["x-trailer"], "done");
            assert_eq!(collected.to_bytes(), format!("POST /rpc/{i}\npayload"));
        }
        let m = metrics().await;
        assert_eq!(
            sample(&m, r#"weft_request_total{direction="outbound",upstream="127.0.0.2:8082",protocol="http2"}"#),
            Some(3.0),
            "{m}"
        );
    });
}

#[test]
fn opaque_tcp_both_ways_with_half_close() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let listener = listen("127.0.0.2:7000").await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            // Ends only if the proxy passes the client's half-close on.
            sock.read_to_end(&mut got).await.unwrap();
            sock.write_all(b"got:").await.unwrap();
            sock.write_all(&got).await.unwrap();
        });
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = TcpStream::connect("127.0.0.2:7000").await.unwrap();
        client.write_all(b"\x00binary\xffpayload").await.unwrap();
        client.shutdown().await.unwrap();
        let reply = read_to_end(&mut client).await.unwrap();
        assert_eq!(reply, b"got:\x00binary\xffpayload");
        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_detect_total{direction="outbound",protocol="opaque",outcome="detected"}"#
            ),
            Some(1.0),
            "{m}"
        );
    });
}

/// A server that greets first (SMTP, MySQL): once the detection window passes without client
/// bytes, the connection goes opaque and the greeting arrives.
#[test]
fn server_speaks_first_is_prompt() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        for port in [2525u16, 3306] {
            let listener = listen(&addr("127.0.0.2", port)).await;
            tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                sock.write_all(b"220 hello\r\n").await.unwrap();
                let mut buf = [0u8; 4];
                sock.read_exact(&mut buf).await.unwrap();
                sock.write_all(&buf).await.unwrap();
            });
        }
        let _proxy = Proxy::start(
            &name,
            &[
                ("WEFT_DETECT_TIMEOUT", "300ms"),
                ("WEFT_OPAQUE_PORTS", "3306"),
            ],
        )
        .await;

        // Not an opaque port: the greeting waits for the 300ms window, then flows.
        let start = Instant::now();
        let mut client = TcpStream::connect("127.0.0.2:2525").await.unwrap();
        let mut greeting = [0u8; 11];
        within("greeting", client.read_exact(&mut greeting))
            .await
            .unwrap();
        assert_eq!(&greeting, b"220 hello\r\n");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        client.write_all(b"QUIT").await.unwrap();
        let mut echo = [0u8; 4];
        within("echo", client.read_exact(&mut echo)).await.unwrap();
        assert_eq!(&echo, b"QUIT");

        // An opaque port skips detection entirely.
        let mut client = TcpStream::connect("127.0.0.2:3306").await.unwrap();
        within("greeting", client.read_exact(&mut greeting))
            .await
            .unwrap();
        assert_eq!(&greeting, b"220 hello\r\n");

        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_detect_total{direction="outbound",protocol="opaque",outcome="timeout"}"#
            ),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            sample(
                &m,
                r#"weft_detect_total{direction="outbound",protocol="opaque",outcome="opaque_port"}"#
            ),
            Some(1.0),
            "{m}"
        );
    });
}

#[test]
fn connection_to_the_proxy_itself_is_refused() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let _proxy = Proxy::start(&name, &[]).await;
        // Straight to the outbound listener: nothing redirected it.
        let mut client = TcpStream::connect("127.0.0.1:4140").await.unwrap();
        let _ = client
            .write_all(b"GET / HTTP/1.1\r\nHost: loop\r\n\r\n")
            .await;
        let reply = read_to_end(&mut client).await.unwrap_or_default();
        assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
        // Redirected, but addressed to the inbound listener's port: also the proxy itself.
        let mut client = TcpStream::connect("127.0.0.2:4143").await.unwrap();
        let reply = read_to_end(&mut client).await.unwrap_or_default();
        assert!(reply.is_empty());
        let m = metrics().await;
        assert_eq!(
            sample(&m, r#"weft_loop_refused_total{direction="outbound"}"#),
            Some(2.0),
            "{m}"
        );
    });
}

#[test]
fn inbound_side_forwards_to_the_original_destination() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.3:8080").await, false, Duration::ZERO);
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = h1_client("127.0.0.3:8080").await;
        let req = http::Request::get("/in").header("host", "app").body(Full::default()).unwrap();
        let resp = within("GET", client.send_request(req)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let m = metrics().await;
        assert_eq!(
            sample(&m, r#"weft_request_total{direction="inbound",upstream="127.0.0.3:8080",protocol="http1",tls="false"}"#),
            Some(1.0),
            "{m}"
        );
    });
}

#[test]
fn upgrade_joins_both_connections() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let listener = listen("127.0.0.2:8083").await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                sock.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.contains("Upgrade: echo\r\n"), "{head}");
            sock.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
            let mut buf = [0u8; 4];
            sock.read_exact(&mut buf).await.unwrap();
            sock.write_all(&buf).await.unwrap();
        });
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = TcpStream::connect("127.0.0.2:8083").await.unwrap();
        client
            .write_all(
                b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            within("101", client.read_exact(&mut byte)).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        client.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        within("echo", client.read_exact(&mut echo)).await.unwrap();
        assert_eq!(&echo, b"ping");
    });
}

#[test]
fn sigterm_drains_a_slow_request() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(
            listen("127.0.0.2:8084").await,
            false,
            Duration::from_millis(1500),
        );
        // As a native sidecar runs it: the kubelet sends SIGTERM only once the app is gone.
        let mut proxy = Proxy::start(&name, &[("WEFT_SHUTDOWN_QUIET_PERIOD", "0s")]).await;
        let mut client = h1_client("127.0.0.2:8084").await;
        let req = http::Request::get("/slow")
            .header("host", "app")
            .body(Full::default())
            .unwrap();
        let in_flight = tokio::spawn(client.send_request(req));
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.sigterm();
        tokio::time::sleep(Duration::from_millis(200)).await;

        let (status, _) = admin_get("/ready").await.unwrap();
        assert_eq!(status, 503, "/ready while draining");
        assert!(
            TcpStream::connect("127.0.0.2:8084").await.is_err(),
            "new connections must be refused while draining"
        );

        let resp = within("slow response", in_flight).await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"GET /slow\n");
        assert_eq!(proxy.wait_exit().await, Some(0));
    });
}

#[test]
fn invalid_setting_stops_start_up_naming_it() {
    let out = std::process::Command::new(BIN)
        .env("WEFT_DETECT_TIMEOUT", "abc")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(r#"invalid WEFT_DETECT_TIMEOUT="abc": expected a duration"#),
        "{stderr}"
    );
}

/// Reads one request head (through the blank line) from a raw backend socket.
async fn read_head(sock: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        within("request head", sock.read_exact(&mut byte))
            .await
            .unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn http10_stays_http10() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let listener = listen("127.0.0.2:8085").await;
        let backend = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let head = read_head(&mut sock).await;
            sock.write_all(b"HTTP/1.0 200 OK\r\n\r\nold school")
                .await
                .unwrap();
            head
        });
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = TcpStream::connect("127.0.0.2:8085").await.unwrap();
        client
            .write_all(b"GET /old HTTP/1.0\r\nHost: app\r\n\r\n")
            .await
            .unwrap();
        let reply = String::from_utf8(read_to_end(&mut client).await.unwrap()).unwrap();
        assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nold school"), "{reply}");
        let head = within("backend", backend).await.unwrap();
        assert!(
            head.starts_with("GET /old HTTP/1.0\r\nHost: app\r\n"),
            "{head}"
        );
    });
}

#[test]
fn chunked_request_body_is_streamed() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.2:8086").await, false, Duration::ZERO);
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = TcpStream::connect("127.0.0.2:8086").await.unwrap();
        client
            .write_all(b"POST /chunks HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        for part in ["5\r\nhello\r\n", "6\r\n world\r\n", "0\r\n\r\n"] {
            client.write_all(part.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reply = String::from_utf8(read_to_end(&mut client).await.unwrap()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("POST /chunks\nhello world"), "{reply}");
    });
}

#[test]
fn oversize_headers_get_431() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.2:8087").await, false, Duration::ZERO);
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = TcpStream::connect("127.0.0.2:8087").await.unwrap();
        let huge = "a".repeat(1 << 20);
        let request = format!("GET / HTTP/1.1\r\nHost: app\r\nX-Huge: {huge}\r\n\r\n");
        // The proxy may close before taking all of it; what matters is what it answered.
        let _ = client.write_all(request.as_bytes()).await;
        let mut reply = vec![0u8; 64];
        let n = within("reply", client.read(&mut reply)).await.unwrap_or(0);
        let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    });
}

#[test]
fn connect_tunnel_is_forwarded() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        // The original destination is itself an HTTP proxy that accepts CONNECT.
        let listener = listen("127.0.0.2:3128").await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let head = read_head(&mut sock).await;
            assert!(
                head.starts_with("CONNECT db.example:5432 HTTP/1.1\r\n"),
                "{head}"
            );
            sock.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 6];
            sock.read_exact(&mut buf).await.unwrap();
            sock.write_all(&buf).await.unwrap();
        });
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = TcpStream::connect("127.0.0.2:3128").await.unwrap();
        client
            .write_all(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        client.write_all(b"tunnel").await.unwrap();
        let mut echo = [0u8; 6];
        within("echo", client.read_exact(&mut echo)).await.unwrap();
        assert_eq!(&echo, b"tunnel");
    });
}

#[test]
fn ipv6_redirects_reach_the_proxy() {
    let ns = Netns::new();
    ns.exec_ok(
        "ip6tables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "::1",
            "--dport",
            "8090",
            "-m",
            "owner",
            "!",
            "--uid-owner",
            PROXY_UID,
            "-j",
            "REDIRECT",
            "--to-ports",
            "4140",
        ],
    );
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("[::1]:8090").await, false, Duration::ZERO);
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = h1_client("[::1]:8090").await;
        let req = http::Request::get("/v6")
            .header("host", "app")
            .body(Full::default())
            .unwrap();
        let resp = within("GET", client.send_request(req)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"GET /v6\n");
        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_request_total{direction="outbound",upstream="[::1]:8090",protocol="http1"}"#
            ),
            Some(1.0),
            "{m}"
        );
    });
}

/// Every metric family, once it has samples, passes `promtool check metrics` (Debian package
/// `prometheus`), which reads the Prometheus text format served without an OpenMetrics Accept.
#[test]
fn metrics_pass_promtool() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.2:8080").await, false, Duration::ZERO);
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = h1_client("127.0.0.2:8080").await;
        let req = http::Request::get("/")
            .header("host", "app")
            .body(Full::default())
            .unwrap();
        within("GET", client.send_request(req)).await.unwrap();
        let mut dead = h1_client("127.0.0.2:8099").await;
        let req = http::Request::get("/")
            .header("host", "app")
            .body(Full::default())
            .unwrap();
        within("GET", dead.send_request(req)).await.unwrap();
        let mut looped = TcpStream::connect("127.0.0.1:4140").await.unwrap();
        let _ = read_to_end(&mut looped).await;
        let m = metrics().await;
        for family in [
            "weft_tcp_open_total",
            "weft_tcp_open_connections",
            "weft_tcp_read_bytes_total",
            "weft_tcp_write_bytes_total",
            "weft_request_total",
            "weft_response_total",
            "weft_response_latency_seconds",
            "weft_loop_refused_total",
            "weft_detect_total",
        ] {
            assert!(
                m.contains(&format!("# HELP {family} ")),
                "no {family} in:\n{m}"
            );
        }
        let mut promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (Debian package `prometheus`) must be installed");
        std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), m.as_bytes()).unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}\n{m}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

#[test]
fn tls_client_hello_is_forwarded_untouched() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let listener = listen("127.0.0.2:8443").await;
        let backend = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 9];
            sock.read_exact(&mut got).await.unwrap();
            sock.write_all(b"\x16\x03\x03server").await.unwrap();
            got
        });
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = TcpStream::connect("127.0.0.2:8443").await.unwrap();
        // The start of a TLS 1.2 handshake record, as a ClientHello begins.
        let hello = *b"\x16\x03\x01\x00\x04\x01\x00\x00\x00";
        client.write_all(&hello).await.unwrap();
        let mut reply = [0u8; 9];
        within("reply", client.read_exact(&mut reply))
            .await
            .unwrap();
        assert_eq!(&reply, b"\x16\x03\x03server");
        assert_eq!(within("backend", backend).await.unwrap(), hello);
        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_tcp_open_total{direction="outbound",protocol="tls"}"#
            ),
            Some(1.0),
            "{m}"
        );
    });
}

/// gRPC-style bidirectional streaming over h2: each request frame comes back before the next is
/// sent, so neither direction is buffered.
#[test]
fn h2_bidirectional_streaming() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let listener = listen("127.0.0.2:8088").await;
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    // Echo the request body as it arrives.
                    Ok::<_, hyper::Error>(hyper::Response::new(req.into_body()))
                },
            );
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
        let _proxy = Proxy::start(&name, &[]).await;
        let stream = TcpStream::connect("127.0.0.2:8088").await.unwrap();
        let (mut client, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let (tx, body) = channel_body();
        let req = http::Request::post("http://app/stream").body(body).unwrap();
        let resp = within("response head", client.send_request(req))
            .await
            .unwrap();
        let mut echoed = resp.into_body();
        for message in ["one", "two", "three"] {
            tx.send(Bytes::from(message)).await.unwrap();
            let frame = within("echo", echoed.frame()).await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), message);
        }
        drop(tx);
        // Closing the request ends the response (an empty final DATA frame may carry the end).
        let rest = within("end", echoed.collect()).await.unwrap().to_bytes();
        assert!(rest.is_empty(), "{rest:?}");
    });
}

/// An upstream whose accept queue is full drops new SYNs, so connecting times out: 504.
#[test]
fn connect_timeout_is_504() {
    let ns = Netns::new();
    // Connections from 127.0.0.9 bypass the proxy, so the test can fill the queue directly.
    ns.exec_ok(
        "iptables",
        &[
            "-t",
            "nat",
            "-I",
            "OUTPUT",
            "1",
            "-p",
            "tcp",
            "-s",
            "127.0.0.9",
            "-j",
            "RETURN",
        ],
    );
    let name = ns.name.clone();
    ns.run(move || async move {
        let backend: std::net::SocketAddr = "127.0.0.2:8089".parse().unwrap();
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener.bind(&backend.into()).unwrap();
        listener.listen(0).unwrap();
        let mut fillers = Vec::new();
        for _ in 0..8 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
            match tokio::time::timeout(Duration::from_millis(300), socket.connect(backend)).await {
                Ok(Ok(stream)) => fillers.push(stream),
                _ => break, // the queue is full: SYNs are being dropped
            }
        }
        assert!(fillers.len() < 8, "the accept queue never filled");

        let _proxy = Proxy::start(&name, &[("WEFT_CONNECT_TIMEOUT", "300ms")]).await;
        let mut client = h1_client("127.0.0.2:8089").await;
        let req = http::Request::get("/")
            .header("host", "app")
            .body(Full::default())
            .unwrap();
        let resp = within("GET", client.send_request(req)).await.unwrap();
        assert_eq!(resp.status(), 504);
        assert_eq!(resp.headers()["weft-error"], "upstream connect timeout");
        drop(listener);
    });
}

/// A connection that outlives WEFT_SHUTDOWN_GRACE does not keep the proxy alive.
#[test]
fn shutdown_grace_bounds_the_drain() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let listener = listen("127.0.0.2:7001").await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            // Hold the connection open far beyond the grace period.
            let mut buf = [0u8; 1];
            let _ = sock.read(&mut buf).await;
        });
        let mut proxy = Proxy::start(
            &name,
            &[("WEFT_SHUTDOWN_GRACE", "1s"), ("WEFT_OPAQUE_PORTS", "7001")],
        )
        .await;
        let _client = TcpStream::connect("127.0.0.2:7001").await.unwrap();
        let deadline = Instant::now() + PATIENCE;
        while sample(
            &metrics().await,
            r#"weft_tcp_open_connections{direction="outbound",protocol="opaque"}"#,
        ) != Some(1.0)
        {
            assert!(
                Instant::now() < deadline,
                "the opaque connection never opened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let start = Instant::now();
        proxy.sigterm();
        assert_eq!(proxy.wait_exit().await, Some(0));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "exited before the grace period: {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "grace period not enforced: {took:?}"
        );
    });
}
