//! Which objects carry a pod, where its template lives, and how to name an object in messages.

use serde_json::Value;

use crate::InjectError;

/// The APIs that run pods, by apiVersion and kind, with the path from the object to its pod
/// template (metadata + spec). A custom resource that happens to share a kind's name (a `Job` of
/// another group) is not one of them.
const WORKLOADS: &[(&str, &str, &[&str])] = &[
    ("v1", "Pod", &[]),
    ("apps/v1", "Deployment", &["spec", "template"]),
    ("apps/v1", "StatefulSet", &["spec", "template"]),
    ("apps/v1", "DaemonSet", &["spec", "template"]),
    ("apps/v1", "ReplicaSet", &["spec", "template"]),
    ("batch/v1", "Job", &["spec", "template"]),
    (
        "batch/v1",
        "CronJob",
        &["spec", "jobTemplate", "spec", "template"],
    ),
];

/// The namespace Kubernetes assumes when an object names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The object's kind, if it is a mapping with a string `kind`.
pub fn kind(doc: &Value) -> Option<&str> {
    doc.get("kind").and_then(Value::as_str)
}

/// The object's apiVersion, if it is a mapping with a string `apiVersion`.
pub fn api_version(doc: &Value) -> Option<&str> {
    doc.get("apiVersion").and_then(Value::as_str)
}

/// The path to the pod template when `doc` is a Kubernetes API object that runs pods. An object
/// with no apiVersion at all (hand-written snippets, the testbed's manifests) is taken to be of
/// its kind's Kubernetes API; one naming another apiVersion is not a workload.
pub fn pod_template_path(doc: &Value) -> Option<&'static [&'static str]> {
    let kind = kind(doc)?;
    let api_version = match doc.get("apiVersion") {
        None | Some(Value::Null) => None,
        Some(other) => Some(other.as_str()?),
    };
    WORKLOADS
        .iter()
        .find(|(a, k, _)| *k == kind && api_version.is_none_or(|api| api == *a))
        .map(|(_, _, path)| *path)
}

/// True when `doc` is named like a workload kind but belongs to another API (a custom
/// resource called `Job`, or a removed version such as `batch/v1beta1` CronJob).
pub fn is_workload_namesake(doc: &Value) -> bool {
    kind(doc).is_some_and(|kind| WORKLOADS.iter().any(|(_, k, _)| *k == kind))
        && pod_template_path(doc).is_none()
}

/// The items of a list document: `kind: List` (what `kubectl get -o yaml` prints) or a typed
/// list such as `PodList`, whose `items` each carry their own apiVersion and kind.
pub fn list_items_mut(doc: &mut Value) -> Option<&mut Vec<Value>> {
    if !kind(doc).is_some_and(|kind| kind.ends_with("List")) {
        return None;
    }
    doc.get_mut("items").and_then(Value::as_array_mut)
}

/// Every object of the documents, the items of list documents included (recursively).
pub fn objects(docs: &[Value]) -> Vec<&Value> {
    let mut out = Vec::new();
    for doc in docs {
        let items = kind(doc)
            .filter(|kind| kind.ends_with("List"))
            .and_then(|_| doc.get("items"))
            .and_then(Value::as_array);
        match items {
            Some(items) => out.extend(objects(items)),
            None => out.push(doc),
        }
    }
    out
}

/// The pod template at `path`, which must be a mapping.
pub fn pod_template_mut<'a>(
    doc: &'a mut Value,
    path: &[&str],
    object: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, InjectError> {
    let mut node = doc;
    for key in path {
        node = node.get_mut(*key).ok_or_else(|| InjectError::Malformed {
            object: object.to_owned(),
            problem: format!("has no {} (the pod template)", path.join(".")),
        })?;
    }
    node.as_object_mut().ok_or_else(|| InjectError::Malformed {
        object: object.to_owned(),
        problem: format!("{} (the pod template) is not a mapping", display_path(path)),
    })
}

/// The object's namespace, "default" when it names none.
pub fn namespace(doc: &Value) -> &str {
    namespace_or(doc, DEFAULT_NAMESPACE)
}

/// The object's namespace, `fallback` when it names none (an admission request's namespace).
pub fn namespace_or<'a>(doc: &'a Value, fallback: &'a str) -> &'a str {
    doc.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(fallback)
}

/// "Deployment default/web": how every error names the object it is about.
pub fn describe(doc: &Value) -> String {
    describe_in(doc, namespace(doc))
}

/// Like [`describe`], with the namespace already known.
pub fn describe_in(doc: &Value, namespace: &str) -> String {
    let kind = kind(doc).unwrap_or("object");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .or_else(|| {
            doc.pointer("/metadata/generateName")
                .and_then(Value::as_str)
        })
        .unwrap_or("<unnamed>");
    if kind == "Namespace" {
        format!("Namespace {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

fn display_path(path: &[&str]) -> String {
    if path.is_empty() {
        "the object".to_owned()
    } else {
        path.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_paths_per_api_version_and_kind() {
        let path =
            |api: &str, kind: &str| pod_template_path(&json!({"apiVersion": api, "kind": kind}));
        assert_eq!(path("v1", "Pod"), Some(&[][..]));
        for kind in ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"] {
            assert_eq!(
                path("apps/v1", kind),
                Some(&["spec", "template"][..]),
                "{kind}"
            );
        }
        assert_eq!(path("batch/v1", "Job"), Some(&["spec", "template"][..]));
        assert_eq!(
            path("batch/v1", "CronJob"),
            Some(&["spec", "jobTemplate", "spec", "template"][..])
        );
        assert_eq!(path("v1", "Service"), None);
        // Same kind, another API: not a workload this injector knows.
        assert_eq!(path("example.com/v1", "Job"), None);
        assert_eq!(path("batch/v1beta1", "CronJob"), None);
        assert_eq!(path("apps/v1", "Job"), None);
        assert_eq!(pod_template_path(&json!({"kind": "Pod"})), Some(&[][..]));
        assert_eq!(
            pod_template_path(&json!({"kind": "Job", "apiVersion": 1})),
            None
        );
        assert_eq!(pod_template_path(&json!("just a string")), None);
        assert_eq!(pod_template_path(&json!({"kind": 3})), None);
    }

    #[test]
    fn namesakes_are_workload_kinds_of_other_apis() {
        assert!(is_workload_namesake(
            &json!({"apiVersion": "example.com/v1", "kind": "Job"})
        ));
        assert!(!is_workload_namesake(
            &json!({"apiVersion": "batch/v1", "kind": "Job"})
        ));
        assert!(!is_workload_namesake(
            &json!({"apiVersion": "v1", "kind": "Service"})
        ));
    }

    #[test]
    fn objects_flattens_lists() {
        let docs = vec![
            json!({"kind": "List", "items": [
                {"kind": "Pod"},
                {"kind": "List", "items": [{"kind": "Service"}]},
            ]}),
            json!({"kind": "ConfigMap"}),
            json!({"kind": "PodList", "items": [{"kind": "Pod", "metadata": {"name": "p"}}]}),
        ];
        let kinds: Vec<_> = objects(&docs).into_iter().filter_map(kind).collect();
        assert_eq!(kinds, ["Pod", "Service", "ConfigMap", "Pod"]);
        let mut list = docs[0].clone();
        assert_eq!(list_items_mut(&mut list).map(|items| items.len()), Some(2));
        assert!(list_items_mut(&mut docs[1].clone()).is_none());
    }

    #[test]
    fn describes_objects() {
        assert_eq!(
            describe(
                &json!({"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}})
            ),
            "Deployment shop/web"
        );
        assert_eq!(
            describe(&json!({"kind": "Pod", "metadata": {"name": "p"}})),
            "Pod default/p"
        );
        assert_eq!(
            describe(&json!({"kind": "Pod", "metadata": {"generateName": "p-"}})),
            "Pod default/p-"
        );
        assert_eq!(
            describe(&json!({"kind": "Namespace", "metadata": {"name": "shop"}})),
            "Namespace shop"
        );
        assert_eq!(describe(&json!({"kind": "Job"})), "Job default/<unnamed>");
    }

    #[test]
    fn missing_template_is_an_error_naming_the_object() {
        let mut doc = json!({"kind": "Deployment", "metadata": {"name": "web"}, "spec": {}});
        let e = pod_template_mut(&mut doc, &["spec", "template"], "Deployment default/web")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Deployment default/web: has no spec.template (the pod template)"
        );
        let mut doc = json!({"spec": {"template": []}});
        let e = pod_template_mut(&mut doc, &["spec", "template"], "Job default/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Job default/x: spec.template (the pod template) is not a mapping"
        );
    }
}
