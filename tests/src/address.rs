//! Address pools: pod IPs from 198.18.0.0/16 (the node's bridge holds .0.1), ClusterIPs from
//! 198.19.0.0/16. Lowest free address first, so runs are reproducible.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::error::TestbedError;

pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const POD_PREFIX_LEN: u8 = 16;
/// Where ClusterIPs come from ([`AddressPool::services`]).
pub const SERVICE_CIDR: &str = "198.19.0.0/16";

#[derive(Debug, Clone)]
pub struct AddressPool {
    label: &'static str,
    first: u32,
    last: u32,
    used: BTreeSet<u32>,
}

impl AddressPool {
    /// Pod addresses: 198.18.0.2 ..= 198.18.255.254.
    pub fn pods() -> Self {
        AddressPool {
            label: "pod 198.18.0.0/16",
            first: u32::from(Ipv4Addr::new(198, 18, 0, 2)),
            last: u32::from(Ipv4Addr::new(198, 18, 255, 254)),
            used: BTreeSet::new(),
        }
    }

    /// ClusterIPs: 198.19.0.1 ..= 198.19.255.254.
    pub fn services() -> Self {
        AddressPool {
            label: "service 198.19.0.0/16",
            first: u32::from(Ipv4Addr::new(198, 19, 0, 1)),
            last: u32::from(Ipv4Addr::new(198, 19, 255, 254)),
            used: BTreeSet::new(),
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }

    /// Claims a specific address (a Service's own `spec.clusterIP`); false if taken or outside.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && self.used.insert(u32::from(ip))
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, TestbedError> {
        let mut candidate = self.first;
        for &taken in self.used.range(self.first..=self.last) {
            if taken != candidate {
                break;
            }
            candidate += 1;
        }
        if candidate > self.last {
            return Err(TestbedError::AddressesExhausted {
                pool: self.label.to_string(),
            });
        }
        self.used.insert(candidate);
        Ok(Ipv4Addr::from(candidate))
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_and_reuses_released() {
        let mut pool = AddressPool::pods();
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3))
        );
        pool.release(a);
        assert_eq!(pool.allocate().unwrap(), a);
        assert_eq!(pool.allocate().unwrap(), Ipv4Addr::new(198, 18, 0, 4));
    }

    #[test]
    fn reservations_are_skipped_and_bounded_to_the_range() {
        let mut pool = AddressPool::services();
        assert!(pool.reserve(Ipv4Addr::new(198, 19, 0, 1)));
        assert!(!pool.reserve(Ipv4Addr::new(198, 19, 0, 1)));
        assert!(!pool.reserve(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(pool.allocate().unwrap(), Ipv4Addr::new(198, 19, 0, 2));
    }

    #[test]
    fn exhaustion_is_an_error() {
        let mut pool = AddressPool {
            label: "tiny",
            first: 10,
            last: 11,
            used: BTreeSet::new(),
        };
        pool.allocate().unwrap();
        pool.allocate().unwrap();
        assert!(pool.allocate().unwrap_err().to_string().contains("tiny"));
    }
}
