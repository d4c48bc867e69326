//! Reading and writing multi-document Kubernetes YAML as `serde_json::Value`s, which keep every
//! field the injector does not touch exactly as it was.

use serde_json::Value;

use crate::InjectError;

/// Parses every document of a YAML stream; empty documents are skipped.
pub fn parse_manifests(yaml: &str) -> Result<Vec<Value>, InjectError> {
    let mut options = serde_saphyr::Options::default();
    // The CLI reports errors on one line; snippets span several.
    options.with_snippet = false;
    // A repeated key in a manifest is a mistake whose outcome the user did not choose.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(yaml, options).map_err(|e| {
            InjectError::Parse {
                reason: one_line(&e.to_string()),
            }
        })?;
    Ok(docs.into_iter().filter(|doc| !doc.is_null()).collect())
}

/// Writes the documents as one YAML stream separated by `---`.
pub fn to_yaml(docs: &[Value]) -> Result<String, InjectError> {
    serde_saphyr::to_string_multiple(docs).map_err(|e| InjectError::Serialize {
        reason: one_line(&e.to_string()),
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_multiple_documents_skipping_empty_ones() {
        let yaml = "---\nkind: A\n---\n---\nkind: B\n...\n---\n# only a comment\n";
        let docs = parse_manifests(yaml).unwrap();
        assert_eq!(docs, vec![json!({"kind": "A"}), json!({"kind": "B"})]);
        assert!(parse_manifests("").unwrap().is_empty());
    }

    #[test]
    fn keeps_scalar_types() {
        let yaml = r#"
port: 8080
quoted: "8080"
enabled: true
quoted_bool: "true"
ratio: 0.5
name: web
nothing: null
"#;
        let docs = parse_manifests(yaml).unwrap();
        assert_eq!(
            docs[0],
            json!({"port": 8080, "quoted": "8080", "enabled": true, "quoted_bool": "true",
                   "ratio": 0.5, "name": "web", "nothing": null})
        );
    }

    #[test]
    fn round_trip_keeps_types() {
        let docs = vec![
            json!({"kind": "ConfigMap", "data": {
                "port": "8080", "flag": "true", "no": "no", "yes": "on", "null": "null",
                "octal": "0755", "float": "1.5", "empty": "", "spaces": " padded ",
                "multi": "line one\nline two\n", "colon": "a: b", "hash": "#x",
            }}),
            json!({"kind": "Other", "n": 3, "b": false, "f": 2.25, "list": [1, "1", null, {}], "obj": {}}),
        ];
        let yaml = to_yaml(&docs).unwrap();
        assert_eq!(parse_manifests(&yaml).unwrap(), docs, "{yaml}");
    }

    #[test]
    fn documents_are_separated() {
        let yaml = to_yaml(&[json!({"a": 1}), json!({"b": 2})]).unwrap();
        assert!(yaml.contains("---"), "{yaml}");
        assert_eq!(to_yaml(&[]).unwrap(), "");
    }

    #[test]
    fn bad_yaml_is_a_one_line_error() {
        let e = parse_manifests("a: [1, 2\nb: }").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("cannot read the manifests as YAML"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert!(parse_manifests("a: 1\na: 2\n").is_err());
    }
}
