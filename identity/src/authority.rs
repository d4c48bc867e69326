//! Signing workload certificates: a verified CSR in, a short-lived leaf naming exactly one SPIFFE
//! identity out. The requested SANs and extensions are ignored; the CA decides what a leaf carries.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use weft_tls::SpiffeId;

/// Why a CSR is not signed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the CSR is not a validly signed PKCS#10 request: {0}")]
    Csr(String),
    #[error("the CSR's key is not ECDSA P-256")]
    KeyAlgorithm,
    #[error("the CSR asks for {found}, but the request is for {requested}")]
    CsrIdentity { found: String, requested: String },
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
}

/// A signed leaf and what the caller needs to use it.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub leaf: CertificateDer<'static>,
    /// Intermediates, leaf's issuer first (the anchor itself is not included).
    pub intermediates: Vec<CertificateDer<'static>>,
    pub not_after: SystemTime,
    pub serial: String,
}

/// The issuer key and certificate.
pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    issuer_der: CertificateDer<'static>,
    issuer_not_after: OffsetDateTime,
    anchor_der: CertificateDer<'static>,
}

impl CertificateAuthority {
    pub fn new(
        trust_domain: String,
        issuer_der: CertificateDer<'static>,
        issuer_key: KeyPair,
        anchor_der: CertificateDer<'static>,
    ) -> Result<Self, String> {
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&issuer_der).map_err(|e| e.to_string())?;
        let issuer_not_after = parsed.validity().not_after.to_datetime();
        let issuer =
            Issuer::from_ca_cert_der(&issuer_der, issuer_key).map_err(|e| e.to_string())?;
        Ok(Self {
            trust_domain,
            issuer,
            issuer_der,
            issuer_not_after,
            anchor_der,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn anchor(&self) -> &CertificateDer<'static> {
        &self.anchor_der
    }

    pub fn issuer_not_after(&self) -> SystemTime {
        self.issuer_not_after.into()
    }

    /// Signs `csr_der` for `identity`: valid from `backdate` ago (clock skew) for `lifetime`, but
    /// never past the issuer's own expiry.
    pub fn issue(
        &self,
        csr_der: &[u8],
        identity: &SpiffeId,
        lifetime: Duration,
        backdate: Duration,
    ) -> Result<IssuedCertificate, IssueError> {
        let request = CertificateSigningRequestParams::from_der(&csr_der.into())
            .map_err(|e| IssueError::Csr(e.to_string()))?;
        if request.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(IssueError::KeyAlgorithm);
        }
        for san in &request.params.subject_alt_names {
            if let SanType::URI(uri) = san
                && uri.as_str() != identity.uri()
            {
                return Err(IssueError::CsrIdentity {
                    found: uri.as_str().to_owned(),
                    requested: identity.uri(),
                });
            }
        }

        // Whole seconds: certificates cannot hold more, and not_after must match what is reported.
        let now = OffsetDateTime::now_utc();
        let now = now - time::Duration::nanoseconds(i64::from(now.nanosecond()));
        let mut params = CertificateParams::default();
        params.distinguished_name.remove(DnType::CommonName);
        params
            .distinguished_name
            .push(DnType::CommonName, identity.uri());
        params.subject_alt_names = vec![
            SanType::URI(identity.uri().try_into().map_err(sign_error)?),
            SanType::DnsName(identity.sni_name().try_into().map_err(sign_error)?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - backdate;
        params.not_after = (now + lifetime).min(self.issuer_not_after);
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(sign_error)?;
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| s.to_bytes().iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default();
        Ok(IssuedCertificate {
            leaf: cert.der().clone(),
            intermediates: vec![self.issuer_der.clone()],
            not_after: params.not_after.into(),
            serial,
        })
    }
}

fn sign_error(e: rcgen::Error) -> IssueError {
    IssueError::Sign(e.to_string())
}

/// 128 random bits, positive as DER INTEGER requires.
fn random_serial() -> Result<SerialNumber, IssueError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| IssueError::Sign("no randomness for the serial number".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // no leading zero byte to strip: a fixed 16-byte length
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ca_directory::{CaDirectory, InitOptions};
    use weft_tls::{TrustAnchors, WorkloadKey};

    pub(crate) fn test_authority(name: &str) -> (CertificateAuthority, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("weft-authority-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = CaDirectory::new(&dir);
        ca.init(&InitOptions {
            trust_domain: "cluster.local".into(),
            anchor_lifetime: Duration::from_secs(365 * 24 * 3600),
            issuer_lifetime: Duration::from_secs(30 * 24 * 3600),
            force: false,
        })
        .unwrap();
        (ca.load_authority().unwrap(), dir)
    }

    #[test]
    fn issues_a_leaf_with_the_identity_chained_to_the_anchor() {
        let (ca, dir) = test_authority("issue");
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let key = WorkloadKey::generate().unwrap();
        let issued = ca
            .issue(
                &key.csr_der(&id).unwrap(),
                &id,
                Duration::from_secs(24 * 3600),
                Duration::from_secs(60),
            )
            .unwrap();
        let info = weft_tls::certificate::inspect(&issued.leaf).unwrap();
        assert_eq!(info.identity, id);
        assert_eq!(info.serial, issued.serial);
        assert_eq!(info.not_after, issued.not_after);
        assert_eq!(
            info.not_after.duration_since(info.not_before).unwrap(),
            Duration::from_secs(24 * 3600 + 60)
        );

        // The chain verifies as a TLS server and client certificate under the anchor alone.
        let mut chain = vec![issued.leaf.clone()];
        chain.extend(issued.intermediates.clone());
        key.certified_key(chain).unwrap();
        let anchors = TrustAnchors::from_der(vec![ca.anchor().clone()], "test").unwrap();
        let parsed = rustls::server::ParsedCertificate::try_from(&issued.leaf).unwrap();
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &anchors.root_store(),
            &issued.intermediates,
            rustls::pki_types::UnixTime::now(),
            weft_tls::crypto_provider()
                .signature_verification_algorithms
                .all,
        )
        .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn never_outlives_the_issuer_and_serials_differ() {
        let (ca, dir) = test_authority("clamp");
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let key = WorkloadKey::generate().unwrap();
        let csr = key.csr_der(&id).unwrap();
        let long = ca
            .issue(
                &csr,
                &id,
                Duration::from_secs(10 * 365 * 24 * 3600),
                Duration::ZERO,
            )
            .unwrap();
        let issuer_end = ca.issuer_not_after();
        let slack =
            |a: SystemTime, b: SystemTime| a.duration_since(b).or(b.duration_since(a)).unwrap();
        assert!(slack(long.not_after, issuer_end) <= Duration::from_secs(1));
        let again = ca
            .issue(&csr, &id, Duration::from_secs(60), Duration::ZERO)
            .unwrap();
        assert_ne!(long.serial, again.serial);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_bad_csrs_and_csrs_for_another_identity() {
        let (ca, dir) = test_authority("refuse");
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let other = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/admin").unwrap();
        let key = WorkloadKey::generate().unwrap();
        let day = Duration::from_secs(86400);
        assert!(matches!(
            ca.issue(b"junk", &id, day, Duration::ZERO),
            Err(IssueError::Csr(_))
        ));
        let mut tampered = key.csr_der(&id).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 0xff;
        assert!(matches!(
            ca.issue(&tampered, &id, day, Duration::ZERO),
            Err(IssueError::Csr(_))
        ));
        let err = ca
            .issue(&key.csr_der(&other).unwrap(), &id, day, Duration::ZERO)
            .unwrap_err();
        assert!(
            err.to_string().contains("sa/admin") && err.to_string().contains("sa/web"),
            "{err}"
        );

        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let ed_csr = CertificateParams::default().serialize_request(&ed).unwrap();
        assert!(matches!(
            ca.issue(ed_csr.der(), &id, day, Duration::ZERO),
            Err(IssueError::KeyAlgorithm)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
