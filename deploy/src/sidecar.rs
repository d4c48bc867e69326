//! The two containers the injector adds: `weft-init` (programs iptables) and `weft-proxy`.
//! Their exact shape is a contract with the testbed, which runs them as processes.

use serde_json::{Map, Value, json};
use weft_settings::{
    ADMIN_PORT, INBOUND_PORT, Kind, OUTBOUND_PORT, PROXY_UID, SETTINGS, Setting, SettingError,
    Target, parse_bool, parse_cidrs, parse_ports,
};

use crate::InjectError;
use crate::annotations::Annotations;

/// Name of the proxy container; its presence marks a pod as already injected.
pub const PROXY_CONTAINER: &str = "weft-proxy";
/// Name of the init container that installs the iptables rules.
pub const INIT_CONTAINER: &str = "weft-init";

/// The image for both containers: `weft.io/proxy-image` if set, else the injector's default.
pub fn image(annotations: &Annotations, default_image: &str) -> String {
    SETTINGS
        .iter()
        .find(|s| s.target == Target::ProxyImage)
        .and_then(|s| annotations.get(s))
        .map_or_else(|| default_image.to_owned(), |v| v.trim().to_owned())
}

/// Where the proxy runs in the pod, from `weft.io/native-sidecar`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An init container with `restartPolicy: Always` right after `weft-init` (Kubernetes
    /// 1.29+): the kubelet starts the app containers once its startupProbe (`/ready`) passes and
    /// stops it only after they have all exited, so Jobs complete.
    Native,
    /// The first of the pod's containers, with a `postStart` hook (`weft-proxy wait-ready`) that
    /// holds the app containers back until the proxy is ready.
    Classic,
}

/// The shape `weft.io/native-sidecar` asks for (native when absent).
pub fn shape(annotations: &Annotations, object: &str) -> Result<Shape, InjectError> {
    let Some(setting) = SETTINGS.iter().find(|s| s.target == Target::NativeSidecar) else {
        return Ok(Shape::Native);
    };
    let Some(value) = annotations.get(setting) else {
        return Ok(Shape::Native);
    };
    match parse_bool(value) {
        Ok(true) => Ok(Shape::Native),
        Ok(false) => Ok(Shape::Classic),
        Err(source) => Err(InjectError::BadValue {
            object: object.to_owned(),
            annotation: setting.annotation_key(),
            value: value.to_owned(),
            problem: Box::new(source),
        }),
    }
}

/// Turns the proxy container into the given shape.
pub fn shape_proxy(proxy: &mut Value, shape: Shape) {
    let Some(fields) = proxy.as_object_mut() else {
        return;
    };
    match shape {
        Shape::Native => {
            fields.insert("restartPolicy".to_owned(), json!("Always"));
            // Up to two minutes to become ready (certificate, discovery) before the kubelet gives up.
            fields.insert(
                "startupProbe".to_owned(),
                json!({"httpGet": {"path": "/ready", "port": ADMIN_PORT},
                       "periodSeconds": 1, "failureThreshold": 120}),
            );
            // The kubelet stops a native sidecar only once the app containers have exited: there
            // are no more outbound calls to wait for.
            if let Some(env) = fields.get_mut("env").and_then(Value::as_array_mut) {
                env.push(json!({"name": "WEFT_SHUTDOWN_QUIET_PERIOD", "value": "0s"}));
            }
        }
        Shape::Classic => {
            fields.insert(
                "lifecycle".to_owned(),
                json!({"postStart": {"exec": {"command": ["weft-proxy", "wait-ready"]}}}),
            );
        }
    }
}

/// The init container running `weft-proxy init` as root with only the capabilities iptables needs.
pub fn init_container(
    annotations: &Annotations,
    image: &str,
    object: &str,
) -> Result<Value, InjectError> {
    let mut args: Vec<String> = vec![
        "init".into(),
        "--proxy-uid".into(),
        PROXY_UID.to_string(),
        "--inbound-port".into(),
        INBOUND_PORT.to_string(),
        "--outbound-port".into(),
        OUTBOUND_PORT.to_string(),
    ];
    for setting in SETTINGS {
        let Target::InitArg(flag) = setting.target else {
            continue;
        };
        let value = annotations.get(setting).unwrap_or_default();
        let canonical =
            canonical_init_value(setting, value).map_err(|source| InjectError::BadValue {
                object: object.to_owned(),
                annotation: setting.annotation_key(),
                value: value.to_owned(),
                problem: Box::new(source),
            })?;
        // The admin port must stay reachable for probes whatever the user skipped or not.
        let canonical = if flag == "--skip-inbound-ports" {
            with_admin_port(&canonical)
        } else {
            canonical
        };
        if !canonical.is_empty() {
            args.push(flag.to_owned());
            args.push(canonical);
        }
    }
    Ok(json!({
        "name": INIT_CONTAINER,
        "image": image,
        "command": ["weft-proxy"],
        "args": args,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }))
}

/// Port and CIDR lists in the form `weft-proxy init` prints back, so equal settings give equal pods.
fn canonical_init_value(setting: &Setting, value: &str) -> Result<String, SettingError> {
    Ok(match setting.kind {
        Kind::PortList => parse_ports(value)?.to_string(),
        Kind::CidrList => parse_cidrs(value)?
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        _ => value.trim().to_owned(),
    })
}

fn with_admin_port(ports: &str) -> String {
    match parse_ports(ports) {
        Ok(mut set) => {
            set.insert(ADMIN_PORT);
            set.to_string()
        }
        // `ports` came from PortSet's own Display, which always parses; keep the admin port regardless.
        Err(_) => ADMIN_PORT.to_string(),
    }
}

/// The proxy container, running as `PROXY_UID` with nothing but its own settings.
pub fn proxy_container(annotations: &Annotations, image: &str) -> Value {
    let env: Vec<Value> = SETTINGS
        .iter()
        .filter_map(|setting| match setting.target {
            Target::ProxyEnv(name) => annotations
                .get(setting)
                .map(|value| json!({"name": name, "value": value})),
            _ => None,
        })
        .collect();
    let mut container = json!({
        "name": PROXY_CONTAINER,
        "image": image,
        "command": ["weft-proxy"],
        "env": env,
        "ports": [
            {"name": "weft-inbound", "containerPort": INBOUND_PORT},
            {"name": "weft-admin", "containerPort": ADMIN_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ADMIN_PORT}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/live", "port": ADMIN_PORT}},
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    let resources = resources(annotations);
    if !resources.is_empty()
        && let Some(fields) = container.as_object_mut()
    {
        fields.insert("resources".to_owned(), Value::Object(resources));
    }
    container
}

fn resources(annotations: &Annotations) -> Map<String, Value> {
    let mut resources = Map::new();
    for setting in SETTINGS {
        let Target::ProxyResource { bound, resource } = setting.target else {
            continue;
        };
        let Some(value) = annotations.get(setting) else {
            continue;
        };
        let bound = resources
            .entry(bound.field())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(bound) = bound.as_object_mut() {
            // Quantities stay strings: "1" as a YAML integer would still work, "1e3" might not.
            bound.insert(resource.to_owned(), Value::String(value.trim().to_owned()));
        }
    }
    resources
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> Annotations {
        let map = pairs
            .iter()
            .map(|(k, v)| (format!("weft.io/{k}"), (*v).to_owned()))
            .collect();
        Annotations::from_pairs(&map, "Pod default/p").unwrap()
    }

    #[test]
    fn init_container_defaults() {
        let c = init_container(&Annotations::default(), "img:1", "Pod default/p").unwrap();
        assert_eq!(
            c,
            json!({
                "name": "weft-init",
                "image": "img:1",
                "command": ["weft-proxy"],
                "args": ["init", "--proxy-uid", "2102", "--inbound-port", "4143",
                         "--outbound-port", "4140", "--skip-inbound-ports", "4191"],
                "securityContext": {
                    "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
                    "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                },
            })
        );
    }

    #[test]
    fn init_container_skips() {
        let a = annotations(&[
            ("skip-inbound-ports", "9090, 8000-8010"),
            ("skip-outbound-ports", "5432,443"),
            ("skip-outbound-cidrs", "169.254.169.254, fd00::/8"),
        ]);
        let c = init_container(&a, "img", "Pod default/p").unwrap();
        assert_eq!(
            c["args"],
            json!([
                "init",
                "--proxy-uid",
                "2102",
                "--inbound-port",
                "4143",
                "--outbound-port",
                "4140",
                "--skip-inbound-ports",
                "4191,8000-8010,9090",
                "--skip-outbound-ports",
                "443,5432",
                "--skip-outbound-cidrs",
                "169.254.169.254/32,fd00::/8"
            ])
        );
    }

    #[test]
    fn empty_skip_lists_add_no_flag() {
        let a = annotations(&[("skip-outbound-ports", ""), ("skip-outbound-cidrs", " ")]);
        let c = init_container(&a, "img", "Pod default/p").unwrap();
        let args = c["args"].as_array().unwrap();
        assert!(!args.contains(&json!("--skip-outbound-ports")));
        assert!(!args.contains(&json!("--skip-outbound-cidrs")));
    }

    #[test]
    fn proxy_container_defaults() {
        let c = proxy_container(&Annotations::default(), "img:1");
        assert_eq!(
            c,
            json!({
                "name": "weft-proxy",
                "image": "img:1",
                "command": ["weft-proxy"],
                "env": [],
                "ports": [{"name": "weft-inbound", "containerPort": 4143},
                          {"name": "weft-admin", "containerPort": 4191}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 4191}, "periodSeconds": 2},
                "livenessProbe": {"httpGet": {"path": "/live", "port": 4191}},
                "securityContext": {
                    "runAsUser": 2102, "runAsGroup": 2102, "runAsNonRoot": true,
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            })
        );
    }

    #[test]
    fn proxy_env_verbatim_in_table_order() {
        let a = annotations(&[
            ("proxy-log-level", "warn,weft=debug"),
            ("opaque-ports", "8080"),
            ("detect-timeout", "500ms"),
            ("proxy-worker-threads", "2"),
            ("skip-outbound-ports", "443"),
        ]);
        let c = proxy_container(&a, "img");
        assert_eq!(
            c["env"],
            json!([
                {"name": "WEFT_OPAQUE_PORTS", "value": "8080"},
                {"name": "WEFT_DETECT_TIMEOUT", "value": "500ms"},
                {"name": "WEFT_LOG", "value": "warn,weft=debug"},
                {"name": "WEFT_WORKER_THREADS", "value": "2"},
            ])
        );
    }

    #[test]
    fn proxy_resources_from_annotations() {
        let a = annotations(&[
            ("proxy-cpu-limit", "500m"),
            ("proxy-memory-limit", "128Mi"),
            ("proxy-memory-request", "1"),
        ]);
        let c = proxy_container(&a, "img");
        assert_eq!(
            c["resources"],
            json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"memory": "1"}})
        );
        assert!(
            proxy_container(&Annotations::default(), "img")
                .get("resources")
                .is_none()
        );
    }

    #[test]
    fn image_from_annotation_or_default() {
        assert_eq!(image(&Annotations::default(), "default:1"), "default:1");
        let a = annotations(&[("proxy-image", "localhost:5000/weft-proxy:dev")]);
        assert_eq!(image(&a, "default:1"), "localhost:5000/weft-proxy:dev");
    }
}
