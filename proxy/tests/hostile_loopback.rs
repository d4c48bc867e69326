//! Hostile HTTP against the real `weft-proxy` binary in a throwaway network namespace (see
//! `support`): oversized request heads, over-long targets, absolute-form targets that disagree
//! with Host, and paced HTTP/2 rapid reset. Each is refused by the proxy, counted, and never
//! reaches the app. Needs root, `ip`, iptables and setpriv.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/1 app that records each request's method, target and Host, and answers 200.
fn spawn_recording_app(listener: TcpListener) -> Arc<std::sync::Mutex<Vec<String>>> {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    record.lock().unwrap().push(format!(
                        "{} {} host={host}",
                        req.method(),
                        req.uri()
                    ));
                    async { Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new()))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    seen
}

/// Sends `raw` on a new connection to `addr` and returns the status of the answer.
async fn raw_status(addr: &str, raw: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(raw).await;
    let mut answer = Vec::new();
    let _ = within("answer", stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn oversized_heads_and_targets_are_refused_before_the_app() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let seen = spawn_recording_app(listen("127.0.0.2:8100").await);
        let _proxy = Proxy::start(&name, &[]).await;
        let target = "127.0.0.2:8100";

        // One 100 KiB header: past the 60 KiB default.
        let big = format!(
            "GET /big HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n",
            "a".repeat(100 * 1024)
        );
        assert_eq!(raw_status(target, big.as_bytes()).await, 431);
        // 200 small headers: past the 100 default.
        let mut many = String::from("GET /many HTTP/1.1\r\nHost: app\r\n");
        for i in 0..200 {
            many.push_str(&format!("X-H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(raw_status(target, many.as_bytes()).await, 431);
        // A 20 KiB target: past the 16 KiB default (but inside the head limit).
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
            "p".repeat(20 * 1024)
        );
        assert_eq!(raw_status(target, long.as_bytes()).await, 414);
        // What a normal client sends still works.
        assert_eq!(
            raw_status(
                target,
                b"GET /ok HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
            )
            .await,
            200
        );

        let requests = seen.lock().unwrap().clone();
        assert_eq!(
            requests,
            ["GET /ok host=app"],
            "only the normal request reached the app"
        );
        let m = metrics().await;
        for (reason, count) in [("header_too_large", 2.0), ("uri_too_long", 1.0)] {
            let series =
                format!(r#"weft_http_refused_total{{direction="outbound",reason="{reason}"}}"#);
            assert_eq!(sample(&m, &series), Some(count), "{series}\n{m}");
        }
    });
}

#[test]
fn a_lower_header_limit_is_a_setting() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let seen = spawn_recording_app(listen("127.0.0.2:8101").await);
        let _proxy = Proxy::start(&name, &[("WEFT_MAX_REQUEST_HEADERS_KB", "16")]).await;
        let head = format!(
            "GET /x HTTP/1.1\r\nHost: app\r\nX-Mid: {}\r\nConnection: close\r\n\r\n",
            "m".repeat(30 * 1024)
        );
        assert_eq!(raw_status("127.0.0.2:8101", head.as_bytes()).await, 431);
        assert!(seen.lock().unwrap().is_empty());
    });
}

/// `GET http://<authority>/x` is forwarded as `GET /x` when its authority is Host's, and refused
/// with 400 when it names another: the app never sees a target and Host that disagree.
#[test]
fn absolute_form_targets_reach_the_app_in_origin_form_or_not_at_all() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let seen = spawn_recording_app(listen("127.0.0.2:8102").await);
        let _proxy = Proxy::start(&name, &[]).await;
        let target = "127.0.0.2:8102";
        let agree = b"GET http://127.0.0.2:8102/x?y=1 HTTP/1.1\r\nHost: 127.0.0.2:8102\r\nConnection: close\r\n\r\n";
        assert_eq!(raw_status(target, agree).await, 200);
        let disagree = b"GET http://198.19.2.99:8080/x HTTP/1.1\r\nHost: 127.0.0.2:8102\r\nConnection: close\r\n\r\n";
        assert_eq!(raw_status(target, disagree).await, 400);
        let requests = seen.lock().unwrap().clone();
        assert_eq!(requests, ["GET /x?y=1 host=127.0.0.2:8102"]);
        let m = metrics().await;
        let series = r#"weft_http_refused_total{direction="outbound",reason="target_host_mismatch"}"#;
        assert_eq!(sample(&m, series), Some(1.0), "{m}");
    });
}

/// An h2 client opening streams in paced bursts and resetting each right after its HEADERS: the
/// proxy closes the connection once most of its streams were reset early, so the app sees only
/// the first few hundred of the 2,000 and the connection ends; counted.
#[test]
fn paced_rapid_reset_closes_the_connection() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let reached = Arc::new(AtomicUsize::new(0));
        let listener = listen("127.0.0.2:8103").await;
        let count = reached.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |_req: hyper::Request<Incoming>| {
                            count.fetch_add(1, Ordering::SeqCst);
                            async {
                                // Slow enough that every reset arrives before the answer.
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                            }
                        });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        let _proxy = Proxy::start(&name, &[]).await;
        let tcp = TcpStream::connect("127.0.0.2:8103").await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let mut client = client;
        let mut sent = 0;
        let mut refused = false;
        'bursts: for _ in 0..40 {
            for _ in 0..50 {
                let ready =
                    tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await;
                let Ok(Ok(ready)) = ready else {
                    refused = true;
                    break 'bursts;
                };
                client = ready;
                let req = http::Request::get("http://127.0.0.2:8103/r")
                    .body(())
                    .unwrap();
                match client.send_request(req, true) {
                    Ok((_response, mut stream)) => {
                        // Long enough for the proxy to take the stream (so h2's own guard for
                        // streams reset before they are accepted does not see it), far shorter
                        // than the app's answer.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        stream.send_reset(h2::Reason::CANCEL);
                        sent += 1;
                    }
                    Err(_) => {
                        refused = true;
                        break 'bursts;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "the connection survived {sent} reset streams");
        let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
        assert!(
            ended.is_ok(),
            "the connection is closed, not just refusing streams"
        );
        let reached = reached.load(Ordering::SeqCst);
        assert!(
            reached < 1000,
            "{reached} of {sent} reset streams reached the app"
        );
        let m = metrics().await;
        let series = r#"weft_http_refused_total{direction="outbound",reason="premature_resets"}"#;
        assert_eq!(sample(&m, series), Some(1.0), "{m}");
    });
}

/// Past WEFT_OUTBOUND_CONNECTION_LIMIT a new connection is reset at once and counted, while the
/// inbound side (its own limit) keeps serving; a closed connection frees its place.
#[test]
fn the_connection_limit_is_a_ceiling_not_a_cliff() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let held = listen("127.0.0.2:7101").await;
        tokio::spawn(async move {
            // Holds each connection until the client's EOF reaches it, then closes it.
            while let Ok((mut stream, _)) = held.accept().await {
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    let _ = stream.read(&mut byte).await;
                });
            }
        });
        spawn_echo(listen("127.0.0.3:8104").await, false, Duration::ZERO);
        let _proxy = Proxy::start(
            &name,
            &[
                ("WEFT_OUTBOUND_CONNECTION_LIMIT", "3"),
                ("WEFT_OPAQUE_PORTS", "7101"),
            ],
        )
        .await;
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(TcpStream::connect("127.0.0.2:7101").await.unwrap());
        }
        let wait_open = |n: f64| async move {
            let series = r#"weft_tcp_open_connections{direction="outbound",protocol="opaque"}"#;
            for _ in 0..200 {
                if sample(&metrics().await, series) == Some(n) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("{series} never reached {n}");
        };
        wait_open(3.0).await;
        // The fourth: reset at once.
        let mut refused = TcpStream::connect("127.0.0.2:7101").await.unwrap();
        let mut buf = [0u8; 1];
        let read = within("the refused connection's end", refused.read(&mut buf)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // The inbound side still serves.
        let mut client = h1_client("127.0.0.3:8104").await;
        let req = http::Request::get("/in")
            .header("host", "app")
            .body(Full::default())
            .unwrap();
        let resp = within("inbound GET", client.send_request(req))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let m = metrics().await;
        let series = r#"weft_connections_refused_total{direction="outbound",reason="limit"}"#;
        assert_eq!(sample(&m, series), Some(1.0), "{m}");
        // One closes: there is room again.
        drop(open.pop());
        wait_open(2.0).await;
        open.push(TcpStream::connect("127.0.0.2:7101").await.unwrap());
        wait_open(3.0).await;
        assert_eq!(sample(&metrics().await, series), Some(1.0));
    });
}
