//! From Kubernetes YAML to the testbed's plan: the workloads and services to bring up, and the
//! Namespaces declared. Read as `weft-inject` reads manifests (as kubectl does); the sidecar is
//! added later, pod by pod, by the running admission webhook (see `admission`).

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
    /// Namespace objects as declared, by name (the injector reads their annotations).
    pub namespaces: BTreeMap<String, Value>,
}

/// Parses and plans the manifests.
pub fn plan(yaml: &str) -> Result<Plan, TestbedError> {
    let docs =
        weft_inject::parse_manifests(yaml).map_err(|e| TestbedError::Manifest(e.to_string()))?;
    plan_documents(&docs)
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
        } else if kind == "Namespace" {
            if meta.name.is_empty() {
                return Err(TestbedError::Manifest(
                    "a Namespace has no metadata.name".into(),
                ));
            }
            plan.namespaces.insert(meta.name.clone(), doc.clone());
        }
        // ConfigMaps, ServiceAccounts... have nothing to run.
    }
    Ok(plan)
}

struct Meta {
    name: String,
    namespace: String,
    annotations: BTreeMap<String, String>,
}

impl Meta {
    fn of(doc: &Value) -> Meta {
        let meta = doc.get("metadata");
        Meta {
            name: string_at(meta, "name").unwrap_or_default(),
            namespace: string_at(meta, "namespace").unwrap_or_else(|| "default".to_string()),
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
    // The pod template as the controller would stamp it out (a bare Pod's own metadata).
    let template = match kind {
        WorkloadKind::Pod => serde_json::json!({
            "metadata": doc.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
            "spec": spec.cloned().unwrap_or(Value::Null),
        }),
        _ => spec
            .and_then(|s| s.get("template"))
            .cloned()
            .unwrap_or(Value::Null),
    };
    let pod_spec = PodTemplate::read(&template).map_err(err)?.spec;
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
        spec: pod_spec,
        template,
        service_name: string_at(spec, "serviceName"),
    })
}

/// What the testbed acts on in a pod template (or a Pod object): labels, annotations, spec.
pub struct PodTemplate {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: PodSpec,
}

impl PodTemplate {
    /// Reads `{metadata, spec}`; the error says what is wrong with the spec.
    pub fn read(template: &Value) -> Result<PodTemplate, String> {
        let metadata = template.get("metadata");
        let spec_value = template
            .get("spec")
            .filter(|s| !s.is_null())
            .ok_or("no pod spec")?;
        let spec: PodSpec =
            serde_json::from_value(spec_value.clone()).map_err(|e| format!("pod spec: {e}"))?;
        if spec.containers.is_empty() {
            return Err("pod spec has no containers".into());
        }
        Ok(PodTemplate {
            labels: string_map(metadata.and_then(|m| m.get("labels"))),
            annotations: string_map(metadata.and_then(|m| m.get("annotations"))),
            spec,
        })
    }
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
        plan(yaml)
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
        let plan = plan(YAML).unwrap();
        assert_eq!(plan.workloads.len(), 2);
        let catalog = &plan.workloads[0];
        assert_eq!(
            (catalog.kind, catalog.replicas),
            (WorkloadKind::Deployment, 3)
        );
        assert_eq!(catalog.namespace, "shop");
        assert_eq!(
            catalog.template["metadata"]["labels"]["app"].as_str(),
            Some("catalog")
        );
        assert_eq!(catalog.spec.containers[0].ports[0].container_port, 8080);
        let client = &plan.workloads[1];
        assert_eq!(
            (client.kind, client.replicas, client.namespace.as_str()),
            (WorkloadKind::Pod, 1, "default")
        );
        assert_eq!(
            client.template["metadata"]["labels"]["app"].as_str(),
            Some("client")
        );
        assert_eq!(plan.services.len(), 1);
        assert_eq!(plan.services[0].ports[0].port, 80);
        assert_eq!(plan.skipped, vec!["CronJob default/nightly".to_string()]);
        assert_eq!(plan.namespaces.keys().collect::<Vec<_>>(), ["shop"]);
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
    fn pods_are_planned_as_written_with_their_templates_for_the_webhook() {
        let yaml = "kind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata:\n      labels: {app: web}\n      annotations: {weft.io/inject: enabled}\n    spec:\n      containers: [{name: app, image: x, command: [sleep, '1'], terminationMessagePath: /dev/x}]\n---\nkind: Pod\nmetadata: {name: solo, annotations: {a: b}}\nspec: {containers: [{name: c, image: x}]}\n";
        let plan = plan(yaml).unwrap();
        let web = &plan.workloads[0];
        let names: Vec<&str> = web
            .spec
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["app"], "not injected here");
        assert!(web.spec.init_containers.is_empty());
        assert_eq!(
            web.template["spec"]["containers"][0]["terminationMessagePath"], "/dev/x",
            "the template keeps fields the testbed does not read"
        );
        assert_eq!(
            web.template["metadata"]["annotations"]["weft.io/inject"],
            "enabled"
        );
        let solo = &plan.workloads[1];
        assert_eq!(solo.template["metadata"]["name"], "solo");
        assert_eq!(solo.template["spec"]["containers"][0]["name"], "c");
    }

    #[test]
    fn invalid_yaml_is_an_error() {
        assert!(plan_str("kind: [unclosed").is_err());
    }
}
