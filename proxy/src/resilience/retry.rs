//! Retries: a failed attempt is sent again, up to the policy's attempts, when
//! - the connection could not be made, or the peer refused the HTTP/2 stream (never processed:
//!   any method);
//! - the response status is retryable (default 502-504), or a trailers-only gRPC response has a
//!   retryable `grpc-status` (default UNAVAILABLE), or the connection broke or the per-try
//!   timeout struck before a response: only idempotent methods, unless the policy allows
//!   non-idempotent ones. gRPC codes are the user's statement of what is safe and apply to any
//!   method (every gRPC call is a POST).
//!
//! Each retry takes from the upstream's budget, waits an exponential backoff with full jitter,
//! and names the endpoints that failed (`FailedEndpoints`) so the balancer can prefer others.
//! Only bodies up to 64 KiB are replayed (see `replay`); a gRPC status in trailers after a
//! streamed body is not seen here, since retrying it would mean holding the response back.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use tower::{Layer, Service, ServiceExt};
use tracing::debug;

use crate::backoff::{ExponentialBackoff, jitter_rng};
use crate::connect::ConnectError;
use crate::http::error::ProxyError;
use crate::http::extensions::AttemptedEndpoint;
use crate::http::extensions::FailedEndpoints;
use crate::http::extensions::ServedBy;
use crate::http::grpc::is_grpc;
use crate::http::hop_by_hop::is_upgrade_request;
use crate::resilience::error::ResilienceError;
use crate::resilience::policy::RetryPolicy;
use crate::resilience::replay::{MAX_REPLAY_BYTES, ReplayBody};
use crate::resilience::stream_idle::StreamProgress;
use crate::resilience::upstream::UpstreamState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Clone)]
pub struct RetryLayer {
    upstream: Arc<UpstreamState>,
}

impl RetryLayer {
    pub fn new(upstream: Arc<UpstreamState>) -> Self {
        RetryLayer { upstream }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            upstream: self.upstream.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    upstream: Arc<UpstreamState>,
}

impl<S, B, RB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = ProxyError;
    type Future = BoxFuture<Result<Response<RB>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let upstream = self.upstream.clone();
        let policy = upstream.policy_for(&req);
        // This service was made ready for this request: take it along, leave a fresh clone.
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            upstream.budget.deposit();
            let retry = &policy.retry;
            let capacity = if retry.attempts == 0 || is_upgrade_request(&req) {
                0
            } else {
                MAX_REPLAY_BYTES
            };
            let (parts, body) = req.into_parts();
            let body = ReplayBody::new(body, capacity);
            let body = match parts.extensions.get::<Arc<StreamProgress>>() {
                Some(progress) => body.with_progress(progress.clone()),
                None => body,
            };
            let grpc = is_grpc(&parts.headers);
            let method_allows = retry.non_idempotent || is_idempotent(&parts.method);
            let mut next_body = body.try_clone();
            let template = next_body.as_ref().map(|_| {
                let mut head = Request::new(());
                *head.method_mut() = parts.method.clone();
                *head.uri_mut() = parts.uri.clone();
                *head.version_mut() = parts.version;
                *head.headers_mut() = parts.headers.clone();
                *head.extensions_mut() = parts.extensions.clone();
                head
            });
            let mut attempted = AttemptedEndpoint::default();
            let mut first = Request::from_parts(parts, body);
            first.extensions_mut().insert(attempted.clone());
            let mut result = svc.call(first).await;
            let mut failed = Vec::new();
            for attempt in 1..=retry.attempts {
                let Some(reason) = retry_reason(&result, retry, grpc, method_allows) else {
                    break;
                };
                let (Some(template), Some(body)) = (&template, next_body.take()) else {
                    break;
                };
                if !body.is_replayable() {
                    debug!(
                        reason,
                        "not retrying: the request body was too large to keep"
                    );
                    break;
                }
                if !upstream
                    .budget
                    .try_withdraw(retry.budget_ratio, retry.budget_min_per_second)
                {
                    upstream.metrics.budget_exhausted();
                    debug!(reason, "not retrying: the retry budget is used up");
                    break;
                }
                upstream.metrics.retry();
                if let Some(addr) = endpoint_of(&result).or_else(|| attempted.0.get().copied()) {
                    failed.push(addr);
                }
                // Let go of the failed response (and its connection) before waiting.
                drop(result);
                tokio::time::sleep(backoff(retry).delay(attempt, &mut jitter_rng())).await;
                debug!(reason, attempt, "retrying");
                next_body = body.try_clone();
                let mut req = Request::from_parts(template_parts(template), body);
                req.extensions_mut().insert(FailedEndpoints(failed.clone()));
                attempted = AttemptedEndpoint::default();
                req.extensions_mut().insert(attempted.clone());
                result = match svc.ready().await {
                    Ok(ready) => ready.call(req).await,
                    Err(err) => Err(err),
                };
            }
            result
        })
    }
}

fn template_parts(template: &Request<()>) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = template.method().clone();
    *req.uri_mut() = template.uri().clone();
    *req.version_mut() = template.version();
    *req.headers_mut() = template.headers().clone();
    *req.extensions_mut() = template.extensions().clone();
    req.into_parts().0
}

/// Why this outcome may be retried, or `None`.
fn retry_reason<RB>(
    result: &Result<Response<RB>, ProxyError>,
    policy: &RetryPolicy,
    grpc: bool,
    method_allows: bool,
) -> Option<&'static str> {
    match result {
        Ok(resp) => {
            if grpc && let Some(code) = grpc_status(resp.headers()) {
                return policy.grpc_codes.contains(code).then_some("grpc status");
            }
            (method_allows && policy.statuses.contains(resp.status().as_u16()))
                .then_some("response status")
        }
        Err(ProxyError::Connect(_) | ProxyError::Handshake { .. }) => Some("connect failure"),
        Err(ProxyError::Request { source, .. }) if is_refused_stream(source) => {
            Some("refused stream")
        }
        Err(ProxyError::Request { .. }) => method_allows.then_some("connection failure"),
        Err(ProxyError::Resilience(ResilienceError::PerTryTimeout { .. })) => {
            method_allows.then_some("per-try timeout")
        }
        Err(_) => None,
    }
}

fn endpoint_of<RB>(result: &Result<Response<RB>, ProxyError>) -> Option<SocketAddr> {
    match result {
        Ok(resp) => resp.extensions().get::<ServedBy>().map(|s| s.0),
        Err(ProxyError::Connect(
            ConnectError::Timeout { addr, .. } | ConnectError::Failed { addr, .. },
        ))
        | Err(ProxyError::Handshake { addr, .. })
        | Err(ProxyError::Request { addr, .. }) => Some(*addr),
        Err(_) => None,
    }
}

/// An HTTP/2 peer that refuses a stream has not processed it.
fn is_refused_stream(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = err.source();
    }
    false
}

pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The policy's backoff between attempts (`WEFT_RETRY_BACKOFF`, capped at its maximum).
fn backoff(policy: &RetryPolicy) -> ExponentialBackoff {
    ExponentialBackoff::new(policy.backoff_base, policy.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::policy::PolicyOverrides;
    use crate::test_support::bodies::chunked;
    use crate::test_support::upstream::upstream_with;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::sync::Mutex;

    type Seen = Arc<Mutex<Vec<(Vec<u8>, Option<FailedEndpoints>)>>>;
    type Outcome = Box<dyn Fn() -> Result<Response<Full<Bytes>>, ProxyError> + Send + Sync>;

    /// An upstream that answers attempt i with `outcomes[i]` (the last one repeats) and records
    /// the body and failed endpoints each attempt carried.
    type TestUpstream = tower::util::BoxCloneService<
        Request<ReplayBody<Full<Bytes>>>,
        Response<Full<Bytes>>,
        ProxyError,
    >;

    fn upstream_answering(outcomes: Vec<Outcome>) -> (TestUpstream, Seen) {
        let seen: Seen = Arc::default();
        let outcomes = Arc::new(outcomes);
        let record = seen.clone();
        let svc = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
            let seen = record.clone();
            let outcomes = outcomes.clone();
            async move {
                let failed = req.extensions().get::<FailedEndpoints>().cloned();
                let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((body, failed));
                    seen.len()
                };
                (outcomes[(n - 1).min(outcomes.len() - 1)])()
            }
        });
        (TestUpstream::new(svc), seen)
    }

    fn status(code: u16) -> Outcome {
        Box::new(move || {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
            resp.extensions_mut()
                .insert(ServedBy("127.0.0.9:80".parse().unwrap()));
            Ok(resp)
        })
    }

    fn refused() -> Outcome {
        Box::new(|| {
            Err(ProxyError::Connect(ConnectError::Failed {
                addr: "127.0.0.8:80".parse().unwrap(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            }))
        })
    }

    fn request(method: Method, body: &'static [u8]) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri("/")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_is_retried_with_the_same_body_and_the_failed_endpoint_named() {
        let (upstream, metrics) = upstream_with(PolicyOverrides::default());
        let (svc, seen) = upstream_answering(vec![status(503), status(200)]);
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(request(Method::GET, b"hello"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].0, b"hello");
        assert_eq!(seen[0].1, None);
        assert_eq!(
            seen[1].1,
            Some(FailedEndpoints(vec!["127.0.0.9:80".parse().unwrap()]))
        );
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"weft_retry_total{direction="outbound",upstream="test"} 1"#),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_timed_out_names_the_endpoint_the_balancer_chose() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides::default());
        let seen: Arc<Mutex<Vec<Option<FailedEndpoints>>>> = Arc::default();
        let record = seen.clone();
        let svc = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
            let mut seen = record.lock().unwrap();
            seen.push(req.extensions().get::<FailedEndpoints>().cloned());
            // As the balancer does: the attempt goes to 10.0.0.N, and the first times out.
            let n = seen.len();
            if let Some(AttemptedEndpoint(at)) = req.extensions().get::<AttemptedEndpoint>() {
                at.set(format!("10.0.0.{n}:80").parse().unwrap()).unwrap();
            }
            let result = if n == 1 {
                Err(ProxyError::Resilience(ResilienceError::PerTryTimeout {
                    after: std::time::Duration::from_millis(500),
                }))
            } else {
                Ok(Response::new(Full::new(Bytes::new())))
            };
            std::future::ready(result)
        });
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(request(Method::GET, b""))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[1],
            Some(FailedEndpoints(vec!["10.0.0.1:80".parse().unwrap()]))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_capped() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            retry_attempts: Some(3),
            ..Default::default()
        });
        let (svc, seen) = upstream_answering(vec![status(502)]);
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(request(Method::GET, b""))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn unlisted_statuses_are_not_retried() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides::default());
        let (svc, seen) = upstream_answering(vec![status(500), status(200)]);
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(request(Method::GET, b""))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn post_is_not_retried_on_a_status_unless_allowed() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides::default());
        let (svc, seen) = upstream_answering(vec![status(503), status(200)]);
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(request(Method::POST, b"order"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(seen.lock().unwrap().len(), 1);

        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            retry_non_idempotent: Some(true),
            ..Default::default()
        });
        let (svc, seen) = upstream_answering(vec![status(503), status(200)]);
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(request(Method::POST, b"order"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(seen.lock().unwrap()[1].0, b"order");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_failure_is_retried_for_any_method() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides::default());
        let (svc, seen) = upstream_answering(vec![refused(), status(201)]);
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(request(Method::POST, b"x"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[1].1,
            Some(FailedEndpoints(vec!["127.0.0.8:80".parse().unwrap()]))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_stops_retries_and_is_counted() {
        let (upstream, metrics) = upstream_with(PolicyOverrides {
            retry_budget_ratio: Some(0.0),
            retry_budget_min_per_second: Some(0),
            ..Default::default()
        });
        let (svc, seen) = upstream_answering(vec![status(503), status(200)]);
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(request(Method::GET, b""))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert!(metrics.render().unwrap().contains(
            r#"weft_retry_budget_exhausted_total{direction="outbound",upstream="test"} 1"#
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_a_storm() {
        // Every attempt fails: 100 requests may add at most 20% + 0 retries.
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            retry_budget_min_per_second: Some(0),
            ..Default::default()
        });
        let (svc, seen) = upstream_answering(vec![status(503)]);
        let retry = RetryLayer::new(upstream).layer(svc);
        for _ in 0..100 {
            retry
                .clone()
                .oneshot(request(Method::GET, b""))
                .await
                .unwrap();
        }
        let attempts = seen.lock().unwrap().len();
        assert!((100..=120).contains(&attempts), "{attempts}");
        assert!(attempts > 100, "some retries are allowed: {attempts}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_64k_is_not_retried() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides::default());
        let seen = Arc::new(Mutex::new(0));
        let count = seen.clone();
        let svc = tower::service_fn(move |req: Request<ReplayBody<_>>| {
            let count = count.clone();
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body.len(), 3 * 32 * 1024);
                *count.lock().unwrap() += 1;
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, ProxyError>(resp)
            }
        });
        static CHUNK: [u8; 32 * 1024] = [7; 32 * 1024];
        let req = Request::put("/")
            .body(chunked(vec![&CHUNK, &CHUNK, &CHUNK]))
            .unwrap();
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(*seen.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_unavailable_in_trailers_only_response_is_retried() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides::default());
        let unavailable: Outcome = Box::new(|| {
            let mut resp = Response::new(Full::new(Bytes::new()));
            resp.headers_mut()
                .insert("grpc-status", "14".parse().unwrap());
            Ok(resp)
        });
        let internal: Outcome = Box::new(|| {
            let mut resp = Response::new(Full::new(Bytes::new()));
            resp.headers_mut()
                .insert("grpc-status", "13".parse().unwrap());
            Ok(resp)
        });
        let (svc, seen) = upstream_answering(vec![unavailable, internal]);
        let mut req = request(Method::POST, b"\0\0\0\0\0");
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        let resp = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(req)
            .await
            .unwrap();
        // Retried once; INTERNAL is not retryable by default.
        assert_eq!(resp.headers()["grpc-status"], "13");
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_attempts_disables_retries() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides {
            retry_attempts: Some(0),
            ..Default::default()
        });
        let (svc, seen) = upstream_answering(vec![refused(), status(200)]);
        let err = RetryLayer::new(upstream)
            .layer(svc)
            .oneshot(request(Method::GET, b""))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = crate::resilience::policy::ResiliencePolicy::default().retry;
        let mut rng = SmallRng::seed_from_u64(7);
        for attempt in 1..30 {
            let ceiling =
                (policy.backoff_base * (1 << (attempt - 1).min(20))).min(policy.backoff_max);
            for _ in 0..50 {
                assert!(backoff(&policy).delay(attempt, &mut rng) <= ceiling);
            }
        }
        // Jitter: not every draw is the same.
        let draws: std::collections::HashSet<_> = (0..20)
            .map(|_| backoff(&policy).delay(3, &mut rng))
            .collect();
        assert!(draws.len() > 10);
    }

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
