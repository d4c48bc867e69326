//! The mesh's control plane as the testbed runs it: ordinary (unmeshed) pods in namespace `weft`,
//! started and ready before any application pod, their images mapped to this build's binaries.
//! The admission webhook ([`INJECTOR`]) runs whenever there are application pods, since every
//! one is admitted through it; the components it announces to the proxies are each one entry in
//! [`COMPONENTS`] with its manifest and address, and start once an admitted pod is meshed.

use std::path::Path;
use std::time::Duration;

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

/// The admission webhook. `address` is its Service as the API server calls it (port 443, the
/// certificate's name `weft-injector.weft.svc`).
pub const INJECTOR: Component = Component {
    name: "weft-injector",
    address: "weft-injector.weft.svc:443",
    manifest: include_str!("control_plane/injector.yaml"),
};

/// The name the injector's generated certificate is verified as.
pub const INJECTOR_HOST: &str = "weft-injector.weft.svc";
/// Its Service port.
pub const INJECTOR_PORT: u16 = 443;

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

    /// What the injector is told to tell the proxies about this control plane (its flags).
    pub fn announced(self) -> Vec<String> {
        let mut args = Vec::new();
        if self.runs(&DISCOVERY) {
            args.extend(["--discovery-addr".to_owned(), DISCOVERY.address.to_owned()]);
        }
        if self.runs(&IDENTITY) {
            args.extend(["--identity-addr".to_owned(), IDENTITY.address.to_owned()]);
        }
        args
    }

    /// The injector's manifest: Namespaces read from `cluster_dir`, its CA written to `ca_file`,
    /// this control plane announced.
    pub fn injector_manifest(self, cluster_dir: &Path, ca_file: &Path) -> String {
        let mut args = vec![
            "--listen".to_owned(),
            "0.0.0.0:8443".to_owned(),
            "--write-ca".to_owned(),
            ca_file.display().to_string(),
            "--namespace-lookup".to_owned(),
            format!("file:{}", cluster_dir.display()),
        ];
        args.extend(self.announced());
        // A JSON array is a YAML flow sequence, quoted as needed.
        let args = serde_json::Value::from(args).to_string();
        [NAMESPACE, &INJECTOR.manifest.replace("{{ARGS}}", &args)].join("\n---\n")
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
        assert!(ControlPlane::None.announced().is_empty());
    }

    #[test]
    fn discovery_reads_the_cluster_directory_and_is_announced() {
        let yaml = ControlPlane::Discovery.manifests(Path::new("/state/tb-1/cluster"), DAY);
        assert!(yaml.contains("--dir, \"/state/tb-1/cluster\""), "{yaml}");
        assert!(!yaml.contains("{{"), "{yaml}");
        assert_eq!(
            ControlPlane::Discovery.announced(),
            [
                "--discovery-addr",
                "weft-discovery.weft.svc.cluster.local:8086"
            ]
        );
        let plan = crate::manifest::plan(&yaml).unwrap();
        assert_eq!(
            plan.workloads[0].spec.containers[0].built_binary(),
            Some("weft-discovery")
        );
    }

    #[test]
    fn full_adds_the_ca_serving_its_secret_and_announces_both() {
        assert_eq!(
            ControlPlane::Full.announced(),
            [
                "--discovery-addr",
                "weft-discovery.weft.svc.cluster.local:8086",
                "--identity-addr",
                "weft-identity.weft.svc.cluster.local:8080"
            ]
        );
        let yaml = ControlPlane::Full.manifests(Path::new("/state/tb-1/cluster"), DAY);
        assert!(!yaml.contains("{{"), "{yaml}");
        assert!(
            ControlPlane::Full
                .manifests(Path::new("/x"), Duration::from_secs(20))
                .contains(r#"value: "20000ms""#)
        );
        assert_eq!(yaml.matches("kind: Namespace").count(), 1, "{yaml}");
        let plan = crate::manifest::plan(&yaml).unwrap();
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
        assert!(yaml.contains("secretName: weft-identity-ca"), "{yaml}");
        assert!(
            plan.services
                .iter()
                .any(|s| s.name == "weft-identity" && s.ports.iter().any(|p| p.port == 8080)),
            "the CA's Service"
        );
    }

    #[test]
    fn the_injector_reads_namespaces_from_the_cluster_directory_and_announces_the_control_plane() {
        let yaml = ControlPlane::Full.injector_manifest(
            Path::new("/state/tb-1/cluster"),
            Path::new("/state/tb-1/injector-ca.pem"),
        );
        let plan = crate::manifest::plan(&yaml).unwrap();
        let injector = &plan.workloads[0];
        assert_eq!(injector.namespace, "weft");
        let container = &injector.spec.containers[0];
        assert_eq!(container.built_binary(), Some("weft-injector"));
        let args = container.args.join(" ");
        assert!(
            args.contains("--namespace-lookup file:/state/tb-1/cluster"),
            "{args}"
        );
        assert!(
            args.contains("--write-ca /state/tb-1/injector-ca.pem"),
            "{args}"
        );
        assert!(
            args.contains("--identity-addr weft-identity.weft.svc.cluster.local:8080"),
            "{args}"
        );
        let service = &plan.services[0];
        assert_eq!(
            (service.name.as_str(), service.ports[0].port),
            ("weft-injector", INJECTOR_PORT)
        );
        let bare = ControlPlane::None.injector_manifest(Path::new("/c"), Path::new("/ca.pem"));
        assert!(!bare.contains("--discovery-addr"), "{bare}");
    }
}
