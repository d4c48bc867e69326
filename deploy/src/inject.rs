//! Deciding which pods get the sidecar and adding it to them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use weft_settings::{ANNOTATION_PREFIX, DEFAULT_PROXY_IMAGE, INJECTED_ANNOTATION, InjectMode};

use crate::InjectError;
use crate::annotations::Annotations;
use crate::app_probes::{APP_PROBES_ENV, rewrite as rewrite_probes};
use crate::control_plane::control_plane_env;
use crate::namespaces::Namespaces;
use crate::outcome::{Action, Injection, Outcome};
use crate::sidecar::{Shape, image, init_container, proxy_container, shape, shape_proxy};
use crate::uninject::{is_injected, strip_injection};
use crate::workload::{
    DEFAULT_NAMESPACE, api_version, describe, describe_in, is_workload_namesake, list_items_mut,
    namespace_or, pod_template_mut, pod_template_path,
};
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
/// `weft.io/inject: enabled` and not `disabled` on the pod, and brings older injections up to the
/// current settings. Everything else is returned as given.
pub fn inject(docs: Vec<Value>, opts: &InjectOptions) -> Result<Vec<Value>, InjectError> {
    Ok(inject_with_outcomes(docs, opts)?.docs)
}

/// [`inject`], also saying what happened to each workload (the items of `List` documents too).
pub fn inject_with_outcomes(
    mut docs: Vec<Value>,
    opts: &InjectOptions,
) -> Result<Injection, InjectError> {
    let namespaces = Namespaces::collect(&opts.namespaces, &docs)?;
    let mut outcomes = Vec::new();
    for doc in &mut docs {
        visit(doc, &mut outcomes, &mut |object| {
            inject_in(object, None, &namespaces, opts)
        })?;
    }
    Ok(Injection { docs, outcomes })
}

/// Takes out every injection (`weft-inject --uninject`): what injecting added goes, nothing else.
pub fn uninject(mut docs: Vec<Value>) -> Result<Injection, InjectError> {
    let mut outcomes = Vec::new();
    for doc in &mut docs {
        visit(doc, &mut outcomes, &mut |object| {
            let Some(path) = pod_template_path(object) else {
                return Ok(None);
            };
            let name = describe(object);
            let template = pod_template_mut(object, path, &name)?;
            let action = if strip_injection(template) {
                Action::Uninjected("--uninject".to_owned())
            } else {
                Action::Skipped("not injected".to_owned())
            };
            Ok(Some(Outcome {
                object: name,
                action,
            }))
        })?;
    }
    Ok(Injection { docs, outcomes })
}

/// Injects one object as an admission webhook sees it: a Pod, or any workload with a pod
/// template. `namespace` is where the object lives when its metadata names none (the
/// admission request's namespace); the namespace's own annotations come from
/// `opts.namespaces`. The object is changed in place when it is (re-)injected or uninjected;
/// `None` when it is not a workload at all (a Service, a ConfigMap), left as it is.
pub fn inject_object(
    object: &mut Value,
    namespace: Option<&str>,
    opts: &InjectOptions,
) -> Result<Option<Outcome>, InjectError> {
    let namespaces = Namespaces::collect(&opts.namespaces, &[])?;
    inject_in(object, namespace, &namespaces, opts)
}

/// Calls `on_object` for `doc`, or for each item of `doc` when it is a list (recursively).
fn visit<F>(
    doc: &mut Value,
    outcomes: &mut Vec<Outcome>,
    on_object: &mut F,
) -> Result<(), InjectError>
where
    F: FnMut(&mut Value) -> Result<Option<Outcome>, InjectError>,
{
    if let Some(items) = list_items_mut(doc) {
        for item in items {
            visit(item, outcomes, on_object)?;
        }
        return Ok(());
    }
    outcomes.extend(on_object(doc)?);
    Ok(())
}

fn inject_in(
    doc: &mut Value,
    namespace: Option<&str>,
    namespaces: &Namespaces,
    opts: &InjectOptions,
) -> Result<Option<Outcome>, InjectError> {
    let namespace = namespace_or(doc, namespace.unwrap_or(DEFAULT_NAMESPACE)).to_owned();
    let object = describe_in(doc, &namespace);
    let Some(path) = pod_template_path(doc) else {
        if is_workload_namesake(doc) {
            let api = api_version(doc).unwrap_or("no apiVersion");
            return Ok(Some(Outcome {
                object,
                action: Action::Skipped(format!(
                    "{api} is not a Kubernetes workload API, so it runs no pod to mesh"
                )),
            }));
        }
        return Ok(None);
    };
    let namespace_annotations = namespaces.get(&namespace);
    let template = pod_template_mut(doc, path, &object)?;
    let action = decide(template, &namespace_annotations, opts, &object)?;
    Ok(Some(Outcome { object, action }))
}

/// Meshes, re-meshes, un-meshes or leaves the pod template, and says which.
fn decide(
    template: &mut Map<String, Value>,
    namespace_annotations: &Annotations,
    opts: &InjectOptions,
    object: &str,
) -> Result<Action, InjectError> {
    let injected = is_injected(template);
    let mode = own_inject_mode(template, object)?.or(namespace_annotations.inject_mode());
    let host_network = template
        .get("spec")
        .and_then(|spec| spec.get("hostNetwork"))
        .and_then(Value::as_bool)
        == Some(true);
    match mode {
        Some(InjectMode::Enabled) if host_network => Ok(Action::Skipped(
            "hostNetwork: the sidecar's iptables rules would take over the node's own traffic"
                .to_owned(),
        )),
        Some(InjectMode::Enabled) => {
            let pod_annotations = Annotations::from_metadata(template.get("metadata"), object)?;
            let effective = namespace_annotations
                .clone()
                .overridden_by(&pod_annotations);
            let mut fresh = template.clone();
            strip_injection(&mut fresh);
            add_sidecar(&mut fresh, &effective, opts, object)?;
            if !injected {
                *template = fresh;
                Ok(Action::Injected)
            } else if fresh == *template {
                // Equal as values: keep the original, so the output is byte for byte the same.
                Ok(Action::Unchanged)
            } else {
                *template = fresh;
                Ok(Action::Updated)
            }
        }
        Some(InjectMode::Disabled) if injected => {
            strip_injection(template);
            Ok(Action::Uninjected("weft.io/inject: disabled".to_owned()))
        }
        None if injected => Ok(Action::Skipped(
            "already injected, and neither it nor its namespace says weft.io/inject in this \
             input, so its injection is kept as it is"
                .to_owned(),
        )),
        Some(InjectMode::Disabled) => Ok(Action::Skipped("weft.io/inject: disabled".to_owned())),
        None => Ok(Action::Skipped(
            "not meshed (no weft.io/inject: enabled on it or its namespace)".to_owned(),
        )),
    }
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
    if !spec.get("containers").is_some_and(Value::is_array) {
        return Err(malformed(
            object,
            "spec.containers of the pod is missing or not a list",
        ));
    }
    if opts.identity_addr.is_some() {
        add_identity(spec, &mut proxy, object)?;
    }
    if let Some(probes) = rewrite_probes(spec, object)?
        && let Some(env) = proxy.get_mut("env").and_then(Value::as_array_mut)
    {
        env.push(serde_json::json!({"name": APP_PROBES_ENV, "value": probes}));
    }
    let shape = shape(annotations, object)?;
    shape_proxy(&mut proxy, shape);
    // Init containers run in order; the rules must be in place before any other starts.
    let init_containers = list_mut(spec, "initContainers", object)?;
    init_containers.insert(0, init);
    if shape == Shape::Native {
        // Right after the rules, before the pod's own init containers: they may call out too.
        init_containers.insert(1, proxy);
    } else {
        // First in the list, so the kubelet starts the proxy (and waits for its postStart hook)
        // before the app.
        if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            containers.insert(0, proxy);
        }
    }

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
