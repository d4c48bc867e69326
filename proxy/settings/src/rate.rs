//! Request rates as written in annotations: "100/s", "6000/m"; a bare number is per second.

use std::time::Duration;

use crate::SettingError;

const EXPECTED: &str = r#"a request rate such as "100/s", "6000/m" or "100" (per second)"#;

/// A number of requests per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests) / self.per.as_secs_f64()
    }
}

pub fn parse_rate(s: &str) -> Result<Rate, SettingError> {
    let err = || SettingError::new(EXPECTED, s);
    let trimmed = s.trim();
    let (count, unit) = trimmed.split_once('/').unwrap_or((trimmed, "s"));
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err().because("the count must be a whole number"));
    }
    let requests = match count.parse::<u32>() {
        Ok(0) => return Err(err().because("the count must be at least 1")),
        Ok(n) => n,
        Err(_) => return Err(err().because("the count is too large")),
    };
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(err().because(format!("unknown period {other:?}"))),
    };
    Ok(Rate { requests, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(parse_rate("100/s").unwrap().per_second(), 100.0);
        assert_eq!(parse_rate("6000/m").unwrap().per_second(), 100.0);
        assert_eq!(parse_rate(" 7 ").unwrap().per_second(), 7.0);
        assert_eq!(parse_rate("3600/h").unwrap().per_second(), 1.0);
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "0/s",
            "-1/s",
            "1.5/s",
            "10/d",
            "ten/s",
            "/s",
            "99999999999/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
