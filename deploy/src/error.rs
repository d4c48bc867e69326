//! What can go wrong while injecting, each naming the object (e.g. "Deployment default/web") and,
//! where relevant, the annotation and its value.

use weft_settings::SettingError;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot read the manifests as YAML: {reason}")]
    Parse { reason: String },

    #[error("cannot write the injected manifests as YAML: {reason}")]
    Serialize { reason: String },

    #[error("{object}: unknown annotation {annotation:?} (known weft.io/ annotations: {known})")]
    UnknownAnnotation {
        object: String,
        annotation: String,
        known: String,
    },

    #[error("{object}: annotation {annotation:?} must be a string, got {value}; quote it")]
    NotAString {
        object: String,
        annotation: String,
        value: String,
    },

    #[error("{object}: annotation {annotation:?} has a bad value: {problem}")]
    BadValue {
        object: String,
        annotation: String,
        value: String,
        problem: Box<SettingError>,
    },

    #[error("{object}: {problem}")]
    Malformed { object: String, problem: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_value_names_object_annotation_value_and_expectation() {
        let source = weft_settings::parse_duration("soon").unwrap_err();
        let e = InjectError::BadValue {
            object: "Deployment default/web".into(),
            annotation: "weft.io/detect-timeout".into(),
            value: "soon".into(),
            problem: Box::new(source),
        };
        let text = e.to_string();
        assert!(text.starts_with("Deployment default/web: "), "{text}");
        assert!(text.contains("weft.io/detect-timeout"), "{text}");
        assert!(text.contains(r#"got "soon""#), "{text}");
        assert!(text.contains("expected a duration"), "{text}");
    }
}
