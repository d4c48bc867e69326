//! The testbed: brings a plan up as namespaces and processes, answers questions about it, and
//! tears it all down on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use std::collections::BTreeMap;

use crate::address::AddressPool;
use crate::admission::Webhook;
use crate::cleanup::{self, DownTarget};
use crate::cluster_dir::{self, PodView, ServiceView};
use crate::control_plane::{self, ControlPlane, DISCOVERY, DISCOVERY_ADMIN_PORT};
use crate::dnat::{self, ServiceRule};
use crate::error::TestbedError;
use crate::hosts::ServiceRecord;
use crate::identity_ca::IdentityCa;
use crate::lookup::find_pod;
use crate::manifest::{self, PodTemplate};
use crate::naming;
use crate::netns::{self, ReturnPath};
use crate::pod::{Pod, PodContext, PodInfo, PodPhase, exit_code, in_pod_as, log_tail};
use crate::probe;
use crate::process::{describe, describe_status, run_bounded, run_with_stdin};
use crate::service::{Endpoint, Service, endpoints_for};
use crate::spawned::SpawnedProcess;
use crate::state::{ContainerState, InstanceState, Owner, PodState, ServiceState};
use crate::volumes::NoVolumeSource;
use crate::workload::Workload;

/// How a testbed is brought up. `Default` suits tests.
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// The weft-proxy binary; default: `WEFT_PROXY_BIN`, else beside the running executable.
    pub proxy_bin: Option<PathBuf>,
    /// How long `up`/`scale` wait for init containers and readiness probes.
    pub ready_timeout: Duration,
    /// Bound on `exec`, `exec_node` and `metrics`.
    pub exec_timeout: Duration,
    /// Between SIGTERM and SIGKILL at teardown.
    pub stop_grace: Duration,
    /// Instance name (CLI `--name`); default: unique per process and call.
    pub name: Option<String>,
    /// Where instance state and logs live.
    pub state_root: PathBuf,
    /// The control plane run (in namespace `weft`) when any pod is meshed.
    pub control_plane: ControlPlane,
    /// How long the CA's workload certificates live (proxies renew at 70%).
    pub identity_cert_lifetime: Duration,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        TestbedOptions {
            proxy_bin: None,
            ready_timeout: Duration::from_secs(30),
            exec_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(3),
            name: None,
            state_root: cleanup::default_state_root(),
            control_plane: ControlPlane::default(),
            identity_cert_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// A service as the testbed set it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    pub namespace: String,
    /// None for a headless service.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<u16>,
}

#[derive(Debug)]
struct ServiceEntry {
    service: Service,
    cluster_ip: Option<Ipv4Addr>,
}

/// Pods, services and the node namespace made from a set of manifests. Dropping it tears
/// everything down (also while unwinding from a panic).
#[derive(Debug)]
pub struct Testbed {
    instance: String,
    opts: TestbedOptions,
    state_dir: PathBuf,
    log_dir: PathBuf,
    node_netns: String,
    workloads: Vec<Workload>,
    pods: Vec<Pod>,
    services: Vec<ServiceEntry>,
    /// Every Namespace, as declared or implied (written to the cluster directory).
    namespaces: BTreeMap<String, serde_json::Value>,
    service_pool: AddressPool,
    pod_addrs: AddressPool,
    next_seq: u32,
    /// Built binaries standing in for images, by name (weft-proxy, weft-discovery,
    /// weft-identity, weft-injector).
    binaries: BTreeMap<String, PathBuf>,
    /// What weft-discovery's file source reads (see `cluster_dir`).
    cluster_dir: PathBuf,
    /// Raised with every rewrite of the cluster directory; discovery reports when it serves it.
    cluster_revision: u64,
    /// The CA the control plane's weft-identity serves, when it runs: the source of pods' tokens
    /// and trust anchors.
    identity_ca: Option<IdentityCa>,
    /// The admission webhook every application pod goes through.
    webhook: Option<Webhook>,
    return_path: ReturnPath,
    detached: bool,
    spawn_seq: AtomicU32,
}

impl Testbed {
    /// Brings up the manifests, every application pod admitted through the running admission
    /// webhook (see `admission`); returns once every pod is ready.
    pub fn up(manifests_yaml: &str, opts: TestbedOptions) -> Result<Testbed, TestbedError> {
        let app = manifest::plan(manifests_yaml)?;
        for skipped in &app.skipped {
            tracing::info!("skipping {skipped}: the testbed does not run CronJobs");
        }
        let instance = match &opts.name {
            Some(name) => naming::named_instance(name)?,
            None => naming::fresh_instance(),
        };
        let state_dir = opts.state_root.join(&instance);
        if opts.name.is_some() {
            if let Ok(state) = InstanceState::load(&state_dir)
                && (state.detached || state.owner.is_alive())
            {
                return Err(TestbedError::State {
                    path: InstanceState::path(&state_dir),
                    reason: format!(
                        "instance {instance} is already up (pid {}); `down` it first",
                        state.owner.pid
                    ),
                });
            }
            cleanup::down(&DownTarget::Instance(instance.clone()), &opts.state_root)?;
        }
        let cluster_dir = state_dir.join("cluster");
        let needs_webhook = app.workloads.iter().any(|w| reviewed(&w.namespace));
        // Located before anything is made, so a missing binary leaves nothing behind (the rest
        // are known once the webhook has admitted the pods).
        let mut binaries = BTreeMap::new();
        if needs_webhook {
            binaries.insert(
                crate::proxy_bin::INJECTOR.name.to_string(),
                crate::proxy_bin::locate_binary(crate::proxy_bin::INJECTOR, None)?,
            );
        }
        // Every namespace a pod or Service is in exists, as in a cluster; declared ones as written.
        let mut namespaces = app.namespaces;
        let used = app
            .workloads
            .iter()
            .map(|w| &w.namespace)
            .chain(app.services.iter().map(|s| &s.namespace));
        for name in used {
            namespaces
                .entry(name.clone())
                .or_insert_with(|| bare_namespace(name));
        }
        // Services' own clusterIPs are theirs before any address is handed out.
        let mut service_pool = AddressPool::services();
        let requested = reserve_requested(&mut service_pool, &app.services);
        let mut testbed = Testbed {
            node_netns: naming::node_netns(&instance),
            instance,
            opts,
            log_dir: state_dir.join("logs"),
            state_dir,
            workloads: Vec::new(),
            pods: Vec::new(),
            services: Vec::new(),
            namespaces,
            service_pool,
            pod_addrs: AddressPool::pods(),
            next_seq: 0,
            binaries: BTreeMap::new(),
            cluster_dir,
            cluster_revision: 0,
            identity_ca: None,
            webhook: None,
            return_path: ReturnPath::BridgeNetfilter,
            detached: false,
            spawn_seq: AtomicU32::new(0),
        };
        // From here on, Drop cleans up after any error. The owner is on record before any
        // namespace exists, so `down` never mistakes a starting instance for a crashed one.
        std::fs::create_dir_all(&testbed.log_dir)
            .map_err(|e| TestbedError::io("creating", &testbed.log_dir, e))?;
        testbed.save_state()?;
        for (name, path) in binaries {
            testbed.add_binary(name, path)?;
        }
        testbed.return_path = netns::create_node(&testbed.node_netns)?;
        if testbed.return_path == ReturnPath::Masquerade {
            tracing::warn!(
                "br_netfilter is not loaded: Service traffic is masqueraded, servers see the node address"
            );
        }
        // The webhook first: every application pod is admitted through it.
        if needs_webhook {
            testbed.start_webhook()?;
        }
        let mut admitted = Vec::with_capacity(app.workloads.len());
        for w in &app.workloads {
            let pods = (0..w.replicas)
                .map(|replica| testbed.admit(w, &w.pod_name(replica)))
                .collect::<Result<Vec<_>, _>>()?;
            admitted.push(pods);
        }
        // Meshed pods need the rest of the control plane; it starts next, so proxies find it up.
        let meshed = admitted
            .iter()
            .flatten()
            .flat_map(|p| p.spec.init_containers.iter().chain(&p.spec.containers))
            .any(|c| c.is_proxy_image());
        if meshed && !testbed.opts.control_plane.components().is_empty() {
            let control = manifest::plan(
                &testbed
                    .opts
                    .control_plane
                    .manifests(&testbed.cluster_dir, testbed.opts.identity_cert_lifetime),
            )?;
            let new_pods = testbed.add_control_plane(control)?;
            // The CA pod serves this directory (as Secret weft/weft-identity-ca) and pods' token
            // and anchor volumes come from it, so it exists before any pod starts.
            if testbed.opts.control_plane.runs(&control_plane::IDENTITY)
                && let Some(bin) = testbed.binaries.get(control_plane::IDENTITY.name)
            {
                let dir = testbed.state_dir.join("identity-ca");
                testbed.identity_ca = Some(IdentityCa::init(
                    bin,
                    &dir,
                    weft_inject::DEFAULT_TRUST_DOMAIN,
                )?);
            }
            testbed.start_pods(&new_pods)?;
        }
        let new_pods = testbed.add_workloads(app.workloads, admitted, app.services, requested)?;
        if new_pods.is_empty() {
            // Services without pods still get their rules and files.
            testbed.write_cluster_dir()?;
            testbed.apply_service_rules()?;
            testbed.save_state()?;
        } else {
            testbed.start_pods(&new_pods)?;
        }
        Ok(testbed)
    }

    /// Starts the weft-injector pod and waits until its `/ready` answers over verified HTTPS.
    fn start_webhook(&mut self) -> Result<(), TestbedError> {
        let ca_file = self.state_dir.join("injector-ca.pem");
        let injector = manifest::plan(
            &self
                .opts
                .control_plane
                .injector_manifest(&self.cluster_dir, &ca_file),
        )?;
        let new_pods = self.add_control_plane(injector)?;
        self.start_pods(&new_pods)?;
        let cluster_ip = self
            .services
            .iter()
            .find(|e| {
                e.service.name == control_plane::INJECTOR.name && e.service.namespace == "weft"
            })
            .and_then(|e| e.cluster_ip)
            .ok_or_else(|| TestbedError::NoSuchService("weft-injector.weft".into()))?;
        let webhook = Webhook::new(
            &self.node_netns,
            cluster_ip,
            &ca_file,
            &self.state_dir.join("admission"),
        );
        if let Err(last) = webhook.wait_ready(Instant::now() + self.opts.ready_timeout)? {
            let pod = self
                .pods
                .iter()
                .find(|p| p.info.owner.as_deref() == Some(control_plane::INJECTOR.name));
            return Err(TestbedError::NotReady {
                pod: pod.map_or_else(|| "weft-injector".into(), |p| p.info.name.clone()),
                container: "injector".into(),
                timeout: self.opts.ready_timeout,
                last,
                log_tail: pod
                    .and_then(|p| p.containers.first())
                    .map(|c| log_tail(&c.log))
                    .unwrap_or_default(),
            });
        }
        self.webhook = Some(webhook);
        Ok(())
    }

    /// Replica `pod_name` of `w` as admitted: through the webhook, or as written in a namespace
    /// the webhook configuration leaves out (`weft`, `kube-system`).
    fn admit(&self, w: &Workload, pod_name: &str) -> Result<PodTemplate, TestbedError> {
        let object_error =
            |reason: String| TestbedError::object("Pod", &w.namespace, pod_name, reason);
        if !reviewed(&w.namespace) {
            return PodTemplate::read(&w.template).map_err(object_error);
        }
        let webhook = self
            .webhook
            .as_ref()
            .ok_or_else(|| TestbedError::Admission {
                pod: format!("{}/{pod_name}", w.namespace),
                reason: "the webhook is not running".into(),
            })?;
        let pod = webhook.admit(w, pod_name)?;
        PodTemplate::read(&pod).map_err(|e| object_error(format!("as admitted: {e}")))
    }

    /// Control-plane workloads and Services (not reviewed: namespace `weft`), their pods made.
    fn add_control_plane(&mut self, plan: manifest::Plan) -> Result<Vec<usize>, TestbedError> {
        let pods = plan
            .workloads
            .iter()
            .map(|w| {
                (0..w.replicas)
                    .map(|replica| self.admit(w, &w.pod_name(replica)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (name, namespace) in plan.namespaces {
            self.namespaces.insert(name, namespace);
        }
        let requested = reserve_requested(&mut self.service_pool, &plan.services);
        self.add_workloads(plan.workloads, pods, plan.services, requested)
    }

    /// Records the workloads and Services, locates the binaries their pods run, assigns
    /// ClusterIPs and makes each pod's network; returns the new pods (to `start_pods`).
    fn add_workloads(
        &mut self,
        workloads: Vec<Workload>,
        pods: Vec<Vec<PodTemplate>>,
        services: Vec<Service>,
        requested: Vec<Option<Ipv4Addr>>,
    ) -> Result<Vec<usize>, TestbedError> {
        for bin in crate::proxy_bin::BUILT {
            let used = pods
                .iter()
                .flatten()
                .flat_map(|p| p.spec.init_containers.iter().chain(&p.spec.containers))
                .any(|c| c.built_binary() == Some(bin.name));
            if used && !self.binaries.contains_key(bin.name) {
                let explicit = (bin == crate::proxy_bin::PROXY)
                    .then_some(self.opts.proxy_bin.as_deref())
                    .flatten();
                let path = crate::proxy_bin::locate_binary(bin, explicit)?;
                self.add_binary(bin.name.to_string(), path)?;
            }
        }
        self.assign_cluster_ips(services, requested)?;
        let mut new_pods = Vec::new();
        for (workload, replicas) in workloads.into_iter().zip(pods) {
            self.workloads.push(workload);
            let w = self.workloads.len() - 1;
            for (replica, pod) in replicas.into_iter().enumerate() {
                new_pods.push(self.create_pod(w, replica, pod)?);
            }
        }
        Ok(new_pods)
    }

    /// A binary standing in for an image; the sidecar runs as UID 2102, so one it cannot reach
    /// is copied where it can.
    fn add_binary(&mut self, name: String, mut path: PathBuf) -> Result<(), TestbedError> {
        if !crate::proxy_bin::runnable_by_others(&path) {
            path = crate::proxy_bin::runnable_copy(&path, &self.state_dir.join("bin"))?;
        }
        self.binaries.insert(name, path);
        Ok(())
    }

    fn assign_cluster_ips(
        &mut self,
        services: Vec<Service>,
        requested: Vec<Option<Ipv4Addr>>,
    ) -> Result<(), TestbedError> {
        for (service, requested) in services.into_iter().zip(requested) {
            let cluster_ip = match (service.is_headless(), requested) {
                (true, Some(ip)) => {
                    self.service_pool.release(ip);
                    None
                }
                (true, None) => None,
                (false, Some(ip)) => Some(ip),
                (false, None) => Some(self.service_pool.allocate()?),
            };
            self.services.push(ServiceEntry {
                service,
                cluster_ip,
            });
        }
        Ok(())
    }

    /// Network for one replica as admitted; containers are started later by `start_pods`.
    fn create_pod(
        &mut self,
        workload: usize,
        replica: usize,
        admitted: PodTemplate,
    ) -> Result<usize, TestbedError> {
        let w = &self.workloads[workload];
        let name = w.pod_name(replica);
        let (hostname, subdomain) = w.dns_identity(&name);
        let ip = self.pod_addrs.allocate()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let pod = Pod {
            info: PodInfo {
                name,
                namespace: w.namespace.clone(),
                ip,
                labels: admitted.labels,
                annotations: admitted.annotations,
                owner: w.owner(),
            },
            spec: admitted.spec,
            workload,
            replica,
            netns: naming::pod_netns(&self.instance, seq),
            hostname,
            subdomain,
            containers: Vec::new(),
            ready: false,
        };
        // Recorded before it exists, so teardown after a failure half-way still removes it.
        self.pods.push(pod);
        let pod = &self.pods[self.pods.len() - 1];
        netns::create_pod(&self.node_netns, &pod.netns, &naming::node_link(seq), ip)?;
        Ok(self.pods.len() - 1)
    }

    /// DNS files for every pod, then containers of the new pods, readiness, service rules.
    fn start_pods(&mut self, new_pods: &[usize]) -> Result<(), TestbedError> {
        self.write_dns()?;
        self.write_cluster_dir()?;
        let deadline = Instant::now() + self.opts.ready_timeout;
        let volumes_dir = self.state_dir.join("volumes");
        for &i in new_pods {
            let ctx = PodContext {
                node_name: &self.node_netns,
                node_netns: &self.node_netns,
                log_dir: &self.log_dir,
                binaries: &self.binaries,
                volumes_dir: &volumes_dir,
                volume_source: match &self.identity_ca {
                    Some(ca) => ca,
                    None => &NoVolumeSource,
                },
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = self.pods[i].start(&ctx, remaining);
            self.save_state()?;
            result?;
        }
        self.wait_ready(new_pods, deadline)?;
        // Headless names list ready pods only, so DNS is rewritten once they are.
        self.write_dns()?;
        self.write_cluster_dir()?;
        self.apply_service_rules()?;
        self.save_state()?;
        self.wait_discovery_synced()
    }

    /// Rewrites the cluster directory from the current Services and pods (see `cluster_dir`),
    /// then raises its revision.
    fn write_cluster_dir(&mut self) -> Result<(), TestbedError> {
        let services: Vec<ServiceView<'_>> = self
            .services
            .iter()
            .map(|e| ServiceView {
                service: &e.service,
                cluster_ip: e.cluster_ip,
            })
            .collect();
        let pods: Vec<PodView<'_>> = self
            .pods
            .iter()
            .map(|p| PodView {
                info: &p.info,
                spec: &p.spec,
                annotations: &p.info.annotations,
                ready: p.ready,
            })
            .collect();
        let objects = cluster_dir::objects(&self.namespaces, &services, &pods);
        cluster_dir::write(&self.cluster_dir, &objects)?;
        self.cluster_revision += 1;
        cluster_dir::write_revision(&self.cluster_dir, self.cluster_revision)
    }

    /// Returns once weft-discovery serves the cluster directory's latest revision, so proxies
    /// see what the testbed just did (bounded by the ready timeout). Without a ready discovery
    /// pod there is nothing to wait for.
    fn wait_discovery_synced(&self) -> Result<(), TestbedError> {
        let Some(pod) = self.pods.iter().find(|p| {
            p.ready && p.info.namespace == "weft" && p.info.owner.as_deref() == Some(DISCOVERY.name)
        }) else {
            return Ok(());
        };
        let addr = SocketAddr::new(pod.info.ip.into(), DISCOVERY_ADMIN_PORT);
        let path = format!("/synced?revision={}", self.cluster_revision);
        let deadline = Instant::now() + self.opts.ready_timeout;
        loop {
            let last = match probe::http_get(&pod.netns, addr, &path, Duration::from_secs(1))? {
                Ok(resp) if resp.status == 200 => return Ok(()),
                Ok(resp) => format!("{path}: {} {}", resp.status, resp.body.trim()),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                return Err(TestbedError::NotReady {
                    pod: pod.info.name.clone(),
                    container: "discovery".into(),
                    timeout: self.opts.ready_timeout,
                    last: format!(
                        "cluster revision {} not served: {last}",
                        self.cluster_revision
                    ),
                    log_tail: pod
                        .containers
                        .first()
                        .map(|c| log_tail(&c.log))
                        .unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The built binary standing in for an image (`weft-proxy`, `weft-discovery`,
    /// `weft-identity`, `weft-injector`), if any pod uses it.
    pub fn binary(&self, name: &str) -> Option<&Path> {
        self.binaries.get(name).map(PathBuf::as_path)
    }

    /// The directory of Namespace, Service, EndpointSlice and Pod YAML the testbed keeps in step
    /// with its view (weft-discovery's file source and weft-injector's namespace lookup read it).
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// Sets (or with an empty value removes) an annotation of a Service given as `name` or
    /// `name.namespace`, and rewrites its file: how tests change a service's policy live.
    pub fn set_service_annotation(
        &mut self,
        service: &str,
        key: &str,
        value: &str,
    ) -> Result<(), TestbedError> {
        let entry = self
            .services
            .iter_mut()
            .find(|e| {
                e.service.name == service
                    || format!("{}.{}", e.service.name, e.service.namespace) == service
            })
            .ok_or_else(|| TestbedError::NoSuchService(service.to_string()))?;
        if value.is_empty() {
            entry.service.annotations.remove(key);
        } else {
            entry
                .service
                .annotations
                .insert(key.to_string(), value.to_string());
        }
        self.write_cluster_dir()?;
        self.wait_discovery_synced()
    }

    fn wait_ready(&mut self, pods: &[usize], deadline: Instant) -> Result<(), TestbedError> {
        let mut pending: Vec<usize> = pods.to_vec();
        loop {
            let mut still = Vec::new();
            let mut last = None;
            for &i in &pending {
                // A Job's pod that is already done has nothing left to be ready for.
                if self.pods[i].phase() != PodPhase::Running {
                    continue;
                }
                match self.pods[i].probe_once(&self.node_netns)? {
                    Ok(()) => self.pods[i].ready = true,
                    Err(failure) => {
                        last = Some((i, failure));
                        still.push(i);
                    }
                }
            }
            pending = still;
            let Some((i, (container, reason))) = last else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                let pod = &self.pods[i];
                let log = pod
                    .containers
                    .iter()
                    .find(|c| c.name() == container)
                    .map(|c| log_tail(&c.log))
                    .unwrap_or_default();
                return Err(TestbedError::NotReady {
                    pod: pod.info.name.clone(),
                    container,
                    timeout: self.opts.ready_timeout,
                    last: reason,
                    log_tail: log,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn dns_records(&self) -> Vec<ServiceRecord> {
        let mut records: Vec<ServiceRecord> = self
            .services
            .iter()
            .map(|entry| {
                let addresses = match entry.cluster_ip {
                    Some(ip) => vec![ip],
                    None => self
                        .pods
                        .iter()
                        .filter(|p| {
                            p.ready && entry.service.selects(&p.info.namespace, &p.info.labels)
                        })
                        .map(|p| p.info.ip)
                        .collect(),
                };
                ServiceRecord {
                    name: entry.service.name.clone(),
                    namespace: entry.service.namespace.clone(),
                    addresses,
                }
            })
            .collect();
        // `<hostname>.<subdomain>` per pod, as for StatefulSet pods behind their headless service.
        records.extend(
            self.pods
                .iter()
                .filter_map(|p| match (&p.hostname, &p.subdomain) {
                    (Some(h), Some(s)) => Some(ServiceRecord {
                        name: format!("{h}.{s}"),
                        namespace: p.info.namespace.clone(),
                        addresses: vec![p.info.ip],
                    }),
                    _ => None,
                }),
        );
        records
    }

    fn write_dns(&self) -> Result<(), TestbedError> {
        let records = self.dns_records();
        self.pods.iter().try_for_each(|p| p.write_dns(&records))
    }

    fn service_rules(&self) -> Vec<ServiceRule> {
        let endpoints: Vec<Endpoint<'_>> = self
            .pods
            .iter()
            .map(|p| Endpoint {
                namespace: &p.info.namespace,
                labels: &p.info.labels,
                ip: p.info.ip,
                spec: &p.spec,
                ready: p.ready,
            })
            .collect();
        let mut rules = Vec::new();
        for entry in &self.services {
            let Some(cluster_ip) = entry.cluster_ip else {
                continue;
            };
            for port in &entry.service.ports {
                rules.push(ServiceRule {
                    label: format!(
                        "{}/{}:{}",
                        entry.service.namespace,
                        entry.service.name,
                        port.name.clone().unwrap_or_else(|| port.port.to_string())
                    ),
                    cluster_ip,
                    port: port.port,
                    protocol: port.protocol(),
                    endpoints: endpoints_for(&entry.service, port, &endpoints),
                });
            }
        }
        rules
    }

    /// Replaces the node's nat and filter tables in one iptables-restore transaction.
    fn apply_service_rules(&self) -> Result<(), TestbedError> {
        let rules = dnat::render(
            &self.service_rules(),
            self.return_path == ReturnPath::Masquerade,
        );
        let path = self.state_dir.join("service-rules.txt");
        std::fs::write(&path, &rules).map_err(|e| TestbedError::io("writing", &path, e))?;
        let file = std::fs::File::open(&path).map_err(|e| TestbedError::io("reading", &path, e))?;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.node_netns,
            "iptables-restore",
            "-w",
            "5",
        ]);
        cmd.stdin(Stdio::from(file));
        let command = describe(&cmd);
        let output = run_with_stdin(cmd, self.opts.exec_timeout)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestbedError::CommandFailed {
                command,
                status: describe_status(&output.status),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// Adds or removes replicas of a Deployment, ReplicaSet or StatefulSet (highest index first)
    /// and rewrites DNS and service rules.
    pub fn scale(&mut self, workload: &str, replicas: usize) -> Result<(), TestbedError> {
        let w = self
            .workloads
            .iter()
            .position(|w| {
                w.kind.scalable()
                    && (w.name == workload || format!("{}.{}", w.name, w.namespace) == workload)
            })
            .ok_or_else(|| TestbedError::NoSuchWorkload(workload.to_string()))?;
        let current = self.workloads[w].replicas;
        self.workloads[w].replicas = replicas;
        if replicas < current {
            let doomed: Vec<usize> = (0..self.pods.len())
                .filter(|&i| self.pods[i].workload == w && self.pods[i].replica >= replicas)
                .collect();
            // Out of service first, as Kubernetes removes endpoints before killing the pod.
            for &i in &doomed {
                self.pods[i].ready = false;
            }
            self.apply_service_rules()?;
            self.write_dns()?;
            // Proxies stop picking the doomed pods before they are stopped.
            self.write_cluster_dir()?;
            self.wait_discovery_synced()?;
            for &i in doomed.iter().rev() {
                let pod = self.pods.remove(i);
                self.stop_pods(std::slice::from_ref(&pod));
                self.pod_addrs.release(pod.info.ip);
                let errors = cleanup::remove_namespaces(
                    std::slice::from_ref(&pod.netns),
                    self.opts.stop_grace,
                );
                if let Some(e) = errors.into_iter().next() {
                    return Err(e);
                }
            }
            self.write_cluster_dir()?;
            self.save_state()?;
            self.wait_discovery_synced()
        } else {
            let mut new_pods = Vec::new();
            for replica in current..replicas {
                let workload = &self.workloads[w];
                let admitted = self.admit(workload, &workload.pod_name(replica))?;
                new_pods.push(self.create_pod(w, replica, admitted)?);
            }
            self.start_pods(&new_pods)
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn node_netns(&self) -> &str {
        &self.node_netns
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn pods(&self) -> Vec<PodInfo> {
        self.pods.iter().map(|p| p.info.clone()).collect()
    }

    /// Pods made by the named controller (Deployment, StatefulSet, ...), in replica order.
    pub fn pods_of(&self, workload: &str) -> Vec<PodInfo> {
        self.pods
            .iter()
            .filter(|p| p.info.owner.as_deref() == Some(workload))
            .map(|p| p.info.clone())
            .collect()
    }

    pub fn services(&self) -> Vec<ServiceInfo> {
        self.services
            .iter()
            .map(|e| ServiceInfo {
                name: e.service.name.clone(),
                namespace: e.service.namespace.clone(),
                cluster_ip: e.cluster_ip,
                ports: e.service.ports.iter().map(|p| p.port).collect(),
            })
            .collect()
    }

    /// A pod by exact name (or `name.namespace`), by controller name (its first pod), or by a
    /// prefix matching exactly one pod.
    pub fn pod(&self, name_or_prefix: &str) -> Result<PodInfo, TestbedError> {
        self.find(name_or_prefix).map(|p| p.info.clone())
    }

    fn find(&self, query: &str) -> Result<&Pod, TestbedError> {
        find_pod(&self.pods, query)
    }

    /// ClusterIP of a service given as `name` or `name.namespace`.
    pub fn service_ip(&self, name: &str) -> Result<Ipv4Addr, TestbedError> {
        self.services
            .iter()
            .find(|e| {
                e.service.name == name
                    || format!("{}.{}", e.service.name, e.service.namespace) == name
            })
            .and_then(|e| e.cluster_ip)
            .ok_or_else(|| TestbedError::NoSuchService(name.to_string()))
    }

    pub fn netns_name(&self, pod: &str) -> Result<String, TestbedError> {
        self.find(pod).map(|p| p.netns.clone())
    }

    /// Runs `argv` as root in the pod's namespace (with its /etc/netns mounts), bounded by the
    /// exec timeout; the caller judges the exit status. Anything the command leaves running in
    /// its process group is killed when it returns: use [`Testbed::spawn`] for servers.
    pub fn exec(&self, pod: &str, argv: &[&str]) -> Result<Output, TestbedError> {
        self.exec_with_timeout(pod, argv, self.opts.exec_timeout)
    }

    pub fn exec_with_timeout(
        &self,
        pod: &str,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<Output, TestbedError> {
        let netns = self.find(pod)?.netns.clone();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns]).args(argv);
        run_bounded(cmd, timeout)
    }

    /// As `exec`, as user and group `uid` (e.g. 2102 to act as the proxy).
    pub fn exec_as(
        &self,
        pod: &str,
        uid: u32,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<Output, TestbedError> {
        let netns = self.find(pod)?.netns.clone();
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        run_bounded(in_pod_as(&netns, uid, uid, &argv), timeout)
    }

    /// Runs `argv` in the node namespace, which reaches every pod and ClusterIP.
    pub fn exec_node(&self, argv: &[&str]) -> Result<Output, TestbedError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node_netns]).args(argv);
        run_bounded(cmd, self.opts.exec_timeout)
    }

    /// Starts `argv` as root in the pod, in the background; output goes to a log file. The
    /// process (group) is killed when the returned value is dropped.
    pub fn spawn(&self, pod: &str, argv: &[&str]) -> Result<SpawnedProcess, TestbedError> {
        let p = self.find(pod)?;
        let n = self.spawn_seq.fetch_add(1, Ordering::Relaxed);
        let log = self.log_dir.join(format!("{}.spawn-{n}.log", p.info.name));
        let file =
            std::fs::File::create(&log).map_err(|e| TestbedError::io("creating", &log, e))?;
        let err_file = file
            .try_clone()
            .map_err(|e| TestbedError::io("creating", &log, e))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &p.netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err_file));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let command = describe(&cmd);
        let child = cmd.spawn().map_err(|source| TestbedError::Spawn {
            command: command.clone(),
            source,
        })?;
        Ok(SpawnedProcess::new(child, command, log))
    }

    /// A container's stdout and stderr so far. Without a container name: the first container
    /// that is not the proxy.
    pub fn logs(&self, pod: &str, container: Option<&str>) -> Result<String, TestbedError> {
        let p = self.find(pod)?;
        let path = p
            .containers
            .iter()
            .find(|c| match container {
                Some(name) => c.name() == name,
                None => !c.init && !c.spec.is_proxy_image(),
            })
            .or_else(|| {
                container
                    .is_none()
                    .then(|| p.containers.iter().find(|c| !c.init))
                    .flatten()
            })
            .map(|c| c.log.clone())
            .ok_or_else(|| TestbedError::NoSuchContainer {
                pod: p.info.name.clone(),
                container: container.unwrap_or("(default)").to_string(),
            })?;
        std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| TestbedError::io("reading container log", path, e))
    }

    /// The proxy's Prometheus text: GET http://127.0.0.1:4191/metrics from inside the pod.
    pub fn metrics(&self, pod: &str) -> Result<String, TestbedError> {
        let p = self.find(pod)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], 4191));
        let response = probe::http_get(&p.netns, addr, "/metrics", self.opts.exec_timeout)?
            .map_err(|reason| TestbedError::CommandFailed {
                command: format!("GET http://{addr}/metrics in pod {}", p.info.name),
                status: "no response".into(),
                stderr: reason,
            })?;
        if response.status != 200 {
            return Err(TestbedError::CommandFailed {
                command: format!("GET http://{addr}/metrics in pod {}", p.info.name),
                status: format!("HTTP {}", response.status),
                stderr: response.body,
            });
        }
        Ok(response.body)
    }

    fn container(
        &self,
        pod: &str,
        container: &str,
    ) -> Result<&crate::pod::Container, TestbedError> {
        let p = self.find(pod)?;
        p.containers
            .iter()
            .find(|c| c.name() == container)
            .ok_or_else(|| TestbedError::NoSuchContainer {
                pod: p.info.name.clone(),
                container: container.to_string(),
            })
    }

    /// Sends signal number `sig` to a container's main process.
    pub fn signal(&self, pod: &str, container: &str, sig: i32) -> Result<(), TestbedError> {
        let c = self.container(pod, container)?;
        let signal = Signal::try_from(sig).map_err(|e| TestbedError::CommandFailed {
            command: format!("signal {sig} to {pod}/{container}"),
            status: "invalid signal".into(),
            stderr: e.to_string(),
        })?;
        let pid = c.pid.ok_or_else(|| TestbedError::NoSuchContainer {
            pod: pod.into(),
            container: container.into(),
        })?;
        if c.exit_status().is_some() {
            return Err(TestbedError::CommandFailed {
                command: format!("signal {sig} to {pod}/{container}"),
                status: "container already exited".into(),
                stderr: String::new(),
            });
        }
        kill(Pid::from_raw(pid), signal).map_err(|e| TestbedError::CommandFailed {
            command: format!("signal {sig} to {pod}/{container} (pid {pid})"),
            status: "kill failed".into(),
            stderr: e.to_string(),
        })
    }

    /// Starts an exited container of a pod again (kill it with [`Testbed::signal`] and wait with
    /// [`Testbed::wait_exit`] first) and waits until the pod is ready again.
    pub fn restart_container(&mut self, pod: &str, container: &str) -> Result<(), TestbedError> {
        let name = self.find(pod)?.info.name.clone();
        let i = self
            .pods
            .iter()
            .position(|p| p.info.name == name)
            .ok_or_else(|| TestbedError::NoSuchPod(pod.to_string()))?;
        let volumes_dir = self.state_dir.join("volumes");
        let ctx = PodContext {
            node_name: &self.node_netns,
            node_netns: &self.node_netns,
            log_dir: &self.log_dir,
            binaries: &self.binaries,
            volumes_dir: &volumes_dir,
            volume_source: match &self.identity_ca {
                Some(ca) => ca,
                None => &NoVolumeSource,
            },
        };
        self.pods[i].restart_container(container, &ctx)?;
        self.save_state()?;
        let deadline = Instant::now() + self.opts.ready_timeout;
        self.wait_ready(&[i], deadline)
    }

    /// Waits up to `timeout` for a container to exit: its exit code (128 + signal when killed by
    /// one), or None if it still runs.
    pub fn wait_exit(
        &self,
        pod: &str,
        container: &str,
        timeout: Duration,
    ) -> Result<Option<i32>, TestbedError> {
        let c = self.container(pod, container)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.exit_status() {
                return Ok(Some(exit_code(status)));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Leaves everything running (CLI `up --detach`); `down --name` removes it later.
    pub fn detach(mut self) -> Result<(), TestbedError> {
        self.detached = true;
        self.save_state()
    }

    fn state(&self) -> InstanceState {
        InstanceState {
            instance: self.instance.clone(),
            owner: Owner::current(),
            detached: self.detached,
            node_netns: self.node_netns.clone(),
            pods: self
                .pods
                .iter()
                .map(|p| PodState {
                    name: p.info.name.clone(),
                    namespace: p.info.namespace.clone(),
                    ip: p.info.ip,
                    netns: p.netns.clone(),
                    labels: p.info.labels.clone(),
                    owner: p.info.owner.clone(),
                    ready: p.ready,
                    containers: p
                        .containers
                        .iter()
                        .map(|c| ContainerState {
                            name: c.name().to_string(),
                            init: c.init,
                            pid: c.pid,
                            log: c.log.clone(),
                        })
                        .collect(),
                })
                .collect(),
            services: self
                .services()
                .into_iter()
                .map(|s| ServiceState {
                    name: s.name,
                    namespace: s.namespace,
                    cluster_ip: s.cluster_ip,
                    ports: s.ports,
                })
                .collect(),
        }
    }

    fn save_state(&self) -> Result<(), TestbedError> {
        self.state().save(&self.state_dir)
    }

    /// Stops pods as the kubelet does: SIGTERM to the app containers (classic sidecars are
    /// among them), then, once they have exited, to the native sidecars; SIGKILL for what is
    /// left when the pod's grace is up (native sidecars get at least 2 s of their own).
    fn stop_pods(&self, pods: &[Pod]) {
        let start = Instant::now();
        for pod in pods {
            pod.signal_containers(Signal::SIGTERM, false);
        }
        for pod in pods {
            pod.reap(start + pod.grace(self.opts.stop_grace), false);
        }
        for pod in pods {
            pod.signal_containers(Signal::SIGTERM, true);
        }
        for pod in pods {
            let deadline = (start + pod.grace(self.opts.stop_grace))
                .max(Instant::now() + Duration::from_secs(2));
            pod.reap(deadline, true);
        }
    }

    /// Deletes a pod the way the API server and kubelet do, but keeps it on record (its logs,
    /// exit codes): out of its Services' endpoints first, then stopped (see `stop_pods`),
    /// bounded by its `terminationGracePeriodSeconds` (else `stop_grace`).
    pub fn terminate_pod(&mut self, pod: &str) -> Result<(), TestbedError> {
        let i = self.index_of(pod)?;
        self.pods[i].ready = false;
        self.apply_service_rules()?;
        self.write_dns()?;
        self.write_cluster_dir()?;
        self.wait_discovery_synced()?;
        self.stop_pods(std::slice::from_ref(&self.pods[i]));
        self.save_state()
    }

    /// Waits up to `timeout` for a pod that completes (restartPolicy Never or OnFailure, a
    /// Job's) to be Succeeded or Failed, and then stops its native sidecars as the kubelet
    /// does once the last app container has exited. Running when the time is up.
    pub fn wait_completed(
        &mut self,
        pod: &str,
        timeout: Duration,
    ) -> Result<PodPhase, TestbedError> {
        let i = self.index_of(pod)?;
        if !self.pods[i].spec.completes() {
            return Err(TestbedError::object(
                "Pod",
                &self.pods[i].info.namespace,
                &self.pods[i].info.name,
                "restartPolicy Always: its containers would be restarted, it never completes"
                    .to_string(),
            ));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let phase = self.pods[i].phase();
            if phase != PodPhase::Running {
                if self.pods[i].sidecars_running() {
                    let pod = &self.pods[i];
                    pod.signal_containers(Signal::SIGTERM, true);
                    pod.reap(Instant::now() + pod.grace(self.opts.stop_grace), true);
                }
                if self.pods[i].ready {
                    self.pods[i].ready = false;
                    self.apply_service_rules()?;
                    self.write_dns()?;
                    self.write_cluster_dir()?;
                }
                self.save_state()?;
                return Ok(phase);
            }
            if Instant::now() >= deadline {
                return Ok(phase);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What a pod is now: Running, or Succeeded/Failed for a completed Job's pod.
    pub fn pod_phase(&self, pod: &str) -> Result<PodPhase, TestbedError> {
        Ok(self.find(pod)?.phase())
    }

    fn index_of(&self, pod: &str) -> Result<usize, TestbedError> {
        let name = self.find(pod)?.info.name.clone();
        self.pods
            .iter()
            .position(|p| p.info.name == name)
            .ok_or_else(|| TestbedError::NoSuchPod(pod.to_string()))
    }

    fn teardown(&mut self) {
        let pods = std::mem::take(&mut self.pods);
        self.stop_pods(&pods);
        let mut namespaces: Vec<String> = pods.iter().map(|p| p.netns.clone()).collect();
        namespaces.push(self.node_netns.clone());
        let mut errors = cleanup::remove_namespaces(&namespaces, Duration::from_millis(500));
        if self.state_dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.state_dir)
        {
            errors.push(TestbedError::io("removing", &self.state_dir, e));
        }
        for e in errors {
            eprintln!("weft-testbed {}: teardown: {e}", self.instance);
        }
    }
}

/// Whether pods in `namespace` go to the webhook: all but the control plane's and kube-system,
/// as the webhook configuration's namespaceSelector in deploy/manifests has it.
fn reviewed(namespace: &str) -> bool {
    !matches!(namespace, "weft" | "kube-system")
}

/// A Namespace object with nothing but its name (one the manifests use without declaring).
fn bare_namespace(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Claims each Service's own `spec.clusterIP` (when free and in the pool), in order.
fn reserve_requested(pool: &mut AddressPool, services: &[Service]) -> Vec<Option<Ipv4Addr>> {
    services
        .iter()
        .map(|service| {
            service
                .requested_cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                .filter(|ip| pool.reserve(*ip))
        })
        .collect()
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if !self.detached {
            self.teardown();
        }
    }
}
