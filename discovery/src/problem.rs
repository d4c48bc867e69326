//! A Kubernetes object (or one of its annotations) the translation had to skip, with the reason —
//! logged by the caller so operators can find and fix the object.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

impl Problem {
    pub fn new(kind: &'static str, namespace: &str, name: &str, reason: impl Into<String>) -> Self {
        Problem {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}: {}",
            self.kind, self.namespace, self.name, self.reason
        )
    }
}
