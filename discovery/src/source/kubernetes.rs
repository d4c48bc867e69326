//! The Kubernetes source: kube-rs reflectors over Services, EndpointSlices and Pods in all
//! namespaces (in-cluster config). The plumbing is kube-rs's own; what this adds is the wait for
//! all three initial lists (so the first index is complete, not a half-listed cluster) and a short
//! coalescing delay so a burst of events rebuilds the index once.
//!
//! RBAC: get, list, watch on `services`, `pods` (core) and `endpointslices` (discovery.k8s.io),
//! cluster-wide. See docs/discovery.md.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::stream::{BoxStream, StreamExt, TryStreamExt, select_all};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::{ObjectSink, Source};
use crate::objects::ClusterObjects;

/// Events closer together than this rebuild the index once.
const COALESCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum KubernetesSourceError {
    #[error(
        "--source kubernetes: no Kubernetes configuration (in-cluster service account or kubeconfig): {0}"
    )]
    Config(#[source] kube::Error),
    #[error("--source kubernetes: the {0} watch ended")]
    WatchEnded(&'static str),
}

pub struct KubernetesSource {
    client: Client,
}

impl KubernetesSource {
    /// In-cluster configuration (or the local kubeconfig when run outside a cluster).
    pub async fn connect() -> Result<KubernetesSource, KubernetesSourceError> {
        let client = Client::try_default()
            .await
            .map_err(KubernetesSourceError::Config)?;
        Ok(KubernetesSource { client })
    }
}

impl Source for KubernetesSource {
    type Error = KubernetesSourceError;

    async fn run(self, sink: ObjectSink) -> Result<(), KubernetesSourceError> {
        let (services, services_events) = reflect::<Service>(&self.client, "Service");
        let (slices, slices_events) = reflect::<EndpointSlice>(&self.client, "EndpointSlice");
        let (pods, pods_events) = reflect::<Pod>(&self.client, "Pod");
        let dirty = std::sync::Arc::new(Notify::new());

        let publisher = {
            let (services, slices, pods, dirty, sink) = (
                services.clone(),
                slices.clone(),
                pods.clone(),
                dirty.clone(),
                sink.clone(),
            );
            async move {
                // A store only reports ready once its first full list is in.
                let ready = futures_util::future::try_join3(
                    services.wait_until_ready(),
                    slices.wait_until_ready(),
                    pods.wait_until_ready(),
                )
                .await;
                if ready.is_err() {
                    return;
                }
                info!("initial lists of Services, EndpointSlices and Pods loaded");
                loop {
                    sink.publish(snapshot(&services, &slices, &pods));
                    dirty.notified().await;
                    tokio::time::sleep(COALESCE).await;
                }
            }
        };
        let publisher = tokio::spawn(publisher);

        let mut events = select_all([services_events, slices_events, pods_events]);
        while let Some((kind, result)) = events.next().await {
            match result {
                Ok(()) => dirty.notify_one(),
                Err(error) => {
                    // The backoff inside the stream retries; the stores keep the last objects.
                    sink.error();
                    warn!(kind, %error, "Kubernetes watch failed; retrying with backoff");
                }
            }
        }
        publisher.abort();
        Err(KubernetesSourceError::WatchEnded(
            "Service/EndpointSlice/Pod",
        ))
    }
}

type Events = BoxStream<'static, (&'static str, Result<(), watcher::Error>)>;

fn reflect<K>(client: &Client, kind: &'static str) -> (Store<K>, Events)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        // Managed fields are half an object's size and nothing here reads them.
        .map_ok(|event| event.modify(|object| object.managed_fields_mut().clear()))
        .default_backoff()
        .reflect(writer)
        .map(move |result| (kind, result.map(|_| ())))
        .boxed();
    (store, events)
}

fn snapshot(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pods: &Store<Pod>,
) -> ClusterObjects {
    let mut objects = ClusterObjects::default();
    for service in services.state() {
        objects.insert_service((*service).clone());
    }
    for slice in slices.state() {
        objects.insert_slice((*slice).clone());
    }
    for pod in pods.state() {
        objects.insert_pod((*pod).clone());
    }
    objects
}
