//! The HTTP path of a client connection: detection, then the bytes it read replayed through
//! `PrefixedIo` into the proxy's own `HttpServer` (its hyper settings, HTTP/1 or HTTP/2 as
//! detected), whose requests go through the hop-by-hop header stripping the proxy applies to
//! everything it forwards.
//!
//! Holds for any bytes: the server finishes once the client has closed (nothing hangs); every
//! request it hands on has no hop-by-hop header left (none of `Connection`, the headers
//! `Connection` names, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE`
//! only as `trailers`); what it writes back is an HTTP/1 response or an HTTP/2 server preface.

use std::convert::Infallible;
use std::sync::PoisonError;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, Request, Response};
use http_body_util::Empty;
use weft_proxy::detect::{PrefixedIo, detect};
use weft_proxy::drain::Drain;
use weft_proxy::http::hop_by_hop;
use weft_proxy::http::server::HttpServer;
use weft_proxy::http::target::HttpVersion;

use crate::runtime::block_on;
use crate::scripted_io::ScriptedIo;

/// Never reached: the scripted peer's reads are always ready.
const WINDOW: Duration = Duration::from_secs(3600);
/// Far more than serving a few KiB from memory takes; past it the server is stuck.
const SERVE_LIMIT: Duration = Duration::from_secs(10);

pub fn check(data: &[u8]) {
    block_on(serve(data));
}

/// Serves `data` as a client connection; returns what the server wrote back.
async fn serve(data: &[u8]) -> Vec<u8> {
    let mut io = ScriptedIo::hashed(data);
    let written = io.written();
    let detection = detect(&mut io, WINDOW)
        .await
        .expect("a scripted peer never fails a read");
    let Some(version) = HttpVersion::from_protocol(detection.protocol) else {
        return Vec::new();
    };
    let drain = Drain::new();
    let mut watch = drain.watch();
    let service =
        hyper::service::service_fn(|mut req: Request<hyper::body::Incoming>| async move {
            let upgrading = hop_by_hop::is_upgrade_request(&req);
            let named = connection_tokens(req.headers());
            hop_by_hop::strip(req.headers_mut(), upgrading);
            assert_no_hop_by_hop(req.headers(), &named, upgrading);
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
    let io = PrefixedIo::new(detection.prefix, io);
    let served = tokio::time::timeout(
        SERVE_LIMIT,
        HttpServer::new().serve(io, version, service, &mut watch, None, None),
    )
    .await;
    assert!(
        served.is_ok(),
        "the server did not finish after the client closed"
    );
    let out = written
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if out.is_empty() {
        return out;
    }
    match version {
        HttpVersion::Http1 => assert!(
            out.starts_with(b"HTTP/1."),
            "an HTTP/1 client got something that is not an HTTP/1 response"
        ),
        HttpVersion::Http2 => assert!(
            out.len() >= 9 && out[3] == 0x4,
            "an HTTP/2 client's first frame from the server is not SETTINGS"
        ),
    }
    out
}

/// The header names the request's `Connection` headers list (hop-by-hop by declaration).
fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

fn assert_no_hop_by_hop(headers: &HeaderMap, named: &[HeaderName], upgrading: bool) {
    let mut gone = vec![
        TRANSFER_ENCODING,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ];
    if !upgrading {
        gone.extend([CONNECTION, UPGRADE]);
    }
    // A listed TE comes back as `TE: trailers` when the client asked for trailers (gRPC needs
    // them); a listed Upgrade stays while upgrading.
    gone.extend(
        named
            .iter()
            .filter(|n| **n != TE && !(upgrading && **n == UPGRADE))
            .cloned(),
    );
    for name in &gone {
        assert!(
            !headers.contains_key(name),
            "hop-by-hop header {name} survived stripping"
        );
    }
    for te in headers.get_all(TE) {
        assert_eq!(te, "trailers", "TE may only be forwarded as trailers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target is only as good as its plumbing: a plain request must reach the service and
    /// its answer the client, or the fuzzer would explore nothing past the parser.
    #[test]
    fn a_request_is_served_and_answered() {
        let out = block_on(serve(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-private\r\nx-private: 1\r\n\r\n",
        ));
        assert!(
            out.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let out = block_on(serve(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert_eq!(out.get(3), Some(&0x4), "no SETTINGS frame: {out:?}");
    }
}
