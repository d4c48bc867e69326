//! The CA certificates a workload trusts (`WEFT_TRUST_ANCHORS`).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

use crate::{TlsError, pem};

/// A non-empty set of trust anchors, shared by every verifier built from it.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    roots: Arc<RootCertStore>,
    certificates: Arc<[CertificateDer<'static>]>,
}

impl TrustAnchors {
    /// Reads every certificate of a PEM file (the `weft-trust-anchors` ConfigMap's `ca.pem`).
    pub fn from_pem_file(path: &Path) -> Result<Self, TlsError> {
        Self::from_der(pem::load_certificates(path)?, &path.display().to_string())
    }

    /// Reads every certificate of PEM text; `source_name` names it in errors.
    pub fn from_pem(pem_text: &[u8], source_name: &str) -> Result<Self, TlsError> {
        Self::from_der(pem::parse_certificates(pem_text, source_name)?, source_name)
    }

    /// Builds the set from DER certificates; each must parse as a trust anchor.
    pub fn from_der(
        certificates: Vec<CertificateDer<'static>>,
        source_name: &str,
    ) -> Result<Self, TlsError> {
        if certificates.is_empty() {
            return Err(TlsError::Empty {
                what: "trust anchor",
                source_name: source_name.to_owned(),
            });
        }
        let mut roots = RootCertStore::empty();
        for (index, cert) in certificates.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| TlsError::BadAnchor {
                index,
                source_name: source_name.to_owned(),
                reason: e.to_string(),
            })?;
        }
        Ok(Self {
            roots: Arc::new(roots),
            certificates: certificates.into(),
        })
    }

    /// The anchors as rustls wants them.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.roots)
    }

    /// The anchors' certificates, in source order.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    /// Always false: an empty set is refused at construction.
    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_ca::TestCa;

    #[test]
    fn loads_several_anchors_from_pem() {
        let (a, b) = (TestCa::new("cluster.local"), TestCa::new("cluster.local"));
        let text = format!("{}{}", a.anchor_pem(), b.anchor_pem());
        let anchors = TrustAnchors::from_pem(text.as_bytes(), "bundle").unwrap();
        assert_eq!(anchors.len(), 2);
        assert_eq!(anchors.root_store().len(), 2);
        assert_eq!(anchors.certificates()[1], b.anchor_der());
    }

    #[test]
    fn refuses_empty_and_garbage() {
        assert!(matches!(
            TrustAnchors::from_der(vec![], "nothing"),
            Err(TlsError::Empty { .. })
        ));
        let err = TrustAnchors::from_der(vec![CertificateDer::from(vec![1u8, 2, 3])], "junk")
            .unwrap_err();
        assert!(err.to_string().contains("junk"), "{err}");
    }
}
