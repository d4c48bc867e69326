//! The cluster objects discovery translates — Services, EndpointSlices and Pods — as one value that
//! every source (Kubernetes watchers, a directory of YAML files) produces whole.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Self> {
        let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
        let namespace = meta
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("default");
        Some(ObjectKey::new(namespace, name))
    }
}

/// Everything discovery knows about the cluster at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterObjects {
    pub services: BTreeMap<ObjectKey, Service>,
    pub slices: BTreeMap<ObjectKey, EndpointSlice>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    /// The writer's revision of this set, when the source has one (the file source's `revision`
    /// file): lets a writer learn, through the admin server's `/synced`, that discovery serves
    /// what it wrote.
    pub revision: Option<u64>,
}

/// Why a document could not be taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("document {index}: {kind} {name:?} is not a valid {kind}: {reason}")]
    Invalid {
        index: usize,
        kind: String,
        name: String,
        reason: String,
    },
    #[error("document {index}: {kind} has no metadata.name")]
    Unnamed { index: usize, kind: String },
}

impl ClusterObjects {
    /// How many objects of each kind, for metrics and logs.
    pub fn counts(&self) -> [(&'static str, usize); 3] {
        [
            ("Service", self.services.len()),
            ("EndpointSlice", self.slices.len()),
            ("Pod", self.pods.len()),
        ]
    }

    pub fn insert_service(&mut self, service: Service) -> bool {
        ObjectKey::of(&service.metadata)
            .map(|key| self.services.insert(key, service))
            .is_some()
    }

    pub fn insert_slice(&mut self, slice: EndpointSlice) -> bool {
        ObjectKey::of(&slice.metadata)
            .map(|key| self.slices.insert(key, slice))
            .is_some()
    }

    pub fn insert_pod(&mut self, pod: Pod) -> bool {
        ObjectKey::of(&pod.metadata)
            .map(|key| self.pods.insert(key, pod))
            .is_some()
    }

    /// Adds everything of `other` (a later file's object wins over an earlier one of the same name).
    pub fn extend(&mut self, other: &ClusterObjects) {
        self.services
            .extend(other.services.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.slices
            .extend(other.slices.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.pods
            .extend(other.pods.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// Reads a (multi-document) YAML or JSON text. All or nothing: one bad document rejects the
    /// text, so a half-written file never replaces a good one. Kinds other than the three are
    /// ignored (a directory may hold a whole manifest); `List` documents are unpacked.
    pub fn from_yaml(text: &str) -> Result<ClusterObjects, DocumentError> {
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
        let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
            .map_err(|e| DocumentError::Yaml(one_line(&e.to_string())))?;
        let mut objects = ClusterObjects::default();
        let mut index = 0;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            index += 1;
            let items = match doc.get("kind").and_then(Value::as_str) {
                Some("List") => match doc.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    _ => Vec::new(),
                },
                _ => vec![doc],
            };
            for item in items {
                objects.take(index, item)?;
            }
        }
        Ok(objects)
    }

    fn take(&mut self, index: usize, doc: Value) -> Result<(), DocumentError> {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let invalid = |e: serde_json::Error| DocumentError::Invalid {
            index,
            kind: kind.clone(),
            name: name.clone(),
            reason: e.to_string(),
        };
        let named = match kind.as_str() {
            "Service" => self.insert_service(serde_json::from_value(doc).map_err(invalid)?),
            "EndpointSlice" => self.insert_slice(serde_json::from_value(doc).map_err(invalid)?),
            "Pod" => self.insert_pod(serde_json::from_value(doc).map_err(invalid)?),
            _ => return Ok(()),
        };
        if named {
            Ok(())
        } else {
            Err(DocumentError::Unnamed { index, kind })
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_kinds_and_ignores_others() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: web-1}
"#;
        let objects = ClusterObjects::from_yaml(yaml).unwrap();
        assert!(
            objects
                .services
                .contains_key(&ObjectKey::new("shop", "web"))
        );
        assert!(
            objects
                .pods
                .contains_key(&ObjectKey::new("default", "web-1"))
        );
        assert_eq!(objects.slices.len(), 0);
    }

    #[test]
    fn one_bad_document_rejects_the_text() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: 7}\n";
        let err = ClusterObjects::from_yaml(yaml).unwrap_err();
        assert!(
            matches!(&err, DocumentError::Invalid { index: 2, name, .. } if name == "bad"),
            "{err}"
        );
        assert!(matches!(
            ClusterObjects::from_yaml("kind: Pod\nmetadata: {}\n"),
            Err(DocumentError::Unnamed { .. })
        ));
        assert!(matches!(
            ClusterObjects::from_yaml("kind: [\n"),
            Err(DocumentError::Yaml(_))
        ));
    }
}
