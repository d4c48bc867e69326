//! The CA's Prometheus metrics (prefix `weft_identity_`).

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// unauthenticated | invalid_argument | permission_denied | internal
    pub reason: &'static str,
}

pub struct CaMetrics {
    registry: Registry,
    pub issued: Counter,
    pub refused: Family<RefusalLabels, Counter>,
    pub issuer_expiry: Gauge,
}

impl CaMetrics {
    pub fn new(issuer_not_after: SystemTime) -> Self {
        let mut registry = Registry::with_prefix("weft_identity");
        let issued = Counter::default();
        registry.register(
            "certificates_issued",
            "Workload certificates signed",
            issued.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "certify_refusals",
            "Certify requests refused, by reason",
            refused.clone(),
        );
        let issuer_expiry = Gauge::default();
        registry.register(
            "issuer_expiry_timestamp_seconds",
            "When the issuer certificate expires (Unix seconds); rotate it before then",
            issuer_expiry.clone(),
        );
        let expiry = issuer_not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        issuer_expiry.set(expiry);
        Self {
            registry,
            issued,
            refused,
            issuer_expiry,
        }
    }

    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
