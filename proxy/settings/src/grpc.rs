//! gRPC status code lists as written in annotations: "unavailable,resource-exhausted" or "14,8".

use crate::SettingError;

const EXPECTED: &str =
    r#"gRPC status codes by name or number such as "unavailable,resource-exhausted" or "14,8""#;

/// The gRPC status codes by number (index), in the spelling annotations use.
const NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid-argument",
    "deadline-exceeded",
    "not-found",
    "already-exists",
    "permission-denied",
    "resource-exhausted",
    "failed-precondition",
    "aborted",
    "out-of-range",
    "unimplemented",
    "internal",
    "unavailable",
    "data-loss",
    "unauthenticated",
];

/// A set of gRPC status codes (0..=16).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcCodeSet {
    bits: u32,
}

impl GrpcCodeSet {
    pub fn contains(&self, code: u32) -> bool {
        code < 17 && self.bits & (1 << code) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }
}

impl std::fmt::Debug for GrpcCodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(
                (0..17u32)
                    .filter(|c| self.contains(*c))
                    .map(|c| NAMES[c as usize]),
            )
            .finish()
    }
}

/// Parses a comma-separated list of names (case-insensitive; `_` and `-` alike) or numbers;
/// the empty string is the empty set.
pub fn parse_grpc_codes(s: &str) -> Result<GrpcCodeSet, SettingError> {
    let mut set = GrpcCodeSet::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let name = part.to_ascii_lowercase().replace('_', "-");
        let code = match name.parse::<u32>() {
            Ok(n) if n < 17 => n,
            Ok(_) => {
                return Err(SettingError::new(EXPECTED, s)
                    .because(format!("{part} is not a gRPC status code (0-16)")));
            }
            Err(_) => NAMES.iter().position(|n| *n == name).ok_or_else(|| {
                SettingError::new(EXPECTED, s).because(format!("unknown gRPC status {part:?}"))
            })? as u32,
        };
        set.bits |= 1 << code;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let set = parse_grpc_codes("unavailable, RESOURCE_EXHAUSTED,4").unwrap();
        assert!(set.contains(14) && set.contains(8) && set.contains(4));
        assert!(!set.contains(0) && !set.contains(13) && !set.contains(99));
        assert!(parse_grpc_codes("").unwrap().is_empty());
    }

    #[test]
    fn refuses_unknown() {
        for bad in ["17", "-1", "unavailabel", "14;8"] {
            assert!(parse_grpc_codes(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = parse_grpc_codes("nope").unwrap_err();
        assert_eq!(e.reason(), Some(r#"unknown gRPC status "nope""#));
    }
}
