//! Durations as people write them in annotations: "250ms", "10s", "2m", "1h"; a bare integer is seconds.

use std::time::Duration;

use crate::SettingError;

const EXPECTED: &str =
    r#"a duration such as "250ms", "10s", "2m" or "1h" (a bare integer means seconds)"#;

/// Parses a non-negative whole number followed by `ms`, `s`, `m` or `h` (or nothing, meaning seconds).
/// Fractions are refused rather than rounded so that what the user wrote is exactly what runs.
pub fn parse_duration(s: &str) -> Result<Duration, SettingError> {
    let err = || SettingError::new(EXPECTED, s);
    let trimmed = s.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(match trimmed.chars().next() {
            None => err().because("empty"),
            Some('-') => err().because("negative durations are not allowed"),
            Some(_) => err().because("it must start with a number"),
        });
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| err().because("number too large"))?;
    let millis_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(err().because(format!("unknown unit {other:?}"))),
    };
    let millis = value
        .checked_mul(millis_per_unit)
        .ok_or_else(|| err().because("duration too large"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bare_integer_is_seconds() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
    }

    #[test]
    fn whitespace_tolerated() {
        assert_eq!(parse_duration(" 5s ").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("5 s").unwrap(), Duration::from_secs(5));
    }

    #[test]
    fn rejects_negative() {
        let e = parse_duration("-1s").unwrap_err();
        assert_eq!(e.reason(), Some("negative durations are not allowed"));
        assert!(e.to_string().contains(r#"got "-1s""#), "{e}");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "   ", "s", "ten", "1.5s", "10x", "1d", "1 2s", "5sec", "+5s", "1e3",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = parse_duration("10x").unwrap_err();
        assert_eq!(e.reason(), Some(r#"unknown unit "x""#));
        assert!(e.to_string().contains("250ms"), "{e}");
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_duration("99999999999999999999999s").is_err());
        let e = parse_duration(&format!("{}h", u64::MAX / 1000)).unwrap_err();
        assert_eq!(e.reason(), Some("duration too large"));
        assert!(parse_duration(&format!("{}ms", u64::MAX)).is_ok());
    }
}
