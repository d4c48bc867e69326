//! The connections open to one upstream under `max_connections`: a request carries its upstream's
//! slots as an extension, and the pool takes one before it opens a connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::metrics::resilience::UpstreamMetrics;
use crate::resilience::error::ResilienceError;
use crate::resilience::kinds::Limit;

/// The connections open to one upstream (a request extension, read by the pool).
#[derive(Debug)]
pub struct ConnectionSlots {
    open: AtomicU32,
    max: AtomicU32,
    metrics: UpstreamMetrics,
}

impl ConnectionSlots {
    pub fn new(max: u32, metrics: UpstreamMetrics) -> Self {
        ConnectionSlots {
            open: AtomicU32::new(0),
            max: AtomicU32::new(max),
            metrics,
        }
    }

    /// Follows the upstream's policy: a lower maximum refuses new connections from now on;
    /// open ones stay.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Release);
    }

    /// A place for one more connection, held until the connection ends; counted and refused
    /// when the upstream already has `max`.
    pub fn try_open(self: &Arc<Self>) -> Result<ConnectionSlot, ResilienceError> {
        let max = self.max.load(Ordering::Acquire);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ConnectionSlot(self.clone()))
            .map_err(|_| {
                self.metrics.overloaded(Limit::Connections);
                ResilienceError::Overloaded {
                    limit: Limit::Connections,
                    max,
                }
            })
    }

    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Acquire)
    }
}

/// One open connection's place under `max_connections`.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionSlots>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}
