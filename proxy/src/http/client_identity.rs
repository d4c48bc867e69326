//! Inbound HTTP: applies the inbound policy to each request and tells the app who is calling.
//! The caller's verified identity goes to the app in `weft-client-id` (and to the rate limiter as
//! a [`ClientIdentity`] extension); a `weft-client-id` arriving from the caller is always removed
//! first, so the app can trust the header. Refused requests get 403 with a `weft-error`, are
//! logged with the caller and counted.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use tower::{Layer, Service};
use tracing::warn;

use crate::http::error::ProxyError;
use crate::http::extensions::ClientIdentity;
use crate::inbound_policy::InboundPolicy;
use crate::inbound_policy::Refusal;
use crate::metrics::tls::TlsMetrics;

/// The request header carrying the caller's SPIFFE id to the app.
pub static CLIENT_ID: HeaderName = HeaderName::from_static("weft-client-id");

/// One inbound connection's caller, as far as the policy is concerned.
#[derive(Clone)]
pub struct Caller {
    pub policy: Arc<InboundPolicy>,
    /// The app port the requests are for.
    pub port: u16,
    /// The identity the mTLS handshake proved; `None` for plaintext.
    pub identity: Option<Arc<str>>,
    pub peer: SocketAddr,
    pub metrics: TlsMetrics,
}

/// Inbound connections have a caller; outbound ones (`None`) pass through untouched.
#[derive(Clone)]
pub struct ClientIdentityLayer {
    caller: Option<Caller>,
}

impl ClientIdentityLayer {
    pub fn new(caller: Option<Caller>) -> Self {
        ClientIdentityLayer { caller }
    }
}

impl<S> Layer<S> for ClientIdentityLayer {
    type Service = ClientIdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientIdentityService {
            inner,
            // The policy, port and identity are the connection's: one verdict serves every
            // request on it.
            verdict: self
                .caller
                .as_ref()
                .map_or(Ok(()), |c| c.policy.check(c.port, c.identity.as_deref())),
            header: self
                .caller
                .as_ref()
                .and_then(|c| c.identity.as_deref())
                .and_then(|id| HeaderValue::from_str(id).ok()),
            caller: self.caller.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ClientIdentityService<S> {
    inner: S,
    caller: Option<Caller>,
    header: Option<HeaderValue>,
    verdict: Result<(), Refusal>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for ClientIdentityService<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = ProxyError;
    type Future = BoxFuture<Result<Response<RB>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(caller) = &self.caller else {
            return Box::pin(self.inner.call(req));
        };
        if let Err(reason) = self.verdict {
            caller.metrics.refused(reason);
            warn!(
                peer = %caller.peer,
                client = caller.identity.as_deref().unwrap_or("(plaintext)"),
                port = caller.port,
                policy = %caller.policy.mode(),
                reason = reason.as_str(),
                method = %req.method(),
                path = req.uri().path(),
                "refused inbound request"
            );
            let err = ProxyError::Refused {
                reason,
                port: caller.port,
            };
            return Box::pin(async move { Err(err) });
        }
        let headers = req.headers_mut();
        headers.remove(&CLIENT_ID);
        if let (Some(value), Some(identity)) = (&self.header, &caller.identity) {
            headers.insert(CLIENT_ID.clone(), value.clone());
            req.extensions_mut()
                .insert(ClientIdentity(identity.clone()));
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;
    use weft_settings::{InboundPolicy as Mode, parse_inbound_authz};

    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

    fn caller(mode: Mode, authz: &str, identity: Option<&str>) -> Caller {
        Caller {
            policy: Arc::new(InboundPolicy::new(
                mode,
                parse_inbound_authz(authz).unwrap(),
            )),
            port: 8080,
            identity: identity.map(Arc::from),
            peer: "198.18.0.9:40000".parse().unwrap(),
            metrics: TlsMetrics::default(),
        }
    }

    /// Echoes what the app would see: the weft-client-id header and the rate limiter's key.
    async fn seen(
        caller: Caller,
        req: Request<()>,
    ) -> Result<(Option<String>, Option<ClientIdentity>), ProxyError> {
        let app = tower::service_fn(|req: Request<()>| async move {
            let header = req
                .headers()
                .get_all(&CLIENT_ID)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>();
            assert!(header.len() <= 1, "{header:?}");
            let ext = req.extensions().get::<ClientIdentity>().cloned();
            Ok::<_, ProxyError>(Response::new((header.into_iter().next(), ext)))
        });
        ClientIdentityLayer::new(Some(caller))
            .layer(app)
            .oneshot(req)
            .await
            .map(Response::into_body)
    }

    fn forged() -> Request<()> {
        Request::get("/")
            .header(
                "weft-client-id",
                "spiffe://cluster.local/ns/kube-system/sa/admin",
            )
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn mtls_callers_are_named_and_forgeries_replaced() {
        let (header, ext) = seen(caller(Mode::Strict, "", Some(WEB)), forged())
            .await
            .unwrap();
        assert_eq!(header.as_deref(), Some(WEB));
        assert_eq!(ext, Some(ClientIdentity(WEB.into())));
    }

    #[tokio::test]
    async fn plaintext_callers_lose_forged_headers() {
        let (header, ext) = seen(caller(Mode::Permissive, "", None), forged())
            .await
            .unwrap();
        assert_eq!(header, None);
        assert_eq!(ext, None);
    }

    #[tokio::test]
    async fn refusals_are_errors_the_client_sees_as_403() {
        let err = seen(caller(Mode::Strict, "", None), forged())
            .await
            .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
        assert!(matches!(
            err,
            ProxyError::Refused {
                reason: Refusal::Plaintext,
                ..
            }
        ));
        let other = "spiffe://cluster.local/ns/shop/sa/other";
        let err = seen(
            caller(Mode::Permissive, &format!("8080={WEB}"), Some(other)),
            forged(),
        )
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            ProxyError::Refused {
                reason: Refusal::Unauthorized,
                ..
            }
        ));
        assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
    }
}
