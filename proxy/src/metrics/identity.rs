//! The workload identity's health: whether the proxy has one at all, when its certificate
//! expires, and how renewals went.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct IdentityMetrics {
    enabled: Gauge,
    expiry: Gauge,
    renewals: Family<ResultLabels, Counter>,
}

impl IdentityMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = IdentityMetrics::default();
        registry.register(
            "identity_enabled",
            "1 when the proxy has a workload identity (mTLS between proxies), 0 when WEFT_IDENTITY_ADDR is unset",
            metrics.enabled.clone(),
        );
        registry.register(
            "identity_cert_expiry_timestamp_seconds",
            "When the current workload certificate expires, in seconds since the Unix epoch (0: none yet)",
            metrics.expiry.clone(),
        );
        registry.register(
            "identity_renewals",
            "Requests for a workload certificate to the CA, by result",
            metrics.renewals.clone(),
        );
        metrics
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.set(i64::from(enabled));
    }

    pub fn set_expiry(&self, unix_seconds: i64) {
        self.expiry.set(unix_seconds);
    }

    pub fn renewed(&self) {
        self.renewals
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
    }

    pub fn renewal_failed(&self) {
        self.renewals
            .get_or_create(&ResultLabels { result: "failure" })
            .inc();
    }
}
