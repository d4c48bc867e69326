//! What the injector did to each workload, for the one-line-per-object summary on stderr.

use std::fmt;

use serde_json::Value;

/// What happened to one workload (a Pod or an object with a pod template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The sidecar was added.
    Injected,
    /// An older injection was replaced by one with the current settings.
    Updated,
    /// Already injected with exactly the current settings: left byte for byte as it was.
    Unchanged,
    /// The injection was taken out; the reason says why.
    Uninjected(String),
    /// Left as it was; the reason says why.
    Skipped(String),
}

/// One workload and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How errors name it too: "Deployment shop/web".
    pub object: String,
    pub action: Action,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let object = &self.object;
        match &self.action {
            Action::Injected => write!(f, "injected {object}"),
            Action::Updated => write!(
                f,
                "updated {object}: its injection was replaced by one with the current settings"
            ),
            Action::Unchanged => write!(f, "unchanged {object}: already injected as asked"),
            Action::Uninjected(reason) => write!(f, "uninjected {object}: {reason}"),
            Action::Skipped(reason) => write!(f, "skipped {object}: {reason}"),
        }
    }
}

/// The documents after injection (or uninjection), and what happened to each workload in them.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub docs: Vec<Value>,
    pub outcomes: Vec<Outcome>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_object_naming_it() {
        let line = |action| {
            Outcome {
                object: "Deployment shop/web".into(),
                action,
            }
            .to_string()
        };
        assert_eq!(line(Action::Injected), "injected Deployment shop/web");
        assert_eq!(
            line(Action::Skipped("hostNetwork".into())),
            "skipped Deployment shop/web: hostNetwork"
        );
        assert!(line(Action::Updated).starts_with("updated Deployment shop/web: "));
        assert!(line(Action::Unchanged).starts_with("unchanged Deployment shop/web: "));
        assert_eq!(
            line(Action::Uninjected("--uninject".into())),
            "uninjected Deployment shop/web: --uninject"
        );
    }
}
