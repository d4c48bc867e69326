//! A request body that can be sent again. The first attempt streams the client's body through
//! while keeping a copy of up to 64 KiB; a retry replays the copy, then continues with whatever
//! of the client's body the earlier attempt had not read. Past the limit the copy is dropped and
//! the request is no longer replayable: a large upload is never held in memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::resilience::stream_idle::StreamProgress;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request bodies up to this size are kept for a retry.
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

struct Shared<B> {
    /// The client's body, while no copy is reading it.
    source: Option<B>,
    /// The client's body has ended (its last frame was read).
    source_done: bool,
    buffered: VecDeque<Bytes>,
    buffered_len: usize,
    capacity: usize,
    /// More than `capacity` was read (or announced): the copy is gone for good.
    overflowed: bool,
    trailers: Option<HeaderMap>,
    /// A copy waiting for the one that holds the source.
    waiting: Option<Waker>,
    /// Told of every frame the client's body yields (the stream idle timeout).
    progress: Option<Arc<StreamProgress>>,
}

impl<B> Shared<B> {
    fn wake(&mut self) {
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
    }
}

pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// Buffered chunks this copy has already yielded.
    replayed: usize,
    /// The client's body, taken from `shared` while this copy reads it.
    source: Option<B>,
    trailers_sent: bool,
    done: bool,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `capacity` bytes for replay (0: keep nothing).
    pub fn new(body: B, capacity: usize) -> Self {
        // A body announced larger than the limit is not worth copying at all.
        let too_large = body.size_hint().lower() > capacity as u64;
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(body),
                source_done: false,
                buffered: VecDeque::new(),
                buffered_len: 0,
                capacity,
                overflowed: capacity == 0 || too_large,
                trailers: None,
                waiting: None,
                progress: None,
            })),
            replayed: 0,
            source: None,
            trailers_sent: false,
            done: false,
        }
    }
}

impl<B> ReplayBody<B> {
    /// Reports each frame read from the client's body to `progress`, so a request whose upload
    /// is still moving is not taken for an idle stream.
    pub fn with_progress(self, progress: Arc<StreamProgress>) -> Self {
        lock(&self.shared).progress = Some(progress);
        self
    }

    /// Whether a copy can still be made: the body so far fitted in the limit.
    pub fn is_replayable(&self) -> bool {
        !lock(&self.shared).overflowed
    }

    /// A fresh copy for another attempt, from the first byte; `None` when not replayable.
    pub fn try_clone(&self) -> Option<Self> {
        if !self.is_replayable() {
            return None;
        }
        Some(ReplayBody {
            shared: self.shared.clone(),
            replayed: 0,
            source: None,
            trailers_sent: false,
            done: false,
        })
    }
}

fn lock<B>(shared: &Mutex<Shared<B>>) -> MutexGuard<'_, Shared<B>> {
    // Updates are single assignments and pushes; a panic elsewhere cannot leave them half-done.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            let mut shared = lock(&self.shared);
            shared.source = Some(source);
            shared.wake();
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {MAX_REPLAY_BYTES} bytes and cannot be sent again")]
pub struct NotReplayable;

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.source.is_none() {
            let mut shared = lock(&this.shared);
            if this.replayed < shared.buffered.len() {
                let chunk = shared.buffered[this.replayed].clone();
                this.replayed += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if shared.overflowed && this.replayed > 0 {
                // Only a copy made before the overflow can get here; its bytes are gone.
                this.done = true;
                return Poll::Ready(Some(Err(NotReplayable.into())));
            }
            if shared.source_done {
                this.done = true;
                return match shared.trailers.clone() {
                    Some(trailers) if !this.trailers_sent => {
                        this.trailers_sent = true;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    _ => Poll::Ready(None),
                };
            }
            match shared.source.take() {
                Some(source) => this.source = Some(source),
                None => {
                    // An earlier attempt still holds the body; it wakes us when it lets go.
                    shared.waiting = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let Some(source) = this.source.as_mut() else {
            return Poll::Pending;
        };
        let frame = match Pin::new(source).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame,
        };
        let mut shared = lock(&this.shared);
        if let (Some(Ok(_)), Some(progress)) = (&frame, &shared.progress) {
            progress.made();
        }
        let out = match frame {
            None => {
                shared.source_done = true;
                this.done = true;
                None
            }
            Some(Err(err)) => Some(Err(err.into())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !shared.overflowed {
                        if shared.buffered_len + data.len() > shared.capacity {
                            shared.overflowed = true;
                            shared.buffered.clear();
                            shared.buffered_len = 0;
                        } else {
                            shared.buffered_len += data.len();
                            shared.buffered.push_back(data.clone());
                        }
                    }
                    this.replayed = shared.buffered.len();
                    Some(Ok(Frame::data(data)))
                }
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        shared.trailers = Some(trailers.clone());
                        shared.source_done = true;
                        this.trailers_sent = true;
                    }
                    Some(Ok(frame))
                }
            },
        };
        shared.wake();
        Poll::Ready(out)
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        let shared = lock(&self.shared);
        if self.replayed < shared.buffered.len() {
            return false;
        }
        if shared.source_done {
            return shared.trailers.is_none() || self.trailers_sent;
        }
        match (&self.source, &shared.source) {
            (Some(source), _) | (None, Some(source)) => source.is_end_stream(),
            (None, None) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        let shared = lock(&self.shared);
        let buffered: u64 = shared
            .buffered
            .iter()
            .skip(self.replayed)
            .map(|b| b.len() as u64)
            .sum();
        if shared.source_done {
            return SizeHint::with_exact(buffered);
        }
        match (&self.source, &shared.source) {
            (Some(source), _) | (None, Some(source)) => {
                let rest = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(buffered + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(buffered + upper);
                }
                hint
            }
            (None, None) => {
                let mut hint = SizeHint::new();
                hint.set_lower(buffered);
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::bodies::chunked;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::convert::Infallible;

    async fn collect<B>(body: B) -> Vec<u8>
    where
        B: Body<Data = Bytes, Error = BoxError>,
    {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn replays_a_small_body_in_full() {
        let first = ReplayBody::new(chunked(vec![b"he", b"llo"]), MAX_REPLAY_BYTES);
        let second = first.try_clone().unwrap();
        assert_eq!(collect(first).await, b"hello");
        assert!(second.is_replayable());
        let third = second.try_clone().unwrap();
        assert_eq!(collect(second).await, b"hello");
        assert_eq!(collect(third).await, b"hello");
    }

    #[tokio::test]
    async fn a_retry_continues_where_the_first_attempt_stopped() {
        let mut first = ReplayBody::new(chunked(vec![b"ab", b"cd", b"ef"]), MAX_REPLAY_BYTES);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        let second = first.try_clone().unwrap();
        // The first attempt gave up (its connection failed) after one chunk.
        drop(first);
        assert_eq!(collect(second).await, b"abcdef");
    }

    #[tokio::test]
    async fn a_body_past_the_limit_streams_through_but_is_not_replayable() {
        let first = ReplayBody::new(chunked(vec![b"1234", b"5678", b"9"]), 8);
        assert!(first.is_replayable());
        let copy = first.try_clone().unwrap();
        drop(copy);
        assert_eq!(collect(first).await, b"123456789");
        let probe = ReplayBody::new(chunked(vec![b"1234", b"5678", b"9"]), 8);
        let mut probe2 = probe;
        while probe2.frame().await.is_some() {}
        assert!(!probe2.is_replayable());
        assert!(probe2.try_clone().is_none());
    }

    #[tokio::test]
    async fn an_announced_large_body_is_never_copied() {
        let body = Full::new(Bytes::from(vec![0u8; 100]));
        let replay = ReplayBody::new(body, 64);
        assert!(!replay.is_replayable());
        assert_eq!(collect(replay).await.len(), 100);
    }

    #[tokio::test]
    async fn zero_capacity_keeps_nothing() {
        let replay = ReplayBody::new(Full::new(Bytes::from_static(b"x")), 0);
        assert!(replay.try_clone().is_none());
        assert_eq!(collect(replay).await, b"x");
    }

    #[tokio::test]
    async fn trailers_are_replayed() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let first = ReplayBody::new(body, MAX_REPLAY_BYTES);
        let second = first.try_clone().unwrap();
        let got = first.collect().await.unwrap();
        assert_eq!(got.trailers().unwrap()["grpc-status"], "0");
        let got = second.collect().await.unwrap();
        assert_eq!(got.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(got.to_bytes(), "x");
    }

    #[tokio::test]
    async fn empty_body_is_at_its_end() {
        let replay = ReplayBody::new(Full::new(Bytes::new()), MAX_REPLAY_BYTES);
        assert!(replay.is_end_stream());
        let copy = replay.try_clone().unwrap();
        assert!(copy.is_end_stream());
        assert_eq!(replay.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn a_copy_waits_for_the_attempt_holding_the_body() {
        let mut first = ReplayBody::new(chunked(vec![b"ab", b"cd"]), MAX_REPLAY_BYTES);
        first.frame().await.unwrap().unwrap();
        let second = first.try_clone().unwrap();
        let reader = tokio::spawn(collect(second));
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        drop(first);
        assert_eq!(reader.await.unwrap(), b"abcd");
    }
}
