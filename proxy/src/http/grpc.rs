//! Recognising gRPC on the request path: the proxy answers a gRPC client in gRPC's terms.

use http::HeaderMap;

/// Whether a request or response is gRPC (its content type says so).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}
