//! SPIFFE workload identities of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`,
//! and the TLS SNI name that stands for one.
//!
//! Parsing is strict on purpose: an identity is compared byte for byte in certificates, so there is
//! exactly one spelling of each (lowercase, no trailing dot, no port, query or fragment).

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::ServerName;

const SCHEME: &str = "spiffe://";
/// The label between the namespace and the trust domain in [`SpiffeId::sni_name`].
const SNI_MARKER: &str = "sa";

/// Why a string is not a Weft workload identity (or a part of one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("identity {0:?} does not start with spiffe://")]
    Scheme(String),
    #[error(
        "identity {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Shape(String),
    #[error(
        "trust domain {0:?} is invalid: use 1-255 lowercase letters, digits, '.', '-' or '_', in dot-separated labels of 1-63 characters that do not start or end with '-', the last not all digits (SNI names end with it, so it must be a DNS name)"
    )]
    TrustDomain(String),
    #[error(
        "namespace {0:?} is invalid: a Kubernetes namespace is 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
    )]
    Namespace(String),
    #[error(
        "service account {0:?} is invalid: a Kubernetes service account name is 1-253 characters of dot-separated labels of lowercase letters, digits or '-'"
    )]
    ServiceAccount(String),
    #[error("the SNI name {0:?} of this identity is longer than the 253 characters DNS allows")]
    SniTooLong(String),
}

/// A Weft workload identity: a SPIFFE id naming a Kubernetes service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an identity from its parts, validating each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(trust_domain)?;
        if !is_dns_label(namespace) {
            return Err(SpiffeIdError::Namespace(namespace.to_owned()));
        }
        if !is_dns_subdomain(service_account) {
            return Err(SpiffeIdError::ServiceAccount(service_account.to_owned()));
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// Parses `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn parse(uri: &str) -> Result<Self, SpiffeIdError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::Scheme(uri.to_owned()))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| SpiffeIdError::Shape(uri.to_owned()))?;
        let mut segments = path.split('/');
        let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(SpiffeIdError::Shape(uri.to_owned()));
        };
        Self::new(trust_domain, namespace, service_account)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The SPIFFE URI, as carried in a certificate's URI SAN.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    /// The DNS name standing for this identity in TLS SNI: `<service-account>.<namespace>.sa.<trust-domain>`.
    ///
    /// A proxy dialing a peer sends it as SNI; the peer's inbound side terminates only TLS whose SNI is
    /// its own name, and [`crate::SpiffeServerVerifier`] turns it back into the identity to demand.
    /// Decoding is unambiguous for a known trust domain because a namespace never contains a dot.
    /// Certificates from the Weft CA carry it as a DNS SAN too.
    pub fn sni_name(&self) -> String {
        format!(
            "{}.{}.{SNI_MARKER}.{}",
            self.service_account, self.namespace, self.trust_domain
        )
    }

    /// [`Self::sni_name`] as the rustls server name to connect with.
    pub fn server_name(&self) -> Result<ServerName<'static>, SpiffeIdError> {
        let name = self.sni_name();
        if name.len() > 253 {
            return Err(SpiffeIdError::SniTooLong(name));
        }
        ServerName::try_from(name.clone()).map_err(|_| SpiffeIdError::SniTooLong(name))
    }

    /// The identity an SNI name of [`Self::sni_name`]'s form stands for, in `trust_domain`;
    /// `None` when `name` is not such a name (for example, an application's own TLS).
    pub fn from_sni_name(name: &str, trust_domain: &str) -> Option<Self> {
        let suffix = format!(".{SNI_MARKER}.{trust_domain}");
        let workload = name.strip_suffix(&suffix)?;
        let (service_account, namespace) = workload.rsplit_once('.')?;
        Self::new(trust_domain, namespace, service_account).ok()
    }
}

/// The SNI name of an identity; see [`SpiffeId::sni_name`].
pub fn sni_name(id: &SpiffeId) -> String {
    id.sni_name()
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks a trust domain name (the SPIFFE character set, lowercase only). It is also the suffix of
/// every SNI name ([`SpiffeId::sni_name`]), so it must be a DNS name as TLS accepts one: labels of
/// 1-63 characters that neither start nor end with '-', and a last label that is not all digits
/// (it would read as an IPv4 address).
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    let valid = !trust_domain.is_empty()
        && trust_domain.len() <= 255
        && trust_domain.split('.').all(label_ok)
        && !trust_domain
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        Ok(())
    } else {
        Err(SpiffeIdError::TrustDomain(trust_domain.to_owned()))
    }
}

/// RFC 1123 label, as Kubernetes uses for namespaces.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// RFC 1123 subdomain, as Kubernetes uses for service account names.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web-frontend").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "web-frontend");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/shop/sa/web-frontend"
        );
        assert_eq!(id.uri().parse::<SpiffeId>().unwrap(), id);
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "https://cluster.local/ns/a/sa/b",
            "SPIFFE://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local//ns/a/sa/b",
            "spiffe://cluster.local:443/ns/a/sa/b",
            "spiffe://user@cluster.local/ns/a/sa/b",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster..local/ns/a/sa/b",
            "spiffe://cluster.local./ns/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://cluster.local/ns/A/sa/b",
            "spiffe://cluster.local/ns/a.b/sa/b",
            "spiffe://cluster.local/ns/-a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b_c",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://cluster.local/ns/a/sa/b#f",
            "spiffe://cluster.local/ns/a/sa/b..c",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn names_the_bad_part() {
        assert_eq!(
            SpiffeId::parse("spiffe://cluster.local/ns/Bad/sa/b").unwrap_err(),
            SpiffeIdError::Namespace("Bad".into())
        );
        assert_eq!(
            SpiffeId::parse("spiffe://c_l/ns/a/sa/x_y").unwrap_err(),
            SpiffeIdError::ServiceAccount("x_y".into())
        );
        assert!(
            SpiffeId::parse("spiffe://x/ns/a/sa/b..c")
                .unwrap_err()
                .to_string()
                .contains("\"b..c\"")
        );
    }

    #[test]
    fn accepts_kubernetes_limits() {
        let ns = "n".repeat(63);
        let sa = format!("{}.{}", "s".repeat(63), "t".repeat(63));
        assert!(SpiffeId::new("cluster.local", &ns, &sa).is_ok());
        assert!(SpiffeId::new("cluster.local", &"n".repeat(64), "a").is_err());
        assert!(SpiffeId::new("my_domain.example", "a", "b.c").is_ok());
    }

    #[test]
    fn sni_name_round_trips_with_dotted_service_accounts() {
        let id = SpiffeId::new("cluster.local", "shop", "api.v2").unwrap();
        assert_eq!(id.sni_name(), "api.v2.shop.sa.cluster.local");
        assert_eq!(sni_name(&id), id.sni_name());
        assert_eq!(
            SpiffeId::from_sni_name(&id.sni_name(), "cluster.local"),
            Some(id.clone())
        );
        assert!(id.server_name().is_ok());
    }

    #[test]
    fn sni_name_of_another_trust_domain_or_app_is_not_an_identity() {
        assert_eq!(
            SpiffeId::from_sni_name("web.shop.sa.other.domain", "cluster.local"),
            None
        );
        assert_eq!(
            SpiffeId::from_sni_name("www.example.com", "cluster.local"),
            None
        );
        assert_eq!(
            SpiffeId::from_sni_name("sa.cluster.local", "cluster.local"),
            None
        );
        assert_eq!(
            SpiffeId::from_sni_name("shop.sa.cluster.local", "cluster.local"),
            None
        );
    }

    #[test]
    fn over_long_sni_name_is_an_error_not_a_panic() {
        let sa = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(60),
        ]
        .join(".");
        let id = SpiffeId::new("cluster.local", "ns", &sa).unwrap();
        assert!(matches!(
            id.server_name(),
            Err(SpiffeIdError::SniTooLong(_))
        ));
    }

    /// Found by fuzzing (proxy/fuzz, target spiffe_id): these parsed as identities, but their SNI
    /// names are not DNS names, so no proxy could dial them and `server_name` blamed the length.
    #[test]
    fn trust_domains_that_cannot_end_a_dns_name_are_refused() {
        for trust_domain in [
            "clustre.loca-",
            "-cluster.local",
            "cluster.1",
            "10",
            &format!("{}.local", "a".repeat(64)),
        ] {
            let uri = format!("spiffe://{trust_domain}/ns/shop/sa/web");
            assert_eq!(
                SpiffeId::parse(&uri),
                Err(SpiffeIdError::TrustDomain(trust_domain.to_owned())),
                "{uri}"
            );
        }
        for trust_domain in [
            "cluster.local",
            "td_1.example",
            "1.example",
            &"a".repeat(63),
        ] {
            let id = SpiffeId::new(trust_domain, "shop", "web").unwrap();
            assert!(id.server_name().is_ok(), "{id}");
        }
    }
}
