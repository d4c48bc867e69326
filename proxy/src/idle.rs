//! Connection idle timeout and the HTTP/1 header read timeout (the slowloris bound).
//!
//! A client connection's I/O is wrapped in [`ActivityIo`], which notes when bytes last moved in
//! either direction; HTTP connections also count their requests in flight ([`InFlightLayer`]).
//! [`ConnectionActivity::expired`] resolves when the connection has been idle (no bytes, no
//! request in flight) for the idle timeout, or when an HTTP/1 request's header section has been
//! arriving for longer than the header read timeout. The caller closes the connection then.
//!
//! hyper has a header read timeout of its own, but its timer also runs while a keep-alive
//! connection waits for its next request, so it would close every idle keep-alive connection
//! after a few seconds. Here the header timer starts at the first byte of a request instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::observed_io::{IoObserver, ObservedIo};

/// Why a connection was closed by its own timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No bytes either way and no request in flight for `WEFT_IDLE_TIMEOUT`.
    Idle,
    /// An HTTP/1 request's header section took longer than `WEFT_HEADER_READ_TIMEOUT`.
    HeaderRead,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Idle => "idle timeout",
            Expiry::HeaderRead => "header read timeout",
        }
    }
}

/// What one client connection has been doing, shared by its I/O, its requests and its watcher.
#[derive(Debug)]
pub struct ConnectionActivity {
    epoch: Instant,
    /// Zero: never.
    idle_after: Duration,
    /// Zero: no header timer (HTTP/2, opaque TCP, or switched off).
    header_after: Duration,
    /// Nanoseconds after `epoch` when bytes last moved.
    last_io: AtomicU64,
    /// Nanoseconds after `epoch` plus one when the current request's first byte arrived; 0: no
    /// request is being read.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
    /// Wakes the watcher when a deadline may have appeared (last request done, a head started).
    changed: Notify,
}

impl ConnectionActivity {
    /// `idle_after` zero: never idle; `header_after` zero: no header timer.
    pub fn new(idle_after: Duration, header_after: Duration) -> Arc<Self> {
        Arc::new(ConnectionActivity {
            epoch: Instant::now(),
            idle_after,
            header_after,
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    fn bytes_read(&self) {
        let now = self.now_nanos();
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes while no request is in flight start the next request's header section.
        if !self.header_after.is_zero()
            && self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_started
                .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn bytes_written(&self) {
        self.last_io.store(self.now_nanos(), Ordering::Relaxed);
    }

    /// A request's head has been read and it is now being served.
    fn request_started(self: &Arc<Self>) -> RequestInFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        RequestInFlight(self.clone())
    }

    /// The earliest deadline now in force, if any.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle = (!self.idle_after.is_zero()).then(|| {
            (
                self.at(self.last_io.load(Ordering::Relaxed)) + self.idle_after,
                Expiry::Idle,
            )
        });
        let started = self.head_started.load(Ordering::Acquire);
        let header = (started != 0 && !self.header_after.is_zero())
            .then(|| (self.at(started - 1) + self.header_after, Expiry::HeaderRead));
        match (idle, header) {
            (Some(idle), Some(header)) => Some(if header.0 <= idle.0 { header } else { idle }),
            (one, other) => one.or(other),
        }
    }

    /// Resolves when the connection should be closed, and says why. Never resolves while a
    /// request is in flight.
    pub async fn expired(&self) -> Expiry {
        loop {
            // Registered before reading the state, so a change in between is not missed.
            let changed = self.changed.notified();
            match self.deadline() {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Held while a request is served; the last one dropped starts the idle clock.
#[derive(Debug)]
pub struct RequestInFlight(Arc<ConnectionActivity>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        // The response just went out: idle time counts from now.
        activity.bytes_written();
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.changed.notify_one();
        }
    }
}

/// A client connection's I/O, noting every byte that moves on its activity.
pub type ActivityIo<I> = ObservedIo<I, Arc<ConnectionActivity>>;

impl IoObserver for ConnectionActivity {
    fn on_read(&self, _bytes: usize) {
        self.bytes_read();
    }

    fn on_written(&self, _bytes: usize) {
        self.bytes_written();
    }
}

/// Counts an HTTP connection's requests in flight, from the call until the response body ends
/// or is dropped, so a slow upstream does not make the client's connection look idle.
#[derive(Clone, Debug)]
pub struct InFlightLayer {
    activity: Arc<ConnectionActivity>,
}

impl InFlightLayer {
    pub fn new(activity: Arc<ConnectionActivity>) -> Self {
        InFlightLayer { activity }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            activity: self.activity.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    activity: Arc<ConnectionActivity>,
}

impl<S, B, RB> Service<Request<B>> for InFlight<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<InFlightBody<RB>>;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let guard = self.activity.request_started();
        InFlightFuture {
            inner: self.inner.call(req),
            guard: Some(guard),
        }
    }
}

pin_project! {
    pub struct InFlightFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestInFlight>,
    }
}

impl<F, RB, E> Future for InFlightFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<InFlightBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(resp.map(|inner| InFlightBody { inner, guard })))
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight until it ends.
    pub struct InFlightBody<B> {
        #[pin]
        inner: B,
        guard: Option<RequestInFlight>,
    }
}

impl<B: Body> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_secs(60);
    const HEADER: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn silent_connection_expires_after_the_idle_timeout() {
        let activity = ConnectionActivity::new(IDLE, Duration::ZERO);
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert_eq!(start.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_either_way_push_the_idle_deadline_back() {
        let activity = ConnectionActivity::new(IDLE, Duration::ZERO);
        let (client, proxy_side) = tokio::io::duplex(64);
        let mut io = ActivityIo::new(proxy_side, activity.clone());
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let start = Instant::now();
        let traffic = async {
            let mut buf = [0u8; 4];
            tokio::time::sleep(Duration::from_secs(50)).await;
            client_write.write_all(b"ping").await.unwrap();
            io.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_secs(50)).await;
            io.write_all(b"pong").await.unwrap();
            client_read.read_exact(&mut buf).await.unwrap();
            std::future::pending::<()>().await
        };
        tokio::select! {
            why = activity.expired() => assert_eq!(why, Expiry::Idle),
            () = traffic => unreachable!(),
        }
        // Last byte at 100 s, so idle at 160 s: not at 60 s, not at 110 s.
        assert_eq!(start.elapsed(), Duration::from_secs(160));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle() {
        let activity = ConnectionActivity::new(IDLE, HEADER);
        let svc = InFlightLayer::new(activity.clone()).layer(tower::service_fn(
            |_req: Request<()>| async {
                // An upstream that takes ten idle timeouts to answer.
                tokio::time::sleep(IDLE * 10).await;
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                    bytes::Bytes::from_static(b"done"),
                )))
            },
        ));
        let start = Instant::now();
        let request = tower::ServiceExt::oneshot(svc, Request::new(()));
        let resp = tokio::select! {
            why = activity.expired() => panic!("expired with a request in flight: {why:?}"),
            resp = request => resp.unwrap(),
        };
        assert_eq!(start.elapsed(), IDLE * 10);
        // Still counted while the body is unread.
        assert!(
            tokio::time::timeout(IDLE * 2, activity.expired())
                .await
                .is_err()
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"done");
        let body_done = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert_eq!(body_done.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dribbled_request_head_hits_the_header_timeout() {
        let activity = ConnectionActivity::new(IDLE, HEADER);
        let (mut client, proxy_side) = tokio::io::duplex(64);
        let mut io = ActivityIo::new(proxy_side, activity.clone());
        let start = Instant::now();
        // One byte a second: never idle, but the head never completes.
        let dribble = async {
            let mut byte = [0u8; 1];
            for b in b"GET / HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
                client.write_all(&[*b]).await.unwrap();
                io.read_exact(&mut byte).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            why = activity.expired() => assert_eq!(why, Expiry::HeaderRead),
            () = dribble => unreachable!(),
        }
        assert_eq!(start.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_head_stops_the_header_timer() {
        let activity = ConnectionActivity::new(IDLE, HEADER);
        let (mut client, proxy_side) = tokio::io::duplex(64);
        let mut io = ActivityIo::new(proxy_side, activity.clone());
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 3];
        io.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(HEADER / 2).await;
        // The head is complete: the server calls the service.
        let guard = activity.request_started();
        drop(guard);
        let served = Instant::now();
        // A keep-alive connection waiting for its next request is only subject to the idle timeout.
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert_eq!(served.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_switches_both_timers_off() {
        let activity = ConnectionActivity::new(Duration::ZERO, Duration::ZERO);
        let (mut client, proxy_side) = tokio::io::duplex(64);
        let mut io = ActivityIo::new(proxy_side, activity.clone());
        client.write_all(b"G").await.unwrap();
        let mut buf = [0u8; 1];
        io.read_exact(&mut buf).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(86_400), activity.expired())
                .await
                .is_err()
        );
    }
}
