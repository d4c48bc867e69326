//! Turns endpoint descriptions into [`Endpoint`]s that keep their load statistics across
//! updates: an endpoint present before and after a change keeps its latency estimate and
//! in-flight count, and requests still running on a removed endpoint finish on their own
//! (they hold its statistics; nothing new is sent there).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::balance::ewma::PeakEwma;
use crate::peer::MeshedPeer;

use crate::discovery::Endpoint;
use crate::metrics::discovery::DiscoveryMetrics;

/// An endpoint as a source describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub addr: SocketAddr,
    pub weight: u32,
    pub zone: Arc<str>,
    pub identity: Option<Arc<str>>,
    pub meshed: bool,
    pub proxy_port: u16,
    pub pod: Arc<str>,
}

impl EndpointSpec {
    /// An endpoint known only by address (DNS): weight 1, not meshed.
    pub fn plain(addr: SocketAddr) -> Self {
        EndpointSpec {
            addr,
            weight: 1,
            zone: "".into(),
            identity: None,
            meshed: false,
            proxy_port: 0,
            pod: "".into(),
        }
    }
}

type StatsKey = (Arc<str>, SocketAddr);

pub struct EndpointRegistry {
    loads: Mutex<HashMap<StatsKey, Weak<PeakEwma>>>,
    metrics: DiscoveryMetrics,
}

impl EndpointRegistry {
    pub fn new(metrics: DiscoveryMetrics) -> Self {
        EndpointRegistry {
            loads: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The endpoints of `service`, reusing the statistics of those it already had.
    pub fn endpoints(&self, service: &Arc<str>, specs: &[EndpointSpec]) -> Vec<Endpoint> {
        let mut loads = self.loads.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget endpoints nothing uses any more (removed and drained).
        loads.retain(|_, load| load.strong_count() > 0);
        specs
            .iter()
            .map(|spec| {
                let key = (service.clone(), spec.addr);
                let load = match loads.get(&key).and_then(Weak::upgrade) {
                    Some(load) => load,
                    None => {
                        let load = Arc::new(PeakEwma::default());
                        loads.insert(key, Arc::downgrade(&load));
                        load
                    }
                };
                Endpoint {
                    addr: spec.addr,
                    weight: spec.weight,
                    zone: spec.zone.clone(),
                    identity: spec.identity.clone(),
                    meshed: spec.meshed,
                    proxy_port: spec.proxy_port,
                    pod: spec.pod.clone(),
                    load,
                    requests: self.metrics.endpoint_requests(service, spec.addr),
                    peer: MeshedPeer::resolve(
                        spec.addr,
                        spec.identity.as_deref(),
                        spec.meshed,
                        spec.proxy_port,
                    ),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn statistics_survive_updates_and_are_per_service() {
        let registry = EndpointRegistry::new(DiscoveryMetrics::unregistered());
        let a = EndpointSpec::plain("10.0.0.1:80".parse().unwrap());
        let b = EndpointSpec::plain("10.0.0.2:80".parse().unwrap());
        let svc: Arc<str> = "web.default:80".into();
        let first = registry.endpoints(&svc, std::slice::from_ref(&a));
        first[0]
            .load
            .observe(Duration::from_secs(3), Instant::now());
        let second = registry.endpoints(&svc, &[a.clone(), b]);
        assert!(Arc::ptr_eq(&first[0].load, &second[0].load));
        assert!(!Arc::ptr_eq(&second[0].load, &second[1].load));
        let other = registry.endpoints(&"api.default:80".into(), &[a]);
        assert!(!Arc::ptr_eq(&first[0].load, &other[0].load));
        second[0].requests.inc();
        assert_eq!(first[0].requests.get(), 1);
    }
}
