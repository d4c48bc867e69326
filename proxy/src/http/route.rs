//! The route layer: attaches the request's [`Target`]. It is where routing by authority will
//! happen once discovery exists; for now every request goes to the connection's original
//! destination.

use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use super::target::Target;

#[derive(Clone, Debug)]
pub struct RouteLayer {
    target: Target,
}

impl RouteLayer {
    pub fn new(target: Target) -> Self {
        RouteLayer { target }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Route<S> {
        Route {
            target: self.target,
            inner,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Route<S> {
    target: Target,
    inner: S,
}

impl<S, B> Service<Request<B>> for Route<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.target);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::target::HttpVersion;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test]
    async fn attaches_the_target() {
        let target = Target {
            addr: "127.0.0.2:80".parse().unwrap(),
            version: HttpVersion::Http1,
        };
        let inner = tower::service_fn(|req: Request<()>| async move {
            Ok::<_, Infallible>(req.extensions().get::<Target>().copied())
        });
        let seen = RouteLayer::new(target)
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(seen, Some(target));
    }
}
