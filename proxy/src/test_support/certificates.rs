//! The proxy's tests sign with weft-tls's throwaway CA; this adds the ready-made workload
//! certificates (valid, expired, in a slot) the mTLS tests need.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use weft_tls::rustls::sign::CertifiedKey;
use weft_tls::{CertificateSlot, SpiffeId, WorkloadKey};

pub use weft_tls::test_ca::TestCa;

/// A key and certificate for `id` signed by `ca`, valid for an hour.
pub fn certified(ca: &TestCa, id: &str) -> Arc<CertifiedKey> {
    let id = SpiffeId::parse(id).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let leaf = ca.issue_for_csr(&key.csr_der(&id).unwrap(), 3600);
    key.certified_key(vec![leaf]).unwrap()
}

/// As [`certified`], but expired an hour ago.
pub fn expired(ca: &TestCa, id: &str) -> Arc<CertifiedKey> {
    let id = SpiffeId::parse(id).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let now = OffsetDateTime::now_utc();
    let leaf = ca.issue_for_csr_between(
        &key.csr_der(&id).unwrap(),
        now - Duration::hours(2),
        now - Duration::hours(1),
    );
    key.certified_key(vec![leaf]).unwrap()
}

/// A slot holding `certified(ca, id)`.
pub fn slot(ca: &TestCa, id: &str) -> Arc<CertificateSlot> {
    CertificateSlot::with(certified(ca, id))
}
