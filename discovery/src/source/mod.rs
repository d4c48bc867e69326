//! Where cluster objects come from. Every source delivers the whole set of objects each time
//! something changes; the `Translator` turns each set into an index.

mod file;
mod kubernetes;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

pub use file::{FileSource, FileSourceError};
pub use kubernetes::{KubernetesSource, KubernetesSourceError};

use crate::metrics::Metrics;
use crate::objects::ClusterObjects;

/// A producer of cluster objects. `run` returns only when the source cannot go on.
pub trait Source {
    type Error: std::error::Error + Send + Sync + 'static;

    fn run(self, sink: ObjectSink) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Where a source delivers: the latest complete set of objects (older unread sets are dropped,
/// which is what a translator wants), and error counts.
#[derive(Clone)]
pub struct ObjectSink {
    tx: watch::Sender<Option<Arc<ClusterObjects>>>,
    metrics: Arc<Metrics>,
}

impl ObjectSink {
    pub fn new(
        metrics: Arc<Metrics>,
    ) -> (ObjectSink, watch::Receiver<Option<Arc<ClusterObjects>>>) {
        let (tx, rx) = watch::channel(None);
        (ObjectSink { tx, metrics }, rx)
    }

    /// Delivers `objects` unless they equal what was delivered last.
    pub fn publish(&self, objects: ClusterObjects) {
        self.tx.send_if_modified(|current| {
            if current.as_deref() == Some(&objects) {
                return false;
            }
            *current = Some(Arc::new(objects));
            true
        });
    }

    pub fn error(&self) {
        self.metrics.source_error();
    }
}
