//! Deciding which pods get the sidecar and adding it to them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use weft_settings::{ANNOTATION_PREFIX, DEFAULT_PROXY_IMAGE, INJECTED_ANNOTATION, InjectMode};

use crate::InjectError;
use crate::annotations::Annotations;
use crate::control_plane::control_plane_env;
use crate::namespaces::Namespaces;
use crate::sidecar::{PROXY_CONTAINER, image, init_container, proxy_container};
use crate::workload::{describe, namespace, pod_template_mut, pod_template_path};
use crate::workload_identity::add_identity;

/// The value of `weft.io/injected` on every pod the injector meshes.
pub const INJECTOR_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The trust domain of workload identities unless told otherwise.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// Image of the proxy and init containers; `weft.io/proxy-image` overrides it per pod.
    pub proxy_image: String,
    /// Namespace name -> its annotations, for namespaces not (or not fully) described by
    /// `Namespace` objects in the input.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// The discovery service (`host:port`) the proxies watch; unset = DNS-only proxies.
    pub discovery_addr: Option<String>,
    /// The identity service (`host:port`) that signs the proxies' certificates.
    pub identity_addr: Option<String>,
    /// Workload identities are `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`.
    pub trust_domain: String,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            proxy_image: DEFAULT_PROXY_IMAGE.to_owned(),
            namespaces: BTreeMap::new(),
            discovery_addr: None,
            identity_addr: None,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
        }
    }
}

/// Adds the sidecar to every pod (or pod template) that is meshed by its own or its namespace's
/// `weft.io/inject: enabled` and not `disabled` on the pod. Everything else is returned as given.
pub fn inject(docs: Vec<Value>, opts: &InjectOptions) -> Result<Vec<Value>, InjectError> {
    let namespaces = Namespaces::collect(&opts.namespaces, &docs)?;
    docs.into_iter()
        .map(|doc| inject_one(doc, &namespaces, opts))
        .collect()
}

fn inject_one(
    mut doc: Value,
    namespaces: &Namespaces,
    opts: &InjectOptions,
) -> Result<Value, InjectError> {
    let Some(path) = pod_template_path(&doc) else {
        return Ok(doc);
    };
    let object = describe(&doc);
    let namespace_annotations = namespaces.get(namespace(&doc));
    let template = pod_template_mut(&mut doc, path, &object)?;
    if has_proxy_container(template) {
        return Ok(doc);
    }
    let mode = own_inject_mode(template, &object)?.or(namespace_annotations.inject_mode());
    if mode != Some(InjectMode::Enabled) {
        return Ok(doc);
    }
    let pod_annotations = Annotations::from_metadata(template.get("metadata"), &object)?;
    let effective = namespace_annotations.overridden_by(&pod_annotations);
    add_sidecar(template, &effective, opts, &object)?;
    Ok(doc)
}

/// The pod's own `weft.io/inject`, read before anything else is validated: annotations of pods
/// that are not meshed are not the injector's business.
fn own_inject_mode(
    template: &Map<String, Value>,
    object: &str,
) -> Result<Option<InjectMode>, InjectError> {
    let key = format!("{ANNOTATION_PREFIX}inject");
    let Some(value) = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(&key))
    else {
        return Ok(None);
    };
    let mut only_inject = Map::new();
    only_inject.insert(key, value.clone());
    let metadata = serde_json::json!({ "annotations": only_inject });
    Ok(Annotations::from_metadata(Some(&metadata), object)?.inject_mode())
}

fn has_proxy_container(template: &Map<String, Value>) -> bool {
    template
        .get("spec")
        .and_then(|spec| spec.get("containers"))
        .and_then(Value::as_array)
        .is_some_and(|containers| {
            containers
                .iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(PROXY_CONTAINER))
        })
}

fn add_sidecar(
    template: &mut Map<String, Value>,
    annotations: &Annotations,
    opts: &InjectOptions,
    object: &str,
) -> Result<(), InjectError> {
    let image = image(annotations, &opts.proxy_image);
    let init = init_container(annotations, &image, object)?;
    let mut proxy = proxy_container(annotations, &image);
    if let Some(env) = proxy.get_mut("env").and_then(Value::as_array_mut) {
        env.extend(control_plane_env(opts));
    }

    let spec = template
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| malformed(object, "the pod template has no spec mapping"))?;
    if opts.identity_addr.is_some() {
        add_identity(spec, &mut proxy, object)?;
    }
    // Init containers run in order; the rules must be in place before any other starts.
    list_mut(spec, "initContainers", object)?.insert(0, init);
    // First in the list, so the kubelet starts the proxy before the app.
    spec.get_mut("containers")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| {
            malformed(
                object,
                "spec.containers of the pod is missing or not a list",
            )
        })?
        .insert(0, proxy);

    let metadata = entry_object(template, "metadata", object)?;
    let annotations = entry_object(metadata, "annotations", object)?;
    annotations.insert(
        format!("{ANNOTATION_PREFIX}{INJECTED_ANNOTATION}"),
        Value::String(INJECTOR_VERSION.to_owned()),
    );
    Ok(())
}

/// `spec[key]` as a list, created empty when absent (a pod with no init containers).
fn list_mut<'a>(
    spec: &'a mut Map<String, Value>,
    key: &str,
    object: &str,
) -> Result<&'a mut Vec<Value>, InjectError> {
    let value = spec.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if value.is_null() {
        *value = Value::Array(Vec::new());
    }
    value
        .as_array_mut()
        .ok_or_else(|| malformed(object, &format!("spec.{key} of the pod is not a list")))
}

fn entry_object<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    object: &str,
) -> Result<&'a mut Map<String, Value>, InjectError> {
    let value = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    value.as_object_mut().ok_or_else(|| {
        malformed(
            object,
            &format!("{key} of the pod template is not a mapping"),
        )
    })
}

fn malformed(object: &str, problem: &str) -> InjectError {
    InjectError::Malformed {
        object: object.to_owned(),
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests;
