//! HTTPS: POST `/inject` (AdmissionReview v1), GET `/ready` and `/live` (for the kubelet's
//! HTTPS probes on the same port), over HTTP/1.1 or HTTP/2.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::review::{Injector, review};

/// The path the MutatingWebhookConfiguration's clientConfig.service.path names.
pub const INJECT_PATH: &str = "/inject";
/// The API server sends objects of at most ~3 MiB; the review wraps one (two for UPDATE).
const MAX_BODY: usize = 8 * 1024 * 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then lets requests in flight finish (bounded).
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    injector: Arc<Injector>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving what is open.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let tls = tls.clone();
        let injector = Arc::clone(&injector);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |request| {
                let injector = Arc::clone(&injector);
                async move { Ok::<_, Infallible>(route(request, &injector).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
}

async fn route(request: Request<Incoming>, injector: &Injector) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::POST, INJECT_PATH) => inject(request, injector).await,
        (&Method::GET, "/ready") => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (_, INJECT_PATH | "/ready" | "/live") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST /inject; GET /ready and /live\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: POST /inject, GET /ready, GET /live\n",
        ),
    }
}

async fn inject(request: Request<Incoming>, injector: &Injector) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let message =
                format!("cannot read the AdmissionReview (at most {MAX_BODY} bytes): {e}\n");
            tracing::warn!(%message, "bad request");
            return text(StatusCode::BAD_REQUEST, &message);
        }
    };
    match review(&body, injector).await {
        Ok(json) => reply(StatusCode::OK, "application/json", Bytes::from(json)),
        Err(e) => {
            tracing::warn!(reason = %e, "bad request to {INJECT_PATH}");
            text(StatusCode::BAD_REQUEST, &format!("{e}\n"))
        }
    }
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let message = Bytes::from(message.to_owned());
    reply(status, "text/plain; charset=utf-8", message)
}

fn reply(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
