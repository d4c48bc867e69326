//! Upstream HTTP connections kept for reuse, keyed by upstream address. HTTP/1 connections carry
//! one request at a time, so idle ones are checked out and back in; one HTTP/2 connection per
//! upstream is shared by all requests. Locks are held only to look a connection up, never across
//! an await.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use crate::connect::connect;
use crate::http::error::ProxyError;
use crate::http::hop_by_hop::is_upgrade_request;
use crate::http::target::{HttpVersion, Target};
use crate::resilience::connection_slots::{ConnectionSlot, ConnectionSlots};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle HTTP/1 connections kept per upstream; more are closed once their response ends.
const MAX_IDLE_PER_UPSTREAM: usize = 64;
/// A pooled HTTP/1 connection unused this long is closed even when `WEFT_IDLE_TIMEOUT` is
/// longer: many servers close idle keep-alive connections after a minute or so, and a request
/// sent on one they are closing fails; and upstreams that never close them must not collect
/// our file descriptors.
const MAX_POOLED_IDLE: Duration = Duration::from_secs(90);

/// How long a pooled HTTP/1 connection may sit unused: `WEFT_IDLE_TIMEOUT`, at most 90 s
/// (zero, "never", means 90 s here).
pub fn pooled_idle_timeout(idle_timeout: Duration) -> Duration {
    if idle_timeout.is_zero() {
        MAX_POOLED_IDLE
    } else {
        idle_timeout.min(MAX_POOLED_IDLE)
    }
}

struct Idle<B> {
    conn: http1::SendRequest<B>,
    since: Instant,
}

impl<B> Idle<B> {
    fn is_usable(&self, now: Instant, idle_timeout: Duration) -> bool {
        !self.conn.is_closed() && now.duration_since(self.since) < idle_timeout
    }
}

pub struct Pool<B> {
    connect_timeout: Duration,
    /// Pooled HTTP/1 connections unused this long are closed.
    idle_timeout: Duration,
    h1_builder: http1::Builder,
    h2_builder: http2::Builder<TokioExecutor>,
    h1_idle: Mutex<HashMap<SocketAddr, Vec<Idle<B>>>>,
    h2: Mutex<HashMap<SocketAddr, http2::SendRequest<B>>>,
}

impl<B> Pool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// A pool whose idle connections are swept in the background (when a runtime is running).
    /// `idle_timeout` is `WEFT_IDLE_TIMEOUT` (see [`pooled_idle_timeout`]).
    pub fn shared(connect_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(Self::new(connect_timeout).with_idle_timeout(idle_timeout));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_periodically(Arc::downgrade(&pool)));
        }
        pool
    }

    pub fn new(connect_timeout: Duration) -> Self {
        let mut h1_builder = http1::Builder::new();
        // Forward header names as the app wrote them.
        h1_builder
            .preserve_header_case(true)
            .title_case_headers(false);
        let mut h2_builder = http2::Builder::new(TokioExecutor::new());
        h2_builder.timer(TokioTimer::new()).adaptive_window(true);
        Pool {
            connect_timeout,
            idle_timeout: MAX_POOLED_IDLE,
            h1_builder,
            h2_builder,
            h1_idle: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
        }
    }

    /// Pooled HTTP/1 connections are closed after `idle_timeout` (`WEFT_IDLE_TIMEOUT`) unused,
    /// or 90 s if that is shorter.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = pooled_idle_timeout(idle_timeout);
        self
    }

    /// Sends `req` to `target`, on a pooled connection when one is free.
    pub async fn send(
        &self,
        target: Target,
        req: Request<B>,
    ) -> Result<Response<Incoming>, ProxyError> {
        match target.version {
            HttpVersion::Http1 => self.send_h1(target.addr, req).await,
            HttpVersion::Http2 => self.send_h2(target.addr, req).await,
        }
    }

    async fn send_h1(
        &self,
        addr: SocketAddr,
        mut req: Request<B>,
    ) -> Result<Response<Incoming>, ProxyError> {
        // An upgraded connection is consumed by the tunnel; it never returns to the pool.
        let reusable = !is_upgrade_request(&req);
        if let Some(mut conn) = self.checkout_h1(addr) {
            match conn.try_send_request(req).await {
                Ok(resp) => {
                    if reusable {
                        self.checkin_h1(addr, conn);
                    }
                    return Ok(resp);
                }
                Err(mut err) => match err.take_message() {
                    // The pooled connection closed before taking the request: use a fresh one.
                    Some(unsent) => req = unsent,
                    None => {
                        return Err(ProxyError::Request {
                            addr,
                            source: err.into_error(),
                        });
                    }
                },
            }
        }
        let slot = connection_slot(&req)?;
        let mut conn = self.connect_h1(addr, slot).await?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|source| ProxyError::Request { addr, source })?;
        if reusable {
            self.checkin_h1(addr, conn);
        }
        Ok(resp)
    }

    async fn send_h2(
        &self,
        addr: SocketAddr,
        req: Request<B>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut conn = match self.cached_h2(addr) {
            Some(conn) => conn,
            None => {
                let slot = connection_slot(&req)?;
                let conn = self.connect_h2(addr, slot).await?;
                self.lock_h2().insert(addr, conn.clone());
                conn
            }
        };
        conn.send_request(req)
            .await
            .map_err(|source| ProxyError::Request { addr, source })
    }

    /// A connection ready for a request. Busy ones (still streaming a response body) stay in the
    /// pool; closed ones are dropped.
    fn checkout_h1(&self, addr: SocketAddr) -> Option<http1::SendRequest<B>> {
        let mut idle = self.lock_h1();
        let conns = idle.get_mut(&addr)?;
        let now = Instant::now();
        conns.retain(|idle| idle.is_usable(now, self.idle_timeout));
        let ready = conns.iter().position(|idle| idle.conn.is_ready())?;
        Some(conns.swap_remove(ready).conn)
    }

    /// Returned as soon as the response head arrives: the connection becomes ready again by
    /// itself once the body has been read.
    fn checkin_h1(&self, addr: SocketAddr, conn: http1::SendRequest<B>) {
        let mut idle = self.lock_h1();
        let conns = idle.entry(addr).or_default();
        if conns.len() < MAX_IDLE_PER_UPSTREAM {
            conns.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Drops closed and expired connections and forgets upstreams with none left.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.lock_h1();
        idle.retain(|_, conns| {
            conns.retain(|idle| idle.is_usable(now, self.idle_timeout));
            !conns.is_empty()
        });
        drop(idle);
        self.lock_h2().retain(|_, conn| !conn.is_closed());
    }

    fn cached_h2(&self, addr: SocketAddr) -> Option<http2::SendRequest<B>> {
        let h2 = self.lock_h2();
        h2.get(&addr).filter(|conn| !conn.is_closed()).cloned()
    }

    async fn connect_h1(
        &self,
        addr: SocketAddr,
        slot: Option<ConnectionSlot>,
    ) -> Result<http1::SendRequest<B>, ProxyError> {
        let stream = connect(addr, self.connect_timeout).await?;
        let (sender, conn) = self
            .h1_builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ProxyError::Handshake { addr, source })?;
        tokio::spawn(async move {
            // The connection counts against its upstream's limit for as long as it is open.
            let _slot = slot;
            if let Err(err) = conn.with_upgrades().await {
                debug!(upstream = %addr, error = %err, "upstream HTTP/1 connection ended with an error");
            }
        });
        Ok(sender)
    }

    async fn connect_h2(
        &self,
        addr: SocketAddr,
        slot: Option<ConnectionSlot>,
    ) -> Result<http2::SendRequest<B>, ProxyError> {
        let stream = connect(addr, self.connect_timeout).await?;
        let (sender, conn) = self
            .h2_builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ProxyError::Handshake { addr, source })?;
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(err) = conn.await {
                debug!(upstream = %addr, error = %err, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn lock_h1(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Idle<B>>>> {
        // A panic elsewhere cannot leave the map inconsistent: every update is a single call.
        self.h1_idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_h2(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, http2::SendRequest<B>>> {
        self.h2.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn idle_h1(&self, addr: SocketAddr) -> usize {
        self.lock_h1().get(&addr).map_or(0, Vec::len)
    }

    #[cfg(test)]
    pub(crate) fn age_idle_h1(&self, by: Duration) {
        for conns in self.lock_h1().values_mut() {
            for idle in conns {
                idle.since -= by;
            }
        }
    }
}

/// A place under the upstream's connection limit, when the request carries one.
fn connection_slot<B>(req: &Request<B>) -> Result<Option<ConnectionSlot>, ProxyError> {
    match req.extensions().get::<Arc<ConnectionSlots>>() {
        Some(slots) => Ok(Some(slots.try_open()?)),
        None => Ok(None),
    }
}

async fn sweep_periodically<B>(pool: Weak<Pool<B>>)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let Some(period) = pool.upgrade().map(|pool| pool.idle_timeout / 3) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        // The pool's side is gone: nothing left to sweep.
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep();
    }
}
