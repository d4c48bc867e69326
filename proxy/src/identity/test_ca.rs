//! A throwaway CA for the proxy's tests: signs workload CSRs the way weft-identity does, and can
//! make the bad certificates (expired, foreign, wrong identity) the mTLS tests need.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};
use weft_tls::rustls::pki_types::CertificateDer;
use weft_tls::rustls::sign::CertifiedKey;
use weft_tls::{CertificateSlot, SpiffeId, TrustAnchors, WorkloadKey};

pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    anchor: rcgen::Certificate,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "weft-proxy test anchor");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let anchor = params.self_signed(&key).unwrap();
        TestCa {
            params,
            key,
            anchor,
        }
    }

    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_der(vec![self.anchor.der().clone()], "test CA").unwrap()
    }

    /// Signs a CSR, valid from 60 s ago for `life_secs`.
    pub fn issue(&self, csr: &[u8], life_secs: i64) -> CertificateDer<'static> {
        let now = OffsetDateTime::now_utc();
        self.issue_between(
            csr,
            now - Duration::seconds(60),
            now + Duration::seconds(life_secs),
        )
    }

    pub fn issue_between(
        &self,
        csr: &[u8],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> CertificateDer<'static> {
        let mut request = CertificateSigningRequestParams::from_der(&csr.into()).unwrap();
        request.params.not_before = not_before;
        request.params.not_after = not_after;
        request.params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::from_params(&self.params, &self.key);
        request.signed_by(&issuer).unwrap().der().clone()
    }

    /// A key and certificate for `id`, valid for an hour.
    pub fn certified(&self, id: &str) -> Arc<CertifiedKey> {
        let id = SpiffeId::parse(id).unwrap();
        let key = WorkloadKey::generate().unwrap();
        let leaf = self.issue(&key.csr_der(&id).unwrap(), 3600);
        key.certified_key(vec![leaf]).unwrap()
    }

    /// As `certified`, but expired an hour ago.
    pub fn expired(&self, id: &str) -> Arc<CertifiedKey> {
        let id = SpiffeId::parse(id).unwrap();
        let key = WorkloadKey::generate().unwrap();
        let now = OffsetDateTime::now_utc();
        let leaf = self.issue_between(
            &key.csr_der(&id).unwrap(),
            now - Duration::hours(2),
            now - Duration::hours(1),
        );
        key.certified_key(vec![leaf]).unwrap()
    }

    /// A slot holding `certified(id)`.
    pub fn slot(&self, id: &str) -> Arc<CertificateSlot> {
        CertificateSlot::with(self.certified(id))
    }
}
