//! What both sides' connection paths share: the parts every connection is handled with
//! ([`Common`]), the decision ([`plan`]) and the executor steps that do not depend on the
//! direction — finding the original destination, detection, serving HTTP on a plaintext
//! connection, and the log lines and counters of their outcomes. `outbound::path` and
//! `inbound::path` run the plan for their side.

pub mod plan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tower::Layer;
use tracing::{debug, info, warn};
use weft_settings::PortSet;

use crate::config::ProxyConfig;
use crate::detect::{DetectOutcome, Detection, PrefixedIo, Protocol, detect};
use crate::direction::Direction;
use crate::discovery::cache::Discovery;
use crate::drain::{Drain, Watch};
use crate::http::pool::Pool;
use crate::http::premature_resets::{PrematureResetLayer, PrematureResets};
use crate::http::request_target::{RequestTargetLayer, TargetRefusals};
use crate::http::server::{Ended, HttpLimits, HttpServer};
use crate::http::stack::Stack;
use crate::http::target::HttpVersion;
use crate::identity::LocalIdentity;
use crate::idle::{ActivityIo, ConnectionActivity, Expiry, InFlightLayer};
use crate::labels::Upstream;
use crate::loop_guard::LoopGuard;
use crate::metrics::Metrics;
use crate::observed_io::{ByteCounters, CountedIo};
use crate::opaque::{Copied, OpaqueError};
use crate::original_dst::{OriginalDstError, original_dst};
use crate::resilience::kinds::TimeoutKind;
use crate::resilience::policy::ResiliencePolicy;
use crate::resilience::replay::ReplayBody;
use crate::resilience::upstream::Upstreams;

/// An accepted connection's stream, counting its bytes.
pub type ClientIo = CountedIo<TcpStream>;

/// The connection's timeouts (`WEFT_*_TIMEOUT`); zero: none.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub detect: Duration,
    pub connect: Duration,
    /// `WEFT_IDLE_TIMEOUT`: client connections with nothing moving are closed.
    pub idle: Duration,
    /// `WEFT_STREAM_IDLE_TIMEOUT`: HTTP exchanges with nothing moving are ended.
    pub stream_idle: Duration,
    /// `WEFT_HEADER_READ_TIMEOUT`: HTTP/1 request heads must arrive within it.
    pub header_read: Duration,
}

/// What both sides handle their connections with.
pub struct Common {
    pub direction: Direction,
    pub timeouts: Timeouts,
    /// What a client's HTTP may be (header sizes, target length, HTTP/2 streams).
    pub limits: HttpLimits,
    pub opaque_ports: PortSet,
    pub loop_guard: LoopGuard,
    pub metrics: Arc<Metrics>,
    pub pool: Arc<Pool<ReplayBody<Incoming>>>,
    pub http: HttpServer,
    pub drain: Drain,
    /// Each upstream's policy, retry budget and limits.
    pub upstreams: Arc<Upstreams>,
}

impl Common {
    /// The parts of one side, from the settings and what both sides share; `policy` is the
    /// side's default resilience policy.
    pub fn new(
        direction: Direction,
        config: &ProxyConfig,
        shared: &Shared,
        policy: ResiliencePolicy,
    ) -> Self {
        Common {
            direction,
            timeouts: Timeouts {
                detect: config.detect_timeout,
                connect: config.connect_timeout,
                idle: config.idle_timeout,
                stream_idle: config.stream_idle_timeout,
                header_read: config.header_read_timeout,
            },
            limits: config.http_limits(),
            opaque_ports: config.opaque_ports.clone(),
            loop_guard: shared.loop_guard.clone(),
            metrics: shared.metrics.clone(),
            pool: Pool::shared(config.connect_timeout, config.idle_timeout),
            http: HttpServer::with_limits(config.http_limits()),
            drain: match direction {
                Direction::Inbound => shared.drain.clone(),
                Direction::Outbound => shared.outbound_drain.clone(),
            },
            upstreams: Arc::new(Upstreams::new(
                direction,
                policy,
                shared.metrics.resilience.clone(),
            )),
        }
    }
}

/// What the sidecar builds both sides from.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// Started by SIGTERM or `/shutdown`: the inbound side stops taking connections.
    pub drain: Drain,
    /// Started once the app is done with the proxy (see `sidecar`): the outbound side stops.
    pub outbound_drain: Drain,
    pub loop_guard: LoopGuard,
    pub discovery: Option<Discovery>,
    pub identity: Option<Arc<LocalIdentity>>,
}

/// Where an accepted connection was going, and where it arrived.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// `SO_ORIGINAL_DST`; the listener itself when the connection was not redirected.
    pub original: SocketAddr,
}

impl Common {
    /// The connection's addresses, or `None` (logged) when they cannot be had.
    pub fn addresses(&self, stream: &TcpStream, peer: SocketAddr) -> Option<Addresses> {
        let direction = self.direction;
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(err) => {
                debug!(%direction, %peer, error = %err, "connection closed before it could be handled");
                return None;
            }
        };
        let original = match original_dst(stream, local) {
            Ok(original) => original,
            // Not redirected: the client connected to the listener itself, which the guard
            // refuses (unless it is mTLS for this proxy).
            Err(OriginalDstError::NotRedirected) => local,
            Err(err) => {
                warn!(%direction, %peer, error = %err, "closing connection: no original destination");
                return None;
            }
        };
        Some(Addresses {
            peer,
            local,
            original,
        })
    }

    /// The request-target layer of this side's stacks.
    pub fn target_layer(&self) -> RequestTargetLayer {
        RequestTargetLayer::new(
            self.limits.max_uri_length,
            TargetRefusals {
                uri_too_long: self.metrics.http_refused(self.direction, "uri_too_long"),
                target_host_mismatch: self
                    .metrics
                    .http_refused(self.direction, "target_host_mismatch"),
            },
        )
    }

    pub fn addressed_to_proxy(&self, addresses: &Addresses) -> bool {
        self.loop_guard.is_loop(addresses.original, addresses.local)
    }

    pub fn counted(&self, stream: TcpStream) -> ClientIo {
        let (read, written) = self.metrics.byte_counters(self.direction);
        CountedIo::new(stream, ByteCounters { read, written })
    }

    /// Runs detection on `io` (bounded by `WEFT_DETECT_TIMEOUT`), counted; `None` when the
    /// client went away meanwhile.
    pub async fn detect(&self, io: &mut ClientIo, peer: SocketAddr) -> Option<Detection> {
        match detect(io, self.timeouts.detect).await {
            Ok(detection) => {
                self.detected(&detection);
                Some(detection)
            }
            Err(err) => {
                debug!(direction = %self.direction, %peer, error = %err, "connection failed during protocol detection");
                None
            }
        }
    }

    /// The connection's protocol: opaque without reading a byte on an opaque port, else what
    /// detection finds (`None` when the client went away meanwhile).
    pub async fn protocol_of(
        &self,
        io: &mut ClientIo,
        peer: SocketAddr,
        opaque_port: bool,
    ) -> Option<Detection> {
        if opaque_port {
            Some(self.assume_opaque())
        } else {
            self.detect(io, peer).await
        }
    }

    /// An opaque port's connection: opaque without reading a byte.
    pub fn assume_opaque(&self) -> Detection {
        let detection = Detection {
            protocol: Protocol::Opaque,
            outcome: DetectOutcome::OpaquePort,
            prefix: Bytes::new(),
        };
        self.detected(&detection);
        detection
    }

    fn detected(&self, detection: &Detection) {
        self.metrics
            .detected(self.direction, detection.protocol, detection.outcome);
    }

    pub fn refuse_loop(&self, peer: SocketAddr, original: SocketAddr) {
        self.metrics.loop_refused(self.direction);
        warn!(direction = %self.direction, %peer, destination = %original, "refusing connection addressed to the proxy itself");
    }

    /// Serves a plaintext HTTP connection through `stack` until it ends, with the idle and
    /// header-read bounds; their expiry is counted against `upstream`.
    pub async fn serve_http(
        &self,
        io: PrefixedIo<ClientIo>,
        version: HttpVersion,
        stack: Stack,
        addresses: &Addresses,
        upstream: &Upstream,
        watch: &mut Watch,
    ) {
        let direction = self.direction;
        let Addresses { peer, original, .. } = *addresses;
        // The header timer is HTTP/1's: HTTP/2 has no request heads between requests.
        let header_read = match version {
            HttpVersion::Http1 => self.timeouts.header_read,
            HttpVersion::Http2 => Duration::ZERO,
        };
        let activity = ConnectionActivity::new(self.timeouts.idle, header_read);
        let io = ActivityIo::new(io, activity.clone());
        let resets = PrematureResets::new(self.limits.h2_premature_reset_min_streams);
        let service = InFlightLayer::new(activity.clone()).layer(stack);
        let service = PrematureResetLayer::new(resets.clone()).layer(service);
        let service = hyper_util::service::TowerToHyperService::new(service);
        let watched = (version == HttpVersion::Http2).then_some(&*resets);
        match self
            .http
            .serve(io, version, service, watch, Some(&activity), watched)
            .await
        {
            Ok(None) => {}
            Ok(Some(Ended::PrematureResets)) => {
                self.metrics
                    .http_refused(direction, "premature_resets")
                    .inc();
                let (streams, reset) = resets.counts();
                warn!(%direction, %peer, destination = %original, streams, reset, "closed an HTTP/2 connection: most of its streams were reset before their response (WEFT_H2_PREMATURE_RESET_MIN_STREAMS)");
            }
            Ok(Some(Ended::Expired(expiry))) => {
                let (kind, after) = match expiry {
                    Expiry::Idle => (TimeoutKind::Idle, self.timeouts.idle),
                    Expiry::HeaderRead => (TimeoutKind::HeaderRead, header_read),
                };
                self.metrics
                    .resilience
                    .timed_out(direction, &upstream.to_string(), kind);
                match expiry {
                    Expiry::Idle => {
                        debug!(%direction, %peer, destination = %original, ?after, "closed an idle HTTP connection (WEFT_IDLE_TIMEOUT)")
                    }
                    Expiry::HeaderRead => {
                        info!(%direction, %peer, destination = %original, ?after, "closed an HTTP/1 connection: the request headers did not arrive in time (WEFT_HEADER_READ_TIMEOUT)")
                    }
                }
            }
            Err(err) => {
                if err.is_parse_too_large() {
                    self.metrics
                        .http_refused(direction, "header_too_large")
                        .inc();
                }
                log_http_error(direction, peer, original, &err)
            }
        }
    }

    /// Logs (and counts, for idle closes) how an opaque connection to `destination` ended.
    pub fn opaque_ended(
        &self,
        result: Result<Copied, OpaqueError>,
        peer: SocketAddr,
        destination: SocketAddr,
        upstream: &Upstream,
    ) {
        let direction = self.direction;
        match result {
            Ok(copied) => {
                debug!(%direction, %peer, %destination, to_upstream = copied.to_upstream, to_client = copied.to_client, "opaque connection closed")
            }
            Err(OpaqueError::IdleTimeout { after }) => {
                self.metrics.resilience.timed_out(
                    direction,
                    &upstream.to_string(),
                    TimeoutKind::Idle,
                );
                debug!(%direction, %peer, %destination, ?after, "closed an idle opaque connection (WEFT_IDLE_TIMEOUT)")
            }
            Err(err) => {
                warn!(%direction, %peer, %destination, error = %err, "opaque connection failed")
            }
        }
    }
}

/// Malformed requests (answered 400/431 by hyper) and header timeouts are the client's doing and
/// worth an info line; a client going away mid-exchange is routine.
pub fn log_http_error(
    direction: Direction,
    peer: SocketAddr,
    destination: SocketAddr,
    err: &hyper::Error,
) {
    if err.is_parse() || err.is_parse_too_large() || err.is_parse_status() || err.is_timeout() {
        info!(%direction, %peer, %destination, error = %err, "closed HTTP connection after a malformed or incomplete request");
    } else {
        debug!(%direction, %peer, %destination, error = %err, "HTTP connection ended with an error");
    }
}
