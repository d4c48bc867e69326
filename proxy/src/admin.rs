//! The admin server: `/live`, `/ready`, `/metrics` for the kubelet and Prometheus, and
//! `/shutdown` (loopback peers only) to start the same drain as SIGTERM, and the app's own probes
//! under `/app-health/` (see `app_probe`).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::app_probe::AppProbes;
use crate::drain::Drain;
use crate::metrics::{Metrics, prometheus_text};
use crate::readiness::Readiness;
use crate::readiness::ReadyCondition;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
pub struct Admin {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    listeners: ReadyCondition,
    drain: Drain,
    probes: Arc<AppProbes>,
    pod_ip: Option<IpAddr>,
    /// Set by `/shutdown`: whoever asked is done with the proxy (see `sidecar`).
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>, drain: Drain) -> Self {
        let readiness = Readiness::default();
        let listeners = readiness.condition("traffic listeners");
        Admin {
            metrics,
            readiness,
            listeners,
            drain,
            probes: Arc::default(),
            pod_ip: None,
            shutdown: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// The app's probes the kubelet sends here (`/app-health/<container>/<kind>`), run against
    /// the app at `pod_ip` (loopback when unknown).
    pub fn with_app_probes(mut self, probes: AppProbes, pod_ip: Option<IpAddr>) -> Self {
        self.probes = Arc::new(probes);
        self.pod_ip = pod_ip;
        self
    }

    /// Runs the app probe at `name` (the path below `/app-health/`): 200 when it passes, 503
    /// with the reason when it fails, 404 when the injector declared no such probe.
    pub async fn app_health(&self, method: &Method, name: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let Some(probe) = self.probes.get(name) else {
            return text(StatusCode::NOT_FOUND, "no such app probe (WEFT_APP_PROBES)");
        };
        match probe.run(self.pod_ip).await {
            Ok(()) => text(StatusCode::OK, "ok"),
            Err(failure) => {
                debug!(probe = name, reason = %failure, "app probe failed");
                let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, "");
                *resp.body_mut() = Full::new(Bytes::from(format!("app probe failed: {failure}")));
                resp
            }
        }
    }

    /// Resolves once `/shutdown` has been asked for.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        // The sender lives in `self`, so the wait cannot fail while we hold it.
        let _ = rx.wait_for(|requested| *requested).await;
    }

    /// Where other parts of the proxy add what `/ready` must wait for.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Called once the traffic listeners are bound.
    pub fn set_ready(&self) {
        self.listeners.set();
    }

    /// `openmetrics`: the client's `Accept` asks for OpenMetrics (as Prometheus does); others
    /// get the Prometheus 0.0.4 text format.
    pub fn respond(
        &self,
        method: &Method,
        path: &str,
        peer: SocketAddr,
        openmetrics: bool,
    ) -> Response<Full<Bytes>> {
        match (method, path) {
            (&Method::GET | &Method::HEAD, "/live") => text(StatusCode::OK, "live"),
            (&Method::GET | &Method::HEAD, "/ready") => {
                if self.drain.is_draining() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready: draining")
                } else if self.readiness.is_ready() {
                    text(StatusCode::OK, "ready")
                } else {
                    let waiting = self.readiness.unmet().join(", ");
                    let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, "");
                    *resp.body_mut() =
                        Full::new(Bytes::from(format!("not ready: waiting for {waiting}")));
                    resp
                }
            }
            (&Method::GET | &Method::HEAD, "/metrics") => match self.render_metrics(openmetrics) {
                Ok((body, content_type)) => {
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                    resp
                }
                Err(err) => {
                    warn!(error = %err, "rendering metrics failed");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "rendering metrics failed",
                    )
                }
            },
            (&Method::POST, "/shutdown") => {
                if peer.ip().to_canonical().is_loopback() {
                    info!(%peer, "shutdown requested through the admin server");
                    self.shutdown.send_replace(true);
                    self.drain.start();
                    text(StatusCode::OK, "shutting down")
                } else {
                    warn!(%peer, "refused /shutdown from a non-loopback peer");
                    text(
                        StatusCode::FORBIDDEN,
                        "shutdown is only accepted from loopback",
                    )
                }
            }
            (_, "/live" | "/ready" | "/metrics" | "/shutdown") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    fn render_metrics(&self, openmetrics: bool) -> Result<(String, &'static str), std::fmt::Error> {
        if openmetrics {
            Ok((self.metrics.render()?, OPENMETRICS))
        } else {
            Ok((
                self.metrics.render_prometheus()?,
                prometheus_text::CONTENT_TYPE,
            ))
        }
    }

    /// Serves until the process exits; it keeps answering during the drain so that `/ready`
    /// reports it and metrics stay scrapeable.
    pub async fn serve(self, listener: TcpListener) {
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new());
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = self.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let admin = admin.clone();
                        async move {
                            let path = req.uri().path();
                            let resp = match path.strip_prefix("/app-health/") {
                                Some(name) => admin.app_health(req.method(), name).await,
                                None => admin.respond(
                                    req.method(),
                                    path,
                                    peer,
                                    accepts_openmetrics(&req),
                                ),
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                if let Err(err) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, error = %err, "admin connection ended with an error");
                }
            });
        }
    }
}

fn accepts_openmetrics<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"))
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn loopback() -> SocketAddr {
        "127.0.0.1:50000".parse().unwrap()
    }

    async fn body(resp: Response<Full<Bytes>>) -> String {
        String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn live_and_ready() {
        let admin = Admin::new(Arc::new(Metrics::new()), Drain::new());
        let live = admin.respond(&Method::GET, "/live", loopback(), false);
        assert_eq!(live.status(), StatusCode::OK);
        assert_eq!(body(live).await, "live");
        assert_eq!(
            admin
                .respond(&Method::GET, "/ready", loopback(), false)
                .status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        admin.set_ready();
        let ready = admin.respond(&Method::GET, "/ready", loopback(), false);
        assert_eq!(ready.status(), StatusCode::OK);
        assert_eq!(body(ready).await, "ready");
    }

    #[tokio::test]
    async fn ready_waits_for_every_condition() {
        let admin = Admin::new(Arc::new(Metrics::new()), Drain::new());
        let certificate = admin.readiness().condition("workload certificate");
        admin.set_ready();
        let resp = admin.respond(&Method::GET, "/ready", loopback(), false);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body(resp).await,
            "not ready: waiting for workload certificate"
        );
        certificate.set();
        let resp = admin.respond(&Method::GET, "/ready", loopback(), false);
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_in_both_text_formats() {
        let metrics = Arc::new(Metrics::new());
        metrics.loop_refused(crate::direction::Direction::Outbound);
        let admin = Admin::new(metrics, Drain::new());
        let resp = admin.respond(&Method::GET, "/metrics", loopback(), true);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], OPENMETRICS);
        let text = body(resp).await;
        assert!(text.contains(r#"weft_loop_refused_total{direction="outbound"} 1"#));
        assert!(text.ends_with("# EOF\n"));

        let resp = admin.respond(&Method::GET, "/metrics", loopback(), false);
        assert_eq!(resp.headers()[CONTENT_TYPE], prometheus_text::CONTENT_TYPE);
        let text = body(resp).await;
        assert!(
            text.contains("# TYPE weft_loop_refused_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }

    #[tokio::test]
    async fn shutdown_only_from_loopback_and_unready_after() {
        let drain = Drain::new();
        let admin = Admin::new(Arc::new(Metrics::new()), drain.clone());
        admin.set_ready();
        let remote: SocketAddr = "198.18.0.7:40000".parse().unwrap();
        assert_eq!(
            admin
                .respond(&Method::POST, "/shutdown", remote, false)
                .status(),
            StatusCode::FORBIDDEN
        );
        assert!(!drain.is_draining());
        assert_eq!(
            admin
                .respond(&Method::GET, "/shutdown", loopback(), false)
                .status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert_eq!(
            admin
                .respond(&Method::POST, "/shutdown", mapped, false)
                .status(),
            StatusCode::OK
        );
        assert!(drain.is_draining());
        assert_eq!(
            admin
                .respond(&Method::GET, "/ready", loopback(), false)
                .status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        let admin = Admin::new(Arc::new(Metrics::new()), Drain::new());
        assert_eq!(
            admin
                .respond(&Method::GET, "/nope", loopback(), false)
                .status(),
            StatusCode::NOT_FOUND
        );
    }
}
