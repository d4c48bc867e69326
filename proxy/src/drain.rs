//! Graceful shutdown: one signal that tells listeners to stop accepting and connections to finish,
//! and a count of the connections still holding a [`Watch`], which the shutdown waits on.

use std::time::Duration;

use tokio::sync::watch;

/// The owner's side: starts the drain and waits for connections to finish.
#[derive(Clone, Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

/// A connection's (or listener's) side: it learns of the drain here, and holding it keeps the
/// shutdown waiting.
#[derive(Debug)]
pub struct Watch {
    rx: watch::Receiver<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(false);
        Drain { tx }
    }

    pub fn watch(&self) -> Watch {
        Watch {
            rx: self.tx.subscribe(),
        }
    }

    /// Starts draining; idempotent.
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the drain has started (by a signal or `/shutdown`).
    pub async fn started(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|draining| *draining).await;
    }

    /// Waits until every [`Watch`] is dropped or `grace` passes; on timeout returns how many were
    /// still held.
    pub async fn finish(&self, grace: Duration) -> Result<(), usize> {
        match tokio::time::timeout(grace, self.tx.closed()).await {
            Ok(()) => Ok(()),
            Err(_elapsed) => Err(self.tx.receiver_count()),
        }
    }
}

impl Watch {
    /// Resolves once the drain has started.
    pub async fn signaled(&mut self) {
        // An error means the Drain is gone: the process is ending, which is a drain too.
        let _ = self.rx.wait_for(|draining| *draining).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_the_signal() {
        let drain = Drain::new();
        let mut watch = drain.watch();
        assert!(!watch.is_draining());
        drain.start();
        tokio::time::timeout(Duration::from_secs(5), watch.signaled())
            .await
            .unwrap();
        assert!(watch.is_draining());
        assert!(drain.is_draining());
    }

    #[tokio::test]
    async fn finish_waits_for_watches_to_drop() {
        let drain = Drain::new();
        let watch = drain.watch();
        drain.start();
        let dropper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(watch);
        });
        assert_eq!(drain.finish(Duration::from_secs(5)).await, Ok(()));
        dropper.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn finish_reports_what_is_left_at_the_deadline() {
        let drain = Drain::new();
        let _a = drain.watch();
        let _b = drain.watch();
        drain.start();
        assert_eq!(drain.finish(Duration::from_secs(30)).await, Err(2));
    }

    #[tokio::test]
    async fn started_resolves_after_start() {
        let drain = Drain::new();
        let waiter = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.started().await })
        };
        drain.start();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
