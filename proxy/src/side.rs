//! Everything one side (outbound or inbound) needs to handle its connections.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use weft_settings::PortSet;

use crate::direction::Direction;
use crate::discovery::cache::Discovery;
use crate::drain::Drain;
use crate::http::peer_client::PeerClient;
use crate::http::pool::Pool;
use crate::http::server::HttpServer;
use crate::identity::LocalIdentity;
use crate::inbound_policy::InboundPolicy;
use crate::loop_guard::LoopGuard;
use crate::metrics::Metrics;
use crate::resilience::rate_limit::RateLimiter;
use crate::resilience::replay::ReplayBody;
use crate::resilience::upstream::Upstreams;

pub struct Side {
    pub direction: Direction,
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
    /// `WEFT_IDLE_TIMEOUT`: client connections with nothing moving are closed; zero: never.
    pub idle_timeout: Duration,
    /// `WEFT_STREAM_IDLE_TIMEOUT`: HTTP exchanges with nothing moving are ended; zero: never.
    pub stream_idle_timeout: Duration,
    /// `WEFT_HEADER_READ_TIMEOUT`: HTTP/1 request heads must arrive within it; zero: no limit.
    pub header_read_timeout: Duration,
    pub opaque_ports: PortSet,
    pub loop_guard: LoopGuard,
    pub metrics: Arc<Metrics>,
    pub pool: Arc<Pool<ReplayBody<Incoming>>>,
    pub http: HttpServer,
    pub drain: Drain,
    /// Each upstream's policy, retry budget and limits.
    pub upstreams: Arc<Upstreams>,
    /// The inbound rate limit, when one is set.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Outbound only: where connections' destinations are looked up.
    pub discovery: Option<Discovery>,
    /// How long a request waits for the first answer about a new authority.
    pub discovery_wait: Duration,
    /// This proxy's workload identity, when it has one: inbound mTLS termination.
    pub identity: Option<Arc<LocalIdentity>>,
    /// Outbound, with an identity: HTTP to meshed endpoints over mTLS.
    pub peers: Option<Arc<PeerClient<ReplayBody<Incoming>>>>,
    /// Inbound: who may reach the app (strict/permissive, per-port identities).
    pub inbound_policy: Arc<InboundPolicy>,
}

/// What both sides share.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub drain: Drain,
    pub loop_guard: LoopGuard,
    pub discovery: Option<Discovery>,
    pub identity: Option<Arc<LocalIdentity>>,
}
