//! The workload's private key: made in the process, never written out or sent anywhere; only its
//! CSR leaves.

use std::fmt;
use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::{SpiffeId, TlsError, crypto_provider};

/// An ECDSA P-256 key pair for one workload identity.
pub struct WorkloadKey {
    key: KeyPair,
}

impl WorkloadKey {
    /// Generates a fresh P-256 key.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TlsError::KeyGeneration(e.to_string()))?;
        Ok(Self { key })
    }

    /// A PKCS#10 CSR (DER) asking for `identity`: its URI SAN, its SNI name as a DNS SAN, and the
    /// identity as common name, for both TLS server and client use.
    pub fn csr_der(&self, identity: &SpiffeId) -> Result<Vec<u8>, TlsError> {
        let csr_error = |reason: String| TlsError::Csr {
            identity: identity.to_string(),
            reason,
        };
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, identity.uri());
        params.distinguished_name = name;
        params.subject_alt_names = vec![
            SanType::URI(
                identity
                    .uri()
                    .try_into()
                    .map_err(|e: rcgen::Error| csr_error(e.to_string()))?,
            ),
            SanType::DnsName(
                identity
                    .sni_name()
                    .try_into()
                    .map_err(|e: rcgen::Error| csr_error(e.to_string()))?,
            ),
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let csr = params
            .serialize_request(&self.key)
            .map_err(|e| csr_error(e.to_string()))?;
        Ok(csr.der().to_vec())
    }

    /// The DER SubjectPublicKeyInfo of this key (what a certificate for it must carry).
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.key)
    }

    /// Pairs this key with the chain the CA returned (leaf first), ready to hand to a
    /// [`crate::CertificateSlot`]. Refuses a leaf issued for another key.
    pub fn certified_key(
        &self,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        if chain.is_empty() {
            return Err(TlsError::KeyMismatch("the chain is empty".into()));
        }
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        let certified = CertifiedKey::from_der(chain, der, &crypto_provider())
            .map_err(|e| TlsError::KeyMismatch(e.to_string()))?;
        // from_der tolerates "unknown" consistency; a workload key must be known to match.
        certified
            .keys_match()
            .map_err(|e| TlsError::KeyMismatch(e.to_string()))?;
        Ok(Arc::new(certified))
    }
}

impl fmt::Debug for WorkloadKey {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadKey")
            .field("algorithm", &"ECDSA P-256")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_ca::TestCa;

    #[test]
    fn csr_carries_the_identity_and_a_valid_signature() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let key = WorkloadKey::generate().unwrap();
        let der = key.csr_der(&id).unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&der.as_slice().into())
            .expect("CSR signature verifies");
        assert!(parsed.params.subject_alt_names.contains(&SanType::URI(
            "spiffe://cluster.local/ns/shop/sa/web".try_into().unwrap()
        )));
        assert!(parsed.params.subject_alt_names.contains(&SanType::DnsName(
            "web.shop.sa.cluster.local".try_into().unwrap()
        )));
        assert_eq!(
            rcgen::PublicKeyData::subject_public_key_info(&parsed.public_key),
            key.public_key_der()
        );
    }

    #[test]
    fn certified_key_refuses_a_certificate_for_another_key() {
        let ca = TestCa::new("cluster.local");
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let ours = WorkloadKey::generate().unwrap();
        let other = WorkloadKey::generate().unwrap();
        let leaf = ca.issue_for_csr(&other.csr_der(&id).unwrap(), 3600);
        assert!(matches!(
            ours.certified_key(vec![leaf.clone()]),
            Err(TlsError::KeyMismatch(_))
        ));
        assert!(other.certified_key(vec![leaf]).is_ok());
        assert!(ours.certified_key(vec![]).is_err());
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let key = WorkloadKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.len() < 60, "{shown}");
    }
}
