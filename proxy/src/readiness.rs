//! What `/ready` waits for: named conditions set by whoever meets them (the listeners, the first
//! workload certificate). Below everyone who registers one, so the admin server only reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What `/ready` waits for: named conditions, each met once and for good (listeners bound, first
/// workload certificate). Register them before serving traffic.
#[derive(Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<Vec<ReadyCondition>>>,
}

/// One condition of [`Readiness`]; whoever holds it sets it when it is met.
#[derive(Clone, Debug)]
pub struct ReadyCondition {
    name: &'static str,
    met: Arc<AtomicBool>,
}

impl ReadyCondition {
    pub fn set(&self) {
        self.met.store(true, Ordering::Release);
    }

    fn is_met(&self) -> bool {
        self.met.load(Ordering::Acquire)
    }
}

impl Readiness {
    /// Adds an unmet condition; `name` says what is awaited ("workload certificate").
    pub fn condition(&self, name: &'static str) -> ReadyCondition {
        let condition = ReadyCondition {
            name,
            met: Arc::new(AtomicBool::new(false)),
        };
        self.lock().push(condition.clone());
        condition
    }

    pub fn is_ready(&self) -> bool {
        self.lock().iter().all(ReadyCondition::is_met)
    }

    /// The names of the conditions not met yet.
    pub fn unmet(&self) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|c| !c.is_met())
            .map(|c| c.name)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ReadyCondition>> {
        // Each update is a single push: a poisoned lock still holds a consistent list.
        self.conditions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
