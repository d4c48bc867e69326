//! A Service's own policy, as discovery sends it (the proto `ServicePolicy`, from the Service's
//! `weft.io/...` annotations), turned into [`ServiceOverrides`], with a cache so that an
//! unchanged policy is converted once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Method;
use weft_discovery_api::v1::{self as proto, ServicePolicy};
use weft_settings::{GrpcCodeSet, StatusSet, parse_grpc_codes, parse_status_ranges};

use crate::resilience::policy::{PolicyOverrides, RouteOverride, ServiceOverrides};

impl From<&ServicePolicy> for ServiceOverrides {
    fn from(policy: &ServicePolicy) -> Self {
        let mut service = retry_overrides(policy.retry.as_ref());
        service.timeout = policy.timeout_ms.map(Duration::from_millis);
        service.per_try_timeout = policy.per_try_timeout_ms.map(Duration::from_millis);
        if let Some(breaker) = &policy.breaker {
            service.breaker_failures = breaker.failures;
            service.breaker_ejection = breaker.base_ejection_ms.map(Duration::from_millis);
            service.breaker_max_ejection = breaker.max_ejection_ms.map(Duration::from_millis);
            service.breaker_max_ejected_ratio = breaker
                .max_ejected_ratio
                .filter(|r| r.is_finite())
                .map(|r| r.clamp(0.0, 1.0));
        }
        if let Some(limits) = &policy.limits {
            service.max_connections = limits.max_connections;
            service.max_pending = limits.max_pending;
            service.max_in_flight = limits.max_in_flight;
        }
        let routes = policy
            .routes
            .iter()
            .map(|route| {
                let mut overrides = retry_overrides(route.retry.as_ref());
                overrides.timeout = route.timeout_ms.map(Duration::from_millis);
                overrides.per_try_timeout = route.per_try_timeout_ms.map(Duration::from_millis);
                RouteOverride {
                    path_prefix: route.path_prefix.clone(),
                    // A method that is not a valid token cannot match any request.
                    methods: route
                        .methods
                        .iter()
                        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                        .collect(),
                    overrides,
                }
            })
            .collect();
        ServiceOverrides { service, routes }
    }
}

fn retry_overrides(retry: Option<&proto::RetryPolicy>) -> PolicyOverrides {
    let Some(retry) = retry else {
        return PolicyOverrides::default();
    };
    PolicyOverrides {
        // The wire counts the first attempt too.
        retry_attempts: retry.attempts.map(|total| total.saturating_sub(1)),
        retry_statuses: retry.statuses.as_ref().and_then(statuses),
        retry_grpc_codes: retry.grpc_codes.as_ref().and_then(grpc_codes),
        retry_budget_ratio: retry
            .budget_ratio
            .filter(|r| r.is_finite())
            .map(|r| r.max(0.0)),
        retry_budget_min_per_second: retry
            .budget_min_per_second
            .filter(|r| r.is_finite())
            .map(|r| r.clamp(0.0, f64::from(u32::MAX)).round() as u32),
        retry_non_idempotent: retry.non_idempotent,
        retry_backoff_base: retry.backoff_base_ms.map(Duration::from_millis),
        retry_backoff_max: retry.backoff_max_ms.map(Duration::from_millis),
        ..Default::default()
    }
}

/// Statuses on the wire (inclusive ranges) -> a set; None (the client's default) when no
/// range is a valid HTTP status range.
fn statuses(ranges: &proto::StatusRanges) -> Option<StatusSet> {
    let text: Vec<String> = ranges
        .ranges
        .iter()
        .filter(|r| (100..600).contains(&r.start) && (r.start..600).contains(&r.end))
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect();
    if text.is_empty() {
        return None;
    }
    parse_status_ranges(&text.join(",")).ok()
}

fn grpc_codes(codes: &proto::GrpcCodes) -> Option<GrpcCodeSet> {
    let text: Vec<String> = codes.codes.iter().map(u32::to_string).collect();
    if text.is_empty() {
        return None;
    }
    parse_grpc_codes(&text.join(",")).ok()
}

/// The last Service policy converted, and its overrides: discovery shares one `ServicePolicy`
/// value between updates that do not change it, so pointer equality finds the common case.
#[derive(Default)]
pub struct OverridesCache {
    last: Mutex<Option<(Arc<ServicePolicy>, Arc<ServiceOverrides>)>>,
}

impl OverridesCache {
    pub fn get(&self, policy: &Arc<ServicePolicy>) -> Arc<ServiceOverrides> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((known, overrides)) = last.as_ref()
            && (Arc::ptr_eq(known, policy) || **known == **policy)
        {
            return overrides.clone();
        }
        let overrides = Arc::new(ServiceOverrides::from(&**policy));
        *last = Some((policy.clone(), overrides.clone()));
        overrides
    }
}
