//! Traffic split: a service's requests shared among backend services by weight (a canary sending
//! 10% to v2, say), decided per request.

use rand::Rng;

/// The index of the backend a request goes to, chosen with probability weight / total. Backends
/// with weight 0 get nothing; None when every weight is 0 or there are none.
pub fn pick(weights: impl Iterator<Item = u32> + Clone, rng: &mut impl Rng) -> Option<usize> {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 {
        return None;
    }
    let mut point = rng.random_range(0..total);
    for (index, weight) in weights.enumerate() {
        let weight = u64::from(weight);
        if point < weight {
            return Some(index);
        }
        point -= weight;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn shares_follow_the_weights() {
        let mut rng = SmallRng::seed_from_u64(3);
        let weights = [90u32, 10, 0];
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[pick(weights.iter().copied(), &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!((17_600..18_400).contains(&counts[0]), "{counts:?}");
        assert!((1_600..2_400).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn no_weight_no_backend() {
        let mut rng = SmallRng::seed_from_u64(3);
        assert_eq!(pick([0u32, 0].into_iter(), &mut rng), None);
        assert_eq!(pick(std::iter::empty(), &mut rng), None);
    }
}
