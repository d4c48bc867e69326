//! Keeping a valid certificate in the slot: the first one as soon as the CA answers (retried with
//! backoff), then a renewal after 70% of each certificate's remaining life. A failed renewal keeps
//! the current certificate in place (open connections and new handshakes go on using it) and is
//! retried until it succeeds; it is logged and counted, and an expired certificate is logged loudly.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tracing::{error, info, warn};
use weft_tls::{CertificateSlot, SpiffeId, WorkloadKey};

use crate::backoff::{ExponentialBackoff, full_jitter, jitter_rng};
use crate::identity::certify::{Certifier, CertifyError};
use crate::metrics::identity::IdentityMetrics;
use crate::readiness::ReadyCondition;

/// Renew when this share of the certificate's remaining life has passed.
const RENEW_AT: f64 = 0.7;
const RETRY: ExponentialBackoff =
    ExponentialBackoff::new(Duration::from_millis(250), Duration::from_secs(10));
const RETRY_MIN: Duration = Duration::from_millis(100);

/// How long to use a certificate received at `now` that expires at `not_after` before renewing.
/// Measured from receipt, not from notBefore, which the CA backdates for clock skew.
pub fn renew_after(now: SystemTime, not_after: SystemTime) -> Duration {
    not_after
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .mul_f64(RENEW_AT)
}

/// The wait before attempt `failures + 1`: the backoff's ceiling (250 ms doubling to 10 s), never
/// more than a quarter of the current certificate's remaining life, so a renewal gets several
/// tries in before expiry; full jitter (`fraction`, a draw from [0, 1)) under it, and at least
/// 100 ms.
pub fn retry_delay(failures: u32, left: Option<Duration>, fraction: f64) -> Duration {
    let mut ceiling = RETRY.ceiling(failures);
    if let Some(left) = left.filter(|left| !left.is_zero()) {
        ceiling = ceiling.min(left / 4);
    }
    full_jitter(ceiling, fraction).max(RETRY_MIN)
}

/// Obtains and renews the workload certificate.
pub struct Rotation {
    pub key: WorkloadKey,
    pub id: SpiffeId,
    pub certifier: Arc<dyn Certifier>,
    pub slot: Arc<CertificateSlot>,
    pub metrics: IdentityMetrics,
    /// Met once the first certificate is in the slot.
    pub ready: ReadyCondition,
}

impl Rotation {
    /// Runs for the life of the proxy.
    pub async fn run(self) {
        let mut failures = 0u32;
        let mut jitter = jitter_rng();
        let mut not_after: Option<SystemTime> = None;
        loop {
            match self.renew_once().await {
                Ok(expires) => {
                    failures = 0;
                    not_after = Some(expires);
                    self.ready.set();
                    let wait = renew_after(SystemTime::now(), expires);
                    info!(identity = %self.id, expires_in = ?expires.duration_since(SystemTime::now()).unwrap_or_default(), renew_in = ?wait, "workload certificate installed");
                    tokio::time::sleep(wait).await;
                }
                Err(err) => {
                    failures += 1;
                    self.metrics.renewal_failed();
                    let left =
                        not_after.map(|t| t.duration_since(SystemTime::now()).unwrap_or_default());
                    match left {
                        None => {
                            warn!(identity = %self.id, attempt = failures, error = %err, "cannot get a workload certificate yet; not ready until one arrives")
                        }
                        Some(left) if left.is_zero() => {
                            error!(identity = %self.id, attempt = failures, error = %err, "the workload certificate has EXPIRED and cannot be renewed: peers refuse mTLS with this proxy until the CA answers")
                        }
                        Some(left) => {
                            warn!(identity = %self.id, attempt = failures, error = %err, expires_in = ?left, "renewing the workload certificate failed; serving with the current one")
                        }
                    }
                    let delay = retry_delay(failures, left, jitter.random::<f64>());
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One Certify round trip; on success the slot holds the new certificate.
    async fn renew_once(&self) -> Result<SystemTime, CertifyError> {
        let csr = self.key.csr_der(&self.id)?;
        let chain = self.certifier.certify(&self.id, csr).await?;
        let leaf = chain.first().cloned().ok_or(CertifyError::BadAnswer {
            addr: String::new(),
            reason: "empty chain".into(),
        })?;
        let info = weft_tls::certificate::inspect(&leaf)?;
        if info.identity != self.id {
            return Err(CertifyError::BadAnswer {
                addr: String::new(),
                reason: format!(
                    "the certificate names {} instead of {}",
                    info.identity, self.id
                ),
            });
        }
        let certified = self.key.certified_key(chain)?;
        self.slot.replace(certified);
        self.metrics.renewed();
        let expiry = info
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.metrics.set_expiry(expiry);
        Ok(info.not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::certify::BoxFuture;
    use crate::readiness::Readiness;
    use crate::test_support::certificates::TestCa;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use weft_tls::rustls::pki_types::CertificateDer;

    #[test]
    fn renews_after_seventy_percent_of_what_is_left() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            renew_after(now, now + Duration::from_secs(100)),
            Duration::from_secs(70)
        );
        assert_eq!(
            renew_after(now, now + Duration::from_secs(24 * 3600)),
            Duration::from_secs(60480)
        );
        assert_eq!(
            renew_after(now, now - Duration::from_secs(5)),
            Duration::ZERO
        );
    }

    #[test]
    fn retries_back_off_but_fit_in_the_remaining_life() {
        assert_eq!(retry_delay(1, None, 1.0), Duration::from_millis(250));
        assert_eq!(retry_delay(2, None, 1.0), Duration::from_millis(500));
        assert_eq!(retry_delay(30, None, 1.0), Duration::from_secs(10));
        assert_eq!(retry_delay(30, None, 0.5), Duration::from_secs(5));
        assert_eq!(retry_delay(30, None, 0.0), RETRY_MIN);
        assert_eq!(
            retry_delay(30, Some(Duration::from_secs(4)), 1.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            retry_delay(30, Some(Duration::ZERO), 1.0),
            Duration::from_secs(10)
        );
        assert_eq!(
            retry_delay(30, Some(Duration::from_millis(10)), 1.0),
            RETRY_MIN
        );
    }

    /// Signs with a test CA for `life`, failing while `down` is set.
    struct FakeCa {
        ca: TestCa,
        life: i64,
        down: Mutex<bool>,
        calls: AtomicUsize,
    }

    impl Certifier for FakeCa {
        fn certify<'a>(
            &'a self,
            _identity: &'a SpiffeId,
            csr_der: Vec<u8>,
        ) -> BoxFuture<'a, Result<Vec<CertificateDer<'static>>, CertifyError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if *self.down.lock().unwrap() {
                    return Err(CertifyError::Ca {
                        addr: "fake".into(),
                        status: tonic::Status::unavailable("down"),
                    });
                }
                Ok(vec![self.ca.issue_for_csr(&csr_der, self.life)])
            })
        }
    }

    fn rotation(
        ca: Arc<FakeCa>,
    ) -> (
        Rotation,
        Arc<CertificateSlot>,
        Readiness,
        prometheus_client::registry::Registry,
    ) {
        let readiness = Readiness::default();
        let slot = CertificateSlot::empty();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = IdentityMetrics::register(&mut registry);
        let rotation = Rotation {
            key: WorkloadKey::generate().unwrap(),
            id: SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap(),
            certifier: ca,
            slot: slot.clone(),
            metrics: metrics.clone(),
            ready: readiness.condition("identity certificate"),
        };
        (rotation, slot, readiness, registry)
    }

    #[tokio::test]
    async fn first_certificate_makes_ready_and_renewals_swap_it() {
        let ca = Arc::new(FakeCa {
            ca: TestCa::new("proxy"),
            life: 2,
            down: Mutex::new(true),
            calls: AtomicUsize::new(0),
        });
        let (rotation, slot, readiness, _metrics) = rotation(ca.clone());
        let task = tokio::spawn(rotation.run());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(slot.current().is_none());
        assert!(!readiness.is_ready());
        assert!(ca.calls.load(Ordering::SeqCst) >= 2, "retried while down");

        *ca.down.lock().unwrap() = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while slot.current().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = slot
            .leaf()
            .expect("a certificate arrives once the CA is up");
        assert!(readiness.is_ready());
        // 2 s of life: renewed after about 1.4 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while slot.leaf().as_ref() == Some(&first) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_ne!(slot.leaf(), Some(first), "the certificate was renewed");
        task.abort();
    }

    #[tokio::test]
    async fn a_ca_outage_keeps_the_current_certificate() {
        let ca = Arc::new(FakeCa {
            ca: TestCa::new("proxy"),
            life: 2,
            down: Mutex::new(false),
            calls: AtomicUsize::new(0),
        });
        let (rotation, slot, readiness, registry) = rotation(ca.clone());
        let task = tokio::spawn(rotation.run());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while slot.current().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = slot.leaf().expect("first certificate");
        *ca.down.lock().unwrap() = true;
        let calls = ca.calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            ca.calls.load(Ordering::SeqCst) > calls + 1,
            "renewal retried"
        );
        assert_eq!(slot.leaf(), Some(first), "kept while the CA is down");
        assert!(
            readiness.is_ready(),
            "an outage does not make the proxy unready"
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"identity_renewals_total{result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"identity_renewals_total{result="failure"}"#),
            "{text}"
        );
        assert!(
            text.contains("identity_cert_expiry_timestamp_seconds"),
            "{text}"
        );
        task.abort();
    }
}
