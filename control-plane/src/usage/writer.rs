//! The ledger's one writer task: takes reports from every stream, reads the keys it does not
//! know, commits planned transactions under a rate cap, retries after conflicts and errors, and
//! removes what retention says is old.

use std::sync::Arc;
use std::time::Duration;

use llmgw_shared::proto::UsageRow;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::batch::{Batcher, Limits, Marker, Pending};
use super::period::{HOUR, floor_hour};
use super::shard::{Counters, MarkerId, RowKey, ShardId, ShardPeriod};
use super::{Ledger, LedgerError, Outcome, Submission};
use crate::layout;
use crate::metrics as m;
use crate::store::{Compare, CompareOp, CompareTarget, Op, StoreError, Txn};

/// Old markers are looked for this often (any replica may; deletes compare revisions).
const MARKERS_EVERY: Duration = Duration::from_secs(3600);
/// A marker is deleted once a newer epoch of its edge has been counting this long: the process
/// that owned it is gone, and so is anything it could still resend (no report waits in a
/// replica longer than `max_wait`).
const SUPERSEDED_AFTER_MS: i64 = 3_600_000;
/// Cached shards and markers unused this long are dropped (read again if needed).
const EVICT_AFTER: Duration = Duration::from_secs(600);
/// Retention deletes at most this many transactions per run, so a backlog (a shortened
/// retention) drains over minutes instead of taking the writer away from reports.
const RETENTION_TXNS: usize = 8;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Transactions per second, with a burst of a fifth of a second's worth.
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        let capacity = (rate / 5.0).max(1.0);
        Self { rate, capacity, tokens: capacity, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.at = now;
    }

    fn try_take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn ready_at(&self, now: Instant) -> Instant {
        if self.rate <= 0.0 {
            return now;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if tokens >= 1.0 { now } else { now + Duration::from_secs_f64((1.0 - tokens) / self.rate) }
    }
}

/// The hour a row is counted in: the edge's, unless it is unset or more than an hour ahead of
/// our clock (a skewed edge), then ours; `None` when it is older than retention keeps (counted
/// in the all-time shard only, rather than re-creating a deleted hour).
pub(crate) fn bucket_hour(hour_unix: i64, now: i64, oldest_kept: i64) -> Option<i64> {
    let current = floor_hour(now);
    let h = if hour_unix <= 0 { current } else { floor_hour(hour_unix) };
    let h = if h > current + HOUR { current } else { h };
    (h >= oldest_kept).then_some(h)
}

/// What a report's rows add to which of this replica's shards.
pub(crate) fn contributions(
    rows: &[UsageRow],
    cp_id: &str,
    now: i64,
    oldest_kept: i64,
) -> Vec<(Vec<u8>, RowKey, Counters)> {
    let mut adds = Vec::new();
    for row in rows {
        let c = Counters::from_row(row);
        if c.is_zero() {
            continue;
        }
        let shard =
            |period| ShardId { key_id: row.key_id.clone(), period, cp_id: cp_id.to_owned() }.store_key();
        let key = RowKey::of_row(row);
        adds.push((shard(ShardPeriod::Total), key.clone(), c));
        if let Some(h) = bucket_hour(row.hour_unix, now, oldest_kept) {
            adds.push((shard(ShardPeriod::Hour(h)), key, c));
        }
    }
    adds
}

fn accept(ledger: &Ledger, b: &mut Batcher, s: Submission) {
    let now = ledger.opts.clock.now_unix();
    let oldest_kept = floor_hour(now - ledger.opts.retention.as_secs() as i64);
    let adds = contributions(&s.report.rows, &ledger.opts.cp_id, now, oldest_kept);
    if adds.is_empty() {
        // Nothing to count, so nothing to count twice: no marker needed.
        let _ = s.reply.send(Ok(Outcome::Counted));
        return;
    }
    let id = MarkerId { edge_id: s.report.edge_id, epoch: s.report.epoch };
    b.push(id, Pending::new(s.report.seq, adds, s.received, s.reply));
}

pub(super) async fn run(ledger: Arc<Ledger>, mut rx: mpsc::Receiver<Submission>) {
    let opts = ledger.opts.clone();
    let mut b = Batcher::new(Limits::default());
    let start = Instant::now();
    let mut bucket = Bucket::new(opts.max_txn_rate, start);
    let mut backoff = Duration::from_millis(100);
    let mut retry_at: Option<Instant> = None;
    let mut next_retention = start + opts.sweep_every;
    let mut next_markers = start + opts.sweep_every * 5;
    loop {
        let now = Instant::now();
        let mut wake = next_retention.min(next_markers);
        if let Some(oldest) = b.oldest() {
            let due = if b.full() { now } else { oldest + opts.flush_interval };
            let due = due.max(bucket.ready_at(now)).max(retry_at.unwrap_or(now));
            wake = wake.min(due).min(oldest + opts.max_wait);
        }
        tokio::select! {
            biased;
            () = ledger.stop.cancelled() => break,
            s = rx.recv() => match s {
                Some(s) => accept(&ledger, &mut b, s),
                None => break,
            },
            () = tokio::time::sleep_until(wake) => {}
        }
        while let Ok(s) = rx.try_recv() {
            accept(&ledger, &mut b, s);
        }
        let now = Instant::now();
        let expired = b.expire(now, opts.max_wait);
        if expired > 0 {
            metrics::counter!(m::USAGE_FAILED, "reason" => "timeout").increment(expired as u64);
            tracing::warn!(
                reports = expired,
                "usage reports not committed in time; the edges will resend them"
            );
        }
        let dups = b.answer_duplicates();
        metrics::counter!(m::USAGE_DUPLICATES).increment(dups as u64);
        let due = b.full() || b.oldest().is_some_and(|o| now >= o + opts.flush_interval);
        if due && retry_at.is_none_or(|t| now >= t) && bucket.try_take(now) {
            let stepped = tokio::select! {
                () = ledger.stop.cancelled() => break,
                r = step(&ledger, &mut b) => r,
            };
            match stepped {
                Ok(()) => {
                    retry_at = None;
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "usage ledger write failed; retrying");
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if now >= next_retention {
            next_retention = now + opts.sweep_every;
            b.evict(now.checked_sub(EVICT_AFTER).unwrap_or(start));
            tokio::select! {
                () = ledger.stop.cancelled() => break,
                () = retention(&ledger, &mut b, &mut bucket) => {}
            }
        }
        if now >= next_markers {
            next_markers = now + MARKERS_EVERY;
            tokio::select! {
                () = ledger.stop.cancelled() => break,
                () = clean_markers(&ledger, &mut b, &mut bucket) => {}
            }
        }
        metrics::gauge!(m::USAGE_PENDING).set(b.pending() as f64);
    }
    let pending = b.pending();
    b.fail_all(&LedgerError::Unavailable("the control plane is stopping".into()));
    metrics::counter!(m::USAGE_FAILED, "reason" => "stopped").increment(pending as u64);
    metrics::gauge!(m::USAGE_PENDING).set(0.0);
}

/// One store round trip: reads keys the next transaction needs, or commits it.
async fn step(ledger: &Ledger, b: &mut Batcher) -> Result<(), StoreError> {
    let keys = b.to_read();
    if !keys.is_empty() {
        let txn =
            Txn { success: keys.iter().map(|k| Op::Get { key: k.clone() }).collect(), ..Txn::default() };
        let r = ledger.store.txn(txn).await;
        metrics::counter!(m::USAGE_TXNS, "kind" => "read", "outcome" => if r.is_ok() { "ok" } else { "error" })
            .increment(1);
        b.loaded(keys.into_iter().zip(r?.gets).collect(), Instant::now());
        return Ok(());
    }
    let now_ms = ledger.opts.clock.now_unix_ms();
    let rejected_before = b.pending();
    let plan = b.plan(now_ms);
    let rejected = rejected_before - b.pending();
    if rejected > 0 {
        metrics::counter!(m::USAGE_FAILED, "reason" => "too_large").increment(rejected as u64);
    }
    let Some(mut plan) = plan else { return Ok(()) };
    if plan.ops() == 0 {
        b.committed(plan, 0, Instant::now());
        return Ok(());
    }
    metrics::histogram!(m::USAGE_TXN_OPS).record(plan.ops() as f64);
    metrics::histogram!(m::USAGE_TXN_REPORTS).record(plan.reports() as f64);
    let txn = std::mem::take(&mut plan.txn);
    let start = Instant::now();
    let r = ledger.store.txn(txn).await;
    metrics::histogram!(m::USAGE_COMMIT_LATENCY).record(start.elapsed().as_secs_f64());
    match r {
        Ok(r) if r.succeeded => {
            metrics::counter!(m::USAGE_TXNS, "kind" => "write", "outcome" => "committed").increment(1);
            let now = Instant::now();
            let oldest = plan.oldest();
            let (_, dups) = b.committed(plan, r.revision, now);
            metrics::counter!(m::USAGE_DUPLICATES).increment(dups as u64);
            if let Some(oldest) = oldest {
                metrics::histogram!(m::USAGE_ACK_DELAY).record(now.duration_since(oldest).as_secs_f64());
            }
            Ok(())
        }
        Ok(_) => {
            // Another writer moved a marker (an edge failed over and its resend was counted
            // elsewhere) or a shard: read them again and re-plan; resends then show as duplicates.
            metrics::counter!(m::USAGE_TXNS, "kind" => "write", "outcome" => "conflict").increment(1);
            tracing::debug!("usage transaction lost a compare; re-reading its keys");
            b.forget(&plan);
            Ok(())
        }
        Err(e) => {
            // It may have committed: forget its keys so the re-read tells.
            metrics::counter!(m::USAGE_TXNS, "kind" => "write", "outcome" => "error").increment(1);
            b.forget(&plan);
            Err(e)
        }
    }
}

async fn take_token(bucket: &mut Bucket) {
    loop {
        let now = Instant::now();
        if bucket.try_take(now) {
            return;
        }
        tokio::time::sleep_until(bucket.ready_at(now)).await;
    }
}

/// Deletes this replica's hour shards older than the retention.
async fn retention(ledger: &Ledger, b: &mut Batcher, bucket: &mut Bucket) {
    let now = ledger.opts.clock.now_unix();
    let cutoff = floor_hour(now - ledger.opts.retention.as_secs() as i64);
    for _ in 0..RETENTION_TXNS {
        let doomed = ledger.read().expired(&ledger.opts.cp_id, cutoff, Limits::default().ops);
        if doomed.is_empty() {
            return;
        }
        take_token(bucket).await;
        let txn = Txn {
            success: doomed.iter().map(|(key, _)| Op::Delete { key: key.clone() }).collect(),
            ..Txn::default()
        };
        match ledger.store.txn(txn).await {
            Ok(r) => {
                metrics::counter!(m::USAGE_TXNS, "kind" => "retention", "outcome" => "committed")
                    .increment(1);
                for (key, _) in &doomed {
                    b.forget_key(key);
                }
                tracing::info!(shards = doomed.len(), cutoff, "deleted usage hours past retention");
                // The next batch is read from the view: wait until it saw these deletes.
                if !ledger.wait_for(r.revision, Duration::from_secs(10)).await {
                    return;
                }
            }
            Err(e) => {
                metrics::counter!(m::USAGE_TXNS, "kind" => "retention", "outcome" => "error").increment(1);
                tracing::warn!(error = %e, "cannot delete usage hours past retention");
                return;
            }
        }
    }
}

/// Which markers can go: those not written for longer than the retention, and those of an edge
/// that started a newer epoch more than an hour ago (see [`SUPERSEDED_AFTER_MS`]).
pub(crate) fn doomed_markers(
    markers: &[(MarkerId, Marker)],
    now_ms: i64,
    retention_ms: i64,
) -> Vec<MarkerId> {
    // Per edge: the latest start of an epoch that has been counting for over an hour.
    let mut settled: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for (id, m) in markers {
        if now_ms - m.first_ms > SUPERSEDED_AFTER_MS {
            let t = settled.entry(id.edge_id.as_str()).or_insert(i64::MIN);
            *t = (*t).max(m.first_ms);
        }
    }
    markers
        .iter()
        .filter(|(id, m)| {
            let stale = now_ms - m.last_ms > retention_ms;
            // Started after this epoch's last write, so it is another epoch that took over.
            let superseded = settled.get(id.edge_id.as_str()).is_some_and(|t| *t > m.last_ms);
            stale || superseded
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Deletes markers no edge can still need, each only if unchanged since read (another replica
/// may be cleaning, or the edge came back).
async fn clean_markers(ledger: &Ledger, b: &mut Batcher, bucket: &mut Bucket) {
    take_token(bucket).await;
    let r = match ledger.store.range(layout::USAGE_SEQ.as_bytes()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read usage markers");
            return;
        }
    };
    let mut revisions = std::collections::HashMap::new();
    let mut markers = Vec::new();
    for kv in &r.kvs {
        let Some(id) = MarkerId::parse(&kv.key) else { continue };
        let m = Marker::decode(&kv.value).unwrap_or(Marker { seq: 0, first_ms: 0, last_ms: 0 });
        revisions.insert(id.clone(), kv.mod_revision);
        markers.push((id, m));
    }
    let retention_ms = ledger.opts.retention.as_millis() as i64;
    let doomed = doomed_markers(&markers, ledger.opts.clock.now_unix_ms(), retention_ms);
    // Each delete brings its compare; etcd limits each list separately.
    for chunk in doomed.chunks(Limits::default().ops) {
        take_token(bucket).await;
        let mut txn = Txn::default();
        for id in chunk {
            let key = id.store_key();
            let rev = revisions.get(id).copied().unwrap_or(0);
            txn.compares.push(Compare {
                key: key.clone(),
                op: CompareOp::Equal,
                target: CompareTarget::ModRevision(rev),
            });
            txn.success.push(Op::Delete { key });
        }
        let outcome = match ledger.store.txn(txn).await {
            Ok(r) if r.succeeded => "committed",
            Ok(_) => "conflict",
            Err(_) => "error",
        };
        metrics::counter!(m::USAGE_TXNS, "kind" => "markers", "outcome" => outcome).increment(1);
        for id in chunk {
            b.forget_key(&id.store_key());
        }
        if outcome == "committed" {
            tracing::info!(markers = chunk.len(), "deleted usage markers of finished edge processes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_land_in_their_hour_within_bounds() {
        let now = 1_795_527_900; // 13:45
        let h = floor_hour(now);
        let oldest = h - 35 * 24 * HOUR;
        assert_eq!(bucket_hour(h - HOUR + 5, now, oldest), Some(h - HOUR));
        assert_eq!(bucket_hour(0, now, oldest), Some(h), "unset: the current hour");
        assert_eq!(bucket_hour(h + HOUR, now, oldest), Some(h + HOUR), "an hour ahead is allowed");
        assert_eq!(bucket_hour(h + 5 * HOUR, now, oldest), Some(h), "further ahead: ours");
        assert_eq!(bucket_hour(oldest - 1, now, oldest), None, "past retention: all-time only");

        let row = |key_id: &str, requests| UsageRow {
            key_id: key_id.into(),
            requests,
            hour_unix: h,
            ..UsageRow::default()
        };
        let adds = contributions(&[row("k", 1), row("z", 0)], "cp", now, oldest);
        let keys: Vec<String> =
            adds.iter().map(|(k, _, _)| String::from_utf8_lossy(k).into_owned()).collect();
        assert_eq!(keys, ["/llmgw/v1/usage/key:k/total/cp", "/llmgw/v1/usage/key:k/h2026112413/cp"]);
    }

    #[test]
    fn markers_go_when_stale_or_superseded() {
        let hour = 3_600_000;
        let day = 24 * hour;
        let now = 100 * day;
        let retention = 35 * day;
        let m = |edge: &str, epoch: &str, first, last| {
            (
                MarkerId { edge_id: edge.into(), epoch: epoch.into() },
                Marker { seq: 1, first_ms: first, last_ms: last },
            )
        };
        let markers = vec![
            // a: restarted two hours ago: the old epoch goes, the new one stays.
            m("a", "old", now - 10 * day, now - 2 * hour - 1),
            m("a", "new", now - 2 * hour, now),
            // b: restarted half an hour ago: the old epoch may still be resending.
            m("b", "old", now - day, now - hour),
            m("b", "new", now - hour / 2, now),
            // c: gone for longer than the retention.
            m("c", "only", now - 50 * day, now - 36 * day),
            // d: quiet, but within the retention.
            m("d", "only", now - 50 * day, now - 30 * day),
        ];
        let doomed = doomed_markers(&markers, now, retention);
        let names: Vec<String> = doomed.iter().map(|id| format!("{}/{}", id.edge_id, id.epoch)).collect();
        assert_eq!(names, ["a/old", "c/only"]);
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_caps_the_rate() {
        let start = Instant::now();
        let mut b = Bucket::new(10.0, start);
        assert!(b.try_take(start), "a burst of 2 to start");
        assert!(b.try_take(start));
        assert!(!b.try_take(start));
        assert_eq!(b.ready_at(start), start + Duration::from_millis(100));
        let mut taken = 0;
        let mut now = start;
        while now < start + Duration::from_secs(10) {
            now += Duration::from_millis(10);
            taken += usize::from(b.try_take(now));
        }
        assert!((99..=101).contains(&taken), "{taken} in 10 s at 10/s");
        let mut unlimited = Bucket::new(0.0, start);
        assert!((0..1000).all(|_| unlimited.try_take(start)));
    }
}
