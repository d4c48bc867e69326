//! The part of a Kubernetes pod spec the testbed acts on, read with serde (unknown fields ignored),
//! and how a container becomes an argv + environment on this machine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::volumes::{Volume, VolumeMount};

/// `int-or-string` as Kubernetes uses it for ports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u16),
    Str(String),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub init_containers: Vec<ContainerSpec>,
    pub containers: Vec<ContainerSpec>,
    pub security_context: Option<SecurityContext>,
    pub service_account_name: Option<String>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub volumes: Vec<Volume>,
    /// Always (the default), OnFailure or Never: whether the pod can complete.
    pub restart_policy: Option<String>,
    /// Between SIGTERM and SIGKILL when the pod is stopped.
    pub termination_grace_period_seconds: Option<u64>,
}

impl PodSpec {
    /// True when the pod's containers are meant to run to completion (a Job's pods): once they
    /// have all exited the pod is Succeeded or Failed.
    pub fn completes(&self) -> bool {
        matches!(self.restart_policy.as_deref(), Some("Never" | "OnFailure"))
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub working_dir: Option<String>,
    pub ports: Vec<ContainerPort>,
    pub readiness_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    pub startup_probe: Option<Probe>,
    pub lifecycle: Option<Lifecycle>,
    /// `Always` on an init container makes it a native sidecar (Kubernetes 1.29+).
    pub restart_policy: Option<String>,
    pub security_context: Option<SecurityContext>,
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Lifecycle {
    pub post_start: Option<LifecycleHandler>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LifecycleHandler {
    pub exec: Option<ExecAction>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: u16,
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecurityContext {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Probe {
    pub http_get: Option<HttpGetAction>,
    pub tcp_socket: Option<TcpSocketAction>,
    pub exec: Option<ExecAction>,
    /// Not run by the testbed; kept so that such a probe fails instead of passing unnoticed.
    pub grpc: Option<serde_json::Value>,
    /// Seconds per attempt (Kubernetes' default: 1).
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    #[serde(default)]
    pub path: Option<String>,
    pub port: IntOrString,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocketAction {
    pub port: IntOrString,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecAction {
    pub command: Vec<String>,
}

/// Pod facts a container's environment may refer to through `valueFrom.fieldRef`.
#[derive(Debug, Clone)]
pub struct PodFacts<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub ip: &'a str,
    pub service_account: &'a str,
    pub node_name: &'a str,
}

impl ContainerSpec {
    /// The binary of this build the image stands for, when its repository basename (any
    /// registry, tag or digest) is one of [`crate::proxy_bin::BUILT`].
    pub fn built_binary(&self) -> Option<&'static str> {
        let without_digest = self.image.split('@').next().unwrap_or_default();
        let basename = without_digest.rsplit('/').next().unwrap_or_default();
        let repository = basename.split(':').next().unwrap_or_default();
        crate::proxy_bin::BUILT
            .iter()
            .map(|b| b.name)
            .find(|name| *name == repository)
    }

    /// An init container that keeps running beside the app containers (`restartPolicy: Always`).
    pub fn is_sidecar(&self) -> bool {
        self.restart_policy.as_deref() == Some("Always")
    }

    /// `command` of the exec `postStart` hook, if any, with `command[0]` becoming the built
    /// binary for images of this build (`weft-proxy wait-ready`).
    pub fn post_start(
        &self,
        binaries: &BTreeMap<String, PathBuf>,
    ) -> Result<Option<Vec<String>>, String> {
        let Some(command) = self
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|h| h.exec.as_ref())
            .map(|e| e.command.clone())
        else {
            return Ok(None);
        };
        let mut command = command;
        if let (Some(name), Some(first)) = (self.built_binary(), command.first_mut())
            && *first == name
        {
            let bin = binaries
                .get(name)
                .ok_or_else(|| format!("the {name} binary was not found"))?;
            *first = bin.display().to_string();
        }
        if command.is_empty() {
            return Err(format!(
                "container {}: postStart exec has no command",
                self.name
            ));
        }
        Ok(Some(command))
    }

    /// True when the image's repository basename is `weft-proxy` (any registry, tag or digest).
    pub fn is_proxy_image(&self) -> bool {
        self.built_binary() == Some(crate::proxy_bin::PROXY.name)
    }

    /// Resolves a port given by number or by the name of one of this container's ports.
    pub fn resolve_port(&self, port: &IntOrString) -> Option<u16> {
        match port {
            IntOrString::Int(n) => Some(*n),
            IntOrString::Str(name) => match name.parse::<u16>() {
                Ok(n) => Some(n),
                Err(_) => self
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| p.container_port),
            },
        }
    }

    /// The UID and GID the process runs as: container securityContext, else the pod's, else root.
    pub fn identity(&self, pod: Option<&SecurityContext>) -> (u32, u32) {
        let own = self.security_context.as_ref();
        let uid = own
            .and_then(|s| s.run_as_user)
            .or_else(|| pod.and_then(|s| s.run_as_user))
            .unwrap_or(0);
        let gid = own
            .and_then(|s| s.run_as_group)
            .or_else(|| pod.and_then(|s| s.run_as_group))
            .unwrap_or(0);
        (uid, gid)
    }

    /// The container's environment, in declaration order, with `fieldRef`s filled in.
    pub fn environment(&self, pod: &PodFacts<'_>) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(self.env.len());
        for var in &self.env {
            let value = match (&var.value, &var.value_from) {
                (_, Some(from)) => field_ref_value(&var.name, from, pod)?,
                (Some(v), None) => expand_references(v, &out),
                (None, None) => String::new(),
            };
            out.push((var.name.clone(), value));
        }
        Ok(out)
    }

    /// The argv to run: `command` + `args` with `$(VAR)` references expanded as Kubernetes does;
    /// for images of this build (weft-proxy, weft-discovery) `command[0]` (or the missing
    /// command) becomes the built binary, found in `binaries` by name.
    pub fn argv(
        &self,
        env: &[(String, String)],
        binaries: &BTreeMap<String, PathBuf>,
    ) -> Result<Vec<String>, String> {
        let mut argv: Vec<String> = self
            .command
            .iter()
            .chain(self.args.iter())
            .map(|a| expand_references(a, env))
            .collect();
        if let Some(name) = self.built_binary() {
            let bin = binaries
                .get(name)
                .ok_or_else(|| format!("the {name} binary was not found"))?
                .display()
                .to_string();
            if self.command.is_empty() {
                argv.insert(0, bin);
            } else {
                argv[0] = bin;
            }
        } else if self.command.is_empty() {
            // The image is ignored here, so there is no entrypoint to fall back on.
            return Err(format!(
                "container {} has no `command`; the testbed ignores images, so give one",
                self.name
            ));
        }
        Ok(argv)
    }
}

fn field_ref_value(
    var: &str,
    from: &serde_json::Value,
    pod: &PodFacts<'_>,
) -> Result<String, String> {
    let path = from
        .get("fieldRef")
        .and_then(|f| f.get("fieldPath"))
        .and_then(|p| p.as_str())
        .ok_or_else(|| format!("env {var}: only valueFrom.fieldRef is supported by the testbed"))?;
    let value = match path {
        "metadata.name" => pod.name,
        "metadata.namespace" => pod.namespace,
        "status.podIP" => pod.ip,
        "spec.serviceAccountName" => pod.service_account,
        "spec.nodeName" => pod.node_name,
        other => {
            return Err(format!(
                "env {var}: fieldRef {other} is not supported by the testbed"
            ));
        }
    };
    Ok(value.to_string())
}

/// Kubernetes `$(NAME)` expansion: defined names are replaced, `$$` escapes, the rest stays as is.
fn expand_references(input: &str, env: &[(String, String)]) -> String {
    let lookup: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = lookup.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(json: serde_json::Value) -> ContainerSpec {
        serde_json::from_value(json).unwrap()
    }

    fn facts() -> PodFacts<'static> {
        PodFacts {
            name: "web-0",
            namespace: "shop",
            ip: "198.18.0.7",
            service_account: "web",
            node_name: "node",
        }
    }

    #[test]
    fn proxy_image_is_recognised_by_repository_basename() {
        for image in [
            "weft-proxy",
            "ghcr.io/weft-mesh/weft-proxy:0.1.0",
            "localhost:5000/weft-proxy@sha256:abc",
        ] {
            assert!(
                container(serde_json::json!({"name": "p", "image": image})).is_proxy_image(),
                "{image}"
            );
        }
        for image in ["weft-proxy-debug:1", "python:3", "ghcr.io/weft-proxy/app:1"] {
            assert!(
                !container(serde_json::json!({"name": "p", "image": image})).is_proxy_image(),
                "{image}"
            );
        }
    }

    #[test]
    fn proxy_command_is_replaced_by_built_binary() {
        let c = container(serde_json::json!({
            "name": "weft-init", "image": "ghcr.io/weft-mesh/weft-proxy:0.1.0",
            "command": ["weft-proxy"], "args": ["init", "--proxy-uid", "2102"]
        }));
        let binaries = BTreeMap::from([("weft-proxy".to_string(), PathBuf::from("/x/weft-proxy"))]);
        let argv = c.argv(&[], &binaries).unwrap();
        assert_eq!(argv, ["/x/weft-proxy", "init", "--proxy-uid", "2102"]);
        assert!(c.argv(&[], &BTreeMap::new()).is_err());
        let discovery = container(serde_json::json!({
            "name": "discovery", "image": "weft-discovery:dev", "args": ["--source", "file"]
        }));
        let binaries = BTreeMap::from([(
            "weft-discovery".to_string(),
            PathBuf::from("/x/weft-discovery"),
        )]);
        assert_eq!(
            discovery.argv(&[], &binaries).unwrap(),
            ["/x/weft-discovery", "--source", "file"]
        );
    }

    #[test]
    fn plain_container_needs_a_command() {
        let c = container(serde_json::json!({"name": "app", "image": "python", "args": ["x"]}));
        assert!(c.argv(&[], &BTreeMap::new()).unwrap_err().contains("app"));
    }

    #[test]
    fn env_field_refs_and_expansion() {
        let c = container(serde_json::json!({
            "name": "app", "image": "x", "command": ["echo", "$(GREETING) $(POD) $$(POD) $(NOPE)"],
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "GREETING", "value": "hi-$(POD)"}
            ]
        }));
        let env = c.environment(&facts()).unwrap();
        assert_eq!(env[0], ("POD".into(), "web-0".into()));
        assert_eq!(env[1], ("IP".into(), "198.18.0.7".into()));
        assert_eq!(env[2], ("GREETING".into(), "hi-web-0".into()));
        let argv = c.argv(&env, &BTreeMap::new()).unwrap();
        assert_eq!(argv[1], "hi-web-0 web-0 $(POD) $(NOPE)");
    }

    #[test]
    fn unsupported_value_from_is_an_error_naming_the_variable() {
        let c = container(serde_json::json!({
            "name": "app", "image": "x", "command": ["true"],
            "env": [{"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        }));
        assert!(c.environment(&facts()).unwrap_err().contains("SECRET"));
    }

    #[test]
    fn identity_prefers_container_then_pod_then_root() {
        let pod = SecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(1000),
        };
        let own =
            container(serde_json::json!({"name": "p", "securityContext": {"runAsUser": 2102}}));
        assert_eq!(own.identity(Some(&pod)), (2102, 1000));
        let plain = container(serde_json::json!({"name": "a"}));
        assert_eq!(plain.identity(Some(&pod)), (1000, 1000));
        assert_eq!(plain.identity(None), (0, 0));
    }

    #[test]
    fn named_and_numeric_ports_resolve() {
        let c = container(serde_json::json!({
            "name": "a", "ports": [{"name": "http", "containerPort": 8080}]
        }));
        assert_eq!(c.resolve_port(&IntOrString::Str("http".into())), Some(8080));
        assert_eq!(c.resolve_port(&IntOrString::Int(9)), Some(9));
        assert_eq!(c.resolve_port(&IntOrString::Str("grpc".into())), None);
    }
}
