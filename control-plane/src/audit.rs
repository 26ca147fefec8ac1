//! Who changed what, when: one record per admin change, written in the change's own
//! transaction so neither exists without the other.

use llmgw_shared::proto::AuditRecord;
use prost::Message;

use crate::compile::now_ms;
use crate::layout;
use crate::store::{Op, Store, StoreError};

/// The put that records a change. `before`/`after` never contain secrets (callers pass redacted
/// documents).
#[must_use]
pub fn record(actor: &str, action: &str, resource: &str, before: String, after: String) -> Op {
    let time_unix_ms = now_ms();
    let id = crate::compile::new_id();
    // Zero-padded time first: keys sort by time, so a range is chronological.
    let key = format!("{}{time_unix_ms:015}-{id}", layout::AUDIT).into_bytes();
    let rec = AuditRecord {
        time_unix_ms,
        id,
        actor: actor.to_owned(),
        action: action.to_owned(),
        resource: resource.to_owned(),
        before,
        after,
    };
    Op::Put { key, value: rec.encode_to_vec(), lease: 0 }
}

/// Records at or after `since_unix` (seconds), oldest first.
///
/// # Errors
/// The store's.
pub async fn list(store: &dyn Store, since_unix: i64) -> Result<Vec<AuditRecord>, StoreError> {
    let r = store.range(layout::AUDIT.as_bytes()).await?;
    Ok(r.kvs
        .iter()
        .filter_map(|kv| AuditRecord::decode(kv.value.as_slice()).ok())
        .filter(|a| a.time_unix_ms >= since_unix.saturating_mul(1000))
        .collect())
}
