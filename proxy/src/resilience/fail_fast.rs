//! Fail fast when no endpoint can take a request: a service (the balancer over a service's
//! endpoints, each behind its breaker) that stays not-ready for `wait` makes requests fail at
//! once with 503 `weft-error: no endpoints` (gRPC: UNAVAILABLE) instead of hanging, until it is
//! ready again.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::error::ResilienceError;
use crate::http::endpoint::EndpointError;

/// How long a request waits for an endpoint before failing (as Linkerd's 1 s failfast dispatch).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct FailFastLayer {
    wait: Duration,
}

impl FailFastLayer {
    pub fn new(wait: Duration) -> Self {
        FailFastLayer { wait }
    }
}

impl<S> Layer<S> for FailFastLayer {
    type Service = FailFast<S>;

    fn layer(&self, inner: S) -> FailFast<S> {
        FailFast {
            inner,
            wait: self.wait,
            state: State::Ready,
        }
    }
}

enum State {
    Ready,
    Waiting(Pin<Box<Sleep>>),
    Failing,
}

pub struct FailFast<S> {
    inner: S,
    wait: Duration,
    state: State,
}

impl<S: Clone> Clone for FailFast<S> {
    fn clone(&self) -> Self {
        FailFast {
            inner: self.inner.clone(),
            wait: self.wait,
            state: State::Ready,
        }
    }
}

impl<S, Req, R> Service<Req> for FailFast<S>
where
    S: Service<Req, Response = R, Error = EndpointError>,
{
    type Response = R;
    type Error = EndpointError;
    type Future = FailFastFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Poll::Ready(ready) = self.inner.poll_ready(cx) {
            self.state = State::Ready;
            return Poll::Ready(ready);
        }
        loop {
            match &mut self.state {
                State::Ready => {
                    self.state = State::Waiting(Box::pin(tokio::time::sleep(self.wait)));
                }
                State::Waiting(sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.state = State::Failing;
                }
                // Ready to answer with an error; the inner service is polled again next time.
                State::Failing => return Poll::Ready(Ok(())),
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let State::Failing = self.state {
            return FailFastFuture::Failed {
                err: Some(ResilienceError::NoEndpoints { after: self.wait }.into()),
            };
        }
        FailFastFuture::Called {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    #[project = FailFastProj]
    pub enum FailFastFuture<F> {
        Failed { err: Option<EndpointError> },
        Called { #[pin] inner: F },
    }
}

impl<F, R> Future for FailFastFuture<F>
where
    F: Future<Output = Result<R, EndpointError>>,
{
    type Output = Result<R, EndpointError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FailFastProj::Called { inner } => inner.poll(cx),
            FailFastProj::Failed { err } => match err.take() {
                Some(err) => Poll::Ready(Err(err)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::time::Instant;
    use tower::ServiceExt;

    /// Ready only while `open` is set; the test polls again after changing it.
    #[derive(Clone)]
    struct Gate(Arc<AtomicBool>);

    impl Service<()> for Gate {
        type Response = &'static str;
        type Error = EndpointError;
        type Future = std::future::Ready<Result<&'static str, EndpointError>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), EndpointError>> {
            if self.0.load(Ordering::SeqCst) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn call(&mut self, _req: ()) -> Self::Future {
            std::future::ready(Ok("served"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fails_after_the_wait_then_recovers() {
        let open = Arc::new(AtomicBool::new(false));
        let svc = FailFastLayer::new(DEFAULT_WAIT).layer(Gate(open.clone()));
        let start = Instant::now();
        let mut svc = svc;
        let err = tokio::time::timeout(Duration::from_secs(5), async {
            svc.ready().await.unwrap().call(()).await
        })
        .await
        .expect("must not hang")
        .unwrap_err();
        assert!(start.elapsed() >= DEFAULT_WAIT);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.short_cause(), "no endpoints");
        // Still failing: the next request fails at once.
        let again = Instant::now();
        svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert_eq!(again.elapsed(), Duration::ZERO);
        // An endpoint is back.
        open.store(true, Ordering::SeqCst);
        assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "served");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_service_passes_straight_through() {
        let svc = FailFastLayer::new(DEFAULT_WAIT).layer(Gate(Arc::new(AtomicBool::new(true))));
        assert_eq!(svc.oneshot(()).await.unwrap(), "served");
    }
}
