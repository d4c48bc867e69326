//! weft-inject: adds the Weft sidecar to Kubernetes workloads.
//!
//! A pod is meshed when `weft.io/inject: enabled` is on its pod template (or Pod) or on its
//! namespace, and not overridden by `weft.io/inject: disabled` on the pod. A meshed pod gets:
//! - `weft-init` as its first init container, running `weft-proxy init` (NET_ADMIN, NET_RAW)
//!   with the pod's skip lists; the admin port 4191 is always skipped inbound;
//! - `weft-proxy` as its first container, running as UID 2102, with one `WEFT_*` environment
//!   variable per proxy annotation present and resources from `weft.io/proxy-cpu-*` and
//!   `weft.io/proxy-memory-*`, plus the control plane's addresses (`WEFT_DISCOVERY_ADDR`,
//!   `WEFT_IDENTITY_ADDR`, when given), `WEFT_TRUST_DOMAIN`, and the pod's name, namespace, IP
//!   and service account through the downward API (`WEFT_POD_*`, `WEFT_SERVICE_ACCOUNT`);
//! - with an identity service (`--identity-addr`): `WEFT_IDENTITY_TOKEN_FILE` and
//!   `WEFT_TRUST_ANCHORS` on the proxy, naming a projected service-account token (audience
//!   `weft-identity`) and the `weft-trust-anchors` ConfigMap's `ca.pem`, mounted read-only;
//! - the annotation `weft.io/injected: <injector version>` on the pod template, which records
//!   which injector meshed it.
//!
//! Workloads are recognised by apiVersion and kind (v1 Pod; apps/v1 Deployment, StatefulSet,
//! DaemonSet, ReplicaSet; batch/v1 Job, CronJob), also as items of `List` documents; anything
//! else, a custom resource called `Job` included, passes through untouched. A pod that is
//! already injected is re-injected with the current settings (the same settings give the same
//! pod, so injecting twice changes nothing); `weft.io/inject: disabled` on it takes the
//! injection out, and [`uninject`] takes out every injection. Pods on the host's network are
//! never meshed. [`inject_with_outcomes`] says what happened to each workload.
//!
//! Other `weft.io/` annotations on a namespace act as defaults for its meshed pods; the pod's own
//! annotations win. Every `weft.io/` annotation of a meshed pod or namespace must be in
//! `weft_settings::SETTINGS` with a valid value, or injection fails naming the object.

mod annotations;
mod app_probes;
mod control_plane;
mod error;
mod inject;
mod manifest;
mod namespaces;
mod outcome;
mod sidecar;
mod uninject;
mod workload;
pub mod workload_identity;

pub use control_plane::parse_trust_domain;
pub use error::InjectError;
pub use inject::{
    DEFAULT_TRUST_DOMAIN, INJECTOR_VERSION, InjectOptions, inject, inject_object,
    inject_with_outcomes, uninject,
};
pub use manifest::{parse_manifests, to_yaml};
pub use outcome::{Action, Injection, Outcome};
pub use sidecar::{INIT_CONTAINER, PROXY_CONTAINER};

#[cfg(test)]
mod readme_tests {
    #[test]
    fn readme_carries_the_current_annotation_table() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&weft_settings::markdown_table()),
            "deploy/README.md's annotation table is stale: paste weft_settings::markdown_table()"
        );
        // The project README carries the same table for people who never open deploy/.
        let project_readme = include_str!("../../README.md");
        assert!(
            project_readme.contains(&weft_settings::markdown_table()),
            "README.md's annotation table is stale: paste weft_settings::markdown_table()"
        );
    }
}
