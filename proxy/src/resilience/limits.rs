//! Per-upstream limits: at most `max_in_flight` requests at once (each until its response body
//! ends) and at most `max_pending` more waiting for a slot. Past both, a request is refused at
//! once with 503 `weft-error: overloaded` (gRPC: UNAVAILABLE) instead of queueing without bound.
//! The upstream's connection count (`max_connections`) travels with each request as an
//! extension, so the pool can refuse to open one connection too many the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

use super::error::ResilienceError;
use super::policy::LimitsPolicy;
use super::upstream::UpstreamState;
use crate::http::endpoint::EndpointError;
use crate::metrics::resilience::UpstreamMetrics;

/// Which limit refused a request (the `limit` label of `weft_overload_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    Pending,
    InFlight,
    Connections,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Pending => "pending",
            Limit::InFlight => "in_flight",
            Limit::Connections => "connections",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Limit::Pending => "already waiting",
            Limit::InFlight => "already in flight",
            Limit::Connections => "in flight on every allowed connection",
        }
    }

    pub(crate) fn setting(self) -> &'static str {
        match self {
            Limit::Pending => "WEFT_MAX_PENDING / weft.io/max-pending",
            Limit::InFlight => "WEFT_MAX_IN_FLIGHT / weft.io/max-in-flight",
            Limit::Connections => "WEFT_MAX_CONNECTIONS / weft.io/max-connections",
        }
    }
}

/// The counters one upstream's requests share.
#[derive(Debug)]
pub struct UpstreamLimits {
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    pending: AtomicU32,
    max_pending: u32,
    connections: Arc<ConnectionSlots>,
}

impl UpstreamLimits {
    pub fn new(policy: &LimitsPolicy, metrics: UpstreamMetrics) -> Self {
        let permits = (policy.max_in_flight as usize).min(Semaphore::MAX_PERMITS);
        UpstreamLimits {
            in_flight: Arc::new(Semaphore::new(permits)),
            max_in_flight: policy.max_in_flight,
            pending: AtomicU32::new(0),
            max_pending: policy.max_pending,
            connections: Arc::new(ConnectionSlots {
                open: AtomicU32::new(0),
                max: policy.max_connections,
                metrics,
            }),
        }
    }

    /// Takes a waiting place, if one is free; it is given back when the guard drops.
    fn try_wait(self: &Arc<Self>) -> Option<PendingGuard> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_pending).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingGuard(self.clone()))
    }

    #[cfg(test)]
    pub(crate) fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight as usize - self.in_flight.available_permits()
    }
}

/// The connections open to one upstream (a request extension, read by the pool).
#[derive(Debug)]
pub struct ConnectionSlots {
    open: AtomicU32,
    max: u32,
    metrics: UpstreamMetrics,
}

impl ConnectionSlots {
    /// A place for one more connection, held until the connection ends; counted and refused
    /// when the upstream already has `max`.
    pub fn try_open(self: &Arc<Self>) -> Result<ConnectionSlot, ResilienceError> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map(|_| ConnectionSlot(self.clone()))
            .map_err(|_| {
                self.metrics.overloaded(Limit::Connections);
                ResilienceError::Overloaded {
                    limit: Limit::Connections,
                    max: self.max,
                }
            })
    }

    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Acquire)
    }
}

/// One open connection's place under `max_connections`.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionSlots>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

struct PendingGuard(Arc<UpstreamLimits>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    upstream: Arc<UpstreamState>,
}

impl ConcurrencyLimitLayer {
    pub fn new(upstream: Arc<UpstreamState>) -> Self {
        ConcurrencyLimitLayer { upstream }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            upstream: self.upstream.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    upstream: Arc<UpstreamState>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for ConcurrencyLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = EndpointError> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<Limited<RB>>;
    type Error = EndpointError;
    type Future = BoxFuture<Result<Response<Limited<RB>>, EndpointError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let limits = self.upstream.limits.clone();
        req.extensions_mut().insert(limits.connections.clone());
        if let Ok(permit) = limits.in_flight.clone().try_acquire_owned() {
            let fut = self.inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(|b| Limited::new(b, permit))) });
        }
        let refused = |limit| {
            let max = match limit {
                Limit::Pending => limits.max_pending,
                Limit::InFlight | Limit::Connections => limits.max_in_flight,
            };
            self.upstream.metrics.overloaded(limit);
            let err: EndpointError = ResilienceError::Overloaded { limit, max }.into();
            Box::pin(std::future::ready(Err(err))) as Self::Future
        };
        if limits.max_pending == 0 {
            return refused(Limit::InFlight);
        }
        let Some(waiting) = limits.try_wait() else {
            return refused(Limit::Pending);
        };
        // This service was made ready for this request: take it along, leave a fresh clone.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let semaphore = limits.in_flight.clone();
        Box::pin(async move {
            let permit = semaphore.acquire_owned().await;
            drop(waiting);
            let Ok(permit) = permit else {
                // The semaphore is never closed; treat it as a full limit if it ever were.
                return Err(ResilienceError::Overloaded {
                    limit: Limit::InFlight,
                    max: limits.max_in_flight,
                }
                .into());
            };
            let resp = svc.oneshot(req).await?;
            Ok(resp.map(|b| Limited::new(b, permit)))
        })
    }
}

pin_project! {
    /// A response body that holds its request's in-flight slot until it ends.
    pub struct Limited<B> {
        #[pin]
        inner: B,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<B> std::fmt::Debug for Limited<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limited")
            .field("holds_slot", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Limited<B> {
    fn new(inner: B, permit: OwnedSemaphorePermit) -> Self {
        Limited {
            inner,
            permit: Some(permit),
        }
    }
}

impl<B: Body> Body for Limited<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.permit.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::policy::PolicyOverrides;
    use crate::resilience::upstream::tests::upstream_with;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use std::time::Duration;
    use tokio::sync::oneshot;

    type Gate = Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>;

    /// Answers each request once the test opens its gate.
    fn gated(
        gates: Arc<std::sync::Mutex<Vec<oneshot::Receiver<()>>>>,
    ) -> impl Service<
        Request<()>,
        Response = Response<Full<bytes::Bytes>>,
        Error = EndpointError,
        Future: Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |_req: Request<()>| {
            let gate: Gate = Arc::new(tokio::sync::Mutex::new(gates.lock().unwrap().pop()));
            async move {
                if let Some(rx) = gate.lock().await.take() {
                    let _ = rx.await;
                }
                Ok(Response::new(Full::new(bytes::Bytes::from_static(b"ok"))))
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn over_both_limits_is_refused_at_once() {
        let (upstream, metrics) = upstream_with(PolicyOverrides {
            max_in_flight: Some(1),
            max_pending: Some(1),
            ..Default::default()
        });
        let (open, gate) = oneshot::channel();
        let gates = Arc::new(std::sync::Mutex::new(vec![gate]));
        let svc = ConcurrencyLimitLayer::new(upstream.clone()).layer(gated(gates));

        let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
        tokio::task::yield_now().await;
        assert_eq!(upstream.limits.in_flight(), 1);
        let second = tokio::spawn(svc.clone().oneshot(Request::new(())));
        tokio::task::yield_now().await;
        // The third finds one in flight and one waiting.
        let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.short_cause(), "overloaded");
        assert!(err.to_string().contains("WEFT_MAX_PENDING"), "{err}");

        open.send(()).unwrap();
        let resp = first.await.unwrap().unwrap();
        // The slot is held until the body has been read.
        assert!(!second.is_finished());
        resp.into_body().collect().await.unwrap();
        let resp = second.await.unwrap().unwrap();
        resp.into_body().collect().await.unwrap();
        assert_eq!(upstream.limits.in_flight(), 0);
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"weft_overload_rejected_total{direction="outbound",upstream="test",limit="pending"} 1"#),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_waiting_room_refuses_on_in_flight() {
        let (upstream, metrics) = upstream_with(PolicyOverrides {
            max_in_flight: Some(1),
            max_pending: Some(0),
            ..Default::default()
        });
        let (_open, gate) = oneshot::channel::<()>();
        let gates = Arc::new(std::sync::Mutex::new(vec![gate]));
        let svc = ConcurrencyLimitLayer::new(upstream).layer(gated(gates));
        let _first = tokio::spawn(svc.clone().oneshot(Request::new(())));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let err = svc.oneshot(Request::new(())).await.unwrap_err();
        assert!(err.to_string().contains("WEFT_MAX_IN_FLIGHT"), "{err}");
        assert!(
            metrics
                .render()
                .unwrap()
                .contains(r#"limit="in_flight"} 1"#)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_carry_the_connection_count_for_the_pool() {
        let (upstream, metrics) = upstream_with(PolicyOverrides {
            max_connections: Some(2),
            ..Default::default()
        });
        let svc = ConcurrencyLimitLayer::new(upstream).layer(tower::service_fn(
            |req: Request<()>| async move {
                let slots = req
                    .extensions()
                    .get::<Arc<ConnectionSlots>>()
                    .cloned()
                    .unwrap();
                Ok::<_, EndpointError>(Response::new(slots))
            },
        ));
        let slots = svc
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .into_body()
            .inner;
        let a = slots.try_open().unwrap();
        let _b = slots.try_open().unwrap();
        let err = slots.try_open().unwrap_err();
        assert!(err.to_string().contains("WEFT_MAX_CONNECTIONS"), "{err}");
        drop(a);
        assert_eq!(slots.open(), 1);
        assert!(slots.try_open().is_ok());
        assert!(
            metrics
                .render()
                .unwrap()
                .contains(r#"limit="connections"} 1"#)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_body_frees_its_slot() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            max_in_flight: Some(1),
            max_pending: Some(0),
            ..Default::default()
        });
        let gates = Arc::new(std::sync::Mutex::new(vec![]));
        let svc = ConcurrencyLimitLayer::new(upstream.clone()).layer(gated(gates));
        for _ in 0..3 {
            let resp = svc.clone().oneshot(Request::new(())).await.unwrap();
            drop(resp);
        }
        assert_eq!(upstream.limits.in_flight(), 0);
    }
}
