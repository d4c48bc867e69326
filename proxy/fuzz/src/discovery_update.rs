//! Discovery updates as the proxy receives them: prost decoding of `weft.discovery.v1.WatchUpdate`
//! messages and the proxy's folding of them into a service (`weft_proxy::discovery::client::
//! WatchState` publishing through the discovery cache), run through the cache's public `Source`
//! interface as the gRPC client would.
//!
//! The input is a sequence of length-delimited `WatchUpdate`s (at most 64). Holds for any input:
//! each message re-encodes to an equal message; folding never panics; the published service
//! names the last snapshot's service, lists each address at most once and only addresses the
//! updates sent; a meshed endpoint's peer is its IP on its proxy port with the identity it was
//! sent; after `NotInMesh` the target passes through; a split never watches the service itself.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message;
use tokio::sync::oneshot;
use weft_discovery_api::v1::WatchUpdate;
use weft_discovery_api::v1::watch_update::Update;
use weft_proxy::discovery::cache::Discovery;
use weft_proxy::discovery::cache::{CacheConfig, Feed, Source};
use weft_proxy::discovery::client::WatchState;
use weft_proxy::discovery::{Key, Resolution};
use weft_proxy::metrics::discovery::DiscoveryMetrics;

use crate::runtime::block_on;

const MAX_UPDATES: usize = 64;

/// Answers the watched key with the scripted updates, folded as the gRPC client folds them, and
/// reports what was published; split backends are watched but never answered.
struct Scripted {
    key: Key,
    script: Mutex<Option<(Vec<WatchUpdate>, oneshot::Sender<Resolution>)>>,
}

impl Source for Scripted {
    fn watch(self: Arc<Self>, key: Key, feed: Feed) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            if key != self.key {
                return;
            }
            let script = self
                .script
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let Some((updates, done)) = script else {
                return;
            };
            let mut state = WatchState::default();
            for update in updates {
                state.apply(&key, update, &feed);
            }
            let _ = done.send(feed.current());
        })
    }
}

pub fn check(data: &[u8]) {
    let mut buf = data;
    let mut updates = Vec::new();
    while !buf.is_empty() && updates.len() < MAX_UPDATES {
        let Ok(update) = WatchUpdate::decode_length_delimited(&mut buf) else {
            break;
        };
        let again = WatchUpdate::decode(update.encode_to_vec().as_slice())
            .expect("a re-encoded update decodes");
        assert_eq!(again, update, "an update changed through re-encoding");
        updates.push(update);
    }
    exercise_policy_views(&updates);

    let key = Key::Name {
        host: "web.shop.svc.cluster.local".into(),
        port: 8080,
    };
    let (done, published) = oneshot::channel();
    let source = Arc::new(Scripted {
        key: key.clone(),
        script: Mutex::new(Some((updates.clone(), done))),
    });
    // Made outside the runtime, so no background sweeper outlives this input.
    let discovery = Discovery::new(
        source,
        CacheConfig {
            wait: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3600),
        },
        DiscoveryMetrics::unregistered(),
    );
    let resolution = block_on(async {
        let _rx = discovery.watch(key.clone());
        published.await.expect("the scripted source reports")
    });
    check_resolution(&key, &updates, &resolution);
}

/// The typed views the proxy reads policies through.
fn exercise_policy_views(updates: &[WatchUpdate]) {
    for update in updates {
        let policy = match &update.update {
            Some(Update::Snapshot(snapshot)) => snapshot.policy.as_ref(),
            Some(Update::PolicyChanged(changed)) => changed.policy.as_ref(),
            _ => None,
        };
        let Some(policy) = policy else { continue };
        let _ = (policy.timeout(), policy.per_try_timeout());
        let _ = policy.route_for("GET", "/");
        for route in &policy.routes {
            let _ = (route.timeout(), route.per_try_timeout());
            assert!(route.matches("GET", &route.path_prefix) || !route.methods.is_empty());
        }
        if let Some(retry) = &policy.retry {
            let _ = (retry.backoff_base(), retry.backoff_max());
        }
        if let Some(breaker) = &policy.breaker {
            let _ = (breaker.base_ejection(), breaker.max_ejection());
        }
    }
}

fn check_resolution(key: &Key, updates: &[WatchUpdate], resolution: &Resolution) {
    let effective: Vec<&Update> = updates
        .iter()
        .filter_map(|u| u.update.as_ref())
        // A snapshot without a service is ignored.
        .filter(|u| !matches!(u, Update::Snapshot(s) if s.service.is_none()))
        .collect();
    if let Some(Update::NotInMesh(_)) = effective.last() {
        assert!(
            matches!(resolution, Resolution::Passthrough),
            "NotInMesh was last, yet the target resolves to {resolution:?}"
        );
        return;
    }
    let Resolution::Service(service) = resolution else {
        return;
    };
    let last_service = effective.iter().rev().find_map(|u| match u {
        Update::Snapshot(s) => s.service.as_ref(),
        _ => None,
    });
    let last_service = last_service.expect("a service is published only after a snapshot");
    assert_eq!(
        &*service.name,
        format!(
            "{}.{}:{}",
            last_service.name, last_service.namespace, last_service.port
        )
    );
    let sent: Vec<&weft_discovery_api::v1::Endpoint> = effective
        .iter()
        .flat_map(|u| match u {
            Update::Snapshot(s) => s.endpoints.iter().collect::<Vec<_>>(),
            Update::EndpointsAdded(a) => a.endpoints.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    let mut seen = HashSet::new();
    for endpoint in &service.endpoints {
        assert!(seen.insert(endpoint.addr), "{} listed twice", endpoint.addr);
        // The last description of this address that was sent is the one in use.
        let described = sent
            .iter()
            .rev()
            .find(|e| e.socket_addr().ok() == Some(endpoint.addr))
            .expect("an endpoint the updates never sent");
        assert_eq!(endpoint.weight, described.effective_weight());
        assert_eq!(endpoint.meshed, described.meshed);
        let proxy = described.proxy_addr().expect("its address parsed");
        let identity = (!described.identity.is_empty()).then_some(described.identity.as_str());
        match (&endpoint.peer, proxy, identity) {
            (Some(Ok(peer)), Some(proxy), Some(identity)) => {
                assert_eq!(peer.proxy, proxy);
                assert_eq!(peer.identity.to_string(), identity);
            }
            (Some(Err(_)), Some(_), Some(identity)) => {
                assert!(weft_tls::SpiffeId::parse(identity).is_err())
            }
            (None, None, _) | (None, Some(_), None) => {}
            (peer, proxy, identity) => panic!(
                "endpoint {} has peer {peer:?} for proxy address {proxy:?} and identity {identity:?}",
                endpoint.addr
            ),
        }
    }
    let own = key.to_string();
    for backend in &service.split {
        assert_ne!(*backend.name, own, "a split watches the service itself");
    }
}
