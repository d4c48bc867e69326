//! Hop-by-hop headers belong to one connection and must not be forwarded (RFC 9110 §7.6.1):
//! `Connection` and the headers it names, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`,
//! `TE` (except `trailers`, which gRPC needs) and `Upgrade` (kept while upgrading). Everything
//! else passes untouched.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a request asks to switch protocols or open a tunnel.
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT || req.headers().contains_key(UPGRADE)
}

/// Whether a response accepts the upgrade or tunnel its request asked for.
pub fn is_upgrade_response(status: StatusCode, connect: bool) -> bool {
    status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success())
}

/// Removes hop-by-hop headers; with `upgrading`, `Connection` and `Upgrade` stay so the far side
/// sees the upgrade.
pub fn strip(headers: &mut HeaderMap, upgrading: bool) {
    let wants_trailers = headers
        .get_all(TE)
        .iter()
        .any(|value| has_token(value, "trailers"));
    if headers.contains_key(CONNECTION) {
        // Cloning the values (cheap: shared bytes) lets us remove while reading them.
        let listed: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
        for value in &listed {
            let Ok(text) = value.to_str() else { continue };
            for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if upgrading && token.eq_ignore_ascii_case("upgrade") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    headers.remove(name);
                }
            }
        }
        if !upgrading {
            headers.remove(CONNECTION);
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(TE);
    if !upgrading {
        headers.remove(UPGRADE);
    }
    if wants_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|text| {
        text.split(',')
            .map(|t| t.split(';').next().unwrap_or("").trim())
            .any(|t| t.eq_ignore_ascii_case(token))
    })
}

#[derive(Clone, Copy, Debug, Default)]
pub struct HopByHopLayer;

impl<S> Layer<S> for HopByHopLayer {
    type Service = HopByHop<S>;

    fn layer(&self, inner: S) -> HopByHop<S> {
        HopByHop { inner }
    }
}

#[derive(Clone, Debug)]
pub struct HopByHop<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for HopByHop<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = HopByHopFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let upgrading = is_upgrade_request(&req);
        let connect = req.method() == Method::CONNECT;
        strip(req.headers_mut(), upgrading);
        HopByHopFuture {
            inner: self.inner.call(req),
            upgrading,
            connect,
        }
    }
}

pin_project! {
    pub struct HopByHopFuture<F> {
        #[pin]
        inner: F,
        upgrading: bool,
        connect: bool,
    }
}

impl<F, RB, E> Future for HopByHopFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx))?;
        let upgrading = *this.upgrading && is_upgrade_response(resp.status(), *this.connect);
        strip(resp.headers_mut(), upgrading);
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn removes_hop_by_hop_and_listed_headers() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("x-kept", "yes"),
            ("host", "a"),
        ]);
        strip(&mut map, false);
        let names: Vec<_> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "host"]);
    }

    #[test]
    fn te_trailers_survives() {
        let mut map = headers(&[("te", "trailers, deflate;q=0.5"), ("connection", "te")]);
        strip(&mut map, false);
        assert_eq!(map.get(TE).unwrap(), "trailers");
        assert!(map.get(CONNECTION).is_none());
    }

    #[test]
    fn upgrade_headers_stay_while_upgrading() {
        let mut map = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
        ]);
        strip(&mut map, true);
        assert_eq!(map.get(CONNECTION).unwrap(), "Upgrade");
        assert_eq!(map.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(map.get("sec-websocket-key").unwrap(), "abc");
    }

    #[test]
    fn upgrade_detection() {
        let ws = Request::get("/")
            .header(UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade_request(&ws));
        let connect = Request::connect("a:443").body(()).unwrap();
        assert!(is_upgrade_request(&connect));
        assert!(!is_upgrade_request(&Request::get("/").body(()).unwrap()));
        assert!(is_upgrade_response(StatusCode::SWITCHING_PROTOCOLS, false));
        assert!(is_upgrade_response(StatusCode::OK, true));
        assert!(!is_upgrade_response(StatusCode::OK, false));
    }

    #[tokio::test]
    async fn layer_strips_both_directions() {
        let inner = tower::service_fn(|req: Request<()>| async move {
            assert!(req.headers().get("keep-alive").is_none());
            assert_eq!(req.headers().get("x-app").unwrap(), "1");
            let resp = Response::builder()
                .header("connection", "close")
                .header("x-reply", "2")
                .body(())
                .unwrap();
            Ok::<_, Infallible>(resp)
        });
        let req = Request::get("/")
            .header("keep-alive", "timeout=5")
            .header("x-app", "1")
            .body(())
            .unwrap();
        let resp = HopByHopLayer.layer(inner).oneshot(req).await.unwrap();
        assert!(resp.headers().get(CONNECTION).is_none());
        assert_eq!(resp.headers().get("x-reply").unwrap(), "2");
    }

    #[tokio::test]
    async fn refused_upgrade_loses_upgrade_headers() {
        let inner = tower::service_fn(|_req: Request<()>| async move {
            let resp = Response::builder()
                .status(StatusCode::OK)
                .header("upgrade", "websocket")
                .body(())
                .unwrap();
            Ok::<_, Infallible>(resp)
        });
        let req = Request::get("/")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let resp = HopByHopLayer.layer(inner).oneshot(req).await.unwrap();
        assert!(resp.headers().get(UPGRADE).is_none());
    }
}
