//! The inbound policy (`WEFT_INBOUND_POLICY`, `weft.io/inbound-policy`) and per-port
//! authorization by client identity (`WEFT_INBOUND_AUTHZ`, `weft.io/allow-identities`).
//!
//! Authorization syntax: rules separated by `;`, each `<ports>=<identities>`, where `<ports>` is a
//! port list ("8080" or "8000-8010,9090") and `<identities>` a `|`-separated list of
//! - `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`: exactly that workload,
//! - `spiffe://<trust-domain>/ns/<namespace>/sa/*`: any workload of that namespace,
//! - `*`: any workload with a valid mesh certificate.
//!
//! e.g. `8080=spiffe://cluster.local/ns/shop/sa/web|spiffe://cluster.local/ns/ops/sa/*;9090=*`.

use std::fmt;

use crate::{PortSet, SettingError, parse_ports};

const POLICY_EXPECTED: &str = r#""strict" (mTLS only) or "permissive" (plaintext too)"#;
const AUTHZ_EXPECTED: &str = r#"rules "<ports>=<identity>|<identity>;..." with identities "spiffe://<trust-domain>/ns/<ns>/sa/<sa>", "spiffe://<trust-domain>/ns/<ns>/sa/*" or "*", such as "8080=spiffe://cluster.local/ns/shop/sa/web;9090=*""#;

/// Whether plaintext connections reach the app's ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InboundPolicy {
    /// Only mTLS from mesh workloads.
    Strict,
    /// mTLS and plaintext (unmeshed clients, kubelet probes).
    #[default]
    Permissive,
}

impl InboundPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundPolicy::Strict => "strict",
            InboundPolicy::Permissive => "permissive",
        }
    }
}

impl fmt::Display for InboundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub fn parse_inbound_policy(s: &str) -> Result<InboundPolicy, SettingError> {
    match s.trim() {
        "strict" => Ok(InboundPolicy::Strict),
        "permissive" => Ok(InboundPolicy::Permissive),
        _ => Err(SettingError::new(POLICY_EXPECTED, s)),
    }
}

/// Who may call: one allowed identity pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityPattern {
    /// Any workload with a valid mesh certificate.
    AnyMeshed,
    /// Every service account of one namespace: the identity's prefix up to and including `/sa/`.
    Namespace(String),
    /// Exactly this SPIFFE id.
    Exact(String),
}

impl IdentityPattern {
    /// Whether the SPIFFE id `identity` (as its certificate carries it) is allowed.
    pub fn matches(&self, identity: &str) -> bool {
        match self {
            IdentityPattern::AnyMeshed => true,
            IdentityPattern::Namespace(prefix) => identity
                .strip_prefix(prefix.as_str())
                .is_some_and(|sa| !sa.is_empty() && !sa.contains('/')),
            IdentityPattern::Exact(id) => id == identity,
        }
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityPattern::AnyMeshed => f.write_str("*"),
            IdentityPattern::Namespace(prefix) => write!(f, "{prefix}*"),
            IdentityPattern::Exact(id) => f.write_str(id),
        }
    }
}

/// One rule: these ports accept only these identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzRule {
    pub ports: PortSet,
    pub allowed: Vec<IdentityPattern>,
}

/// Per-port authorization. Ports no rule names are governed by the inbound policy alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundAuthz {
    rules: Vec<AuthzRule>,
}

impl InboundAuthz {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[AuthzRule] {
        &self.rules
    }

    /// The identities allowed on `port`, when a rule names it (the first rule naming it wins).
    pub fn allowed_on(&self, port: u16) -> Option<&[IdentityPattern]> {
        self.rules
            .iter()
            .find(|rule| rule.ports.contains(port))
            .map(|rule| rule.allowed.as_slice())
    }
}

impl fmt::Display for InboundAuthz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{}=", rule.ports)?;
            for (j, pattern) in rule.allowed.iter().enumerate() {
                if j > 0 {
                    f.write_str("|")?;
                }
                write!(f, "{pattern}")?;
            }
        }
        Ok(())
    }
}

/// Parses the authorization rules; "" is no rule. A port named by two rules is refused, so the
/// order of rules never matters.
pub fn parse_inbound_authz(s: &str) -> Result<InboundAuthz, SettingError> {
    let err = |reason: String| SettingError::new(AUTHZ_EXPECTED, s).because(reason);
    let mut authz = InboundAuthz::default();
    if s.trim().is_empty() {
        return Ok(authz);
    }
    for rule in s.split(';') {
        let rule = rule.trim();
        let Some((ports, identities)) = rule.split_once('=') else {
            return Err(err(format!("rule {rule:?} has no '='")));
        };
        let ports = parse_ports(ports).map_err(|e| err(format!("in rule {rule:?}: {e}")))?;
        if ports.is_empty() {
            return Err(err(format!("rule {rule:?} names no port")));
        }
        for earlier in &authz.rules {
            if let Some((low, high)) = ports
                .ranges()
                .find(|&(low, high)| (low..=high).any(|p| earlier.ports.contains(p)))
            {
                return Err(err(format!(
                    "ports {low}-{high} of rule {rule:?} are already named by an earlier rule"
                )));
            }
        }
        let allowed = identities
            .split('|')
            .map(|pattern| parse_pattern(pattern.trim()).map_err(&err))
            .collect::<Result<Vec<_>, _>>()?;
        authz.rules.push(AuthzRule { ports, allowed });
    }
    Ok(authz)
}

fn parse_pattern(pattern: &str) -> Result<IdentityPattern, String> {
    if pattern == "*" {
        return Ok(IdentityPattern::AnyMeshed);
    }
    let bad = |why: &str| format!("{pattern:?} is not an identity: {why}");
    let rest = pattern
        .strip_prefix("spiffe://")
        .ok_or_else(|| bad("it does not start with spiffe://"))?;
    let (trust_domain, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("no /ns/<namespace>/sa/<service-account> path"))?;
    let segments: Vec<&str> = path.split('/').collect();
    let ["ns", namespace, "sa", service_account] = segments.as_slice() else {
        return Err(bad("the path is not /ns/<namespace>/sa/<service-account>"));
    };
    if !is_trust_domain(trust_domain) {
        return Err(bad("invalid trust domain"));
    }
    if !is_dns_label(namespace) {
        return Err(bad("invalid namespace"));
    }
    if *service_account == "*" {
        return Ok(IdentityPattern::Namespace(format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/"
        )));
    }
    if service_account.len() > 253 || !service_account.split('.').all(is_dns_label) {
        return Err(bad("invalid service account"));
    }
    Ok(IdentityPattern::Exact(pattern.to_owned()))
}

/// The rule weft-tls applies to trust domains (they end every SNI name, so they must be DNS
/// names): lowercase labels of 1-63 letters, digits, '-' or '_', not starting or ending with '-',
/// the last not all digits. An identity this accepts must be one weft-tls parses.
fn is_trust_domain(trust_domain: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    !trust_domain.is_empty()
        && trust_domain.len() <= 255
        && trust_domain.split('.').all(label_ok)
        && !trust_domain
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(parse_inbound_policy("strict"), Ok(InboundPolicy::Strict));
        assert_eq!(
            parse_inbound_policy(" permissive "),
            Ok(InboundPolicy::Permissive)
        );
        for bad in ["", "Strict", "mtls", "off"] {
            assert!(parse_inbound_policy(bad).is_err(), "{bad:?}");
        }
        assert_eq!(InboundPolicy::default(), InboundPolicy::Permissive);
    }

    #[test]
    fn rules_by_port() {
        let authz = parse_inbound_authz(
            "8080=spiffe://cluster.local/ns/shop/sa/web|spiffe://cluster.local/ns/ops/sa/*; 9000-9002,9090=*",
        )
        .unwrap();
        let web = "spiffe://cluster.local/ns/shop/sa/web";
        let allowed = authz.allowed_on(8080).unwrap();
        assert!(allowed.iter().any(|p| p.matches(web)));
        assert!(
            allowed
                .iter()
                .any(|p| p.matches("spiffe://cluster.local/ns/ops/sa/deploy"))
        );
        assert!(
            !allowed
                .iter()
                .any(|p| p.matches("spiffe://cluster.local/ns/shop/sa/other"))
        );
        assert!(
            !allowed
                .iter()
                .any(|p| p.matches("spiffe://cluster.local/ns/ops/sa/"))
        );
        assert!(
            !allowed
                .iter()
                .any(|p| p.matches("spiffe://cluster.local/ns/opsx/sa/a"))
        );
        assert_eq!(
            authz.allowed_on(9001),
            Some(&[IdentityPattern::AnyMeshed][..])
        );
        assert_eq!(
            authz.allowed_on(9090),
            Some(&[IdentityPattern::AnyMeshed][..])
        );
        assert_eq!(authz.allowed_on(7000), None);
        assert_eq!(
            authz.to_string(),
            "8080=spiffe://cluster.local/ns/shop/sa/web|spiffe://cluster.local/ns/ops/sa/*;9000-9002,9090=*"
        );
        assert!(parse_inbound_authz("").unwrap().is_empty());
    }

    #[test]
    fn bad_rules_say_why() {
        for (bad, why) in [
            ("8080", "no '='"),
            ("=*", "names no port"),
            ("0=*", "port 0"),
            ("8080=web", "does not start with spiffe://"),
            ("8080=spiffe://cluster.local/ns/shop", "not /ns/"),
            ("8080=spiffe://Cluster/ns/shop/sa/web", "trust domain"),
            ("8080=spiffe://cluster.local/ns/Shop/sa/web", "namespace"),
            (
                "8080=spiffe://cluster.local/ns/shop/sa/we_b",
                "service account",
            ),
            ("8080=spiffe://cluster.local/ns/*/sa/*", "namespace"),
            ("8080=*;8000-8100=*", "already named"),
            ("8080=*|", "not an identity"),
        ] {
            let err = parse_inbound_authz(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    /// Found by fuzzing (proxy/fuzz, targets spiffe_id and settings): an identity whose trust
    /// domain cannot end a DNS name was accepted here, though weft-tls refuses it.
    #[test]
    fn identities_with_trust_domains_weft_tls_refuses_are_refused() {
        for trust_domain in ["clustre.loca-", "-cluster.local", "cluster.1", "10"] {
            let rule = format!("8080=spiffe://{trust_domain}/ns/shop/sa/web");
            assert!(parse_inbound_authz(&rule).is_err(), "{rule}");
            let rule = format!("8080=spiffe://{trust_domain}/ns/shop/sa/*");
            assert!(parse_inbound_authz(&rule).is_err(), "{rule}");
        }
        assert!(parse_inbound_authz("8080=spiffe://td_1.example/ns/shop/sa/web").is_ok());
    }
}
