//! The service's own metrics (`weft_discovery_*`), served on the admin port.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

pub struct Metrics {
    registry: Registry,
    watchers: Gauge,
    updates: Family<Labels, Counter>,
    objects: Family<Labels, Gauge>,
    service_ports: Gauge,
    skipped: Gauge,
    source_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft_discovery");
        let watchers = Gauge::default();
        let updates = Family::<Labels, Counter>::default();
        let objects = Family::<Labels, Gauge>::default();
        let service_ports = Gauge::default();
        let skipped = Gauge::default();
        let source_errors = Counter::default();
        registry.register("watchers", "Open Watch streams", watchers.clone());
        registry.register(
            "updates_sent",
            "Watch updates sent, by kind",
            updates.clone(),
        );
        registry.register(
            "objects_indexed",
            "Cluster objects known, by kind",
            objects.clone(),
        );
        registry.register(
            "service_ports",
            "Service ports in the index",
            service_ports.clone(),
        );
        registry.register(
            "skipped_problems",
            "Objects or annotations skipped at the last index build (see the log)",
            skipped.clone(),
        );
        registry.register(
            "source_errors",
            "Errors reading the source (Kubernetes API or files); the last good objects are kept",
            source_errors.clone(),
        );
        Metrics {
            registry,
            watchers,
            updates,
            objects,
            service_ports,
            skipped,
            source_errors,
        }
    }
}

impl Metrics {
    /// Counts a watcher as open until the guard drops.
    pub fn watcher(&self) -> WatcherGuard {
        self.watchers.inc();
        WatcherGuard(self.watchers.clone())
    }

    pub fn update_sent(&self, kind: &'static str) {
        self.updates.get_or_create(&[("kind", kind)]).inc();
    }

    pub fn indexed(
        &self,
        counts: [(&'static str, usize); 3],
        service_ports: usize,
        skipped: usize,
    ) {
        for (kind, n) in counts {
            self.objects
                .get_or_create(&[("kind", kind)])
                .set(gauge_value(n));
        }
        self.service_ports.set(gauge_value(service_ports));
        self.skipped.set(gauge_value(skipped));
    }

    pub fn source_error(&self) {
        self.source_errors.inc();
    }

    /// The registry in the OpenMetrics text format (which Prometheus scrapes natively).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(2048);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub struct WatcherGuard(Gauge);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
