//! `weft-discovery watch`: what the service tells a proxy about one target, one line per update —
//! for operators ("why does the proxy send there?") and for end-to-end tests.

use std::fmt::Write as _;
use std::time::Duration;

use weft_discovery_api::v1::discovery_client::DiscoveryClient;
use weft_discovery_api::v1::watch_update::Update;
use weft_discovery_api::v1::{Endpoint, WatchRequest, WatchUpdate};

#[derive(Debug, thiserror::Error)]
pub enum WatchClientError {
    #[error("connecting to weft-discovery at {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("watching {target} at {addr}: {status}")]
    Watch {
        addr: String,
        target: String,
        status: tonic::Status,
    },
    #[error("the stream from {addr} ended after {received} update(s)")]
    Ended { addr: String, received: usize },
    #[error("{received} of {wanted} update(s) from {addr} within {timeout:?} (--timeout)")]
    Timeout {
        addr: String,
        received: usize,
        wanted: usize,
        timeout: Duration,
    },
}

/// Watches `target` at `addr` (host:port), printing each update with `print`, until `updates`
/// have arrived (None: until the stream ends) or `timeout` passes.
pub async fn watch(
    addr: &str,
    target: &str,
    client_namespace: &str,
    updates: Option<usize>,
    timeout: Duration,
    mut print: impl FnMut(String),
) -> Result<(), WatchClientError> {
    let mut received = 0;
    let run = async {
        let received = &mut received;
        let mut client = DiscoveryClient::connect(format!("http://{addr}"))
            .await
            .map_err(|source| WatchClientError::Connect {
                addr: addr.into(),
                source,
            })?;
        let request = WatchRequest {
            target: target.into(),
            client_namespace: client_namespace.into(),
            client_pod: "weft-discovery-watch".into(),
        };
        let watch_error = |status| WatchClientError::Watch {
            addr: addr.into(),
            target: target.into(),
            status,
        };
        let mut stream = client
            .watch(request)
            .await
            .map_err(watch_error)?
            .into_inner();
        while updates.is_none_or(|wanted| *received < wanted) {
            match stream.message().await.map_err(watch_error)? {
                Some(update) => {
                    print(describe(&update));
                    *received += 1;
                }
                None => {
                    return Err(WatchClientError::Ended {
                        addr: addr.into(),
                        received: *received,
                    });
                }
            }
        }
        Ok(received)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(WatchClientError::Timeout {
            addr: addr.into(),
            received: 0,
            wanted: updates.unwrap_or(0),
            timeout,
        }),
    }
}

/// One line: the kind, then what changed.
pub fn describe(update: &WatchUpdate) -> String {
    let endpoints = |endpoints: &[Endpoint]| {
        let mut out = String::new();
        for (i, e) in endpoints.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(out, "{sep}{}", e.addr);
            if e.meshed {
                let _ = write!(out, "[meshed proxy={} id={}]", e.proxy_port, e.identity);
            }
        }
        out
    };
    match &update.update {
        Some(Update::Snapshot(s)) => {
            let service = s
                .service
                .as_ref()
                .map(|s| format!("{}.{}:{}", s.name, s.namespace, s.port))
                .unwrap_or_default();
            format!(
                "snapshot {service} endpoints=[{}] policy={:?}",
                endpoints(&s.endpoints),
                s.policy.clone().unwrap_or_default()
            )
        }
        Some(Update::EndpointsAdded(a)) => format!("added [{}]", endpoints(&a.endpoints)),
        Some(Update::EndpointsRemoved(r)) => format!("removed [{}]", r.addrs.join(" ")),
        Some(Update::PolicyChanged(p)) => {
            format!("policy {:?}", p.policy.clone().unwrap_or_default())
        }
        Some(Update::NotInMesh(_)) => "not-in-mesh".to_string(),
        None => "empty".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use weft_discovery_api::v1::{EndpointsRemoved, NotInMesh, Service, Snapshot};

    use super::*;

    #[test]
    fn one_line_per_update() {
        let snapshot = WatchUpdate {
            update: Some(Update::Snapshot(Snapshot {
                service: Some(Service {
                    name: "web".into(),
                    namespace: "shop".into(),
                    port: 80,
                    port_name: String::new(),
                }),
                endpoints: vec![Endpoint {
                    addr: "198.18.0.5:8080".into(),
                    meshed: true,
                    proxy_port: 4143,
                    identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
                    ..Default::default()
                }],
                policy: None,
            })),
        };
        let line = describe(&snapshot);
        assert!(
            line.starts_with("snapshot web.shop:80 endpoints=[198.18.0.5:8080[meshed proxy=4143 id=spiffe://cluster.local/ns/shop/sa/web]]"),
            "{line}"
        );
        let removed = WatchUpdate {
            update: Some(Update::EndpointsRemoved(EndpointsRemoved {
                addrs: vec!["a:1".into(), "b:2".into()],
            })),
        };
        assert_eq!(describe(&removed), "removed [a:1 b:2]");
        assert_eq!(
            describe(&WatchUpdate {
                update: Some(Update::NotInMesh(NotInMesh {}))
            }),
            "not-in-mesh"
        );
    }
}
