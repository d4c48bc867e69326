//! DNS resolution (hickory-resolver, A and AAAA) for names the discovery service does not know,
//! for the control plane's own address, and for everything in DNS-only mode. Answers carry how
//! long they may be used (their TTL, clamped to WEFT_DNS_MIN_TTL..WEFT_DNS_MAX_TTL) so watchers
//! re-resolve in the background. The hosts file is consulted first and re-read when it changes
//! (hickory reads it once per resolver), as clusters without a DNS server rewrite it.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, ResolveHosts};
use hickory_resolver::net::NetError;
use tracing::{debug, warn};

use crate::discovery::cache::{Feed, Source};
use crate::discovery::endpoints::EndpointSpec;
use crate::discovery::{Key, Origin, Resolution};

const HOSTS_FILE: &str = "/etc/hosts";

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS name {name} has no A or AAAA records")]
    NotFound { name: String },
    #[error("resolving DNS name {name} failed: {source}")]
    Failed {
        name: String,
        #[source]
        source: NetError,
    },
    #[error("cannot set up DNS resolution from /etc/resolv.conf: {source}")]
    Config {
        #[source]
        source: NetError,
    },
}

/// A name's addresses and how long they may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    pub valid_for: Duration,
}

#[derive(Clone, Copy, Debug)]
pub struct TtlBounds {
    pub min: Duration,
    pub max: Duration,
}

impl TtlBounds {
    pub fn clamp(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min, self.max.max(self.min))
    }
}

struct Current {
    hosts_mtime: Option<SystemTime>,
    resolver: Arc<TokioResolver>,
}

pub struct Dns {
    current: Mutex<Option<Current>>,
    ttl: TtlBounds,
}

impl Dns {
    pub fn new(ttl: TtlBounds) -> Self {
        Dns {
            current: Mutex::new(None),
            ttl,
        }
    }

    pub fn ttl(&self) -> TtlBounds {
        self.ttl
    }

    /// The name's addresses, sorted (so that unchanged answers compare equal).
    pub async fn resolve(&self, name: &str) -> Result<Answer, DnsError> {
        let resolver = self.resolver()?;
        // A trailing dot would skip the search list, which short cluster names need.
        let lookup = resolver.lookup_ip(name).await.map_err(|source| {
            if source.is_no_records_found() || source.is_nx_domain() {
                DnsError::NotFound {
                    name: name.to_string(),
                }
            } else {
                DnsError::Failed {
                    name: name.to_string(),
                    source,
                }
            }
        })?;
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(DnsError::NotFound {
                name: name.to_string(),
            });
        }
        addrs.sort();
        addrs.dedup();
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now());
        Ok(Answer {
            addrs,
            valid_for: self.ttl.clamp(ttl),
        })
    }

    /// The resolver, rebuilt when the hosts file changed since it was built.
    fn resolver(&self) -> Result<Arc<TokioResolver>, DnsError> {
        let mtime = std::fs::metadata(HOSTS_FILE)
            .and_then(|m| m.modified())
            .ok();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = current.as_ref().filter(|c| c.hosts_mtime == mtime) {
            return Ok(current.resolver.clone());
        }
        let mut builder =
            TokioResolver::builder_tokio().map_err(|source| DnsError::Config { source })?;
        builder.options_mut().use_hosts_file = ResolveHosts::Always;
        // IPv6 only for names without IPv4 addresses: asking for both would wait on an AAAA
        // query even when the hosts file (or the first answer) already gave the A records, and
        // where the nameserver never answers that wait is its full timeout.
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        let resolver = Arc::new(
            builder
                .build()
                .map_err(|source| DnsError::Config { source })?,
        );
        *current = Some(Current {
            hosts_mtime: mtime,
            resolver: resolver.clone(),
        });
        Ok(resolver)
    }
}

/// DNS as the only source (WEFT_DISCOVERY_ADDR unset): names resolve to their addresses,
/// addresses pass through.
pub struct DnsSource {
    dns: Arc<Dns>,
}

impl DnsSource {
    pub fn new(dns: Arc<Dns>) -> Self {
        DnsSource { dns }
    }
}

impl Source for DnsSource {
    fn watch(
        self: Arc<Self>,
        key: Key,
        mut feed: Feed,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            match key {
                Key::Addr(_) => feed.publish(Resolution::Passthrough),
                Key::Name { host, port } => follow(&self.dns, &host, port, &mut feed).await,
            }
        })
    }
}

/// Keeps `feed` up to date with the addresses of `host` (never returns; the watch is aborted
/// when no longer needed).
pub async fn follow(dns: &Dns, host: &Arc<str>, port: u16, feed: &mut Feed) {
    let mut follower = DnsFollower::new(host.clone(), port);
    loop {
        let wait = follower.refresh(dns, feed).await;
        tokio::time::sleep(wait).await;
    }
}

/// One name followed in DNS. Names DNS does not know pass through; on failures the last answer
/// stays in use.
pub struct DnsFollower {
    host: Arc<str>,
    port: u16,
    name: Arc<str>,
    last: Option<Vec<IpAddr>>,
}

impl DnsFollower {
    pub fn new(host: Arc<str>, port: u16) -> Self {
        let name = format!("{host}:{port}").into();
        DnsFollower {
            host,
            port,
            name,
            last: None,
        }
    }

    /// Resolves once and publishes a changed answer; returns when to refresh again.
    pub async fn refresh(&mut self, dns: &Dns, feed: &mut Feed) -> Duration {
        let name = &self.name;
        match dns.resolve(&self.host).await {
            Ok(answer) => {
                feed.metrics().dns("ok");
                feed.set_stale(false);
                if self.last.as_ref() != Some(&answer.addrs) {
                    let specs: Vec<EndpointSpec> = answer
                        .addrs
                        .iter()
                        .map(|ip| EndpointSpec::plain(SocketAddr::new(*ip, self.port)))
                        .collect();
                    debug!(name = %name, addrs = ?answer.addrs, "DNS answer");
                    feed.publish_service(
                        name.clone(),
                        Origin::Dns,
                        &specs,
                        &[],
                        Default::default(),
                    );
                    self.last = Some(answer.addrs);
                }
                answer.valid_for
            }
            Err(DnsError::NotFound { .. }) => {
                feed.metrics().dns("not_found");
                feed.set_stale(false);
                if self.last.take().is_some() || !matches!(feed.current(), Resolution::Passthrough)
                {
                    feed.publish(Resolution::Passthrough);
                }
                dns.ttl().min
            }
            Err(err) => {
                feed.metrics().dns("error");
                if self.last.is_some() {
                    warn!(name = %name, error = %err, "DNS failed; using last known endpoints for {name}");
                    feed.set_stale(true);
                } else if matches!(feed.current(), Resolution::Pending) {
                    warn!(name = %name, error = %err, "DNS failed; forwarding {name} to the original destination");
                    feed.publish(Resolution::Unavailable);
                }
                dns.ttl().min
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_clamped() {
        let bounds = TtlBounds {
            min: Duration::from_secs(5),
            max: Duration::from_secs(60),
        };
        assert_eq!(bounds.clamp(Duration::ZERO), Duration::from_secs(5));
        assert_eq!(
            bounds.clamp(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            bounds.clamp(Duration::from_secs(86400)),
            Duration::from_secs(60)
        );
    }

    #[tokio::test]
    async fn resolves_localhost_from_the_hosts_file() {
        let dns = Dns::new(TtlBounds {
            min: Duration::from_secs(1),
            max: Duration::from_secs(10),
        });
        let answer = dns.resolve("localhost").await.unwrap();
        assert!(answer.addrs.iter().all(|ip| ip.is_loopback()), "{answer:?}");
        assert!(!answer.addrs.is_empty());
        assert!(answer.valid_for <= Duration::from_secs(10));
    }
}
