//! Power of two choices: pick two distinct endpoints at random and take the one with the lower
//! load. It tracks the least-loaded endpoint almost as well as a full scan, in constant time, and
//! without the herding a strict "least loaded" rule causes when many clients see the same numbers.

use std::time::Instant;

use rand::Rng;

/// Something the picker can weigh: its current load, scaled by its relative weight.
pub trait Load {
    fn cost(&self, now: Instant) -> f64;
}

/// Costs closer than this factor are a tie, settled by the (random) draw: latency differences
/// that small are noise, and treating them as signal hands all of a light, sequential load to
/// whichever endpoint happened to measure fastest. A request in flight doubles a cost, so load
/// still steers.
pub const TIE_RATIO: f64 = 1.5;

impl<T: Load + ?Sized> Load for &T {
    fn cost(&self, now: Instant) -> f64 {
        (**self).cost(now)
    }
}

/// The index of the chosen item, or None when there is nothing to choose from.
pub fn pick<T: Load>(items: &[T], rng: &mut impl Rng, now: Instant) -> Option<usize> {
    match items.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = rng.random_range(0..n);
            // A second index distinct from the first, uniformly.
            let b = (a + rng.random_range(1..n)) % n;
            let (cost_a, cost_b) = (items[a].cost(now), items[b].cost(now));
            Some(if cost_b * TIE_RATIO < cost_a { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    struct Fixed(f64);

    impl Load for Fixed {
        fn cost(&self, _now: Instant) -> f64 {
            self.0
        }
    }

    fn counts(items: &[Fixed], rounds: usize) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0; items.len()];
        let now = Instant::now();
        for _ in 0..rounds {
            counts[pick(items, &mut rng, now).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn empty_and_single() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(pick::<Fixed>(&[], &mut rng, Instant::now()), None);
        assert_eq!(pick(&[Fixed(5.0)], &mut rng, Instant::now()), Some(0));
    }

    #[test]
    fn equal_loads_spread_evenly() {
        let items = [Fixed(1.0), Fixed(1.0), Fixed(1.0)];
        for count in counts(&items, 30_000) {
            assert!((9_000..11_000).contains(&count), "{count}");
        }
    }

    #[test]
    fn near_equal_costs_are_a_tie() {
        let items = [Fixed(1.0), Fixed(1.3)];
        for count in counts(&items, 20_000) {
            assert!((9_000..11_000).contains(&count), "{count}");
        }
    }

    #[test]
    fn the_most_loaded_endpoint_is_never_picked_among_three() {
        // It loses every comparison, and two distinct picks always include another endpoint.
        let items = [Fixed(1.0), Fixed(9.0), Fixed(2.0)];
        let counts = counts(&items, 3_000);
        assert_eq!(counts[1], 0, "{counts:?}");
        // The lightest wins both pairs it is in: about 2/3 of the time.
        assert!(counts[0] > 1_800, "{counts:?}");
    }
}
