//! Request and per-try timeouts: the request's whole exchange (retries and backoff included)
//! or one attempt must produce response headers in time, else the proxy answers 504 (the gRPC
//! form: DEADLINE_EXCEEDED). The duration comes from the request's policy; zero means none.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::http::error::ProxyError;
use crate::resilience::error::ResilienceError;
use crate::resilience::kinds::TimeoutKind;
use crate::resilience::upstream::UpstreamState;

#[derive(Clone)]
pub struct TimeoutLayer {
    kind: TimeoutKind,
    upstream: Arc<UpstreamState>,
}

impl TimeoutLayer {
    pub fn new(kind: TimeoutKind, upstream: Arc<UpstreamState>) -> Self {
        TimeoutLayer { kind, upstream }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            kind: self.kind,
            upstream: self.upstream.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
    kind: TimeoutKind,
    upstream: Arc<UpstreamState>,
}

impl<S, B, R> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Response = R, Error = ProxyError>,
{
    type Response = R;
    type Error = ProxyError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = self.upstream.policy_for(&req);
        let after = match self.kind {
            TimeoutKind::Request => policy.timeout,
            TimeoutKind::PerTry => policy.per_try_timeout,
            // Timed by their own layers (stream_idle, crate::idle), never built with this one.
            TimeoutKind::StreamIdle | TimeoutKind::Idle | TimeoutKind::HeaderRead => Duration::ZERO,
        };
        let sleep = (!after.is_zero()).then(|| Box::pin(tokio::time::sleep(after)));
        TimeoutFuture {
            inner: self.inner.call(req),
            sleep,
            after,
            kind: self.kind,
            upstream: self.upstream.clone(),
        }
    }
}

pin_project! {
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        sleep: Option<Pin<Box<Sleep>>>,
        after: Duration,
        kind: TimeoutKind,
        upstream: Arc<UpstreamState>,
    }
}

impl<F, R> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<R, ProxyError>>,
{
    type Output = Result<R, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(sleep) = this.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.upstream.metrics.timeout(*this.kind);
            let after = *this.after;
            // Only request and per-try timeouts get here: the other kinds never arm a sleep.
            let err = match this.kind {
                TimeoutKind::PerTry => ResilienceError::PerTryTimeout { after },
                _ => ResilienceError::RequestTimeout { after },
            };
            return Poll::Ready(Err(err.into()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::policy::{PolicyOverrides, ResiliencePolicy};
    use crate::test_support::upstream::upstream_with;
    use http::StatusCode;
    use tower::ServiceExt;

    fn hanging()
    -> impl Service<Request<()>, Response = (), Error = ProxyError, Future: Send> + Clone {
        tower::service_fn(|_req: Request<()>| std::future::pending::<Result<(), ProxyError>>())
    }

    #[tokio::test(start_paused = true)]
    async fn request_timeout_gives_504_request_timeout() {
        let (upstream, metrics) = upstream_with(PolicyOverrides {
            timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        });
        let start = tokio::time::Instant::now();
        let err = TimeoutLayer::new(TimeoutKind::Request, upstream)
            .layer(hanging())
            .oneshot(Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(err.short_cause(), "request timeout");
        let text = metrics.render().unwrap();
        assert!(
            text.contains(
                r#"weft_timeout_total{direction="outbound",upstream="test",kind="request"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_try_timeout_names_itself() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            per_try_timeout: Some(Duration::from_millis(200)),
            ..Default::default()
        });
        let err = TimeoutLayer::new(TimeoutKind::PerTry, upstream)
            .layer(hanging())
            .oneshot(Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(err.short_cause(), "per-try timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_no_timeout() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides::default());
        let svc = TimeoutLayer::new(TimeoutKind::Request, upstream).layer(hanging());
        let res =
            tokio::time::timeout(Duration::from_secs(3600), svc.oneshot(Request::new(()))).await;
        assert!(res.is_err(), "the request must still be waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_on_the_request_wins() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        });
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(Arc::new(ResiliencePolicy::default().with(
                &PolicyOverrides {
                    timeout: Some(Duration::from_millis(50)),
                    ..Default::default()
                },
            )));
        let start = tokio::time::Instant::now();
        TimeoutLayer::new(TimeoutKind::Request, upstream)
            .layer(hanging())
            .oneshot(req)
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_response_passes() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        });
        let svc = tower::service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_millis(499)).await;
            Ok::<_, ProxyError>(7)
        });
        let got = TimeoutLayer::new(TimeoutKind::Request, upstream)
            .layer(svc)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(got, 7);
    }
}
