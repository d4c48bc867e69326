//! Kubernetes Services: which pods they select and which pod ports their ports lead to.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::container::{IntOrString, PodSpec};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    #[serde(default)]
    pub protocol: Option<String>,
}

impl ServicePort {
    /// `tcp` or `udp`, as iptables spells it.
    pub fn protocol(&self) -> String {
        self.protocol
            .as_deref()
            .unwrap_or("TCP")
            .to_ascii_lowercase()
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// `spec.clusterIP` as written: None when unset, `None` (the string) for headless.
    pub requested_cluster_ip: Option<String>,
}

impl Service {
    pub fn is_headless(&self) -> bool {
        self.requested_cluster_ip.as_deref() == Some("None")
    }

    /// A pod is selected when it is in the service's namespace and carries every selector label;
    /// an empty selector selects nothing (such services get no automatic endpoints).
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        namespace == self.namespace
            && !self.selector.is_empty()
            && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The pod port `port` leads to: `targetPort` by number, or by name among the pod's container
    /// ports; defaults to the service port. None when a named port is not declared in this pod.
    pub fn target_port(&self, port: &ServicePort, pod: &PodSpec) -> Option<u16> {
        match &port.target_port {
            None => Some(port.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(target @ IntOrString::Str(_)) => {
                pod.containers.iter().find_map(|c| c.resolve_port(target))
            }
        }
    }
}

/// A pod as services see it.
#[derive(Debug, Clone)]
pub struct Endpoint<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    pub spec: &'a PodSpec,
    pub ready: bool,
}

/// Ready endpoints of one service port, as `(pod IP, target port)`, in pod order.
pub fn endpoints_for(
    service: &Service,
    port: &ServicePort,
    pods: &[Endpoint<'_>],
) -> Vec<(Ipv4Addr, u16)> {
    pods.iter()
        .filter(|p| p.ready && service.selects(p.namespace, p.labels))
        .filter_map(|p| service.target_port(port, p.spec).map(|t| (p.ip, t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn service(target: Option<IntOrString>) -> Service {
        Service {
            name: "catalog".into(),
            namespace: "default".into(),
            selector: labels(&[("app", "catalog")]),
            annotations: BTreeMap::new(),
            ports: vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: target,
                protocol: None,
            }],
            requested_cluster_ip: None,
        }
    }

    fn pod_spec(port_name: &str, port: u16) -> PodSpec {
        serde_json::from_value(serde_json::json!({
            "containers": [{"name": "app", "ports": [{"name": port_name, "containerPort": port}]}]
        }))
        .unwrap()
    }

    #[test]
    fn selection_needs_namespace_and_all_labels() {
        let s = service(None);
        assert!(s.selects("default", &labels(&[("app", "catalog"), ("tier", "x")])));
        assert!(!s.selects("other", &labels(&[("app", "catalog")])));
        assert!(!s.selects("default", &labels(&[("app", "web")])));
        let mut empty = s.clone();
        empty.selector.clear();
        assert!(!empty.selects("default", &labels(&[("app", "catalog")])));
    }

    #[test]
    fn target_ports_numeric_named_and_default() {
        let spec = pod_spec("http", 8080);
        let s = service(None);
        assert_eq!(s.target_port(&s.ports[0], &spec), Some(80));
        let s = service(Some(IntOrString::Int(9000)));
        assert_eq!(s.target_port(&s.ports[0], &spec), Some(9000));
        let s = service(Some(IntOrString::Str("http".into())));
        assert_eq!(s.target_port(&s.ports[0], &spec), Some(8080));
        assert_eq!(s.target_port(&s.ports[0], &pod_spec("grpc", 1)), None);
    }

    #[test]
    fn endpoints_skip_unready_and_unselected_pods() {
        let s = service(Some(IntOrString::Str("http".into())));
        let a = labels(&[("app", "catalog")]);
        let b = labels(&[("app", "web")]);
        let (s1, s2) = (pod_spec("http", 8080), pod_spec("http", 8081));
        let pods = [
            Endpoint {
                namespace: "default",
                labels: &a,
                ip: Ipv4Addr::new(198, 18, 0, 2),
                spec: &s1,
                ready: true,
            },
            Endpoint {
                namespace: "default",
                labels: &a,
                ip: Ipv4Addr::new(198, 18, 0, 3),
                spec: &s2,
                ready: false,
            },
            Endpoint {
                namespace: "default",
                labels: &b,
                ip: Ipv4Addr::new(198, 18, 0, 4),
                spec: &s1,
                ready: true,
            },
            Endpoint {
                namespace: "default",
                labels: &a,
                ip: Ipv4Addr::new(198, 18, 0, 5),
                spec: &s2,
                ready: true,
            },
        ];
        assert_eq!(
            endpoints_for(&s, &s.ports[0], &pods),
            vec![
                (Ipv4Addr::new(198, 18, 0, 2), 8080),
                (Ipv4Addr::new(198, 18, 0, 5), 8081)
            ]
        );
    }

    #[test]
    fn protocol_defaults_to_tcp() {
        let s = service(None);
        assert_eq!(s.ports[0].protocol(), "tcp");
    }
}
