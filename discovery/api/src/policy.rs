//! Typed views of `ServicePolicy`: durations as `Duration`, status and route matching. Unset stays
//! `None`, so callers fall back to their own defaults (see the proto's conventions).

use std::time::Duration;

use crate::v1::{BreakerPolicy, RetryPolicy, RoutePolicy, ServicePolicy, StatusRanges};

fn millis(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl ServicePolicy {
    pub fn timeout(&self) -> Option<Duration> {
        millis(self.timeout_ms)
    }

    pub fn per_try_timeout(&self) -> Option<Duration> {
        millis(self.per_try_timeout_ms)
    }

    /// The first route matching the request, if any (routes are ordered; first match wins).
    pub fn route_for(&self, method: &str, path: &str) -> Option<&RoutePolicy> {
        self.routes.iter().find(|route| route.matches(method, path))
    }
}

impl RoutePolicy {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        path.starts_with(&self.path_prefix)
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }

    pub fn timeout(&self) -> Option<Duration> {
        millis(self.timeout_ms)
    }

    pub fn per_try_timeout(&self) -> Option<Duration> {
        millis(self.per_try_timeout_ms)
    }
}

impl RetryPolicy {
    pub fn backoff_base(&self) -> Option<Duration> {
        millis(self.backoff_base_ms)
    }

    pub fn backoff_max(&self) -> Option<Duration> {
        millis(self.backoff_max_ms)
    }
}

impl BreakerPolicy {
    pub fn base_ejection(&self) -> Option<Duration> {
        millis(self.base_ejection_ms)
    }

    pub fn max_ejection(&self) -> Option<Duration> {
        millis(self.max_ejection_ms)
    }
}

impl StatusRanges {
    pub fn contains(&self, status: u16) -> bool {
        let status = u32::from(status);
        self.ranges
            .iter()
            .any(|r| r.start <= status && status <= r.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::StatusRange;

    #[test]
    fn unset_durations_stay_unset() {
        let policy = ServicePolicy {
            timeout_ms: Some(1500),
            ..Default::default()
        };
        assert_eq!(policy.timeout(), Some(Duration::from_millis(1500)));
        assert_eq!(policy.per_try_timeout(), None);
    }

    #[test]
    fn first_matching_route_wins() {
        let route = |prefix: &str, methods: &[&str], ms| RoutePolicy {
            path_prefix: prefix.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            timeout_ms: Some(ms),
            ..Default::default()
        };
        let policy = ServicePolicy {
            routes: vec![route("/api/slow", &["GET"], 5000), route("/api", &[], 100)],
            ..Default::default()
        };
        assert_eq!(
            policy
                .route_for("get", "/api/slow/1")
                .and_then(|r| r.timeout_ms),
            Some(5000)
        );
        assert_eq!(
            policy
                .route_for("POST", "/api/slow/1")
                .and_then(|r| r.timeout_ms),
            Some(100)
        );
        assert!(policy.route_for("GET", "/health").is_none());
    }

    #[test]
    fn status_ranges_are_inclusive() {
        let ranges = StatusRanges {
            ranges: vec![
                StatusRange {
                    start: 502,
                    end: 504,
                },
                StatusRange {
                    start: 429,
                    end: 429,
                },
            ],
        };
        assert!(ranges.contains(502) && ranges.contains(504) && ranges.contains(429));
        assert!(!ranges.contains(500) && !ranges.contains(505) && !ranges.contains(430));
    }
}
