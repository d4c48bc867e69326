//! The balancer layer: sends each request (each attempt, as it sits inside retries) to one
//! endpoint of the logical service the route layer chose — through the service's traffic split
//! when it has one, then by power of two choices over peak-EWMA load among the endpoints whose
//! circuit breaker lets them take traffic (and, for a retry, that have not failed it yet) — and
//! feeds the outcome back into that endpoint's load and breaker. When no endpoint may take the
//! request (every one ejected, or probing), it waits up to `NO_ENDPOINT_WAIT` for one to come
//! back, then fails with 503 `no endpoints` rather than hang. Requests without a service keep
//! the route's target (the original destination). A removed endpoint is never picked again,
//! while requests already on it finish.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::balance;
use crate::discovery::{Endpoint, Service as LogicalService};
use crate::http::error_response::WEFT_ERROR;
use crate::http::extensions::Routed;
use crate::http::extensions::{AttemptedEndpoint, FailedEndpoints};
use crate::http::target::Target;
use crate::resilience::breaker::{BreakerConfig, EndpointBreaker};
use crate::resilience::error::ResilienceError;
use crate::resilience::upstream::UpstreamState;

/// How long a request waits for an endpoint its breaker lets in before it fails with 503
/// `no endpoints` (as Linkerd's 1 s failfast dispatch).
pub const NO_ENDPOINT_WAIT: Duration = Duration::from_secs(1);

/// The service whose endpoints take one request: a split's chosen backend when it has
/// endpoints, else the service itself.
fn backend(service: &Arc<LogicalService>) -> Arc<LogicalService> {
    if !service.split.is_empty()
        && let Some(index) = balance::pick_split(service.split.iter().map(|b| b.weight))
    {
        let backend = service.split[index].resolution.borrow().service().cloned();
        if let Some(backend) = backend.filter(|b| !b.endpoints.is_empty()) {
            return backend;
        }
    }
    service.clone()
}

/// The endpoint for one connection to `service` (opaque TCP: no breakers, no retries).
pub fn pick(service: &Arc<LogicalService>) -> Option<Endpoint> {
    let service = backend(service);
    balance::pick(&service.endpoints).and_then(|i| service.endpoints.get(i).cloned())
}

/// What the balancer found for one attempt.
enum Choice {
    Endpoint(Endpoint, EndpointBreaker),
    /// No endpoint may take traffic; the earliest an ejection ends, if any will.
    Unavailable(Option<Instant>),
}

/// P2C among the endpoints their breakers allow, preferring those a retry has not failed on.
fn choose(
    service: &LogicalService,
    upstream: &UpstreamState,
    config: BreakerConfig,
    failed: &[SocketAddr],
) -> Choice {
    // The common case, a first attempt while no endpoint is ejected: every endpoint may take
    // it, so pick among all of them and look up only the chosen one's breaker (no per-request
    // vectors, one map lookup instead of one per endpoint).
    if failed.is_empty()
        && upstream.breakers.all_closed()
        && let Some(endpoint) =
            balance::pick(&service.endpoints).and_then(|i| service.endpoints.get(i))
    {
        let endpoints = &service.endpoints;
        let breaker = upstream.breakers.one(
            endpoint.addr,
            endpoints.len(),
            |addr| endpoints.iter().any(|e| e.addr == *addr),
            config,
        );
        return Choice::Endpoint(endpoint.clone(), breaker);
    }
    let addrs: Vec<SocketAddr> = service.endpoints.iter().map(|e| e.addr).collect();
    let breakers = upstream.breakers.of(&addrs, config);
    let now = Instant::now();
    let mut reopens: Option<Instant> = None;
    let mut allowed = Vec::with_capacity(addrs.len());
    for (endpoint, breaker) in service.endpoints.iter().zip(&breakers) {
        match breaker.available(now) {
            Ok(true) => allowed.push((endpoint, breaker)),
            Ok(false) => {}
            Err(until) => reopens = Some(reopens.map_or(until, |r| r.min(until))),
        }
    }
    let fresh: Vec<_> = allowed
        .iter()
        .filter(|(e, _)| !failed.contains(&e.addr))
        .copied()
        .collect();
    // Only endpoints the request failed on are left: better one of them than none.
    let candidates = if fresh.is_empty() { allowed } else { fresh };
    let loads: Vec<&Endpoint> = candidates.iter().map(|(e, _)| *e).collect();
    match balance::pick(&loads) {
        Some(i) => Choice::Endpoint(candidates[i].0.clone(), candidates[i].1.clone()),
        None => Choice::Unavailable(reopens),
    }
}

/// Waits (up to `NO_ENDPOINT_WAIT`) for an endpoint of `service` to be allowed traffic.
async fn endpoint_for(
    service: &LogicalService,
    upstream: &UpstreamState,
    config: BreakerConfig,
    failed: &[SocketAddr],
) -> Result<(Endpoint, EndpointBreaker), ResilienceError> {
    let deadline = Instant::now() + NO_ENDPOINT_WAIT;
    loop {
        match choose(service, upstream, config, failed) {
            Choice::Endpoint(endpoint, breaker) => return Ok((endpoint, breaker)),
            Choice::Unavailable(reopens) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(ResilienceError::NoEndpoints {
                        after: NO_ENDPOINT_WAIT,
                    });
                }
                // A probe's outcome has no wake-up of its own here: look again shortly.
                let next = reopens.unwrap_or(now + Duration::from_millis(50));
                tokio::time::sleep_until(next.min(deadline).max(now + Duration::from_millis(1)))
                    .await;
            }
        }
    }
}

#[derive(Clone)]
pub struct BalanceLayer {
    upstream: Arc<UpstreamState>,
}

impl BalanceLayer {
    pub fn new(upstream: Arc<UpstreamState>) -> Self {
        BalanceLayer { upstream }
    }
}

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Balance<S> {
        Balance::new(inner, self.upstream.clone())
    }
}

#[derive(Clone)]
pub struct Balance<S> {
    inner: S,
    upstream: Arc<UpstreamState>,
}

impl<S> Balance<S> {
    pub fn new(inner: S, upstream: Arc<UpstreamState>) -> Self {
        Balance { inner, upstream }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for Balance<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: From<ResilienceError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(Routed(service)) = req.extensions().get::<Routed>().cloned() else {
            return Box::pin(self.inner.call(req));
        };
        // The service polled ready is the one to call; a clone takes its place.
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        let upstream = self.upstream.clone();
        let config = upstream.policy_for(&req).breaker;
        let failed = req
            .extensions()
            .get::<FailedEndpoints>()
            .map(|FailedEndpoints(failed)| failed.clone())
            .unwrap_or_default();
        Box::pin(async move {
            let service = backend(&service);
            let (endpoint, breaker) = endpoint_for(&service, &upstream, config, &failed).await?;
            if let Some(target) = req.extensions_mut().get_mut::<Target>() {
                target.addr = endpoint.addr;
            }
            if let Some(AttemptedEndpoint(attempted)) = req.extensions().get::<AttemptedEndpoint>()
            {
                let _ = attempted.set(endpoint.addr);
            }
            endpoint.requests.inc();
            let mut in_flight = endpoint.load.start();
            let mut attempt = breaker.attempt(config);
            req.extensions_mut().insert(endpoint);
            let result = inner.call(req).await;
            match &result {
                // A response the proxy made up: the endpoint failed, whatever that cost.
                Ok(resp) if resp.headers().contains_key(&WEFT_ERROR) => in_flight.fail(),
                Ok(_) => in_flight.complete(),
                Err(_) => in_flight.fail(),
            }
            let success = matches!(&result, Ok(resp) if !resp.status().is_server_error());
            attempt.record(success);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Origin;
    use crate::http::error::ProxyError;
    use crate::http::target::HttpVersion;
    use crate::resilience::policy::PolicyOverrides;
    use crate::test_support::upstream::upstream_with;
    use http::StatusCode;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tower::ServiceExt;

    fn service(addrs: &[&str]) -> Arc<LogicalService> {
        Arc::new(LogicalService {
            name: "web.default:80".into(),
            origin: Origin::Discovery,
            endpoints: addrs
                .iter()
                .map(|a| Endpoint {
                    addr: a.parse().unwrap(),
                    weight: 1,
                    zone: "".into(),
                    identity: None,
                    meshed: false,
                    proxy_port: 0,
                    pod: "".into(),
                    load: Default::default(),
                    requests: Default::default(),
                    peer: None,
                })
                .collect(),
            split: vec![],
            policy: Default::default(),
        })
    }

    type Seen = Arc<Mutex<HashMap<SocketAddr, usize>>>;

    /// Endpoints in `failing` answer 503, the others 200; each request's endpoint is counted.
    fn upstreams(
        failing: &'static [&'static str],
        seen: Seen,
    ) -> impl Service<
        Request<()>,
        Response = Response<()>,
        Error = ProxyError,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |req: Request<()>| {
            let addr = req.extensions().get::<Target>().unwrap().addr;
            *seen.lock().unwrap().entry(addr).or_default() += 1;
            let fail = failing
                .iter()
                .any(|f| f.parse::<SocketAddr>().unwrap() == addr);
            async move {
                let mut resp = Response::new(());
                if fail {
                    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                Ok::<_, ProxyError>(resp)
            }
        })
    }

    fn request(service: &Arc<LogicalService>, failed: &[&str]) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(Target {
            addr: "10.96.0.1:80".parse().unwrap(),
            version: HttpVersion::Http1,
        });
        req.extensions_mut().insert(Routed(service.clone()));
        if !failed.is_empty() {
            req.extensions_mut().insert(FailedEndpoints(
                failed.iter().map(|a| a.parse().unwrap()).collect(),
            ));
        }
        req
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_endpoint_is_ejected_and_gets_no_more_traffic() {
        let (upstream, metrics) = upstream_with(PolicyOverrides {
            breaker_failures: Some(3),
            ..Default::default()
        });
        let seen = Seen::default();
        let svc = Balance::new(upstreams(&["10.1.0.1:80"], seen.clone()), upstream);
        let web = service(&["10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"]);
        // Requests that already failed on the good endpoints prefer the bad one while it is in.
        let steer = ["10.1.0.2:80", "10.1.0.3:80"];
        let bad = |seen: &Seen| {
            seen.lock()
                .unwrap()
                .get(&"10.1.0.1:80".parse().unwrap())
                .copied()
        };
        for _ in 0..10 {
            svc.clone().oneshot(request(&web, &steer)).await.unwrap();
        }
        assert_eq!(
            bad(&seen),
            Some(3),
            "three failures eject it for the 30 s that follow"
        );
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"weft_breaker_ejected{direction="outbound",upstream="test"} 1"#),
            "{text}"
        );
        // After the ejection, one probe: it fails again, and the next ejection is longer.
        tokio::time::advance(Duration::from_secs(31)).await;
        seen.lock().unwrap().clear();
        for _ in 0..10 {
            svc.clone().oneshot(request(&web, &steer)).await.unwrap();
        }
        assert_eq!(bad(&seen), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_goes_to_an_endpoint_it_has_not_failed_on() {
        let (upstream, _metrics) = upstream_with(Default::default());
        let seen = Seen::default();
        let svc = Balance::new(upstreams(&[], seen.clone()), upstream);
        let web = service(&["10.1.0.1:80", "10.1.0.2:80"]);
        for _ in 0..100 {
            svc.clone()
                .oneshot(request(&web, &["10.1.0.1:80"]))
                .await
                .unwrap();
        }
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.get(&"10.1.0.1:80".parse().unwrap()), None, "{seen:?}");
        }
        // With nowhere else to go, the failed endpoint is still better than none.
        let lone = service(&["10.1.0.1:80"]);
        let (upstream, _metrics) = upstream_with(Default::default());
        let svc = Balance::new(upstreams(&[], Seen::default()), upstream);
        let resp = svc.oneshot(request(&lone, &["10.1.0.1:80"])).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_endpoint_ejected_requests_fail_fast() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            breaker_failures: Some(1),
            breaker_max_ejected_ratio: Some(1.0),
            ..Default::default()
        });
        let svc = Balance::new(
            upstreams(&["10.1.0.1:80", "10.1.0.2:80"], Seen::default()),
            upstream,
        );
        let web = service(&["10.1.0.1:80", "10.1.0.2:80"]);
        for _ in 0..2 {
            svc.clone().oneshot(request(&web, &[])).await.unwrap();
        }
        let start = Instant::now();
        let err = svc.clone().oneshot(request(&web, &[])).await.unwrap_err();
        assert_eq!(start.elapsed(), NO_ENDPOINT_WAIT);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.short_cause(), "no endpoints");
    }

    #[tokio::test(start_paused = true)]
    async fn the_share_ejected_at_once_is_capped() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            breaker_failures: Some(1),
            ..Default::default()
        });
        let seen = Seen::default();
        let svc = Balance::new(
            upstreams(&["10.1.0.1:80", "10.1.0.2:80"], seen.clone()),
            upstream,
        );
        // Two of two fail, but at the default 0.5 only one may be ejected.
        let web = service(&["10.1.0.1:80", "10.1.0.2:80"]);
        for _ in 0..50 {
            svc.clone().oneshot(request(&web, &[])).await.unwrap();
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen.values().min(), Some(&1), "{seen:?}");
    }
}
