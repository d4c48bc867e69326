//! The workload's current certificate, swappable for rotation.
//!
//! TLS configs resolve their certificate from the slot on each handshake, so replacing its content
//! changes what new handshakes present while open connections keep the session they negotiated.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, pki_types::CertificateDer};

/// Holds at most one certified key; empty until the first certificate arrives.
#[derive(Default)]
pub struct CertificateSlot {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertificateSlot {
    pub fn empty() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn with(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Some(key)),
        })
    }

    /// Installs a new certificate for subsequent handshakes; returns the one it replaces.
    pub fn replace(&self, key: Arc<CertifiedKey>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock only means a writer panicked mid-assignment of an Arc: the value is intact.
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        current.replace(key)
    }

    /// The certificate handshakes present now.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current leaf certificate, if any.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current().and_then(|key| key.cert.first().cloned())
    }
}

impl fmt::Debug for CertificateSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateSlot")
            .field("filled", &self.current().is_some())
            .finish()
    }
}

impl ResolvesServerCert for CertificateSlot {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for CertificateSlot {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.current().is_some()
    }
}
