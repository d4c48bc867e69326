//! HTTP status sets as written in annotations: "502-504,429".

use crate::SettingError;

const EXPECTED: &str = r#"HTTP statuses or ranges between 100 and 599 such as "502-504,429""#;

/// A set of HTTP status codes, kept as a 500-bit map so that a lookup is one shift.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusSet {
    bits: [u64; 8],
}

impl StatusSet {
    pub fn empty() -> Self {
        StatusSet { bits: [0; 8] }
    }

    pub fn contains(&self, status: u16) -> bool {
        let Some(i) = status.checked_sub(100) else {
            return false;
        };
        let i = usize::from(i);
        i < 500 && self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn insert(&mut self, status: u16) {
        let i = usize::from(status - 100);
        self.bits[i / 64] |= 1 << (i % 64);
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|b| *b == 0)
    }
}

impl std::fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries((100..600).filter(|s| self.contains(*s)))
            .finish()
    }
}

/// Parses a comma-separated list of statuses and inclusive ranges; the empty string is the
/// empty set (retry on no status).
pub fn parse_status_ranges(s: &str) -> Result<StatusSet, SettingError> {
    let err = || SettingError::new(EXPECTED, s);
    let mut set = StatusSet::empty();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (part, part),
        };
        let status = |v: &str| -> Result<u16, SettingError> {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err().because(format!("{part:?} is not a status or range")));
            }
            match v.parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ => Err(err().because(format!("{v} is not an HTTP status"))),
            }
        };
        let (lo, hi) = (status(lo)?, status(hi)?);
        if lo > hi {
            return Err(err().because(format!("range {part:?} is backwards")));
        }
        (lo..=hi).for_each(|n| set.insert(n));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_singles() {
        let set = parse_status_ranges("502-504, 429").unwrap();
        for s in [429, 502, 503, 504] {
            assert!(set.contains(s), "{s}");
        }
        for s in [0, 99, 100, 500, 501, 505, 599, 600, 65535] {
            assert!(!set.contains(s), "{s}");
        }
        let all = parse_status_ranges("100-599").unwrap();
        assert!(all.contains(100) && all.contains(599));
        assert!(parse_status_ranges("").unwrap().is_empty());
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["5xx", "600", "99", "504-502", "-", "502-", "50 2", "+502"] {
            assert!(
                parse_status_ranges(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let e = parse_status_ranges("504-502").unwrap_err();
        assert_eq!(e.reason(), Some(r#"range "504-502" is backwards"#));
    }
}
