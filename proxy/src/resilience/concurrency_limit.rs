//! The layer that keeps each upstream within its limits: at most `max_in_flight` requests at once
//! (each until its response body ends) and at most `max_pending` more waiting for a slot; past
//! both, 503 `weft-error: overloaded` at once. It also hands the request the upstream's
//! connection slots, so the pool can refuse one connection too many the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use crate::http::error::ProxyError;
use crate::resilience::error::ResilienceError;
use crate::resilience::kinds::Limit;
use crate::resilience::limits::Limited;
use crate::resilience::upstream::UpstreamState;

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
    S: Service<Request<B>, Response = Response<RB>, Error = ProxyError> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<Limited<RB>>;
    type Error = ProxyError;
    type Future = BoxFuture<Result<Response<Limited<RB>>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let limits = self.upstream.limits.clone();
        // The Service's limits as they stand now (its policy came with the request).
        limits.apply(&self.upstream.policy_for(&req).limits);
        req.extensions_mut().insert(limits.connections.clone());
        if let Ok(permit) = limits.in_flight.clone().try_acquire_owned() {
            let slot = limits.slot(permit);
            let fut = self.inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(|b| Limited::new(b, slot))) });
        }
        let refused = |limit| {
            let max = match limit {
                Limit::Pending => limits.max_pending.load(Ordering::Acquire),
                Limit::InFlight | Limit::Connections => {
                    limits.max_in_flight.load(Ordering::Acquire)
                }
            };
            self.upstream.metrics.overloaded(limit);
            let err: ProxyError = ResilienceError::Overloaded { limit, max }.into();
            Box::pin(std::future::ready(Err(err))) as Self::Future
        };
        if limits.max_pending.load(Ordering::Acquire) == 0 {
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
                    max: limits.max_in_flight.load(Ordering::Acquire),
                }
                .into());
            };
            let slot = limits.slot(permit);
            let resp = svc.oneshot(req).await?;
            Ok(resp.map(|b| Limited::new(b, slot)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::connection_slots::ConnectionSlots;
    use crate::resilience::limits::UpstreamLimits;
    use crate::resilience::policy::LimitsPolicy;
    use crate::resilience::policy::{PolicyOverrides, ResiliencePolicy};
    use crate::test_support::upstream::upstream_with;
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
        Error = ProxyError,
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
                Ok::<_, ProxyError>(Response::new(slots))
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

    /// A request carrying these limits in its policy, as the Service policy layer attaches it.
    fn limited_to(max_in_flight: u32, max_pending: u32, max_connections: u32) -> Request<()> {
        let policy = ResiliencePolicy {
            limits: LimitsPolicy {
                max_pending,
                max_in_flight,
                max_connections,
            },
            ..Default::default()
        };
        let mut req = Request::new(());
        req.extensions_mut().insert(Arc::new(policy));
        req
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_service_policy_moves_the_limits_live() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            max_in_flight: Some(1),
            max_pending: Some(0),
            ..Default::default()
        });
        let (open_a, gate_a) = oneshot::channel();
        let (open_b, gate_b) = oneshot::channel();
        // Popped from the end: the first request waits on gate_a.
        let gates = Arc::new(std::sync::Mutex::new(vec![gate_b, gate_a]));
        let svc = ConcurrencyLimitLayer::new(upstream.clone()).layer(gated(gates));
        let refused = |req| {
            let svc = svc.clone();
            async move { svc.oneshot(req).await.unwrap_err().short_cause() }
        };

        let first = tokio::spawn(svc.clone().oneshot(limited_to(1, 0, 1)));
        tokio::task::yield_now().await;
        assert_eq!(refused(limited_to(1, 0, 1)).await, "overloaded");
        // The Service now allows two in flight: the next request goes through at once.
        let second = tokio::spawn(svc.clone().oneshot(limited_to(2, 0, 1)));
        tokio::task::yield_now().await;
        assert_eq!(upstream.limits.in_flight(), 2);
        // Back to one with two in flight: neither is cut off, and nothing more gets in until
        // both have ended.
        assert_eq!(refused(limited_to(1, 0, 1)).await, "overloaded");
        open_a.send(()).unwrap();
        first
            .await
            .unwrap()
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(upstream.limits.in_flight(), 1);
        assert_eq!(refused(limited_to(1, 0, 1)).await, "overloaded");
        open_b.send(()).unwrap();
        second
            .await
            .unwrap()
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(upstream.limits.in_flight(), 0);

        // A waiting room opened live: with one in flight, the next request waits for it.
        let (open_c, gate_c) = oneshot::channel();
        let gates = Arc::new(std::sync::Mutex::new(vec![gate_c]));
        let svc = ConcurrencyLimitLayer::new(upstream.clone()).layer(gated(gates));
        let third = tokio::spawn(svc.clone().oneshot(limited_to(1, 0, 1)));
        tokio::task::yield_now().await;
        let waiting = tokio::spawn(svc.clone().oneshot(limited_to(1, 1, 1)));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "waits instead of being refused");
        open_c.send(()).unwrap();
        third
            .await
            .unwrap()
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        let resp = waiting.await.unwrap().unwrap();
        resp.into_body().collect().await.unwrap();

        // The connection limit the pool sees follows too.
        let slots = upstream.limits.connections.clone();
        let _one = slots.try_open().unwrap();
        assert!(slots.try_open().is_err());
        let resp = svc.oneshot(limited_to(1, 1, 2)).await.unwrap();
        resp.into_body().collect().await.unwrap();
        assert!(slots.try_open().is_ok());
    }

    #[tokio::test]
    async fn lowering_then_raising_the_in_flight_limit_keeps_count() {
        let (upstream, _metrics) = upstream_with(Default::default());
        let policy = |max_in_flight| LimitsPolicy {
            max_pending: 0,
            max_in_flight,
            max_connections: 1,
        };
        let limits = Arc::new(UpstreamLimits::new(&policy(3), upstream.metrics.clone()));
        let take = || {
            limits
                .in_flight
                .clone()
                .try_acquire_owned()
                .ok()
                .map(|permit| limits.slot(permit))
        };
        let (a, b, c) = (take().unwrap(), take().unwrap(), take().unwrap());
        limits.apply(&policy(1));
        assert_eq!(limits.in_flight(), 3);
        drop(a); // retired, not handed on
        assert!(take().is_none());
        assert_eq!(limits.in_flight(), 2);
        // Raised to 2 with 2 in flight: full, and the next slot to end is handed on.
        limits.apply(&policy(2));
        assert!(take().is_none());
        drop(b);
        let d = take().expect("a slot freed under the raised limit");
        assert!(take().is_none());
        drop((c, d));
        let all: Vec<_> = std::iter::from_fn(take).collect();
        assert_eq!(all.len(), 2);
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
