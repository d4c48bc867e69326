//! What the proxy needs to get a workload certificate, provided the Kubernetes way: a projected
//! service-account token for the CA's audience, and the trust anchors from the ConfigMap
//! `weft-trust-anchors` (which the operator copies into each meshed namespace). Added only when the
//! injector knows an identity service: without one the proxy runs without identity.

use serde_json::{Map, Value, json};

use crate::InjectError;

/// Audience the CA's TokenReview demands (weft_identity_api::TOKEN_AUDIENCE).
pub const TOKEN_AUDIENCE: &str = "weft-identity";
pub const TOKEN_VOLUME: &str = "weft-identity-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/weft.io/identity";
pub const TOKEN_FILE: &str = "/var/run/secrets/weft.io/identity/token";
pub const ANCHORS_VOLUME: &str = "weft-trust-anchors";
/// The ConfigMap (in the pod's namespace) whose key `ca.pem` holds the trust anchors.
pub const ANCHORS_CONFIG_MAP: &str = "weft-trust-anchors";
pub const ANCHORS_DIR: &str = "/var/run/secrets/weft.io/trust-anchors";
pub const ANCHORS_FILE: &str = "/var/run/secrets/weft.io/trust-anchors/ca.pem";
/// The kubelet refreshes the token at 80% of this; the CA only reads it at each Certify.
const TOKEN_EXPIRATION_SECONDS: u32 = 86_400;

/// Env entries naming the mounted files (contract names of DESIGN.md).
pub fn identity_env() -> Vec<Value> {
    vec![
        json!({"name": "WEFT_IDENTITY_TOKEN_FILE", "value": TOKEN_FILE}),
        json!({"name": "WEFT_TRUST_ANCHORS", "value": ANCHORS_FILE}),
    ]
}

/// The proxy container's read-only mounts of the two volumes.
pub fn identity_volume_mounts() -> Vec<Value> {
    vec![
        json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}),
        json!({"name": ANCHORS_VOLUME, "mountPath": ANCHORS_DIR, "readOnly": true}),
    ]
}

/// The pod volumes behind those mounts.
pub fn identity_volumes() -> Vec<Value> {
    vec![
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE,
            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
            "path": "token",
        }}]}}),
        json!({"name": ANCHORS_VOLUME, "configMap": {
            "name": ANCHORS_CONFIG_MAP,
            "items": [{"key": "ca.pem", "path": "ca.pem"}],
        }}),
    ]
}

/// Adds env and mounts to `proxy` and the volumes to the pod `spec`; refuses a pod that already
/// has a volume of the same name rather than silently mounting the user's.
pub fn add_identity(
    spec: &mut Map<String, Value>,
    proxy: &mut Value,
    object: &str,
) -> Result<(), InjectError> {
    let volumes = spec
        .entry("volumes")
        .or_insert_with(|| Value::Array(Vec::new()));
    if volumes.is_null() {
        *volumes = Value::Array(Vec::new());
    }
    let volumes = volumes
        .as_array_mut()
        .ok_or_else(|| InjectError::Malformed {
            object: object.to_owned(),
            problem: "spec.volumes of the pod is not a list".to_owned(),
        })?;
    for name in [TOKEN_VOLUME, ANCHORS_VOLUME] {
        if volumes
            .iter()
            .any(|v| v.get("name").and_then(Value::as_str) == Some(name))
        {
            return Err(InjectError::Malformed {
                object: object.to_owned(),
                problem: format!(
                    "the pod already has a volume named {name}, which Weft needs for the proxy's identity"
                ),
            });
        }
    }
    volumes.extend(identity_volumes());
    if let Some(proxy) = proxy.as_object_mut() {
        proxy
            .entry("env")
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .into_iter()
            .for_each(|env| env.extend(identity_env()));
        proxy.insert(
            "volumeMounts".to_owned(),
            Value::Array(identity_volume_mounts()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_token_and_anchors_the_kubelet_way() {
        let mut spec = Map::new();
        let mut proxy =
            json!({"name": "weft-proxy", "env": [{"name": "WEFT_LOG", "value": "info"}]});
        add_identity(&mut spec, &mut proxy, "Pod shop/web").unwrap();
        assert_eq!(
            proxy["env"],
            json!([
                {"name": "WEFT_LOG", "value": "info"},
                {"name": "WEFT_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/weft.io/identity/token"},
                {"name": "WEFT_TRUST_ANCHORS", "value": "/var/run/secrets/weft.io/trust-anchors/ca.pem"},
            ])
        );
        assert_eq!(proxy["volumeMounts"][0]["mountPath"], TOKEN_DIR);
        assert_eq!(proxy["volumeMounts"][1]["readOnly"], true);
        let token = &spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(token["audience"], "weft-identity");
        assert_eq!(token["path"], "token");
        assert_eq!(
            spec["volumes"][1]["configMap"]["name"],
            "weft-trust-anchors"
        );
    }

    #[test]
    fn keeps_the_pods_volumes_and_refuses_a_name_clash() {
        let mut spec = Map::new();
        spec.insert("volumes".into(), json!([{"name": "data", "emptyDir": {}}]));
        let mut proxy = json!({"name": "weft-proxy", "env": []});
        add_identity(&mut spec, &mut proxy, "Pod shop/web").unwrap();
        assert_eq!(spec["volumes"].as_array().unwrap().len(), 3);
        assert_eq!(spec["volumes"][0]["name"], "data");

        let mut spec = Map::new();
        spec.insert(
            "volumes".into(),
            json!([{"name": "weft-trust-anchors", "emptyDir": {}}]),
        );
        let err = add_identity(&mut spec, &mut proxy, "Pod shop/web").unwrap_err();
        assert!(
            err.to_string().contains("weft-trust-anchors")
                && err.to_string().contains("Pod shop/web"),
            "{err}"
        );
    }
}
