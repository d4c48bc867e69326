//! The `weft.io/` annotations of one pod template or namespace, checked against the settings table.

use std::collections::BTreeMap;

use serde_json::Value;
use weft_settings::{
    ANNOTATION_PREFIX, INJECTED_ANNOTATION, InjectMode, SETTINGS, Setting, find, validate,
};

use crate::InjectError;

/// Validated `weft.io/` settings, keyed by annotation name without the prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    values: BTreeMap<&'static str, String>,
}

impl Annotations {
    /// Reads `metadata.annotations` of an object (`metadata` may be absent). Annotations outside
    /// `weft.io/` are ignored; inside it, every name must be a setting and every value must validate.
    pub fn from_metadata(metadata: Option<&Value>, object: &str) -> Result<Self, InjectError> {
        let mut out = Self::default();
        let Some(annotations) = metadata.and_then(|m| m.get("annotations")) else {
            return Ok(out);
        };
        let annotations = match annotations {
            Value::Null => return Ok(out),
            Value::Object(map) => map,
            _ => {
                return Err(InjectError::Malformed {
                    object: object.to_owned(),
                    problem: "metadata.annotations is not a mapping".to_owned(),
                });
            }
        };
        for (key, value) in annotations {
            if !key.starts_with(ANNOTATION_PREFIX) {
                continue;
            }
            let Some(text) = value.as_str() else {
                return Err(InjectError::NotAString {
                    object: object.to_owned(),
                    annotation: key.clone(),
                    value: value.to_string(),
                });
            };
            out.insert(object, key, text)?;
        }
        Ok(out)
    }

    /// Reads annotations given as plain strings (the injector's per-namespace options).
    pub fn from_pairs(pairs: &BTreeMap<String, String>, object: &str) -> Result<Self, InjectError> {
        let mut out = Self::default();
        for (key, value) in pairs {
            if key.starts_with(ANNOTATION_PREFIX) {
                out.insert(object, key, value)?;
            }
        }
        Ok(out)
    }

    fn insert(&mut self, object: &str, key: &str, value: &str) -> Result<(), InjectError> {
        let name = key.strip_prefix(ANNOTATION_PREFIX).unwrap_or(key);
        if name == INJECTED_ANNOTATION {
            return Ok(());
        }
        let setting = find(name).ok_or_else(|| InjectError::UnknownAnnotation {
            object: object.to_owned(),
            annotation: key.to_owned(),
            known: known_annotations(),
        })?;
        validate(setting, value).map_err(|source| InjectError::BadValue {
            object: object.to_owned(),
            annotation: key.to_owned(),
            value: value.to_owned(),
            problem: Box::new(source),
        })?;
        self.values.insert(setting.annotation, value.to_owned());
        Ok(())
    }

    /// The value given for `setting`, verbatim.
    pub fn get(&self, setting: &Setting) -> Option<&str> {
        self.values.get(setting.annotation).map(String::as_str)
    }

    /// What `weft.io/inject` says, if present.
    pub fn inject_mode(&self) -> Option<InjectMode> {
        // Already validated on insert, so a parse failure cannot happen; treat it as absent anyway.
        self.values.get("inject").and_then(|v| v.parse().ok())
    }

    /// These annotations as defaults, with every annotation of `more_specific` taking precedence
    /// (a pod's own annotations over its namespace's).
    pub fn overridden_by(mut self, more_specific: &Annotations) -> Annotations {
        for (name, value) in &more_specific.values {
            self.values.insert(name, value.clone());
        }
        self
    }
}

fn known_annotations() -> String {
    SETTINGS
        .iter()
        .map(|s| s.annotation)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(annotations: Value) -> Result<Annotations, InjectError> {
        Annotations::from_metadata(
            Some(&json!({ "annotations": annotations })),
            "Pod default/p",
        )
    }

    #[test]
    fn reads_weft_annotations_and_ignores_others() {
        let a = read(json!({
            "weft.io/inject": "enabled",
            "weft.io/opaque-ports": "3306",
            "weft.io/injected": "0.1.0",
            "example.com/weft.io/x": "y",
            "prometheus.io/port": 9090,
        }))
        .unwrap();
        assert_eq!(a.inject_mode(), Some(InjectMode::Enabled));
        assert_eq!(a.get(find("opaque-ports").unwrap()), Some("3306"));
        assert_eq!(a.get(find("detect-timeout").unwrap()), None);
    }

    #[test]
    fn missing_or_null_annotations_are_empty() {
        assert_eq!(
            Annotations::from_metadata(None, "Pod default/p").unwrap(),
            Annotations::default()
        );
        assert_eq!(read(Value::Null).unwrap(), Annotations::default());
        assert_eq!(read(json!({})).unwrap().inject_mode(), None);
    }

    #[test]
    fn unknown_annotation_names_object_and_annotation() {
        let e = read(json!({"weft.io/tiemout": "1s"})).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(r#"Pod default/p: unknown annotation "weft.io/tiemout""#),
            "{text}"
        );
        assert!(text.contains("opaque-ports"), "{text}");
    }

    #[test]
    fn bad_value_names_object_annotation_value_and_expectation() {
        let e = read(json!({"weft.io/skip-outbound-ports": "0-10"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"Pod default/p: annotation "weft.io/skip-outbound-ports" has a bad value: expected a comma-separated list of ports and ranges such as "25,3306,8000-8010", got "0-10" (port 0 is not a port)"#
        );
    }

    #[test]
    fn non_string_value_is_an_error() {
        let e = read(json!({"weft.io/proxy-worker-threads": 2})).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"Pod default/p: annotation "weft.io/proxy-worker-threads" must be a string, got 2; quote it"#
        );
    }

    #[test]
    fn annotations_not_a_mapping_is_an_error() {
        assert!(read(json!(["weft.io/inject"])).is_err());
    }

    #[test]
    fn from_pairs_validates_too() {
        let mut pairs = BTreeMap::new();
        pairs.insert("weft.io/inject".to_owned(), "maybe".to_owned());
        let e = Annotations::from_pairs(&pairs, "Namespace shop").unwrap_err();
        assert!(e.to_string().starts_with("Namespace shop: "), "{e}");
        pairs.insert("weft.io/inject".to_owned(), "enabled".to_owned());
        pairs.insert("team".to_owned(), "x".to_owned());
        let a = Annotations::from_pairs(&pairs, "Namespace shop").unwrap();
        assert_eq!(a.inject_mode(), Some(InjectMode::Enabled));
    }

    #[test]
    fn more_specific_wins() {
        let ns = read(
            json!({"weft.io/inject": "enabled", "weft.io/detect-timeout": "2s",
                              "weft.io/opaque-ports": "25"}),
        )
        .unwrap();
        let pod =
            read(json!({"weft.io/inject": "disabled", "weft.io/detect-timeout": "5s"})).unwrap();
        let merged = ns.overridden_by(&pod);
        assert_eq!(merged.inject_mode(), Some(InjectMode::Disabled));
        assert_eq!(merged.get(find("detect-timeout").unwrap()), Some("5s"));
        assert_eq!(merged.get(find("opaque-ports").unwrap()), Some("25"));
    }
}
