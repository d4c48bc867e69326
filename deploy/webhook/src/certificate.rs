//! The webhook's serving certificate: generated at start (a throwaway CA and a leaf for the
//! Service's DNS names, the CA handed to the API server as the caBundle), or read from files such
//! as the `tls.crt`/`tls.key` of a cert-manager Secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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
    #[error(
        "the key {key} (--tls-key) does not go with the certificate {cert} (--tls-cert): {reason}"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("the serving certificate and key do not form a TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What the server presents, and the CA (PEM) that verifies it when the injector made it.
pub struct ServingCertificate {
    pub key: Arc<CertifiedKey>,
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

    let key = CertifiedKey::from_der(
        vec![leaf_cert.der().clone()],
        PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        &provider(),
    )?;
    Ok(ServingCertificate {
        key: Arc::new(key),
        ca_pem: Some(ca_pem),
    })
}

/// The serving chain and key in PEM files (`--tls-cert`, `--tls-key`), e.g. a mounted
/// cert-manager Secret, which its issuer renews in place.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The two files' contents, to tell whether they changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl CertificateFiles {
    pub fn read(&self) -> Result<FileContents, CertificateError> {
        let read = |path: &Path, what, flag| {
            std::fs::read(path).map_err(|e| CertificateError::Read {
                what,
                path: path.to_owned(),
                flag,
                reason: e.to_string(),
            })
        };
        Ok(FileContents {
            cert: read(&self.cert, "the certificate", "--tls-cert")?,
            key: read(&self.key, "the private key", "--tls-key")?,
        })
    }

    pub fn load(&self, contents: &FileContents) -> Result<ServingCertificate, CertificateError> {
        let bad = |what, path: &Path, flag, reason: String| CertificateError::Read {
            what,
            path: path.to_owned(),
            flag,
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(&contents.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("the certificate", &self.cert, "--tls-cert", e.to_string()))?;
        if chain.is_empty() {
            return Err(CertificateError::NoCertificate {
                path: self.cert.clone(),
                flag: "--tls-cert",
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&contents.key)
            .map_err(|e| bad("the private key", &self.key, "--tls-key", e.to_string()))?;
        let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
            CertificateError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(ServingCertificate {
            key: Arc::new(key),
            ca_pem: None,
        })
    }
}

/// The certificate the server presents now; replaced when the files are renewed.
#[derive(Debug)]
pub struct CertificateSlot(RwLock<Arc<CertifiedKey>>);

impl CertificateSlot {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self(RwLock::new(key)))
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertificateSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// Re-reads the files every `interval` and serves their new certificate once they hold a valid
/// pair; a broken pair is logged and the current certificate kept. Runs until the process ends.
pub async fn keep_reloaded(
    files: CertificateFiles,
    slot: Arc<CertificateSlot>,
    mut loaded: FileContents,
    interval: Duration,
) {
    let mut complained = None;
    loop {
        tokio::time::sleep(interval).await;
        let contents = match files.read() {
            Ok(contents) if contents == loaded => continue,
            Ok(contents) => contents,
            Err(e) => {
                complain(&mut complained, e.to_string());
                continue;
            }
        };
        match files.load(&contents) {
            Ok(certificate) => {
                slot.set(certificate.key);
                loaded = contents;
                complained = None;
                tracing::info!(cert = %files.cert.display(), "serving the renewed certificate");
            }
            Err(e) => complain(&mut complained, e.to_string()),
        }
    }
}

/// Warns once per distinct problem (a renewal caught half-written settles at the next check).
fn complain(last: &mut Option<String>, problem: String) {
    if last.as_deref() != Some(problem.as_str()) {
        tracing::warn!(%problem, "keeping the current serving certificate");
        *last = Some(problem);
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// TLS 1.2 and 1.3 with ring, offering HTTP/2 and HTTP/1.1 (the API server speaks either).
pub fn server_config(slot: Arc<CertificateSlot>) -> Result<Arc<ServerConfig>, CertificateError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(slot);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path) -> CertificateFiles {
        CertificateFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("weft-injector-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    }

    /// A leaf for `name` and its key, PEM.
    fn pem_pair(name: &str) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

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
        generated.key.keys_match().expect("key and chain match");
    }

    #[test]
    fn missing_files_name_the_flag_and_path() {
        let files = files_in(&std::env::temp_dir().join("weft-injector-no-such-dir"));
        let text = files.read().expect_err("no such file").to_string();
        assert!(text.contains("--tls-cert"), "{text}");
        assert!(text.contains("weft-injector-no-such-dir/tls.crt"), "{text}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let dir = scratch("mismatch");
        let files = files_in(&dir);
        let (cert, _) = pem_pair("a.example");
        let (_, other_key) = pem_pair("b.example");
        std::fs::write(&files.cert, cert).expect("write");
        std::fs::write(&files.key, other_key).expect("write");
        let contents = files.read().expect("readable");
        let text = files.load(&contents).err().expect("mismatch").to_string();
        assert!(text.contains("tls.key (--tls-key)"), "{text}");
        assert!(text.contains("tls.crt (--tls-cert)"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn renewed_files_are_served_and_a_broken_renewal_is_not() {
        let dir = scratch("renewal");
        let files = files_in(&dir);
        let (cert, key) = pem_pair("weft-injector.weft.svc");
        std::fs::write(&files.cert, &cert).expect("write");
        std::fs::write(&files.key, &key).expect("write");
        let contents = files.read().expect("readable");
        let first = files.load(&contents).expect("a valid pair");
        let slot = CertificateSlot::new(Arc::clone(&first.key));
        let served = |slot: &CertificateSlot| slot.0.read().expect("lock").cert[0].clone();
        let reloader = tokio::spawn(keep_reloaded(
            files.clone(),
            Arc::clone(&slot),
            contents,
            Duration::from_millis(20),
        ));

        // A certificate without its new key: still the first one.
        let (renewed_cert, renewed_key) = pem_pair("weft-injector.weft.svc");
        std::fs::write(&files.cert, &renewed_cert).expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(served(&slot), first.key.cert[0]);

        std::fs::write(&files.key, &renewed_key).expect("write");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while served(&slot) == first.key.cert[0] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "renewal not picked up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let expected = CertificateDer::from_pem_slice(renewed_cert.as_bytes()).expect("PEM");
        assert_eq!(served(&slot), expected);
        reloader.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
