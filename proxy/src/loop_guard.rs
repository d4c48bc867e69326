//! Refuses connections whose destination is the proxy itself, which would otherwise make the proxy
//! connect to its own listener over and over.

use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug)]
pub struct LoopGuard {
    own_ports: Vec<u16>,
}

impl LoopGuard {
    /// `own_ports`: the ports of the proxy's traffic listeners (outbound and inbound).
    pub fn new(own_ports: Vec<u16>) -> Self {
        LoopGuard { own_ports }
    }

    /// True when forwarding to `original` would reach this proxy: either nobody redirected the
    /// connection (its original destination is the listener it arrived on), or it targets one of
    /// the proxy's listener ports on a local address.
    pub fn is_loop(&self, original: SocketAddr, local: SocketAddr) -> bool {
        if original == local {
            return true;
        }
        self.own_ports.contains(&original.port()) && is_local(original.ip(), local.ip())
    }
}

fn is_local(ip: IpAddr, local: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || ip == local
        || ip.to_canonical() == local.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LoopGuard {
        LoopGuard::new(vec![4140, 4143])
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unredirected_connection_is_a_loop() {
        assert!(guard().is_loop(a("127.0.0.1:4140"), a("127.0.0.1:4140")));
        assert!(guard().is_loop(a("198.18.0.5:4143"), a("198.18.0.5:4143")));
    }

    #[test]
    fn own_ports_on_local_addresses_are_loops() {
        let local = a("198.18.0.5:4143");
        assert!(guard().is_loop(a("127.0.0.1:4143"), local));
        assert!(guard().is_loop(a("127.0.0.9:4140"), local));
        assert!(guard().is_loop(a("198.18.0.5:4140"), local));
        assert!(guard().is_loop(a("0.0.0.0:4140"), local));
        assert!(guard().is_loop(a("[::1]:4140"), a("[::1]:4140")));
        assert!(guard().is_loop(a("[::ffff:198.18.0.5]:4140"), local));
    }

    #[test]
    fn ordinary_destinations_pass() {
        let local = a("127.0.0.1:4140");
        assert!(!guard().is_loop(a("127.0.0.2:8080"), local));
        assert!(!guard().is_loop(a("198.18.0.9:4140"), local));
        assert!(!guard().is_loop(a("198.18.0.5:8080"), a("198.18.0.5:4143")));
        assert!(!guard().is_loop(a("127.0.0.1:4191"), local));
    }
}
