//! The `weft.io/` annotations of each namespace: from the injector's options and from `Namespace`
//! objects in the same input (which take precedence, being the more recent statement).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::InjectError;
use crate::annotations::Annotations;
use crate::workload::{describe, kind, objects};

#[derive(Debug, Default)]
pub struct Namespaces {
    by_name: BTreeMap<String, Annotations>,
}

impl Namespaces {
    /// Validates every namespace's `weft.io/` annotations; an error names the namespace.
    pub fn collect(
        configured: &BTreeMap<String, BTreeMap<String, String>>,
        docs: &[Value],
    ) -> Result<Self, InjectError> {
        let mut by_name = BTreeMap::new();
        for (name, pairs) in configured {
            let annotations = Annotations::from_pairs(pairs, &format!("Namespace {name}"))?;
            by_name.insert(name.clone(), annotations);
        }
        let namespace_docs = objects(docs)
            .into_iter()
            .filter(|doc| kind(doc) == Some("Namespace"));
        for doc in namespace_docs {
            let object = describe(doc);
            let Some(name) = doc.pointer("/metadata/name").and_then(Value::as_str) else {
                return Err(InjectError::Malformed {
                    object,
                    problem: "has no metadata.name".to_owned(),
                });
            };
            let annotations = Annotations::from_metadata(doc.get("metadata"), &object)?;
            let merged = by_name
                .remove(name)
                .unwrap_or_default()
                .overridden_by(&annotations);
            by_name.insert(name.to_owned(), merged);
        }
        Ok(Self { by_name })
    }

    /// The namespace's annotations; none when it is unknown.
    pub fn get(&self, name: &str) -> Annotations {
        self.by_name.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weft_settings::{InjectMode, find};

    #[test]
    fn documents_override_options() {
        let mut configured = BTreeMap::new();
        configured.insert(
            "shop".to_owned(),
            BTreeMap::from([
                ("weft.io/inject".to_owned(), "enabled".to_owned()),
                ("weft.io/detect-timeout".to_owned(), "2s".to_owned()),
            ]),
        );
        let docs = vec![json!({"kind": "Namespace", "metadata": {"name": "shop",
            "annotations": {"weft.io/detect-timeout": "3s"}}})];
        let ns = Namespaces::collect(&configured, &docs).unwrap();
        let shop = ns.get("shop");
        assert_eq!(shop.inject_mode(), Some(InjectMode::Enabled));
        assert_eq!(shop.get(find("detect-timeout").unwrap()), Some("3s"));
        assert_eq!(ns.get("elsewhere"), Annotations::default());
    }

    #[test]
    fn namespaces_inside_lists_count() {
        let docs = vec![json!({"apiVersion": "v1", "kind": "List", "items": [
            {"kind": "Namespace", "metadata": {"name": "shop",
                "annotations": {"weft.io/inject": "enabled"}}}]})];
        let ns = Namespaces::collect(&BTreeMap::new(), &docs).unwrap();
        assert_eq!(ns.get("shop").inject_mode(), Some(InjectMode::Enabled));
    }

    #[test]
    fn bad_namespace_annotation_names_the_namespace() {
        let docs = vec![json!({"kind": "Namespace", "metadata": {"name": "shop",
            "annotations": {"weft.io/inject": "yes"}}})];
        let e = Namespaces::collect(&BTreeMap::new(), &docs).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(r#"Namespace shop: annotation "weft.io/inject""#),
            "{e}"
        );
    }
}
