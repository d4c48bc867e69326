//! The one error type for every setting value: what was expected, what was given, and why it failed.

use std::fmt;

/// A setting value that does not parse. The message names what was expected and what was given,
/// so a caller only has to add which setting, annotation or object it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingError {
    expected: &'static str,
    given: String,
    reason: Option<String>,
}

impl SettingError {
    pub(crate) fn new(expected: &'static str, given: &str) -> Self {
        Self {
            expected,
            given: given.to_owned(),
            reason: None,
        }
    }

    /// Adds why the value was refused, when "expected X" alone would leave the user guessing.
    pub(crate) fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// What a valid value looks like, e.g. `a duration such as "250ms", "10s", "2m" or "1h"`.
    pub fn expected(&self) -> &'static str {
        self.expected
    }

    /// The value that was refused, verbatim.
    pub fn given(&self) -> &str {
        &self.given
    }

    /// The specific reason, if one was found (e.g. `port 0 is not a port`).
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}, got {:?}", self.expected, self.given)?;
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_expectation_value_and_reason() {
        let e = SettingError::new("a port", "x").because("not a number");
        assert_eq!(e.to_string(), r#"expected a port, got "x" (not a number)"#);
        assert_eq!(e.expected(), "a port");
        assert_eq!(e.given(), "x");
        assert_eq!(e.reason(), Some("not a number"));
    }

    #[test]
    fn message_without_reason() {
        let e = SettingError::new("a port", "");
        assert_eq!(e.to_string(), r#"expected a port, got """#);
    }
}
