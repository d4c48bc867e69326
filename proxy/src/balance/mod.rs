//! Load balancing over a logical service's endpoints: power of two choices ([`p2c`]) over
//! peak-EWMA load ([`ewma`]), and weighted traffic splits across backend services ([`split`]).
//! Per request for HTTP, per connection for opaque TCP.

pub mod ewma;
pub mod p2c;
pub mod split;

use std::cell::RefCell;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;

thread_local! {
    // One generator per worker thread: picking never contends on a shared lock.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// The index of the endpoint the next request or connection goes to among `endpoints` (a
/// service's endpoints, or those its breakers allow); None when there are none.
pub fn pick<T: p2c::Load>(endpoints: &[T]) -> Option<usize> {
    let now = Instant::now();
    RNG.with(|rng| p2c::pick(endpoints, &mut *rng.borrow_mut(), now))
}

/// Which backend of a split the next request goes to (an index into `weights`).
pub fn pick_split(weights: impl Iterator<Item = u32> + Clone) -> Option<usize> {
    RNG.with(|rng| split::pick(weights, &mut *rng.borrow_mut()))
}
