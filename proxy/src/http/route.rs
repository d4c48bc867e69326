//! The route layer: attaches the request's [`Target`] (the connection's original destination)
//! and, when discovery knows it, the logical service it goes to ([`Routed`]), which the balancer
//! (further in) turns into an endpoint.
//!
//! The connection's original destination names a logical service, or else the request's
//! authority does (`http://catalog:8080` when the app resolved the name itself; a DNS-only name
//! only when the app's own destination is among its addresses). Without an answer (not in the
//! mesh, discovery down with nothing cached, no endpoints) the request goes to the original
//! destination exactly as the app sent it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::watch;
use tower::{Layer, Service};

use crate::discovery::cache::Discovery;
use crate::discovery::{Key, Origin, Resolution, Service as LogicalService};
use crate::http::extensions::Routed;
use crate::http::target::Target;

/// Discovery's view of one connection: its original destination's resolution (followed as it
/// changes) and that of the last authority its requests named.
#[derive(Clone)]
pub struct Router {
    discovery: Discovery,
    original: SocketAddr,
    wait: Duration,
    profile: watch::Receiver<Resolution>,
    authority: Option<(Key, watch::Receiver<Resolution>)>,
}

impl Router {
    pub fn new(
        discovery: Discovery,
        original: SocketAddr,
        wait: Duration,
        profile: watch::Receiver<Resolution>,
    ) -> Self {
        Router {
            discovery,
            original,
            wait,
            profile,
            authority: None,
        }
    }

    /// The service for the original destination, if it is one.
    fn original_service(&self) -> Option<Arc<LogicalService>> {
        usable(&self.profile.borrow(), self.original)
    }

    /// The watch for the request's authority when it names something other than the original
    /// destination (kept per connection: requests on one connection usually share it).
    fn authority_watch(
        &mut self,
        req: &Request<impl Sized>,
    ) -> Option<&mut watch::Receiver<Resolution>> {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok())?;
        let key = Key::from_authority(authority, self.original.port())?;
        if key == Key::Addr(self.original) {
            return None;
        }
        if self
            .authority
            .as_ref()
            .is_none_or(|(known, _)| *known != key)
        {
            let rx = self.discovery.watch(key.clone());
            self.authority = Some((key, rx));
        }
        self.authority.as_mut().map(|(_, rx)| rx)
    }
}

/// A service is used when it has endpoints and, for DNS answers, includes the app's destination.
fn usable(resolution: &Resolution, original: SocketAddr) -> Option<Arc<LogicalService>> {
    let service = resolution.service()?;
    let trusted = service.origin == Origin::Discovery || service.has_endpoint(original);
    (trusted && !service.endpoints.is_empty()).then(|| service.clone())
}

#[derive(Clone)]
pub struct RouteLayer {
    target: Target,
    router: Option<Router>,
}

impl RouteLayer {
    pub fn new(target: Target, router: Option<Router>) -> Self {
        RouteLayer { target, router }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Route<S> {
        Route {
            target: self.target,
            router: self.router.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Route<S> {
    target: Target,
    router: Option<Router>,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for Route<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let target = self.target;
        let Some(router) = self.router.as_mut() else {
            // Inbound: no routing, so no clone of the stack below.
            req.extensions_mut().insert(target);
            return Box::pin(self.inner.call(req));
        };
        // The service polled ready is the one to call; a clone takes its place.
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        let original = router.original;
        let mut service = router.original_service();
        // Only when the destination is no service: the authority is a hint, never an override.
        let mut pending = None;
        if service.is_none() {
            let wait = router.wait;
            if let Some(rx) = router.authority_watch(&req) {
                match &*rx.borrow() {
                    Resolution::Pending => pending = Some((rx.clone(), wait)),
                    answered => service = usable(answered, original),
                }
            }
        }
        Box::pin(async move {
            if let Some((mut rx, wait)) = pending {
                let answered =
                    tokio::time::timeout(wait, rx.wait_for(|r| !matches!(r, Resolution::Pending)))
                        .await;
                if let Ok(Ok(answer)) = answered {
                    service = usable(&answer, original);
                }
            }
            req.extensions_mut().insert(target);
            if let Some(service) = service {
                req.extensions_mut().insert(Routed(service));
            }
            inner.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::cache::{CacheConfig, Feed, Source};
    use crate::discovery::endpoints::EndpointSpec;
    use crate::http::error::ProxyError;
    use crate::http::target::HttpVersion;
    use crate::metrics::discovery::DiscoveryMetrics;
    use crate::test_support::upstream::upstream_with;
    use std::collections::HashMap;
    use tower::ServiceExt;

    /// Answers from a fixed table: key -> endpoints (empty = pass through).
    struct Table(HashMap<Key, (Origin, Vec<&'static str>)>);

    impl Source for Table {
        fn watch(self: Arc<Self>, key: Key, feed: Feed) -> BoxFuture<()> {
            Box::pin(async move {
                match self.0.get(&key) {
                    Some((origin, addrs)) => {
                        let specs: Vec<_> = addrs
                            .iter()
                            .map(|a| EndpointSpec::plain(a.parse().unwrap()))
                            .collect();
                        feed.publish_service(
                            key.to_string().into(),
                            *origin,
                            &specs,
                            &[],
                            Default::default(),
                        )
                    }
                    None => feed.publish(Resolution::Passthrough),
                }
                std::future::pending::<()>().await;
            })
        }
    }

    fn discovery(entries: &[(Key, Origin, Vec<&'static str>)]) -> Discovery {
        let table = entries
            .iter()
            .map(|(k, o, a)| (k.clone(), (*o, a.clone())))
            .collect();
        Discovery::new(
            Arc::new(Table(table)),
            CacheConfig {
                wait: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(60),
            },
            DiscoveryMetrics::unregistered(),
        )
    }

    fn target(addr: &str) -> Target {
        Target {
            addr: addr.parse().unwrap(),
            version: HttpVersion::Http1,
        }
    }

    fn echo_target() -> impl Service<
        Request<()>,
        Response = Response<Option<Target>>,
        Error = ProxyError,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|req: Request<()>| async move {
            Ok::<_, ProxyError>(Response::new(req.extensions().get::<Target>().copied()))
        })
    }

    async fn route_of(layer: &RouteLayer, req: Request<()>) -> SocketAddr {
        let (upstream, _metrics) = upstream_with(Default::default());
        let svc = layer.layer(crate::http::balance::Balance::new(echo_target(), upstream));
        let resp = svc.oneshot(req).await.unwrap();
        resp.into_body().unwrap().addr
    }

    async fn router(d: &Discovery, original: &str) -> Router {
        let original: SocketAddr = original.parse().unwrap();
        let (_, rx) = d.resolve(Key::Addr(original)).await;
        Router::new(d.clone(), original, Duration::from_secs(1), rx)
    }

    fn key(s: &str) -> Key {
        Key::from_authority(s, 80).unwrap()
    }

    #[tokio::test]
    async fn without_discovery_the_original_destination() {
        let layer = RouteLayer::new(target("127.0.0.2:80"), None);
        let addr = route_of(&layer, Request::new(())).await;
        assert_eq!(addr, "127.0.0.2:80".parse().unwrap());
    }

    #[tokio::test]
    async fn a_known_destination_is_balanced_over_its_endpoints() {
        let d = discovery(&[(
            key("10.96.0.1:80"),
            Origin::Discovery,
            vec!["10.1.0.1:8080", "10.1.0.2:8080"],
        )]);
        let layer = RouteLayer::new(
            target("10.96.0.1:80"),
            Some(router(&d, "10.96.0.1:80").await),
        );
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            seen.insert(route_of(&layer, Request::new(())).await);
        }
        let expected: std::collections::HashSet<SocketAddr> = [
            "10.1.0.1:8080".parse().unwrap(),
            "10.1.0.2:8080".parse().unwrap(),
        ]
        .into();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn unknown_destinations_pass_through() {
        let d = discovery(&[]);
        let layer = RouteLayer::new(
            target("10.96.0.9:80"),
            Some(router(&d, "10.96.0.9:80").await),
        );
        let req = Request::get("http://elsewhere:80/").body(()).unwrap();
        assert_eq!(route_of(&layer, req).await, "10.96.0.9:80".parse().unwrap());
    }

    #[tokio::test]
    async fn a_dns_name_is_balanced_only_when_it_includes_the_destination() {
        let d = discovery(&[
            (
                key("headless:8080"),
                Origin::Dns,
                vec!["10.1.0.1:8080", "10.1.0.2:8080"],
            ),
            (key("evil:8080"), Origin::Dns, vec!["10.6.6.6:8080"]),
        ]);
        let layer = RouteLayer::new(
            target("10.1.0.1:8080"),
            Some(router(&d, "10.1.0.1:8080").await),
        );
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let req = Request::get("/")
                .header("host", "headless:8080")
                .body(())
                .unwrap();
            seen.insert(route_of(&layer, req).await);
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        let req = Request::get("/")
            .header("host", "evil:8080")
            .body(())
            .unwrap();
        assert_eq!(
            route_of(&layer, req).await,
            "10.1.0.1:8080".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn a_discovered_authority_routes_when_the_destination_is_unknown() {
        let d = discovery(&[(
            key("catalog:8080"),
            Origin::Discovery,
            vec!["10.1.0.7:8080"],
        )]);
        let layer = RouteLayer::new(
            target("10.9.9.9:8080"),
            Some(router(&d, "10.9.9.9:8080").await),
        );
        let req = Request::get("/")
            .header("host", "catalog:8080")
            .body(())
            .unwrap();
        assert_eq!(
            route_of(&layer, req).await,
            "10.1.0.7:8080".parse().unwrap()
        );
    }
}
