//! The proxy's configuration: every `WEFT_*` environment variable is also a `--flag`, parsed by
//! clap with the value parsers of `weft-settings`, so the injector and the proxy agree on syntax.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use weft_settings::{
    GrpcCodeSet, InboundAuthz, InboundPolicy, LogFormat, PortSet, Rate, StatusSet,
};

use crate::app_probe::AppProbes;
use crate::http::server::HttpLimits;
use crate::identity::config::IdentityConfig;
use crate::resilience::breaker::BreakerConfig;
use crate::resilience::policy::{LimitsPolicy, ResiliencePolicy, RetryPolicy, defaults};

/// `weft-proxy` (no subcommand): run the sidecar.
#[derive(Clone, Debug, clap::Args)]
pub struct ProxyConfig {
    /// Where the outbound listener binds (iptables OUTPUT redirects the app's connections here).
    #[arg(long, env = "WEFT_OUTBOUND_ADDR", default_value = "127.0.0.1:4140")]
    pub outbound_addr: SocketAddr,

    /// Where the inbound listener binds (iptables PREROUTING redirects connections to the pod here).
    #[arg(long, env = "WEFT_INBOUND_ADDR", default_value = "0.0.0.0:4143")]
    pub inbound_addr: SocketAddr,

    /// Where the admin server (/live, /ready, /metrics, /shutdown) binds.
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "0.0.0.0:4191")]
    pub admin_addr: SocketAddr,

    /// Destination ports proxied as opaque TCP without protocol detection.
    #[arg(
        long,
        env = "WEFT_OPAQUE_PORTS",
        default_value = "25,587,3306,4444,5432,6379,9300,11211",
        value_parser = weft_settings::parse_ports
    )]
    pub opaque_ports: PortSet,

    /// How long detection waits for the client's first bytes before treating it as opaque.
    #[arg(long, env = "WEFT_DETECT_TIMEOUT", default_value = "1s", value_parser = weft_settings::parse_duration)]
    pub detect_timeout: Duration,

    /// How long connecting to an upstream may take.
    #[arg(long, env = "WEFT_CONNECT_TIMEOUT", default_value = "1s", value_parser = weft_settings::parse_duration)]
    pub connect_timeout: Duration,

    /// A client connection with no bytes moving either way and no request in flight for this long is closed (pooled upstream HTTP/1 connections: the smaller of this and 90s); 0s: never.
    #[arg(long, env = "WEFT_IDLE_TIMEOUT", default_value = "1h", value_parser = weft_settings::parse_duration)]
    pub idle_timeout: Duration,

    /// An HTTP request whose bodies make no progress (and no response headers arrive) for this long is ended (504 or a reset); 0s: never.
    #[arg(long, env = "WEFT_STREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = weft_settings::parse_duration)]
    pub stream_idle_timeout: Duration,

    /// How long an HTTP/1 client may take to send a request's header section, from its first byte; 0s: no limit.
    #[arg(long, env = "WEFT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = weft_settings::parse_duration)]
    pub header_read_timeout: Duration,

    /// The discovery service ("host:port"); unset: DNS-only mode (names in HTTP authorities are
    /// balanced over their DNS addresses, everything else goes to its original destination).
    #[arg(long, env = "WEFT_DISCOVERY_ADDR", value_parser = parse_host_port)]
    pub discovery_addr: Option<String>,

    /// How long the first connection to a destination waits for discovery's first answer.
    #[arg(long, env = "WEFT_DISCOVERY_WAIT", default_value = "1s", value_parser = weft_settings::parse_duration)]
    pub discovery_wait: Duration,

    /// Discovery watches unused this long are dropped.
    #[arg(long, env = "WEFT_DISCOVERY_IDLE_TIMEOUT", default_value = "60s", value_parser = weft_settings::parse_duration)]
    pub discovery_idle_timeout: Duration,

    /// Lower bound on how long a DNS answer is used before re-resolving.
    #[arg(long, env = "WEFT_DNS_MIN_TTL", default_value = "5s", value_parser = weft_settings::parse_duration)]
    pub dns_min_ttl: Duration,

    /// Upper bound on how long a DNS answer is used before re-resolving.
    #[arg(long, env = "WEFT_DNS_MAX_TTL", default_value = "60s", value_parser = weft_settings::parse_duration)]
    pub dns_max_ttl: Duration,

    /// The pod's namespace (downward API), sent to discovery to resolve bare service names;
    /// part of the pod's identity.
    #[arg(long, env = "WEFT_POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,

    /// The pod's name (downward API), for discovery's logs.
    #[arg(long, env = "WEFT_POD_NAME", default_value = "")]
    pub pod_name: String,

    /// The most connections the inbound side holds at once; more are reset and counted. 0: a
    /// quarter of the file descriptors RLIMIT_NOFILE allows (each connection takes two).
    #[arg(long, env = "WEFT_INBOUND_CONNECTION_LIMIT", default_value = "0")]
    pub inbound_connection_limit: u64,

    /// The most connections the outbound side holds at once; more are reset and counted. 0: as
    /// for inbound.
    #[arg(long, env = "WEFT_OUTBOUND_CONNECTION_LIMIT", default_value = "0")]
    pub outbound_connection_limit: u64,

    /// HTTP/1: the largest request head (request line and headers), in KiB, answered 431 past
    /// it; HTTP/2: the largest header list. Envoy's default is 60.
    #[arg(long, env = "WEFT_MAX_REQUEST_HEADERS_KB", default_value = "60", value_parser = clap::value_parser!(u32).range(8..=1024))]
    pub max_request_headers_kb: u32,

    /// HTTP/1: the most header fields in one request, answered 431 past it.
    #[arg(long, env = "WEFT_MAX_REQUEST_HEADERS", default_value = "100", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub max_request_headers: u32,

    /// The longest request target (path and query, or the absolute form), in bytes, answered
    /// 414 past it.
    #[arg(long, env = "WEFT_MAX_URI_LENGTH", default_value = "16384", value_parser = clap::value_parser!(u32).range(256..=1048576))]
    pub max_uri_length: u32,

    /// HTTP/2: how many streams one client connection may have open at once.
    #[arg(long, env = "WEFT_H2_MAX_CONCURRENT_STREAMS", default_value = "100", value_parser = clap::value_parser!(u32).range(1..))]
    pub h2_max_concurrent_streams: u32,

    /// HTTP/2: once a client connection has opened this many streams, it is closed (GOAWAY) when
    /// most of them were reset before their response came (paced rapid reset).
    #[arg(long, env = "WEFT_H2_PREMATURE_RESET_MIN_STREAMS", default_value = "100", value_parser = clap::value_parser!(u32).range(1..))]
    pub h2_premature_reset_min_streams: u32,

    /// The pod's IP (downward API): where the app's probes (WEFT_APP_PROBES) are sent, as the
    /// kubelet would; unset: loopback.
    #[arg(long, env = "WEFT_POD_IP", value_parser = parse_pod_ip)]
    pub pod_ip: Option<IpAddr>,

    /// The app containers' kubelet probes, which the injector points at the admin port
    /// (/app-health/<container>/<kind>): a JSON object of Kubernetes probes by
    /// "<container>/<kind>", ports as numbers. The proxy runs each against the app.
    #[arg(long, env = "WEFT_APP_PROBES", default_value = "", value_parser = parse_app_probes)]
    pub app_probes: AppProbes,

    /// After SIGTERM, the app's outbound calls keep being served until no connection has been
    /// open for this long (or WEFT_SHUTDOWN_GRACE ends); new inbound connections are refused at
    /// once. 0s: drain everything at once (native sidecars, which the kubelet stops only after
    /// the app has exited).
    #[arg(long, env = "WEFT_SHUTDOWN_QUIET_PERIOD", default_value = "5s", value_parser = weft_settings::parse_duration)]
    pub shutdown_quiet_period: Duration,

    /// After SIGTERM or /shutdown, how long in-flight work may continue before exiting.
    #[arg(long, env = "WEFT_SHUTDOWN_GRACE", default_value = "30s", value_parser = weft_settings::parse_duration)]
    pub shutdown_grace: Duration,

    /// Log filter (tracing directives).
    #[arg(long = "log", env = "WEFT_LOG", default_value = "warn,weft=info", value_parser = weft_settings::parse_log_filter)]
    pub log: String,

    /// Log line format: plain or json.
    #[arg(long, env = "WEFT_LOG_FORMAT", default_value = "plain", value_parser = weft_settings::parse_log_format)]
    pub log_format: LogFormat,

    /// Runtime worker threads; 1 runs everything on one thread.
    #[arg(long, env = "WEFT_WORKER_THREADS", default_value = "1", value_parser = weft_settings::parse_count)]
    pub worker_threads: u32,

    /// Outbound: how long a whole request (retries included) may take to get response headers; 0s: no limit.
    #[arg(long, env = "WEFT_TIMEOUT", default_value = defaults::TIMEOUT, value_parser = weft_settings::parse_duration)]
    pub timeout: Duration,

    /// Outbound: how long each attempt may take to get response headers; 0s: no limit.
    #[arg(long, env = "WEFT_PER_TRY_TIMEOUT", default_value = defaults::PER_TRY_TIMEOUT, value_parser = weft_settings::parse_duration)]
    pub per_try_timeout: Duration,

    /// Outbound: retries after the first attempt; 0 disables retries.
    #[arg(long, env = "WEFT_RETRY_ATTEMPTS", default_value = defaults::RETRY_ATTEMPTS, value_parser = weft_settings::parse_uint)]
    pub retry_attempts: u32,

    /// Outbound: response statuses that are retried (idempotent methods only, unless allowed).
    #[arg(long, env = "WEFT_RETRY_STATUSES", default_value = defaults::RETRY_STATUSES, value_parser = weft_settings::parse_status_ranges)]
    pub retry_statuses: StatusSet,

    /// Outbound: gRPC statuses of trailers-only responses that are retried.
    #[arg(long, env = "WEFT_RETRY_GRPC_CODES", default_value = defaults::RETRY_GRPC_CODES, value_parser = weft_settings::parse_grpc_codes)]
    pub retry_grpc_codes: GrpcCodeSet,

    /// Outbound: retries allowed per request over a 10 s window, per upstream.
    #[arg(long, env = "WEFT_RETRY_BUDGET", default_value = defaults::RETRY_BUDGET, value_parser = weft_settings::parse_ratio)]
    pub retry_budget: f64,

    /// Outbound: retries per second allowed whatever the budget ratio, per upstream.
    #[arg(long, env = "WEFT_RETRY_BUDGET_MIN_RPS", default_value = defaults::RETRY_BUDGET_MIN_RPS, value_parser = weft_settings::parse_uint)]
    pub retry_budget_min_rps: u32,

    /// Outbound: also retry non-idempotent methods (POST, PATCH) on a retryable status or a broken connection.
    #[arg(long, env = "WEFT_RETRY_NON_IDEMPOTENT", action = clap::ArgAction::Set, default_value = defaults::RETRY_NON_IDEMPOTENT, value_parser = weft_settings::parse_bool)]
    pub retry_non_idempotent: bool,

    /// Outbound: base of the exponential backoff between attempts (capped at 10x, full jitter).
    #[arg(long, env = "WEFT_RETRY_BACKOFF", default_value = defaults::RETRY_BACKOFF, value_parser = weft_settings::parse_duration)]
    pub retry_backoff: Duration,

    /// Outbound: requests per upstream that may wait for an in-flight slot; more get 503.
    #[arg(long, env = "WEFT_MAX_PENDING", default_value = defaults::MAX_PENDING, value_parser = weft_settings::parse_uint)]
    pub max_pending: u32,

    /// Outbound: requests per upstream in flight at once.
    #[arg(long, env = "WEFT_MAX_IN_FLIGHT", default_value = defaults::MAX_IN_FLIGHT, value_parser = weft_settings::parse_count)]
    pub max_in_flight: u32,

    /// Outbound: connections per upstream open at once; a request needing one more gets 503.
    #[arg(long, env = "WEFT_MAX_CONNECTIONS", default_value = defaults::MAX_CONNECTIONS, value_parser = weft_settings::parse_count)]
    pub max_connections: u32,

    /// Outbound: consecutive failures (5xx, errors, per-try timeouts) that eject an endpoint from the balancer.
    #[arg(long, env = "WEFT_BREAKER_FAILURES", default_value = defaults::BREAKER_FAILURES, value_parser = weft_settings::parse_count)]
    pub breaker_failures: u32,

    /// Outbound: how long a first ejection lasts; each repeat doubles it, up to 10x.
    #[arg(long, env = "WEFT_BREAKER_EJECTION", default_value = defaults::BREAKER_EJECTION, value_parser = weft_settings::parse_duration)]
    pub breaker_ejection: Duration,

    /// Outbound: the largest share of an upstream's endpoints ejected at once.
    #[arg(long, env = "WEFT_BREAKER_MAX_EJECTED", default_value = defaults::BREAKER_MAX_EJECTED, value_parser = weft_settings::parse_ratio)]
    pub breaker_max_ejected: f64,

    /// Inbound: requests per period the pod accepts in all (e.g. 100/s); unset: no limit.
    #[arg(long, env = "WEFT_INBOUND_RATE_LIMIT", value_parser = weft_settings::parse_rate)]
    pub inbound_rate_limit: Option<Rate>,

    /// Inbound: requests per period the pod accepts from each client (its mTLS identity, else its IP); unset: no limit.
    #[arg(long, env = "WEFT_INBOUND_RATE_LIMIT_PER_CLIENT", value_parser = weft_settings::parse_rate)]
    pub inbound_rate_limit_per_client: Option<Rate>,

    #[command(flatten)]
    pub identity: IdentityConfig,

    /// Inbound: strict (the app's ports accept only mTLS from mesh workloads) or permissive (plaintext too).
    #[arg(long, env = "WEFT_INBOUND_POLICY", default_value = "permissive", value_parser = weft_settings::parse_inbound_policy)]
    pub inbound_policy: InboundPolicy,

    /// Inbound: per-port client identities, e.g. "8080=spiffe://cluster.local/ns/shop/sa/web|spiffe://cluster.local/ns/ops/sa/*;9090=*".
    #[arg(long, env = "WEFT_INBOUND_AUTHZ", default_value = "", value_parser = weft_settings::parse_inbound_authz)]
    pub inbound_authz: InboundAuthz,
}

impl ProxyConfig {
    /// What a client's HTTP may be, from the `WEFT_MAX_*` and `WEFT_H2_*` settings.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_header_bytes: self.max_request_headers_kb as usize * 1024,
            max_headers: self.max_request_headers as usize,
            max_uri_length: self.max_uri_length as usize,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            h2_premature_reset_min_streams: self.h2_premature_reset_min_streams,
        }
    }

    /// The client's defaults for every upstream: the `WEFT_*` settings over the built-in ones.
    pub fn resilience_policy(&self) -> ResiliencePolicy {
        ResiliencePolicy {
            timeout: self.timeout,
            per_try_timeout: self.per_try_timeout,
            retry: RetryPolicy {
                attempts: self.retry_attempts,
                statuses: self.retry_statuses.clone(),
                grpc_codes: self.retry_grpc_codes,
                budget_ratio: self.retry_budget,
                budget_min_per_second: self.retry_budget_min_rps,
                non_idempotent: self.retry_non_idempotent,
                backoff_base: self.retry_backoff,
                backoff_max: self.retry_backoff * 10,
            },
            limits: LimitsPolicy {
                max_pending: self.max_pending,
                max_in_flight: self.max_in_flight,
                max_connections: self.max_connections,
            },
            breaker: BreakerConfig {
                failures: self.breaker_failures,
                base_ejection: self.breaker_ejection,
                max_ejection: self.breaker_ejection.saturating_mul(10),
                max_ejected_ratio: self.breaker_max_ejected,
            },
        }
    }
}

/// A "host:port" (a DNS name or an IP address, and a port).
fn parse_host_port(value: &str) -> Result<String, String> {
    let (host, port) = value.rsplit_once(':').ok_or_else(|| {
        "expected host:port, e.g. weft-discovery.weft.svc.cluster.local:8086".to_string()
    })?;
    port.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("{port:?} is not a port (1-65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if host.parse::<std::net::IpAddr>().is_err() && !name_ok {
        return Err(format!("{host:?} is neither an IP address nor a DNS name"));
    }
    Ok(value.to_string())
}

fn parse_pod_ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| "expected an IP address (the downward API's status.podIP)".to_owned())
}

fn parse_app_probes(text: &str) -> Result<AppProbes, String> {
    AppProbes::parse(text).map_err(|err| err.to_string())
}

/// Turns clap's report of a refused value into one line naming the environment variable, e.g.
/// `invalid WEFT_DETECT_TIMEOUT="abc": expected a duration ...`. Other errors (help, unknown
/// flags) are left to clap.
pub fn describe_invalid_value(err: &clap::Error, command: &clap::Command) -> Option<String> {
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.as_str(),
        _ => "",
    };
    // clap names the argument as "--long <VALUE>".
    let long = arg.split_whitespace().next()?.trim_start_matches("--");
    let setting = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("--{long}"));
    let reason = std::error::Error::source(err)
        .map(|source| source.to_string())
        .unwrap_or_else(|| "not a valid value".to_string());
    Some(format!("invalid {setting}={value:?}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: ProxyConfig,
    }

    fn parse(flags: &[&str]) -> Result<ProxyConfig, String> {
        let argv = std::iter::once("weft-proxy").chain(flags.iter().copied());
        Cli::try_parse_from(argv)
            .map(|cli| cli.config)
            .map_err(|err| {
                describe_invalid_value(&err, &Cli::command()).unwrap_or_else(|| err.to_string())
            })
    }

    #[test]
    fn defaults_are_the_contract() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.outbound_addr, "127.0.0.1:4140".parse().unwrap());
        assert_eq!(config.inbound_addr, "0.0.0.0:4143".parse().unwrap());
        assert_eq!(config.admin_addr, "0.0.0.0:4191".parse().unwrap());
        assert_eq!(config.outbound_addr.port(), weft_settings::OUTBOUND_PORT);
        assert_eq!(config.inbound_addr.port(), weft_settings::INBOUND_PORT);
        assert_eq!(config.admin_addr.port(), weft_settings::ADMIN_PORT);
        assert_eq!(config.detect_timeout, Duration::from_secs(1));
        assert_eq!(config.connect_timeout, Duration::from_secs(1));
        assert_eq!(config.idle_timeout, Duration::from_secs(3600));
        assert_eq!(config.stream_idle_timeout, Duration::from_secs(300));
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.shutdown_grace, Duration::from_secs(30));
        assert_eq!(config.log_format, LogFormat::Plain);
        assert_eq!(config.worker_threads, 1);
        assert!(config.opaque_ports.contains(3306));
        assert!(!config.opaque_ports.contains(80));
    }

    #[test]
    fn default_resilience_settings_are_the_built_in_policy() {
        assert_eq!(
            parse(&[]).unwrap().resilience_policy(),
            ResiliencePolicy::default()
        );
    }

    #[test]
    fn resilience_settings_reach_the_policy() {
        let config = parse(&[
            "--timeout=3s",
            "--retry-attempts=0",
            "--retry-statuses=429,500-503",
            "--retry-grpc-codes=unavailable,internal",
            "--retry-non-idempotent=true",
            "--retry-backoff=100ms",
            "--max-pending=0",
            "--inbound-rate-limit=100/s",
        ])
        .unwrap();
        let policy = config.resilience_policy();
        assert_eq!(policy.timeout, Duration::from_secs(3));
        assert_eq!(policy.retry.attempts, 0);
        assert!(policy.retry.statuses.contains(429) && !policy.retry.statuses.contains(504));
        assert!(policy.retry.grpc_codes.contains(13));
        assert!(policy.retry.non_idempotent);
        assert_eq!(policy.retry.backoff_max, Duration::from_secs(1));
        assert_eq!(policy.limits.max_pending, 0);
        assert_eq!(config.inbound_rate_limit.unwrap().per_second(), 100.0);
        assert_eq!(config.inbound_rate_limit_per_client, None);
        let err = parse(&["--retry-statuses=5xx"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_RETRY_STATUSES="5xx": "#),
            "{err}"
        );
        let err = parse(&["--max-in-flight=0"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_MAX_IN_FLIGHT="0": "#),
            "{err}"
        );
    }

    #[test]
    fn flags_override() {
        let config = parse(&[
            "--detect-timeout=250ms",
            "--opaque-ports=8000-8010",
            "--log-format=json",
            "--worker-threads=2",
            "--outbound-addr=127.0.0.1:14140",
        ])
        .unwrap();
        assert_eq!(config.detect_timeout, Duration::from_millis(250));
        assert!(config.opaque_ports.contains(8005));
        assert!(!config.opaque_ports.contains(3306));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.worker_threads, 2);
        assert_eq!(config.outbound_addr.port(), 14140);
    }

    #[test]
    fn inbound_policy_settings() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.inbound_policy, InboundPolicy::Permissive);
        assert!(config.inbound_authz.is_empty());
        assert_eq!(config.identity.identity_addr, None);
        assert_eq!(config.identity.trust_domain, "cluster.local");
        let config = parse(&[
            "--inbound-policy=strict",
            "--inbound-authz=8080=spiffe://cluster.local/ns/shop/sa/web",
        ])
        .unwrap();
        assert_eq!(config.inbound_policy, InboundPolicy::Strict);
        assert!(config.inbound_authz.allowed_on(8080).is_some());
        let err = parse(&["--inbound-policy=on"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_INBOUND_POLICY="on": "#),
            "{err}"
        );
        let err = parse(&["--inbound-authz=8080=web"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_INBOUND_AUTHZ="8080=web": "#),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = parse(&["--detect-timeout=abc"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_DETECT_TIMEOUT="abc": expected a duration"#),
            "{err}"
        );
        let err = parse(&["--idle-timeout=soon"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_IDLE_TIMEOUT="soon": expected a duration"#),
            "{err}"
        );
        let err = parse(&["--stream-idle-timeout=-1s"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_STREAM_IDLE_TIMEOUT="-1s": "#),
            "{err}"
        );
        let err = parse(&["--header-read-timeout=1d"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_HEADER_READ_TIMEOUT="1d": "#),
            "{err}"
        );
        let err = parse(&["--opaque-ports=0"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_OPAQUE_PORTS="0": "#),
            "{err}"
        );
        let err = parse(&["--inbound-addr=nowhere"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_INBOUND_ADDR="nowhere": "#),
            "{err}"
        );
        let err = parse(&["--log-format=xml"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_LOG_FORMAT="xml": "#),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        let err = parse(&["--discovery-addr=weft-discovery"]).unwrap_err();
        assert!(
            err.starts_with(r#"invalid WEFT_DISCOVERY_ADDR="weft-discovery": expected host:port"#),
            "{err}"
        );
        let err = parse(&["--discovery-addr=a b:80"]).unwrap_err();
        assert!(err.starts_with("invalid WEFT_DISCOVERY_ADDR="), "{err}");
    }

    #[test]
    fn discovery_address_is_optional_and_checked() {
        assert_eq!(parse(&[]).unwrap().discovery_addr, None);
        let config =
            parse(&["--discovery-addr=weft-discovery.weft.svc.cluster.local:8086"]).unwrap();
        assert_eq!(
            config.discovery_addr.as_deref(),
            Some("weft-discovery.weft.svc.cluster.local:8086")
        );
        assert!(parse(&["--discovery-addr=[::1]:8086"]).is_ok());
        assert!(parse(&["--discovery-addr=10.0.0.1:0"]).is_err());
    }

    #[test]
    fn every_proxy_setting_in_the_table_is_an_env_var_with_its_default() {
        let command = Cli::command();
        for setting in weft_settings::SETTINGS {
            let weft_settings::Target::ProxyEnv(name) = setting.target else {
                continue;
            };
            let arg = command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|env| env == name))
                .unwrap_or_else(|| {
                    panic!("{name} is in weft_settings::SETTINGS but not a proxy setting")
                });
            let defaults: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy())
                .collect();
            if let Some(default) = setting.default {
                assert_eq!(defaults, [default], "default of {name}");
            }
        }
    }
}
