//! Kubernetes resource quantities ("500m", "1", "64Mi", "1G") for the proxy container's resources.

use crate::SettingError;

const EXPECTED: &str = r#"a Kubernetes quantity such as "500m", "1", "64Mi" or "1G" (suffixes: n u m k M G T P E Ki Mi Gi Ti Pi Ei, or e<exponent>)"#;
const SUFFIXES: [&str; 16] = [
    "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
];

/// Checks Kubernetes quantity syntax and returns the value trimmed, to be placed in the pod spec
/// verbatim (Kubernetes does its own arithmetic). Negative quantities make no sense for resources.
pub fn parse_quantity(s: &str) -> Result<String, SettingError> {
    let err = || SettingError::new(EXPECTED, s);
    let trimmed = s.trim();
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(number_end);
    if trimmed.starts_with('-') {
        return Err(err().because("negative quantities are not allowed"));
    }
    if !number.bytes().any(|b| b.is_ascii_digit()) || number.matches('.').count() > 1 {
        return Err(err().because("it must start with a number"));
    }
    if !SUFFIXES.contains(&suffix) && !is_exponent(suffix) {
        return Err(err().because(format!("unknown suffix {suffix:?}")));
    }
    Ok(trimmed.to_owned())
}

fn is_exponent(suffix: &str) -> bool {
    let Some(rest) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_forms() {
        for good in [
            "500m", "1", "0.5", "64Mi", "1G", "1Gi", "100k", "1e3", "1E-2", "2.5Gi", " 128Mi ",
            "5.", ".5",
        ] {
            assert!(parse_quantity(good).is_ok(), "{good:?} should be accepted");
        }
        assert_eq!(parse_quantity(" 64Mi ").unwrap(), "64Mi");
    }

    #[test]
    fn rejects_bad_quantities() {
        assert_eq!(
            parse_quantity("64MB").unwrap_err().reason(),
            Some(r#"unknown suffix "MB""#)
        );
        assert_eq!(
            parse_quantity("-1").unwrap_err().reason(),
            Some("negative quantities are not allowed")
        );
        for bad in [
            "", "Mi", "1.2.3", "64 Mi", "1e", "one", "64mi", "1KI", ".", "1e1.5",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
