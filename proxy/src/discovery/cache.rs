//! The discovery client's cache: one watch per [`Key`], started on first use, shared by every
//! connection that asks for it, and stopped once nothing has used it for the idle timeout. Each
//! watch publishes into a `tokio::sync::watch` channel, so connections read the current answer
//! without locks and see changes as they happen.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::debug;
use weft_discovery_api::v1::ServicePolicy;

use crate::discovery::endpoints::{EndpointRegistry, EndpointSpec};
use crate::discovery::{Backend, Key, Origin, Resolution, Service};
use crate::metrics::discovery::{DiscoveryMetrics, Fallback};

/// A source of resolutions (the discovery service, DNS): feeds one key until the watch is
/// dropped (its task aborted).
pub trait Source: Send + Sync + 'static {
    fn watch(self: Arc<Self>, key: Key, feed: Feed) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// How long the first connection to a target waits for the first answer.
    pub wait: Duration,
    /// Watches unused this long are stopped.
    pub idle_timeout: Duration,
}

struct Entry {
    tx: watch::Sender<Resolution>,
    task: AbortHandle,
    last_used: Instant,
}

struct Inner {
    source: Arc<dyn Source>,
    entries: Mutex<HashMap<Key, Entry>>,
    registry: EndpointRegistry,
    metrics: DiscoveryMetrics,
    config: CacheConfig,
}

/// A cheap handle to the cache (clone freely).
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

impl Discovery {
    /// A cache over `source`, swept for idle watches in the background (when a runtime runs).
    pub fn new(source: Arc<dyn Source>, config: CacheConfig, metrics: DiscoveryMetrics) -> Self {
        let inner = Arc::new(Inner {
            source,
            entries: Mutex::new(HashMap::new()),
            registry: EndpointRegistry::new(metrics.clone()),
            metrics,
            config,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_periodically(Arc::downgrade(&inner)));
        }
        Discovery { inner }
    }

    /// The answer for `key`, waiting (bounded by the configured wait) for the first one, and
    /// the channel that carries its later changes. Without an answer in time the connection
    /// passes through to its original destination, and that is counted.
    pub async fn resolve(&self, key: Key) -> (Resolution, watch::Receiver<Resolution>) {
        let mut rx = self.watch(key.clone());
        let wait = self.inner.config.wait;
        let answered =
            tokio::time::timeout(wait, rx.wait_for(|r| !matches!(r, Resolution::Pending)))
                .await
                .map(|answer| answer.map(|r| r.clone()));
        let resolution = match answered {
            Ok(Ok(answer)) => answer,
            // The watch ended without answering (its source gave up): nothing to route by.
            Ok(Err(_closed)) => Resolution::Unavailable,
            Err(_elapsed) => {
                debug!(target = %key, ?wait, "no discovery answer in time; forwarding to the original destination");
                self.inner.metrics.fallback(Fallback::Timeout);
                return (Resolution::Unavailable, rx);
            }
        };
        if matches!(resolution, Resolution::Unavailable) {
            self.inner.metrics.fallback(Fallback::Unavailable);
        }
        (resolution, rx)
    }

    /// The channel for `key`, starting its watch if it has none.
    pub fn watch(&self, key: Key) -> watch::Receiver<Resolution> {
        let mut entries = self.lock();
        let now = Instant::now();
        if let Some(entry) = entries.get_mut(&key) {
            entry.last_used = now;
            return entry.tx.subscribe();
        }
        let (tx, rx) = watch::channel(Resolution::Pending);
        let feed = Feed {
            tx: tx.clone(),
            key: key.clone(),
            cache: Arc::downgrade(&self.inner),
            stale: false,
            metrics: self.inner.metrics.clone(),
        };
        self.inner.metrics.watch_started();
        let task = tokio::spawn(self.inner.source.clone().watch(key.clone(), feed)).abort_handle();
        entries.insert(
            key,
            Entry {
                tx,
                task,
                last_used: now,
            },
        );
        rx
    }

    /// Stops watches nobody holds and nobody asked for within the idle timeout.
    pub fn sweep(&self) {
        sweep(&self.inner, Instant::now());
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    fn age(&self, by: Duration) {
        for entry in self.lock().values_mut() {
            entry.last_used -= by;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn sweep(inner: &Inner, now: Instant) {
    let idle = inner.config.idle_timeout;
    let mut entries = inner.entries.lock().unwrap_or_else(PoisonError::into_inner);
    entries.retain(|key, entry| {
        let unused = entry.tx.receiver_count() == 0;
        let keep = !unused || now.duration_since(entry.last_used) < idle;
        if !keep {
            debug!(target = %key, "no longer used; stopping its discovery watch");
            entry.task.abort();
        }
        keep
    });
}

async fn sweep_periodically(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(inner) => (inner.config.idle_timeout / 4).max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        sweep(&inner, Instant::now());
    }
}

/// What a source publishes one key's answers through.
pub struct Feed {
    tx: watch::Sender<Resolution>,
    key: Key,
    cache: Weak<Inner>,
    stale: bool,
    metrics: DiscoveryMetrics,
}

impl Feed {
    pub fn key(&self) -> &Key {
        &self.key
    }

    pub fn current(&self) -> Resolution {
        self.tx.borrow().clone()
    }

    pub fn publish(&self, resolution: Resolution) {
        self.tx.send_replace(resolution);
    }

    /// Publishes a service built from endpoint descriptions; split backends (`(key, weight)`)
    /// are watched through the same cache.
    pub fn publish_service(
        &self,
        name: Arc<str>,
        origin: Origin,
        endpoints: &[EndpointSpec],
        split: &[(Key, u32)],
        policy: Arc<ServicePolicy>,
    ) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        let endpoints = cache.registry.endpoints(&name, endpoints);
        let discovery = Discovery { inner: cache };
        let split = split
            .iter()
            .map(|(key, weight)| Backend {
                name: key.to_string().into(),
                weight: *weight,
                resolution: discovery.watch(key.clone()),
            })
            .collect();
        self.publish(Resolution::Service(Arc::new(Service {
            name,
            origin,
            endpoints,
            split,
            policy,
        })));
    }

    /// Whether this key is being served from its last known state (the source is unreachable).
    pub fn set_stale(&mut self, stale: bool) {
        if stale != self.stale {
            if stale {
                self.metrics.stale().inc();
            } else {
                self.metrics.stale().dec();
            }
            self.stale = stale;
        }
    }

    pub fn is_stale(&self) -> bool {
        self.stale
    }

    pub fn metrics(&self) -> &DiscoveryMetrics {
        &self.metrics
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.set_stale(false);
        self.metrics.watch_ended();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers every key with one endpoint (its own address for IP keys) after `delay`, then
    /// follows scripted changes.
    struct Fake {
        started: AtomicUsize,
        delay: Duration,
        changes: watch::Sender<Vec<EndpointSpec>>,
    }

    impl Source for Fake {
        fn watch(
            self: Arc<Self>,
            key: Key,
            feed: Feed,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            self.started.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                let mut changes = self.changes.subscribe();
                loop {
                    let specs = changes.borrow_and_update().clone();
                    if specs.is_empty() {
                        feed.publish(Resolution::Passthrough);
                    } else {
                        feed.publish_service(
                            key.to_string().into(),
                            Origin::Discovery,
                            &specs,
                            &[],
                            Default::default(),
                        );
                    }
                    if changes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            })
        }
    }

    fn fake(delay: Duration, specs: Vec<EndpointSpec>) -> Arc<Fake> {
        Arc::new(Fake {
            started: AtomicUsize::new(0),
            delay,
            changes: watch::channel(specs).0,
        })
    }

    fn config() -> CacheConfig {
        CacheConfig {
            wait: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(60),
        }
    }

    fn spec(addr: &str) -> EndpointSpec {
        EndpointSpec::plain(addr.parse().unwrap())
    }

    fn key(addr: &str) -> Key {
        Key::Addr(addr.parse().unwrap())
    }

    #[tokio::test]
    async fn one_watch_per_key_shared_and_updated() {
        let source = fake(Duration::ZERO, vec![spec("10.0.0.1:80")]);
        let cache = Discovery::new(source.clone(), config(), DiscoveryMetrics::unregistered());
        let (first, mut rx) = cache.resolve(key("10.9.0.1:80")).await;
        let (second, _rx2) = cache.resolve(key("10.9.0.1:80")).await;
        assert_eq!(source.started.load(Ordering::SeqCst), 1);
        assert_eq!(first.service().unwrap().endpoints.len(), 1);
        assert_eq!(
            second.service().unwrap().endpoints[0].addr,
            spec("10.0.0.1:80").addr
        );
        source
            .changes
            .send_replace(vec![spec("10.0.0.1:80"), spec("10.0.0.2:80")]);
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let now = rx.borrow().clone();
        let endpoints = &now.service().unwrap().endpoints;
        assert_eq!(endpoints.len(), 2);
        // The endpoint that stayed kept its statistics.
        assert!(Arc::ptr_eq(
            &endpoints[0].load,
            &first.service().unwrap().endpoints[0].load
        ));
    }

    #[tokio::test]
    async fn a_slow_first_answer_falls_back_and_is_counted() {
        let source = fake(Duration::from_secs(3600), vec![spec("10.0.0.1:80")]);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = DiscoveryMetrics::register(&mut registry);
        let cache = Discovery::new(source, config(), metrics);
        let (answer, _rx) = cache.resolve(key("10.9.0.1:80")).await;
        assert!(matches!(answer, Resolution::Unavailable));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"discovery_fallback_total{reason="timeout"} 1"#),
            "{text}"
        );
        assert!(text.contains("discovery_watches 1"), "{text}");
    }

    #[tokio::test]
    async fn idle_unheld_watches_are_stopped_and_restarted_on_use() {
        let source = fake(Duration::ZERO, vec![spec("10.0.0.1:80")]);
        let cache = Discovery::new(source.clone(), config(), DiscoveryMetrics::unregistered());
        let (_, held) = cache.resolve(key("10.9.0.1:80")).await;
        let (_, dropped) = cache.resolve(key("10.9.0.2:80")).await;
        drop(dropped);
        cache.age(Duration::from_secs(120));
        cache.sweep();
        // Still held by a connection: kept however old.
        assert_eq!(cache.watched(), 1);
        drop(held);
        cache.sweep();
        assert_eq!(cache.watched(), 0);
        cache.resolve(key("10.9.0.1:80")).await;
        assert_eq!(source.started.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn recently_used_watches_survive_a_sweep() {
        let source = fake(Duration::ZERO, vec![]);
        let cache = Discovery::new(source.clone(), config(), DiscoveryMetrics::unregistered());
        let (answer, rx) = cache.resolve(key("10.9.0.1:80")).await;
        assert!(matches!(answer, Resolution::Passthrough));
        drop(rx);
        cache.sweep();
        assert_eq!(cache.watched(), 1);
    }
}
