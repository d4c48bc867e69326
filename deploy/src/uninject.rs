//! Taking an injection out of a pod template: exactly what `add_sidecar` put in (the `weft-init`
//! init container, the `weft-proxy` container, the identity volumes and `weft.io/injected`), so
//! that uninjecting an injected pod gives back the pod as it was. Lists and mappings the
//! injection created and that are empty again are removed, as Kubernetes treats an empty
//! `initContainers`, `volumes` or `annotations` like an absent one.

use serde_json::{Map, Value};
use weft_settings::{ANNOTATION_PREFIX, INJECTED_ANNOTATION};

use crate::app_probes::{APP_PROBES_ENV, restore as restore_probes};
use crate::sidecar::{INIT_CONTAINER, PROXY_CONTAINER};
use crate::workload_identity::{ANCHORS_VOLUME, TOKEN_VOLUME};

/// True when the pod template carries an injection (its proxy, its init container or the
/// `weft.io/injected` marker).
pub fn is_injected(template: &Map<String, Value>) -> bool {
    let spec = template.get("spec");
    let init_containers = spec.and_then(|s| s.get("initContainers"));
    has_named(spec.and_then(|s| s.get("containers")), PROXY_CONTAINER)
        || has_named(init_containers, INIT_CONTAINER)
        // A proxy run as a native sidecar (an init container with restartPolicy: Always).
        || has_named(init_containers, PROXY_CONTAINER)
        || template
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(injected_key()))
            .is_some()
}

/// Removes the injection from the pod template; false when there was none.
pub fn strip_injection(template: &mut Map<String, Value>) -> bool {
    if !is_injected(template) {
        return false;
    }
    if let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(probes) = app_probes_of(spec) {
            restore_probes(spec, &probes);
        }
        remove_named(
            spec,
            "initContainers",
            &[INIT_CONTAINER, PROXY_CONTAINER],
            true,
        );
        remove_named(spec, "containers", &[PROXY_CONTAINER], false);
        remove_named(spec, "volumes", &[TOKEN_VOLUME, ANCHORS_VOLUME], true);
    }
    if let Some(metadata) = template.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.shift_remove(&injected_key());
            if annotations.is_empty() {
                metadata.shift_remove("annotations");
            }
        }
        if metadata.is_empty() {
            template.shift_remove("metadata");
        }
    }
    true
}

/// The proxy's `WEFT_APP_PROBES`, wherever the proxy runs.
fn app_probes_of(spec: &Map<String, Value>) -> Option<String> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|key| spec.get(*key).and_then(Value::as_array))
        .flatten()
        .filter(|c| item_name(c) == Some(PROXY_CONTAINER))
        .filter_map(|c| c.get("env").and_then(Value::as_array))
        .flatten()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(APP_PROBES_ENV))
        .and_then(|e| e.get("value").and_then(Value::as_str))
        .map(str::to_owned)
}

fn injected_key() -> String {
    format!("{ANNOTATION_PREFIX}{INJECTED_ANNOTATION}")
}

fn has_named(list: Option<&Value>, name: &str) -> bool {
    list.and_then(Value::as_array)
        .is_some_and(|items| items.iter().any(|item| item_name(item) == Some(name)))
}

fn item_name(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

/// Drops the items named `names` from `spec[key]`; the list itself goes too when it becomes
/// empty and `drop_empty` (a pod must keep its `containers`).
fn remove_named(spec: &mut Map<String, Value>, key: &str, names: &[&str], drop_empty: bool) {
    let Some(items) = spec.get_mut(key).and_then(Value::as_array_mut) else {
        return;
    };
    let before = items.len();
    items.retain(|item| !item_name(item).is_some_and(|name| names.contains(&name)));
    if drop_empty && items.is_empty() && before > 0 {
        spec.shift_remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn strips_what_injection_added_and_nothing_else() {
        let mut template = map(json!({
            "metadata": {"labels": {"app": "web"}, "annotations": {
                "weft.io/inject": "enabled", "weft.io/injected": "0.1.0"}},
            "spec": {
                "initContainers": [{"name": "weft-init"}, {"name": "migrate"}],
                "containers": [{"name": "weft-proxy"}, {"name": "app"}],
                "volumes": [{"name": "data"}, {"name": "weft-identity-token"},
                            {"name": "weft-trust-anchors"}],
            },
        }));
        assert!(strip_injection(&mut template));
        assert_eq!(
            Value::Object(template),
            json!({
                "metadata": {"labels": {"app": "web"}, "annotations": {"weft.io/inject": "enabled"}},
                "spec": {
                    "initContainers": [{"name": "migrate"}],
                    "containers": [{"name": "app"}],
                    "volumes": [{"name": "data"}],
                },
            })
        );
    }

    #[test]
    fn lists_and_mappings_left_empty_go() {
        let mut template = map(json!({
            "metadata": {"annotations": {"weft.io/injected": "0.1.0"}},
            "spec": {"initContainers": [{"name": "weft-init"}],
                     "containers": [{"name": "weft-proxy"}, {"name": "app"}]},
        }));
        assert!(strip_injection(&mut template));
        assert_eq!(
            Value::Object(template),
            json!({"spec": {"containers": [{"name": "app"}]}})
        );
    }

    #[test]
    fn a_proxy_run_as_a_native_sidecar_is_taken_out_too() {
        let mut template = map(json!({
            "spec": {"initContainers": [{"name": "weft-init"},
                                        {"name": "weft-proxy", "restartPolicy": "Always"}],
                     "containers": [{"name": "app"}]},
        }));
        assert!(is_injected(&template));
        assert!(strip_injection(&mut template));
        assert_eq!(
            Value::Object(template),
            json!({"spec": {"containers": [{"name": "app"}]}})
        );
    }

    #[test]
    fn a_pod_never_injected_is_left_alone() {
        let original = map(json!({
            "metadata": {},
            "spec": {"initContainers": [], "containers": [{"name": "app"}],
                     "volumes": [{"name": "weft-trust-anchors"}]},
        }));
        let mut template = original.clone();
        assert!(!is_injected(&template));
        assert!(!strip_injection(&mut template));
        assert_eq!(template, original);
    }
}
