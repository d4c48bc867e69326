//! The inbound rate limit: token buckets, one overall and/or one per client (its mTLS identity,
//! else its IP address). A bucket holds up to the rate's count and refills evenly over its
//! period; a request finding it empty gets 429 `weft-error: rate limited` (gRPC:
//! RESOURCE_EXHAUSTED).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tower::{Layer, Service};
use weft_settings::Rate;

use crate::direction::Direction;
use crate::http::error::ProxyError;
use crate::http::extensions::ClientIdentity;
use crate::metrics::resilience::ResilienceMetrics;
use crate::resilience::error::ResilienceError;

/// Per-client buckets kept before full (idle) ones are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn full(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(rate.requests),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second()).min(f64::from(rate.requests));
        self.last = now;
    }

    fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ClientKey {
    Identity(Arc<str>),
    Ip(IpAddr),
}

type ClientBuckets = Mutex<HashMap<ClientKey, TokenBucket>>;

pub struct RateLimiter {
    overall: Option<(Rate, Mutex<TokenBucket>, Counter)>,
    per_client: Option<(Rate, ClientBuckets, Counter)>,
}

impl RateLimiter {
    /// `None` when neither limit is set.
    pub fn new(
        overall: Option<Rate>,
        per_client: Option<Rate>,
        direction: Direction,
        metrics: &ResilienceMetrics,
    ) -> Option<Self> {
        if overall.is_none() && per_client.is_none() {
            return None;
        }
        let now = Instant::now();
        Some(RateLimiter {
            overall: overall.map(|rate| {
                (
                    rate,
                    Mutex::new(TokenBucket::full(rate, now)),
                    metrics.rate_limited(direction, "overall"),
                )
            }),
            per_client: per_client.map(|rate| {
                (
                    rate,
                    Mutex::new(HashMap::new()),
                    metrics.rate_limited(direction, "per_client"),
                )
            }),
        })
    }

    /// Takes a token for a request of `client`; the error names the limit that refused it.
    fn check(&self, client: ClientKey) -> Result<(), ResilienceError> {
        let now = Instant::now();
        if let Some((rate, clients, refused)) = &self.per_client {
            let mut clients = clients.lock().unwrap_or_else(PoisonError::into_inner);
            if clients.len() >= MAX_TRACKED_CLIENTS {
                clients.retain(|_, bucket| {
                    bucket.refill(*rate, now);
                    bucket.tokens < f64::from(rate.requests)
                });
            }
            let bucket = clients
                .entry(client)
                .or_insert_with(|| TokenBucket::full(*rate, now));
            if !bucket.try_take(*rate, now) {
                refused.inc();
                return Err(ResilienceError::RateLimited {
                    rate: describe(*rate),
                    setting: "WEFT_INBOUND_RATE_LIMIT_PER_CLIENT",
                });
            }
        }
        if let Some((rate, bucket, refused)) = &self.overall {
            let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
            if !bucket.try_take(*rate, now) {
                refused.inc();
                return Err(ResilienceError::RateLimited {
                    rate: describe(*rate),
                    setting: "WEFT_INBOUND_RATE_LIMIT",
                });
            }
        }
        Ok(())
    }
}

fn describe(rate: Rate) -> String {
    match rate.per.as_secs() {
        60 => format!("{}/m", rate.requests),
        3600 => format!("{}/h", rate.requests),
        _ => format!("{}/s", rate.requests),
    }
}

/// Per connection: `peer` is the key when the request carries no `ClientIdentity`.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<RateLimiter>>,
    peer: IpAddr,
}

impl RateLimitLayer {
    pub fn new(limiter: Option<Arc<RateLimiter>>, peer: IpAddr) -> Self {
        RateLimitLayer { limiter, peer }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            peer: self.peer,
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Option<Arc<RateLimiter>>,
    peer: IpAddr,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Error = ProxyError>,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = RateLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(limiter) = &self.limiter {
            let client = match req.extensions().get::<ClientIdentity>() {
                Some(id) => ClientKey::Identity(id.0.clone()),
                None => ClientKey::Ip(self.peer),
            };
            if let Err(err) = limiter.check(client) {
                return RateLimitFuture::Refused {
                    err: Some(err.into()),
                };
            }
        }
        RateLimitFuture::Passed {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    #[project = RateLimitProj]
    pub enum RateLimitFuture<F> {
        Refused { err: Option<ProxyError> },
        Passed { #[pin] inner: F },
    }
}

impl<F, R> Future for RateLimitFuture<F>
where
    F: Future<Output = Result<R, ProxyError>>,
{
    type Output = Result<R, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RateLimitProj::Passed { inner } => inner.poll(cx),
            RateLimitProj::Refused { err } => match err.take() {
                Some(err) => Poll::Ready(Err(err)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use http::StatusCode;
    use std::time::Duration;
    use tower::ServiceExt;

    fn ok_service() -> impl Service<Request<()>, Response = (), Error = ProxyError> + Clone {
        tower::service_fn(|_req: Request<()>| async { Ok::<_, ProxyError>(()) })
    }

    fn rate(s: &str) -> Rate {
        weft_settings::parse_rate(s).unwrap()
    }

    async fn passed(layer: &RateLimitLayer, req: Request<()>) -> Result<(), ProxyError> {
        layer.layer(ok_service()).oneshot(req).await
    }

    #[tokio::test(start_paused = true)]
    async fn overall_limit_refuses_past_the_burst_and_refills() {
        let metrics = Metrics::new();
        let limiter = RateLimiter::new(
            Some(rate("2/s")),
            None,
            Direction::Inbound,
            &metrics.resilience,
        );
        let layer = RateLimitLayer::new(limiter.map(Arc::new), "127.0.0.1".parse().unwrap());
        assert!(passed(&layer, Request::new(())).await.is_ok());
        assert!(passed(&layer, Request::new(())).await.is_ok());
        let err = passed(&layer, Request::new(())).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.short_cause(), "rate limited");
        assert!(
            err.to_string().contains("2/s (WEFT_INBOUND_RATE_LIMIT)"),
            "{err}"
        );
        // Half a second later one token is back.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(passed(&layer, Request::new(())).await.is_ok());
        assert!(passed(&layer, Request::new(())).await.is_err());
        assert!(
            metrics
                .render()
                .unwrap()
                .contains(r#"weft_rate_limited_total{direction="inbound",scope="overall"} 2"#)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_client_limit_keys_on_identity_then_ip() {
        let metrics = Metrics::new();
        let limiter = RateLimiter::new(
            None,
            Some(rate("1/m")),
            Direction::Inbound,
            &metrics.resilience,
        )
        .map(Arc::new);
        let a = RateLimitLayer::new(limiter.clone(), "198.18.0.1".parse().unwrap());
        let b = RateLimitLayer::new(limiter.clone(), "198.18.0.2".parse().unwrap());
        assert!(passed(&a, Request::new(())).await.is_ok());
        assert!(passed(&a, Request::new(())).await.is_err());
        assert!(passed(&b, Request::new(())).await.is_ok(), "another client");
        // Same IP as `a`, but an identity of its own.
        let mut req = Request::new(());
        req.extensions_mut().insert(ClientIdentity(
            "spiffe://cluster.local/ns/default/sa/web".into(),
        ));
        assert!(passed(&a, req).await.is_ok());
    }

    #[tokio::test]
    async fn no_limit_configured_passes_everything() {
        let metrics = Metrics::new();
        assert!(RateLimiter::new(None, None, Direction::Inbound, &metrics.resilience).is_none());
        let layer = RateLimitLayer::new(None, "127.0.0.1".parse().unwrap());
        for _ in 0..100 {
            assert!(passed(&layer, Request::new(())).await.is_ok());
        }
    }
}
