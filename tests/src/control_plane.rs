//! The mesh's control plane as the testbed runs it: ordinary (unmeshed) pods in namespace `weft`,
//! started and ready before any application pod, their images mapped to this build's binaries.
//! Each component is one entry in [`COMPONENTS`] with its manifest and the address the injector
//! gives the proxies.

use std::path::Path;

use weft_inject::InjectOptions;

/// Which control-plane components a testbed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlPlane {
    /// Bare pods: proxies get no control-plane addresses.
    None,
    /// weft-discovery only.
    Discovery,
    /// Every component this build has (see [`COMPONENTS`]).
    #[default]
    Full,
}

/// One control-plane component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    pub name: &'static str,
    /// `host:port` the proxies are given.
    pub address: &'static str,
    /// Kubernetes YAML; `{{CLUSTER_DIR}}` becomes the instance's cluster directory.
    manifest: &'static str,
}

pub const DISCOVERY: Component = Component {
    name: "weft-discovery",
    address: "weft-discovery.weft.svc.cluster.local:8086",
    manifest: include_str!("control_plane/discovery.yaml"),
};

/// Every component, in start order.
pub const COMPONENTS: &[Component] = &[DISCOVERY];

impl ControlPlane {
    pub fn components(self) -> &'static [Component] {
        match self {
            ControlPlane::None => &[],
            ControlPlane::Discovery => std::slice::from_ref(&DISCOVERY),
            ControlPlane::Full => COMPONENTS,
        }
    }

    fn runs(self, component: &Component) -> bool {
        self.components().contains(component)
    }

    /// What the injector tells the proxies about this control plane.
    pub fn inject_options(self) -> InjectOptions {
        InjectOptions {
            discovery_addr: self.runs(&DISCOVERY).then(|| DISCOVERY.address.to_owned()),
            ..InjectOptions::default()
        }
    }

    /// The components' manifests, as one YAML stream.
    pub fn manifests(self, cluster_dir: &Path) -> String {
        let dir = cluster_dir.display().to_string();
        self.components()
            .iter()
            .map(|c| c.manifest.replace("{{CLUSTER_DIR}}", &dir))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_runs_nothing_and_tells_proxies_nothing() {
        assert!(ControlPlane::None.manifests(Path::new("/x")).is_empty());
        assert_eq!(ControlPlane::None.inject_options().discovery_addr, None);
    }

    #[test]
    fn discovery_reads_the_cluster_directory_and_is_announced() {
        let yaml = ControlPlane::Discovery.manifests(Path::new("/state/tb-1/cluster"));
        assert!(yaml.contains("--dir, \"/state/tb-1/cluster\""), "{yaml}");
        assert!(!yaml.contains("{{"), "{yaml}");
        assert_eq!(
            ControlPlane::Discovery
                .inject_options()
                .discovery_addr
                .as_deref(),
            Some("weft-discovery.weft.svc.cluster.local:8086")
        );
        let plan = crate::manifest::plan(&yaml, &ControlPlane::Discovery.inject_options()).unwrap();
        assert_eq!(
            plan.workloads[0].spec.containers[0].built_binary(),
            Some("weft-discovery")
        );
        assert!(
            plan.workloads[0]
                .spec
                .containers
                .iter()
                .all(|c| !c.is_proxy_image()),
            "not meshed"
        );
    }
}
