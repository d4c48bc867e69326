//! Serving a terminated mTLS connection from a peer proxy to the app:
//! - h2 transport: an HTTP/2 server whose requests are restored (see
//!   [`super::http_transport::from_transport`]) and sent to the app port each names, through the
//!   inbound stack of that port (policy, client identity, rate limit, metrics);
//! - tcp transport: the transport header names the app port; opaque bytes are copied to it, an
//!   HTTP/1 payload is served through the inbound stack like a plaintext HTTP/1 connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::{Service, ServiceExt};
use tracing::{debug, info, warn};

use crate::connection::plan::{self, Terminated as Carried};
use crate::detect::Protocol;
use crate::drain::Watch;
use crate::http::client_identity::Caller;
use crate::http::error_response::{ProxyBody, plain_answer};
use crate::http::mesh_encoding::from_transport;
use crate::http::stack;
use crate::http::stack::{Stack, StackParts};
use crate::http::target::{HttpVersion, Target};
use crate::inbound::InboundSide;
use crate::inbound_policy::Refusal;
use crate::labels::{PeerTls, Upstream};
use crate::opaque;
use crate::resilience::limits::Limited;
use crate::resilience::rate_limit::RateLimitLayer;
use crate::resilience::stream_idle::StreamIdleBody;
use crate::tls::accept::Terminated;
use crate::tls::transport::{Transport, TransportHeader};

/// Serves one terminated connection until it ends. `app_ip` is the pod's address, where the app
/// listens; `local` the address the connection arrived on.
pub async fn serve<I>(
    side: &InboundSide,
    terminated: Terminated<I>,
    peer: SocketAddr,
    app_ip: IpAddr,
    local: SocketAddr,
    watch: &mut Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Terminated {
        mut stream,
        client,
        transport,
    } = terminated;
    let common = &side.common;
    let client: Arc<str> = client.to_string().into();
    common
        .metrics
        .tls
        .connection(common.direction, transport.as_str());
    let stacks = InboundStacks {
        side: StackSource::of(side),
        app_ip,
        peer,
        client: client.clone(),
        stacks: Arc::new(Mutex::new(HashMap::new())),
    };
    match transport {
        Transport::H2 => {
            let service = TransportService {
                stacks,
                local,
                loop_guard: common.loop_guard.clone(),
            };
            let service = hyper_util::service::TowerToHyperService::new(service);
            if let Err(err) = common
                .http
                .serve(stream, HttpVersion::Http2, service, watch, None, None)
                .await
            {
                debug!(%peer, %client, error = %err, "mTLS HTTP/2 connection from peer ended with an error");
            }
        }
        Transport::Tcp => {
            let header = match TransportHeader::read(&mut stream, common.timeouts.detect).await {
                Ok(header) => header,
                Err(err) => {
                    info!(%peer, %client, error = %err, "closing mTLS connection without a valid transport header");
                    return;
                }
            };
            let app = SocketAddr::new(app_ip, header.port);
            let loops = common.loop_guard.is_loop(app, local);
            let policy = side.policy.check(header.port, Some(&client));
            match plan::terminated(app, header.payload, loops, policy) {
                Carried::RefuseLoop => {
                    common.metrics.loop_refused(common.direction);
                    warn!(%peer, %client, destination = %app, "refusing mTLS connection addressed to the proxy itself");
                }
                Carried::Refuse(reason) => {
                    common.metrics.tls.refused(reason);
                    warn!(%peer, %client, port = header.port, reason = reason.as_str(), "refused inbound mTLS connection");
                }
                Carried::ForwardOpaque(app) => {
                    let timeouts = common.timeouts;
                    match opaque::forward(&mut stream, app, timeouts.connect, timeouts.idle, |_| ())
                        .await
                    {
                        Ok(copied) => {
                            debug!(%peer, %client, destination = %app, to_upstream = copied.to_upstream, to_client = copied.to_client, "mTLS opaque connection closed")
                        }
                        Err(err) => {
                            warn!(%peer, %client, destination = %app, error = %err, "mTLS opaque connection failed")
                        }
                    }
                }
                Carried::ServeHttp1(app) => {
                    let service = stacks.stack(app.port(), HttpVersion::Http1);
                    let service = hyper_util::service::TowerToHyperService::new(service);
                    if let Err(err) = common
                        .http
                        .serve(stream, HttpVersion::Http1, service, watch, None, None)
                        .await
                    {
                        debug!(%peer, %client, error = %err, "mTLS HTTP/1 connection from peer ended with an error");
                    }
                }
            }
        }
    }
}

/// What per-port stacks are built from: the side's shared parts, owned so the HTTP/2 server's
/// service can outlive the borrow of the side.
#[derive(Clone)]
struct StackSource {
    metrics: Arc<crate::metrics::Metrics>,
    pool: Arc<crate::http::pool::Pool<crate::resilience::replay::ReplayBody<Incoming>>>,
    drain: crate::drain::Drain,
    upstreams: Arc<crate::resilience::upstream::Upstreams>,
    rate_limiter: Option<Arc<crate::resilience::rate_limit::RateLimiter>>,
    policy: Arc<crate::inbound_policy::InboundPolicy>,
    direction: crate::direction::Direction,
    stream_idle_timeout: std::time::Duration,
    target: crate::http::request_target::RequestTargetLayer,
}

impl StackSource {
    fn of(side: &InboundSide) -> Self {
        let common = &side.common;
        StackSource {
            metrics: common.metrics.clone(),
            pool: common.pool.clone(),
            drain: common.drain.clone(),
            upstreams: common.upstreams.clone(),
            rate_limiter: side.rate_limiter.clone(),
            policy: side.policy.clone(),
            direction: common.direction,
            stream_idle_timeout: common.timeouts.stream_idle,
            target: common.target_layer(),
        }
    }
}

/// The inbound stacks of one connection, one per app port and version it reaches.
#[derive(Clone)]
struct InboundStacks {
    side: StackSource,
    app_ip: IpAddr,
    peer: SocketAddr,
    client: Arc<str>,
    stacks: Arc<Mutex<HashMap<(u16, HttpVersion), Stack>>>,
}

impl InboundStacks {
    fn stack(&self, port: u16, version: HttpVersion) -> Stack {
        let mut stacks = self.stacks.lock().unwrap_or_else(PoisonError::into_inner);
        stacks
            .entry((port, version))
            .or_insert_with(|| {
                let side = &self.side;
                let addr = SocketAddr::new(self.app_ip, port);
                let protocol: Protocol = version.protocol();
                stack::build(
                    Target { addr, version },
                    side.metrics
                        .http_inbound(addr, protocol, PeerTls::Mutual(self.client.clone())),
                    StackParts {
                        router: None,
                        pool: side.pool.clone(),
                        drain: side.drain.clone(),
                        upstream: side.upstreams.get(Upstream::Addr(addr), None),
                        rate_limit: RateLimitLayer::new(side.rate_limiter.clone(), self.peer.ip()),
                        caller: Some(Caller {
                            policy: side.policy.clone(),
                            port,
                            identity: Some(self.client.clone()),
                            peer: self.peer,
                            metrics: side.metrics.tls.clone(),
                        }),
                        peers: None,
                        stream_idle_timeout: side.stream_idle_timeout,
                        target: side.target.clone(),
                    },
                )
            })
            .clone()
    }
}

/// The h2 transport's requests, each dispatched to its app port's stack.
#[derive(Clone)]
struct TransportService {
    stacks: InboundStacks,
    local: SocketAddr,
    loop_guard: crate::loop_guard::LoopGuard,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Request<Incoming>> for TransportService {
    type Response = Response<ProxyBody<StreamIdleBody<Limited<Incoming>>>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (port, version, req) = match from_transport(req) {
            Ok(restored) => restored,
            Err(err) => {
                info!(peer = %self.stacks.peer, client = %self.stacks.client, error = %err, "refused a malformed request from a peer proxy");
                return Box::pin(async {
                    Ok(refusal(StatusCode::BAD_REQUEST, "malformed mesh request"))
                });
            }
        };
        if self
            .loop_guard
            .is_loop(SocketAddr::new(self.stacks.app_ip, port), self.local)
        {
            self.stacks
                .side
                .metrics
                .loop_refused(self.stacks.side.direction);
            self.stacks.side.metrics.tls.refused(Refusal::Unauthorized);
            warn!(peer = %self.stacks.peer, client = %self.stacks.client, port, "refused a mesh request addressed to the proxy itself");
            return Box::pin(async {
                Ok(refusal(StatusCode::FORBIDDEN, "addressed to the proxy"))
            });
        }
        let stack = self.stacks.stack(port, version);
        Box::pin(stack.oneshot(req))
    }
}

fn refusal(
    status: StatusCode,
    cause: &'static str,
) -> Response<ProxyBody<StreamIdleBody<Limited<Incoming>>>> {
    plain_answer(status, cause)
}
