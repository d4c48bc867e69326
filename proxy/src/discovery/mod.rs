//! Where a connection's traffic goes, as the control plane (or DNS) sees it. A [`Key`] (the
//! original destination "IP:port", or an HTTP authority "host:port") resolves to a
//! [`Resolution`]: a logical [`Service`] with endpoints, or "pass through" (not in the mesh:
//! forward to the original destination untouched). Resolutions are watched lazily and cached
//! ([`cache`]); the sources are the discovery service ([`client`]) and DNS ([`dns`]).

pub mod cache;
pub mod client;
pub mod dns;
pub mod endpoints;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use weft_discovery_api::v1::ServicePolicy;

use crate::balance::ewma::PeakEwma;
use crate::balance::p2c;
use crate::peer::MeshedPeer;
use crate::tls::connect::PeerError;
use std::time::Instant;
use weft_tls::SpiffeIdError;

/// What is looked up: an address, or a name with a port.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Key {
    Addr(SocketAddr),
    Name { host: Arc<str>, port: u16 },
}

impl Key {
    /// An HTTP authority ("host:port", or "host" with the connection's port): a name, or an IP
    /// literal. None when it is not a usable authority.
    pub fn from_authority(authority: &str, default_port: u16) -> Option<Key> {
        let authority = authority.rsplit('@').next()?;
        if let Ok(addr) = authority.parse::<SocketAddr>() {
            return Some(Key::Addr(addr));
        }
        if let Some(ip) = authority
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
        {
            return Some(Key::Addr(SocketAddr::new(ip.parse().ok()?, default_port)));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, port.parse().ok()?),
            Some(_) => return None,
            None => (authority, default_port),
        };
        // Trailing dots first: `1.2.3.4.` is the address, never a name that prints as one
        // (found by fuzzing: corpus/discovery_target/known-ip-literal-with-trailing-dots).
        let host = host.trim_end_matches('.');
        if let Ok(ip) = host.parse() {
            return Some(Key::Addr(SocketAddr::new(ip, port)));
        }
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        valid.then(|| Key::Name {
            host: host.to_ascii_lowercase().into(),
            port,
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Addr(addr) => write!(f, "{addr}"),
            Key::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// The answer for a key.
#[derive(Clone, Debug)]
pub enum Resolution {
    /// No answer yet.
    Pending,
    /// Not in the mesh (or unknown): forward to the original destination as the app sent it.
    Passthrough,
    /// No answer could be had (discovery unreachable and nothing cached): also forwarded
    /// untouched, and counted as a fallback.
    Unavailable,
    Service(Arc<Service>),
}

impl Resolution {
    pub fn service(&self) -> Option<&Arc<Service>> {
        match self {
            Resolution::Service(service) => Some(service),
            _ => None,
        }
    }
}

/// Where a service's endpoints came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Discovery,
    /// A DNS name's addresses: balanced over only when the app's own destination is one of
    /// them, so a Host header cannot send traffic somewhere the app did not connect to.
    Dns,
}

/// A logical service: its name ("name.namespace:port" from discovery, "host:port" from DNS),
/// its endpoints and where to split its traffic.
#[derive(Debug)]
pub struct Service {
    pub name: Arc<str>,
    pub origin: Origin,
    pub endpoints: Vec<Endpoint>,
    pub split: Vec<Backend>,
    /// The service's own policy (timeouts, retries, breaker); unset fields fall back to the
    /// client's defaults. Empty for DNS names.
    pub policy: Arc<ServicePolicy>,
}

impl Service {
    pub fn has_endpoint(&self, addr: SocketAddr) -> bool {
        self.endpoints.iter().any(|e| e.addr == addr)
    }
}

/// One replica of a service, as discovery describes it, with its load statistics.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub zone: Arc<str>,
    /// The workload's SPIFFE id; None when it has none (not meshed).
    pub identity: Option<Arc<str>>,
    pub meshed: bool,
    /// The peer proxy's inbound port (0 when not meshed).
    pub proxy_port: u16,
    pub pod: Arc<str>,
    /// Shared by every connection balancing over this endpoint of this service.
    pub load: Arc<PeakEwma>,
    /// `weft_endpoint_requests_total{upstream, endpoint}`.
    pub requests: Counter,
    /// How to reach it over mTLS when it is meshed ([`MeshedPeer::resolve`] of the fields
    /// above), or why its identity is unusable.
    pub peer: Option<Result<MeshedPeer, SpiffeIdError>>,
}

impl Endpoint {
    /// The peer to reach this endpoint through, when it is meshed. An identity that is not a
    /// valid SPIFFE id makes the endpoint unusable for mTLS (and is logged), never silently
    /// plaintext.
    pub fn meshed_peer(&self) -> Option<Result<MeshedPeer, PeerError>> {
        let peer = self.peer.as_ref()?;
        Some(peer.clone().map_err(|source| PeerError::BadIdentity {
            endpoint: self.addr,
            identity: self.identity.as_deref().unwrap_or_default().to_owned(),
            source,
        }))
    }
}

impl p2c::Load for Endpoint {
    fn cost(&self, now: Instant) -> f64 {
        // A weight-2 endpoint looks half as loaded, so it is chosen about twice as often.
        self.load.cost(now) / f64::from(self.weight.max(1))
    }
}

/// A backend service of a traffic split and its share.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: Arc<str>,
    pub weight: u32,
    pub resolution: watch::Receiver<Resolution>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(host: &str, port: u16) -> Key {
        Key::Name {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn authorities() {
        assert_eq!(
            Key::from_authority("catalog:8080", 80),
            Some(name("catalog", 8080))
        );
        assert_eq!(
            Key::from_authority("Catalog.", 80),
            Some(name("catalog", 80))
        );
        assert_eq!(
            Key::from_authority("10.0.0.1:81", 80),
            Some(Key::Addr("10.0.0.1:81".parse().unwrap()))
        );
        assert_eq!(
            Key::from_authority("[::1]:81", 80),
            Some(Key::Addr("[::1]:81".parse().unwrap()))
        );
        assert_eq!(
            Key::from_authority("[::1]", 80),
            Some(Key::Addr("[::1]:80".parse().unwrap()))
        );
        // An address with trailing dots is the address (found by fuzzing).
        assert_eq!(
            Key::from_authority("1.8.0.50..:4", 80),
            Some(Key::Addr("1.8.0.50:4".parse().unwrap()))
        );
        assert_eq!(Key::from_authority("a b:80", 80), None);
        assert_eq!(Key::from_authority("host:notaport", 80), None);
        assert_eq!(Key::from_authority("", 80), None);
        assert_eq!(name("a.b", 9).to_string(), "a.b:9");
    }
}
