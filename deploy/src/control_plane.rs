//! The proxy container's control-plane environment: where discovery and identity are, the trust
//! domain, and the pod's own name, namespace, IP and service account through the downward API (the
//! proxy watches targets on behalf of its namespace and asks for its service account's identity).
//! One list, so a new control-plane component adds one entry here.

use serde_json::{Value, json};

use crate::InjectOptions;

/// Downward-API variables: (env name, fieldPath).
const POD_FIELDS: [(&str, &str); 4] = [
    ("WEFT_POD_NAME", "metadata.name"),
    ("WEFT_POD_NAMESPACE", "metadata.namespace"),
    ("WEFT_POD_IP", "status.podIP"),
    ("WEFT_SERVICE_ACCOUNT", "spec.serviceAccountName"),
];

/// The env entries to append to the proxy container.
pub fn control_plane_env(opts: &InjectOptions) -> Vec<Value> {
    let addresses = [
        ("WEFT_DISCOVERY_ADDR", opts.discovery_addr.as_deref()),
        ("WEFT_IDENTITY_ADDR", opts.identity_addr.as_deref()),
        ("WEFT_TRUST_DOMAIN", Some(opts.trust_domain.as_str())),
    ];
    addresses
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| json!({"name": name, "value": value})))
        .chain(POD_FIELDS.iter().map(
            |(name, path)| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}),
        ))
        .collect()
}

/// A trust domain: a lowercase DNS name (SPIFFE trust domains allow no more).
pub fn parse_trust_domain(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            r#"expected a lowercase DNS name such as "cluster.local", got {s:?}"#
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(env: &[Value]) -> Vec<&str> {
        env.iter().filter_map(|e| e["name"].as_str()).collect()
    }

    #[test]
    fn addresses_only_when_set_trust_domain_and_pod_facts_always() {
        let env = control_plane_env(&InjectOptions::default());
        assert_eq!(
            names(&env),
            [
                "WEFT_TRUST_DOMAIN",
                "WEFT_POD_NAME",
                "WEFT_POD_NAMESPACE",
                "WEFT_POD_IP",
                "WEFT_SERVICE_ACCOUNT"
            ]
        );
        assert_eq!(env[0]["value"], "cluster.local");
        assert_eq!(env[3]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");

        let opts = InjectOptions {
            discovery_addr: Some("weft-discovery.weft.svc.cluster.local:8086".into()),
            identity_addr: Some("weft-identity.weft.svc.cluster.local:8080".into()),
            trust_domain: "prod.example".into(),
            ..InjectOptions::default()
        };
        let env = control_plane_env(&opts);
        assert_eq!(
            &names(&env)[..3],
            [
                "WEFT_DISCOVERY_ADDR",
                "WEFT_IDENTITY_ADDR",
                "WEFT_TRUST_DOMAIN"
            ]
        );
        assert_eq!(
            env[0]["value"],
            "weft-discovery.weft.svc.cluster.local:8086"
        );
        assert_eq!(env[2]["value"], "prod.example");
    }

    #[test]
    fn trust_domains_are_lowercase_dns_names() {
        assert_eq!(
            parse_trust_domain("cluster.local").as_deref(),
            Ok("cluster.local")
        );
        for bad in ["", "Cluster.local", "a..b", "a/b", "spiffe://x"] {
            assert!(parse_trust_domain(bad).is_err(), "{bad:?}");
        }
    }
}
