//! What an upstream's requests are allowed: timeouts, retries, breaker and limits, and how the
//! layers of configuration combine. Precedence, highest first: a Service's route override, the
//! Service's annotations, the client pod's `WEFT_*` settings, the built-in defaults. Pure data:
//! the layers read the policy attached to each request.

use std::time::Duration;

use crate::resilience::breaker::BreakerConfig;
use http::Method;
use weft_settings::{GrpcCodeSet, StatusSet, parse_grpc_codes, parse_status_ranges};

/// Built-in defaults, also the clap defaults of the matching `WEFT_*` settings.
pub mod defaults {
    pub const TIMEOUT: &str = "0s";
    pub const PER_TRY_TIMEOUT: &str = "0s";
    pub const RETRY_ATTEMPTS: &str = "2";
    pub const RETRY_STATUSES: &str = "502-504";
    pub const RETRY_GRPC_CODES: &str = "unavailable";
    pub const RETRY_BUDGET: &str = "0.2";
    pub const RETRY_BUDGET_MIN_RPS: &str = "10";
    pub const RETRY_NON_IDEMPOTENT: &str = "false";
    pub const RETRY_BACKOFF: &str = "25ms";
    pub const MAX_PENDING: &str = "1024";
    pub const MAX_IN_FLIGHT: &str = "1024";
    pub const MAX_CONNECTIONS: &str = "1024";
    pub const BREAKER_FAILURES: &str = "5";
    pub const BREAKER_EJECTION: &str = "30s";
    pub const BREAKER_MAX_EJECTED: &str = "0.5";
}

/// The effective policy for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct ResiliencePolicy {
    /// The whole exchange, retries and backoff included; zero means none.
    pub timeout: Duration,
    /// Each attempt; zero means none.
    pub per_try_timeout: Duration,
    pub retry: RetryPolicy,
    pub limits: LimitsPolicy,
    pub breaker: BreakerConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; zero disables retries (and request body buffering).
    pub attempts: u32,
    pub statuses: StatusSet,
    pub grpc_codes: GrpcCodeSet,
    /// Retries allowed per request over the budget's window.
    pub budget_ratio: f64,
    /// Retries per second allowed whatever the ratio, so that low traffic can still retry.
    pub budget_min_per_second: u32,
    /// Retry POST, PATCH and other non-idempotent methods on a failed response too.
    pub non_idempotent: bool,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsPolicy {
    /// Requests waiting for an in-flight slot; more are refused at once.
    pub max_pending: u32,
    /// Requests to the upstream at once (until their response body ends).
    pub max_in_flight: u32,
    /// Connections open to the upstream at once.
    pub max_connections: u32,
}

impl Default for ResiliencePolicy {
    fn default() -> Self {
        // The defaults are constants that parse (checked by the tests below); fall back to
        // empty sets rather than panic if one ever did not.
        let statuses =
            parse_status_ranges(defaults::RETRY_STATUSES).unwrap_or_else(|_| StatusSet::empty());
        let grpc_codes = parse_grpc_codes(defaults::RETRY_GRPC_CODES).unwrap_or_default();
        let backoff_base = Duration::from_millis(25);
        ResiliencePolicy {
            timeout: Duration::ZERO,
            per_try_timeout: Duration::ZERO,
            retry: RetryPolicy {
                attempts: 2,
                statuses,
                grpc_codes,
                budget_ratio: 0.2,
                budget_min_per_second: 10,
                non_idempotent: false,
                backoff_base,
                backoff_max: backoff_base * 10,
            },
            limits: LimitsPolicy {
                max_pending: 1024,
                max_in_flight: 1024,
                max_connections: 1024,
            },
            breaker: BreakerConfig::default(),
        }
    }
}

impl ResiliencePolicy {
    /// For the inbound side: the app behind it is the pod's own; nothing is retried, timed or
    /// limited there (the client's proxy does that).
    pub fn passthrough() -> Self {
        let mut policy = ResiliencePolicy::default();
        policy.retry.attempts = 0;
        policy.limits = LimitsPolicy {
            max_pending: u32::MAX,
            max_in_flight: u32::MAX,
            max_connections: u32::MAX,
        };
        policy
    }

    /// This policy with `overrides` applied on top.
    pub fn with(&self, overrides: &PolicyOverrides) -> Self {
        let mut p = self.clone();
        let o = overrides;
        set(&mut p.timeout, o.timeout);
        set(&mut p.per_try_timeout, o.per_try_timeout);
        set(&mut p.retry.attempts, o.retry_attempts);
        set(&mut p.retry.statuses, o.retry_statuses.clone());
        set(&mut p.retry.grpc_codes, o.retry_grpc_codes);
        set(&mut p.retry.budget_ratio, o.retry_budget_ratio);
        set(
            &mut p.retry.budget_min_per_second,
            o.retry_budget_min_per_second,
        );
        set(&mut p.retry.non_idempotent, o.retry_non_idempotent);
        if let Some(base) = o.retry_backoff_base {
            p.retry.backoff_base = base;
            // A longer base with the old cap would make the backoff flat.
            p.retry.backoff_max = p.retry.backoff_max.max(base * 10);
        }
        set(&mut p.retry.backoff_max, o.retry_backoff_max);
        set(&mut p.limits.max_pending, o.max_pending);
        set(&mut p.limits.max_in_flight, o.max_in_flight);
        set(&mut p.limits.max_connections, o.max_connections);
        set(&mut p.breaker.failures, o.breaker_failures);
        if let Some(base) = o.breaker_ejection {
            p.breaker.base_ejection = base;
            // Keep room for the ejection to grow on repeat.
            p.breaker.max_ejection = p.breaker.max_ejection.max(base * 10);
        }
        set(&mut p.breaker.max_ejection, o.breaker_max_ejection);
        set(
            &mut p.breaker.max_ejected_ratio,
            o.breaker_max_ejected_ratio,
        );
        p
    }

    /// The policy of one request to a Service: its annotations over the client's defaults, and
    /// the first matching route override over both.
    pub fn for_request(&self, service: &ServiceOverrides, method: &Method, path: &str) -> Self {
        let policy = self.with(&service.service);
        match service.routes.iter().find(|r| r.matches(method, path)) {
            Some(route) => policy.with(&route.overrides),
            None => policy,
        }
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// Settings a Service (or one of its routes) gives; unset fields keep the layer below.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyOverrides {
    pub timeout: Option<Duration>,
    pub per_try_timeout: Option<Duration>,
    pub retry_attempts: Option<u32>,
    pub retry_statuses: Option<StatusSet>,
    pub retry_grpc_codes: Option<GrpcCodeSet>,
    pub retry_budget_ratio: Option<f64>,
    pub retry_budget_min_per_second: Option<u32>,
    pub retry_non_idempotent: Option<bool>,
    pub retry_backoff_base: Option<Duration>,
    pub retry_backoff_max: Option<Duration>,
    pub max_pending: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub max_connections: Option<u32>,
    pub breaker_failures: Option<u32>,
    pub breaker_ejection: Option<Duration>,
    pub breaker_max_ejection: Option<Duration>,
    pub breaker_max_ejected_ratio: Option<f64>,
}

/// Overrides for requests whose path starts with `path_prefix` and, when `methods` is not
/// empty, whose method is one of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteOverride {
    pub path_prefix: String,
    pub methods: Vec<Method>,
    pub overrides: PolicyOverrides,
}

impl RouteOverride {
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        path.starts_with(&self.path_prefix)
            && (self.methods.is_empty() || self.methods.contains(method))
    }
}

/// A Service's own policy: its annotations, and per-route overrides in the order given (the
/// first match wins).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceOverrides {
    pub service: PolicyOverrides,
    pub routes: Vec<RouteOverride>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_constants_parse_to_the_default_policy() {
        let p = ResiliencePolicy::default();
        let d = |s| weft_settings::parse_duration(s).unwrap();
        assert_eq!(p.timeout, d(defaults::TIMEOUT));
        assert_eq!(p.per_try_timeout, d(defaults::PER_TRY_TIMEOUT));
        assert_eq!(p.retry.backoff_base, d(defaults::RETRY_BACKOFF));
        assert_eq!(
            p.retry.statuses,
            parse_status_ranges(defaults::RETRY_STATUSES).unwrap()
        );
        assert_eq!(
            p.retry.grpc_codes,
            parse_grpc_codes(defaults::RETRY_GRPC_CODES).unwrap()
        );
        assert!(p.retry.statuses.contains(503) && !p.retry.statuses.contains(500));
        assert!(p.retry.grpc_codes.contains(14));
        assert_eq!(p.retry.attempts.to_string(), defaults::RETRY_ATTEMPTS);
        assert_eq!(p.retry.budget_ratio.to_string(), defaults::RETRY_BUDGET);
        assert_eq!(
            p.retry.budget_min_per_second.to_string(),
            defaults::RETRY_BUDGET_MIN_RPS
        );
        assert_eq!(
            p.retry.non_idempotent.to_string(),
            defaults::RETRY_NON_IDEMPOTENT
        );
        assert_eq!(p.limits.max_pending.to_string(), defaults::MAX_PENDING);
        assert_eq!(p.limits.max_in_flight.to_string(), defaults::MAX_IN_FLIGHT);
        assert_eq!(
            p.limits.max_connections.to_string(),
            defaults::MAX_CONNECTIONS
        );
        assert_eq!(p.breaker.failures.to_string(), defaults::BREAKER_FAILURES);
        assert_eq!(p.breaker.base_ejection, d(defaults::BREAKER_EJECTION));
        assert_eq!(
            p.breaker.max_ejected_ratio.to_string(),
            defaults::BREAKER_MAX_EJECTED
        );
    }

    fn client() -> ResiliencePolicy {
        // As if the pod said weft.io/timeout: 5s and weft.io/retry-attempts: 4.
        ResiliencePolicy::default().with(&PolicyOverrides {
            timeout: Some(Duration::from_secs(5)),
            retry_attempts: Some(4),
            ..Default::default()
        })
    }

    fn service() -> ServiceOverrides {
        ServiceOverrides {
            service: PolicyOverrides {
                timeout: Some(Duration::from_secs(2)),
                retry_statuses: Some(parse_status_ranges("503").unwrap()),
                ..Default::default()
            },
            routes: vec![
                RouteOverride {
                    path_prefix: "/pay".into(),
                    methods: vec![Method::POST],
                    overrides: PolicyOverrides {
                        timeout: Some(Duration::from_millis(300)),
                        retry_non_idempotent: Some(true),
                        ..Default::default()
                    },
                },
                RouteOverride {
                    path_prefix: "/".into(),
                    methods: vec![],
                    overrides: PolicyOverrides {
                        per_try_timeout: Some(Duration::from_secs(1)),
                        ..Default::default()
                    },
                },
            ],
        }
    }

    #[test]
    fn client_settings_override_built_in_defaults() {
        let p = client();
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert_eq!(p.retry.attempts, 4);
        // Untouched fields keep the built-in value.
        assert_eq!(p.retry.budget_ratio, 0.2);
    }

    #[test]
    fn service_annotation_overrides_client_settings() {
        let p = client().for_request(
            &ServiceOverrides {
                routes: vec![],
                ..service()
            },
            &Method::GET,
            "/x",
        );
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert!(p.retry.statuses.contains(503) && !p.retry.statuses.contains(502));
        // The client's own setting survives where the Service says nothing.
        assert_eq!(p.retry.attempts, 4);
    }

    #[test]
    fn first_matching_route_overrides_the_service() {
        let pay = client().for_request(&service(), &Method::POST, "/pay/now");
        assert_eq!(pay.timeout, Duration::from_millis(300));
        assert!(pay.retry.non_idempotent);
        assert_eq!(
            pay.per_try_timeout,
            Duration::ZERO,
            "only the first match applies"
        );
        assert!(
            !pay.retry.statuses.contains(502),
            "service layer still applies"
        );

        // Same path, other method: falls through to the catch-all route.
        let get = client().for_request(&service(), &Method::GET, "/pay/now");
        assert_eq!(get.timeout, Duration::from_secs(2));
        assert_eq!(get.per_try_timeout, Duration::from_secs(1));
        assert!(!get.retry.non_idempotent);
    }

    #[test]
    fn a_longer_backoff_base_raises_the_cap() {
        let p = ResiliencePolicy::default().with(&PolicyOverrides {
            retry_backoff_base: Some(Duration::from_secs(1)),
            ..Default::default()
        });
        assert_eq!(p.retry.backoff_max, Duration::from_secs(10));
    }

    #[test]
    fn passthrough_neither_retries_nor_limits() {
        let p = ResiliencePolicy::passthrough();
        assert_eq!(p.retry.attempts, 0);
        assert_eq!(p.timeout, Duration::ZERO);
        assert_eq!(p.limits.max_in_flight, u32::MAX);
    }
}
