//! The balancer layer: sends each request (each attempt, as it sits inside retries) to one
//! endpoint of the logical service the route layer chose — through the service's traffic split
//! when it has one, then by power of two choices over peak-EWMA load — and feeds the outcome
//! back into that endpoint's load. Requests without a service keep the route's target (the
//! original destination). A removed endpoint is never picked again, while requests already on it
//! finish.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::error_response::WEFT_ERROR;
use super::route::Routed;
use super::target::Target;
use crate::balance;
use crate::discovery::{Endpoint, Service as LogicalService};
use crate::resilience::retry::FailedEndpoints;

/// The endpoint for one request to `service`: through its split (when the chosen backend has
/// endpoints), then by the balancer.
pub fn pick(service: &LogicalService) -> Option<Endpoint> {
    if !service.split.is_empty()
        && let Some(index) = balance::pick_split(service.split.iter().map(|b| b.weight))
    {
        let backend = service.split[index].resolution.borrow().service().cloned();
        if let Some(backend) = backend.filter(|b| !b.endpoints.is_empty()) {
            return balance::pick_endpoint(&backend).cloned();
        }
    }
    balance::pick_endpoint(service).cloned()
}

/// Retries try another endpoint when there is one: a few fresh picks, then whatever comes.
fn pick_avoiding(service: &LogicalService, failed: Option<&FailedEndpoints>) -> Option<Endpoint> {
    let failed = match failed {
        Some(FailedEndpoints(failed)) if !failed.is_empty() => failed,
        _ => return pick(service),
    };
    let mut endpoint = pick(service)?;
    for _ in 0..3 {
        if !failed.contains(&endpoint.addr) {
            break;
        }
        endpoint = pick(service)?;
    }
    Some(endpoint)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct BalanceLayer;

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Balance<S> {
        Balance::new(inner)
    }
}

#[derive(Clone, Debug)]
pub struct Balance<S> {
    inner: S,
}

impl<S> Balance<S> {
    pub fn new(inner: S) -> Self {
        Balance { inner }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for Balance<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let failed = req.extensions().get::<FailedEndpoints>();
        let endpoint = req
            .extensions()
            .get::<Routed>()
            .and_then(|Routed(service)| pick_avoiding(service, failed));
        let Some(endpoint) = endpoint else {
            return Box::pin(self.inner.call(req));
        };
        if let Some(target) = req.extensions_mut().get_mut::<Target>() {
            target.addr = endpoint.addr;
        }
        endpoint.requests.inc();
        let mut in_flight = endpoint.load.start();
        req.extensions_mut().insert(endpoint);
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            match &result {
                // A response the proxy made up: the endpoint failed, whatever that cost.
                Ok(resp) if resp.headers().contains_key(&WEFT_ERROR) => in_flight.fail(),
                Ok(_) => in_flight.complete(),
                Err(_) => in_flight.fail(),
            }
            result
        })
    }
}
