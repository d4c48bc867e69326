//! A bidirectional copy whose memory follows the traffic. tokio's copy gives each direction a
//! fixed heap buffer for the connection's whole life, so an idle connection costs as much as a
//! busy one (two 64 KiB buffers per opaque connection per proxy before this). Here a direction
//! holds no heap memory while idle: it reads into a buffer on the stack and writes straight from
//! it; only bytes the writer could not take yet are kept on the heap, and only until they are
//! written. A direction whose reads keep filling the stack buffer is a bulk transfer and gets a
//! larger heap buffer (fewer syscalls and TLS records), which it gives back when its reads get
//! small again or it ends. EOF on one side shuts down the other's write half (half-close).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One read's worth, on the stack: idle and trickling connections never hold more.
const STACK_BUF: usize = 16 * 1024;
/// A bulk direction's heap buffer: two full TLS records per read and write.
pub const BULK_BUF: usize = 32 * 1024;

/// Copies `a` -> `b` and `b` -> `a` until both directions have seen EOF and passed it on;
/// returns the bytes copied each way.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = OneWay::default();
    let mut b_to_a = OneWay::default();
    let mut a_to_b_done = None;
    let mut b_to_a_done = None;
    poll_fn(|cx| {
        if a_to_b_done.is_none()
            && let Poll::Ready(done) = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))
        {
            a_to_b_done = Some(done?);
        }
        if b_to_a_done.is_none()
            && let Poll::Ready(done) = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))
        {
            b_to_a_done = Some(done?);
        }
        match (a_to_b_done, b_to_a_done) {
            (Some(up), Some(down)) => Poll::Ready(Ok((up, down))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction's state.
#[derive(Default)]
struct OneWay {
    /// Bytes read and not yet written (`buf[pos..end]`), or the bulk buffer; empty (no heap)
    /// otherwise.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    bulk: bool,
    read_done: bool,
    need_flush: bool,
    copied: u64,
}

impl OneWay {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            while self.pos < self.end {
                let n = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buf[self.pos..self.end])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.copied += n as u64;
                self.need_flush = true;
            }
            self.pos = 0;
            self.end = 0;
            if !self.bulk && self.buf.capacity() > 0 {
                // Written out: give the memory back.
                self.buf = Vec::new();
            }
            if self.read_done {
                ready!(writer.as_mut().poll_shutdown(cx))?;
                return Poll::Ready(Ok(self.copied));
            }
            if self.bulk {
                if self.buf.len() < BULK_BUF {
                    self.buf.resize(BULK_BUF, 0);
                }
                let mut read = ReadBuf::new(&mut self.buf);
                if reader.as_mut().poll_read(cx, &mut read)?.is_pending() {
                    return self.flush_while_waiting(cx, writer);
                }
                let n = read.filled().len();
                if n == 0 {
                    self.read_done = true;
                    self.bulk = false;
                } else {
                    self.end = n;
                    // Small reads again: once this is written, back to the stack.
                    self.bulk = n >= STACK_BUF;
                }
                continue;
            }
            let mut stack = [0u8; STACK_BUF];
            let mut read = ReadBuf::new(&mut stack);
            if reader.as_mut().poll_read(cx, &mut read)?.is_pending() {
                return self.flush_while_waiting(cx, writer);
            }
            let n = read.filled().len();
            if n == 0 {
                self.read_done = true;
                continue;
            }
            // A full read: more is waiting; a bulk transfer.
            self.bulk = n == STACK_BUF;
            let mut written = 0;
            while written < n {
                match writer.as_mut().poll_write(cx, &stack[written..n]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(k)) => {
                        written += k;
                        self.copied += k as u64;
                        self.need_flush = true;
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => break,
                }
            }
            if written < n {
                // The writer is slow: keep the rest (its waker is registered) until it drains.
                self.buf.clear();
                self.buf.extend_from_slice(&stack[written..n]);
                self.pos = 0;
                self.end = self.buf.len();
                return Poll::Pending;
            }
        }
    }

    /// Nothing to read yet: push out what the writer buffers (TLS records) before waiting.
    fn flush_while_waiting<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>> {
        if self.need_flush {
            match writer.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.need_flush = false,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (mut client, mut proxy_client) = tokio::io::duplex(64 * 1024);
        let (mut proxy_server, mut server) = tokio::io::duplex(64 * 1024);
        let proxy =
            tokio::spawn(
                async move { copy_bidirectional(&mut proxy_client, &mut proxy_server).await },
            );
        let upload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = upload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, upload);
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        assert_eq!(proxy.await.unwrap().unwrap(), (1_000_000, 4));
    }

    /// Idle and trickling directions hold no heap; a bulk one holds its buffer only while bulk.
    #[tokio::test]
    async fn memory_follows_the_traffic() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut src, mut reader) = tokio::io::duplex(256 * 1024);
        let (mut writer, mut sink) = tokio::io::duplex(256 * 1024);
        let mut way = OneWay::default();
        let mut poll = |way: &mut OneWay| {
            let _ = way.poll_copy(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer));
        };
        poll(&mut way);
        assert_eq!(way.held(), 0, "idle: nothing on the heap");
        src.write_all(b"a little").await.unwrap();
        poll(&mut way);
        assert_eq!(way.held(), 0, "a small read is written from the stack");
        let mut got = [0u8; 8];
        sink.read_exact(&mut got).await.unwrap();
        src.write_all(&vec![7u8; 200 * 1024]).await.unwrap();
        poll(&mut way);
        assert_eq!(way.held(), BULK_BUF, "bulk: one buffer");
        let mut drained = vec![0u8; 200 * 1024];
        sink.read_exact(&mut drained).await.unwrap();
        src.write_all(b"trickle").await.unwrap();
        poll(&mut way);
        poll(&mut way);
        assert_eq!(way.held(), 0, "small again: the buffer is given back");
    }

    /// A writer that takes nothing keeps the read bytes on the heap until it drains.
    #[tokio::test]
    async fn a_slow_writer_holds_only_what_it_has_not_taken() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut src, mut reader) = tokio::io::duplex(64 * 1024);
        // A tiny pipe: the writer takes 16 bytes and is then full.
        let (mut writer, mut sink) = tokio::io::duplex(16);
        let mut way = OneWay::default();
        src.write_all(&[1u8; 100]).await.unwrap();
        let _ = way.poll_copy(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer));
        assert_eq!(way.end - way.pos, 84);
        assert!(way.held() >= 84 && way.held() < STACK_BUF);
        let mut out = vec![0u8; 100];
        let mut taken = 0;
        while taken < 100 {
            taken += sink.read(&mut out[taken..]).await.unwrap();
            let _ = way.poll_copy(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer));
        }
        assert_eq!(out, vec![1u8; 100]);
        assert_eq!(way.held(), 0);
    }
}
