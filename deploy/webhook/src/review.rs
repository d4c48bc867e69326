//! One AdmissionReview in, one out: the pod is injected by the weft_inject library exactly as the
//! `weft-inject` CLI would inject it, and the difference becomes the response's JSON patch.
//!
//! - Not meshed, already meshed, not a CREATE: allowed, no patch.
//! - A `weft.io/` annotation of the pod or its namespace that weft-inject rejects: denied, with
//!   weft-inject's message (it names the object and the annotation). The user asked for the pod
//!   to be meshed; creating it unmeshed would silently drop its mTLS.
//! - The injector's own failure (the namespace cannot be read, the patch does not apply):
//!   allowed unchanged, with a warning in the response and in the log.
//! - A body that is not an AdmissionReview v1 with a request: [`BadReview`] (HTTP 400).

use base64::Engine as _;
use kube_core::DynamicObject;
use kube_core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use serde_json::Value;
use weft_inject::{InjectOptions, inject};

use crate::kubernetes::NamespaceSource;
use crate::patch::diff;

/// Kubernetes assumes this namespace when a request names none.
const DEFAULT_NAMESPACE: &str = "default";

/// The request body is not an AdmissionReview this webhook can answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(String);

/// What the injector needs to review a pod.
pub struct Injector {
    pub options: InjectOptions,
    pub namespaces: NamespaceSource,
}

/// The AdmissionReview (JSON) answering `body`.
pub async fn review(body: &[u8], injector: &Injector) -> Result<Vec<u8>, BadReview> {
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("the request body is not JSON: {e}")))?;
    let api_version = raw.get("apiVersion").and_then(Value::as_str);
    let kind = raw.get("kind").and_then(Value::as_str);
    if kind != Some(META_KIND) || api_version != Some(META_API_VERSION_V1) {
        return Err(BadReview(format!(
            "expected kind {META_KIND} apiVersion {META_API_VERSION_V1} (set admissionReviewVersions: [v1] in the webhook configuration), got kind {} apiVersion {}",
            shown(kind),
            shown(api_version)
        )));
    }
    let object = raw.pointer("/request/object").cloned();
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(raw)
        .map_err(|e| BadReview(format!("the AdmissionReview is malformed: {e}")))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| BadReview("the AdmissionReview has no request".to_owned()))?;

    let response = respond(&request, object, injector).await;
    encode(response)
        .map_err(|e| BadReview(format!("cannot encode the AdmissionReview response: {e}")))
}

/// The review as JSON, with the patch base64-encoded as the API's JSON carries bytes (kube-core
/// serializes its `Vec<u8>` as an array of numbers, which Go's decoder happens to take too).
fn encode(response: AdmissionResponse) -> Result<Vec<u8>, serde_json::Error> {
    let patch = response.patch.clone();
    let mut review = serde_json::to_value(response.into_review())?;
    if let (Some(bytes), Some(slot)) = (patch, review.pointer_mut("/response/patch")) {
        *slot = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&review)
}

fn shown(field: Option<&str>) -> String {
    field.map_or_else(|| "(none)".to_owned(), |value| format!("{value:?}"))
}

async fn respond(
    request: &AdmissionRequest<DynamicObject>,
    object: Option<Value>,
    injector: &Injector,
) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    let Some(object) = object.filter(|_| request.operation == Operation::Create) else {
        return allowed;
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let subject = subject(request, &namespace);

    let namespace_annotations = match injector.namespaces.annotations(&namespace).await {
        Ok(annotations) => annotations,
        Err(e) => return admitted_unchanged(allowed, &subject, &e.to_string()),
    };
    let mut options = injector.options.clone();
    options
        .namespaces
        .insert(namespace.clone(), namespace_annotations);

    // The library reads the namespace from the object, which the API server may leave unset.
    let mut before = object.clone();
    if let Some(metadata) = before.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata
            .entry("namespace")
            .or_insert_with(|| Value::String(namespace.clone()));
    }
    let injected = match inject(vec![before.clone()], &options) {
        Ok(mut docs) if docs.len() == 1 => docs.remove(0),
        Ok(docs) => {
            let reason = format!("weft-inject returned {} objects for one", docs.len());
            return admitted_unchanged(allowed, &subject, &reason);
        }
        Err(e) => {
            tracing::info!(uid = %request.uid, object = %subject, reason = %e, "denied");
            return allowed.deny(e);
        }
    };
    let patch = diff(&before, &injected);
    if patch.0.is_empty() {
        tracing::debug!(uid = %request.uid, object = %subject, "admitted without a patch");
        return allowed;
    }
    // The patch is computed on the object with its namespace filled in but applies to the object
    // as sent; check it does what it must before the API server relies on it.
    let mut patched = object.clone();
    if let Err(e) = json_patch::patch(&mut patched, &patch.0) {
        return admitted_unchanged(allowed, &subject, &format!("the patch does not apply: {e}"));
    }
    if diff(&patched, &injected)
        .0
        .iter()
        .any(|op| !only_namespace(op))
    {
        let reason = "the patched pod differs from weft-inject's output";
        return admitted_unchanged(allowed, &subject, reason);
    }
    let operations = patch.0.len();
    match allowed.clone().with_patch(patch) {
        Ok(response) => {
            tracing::info!(uid = %request.uid, object = %subject, operations, "injected");
            response
        }
        Err(e) => admitted_unchanged(allowed, &subject, &format!("cannot encode the patch: {e}")),
    }
}

/// Whether `op` only adds the `metadata.namespace` filled in before injecting.
fn only_namespace(op: &json_patch::PatchOperation) -> bool {
    matches!(op, json_patch::PatchOperation::Add(add) if add.path.as_str() == "/metadata/namespace")
}

/// "Pod shop/web-7d9f-" for logs and warnings: the name, or generateName of a pod not yet named.
fn subject(request: &AdmissionRequest<DynamicObject>, namespace: &str) -> String {
    let name = if request.name.is_empty() {
        request
            .object
            .as_ref()
            .and_then(|object| object.metadata.generate_name.clone())
            .unwrap_or_else(|| "<unnamed>".to_owned())
    } else {
        request.name.clone()
    };
    format!("{} {namespace}/{name}", request.kind.kind)
}

/// The injector's own failure never blocks a pod: it is admitted as sent, with a warning.
fn admitted_unchanged(
    mut allowed: AdmissionResponse,
    subject: &str,
    reason: &str,
) -> AdmissionResponse {
    tracing::warn!(uid = %allowed.uid, object = %subject, %reason, "admitted without the sidecar");
    allowed.warnings = Some(vec![format!(
        "weft-injector: {subject} admitted without the Weft sidecar: {reason}"
    )]);
    allowed
}
