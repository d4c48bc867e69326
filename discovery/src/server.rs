//! The Watch server: one task per watcher, each advancing its own `WatchState` to the latest index.
//! The index is shared through a `watch` channel, which never blocks the publisher; a watcher's
//! only queue is its bounded stream buffer, so a slow client stalls nobody but itself and, when it
//! reads again, gets the net change since what it last received.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::debug;
use weft_discovery_api::Target;
use weft_discovery_api::v1::discovery_server::{Discovery, DiscoveryServer};
use weft_discovery_api::v1::watch_update::Update;
use weft_discovery_api::v1::{WatchRequest, WatchUpdate};

use crate::index::Index;
use crate::metrics::Metrics;
use crate::watch_state::WatchState;

/// Updates buffered per watcher before its task waits for the client to read.
pub const WATCHER_QUEUE: usize = 8;

#[derive(Clone)]
pub struct WatchService {
    index: watch::Receiver<Option<Arc<Index>>>,
    metrics: Arc<Metrics>,
}

impl WatchService {
    /// `index` is `None` until the source has loaded: watchers then wait rather than hear
    /// "not in mesh" about services that merely have not been read yet.
    pub fn new(index: watch::Receiver<Option<Arc<Index>>>, metrics: Arc<Metrics>) -> Self {
        WatchService { index, metrics }
    }

    pub fn into_server(self) -> DiscoveryServer<Self> {
        DiscoveryServer::new(self)
    }
}

#[tonic::async_trait]
impl Discovery for WatchService {
    type WatchStream = ReceiverStream<Result<WatchUpdate, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let target: Target =
            request
                .target
                .parse()
                .map_err(|e: weft_discovery_api::TargetError| {
                    Status::invalid_argument(e.to_string())
                })?;
        debug!(%target, client_pod = %request.client_pod, client_namespace = %request.client_namespace, "watch started");
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        tokio::spawn(serve_watcher(
            target,
            request.client_namespace,
            self.index.clone(),
            tx,
            self.metrics.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve_watcher(
    target: Target,
    client_namespace: String,
    mut index: watch::Receiver<Option<Arc<Index>>>,
    tx: mpsc::Sender<Result<WatchUpdate, Status>>,
    metrics: Arc<Metrics>,
) {
    let _open = metrics.watcher();
    let mut state = WatchState::default();
    loop {
        let current = index.borrow_and_update().clone();
        if let Some(current) = current {
            for update in state.advance(current.lookup(&target, &client_namespace)) {
                // Waits while the client's buffer is full; fails once the client is gone.
                let Ok(permit) = tx.reserve().await else {
                    return;
                };
                metrics.update_sent(kind(&update));
                permit.send(Ok(update));
            }
        }
        tokio::select! {
            changed = index.changed() => if changed.is_err() {
                // The index publisher is gone: the server is shutting down.
                return;
            },
            () = tx.closed() => return,
        }
    }
}

fn kind(update: &WatchUpdate) -> &'static str {
    match update.update {
        Some(Update::Snapshot(_)) => "snapshot",
        Some(Update::EndpointsAdded(_)) => "endpoints_added",
        Some(Update::EndpointsRemoved(_)) => "endpoints_removed",
        Some(Update::PolicyChanged(_)) => "policy_changed",
        Some(Update::NotInMesh(_)) => "not_in_mesh",
        None => "empty",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use weft_discovery_api::v1::Endpoint;

    use super::*;
    use crate::index::IndexConfig;
    use crate::objects::ClusterObjects;

    /// A Service `web` (10.96.0.10:80) whose slice holds `endpoints` unmeshed addresses.
    fn index(endpoints: usize) -> Option<Arc<Index>> {
        let addresses: Vec<String> = (0..endpoints)
            .map(|i| {
                format!(
                    "  - addresses: [10.244.{}.{}]\n    conditions: {{ready: true}}\n",
                    i / 250,
                    i % 250 + 1
                )
            })
            .collect();
        let yaml = format!(
            "kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{clusterIP: 10.96.0.10, ports: [{{port: 80}}]}}\n---\n\
             kind: EndpointSlice\nmetadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n{}",
            if addresses.is_empty() {
                "  []\n".to_string()
            } else {
                addresses.concat()
            }
        );
        let objects = ClusterObjects::from_yaml(&yaml).unwrap();
        Some(Arc::new(Index::build(&objects, &IndexConfig::default()).0))
    }

    /// Applies updates to a client-side view, as a proxy would.
    fn apply(view: &mut BTreeMap<String, Endpoint>, update: WatchUpdate) {
        match update.update.unwrap() {
            Update::Snapshot(s) => {
                *view = s
                    .endpoints
                    .into_iter()
                    .map(|e| (e.addr.clone(), e))
                    .collect()
            }
            Update::EndpointsAdded(a) => {
                view.extend(a.endpoints.into_iter().map(|e| (e.addr.clone(), e)))
            }
            Update::EndpointsRemoved(r) => r.addrs.iter().for_each(|a| {
                view.remove(a);
            }),
            Update::PolicyChanged(_) => {}
            Update::NotInMesh(_) => view.clear(),
        }
    }

    fn spawn_watcher(
        index: &watch::Sender<Option<Arc<Index>>>,
        metrics: &Arc<Metrics>,
    ) -> mpsc::Receiver<Result<WatchUpdate, Status>> {
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        tokio::spawn(serve_watcher(
            "10.96.0.10:80".parse().unwrap(),
            String::new(),
            index.subscribe(),
            tx,
            metrics.clone(),
        ));
        rx
    }

    #[tokio::test]
    async fn watchers_wait_for_the_first_index_instead_of_hearing_not_in_mesh() {
        let (index_tx, _) = watch::channel(None);
        let metrics = Arc::new(Metrics::default());
        let mut rx = spawn_watcher(&index_tx, &metrics);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            rx.try_recv().is_err(),
            "nothing before the source has loaded"
        );
        index_tx.send_replace(index(2));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(first.update, Some(Update::Snapshot(ref s)) if s.endpoints.len() == 2));
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_holds_nobody_back_and_catches_up_with_a_bounded_backlog()
    {
        let (index_tx, _) = watch::channel(index(1));
        let metrics = Arc::new(Metrics::default());
        let mut slow = spawn_watcher(&index_tx, &metrics);
        let mut fast = spawn_watcher(&index_tx, &metrics);
        let mut fast_view = BTreeMap::new();
        // 200 changes: the fast watcher sees each one while the slow one never reads.
        for n in 2..=201 {
            index_tx.send_replace(index(n));
            while fast_view.len() != n {
                let update = tokio::time::timeout(Duration::from_secs(5), fast.recv())
                    .await
                    .expect("the fast watcher is not held back")
                    .unwrap()
                    .unwrap();
                apply(&mut fast_view, update);
            }
        }
        // The slow watcher's backlog is its queue plus one diff, not 200 changes.
        let mut slow_view = BTreeMap::new();
        let mut received = 0;
        while slow_view.len() != 201 {
            let update = tokio::time::timeout(Duration::from_secs(5), slow.recv())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            apply(&mut slow_view, update);
            received += 1;
        }
        assert!(
            received <= WATCHER_QUEUE + 3,
            "{received} updates for a lagging watcher"
        );
        assert_eq!(slow_view, fast_view);
    }

    #[tokio::test]
    async fn watchers_end_when_the_client_goes_and_the_gauge_follows() {
        let (index_tx, _) = watch::channel(index(1));
        let metrics = Arc::new(Metrics::default());
        let rx = spawn_watcher(&index_tx, &metrics);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            metrics
                .render()
                .unwrap()
                .contains("weft_discovery_watchers 1")
        );
        drop(rx);
        for _ in 0..100 {
            if metrics
                .render()
                .unwrap()
                .contains("weft_discovery_watchers 0")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the watcher task did not end: {}",
            metrics.render().unwrap()
        );
    }
}
