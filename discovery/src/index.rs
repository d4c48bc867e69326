//! The translation core: cluster objects -> an index answering "what is behind this target?".
//! Pure (no I/O), so the Kubernetes and file sources share it and tests feed it recorded objects.
//!
//! A target resolves to one port of one Service, through:
//! - its ClusterIP(s) and that port;
//! - `name.ns.svc.<cluster-domain>`, `name.ns.svc`, `name.ns`, and `name` in the client's namespace;
//! - the IP:port of one of its ready endpoints (traffic the app already resolved to a pod IP).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_discovery_api::v1::{self, ServicePolicy};
use weft_discovery_api::{PROXY_INBOUND_PORT, Target};
use weft_settings::{ANNOTATION_PREFIX, INJECTED_ANNOTATION};

use crate::objects::{ClusterObjects, ObjectKey};
use crate::policy::service_policy;
use crate::problem::Problem;

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The sidecar container's name in a meshed pod.
const PROXY_CONTAINER: &str = "weft-proxy";

#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// Workload identities are `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`.
    pub trust_domain: String,
    /// Service names end in `.svc.<cluster_domain>`.
    pub cluster_domain: String,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// One Service port as a watcher sees it: what a Snapshot carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    pub service: v1::Service,
    /// By `addr`.
    pub endpoints: BTreeMap<String, v1::Endpoint>,
    pub policy: ServicePolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PortKey {
    namespace: String,
    name: String,
    port: u16,
}

#[derive(Debug, Default)]
pub struct Index {
    ports: HashMap<PortKey, Arc<ServiceState>>,
    by_addr: HashMap<SocketAddr, PortKey>,
    cluster_domain: String,
    revision: Option<u64>,
}

/// What discovery knows about a pod that backs an endpoint.
struct PodFacts {
    meshed: bool,
    identity: String,
}

impl Index {
    /// Builds the index; objects it cannot use are skipped and returned as problems.
    pub fn build(objects: &ClusterObjects, config: &IndexConfig) -> (Index, Vec<Problem>) {
        let mut problems = Vec::new();
        let pods: HashMap<&ObjectKey, PodFacts> = objects
            .pods
            .iter()
            .map(|(key, pod)| (key, pod_facts(key, pod, config)))
            .collect();
        let slices = slices_by_service(objects, &mut problems);
        let mut index = Index {
            cluster_domain: config.cluster_domain.clone(),
            revision: objects.revision,
            ..Default::default()
        };
        // Endpoint addresses map to their service only after every ClusterIP is in, and in a fixed
        // order, so a pod backing two services resolves the same way on every rebuild.
        let mut endpoint_addrs = Vec::new();
        for (key, service) in &objects.services {
            let slices = slices.get(key).map(Vec::as_slice).unwrap_or_default();
            index.add_service(
                key,
                service,
                slices,
                &pods,
                &mut endpoint_addrs,
                &mut problems,
            );
        }
        for (addr, port_key) in endpoint_addrs {
            index.by_addr.entry(addr).or_insert(port_key);
        }
        (index, problems)
    }

    /// The Service port behind `target`, if the mesh knows it.
    pub fn lookup(&self, target: &Target, client_namespace: &str) -> Option<Arc<ServiceState>> {
        let key = match target {
            Target::Addr(addr) => self.by_addr.get(&canonical(*addr))?.clone(),
            Target::Name { host, port } => self.name_key(host, *port, client_namespace)?,
        };
        self.ports.get(&key).cloned()
    }

    /// The source's revision of the objects this index was built from (see `ClusterObjects`).
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// Service ports indexed.
    pub fn service_ports(&self) -> usize {
        self.ports.len()
    }

    fn name_key(&self, host: &str, port: u16, client_namespace: &str) -> Option<PortKey> {
        let labels: Vec<&str> = host.split('.').collect();
        let (name, namespace) = match labels.as_slice() {
            [name] if !client_namespace.is_empty() => (*name, client_namespace),
            [name, namespace] | [name, namespace, "svc"] => (*name, *namespace),
            [name, namespace, "svc", domain @ ..] if domain.join(".") == self.cluster_domain => {
                (*name, *namespace)
            }
            _ => return None,
        };
        Some(PortKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port,
        })
    }

    fn add_service(
        &mut self,
        key: &ObjectKey,
        service: &Service,
        slices: &[&EndpointSlice],
        pods: &HashMap<&ObjectKey, PodFacts>,
        endpoint_addrs: &mut Vec<(SocketAddr, PortKey)>,
        problems: &mut Vec<Problem>,
    ) {
        let problem = |reason: String| Problem::new("Service", &key.namespace, &key.name, reason);
        let Some(spec) = &service.spec else {
            problems.push(problem("has no spec".into()));
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            // A DNS alias, not a set of endpoints: clients resolve it themselves.
            return;
        }
        let cluster_ips = cluster_ips(spec.cluster_ip.as_deref(), spec.cluster_ips.as_deref());
        let annotations = service.metadata.annotations.clone().unwrap_or_default();
        for (i, port) in spec.ports.iter().flatten().enumerate() {
            let Ok(number) = u16::try_from(port.port) else {
                problems.push(problem(format!("port {} is not a port number", port.port)));
                continue;
            };
            let (policy, errors) = service_policy(&annotations, &key.namespace, u32::from(number));
            if i == 0 {
                // The same annotations fail the same way for every port: report them once.
                problems.extend(errors.into_iter().map(|e| {
                    problem(format!(
                        "annotation {}: {}; left unset",
                        e.annotation, e.reason
                    ))
                }));
            }
            let port_key = PortKey {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                port: number,
            };
            let endpoints = endpoints(key, port, slices, pods, problems);
            for ip in &cluster_ips {
                self.by_addr
                    .insert(canonical(SocketAddr::new(*ip, number)), port_key.clone());
            }
            for endpoint in endpoints.values() {
                if let Ok(addr) = endpoint.addr.parse::<SocketAddr>() {
                    endpoint_addrs.push((canonical(addr), port_key.clone()));
                }
            }
            let state = ServiceState {
                service: v1::Service {
                    name: key.name.clone(),
                    namespace: key.namespace.clone(),
                    port: u32::from(number),
                    port_name: port.name.clone().unwrap_or_default(),
                },
                endpoints,
                policy,
            };
            self.ports.insert(port_key, Arc::new(state));
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
#[cfg(test)]
mod tests;

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn cluster_ips(single: Option<&str>, all: Option<&[String]>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = all
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .chain(single)
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn pod_facts(key: &ObjectKey, pod: &Pod, config: &IndexConfig) -> PodFacts {
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(&format!("{ANNOTATION_PREFIX}{INJECTED_ANNOTATION}")));
    let spec = pod.spec.as_ref();
    let has_proxy = spec.is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER)
    });
    let meshed = injected || has_proxy;
    let account = spec
        .and_then(|s| {
            s.service_account_name
                .as_deref()
                .or(s.service_account.as_deref())
        })
        .filter(|sa| !sa.is_empty())
        .unwrap_or("default");
    // Only a meshed pod has a proxy holding a certificate for its identity; an unmeshed pod can
    // prove nothing, so it gets none.
    let identity = if meshed {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            config.trust_domain, key.namespace, account
        )
    } else {
        String::new()
    };
    PodFacts { meshed, identity }
}

fn slices_by_service<'a>(
    objects: &'a ClusterObjects,
    problems: &mut Vec<Problem>,
) -> HashMap<ObjectKey, Vec<&'a EndpointSlice>> {
    let mut by_service: HashMap<ObjectKey, Vec<&EndpointSlice>> = HashMap::new();
    for (key, slice) in &objects.slices {
        let problem =
            |reason: &str| Problem::new("EndpointSlice", &key.namespace, &key.name, reason);
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            problems.push(problem(&format!("has no {SERVICE_NAME_LABEL} label")));
            continue;
        };
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            problems.push(problem(&format!(
                "addressType {:?} is not supported (IPv4 or IPv6)",
                slice.address_type
            )));
            continue;
        }
        by_service
            .entry(ObjectKey::new(&key.namespace, service))
            .or_default()
            .push(slice);
    }
    by_service
}

/// The ready endpoints of one Service port across the service's slices. A slice port belongs to a
/// Service port when their names match (the EndpointSlice controller copies the Service's names).
fn endpoints(
    service: &ObjectKey,
    port: &ServicePort,
    slices: &[&EndpointSlice],
    pods: &HashMap<&ObjectKey, PodFacts>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, v1::Endpoint> {
    let port_name = port.name.as_deref().unwrap_or("");
    let mut out = BTreeMap::new();
    for slice in slices {
        let slice_name = slice.metadata.name.as_deref().unwrap_or("");
        let problem =
            |reason: String| Problem::new("EndpointSlice", &service.namespace, slice_name, reason);
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        let Ok(number) = u16::try_from(number) else {
            problems.push(problem(format!("port {number} is not a port number")));
            continue;
        };
        for endpoint in &slice.endpoints {
            // Unset readiness means unknown, which Kubernetes says to treat as ready.
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let pod_ref = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"));
            let (pod_name, facts) = match pod_ref {
                Some(r) => {
                    let name = r.name.clone().unwrap_or_default();
                    let namespace = r.namespace.as_deref().unwrap_or(&service.namespace);
                    match pods.get(&ObjectKey::new(namespace, &name)) {
                        Some(facts) => (name, Some(facts)),
                        None => {
                            // Without the pod we cannot tell meshed from not: sending plaintext to
                            // a strict-mTLS pod would fail, so wait until the pod is known.
                            problems.push(problem(format!(
                                "endpoint pod {namespace}/{name} is unknown (yet); endpoint skipped"
                            )));
                            continue;
                        }
                    }
                }
                None => (String::new(), None),
            };
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    problems.push(problem(format!("address {address:?} is not an IP address")));
                    continue;
                };
                let addr = SocketAddr::new(ip, number).to_string();
                let meshed = facts.is_some_and(|f| f.meshed);
                out.insert(
                    addr.clone(),
                    v1::Endpoint {
                        addr,
                        weight: 1,
                        zone: endpoint.zone.clone().unwrap_or_default(),
                        identity: facts.map(|f| f.identity.clone()).unwrap_or_default(),
                        meshed,
                        proxy_port: if meshed { PROXY_INBOUND_PORT } else { 0 },
                        pod: pod_name.clone(),
                    },
                );
            }
        }
    }
    out
}
