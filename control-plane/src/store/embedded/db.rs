//! The embedded store's tables, and the blocking reads and writes on them (callers run these on
//! a blocking thread).

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};

use crate::store::{
    Compare, CompareOp, CompareTarget, Event, KeyValue, Op, RangeResult, StoreError, Txn, WatchBatch,
};

/// A key's row: (value, create_revision, mod_revision, version, lease).
type KvRow = (&'static [u8], i64, i64, i64, i64);
/// (revision, index in its transaction).
type LogKey = (i64, u32);
/// An event: (is_put, key, value, create_revision, version, lease); its revision is in the key.
type LogRow = (bool, &'static [u8], &'static [u8], i64, i64, i64);

/// key → its row.
const KV: TableDefinition<&[u8], KvRow> = TableDefinition::new("kv");
/// (lease, key) → (): the keys bound to each lease, to delete them without a scan.
const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");
/// `REVISION` and `COMPACT_REVISION`.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// Each committed transaction's events, for watches that start in the past.
const LOG: TableDefinition<LogKey, LogRow> = TableDefinition::new("log");

/// The revision of the last committed write; 1 on an empty store, as in etcd.
const REVISION: &str = "revision";
/// The oldest revision still in `LOG` (0: nothing compacted yet).
const COMPACT_REVISION: &str = "compact_revision";

pub(super) fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Other(format!("embedded store: {}", e.into()))
}

fn meta(table: &impl ReadableTable<&'static str, i64>, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(table.get(name).map_err(db_err)?.map(|v| v.value()))
}

fn key_value(
    key: &[u8],
    (value, create_revision, mod_revision, version, lease): (&[u8], i64, i64, i64, i64),
) -> KeyValue {
    KeyValue { key: key.to_vec(), value: value.to_vec(), create_revision, mod_revision, version, lease }
}

/// Creates the tables of a new database.
pub(super) fn create_tables(db: &Database) -> Result<(), StoreError> {
    let wtx = db.begin_write().map_err(db_err)?;
    wtx.open_table(KV).map_err(db_err)?;
    wtx.open_table(LEASE_KEYS).map_err(db_err)?;
    wtx.open_table(META).map_err(db_err)?;
    wtx.open_table(LOG).map_err(db_err)?;
    wtx.commit().map_err(db_err)
}

pub(super) fn get(db: &Database, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
    let rtx = db.begin_read().map_err(db_err)?;
    let kv = rtx.open_table(KV).map_err(db_err)?;
    Ok(kv.get(key).map_err(db_err)?.map(|v| key_value(key, v.value())))
}

pub(super) fn revision(db: &Database) -> Result<i64, StoreError> {
    let rtx = db.begin_read().map_err(db_err)?;
    meta(&rtx.open_table(META).map_err(db_err)?, REVISION).map(|r| r.unwrap_or(1))
}

/// Every key under `prefix`, read in one snapshot together with its revision.
pub(super) fn range(db: &Database, prefix: &[u8]) -> Result<RangeResult, StoreError> {
    let rtx = db.begin_read().map_err(db_err)?;
    let revision = meta(&rtx.open_table(META).map_err(db_err)?, REVISION)?.unwrap_or(1);
    let kv = rtx.open_table(KV).map_err(db_err)?;
    let mut kvs = Vec::new();
    for entry in kv.range(prefix..).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        kvs.push(key_value(k.value(), v.value()));
    }
    Ok(RangeResult { kvs, revision })
}

/// The logged transactions under `prefix` from revision `from` on, and the revision they were
/// read at (live events up to it are duplicates).
pub(super) fn history(db: &Database, prefix: &[u8], from: i64) -> Result<(Vec<WatchBatch>, i64), StoreError> {
    let rtx = db.begin_read().map_err(db_err)?;
    let meta_table = rtx.open_table(META).map_err(db_err)?;
    let current = meta(&meta_table, REVISION)?.unwrap_or(1);
    let compact_revision = meta(&meta_table, COMPACT_REVISION)?.unwrap_or(0);
    if from > 0 && from < compact_revision {
        return Err(StoreError::Compacted { requested: from, compact_revision });
    }
    let start = if from > 0 { from } else { current + 1 };
    let log = rtx.open_table(LOG).map_err(db_err)?;
    let mut batches: Vec<WatchBatch> = Vec::new();
    for entry in log.range((start, 0)..).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let ((revision, _), (is_put, key, value, create_revision, version, lease)) = (k.value(), v.value());
        if !key.starts_with(prefix) {
            continue;
        }
        let event = if is_put {
            Event::Put(key_value(key, (value, create_revision, revision, version, lease)))
        } else {
            Event::Delete { key: key.to_vec(), mod_revision: revision }
        };
        match batches.last_mut() {
            Some(batch) if batch.revision == revision => batch.events.push(event),
            _ => batches.push(WatchBatch { revision, events: vec![event] }),
        }
    }
    Ok((batches, current))
}

/// Drops the log before `revision`, as etcd's compact does.
pub(super) fn compact(db: &Database, revision: i64) -> Result<(), StoreError> {
    let wtx = db.begin_write().map_err(db_err)?;
    {
        let mut meta_table = wtx.open_table(META).map_err(db_err)?;
        let current = meta(&meta_table, REVISION)?.unwrap_or(1);
        let compacted = meta(&meta_table, COMPACT_REVISION)?.unwrap_or(0);
        if revision > current {
            return Err(StoreError::Other(format!(
                "cannot compact to {revision}: the revision is {current}"
            )));
        }
        if revision <= compacted {
            return Err(StoreError::Compacted { requested: revision, compact_revision: compacted });
        }
        trim_log(&mut wtx.open_table(LOG).map_err(db_err)?, &mut meta_table, revision)?;
    }
    wtx.commit().map_err(db_err)
}

fn trim_log(
    log: &mut Table<LogKey, LogRow>,
    meta_table: &mut Table<&str, i64>,
    revision: i64,
) -> Result<(), StoreError> {
    log.retain_in(..(revision, 0), |_, _| false).map_err(db_err)?;
    meta_table.insert(COMPACT_REVISION, revision).map_err(db_err)?;
    Ok(())
}

/// A write transaction in progress: the tables it changes and the events it produced.
pub(super) struct Writer<'t> {
    kv: Table<'t, &'static [u8], KvRow>,
    lease_keys: Table<'t, (i64, &'static [u8]), ()>,
    /// The revision this transaction commits as, if it writes anything.
    revision: i64,
    events: Vec<Event>,
}

impl Writer<'_> {
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.kv.get(key).map_err(db_err)?.map(|v| key_value(key, v.value())))
    }

    pub(super) fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<(), StoreError> {
        let old = self.get(key)?;
        let (create_revision, version) = match &old {
            Some(old) => (old.create_revision, old.version + 1),
            None => (self.revision, 1),
        };
        if let Some(old) = old.filter(|old| old.lease != 0 && old.lease != lease) {
            self.lease_keys.remove((old.lease, key)).map_err(db_err)?;
        }
        if lease != 0 {
            self.lease_keys.insert((lease, key), ()).map_err(db_err)?;
        }
        let row = (value, create_revision, self.revision, version, lease);
        self.kv.insert(key, row).map_err(db_err)?;
        self.events.push(Event::Put(key_value(key, row)));
        Ok(())
    }

    pub(super) fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let lease = match self.kv.remove(key).map_err(db_err)? {
            Some(old) => old.value().4,
            None => return Ok(()),
        };
        if lease != 0 {
            self.lease_keys.remove((lease, key)).map_err(db_err)?;
        }
        self.events.push(Event::Delete { key: key.to_vec(), mod_revision: self.revision });
        Ok(())
    }

    pub(super) fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), StoreError> {
        let mut keys = Vec::new();
        for entry in self.kv.range(prefix..).map_err(db_err)? {
            let key = entry.map_err(db_err)?.0.value().to_vec();
            if !key.starts_with(prefix) {
                break;
            }
            keys.push(key);
        }
        keys.iter().try_for_each(|key| self.delete(key))
    }

    /// The keys bound to `lease`.
    pub(super) fn lease_keys(&self, lease: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = Vec::new();
        for entry in self.lease_keys.range((lease, &[][..])..).map_err(db_err)? {
            let (guard, _) = entry.map_err(db_err)?;
            let (bound, key) = guard.value();
            if bound != lease {
                break;
            }
            keys.push(key.to_vec());
        }
        Ok(keys)
    }

    /// Every lease some key is bound to.
    pub(super) fn all_leases(&self) -> Result<Vec<i64>, StoreError> {
        let mut leases: Vec<i64> = Vec::new();
        for entry in self.lease_keys.iter().map_err(db_err)? {
            let lease = entry.map_err(db_err)?.0.value().0;
            if leases.last() != Some(&lease) {
                leases.push(lease);
            }
        }
        Ok(leases)
    }
}

/// Runs `f` in one write transaction. If it changed anything, the transaction commits as the
/// next revision, with its events logged (history beyond `history` revisions is dropped);
/// otherwise it is rolled back. Returns the store's revision afterwards, the committed events,
/// and `f`'s result. An error from `f` rolls everything back.
pub(super) fn write<T>(
    db: &Database,
    history: i64,
    f: impl FnOnce(&mut Writer<'_>) -> Result<T, StoreError>,
) -> Result<(i64, Option<WatchBatch>, T), StoreError> {
    let wtx = db.begin_write().map_err(db_err)?;
    let (revision, batch, out) = {
        let mut meta_table = wtx.open_table(META).map_err(db_err)?;
        let current = meta(&meta_table, REVISION)?.unwrap_or(1);
        let mut writer = Writer {
            kv: wtx.open_table(KV).map_err(db_err)?,
            lease_keys: wtx.open_table(LEASE_KEYS).map_err(db_err)?,
            revision: current + 1,
            events: Vec::new(),
        };
        let out = f(&mut writer)?;
        if writer.events.is_empty() {
            (current, None, out)
        } else {
            let revision = writer.revision;
            let mut log = wtx.open_table(LOG).map_err(db_err)?;
            for (i, event) in (0u32..).zip(&writer.events) {
                let row = match event {
                    Event::Put(kv) => (
                        true,
                        kv.key.as_slice(),
                        kv.value.as_slice(),
                        kv.create_revision,
                        kv.version,
                        kv.lease,
                    ),
                    Event::Delete { key, .. } => (false, key.as_slice(), &[][..], 0, 0, 0),
                };
                log.insert((revision, i), row).map_err(db_err)?;
            }
            meta_table.insert(REVISION, revision).map_err(db_err)?;
            let keep_from = revision - history + 1;
            if keep_from > meta(&meta_table, COMPACT_REVISION)?.unwrap_or(0) {
                trim_log(&mut log, &mut meta_table, keep_from)?;
            }
            (revision, Some(WatchBatch { revision, events: std::mem::take(&mut writer.events) }), out)
        }
    };
    if batch.is_some() {
        wtx.commit().map_err(db_err)?;
    } else {
        wtx.abort().map_err(db_err)?;
    }
    Ok((revision, batch, out))
}

/// Applies a transaction: the compares, then one branch. `lease_alive` vets the leases of puts.
pub(super) fn apply(
    writer: &mut Writer<'_>,
    txn: &Txn,
    lease_alive: impl Fn(i64) -> bool,
) -> Result<(bool, Vec<Option<KeyValue>>), StoreError> {
    let mut succeeded = true;
    for c in &txn.compares {
        succeeded &= compare(writer.get(&c.key)?.as_ref(), c);
    }
    let ops = if succeeded { &txn.success } else { &txn.failure };
    if let Some(lease) = ops.iter().find_map(|op| match op {
        Op::Put { lease, .. } if *lease != 0 && !lease_alive(*lease) => Some(*lease),
        _ => None,
    }) {
        return Err(StoreError::LeaseNotFound(lease));
    }
    let mut gets = Vec::new();
    for op in ops {
        match op {
            Op::Put { key, value, lease } => writer.put(key, value, *lease)?,
            Op::Delete { key } => writer.delete(key)?,
            Op::DeletePrefix { prefix } => writer.delete_prefix(prefix)?,
            Op::Get { key } => gets.push(writer.get(key)?),
        }
    }
    Ok((succeeded, gets))
}

/// etcd's compare: an absent key has revisions and version 0, and fails every value compare.
fn compare(current: Option<&KeyValue>, c: &Compare) -> bool {
    let ordering = match (&c.target, current) {
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
        (CompareTarget::CreateRevision(r), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
        (CompareTarget::ModRevision(r), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
        (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
    };
    match c.op {
        CompareOp::Equal => ordering.is_eq(),
        CompareOp::NotEqual => ordering.is_ne(),
        CompareOp::Greater => ordering.is_gt(),
        CompareOp::Less => ordering.is_lt(),
    }
}
