//! The request stack's one error type: every reason a request gets the proxy's answer instead of
//! the upstream's (connect, handshake, a broken exchange, a timeout or limit, a policy refusal),
//! each with its HTTP status, its `weft-error` words and its gRPC code.

use std::net::SocketAddr;

use http::StatusCode;

use crate::connect::ConnectError;
use crate::inbound_policy::Refusal;
use crate::resilience::error::{ResilienceError, grpc_code};
use crate::tls::connect::PeerError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the request has no target (the route layer did not run)")]
    NoTarget,
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("request to {addr} failed: {source}")]
    Request {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The proxy's own answer: a timeout, overload, no endpoints, a rate limit.
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
    /// The inbound policy refused the caller (WEFT_INBOUND_POLICY / WEFT_INBOUND_AUTHZ).
    #[error("the inbound policy refuses this caller on port {port}: {}", .reason.as_str())]
    Refused { reason: Refusal, port: u16 },
    /// Setting up mTLS to the peer proxy failed.
    #[error(transparent)]
    Peer(PeerError),
    #[error("the request target is {length} bytes, more than WEFT_MAX_URI_LENGTH ({max})")]
    UriTooLong { length: usize, max: usize },
    #[error("the absolute-form target names {target:?} but Host is {host:?}")]
    TargetHostMismatch { target: String, host: String },
}

impl From<PeerError> for ProxyError {
    /// TCP and HTTP failures keep their plain-connection variants, so retries judge them alike.
    fn from(err: PeerError) -> Self {
        match err {
            PeerError::Connect(err) => ProxyError::Connect(err),
            PeerError::HttpHandshake { peer, source } => {
                ProxyError::Handshake { addr: peer, source }
            }
            PeerError::Request { peer, source } => ProxyError::Request { addr: peer, source },
            other => ProxyError::Peer(other),
        }
    }
}

impl ProxyError {
    /// The status the client gets instead of an upstream response.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoTarget => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Connect(ConnectError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Request { source, .. } if source.is_timeout() => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Resilience(err) => err.status(),
            ProxyError::Refused { .. } => StatusCode::FORBIDDEN,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::TargetHostMismatch { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Peer(err) => err.status(),
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `grpc-status` a gRPC client gets instead: the proxy's own timeouts are
    /// DEADLINE_EXCEEDED; failing to reach the upstream is UNAVAILABLE, as gRPC maps 502-504.
    pub fn grpc_code(&self) -> u32 {
        match self {
            ProxyError::Resilience(err) => err.grpc_code(),
            ProxyError::NoTarget => 13,      // INTERNAL
            ProxyError::Refused { .. } => 7, // PERMISSION_DENIED
            ProxyError::UriTooLong { .. } | ProxyError::TargetHostMismatch { .. } => 3, // INVALID_ARGUMENT
            _ => grpc_code::UNAVAILABLE,
        }
    }

    /// A few words for the `weft-error` header.
    pub fn short_cause(&self) -> &'static str {
        match self {
            ProxyError::NoTarget => "no route",
            ProxyError::Connect(err) => err.short_cause(),
            ProxyError::Handshake { .. } => "upstream handshake failed",
            ProxyError::Request { .. } => "upstream connection failed",
            ProxyError::Resilience(err) => err.short_cause(),
            ProxyError::UriTooLong { .. } => "uri too long",
            ProxyError::TargetHostMismatch { .. } => "request target and host disagree",
            ProxyError::Refused { reason, .. } => match reason {
                Refusal::Plaintext | Refusal::Handshake => "forbidden: mTLS required",
                Refusal::Unauthorized => "forbidden: client identity not authorized",
            },
            ProxyError::Peer(err) => err.short_cause(),
        }
    }
}
