//! Plain numbers: ratios in 0.0..=1.0 and positive counts.

use crate::SettingError;

const EXPECTED_RATIO: &str = r#"a ratio between 0.0 and 1.0 such as "0.25""#;
const EXPECTED_COUNT: &str = r#"a positive whole number such as "2""#;
const EXPECTED_UINT: &str = r#"a whole number such as "0" or "100""#;

/// Parses a decimal number in `0.0..=1.0`; NaN, infinities and anything outside the range are refused.
pub fn parse_ratio(s: &str) -> Result<f64, SettingError> {
    let err = || SettingError::new(EXPECTED_RATIO, s);
    let trimmed = s.trim();
    // f64's parser also takes "inf", "NaN" and exponents; a ratio is written as plain digits.
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(err().because("not a decimal number"));
    }
    let ratio: f64 = trimmed
        .parse()
        .map_err(|_| err().because("not a decimal number"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(err().because("out of range"));
    }
    Ok(ratio)
}

/// Parses a whole number of at least 1 that fits in 32 bits.
pub fn parse_count(s: &str) -> Result<u32, SettingError> {
    let err = || SettingError::new(EXPECTED_COUNT, s);
    let trimmed = s.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err().because("not a whole number"));
    }
    match trimmed.parse::<u32>() {
        Ok(0) => Err(err().because("must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(err().because("too large")),
    }
}

/// Parses a whole number that may be 0 (e.g. a limit of 0 waiting requests, or no retries).
pub fn parse_uint(s: &str) -> Result<u32, SettingError> {
    let err = || SettingError::new(EXPECTED_UINT, s);
    let trimmed = s.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err().because("not a whole number"));
    }
    trimmed
        .parse::<u32>()
        .map_err(|_| err().because("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_in_range() {
        assert_eq!(parse_ratio("0").unwrap(), 0.0);
        assert_eq!(parse_ratio("0.0").unwrap(), 0.0);
        assert_eq!(parse_ratio("0.25").unwrap(), 0.25);
        assert_eq!(parse_ratio(".5").unwrap(), 0.5);
        assert_eq!(parse_ratio("1").unwrap(), 1.0);
        assert_eq!(parse_ratio(" 1.0 ").unwrap(), 1.0);
    }

    #[test]
    fn ratio_rejects_out_of_range_and_garbage() {
        for bad in [
            "1.01", "2", "-0.1", "", "NaN", "inf", "1e-1", "half", "0.5.5", ".", "50%",
        ] {
            assert!(parse_ratio(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = parse_ratio("1.5").unwrap_err();
        assert_eq!(e.reason(), Some("out of range"));
        assert!(e.to_string().contains("between 0.0 and 1.0"), "{e}");
    }

    #[test]
    fn count_positive() {
        assert_eq!(parse_count("1").unwrap(), 1);
        assert_eq!(parse_count(" 8 ").unwrap(), 8);
        assert_eq!(parse_count("4294967295").unwrap(), u32::MAX);
    }

    #[test]
    fn count_rejects_zero_negative_overflow_garbage() {
        assert_eq!(
            parse_count("0").unwrap_err().reason(),
            Some("must be at least 1")
        );
        assert_eq!(
            parse_count("4294967296").unwrap_err().reason(),
            Some("too large")
        );
        for bad in ["-1", "+1", "", "1.0", "two", "1 2", "0x10"] {
            assert!(parse_count(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn uint_allows_zero() {
        assert_eq!(parse_uint("0").unwrap(), 0);
        assert_eq!(parse_uint(" 12 ").unwrap(), 12);
        for bad in ["-1", "", "1.0", "4294967296"] {
            assert!(parse_uint(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
