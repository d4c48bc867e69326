//! The cluster directory: the testbed's Namespaces, Services and pods as the Kubernetes objects
//! weft-discovery's file source reads (Service, EndpointSlice, Pod) and weft-injector's
//! `--namespace-lookup file:` reads (Namespace), one YAML file per object. Each file is written
//! to a temporary name and renamed, so discovery never reads half a file; unchanged files are left
//! alone and files of objects that are gone are removed. A `revision` file, raised after each
//! rewrite, lets the testbed wait until discovery serves what it wrote (`/synced?revision=N`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{Value, json};

use crate::container::PodSpec;
use crate::error::TestbedError;
use crate::pod::PodInfo;
use crate::service::Service;

/// The zone every testbed endpoint is in (one machine, one zone).
pub const ZONE: &str = "zone-a";

/// A Service as the directory records it.
pub struct ServiceView<'a> {
    pub service: &'a Service,
    pub cluster_ip: Option<Ipv4Addr>,
}

/// A pod as the directory records it.
pub struct PodView<'a> {
    pub info: &'a PodInfo,
    pub spec: &'a PodSpec,
    pub annotations: &'a BTreeMap<String, String>,
    pub ready: bool,
}

/// File name -> object, for every Namespace, Service, EndpointSlice and Pod. `namespaces` are
/// the Namespace objects by name.
pub fn objects(
    namespaces: &BTreeMap<String, Value>,
    services: &[ServiceView<'_>],
    pods: &[PodView<'_>],
) -> BTreeMap<String, Value> {
    let mut files = BTreeMap::new();
    for (name, namespace) in namespaces {
        files.insert(format!("namespace-{name}.yaml"), namespace.clone());
    }
    for view in services {
        let s = view.service;
        files.insert(
            format!("service-{}-{}.yaml", s.namespace, s.name),
            service(view),
        );
        for (name, slice) in endpoint_slices(s, pods) {
            files.insert(format!("endpointslice-{}-{name}.yaml", s.namespace), slice);
        }
    }
    for pod in pods {
        files.insert(
            format!("pod-{}-{}.yaml", pod.info.namespace, pod.info.name),
            pod_object(pod),
        );
    }
    files
}

fn service(view: &ServiceView<'_>) -> Value {
    let s = view.service;
    let cluster_ip = match view.cluster_ip {
        Some(ip) => ip.to_string(),
        None => "None".to_string(),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": s.name, "namespace": s.namespace, "annotations": s.annotations},
        "spec": {
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "selector": s.selector,
            "ports": s.ports,
        },
    })
}

/// Pods whose ports resolve alike share a slice, as the EndpointSlice controller groups them;
/// slices are named `<service>-<hash of the port set>`.
fn endpoint_slices(service: &Service, pods: &[PodView<'_>]) -> Vec<(String, Value)> {
    let mut groups: BTreeMap<Vec<(String, u16)>, Vec<&PodView<'_>>> = BTreeMap::new();
    for pod in pods
        .iter()
        .filter(|p| service.selects(&p.info.namespace, &p.info.labels))
    {
        let ports: Vec<(String, u16)> = service
            .ports
            .iter()
            .filter_map(|port| {
                let target = service.target_port(port, pod.spec)?;
                Some((port.name.clone().unwrap_or_default(), target))
            })
            .collect();
        groups.entry(ports).or_default().push(pod);
    }
    groups
        .into_iter()
        .map(|(ports, members)| {
            let name = format!("{}-{}", service.name, port_set_hash(&ports));
            let endpoints: Vec<Value> = members
                .iter()
                .map(|pod| {
                    json!({
                        "addresses": [pod.info.ip.to_string()],
                        "conditions": {"ready": pod.ready, "serving": pod.ready, "terminating": false},
                        "zone": ZONE,
                        "targetRef": {"kind": "Pod", "name": pod.info.name, "namespace": pod.info.namespace},
                    })
                })
                .collect();
            let ports: Vec<Value> = ports
                .iter()
                .map(|(name, port)| json!({"name": name, "port": port, "protocol": "TCP"}))
                .collect();
            let slice = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": name,
                    "namespace": service.namespace,
                    "labels": {"kubernetes.io/service-name": service.name},
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            });
            (name, slice)
        })
        .collect()
}

/// FNV-1a of the port set, five hex digits: stable across runs.
fn port_set_hash(ports: &[(String, u16)]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for (name, port) in ports {
        for byte in name.bytes().chain(port.to_be_bytes()).chain([0]) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    format!("{:05x}", hash & 0xf_ffff)
}

fn pod_object(pod: &PodView<'_>) -> Value {
    let names = |containers: &[crate::container::ContainerSpec]| -> Vec<Value> {
        containers
            .iter()
            .map(|c| json!({"name": c.name, "image": c.image}))
            .collect()
    };
    let ready = if pod.ready { "True" } else { "False" };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.info.name,
            "namespace": pod.info.namespace,
            "labels": pod.info.labels,
            "annotations": pod.annotations,
        },
        "spec": {
            "serviceAccountName": pod.spec.service_account_name.as_deref().unwrap_or("default"),
            "initContainers": names(&pod.spec.init_containers),
            "containers": names(&pod.spec.containers),
        },
        "status": {
            "phase": "Running",
            "podIP": pod.info.ip.to_string(),
            "podIPs": [{"ip": pod.info.ip.to_string()}],
            "conditions": [{"type": "Ready", "status": ready}],
        },
    })
}

/// Brings `dir` to exactly `files`: changed files are replaced atomically, others untouched.
pub fn write(dir: &Path, files: &BTreeMap<String, Value>) -> Result<(), TestbedError> {
    std::fs::create_dir_all(dir).map_err(|e| TestbedError::io("creating", dir, e))?;
    for (name, object) in files {
        let path = dir.join(name);
        let yaml = serde_saphyr::to_string(object).map_err(|e| {
            TestbedError::io("serializing", &path, std::io::Error::other(e.to_string()))
        })?;
        if std::fs::read_to_string(&path).is_ok_and(|old| old == yaml) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, &yaml).map_err(|e| TestbedError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TestbedError::io("renaming into", &path, e))?;
    }
    let entries = std::fs::read_dir(dir).map_err(|e| TestbedError::io("listing", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !name.starts_with('.') && !files.contains_key(&name) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| TestbedError::io("removing", &path, e))?;
        }
    }
    Ok(())
}

/// Writes the directory's revision (after the objects it covers): weft-discovery reads it before
/// the objects, so serving revision N means serving everything written before it.
pub fn write_revision(dir: &Path, revision: u64) -> Result<(), TestbedError> {
    let (path, tmp) = (dir.join("revision"), dir.join(".revision.tmp"));
    std::fs::write(&tmp, format!("{revision}\n"))
        .map_err(|e| TestbedError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| TestbedError::io("renaming into", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::IntOrString;
    use crate::service::ServicePort;

    fn info(name: &str, ip: [u8; 4]) -> PodInfo {
        PodInfo {
            name: name.into(),
            namespace: "shop".into(),
            ip: Ipv4Addr::from(ip),
            labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
            annotations: BTreeMap::new(),
            owner: Some("web".into()),
        }
    }

    fn web() -> Service {
        Service {
            name: "web".into(),
            namespace: "shop".into(),
            selector: BTreeMap::from([("app".to_string(), "web".to_string())]),
            annotations: BTreeMap::from([("weft.io/timeout".to_string(), "2s".to_string())]),
            ports: vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: None,
            }],
            requested_cluster_ip: None,
        }
    }

    #[test]
    fn services_slices_and_pods_with_readiness_identity_and_mesh_status() {
        let service = web();
        let (a, b) = (
            info("web-1", [198, 18, 0, 5]),
            info("web-2", [198, 18, 0, 6]),
        );
        let spec: PodSpec = serde_json::from_value(json!({
            "serviceAccountName": "web",
            "containers": [{"name": "weft-proxy", "image": "weft-proxy"}, {"name": "app", "image": "x"}]
        }))
        .unwrap();
        let injected = BTreeMap::from([("weft.io/injected".to_string(), "0.1.0".to_string())]);
        let pods = [
            PodView {
                info: &a,
                spec: &spec,
                annotations: &injected,
                ready: true,
            },
            PodView {
                info: &b,
                spec: &spec,
                annotations: &injected,
                ready: false,
            },
        ];
        let namespaces = BTreeMap::from([(
            "shop".to_string(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        )]);
        let files = objects(
            &namespaces,
            &[ServiceView {
                service: &service,
                cluster_ip: Some(Ipv4Addr::new(198, 19, 0, 10)),
            }],
            &pods,
        );
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(files["namespace-shop.yaml"]["kind"], "Namespace");
        let svc = &files["service-shop-web.yaml"];
        assert_eq!(svc["spec"]["clusterIP"], "198.19.0.10");
        assert_eq!(svc["metadata"]["annotations"]["weft.io/timeout"], "2s");
        let slice_name = names
            .iter()
            .find(|n| n.starts_with("endpointslice-shop-web-"))
            .unwrap();
        let slice = &files[*slice_name];
        assert_eq!(
            slice["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(slice["endpoints"][1]["targetRef"]["name"], "web-2");
        let pod = &files["pod-shop-web-1.yaml"];
        assert_eq!(pod["spec"]["serviceAccountName"], "web");
        assert_eq!(pod["metadata"]["annotations"]["weft.io/injected"], "0.1.0");
        assert_eq!(pod["status"]["podIP"], "198.18.0.5");
    }

    #[test]
    fn the_directory_follows_the_objects_atomically() {
        let dir = std::env::temp_dir().join(format!("weft-cluster-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut files = BTreeMap::from([
            (
                "a.yaml".to_string(),
                json!({"kind": "Pod", "metadata": {"name": "a"}}),
            ),
            (
                "b.yaml".to_string(),
                json!({"kind": "Pod", "metadata": {"name": "b"}}),
            ),
        ]);
        write(&dir, &files).unwrap();
        files.remove("b.yaml");
        write(&dir, &files).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let a = std::fs::read_to_string(dir.join("a.yaml")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(left, ["a.yaml"], "b removed, no temporary files left");
        assert!(a.contains("name: a"), "{a}");
    }
}
