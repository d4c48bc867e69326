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

use crate::discovery::{Endpoint, Service};

thread_local! {
    // One generator per worker thread: picking never contends on a shared lock.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// The endpoint of `service` the next request or connection goes to (None: it has none).
pub fn pick_endpoint(service: &Service) -> Option<&Endpoint> {
    let now = Instant::now();
    let index = RNG.with(|rng| p2c::pick(&service.endpoints, &mut *rng.borrow_mut(), now))?;
    service.endpoints.get(index)
}

/// The index of the endpoint the next request goes to among `endpoints` (a service's
/// endpoints filtered by their breakers); None when there are none.
pub fn pick_among(endpoints: &[&Endpoint]) -> Option<usize> {
    let now = Instant::now();
    RNG.with(|rng| p2c::pick(endpoints, &mut *rng.borrow_mut(), now))
}

/// Which backend of a split the next request goes to (an index into `weights`).
pub fn pick_split(weights: impl Iterator<Item = u32> + Clone) -> Option<usize> {
    RNG.with(|rng| split::pick(weights, &mut *rng.borrow_mut()))
}

impl p2c::Load for Endpoint {
    fn cost(&self, now: Instant) -> f64 {
        // A weight-2 endpoint looks half as loaded, so it is chosen about twice as often.
        self.load.cost(now) / f64::from(self.weight.max(1))
    }
}
