//! Timeouts, retries, limits and the inbound rate limit, through the real `weft-proxy` binary in
//! a throwaway network namespace (see `support`): the app connects to 127.0.0.2 (outbound) or
//! 127.0.0.3 (inbound), and a backend the test scripts answers on loopback. Needs root, `ip`,
//! iptables and setpriv.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpListener;

/// What the scripted backend does with its n-th request (counting from 1).
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Never answers (until the connection goes away).
    Hang,
    /// Answers 200 after the delay.
    After(Duration),
}

/// A backend answering request n with `script(n)`; the body echoes what arrived. Returns the
/// count of requests it received.
fn spawn_scripted(
    listener: TcpListener,
    h2: bool,
    script: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> Arc<AtomicUsize> {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            let script = script.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    let answer = script(n);
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = match answer {
                            Answer::Status(status) => status,
                            Answer::Hang => std::future::pending().await,
                            Answer::After(delay) => {
                                tokio::time::sleep(delay).await;
                                200
                            }
                        };
                        let mut resp = hyper::Response::new(Full::new(body));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        resp.headers_mut()
                            .insert("x-attempt", http::HeaderValue::from(n));
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, service)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    seen
}

fn request(method: &str, path: &str, body: &'static [u8]) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "app")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

#[test]
fn failed_gets_are_retried_posts_are_not() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        // Every odd request fails with 503.
        let seen = spawn_scripted(listen("127.0.0.2:8080").await, false, |n| {
            Answer::Status(if n % 2 == 1 { 503 } else { 200 })
        });
        let _proxy = Proxy::start(&name, &[]).await;
        let mut client = h1_client("127.0.0.2:8080").await;

        let resp = within("GET", client.send_request(request("GET", "/", b"")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-attempt"], "2");
        resp.into_body().collect().await.unwrap();

        // A PUT body is replayed as it was.
        client.ready().await.unwrap();
        let resp = within("PUT", client.send_request(request("PUT", "/", b"payload")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-attempt"], "4");
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "payload"
        );

        client.ready().await.unwrap();
        let resp = within("POST", client.send_request(request("POST", "/", b"order")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "POST must not be retried by default");
        resp.into_body().collect().await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 5);

        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_retry_total{direction="outbound",upstream="127.0.0.2:8080"}"#
            ),
            Some(2.0),
            "{m}"
        );
    });
}

#[test]
fn non_idempotent_retries_when_allowed() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_scripted(listen("127.0.0.2:8080").await, false, |n| {
            Answer::Status(if n == 1 { 502 } else { 201 })
        });
        let _proxy = Proxy::start(&name, &[("WEFT_RETRY_NON_IDEMPOTENT", "true")]).await;
        let mut client = h1_client("127.0.0.2:8080").await;
        let resp = within("POST", client.send_request(request("POST", "/", b"order")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "order"
        );
    });
}

#[test]
fn request_timeout_is_504_and_counted() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_scripted(listen("127.0.0.2:8080").await, false, |_| Answer::Hang);
        let _proxy = Proxy::start(&name, &[("WEFT_TIMEOUT", "300ms")]).await;
        let mut client = h1_client("127.0.0.2:8080").await;
        let start = std::time::Instant::now();
        let resp = within("GET", client.send_request(request("GET", "/", b"")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 504);
        assert_eq!(resp.headers()["weft-error"], "request timeout");
        assert!(start.elapsed() >= Duration::from_millis(300));
        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_timeout_total{direction="outbound",upstream="127.0.0.2:8080",kind="request"}"#
            ),
            Some(1.0),
            "{m}"
        );
    });
}

#[test]
fn per_try_timeout_moves_on_to_another_attempt() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        let seen = spawn_scripted(listen("127.0.0.2:8080").await, false, |n| {
            if n == 1 {
                Answer::Hang
            } else {
                Answer::Status(200)
            }
        });
        let _proxy = Proxy::start(
            &name,
            &[("WEFT_PER_TRY_TIMEOUT", "200ms"), ("WEFT_TIMEOUT", "5s")],
        )
        .await;
        let mut client = h1_client("127.0.0.2:8080").await;
        let resp = within("GET", client.send_request(request("GET", "/", b"")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-attempt"], "2");
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn grpc_timeout_is_deadline_exceeded() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_scripted(listen("127.0.0.2:8080").await, true, |_| Answer::Hang);
        let _proxy = Proxy::start(&name, &[("WEFT_TIMEOUT", "200ms")]).await;
        let mut client = h2_client("127.0.0.2:8080").await;
        let mut req = request("POST", "http://app/echo.Echo/Say", b"\0\0\0\0\0");
        req.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        let resp = within("gRPC call", client.send_request(req)).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "4", "{:?}", resp.headers());
        assert_eq!(resp.headers()["grpc-message"], "request timeout");
    });
}

#[test]
fn over_the_in_flight_limit_is_503_overloaded_at_once() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_scripted(listen("127.0.0.2:8080").await, false, |n| {
            if n == 1 {
                Answer::After(Duration::from_secs(2))
            } else {
                Answer::Status(200)
            }
        });
        let _proxy = Proxy::start(
            &name,
            &[("WEFT_MAX_IN_FLIGHT", "1"), ("WEFT_MAX_PENDING", "0")],
        )
        .await;
        let mut slow = h1_client("127.0.0.2:8080").await;
        let slow = tokio::spawn(async move { slow.send_request(request("GET", "/", b"")).await });
        // Let the slow request reach the backend.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut client = h1_client("127.0.0.2:8080").await;
        let resp = within("GET", client.send_request(request("GET", "/", b"")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["weft-error"], "overloaded");
        assert!(!slow.is_finished(), "refused before the slow one ended");
        let resp = within("slow GET", slow).await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        // The slot is free again.
        client.ready().await.unwrap();
        let resp = within("GET", client.send_request(request("GET", "/", b"")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_overload_rejected_total{direction="outbound",upstream="127.0.0.2:8080",limit="in_flight"}"#
            ),
            Some(1.0),
            "{m}"
        );
    });
}

#[test]
fn inbound_rate_limit_answers_429() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_scripted(listen("127.0.0.3:8080").await, false, |_| {
            Answer::Status(200)
        });
        let _proxy = Proxy::start(&name, &[("WEFT_INBOUND_RATE_LIMIT", "2/m")]).await;
        let mut client = h1_client("127.0.0.3:8080").await;
        let mut statuses = Vec::new();
        for _ in 0..3 {
            client.ready().await.unwrap();
            let resp = within("GET", client.send_request(request("GET", "/", b"")))
                .await
                .unwrap();
            statuses.push(resp.status().as_u16());
            if resp.status() == 429 {
                assert_eq!(resp.headers()["weft-error"], "rate limited");
            }
            resp.into_body().collect().await.unwrap();
        }
        assert_eq!(statuses, [200, 200, 429]);
        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_rate_limited_total{direction="inbound",scope="overall"}"#
            ),
            Some(1.0),
            "{m}"
        );
    });
}

#[test]
fn bad_resilience_setting_stops_start_up_naming_it() {
    let out = std::process::Command::new(BIN)
        .env("WEFT_RETRY_STATUSES", "5xx")
        .env("WEFT_ADMIN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"invalid WEFT_RETRY_STATUSES="5xx""#),
        "{stderr}"
    );
}

#[test]
fn over_the_connection_limit_is_503_overloaded() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_scripted(listen("127.0.0.2:8080").await, false, |n| {
            if n == 1 {
                Answer::After(Duration::from_secs(2))
            } else {
                Answer::Status(200)
            }
        });
        let _proxy = Proxy::start(&name, &[("WEFT_MAX_CONNECTIONS", "1")]).await;
        let mut slow = h1_client("127.0.0.2:8080").await;
        let slow = tokio::spawn(async move { slow.send_request(request("GET", "/", b"")).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // HTTP/1 carries one request at a time: this one would need a second connection.
        let mut client = h1_client("127.0.0.2:8080").await;
        let resp = within("GET", client.send_request(request("GET", "/", b"")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["weft-error"], "overloaded");
        let resp = within("slow GET", slow).await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        // The pooled connection is free again and is reused: no new connection needed.
        client.ready().await.unwrap();
        let resp = within("GET", client.send_request(request("GET", "/", b"")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let m = metrics().await;
        assert_eq!(
            sample(
                &m,
                r#"weft_overload_rejected_total{direction="outbound",upstream="127.0.0.2:8080",limit="connections"}"#
            ),
            Some(1.0),
            "{m}"
        );
    });
}
