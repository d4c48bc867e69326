//! The value of `weft.io/inject` itself.

use std::fmt;
use std::str::FromStr;

use crate::SettingError;

const EXPECTED: &str = r#""enabled" or "disabled""#;

/// Whether a pod (or every pod of a namespace) gets the sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectMode {
    Enabled,
    Disabled,
}

impl FromStr for InjectMode {
    type Err = SettingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "enabled" => Ok(Self::Enabled),
            "disabled" => Ok(Self::Disabled),
            _ => Err(SettingError::new(EXPECTED, s)),
        }
    }
}

impl fmt::Display for InjectMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        })
    }
}

/// `InjectMode::from_str` as a function, alongside the other parsers.
pub fn parse_inject_mode(s: &str) -> Result<InjectMode, SettingError> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_modes() {
        assert_eq!(parse_inject_mode("enabled").unwrap(), InjectMode::Enabled);
        assert_eq!(parse_inject_mode("disabled").unwrap(), InjectMode::Disabled);
        assert_eq!(InjectMode::Enabled.to_string(), "enabled");
    }

    #[test]
    fn rejects_others() {
        for bad in ["", "true", "Enabled", "yes", "on"] {
            let e = parse_inject_mode(bad).unwrap_err();
            assert!(e.to_string().contains(r#""enabled" or "disabled""#), "{e}");
        }
    }
}
