//! The proxy's own reasons to answer a request instead of the upstream: timeouts, overload, no
//! endpoints, rate limits. Each knows its HTTP status, its `weft-error` words and its gRPC code.

use std::time::Duration;

use http::StatusCode;

use crate::resilience::kinds::Limit;

/// gRPC status codes the proxy answers with.
pub mod grpc_code {
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNAVAILABLE: u32 = 14;
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ResilienceError {
    #[error("no response within the request timeout of {after:?} (WEFT_TIMEOUT / weft.io/timeout)")]
    RequestTimeout { after: Duration },
    #[error(
        "no response within the per-try timeout of {after:?} (WEFT_PER_TRY_TIMEOUT / weft.io/per-try-timeout)"
    )]
    PerTryTimeout { after: Duration },
    #[error(
        "no progress within the stream idle timeout of {after:?} (WEFT_STREAM_IDLE_TIMEOUT / weft.io/stream-idle-timeout)"
    )]
    StreamIdleTimeout { after: Duration },
    #[error("overloaded: {} requests {} ({})", .max, .limit.describe(), .limit.setting())]
    Overloaded { limit: Limit, max: u32 },
    #[error("no endpoint became available within {after:?}")]
    NoEndpoints { after: Duration },
    #[error("rate limited: more than {rate} ({setting})")]
    RateLimited { rate: String, setting: &'static str },
}

impl ResilienceError {
    pub fn status(&self) -> StatusCode {
        match self {
            ResilienceError::RequestTimeout { .. }
            | ResilienceError::PerTryTimeout { .. }
            | ResilienceError::StreamIdleTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ResilienceError::Overloaded { .. } | ResilienceError::NoEndpoints { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ResilienceError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A few words for the `weft-error` header.
    pub fn short_cause(&self) -> &'static str {
        match self {
            ResilienceError::RequestTimeout { .. } => "request timeout",
            ResilienceError::PerTryTimeout { .. } => "per-try timeout",
            ResilienceError::StreamIdleTimeout { .. } => "stream idle timeout",
            ResilienceError::Overloaded { .. } => "overloaded",
            ResilienceError::NoEndpoints { .. } => "no endpoints",
            ResilienceError::RateLimited { .. } => "rate limited",
        }
    }

    /// The status a gRPC client gets. Overload is UNAVAILABLE (the client may retry elsewhere,
    /// as with HTTP 503); a rate limit is RESOURCE_EXHAUSTED (retrying at once will not help).
    pub fn grpc_code(&self) -> u32 {
        match self {
            ResilienceError::RequestTimeout { .. }
            | ResilienceError::PerTryTimeout { .. }
            | ResilienceError::StreamIdleTimeout { .. } => grpc_code::DEADLINE_EXCEEDED,
            ResilienceError::Overloaded { .. } | ResilienceError::NoEndpoints { .. } => {
                grpc_code::UNAVAILABLE
            }
            ResilienceError::RateLimited { .. } => grpc_code::RESOURCE_EXHAUSTED,
        }
    }
}
