//! What a proxy asks to watch: an address (a connection's original destination) or a name (an HTTP
//! authority). Parsed once here so the server and clients agree on the spelling.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A watch target: `IP:port` or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(SocketAddr),
    /// A DNS-style name, lowercased, without a trailing dot.
    Name {
        host: String,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("watch target {0:?} has no port: expected IP:port or host:port")]
    MissingPort(String),
    #[error("watch target {0:?} has an invalid port: expected 1-65535")]
    BadPort(String),
    #[error("watch target {0:?} has an invalid host: expected an IP address or a DNS name")]
    BadHost(String),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(TargetError::BadPort(s.to_owned()));
            }
            return Ok(Target::Addr(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| TargetError::MissingPort(s.to_owned()))?;
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(TargetError::BadPort(s.to_owned())),
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if !is_dns_name(&host) {
            return Err(TargetError::BadHost(s.to_owned()));
        }
        Ok(Target::Name { host, port })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Target {
    pub fn port(&self) -> u16 {
        match self {
            Target::Addr(addr) => addr.port(),
            Target::Name { port, .. } => *port,
        }
    }
}

/// RFC 1123 labels: letters, digits, hyphens, not starting or ending with a hyphen; 253 bytes max.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // An all-digit last label makes an IPv4 address ("10.0.0.1." is not a name).
        && !host
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            "10.96.0.10:80".parse::<Target>(),
            Ok(Target::Addr("10.96.0.10:80".parse().unwrap()))
        );
        assert_eq!(
            "[fd00::1]:8080".parse::<Target>(),
            Ok(Target::Addr("[fd00::1]:8080".parse().unwrap()))
        );
    }

    #[test]
    fn parses_names_lowercased_without_trailing_dot() {
        assert_eq!(
            "Web.Shop.svc.cluster.local.:8080".parse::<Target>(),
            Ok(Target::Name {
                host: "web.shop.svc.cluster.local".into(),
                port: 8080
            })
        );
        assert_eq!("web:80".parse::<Target>().unwrap().to_string(), "web:80");
    }

    #[test]
    fn rejects_malformed_targets() {
        assert_eq!(
            "web".parse::<Target>(),
            Err(TargetError::MissingPort("web".into()))
        );
        assert_eq!(
            "web:0".parse::<Target>(),
            Err(TargetError::BadPort("web:0".into()))
        );
        assert_eq!(
            "web:http".parse::<Target>(),
            Err(TargetError::BadPort("web:http".into()))
        );
        assert_eq!(
            "10.0.0.1:0".parse::<Target>(),
            Err(TargetError::BadPort("10.0.0.1:0".into()))
        );
        for bad in [":80", "we_b:80", "-web:80", "a..b:80", "[fd00::1:80"] {
            assert!(
                matches!(
                    bad.parse::<Target>(),
                    Err(TargetError::BadHost(_) | TargetError::BadPort(_))
                ),
                "{bad} should be rejected"
            );
        }
    }

    /// Found by fuzzing (proxy/fuzz, target discovery_target, input "1.8.0.51.:4"): an IP address
    /// with a trailing dot became the *name* "1.8.0.51", which prints as "1.8.0.51:4" and so
    /// reads back as an address: one target, two spellings with different meanings.
    #[test]
    fn an_ip_address_is_never_a_name() {
        for bad in ["1.8.0.51.:4", "10.0.0.1.:80", "web.10:80", "127:80"] {
            assert_eq!(
                bad.parse::<Target>(),
                Err(TargetError::BadHost(bad.into())),
                "{bad}"
            );
        }
        assert!("1.web:80".parse::<Target>().is_ok());
    }
}
