//! A `Store` that times every call, for the control plane's store-latency histogram.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{KeyValue, RangeResult, Store, StoreError, Txn, TxnResult, WatchStream};

pub const STORE_LATENCY: &str = "llmgw_cp_store_call_duration_seconds";

pub struct Metered(pub Arc<dyn Store>);

fn observe<T>(op: &'static str, start: Instant, r: &Result<T, StoreError>) {
    let outcome = if r.is_ok() { "ok" } else { "error" };
    metrics::histogram!(STORE_LATENCY, "op" => op, "outcome" => outcome)
        .record(start.elapsed().as_secs_f64());
}

macro_rules! timed {
    ($op:literal, $call:expr) => {{
        let start = Instant::now();
        let r = $call.await;
        observe($op, start, &r);
        r
    }};
}

#[async_trait::async_trait]
impl Store for Metered {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        timed!("get", self.0.get(key))
    }
    async fn range(&self, prefix: &[u8]) -> Result<RangeResult, StoreError> {
        timed!("range", self.0.range(prefix))
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        timed!("txn", self.0.txn(txn))
    }
    async fn watch(&self, prefix: &[u8], from_revision: i64) -> Result<WatchStream, StoreError> {
        timed!("watch", self.0.watch(prefix, from_revision))
    }
    async fn revision(&self) -> Result<i64, StoreError> {
        timed!("revision", self.0.revision())
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        timed!("grant_lease", self.0.grant_lease(ttl))
    }
    async fn keep_alive(&self, lease: i64) -> Result<(), StoreError> {
        timed!("keep_alive", self.0.keep_alive(lease))
    }
    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        timed!("revoke_lease", self.0.revoke_lease(lease))
    }
}
