//! How an HTTP request rides the h2 transport between proxies, and how it is restored on the far
//! side: the near side names the app port (`weft-dst-port`) and, for HTTP/1, the original version
//! (`weft-orig-proto`), and sends the request as HTTP/2; the far side takes both headers off and
//! gives the app the request in the version and form it was sent in.

use std::net::SocketAddr;

use http::header::{HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Version};

use crate::http::target::HttpVersion;
use crate::tls::transport::{DST_PORT, ORIG_PROTO};

/// Turns the app's request into the one sent over the h2 transport to app port `port`.
/// `fallback_authority` names the destination when the request carries none (an HTTP/1 request
/// without Host).
/// `endpoint` is the authority of last resort, formatted only when the request names none.
pub fn to_transport<B>(mut req: Request<B>, endpoint: SocketAddr) -> Request<B> {
    let port = endpoint.port();
    let headers = req.headers_mut();
    headers.insert(DST_PORT.clone(), HeaderValue::from(port));
    headers.remove(&ORIG_PROTO);
    let orig = match req.version() {
        Version::HTTP_10 => Some("HTTP/1.0"),
        Version::HTTP_11 | Version::HTTP_09 => Some("HTTP/1.1"),
        _ => None,
    };
    if let Some(orig) = orig {
        req.headers_mut()
            .insert(ORIG_PROTO.clone(), HeaderValue::from_static(orig));
        *req.version_mut() = Version::HTTP_2;
        // HTTP/2 requests carry scheme and authority; HTTP/1 ones usually only a path.
        let authority = req
            .uri()
            .authority()
            .cloned()
            .or_else(|| {
                req.headers()
                    .get(HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            })
            .or_else(|| Authority::try_from(endpoint.to_string()).ok());
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = authority;
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Why a request from the h2 transport cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("the request over the mesh transport has no valid weft-dst-port header")]
    NoPort,
    #[error("the request over the mesh transport names unknown protocol {0:?} in weft-orig-proto")]
    UnknownProtocol(String),
}

/// The far side: the app port and version a transported request is for, and the request as the
/// client app sent it.
pub fn from_transport<B>(
    mut req: Request<B>,
) -> Result<(u16, HttpVersion, Request<B>), RestoreError> {
    let port = req
        .headers_mut()
        .remove(&DST_PORT)
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
        .filter(|port| *port != 0)
        .ok_or(RestoreError::NoPort)?;
    let orig = req.headers_mut().remove(&ORIG_PROTO);
    let version = match orig.as_ref().map(HeaderValue::as_bytes) {
        None => return Ok((port, HttpVersion::Http2, req)),
        Some(b"HTTP/1.1") => Version::HTTP_11,
        Some(b"HTTP/1.0") => Version::HTTP_10,
        Some(other) => {
            return Err(RestoreError::UnknownProtocol(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    };
    *req.version_mut() = version;
    if !req.headers().contains_key(HOST)
        && let Some(authority) = req.uri().authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(HOST, host);
    }
    // Origin form, as HTTP/1 clients send to servers (CONNECT never rides this transport).
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    Ok((port, HttpVersion::Http1, req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_requests_round_trip() {
        let req = Request::post("/orders?id=7")
            .version(Version::HTTP_11)
            .header("host", "orders.shop:8080")
            .header("x-app", "kept")
            .body(())
            .unwrap();
        let sent = to_transport(req, "198.18.0.9:8080".parse().unwrap());
        assert_eq!(sent.version(), Version::HTTP_2);
        assert_eq!(sent.uri(), "http://orders.shop:8080/orders?id=7");
        assert_eq!(sent.headers()["weft-dst-port"], "8080");
        assert_eq!(sent.headers()["weft-orig-proto"], "HTTP/1.1");

        let (port, version, back) = from_transport(sent).unwrap();
        assert_eq!((port, version), (8080, HttpVersion::Http1));
        assert_eq!(back.version(), Version::HTTP_11);
        assert_eq!(back.uri(), "/orders?id=7");
        assert_eq!(back.headers()["host"], "orders.shop:8080");
        assert_eq!(back.headers()["x-app"], "kept");
        assert!(!back.headers().contains_key("weft-dst-port"));
        assert!(!back.headers().contains_key("weft-orig-proto"));
    }

    #[test]
    fn http1_0_without_host_gets_the_destination_as_authority() {
        let req = Request::get("/")
            .version(Version::HTTP_10)
            .body(())
            .unwrap();
        let sent = to_transport(req, "198.18.0.9:80".parse().unwrap());
        assert_eq!(sent.uri(), "http://198.18.0.9:80/");
        let (_, _, back) = from_transport(sent).unwrap();
        assert_eq!(back.version(), Version::HTTP_10);
        assert_eq!(back.headers()["host"], "198.18.0.9:80");
    }

    #[test]
    fn http2_requests_keep_their_form() {
        let req = Request::get("http://grpc.shop:9090/pkg.Svc/Call")
            .version(Version::HTTP_2)
            .header("weft-orig-proto", "HTTP/1.1")
            .body(())
            .unwrap();
        let sent = to_transport(req, "198.18.0.9:9090".parse().unwrap());
        assert!(
            !sent.headers().contains_key("weft-orig-proto"),
            "the app's copy is dropped"
        );
        let (port, version, back) = from_transport(sent).unwrap();
        assert_eq!((port, version), (9090, HttpVersion::Http2));
        assert_eq!(back.uri(), "http://grpc.shop:9090/pkg.Svc/Call");
    }

    #[test]
    fn bad_transport_headers_are_refused() {
        let req = Request::get("http://a/").body(()).unwrap();
        assert_eq!(from_transport(req).unwrap_err(), RestoreError::NoPort);
        let req = Request::get("http://a/")
            .header("weft-dst-port", "0")
            .body(())
            .unwrap();
        assert_eq!(from_transport(req).unwrap_err(), RestoreError::NoPort);
        let req = Request::get("http://a/")
            .header("weft-dst-port", "80")
            .header("weft-orig-proto", "SPDY/3")
            .body(())
            .unwrap();
        assert!(matches!(
            from_transport(req).unwrap_err(),
            RestoreError::UnknownProtocol(_)
        ));
    }
}
