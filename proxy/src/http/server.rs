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
use crate::http::premature_resets::PrematureResets;
use crate::http::target::HttpVersion;
use crate::idle::{ConnectionActivity, Expiry};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the HTTP server accepts from a client, stated rather than inherited from hyper's
/// defaults; each bounds what one connection can make the proxy hold or forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// HTTP/1: the request line and headers together (431 past it); HTTP/2: the header list
    /// (`WEFT_MAX_REQUEST_HEADERS_KB`). Bounds the memory one request head can take.
    pub max_header_bytes: usize,
    /// HTTP/1: header fields per request (431 past it; `WEFT_MAX_REQUEST_HEADERS`).
    pub max_headers: usize,
    /// The request target's length (414 past it; `WEFT_MAX_URI_LENGTH`).
    pub max_uri_length: usize,
    /// HTTP/2: streams a client may have open at once (`WEFT_H2_MAX_CONCURRENT_STREAMS`).
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: a connection whose streams were mostly reset before their response (rapid
    /// reset) is closed once it has opened this many (`WEFT_H2_PREMATURE_RESET_MIN_STREAMS`).
    pub h2_premature_reset_min_streams: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            max_uri_length: 16 * 1024,
            h2_max_concurrent_streams: 100,
            h2_premature_reset_min_streams: 100,
        }
    }
}

/// hyper's smallest read buffer.
const MIN_BUF_SIZE: usize = 8192;
/// Streams reset by the client before they were served (h2's pending-accept queue, the classic
/// rapid reset) beyond which the connection is closed.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the proxy itself resets (malformed frames) beyond which the connection is closed.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Data the proxy queues per HTTP/2 stream for a slow reader.
const MAX_SEND_BUF: usize = 400 * 1024;
/// Pings a silent HTTP/2 client so a dead one is noticed, and closes it when a ping is not
/// answered in time.
const H2_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(20);

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
        Self::with_limits(HttpLimits::default())
    }

    pub fn with_limits(limits: HttpLimits) -> Self {
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
            .header_read_timeout(None)
            .max_buf_size(limits.max_header_bytes.max(MIN_BUF_SIZE))
            .max_headers(limits.max_headers);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .auto_date_header(false)
            .adaptive_window(true)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
            .max_send_buf_size(MAX_SEND_BUF)
            .keep_alive_interval(H2_KEEPALIVE)
            .keep_alive_timeout(H2_KEEPALIVE);
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
        resets: Option<&PrematureResets>,
    ) -> Result<Option<Ended>, hyper::Error>
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
        let reset_flood = async {
            match resets {
                Some(resets) => resets.tripped().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(reset_flood);
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
                    why = &mut expired => Ok(Some(Ended::Expired(why))),
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
                        Ok(Some(Ended::Expired(why)))
                    }
                    () = &mut reset_flood => {
                        // GOAWAY, then the streams it still has get a moment, then it is cut.
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(GOAWAY_GRACE, conn).await;
                        Ok(Some(Ended::PrematureResets))
                    }
                }
            }
        }
    }
}

/// Why the proxy ended a connection itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its idle or header-read timer.
    Expired(Expiry),
    /// HTTP/2: most of its streams were reset before their response.
    PrematureResets,
}

/// How long an idle HTTP/2 connection may take to say goodbye after its GOAWAY.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
