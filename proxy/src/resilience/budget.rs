//! The retry budget: retries may add at most `ratio` of the requests seen over a sliding window,
//! plus a minimum rate so that a quiet upstream can still be retried. When every endpoint fails,
//! retries stay bounded instead of multiplying the load (a retry storm).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The window is split into buckets so that old traffic leaves it a bucket at a time.
const BUCKETS: usize = 10;
const BUCKET_LEN: Duration = Duration::from_secs(1);
/// The window the ratio applies over (10 s, as in Linkerd).
pub const WINDOW: Duration = Duration::from_secs(BUCKETS as u64);

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    requests: u64,
    retries: u64,
}

/// The counts of the last `WINDOW`; pure, with time passed in.
#[derive(Debug)]
struct Window {
    buckets: [Bucket; BUCKETS],
    /// Start of the bucket at `head`.
    head_start: Instant,
    head: usize,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            buckets: [Bucket::default(); BUCKETS],
            head_start: now,
            head: 0,
        }
    }

    /// Moves the head to the bucket `now` falls in, clearing the buckets that left the window.
    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.head_start);
        let steps = (elapsed.as_millis() / BUCKET_LEN.as_millis()) as usize;
        if steps == 0 {
            return;
        }
        for _ in 0..steps.min(BUCKETS) {
            self.head = (self.head + 1) % BUCKETS;
            self.buckets[self.head] = Bucket::default();
        }
        self.head_start += BUCKET_LEN * steps as u32;
    }

    fn totals(&self) -> Bucket {
        self.buckets.iter().fold(Bucket::default(), |a, b| Bucket {
            requests: a.requests + b.requests,
            retries: a.retries + b.retries,
        })
    }
}

#[derive(Debug)]
pub struct RetryBudget {
    window: Mutex<Window>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryBudget {
    pub fn new() -> Self {
        RetryBudget {
            window: Mutex::new(Window::new(Instant::now())),
        }
    }

    /// Counts an original request (not a retry).
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Takes one retry from the budget if there is room; `false` means do not retry.
    pub fn try_withdraw(&self, ratio: f64, min_per_second: u32) -> bool {
        self.try_withdraw_at(Instant::now(), ratio, min_per_second)
    }

    fn deposit_at(&self, now: Instant) {
        let mut window = self.lock();
        window.advance(now);
        let head = window.head;
        window.buckets[head].requests += 1;
    }

    fn try_withdraw_at(&self, now: Instant, ratio: f64, min_per_second: u32) -> bool {
        let mut window = self.lock();
        window.advance(now);
        let totals = window.totals();
        let allowed =
            ratio * totals.requests as f64 + f64::from(min_per_second) * WINDOW.as_secs_f64();
        if (totals.retries + 1) as f64 > allowed {
            return false;
        }
        let head = window.head;
        window.buckets[head].retries += 1;
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // Every update is a few additions; a panic elsewhere cannot leave it half-done.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn withdraw_all(budget: &RetryBudget, now: Instant, ratio: f64, min: u32) -> u32 {
        let mut n = 0;
        while budget.try_withdraw_at(now, ratio, min) {
            n += 1;
            assert!(n < 100_000, "budget never ran out");
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_requests_over_the_window() {
        let budget = RetryBudget::new();
        let now = Instant::now();
        for _ in 0..100 {
            budget.deposit_at(now);
        }
        assert_eq!(withdraw_all(&budget, now, 0.2, 0), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn minimum_rate_applies_without_traffic() {
        let budget = RetryBudget::new();
        // 10 per second over a 10 s window.
        assert_eq!(withdraw_all(&budget, Instant::now(), 0.2, 10), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn old_requests_leave_the_window() {
        let budget = RetryBudget::new();
        let start = Instant::now();
        for _ in 0..100 {
            budget.deposit_at(start);
        }
        // Still inside the window after 9.5 s...
        assert!(budget.try_withdraw_at(start + Duration::from_millis(9_500), 0.2, 0));
        // ...gone (with the retry just taken) once the window has moved past them.
        let later = start + WINDOW + BUCKET_LEN;
        assert_eq!(withdraw_all(&budget, later, 0.2, 0), 0);
        // The retry taken at 9.5 s is still in the window: 10 new requests allow 2, 1 is left.
        for _ in 0..10 {
            budget.deposit_at(later);
        }
        assert_eq!(withdraw_all(&budget, later, 0.2, 0), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_count_against_the_budget_until_they_age_out() {
        let budget = RetryBudget::new();
        let start = Instant::now();
        for _ in 0..10 {
            budget.deposit_at(start);
        }
        assert_eq!(withdraw_all(&budget, start, 0.5, 0), 5);
        // New requests in a later bucket add room; the five retries still count.
        let later = start + Duration::from_secs(3);
        for _ in 0..10 {
            budget.deposit_at(later);
        }
        assert_eq!(withdraw_all(&budget, later, 0.5, 0), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn uses_the_tokio_clock() {
        let budget = RetryBudget::new();
        budget.deposit();
        assert!(!budget.try_withdraw(0.0, 0));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(budget.try_withdraw(0.0, 1));
    }
}
