//! A Service's `weft.io/...` annotations -> its `ServicePolicy`. Values use weft-settings' parsers,
//! so a Service annotation and the same-named pod annotation (the client's default) share one
//! syntax. A bad annotation is reported and left unset; the others still apply.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use weft_discovery_api::v1::{
    BreakerPolicy, GrpcCodes, Limits, RetryPolicy, RoutePolicy, ServicePolicy, SplitTarget,
    StatusRange, StatusRanges,
};
use weft_settings::{
    ANNOTATION_PREFIX, GrpcCodeSet, SettingError, StatusSet, parse_bool, parse_count,
    parse_duration, parse_grpc_codes, parse_rate, parse_ratio, parse_status_ranges, parse_uint,
};

/// One annotation refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    pub annotation: String,
    pub reason: String,
}

/// The policy of the Service port `port`, from the Service's annotations. `namespace` qualifies
/// the service names of a split.
pub fn service_policy(
    annotations: &BTreeMap<String, String>,
    namespace: &str,
    port: u32,
) -> (ServicePolicy, Vec<AnnotationError>) {
    let mut reader = Reader {
        annotations,
        errors: Vec::new(),
    };
    let retry = RetryPolicy {
        // The annotation counts retries, as the pod's does; the wire counts every attempt.
        attempts: reader
            .get("retry-attempts", parse_uint)
            .map(|retries| retries.saturating_add(1)),
        statuses: reader
            .get("retry-statuses", parse_status_ranges)
            .map(|s| status_ranges(&s)),
        grpc_codes: reader
            .get("retry-grpc-codes", parse_grpc_codes)
            .map(|c| grpc_codes(&c)),
        budget_ratio: reader.get("retry-budget", parse_ratio),
        budget_min_per_second: reader.get("retry-budget-min-rps", |v| {
            parse_rate(v).map(|rate| rate.per_second())
        }),
        non_idempotent: reader.get("retry-non-idempotent", parse_bool),
        backoff_base_ms: reader.get("retry-backoff", parse_duration).map(millis),
        backoff_max_ms: None,
    };
    let breaker = BreakerPolicy {
        failures: reader.get("breaker-failures", parse_count),
        base_ejection_ms: reader.get("breaker-ejection", parse_duration).map(millis),
        max_ejection_ms: None,
        max_ejected_ratio: reader.get("breaker-max-ejected", parse_ratio),
    };
    let limits = Limits {
        max_connections: reader.get("max-connections", parse_count),
        // 0 is valid: refuse at once instead of queueing (as the pod's WEFT_MAX_PENDING).
        max_pending: reader.get("max-pending", parse_uint),
        max_in_flight: reader.get("max-in-flight", parse_count),
    };
    let policy = ServicePolicy {
        timeout_ms: reader.get("timeout", parse_duration).map(millis),
        per_try_timeout_ms: reader.get("per-try-timeout", parse_duration).map(millis),
        retry: (retry != RetryPolicy::default()).then_some(retry),
        breaker: (breaker != BreakerPolicy::default()).then_some(breaker),
        limits: (limits != Limits::default()).then_some(limits),
        routes: reader.get("routes", parse_routes).unwrap_or_default(),
        split: reader
            .get("split", |v| parse_split(v, namespace, port))
            .unwrap_or_default(),
    };
    (policy, reader.errors)
}

struct Reader<'a> {
    annotations: &'a BTreeMap<String, String>,
    errors: Vec<AnnotationError>,
}

impl Reader<'_> {
    fn get<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let annotation = format!("{ANNOTATION_PREFIX}{name}");
        let value = self.annotations.get(&annotation)?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(AnnotationError {
                    annotation,
                    reason: e.to_string(),
                });
                None
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Collapses a status set into inclusive ranges (what the wire carries).
fn status_ranges(set: &StatusSet) -> StatusRanges {
    let mut ranges: Vec<StatusRange> = Vec::new();
    for status in (100u32..600).filter(|s| set.contains(*s as u16)) {
        match ranges.last_mut() {
            Some(last) if last.end + 1 == status => last.end = status,
            _ => ranges.push(StatusRange {
                start: status,
                end: status,
            }),
        }
    }
    StatusRanges { ranges }
}

fn grpc_codes(set: &GrpcCodeSet) -> GrpcCodes {
    GrpcCodes {
        codes: (0..17).filter(|c| set.contains(*c)).collect(),
    }
}

/// One entry of `weft.io/routes` (a JSON list).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RouteAnnotation {
    path_prefix: String,
    #[serde(default)]
    methods: Vec<String>,
    timeout: Option<String>,
    per_try_timeout: Option<String>,
    retry_attempts: Option<u32>,
    retry_non_idempotent: Option<bool>,
    retry_statuses: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum RoutesError {
    #[error(
        r#"expected a JSON list of {{"pathPrefix", "methods", "timeout", "perTryTimeout", "retryAttempts", "retryNonIdempotent", "retryStatuses"}}: {0}"#
    )]
    Json(serde_json::Error),
    #[error("route {index} ({prefix:?}): {field}: {error}")]
    Field {
        index: usize,
        prefix: String,
        field: &'static str,
        error: SettingError,
    },
    #[error("route {index}: pathPrefix {prefix:?} must start with '/'")]
    Prefix { index: usize, prefix: String },
}

fn parse_routes(value: &str) -> Result<Vec<RoutePolicy>, RoutesError> {
    let routes: Vec<RouteAnnotation> = serde_json::from_str(value).map_err(RoutesError::Json)?;
    routes
        .into_iter()
        .enumerate()
        .map(|(index, route)| {
            let prefix = route.path_prefix.clone();
            let field = |field, error| RoutesError::Field {
                index,
                prefix: prefix.clone(),
                field,
                error,
            };
            if !route.path_prefix.starts_with('/') {
                return Err(RoutesError::Prefix { index, prefix });
            }
            let duration = |field_name, v: Option<String>| {
                v.map(|v| {
                    parse_duration(&v)
                        .map(millis)
                        .map_err(|e| field(field_name, e))
                })
                .transpose()
            };
            let statuses = route
                .retry_statuses
                .map(|v| parse_status_ranges(&v).map_err(|e| field("retryStatuses", e)))
                .transpose()?;
            let retry = RetryPolicy {
                attempts: route
                    .retry_attempts
                    .map(|retries| retries.saturating_add(1)),
                non_idempotent: route.retry_non_idempotent,
                statuses: statuses.map(|s| status_ranges(&s)),
                ..Default::default()
            };
            Ok(RoutePolicy {
                timeout_ms: duration("timeout", route.timeout)?,
                per_try_timeout_ms: duration("perTryTimeout", route.per_try_timeout)?,
                path_prefix: route.path_prefix,
                methods: route
                    .methods
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
                retry: (retry != RetryPolicy::default()).then_some(retry),
            })
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error(r#"expected "service=weight,..." such as "reviews-v2=10,reviews-v1=90": {0}"#)]
struct SplitError(String);

fn parse_split(value: &str, namespace: &str, port: u32) -> Result<Vec<SplitTarget>, SplitError> {
    let mut split = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (service, weight) = part
            .split_once('=')
            .ok_or_else(|| SplitError(format!("{part:?} has no '='")))?;
        let service = service.trim();
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| SplitError(format!("weight of {service:?} is not a whole number")))?;
        let valid = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let service = match service.split_once('.') {
            Some((name, ns)) if valid(name) && valid(ns) => format!("{name}.{ns}"),
            None if valid(service) => format!("{service}.{namespace}"),
            _ => {
                return Err(SplitError(format!(
                    "{service:?} is not a service name or name.namespace"
                )));
            }
        };
        split.push(SplitTarget {
            service,
            port,
            weight,
        });
    }
    if split.is_empty() {
        return Err(SplitError("no services".into()));
    }
    if split.iter().all(|s| s.weight == 0) {
        return Err(SplitError("all weights are 0".into()));
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("weft.io/{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn no_annotations_leave_everything_unset() {
        let (policy, errors) = service_policy(&BTreeMap::new(), "shop", 80);
        assert_eq!(policy, ServicePolicy::default());
        assert!(errors.is_empty());
    }

    #[test]
    fn every_knob_reaches_the_policy() {
        let (policy, errors) = service_policy(
            &annotations(&[
                ("timeout", "2s"),
                ("per-try-timeout", "500ms"),
                ("retry-attempts", "3"),
                ("retry-statuses", "502-504,429"),
                ("retry-grpc-codes", "unavailable,8"),
                ("retry-budget", "0.2"),
                ("retry-budget-min-rps", "10"),
                ("retry-non-idempotent", "true"),
                ("retry-backoff", "25ms"),
                ("breaker-failures", "5"),
                ("breaker-ejection", "30s"),
                ("breaker-max-ejected", "0.5"),
                ("max-connections", "100"),
                ("max-pending", "50"),
                ("max-in-flight", "200"),
                ("split", "reviews-v2=10, reviews-v1.other=90"),
            ]),
            "shop",
            9080,
        );
        assert_eq!(errors, vec![]);
        assert_eq!(policy.timeout_ms, Some(2000));
        assert_eq!(policy.per_try_timeout_ms, Some(500));
        let retry = policy.retry.unwrap();
        assert_eq!(retry.attempts, Some(4), "3 retries after the first attempt");
        assert_eq!(
            retry.statuses.unwrap().ranges,
            vec![
                StatusRange {
                    start: 429,
                    end: 429
                },
                StatusRange {
                    start: 502,
                    end: 504
                }
            ]
        );
        assert_eq!(retry.grpc_codes.unwrap().codes, vec![8, 14]);
        assert_eq!(retry.budget_ratio, Some(0.2));
        assert_eq!(retry.budget_min_per_second, Some(10.0));
        assert_eq!(retry.non_idempotent, Some(true));
        assert_eq!(retry.backoff_base_ms, Some(25));
        let breaker = policy.breaker.unwrap();
        assert_eq!(breaker.failures, Some(5));
        assert_eq!(breaker.base_ejection_ms, Some(30_000));
        assert_eq!(breaker.max_ejected_ratio, Some(0.5));
        let limits = policy.limits.unwrap();
        assert_eq!(
            (
                limits.max_connections,
                limits.max_pending,
                limits.max_in_flight
            ),
            (Some(100), Some(50), Some(200))
        );
        assert_eq!(
            policy.split,
            vec![
                SplitTarget {
                    service: "reviews-v2.shop".into(),
                    port: 9080,
                    weight: 10
                },
                SplitTarget {
                    service: "reviews-v1.other".into(),
                    port: 9080,
                    weight: 90
                },
            ]
        );
    }

    #[test]
    fn a_bad_annotation_is_reported_and_the_rest_apply() {
        let (policy, errors) = service_policy(
            &annotations(&[
                ("timeout", "soon"),
                ("retry-attempts", "2"),
                ("split", "a=x"),
            ]),
            "shop",
            80,
        );
        assert_eq!(policy.timeout_ms, None);
        assert_eq!(policy.retry.and_then(|r| r.attempts), Some(3));
        assert!(policy.split.is_empty());
        let names: Vec<_> = errors.iter().map(|e| e.annotation.as_str()).collect();
        assert_eq!(names, ["weft.io/timeout", "weft.io/split"]);
        assert!(errors[0].reason.contains("soon"), "{}", errors[0].reason);
    }

    #[test]
    fn routes_parse_in_order_with_their_overrides() {
        let routes = r#"[
            {"pathPrefix": "/api/slow", "methods": ["get"], "timeout": "5s", "retryAttempts": 1},
            {"pathPrefix": "/api", "retryNonIdempotent": true, "retryStatuses": "503"}
        ]"#;
        let (policy, errors) = service_policy(&annotations(&[("routes", routes)]), "shop", 80);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(policy.routes.len(), 2);
        assert_eq!(policy.routes[0].methods, ["GET"]);
        assert_eq!(policy.routes[0].timeout_ms, Some(5000));
        assert_eq!(
            policy.routes[0].retry.as_ref().and_then(|r| r.attempts),
            Some(2)
        );
        let second = policy.routes[1].retry.as_ref().unwrap();
        assert_eq!(second.non_idempotent, Some(true));
        assert_eq!(
            second.statuses.as_ref().unwrap().ranges,
            vec![StatusRange {
                start: 503,
                end: 503
            }]
        );
    }

    #[test]
    fn bad_routes_are_refused_whole() {
        for bad in [
            r#"{"pathPrefix": "/"}"#,
            r#"[{"pathPrefix": "api"}]"#,
            r#"[{"pathPrefix": "/", "timeout": "fast"}]"#,
            r#"[{"pathPrefix": "/", "retryAttempts": -1}]"#,
            r#"[{"pathPrefix": "/", "retries": 2}]"#,
        ] {
            let (policy, errors) = service_policy(&annotations(&[("routes", bad)]), "shop", 80);
            assert!(policy.routes.is_empty(), "{bad}");
            assert_eq!(errors.len(), 1, "{bad}");
        }
    }

    #[test]
    fn bad_splits_are_refused() {
        for bad in ["", "a", "a=1,b", "A=1", "a=0", "a.b.c=1", "a=-1"] {
            assert!(parse_split(bad, "ns", 80).is_err(), "{bad:?}");
        }
    }
}
