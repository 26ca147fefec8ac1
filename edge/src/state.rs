//! What every request handler shares: the current config (one atomic load per request), the
//! usage ledger and the server's limits.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::config::EdgeConfig;
use crate::quota::Quota;
use crate::usage::UsageLedger;

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
}

pub struct Edge {
    config: ArcSwapOption<EdgeConfig>,
    pub usage: UsageLedger,
    pub quota: Quota,
    pub limits: ServerLimits,
}

impl Edge {
    #[must_use]
    pub fn new(limits: ServerLimits) -> Self {
        Self::with_quota(limits, Quota::new(false, Duration::from_secs(1)))
    }

    #[must_use]
    pub fn with_quota(limits: ServerLimits, quota: Quota) -> Self {
        Self { config: ArcSwapOption::empty(), usage: UsageLedger::default(), quota, limits }
    }

    /// The config for one request: taken once, used for the whole request.
    #[must_use]
    pub fn config(&self) -> Option<Arc<EdgeConfig>> {
        self.config.load_full()
    }

    /// Publishes a new config; requests already running keep the one they loaded.
    pub fn publish(&self, config: EdgeConfig) {
        metrics::gauge!(crate::metrics::CONFIG_REVISION).set(config.revision as f64);
        self.config.store(Some(Arc::new(config)));
    }

    #[must_use]
    pub fn ready(&self) -> bool {
        self.config.load().is_some()
    }
}
