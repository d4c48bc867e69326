//! The CA's state directory: the trust anchor, the issuer it signed, the local-token signing key and
//! the trust domain. Keys are written 0600 and never overwritten unless asked.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use weft_tls::pem;

use crate::{CaError, CertificateAuthority, TokenSigningKey};

/// Trust anchor certificate (PEM): what every workload trusts (`WEFT_TRUST_ANCHORS`).
pub const ANCHOR_CERT: &str = "ca.pem";
pub const ANCHOR_KEY: &str = "ca-key.pem";
/// The intermediate that signs workload certificates.
pub const ISSUER_CERT: &str = "issuer.pem";
pub const ISSUER_KEY: &str = "issuer-key.pem";
/// ECDSA P-256 key that signs and verifies local tokens.
pub const TOKEN_KEY: &str = "token-signing-key.pem";
pub const TRUST_DOMAIN: &str = "trust-domain";

/// What `ca init` makes.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub trust_domain: String,
    pub anchor_lifetime: Duration,
    pub issuer_lifetime: Duration,
    pub force: bool,
}

/// A CA state directory.
#[derive(Debug, Clone)]
pub struct CaDirectory {
    dir: PathBuf,
}

impl CaDirectory {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Creates the trust anchor, an issuer signed by it, and the token-signing key.
    pub fn init(&self, options: &InitOptions) -> Result<(), CaError> {
        weft_tls::validate_trust_domain(&options.trust_domain)?;
        if options.issuer_lifetime > options.anchor_lifetime {
            return Err(CaError::Lifetimes {
                issuer: options.issuer_lifetime,
                anchor: options.anchor_lifetime,
            });
        }
        let files = [
            ANCHOR_CERT,
            ANCHOR_KEY,
            ISSUER_CERT,
            ISSUER_KEY,
            TOKEN_KEY,
            TRUST_DOMAIN,
        ];
        if !options.force {
            // Check everything first so a refusal leaves no half-made CA behind.
            if let Some(existing) = files.iter().map(|f| self.path(f)).find(|p| p.exists()) {
                return Err(CaError::Exists(existing));
            }
        }
        fs::create_dir_all(&self.dir).map_err(|e| CaError::io("create", &self.dir, e))?;

        let anchor_key = new_key()?;
        let anchor_params = ca_params(
            &format!("Weft trust anchor for {}", options.trust_domain),
            BasicConstraints::Constrained(1),
            options.anchor_lifetime,
        );
        let anchor = anchor_params
            .self_signed(&anchor_key)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let anchor_issuer = Issuer::from_params(&anchor_params, &anchor_key);
        let (issuer, issuer_key) = make_issuer(
            &anchor_issuer,
            &options.trust_domain,
            options.issuer_lifetime,
        )?;
        let token_key = TokenSigningKey::generate()?;

        write_file(&self.path(ANCHOR_CERT), anchor.pem().as_bytes(), 0o644)?;
        write_file(
            &self.path(ANCHOR_KEY),
            anchor_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(&self.path(ISSUER_CERT), issuer.pem().as_bytes(), 0o644)?;
        write_file(
            &self.path(ISSUER_KEY),
            issuer_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(&self.path(TOKEN_KEY), token_key.to_pem().as_bytes(), 0o600)?;
        write_file(
            &self.path(TRUST_DOMAIN),
            format!("{}\n", options.trust_domain).as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    /// Replaces the issuer with a new key and certificate signed by the same anchor. Workloads keep
    /// trusting (same anchor); a restarted `serve` signs with the new issuer.
    pub fn rotate_issuer(&self, lifetime: Duration) -> Result<(), CaError> {
        let trust_domain = self.trust_domain()?;
        let anchor_der = self.load_certificate(ANCHOR_CERT)?;
        let anchor_key = self.load_key(ANCHOR_KEY)?;
        let anchor_issuer = Issuer::from_ca_cert_der(&anchor_der, anchor_key)
            .map_err(|e| CaError::Invalid(self.path(ANCHOR_CERT), e.to_string()))?;
        let (issuer, issuer_key) = make_issuer(&anchor_issuer, &trust_domain, lifetime)?;
        write_file(&self.path(ISSUER_CERT), issuer.pem().as_bytes(), 0o644)?;
        write_file(
            &self.path(ISSUER_KEY),
            issuer_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        Ok(())
    }

    pub fn trust_domain(&self) -> Result<String, CaError> {
        let path = self.path(TRUST_DOMAIN);
        let text = fs::read_to_string(&path).map_err(|e| CaError::io("read", &path, e))?;
        let trust_domain = text.trim().to_owned();
        weft_tls::validate_trust_domain(&trust_domain)?;
        Ok(trust_domain)
    }

    /// The issuer, ready to sign workload certificates.
    pub fn load_authority(&self) -> Result<CertificateAuthority, CaError> {
        let issuer_der = self.load_certificate(ISSUER_CERT)?;
        let anchor_der = self.load_certificate(ANCHOR_CERT)?;
        let key = self.load_key(ISSUER_KEY)?;
        CertificateAuthority::new(self.trust_domain()?, issuer_der, key, anchor_der)
            .map_err(|e| CaError::Invalid(self.path(ISSUER_CERT), e.to_string()))
    }

    pub fn load_token_key(&self) -> Result<TokenSigningKey, CaError> {
        let path = self.path(TOKEN_KEY);
        let text = fs::read_to_string(&path).map_err(|e| CaError::io("read", &path, e))?;
        TokenSigningKey::from_pem(&text).map_err(|e| CaError::Invalid(path, e.to_string()))
    }

    fn load_certificate(&self, file: &str) -> Result<CertificateDer<'static>, CaError> {
        let path = self.path(file);
        let mut certs = pem::load_certificates(&path)
            .map_err(|e| CaError::Invalid(path.clone(), e.to_string()))?;
        Ok(certs.remove(0))
    }

    fn load_key(&self, file: &str) -> Result<KeyPair, CaError> {
        let path = self.path(file);
        let text = fs::read_to_string(&path).map_err(|e| CaError::io("read", &path, e))?;
        KeyPair::from_pem(&text).map_err(|e| CaError::Invalid(path, e.to_string()))
    }
}

fn new_key() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Sign(e.to_string()))
}

fn ca_params(
    common_name: &str,
    constraints: BasicConstraints,
    lifetime: Duration,
) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name.remove(DnType::CommonName);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Weft");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Backdated like leaves, so a slightly slow clock elsewhere accepts a fresh CA.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + lifetime;
    params.use_authority_key_identifier_extension = true;
    params
}

fn make_issuer(
    anchor: &Issuer<'_, impl rcgen::SigningKey>,
    trust_domain: &str,
    lifetime: Duration,
) -> Result<(rcgen::Certificate, KeyPair), CaError> {
    let key = new_key()?;
    let params = ca_params(
        &format!("Weft issuer for {trust_domain}"),
        BasicConstraints::Constrained(0),
        lifetime,
    );
    let cert = params
        .signed_by(&key, anchor)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    Ok((cert, key))
}

/// Writes a file with `mode`, also fixing the mode of a file being replaced.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CaError::io("write", path, e))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| CaError::io("set permissions of", path, e))?;
    file.write_all(contents)
        .map_err(|e| CaError::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn options() -> InitOptions {
        InitOptions {
            trust_domain: "cluster.local".into(),
            anchor_lifetime: Duration::from_secs(365 * 24 * 3600),
            issuer_lifetime: Duration::from_secs(90 * 24 * 3600),
            force: false,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-ca-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn init_writes_keys_private_and_refuses_to_overwrite() {
        let dir = temp_dir("init");
        let ca = CaDirectory::new(&dir);
        ca.init(&options()).unwrap();
        for (file, mode) in [
            (ANCHOR_KEY, 0o600),
            (ISSUER_KEY, 0o600),
            (TOKEN_KEY, 0o600),
            (ANCHOR_CERT, 0o644),
        ] {
            let meta = fs::metadata(ca.path(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        let before = fs::read(ca.path(ANCHOR_KEY)).unwrap();
        let err = ca.init(&options()).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(fs::read(ca.path(ANCHOR_KEY)).unwrap(), before);

        ca.init(&InitOptions {
            force: true,
            ..options()
        })
        .unwrap();
        assert_ne!(fs::read(ca.path(ANCHOR_KEY)).unwrap(), before);
        assert_eq!(ca.trust_domain().unwrap(), "cluster.local");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_issuer_chains_to_the_anchor_and_rotates_under_it() {
        let dir = temp_dir("chain");
        let ca = CaDirectory::new(&dir);
        ca.init(&options()).unwrap();
        let anchor = ca.load_certificate(ANCHOR_CERT).unwrap();
        let first = ca.load_certificate(ISSUER_CERT).unwrap();
        assert_signed_by(&first, &anchor);
        ca.rotate_issuer(Duration::from_secs(3600)).unwrap();
        let second = ca.load_certificate(ISSUER_CERT).unwrap();
        assert_ne!(first, second);
        assert_signed_by(&second, &anchor);
        assert!(ca.load_authority().is_ok());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_bad_trust_domains_and_issuers_outliving_the_anchor() {
        let dir = temp_dir("bad");
        let ca = CaDirectory::new(&dir);
        let err = ca
            .init(&InitOptions {
                trust_domain: "Not Valid".into(),
                ..options()
            })
            .unwrap_err();
        assert!(err.to_string().contains("Not Valid"), "{err}");
        let err = ca
            .init(&InitOptions {
                issuer_lifetime: Duration::from_secs(u32::MAX.into()),
                ..options()
            })
            .unwrap_err();
        assert!(matches!(err, CaError::Lifetimes { .. }), "{err}");
        assert!(!dir.exists());
    }

    fn assert_signed_by(cert: &CertificateDer<'_>, issuer: &CertificateDer<'_>) {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(cert).unwrap();
        let (_, issuer) = X509Certificate::from_der(issuer).unwrap();
        cert.verify_signature(Some(issuer.public_key())).unwrap();
        assert!(cert.is_ca());
    }
}
