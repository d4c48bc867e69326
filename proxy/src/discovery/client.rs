//! The discovery service's client: one `Watch` stream per key over one shared, lazily connected
//! gRPC channel (its address resolved with our own DNS). Updates are folded into the key's
//! [`WatchState`] and published. When the service goes away the last known endpoints stay in use
//! (logged, and counted in `weft_discovery_stale`) while the stream is re-opened with backoff;
//! names the mesh does not know are followed in DNS instead.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};
use tracing::{debug, info, warn};
use weft_discovery_api::v1::discovery_client::DiscoveryClient;
use weft_discovery_api::v1::watch_update::Update;
use weft_discovery_api::v1::{self as api, WatchRequest, WatchUpdate};

use crate::backoff::{ExponentialBackoff, jitter_rng};
use crate::discovery::cache::{Feed, Source};
use crate::discovery::dns::{Dns, DnsFollower};
use crate::discovery::endpoints::EndpointSpec;
use crate::discovery::{Key, Origin, Resolution};

/// Between reconnects to the discovery service.
const BACKOFF: ExponentialBackoff =
    ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(5));

#[derive(Debug, thiserror::Error)]
#[error("WEFT_DISCOVERY_ADDR={addr:?} is not a usable host:port: {source}")]
pub struct ClientError {
    addr: String,
    #[source]
    source: tonic::transport::Error,
}

/// Who is watching, for the server to resolve bare names and to log.
#[derive(Clone, Debug, Default)]
pub struct Watcher {
    pub namespace: String,
    pub pod: String,
}

pub struct GrpcSource {
    client: DiscoveryClient<Channel>,
    dns: Arc<Dns>,
    watcher: Watcher,
}

impl GrpcSource {
    /// A source talking to `addr` ("host:port"); connects on first use.
    pub fn new(
        addr: &str,
        connect_timeout: Duration,
        dns: Arc<Dns>,
        watcher: Watcher,
    ) -> Result<Self, ClientError> {
        let endpoint = GrpcEndpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| ClientError {
                addr: addr.to_string(),
                source,
            })?
            .connect_timeout(connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let resolver = dns.clone();
        let connector = tower::service_fn(move |uri: http::Uri| {
            let dns = resolver.clone();
            async move { connect(&dns, &uri).await.map(TokioIo::new) }
        });
        let channel = endpoint.connect_with_connector_lazy(connector);
        Ok(GrpcSource {
            client: DiscoveryClient::new(channel),
            dns,
            watcher,
        })
    }

    async fn run(&self, key: Key, feed: &mut Feed) {
        // Failures since the last update: a working stream starts the backoff over.
        let mut failures = 0u32;
        let mut rng = jitter_rng();
        let mut state = WatchState::default();
        let mut dns = match &key {
            Key::Name { host, port } => Some(DnsFollower::new(host.clone(), *port)),
            Key::Addr(_) => None,
        };
        let mut attempts = 0u32;
        loop {
            let request = WatchRequest {
                target: key.to_string(),
                client_namespace: self.watcher.namespace.clone(),
                client_pod: self.watcher.pod.clone(),
            };
            if attempts > 0 {
                feed.metrics().reconnect();
            }
            attempts = attempts.saturating_add(1);
            let ended = match self.client.clone().watch(request).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        let next = if state.not_in_mesh
                            && let Some(dns) = dns.as_mut()
                        {
                            // A name the mesh does not know: follow it in DNS, while still
                            // listening in case the mesh learns it.
                            let wait = dns.refresh(&self.dns, feed).await;
                            match tokio::time::timeout(wait, stream.message()).await {
                                Ok(next) => next,
                                Err(_refresh_due) => continue,
                            }
                        } else {
                            stream.message().await
                        };
                        match next {
                            Ok(Some(update)) => {
                                failures = 0;
                                feed.set_stale(false);
                                feed.metrics().update();
                                state.apply(&key, update, feed);
                            }
                            Ok(None) => break "the discovery service ended the stream".to_string(),
                            Err(status) => break status.to_string(),
                        }
                    }
                }
                Err(status) => status.to_string(),
            };
            match feed.current() {
                Resolution::Service(_) => {
                    if !feed.is_stale() {
                        warn!(target = %key, error = %ended, "discovery unreachable; using last known endpoints for {key}");
                    }
                    feed.set_stale(true);
                }
                Resolution::Pending => {
                    warn!(target = %key, error = %ended, "discovery unreachable; forwarding {key} to its original destination until it answers");
                    feed.publish(Resolution::Unavailable);
                }
                Resolution::Passthrough | Resolution::Unavailable => {
                    debug!(target = %key, error = %ended, "discovery watch ended")
                }
            }
            failures = failures.saturating_add(1);
            let delay = BACKOFF.delay(failures, &mut rng);
            tokio::time::sleep(delay).await;
        }
    }
}

impl Source for GrpcSource {
    fn watch(
        self: Arc<Self>,
        key: Key,
        mut feed: Feed,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { self.run(key, &mut feed).await })
    }
}

/// Connects to the discovery service, resolving its name with our DNS (every address in turn).
async fn connect(dns: &Dns, uri: &http::Uri) -> Result<tokio::net::TcpStream, std::io::Error> {
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match host.trim_matches(['[', ']']).parse() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let answer = match absolute(host) {
                Some(name) => match dns.resolve(&name).await {
                    Ok(answer) => Ok(answer),
                    Err(_) => dns.resolve(host).await,
                },
                None => dns.resolve(host).await,
            };
            answer
                .map_err(std::io::Error::other)?
                .addrs
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()
        }
    };
    let mut last = std::io::Error::other(format!("{host} has no addresses"));
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// The control plane's address as an absolute name, to be tried before the search list. It is
/// configured fully qualified (`weft-discovery.weft.svc.cluster.local`), but pods resolve with
/// `ndots:5`, which would try it under every search domain first: a DNS round trip each, or a
/// timeout each where the nameserver does not answer, longer than the connect timeout.
fn absolute(host: &str) -> Option<String> {
    (host.contains('.') && !host.ends_with('.')).then(|| format!("{host}."))
}

/// What one watch knows of its target, folded from the stream's updates.
#[derive(Debug, Default)]
pub struct WatchState {
    service: Option<Arc<str>>,
    endpoints: Vec<EndpointSpec>,
    policy: Arc<api::ServicePolicy>,
    not_in_mesh: bool,
}

impl WatchState {
    /// Applies one update and publishes the result.
    pub fn apply(&mut self, key: &Key, update: WatchUpdate, feed: &Feed) {
        let Some(update) = update.update else { return };
        match update {
            Update::Snapshot(snapshot) => {
                let Some(service) = snapshot.service else {
                    warn!(target = %key, "discovery sent a snapshot without a service; ignoring it");
                    return;
                };
                let name: Arc<str> =
                    format!("{}.{}:{}", service.name, service.namespace, service.port).into();
                if self.service.as_ref() != Some(&name) {
                    info!(target = %key, service = %name, endpoints = snapshot.endpoints.len(), "discovered");
                }
                self.service = Some(name);
                self.not_in_mesh = false;
                self.endpoints.clear();
                self.add(key, &snapshot.endpoints);
                self.policy = Arc::new(snapshot.policy.unwrap_or_default());
            }
            Update::EndpointsAdded(added) => self.add(key, &added.endpoints),
            Update::EndpointsRemoved(removed) => {
                for addr in &removed.addrs {
                    match weft_discovery_api::parse_addr(addr) {
                        Ok(addr) => self.endpoints.retain(|e| e.addr != addr),
                        Err(err) => warn!(target = %key, error = %err, "skipping a removal"),
                    }
                }
            }
            Update::PolicyChanged(changed) => {
                self.policy = Arc::new(changed.policy.unwrap_or_default());
            }
            Update::NotInMesh(_) => {
                self.service = None;
                self.endpoints.clear();
                self.not_in_mesh = true;
                feed.publish(Resolution::Passthrough);
                return;
            }
        }
        self.publish(feed);
    }

    fn add(&mut self, key: &Key, endpoints: &[api::Endpoint]) {
        for endpoint in endpoints {
            match spec(endpoint) {
                Ok(spec) => match self.endpoints.iter_mut().find(|e| e.addr == spec.addr) {
                    Some(known) => *known = spec,
                    None => self.endpoints.push(spec),
                },
                Err(err) => warn!(target = %key, error = %err, "skipping an endpoint"),
            }
        }
    }

    fn publish(&self, feed: &Feed) {
        let Some(name) = &self.service else { return };
        let split: Vec<(Key, u32)> = self
            .policy
            .split
            .iter()
            .filter_map(|target| {
                let port = u16::try_from(target.port).ok()?;
                Some((
                    Key::Name {
                        host: target.service.to_ascii_lowercase().into(),
                        port,
                    },
                    target.weight,
                ))
            })
            // A split naming the service itself would watch its own key forever.
            .filter(|(backend, _)| backend != feed.key())
            .collect();
        feed.publish_service(
            name.clone(),
            Origin::Discovery,
            &self.endpoints,
            &split,
            self.policy.clone(),
        );
    }
}

fn spec(endpoint: &api::Endpoint) -> Result<EndpointSpec, weft_discovery_api::EndpointAddrError> {
    Ok(EndpointSpec {
        addr: endpoint.socket_addr()?,
        weight: endpoint.effective_weight(),
        zone: endpoint.zone.as_str().into(),
        identity: (!endpoint.identity.is_empty()).then(|| endpoint.identity.as_str().into()),
        meshed: endpoint.meshed,
        proxy_port: u16::try_from(endpoint.proxy_port).unwrap_or(0),
        pod: endpoint.pod.as_str().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::absolute;

    #[test]
    fn dotted_names_are_tried_as_written_first() {
        assert_eq!(
            absolute("weft-discovery.weft.svc.cluster.local").as_deref(),
            Some("weft-discovery.weft.svc.cluster.local.")
        );
        assert_eq!(absolute("weft-discovery.weft.svc.cluster.local."), None);
        // A bare name only makes sense with the search list.
        assert_eq!(absolute("weft-discovery"), None);
    }
}
