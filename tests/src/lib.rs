//! The pod testbed: ordinary Kubernetes YAML brought up on one Linux machine, as a tiny kubelet
//! and kube-proxy would. Every application pod is admitted through the running `weft-injector`
//! webhook (an AdmissionReview over HTTPS, as the API server sends it); each pod
//! becomes a network namespace on a bridge inside a separate "node" namespace, Services become
//! ClusterIPs load-balanced with iptables DNAT there, cluster DNS names resolve through per-pod
//! hosts files, and containers run as processes in their pod's namespace. Nothing is done in the
//! host's own network namespace, and dropping a [`Testbed`] removes everything it made.
//!
//! ```no_run
//! use weft_testbed::{Testbed, TestbedOptions};
//! let yaml = std::fs::read_to_string("app.yaml").unwrap();
//! let bed = Testbed::up(&yaml, TestbedOptions::default()).unwrap();
//! let out = bed.exec("client", &["curl", "-s", "http://catalog/"]).unwrap();
//! assert!(out.status.success());
//! ```

mod address;
mod admission;
mod cleanup;
mod cluster_dir;
mod container;
mod control_plane;
mod dnat;
mod error;
mod hosts;
mod identity_ca;
mod lookup;
mod manifest;
mod metrics;
mod naming;
mod netns;
mod pod;
mod probe;
mod process;
mod proxy_bin;
mod service;
mod spawned;
mod state;
mod testbed;
mod volumes;
mod workload;

pub use cleanup::{DownTarget, down};
pub use cluster_dir::ZONE;
pub use control_plane::{COMPONENTS, Component, ControlPlane, DISCOVERY, IDENTITY, INJECTOR};
pub use error::TestbedError;
pub use identity_ca::IdentityCa;
pub use metrics::metric_value;
pub use naming::named_instance;
pub use pod::{PodInfo, PodPhase};
pub use proxy_bin::ENV as PROXY_BIN_ENV;
pub use spawned::SpawnedProcess;
pub use state::{ContainerState, InstanceState, PodState, STATE_ROOT, ServiceState};
pub use testbed::{ServiceInfo, Testbed, TestbedOptions};
