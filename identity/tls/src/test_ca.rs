//! A throwaway CA for this crate's tests (the real one is the weft-identity service).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::TrustAnchors;

pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    anchor: rcgen::Certificate,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test anchor {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let anchor = params.self_signed(&key).unwrap();
        Self {
            params,
            key,
            anchor,
        }
    }

    pub fn anchor_der(&self) -> CertificateDer<'static> {
        self.anchor.der().clone()
    }

    pub fn anchor_pem(&self) -> String {
        self.anchor.pem()
    }

    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_der(vec![self.anchor_der()], "test CA").unwrap()
    }

    /// Signs a CSR as asked, valid from 60 s ago for `lifetime_secs`.
    pub fn issue_for_csr(&self, csr: &[u8], lifetime_secs: i64) -> CertificateDer<'static> {
        let now = OffsetDateTime::now_utc();
        self.issue_for_csr_between(
            csr,
            now - Duration::seconds(60),
            now + Duration::seconds(lifetime_secs),
        )
    }

    pub fn issue_for_csr_between(
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
        request.params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        request.signed_by(&issuer).unwrap().der().clone()
    }
}
