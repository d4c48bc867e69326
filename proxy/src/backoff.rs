//! Reconnect delays: exponential from a base to a cap, with full jitter, so that many proxies
//! losing the discovery service at once do not come back in lockstep.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt: uniform in [ceiling/2, ceiling], where the ceiling
    /// doubles per failure up to the cap.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_ms = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rng.random_range(ceiling_ms / 2..=ceiling_ms))
    }

    /// A working connection: the next failure starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut rng = SmallRng::seed_from_u64(9);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let ceilings = [100, 200, 400, 800, 1600, 2000, 2000];
        for ceiling in ceilings {
            let delay = backoff.next_delay(&mut rng).as_millis() as u64;
            assert!(
                (ceiling / 2..=ceiling).contains(&delay),
                "{delay} vs {ceiling}"
            );
        }
        for _ in 0..100 {
            assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(2));
        }
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_millis(100));
    }
}
