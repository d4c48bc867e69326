//! Reading PEM files (certificates, keys) with rustls' own PEM parser.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// Every certificate in a PEM file, in file order. Refuses a file with none.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read {
        what: "PEM certificates",
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: "PEM CERTIFICATE block",
            source_name: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Every certificate in PEM text; `source_name` names it in errors.
pub fn parse_certificates(
    pem: &[u8],
    source_name: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Read {
            what: "PEM certificates",
            path: source_name.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: "PEM CERTIFICATE block",
            source_name: source_name.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "a PEM private key",
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// PEM text for DER certificates, in order.
pub fn certificates_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|cert| encode_pem("CERTIFICATE", cert.as_ref()))
        .collect()
}

/// One PEM block with 64-column base64 lines.
pub fn encode_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    // Base64 output is ASCII, so splitting at any byte keeps valid UTF-8.
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_ca::TestCa;

    #[test]
    fn pem_round_trips_through_rustls_parser() {
        let ca = TestCa::new("cluster.local");
        let pem = certificates_to_pem(&[ca.anchor_der(), ca.anchor_der()]);
        let back = parse_certificates(pem.as_bytes(), "test").unwrap();
        assert_eq!(back, vec![ca.anchor_der(), ca.anchor_der()]);
        // rcgen's own encoder agrees byte for byte.
        assert_eq!(
            encode_pem("CERTIFICATE", ca.anchor_der().as_ref()),
            ca.anchor_pem()
        );
    }

    #[test]
    fn empty_or_missing_files_are_named() {
        let err = parse_certificates(b"not pem", "anchors.pem").unwrap_err();
        assert!(err.to_string().contains("anchors.pem"), "{err}");
        let err = load_certificates(Path::new("/nonexistent/weft/anchors.pem")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/weft/anchors.pem"),
            "{err}"
        );
        let err = load_private_key(Path::new("/nonexistent/weft/key.pem")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/weft/key.pem"),
            "{err}"
        );
    }
}
