//! Stream idle timeout: an HTTP exchange whose bodies make no progress for
//! `WEFT_STREAM_IDLE_TIMEOUT` is ended. Before the response headers that is a 504
//! `weft-error: stream idle timeout` (gRPC: DEADLINE_EXCEEDED); once the response is streaming,
//! its body ends with an error, which hyper turns into a reset stream (HTTP/2) or a closed
//! connection (HTTP/1). Progress is any frame of the request body (reported by the retry layer's
//! `ReplayBody`) or of the response body. The request timeout may be off or long for
//! streaming; this still catches an exchange that has stopped moving.
//!
//! Upgrades and CONNECT are left alone: once switched, the tunnel is opaque bytes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::http::error::ProxyError;
use crate::http::hop_by_hop::is_upgrade_request;
use crate::metrics::resilience::UpstreamMetrics;
use crate::resilience::error::ResilienceError;
use crate::resilience::kinds::TimeoutKind;
use crate::resilience::upstream::UpstreamState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// When one exchange last moved; shared by its request body and its response.
#[derive(Debug)]
pub struct StreamProgress {
    epoch: Instant,
    /// Nanoseconds after `epoch`.
    last: AtomicU64,
}

impl StreamProgress {
    fn new() -> Arc<Self> {
        Arc::new(StreamProgress {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// A frame went through.
    pub fn made(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

/// The timer of one exchange: fires once `after` has passed since its last progress.
struct IdleTimer {
    progress: Arc<StreamProgress>,
    after: Duration,
    sleep: Pin<Box<Sleep>>,
    metrics: UpstreamMetrics,
}

impl IdleTimer {
    /// Ready (and counted) when the exchange has been idle for `after`.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            // The sleep is not pushed back on every frame (that would cost a timer update per
            // frame); it is checked against the last progress when it fires.
            let deadline = self.progress.last() + self.after;
            if deadline <= Instant::now() {
                self.metrics.timeout(TimeoutKind::StreamIdle);
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

#[derive(Clone)]
pub struct StreamIdleLayer {
    after: Duration,
    upstream: Arc<UpstreamState>,
}

impl StreamIdleLayer {
    /// `after` zero: no stream idle timeout.
    pub fn new(after: Duration, upstream: Arc<UpstreamState>) -> Self {
        StreamIdleLayer { after, upstream }
    }
}

impl<S> Layer<S> for StreamIdleLayer {
    type Service = StreamIdle<S>;

    fn layer(&self, inner: S) -> StreamIdle<S> {
        StreamIdle {
            inner,
            after: self.after,
            upstream: self.upstream.clone(),
        }
    }
}

#[derive(Clone)]
pub struct StreamIdle<S> {
    inner: S,
    after: Duration,
    upstream: Arc<UpstreamState>,
}

impl<S, B, RB> Service<Request<B>> for StreamIdle<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = ProxyError>,
{
    type Response = Response<StreamIdleBody<RB>>;
    type Error = ProxyError;
    type Future = StreamIdleFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let timer = (!self.after.is_zero() && !is_upgrade_request(&req)).then(|| {
            let progress = StreamProgress::new();
            req.extensions_mut().insert(progress.clone());
            IdleTimer {
                progress,
                after: self.after,
                sleep: Box::pin(tokio::time::sleep(self.after)),
                metrics: self.upstream.metrics.clone(),
            }
        });
        StreamIdleFuture {
            inner: self.inner.call(req),
            timer,
        }
    }
}

pin_project! {
    pub struct StreamIdleFuture<F> {
        #[pin]
        inner: F,
        timer: Option<IdleTimer>,
    }
}

impl<F, RB> Future for StreamIdleFuture<F>
where
    F: Future<Output = Result<Response<RB>, ProxyError>>,
{
    type Output = Result<Response<StreamIdleBody<RB>>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            let timer = this.timer.take();
            if let Some(timer) = &timer {
                // The response headers are progress too.
                timer.progress.made();
            }
            return Poll::Ready(
                result.map(|resp| resp.map(|inner| StreamIdleBody { inner, timer })),
            );
        }
        if let Some(timer) = this.timer.as_mut()
            && timer.poll_expired(cx).is_ready()
        {
            let after = timer.after;
            *this.timer = None;
            return Poll::Ready(Err(ResilienceError::StreamIdleTimeout { after }.into()));
        }
        Poll::Pending
    }
}

/// The response body ended by the proxy because it stopped moving.
#[derive(Debug, thiserror::Error)]
#[error(
    "the response body made no progress for {after:?} (WEFT_STREAM_IDLE_TIMEOUT / weft.io/stream-idle-timeout)"
)]
pub struct StreamIdleExpired {
    after: Duration,
}

pin_project! {
    /// A response body that fails once neither it nor the request body has moved for the
    /// stream idle timeout.
    pub struct StreamIdleBody<B> {
        #[pin]
        inner: B,
        timer: Option<IdleTimer>,
    }
}

impl<B> Body for StreamIdleBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timer) = this.timer.as_ref() {
                    timer.progress.made();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => {
                *this.timer = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(timer) = this.timer.as_mut()
                    && timer.poll_expired(cx).is_ready()
                {
                    let after = timer.after;
                    *this.timer = None;
                    return Poll::Ready(Some(Err(StreamIdleExpired { after }.into())));
                }
                Poll::Pending
            }
        }
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
    use crate::resilience::policy::PolicyOverrides;
    use crate::resilience::replay::ReplayBody;
    use crate::test_support::upstream::upstream_with;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    const AFTER: Duration = Duration::from_secs(300);

    /// A body the test feeds chunk by chunk; it ends when the sender is dropped.
    struct ChannelBody(mpsc::Receiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    fn channel() -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(16);
        (tx, ChannelBody(rx))
    }

    /// The stream idle timeouts counted for the test upstream (0 when the series is absent).
    fn stream_idle_timeouts(text: &str) -> u64 {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(
                    r#"weft_timeout_total{direction="outbound",upstream="test",kind="stream_idle"} "#,
                )
            })
            .map_or(0, |value| value.trim().parse().expect("a counter value"))
    }

    #[tokio::test(start_paused = true)]
    async fn no_response_headers_gives_504_stream_idle_timeout() {
        let (upstream, metrics) = upstream_with(PolicyOverrides::default());
        let hanging = tower::service_fn(|_req: Request<()>| {
            std::future::pending::<Result<Response<ChannelBody>, ProxyError>>()
        });
        let start = Instant::now();
        let err = StreamIdleLayer::new(AFTER, upstream)
            .layer(hanging)
            .oneshot(Request::new(()))
            .await
            .err()
            .unwrap();
        assert_eq!(start.elapsed(), AFTER);
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(err.short_cause(), "stream idle timeout");
        assert_eq!(err.grpc_code(), 4);
        assert_eq!(stream_idle_timeouts(&metrics.render().unwrap()), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_body_that_stops_is_ended_with_an_error() {
        let (upstream, metrics) = upstream_with(PolicyOverrides::default());
        let (tx, body) = channel();
        let body = std::sync::Mutex::new(Some(body));
        let svc = tower::service_fn(move |_req: Request<()>| {
            let body = body.lock().unwrap().take().unwrap();
            async move { Ok::<_, ProxyError>(Response::new(body)) }
        });
        let resp = StreamIdleLayer::new(AFTER, upstream)
            .layer(svc)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let mut body = resp.into_body();
        tokio::time::sleep(AFTER - Duration::from_secs(1)).await;
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "first");
        let last_chunk = Instant::now();
        // The sender stays open: the upstream has just stopped sending.
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(last_chunk.elapsed(), AFTER);
        assert!(
            err.to_string().contains("WEFT_STREAM_IDLE_TIMEOUT"),
            "{err}"
        );
        assert_eq!(stream_idle_timeouts(&metrics.render().unwrap()), 1);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_moving_is_never_cut() {
        let (upstream, metrics) = upstream_with(PolicyOverrides::default());
        let (tx, body) = channel();
        let body = std::sync::Mutex::new(Some(body));
        let svc = tower::service_fn(move |_req: Request<()>| {
            let body = body.lock().unwrap().take().unwrap();
            async move { Ok::<_, ProxyError>(Response::new(body)) }
        });
        let resp = StreamIdleLayer::new(AFTER, upstream)
            .layer(svc)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let start = Instant::now();
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(AFTER - Duration::from_secs(1)).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
        });
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"xxxxxxxxxx");
        assert!(start.elapsed() > AFTER * 9);
        assert_eq!(stream_idle_timeouts(&metrics.render().unwrap()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_upload_before_the_response_is_progress() {
        let (upstream, metrics) = upstream_with(PolicyOverrides::default());
        // The upstream reads the whole request body (through the retry layer's ReplayBody,
        // which reports progress), then answers.
        let svc = tower::service_fn(|req: Request<ChannelBody>| async move {
            let (parts, body) = req.into_parts();
            let progress = parts.extensions.get::<Arc<StreamProgress>>().unwrap();
            let body = ReplayBody::new(body, 0).with_progress(progress.clone());
            let len = body.collect().await.unwrap().to_bytes().len();
            Ok::<_, ProxyError>(Response::new(http_body_util::Full::new(Bytes::from(
                len.to_string(),
            ))))
        });
        let (tx, body) = channel();
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(AFTER / 2).await;
                tx.send(Bytes::from_static(b"chunk")).await.unwrap();
            }
        });
        let start = Instant::now();
        let resp = StreamIdleLayer::new(AFTER, upstream)
            .layer(svc)
            .oneshot(Request::new(body))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), AFTER / 2 * 5);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"25");
        assert_eq!(stream_idle_timeouts(&metrics.render().unwrap()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_and_upgrades_have_no_timer() {
        let (upstream, _metrics) = upstream_with(PolicyOverrides::default());
        let hanging = || {
            tower::service_fn(|_req: Request<()>| {
                std::future::pending::<Result<Response<ChannelBody>, ProxyError>>()
            })
        };
        let off = StreamIdleLayer::new(Duration::ZERO, upstream.clone())
            .layer(hanging())
            .oneshot(Request::new(()));
        assert!(tokio::time::timeout(AFTER * 100, off).await.is_err());
        let mut upgrade = Request::new(());
        upgrade
            .headers_mut()
            .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
        upgrade
            .headers_mut()
            .insert(http::header::UPGRADE, "websocket".parse().unwrap());
        let tunnel = StreamIdleLayer::new(AFTER, upstream)
            .layer(hanging())
            .oneshot(upgrade);
        assert!(tokio::time::timeout(AFTER * 100, tunnel).await.is_err());
    }
}
