//! Running the sidecar: bind the listeners, serve until SIGTERM/SIGINT or `/shutdown`, then
//! drain within the grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, info, warn};

use crate::admin::Admin;
use crate::config::ProxyConfig;
use crate::connection::Shared;
use crate::connection_limit::{self, ConnectionLimit};
use crate::direction::Direction;
use crate::discovery::cache::Discovery;
use crate::discovery::cache::{CacheConfig, Source};
use crate::discovery::client::{ClientError, GrpcSource, Watcher};
use crate::discovery::dns::{Dns, DnsSource, TtlBounds};
use crate::drain::Drain;
use crate::identity::IdentityError;
use crate::identity::LocalIdentity;
use crate::identity::config::IdentityConfigError;
use crate::listener::{BindError, accept_loop, bind, bind_ipv6_twin};
use crate::loop_guard::LoopGuard;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::{inbound, outbound};
use weft_settings::InboundPolicy;

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot read the local address of {setting}: {source}")]
    LocalAddr {
        setting: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Discovery(#[from] ClientError),
    #[error(transparent)]
    IdentityConfig(#[from] IdentityConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{setting} needs a workload identity, but WEFT_IDENTITY_ADDR is unset: {why}")]
    NeedsIdentity {
        setting: &'static str,
        why: &'static str,
    },
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub async fn run(config: ProxyConfig) -> Result<(), SidecarError> {
    let metrics = Arc::new(Metrics::new());
    let drain = Drain::new();
    let outbound_drain = Drain::new();
    let admin = Admin::new(metrics.clone(), drain.clone())
        .with_app_probes(config.app_probes.clone(), config.pod_ip);

    let admin_listener = bind("WEFT_ADMIN_ADDR", config.admin_addr).await?;
    let outbound_listener = bind("WEFT_OUTBOUND_ADDR", config.outbound_addr).await?;
    let inbound_listener = bind("WEFT_INBOUND_ADDR", config.inbound_addr).await?;
    let outbound_v6 = bind_ipv6_twin("WEFT_OUTBOUND_ADDR", config.outbound_addr)?;
    let inbound_v6 = bind_ipv6_twin("WEFT_INBOUND_ADDR", config.inbound_addr)?;
    let local_port = |listener: &tokio::net::TcpListener, setting| {
        listener
            .local_addr()
            .map(|addr| addr.port())
            .map_err(|source| SidecarError::LocalAddr { setting, source })
    };
    let own_ports = vec![
        local_port(&outbound_listener, "WEFT_OUTBOUND_ADDR")?,
        local_port(&inbound_listener, "WEFT_INBOUND_ADDR")?,
    ];
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| SidecarError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| SidecarError::Signal {
        signal: "SIGINT",
        source,
    })?;

    let identity = identity(&config, &metrics, admin.readiness())?;
    let shared = Shared {
        metrics: metrics.clone(),
        drain: drain.clone(),
        outbound_drain: outbound_drain.clone(),
        loop_guard: LoopGuard::new(own_ports),
        discovery: Some(discovery(&config, &metrics)?),
        identity,
    };
    tokio::spawn(admin.clone().serve(admin_listener));
    tokio::spawn(return_freed_memory(metrics.clone()));
    let (inbound_limit, outbound_limit) = connection_limits(&config, &metrics);
    let outbound = Arc::new(outbound::side(&config, &shared));
    for listener in std::iter::once(outbound_listener).chain(outbound_v6) {
        let side = outbound.clone();
        tokio::spawn(accept_loop(
            listener,
            side.common.drain.clone(),
            outbound_limit.clone(),
            move |stream, peer, watch| {
                let side = side.clone();
                async move { outbound::path::handle(&side, stream, peer, watch).await }
            },
        ));
    }
    let inbound = Arc::new(inbound::side(&config, &shared));
    for listener in std::iter::once(inbound_listener).chain(inbound_v6) {
        let side = inbound.clone();
        tokio::spawn(accept_loop(
            listener,
            side.common.drain.clone(),
            inbound_limit.clone(),
            move |stream, peer, watch| {
                let side = side.clone();
                async move { inbound::path::handle(&side, stream, peer, watch).await }
            },
        ));
    }
    admin.set_ready();
    info!(
        outbound = %config.outbound_addr,
        inbound = %config.inbound_addr,
        admin = %config.admin_addr,
        "weft-proxy ready"
    );

    let cause = tokio::select! {
        _ = sigterm.recv() => Shutdown::Signal("SIGTERM"),
        _ = sigint.recv() => Shutdown::Signal("SIGINT"),
        () = drain.started() => Shutdown::Admin,
    };
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    drain.start();
    match cause {
        Shutdown::Signal(signal) => {
            info!(cause = signal, grace = ?config.shutdown_grace, quiet = ?config.shutdown_quiet_period, "draining: no new inbound connections; the app's outbound calls are served until the proxy has been quiet (WEFT_SHUTDOWN_QUIET_PERIOD)");
            tokio::select! {
                () = wait_until_quiet(&metrics, config.shutdown_quiet_period, deadline) => {}
                // The app (or its wrapper) says it is done with the proxy.
                () = admin.shutdown_requested() => info!("/shutdown: draining the outbound side too"),
            }
        }
        Shutdown::Admin => {
            info!(cause = "/shutdown", grace = ?config.shutdown_grace, "draining: no new connections, finishing in-flight ones")
        }
    }
    outbound_drain.start();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let (inbound, outbound) = tokio::join!(drain.finish(left), outbound_drain.finish(left));
    match (inbound, outbound) {
        (Ok(()), Ok(())) => info!("drained; exiting"),
        (inbound, outbound) => {
            let open = inbound.err().unwrap_or(0) + outbound.err().unwrap_or(0);
            let still_open: Vec<String> = metrics
                .open_connections()
                .into_iter()
                .map(|(direction, protocol, count)| format!("{direction} {protocol}: {count}"))
                .collect();
            warn!(
                open,
                still_open = %still_open.join(", "),
                grace = ?config.shutdown_grace,
                "shutdown grace period ended with connections still open; exiting"
            );
        }
    }
    Ok(())
}

/// Each side's connection ceiling, fitted to the descriptors this process may open (raised to the
/// hard limit first); a configured ceiling that does not fit is lowered, and said so.
fn connection_limits(
    config: &ProxyConfig,
    metrics: &Metrics,
) -> (Arc<ConnectionLimit>, Arc<ConnectionLimit>) {
    let nofile = connection_limit::raise_nofile();
    let (inbound, outbound, lowered) = connection_limit::fit(
        config.inbound_connection_limit,
        config.outbound_connection_limit,
        nofile,
    );
    if lowered {
        warn!(
            nofile,
            inbound,
            outbound,
            "WEFT_INBOUND_CONNECTION_LIMIT + WEFT_OUTBOUND_CONNECTION_LIMIT need more file descriptors than RLIMIT_NOFILE allows (two per connection); lowered to fit"
        );
    }
    info!(inbound, outbound, nofile, "connection limits");
    let limit = |direction, max| {
        ConnectionLimit::new(
            max,
            metrics.connections_refused(direction, "limit"),
            metrics.connections_refused(direction, "accept_error"),
        )
    };
    (
        limit(Direction::Inbound, inbound),
        limit(Direction::Outbound, outbound),
    )
}

/// Gives memory freed by closed connections back to the system. glibc's allocator keeps freed
/// heap for reuse, so a burst of connections would leave its peak RSS behind for good; once many
/// connections have closed (checked every few seconds), the heap is trimmed. One syscall-heavy
/// call per burst, never on the request path.
async fn return_freed_memory(metrics: Arc<Metrics>) {
    const CHECK: Duration = Duration::from_secs(5);
    const CLOSED_ENOUGH: i64 = 256;
    let mut peak = 0i64;
    loop {
        tokio::time::sleep(CHECK).await;
        let (_, open) = metrics.connection_totals();
        peak = peak.max(open);
        if peak - open >= CLOSED_ENOUGH {
            trim_heap();
            debug!(
                closed = peak - open,
                open, "returned freed connection memory to the system"
            );
            peak = open;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// What started the shutdown.
enum Shutdown {
    /// SIGTERM or SIGINT: the app may still be shutting down and calling out.
    Signal(&'static str),
    /// `/shutdown`: whoever asked is done with the proxy.
    Admin,
}

/// Resolves once no connection has been open for `quiet` (at once when `quiet` is zero), or at
/// `deadline`. Polled: a shutdown can afford a tenth of a second; a connection that came and went
/// between two looks still counts, by the accepted total.
async fn wait_until_quiet(metrics: &Metrics, quiet: Duration, deadline: tokio::time::Instant) {
    if quiet.is_zero() {
        return;
    }
    let mut quiet_since: Option<tokio::time::Instant> = None;
    let mut seen = metrics.connection_totals().0;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return;
        }
        let (opened, open) = metrics.connection_totals();
        if open > 0 || opened != seen {
            seen = opened;
            quiet_since = None;
        } else if now.duration_since(*quiet_since.get_or_insert(now)) >= quiet {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100).min(deadline - now)).await;
    }
}

/// The discovery client: the discovery service when WEFT_DISCOVERY_ADDR is set, else DNS only.
fn discovery(config: &ProxyConfig, metrics: &Metrics) -> Result<Discovery, SidecarError> {
    let dns = Arc::new(Dns::new(TtlBounds {
        min: config.dns_min_ttl,
        max: config.dns_max_ttl,
    }));
    let source: Arc<dyn Source> = match &config.discovery_addr {
        Some(addr) => {
            info!(discovery = %addr, "watching destinations with the discovery service");
            let watcher = Watcher {
                namespace: config.pod_namespace.clone(),
                pod: config.pod_name.clone(),
            };
            Arc::new(GrpcSource::new(addr, config.connect_timeout, dns, watcher)?)
        }
        None => {
            info!("WEFT_DISCOVERY_ADDR is unset: DNS-only mode");
            Arc::new(DnsSource::new(dns))
        }
    };
    let cache = CacheConfig {
        wait: config.discovery_wait,
        idle_timeout: config.discovery_idle_timeout,
    };
    Ok(Discovery::new(source, cache, metrics.discovery()))
}

/// The workload identity when WEFT_IDENTITY_ADDR is set; without one, proxies talk plaintext,
/// which is said loudly and refused for settings that cannot work without it.
fn identity(
    config: &ProxyConfig,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Result<Option<Arc<LocalIdentity>>, SidecarError> {
    let Some(settings) = config.identity.settings(&config.pod_namespace)? else {
        if config.inbound_policy == InboundPolicy::Strict {
            return Err(SidecarError::NeedsIdentity {
                setting: "WEFT_INBOUND_POLICY=strict",
                why: "only mTLS would be accepted, and this proxy could not terminate it",
            });
        }
        if !config.inbound_authz.is_empty() {
            return Err(SidecarError::NeedsIdentity {
                setting: "WEFT_INBOUND_AUTHZ",
                why: "client identities can only be known over mTLS",
            });
        }
        metrics.identity.set_enabled(false);
        warn!(
            "WEFT_IDENTITY_ADDR is unset: this proxy has NO workload identity; traffic between proxies is PLAINTEXT and unauthenticated"
        );
        return Ok(None);
    };
    info!(identity = %settings.id, ca = %settings.ca_addr, "requesting a workload certificate");
    let identity = crate::identity::start(
        &settings,
        config.connect_timeout,
        &metrics.identity,
        readiness,
    )?;
    Ok(Some(identity))
}
