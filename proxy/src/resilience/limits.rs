//! Per-upstream limits: at most `max_in_flight` requests at once (each until its response body
//! ends) and at most `max_pending` more waiting for a slot. Past both, a request is refused at
//! once with 503 `weft-error: overloaded` (gRPC: UNAVAILABLE) instead of queueing without bound.
//! The upstream's connection count (`max_connections`) travels with each request as an
//! extension, so the pool can refuse to open one connection too many the same way.
//!
//! The limits follow each request's policy: a Service annotation that changes them (through
//! discovery) applies from the next request on, like the rest of the Service's policy. A lower
//! in-flight limit takes effect as requests in flight end: their slots are retired instead of
//! being handed on.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::resilience::UpstreamMetrics;
use crate::resilience::connection_slots::ConnectionSlots;
use crate::resilience::policy::LimitsPolicy;

/// The counters one upstream's requests share.
#[derive(Debug)]
pub struct UpstreamLimits {
    /// One permit per in-flight slot not taken; see [`InFlightSlot`].
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) max_in_flight: AtomicU32,
    /// Slots to retire as their requests end, after the in-flight limit was lowered below
    /// the number in flight (a semaphore can only forget the permits it holds).
    retiring: AtomicUsize,
    /// Held while the in-flight limit changes, so two changes do not interleave.
    resizing: Mutex<()>,
    pending: AtomicU32,
    pub(crate) max_pending: AtomicU32,
    pub(crate) connections: Arc<ConnectionSlots>,
}

/// A limit as semaphore permits (which have a smaller ceiling than u32 on 32-bit targets).
fn permits(limit: u32) -> usize {
    (limit as usize).min(Semaphore::MAX_PERMITS)
}

impl UpstreamLimits {
    pub fn new(policy: &LimitsPolicy, metrics: UpstreamMetrics) -> Self {
        UpstreamLimits {
            in_flight: Arc::new(Semaphore::new(permits(policy.max_in_flight))),
            max_in_flight: AtomicU32::new(policy.max_in_flight),
            retiring: AtomicUsize::new(0),
            resizing: Mutex::new(()),
            pending: AtomicU32::new(0),
            max_pending: AtomicU32::new(policy.max_pending),
            connections: Arc::new(ConnectionSlots::new(policy.max_connections, metrics)),
        }
    }

    /// Follows a request's policy: a Service's changed limits apply from this request on.
    /// Requests already waiting or in flight keep their places.
    pub fn apply(&self, policy: &LimitsPolicy) {
        self.max_pending
            .store(policy.max_pending, Ordering::Release);
        self.connections.set_max(policy.max_connections);
        if self.max_in_flight.load(Ordering::Acquire) == policy.max_in_flight {
            return;
        }
        let _resizing = self.resizing.lock().unwrap_or_else(PoisonError::into_inner);
        let old = permits(
            self.max_in_flight
                .swap(policy.max_in_flight, Ordering::AcqRel),
        );
        let new = permits(policy.max_in_flight);
        if new > old {
            // Slots still to retire from an earlier cut are kept instead, then new ones added.
            let grow = new - old;
            let kept = self
                .retiring
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(grow))
                })
                .map_or(0, |before| before.min(grow));
            self.in_flight.add_permits(grow - kept);
        } else {
            let cut = old - new;
            let forgotten = self.in_flight.forget_permits(cut);
            self.retiring.fetch_add(cut - forgotten, Ordering::AcqRel);
        }
    }

    /// Takes a waiting place, if one is free; it is given back when the guard drops.
    pub(crate) fn try_wait(self: &Arc<Self>) -> Option<PendingGuard> {
        let max = self.max_pending.load(Ordering::Acquire);
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingGuard(self.clone()))
    }

    pub(crate) fn slot(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> InFlightSlot {
        InFlightSlot {
            permit: Some(permit),
            limits: self.clone(),
        }
    }

    #[cfg(test)]
    pub(crate) fn max_in_flight(&self) -> u32 {
        self.max_in_flight.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        permits(self.max_in_flight()) + self.retiring.load(Ordering::Acquire)
            - self.in_flight.available_permits()
    }
}

/// One request's in-flight slot, held until its response body ends. Ending, it frees the slot
/// for the next request, or retires it when the limit was lowered meanwhile.
#[derive(Debug)]
pub struct InFlightSlot {
    permit: Option<OwnedSemaphorePermit>,
    limits: Arc<UpstreamLimits>,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let retire = self
            .limits
            .retiring
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if retire {
            permit.forget();
        }
    }
}

pub(crate) struct PendingGuard(Arc<UpstreamLimits>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// A response body that holds its request's in-flight slot until it ends.
    pub struct Limited<B> {
        #[pin]
        pub(crate) inner: B,
        slot: Option<InFlightSlot>,
    }
}

impl<B> std::fmt::Debug for Limited<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limited")
            .field("holds_slot", &self.slot.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Limited<B> {
    pub(crate) fn new(inner: B, slot: InFlightSlot) -> Self {
        Limited {
            inner,
            slot: Some(slot),
        }
    }
}

impl<B: Body> Body for Limited<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.slot.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
