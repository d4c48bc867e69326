//! The layer that gives each request to a Service its effective policy (route override > Service > client defaults),
//! which the timeout, retry and balancer layers further in prefer to the upstream's default.
//! Discovery updates arrive as new `Service` values, so a changed annotation applies to the
//! next request without a restart.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request};
use tower::{Layer, Service};
use weft_discovery_api::v1::ServicePolicy;

use crate::http::extensions::Routed;
use crate::resilience::policy::ResiliencePolicy;
use crate::resilience::upstream::UpstreamState;

/// Attaches the effective `Arc<ResiliencePolicy>` to requests routed to a logical service.
#[derive(Clone)]
pub struct ServicePolicyLayer {
    upstream: Arc<UpstreamState>,
}

impl ServicePolicyLayer {
    pub fn new(upstream: Arc<UpstreamState>) -> Self {
        ServicePolicyLayer { upstream }
    }
}

impl<S> Layer<S> for ServicePolicyLayer {
    type Service = ApplyServicePolicy<S>;

    fn layer(&self, inner: S) -> ApplyServicePolicy<S> {
        ApplyServicePolicy {
            upstream: self.upstream.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct ApplyServicePolicy<S> {
    upstream: Arc<UpstreamState>,
    inner: S,
}

/// The policy of a request to `routed`: the client's defaults under the Service's own policy.
pub fn policy_for(
    upstream: &UpstreamState,
    routed: &Routed,
    method: &Method,
    path: &str,
) -> Option<ResiliencePolicy> {
    let policy = &routed.0.policy;
    if **policy == ServicePolicy::default() {
        return None;
    }
    let overrides = upstream.service_overrides.get(policy);
    Some(upstream.policy.for_request(&overrides, method, path))
}

impl<S, B> Service<Request<B>> for ApplyServicePolicy<S>
where
    S: Service<Request<B>>,
    S::Future: Future,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let policy = req
            .extensions()
            .get::<Routed>()
            .and_then(|routed| policy_for(&self.upstream, routed, req.method(), req.uri().path()));
        if let Some(policy) = policy {
            req.extensions_mut().insert(Arc::new(policy));
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Origin, Service as LogicalService};
    use crate::resilience::policy::ServiceOverrides;
    use crate::resilience::service_overrides::*;
    use crate::test_support::upstream::upstream_with;
    use proto::{BreakerPolicy, Limits, RoutePolicy, StatusRange, StatusRanges};
    use std::convert::Infallible;
    use std::time::Duration;
    use tower::ServiceExt;
    use weft_discovery_api::v1::{self as proto};

    fn annotated() -> ServicePolicy {
        ServicePolicy {
            timeout_ms: Some(2_000),
            per_try_timeout_ms: None,
            retry: Some(proto::RetryPolicy {
                attempts: Some(4),
                statuses: Some(StatusRanges {
                    ranges: vec![StatusRange {
                        start: 500,
                        end: 503,
                    }],
                }),
                grpc_codes: Some(proto::GrpcCodes { codes: vec![8] }),
                budget_min_per_second: Some(2.6),
                non_idempotent: Some(false),
                ..Default::default()
            }),
            breaker: Some(BreakerPolicy {
                failures: Some(2),
                base_ejection_ms: Some(5_000),
                max_ejected_ratio: Some(0.34),
                ..Default::default()
            }),
            limits: Some(Limits {
                max_in_flight: Some(7),
                ..Default::default()
            }),
            routes: vec![RoutePolicy {
                path_prefix: "/pay".into(),
                methods: vec!["POST".into()],
                timeout_ms: Some(300),
                retry: Some(proto::RetryPolicy {
                    non_idempotent: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            split: vec![],
        }
    }

    #[test]
    fn every_field_reaches_the_overrides() {
        let o = ServiceOverrides::from(&annotated());
        let s = &o.service;
        assert_eq!(s.timeout, Some(Duration::from_secs(2)));
        assert_eq!(s.per_try_timeout, None);
        assert_eq!(
            s.retry_attempts,
            Some(3),
            "the wire counts the first attempt"
        );
        let statuses = s.retry_statuses.clone().unwrap();
        assert!(statuses.contains(500) && statuses.contains(503) && !statuses.contains(504));
        let codes = s.retry_grpc_codes.unwrap();
        assert!(codes.contains(8) && !codes.contains(14));
        assert_eq!(s.retry_budget_min_per_second, Some(3));
        assert_eq!(s.retry_non_idempotent, Some(false));
        assert_eq!(s.breaker_failures, Some(2));
        assert_eq!(s.breaker_ejection, Some(Duration::from_secs(5)));
        assert_eq!(s.breaker_max_ejected_ratio, Some(0.34));
        assert_eq!(s.max_in_flight, Some(7));
        assert_eq!(s.max_pending, None);
        assert_eq!(o.routes.len(), 1);
        assert_eq!(o.routes[0].methods, vec![Method::POST]);
        assert_eq!(
            o.routes[0].overrides.timeout,
            Some(Duration::from_millis(300))
        );
        assert_eq!(o.routes[0].overrides.retry_non_idempotent, Some(true));
    }

    #[test]
    fn an_empty_policy_overrides_nothing() {
        assert_eq!(
            ServiceOverrides::from(&ServicePolicy::default()),
            ServiceOverrides::default()
        );
    }

    #[test]
    fn invalid_ranges_fall_back_to_the_client_default() {
        let policy = ServicePolicy {
            retry: Some(proto::RetryPolicy {
                statuses: Some(StatusRanges {
                    ranges: vec![StatusRange { start: 700, end: 2 }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(ServiceOverrides::from(&policy).service.retry_statuses, None);
    }

    fn routed(policy: ServicePolicy) -> Routed {
        Routed(Arc::new(LogicalService {
            name: "web.default:80".into(),
            origin: Origin::Discovery,
            endpoints: vec![],
            split: vec![],
            policy: Arc::new(policy),
        }))
    }

    async fn attached(
        routed: Option<Routed>,
        method: Method,
        path: &str,
    ) -> Option<Arc<ResiliencePolicy>> {
        let (upstream, _metrics) = upstream_with(Default::default());
        let svc = ServicePolicyLayer::new(upstream).layer(tower::service_fn(
            |req: Request<()>| async move {
                Ok::<_, Infallible>(req.extensions().get::<Arc<ResiliencePolicy>>().cloned())
            },
        ));
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        if let Some(routed) = routed {
            req.extensions_mut().insert(routed);
        }
        svc.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn requests_to_a_service_carry_its_policy_and_routes() {
        let get = attached(Some(routed(annotated())), Method::GET, "/pay")
            .await
            .unwrap();
        assert_eq!(get.timeout, Duration::from_secs(2));
        assert_eq!(get.retry.attempts, 3);
        assert!(!get.retry.non_idempotent);
        assert_eq!(get.breaker.failures, 2);
        let post = attached(Some(routed(annotated())), Method::POST, "/pay/now")
            .await
            .unwrap();
        assert_eq!(post.timeout, Duration::from_millis(300));
        assert!(post.retry.non_idempotent);
        assert_eq!(post.retry.attempts, 3, "the Service's, under the route's");
    }

    #[tokio::test]
    async fn without_a_service_policy_the_upstream_default_applies() {
        assert!(attached(None, Method::GET, "/").await.is_none());
        assert!(
            attached(Some(routed(ServicePolicy::default())), Method::GET, "/")
                .await
                .is_none()
        );
    }

    #[test]
    fn the_cache_converts_again_only_on_change() {
        let cache = OverridesCache::default();
        let first = Arc::new(annotated());
        let a = cache.get(&first);
        assert!(Arc::ptr_eq(&a, &cache.get(&first)));
        let mut changed = annotated();
        changed.timeout_ms = Some(9_000);
        let b = cache.get(&Arc::new(changed));
        assert_eq!(b.service.timeout, Some(Duration::from_secs(9)));
    }
}
