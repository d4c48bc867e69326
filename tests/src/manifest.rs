//! From Kubernetes YAML to the testbed's plan: the workloads and services to bring up.
//! Documents go through the injector first, exactly as in production.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::container::PodSpec;
use crate::error::TestbedError;
use crate::service::{Service, ServicePort};
use crate::workload::{Workload, WorkloadKind};

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    /// Kinds the testbed deliberately does not run (CronJob), for a log line.
    pub skipped: Vec<String>,
}

/// Parses, injects and plans the manifests.
pub fn plan(yaml: &str, inject: &weft_inject::InjectOptions) -> Result<Plan, TestbedError> {
    let docs = injected_documents(yaml, inject)?;
    plan_documents(&docs)
}

/// The documents after injection: the same parsing and sidecar injection as production.
fn injected_documents(
    yaml: &str,
    inject: &weft_inject::InjectOptions,
) -> Result<Vec<Value>, TestbedError> {
    let docs =
        weft_inject::parse_manifests(yaml).map_err(|e| TestbedError::Manifest(e.to_string()))?;
    weft_inject::inject(docs, inject)
        .map_err(|e| TestbedError::Manifest(format!("injecting the sidecar: {e}")))
}

pub fn plan_documents(docs: &[Value]) -> Result<Plan, TestbedError> {
    let mut plan = Plan::default();
    for doc in docs {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        let meta = Meta::of(doc);
        if let Some(workload_kind) = WorkloadKind::from_kind(kind) {
            plan.workloads.push(workload(workload_kind, &meta, doc)?);
        } else if kind == "Service" {
            plan.services.push(service(&meta, doc)?);
        } else if kind == "CronJob" {
            plan.skipped
                .push(format!("CronJob {}/{}", meta.namespace, meta.name));
        }
        // Namespaces, ConfigMaps, ServiceAccounts... have nothing to run.
    }
    Ok(plan)
}

struct Meta {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl Meta {
    fn of(doc: &Value) -> Meta {
        let meta = doc.get("metadata");
        Meta {
            name: string_at(meta, "name").unwrap_or_default(),
            namespace: string_at(meta, "namespace").unwrap_or_else(|| "default".to_string()),
            labels: string_map(meta.and_then(|m| m.get("labels"))),
            annotations: string_map(meta.and_then(|m| m.get("annotations"))),
        }
    }
}

fn string_at(v: Option<&Value>, key: &str) -> Option<String> {
    v.and_then(|v| v.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn workload(kind: WorkloadKind, meta: &Meta, doc: &Value) -> Result<Workload, TestbedError> {
    let kind_name = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let err = |reason: String| TestbedError::object(kind_name, &meta.namespace, &meta.name, reason);
    if meta.name.is_empty() {
        return Err(TestbedError::Manifest(format!(
            "a {kind_name} has no metadata.name"
        )));
    }
    let spec = doc.get("spec");
    let (labels, annotations, pod_spec_value) = match kind {
        WorkloadKind::Pod => (meta.labels.clone(), meta.annotations.clone(), spec),
        _ => {
            let template = spec.and_then(|s| s.get("template"));
            let template_meta = template.and_then(|t| t.get("metadata"));
            (
                string_map(template_meta.and_then(|m| m.get("labels"))),
                string_map(template_meta.and_then(|m| m.get("annotations"))),
                template.and_then(|t| t.get("spec")),
            )
        }
    };
    let pod_spec_value = pod_spec_value.ok_or_else(|| err("no pod spec".into()))?;
    let pod_spec: PodSpec = serde_json::from_value(pod_spec_value.clone())
        .map_err(|e| err(format!("pod spec: {e}")))?;
    if pod_spec.containers.is_empty() {
        return Err(err("pod spec has no containers".into()));
    }
    let replicas = match kind {
        WorkloadKind::Deployment | WorkloadKind::ReplicaSet | WorkloadKind::StatefulSet => {
            match spec.and_then(|s| s.get("replicas")) {
                None | Some(Value::Null) => 1,
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| err(format!("spec.replicas {v} is not a count")))?,
            }
        }
        _ => 1,
    };
    Ok(Workload {
        kind,
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        replicas,
        labels,
        annotations,
        spec: pod_spec,
        service_name: string_at(spec, "serviceName"),
    })
}

fn service(meta: &Meta, doc: &Value) -> Result<Service, TestbedError> {
    let spec = doc.get("spec");
    let ports: Vec<ServicePort> = match spec.and_then(|s| s.get("ports")) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            TestbedError::object(
                "Service",
                &meta.namespace,
                &meta.name,
                format!("spec.ports: {e}"),
            )
        })?,
    };
    Ok(Service {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        selector: string_map(spec.and_then(|s| s.get("selector"))),
        annotations: meta.annotations.clone(),
        ports,
        requested_cluster_ip: string_at(spec, "clusterIP"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_str(yaml: &str) -> Result<Plan, TestbedError> {
        plan(yaml, &Default::default())
    }

    const YAML: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: catalog, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: catalog}}
  template:
    metadata: {labels: {app: catalog}}
    spec:
      containers:
      - name: app
        image: python:3
        command: [python3, -m, http.server, "8080"]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: catalog, namespace: shop}
spec:
  selector: {app: catalog}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: c, image: x, command: ["true"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  containers: [{name: c, image: x, command: [sleep, "100"]}]
---
"#;

    #[test]
    fn plans_workloads_services_and_skips_cronjobs() {
        let plan = plan(YAML, &Default::default()).unwrap();
        assert_eq!(plan.workloads.len(), 2);
        let catalog = &plan.workloads[0];
        assert_eq!(
            (catalog.kind, catalog.replicas),
            (WorkloadKind::Deployment, 3)
        );
        assert_eq!(catalog.namespace, "shop");
        assert_eq!(
            catalog.labels.get("app").map(String::as_str),
            Some("catalog")
        );
        assert_eq!(catalog.spec.containers[0].ports[0].container_port, 8080);
        let client = &plan.workloads[1];
        assert_eq!(
            (client.kind, client.replicas, client.namespace.as_str()),
            (WorkloadKind::Pod, 1, "default")
        );
        assert_eq!(client.labels.get("app").map(String::as_str), Some("client"));
        assert_eq!(plan.services.len(), 1);
        assert_eq!(plan.services[0].ports[0].port, 80);
        assert_eq!(plan.skipped, vec!["CronJob default/nightly".to_string()]);
    }

    #[test]
    fn workload_without_containers_is_an_error_naming_it() {
        let err = plan_str("kind: Deployment\nmetadata: {name: empty}\nspec: {template: {spec: {containers: []}}}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Deployment default/empty"), "{err}");
    }

    #[test]
    fn bad_replicas_is_an_error() {
        let err = plan_str("kind: StatefulSet\nmetadata: {name: db}\nspec: {replicas: many, template: {spec: {containers: [{name: a}]}}}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("replicas"), "{err}");
    }

    #[test]
    fn meshed_pods_come_out_injected() {
        let yaml = "kind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata:\n      labels: {app: web}\n      annotations: {weft.io/inject: enabled}\n    spec:\n      containers: [{name: app, image: x, command: [sleep, '1']}]\n";
        let plan = plan(yaml, &Default::default()).unwrap();
        let spec = &plan.workloads[0].spec;
        assert_eq!(spec.init_containers[0].name, "weft-init");
        assert!(spec.init_containers[0].is_proxy_image());
        assert!(
            spec.containers
                .iter()
                .any(|c| c.name == "weft-proxy" && c.is_proxy_image())
        );
        assert!(spec.containers.iter().any(|c| c.name == "app"));
    }

    #[test]
    fn invalid_yaml_is_an_error() {
        assert!(plan_str("kind: [unclosed").is_err());
    }
}
