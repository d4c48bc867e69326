//! What the injector asks the Kubernetes API: a pod's Namespace (its `weft.io/` annotations mesh
//! the namespace's pods and set their defaults, and a namespaceSelector can match only labels),
//! and, with `--patch-webhook-config`, the MutatingWebhookConfiguration whose caBundle must hold
//! the CA the injector generated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::namespace_dir::{DirError, NamespaceDir};

/// How long a namespace lookup may take: well inside the webhook's `timeoutSeconds`.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the caBundle is checked (a `kubectl apply` of the configuration can reset it).
const CA_BUNDLE_RECHECK: Duration = Duration::from_secs(60);
/// After a failed check or patch.
const CA_BUNDLE_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("cannot read Namespace {namespace} from the Kubernetes API: {source}")]
    Api {
        namespace: String,
        source: kube::Error,
    },
    #[error("reading Namespace {namespace} from the Kubernetes API took over {timeout:?}")]
    Timeout {
        namespace: String,
        timeout: Duration,
    },
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("reading Namespace {namespace} from --namespace-lookup file:{dir} did not finish")]
    DirTask { namespace: String, dir: String },
}

/// Where the annotations of a pod's namespace come from (`--namespace-lookup`).
#[derive(Clone)]
pub enum NamespaceSource {
    /// GET /api/v1/namespaces/NAME for every reviewed pod.
    Api(kube::Client),
    /// Namespace objects in a directory of YAML files (see `namespace_dir`).
    File(Arc<NamespaceDir>),
    /// Only the pod's own annotations count.
    Off,
}

impl NamespaceSource {
    /// The namespace's annotations; empty with `Off`.
    pub async fn annotations(&self, name: &str) -> Result<BTreeMap<String, String>, LookupError> {
        let client = match self {
            Self::Api(client) => client,
            Self::File(dir) => {
                let shown = dir.dir().display().to_string();
                let (dir, owned) = (Arc::clone(dir), name.to_owned());
                return tokio::task::spawn_blocking(move || dir.annotations(&owned))
                    .await
                    .map_err(|_| LookupError::DirTask {
                        namespace: name.to_owned(),
                        dir: shown,
                    })?
                    .map_err(LookupError::from);
            }
            Self::Off => return Ok(BTreeMap::new()),
        };
        let api = Api::<Namespace>::all(client.clone());
        let namespace = tokio::time::timeout(LOOKUP_TIMEOUT, api.get(name))
            .await
            .map_err(|_| LookupError::Timeout {
                namespace: name.to_owned(),
                timeout: LOOKUP_TIMEOUT,
            })?
            .map_err(|source| LookupError::Api {
                namespace: name.to_owned(),
                source,
            })?;
        Ok(namespace.metadata.annotations.unwrap_or_default())
    }
}

/// Keeps `caBundle` of every webhook in the MutatingWebhookConfiguration `name` equal to
/// `ca_pem`, checking every minute; runs until the process ends.
pub async fn keep_ca_bundle(client: kube::Client, name: String, ca_pem: String) {
    let api = Api::<MutatingWebhookConfiguration>::all(client);
    let mut logged_failure = false;
    loop {
        match patch_ca_bundle(&api, &name, &ca_pem).await {
            Ok(patched) => {
                if patched > 0 {
                    tracing::info!(
                        configuration = %name,
                        webhooks = patched,
                        "caBundle of MutatingWebhookConfiguration set to the injector's CA"
                    );
                }
                logged_failure = false;
                tokio::time::sleep(CA_BUNDLE_RECHECK).await;
            }
            Err(e) => {
                // Once per failure streak at warn, then quieter: the configuration may simply not
                // be applied yet.
                if logged_failure {
                    tracing::debug!(configuration = %name, error = %e, "caBundle still not set");
                } else {
                    tracing::warn!(
                        configuration = %name,
                        error = %e,
                        "cannot set the caBundle of MutatingWebhookConfiguration (--patch-webhook-config); retrying every {CA_BUNDLE_RETRY:?}"
                    );
                    logged_failure = true;
                }
                tokio::time::sleep(CA_BUNDLE_RETRY).await;
            }
        }
    }
}

/// Patches the webhooks whose caBundle differs; returns how many it patched.
async fn patch_ca_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    ca_pem: &str,
) -> Result<usize, kube::Error> {
    let configuration = api.get(name).await?;
    let current: Vec<(String, Option<Vec<u8>>)> = configuration
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|webhook| {
            let bundle = webhook.client_config.ca_bundle.map(|bytes| bytes.0);
            (webhook.name, bundle)
        })
        .collect();
    let operations = ca_bundle_operations(&current, ca_pem);
    let patched = operations.len() / 2;
    if patched > 0 {
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(operations))
            .map_err(kube::Error::SerdeError)?;
        api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await?;
    }
    Ok(patched)
}

/// For each webhook (name, caBundle) whose bundle is not `ca_pem`: a `test` of its name (so a
/// concurrent reordering fails the patch instead of patching the wrong webhook) and an `add` of
/// the bundle (base64 of the PEM, as the API carries bytes).
fn ca_bundle_operations(
    webhooks: &[(String, Option<Vec<u8>>)],
    ca_pem: &str,
) -> Vec<serde_json::Value> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    webhooks
        .iter()
        .enumerate()
        .filter(|(_, (_, bundle))| bundle.as_deref() != Some(ca_pem.as_bytes()))
        .flat_map(|(index, (name, _))| {
            [
                serde_json::json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": name}),
                serde_json::json!({"op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": encoded}),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_webhooks_with_another_bundle_are_patched() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let webhooks = vec![
            ("inject.weft.io".to_owned(), None),
            ("current.weft.io".to_owned(), Some(pem.as_bytes().to_vec())),
            ("stale.weft.io".to_owned(), Some(b"old".to_vec())),
        ];
        let encoded = base64::engine::general_purpose::STANDARD.encode(pem);
        assert_eq!(
            ca_bundle_operations(&webhooks, pem),
            vec![
                json!({"op": "test", "path": "/webhooks/0/name", "value": "inject.weft.io"}),
                json!({"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": encoded}),
                json!({"op": "test", "path": "/webhooks/2/name", "value": "stale.weft.io"}),
                json!({"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": encoded}),
            ]
        );
    }
}
