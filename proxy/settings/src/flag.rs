//! Booleans as written in annotations: "true" or "false", nothing else.

use crate::SettingError;

const EXPECTED: &str = r#""true" or "false""#;

pub fn parse_bool(s: &str) -> Result<bool, SettingError> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SettingError::new(EXPECTED, s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_true_and_false() {
        assert!(parse_bool("true").unwrap());
        assert!(!parse_bool(" false ").unwrap());
        for bad in ["", "yes", "1", "True", "on"] {
            assert!(parse_bool(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
