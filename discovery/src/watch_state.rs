//! What one watcher holds for its target, and the updates that bring it to the current state.
//! Updates are computed from "what the client holds" to "what is true now", never replayed from a
//! log: a watcher that fell behind gets the net difference (or one snapshot), however many
//! changes it missed, so its backlog is bounded by construction.

use std::sync::Arc;

use weft_discovery_api::v1::{
    EndpointsAdded, EndpointsRemoved, NotInMesh, PolicyChanged, Snapshot, WatchUpdate,
    watch_update::Update,
};

use crate::index::ServiceState;

#[derive(Debug, Default)]
pub struct WatchState {
    held: Held,
}

#[derive(Debug, Default)]
enum Held {
    #[default]
    Nothing,
    NotInMesh,
    Service(Arc<ServiceState>),
}

impl WatchState {
    /// The updates from what the client holds to `now` (None = the target is not in the mesh);
    /// the client is then taken to hold `now`. Empty when nothing the client sees changed.
    pub fn advance(&mut self, now: Option<Arc<ServiceState>>) -> Vec<WatchUpdate> {
        let updates = match (&self.held, &now) {
            (Held::NotInMesh, None) => Vec::new(),
            (_, None) => vec![update(Update::NotInMesh(NotInMesh {}))],
            (Held::Service(held), Some(now)) if held.service == now.service => changes(held, now),
            (_, Some(now)) => vec![snapshot(now)],
        };
        self.held = match now {
            Some(state) => Held::Service(state),
            None => Held::NotInMesh,
        };
        updates
    }
}

fn update(update: Update) -> WatchUpdate {
    WatchUpdate {
        update: Some(update),
    }
}

fn snapshot(state: &ServiceState) -> WatchUpdate {
    update(Update::Snapshot(Snapshot {
        service: Some(state.service.clone()),
        endpoints: state.endpoints.values().cloned().collect(),
        policy: Some(state.policy.clone()),
    }))
}

/// Same service, so deltas: removals first (clients drain them), then additions/changes, then policy.
fn changes(held: &ServiceState, now: &ServiceState) -> Vec<WatchUpdate> {
    if std::ptr::eq(held, now) {
        return Vec::new();
    }
    let mut updates = Vec::new();
    let removed: Vec<String> = held
        .endpoints
        .keys()
        .filter(|addr| !now.endpoints.contains_key(*addr))
        .cloned()
        .collect();
    if !removed.is_empty() {
        updates.push(update(Update::EndpointsRemoved(EndpointsRemoved {
            addrs: removed,
        })));
    }
    let added: Vec<_> = now
        .endpoints
        .iter()
        .filter(|(addr, endpoint)| held.endpoints.get(*addr) != Some(endpoint))
        .map(|(_, endpoint)| endpoint.clone())
        .collect();
    if !added.is_empty() {
        updates.push(update(Update::EndpointsAdded(EndpointsAdded {
            endpoints: added,
        })));
    }
    if held.policy != now.policy {
        updates.push(update(Update::PolicyChanged(PolicyChanged {
            policy: Some(now.policy.clone()),
        })));
    }
    updates
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_discovery_api::v1::{Endpoint, Service, ServicePolicy};

    use super::*;

    fn state(service: &str, addrs: &[&str], timeout_ms: Option<u64>) -> Option<Arc<ServiceState>> {
        let endpoints: BTreeMap<String, Endpoint> = addrs
            .iter()
            .map(|a| {
                (
                    a.to_string(),
                    Endpoint {
                        addr: a.to_string(),
                        weight: 1,
                        ..Default::default()
                    },
                )
            })
            .collect();
        Some(Arc::new(ServiceState {
            service: Service {
                name: service.into(),
                namespace: "shop".into(),
                port: 80,
                port_name: String::new(),
            },
            endpoints,
            policy: ServicePolicy {
                timeout_ms,
                ..Default::default()
            },
        }))
    }

    fn kinds(updates: &[WatchUpdate]) -> Vec<&'static str> {
        updates
            .iter()
            .map(|u| match u.update {
                Some(Update::Snapshot(_)) => "snapshot",
                Some(Update::EndpointsAdded(_)) => "added",
                Some(Update::EndpointsRemoved(_)) => "removed",
                Some(Update::PolicyChanged(_)) => "policy",
                Some(Update::NotInMesh(_)) => "not-in-mesh",
                None => "empty",
            })
            .collect()
    }

    #[test]
    fn first_a_snapshot_then_deltas() {
        let mut watch = WatchState::default();
        let first = watch.advance(state("web", &["10.0.0.1:80", "10.0.0.2:80"], None));
        assert_eq!(kinds(&first), ["snapshot"]);
        let Some(Update::Snapshot(snap)) = &first[0].update else {
            unreachable!()
        };
        assert_eq!(snap.endpoints.len(), 2);

        let next = watch.advance(state("web", &["10.0.0.2:80", "10.0.0.3:80"], Some(100)));
        assert_eq!(kinds(&next), ["removed", "added", "policy"]);
        let Some(Update::EndpointsRemoved(removed)) = &next[0].update else {
            unreachable!()
        };
        assert_eq!(removed.addrs, ["10.0.0.1:80"]);
        let Some(Update::EndpointsAdded(added)) = &next[1].update else {
            unreachable!()
        };
        assert_eq!(
            added
                .endpoints
                .iter()
                .map(|e| e.addr.as_str())
                .collect::<Vec<_>>(),
            ["10.0.0.3:80"]
        );

        assert!(
            watch
                .advance(state("web", &["10.0.0.2:80", "10.0.0.3:80"], Some(100)))
                .is_empty()
        );
    }

    #[test]
    fn a_changed_endpoint_is_sent_again_as_added() {
        let mut watch = WatchState::default();
        watch.advance(state("web", &["10.0.0.1:80"], None));
        let mut changed = (*state("web", &["10.0.0.1:80"], None).unwrap()).clone();
        changed.endpoints.get_mut("10.0.0.1:80").unwrap().meshed = true;
        assert_eq!(kinds(&watch.advance(Some(Arc::new(changed)))), ["added"]);
    }

    #[test]
    fn unknown_targets_are_not_in_mesh_once_until_they_become_known() {
        let mut watch = WatchState::default();
        assert_eq!(kinds(&watch.advance(None)), ["not-in-mesh"]);
        assert!(watch.advance(None).is_empty());
        assert_eq!(
            kinds(&watch.advance(state("web", &["10.0.0.1:80"], None))),
            ["snapshot"]
        );
        assert_eq!(kinds(&watch.advance(None)), ["not-in-mesh"]);
    }

    #[test]
    fn another_service_behind_the_target_is_a_new_snapshot() {
        let mut watch = WatchState::default();
        watch.advance(state("web", &["10.0.0.1:80"], None));
        assert_eq!(
            kinds(&watch.advance(state("api", &["10.0.0.1:80"], None))),
            ["snapshot"]
        );
    }

    #[test]
    fn a_lagging_watcher_gets_the_net_change_not_the_history() {
        let mut watch = WatchState::default();
        watch.advance(state("web", &["10.0.0.1:80"], None));
        // States 2..199 passed while the watcher was not reading; it advances to the latest only.
        let latest = state("web", &["10.0.0.199:80"], None);
        let updates = watch.advance(latest);
        assert_eq!(kinds(&updates), ["removed", "added"]);
    }
}
