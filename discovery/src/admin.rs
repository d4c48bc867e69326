//! The admin server: `/metrics` for Prometheus, `/ready` (the source has delivered the cluster's
//! objects once), `/live` for the kubelet, and `/synced?revision=N` (200 once the index serves
//! the source's revision N or later: how a writer of the file source waits for discovery).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::index::Index;
use crate::metrics::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
pub struct Admin {
    metrics: Arc<Metrics>,
    index: watch::Receiver<Option<Arc<Index>>>,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>, index: watch::Receiver<Option<Arc<Index>>>) -> Self {
        Admin { metrics, index }
    }

    pub fn respond(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        match path {
            "/synced" => self.synced(query),
            "/live" => text(StatusCode::OK, "live"),
            "/ready" if self.index.borrow().is_some() => text(StatusCode::OK, "ready"),
            "/ready" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: source not loaded yet",
            ),
            "/metrics" => match self.metrics.render() {
                Ok(body) => {
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
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
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    pub async fn serve(self, listener: TcpListener) {
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new());
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = self.clone();
            let conn = builder.serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let resp = admin.respond(req.method(), req.uri().path(), req.uri().query());
                    async move { Ok::<_, Infallible>(resp) }
                }),
            );
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    debug!(error = %err, "admin connection ended with an error");
                }
            });
        }
    }
}

impl Admin {
    fn synced(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let wanted = query
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("revision="))
            .and_then(|n| n.parse::<u64>().ok());
        let Some(wanted) = wanted else {
            return text(
                StatusCode::BAD_REQUEST,
                "expected /synced?revision=<number>",
            );
        };
        let served = self
            .index
            .borrow()
            .as_ref()
            .and_then(|index| index.revision());
        if served.is_some_and(|served| served >= wanted) {
            text(StatusCode::OK, "synced")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "not synced yet")
        }
    }
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
