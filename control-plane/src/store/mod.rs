//! The control plane's state store: one trait, two backends (etcd, and an embedded database for
//! one machine), with etcd's semantics — a global revision bumped by every committed
//! transaction, compare-and-swap transactions, watches from a revision, and leases — so the rest
//! of the control plane has one code path.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod etcd;
pub mod metered;

/// A stored key and its value, with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the transaction that last wrote it.
    pub mod_revision: i64,
    /// Writes since creation, starting at 1.
    pub version: i64,
    /// 0 = no lease.
    pub lease: i64,
}

/// What a compare looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// 0 when the key does not exist: `CreateRevision(Equal, 0)` is "create if absent".
    CreateRevision(i64),
    ModRevision(i64),
    Version(i64),
    Value(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Every key starting with the prefix.
    DeletePrefix {
        prefix: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
}

/// All compares true → `success` ops, else `failure` ops; atomically, as one revision when any
/// op writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store's revision after the transaction (unchanged if it wrote nothing).
    pub revision: i64,
    /// The results of `Get` ops, in order (`None` for an absent key).
    pub gets: Vec<Option<KeyValue>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// The revision the range was read at.
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    /// `mod_revision` is the deleting transaction's revision.
    Delete {
        key: Vec<u8>,
        mod_revision: i64,
    },
}

/// The events of one committed transaction (etcd may split a large one across batches; each
/// batch carries the revision of its last event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<Event>,
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested start revision was compacted away: re-read with `range` and watch from
    /// the revision after it.
    #[error("revision {requested} was compacted (oldest kept: {compact_revision})")]
    Compacted { requested: i64, compact_revision: i64 },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("lease {0} not found or expired")]
    LeaseNotFound(i64),
    #[error("transaction too large: {0} operations (limit {1})")]
    TooManyOps(usize, usize),
    #[error("store error: {0}")]
    Other(String),
}

/// etcd's default `--max-txn-ops`: callers chunk bigger writes. Like etcd, the limit applies to
/// each of a transaction's lists (compares, success ops, failure ops) separately.
pub const MAX_TXN_OPS: usize = 128;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError>;
    /// Every key starting with `prefix`, sorted by key, read at one revision.
    async fn range(&self, prefix: &[u8]) -> Result<RangeResult, StoreError>;
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;
    /// Changes under `prefix` from `from_revision` (inclusive) on, in revision order, then live;
    /// `from_revision <= 0` means live changes only. The stream ends with an error if the store
    /// goes away; callers re-watch. A compacted `from_revision` is reported as
    /// [`StoreError::Compacted`] either by `watch` itself or as the stream's first item (etcd
    /// learns it asynchronously, and can also cancel a watcher that fell behind compaction).
    async fn watch(&self, prefix: &[u8], from_revision: i64) -> Result<WatchStream, StoreError>;
    /// The store's current revision.
    async fn revision(&self) -> Result<i64, StoreError>;
    /// A lease that expires unless kept alive; keys put with it are deleted when it expires.
    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError>;
    async fn keep_alive(&self, lease: i64) -> Result<(), StoreError>;
    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError>;
}

/// Rejects what etcd rejects before running a transaction, so both backends agree: more than
/// [`MAX_TXN_OPS`] entries in a list, an empty key, or a key written twice in one branch (two
/// puts, or a put inside a deleted key or prefix; etcd's "duplicate key given in txn request").
///
/// # Errors
/// [`StoreError::TooManyOps`] or [`StoreError::Other`].
pub(crate) fn validate_txn(txn: &Txn) -> Result<(), StoreError> {
    for len in [txn.compares.len(), txn.success.len(), txn.failure.len()] {
        if len > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps(len, MAX_TXN_OPS));
        }
    }
    if txn.compares.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::Other("empty key in transaction".into()));
    }
    validate_branch(&txn.success)?;
    validate_branch(&txn.failure)
}

fn validate_branch(ops: &[Op]) -> Result<(), StoreError> {
    let mut puts = std::collections::BTreeSet::new();
    for op in ops {
        match op {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } if key.is_empty() => {
                return Err(StoreError::Other("empty key in transaction".into()));
            }
            Op::Put { key, .. } if !puts.insert(key.as_slice()) => return Err(duplicate_key(key)),
            _ => {}
        }
    }
    for op in ops {
        let clash = match op {
            Op::Delete { key } => puts.contains(key.as_slice()).then_some(key),
            Op::DeletePrefix { prefix } => puts.iter().any(|k| k.starts_with(prefix)).then_some(prefix),
            Op::Put { .. } | Op::Get { .. } => None,
        };
        if let Some(key) = clash {
            return Err(duplicate_key(key));
        }
    }
    Ok(())
}

fn duplicate_key(key: &[u8]) -> StoreError {
    StoreError::Other(format!(
        "key {:?} written twice in one transaction branch",
        String::from_utf8_lossy(key)
    ))
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` for a prefix), or
/// `None` when there is none (an empty or all-0xff prefix: the range is open-ended).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b < 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

impl Event {
    /// The key the event is about.
    pub fn key(&self) -> &[u8] {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }
}
