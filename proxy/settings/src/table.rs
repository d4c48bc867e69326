//! The table of every `weft.io/` annotation: what it sets on the pod and how its value is checked.
//! Only settings the proxy actually implements belong here; an accepted-but-ignored annotation
//! would tell users something works when it does not.

use crate::{
    SettingError, parse_bool, parse_cidrs, parse_count, parse_duration, parse_grpc_codes,
    parse_image, parse_inbound_authz, parse_inbound_policy, parse_inject_mode, parse_log_filter,
    parse_log_format, parse_ports, parse_quantity, parse_rate, parse_ratio, parse_status_ranges,
    parse_uint,
};

/// Every annotation starts with this; `Setting::annotation` holds the part after it.
pub const ANNOTATION_PREFIX: &str = "weft.io/";

/// Set by the injector on every pod it meshes, with the injector's version as the value.
/// It is the injector's own marker, so it is accepted on pods without being in `SETTINGS`.
pub const INJECTED_ANNOTATION: &str = "injected";

/// The image the injector uses when neither its options nor `weft.io/proxy-image` name one.
pub const DEFAULT_PROXY_IMAGE: &str =
    concat!("ghcr.io/weft-mesh/weft-proxy:", env!("CARGO_PKG_VERSION"));

/// One annotation and where its value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Without the prefix, e.g. "opaque-ports".
    pub annotation: &'static str,
    pub target: Target,
    pub kind: Kind,
    /// What applies when the annotation is absent, as documented in the README table.
    pub default: Option<&'static str>,
    /// One line for the README table.
    pub summary: &'static str,
    /// A value that validates, shown in the README table.
    pub example: &'static str,
}

impl Setting {
    /// The full annotation key, e.g. "weft.io/opaque-ports".
    pub fn annotation_key(&self) -> String {
        format!("{ANNOTATION_PREFIX}{}", self.annotation)
    }
}

/// Where an annotation's value ends up in the injected pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An environment variable of the proxy container, e.g. "WEFT_OPAQUE_PORTS".
    ProxyEnv(&'static str),
    /// A flag of `weft-proxy init` in the init container, e.g. "--skip-outbound-ports".
    InitArg(&'static str),
    /// `resources.<limits|requests>.<cpu|memory>` of the proxy container.
    ProxyResource {
        bound: ResourceBound,
        resource: &'static str,
    },
    /// The image of both the proxy and the init container.
    ProxyImage,
    /// `weft.io/inject` itself: enabled | disabled.
    Inject,
    /// Where the proxy goes: an init container with `restartPolicy: Always` (a native sidecar,
    /// `true`) or the first of the pod's containers (`false`).
    NativeSidecar,
}

/// Which half of a container's `resources` a quantity goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceBound {
    Limits,
    Requests,
}

impl ResourceBound {
    /// The field name in a container's `resources`.
    pub fn field(self) -> &'static str {
        match self {
            Self::Limits => "limits",
            Self::Requests => "requests",
        }
    }
}

/// The syntax of a setting's value; each has a parser in this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Duration,
    PortList,
    CidrList,
    Ratio,
    Count,
    /// A whole number that may be 0.
    Uint,
    LogFilter,
    LogFormat,
    Quantity,
    Image,
    InjectMode,
    /// HTTP statuses and ranges: "502-504,429".
    StatusRanges,
    /// gRPC status codes by name or number: "unavailable,14".
    GrpcCodes,
    /// Requests per period: "100/s".
    Rate,
    /// "true" or "false".
    Bool,
    /// "strict" or "permissive".
    InboundPolicy,
    /// Per-port identity rules: "8080=spiffe://td/ns/a/sa/b|*;9090=*".
    InboundAuthz,
}

/// Checks `value` against the setting's kind; the error says what was expected and what was given.
pub fn validate(setting: &Setting, value: &str) -> Result<(), SettingError> {
    match setting.kind {
        Kind::Duration => parse_duration(value).map(drop),
        Kind::PortList => parse_ports(value).map(drop),
        Kind::CidrList => parse_cidrs(value).map(drop),
        Kind::Ratio => parse_ratio(value).map(drop),
        Kind::Count => parse_count(value).map(drop),
        Kind::Uint => parse_uint(value).map(drop),
        Kind::LogFilter => parse_log_filter(value).map(drop),
        Kind::LogFormat => parse_log_format(value).map(drop),
        Kind::Quantity => parse_quantity(value).map(drop),
        Kind::Image => parse_image(value).map(drop),
        Kind::InjectMode => parse_inject_mode(value).map(drop),
        Kind::StatusRanges => parse_status_ranges(value).map(drop),
        Kind::GrpcCodes => parse_grpc_codes(value).map(drop),
        Kind::Rate => parse_rate(value).map(drop),
        Kind::Bool => parse_bool(value).map(drop),
        Kind::InboundPolicy => parse_inbound_policy(value).map(drop),
        Kind::InboundAuthz => parse_inbound_authz(value).map(drop),
    }
}

/// Looks a setting up by its annotation name without the `weft.io/` prefix.
pub fn find(annotation_without_prefix: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|setting| setting.annotation == annotation_without_prefix)
}

const fn resource(
    annotation: &'static str,
    bound: ResourceBound,
    resource: &'static str,
    summary: &'static str,
    example: &'static str,
) -> Setting {
    Setting {
        annotation,
        target: Target::ProxyResource { bound, resource },
        kind: Kind::Quantity,
        default: None,
        summary,
        example,
    }
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        annotation: "inject",
        target: Target::Inject,
        kind: Kind::InjectMode,
        default: None,
        summary: "Mesh this pod (on a pod template) or every pod of the namespace (on a Namespace); `disabled` on a pod overrides its namespace.",
        example: "enabled",
    },
    Setting {
        annotation: "skip-inbound-ports",
        target: Target::InitArg("--skip-inbound-ports"),
        kind: Kind::PortList,
        default: Some(""),
        summary: "Inbound ports that bypass the proxy; the admin port 4191 is always skipped.",
        example: "9090,10000-10010",
    },
    Setting {
        annotation: "skip-outbound-ports",
        target: Target::InitArg("--skip-outbound-ports"),
        kind: Kind::PortList,
        default: Some(""),
        summary: "Destination ports the app reaches directly, bypassing the proxy.",
        example: "443,5432",
    },
    Setting {
        annotation: "skip-outbound-cidrs",
        target: Target::InitArg("--skip-outbound-cidrs"),
        kind: Kind::CidrList,
        default: Some(""),
        summary: "Destination networks the app reaches directly, bypassing the proxy.",
        example: "169.254.169.254/32,fd00::/8",
    },
    Setting {
        annotation: "opaque-ports",
        target: Target::ProxyEnv("WEFT_OPAQUE_PORTS"),
        kind: Kind::PortList,
        default: Some("25,587,3306,4444,5432,6379,9300,11211"),
        summary: "Ports proxied as opaque TCP without protocol detection (server-speaks-first protocols such as SMTP, MySQL, PostgreSQL, Redis, memcached).",
        example: "25,3306,8000-8010",
    },
    Setting {
        annotation: "detect-timeout",
        target: Target::ProxyEnv("WEFT_DETECT_TIMEOUT"),
        kind: Kind::Duration,
        default: Some("1s"),
        summary: "How long protocol detection waits for the client's first bytes before treating the connection as opaque TCP.",
        example: "500ms",
    },
    Setting {
        annotation: "discovery-wait",
        target: Target::ProxyEnv("WEFT_DISCOVERY_WAIT"),
        kind: Kind::Duration,
        default: Some("1s"),
        summary: "How long the first connection to a destination waits for discovery's answer before going to the original destination as sent.",
        example: "500ms",
    },
    Setting {
        annotation: "discovery-idle-timeout",
        target: Target::ProxyEnv("WEFT_DISCOVERY_IDLE_TIMEOUT"),
        kind: Kind::Duration,
        default: Some("60s"),
        summary: "A destination's discovery watch is dropped after no connection has used it for this long.",
        example: "5m",
    },
    Setting {
        annotation: "dns-min-ttl",
        target: Target::ProxyEnv("WEFT_DNS_MIN_TTL"),
        kind: Kind::Duration,
        default: Some("5s"),
        summary: "Names resolved with DNS are re-resolved no sooner than this, whatever their TTL (also the retry delay after a failure).",
        example: "1s",
    },
    Setting {
        annotation: "dns-max-ttl",
        target: Target::ProxyEnv("WEFT_DNS_MAX_TTL"),
        kind: Kind::Duration,
        default: Some("60s"),
        summary: "Names resolved with DNS are re-resolved at least this often, whatever their TTL.",
        example: "5m",
    },
    Setting {
        annotation: "connect-timeout",
        target: Target::ProxyEnv("WEFT_CONNECT_TIMEOUT"),
        kind: Kind::Duration,
        default: Some("1s"),
        summary: "How long the proxy waits for a TCP connection to an upstream or to the app.",
        example: "2s",
    },
    Setting {
        annotation: "idle-timeout",
        target: Target::ProxyEnv("WEFT_IDLE_TIMEOUT"),
        kind: Kind::Duration,
        default: Some("1h"),
        summary: "A client connection (HTTP or opaque TCP, inbound and outbound) with no bytes moving either way and no request in flight for this long is closed; pooled upstream HTTP/1 connections are closed after the smaller of this and 90s unused. `0s`: never.",
        example: "10m",
    },
    Setting {
        annotation: "stream-idle-timeout",
        target: Target::ProxyEnv("WEFT_STREAM_IDLE_TIMEOUT"),
        kind: Kind::Duration,
        default: Some("5m"),
        summary: "An HTTP request whose bodies make no progress (and no response headers arrive) for this long is ended: 504 `weft-error: stream idle timeout` (gRPC: DEADLINE_EXCEEDED) before the response headers, a reset stream after. `0s`: never.",
        example: "1m",
    },
    Setting {
        annotation: "header-read-timeout",
        target: Target::ProxyEnv("WEFT_HEADER_READ_TIMEOUT"),
        kind: Kind::Duration,
        default: Some("10s"),
        summary: "An HTTP/1 client must send a request's whole header section within this long of its first byte, else the connection is closed (slowloris). `0s`: no limit.",
        example: "30s",
    },
    Setting {
        annotation: "shutdown-grace",
        target: Target::ProxyEnv("WEFT_SHUTDOWN_GRACE"),
        kind: Kind::Duration,
        default: Some("30s"),
        summary: "After SIGTERM, how long in-flight requests and connections may run before the proxy exits.",
        example: "45s",
    },
    Setting {
        annotation: "proxy-log-level",
        target: Target::ProxyEnv("WEFT_LOG"),
        kind: Kind::LogFilter,
        default: Some("warn,weft=info"),
        summary: "The proxy's log filter (tracing directives).",
        example: "warn,weft=debug",
    },
    Setting {
        annotation: "proxy-log-format",
        target: Target::ProxyEnv("WEFT_LOG_FORMAT"),
        kind: Kind::LogFormat,
        default: Some("plain"),
        summary: "The proxy's log line format: `plain` or `json`.",
        example: "json",
    },
    Setting {
        annotation: "proxy-worker-threads",
        target: Target::ProxyEnv("WEFT_WORKER_THREADS"),
        kind: Kind::Count,
        default: Some("1"),
        summary: "Worker threads of the proxy's runtime.",
        example: "2",
    },
    Setting {
        annotation: "timeout",
        target: Target::ProxyEnv("WEFT_TIMEOUT"),
        kind: Kind::Duration,
        default: Some("0s"),
        summary: "Outbound: how long a whole request, retries included, may wait for response headers before the proxy answers 504 (`weft-error: request timeout`; gRPC: DEADLINE_EXCEEDED). `0s`: no limit. A Service's own annotation wins.",
        example: "10s",
    },
    Setting {
        annotation: "per-try-timeout",
        target: Target::ProxyEnv("WEFT_PER_TRY_TIMEOUT"),
        kind: Kind::Duration,
        default: Some("0s"),
        summary: "Outbound: how long each attempt may wait for response headers; an expired attempt of an idempotent request is retried. `0s`: no limit.",
        example: "2s",
    },
    Setting {
        annotation: "retry-attempts",
        target: Target::ProxyEnv("WEFT_RETRY_ATTEMPTS"),
        kind: Kind::Uint,
        default: Some("2"),
        summary: "Outbound: retries after the first attempt (connect failures, refused streams, retryable statuses). `0` disables retries.",
        example: "3",
    },
    Setting {
        annotation: "retry-statuses",
        target: Target::ProxyEnv("WEFT_RETRY_STATUSES"),
        kind: Kind::StatusRanges,
        default: Some("502-504"),
        summary: "Outbound: response statuses that are retried (idempotent methods only unless `retry-non-idempotent`).",
        example: "502-504,429",
    },
    Setting {
        annotation: "retry-grpc-codes",
        target: Target::ProxyEnv("WEFT_RETRY_GRPC_CODES"),
        kind: Kind::GrpcCodes,
        default: Some("unavailable"),
        summary: "Outbound: gRPC statuses that are retried when they arrive in a trailers-only response (names or numbers).",
        example: "unavailable,resource-exhausted",
    },
    Setting {
        annotation: "retry-budget",
        target: Target::ProxyEnv("WEFT_RETRY_BUDGET"),
        kind: Kind::Ratio,
        default: Some("0.2"),
        summary: "Outbound: retries allowed per request over a 10 s window, per upstream; past it retries stop (`weft_retry_budget_exhausted_total`).",
        example: "0.1",
    },
    Setting {
        annotation: "retry-budget-min-rps",
        target: Target::ProxyEnv("WEFT_RETRY_BUDGET_MIN_RPS"),
        kind: Kind::Uint,
        default: Some("10"),
        summary: "Outbound: retries per second allowed whatever the budget ratio, so low traffic can still be retried.",
        example: "5",
    },
    Setting {
        annotation: "retry-non-idempotent",
        target: Target::ProxyEnv("WEFT_RETRY_NON_IDEMPOTENT"),
        kind: Kind::Bool,
        default: Some("false"),
        summary: "Outbound: also retry POST, PATCH and other non-idempotent requests on a retryable status or a broken connection.",
        example: "true",
    },
    Setting {
        annotation: "retry-backoff",
        target: Target::ProxyEnv("WEFT_RETRY_BACKOFF"),
        kind: Kind::Duration,
        default: Some("25ms"),
        summary: "Outbound: base of the exponential backoff between attempts (doubling, capped at 10x the base, full jitter).",
        example: "50ms",
    },
    Setting {
        annotation: "max-pending",
        target: Target::ProxyEnv("WEFT_MAX_PENDING"),
        kind: Kind::Uint,
        default: Some("1024"),
        summary: "Outbound: requests per upstream that may wait for an in-flight slot; more are refused with 503 `weft-error: overloaded`.",
        example: "100",
    },
    Setting {
        annotation: "max-in-flight",
        target: Target::ProxyEnv("WEFT_MAX_IN_FLIGHT"),
        kind: Kind::Count,
        default: Some("1024"),
        summary: "Outbound: requests per upstream in flight at once (each until its response body ends).",
        example: "256",
    },
    Setting {
        annotation: "max-connections",
        target: Target::ProxyEnv("WEFT_MAX_CONNECTIONS"),
        kind: Kind::Count,
        default: Some("1024"),
        summary: "Outbound: connections per upstream open at once; a request that needs one more is refused with 503 `weft-error: overloaded`.",
        example: "100",
    },
    Setting {
        annotation: "breaker-failures",
        target: Target::ProxyEnv("WEFT_BREAKER_FAILURES"),
        kind: Kind::Count,
        default: Some("5"),
        summary: "Outbound: consecutive failures (5xx, connection errors, per-try timeouts) that eject an endpoint from the balancer.",
        example: "3",
    },
    Setting {
        annotation: "breaker-ejection",
        target: Target::ProxyEnv("WEFT_BREAKER_EJECTION"),
        kind: Kind::Duration,
        default: Some("30s"),
        summary: "Outbound: how long an endpoint's first ejection lasts; each repeat doubles it (up to 10x), then one probe request decides.",
        example: "10s",
    },
    Setting {
        annotation: "breaker-max-ejected",
        target: Target::ProxyEnv("WEFT_BREAKER_MAX_EJECTED"),
        kind: Kind::Ratio,
        default: Some("0.5"),
        summary: "Outbound: the largest share of an upstream's endpoints ejected at once (rounded down; a lone endpoint stays at 0.5).",
        example: "0.34",
    },
    Setting {
        annotation: "inbound-rate-limit",
        target: Target::ProxyEnv("WEFT_INBOUND_RATE_LIMIT"),
        kind: Kind::Rate,
        default: None,
        summary: "Inbound: requests per second, minute or hour the pod accepts in all; more get 429 `weft-error: rate limited`. Unset: no limit.",
        example: "100/s",
    },
    Setting {
        annotation: "inbound-rate-limit-per-client",
        target: Target::ProxyEnv("WEFT_INBOUND_RATE_LIMIT_PER_CLIENT"),
        kind: Kind::Rate,
        default: None,
        summary: "Inbound: requests per period the pod accepts from each client (its mTLS identity, else its IP address). Unset: no limit.",
        example: "600/m",
    },
    resource(
        "proxy-cpu-limit",
        ResourceBound::Limits,
        "cpu",
        "CPU limit of the proxy container.",
        "500m",
    ),
    resource(
        "proxy-cpu-request",
        ResourceBound::Requests,
        "cpu",
        "CPU request of the proxy container.",
        "100m",
    ),
    resource(
        "proxy-memory-limit",
        ResourceBound::Limits,
        "memory",
        "Memory limit of the proxy container.",
        "128Mi",
    ),
    resource(
        "proxy-memory-request",
        ResourceBound::Requests,
        "memory",
        "Memory request of the proxy container.",
        "32Mi",
    ),
    Setting {
        annotation: "inbound-policy",
        target: Target::ProxyEnv("WEFT_INBOUND_POLICY"),
        kind: Kind::InboundPolicy,
        default: Some("permissive"),
        summary: "`strict`: the app's ports accept only mTLS from mesh workloads (plaintext gets 403 or a closed connection); `permissive`: plaintext too. Needs the identity service.",
        example: "strict",
    },
    Setting {
        annotation: "allow-identities",
        target: Target::ProxyEnv("WEFT_INBOUND_AUTHZ"),
        kind: Kind::InboundAuthz,
        default: Some(""),
        summary: "Per-port authorization: `<ports>=<identity>|...` rules separated by `;`; an identity is a SPIFFE id, `spiffe://<td>/ns/<ns>/sa/*` or `*` (any mesh workload). Named ports refuse everyone else, plaintext included.",
        example: "8080=spiffe://cluster.local/ns/shop/sa/web|spiffe://cluster.local/ns/ops/sa/*;9090=*",
    },
    Setting {
        annotation: "native-sidecar",
        target: Target::NativeSidecar,
        kind: Kind::Bool,
        default: Some("true"),
        summary: "`true`: the proxy is an init container with `restartPolicy: Always` (Kubernetes 1.29+), started before the app once `/ready` and stopped after it, so Jobs complete; `false`: the classic first container, the app waiting for it in a `postStart` hook.",
        example: "false",
    },
    Setting {
        annotation: "proxy-image",
        target: Target::ProxyImage,
        kind: Kind::Image,
        default: Some(DEFAULT_PROXY_IMAGE),
        summary: "Image of the proxy and its init container.",
        example: "ghcr.io/weft-mesh/weft-proxy:0.1.0",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_row_documented_with_a_valid_example() {
        for setting in SETTINGS {
            assert!(!setting.summary.trim().is_empty(), "{}", setting.annotation);
            assert!(!setting.example.trim().is_empty(), "{}", setting.annotation);
            if let Err(e) = validate(setting, setting.example) {
                panic!("example of {} does not validate: {e}", setting.annotation);
            }
        }
    }

    #[test]
    fn every_default_validates() {
        for setting in SETTINGS {
            if let Some(default) = setting.default
                && let Err(e) = validate(setting, default)
            {
                panic!("default of {} does not validate: {e}", setting.annotation);
            }
        }
    }

    #[test]
    fn names_and_targets_are_unique() {
        let annotations: HashSet<_> = SETTINGS.iter().map(|s| s.annotation).collect();
        assert_eq!(annotations.len(), SETTINGS.len());
        let targets: HashSet<_> = SETTINGS.iter().map(|s| format!("{:?}", s.target)).collect();
        assert_eq!(targets.len(), SETTINGS.len());
        assert!(
            find(INJECTED_ANNOTATION).is_none(),
            "the injector's marker is not a setting"
        );
    }

    #[test]
    fn annotations_are_lowercase_without_prefix() {
        for setting in SETTINGS {
            assert!(!setting.annotation.starts_with(ANNOTATION_PREFIX));
            assert!(
                setting
                    .annotation
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-'),
                "{}",
                setting.annotation
            );
        }
    }

    #[test]
    fn proxy_env_names_are_weft_prefixed() {
        for setting in SETTINGS {
            if let Target::ProxyEnv(name) = setting.target {
                assert!(name.starts_with("WEFT_"), "{name}");
            }
        }
    }

    #[test]
    fn find_by_name() {
        let opaque = find("opaque-ports").unwrap();
        assert_eq!(opaque.target, Target::ProxyEnv("WEFT_OPAQUE_PORTS"));
        assert_eq!(opaque.annotation_key(), "weft.io/opaque-ports");
        assert!(find("weft.io/opaque-ports").is_none());
        assert_eq!(
            find("timeout").unwrap().target,
            Target::ProxyEnv("WEFT_TIMEOUT")
        );
    }

    #[test]
    fn validate_dispatches_on_kind() {
        let check = |name: &str, good: &str, bad: &str| {
            let setting = find(name).unwrap();
            assert!(validate(setting, good).is_ok(), "{name}={good}");
            assert!(validate(setting, bad).is_err(), "{name}={bad}");
        };
        check("inject", "disabled", "true");
        check("skip-inbound-ports", "", "0");
        check("skip-outbound-cidrs", "10.0.0.0/8", "10.0.0.1/8");
        check("detect-timeout", "250ms", "-1s");
        check("idle-timeout", "0s", "1 hour");
        check("stream-idle-timeout", "30s", "5x");
        check("header-read-timeout", "30s", "-1s");
        check("proxy-log-level", "info", "weft=verbose");
        check("proxy-log-format", "json", "yaml");
        check("proxy-worker-threads", "4", "0");
        check("proxy-memory-limit", "64Mi", "64MB");
        check("proxy-image", "weft-proxy:dev", "Weft Proxy");
        check("retry-statuses", "429,502-504", "5xx");
        check("retry-grpc-codes", "14", "unavailble");
        check("retry-attempts", "0", "-1");
        check("retry-non-idempotent", "false", "yes");
        check("inbound-rate-limit", "10/s", "10/d");
        check("inbound-policy", "permissive", "mtls");
        check("allow-identities", "8080=*", "8080=web");
    }

    #[test]
    fn default_image_carries_crate_version() {
        assert_eq!(
            DEFAULT_PROXY_IMAGE,
            format!("ghcr.io/weft-mesh/weft-proxy:{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
