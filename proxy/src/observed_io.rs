//! An I/O wrapper that tells an observer how many bytes moved each way as they pass. Byte
//! counters use it so long-lived connections show up in metrics while they are open, not only
//! when they close; the idle timer uses it to know when a connection last did anything.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Told of every non-empty read and write on an [`ObservedIo`].
pub trait IoObserver {
    fn on_read(&self, bytes: usize);
    fn on_written(&self, bytes: usize);
}

impl<O: IoObserver + ?Sized> IoObserver for Arc<O> {
    fn on_read(&self, bytes: usize) {
        (**self).on_read(bytes);
    }

    fn on_written(&self, bytes: usize) {
        (**self).on_written(bytes);
    }
}

pin_project! {
    #[derive(Debug)]
    pub struct ObservedIo<I, O> {
        #[pin]
        inner: I,
        observer: O,
    }
}

impl<I, O> ObservedIo<I, O> {
    pub fn new(inner: I, observer: O) -> Self {
        ObservedIo { inner, observer }
    }

    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncRead, O: IoObserver> AsyncRead for ObservedIo<I, O> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            this.observer.on_read(n);
        }
        res
    }
}

impl<I: AsyncWrite, O: IoObserver> AsyncWrite for ObservedIo<I, O> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            this.observer.on_written(n);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            this.observer.on_written(n);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Adds the bytes read and written to two metric counters.
#[derive(Clone, Debug)]
pub struct ByteCounters {
    pub read: Counter,
    pub written: Counter,
}

impl IoObserver for ByteCounters {
    fn on_read(&self, bytes: usize) {
        self.read.inc_by(bytes as u64);
    }

    fn on_written(&self, bytes: usize) {
        self.written.inc_by(bytes as u64);
    }
}

/// A connection whose bytes are counted in metrics.
pub type CountedIo<I> = ObservedIo<I, ByteCounters>;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_both_directions() {
        let (mut far, near) = tokio::io::duplex(64);
        let (read, written) = (Counter::default(), Counter::default());
        let counters = ByteCounters {
            read: read.clone(),
            written: written.clone(),
        };
        let mut io = CountedIo::new(near, counters);
        far.write_all(b"12345").await.unwrap();
        let mut buf = [0u8; 5];
        io.read_exact(&mut buf).await.unwrap();
        io.write_all(b"abc").await.unwrap();
        assert_eq!(read.get(), 5);
        assert_eq!(written.get(), 3);
    }
}
