//! A ceiling on the connections one side holds at once (`WEFT_INBOUND_CONNECTION_LIMIT`,
//! `WEFT_OUTBOUND_CONNECTION_LIMIT`). Past it a new connection is reset at once and counted, so a
//! flood degrades into refusals instead of the proxy running out of file descriptors, where every
//! accept would fail. Each proxied connection takes two descriptors (the client's and the
//! upstream's); the automatic limit leaves room for both sides within `RLIMIT_NOFILE`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;

/// Descriptors kept aside for listeners, the admin server, control-plane clients and logs.
pub const RESERVED_FDS: u64 = 256;

#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: AtomicUsize,
    refused: Counter,
    accept_failed: Counter,
}

impl ConnectionLimit {
    /// `refused` counts connections over the limit; `accept_failed`, accepts the kernel failed
    /// (out of descriptors or memory).
    pub fn new(max: usize, refused: Counter, accept_failed: Counter) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            max: max.max(1),
            open: AtomicUsize::new(0),
            refused,
            accept_failed,
        })
    }

    pub fn accept_failed(&self) {
        self.accept_failed.inc();
    }

    /// A place for one more connection, or `None` (counted) when the side is full.
    pub fn try_admit(self: &Arc<Self>) -> Option<Admitted> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(Admitted(self.clone()))
        } else {
            self.refused.inc();
            None
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// Held by a connection for its life.
#[derive(Debug)]
pub struct Admitted(Arc<ConnectionLimit>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The limits of both sides: the configured ones (0: automatic), fitted to `nofile` descriptors.
/// Returns (inbound, outbound, whether the configured ones did not fit and were lowered).
pub fn fit(inbound: u64, outbound: u64, nofile: u64) -> (usize, usize, bool) {
    // Two descriptors per connection on each side.
    let room = nofile.saturating_sub(RESERVED_FDS) / 2;
    let auto = (room / 2).max(1);
    let inbound = if inbound == 0 { auto } else { inbound };
    let outbound = if outbound == 0 { auto } else { outbound };
    if inbound + outbound <= room.max(2) {
        return (inbound as usize, outbound as usize, false);
    }
    // Shrink both in proportion to what was asked.
    let total = inbound + outbound;
    let scale = |n: u64| ((n as u128 * room as u128 / total as u128) as u64).max(1) as usize;
    (scale(inbound), scale(outbound), true)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one (the kernel's cap for this container) and
/// returns it.
pub fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_counts_refusals() {
        let refused = Counter::default();
        let limit = ConnectionLimit::new(2, refused.clone(), Counter::default());
        let a = limit.try_admit().expect("first");
        let _b = limit.try_admit().expect("second");
        assert!(limit.try_admit().is_none());
        assert_eq!(refused.get(), 1);
        drop(a);
        assert!(
            limit.try_admit().is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn limits_fit_the_descriptors() {
        // Automatic: a quarter of what is left after the reserve, each.
        assert_eq!(fit(0, 0, 1_048_576), (262_080, 262_080, false));
        assert_eq!(fit(0, 0, 20_000), (4_936, 4_936, false));
        // Configured and fitting.
        assert_eq!(fit(1000, 3000, 20_000), (1000, 3000, false));
        // Configured too high: lowered in proportion.
        assert_eq!(fit(10_000, 10_000, 20_000), (4_936, 4_936, true));
        // A tiny limit still admits one of each.
        let (i, o, _) = fit(0, 0, 100);
        assert!(i >= 1 && o >= 1);
    }
}
