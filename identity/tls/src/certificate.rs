//! Reading what matters to the mesh out of a DER certificate: its SPIFFE id and validity.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{SpiffeId, TlsError};

/// The mesh-relevant facts of a workload certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub identity: SpiffeId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
}

/// Parses a workload certificate: exactly one `spiffe://` URI SAN that is a valid Weft identity.
pub fn inspect(der: &[u8]) -> Result<CertificateInfo, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| TlsError::Certificate(e.to_string()))?;
    Ok(CertificateInfo {
        identity: identity_of(&cert)?,
        not_before: to_system_time(cert.validity().not_before.timestamp()),
        not_after: to_system_time(cert.validity().not_after.timestamp()),
        serial: cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// The SPIFFE id a DER certificate's URI SAN names.
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| TlsError::Certificate(e.to_string()))?;
    identity_of(&cert)
}

/// The notAfter of a DER certificate.
pub fn not_after_of(der: &[u8]) -> Result<SystemTime, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| TlsError::Certificate(e.to_string()))?;
    Ok(to_system_time(cert.validity().not_after.timestamp()))
}

fn identity_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, TlsError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(TlsError::NoSpiffeId),
        [uri] => Ok(SpiffeId::parse(uri)?),
        several => Err(TlsError::SeveralSpiffeIds(several.len())),
    }
}

fn to_system_time(unix_seconds: i64) -> SystemTime {
    match u64::try_from(unix_seconds) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkloadKey;
    use crate::test_ca::TestCa;

    #[test]
    fn reads_identity_and_validity() {
        let ca = TestCa::new("cluster.local");
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let key = WorkloadKey::generate().unwrap();
        let leaf = ca.issue_for_csr(&key.csr_der(&id).unwrap(), 3600);
        let info = inspect(&leaf).unwrap();
        assert_eq!(info.identity, id);
        assert_eq!(spiffe_id_of(&leaf).unwrap(), id);
        let life = info.not_after.duration_since(info.not_before).unwrap();
        assert_eq!(life, Duration::from_secs(3600 + 60));
        assert_eq!(not_after_of(&leaf).unwrap(), info.not_after);
        assert!(!info.serial.is_empty());
    }

    #[test]
    fn a_ca_certificate_has_no_identity() {
        let ca = TestCa::new("cluster.local");
        assert!(matches!(
            spiffe_id_of(&ca.anchor_der()),
            Err(TlsError::NoSpiffeId)
        ));
        assert!(matches!(inspect(b"garbage"), Err(TlsError::Certificate(_))));
    }
}
