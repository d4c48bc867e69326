//! What the request stack's layers tell each other through request and response extensions.
//! Here, below every layer that reads or writes them, so no layer imports another for its types.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::discovery::Service as LogicalService;

/// Endpoints that earlier attempts of this request failed on (a request extension).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailedEndpoints(pub Vec<SocketAddr>);

/// Where the balancer sent one attempt (a request extension the retry layer gives each attempt
/// and the balancer fills in): how a retry knows which endpoint an attempt that ended without
/// a response of its own, such as a per-try timeout, failed on.
#[derive(Clone, Debug, Default)]
pub struct AttemptedEndpoint(pub Arc<std::sync::OnceLock<SocketAddr>>);

/// The endpoint that produced a response (a response extension set by the endpoint client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedBy(pub SocketAddr);

/// The logical service a request was routed to (a request extension, read by the balancer).
#[derive(Clone, Debug)]
pub struct Routed(pub Arc<LogicalService>);

/// The client's workload identity (a SPIFFE id), set on inbound requests when mTLS is
/// terminated; the per-client limit keys on it when present.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientIdentity(pub Arc<str>);
