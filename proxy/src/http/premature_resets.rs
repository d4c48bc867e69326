//! Paced rapid reset: an HTTP/2 client that opens streams and resets each right after its
//! HEADERS makes the proxy start (and the app serve) work nobody waits for, at the client's
//! pace; h2's own guard only counts streams reset before they were accepted. Like Envoy, the
//! proxy watches each connection: once it has opened `min_streams` streams and more than half of
//! them were reset before their response, the connection is closed with GOAWAY and counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tower::{Layer, Service};

/// One connection's streams and how many the client reset early.
#[derive(Debug)]
pub struct PrematureResets {
    started: AtomicU32,
    reset: AtomicU32,
    min_streams: u32,
    tripped: AtomicBool,
    notify: Notify,
}

impl PrematureResets {
    pub fn new(min_streams: u32) -> Arc<Self> {
        Arc::new(PrematureResets {
            started: AtomicU32::new(0),
            reset: AtomicU32::new(0),
            min_streams: min_streams.max(1),
            tripped: AtomicBool::new(false),
            notify: Notify::new(),
        })
    }

    fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    fn reset_early(&self) {
        let reset = self.reset.fetch_add(1, Ordering::Relaxed) + 1;
        let started = self.started.load(Ordering::Relaxed);
        if should_close(started, reset, self.min_streams)
            && !self.tripped.swap(true, Ordering::AcqRel)
        {
            self.notify.notify_one();
        }
    }

    /// Resolves once the connection should be closed.
    pub async fn tripped(&self) {
        if self.tripped.load(Ordering::Acquire) {
            return;
        }
        self.notify.notified().await;
    }

    /// (streams started, streams reset before their response), for the log line.
    pub fn counts(&self) -> (u32, u32) {
        (
            self.started.load(Ordering::Relaxed),
            self.reset.load(Ordering::Relaxed),
        )
    }
}

/// The rule, as a pure function: enough streams, and most of them reset early.
pub fn should_close(started: u32, reset: u32, min_streams: u32) -> bool {
    started >= min_streams && u64::from(reset) * 2 > u64::from(started)
}

#[derive(Clone, Debug)]
pub struct PrematureResetLayer(Arc<PrematureResets>);

impl PrematureResetLayer {
    pub fn new(resets: Arc<PrematureResets>) -> Self {
        PrematureResetLayer(resets)
    }
}

impl<S> Layer<S> for PrematureResetLayer {
    type Service = PrematureResetService<S>;

    fn layer(&self, inner: S) -> PrematureResetService<S> {
        PrematureResetService {
            inner,
            resets: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PrematureResetService<S> {
    inner: S,
    resets: Arc<PrematureResets>,
}

impl<S, R> Service<R> for PrematureResetService<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Watched<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.resets.started();
        Watched {
            inner: self.inner.call(req),
            guard: ResetGuard {
                resets: self.resets.clone(),
                answered: false,
            },
        }
    }
}

/// Dropped with its stream's response still pending: the client reset the stream.
#[derive(Debug)]
struct ResetGuard {
    resets: Arc<PrematureResets>,
    answered: bool,
}

impl Drop for ResetGuard {
    fn drop(&mut self) {
        if !self.answered {
            self.resets.reset_early();
        }
    }
}

pin_project! {
    pub struct Watched<F> {
        #[pin]
        inner: F,
        guard: ResetGuard,
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        // Answered: not premature, whatever happens to the body afterwards.
        this.guard.answered = true;
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn closes_only_past_the_minimum_and_a_majority() {
        let table = [
            (99, 99, 100, false),
            (100, 50, 100, false),
            (100, 51, 100, true),
            (1000, 400, 100, false),
            (1000, 501, 100, true),
            (1, 1, 1, true),
        ];
        for (started, reset, min, expected) in table {
            assert_eq!(
                should_close(started, reset, min),
                expected,
                "{started} {reset} {min}"
            );
        }
    }

    #[tokio::test]
    async fn dropped_before_the_response_counts_answered_does_not() {
        let resets = PrematureResets::new(4);
        let layer = PrematureResetLayer::new(resets.clone());
        let answered = layer.layer(tower::service_fn(|()| async { Ok::<_, ()>(()) }));
        for _ in 0..3 {
            answered.clone().oneshot(()).await.unwrap();
        }
        assert_eq!(resets.counts(), (3, 0));
        let pending = layer.layer(tower::service_fn(|()| {
            std::future::pending::<Result<(), ()>>()
        }));
        for _ in 0..3 {
            let mut svc = pending.clone();
            drop(svc.call(()));
        }
        assert_eq!(resets.counts(), (6, 3));
        // 6 started, 3 reset: not a majority yet.
        let not_yet = tokio::time::timeout(std::time::Duration::from_millis(20), resets.tripped());
        assert!(not_yet.await.is_err());
        let mut svc = pending.clone();
        drop(svc.call(()));
        tokio::time::timeout(std::time::Duration::from_secs(1), resets.tripped())
            .await
            .expect("tripped once most streams were reset early");
    }
}
