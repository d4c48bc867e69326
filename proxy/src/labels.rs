//! Label vocabulary shared by the metrics and the request path: which upstream a request went to
//! and how it crossed the mesh hop.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};

use crate::direction::Direction;

/// An upstream as a label value: the logical service ("name.namespace:port") when discovery
/// knows it, else the address ("ip:port"). Cheap to clone, so building a label set does not
/// allocate.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Upstream {
    Addr(SocketAddr),
    Service(std::sync::Arc<str>),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Addr(addr) => write!(f, "{addr}"),
            Upstream::Service(name) => f.write_str(name),
        }
    }
}

impl EncodeLabelValue for Upstream {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self {
            Upstream::Addr(addr) => write!(encoder, "{addr}"),
            Upstream::Service(name) => encoder.write_str(name),
        }
    }
}

/// How a request crossed between this proxy and the peer on the other side of the mesh hop:
/// inbound, how the client's connection arrived; outbound, how the endpoint that answered was
/// reached. Rendered as `tls="true"|"false"` plus the peer's SPIFFE id as `src_identity`
/// (inbound) or `dst_identity` (outbound) when mutual.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum PeerTls {
    /// Plaintext, or TLS the proxy passed through without terminating it.
    Plaintext,
    /// Mutual TLS terminated or originated by the proxy; the peer workload's SPIFFE id.
    Mutual(Arc<str>),
}

impl PeerTls {
    pub fn encode(&self, direction: Direction, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        match self {
            PeerTls::Plaintext => ("tls", "false").encode(encoder.encode_label()),
            PeerTls::Mutual(identity) => {
                ("tls", "true").encode(encoder.encode_label())?;
                let key = match direction {
                    Direction::Inbound => "src_identity",
                    Direction::Outbound => "dst_identity",
                };
                (key, &**identity).encode(encoder.encode_label())
            }
        }
    }
}
