//! Peak-EWMA load of one endpoint: an exponentially weighted moving average of its response
//! latency that jumps up to any slower sample at once (the "peak") and decays back slowly, times
//! the requests (or connections) it has in flight. A slow or busy endpoint costs more, so the
//! power-of-two-choices picker steers away from it, and the decay lets it earn traffic back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How fast old latency samples fade: after this long an estimate has decayed to ~37%.
pub const DECAY: Duration = Duration::from_secs(10);
/// The latency assumed for an endpoint that has not answered yet: low enough that new endpoints
/// get tried, high enough that one in-flight request on them is not free.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// An idle endpoint whose estimate is older than this is measured again (it costs nothing for
/// one pick): otherwise one slow answer — a connection set up, a pause on a busy node — keeps a
/// replica out of rotation until its estimate decays, which at low concurrency (one request at
/// a time, nothing in flight to compare) starves it for tens of seconds. A replica that really
/// is slow pays for this with about one request per period.
pub const REMEASURE_AFTER: Duration = Duration::from_millis(100);

/// The least weight one faster sample gets in the average.
pub const MIN_SAMPLE_WEIGHT: f64 = 0.25;

/// The latency a failed request counts as.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Estimate {
    rtt_ns: f64,
    at: Instant,
    /// No sample yet: the default only prices requests in flight, so an idle new endpoint is
    /// tried at once (instead of waiting for the others' estimates to decay below the default)
    /// while a burst is not all sent to it before its first answer.
    sampled: bool,
}

/// Load statistics of one endpoint, shared by every connection that balances over it.
#[derive(Debug)]
pub struct PeakEwma {
    estimate: Mutex<Estimate>,
    in_flight: AtomicUsize,
    decay_ns: f64,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new(DEFAULT_RTT, DECAY)
    }
}

impl PeakEwma {
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        PeakEwma {
            estimate: Mutex::new(Estimate {
                rtt_ns: default_rtt.as_nanos() as f64,
                at: Instant::now(),
                sampled: false,
            }),
            in_flight: AtomicUsize::new(0),
            decay_ns: decay.as_nanos().max(1) as f64,
        }
    }

    /// The cost of sending one more request here: decayed latency estimate x (in flight + 1).
    pub fn cost(&self, now: Instant) -> f64 {
        let pending = self.in_flight.load(Ordering::Relaxed) as f64;
        let estimate = self.lock();
        if !estimate.sampled {
            return estimate.rtt_ns * pending;
        }
        if pending == 0.0 && now.saturating_duration_since(estimate.at) > REMEASURE_AFTER {
            return 0.0;
        }
        decay(estimate.rtt_ns, estimate.at, now, self.decay_ns) * (pending + 1.0)
    }

    /// Marks a request (or connection) as started; the returned guard ends it.
    pub fn start(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            ewma: self.clone(),
            started: Instant::now(),
            recorded: false,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Folds in a latency sample taken at `now`.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        let mut estimate = self.lock();
        // A first sample, or one after the estimate went stale, is taken as it is: it is the
        // only current measurement there is.
        if !estimate.sampled || now.saturating_duration_since(estimate.at) > REMEASURE_AFTER {
            *estimate = Estimate {
                rtt_ns: sample,
                at: now,
                sampled: true,
            };
            return;
        }
        let decayed = decay(estimate.rtt_ns, estimate.at, now, self.decay_ns);
        // Peak: a slower sample replaces the estimate outright, so a suddenly slow endpoint is
        // avoided on the very next pick; faster samples are averaged in, each with at least
        // MIN_SAMPLE_WEIGHT (under rapid traffic the time-based weight alone would be ~0, and
        // an estimate could then only fall by decaying).
        estimate.rtt_ns = if sample > decayed {
            sample
        } else {
            let w = weight(estimate.at, now, self.decay_ns).min(1.0 - MIN_SAMPLE_WEIGHT);
            decayed * w + sample * (1.0 - w)
        };
        estimate.at = now;
    }

    #[cfg(test)]
    fn decayed(&self, now: Instant) -> f64 {
        let estimate = self.lock();
        decay(estimate.rtt_ns, estimate.at, now, self.decay_ns)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Estimate> {
        // Every update is a single assignment: a panic elsewhere cannot leave it half-written.
        self.estimate.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The weight an old estimate keeps after the time since `at`.
fn weight(at: Instant, now: Instant, decay_ns: f64) -> f64 {
    let elapsed = now.saturating_duration_since(at).as_nanos() as f64;
    (-elapsed / decay_ns).exp()
}

fn decay(rtt_ns: f64, at: Instant, now: Instant, decay_ns: f64) -> f64 {
    rtt_ns * weight(at, now, decay_ns)
}

/// One request or connection in flight on an endpoint. Dropping it without [`InFlight::complete`]
/// (the request failed or was cancelled) still ends it, but records no latency sample.
#[derive(Debug)]
pub struct InFlight {
    ewma: std::sync::Arc<PeakEwma>,
    started: Instant,
    recorded: bool,
}

impl InFlight {
    /// The response (head) arrived: records its latency.
    pub fn complete(&mut self) {
        if !self.recorded {
            let now = Instant::now();
            self.ewma.observe(now.duration_since(self.started), now);
            self.recorded = true;
        }
    }
}

impl InFlight {
    /// The request failed (no response from the endpoint): recorded as at least
    /// [`FAILURE_PENALTY`], so a failing endpoint that answers fast with errors is not mistaken
    /// for a fast one.
    pub fn fail(&mut self) {
        if !self.recorded {
            let now = Instant::now();
            let took = now.duration_since(self.started);
            self.ewma.observe(took.max(FAILURE_PENALTY), now);
            self.recorded = true;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ewma.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_slower_sample_is_taken_at_once() {
        let ewma = PeakEwma::new(Duration::from_millis(1), DECAY);
        let now = Instant::now();
        ewma.observe(Duration::from_millis(1), now);
        ewma.observe(Duration::from_millis(200), now);
        let cost = ewma.cost(now);
        assert!((cost - 200e6).abs() < 1e3, "{cost}");
    }

    #[test]
    fn an_unsampled_endpoint_is_free_when_idle_and_priced_by_the_default_when_busy() {
        let ewma = Arc::new(PeakEwma::new(Duration::from_millis(30), DECAY));
        let now = Instant::now();
        assert_eq!(ewma.cost(now), 0.0);
        let _busy = ewma.start();
        assert_eq!(ewma.cost(now), 30e6);
    }

    #[test]
    fn faster_samples_average_in_and_old_estimates_decay() {
        let ewma = PeakEwma::new(Duration::from_millis(100), DECAY);
        let t0 = Instant::now();
        ewma.observe(Duration::from_millis(100), t0);
        // One decay period later an estimate has faded to ~37%.
        let faded = ewma.decayed(t0 + DECAY);
        assert!((faded - 100e6 * (-1f64).exp()).abs() < 1e3, "{faded}");
        let t1 = t0 + Duration::from_millis(50);
        let before = ewma.decayed(t1);
        ewma.observe(Duration::from_millis(10), t1);
        let after = ewma.decayed(t1);
        assert!(after < before && after > 10e6, "{after}");
    }

    #[test]
    fn rapid_fast_samples_bring_the_estimate_down() {
        let ewma = PeakEwma::new(Duration::from_millis(1), DECAY);
        let t0 = Instant::now();
        ewma.observe(Duration::from_millis(20), t0);
        for i in 1..=20 {
            ewma.observe(Duration::from_millis(1), t0 + Duration::from_micros(i));
        }
        let now = t0 + Duration::from_micros(21);
        assert!(ewma.decayed(now) < 2e6, "{}", ewma.decayed(now));
    }

    #[test]
    fn a_stale_idle_estimate_is_measured_again() {
        let ewma = Arc::new(PeakEwma::new(Duration::from_millis(1), DECAY));
        let t0 = Instant::now();
        ewma.observe(Duration::from_millis(200), t0);
        assert!(ewma.cost(t0 + Duration::from_millis(100)) > 100e6);
        assert_eq!(ewma.cost(t0 + REMEASURE_AFTER * 2), 0.0);
        // Not while a request is already measuring it.
        let probe = ewma.start();
        assert!(ewma.cost(t0 + REMEASURE_AFTER * 2) > 100e6);
        drop(probe);
        // The new measurement replaces the old estimate.
        ewma.observe(Duration::from_millis(2), t0 + REMEASURE_AFTER * 2);
        assert!(ewma.cost(t0 + REMEASURE_AFTER * 2) <= 2e6);
    }

    #[test]
    fn in_flight_requests_multiply_the_cost() {
        let ewma = Arc::new(PeakEwma::new(Duration::from_millis(10), DECAY));
        let now = Instant::now();
        ewma.observe(Duration::from_millis(10), now);
        let idle = ewma.cost(now);
        let a = ewma.start();
        let b = ewma.start();
        assert_eq!(ewma.in_flight(), 2);
        let busy = ewma.cost(now);
        assert!((busy / idle - 3.0).abs() < 0.01, "{idle} {busy}");
        drop(a);
        drop(b);
        assert_eq!(ewma.in_flight(), 0);
    }

    #[test]
    fn completing_records_the_latency_and_dropping_alone_does_not() {
        let ewma = Arc::new(PeakEwma::new(
            Duration::from_nanos(1),
            Duration::from_secs(3600),
        ));
        ewma.observe(Duration::from_nanos(1), Instant::now());
        let failed = ewma.start();
        std::thread::sleep(Duration::from_millis(5));
        drop(failed);
        assert!(ewma.cost(Instant::now()) < 1e3);
        let mut req = ewma.start();
        std::thread::sleep(Duration::from_millis(5));
        req.complete();
        drop(req);
        assert!(ewma.cost(Instant::now()) >= 5e6);
    }
}
