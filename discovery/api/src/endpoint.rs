//! Typed views of an `Endpoint`: its addresses parsed, its weight defaulted.

use std::net::SocketAddr;

use crate::v1::Endpoint;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("discovery sent endpoint address {addr:?}, which is not ip:port")]
pub struct EndpointAddrError {
    pub addr: String,
}

impl Endpoint {
    /// Where the app's traffic goes.
    pub fn socket_addr(&self) -> Result<SocketAddr, EndpointAddrError> {
        parse_addr(&self.addr)
    }

    /// The peer proxy's proxy-to-proxy address: the endpoint's IP on `proxy_port`, when the endpoint
    /// is meshed and names a valid port.
    pub fn proxy_addr(&self) -> Result<Option<SocketAddr>, EndpointAddrError> {
        let addr = self.socket_addr()?;
        match u16::try_from(self.proxy_port) {
            Ok(port) if self.meshed && port != 0 => Ok(Some(SocketAddr::new(addr.ip(), port))),
            _ => Ok(None),
        }
    }

    /// The balancing weight; 0 on the wire means the default, 1.
    pub fn effective_weight(&self) -> u32 {
        self.weight.max(1)
    }
}

/// Parses an `addr` as sent in `EndpointsRemoved` or `Endpoint.addr`.
pub fn parse_addr(addr: &str) -> Result<SocketAddr, EndpointAddrError> {
    addr.parse().map_err(|_| EndpointAddrError {
        addr: addr.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(addr: &str, meshed: bool, proxy_port: u32) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            meshed,
            proxy_port,
            ..Default::default()
        }
    }

    #[test]
    fn proxy_addr_only_for_meshed_endpoints_with_a_port() {
        let meshed = endpoint("198.18.0.5:8080", true, 4143);
        assert_eq!(
            meshed.proxy_addr(),
            Ok(Some("198.18.0.5:4143".parse().unwrap()))
        );
        assert_eq!(endpoint("198.18.0.5:8080", false, 0).proxy_addr(), Ok(None));
        assert_eq!(endpoint("198.18.0.5:8080", true, 0).proxy_addr(), Ok(None));
        assert_eq!(
            endpoint("198.18.0.5:8080", true, 70000).proxy_addr(),
            Ok(None)
        );
        assert!(endpoint("pod-a:8080", true, 4143).proxy_addr().is_err());
    }

    #[test]
    fn zero_weight_means_one() {
        assert_eq!(endpoint("198.18.0.5:80", false, 0).effective_weight(), 1);
        let heavy = Endpoint {
            weight: 5,
            ..endpoint("198.18.0.5:80", false, 0)
        };
        assert_eq!(heavy.effective_weight(), 5);
    }
}
