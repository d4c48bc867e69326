//! Which objects carry a pod, where its template lives, and how to name an object in messages.

use serde_json::Value;

use crate::InjectError;

/// The kinds that run pods, with the path from the object to its pod template (metadata + spec).
const POD_TEMPLATE_PATHS: &[(&str, &[&str])] = &[
    ("Pod", &[]),
    ("Deployment", &["spec", "template"]),
    ("StatefulSet", &["spec", "template"]),
    ("DaemonSet", &["spec", "template"]),
    ("ReplicaSet", &["spec", "template"]),
    ("Job", &["spec", "template"]),
    ("CronJob", &["spec", "jobTemplate", "spec", "template"]),
];

/// The namespace Kubernetes assumes when an object names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The object's kind, if it is a mapping with a string `kind`.
pub fn kind(doc: &Value) -> Option<&str> {
    doc.get("kind").and_then(Value::as_str)
}

/// The path to the pod template when `doc` is a kind that runs pods.
pub fn pod_template_path(doc: &Value) -> Option<&'static [&'static str]> {
    let kind = kind(doc)?;
    POD_TEMPLATE_PATHS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, path)| *path)
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
    doc.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// "Deployment default/web": how every error names the object it is about.
pub fn describe(doc: &Value) -> String {
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
        format!("{kind} {}/{name}", namespace(doc))
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
    fn template_paths_per_kind() {
        let path = |kind: &str| pod_template_path(&json!({"kind": kind}));
        assert_eq!(path("Pod"), Some(&[][..]));
        for kind in [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
        ] {
            assert_eq!(path(kind), Some(&["spec", "template"][..]), "{kind}");
        }
        assert_eq!(
            path("CronJob"),
            Some(&["spec", "jobTemplate", "spec", "template"][..])
        );
        assert_eq!(path("Service"), None);
        assert_eq!(pod_template_path(&json!("just a string")), None);
        assert_eq!(pod_template_path(&json!({"kind": 3})), None);
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
