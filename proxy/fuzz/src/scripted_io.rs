//! A connection whose peer sends a fixed byte string in segments, then closes its side. Reads
//! are always ready, so nothing waits on a timer; writes are kept for inspection.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub struct ScriptedIo {
    input: Vec<u8>,
    read: usize,
    /// Segment lengths (each at least 1), used in turn; the last repeats.
    segments: Vec<usize>,
    next_segment: usize,
    written: Arc<Mutex<Vec<u8>>>,
}

impl ScriptedIo {
    /// Delivers `input` in one read (as far as the reader's buffer allows).
    pub fn whole(input: &[u8]) -> Self {
        Self::segmented(input, vec![usize::MAX])
    }

    /// Delivers `input` in segments whose lengths come from a hash of the input, 1 to 64 bytes
    /// each: a deterministic but input-dependent way to split it, so a crash replays exactly.
    pub fn hashed(input: &[u8]) -> Self {
        let mut state = fnv1a(input) | 1;
        let segments = (0..32)
            .map(|_| {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 64) as usize + 1
            })
            .collect();
        Self::segmented(input, segments)
    }

    fn segmented(input: &[u8], segments: Vec<usize>) -> Self {
        ScriptedIo {
            input: input.to_vec(),
            read: 0,
            segments,
            next_segment: 0,
            written: Arc::default(),
        }
    }

    /// Everything written to the connection so far, also after the connection is handed away.
    pub fn written(&self) -> Arc<Mutex<Vec<u8>>> {
        Arc::clone(&self.written)
    }

    /// How many input bytes the reader has taken.
    pub fn consumed(&self) -> usize {
        self.read
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl AsyncRead for ScriptedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let segment = this.segments[this.next_segment.min(this.segments.len() - 1)];
        this.next_segment += 1;
        let n = segment
            .min(buf.remaining())
            .min(this.input.len() - this.read);
        buf.put_slice(&this.input[this.read..this.read + n]);
        this.read += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ScriptedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
