//! The mesh's control plane as the testbed runs it: ordinary (unmeshed) pods in namespace `weft`,
//! started and ready before any application pod, their images mapped to this build's binaries.
//! Each component is one entry in [`COMPONENTS`] with its manifest and the address the injector
//! gives the proxies.

use std::path::Path;
use std::time::Duration;

use weft_inject::InjectOptions;

/// Which control-plane components a testbed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlPlane {
    /// Bare pods: proxies get no control-plane addresses.
    None,
    /// weft-discovery only (no certificates: proxies get no identity settings).
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
    /// Kubernetes YAML; `{{CLUSTER_DIR}}` becomes the instance's cluster directory and
    /// `{{CERT_LIFETIME}}` the CA's certificate lifetime.
    manifest: &'static str,
}

pub const DISCOVERY: Component = Component {
    name: "weft-discovery",
    address: "weft-discovery.weft.svc.cluster.local:8086",
    manifest: include_str!("control_plane/discovery.yaml"),
};

/// weft-discovery's admin port (`--admin` in its manifest): the testbed asks its `/synced`.
pub const DISCOVERY_ADMIN_PORT: u16 = 9996;

/// The CA. Its directory comes from `weft-identity ca init`, which the testbed runs before the
/// control plane starts (see `IdentityCa`), as the Secret `weft/weft-identity-ca`.
pub const IDENTITY: Component = Component {
    name: "weft-identity",
    address: "weft-identity.weft.svc.cluster.local:8080",
    manifest: include_str!("control_plane/identity.yaml"),
};

/// Every component, in start order.
pub const COMPONENTS: &[Component] = &[DISCOVERY, IDENTITY];

/// The namespace every component runs in, declared once ahead of them.
const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: weft}\n";

impl ControlPlane {
    pub fn components(self) -> &'static [Component] {
        match self {
            ControlPlane::None => &[],
            ControlPlane::Discovery => std::slice::from_ref(&DISCOVERY),
            ControlPlane::Full => COMPONENTS,
        }
    }

    pub fn runs(self, component: &Component) -> bool {
        self.components().contains(component)
    }

    /// What the injector tells the proxies about this control plane.
    pub fn inject_options(self) -> InjectOptions {
        InjectOptions {
            discovery_addr: self.runs(&DISCOVERY).then(|| DISCOVERY.address.to_owned()),
            identity_addr: self.runs(&IDENTITY).then(|| IDENTITY.address.to_owned()),
            ..InjectOptions::default()
        }
    }

    /// The components' manifests, as one YAML stream; the CA issues certificates living
    /// `cert_lifetime`.
    pub fn manifests(self, cluster_dir: &Path, cert_lifetime: Duration) -> String {
        let components = self.components();
        if components.is_empty() {
            return String::new();
        }
        let dir = cluster_dir.display().to_string();
        let lifetime = format!("{}ms", cert_lifetime.as_millis());
        std::iter::once(NAMESPACE.to_owned())
            .chain(components.iter().map(|c| {
                c.manifest
                    .replace("{{CLUSTER_DIR}}", &dir)
                    .replace("{{CERT_LIFETIME}}", &lifetime)
            }))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn none_runs_nothing_and_tells_proxies_nothing() {
        assert!(
            ControlPlane::None
                .manifests(Path::new("/x"), DAY)
                .is_empty()
        );
        assert_eq!(ControlPlane::None.inject_options().discovery_addr, None);
        assert_eq!(ControlPlane::None.inject_options().identity_addr, None);
    }

    #[test]
    fn discovery_reads_the_cluster_directory_and_is_announced() {
        let yaml = ControlPlane::Discovery.manifests(Path::new("/state/tb-1/cluster"), DAY);
        assert!(yaml.contains("--dir, \"/state/tb-1/cluster\""), "{yaml}");
        assert!(!yaml.contains("{{"), "{yaml}");
        assert_eq!(
            ControlPlane::Discovery
                .inject_options()
                .discovery_addr
                .as_deref(),
            Some("weft-discovery.weft.svc.cluster.local:8086")
        );
        assert_eq!(ControlPlane::Discovery.inject_options().identity_addr, None);
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

    #[test]
    fn full_adds_the_ca_serving_its_secret_and_announces_both() {
        let opts = ControlPlane::Full.inject_options();
        assert_eq!(
            opts.discovery_addr.as_deref(),
            Some("weft-discovery.weft.svc.cluster.local:8086")
        );
        assert_eq!(
            opts.identity_addr.as_deref(),
            Some("weft-identity.weft.svc.cluster.local:8080")
        );
        let yaml = ControlPlane::Full.manifests(Path::new("/state/tb-1/cluster"), DAY);
        assert!(!yaml.contains("{{"), "{yaml}");
        assert!(
            ControlPlane::Full
                .manifests(Path::new("/x"), Duration::from_secs(20))
                .contains(r#"value: "20000ms""#)
        );
        assert_eq!(yaml.matches("kind: Namespace").count(), 1, "{yaml}");
        let plan = crate::manifest::plan(&yaml, &opts).unwrap();
        let built: Vec<_> = plan
            .workloads
            .iter()
            .map(|w| (w.namespace.as_str(), w.spec.containers[0].built_binary()))
            .collect();
        assert_eq!(
            built,
            [
                ("weft", Some("weft-discovery")),
                ("weft", Some("weft-identity"))
            ]
        );
        let ca = &plan.workloads[1].spec;
        assert!(
            ca.containers.iter().all(|c| !c.is_proxy_image()),
            "not meshed"
        );
        assert!(yaml.contains("secretName: weft-identity-ca"), "{yaml}");
        assert!(
            plan.services
                .iter()
                .any(|s| s.name == "weft-identity" && s.ports.iter().any(|p| p.port == 8080)),
            "the CA's Service"
        );
    }
}
