//! Reading and writing multi-document Kubernetes YAML as `serde_json::Value`s, which keep every
//! field the injector does not touch exactly as it was.
//!
//! Numbers are read the way kubectl reads them (YAML 1.1, as sigs.k8s.io/yaml does): a plain
//! `0644` is octal, 420, as in a volume's `defaultMode`. Plain `yes`, `no`, `on`, `off`, `y` and
//! `n` stay the strings they spell, as a string field (an env value, a ConfigMap's data) needs;
//! only `true` and `false` are booleans. Output is quoted for YAML 1.1 readers: a string that
//! any reader could take for a number, a boolean or null is written in quotes.

use serde_json::Value;

use crate::InjectError;

/// Parses every document of a YAML stream; empty documents are skipped.
pub fn parse_manifests(yaml: &str) -> Result<Vec<Value>, InjectError> {
    let mut options = serde_saphyr::Options::default();
    // The CLI reports errors on one line; snippets span several.
    options.with_snippet = false;
    // A repeated key in a manifest is a mistake whose outcome the user did not choose.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // YAML 1.1 octal, as kubectl reads `defaultMode: 0644` (YAML 1.2 would make it 644.0).
    options.legacy_octal_numbers = true;
    // `yes`/`on`/`no`/`off` are kept as the strings they spell; `true`/`false` stay booleans.
    options.strict_booleans = true;
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

#[cfg(test)]
mod yaml11_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn octal_modes_are_read_as_kubectl_reads_them() {
        let docs = parse_manifests(
            "defaultMode: 0644\nmode: 0755\nzero: 0\nhex: 0x1F\nquoted: \"0644\"\n",
        )
        .unwrap();
        assert_eq!(
            docs[0],
            json!({"defaultMode": 420, "mode": 493, "zero": 0, "hex": 31, "quoted": "0644"})
        );
        let yaml = to_yaml(&docs).unwrap();
        assert!(yaml.contains("defaultMode: 420\n"), "{yaml}");
        assert!(
            yaml.contains("quoted: '0644'") || yaml.contains("quoted: \"0644\""),
            "{yaml}"
        );
    }

    #[test]
    fn yaml11_boolean_spellings_stay_strings_and_are_written_quoted() {
        let words = [
            "yes", "Yes", "YES", "no", "No", "on", "On", "ON", "off", "Off", "y", "n",
        ];
        let yaml: String = words.iter().map(|w| format!("k{w}: {w}\n")).collect();
        let doc = &parse_manifests(&yaml).unwrap()[0];
        for w in words {
            assert_eq!(doc[format!("k{w}")], json!(w), "{w}");
        }
        let out = to_yaml(std::slice::from_ref(doc)).unwrap();
        for w in words {
            // Quoted, so a YAML 1.1 reader (kubectl) also reads the string.
            assert!(
                out.contains(&format!("k{w}: '{w}'")) || out.contains(&format!("k{w}: \"{w}\"")),
                "{w} in {out}"
            );
        }
        let doc = &parse_manifests("t: true\nf: false\nT: True\n").unwrap()[0];
        assert_eq!(doc, &json!({"t": true, "f": false, "T": true}));
    }

    #[test]
    fn numbers_quantities_and_quoted_numbers_keep_their_types() {
        let yaml = r#"
big: 9223372036854775807
bigger: 18446744073709551615
negative: -42
ratio: 0.5
exp: 1.5e3
cpu: 500m
memory: 1Gi
port: "8080"
annotation: "1.0"
version: 1.10
empty: ""
nothing: ~
date: 2024-01-02
"#;
        let docs = parse_manifests(yaml).unwrap();
        let d = &docs[0];
        assert_eq!(d["big"], json!(9_223_372_036_854_775_807_i64));
        assert_eq!(d["bigger"], json!(18_446_744_073_709_551_615_u64));
        assert_eq!(d["negative"], json!(-42));
        assert_eq!(d["ratio"], json!(0.5));
        assert_eq!(d["exp"], json!(1500.0));
        assert_eq!(d["cpu"], json!("500m"));
        assert_eq!(d["memory"], json!("1Gi"));
        assert_eq!(d["port"], json!("8080"));
        assert_eq!(d["annotation"], json!("1.0"));
        assert_eq!(d["version"], json!(1.1));
        assert_eq!(d["empty"], json!(""));
        assert_eq!(d["nothing"], Value::Null);
        assert_eq!(d["date"], json!("2024-01-02"));
        // Written and read again: the same values.
        assert_eq!(parse_manifests(&to_yaml(&docs).unwrap()).unwrap(), docs);
    }
}
