//! The circuit breaker of one endpoint: after `failures` consecutive failures (a 5xx, an error,
//! or an attempt abandoned before its response, e.g. by the per-try timeout) the endpoint is
//! ejected for `base_ejection x 2^(k-1)` (k: ejections in a row, capped at `max_ejection`).
//! Then it is half-open: one probe request decides; success closes it, failure ejects it again
//! for longer. An `EjectionCap` shared by a service's endpoints keeps the share ejected at once
//! at or below `max_ejected_ratio` (rounded down): a failure that would pass the cap leaves the
//! endpoint in service.
//!
//! `CircuitBreaker` is the pure state machine; `EndpointBreaker` is one endpoint's shared handle
//! on it: the balancer (`http/balance.rs`) asks it whether the endpoint may be picked, and
//! records each attempt's outcome through an [`Attempt`]. The breakers live in the balancer, not
//! in a tower layer around each endpoint, because ejecting is a choice among a service's
//! endpoints (the cap, a retry's preference for another endpoint, failing fast when none is
//! left), and endpoints come and go with every discovery update.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    pub failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_ratio: f64,
}

impl Default for BreakerConfig {
    /// As Istio's outlier detection: 5 consecutive errors, 30 s base ejection; Envoy's 300 s cap.
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_ratio: 0.5,
        }
    }
}

/// How many of a service's endpoints may be ejected at once.
#[derive(Debug)]
pub struct EjectionCap {
    endpoints: AtomicUsize,
    ejected: AtomicUsize,
    /// An f64's bits: the Service's policy can change it live.
    max_ratio: AtomicU64,
}

impl EjectionCap {
    pub fn new(endpoints: usize, max_ratio: f64) -> Self {
        EjectionCap {
            endpoints: AtomicUsize::new(endpoints),
            ejected: AtomicUsize::new(0),
            max_ratio: AtomicU64::new(max_ratio.to_bits()),
        }
    }

    pub fn set_max_ratio(&self, max_ratio: f64) {
        // Called per request: a store only on change keeps the shared cache line clean.
        let bits = max_ratio.to_bits();
        if self.max_ratio.load(Ordering::Acquire) != bits {
            self.max_ratio.store(bits, Ordering::Release);
        }
    }

    /// Discovery changed the number of endpoints.
    pub fn set_endpoints(&self, endpoints: usize) {
        if self.endpoints.load(Ordering::Acquire) != endpoints {
            self.endpoints.store(endpoints, Ordering::Release);
        }
    }

    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }

    fn try_take(&self) -> bool {
        let ratio = f64::from_bits(self.max_ratio.load(Ordering::Acquire));
        let max = (self.endpoints.load(Ordering::Acquire) as f64 * ratio).floor() as usize;
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        let _ = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// Counters for `weft_breaker_state_changes_total{state}` and the `weft_breaker_ejected` gauge.
#[derive(Clone, Debug, Default)]
pub struct BreakerMetrics {
    pub opened: Counter,
    pub half_opened: Counter,
    pub closed: Counter,
    pub ejected: Gauge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    cap: Arc<EjectionCap>,
    metrics: BreakerMetrics,
    state: State,
    consecutive_failures: u32,
    /// Ejections in a row without a successful probe.
    ejections: u32,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig, cap: Arc<EjectionCap>, metrics: BreakerMetrics) -> Self {
        CircuitBreaker {
            config,
            cap,
            metrics,
            state: State::Closed,
            consecutive_failures: 0,
            ejections: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The Service's policy changed: later failures and ejections follow the new one.
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    /// Whether a request may be sent now; `Err(until)` while ejected. Moves an expired
    /// ejection to half-open. A half-open endpoint with its probe out is not available.
    pub fn available(&mut self, now: Instant) -> Result<bool, Instant> {
        match self.state {
            State::Closed => Ok(true),
            State::Open { until } if now < until => Err(until),
            State::Open { .. } => {
                self.state = State::HalfOpen { probing: false };
                self.metrics.half_opened.inc();
                Ok(true)
            }
            State::HalfOpen { probing } => Ok(!probing),
        }
    }

    /// A request is being sent: when half-open it is the probe.
    pub fn on_send(&mut self) {
        if let State::HalfOpen { .. } = self.state {
            self.state = State::HalfOpen { probing: true };
        }
    }

    pub fn on_success(&mut self) {
        self.consecutive_failures = 0;
        if let State::HalfOpen { .. } = self.state {
            self.state = State::Closed;
            self.ejections = 0;
            self.cap.give_back();
            self.metrics.ejected.dec();
            self.metrics.closed.inc();
        }
    }

    pub fn on_failure(&mut self, now: Instant) {
        match self.state {
            State::HalfOpen { .. } => {
                // Still holds its place under the cap: eject again, for longer.
                self.eject(now);
            }
            State::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= self.config.failures && self.cap.try_take() {
                    self.metrics.ejected.inc();
                    self.eject(now);
                }
            }
            // A late answer to a request sent before the ejection.
            State::Open { .. } => {}
        }
    }

    fn eject(&mut self, now: Instant) {
        self.ejections = self.ejections.saturating_add(1);
        let factor = 1u32 << (self.ejections - 1).min(16);
        let duration = self
            .config
            .base_ejection
            .saturating_mul(factor)
            .min(self.config.max_ejection);
        self.state = State::Open {
            until: now + duration,
        };
        self.consecutive_failures = 0;
        self.metrics.opened.inc();
    }
}

impl Drop for CircuitBreaker {
    fn drop(&mut self) {
        // An endpoint removed while ejected frees its place under the cap.
        if !matches!(self.state, State::Closed) {
            self.cap.give_back();
            self.metrics.ejected.dec();
        }
    }
}

/// One endpoint's circuit breaker, shared by every request balanced over it. Clones share it.
#[derive(Clone)]
pub struct EndpointBreaker {
    shared: Arc<Mutex<CircuitBreaker>>,
}

fn lock(shared: &Mutex<CircuitBreaker>) -> MutexGuard<'_, CircuitBreaker> {
    // Each update is a handful of assignments; a panic elsewhere cannot leave it half-done.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EndpointBreaker {
    pub fn new(breaker: CircuitBreaker) -> Self {
        EndpointBreaker {
            shared: Arc::new(Mutex::new(breaker)),
        }
    }

    pub fn state(&self) -> State {
        lock(&self.shared).state()
    }

    /// See [`CircuitBreaker::available`].
    pub fn available(&self, now: Instant) -> Result<bool, Instant> {
        lock(&self.shared).available(now)
    }

    /// A request is sent to the endpoint under `config` (the request's policy, which a Service
    /// annotation may have changed): its outcome is recorded through the returned guard
    /// (dropped unrecorded, e.g. abandoned by the per-try timeout, it is a failure). The config
    /// is only read when an outcome is recorded, so setting it here, under the same lock, is
    /// early enough.
    pub fn attempt(&self, config: BreakerConfig) -> Attempt {
        let mut breaker = lock(&self.shared);
        if breaker.config != config {
            breaker.set_config(config);
        }
        breaker.on_send();
        drop(breaker);
        Attempt {
            shared: Some(self.shared.clone()),
        }
    }
}

/// The breakers of one upstream's endpoints, by address, sharing one ejection cap.
pub struct Breakers {
    cap: Arc<EjectionCap>,
    metrics: BreakerMetrics,
    endpoints: Mutex<HashMap<SocketAddr, EndpointBreaker>>,
}

impl Breakers {
    pub fn new(metrics: BreakerMetrics) -> Self {
        Breakers {
            cap: Arc::new(EjectionCap::new(
                0,
                BreakerConfig::default().max_ejected_ratio,
            )),
            metrics,
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// The breakers of `addrs` (the endpoints being balanced over right now), created on first
    /// sight with `config`; breakers of endpoints no longer listed are dropped, which frees
    /// their place under the cap.
    /// No endpoint of this upstream is ejected or probing, so every breaker lets traffic in.
    /// (A breaker holds a place under the cap from its ejection until it closes again.)
    pub fn all_closed(&self) -> bool {
        self.cap.ejected() == 0
    }

    /// The breaker of the one endpoint `addr` out of `count` current ones (`is_current` says
    /// which addresses those are), created on first sight with `config`: the balancer's fast
    /// path, taken when [`Breakers::all_closed`], looks up only the endpoint it picked.
    pub fn one(
        &self,
        addr: SocketAddr,
        count: usize,
        is_current: impl Fn(&SocketAddr) -> bool,
        config: BreakerConfig,
    ) -> EndpointBreaker {
        self.cap.set_endpoints(count);
        self.cap.set_max_ratio(config.max_ejected_ratio);
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let breaker = endpoints
            .entry(addr)
            .or_insert_with(|| {
                EndpointBreaker::new(CircuitBreaker::new(
                    config,
                    self.cap.clone(),
                    self.metrics.clone(),
                ))
            })
            .clone();
        if endpoints.len() > count {
            endpoints.retain(|addr, _| is_current(addr));
        }
        breaker
    }

    pub fn of(&self, addrs: &[SocketAddr], config: BreakerConfig) -> Vec<EndpointBreaker> {
        self.cap.set_endpoints(addrs.len());
        self.cap.set_max_ratio(config.max_ejected_ratio);
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if endpoints.len() > addrs.len() {
            endpoints.retain(|addr, _| addrs.contains(addr));
        }
        addrs
            .iter()
            .map(|addr| {
                let breaker = endpoints.entry(*addr).or_insert_with(|| {
                    EndpointBreaker::new(CircuitBreaker::new(
                        config,
                        self.cap.clone(),
                        self.metrics.clone(),
                    ))
                });
                breaker.clone()
            })
            .collect()
    }
}

/// Records the attempt's outcome once; an attempt dropped unfinished counts as a failure.
pub struct Attempt {
    shared: Option<Arc<Mutex<CircuitBreaker>>>,
}

impl Attempt {
    pub fn record(&mut self, success: bool) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let mut breaker = lock(&shared);
        if success {
            breaker.on_success();
        } else {
            breaker.on_failure(Instant::now());
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.record(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_ratio: 0.5,
        }
    }

    fn breaker(cap: &Arc<EjectionCap>) -> (CircuitBreaker, BreakerMetrics) {
        let metrics = BreakerMetrics::default();
        (
            CircuitBreaker::new(config(), cap.clone(), metrics.clone()),
            metrics,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn all_closed_holds_until_an_ejection_and_returns_when_it_closes() {
        let breakers = Breakers::new(BreakerMetrics::default());
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let current = |addr: &SocketAddr| *addr == a || *addr == b;
        assert!(breakers.all_closed());
        let breaker = breakers.one(a, 2, current, config());
        for _ in 0..3 {
            breaker.attempt(config()).record(false);
        }
        assert!(!breakers.all_closed(), "a is ejected");
        // The slow path sees the same breaker: looked up by address, not made anew.
        let both = breakers.of(&[a, b], config());
        assert_eq!(both[0].state(), breaker.state());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(both[0].available(Instant::now()), Ok(true));
        breaker.attempt(config()).record(true);
        assert!(breakers.all_closed(), "the probe closed it");
    }

    #[test]
    fn the_fast_path_forgets_endpoints_that_are_gone() {
        let breakers = Breakers::new(BreakerMetrics::default());
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|i| format!("10.0.0.{i}:80").parse().unwrap())
            .collect();
        for addr in &addrs {
            breakers.one(*addr, 3, |a| addrs.contains(a), config());
        }
        // Endpoint 3 left; 4 arrived.
        let now: Vec<SocketAddr> = vec![addrs[0], addrs[1], "10.0.0.4:80".parse().unwrap()];
        breakers.one(now[2], 3, |a| now.contains(a), config());
        let known = breakers
            .endpoints
            .lock()
            .unwrap()
            .keys()
            .copied()
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(known, now.iter().copied().collect());
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_then_one_probe_decides() {
        let cap = Arc::new(EjectionCap::new(4, 0.5));
        let (mut b, metrics) = breaker(&cap);
        let now = Instant::now();
        b.on_failure(now);
        b.on_failure(now);
        b.on_success(); // resets the run
        b.on_failure(now);
        b.on_failure(now);
        assert_eq!(b.available(now), Ok(true));
        b.on_failure(now);
        assert_eq!(b.available(now), Err(now + Duration::from_secs(10)));
        assert_eq!(cap.ejected(), 1);
        assert_eq!(metrics.ejected.get(), 1);

        let later = now + Duration::from_secs(10);
        assert_eq!(b.available(later), Ok(true));
        assert_eq!(b.state(), State::HalfOpen { probing: false });
        b.on_send();
        assert_eq!(b.available(later), Ok(false), "only one probe");
        b.on_success();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(cap.ejected(), 0);
        assert_eq!(metrics.ejected.get(), 0);
        assert_eq!(
            (
                metrics.opened.get(),
                metrics.half_opened.get(),
                metrics.closed.get()
            ),
            (1, 1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_ejects_for_longer_up_to_the_cap() {
        let cap = Arc::new(EjectionCap::new(2, 0.5));
        let (mut b, _metrics) = breaker(&cap);
        let mut now = Instant::now();
        for _ in 0..3 {
            b.on_failure(now);
        }
        for expected in [20, 25, 25] {
            now += Duration::from_secs(30);
            assert_eq!(b.available(now), Ok(true));
            b.on_send();
            b.on_failure(now);
            assert_eq!(b.available(now), Err(now + Duration::from_secs(expected)));
        }
        assert_eq!(cap.ejected(), 1, "re-ejection keeps its one place");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_keeps_endpoints_in_service() {
        // Three endpoints at 0.5: one may be ejected.
        let cap = Arc::new(EjectionCap::new(3, 0.5));
        let (mut a, _) = breaker(&cap);
        let (mut b, _) = breaker(&cap);
        let now = Instant::now();
        for _ in 0..3 {
            a.on_failure(now);
            b.on_failure(now);
        }
        assert!(a.available(now).is_err());
        assert_eq!(b.available(now), Ok(true), "past the cap: stays in");
        // Once `a` is removed its place is free, and `b`'s next failure ejects it.
        drop(a);
        b.on_failure(now);
        assert!(b.available(now).is_err());
        // A single endpoint is never ejected at 0.5.
        let lone = Arc::new(EjectionCap::new(1, 0.5));
        let (mut c, _) = breaker(&lone);
        for _ in 0..10 {
            c.on_failure(now);
        }
        assert_eq!(c.available(now), Ok(true));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_record_outcomes_on_the_shared_breaker() {
        let cap = Arc::new(EjectionCap::new(2, 0.5));
        let (b, _metrics) = breaker(&cap);
        let endpoint = EndpointBreaker::new(b);
        let other_request = endpoint.clone();
        for _ in 0..3 {
            endpoint.attempt(config()).record(false);
        }
        assert!(matches!(other_request.state(), State::Open { .. }));
        let now = Instant::now();
        assert_eq!(
            other_request.available(now),
            Err(now + Duration::from_secs(10))
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(endpoint.available(Instant::now()), Ok(true));
        let mut probe = endpoint.attempt(config());
        assert_eq!(
            other_request.available(Instant::now()),
            Ok(false),
            "one probe at a time"
        );
        probe.record(true);
        assert_eq!(endpoint.state(), State::Closed);
        // Recorded once: dropping it afterwards changes nothing.
        drop(probe);
        assert_eq!(endpoint.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_render_per_upstream() {
        let registry = crate::metrics::Metrics::new();
        let metrics = registry
            .resilience
            .breaker(crate::direction::Direction::Outbound, "web");
        let cap = Arc::new(EjectionCap::new(2, 0.5));
        let mut b = CircuitBreaker::new(config(), cap, metrics);
        let now = Instant::now();
        for _ in 0..3 {
            b.on_failure(now);
        }
        let text = registry.render().unwrap();
        assert!(
            text.contains(r#"weft_breaker_state_changes_total{direction="outbound",upstream="web",state="open"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_breaker_ejected{direction="outbound",upstream="web"} 1"#),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_counts_as_a_failure() {
        let cap = Arc::new(EjectionCap::new(2, 0.5));
        let (mut b, _metrics) = breaker(&cap);
        let now = Instant::now();
        for _ in 0..3 {
            b.on_failure(now);
        }
        let endpoint = EndpointBreaker::new(b);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(endpoint.available(Instant::now()), Ok(true));
        // The per-try timeout gives up on the probe: its attempt is dropped unrecorded.
        drop(endpoint.attempt(config()));
        assert!(matches!(endpoint.state(), State::Open { .. }));
        assert_eq!(cap.ejected(), 1);
    }
}
