//! Counts requests and responses and observes latency to the response head, per connection's
//! upstream. Sits outermost so the proxy's own error responses are counted too. Outbound, the
//! endpoint client marks responses that came from a meshed endpoint over mTLS ([`PeerTls`]), so
//! the response counter says which identity answered.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::labels::PeerTls;
use crate::metrics::HttpMetrics;

#[derive(Clone, Debug)]
pub struct RequestMetricsLayer {
    metrics: HttpMetrics,
}

impl RequestMetricsLayer {
    pub fn new(metrics: HttpMetrics) -> Self {
        RequestMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> RequestMetrics<S> {
        RequestMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestMetrics<S> {
    inner: S,
    metrics: HttpMetrics,
}

impl<S, B, RB> Service<Request<B>> for RequestMetrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = RequestMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.metrics.on_request();
        RequestMetricsFuture {
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
            start: Instant::now(),
        }
    }
}

pin_project! {
    pub struct RequestMetricsFuture<F> {
        #[pin]
        inner: F,
        metrics: HttpMetrics,
        start: Instant,
    }
}

impl<F, RB, E> Future for RequestMetricsFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(resp) = &result {
            this.metrics.on_response(
                resp.status().as_u16(),
                this.start.elapsed(),
                resp.extensions().get::<PeerTls>(),
            );
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Protocol;
    use crate::labels::Upstream;
    use crate::metrics::Metrics;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test]
    async fn counts_request_and_response_status() {
        let metrics = Metrics::new();
        let http = metrics.http_outbound(
            Upstream::Addr("127.0.0.2:80".parse().unwrap()),
            Protocol::Http1,
        );
        let inner = tower::service_fn(|_req: Request<()>| async {
            let mut resp = Response::new(());
            *resp.status_mut() = http::StatusCode::NOT_FOUND;
            Ok::<_, Infallible>(resp)
        });
        let svc = RequestMetricsLayer::new(http).layer(inner);
        svc.clone().oneshot(Request::new(())).await.unwrap();
        svc.oneshot(Request::new(())).await.unwrap();
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"weft_request_total{direction="outbound",upstream="127.0.0.2:80",protocol="http1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_response_total{direction="outbound",upstream="127.0.0.2:80",status_code="404",protocol="http1",tls="false"} 2"#),
            "{text}"
        );
    }

    /// A response the endpoint client marked as served over mTLS is counted with the
    /// destination's identity; one without the mark (e.g. the proxy's own error) as plaintext.
    #[tokio::test]
    async fn outbound_response_carries_the_identity_that_served_it() {
        let metrics = Metrics::new();
        let http = metrics.http_outbound(Upstream::Service("web.shop:80".into()), Protocol::Http2);
        let inner = tower::service_fn(|req: Request<bool>| async move {
            let mut resp = Response::new(());
            if *req.body() {
                resp.extensions_mut().insert(PeerTls::Mutual(
                    "spiffe://cluster.local/ns/shop/sa/web".into(),
                ));
            } else {
                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, Infallible>(resp)
        });
        let svc = RequestMetricsLayer::new(http).layer(inner);
        svc.clone().oneshot(Request::new(true)).await.unwrap();
        svc.oneshot(Request::new(false)).await.unwrap();
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"weft_request_total{direction="outbound",upstream="web.shop:80",protocol="http2"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_response_total{direction="outbound",upstream="web.shop:80",status_code="200",protocol="http2",tls="true",dst_identity="spiffe://cluster.local/ns/shop/sa/web"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_response_total{direction="outbound",upstream="web.shop:80",status_code="503",protocol="http2",tls="false"} 1"#),
            "{text}"
        );
    }
}
