//! Idle timeouts through the real `weft-proxy` binary in a throwaway network namespace (see
//! `support`): idle client connections (HTTP and opaque TCP) are closed, a request in flight
//! keeps its connection, stalled streams are ended, and a client dribbling request headers is
//! cut off. Needs root, `ip`, iptables and setpriv.

mod support;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n";

/// Reads one response with a `content-length` body from a raw connection.
async fn read_response(sock: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = within("response", sock.read(&mut buf)).await.unwrap();
        assert!(
            n > 0,
            "connection closed after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

fn timeouts(m: &str, upstream: &str, kind: &str) -> Option<f64> {
    sample(
        m,
        &format!(
            r#"weft_timeout_total{{direction="outbound",upstream="{upstream}",kind="{kind}"}}"#
        ),
    )
}

#[test]
fn idle_keep_alive_connection_is_closed_but_not_while_a_request_is_in_flight() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        // Each answer takes 2.5 s: longer than the idle timeout.
        spawn_echo(
            listen("127.0.0.2:8080").await,
            false,
            Duration::from_millis(2500),
        );
        let _proxy = Proxy::start(&name, &[("WEFT_IDLE_TIMEOUT", "1s")]).await;
        let mut client = TcpStream::connect("127.0.0.2:8080").await.unwrap();
        client.write_all(GET).await.unwrap();
        let reply = read_response(&mut client).await;
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
        let served = Instant::now();
        // Then nothing: the proxy closes the keep-alive connection.
        let rest = read_to_end(&mut client).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        assert!(served.elapsed() >= Duration::from_secs(1));
        let m = metrics().await;
        assert_eq!(timeouts(&m, "127.0.0.2:8080", "idle"), Some(1.0), "{m}");
    });
}

#[test]
fn idle_opaque_connection_is_closed_an_active_one_is_not() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        // An echo server on an opaque port; it reports when its side sees EOF.
        let listener = listen("127.0.0.2:3306").await;
        let (eof_tx, mut eof_rx) = tokio::sync::mpsc::channel::<()>(4);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let eof_tx = eof_tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = sock.read(&mut buf).await {
                        if sock.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = eof_tx.send(()).await;
                });
            }
        });
        let _proxy = Proxy::start(&name, &[("WEFT_IDLE_TIMEOUT", "1s")]).await;
        let mut active = TcpStream::connect("127.0.0.2:3306").await.unwrap();
        let mut idle = TcpStream::connect("127.0.0.2:3306").await.unwrap();
        idle.write_all(b"once").await.unwrap();
        let mut buf = [0u8; 4];
        within("echo", idle.read_exact(&mut buf)).await.unwrap();
        // The active one keeps talking every 300 ms for 3 s, three idle timeouts.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            active.write_all(b"ping").await.unwrap();
            within("echo", active.read_exact(&mut buf)).await.unwrap();
            assert_eq!(&buf, b"ping");
        }
        // The idle one was closed meanwhile, on both sides.
        let rest = read_to_end(&mut idle).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        within("the server's EOF", eof_rx.recv()).await.unwrap();
        let m = metrics().await;
        assert_eq!(timeouts(&m, "127.0.0.2:3306", "idle"), Some(1.0), "{m}");
        // The active one still works.
        active.write_all(b"last").await.unwrap();
        within("echo", active.read_exact(&mut buf)).await.unwrap();
        assert_eq!(&buf, b"last");
    });
}

#[test]
fn dribbled_request_headers_are_cut_off_idle_keep_alive_is_not() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.2:8080").await, false, Duration::ZERO);
        let _proxy = Proxy::start(&name, &[("WEFT_HEADER_READ_TIMEOUT", "1s")]).await;
        // A keep-alive connection waiting longer than the header timeout between requests is
        // fine: the timer runs from a request's first byte.
        let mut patient = TcpStream::connect("127.0.0.2:8080").await.unwrap();
        patient.write_all(GET).await.unwrap();
        read_response(&mut patient).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        patient.write_all(GET).await.unwrap();
        let reply = read_response(&mut patient).await;
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");

        // Slowloris: a header line every 200 ms, never the blank line that ends them.
        let slow = TcpStream::connect("127.0.0.2:8080").await.unwrap();
        let (mut read, mut write) = slow.into_split();
        let dribble = tokio::spawn(async move {
            write.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n").await?;
            for i in 0..50 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                write
                    .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                    .await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut rest = Vec::new();
        let closed = within("the proxy to close", read.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?} {rest:?}");
        dribble.abort();
        let m = metrics().await;
        assert_eq!(
            timeouts(&m, "127.0.0.2:8080", "header_read"),
            Some(1.0),
            "{m}"
        );
    });
}

/// A backend that sends the response head and a first chunk, then nothing, holding the
/// connection open; or, with `head: false`, nothing at all.
fn spawn_stalling(listener: TcpListener, head: bool) {
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                if head {
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
                        )
                        .await;
                }
                // Hold the connection until the proxy gives up on it.
                let _ = sock.read(&mut buf).await;
            });
        }
    });
}

#[test]
fn stalled_streams_are_ended_and_counted() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_stalling(listen("127.0.0.2:8080").await, true);
        spawn_stalling(listen("127.0.0.2:8081").await, false);
        let _proxy = Proxy::start(
            &name,
            &[
                ("WEFT_STREAM_IDLE_TIMEOUT", "1s"),
                ("WEFT_RETRY_ATTEMPTS", "0"),
            ],
        )
        .await;
        // Mid-body: the client gets the head and the first chunk, then an error.
        let mut client = h1_client("127.0.0.2:8080").await;
        let req = http::Request::get("http://app/")
            .body(http_body_util::Full::default())
            .unwrap();
        let resp = within("GET", client.send_request(req)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = within("first chunk", body.frame()).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        let end = within("the end of the body", body.frame()).await;
        assert!(matches!(end, Some(Err(_))), "{end:?}");

        // Before the response head: 504 with the cause.
        let mut client = h1_client("127.0.0.2:8081").await;
        let req = http::Request::get("http://app/")
            .body(http_body_util::Full::default())
            .unwrap();
        let resp = within("GET", client.send_request(req)).await.unwrap();
        assert_eq!(resp.status(), 504);
        assert_eq!(resp.headers()["weft-error"], "stream idle timeout");

        let m = metrics().await;
        assert_eq!(
            timeouts(&m, "127.0.0.2:8080", "stream_idle"),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            timeouts(&m, "127.0.0.2:8081", "stream_idle"),
            Some(1.0),
            "{m}"
        );
    });
}
