//! The app containers' own probes, pointed at the proxy. Under a strict inbound policy the app's
//! ports take only mTLS, so the kubelet's plaintext HTTP, TCP and gRPC probes would be refused.
//! Each such probe becomes an HTTP GET of `/app-health/<container>/<kind>` on the admin port
//! (never redirected), which the proxy answers by running the original probe against the app
//! from inside the pod. The originals go to the proxy in `WEFT_APP_PROBES`, a JSON object keyed
//! `<container>/<kind>` in sorted order; each value is the probe exactly as written except that a
//! named port is resolved to its number (the proxy needs numbers), the name kept in `portName`
//! next to it. That value is also all uninjection needs to put the originals back. `exec` probes
//! run inside the container and are left alone.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use weft_settings::ADMIN_PORT;

use crate::InjectError;

/// The proxy's environment variable holding the original probes.
pub const APP_PROBES_ENV: &str = "WEFT_APP_PROBES";

/// Probe fields of a container and the name the proxy knows each kind by.
const KINDS: [(&str, &str); 3] = [
    ("livenessProbe", "liveness"),
    ("readinessProbe", "readiness"),
    ("startupProbe", "startup"),
];

/// Handlers the proxy can run for the kubelet.
const HANDLERS: [&str; 3] = ["httpGet", "tcpSocket", "grpc"];

/// Where the rewritten probe of `container`'s `kind` points.
fn health_path(container: &str, kind: &str) -> String {
    format!("/app-health/{container}/{kind}")
}

/// Rewrites the HTTP, TCP and gRPC probes of `spec.containers` (the app containers; the proxy is
/// not among them yet) and returns the `WEFT_APP_PROBES` value, or None when there was none.
pub fn rewrite(spec: &mut Map<String, Value>, object: &str) -> Result<Option<String>, InjectError> {
    let mut originals: BTreeMap<String, Value> = BTreeMap::new();
    let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    for container in containers.iter_mut() {
        let Some(fields) = container.as_object_mut() else {
            continue;
        };
        let name = fields
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let ports = fields.get("ports").cloned();
        for (field, kind) in KINDS {
            let Some(probe) = fields.get_mut(field) else {
                continue;
            };
            let Some(handler) = handler_of(probe) else {
                continue;
            };
            let mut original = probe.clone();
            resolve_port(&mut original, handler, ports.as_ref()).map_err(|port| {
                InjectError::Malformed {
                    object: object.to_owned(),
                    problem: format!(
                        "container {name}: {field}.{handler}.port {port} is not the name of one of \
                         the container's ports, so the proxy cannot run the probe for the kubelet"
                    ),
                }
            })?;
            *probe = pointed_at_proxy(probe, handler, &health_path(&name, kind));
            originals.insert(format!("{name}/{kind}"), original);
        }
    }
    if originals.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&originals)
        .map(Some)
        .map_err(|e| InjectError::Serialize {
            reason: format!("{APP_PROBES_ENV}: {e}"),
        })
}

/// Puts back the probes `app_probes` (a `WEFT_APP_PROBES` value) holds, where the container still
/// has the rewritten one.
pub fn restore(spec: &mut Map<String, Value>, app_probes: &str) {
    let Ok(Value::Object(originals)) = serde_json::from_str::<Value>(app_probes) else {
        return;
    };
    let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) else {
        return;
    };
    for container in containers.iter_mut() {
        let Some(fields) = container.as_object_mut() else {
            continue;
        };
        let name = fields
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for (field, kind) in KINDS {
            let Some(original) = originals.get(&format!("{name}/{kind}")) else {
                continue;
            };
            let Some(probe) = fields.get_mut(field) else {
                continue;
            };
            if points_at(probe, &health_path(&name, kind)) {
                *probe = unresolved(original);
            }
        }
    }
}

/// The handler the proxy can run, when the probe has exactly one and it is not already a probe
/// of the proxy's `/app-health`.
fn handler_of(probe: &Value) -> Option<&'static str> {
    let fields = probe.as_object()?;
    let mut present = HANDLERS.iter().filter(|h| fields.contains_key(**h));
    let handler = present.next()?;
    if present.next().is_some() || fields.contains_key("exec") {
        return None;
    }
    let already = fields.get("httpGet").is_some_and(|get| {
        is_admin_port(get.get("port")) && path_of(get).starts_with("/app-health/")
    });
    (!already).then_some(*handler)
}

fn is_admin_port(port: Option<&Value>) -> bool {
    port.and_then(Value::as_u64) == Some(u64::from(ADMIN_PORT))
}

fn path_of(get: &Value) -> &str {
    get.get("path").and_then(Value::as_str).unwrap_or_default()
}

fn points_at(probe: &Value, path: &str) -> bool {
    probe
        .get("httpGet")
        .is_some_and(|get| is_admin_port(get.get("port")) && path_of(get) == path)
}

/// A named port of the handler becomes its number, the name kept in `portName`; `Err` is the
/// port as written when the container has no such port.
fn resolve_port(probe: &mut Value, handler: &str, ports: Option<&Value>) -> Result<(), String> {
    let Some(action) = probe.get_mut(handler).and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let Some(Value::String(name)) = action.get("port").cloned() else {
        return Ok(());
    };
    let number = match name.parse::<u16>() {
        Ok(number) => Some(number),
        Err(_) => ports
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))
            .and_then(|p| p.get("containerPort"))
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
    };
    let number = number.ok_or_else(|| format!("{name:?}"))?;
    action.insert("port".to_owned(), json!(number));
    action.insert("portName".to_owned(), Value::String(name));
    Ok(())
}

/// The original probe as the user wrote it: `portName` back in `port`.
fn unresolved(original: &Value) -> Value {
    let mut probe = original.clone();
    if let Some(fields) = probe.as_object_mut() {
        for handler in HANDLERS {
            if let Some(action) = fields.get_mut(handler).and_then(Value::as_object_mut)
                && let Some(name) = action.shift_remove("portName")
            {
                action.insert("port".to_owned(), name);
            }
        }
    }
    probe
}

/// The probe with its handler replaced by a GET of the proxy's `/app-health` path, in the
/// handler's place; timings and thresholds stay.
fn pointed_at_proxy(probe: &Value, handler: &str, path: &str) -> Value {
    let mut rewritten = Map::new();
    if let Some(fields) = probe.as_object() {
        for (key, value) in fields {
            if key == handler {
                rewritten.insert(
                    "httpGet".to_owned(),
                    json!({"path": path, "port": ADMIN_PORT}),
                );
            } else {
                rewritten.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(containers: Value) -> Map<String, Value> {
        json!({ "containers": containers })
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn http_tcp_and_grpc_probes_point_at_the_proxy_exec_stays() {
        let original = spec(json!([{
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http",
                                           "httpHeaders": [{"name": "X", "value": "y"}]},
                               "periodSeconds": 3, "timeoutSeconds": 2},
            "livenessProbe": {"initialDelaySeconds": 5, "tcpSocket": {"port": 8080}},
            "startupProbe": {"grpc": {"port": 9090}, "failureThreshold": 30},
        }, {
            "name": "worker",
            "readinessProbe": {"exec": {"command": ["true"]}},
        }]));
        let mut s = original.clone();
        let probes = rewrite(&mut s, "Pod default/p").unwrap().unwrap();
        assert_eq!(
            s["containers"][0]["readinessProbe"],
            json!({"httpGet": {"path": "/app-health/app/readiness", "port": 4191},
                   "periodSeconds": 3, "timeoutSeconds": 2})
        );
        assert_eq!(
            s["containers"][0]["livenessProbe"],
            json!({"initialDelaySeconds": 5,
                   "httpGet": {"path": "/app-health/app/liveness", "port": 4191}})
        );
        assert_eq!(
            s["containers"][0]["startupProbe"],
            json!({"httpGet": {"path": "/app-health/app/startup", "port": 4191},
                   "failureThreshold": 30})
        );
        assert_eq!(s["containers"][1], original["containers"][1]);
        // Sorted keys, ports as numbers, timeouts kept.
        assert_eq!(
            probes,
            r#"{"app/liveness":{"initialDelaySeconds":5,"tcpSocket":{"port":8080}},"app/readiness":{"httpGet":{"path":"/healthz","port":8080,"httpHeaders":[{"name":"X","value":"y"}],"portName":"http"},"periodSeconds":3,"timeoutSeconds":2},"app/startup":{"grpc":{"port":9090},"failureThreshold":30}}"#
        );

        // Rewriting again changes nothing; restoring gives the pod back exactly.
        let mut again = s.clone();
        assert_eq!(rewrite(&mut again, "Pod default/p").unwrap(), None);
        assert_eq!(again, s);
        restore(&mut s, &probes);
        assert_eq!(s, original);
    }

    #[test]
    fn a_named_port_the_container_lacks_is_an_error_naming_it() {
        let mut s = spec(json!([{
            "name": "app",
            "ports": [{"name": "web", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/", "port": "http"}},
        }]));
        let err = rewrite(&mut s, "Deployment shop/web")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Deployment shop/web: container app:"),
            "{err}"
        );
        assert!(err.contains("livenessProbe.httpGet.port \"http\""), "{err}");
    }

    #[test]
    fn pods_without_such_probes_get_no_env() {
        let mut s = spec(json!([{"name": "app", "readinessProbe": {"exec": {"command": ["x"]}}}]));
        assert_eq!(rewrite(&mut s, "Pod default/p").unwrap(), None);
        let mut s = spec(json!([{"name": "app"}]));
        assert_eq!(rewrite(&mut s, "Pod default/p").unwrap(), None);
    }
}
