//! The webhook's serving certificate: generated at start (a throwaway CA and a leaf for the
//! Service's DNS names, the CA handed to the API server as the caBundle), or read from files such
//! as the `tls.crt`/`tls.key` of a cert-manager Secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

/// Generated certificates live as long as the process; a restart makes new ones and patches the
/// new CA in, so a long life only spares a running injector from ever expiring.
const GENERATED_LIFETIME: time::Duration = time::Duration::days(3650);

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot generate the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read {what} {path} ({flag}): {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        flag: &'static str,
        reason: String,
    },
    #[error("{path} ({flag}) holds no PEM certificate")]
    NoCertificate { path: PathBuf, flag: &'static str },
    #[error("the serving certificate and key do not form a TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What the server presents, and the CA (PEM) that verifies it when the injector made it.
pub struct ServingCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca_pem: Option<String>,
}

/// The DNS names the API server may use for the webhook's Service.
pub fn service_dns_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
    ]
}

/// A new CA and a serving certificate it signed for `dns_names`.
pub fn generate(dns_names: &[String]) -> Result<ServingCertificate, CertificateError> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::OrganizationName, "Weft");
    ca.distinguished_name
        .push(DnType::CommonName, "weft-injector webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Backdated a little, so an API server whose clock is slightly behind accepts it.
    ca.not_before = now - time::Duration::minutes(5);
    ca.not_after = now + GENERATED_LIFETIME;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    if let Some(first) = dns_names.first() {
        leaf.distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - time::Duration::minutes(5);
    leaf.not_after = now + GENERATED_LIFETIME;
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    Ok(ServingCertificate {
        chain: vec![leaf_cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        ca_pem: Some(ca_pem),
    })
}

/// The certificate chain and key from PEM files (`--tls-cert`, `--tls-key`).
pub fn from_files(cert: &Path, key: &Path) -> Result<ServingCertificate, CertificateError> {
    let read_error = |what, path: &Path, flag, reason: String| CertificateError::Read {
        what,
        path: path.to_owned(),
        flag,
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_error("the certificate", cert, "--tls-cert", e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error("the certificate", cert, "--tls-cert", e.to_string()))?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate {
            path: cert.to_owned(),
            flag: "--tls-cert",
        });
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| read_error("the private key", key, "--tls-key", e.to_string()))?;
    Ok(ServingCertificate {
        chain,
        key,
        ca_pem: None,
    })
}

/// TLS 1.2 and 1.3 with ring, offering HTTP/2 and HTTP/1.1 (the API server speaks either).
pub fn server_config(
    certificate: &ServingCertificate,
) -> Result<Arc<ServerConfig>, CertificateError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certificate.chain.clone(), certificate.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_names_the_service() {
        let names = service_dns_names("weft-injector", "weft", "cluster.local");
        assert_eq!(
            names,
            [
                "weft-injector.weft.svc",
                "weft-injector.weft.svc.cluster.local"
            ]
        );
        let generated = generate(&names).expect("generates");
        let ca_pem = generated.ca_pem.as_deref().expect("a generated CA");
        assert!(
            ca_pem.starts_with("-----BEGIN CERTIFICATE-----"),
            "{ca_pem}"
        );
        server_config(&generated).expect("key and chain match");
    }

    #[test]
    fn missing_files_name_the_flag_and_path() {
        let dir = std::env::temp_dir();
        let cert = dir.join("weft-injector-no-such.crt");
        let err = from_files(&cert, &dir.join("weft-injector-no-such.key"))
            .err()
            .expect("no such file");
        let text = err.to_string();
        assert!(text.contains("--tls-cert"), "{text}");
        assert!(text.contains("weft-injector-no-such.crt"), "{text}");
    }
}
