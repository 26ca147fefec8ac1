//! Embedded backend: the [`Store`] on a local redb file, for one control plane without etcd
//! (`llmgw dev`, small installs). Same semantics as etcd: the revision starts at 1 and each
//! transaction that writes commits as the next one; a transaction's events are logged so a watch
//! can start up to `history` revisions in the past.
//!
//! A commit is durable when `txn` returns (redb's default durability syncs every commit to disk),
//! so it survives a kill -9. Leases are kept in memory: see [`lease`] for what that means across
//! restarts.

mod db;
mod lease;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::{StreamExt, stream};
use redb::Database;
use tokio::sync::{Notify, broadcast};

use super::{
    KeyValue, RangeResult, Store, StoreError, Txn, TxnResult, WatchBatch, WatchStream, validate_txn,
};
use lease::Leases;

/// Revisions of history kept for watches by default: a watcher more than this far behind must
/// re-read with `range` (it gets [`StoreError::Compacted`]).
pub const DEFAULT_HISTORY: i64 = 10_000;
/// Committed transactions a live watcher may lag behind by default.
pub const DEFAULT_WATCH_BUFFER: usize = 4096;

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Revisions of history kept for watches (at least 1).
    pub history: i64,
    /// Committed transactions a live watcher may lag behind before its stream ends with an
    /// error (it then watches again from its last revision, replaying from the history).
    pub watch_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self { history: DEFAULT_HISTORY, watch_buffer: DEFAULT_WATCH_BUFFER }
    }
}

/// A [`Store`] on a local file. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    history: i64,
    /// Serialises commit-then-publish, so live events go out in revision order.
    writer: Mutex<()>,
    /// Every committed transaction's events, to live watchers.
    live: broadcast::Sender<Arc<WatchBatch>>,
    leases: Leases,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the lease expiry task notice that the store is gone.
        self.leases.wake.notify_one();
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file `path`, keeping [`DEFAULT_HISTORY`] revisions.
    ///
    /// # Errors
    /// [`StoreError::Other`] if the file (or its directory) cannot be created or opened, also
    /// when another process has it open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &EmbeddedOptions::default())
    }

    /// Opens (or creates) the database file `path`. Keys bound to leases are deleted, in one
    /// transaction: leases live in memory and died with the previous process.
    ///
    /// # Errors
    /// As [`EmbeddedStore::open`].
    pub fn open_with(path: &Path, opts: &EmbeddedOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Other(format!("cannot open {}: {e}", path.display())))?;
        db::create_tables(&db)?;
        let history = opts.history.max(1);
        db::write(&db, history, |w| {
            for lease in w.all_leases()? {
                w.lease_keys(lease)?.iter().try_for_each(|key| w.delete(key))?;
            }
            Ok(())
        })?;
        let (live, _) = broadcast::channel(opts.watch_buffer.max(1));
        let inner = Inner { db, history, writer: Mutex::new(()), live, leases: Leases::new() };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Discards the history before `revision`, as etcd's compact does: watches from an older
    /// revision then fail with [`StoreError::Compacted`]. The store also does this by itself,
    /// keeping the last `history` revisions.
    ///
    /// # Errors
    /// [`StoreError::Compacted`] if `revision` is already compacted, [`StoreError::Other`] if it
    /// is in the future or the database fails.
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.blocking(move |inner| db::compact(&inner.db, revision)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Other(format!("embedded store task failed: {e}")))?
    }

    fn start_lease_expiry(&self) {
        if !self.inner.leases.expiry_started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let wake = self.inner.leases.wake.clone();
            // Ends when the store is dropped (it holds only a weak reference).
            tokio::spawn(expire_leases(Arc::downgrade(&self.inner), wake));
        }
    }
}

impl Inner {
    /// One write transaction, published to live watchers before the next one can commit.
    fn commit<T>(
        &self,
        f: impl FnOnce(&mut db::Writer<'_>) -> Result<T, StoreError>,
    ) -> Result<(i64, T), StoreError> {
        let _serial = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (revision, batch, out) = db::write(&self.db, self.history, f)?;
        if let Some(batch) = batch {
            // An error only means nobody is watching.
            let _ = self.live.send(Arc::new(batch));
        }
        Ok((revision, out))
    }

    fn delete_lease_keys(&self, leases: &[i64]) -> Result<(), StoreError> {
        self.commit(|w| {
            for lease in leases {
                w.lease_keys(*lease)?.iter().try_for_each(|key| w.delete(key))?;
            }
            Ok(())
        })
        .map(drop)
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_vec();
        self.blocking(move |inner| db::get(&inner.db, &key)).await
    }

    async fn range(&self, prefix: &[u8]) -> Result<RangeResult, StoreError> {
        let prefix = prefix.to_vec();
        self.blocking(move |inner| db::range(&inner.db, &prefix)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        validate_txn(&txn)?;
        self.blocking(move |inner| {
            let (revision, (succeeded, gets)) =
                inner.commit(|w| db::apply(w, &txn, |lease| inner.leases.is_alive(lease)))?;
            Ok(TxnResult { succeeded, revision, gets })
        })
        .await
    }

    async fn watch(&self, prefix: &[u8], from_revision: i64) -> Result<WatchStream, StoreError> {
        // Subscribe before reading the log: every commit is then in the log read, or in `rx`, or
        // both (those are skipped by revision). No gap, no duplicate.
        let rx = self.inner.live.subscribe();
        let owned = prefix.to_vec();
        let (replay, read_at) =
            self.blocking(move |inner| db::history(&inner.db, &owned, from_revision)).await?;
        let live = Live { rx, prefix: prefix.to_vec(), after: read_at };
        let live = stream::unfold(Some(live), |live| async move {
            let mut live = live?;
            let item = live.next().await;
            let keep_going = item.is_ok();
            Some((item, keep_going.then_some(live)))
        });
        Ok(Box::pin(stream::iter(replay.into_iter().map(Ok)).chain(live)))
    }

    async fn revision(&self) -> Result<i64, StoreError> {
        self.blocking(|inner| db::revision(&inner.db)).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        self.start_lease_expiry();
        Ok(self.inner.leases.grant(ttl))
    }

    async fn keep_alive(&self, lease: i64) -> Result<(), StoreError> {
        if self.inner.leases.keep_alive(lease) { Ok(()) } else { Err(StoreError::LeaseNotFound(lease)) }
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        // Forget it first: a put racing with this either commits before the delete below (and
        // its key is deleted) or finds the lease gone.
        if !self.inner.leases.remove(lease) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        self.blocking(move |inner| inner.delete_lease_keys(&[lease])).await
    }
}

/// A watch's live part: committed transactions from the broadcast, after the replayed history.
struct Live {
    rx: broadcast::Receiver<Arc<WatchBatch>>,
    prefix: Vec<u8>,
    /// The revision the history was read at: anything up to it was replayed already.
    after: i64,
}

impl Live {
    async fn next(&mut self) -> Result<WatchBatch, StoreError> {
        loop {
            let batch = match self.rx.recv().await {
                Ok(batch) => batch,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Err(StoreError::Unavailable(format!(
                        "watcher fell {n} transactions behind; watch again from its last revision"
                    )));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(StoreError::Unavailable("the embedded store was closed".into()));
                }
            };
            if batch.revision <= self.after {
                continue;
            }
            let events: Vec<_> =
                batch.events.iter().filter(|e| e.key().starts_with(&self.prefix)).cloned().collect();
            if !events.is_empty() {
                return Ok(WatchBatch { revision: batch.revision, events });
            }
        }
    }
}

/// Revokes leases past their deadline, deleting their keys, until the store is dropped.
async fn expire_leases(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let expired = inner.leases.take_expired();
            if !expired.is_empty() {
                let store = EmbeddedStore { inner: inner.clone() };
                let deleted = store.blocking(move |inner| inner.delete_lease_keys(&expired)).await;
                if let Err(e) = deleted {
                    // The keys stay until the next open, which deletes every leased key.
                    tracing::error!(error = %e, "could not delete the keys of expired leases");
                }
            }
            inner.leases.next_deadline()
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
