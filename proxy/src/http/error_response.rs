//! Turns a failed upstream exchange into the response the client sees: 502 (refused,
//! unreachable, broken), 504 (timeout), 503 (overloaded, no endpoints) or 429 (rate limited),
//! with a `weft-error` header giving the cause, and a warning in the log naming the upstream.
//! A gRPC client gets what it can read instead: HTTP 200 with `grpc-status` and `grpc-message`
//! (a trailers-only response).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::warn;

use crate::http::error::ProxyError;
use crate::http::grpc::is_grpc;
use crate::http::target::Target;

/// The body of every proxied response: the upstream's, or the proxy's own.
pub type ProxyBody<B> = Either<B, Full<Bytes>>;

pub static WEFT_ERROR: HeaderName = HeaderName::from_static("weft-error");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

pub fn error_response<B>(err: &ProxyError, grpc: bool) -> Response<ProxyBody<B>> {
    let cause = err.short_cause();
    if grpc {
        let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(GRPC_STATUS.clone(), HeaderValue::from(err.grpc_code()));
        // The causes are plain ASCII words: valid as they are in the percent-encoded message.
        headers.insert(GRPC_MESSAGE.clone(), HeaderValue::from_static(cause));
        headers.insert(WEFT_ERROR.clone(), HeaderValue::from_static(cause));
        return resp;
    }
    plain_answer(err.status(), cause)
}

/// The proxy's own plain-text answer: `cause` as the body and in `weft-error`.
pub fn plain_answer<B>(status: StatusCode, cause: &'static str) -> Response<ProxyBody<B>> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        cause.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(WEFT_ERROR.clone(), HeaderValue::from_static(cause));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorResponseLayer;

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> ErrorResponse<S> {
        ErrorResponse { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ErrorResponse<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for ErrorResponse<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = ProxyError>,
{
    type Response = Response<ProxyBody<RB>>;
    type Error = Infallible;
    type Future = ErrorResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The endpoint client is always ready; an inner readiness error would surface on call.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let target = req.extensions().get::<Target>().copied();
        let grpc = is_grpc(req.headers());
        ErrorResponseFuture {
            inner: self.inner.call(req),
            target,
            grpc,
        }
    }
}

pin_project! {
    pub struct ErrorResponseFuture<F> {
        #[pin]
        inner: F,
        target: Option<Target>,
        grpc: bool,
    }
}

impl<F, RB> Future for ErrorResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, ProxyError>>,
{
    type Output = Result<Response<ProxyBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match ready!(this.inner.poll(cx)) {
            Ok(resp) => resp.map(Either::Left),
            Err(err) => {
                match this.target {
                    Some(target) => {
                        warn!(upstream = %target.addr, status = err.status().as_u16(), cause = %err, "upstream request failed")
                    }
                    None => warn!(status = err.status().as_u16(), cause = %err, "request failed"),
                }
                error_response(&err, *this.grpc)
            }
        };
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::ConnectError;
    use crate::http::target::HttpVersion;
    use http::StatusCode;
    use std::time::Duration;
    use tower::ServiceExt;

    fn target_request() -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(Target {
            addr: "127.0.0.2:81".parse().unwrap(),
            version: HttpVersion::Http1,
        });
        req
    }

    #[tokio::test]
    async fn connect_timeout_is_504() {
        let inner = tower::service_fn(|_req: Request<()>| async {
            Err::<Response<()>, _>(ProxyError::Connect(ConnectError::Timeout {
                addr: "127.0.0.2:81".parse().unwrap(),
                after: Duration::from_secs(1),
            }))
        });
        let resp = ErrorResponseLayer
            .layer(inner)
            .oneshot(target_request())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(resp.headers()[&WEFT_ERROR], "upstream connect timeout");
    }

    #[tokio::test]
    async fn refused_is_502() {
        let inner = tower::service_fn(|_req: Request<()>| async {
            Err::<Response<()>, _>(ProxyError::Connect(ConnectError::Failed {
                addr: "127.0.0.2:81".parse().unwrap(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            }))
        });
        let resp = ErrorResponseLayer
            .layer(inner)
            .oneshot(target_request())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(resp.headers()[&WEFT_ERROR], "upstream refused connection");
    }

    #[tokio::test]
    async fn grpc_requests_get_a_grpc_status() {
        use crate::resilience::error::ResilienceError;
        let inner = tower::service_fn(|_req: Request<()>| async {
            Err::<Response<()>, _>(ProxyError::Resilience(ResilienceError::RequestTimeout {
                after: Duration::from_secs(1),
            }))
        });
        let mut req = target_request();
        req.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        let resp = ErrorResponseLayer.layer(inner).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "4");
        assert_eq!(resp.headers()["grpc-message"], "request timeout");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/grpc");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_unavailable_to_grpc() {
        let inner = tower::service_fn(|_req: Request<()>| async {
            Err::<Response<()>, _>(ProxyError::Connect(ConnectError::Failed {
                addr: "127.0.0.2:81".parse().unwrap(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            }))
        });
        let mut req = target_request();
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        let resp = ErrorResponseLayer.layer(inner).oneshot(req).await.unwrap();
        assert_eq!(resp.headers()["grpc-status"], "14");
    }

    #[tokio::test]
    async fn success_passes_the_upstream_body() {
        let inner = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, ProxyError>(Response::new("upstream"))
        });
        let resp = ErrorResponseLayer
            .layer(inner)
            .oneshot(target_request())
            .await
            .unwrap();
        assert!(matches!(resp.body(), Either::Left("upstream")));
    }
}
