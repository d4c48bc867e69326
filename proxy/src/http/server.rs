//! Serving one client connection with hyper, as HTTP/1 or HTTP/2 as detected, until it ends or
//! the drain tells it to finish its in-flight requests and close.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::drain::Watch;
use crate::http::target::HttpVersion;
use crate::idle::{ConnectionActivity, Expiry};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Debug)]
pub struct HttpServer {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Default for HttpServer {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpServer {
    pub fn new() -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // Transparent: header names as the peers wrote them, no Date added.
            .preserve_header_case(true)
            .title_case_headers(false)
            .auto_date_header(false)
            // A client may shut down its write side while it waits for the response.
            .half_close(true)
            // hyper's header timer also runs while a keep-alive connection is idle, so it would
            // close the app's idle connections after 30s: a transparent proxy must not. The
            // header read timeout is crate::idle's, which starts at a request's first byte.
            .header_read_timeout(None);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .auto_date_header(false)
            .adaptive_window(true);
        HttpServer { h1, h2 }
    }

    /// Serves `io` until the client is done, or until `activity` (the connection's idle and
    /// header read timers, when given) says to close it, which is returned. On drain: HTTP/1
    /// finishes the request in flight and closes; HTTP/2 sends GOAWAY and finishes open streams.
    pub async fn serve<I, S, B>(
        &self,
        io: I,
        version: HttpVersion,
        service: S,
        watch: &mut Watch,
        activity: Option<&ConnectionActivity>,
    ) -> Result<Option<Expiry>, hyper::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let io = TokioIo::new(io);
        let expired = async {
            match activity {
                Some(activity) => activity.expired().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        match version {
            HttpVersion::Http1 => {
                let conn = self.h1.serve_connection(io, service).with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    res = conn.as_mut() => res.map(|()| None),
                    () = watch.signaled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await.map(|()| None)
                    }
                    // Nothing in flight (or a request head still arriving): dropping the
                    // connection closes it.
                    why = &mut expired => Ok(Some(why)),
                }
            }
            HttpVersion::Http2 => {
                let conn = self.h2.serve_connection(io, service);
                tokio::pin!(conn);
                tokio::select! {
                    res = conn.as_mut() => res.map(|()| None),
                    () = watch.signaled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await.map(|()| None)
                    }
                    why = &mut expired => {
                        // No stream is open: GOAWAY tells the client not to start one here.
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(GOAWAY_GRACE, conn).await;
                        Ok(Some(why))
                    }
                }
            }
        }
    }
}

/// How long an idle HTTP/2 connection may take to say goodbye after its GOAWAY.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
