//! The usage ledger: counts what edges report, exactly once, and knows what every key, project
//! and team spent in each budget period across the cluster.
//!
//! Why it is built this way:
//!
//! - **Exactly once without a lock.** An edge numbers its reports `(edge_id, epoch, seq)` and
//!   resends what was not acked, to whichever replica it reaches. The seq marker of the edge
//!   process (`/llmgw/v1/usage-seq/{edge_id}/{epoch}`) is written in the same transaction as the
//!   counts, and compared there with the revision last read: a report is counted by the one
//!   transaction that moves the marker past its seq, and a resend finds `seq <= marker` and is
//!   only acked. Acks go out after the commit, so a crash between commit and ack costs a resend,
//!   never a count.
//! - **No read-modify-write on the hot path.** Each replica writes only its own shards
//!   (`/llmgw/v1/usage/key:{id}/{period}/{cp_id}`) and keeps their values in memory, so a write
//!   is a put of an absolute value. The put still compares the shard's revision: after an
//!   ambiguous store error, or with two processes started under one id, the replica re-reads
//!   instead of overwriting counts it has not seen.
//! - **Batching bounds etcd's load by edges, not by reports.** Reports wait (about 50 ms) and are
//!   grouped per edge process: one transaction carries many reports, each edge's marker once and
//!   each shard once, up to etcd's 128 operations. Transactions per second are capped per replica
//!   (`--usage-max-txn-rate`); when the cap binds, reports wait longer and more of them share a
//!   transaction, so load grows with the number of edges and active keys, not with the report
//!   rate. A transaction only carries whole reports, so counts and markers always agree.
//! - **Hours, not periods, on disk.** Shards are per hour (UTC) and all-time; days, ISO weeks and
//!   months are sums of hours, so a budget period never needs its own counters or a reset, and
//!   the hours kept (`--usage-retention`, at least 32 days) answer `admin usage --since`.
//! - **Spend is a memory read.** Every replica watches every shard (absolute values: an event
//!   replaces one) and keeps per-scope sums, so grants and `admin usage` never read the store.
//! - **Markers go when no resend can come.** A marker is deleted when its edge process has not
//!   reported for the retention period, or when a newer epoch of the same edge id started after
//!   its last report and has been counting for over an hour (the old process is gone, and no
//!   report waits in a replica longer than 30 s before it is failed back to the edge).
//!
//! `spend` is the API grants build on; `batch` plans transactions, `writer` runs them.

pub mod batch;
pub mod clock;
pub mod period;
pub mod shard;
pub mod view;
mod writer;

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use llmgw_shared::proto::UsageReport;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, ManualClock, OffsetFileClock, SystemClock};
pub use period::Period;
pub use shard::Counters;
pub use view::{RowGroup, Scope, UsageFilter};

use crate::layout;
use crate::store::{Event, Store, StoreError};
use view::UsageView;

/// How a report ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed by this call.
    Counted,
    /// Committed before (a resend): acked, not counted again.
    Duplicate,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}")]
    Invalid(String),
    #[error("usage ledger unavailable: {0}")]
    Unavailable(String),
}

impl From<LedgerError> for tonic::Status {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Invalid(m) => tonic::Status::invalid_argument(m),
            e @ LedgerError::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
        }
    }
}

/// The shortest retention allowed: a monthly budget needs every hour of the longest month.
pub const MIN_RETENTION: Duration = Duration::from_secs(32 * 86_400);
/// How long hour buckets are kept by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(35 * 86_400);

#[derive(Clone)]
pub struct LedgerOptions {
    /// This replica's id: the last segment of the shards it writes.
    pub cp_id: String,
    /// Hour buckets older than this are deleted (at least [`MIN_RETENTION`]).
    pub retention: Duration,
    /// How long a report may wait for others to share its transaction.
    pub flush_interval: Duration,
    /// Store transactions per second this replica's ledger may run (reads, writes and clean-up
    /// together); 0 = no limit.
    pub max_txn_rate: f64,
    /// A report not committed within this long is failed, and the edge resends it.
    pub max_wait: Duration,
    /// How often hours past the retention are looked for (a minute; tests make it shorter).
    pub sweep_every: Duration,
    /// Reports submitted and not yet answered, at most ([`IN_FLIGHT`]).
    pub max_in_flight: usize,
    pub clock: Arc<dyn Clock>,
}

impl LedgerOptions {
    #[must_use]
    pub fn new(cp_id: impl Into<String>) -> Self {
        Self {
            cp_id: cp_id.into(),
            retention: DEFAULT_RETENTION,
            flush_interval: Duration::from_millis(50),
            max_txn_rate: 25.0,
            max_wait: Duration::from_secs(30),
            sweep_every: Duration::from_secs(60),
            max_in_flight: IN_FLIGHT,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for LedgerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerOptions")
            .field("cp_id", &self.cp_id)
            .field("retention", &self.retention)
            .field("flush_interval", &self.flush_interval)
            .field("max_txn_rate", &self.max_txn_rate)
            .field("max_wait", &self.max_wait)
            .field("sweep_every", &self.sweep_every)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// A report on its way to the writer.
pub(crate) struct Submission {
    report: UsageReport,
    received: tokio::time::Instant,
    reply: batch::Reply,
}

/// Reports queued for the writer, across all streams: beyond this, streams wait (backpressure
/// to the edges, which keep their reports until acked).
const QUEUE: usize = 4096;

/// Reports submitted and not yet answered, queued or in the writer's batches. The queue alone
/// did not bound them: at 2,000 edges a ledger that fell behind held 470,000 reports (2.1 GiB;
/// bench/SIM.md) in its batches. Past this, `submit` waits until the writer answers some, and
/// the edges keep what is unacked, as they must anyway. Steady state at 2,000 edges is ~9,000.
pub const IN_FLIGHT: usize = 32_768;

pub struct Ledger {
    store: Arc<dyn Store>,
    opts: LedgerOptions,
    submissions: mpsc::Sender<Submission>,
    receiver: Mutex<Option<mpsc::Receiver<Submission>>>,
    view: RwLock<UsageView>,
    revision: watch::Sender<i64>,
    stop: CancellationToken,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Ledger {
    /// A ledger on `store`; nothing runs until [`Ledger::run`]. `stop` also ends the report
    /// streams.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, mut opts: LedgerOptions, stop: CancellationToken) -> Arc<Self> {
        opts.retention = opts.retention.max(MIN_RETENTION);
        let (submissions, receiver) = mpsc::channel(QUEUE);
        let (revision, _) = watch::channel(0);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(opts.max_in_flight.max(1)));
        Arc::new(Self {
            store,
            opts,
            submissions,
            receiver: Mutex::new(Some(receiver)),
            view: RwLock::new(UsageView::default()),
            revision,
            stop,
            in_flight,
        })
    }

    #[must_use]
    pub fn cp_id(&self) -> &str {
        &self.opts.cp_id
    }

    /// Cancelled when the control plane stops.
    #[must_use]
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// Follows the store's usage and runs the writer until stopped.
    pub async fn run(self: Arc<Self>) {
        let receiver = self.receiver.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(receiver) = receiver else {
            tracing::error!("the usage ledger was started twice");
            return;
        };
        tokio::join!(self.clone().follow_loop(), writer::run(self.clone(), receiver));
    }

    /// Checks a report and queues it for the writer; the returned receiver yields its outcome.
    /// Reports of one stream are committed in the order they were submitted.
    ///
    /// # Errors
    /// `Invalid` for a malformed report, `Unavailable` when the ledger stopped.
    pub async fn submit(
        &self,
        report: UsageReport,
    ) -> Result<oneshot::Receiver<Result<Outcome, LedgerError>>, LedgerError> {
        validate(&report)?;
        metrics::counter!(crate::metrics::USAGE_REPORTS).increment(1);
        // Freed by the writer when it answers, whatever the submitting stream is doing.
        let permit = tokio::select! {
            p = self.in_flight.clone().acquire_owned() => p.ok(),
            () = self.stop.cancelled() => {
                return Err(LedgerError::Unavailable("the control plane is stopping".into()));
            }
        };
        let (reply, rx) = oneshot::channel();
        let s = Submission {
            report,
            received: tokio::time::Instant::now(),
            reply: batch::Reply::new(reply, permit),
        };
        self.submissions
            .send(s)
            .await
            .map_err(|_| LedgerError::Unavailable("the control plane is stopping".into()))?;
        Ok(rx)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, UsageView> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, UsageView> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `scope` spent in the current `period` (by the ledger's clock), cluster-wide, as of
    /// this replica's view of the store.
    #[must_use]
    pub fn spend(&self, scope: &Scope, period: Period) -> Counters {
        self.spend_at(scope, period, self.opts.clock.now_unix())
    }

    /// What `scope` spent in the `period` containing `now` (Unix seconds).
    #[must_use]
    pub fn spend_at(&self, scope: &Scope, period: Period, now: i64) -> Counters {
        self.read().spend(scope, period, now)
    }

    /// Usage rows for `llmgw admin usage`, by (team, project, key id, model, provider).
    #[must_use]
    pub fn rows(&self, filter: &UsageFilter) -> std::collections::BTreeMap<RowGroup, Counters> {
        self.read().rows(filter)
    }

    /// The ledger's clock, in Unix seconds.
    #[must_use]
    pub fn now_unix(&self) -> i64 {
        self.opts.clock.now_unix()
    }

    /// The store revision the in-memory usage reflects.
    #[must_use]
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Waits until the in-memory usage reflects at least `revision`.
    pub async fn wait_for(&self, revision: i64, patience: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        tokio::time::timeout(patience, rx.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// Waits until the in-memory usage reflects everything committed before this call, so a
    /// query right after an ack sees the acked report; returns the store revision it reached.
    ///
    /// # Errors
    /// `Unavailable` when the store cannot be read or the view does not catch up in `patience`.
    pub async fn sync(&self, patience: Duration) -> Result<i64, LedgerError> {
        let revision = tokio::time::timeout(patience, self.store.revision())
            .await
            .map_err(|_| LedgerError::Unavailable("the store did not answer".into()))?
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        if self.wait_for(revision, patience).await {
            Ok(revision)
        } else {
            Err(LedgerError::Unavailable(format!(
                "usage has not caught up with the store (at {}, store at {revision})",
                self.revision()
            )))
        }
    }

    async fn follow_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = tokio::select! {
                () = self.stop.cancelled() => return,
                r = self.follow() => r,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "usage watch interrupted; re-reading");
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Loads every shard, then applies changes. The watch covers the whole keyspace (not only
    /// the shards) so the view's revision keeps up with the store's, which `sync` waits on.
    async fn follow(&self) -> Result<(), StoreError> {
        let r = self.store.range(layout::USAGE.as_bytes()).await?;
        let mut view = UsageView::default();
        for kv in &r.kvs {
            view.put(&kv.key, &kv.value, kv.mod_revision);
        }
        view.revision = r.revision;
        let shards = view.shard_count();
        *self.write() = view;
        self.revision.send_replace(r.revision);
        metrics::gauge!(crate::metrics::USAGE_SHARDS).set(shards as f64);
        tracing::info!(revision = r.revision, shards, "usage loaded");
        let mut watch = self.store.watch(layout::ROOT.as_bytes(), r.revision + 1).await?;
        while let Some(batch) = watch.next().await {
            let batch = batch?;
            let mut v = self.write();
            for ev in &batch.events {
                match ev {
                    Event::Put(kv) if kv.key.starts_with(layout::USAGE.as_bytes()) => {
                        v.put(&kv.key, &kv.value, kv.mod_revision);
                    }
                    Event::Delete { key, mod_revision } if key.starts_with(layout::USAGE.as_bytes()) => {
                        v.delete(key, *mod_revision);
                    }
                    _ => {}
                }
            }
            v.revision = v.revision.max(batch.revision);
            let (revision, shards) = (v.revision, v.shard_count());
            drop(v);
            self.revision.send_replace(revision);
            metrics::gauge!(crate::metrics::USAGE_SHARDS).set(shards as f64);
        }
        Err(StoreError::Unavailable("the usage watch ended".into()))
    }
}

/// Longest edge id, epoch or key id accepted: they become parts of store keys.
const MAX_ID: usize = 256;

fn check_id(what: &str, s: &str) -> Result<(), LedgerError> {
    if s.is_empty() {
        return Err(LedgerError::Invalid(format!("{what} is required")));
    }
    if s.len() > MAX_ID || s.contains('/') || s.chars().any(char::is_control) {
        return Err(LedgerError::Invalid(format!(
            "{what} {s:?} must be at most {MAX_ID} bytes, without '/' or control characters"
        )));
    }
    Ok(())
}

/// A report the ledger can key: ids usable in store keys, a seq from 1.
fn validate(r: &UsageReport) -> Result<(), LedgerError> {
    check_id("edge_id", &r.edge_id)?;
    check_id("epoch", &r.epoch)?;
    if r.seq == 0 {
        return Err(LedgerError::Invalid("seq starts at 1".into()));
    }
    for row in &r.rows {
        check_id("key_id", &row.key_id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use llmgw_shared::proto::UsageRow;

    use super::period::{DAY, HOUR};
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    const PATIENCE: Duration = Duration::from_secs(15);

    struct Running {
        ledger: Arc<Ledger>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        async fn stop(self) {
            self.stop.cancel();
            self.task.await.unwrap();
        }
    }

    fn start(store: Arc<dyn Store>, cp_id: &str, clock: Arc<ManualClock>) -> Running {
        let stop = CancellationToken::new();
        let opts =
            LedgerOptions { clock, sweep_every: Duration::from_millis(20), ..LedgerOptions::new(cp_id) };
        let ledger = Ledger::new(store, opts, stop.clone());
        let task = tokio::spawn(ledger.clone().run());
        Running { ledger, stop, task }
    }

    fn row(key_id: &str, project: &str, requests: u64, cost: u64, hour_unix: i64) -> UsageRow {
        UsageRow {
            key_id: key_id.into(),
            project: project.into(),
            team: "t".into(),
            model: "chat".into(),
            provider: "openai".into(),
            upstream_model: "gpt-4o-mini".into(),
            requests,
            input_tokens: 10 * requests,
            output_tokens: 2 * requests,
            cached_input_tokens: 0,
            cost_micro_usd: cost,
            errors: 0,
            hour_unix,
        }
    }

    async fn report(l: &Ledger, seq: u64, rows: Vec<UsageRow>) -> Outcome {
        let r = UsageReport { edge_id: "edge".into(), epoch: "e1".into(), seq, rows, ..Default::default() };
        let outcome = l.submit(r).await.unwrap().await.unwrap().unwrap();
        l.sync(PATIENCE).await.unwrap();
        outcome
    }

    fn cost(l: &Ledger, scope: &str, period: Period) -> u64 {
        l.spend(&scope.parse().unwrap(), period).cost_micro_usd
    }

    #[tokio::test]
    async fn spend_follows_the_clock_across_hours_days_weeks_and_months() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        // 2026-09-30T23:30Z, a Wednesday: the last half hour of the month.
        let clock = ManualClock::at_unix(1_790_811_000);
        let cp = start(store, "cp", clock.clone());
        let l = &cp.ledger;

        // hour_unix 0: the control plane's current hour.
        assert_eq!(report(l, 1, vec![row("k1", "p", 1, 100, 0)]).await, Outcome::Counted);
        for p in [Period::Daily, Period::Weekly, Period::Monthly, Period::Total] {
            assert_eq!(cost(l, "key:k1", p), 100, "{p:?}");
        }
        assert_eq!(cost(l, "project:p", Period::Daily), 100);
        assert_eq!(cost(l, "team:t", Period::Daily), 100);

        // 00:10 on Thursday, October 1st: a new day and month, the same ISO week.
        clock.advance_secs(40 * 60);
        assert_eq!(cost(l, "key:k1", Period::Daily), 0);
        assert_eq!(cost(l, "key:k1", Period::Monthly), 0);
        assert_eq!(cost(l, "key:k1", Period::Weekly), 100);
        assert_eq!(report(l, 2, vec![row("k1", "p", 1, 20, 0)]).await, Outcome::Counted);
        // A row the edge stamped with the previous hour lands there, in September.
        assert_eq!(report(l, 3, vec![row("k1", "p", 1, 3, clock.now_unix() - HOUR)]).await, Outcome::Counted);
        assert_eq!(cost(l, "key:k1", Period::Daily), 20);
        assert_eq!(cost(l, "key:k1", Period::Monthly), 20);
        assert_eq!(cost(l, "key:k1", Period::Weekly), 123);
        assert_eq!(cost(l, "key:k1", Period::Total), 123);
        assert_eq!(
            l.spend_at(&Scope::Key("k1".into()), Period::Monthly, clock.now_unix() - DAY).cost_micro_usd,
            103
        );

        // Monday, October 5th: a new week.
        clock.advance_secs(4 * DAY);
        assert_eq!(cost(l, "key:k1", Period::Weekly), 0);
        assert_eq!(cost(l, "key:k1", Period::Monthly), 20);
        assert_eq!(cost(l, "team:t", Period::Total), 123);
        assert_eq!(Period::Weekly.id(clock.now_unix()), "2026-W41");

        // A resend is acked and not counted.
        assert_eq!(report(l, 2, vec![row("k1", "p", 1, 20, 0)]).await, Outcome::Duplicate);
        assert_eq!(cost(l, "key:k1", Period::Total), 123);
        cp.stop().await;
    }

    #[tokio::test]
    async fn retention_deletes_this_replicas_old_hours_and_keeps_totals() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        let t0 = 1_790_811_000;
        let (clock_a, clock_b) = (ManualClock::at_unix(t0), ManualClock::at_unix(t0));
        let a = start(store.clone(), "a", clock_a.clone());
        let b = start(store.clone(), "b", clock_b.clone());
        report(&a.ledger, 1, vec![row("k", "p", 1, 10, 0)]).await;
        let r = UsageReport {
            edge_id: "other".into(),
            epoch: "e".into(),
            seq: 1,
            rows: vec![row("k", "p", 1, 5, 0)],
            ..Default::default()
        };
        assert_eq!(b.ledger.submit(r).await.unwrap().await.unwrap().unwrap(), Outcome::Counted);
        a.ledger.sync(PATIENCE).await.unwrap();
        let hours = |l: &Ledger| {
            let f = UsageFilter { since: Some(t0 - DAY), ..UsageFilter::default() };
            l.rows(&f).values().map(|c| c.cost_micro_usd).sum::<u64>()
        };
        assert_eq!(hours(&a.ledger), 15);

        // 36 days on, by a's clock only: a deletes its hour; b's stays; the totals stay.
        clock_a.advance_secs(36 * DAY);
        let mut revisions = a.ledger.revision.subscribe();
        let gone = revisions.wait_for(|_| hours(&a.ledger) == 5);
        tokio::time::timeout(PATIENCE, gone).await.unwrap().unwrap();
        let key =
            |cp: &str, period| shard::ShardId { key_id: "k".into(), period, cp_id: cp.into() }.store_key();
        let hour = shard::ShardPeriod::Hour(period::floor_hour(t0));
        assert!(store.get(&key("a", hour)).await.unwrap().is_none());
        assert!(store.get(&key("b", hour)).await.unwrap().is_some());
        assert_eq!(a.ledger.spend(&Scope::Key("k".into()), Period::Total).cost_micro_usd, 15);

        // A late row for a deleted hour counts in the total only.
        report(&a.ledger, 2, vec![row("k", "p", 1, 1, t0)]).await;
        assert!(store.get(&key("a", hour)).await.unwrap().is_none());
        assert_eq!(a.ledger.spend(&Scope::Key("k".into()), Period::Total).cost_micro_usd, 16);
        a.stop().await;
        b.stop().await;
    }

    /// Counts write transactions, to see what batching does to the store's load.
    struct Counting(Arc<dyn Store>, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl Store for Counting {
        async fn get(&self, key: &[u8]) -> Result<Option<crate::store::KeyValue>, StoreError> {
            self.0.get(key).await
        }
        async fn range(&self, prefix: &[u8]) -> Result<crate::store::RangeResult, StoreError> {
            self.0.range(prefix).await
        }
        async fn txn(&self, txn: crate::store::Txn) -> Result<crate::store::TxnResult, StoreError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.txn(txn).await
        }
        async fn watch(&self, prefix: &[u8], from: i64) -> Result<crate::store::WatchStream, StoreError> {
            self.0.watch(prefix, from).await
        }
        async fn revision(&self) -> Result<i64, StoreError> {
            self.0.revision().await
        }
        async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
            self.0.grant_lease(ttl).await
        }
        async fn keep_alive(&self, lease: i64) -> Result<(), StoreError> {
            self.0.keep_alive(lease).await
        }
        async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
            self.0.revoke_lease(lease).await
        }
    }

    /// Many edges reporting at once: every report counted once, and the store sees a bounded
    /// number of transactions (reads included) whatever the number of reports.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_edges_share_transactions_under_the_rate_cap() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        let store = Arc::new(Counting(inner, std::sync::atomic::AtomicUsize::new(0)));
        let stop = CancellationToken::new();
        let opts = LedgerOptions {
            clock: ManualClock::at_unix(1_790_811_000),
            max_txn_rate: 20.0,
            ..LedgerOptions::new("cp")
        };
        let ledger = Ledger::new(store.clone(), opts, stop.clone());
        let task = tokio::spawn(ledger.clone().run());
        let start = tokio::time::Instant::now();
        let (edges, reports) = (500u64, 8u64);
        let mut waiting = Vec::new();
        for seq in 1..=reports {
            for e in 0..edges {
                let rows = vec![row(&format!("k{}", (e + seq) % 50), "p", 1, e + 1, 0)];
                let r = UsageReport {
                    edge_id: format!("edge{e}"),
                    epoch: "e1".into(),
                    seq,
                    rows,
                    ..Default::default()
                };
                waiting.push(ledger.submit(r).await.unwrap());
            }
        }
        for rx in waiting {
            assert_eq!(rx.await.unwrap().unwrap(), Outcome::Counted);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let txns = store.1.load(std::sync::atomic::Ordering::Relaxed);
        ledger.sync(PATIENCE).await.unwrap();
        let spent = ledger.spend(&Scope::Team("t".into()), Period::Total);
        assert_eq!(spent.requests, edges * reports);
        assert_eq!(spent.cost_micro_usd, reports * edges * (edges + 1) / 2);
        // 4000 reports; at most 20 a second plus the burst of 4.
        assert!((txns as f64) <= 20.0 * elapsed + 5.0, "{txns} transactions in {elapsed:.2}s");
        assert!(
            txns * 10 < (edges * reports) as usize,
            "{txns} transactions for {} reports",
            edges * reports
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn reports_not_yet_answered_are_bounded_and_a_full_ledger_makes_submit_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        let stop = CancellationToken::new();
        let opts = LedgerOptions {
            clock: ManualClock::at_unix(1_790_811_000),
            max_in_flight: 3,
            ..LedgerOptions::new("cp")
        };
        let ledger = Ledger::new(store, opts, stop.clone());
        let submit = |seq: u64| {
            let l = ledger.clone();
            let r = UsageReport {
                edge_id: "e".into(),
                epoch: "x".into(),
                seq,
                rows: vec![row("k", "p", 1, 1, 0)],
                ..Default::default()
            };
            async move { l.submit(r).await }
        };
        // No writer yet: three are accepted, the fourth waits for a place.
        let mut outcomes = Vec::new();
        for seq in 1..=3 {
            outcomes.push(submit(seq).await.unwrap());
        }
        let fourth = tokio::spawn(submit(4));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!fourth.is_finished(), "a fourth report was accepted past the bound of 3");
        // The writer answers the three; the fourth gets in and is counted too.
        let task = tokio::spawn(ledger.clone().run());
        for o in outcomes {
            assert_eq!(o.await.unwrap().unwrap(), Outcome::Counted);
        }
        let fourth = tokio::time::timeout(PATIENCE, fourth).await.unwrap().unwrap().unwrap();
        assert_eq!(fourth.await.unwrap().unwrap(), Outcome::Counted);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn malformed_reports_are_refused_before_queueing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        let cp = start(store, "cp", ManualClock::at_unix(1_790_811_000));
        let bad = [
            UsageReport {
                edge_id: String::new(),
                epoch: "e".into(),
                seq: 1,
                rows: vec![],
                ..Default::default()
            },
            UsageReport {
                edge_id: "a/b".into(),
                epoch: "e".into(),
                seq: 1,
                rows: vec![],
                ..Default::default()
            },
            UsageReport {
                edge_id: "a".into(),
                epoch: "e".into(),
                seq: 0,
                rows: vec![],
                ..Default::default()
            },
            UsageReport {
                edge_id: "a".into(),
                epoch: "e".into(),
                seq: 1,
                rows: vec![row("", "p", 1, 1, 0)],
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(matches!(cp.ledger.submit(r).await, Err(LedgerError::Invalid(_))));
        }
        // An empty report needs no marker: acked at once.
        let empty = UsageReport {
            edge_id: "a".into(),
            epoch: "e".into(),
            seq: 7,
            rows: vec![],
            ..Default::default()
        };
        assert_eq!(cp.ledger.submit(empty).await.unwrap().await.unwrap().unwrap(), Outcome::Counted);
        cp.stop().await;
    }
}
