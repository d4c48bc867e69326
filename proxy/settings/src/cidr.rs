//! CIDR blocks such as "10.0.0.0/8" or "fd00::/8": destinations the outbound redirect must skip.

use std::fmt;
use std::net::IpAddr;

use crate::SettingError;

const EXPECTED_ONE: &str = r#"a CIDR block such as "10.0.0.0/8" or "fd00::/8", or a bare IP"#;
const EXPECTED_LIST: &str = r#"a comma-separated list of CIDR blocks such as "10.0.0.0/8,fd00::/8" (a bare IP is /32 or /128)"#;

/// An IPv4 or IPv6 network. Host bits beyond the prefix are always zero (enforced by parsing),
/// so the text iptables receives is exactly the network the user meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// True when `ip` lies inside this network. Addresses of the other family never match.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.prefix);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = SettingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_cidr(s, s, EXPECTED_ONE)
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Parses "10.0.0.0/8,fd00::/8"; whitespace around items is fine and "" is the empty list.
pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, SettingError> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|item| parse_cidr(s, item.trim(), EXPECTED_LIST))
        .collect()
}

fn parse_cidr(whole: &str, item: &str, expected: &'static str) -> Result<Cidr, SettingError> {
    let err = || SettingError::new(expected, whole);
    if item.is_empty() {
        return Err(err().because("empty item in the list"));
    }
    let (addr_text, prefix_text) = match item.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (item, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| err().because(format!("{addr_text:?} is not an IP address")))?;
    let max_prefix: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        None => max_prefix,
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err().because(format!("prefix {p:?} is not a number")));
            }
            match p.parse::<u8>() {
                Ok(n) if n <= max_prefix => n,
                _ => {
                    return Err(err().because(format!(
                        "prefix /{p} is longer than {max_prefix} bits for {addr}"
                    )));
                }
            }
        }
    };
    let host_bits_set = match addr {
        IpAddr::V4(v4) => u32::from(v4) & !mask_v4(prefix) != 0,
        IpAddr::V6(v6) => u128::from(v6) & !mask_v6(prefix) != 0,
    };
    if host_bits_set {
        return Err(err().because(format!(
            "{item} has host bits set beyond the /{prefix} prefix"
        )));
    }
    Ok(Cidr { addr, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_v4_and_v6() {
        let cidrs = parse_cidrs("10.0.0.0/8,fd00::/8").unwrap();
        assert_eq!(
            cidrs,
            vec![
                Cidr {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
                    prefix: 8
                },
                Cidr {
                    addr: ip("fd00::"),
                    prefix: 8
                },
            ]
        );
        assert!(!cidrs[0].is_ipv6());
        assert!(cidrs[1].is_ipv6());
    }

    #[test]
    fn bare_ip_is_host_route() {
        let cidrs = parse_cidrs("192.168.1.7, ::1").unwrap();
        assert_eq!(cidrs[0].prefix, 32);
        assert_eq!(cidrs[1].prefix, 128);
        assert_eq!(cidrs[1].addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn empty_is_empty_list() {
        assert!(parse_cidrs("").unwrap().is_empty());
        assert!(parse_cidrs("  ").unwrap().is_empty());
    }

    #[test]
    fn contains() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("::a00:1")));

        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(!all.contains(ip("::1")));

        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));

        let host: Cidr = "198.18.0.5".parse().unwrap();
        assert!(host.contains(ip("198.18.0.5")));
        assert!(!host.contains(ip("198.18.0.6")));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "10.0.0.0/8",
            "fd00::/8",
            "198.18.0.0/15",
            "0.0.0.0/0",
            "::1/128",
        ] {
            assert_eq!(s.parse::<Cidr>().unwrap().to_string(), s);
        }
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().to_string(), "1.2.3.4/32");
    }

    #[test]
    fn rejects_host_bits() {
        let e = parse_cidrs("10.0.0.1/8").unwrap_err();
        assert_eq!(
            e.reason(),
            Some("10.0.0.1/8 has host bits set beyond the /8 prefix")
        );
        assert!(parse_cidrs("fd00::1/64").is_err());
        assert!(parse_cidrs("198.19.0.0/15").is_err());
    }

    #[test]
    fn rejects_bad_prefix() {
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("::/129").is_err());
        assert!(parse_cidrs("10.0.0.0/").is_err());
        assert!(parse_cidrs("10.0.0.0/-1").is_err());
        assert!(parse_cidrs("10.0.0.0/8/8").is_err());
        assert!(parse_cidrs("10.0.0.0/999").is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "10.0.0",
            "10.0.0.0.0/8",
            "example.com",
            "10.0.0.0/8,",
            ",fd00::/8",
            "10.0.0.256",
        ] {
            let e = parse_cidrs(bad).unwrap_err();
            assert_eq!(e.given(), bad);
        }
        assert!(
            parse_cidrs("host/8")
                .unwrap_err()
                .to_string()
                .contains("10.0.0.0/8")
        );
    }
}
