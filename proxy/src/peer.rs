//! A meshed endpoint as the outbound side reaches it: the address of its proxy and the identity it
//! must prove. Derived from discovery's answer, used by the mTLS connector and the endpoint client.

use std::net::SocketAddr;
use std::sync::Arc;

use weft_tls::{SpiffeId, SpiffeIdError};

/// A meshed endpoint as the outbound side reaches it: its proxy, and who it must be.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshedPeer {
    /// The peer pod's IP and its proxy's inbound port.
    pub proxy: SocketAddr,
    /// Shared: a peer is cloned for every request to it.
    pub identity: Arc<SpiffeId>,
}

impl MeshedPeer {
    /// The peer to reach for an endpoint discovery describes, when it is meshed: it has a proxy
    /// port and an identity. Derived once per discovery update (kept in
    /// [`Endpoint::peer`]), not per request.
    pub fn resolve(
        addr: SocketAddr,
        identity: Option<&str>,
        meshed: bool,
        proxy_port: u16,
    ) -> Option<Result<MeshedPeer, SpiffeIdError>> {
        let identity = identity.filter(|id| !id.is_empty())?;
        if !meshed || proxy_port == 0 {
            return None;
        }
        let proxy = SocketAddr::new(addr.ip(), proxy_port);
        Some(SpiffeId::parse(identity).map(|identity| MeshedPeer {
            proxy,
            identity: Arc::new(identity),
        }))
    }
}
