//! Turns each set of objects a source delivers into a fresh index for the watchers, and reports
//! what it had to skip — once per problem, not on every rebuild.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::index::{Index, IndexConfig};
use crate::metrics::Metrics;
use crate::objects::ClusterObjects;
use crate::problem::Problem;

pub struct Translator {
    config: IndexConfig,
    metrics: Arc<Metrics>,
}

impl Translator {
    pub fn new(config: IndexConfig, metrics: Arc<Metrics>) -> Self {
        Translator { config, metrics }
    }

    /// Runs until the source's channel closes.
    pub async fn run(
        self,
        mut objects: watch::Receiver<Option<Arc<ClusterObjects>>>,
        index: watch::Sender<Option<Arc<Index>>>,
    ) {
        let mut reported: HashSet<Problem> = HashSet::new();
        loop {
            let current = objects.borrow_and_update().clone();
            if let Some(current) = current {
                let (built, problems) = Index::build(&current, &self.config);
                let problems: HashSet<Problem> = problems.into_iter().collect();
                for problem in problems.difference(&reported) {
                    warn!("skipped: {problem}");
                }
                for fixed in reported.difference(&problems) {
                    info!(
                        "no longer skipped: {} {}/{}",
                        fixed.kind, fixed.namespace, fixed.name
                    );
                }
                self.metrics
                    .indexed(current.counts(), built.service_ports(), problems.len());
                info!(
                    service_ports = built.service_ports(),
                    services = current.services.len(),
                    endpoint_slices = current.slices.len(),
                    pods = current.pods.len(),
                    skipped = problems.len(),
                    "index rebuilt"
                );
                reported = problems;
                index.send_replace(Some(Arc::new(built)));
            }
            if objects.changed().await.is_err() {
                return;
            }
        }
    }
}
