//! Workloads (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job) and the pods each one
//! stands for: how many, and what they are called.

use crate::container::PodSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
}

impl WorkloadKind {
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "Pod" => WorkloadKind::Pod,
            "Deployment" => WorkloadKind::Deployment,
            "ReplicaSet" => WorkloadKind::ReplicaSet,
            "StatefulSet" => WorkloadKind::StatefulSet,
            "DaemonSet" => WorkloadKind::DaemonSet,
            "Job" => WorkloadKind::Job,
            _ => return None,
        })
    }

    pub fn scalable(self) -> bool {
        matches!(
            self,
            WorkloadKind::Deployment | WorkloadKind::ReplicaSet | WorkloadKind::StatefulSet
        )
    }
}

/// One workload and the pod template it stamps out.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
    pub replicas: usize,
    /// The pod template's spec as written (a pod's own, with its labels and annotations, is
    /// what the webhook admitted).
    pub spec: PodSpec,
    /// The pod template (`metadata`, `spec`) as written, for the admission webhook.
    pub template: serde_json::Value,
    /// StatefulSet `serviceName`: pods get `<pod>.<serviceName>` DNS names.
    pub service_name: Option<String>,
}

impl Workload {
    /// Name of replica `index`: the pod's own name for a Pod, `name-<n>` for a StatefulSet, and
    /// `name-<hash>-<n>` for the rest, the hash standing in for Kubernetes' pod-template-hash.
    pub fn pod_name(&self, index: usize) -> String {
        match self.kind {
            WorkloadKind::Pod => self.name.clone(),
            WorkloadKind::StatefulSet => format!("{}-{index}", self.name),
            _ => format!("{}-{}-{index}", self.name, self.template_hash()),
        }
    }

    /// The controller name recorded as a pod's owner; bare pods have none.
    pub fn owner(&self) -> Option<String> {
        (self.kind != WorkloadKind::Pod).then(|| self.name.clone())
    }

    /// The hostname/subdomain pair a replica answers to in DNS (StatefulSet or pod spec fields).
    pub fn dns_identity(&self, pod_name: &str) -> (Option<String>, Option<String>) {
        match self.kind {
            WorkloadKind::StatefulSet => (Some(pod_name.to_string()), self.service_name.clone()),
            _ => (self.spec.hostname.clone(), self.spec.subdomain.clone()),
        }
    }

    fn template_hash(&self) -> String {
        // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self
            .namespace
            .bytes()
            .chain([b'/'])
            .chain(self.name.bytes())
        {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        format!("{:06x}", hash & 0x00ff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(kind: WorkloadKind, name: &str) -> Workload {
        Workload {
            kind,
            name: name.into(),
            namespace: "default".into(),
            replicas: 2,
            spec: PodSpec::default(),
            template: serde_json::Value::Null,
            service_name: Some("db".into()),
        }
    }

    #[test]
    fn replica_names_per_kind() {
        let d = workload(WorkloadKind::Deployment, "catalog");
        let first = d.pod_name(0);
        assert!(
            first.starts_with("catalog-") && first.ends_with("-0"),
            "{first}"
        );
        assert_eq!(first.len(), "catalog-".len() + 6 + 2);
        assert_eq!(d.pod_name(1), format!("{}1", &first[..first.len() - 1]));
        assert_eq!(
            workload(WorkloadKind::StatefulSet, "db").pod_name(2),
            "db-2"
        );
        assert_eq!(workload(WorkloadKind::Pod, "solo").pod_name(0), "solo");
    }

    #[test]
    fn hash_differs_by_namespace_and_is_stable() {
        let a = workload(WorkloadKind::Deployment, "catalog");
        let mut b = a.clone();
        b.namespace = "other".into();
        assert_ne!(a.pod_name(0), b.pod_name(0));
        assert_eq!(a.pod_name(0), a.clone().pod_name(0));
    }

    #[test]
    fn owners_and_dns_identity() {
        assert_eq!(workload(WorkloadKind::Pod, "p").owner(), None);
        assert_eq!(
            workload(WorkloadKind::Job, "j").owner().as_deref(),
            Some("j")
        );
        let s = workload(WorkloadKind::StatefulSet, "db");
        assert_eq!(
            s.dns_identity("db-0"),
            (Some("db-0".into()), Some("db".into()))
        );
    }
}
