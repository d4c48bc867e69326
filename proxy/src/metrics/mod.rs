//! The proxy's Prometheus metrics: one registry, typed label sets, and handles that a connection
//! resolves once so that the per-request path touches only atomics (plus one family lookup for the
//! response status).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::detect::{DetectOutcome, Protocol};
use crate::metrics::discovery::DiscoveryMetrics;

pub mod discovery;
pub mod identity;
pub mod prometheus_text;
pub mod resilience;
pub mod tls;

use crate::direction::Direction;
use crate::labels::PeerTls;
use crate::labels::Upstream;
use identity::IdentityMetrics;
use resilience::ResilienceMetrics;
use tls::TlsMetrics;

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for DetectOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    direction: Direction,
    protocol: Protocol,
}

/// Every connection label set, outbound first.
fn every_conn_label() -> impl Iterator<Item = ConnLabels> {
    [Direction::Outbound, Direction::Inbound]
        .into_iter()
        .flat_map(|direction| {
            [
                Protocol::Http1,
                Protocol::Http2,
                Protocol::Tls,
                Protocol::Opaque,
            ]
            .into_iter()
            .map(move |protocol| ConnLabels {
                direction,
                protocol,
            })
        })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    direction: Direction,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabels {
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RequestLabels {
    direction: Direction,
    upstream: Upstream,
    protocol: Protocol,
    /// `None` outbound: a request is counted before the balancer picks its endpoint, so whether
    /// it goes over mTLS is not known yet (the response says).
    tls: Option<PeerTls>,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        ("direction", self.direction).encode(encoder.encode_label())?;
        ("upstream", self.upstream.clone()).encode(encoder.encode_label())?;
        ("protocol", self.protocol).encode(encoder.encode_label())?;
        match &self.tls {
            Some(tls) => tls.encode(self.direction, encoder),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ResponseLabels {
    direction: Direction,
    upstream: Upstream,
    status_code: u16,
    protocol: Protocol,
    tls: PeerTls,
}

impl EncodeLabelSet for ResponseLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        ("direction", self.direction).encode(encoder.encode_label())?;
        ("upstream", self.upstream.clone()).encode(encoder.encode_label())?;
        ("status_code", self.status_code).encode(encoder.encode_label())?;
        ("protocol", self.protocol).encode(encoder.encode_label())?;
        self.tls.encode(self.direction, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    direction: Direction,
    upstream: Upstream,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectLabels {
    direction: Direction,
    protocol: Protocol,
    outcome: DetectOutcome,
}

/// Latency buckets in seconds: fine-grained below 10 ms, where a sidecar's own cost shows.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// All of the proxy's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    tcp_open: Family<ConnLabels, Counter>,
    tcp_close: Family<ConnLabels, Counter>,
    tcp_open_connections: Family<ConnLabels, Gauge>,
    read_bytes: Family<DirLabels, Counter>,
    write_bytes: Family<DirLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    loop_refused: Family<DirLabels, Counter>,
    http_refused: Family<RefusedLabels, Counter>,
    connections_refused: Family<RefusedLabels, Counter>,
    detect: Family<DetectLabels, Counter>,
    pub resilience: ResilienceMetrics,
    discovery: DiscoveryMetrics,
    pub identity: IdentityMetrics,
    pub tls: TlsMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let metrics = Metrics {
            tcp_open: Family::default(),
            tcp_close: Family::default(),
            tcp_open_connections: Family::default(),
            read_bytes: Family::default(),
            write_bytes: Family::default(),
            requests: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            loop_refused: Family::default(),
            http_refused: Family::default(),
            connections_refused: Family::default(),
            detect: Family::default(),
            resilience: ResilienceMetrics::default(),
            discovery: DiscoveryMetrics::register(&mut registry),
            identity: IdentityMetrics::default(),
            tls: TlsMetrics::default(),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "tcp_open",
            "TCP connections accepted and handed to a protocol handler",
            metrics.tcp_open.clone(),
        );
        registry.register(
            "tcp_close",
            "TCP connections that have ended",
            metrics.tcp_close.clone(),
        );
        registry.register(
            "tcp_open_connections",
            "TCP connections currently open",
            metrics.tcp_open_connections.clone(),
        );
        registry.register(
            "tcp_read_bytes",
            "Bytes read from downstream clients",
            metrics.read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to downstream clients",
            metrics.write_bytes.clone(),
        );
        registry.register(
            "request",
            "HTTP requests received and routed to an upstream",
            metrics.requests.clone(),
        );
        registry.register(
            "response",
            "HTTP responses sent downstream, including the proxy's own error responses",
            metrics.responses.clone(),
        );
        registry.register(
            "response_latency_seconds",
            "Time from receiving a request to having its response headers",
            metrics.latency.clone(),
        );
        registry.register(
            "http_refused",
            "HTTP requests and connections refused for what the client sent (reason: header_too_large 431, uri_too_long 414, target_host_mismatch 400, premature_resets: an HTTP/2 connection closed for resetting most of its streams)",
            metrics.http_refused.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections the proxy did not take (reason: limit, over WEFT_*_CONNECTION_LIMIT, reset at once; accept_error, the kernel failed the accept, e.g. out of file descriptors)",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "loop_refused",
            "Connections refused because their destination was the proxy itself",
            metrics.loop_refused.clone(),
        );
        registry.register(
            "detect",
            "Protocol detection results per accepted connection",
            metrics.detect.clone(),
        );
        let resilience = ResilienceMetrics::register(&mut registry);
        let identity = IdentityMetrics::register(&mut registry);
        let tls = TlsMetrics::register(&mut registry);
        Metrics {
            registry,
            resilience,
            identity,
            tls,
            ..metrics
        }
    }

    /// The discovery client's metrics (registered here).
    pub fn discovery(&self) -> DiscoveryMetrics {
        self.discovery.clone()
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The registry in the Prometheus 0.0.4 text format.
    pub fn render_prometheus(&self) -> Result<String, std::fmt::Error> {
        self.render()
            .map(|openmetrics| prometheus_text::from_openmetrics(&openmetrics))
    }

    /// Counts a connection as open until the returned guard drops.
    pub fn connection(&self, direction: Direction, protocol: Protocol) -> ConnectionMetrics {
        let labels = ConnLabels {
            direction,
            protocol,
        };
        self.tcp_open.get_or_create(&labels).inc();
        let open = self.tcp_open_connections.get_or_create_owned(&labels);
        open.inc();
        ConnectionMetrics {
            open,
            closed: self.tcp_close.get_or_create_owned(&labels),
        }
    }

    /// `weft_http_refused_total{direction, reason}`, resolved once.
    pub fn http_refused(&self, direction: Direction, reason: &'static str) -> Counter {
        self.http_refused
            .get_or_create(&RefusedLabels { direction, reason })
            .clone()
    }

    /// `weft_connections_refused_total{direction, reason}`, resolved once.
    pub fn connections_refused(&self, direction: Direction, reason: &'static str) -> Counter {
        self.connections_refused
            .get_or_create(&RefusedLabels { direction, reason })
            .clone()
    }

    /// Connections accepted so far and open now, over both directions: a change in the first
    /// shows a connection that came and went between two looks.
    pub fn connection_totals(&self) -> (u64, i64) {
        every_conn_label().fold((0, 0), |(opened, open), labels| {
            (
                opened + self.tcp_open.get_or_create(&labels).get(),
                open + self.tcp_open_connections.get_or_create(&labels).get(),
            )
        })
    }

    /// Connections open right now, per direction and protocol (only those with any).
    pub fn open_connections(&self) -> Vec<(Direction, Protocol, i64)> {
        every_conn_label()
            .filter_map(|labels| {
                let count = self.tcp_open_connections.get_or_create(&labels).get();
                (count > 0).then_some((labels.direction, labels.protocol, count))
            })
            .collect()
    }

    /// The (read, write) byte counters of one direction, for a counting I/O wrapper.
    pub fn byte_counters(&self, direction: Direction) -> (Counter, Counter) {
        let labels = DirLabels { direction };
        (
            self.read_bytes.get_or_create_owned(&labels),
            self.write_bytes.get_or_create_owned(&labels),
        )
    }

    pub fn loop_refused(&self, direction: Direction) {
        self.loop_refused
            .get_or_create(&DirLabels { direction })
            .inc();
    }

    pub fn detected(&self, direction: Direction, protocol: Protocol, outcome: DetectOutcome) {
        self.detect
            .get_or_create(&DetectLabels {
                direction,
                protocol,
                outcome,
            })
            .inc();
    }

    /// Request metrics for one outbound HTTP connection to a logical service or an address.
    /// Each response is labelled with how the endpoint that answered was reached.
    pub fn http_outbound(&self, upstream: Upstream, protocol: Protocol) -> HttpMetrics {
        self.http(Direction::Outbound, upstream, protocol, None)
    }

    /// Request metrics for one inbound HTTP connection (or one app port of a terminated mTLS
    /// connection): how it arrived is fixed for all its requests.
    pub fn http_inbound(&self, app: SocketAddr, protocol: Protocol, tls: PeerTls) -> HttpMetrics {
        self.http(Direction::Inbound, Upstream::Addr(app), protocol, Some(tls))
    }

    fn http(
        &self,
        direction: Direction,
        upstream: Upstream,
        protocol: Protocol,
        tls: Option<PeerTls>,
    ) -> HttpMetrics {
        HttpMetrics {
            requests: self.requests.get_or_create_owned(&RequestLabels {
                direction,
                upstream: upstream.clone(),
                protocol,
                tls: tls.clone(),
            }),
            latency: self.latency.get_or_create_owned(&LatencyLabels {
                direction,
                upstream: upstream.clone(),
            }),
            responses: self.responses.clone(),
            direction,
            upstream,
            protocol,
            tls,
        }
    }
}

/// Keeps a connection counted in `weft_tcp_open_connections`; counts its close when dropped.
#[derive(Debug)]
pub struct ConnectionMetrics {
    open: Gauge,
    closed: Counter,
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.open.dec();
        self.closed.inc();
    }
}

/// Per-connection HTTP request metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Counter,
    latency: Histogram,
    responses: Family<ResponseLabels, Counter>,
    direction: Direction,
    upstream: Upstream,
    protocol: Protocol,
    /// Inbound: how the connection arrived. Outbound: `None`, each response tells.
    tls: Option<PeerTls>,
}

/// Plaintext when nothing says otherwise: the proxy's own error responses, unmeshed endpoints.
static PLAINTEXT: PeerTls = PeerTls::Plaintext;

impl HttpMetrics {
    pub fn on_request(&self) {
        self.requests.inc();
    }

    /// `served` is what the endpoint client attached to the response (outbound over mTLS);
    /// the connection's own `tls` takes precedence inbound.
    pub fn on_response(&self, status: u16, elapsed: Duration, served: Option<&PeerTls>) {
        self.latency.observe(elapsed.as_secs_f64());
        let tls = self.tls.as_ref().or(served).unwrap_or(&PLAINTEXT);
        self.responses
            .get_or_create(&ResponseLabels {
                direction: self.direction,
                upstream: self.upstream.clone(),
                status_code: status,
                protocol: self.protocol,
                tls: tls.clone(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.2:8080".parse().unwrap()
    }

    #[test]
    fn renders_connection_metrics_with_help_and_labels() {
        let metrics = Metrics::new();
        let conn = metrics.connection(Direction::Outbound, Protocol::Http1);
        let text = metrics.render().unwrap();
        assert!(
            text.contains("# HELP weft_tcp_open TCP connections accepted"),
            "{text}"
        );
        assert!(text.contains("# TYPE weft_tcp_open counter"), "{text}");
        assert!(
            text.contains(r#"weft_tcp_open_total{direction="outbound",protocol="http1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_tcp_open_connections{direction="outbound",protocol="http1"} 1"#),
            "{text}"
        );
        drop(conn);
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"weft_tcp_open_connections{direction="outbound",protocol="http1"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_tcp_close_total{direction="outbound",protocol="http1"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn lists_open_connections() {
        let metrics = Metrics::new();
        let _a = metrics.connection(Direction::Inbound, Protocol::Opaque);
        let _b = metrics.connection(Direction::Inbound, Protocol::Opaque);
        let c = metrics.connection(Direction::Outbound, Protocol::Http2);
        drop(c);
        assert_eq!(
            metrics.open_connections(),
            [(Direction::Inbound, Protocol::Opaque, 2)]
        );
    }

    #[test]
    fn renders_request_response_and_latency() {
        let metrics = Metrics::new();
        let http = metrics.http_inbound(addr(), Protocol::Http2, PeerTls::Plaintext);
        http.on_request();
        http.on_response(503, Duration::from_millis(3), None);
        let text = metrics.render().unwrap();
        assert!(
            text.contains(
                r#"weft_request_total{direction="inbound",upstream="127.0.0.2:8080",protocol="http2",tls="false"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"weft_response_total{direction="inbound",upstream="127.0.0.2:8080",status_code="503",protocol="http2",tls="false"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"weft_response_latency_seconds_count{direction="inbound",upstream="127.0.0.2:8080"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"weft_response_latency_seconds_bucket{le="0.005",direction="inbound",upstream="127.0.0.2:8080"} 1"#
            ),
            "{text}"
        );
    }

    /// Inbound over mTLS: the client's identity labels requests and responses, whatever the
    /// endpoint client attached (inbound has no peer on the app side).
    #[test]
    fn inbound_mtls_labels_carry_the_client_identity() {
        let metrics = Metrics::new();
        let client = PeerTls::Mutual("spiffe://cluster.local/ns/shop/sa/client".into());
        let http = metrics.http_inbound(addr(), Protocol::Http1, client);
        http.on_request();
        http.on_response(200, Duration::from_millis(1), Some(&PeerTls::Plaintext));
        let text = metrics.render().unwrap();
        assert!(
            text.contains(
                r#"weft_request_total{direction="inbound",upstream="127.0.0.2:8080",protocol="http1",tls="true",src_identity="spiffe://cluster.local/ns/shop/sa/client"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"weft_response_total{direction="inbound",upstream="127.0.0.2:8080",status_code="200",protocol="http1",tls="true",src_identity="spiffe://cluster.local/ns/shop/sa/client"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn renders_detection_loop_and_bytes() {
        let metrics = Metrics::new();
        metrics.detected(
            Direction::Outbound,
            Protocol::Opaque,
            DetectOutcome::Timeout,
        );
        metrics.loop_refused(Direction::Inbound);
        let (read, write) = metrics.byte_counters(Direction::Outbound);
        read.inc_by(10);
        write.inc_by(7);
        let text = metrics.render().unwrap();
        assert!(
            text.contains(
                r#"weft_detect_total{direction="outbound",protocol="opaque",outcome="timeout"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_loop_refused_total{direction="inbound"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_tcp_read_bytes_total{direction="outbound"} 10"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_tcp_write_bytes_total{direction="outbound"} 7"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn ipv6_upstream_label_has_brackets() {
        let metrics = Metrics::new();
        let http =
            metrics.http_outbound(Upstream::Addr("[::1]:80".parse().unwrap()), Protocol::Http1);
        http.on_request();
        let text = metrics.render().unwrap();
        assert!(text.contains(r#"upstream="[::1]:80""#), "{text}");
    }
}
