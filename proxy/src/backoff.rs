//! Exponential backoff with full jitter, the one used everywhere a proxy waits to try again
//! (discovery reconnects, certificate renewals, request retries): attempt `n` waits a uniform
//! draw from `[0, min(max, base x 2^(n-1))]`, so many proxies hitting the same failure spread
//! out instead of returning in lockstep.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExponentialBackoff {
    base: Duration,
    max: Duration,
}

impl ExponentialBackoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        ExponentialBackoff { base, max }
    }

    /// The longest wait before attempt `attempt` (1-based; 0 counts as 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base
            .saturating_mul(1u32 << doublings)
            .min(self.max.max(self.base))
    }

    /// The wait before attempt `attempt`: full jitter under its ceiling.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        full_jitter(self.ceiling(attempt), rng.random::<f64>())
    }
}

/// `ceiling` scaled by `fraction` (a uniform draw from [0, 1)): the jitter, as a pure function.
pub fn full_jitter(ceiling: Duration, fraction: f64) -> Duration {
    ceiling.mul_f64(fraction.clamp(0.0, 1.0))
}

/// A generator for jitter: from the OS, or, should it have none, seeded from the clock (jitter
/// from the clock is still jitter).
pub fn jitter_rng() -> SmallRng {
    SmallRng::try_from_os_rng().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        SmallRng::seed_from_u64(u64::from(nanos) ^ u64::from(std::process::id()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_from_the_base_up_to_the_cap() {
        let backoff = ExponentialBackoff::new(100 * MS, 2000 * MS);
        let ceilings: Vec<u128> = (0..=8).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(backoff.ceiling(u32::MAX), 2000 * MS);
        // A cap below the base is no cap at all.
        assert_eq!(ExponentialBackoff::new(MS * 50, MS).ceiling(3), 50 * MS);
    }

    #[test]
    fn full_jitter_covers_zero_to_the_ceiling() {
        assert_eq!(full_jitter(1000 * MS, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(1000 * MS, 0.25), 250 * MS);
        assert_eq!(full_jitter(1000 * MS, 1.0), 1000 * MS);
        assert_eq!(full_jitter(1000 * MS, 7.0), 1000 * MS);
        let backoff = ExponentialBackoff::new(100 * MS, 2000 * MS);
        let mut rng = SmallRng::seed_from_u64(9);
        let draws: Vec<Duration> = (0..200).map(|_| backoff.delay(4, &mut rng)).collect();
        assert!(draws.iter().all(|d| *d <= 800 * MS));
        // Full jitter, not [c/2, c]: draws land in the lower half too.
        assert!(draws.iter().any(|d| *d < 400 * MS), "{draws:?}");
        assert!(draws.iter().any(|d| *d > 400 * MS), "{draws:?}");
    }
}
