//! Certificates as the mesh reads them (`weft_tls::certificate`) and verifies them
//! (`weft_tls::SpiffeServerVerifier`, `SpiffeClientVerifier`): the URI SAN that names a workload.
//!
//! Holds for any bytes taken as a DER certificate: the three readers agree (`inspect`,
//! `spiffe_id_of`, `not_after_of`); a certificate the verifiers accept has exactly one valid SPIFFE
//! id, of the trust domain, and the server verifier accepts it only for that identity's SNI name.
//!
//! The verifiers trust a fixed test CA (`ca_key.pem` in this directory: a throwaway key for fuzzing
//! only), so seeds issued by it (corpus/certificate, made by `examples/seeds.rs`) get past the
//! signature check; verification runs at a fixed time within the seeds' validity.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use weft_tls::rustls::client::danger::ServerCertVerifier;
use weft_tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use weft_tls::rustls::server::danger::ClientCertVerifier;
use weft_tls::{SpiffeClientVerifier, SpiffeId, SpiffeServerVerifier, TrustAnchors, certificate};

pub const TRUST_DOMAIN: &str = "cluster.local";
/// The fuzzing CA's key (PKCS#8 PEM). Not a secret: it signs nothing but test inputs.
pub const CA_KEY_PEM: &str = include_str!("ca_key.pem");
/// The time verification runs at: 2026-12-01T00:00:00Z. The seeds are valid from 2026-11-01
/// for ten years.
pub const VERIFY_AT_UNIX: u64 = 1_796_083_200;

struct Verifiers {
    server: SpiffeServerVerifier,
    client: Arc<SpiffeClientVerifier>,
}

/// The fuzzing CA. Its certificate's bytes differ per call (ECDSA signatures are randomized) but
/// its name and key do not, and those are what a leaf is verified against.
pub struct FuzzCa {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl FuzzCa {
    pub fn new() -> Self {
        let key = KeyPair::from_pem(CA_KEY_PEM).expect("the fuzzing CA key parses");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "weft fuzzing CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2026, 11, 1);
        params.not_after = rcgen::date_time_ymd(2036, 11, 1);
        let cert = params.self_signed(&key).expect("the fuzzing CA self-signs");
        FuzzCa { params, key, cert }
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        self.cert.der()
    }

    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_der(vec![self.der().clone()], "the fuzzing CA")
            .expect("the fuzzing CA is a trust anchor")
    }

    /// Signs a leaf for `leaf_key` as `params` describe it.
    pub fn issue(
        &self,
        params: &CertificateParams,
        leaf_key: &KeyPair,
    ) -> Result<CertificateDer<'static>, rcgen::Error> {
        let issuer = Issuer::from_params(&self.params, &self.key);
        Ok(params.signed_by(leaf_key, &issuer)?.der().clone())
    }
}

impl Default for FuzzCa {
    fn default() -> Self {
        Self::new()
    }
}

fn verifiers() -> &'static Verifiers {
    static VERIFIERS: OnceLock<Verifiers> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        let anchors = FuzzCa::new().anchors();
        Verifiers {
            client: Arc::new(
                SpiffeClientVerifier::new(&anchors, TRUST_DOMAIN)
                    .expect("a client verifier over the fuzzing CA"),
            ),
            server: SpiffeServerVerifier::new(anchors, TRUST_DOMAIN),
        }
    })
}

pub fn check(data: &[u8]) {
    let info = certificate::inspect(data);
    let id = certificate::spiffe_id_of(data);
    let not_after = certificate::not_after_of(data);
    match &info {
        Ok(info) => {
            assert_eq!(id.as_ref().ok(), Some(&info.identity));
            assert_eq!(not_after.as_ref().ok(), Some(&info.not_after));
            assert_eq!(
                SpiffeId::parse(&info.identity.uri()).as_ref(),
                Ok(&info.identity)
            );
            assert!(info.serial.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        Err(_) => assert!(id.is_err(), "inspect failed where spiffe_id_of did not"),
    }

    let der = CertificateDer::from(data.to_vec());
    let now = UnixTime::since_unix_epoch(Duration::from_secs(VERIFY_AT_UNIX));
    let verifiers = verifiers();
    if verifiers.client.verify_client_cert(&der, &[], now).is_ok() {
        let info = info
            .as_ref()
            .expect("a certificate the client verifier accepts has one valid SPIFFE id");
        assert_eq!(info.identity.trust_domain(), TRUST_DOMAIN);
        assert!(info.not_after > UNIX_EPOCH + Duration::from_secs(VERIFY_AT_UNIX));
    }
    // As a server: for the identity it names, and for another one.
    let named = info.as_ref().ok().map(|info| info.identity.clone());
    let other = SpiffeId::new(TRUST_DOMAIN, "fuzz", "someone-else").expect("a valid identity");
    for expected in named.iter().chain([&other]) {
        let Ok(server_name) = expected.server_name() else {
            continue;
        };
        let accepted = verifiers
            .server
            .verify_server_cert(&der, &[], &server_name, &[], now)
            .is_ok();
        if accepted {
            assert_eq!(
                named.as_ref(),
                Some(expected),
                "accepted for the wrong identity"
            );
        }
    }
    let not_mesh = ServerName::try_from("example.com").expect("a DNS name");
    assert!(
        verifiers
            .server
            .verify_server_cert(&der, &[], &not_mesh, &[], now)
            .is_err(),
        "a server name outside the mesh's SNI form was accepted"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{ExtendedKeyUsagePurpose, SanType};

    /// The target is only as good as its CA: a leaf it issues must get past the verifiers, so the
    /// fuzzer reaches the SPIFFE checks after the signature check.
    #[test]
    fn a_leaf_from_the_fuzzing_ca_is_verified_for_its_identity_only() {
        let id = SpiffeId::new(TRUST_DOMAIN, "shop", "web").unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.uri().try_into().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2026, 11, 1);
        params.not_after = rcgen::date_time_ymd(2036, 10, 1);
        let der = FuzzCa::new().issue(&params, &key).unwrap();
        let now = UnixTime::since_unix_epoch(Duration::from_secs(VERIFY_AT_UNIX));
        let verifiers = verifiers();
        assert!(verifiers.client.verify_client_cert(&der, &[], now).is_ok());
        let server = |id: &SpiffeId| {
            verifiers
                .server
                .verify_server_cert(&der, &[], &id.server_name().unwrap(), &[], now)
        };
        assert!(server(&id).is_ok());
        assert!(server(&SpiffeId::new(TRUST_DOMAIN, "shop", "db").unwrap()).is_err());
        check(&der);
    }
}
