//! The writer's bookkeeping, without I/O: reports waiting for a transaction, grouped by edge
//! process; this replica's shards and the markers as last read or written, with the revision
//! each was written at; and the planning of one transaction out of them.
//!
//! A transaction holds whole reports only, and the shard values it writes are the committed
//! values plus exactly the reports it carries, next to their edges' markers: whatever commits,
//! counts and markers agree. Every key it writes is compared with the revision we last saw, so
//! a marker moved by another replica (an edge that failed over) or a shard written by anyone
//! else (two replicas started with one id) fails the transaction instead of being overwritten;
//! the caller then forgets those keys, reads them again and plans anew.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use llmgw_shared::proto::UsageSeqMarker;
use prost::Message;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::shard::{Counters, MarkerId, RowKey, Rows, decode_rows, encode_rows};
use super::{LedgerError, Outcome};
use crate::store::{Compare, CompareOp, CompareTarget, KeyValue, Op, Txn};

/// Where a report's outcome goes, holding the report's place in the ledger's bound on reports
/// not yet answered ([`super::IN_FLIGHT`]) until it is sent.
pub(crate) struct Reply {
    tx: oneshot::Sender<Result<Outcome, LedgerError>>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Reply {
    pub(crate) fn new(
        tx: oneshot::Sender<Result<Outcome, LedgerError>>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self { tx, _permit: permit }
    }

    /// Sends the outcome, and frees the place.
    pub(crate) fn send(
        self,
        outcome: Result<Outcome, LedgerError>,
    ) -> Result<(), Result<Outcome, LedgerError>> {
        self.tx.send(outcome)
    }
}

impl From<oneshot::Sender<Result<Outcome, LedgerError>>> for Reply {
    fn from(tx: oneshot::Sender<Result<Outcome, LedgerError>>) -> Self {
        Self::new(tx, None)
    }
}

/// A report accepted for counting: what it adds to which shard.
pub(crate) struct Pending {
    pub seq: u64,
    /// (shard store key, row, counts), one per report row.
    pub adds: Vec<(Vec<u8>, RowKey, Counters)>,
    pub received: Instant,
    pub reply: Reply,
    /// Arrival order across all groups.
    order: u64,
}

impl Pending {
    pub(crate) fn new(
        seq: u64,
        adds: Vec<(Vec<u8>, RowKey, Counters)>,
        received: Instant,
        reply: impl Into<Reply>,
    ) -> Self {
        Self { seq, adds, received, reply: reply.into(), order: 0 }
    }

    fn shard_keys(&self) -> BTreeSet<&[u8]> {
        self.adds.iter().map(|(k, _, _)| k.as_slice()).collect()
    }
}

/// An edge process's marker as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub seq: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Marker {
    fn encode(self) -> Vec<u8> {
        UsageSeqMarker { seq: self.seq, first_unix_ms: self.first_ms, last_unix_ms: self.last_ms }
            .encode_to_vec()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        let m = UsageSeqMarker::decode(bytes)?;
        Ok(Self { seq: m.seq, first_ms: m.first_unix_ms, last_ms: m.last_unix_ms })
    }
}

/// A key's value as last seen in the store (`None`: absent), and the revision it was written
/// at (0 when absent), which the next write compares.
struct Cached<T> {
    value: Option<T>,
    mod_revision: i64,
    used: Instant,
}

/// Bounds on one transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Puts per transaction (each with one compare). 128 is etcd's default --max-txn-ops.
    pub ops: usize,
    /// Estimated bytes of keys and values: etcd refuses requests over 1.5 MiB
    /// (--max-request-bytes).
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { ops: crate::store::MAX_TXN_OPS, bytes: 1 << 20 }
    }
}

/// One planned transaction and what to do when it commits.
pub(crate) struct Plan {
    pub txn: Txn,
    shards: Vec<(Vec<u8>, Rows)>,
    markers: Vec<(MarkerId, Marker)>,
    /// For each group, the outcomes of its first reports (those the transaction carries).
    groups: Vec<(MarkerId, Vec<Outcome>)>,
    /// When the longest-waiting report it carries arrived.
    oldest: Option<Instant>,
}

impl Plan {
    /// Puts in the transaction: its size.
    pub(crate) fn ops(&self) -> usize {
        self.txn.success.len()
    }

    pub(crate) fn reports(&self) -> usize {
        self.groups.iter().map(|(_, o)| o.len()).sum()
    }

    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.oldest
    }
}

/// Reports waiting, and what this replica knows of the keys they write.
pub(crate) struct Batcher {
    limits: Limits,
    groups: HashMap<MarkerId, VecDeque<Pending>>,
    /// Each group's first report, by arrival: the order groups are served in.
    fronts: BTreeMap<u64, (MarkerId, Instant)>,
    /// Groups whose first reports may be duplicates: new reports, or a marker newly known.
    unchecked: HashSet<MarkerId>,
    shards: HashMap<Vec<u8>, Cached<Rows>>,
    markers: HashMap<MarkerId, Cached<Marker>>,
    next_order: u64,
    pending: usize,
    /// Puts the waiting reports would need at most (shards counted once per report): says when
    /// a full transaction is waiting.
    ops_estimate: usize,
    /// Per edge process, the lowest seq `expire` failed: until a report at or below it arrives
    /// (the edge's resend, in order), later ones are failed too. Otherwise reports of the old
    /// stream still on their way would be counted, move the marker past the failed ones, and
    /// make their resends look like duplicates: acked, never counted.
    /// Kept for [`GATE_TTL`]: long enough for the old stream's leftovers to drain from the
    /// queue, short enough that an edge whose resend went to another replica is not turned away
    /// here for long.
    gates: HashMap<MarkerId, (u64, Instant)>,
}

/// How long a gate set by `expire` holds.
const GATE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

fn row_bytes(k: &RowKey) -> usize {
    // Five strings with tags and lengths, six varints of up to 10 bytes with tags, the row's own
    // tag and length: generous, so the estimate stays an upper bound.
    k.project.len() + k.team.len() + k.model.len() + k.provider.len() + k.upstream_model.len() + 90
}

impl Batcher {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            groups: HashMap::new(),
            fronts: BTreeMap::new(),
            unchecked: HashSet::new(),
            shards: HashMap::new(),
            markers: HashMap::new(),
            next_order: 0,
            pending: 0,
            ops_estimate: 0,
            gates: HashMap::new(),
        }
    }

    pub(crate) fn push(&mut self, marker: MarkerId, mut p: Pending) {
        if let Some(&(gate, set)) = self.gates.get(&marker) {
            if p.seq > gate && set.elapsed() < GATE_TTL {
                let _ = p.reply.send(Err(LedgerError::Unavailable(format!(
                    "report {} waits for the resend of report {gate}, which was not committed",
                    p.seq
                ))));
                return;
            }
            self.gates.remove(&marker);
        }
        p.order = self.next_order;
        self.next_order += 1;
        self.pending += 1;
        let group = self.groups.entry(marker.clone()).or_default();
        self.ops_estimate += p.shard_keys().len() + usize::from(group.is_empty());
        if group.is_empty() {
            self.fronts.insert(p.order, (marker.clone(), p.received));
        }
        group.push_back(p);
        self.unchecked.insert(marker);
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// When the longest-waiting report arrived.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.fronts.first_key_value().map(|(_, (_, received))| *received)
    }

    /// Enough is waiting to fill a transaction.
    pub(crate) fn full(&self) -> bool {
        self.ops_estimate >= self.limits.ops
    }

    fn pop(&mut self, marker: &MarkerId) -> Option<Pending> {
        let group = self.groups.get_mut(marker)?;
        let p = group.pop_front()?;
        self.fronts.remove(&p.order);
        if let Some(next) = group.front() {
            self.fronts.insert(next.order, (marker.clone(), next.received));
        }
        self.pending -= 1;
        self.ops_estimate = self.ops_estimate.saturating_sub(p.shard_keys().len());
        if group.is_empty() {
            self.groups.remove(marker);
            self.ops_estimate = self.ops_estimate.saturating_sub(1);
        }
        Some(p)
    }

    /// Answers the reports whose seq the stored marker already covers: resends of counted
    /// reports. Returns how many.
    pub(crate) fn answer_duplicates(&mut self) -> usize {
        let mut dups = Vec::new();
        for id in std::mem::take(&mut self.unchecked) {
            let Some(Cached { value: Some(m), .. }) = self.markers.get(&id) else { continue };
            let Some(group) = self.groups.get(&id) else { continue };
            let n = group.iter().take_while(|p| p.seq <= m.seq).count();
            if n > 0 {
                dups.push((id, n));
            }
        }
        let mut total = 0;
        for (id, n) in dups {
            for _ in 0..n {
                if let Some(p) = self.pop(&id) {
                    let _ = p.reply.send(Ok(Outcome::Duplicate));
                    total += 1;
                }
            }
        }
        total
    }

    /// Fails the reports that waited longer than `max_wait` (the store is down or too slow):
    /// their streams end with an error, and the edges send them again.
    pub(crate) fn expire(&mut self, now: Instant, max_wait: std::time::Duration) -> usize {
        let old: Vec<MarkerId> = self
            .fronts
            .values()
            .take_while(|(_, received)| now.saturating_duration_since(*received) > max_wait)
            .map(|(id, _)| id.clone())
            .collect();
        let mut n = 0;
        for id in old {
            // A group's later reports would be counted after a gap: fail the whole group, and
            // the rest of its stream until the edge resends from the first one failed.
            if let Some(first) = self.groups.get(&id).and_then(|g| g.iter().map(|p| p.seq).min()) {
                let gate = self.gates.entry(id.clone()).or_insert((first, Instant::now()));
                *gate = (gate.0.min(first), Instant::now());
            }
            while let Some(p) = self.pop(&id) {
                let _ = p.reply.send(Err(LedgerError::Unavailable(format!(
                    "the ledger could not commit this report within {}s",
                    max_wait.as_secs()
                ))));
                n += 1;
            }
        }
        n
    }

    /// Fails every waiting report.
    pub(crate) fn fail_all(&mut self, e: &LedgerError) {
        for (_, group) in self.groups.drain() {
            for p in group {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
        self.fronts.clear();
        self.unchecked.clear();
        self.pending = 0;
        self.ops_estimate = 0;
    }

    /// Groups in the order their oldest report arrived.
    fn ordered(&self) -> impl Iterator<Item = &MarkerId> {
        self.fronts.values().map(|(id, _)| id)
    }

    /// Keys the next transaction needs that were never read (or were forgotten): at most one
    /// transaction's worth of `Get`s.
    pub(crate) fn to_read(&self) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut wanted = 0;
        'groups: for id in self.ordered() {
            let mut want = |key: Vec<u8>, cached: bool| {
                if seen.insert(key.clone()) {
                    wanted += 1;
                    if !cached {
                        keys.push(key);
                    }
                }
            };
            want(id.store_key(), self.markers.contains_key(id));
            for p in self.groups.get(id).into_iter().flatten() {
                for key in p.shard_keys() {
                    want(key.to_vec(), self.shards.contains_key(key));
                }
            }
            if wanted >= self.limits.ops || keys.len() >= self.limits.ops {
                break 'groups;
            }
        }
        keys.truncate(self.limits.ops);
        keys
    }

    /// Records keys read from the store (`None`: absent).
    pub(crate) fn loaded(&mut self, reads: Vec<(Vec<u8>, Option<KeyValue>)>, now: Instant) {
        for (key, kv) in reads {
            let mod_revision = kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if let Some(id) = super::shard::MarkerId::parse(&key) {
                let value = kv.and_then(|kv| match Marker::decode(&kv.value) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        // Rewritten with the next report; its old seq is lost, so a resend of
                        // a report it covered would count again. Loud, because it means
                        // something else wrote to the ledger's keys.
                        tracing::error!(key = %String::from_utf8_lossy(&key), error = %e, "undecodable usage marker");
                        None
                    }
                });
                self.unchecked.insert(id.clone());
                self.markers.insert(id, Cached { value, mod_revision, used: now });
            } else {
                let value = kv.and_then(|kv| match decode_rows(&kv.value) {
                    Ok(rows) => Some(rows),
                    Err(e) => {
                        tracing::error!(key = %String::from_utf8_lossy(&key), error = %e, "undecodable usage shard");
                        None
                    }
                });
                self.shards.insert(key, Cached { value, mod_revision, used: now });
            }
        }
    }

    /// Plans the next transaction: whole groups in arrival order (a group: one edge process's
    /// waiting reports, in seq order), or as many of a group's first reports as fit, while the
    /// keys they need are known. `None` when nothing can be planned before more keys are read.
    ///
    /// A report too large for any transaction is answered with an error here.
    pub(crate) fn plan(&mut self, now_ms: i64) -> Option<Plan> {
        loop {
            match self.plan_inner(now_ms) {
                Planned::Plan(p) => return Some(p),
                Planned::Nothing => return None,
                Planned::TooLarge(id) => {
                    if let Some(p) = self.pop(&id) {
                        let _ = p.reply.send(Err(LedgerError::Invalid(format!(
                            "the report with seq {} writes more than one transaction can hold ({} \
                             counter shards and the marker, or about {} KiB): send fewer keys per report",
                            p.seq,
                            self.limits.ops - 1,
                            self.limits.bytes >> 10
                        ))));
                    }
                }
            }
        }
    }

    fn plan_inner(&self, now_ms: i64) -> Planned {
        let mut work: HashMap<&[u8], Rows> = HashMap::new();
        let mut markers: Vec<(MarkerId, Marker)> = Vec::new();
        let mut groups: Vec<(MarkerId, Vec<Outcome>)> = Vec::new();
        let (mut ops, mut bytes) = (0usize, 0usize);
        let mut oldest: Option<Instant> = None;
        for id in self.ordered() {
            let Some(cached) = self.markers.get(id) else { break };
            let Some(group) = self.groups.get(id) else { continue };
            let mut marker = cached.value;
            let mut outcomes = Vec::new();
            let mut counted = false;
            for p in group {
                if marker.is_some_and(|m| p.seq <= m.seq) {
                    outcomes.push(Outcome::Duplicate);
                    oldest = Some(oldest.map_or(p.received, |o| o.min(p.received)));
                    continue;
                }
                let keys = p.shard_keys();
                if keys.iter().any(|k| !self.shards.contains_key(*k)) {
                    break;
                }
                let new_keys: Vec<&[u8]> = keys.into_iter().filter(|k| !work.contains_key(k)).collect();
                let new_ops = new_keys.len() + usize::from(!counted);
                let known_rows = |k: &[u8]| {
                    self.shards
                        .get(k)
                        .and_then(|c| c.value.as_ref())
                        .map_or(0, |r| r.keys().map(row_bytes).sum())
                };
                let new_bytes = new_keys.iter().map(|k| k.len() + known_rows(k)).sum::<usize>()
                    + p.adds.iter().map(|(_, row, _)| row_bytes(row)).sum::<usize>()
                    + if counted { 0 } else { id.store_key().len() + 40 };
                if ops + new_ops > self.limits.ops || bytes + new_bytes > self.limits.bytes {
                    if ops == 0 && outcomes.is_empty() {
                        return Planned::TooLarge(id.clone());
                    }
                    break;
                }
                for k in new_keys {
                    let rows = self.shards.get(k).and_then(|c| c.value.clone()).unwrap_or_default();
                    work.insert(k, rows);
                }
                for (k, row, c) in &p.adds {
                    if let Some(rows) = work.get_mut(k.as_slice()) {
                        rows.entry(row.clone()).or_default().add(*c);
                    }
                }
                (ops, bytes) = (ops + new_ops, bytes + new_bytes);
                let first_ms = marker.map_or(now_ms, |m| m.first_ms);
                marker = Some(Marker { seq: p.seq, first_ms, last_ms: now_ms });
                outcomes.push(Outcome::Counted);
                oldest = Some(oldest.map_or(p.received, |o| o.min(p.received)));
                counted = true;
            }
            if let Some(m) = marker.filter(|_| counted) {
                markers.push((id.clone(), m));
            }
            let whole = outcomes.len() == group.len();
            if !outcomes.is_empty() {
                groups.push((id.clone(), outcomes));
            }
            if !whole {
                // The rest of this group waits for the next transaction, and so does every group
                // after it, so that no edge waits behind later arrivals for long.
                break;
            }
        }
        if groups.is_empty() {
            return Planned::Nothing;
        }
        let mut txn = Txn::default();
        let compare = |key: &[u8], mod_revision: i64| Compare {
            key: key.to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(mod_revision),
        };
        let mut shards: Vec<(Vec<u8>, Rows)> = work.into_iter().map(|(k, rows)| (k.to_vec(), rows)).collect();
        shards.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, rows) in &shards {
            let rev = self.shards.get(key.as_slice()).map_or(0, |c| c.mod_revision);
            txn.compares.push(compare(key, rev));
            txn.success.push(Op::Put { key: key.clone(), value: encode_rows(rows), lease: 0 });
        }
        for (id, m) in &markers {
            let key = id.store_key();
            let rev = self.markers.get(id).map_or(0, |c| c.mod_revision);
            txn.compares.push(compare(&key, rev));
            txn.success.push(Op::Put { key, value: m.encode(), lease: 0 });
        }
        Planned::Plan(Plan { txn, shards, markers, groups, oldest })
    }

    /// The plan committed at `revision`: remember what it wrote, answer its reports.
    pub(crate) fn committed(&mut self, plan: Plan, revision: i64, now: Instant) -> (usize, usize) {
        for (key, rows) in plan.shards {
            self.shards.insert(key, Cached { value: Some(rows), mod_revision: revision, used: now });
        }
        for (id, m) in plan.markers {
            self.unchecked.insert(id.clone());
            self.markers.insert(id, Cached { value: Some(m), mod_revision: revision, used: now });
        }
        let (mut counted, mut dups) = (0, 0);
        for (id, outcomes) in plan.groups {
            for outcome in outcomes {
                if let Some(p) = self.pop(&id) {
                    match outcome {
                        Outcome::Counted => counted += 1,
                        Outcome::Duplicate => dups += 1,
                    }
                    let _ = p.reply.send(Ok(outcome));
                }
            }
        }
        (counted, dups)
    }

    /// The plan did not commit (a compare failed), or may or may not have (the store failed
    /// mid-call): forget every key it would write, so they are read again before the next plan.
    /// Its reports stay queued; those that did commit then show as duplicates.
    pub(crate) fn forget(&mut self, plan: &Plan) {
        for (key, _) in &plan.shards {
            self.shards.remove(key);
        }
        for (id, _) in &plan.markers {
            self.markers.remove(id);
        }
    }

    pub(crate) fn forget_key(&mut self, key: &[u8]) {
        if let Some(id) = MarkerId::parse(key) {
            self.markers.remove(&id);
        } else {
            self.shards.remove(key);
        }
    }

    /// Drops cached keys unused since `before` that no waiting report needs: hour shards of
    /// past hours, markers of edges that went quiet. They are read again if needed.
    pub(crate) fn evict(&mut self, before: Instant) {
        let groups = &self.groups;
        let needed: BTreeSet<&[u8]> = groups.values().flatten().flat_map(Pending::shard_keys).collect();
        self.shards.retain(|k, c| c.used >= before || needed.contains(k.as_slice()));
        self.markers.retain(|id, c| c.used >= before || groups.contains_key(id));
    }

    #[cfg(test)]
    pub(crate) fn cached_marker(&self, id: &MarkerId) -> Option<(Option<Marker>, i64)> {
        self.markers.get(id).map(|c| (c.value, c.mod_revision))
    }
}

enum Planned {
    Plan(Plan),
    Nothing,
    /// This group's first report fits in no transaction.
    TooLarge(MarkerId),
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::sync::oneshot::error::TryRecvError;

    use super::super::shard::{ShardId, ShardPeriod};
    use super::*;
    use crate::store::TxnResult;

    /// A store with etcd's compare semantics, enough for the batcher.
    #[derive(Default)]
    struct Fake {
        kv: BTreeMap<Vec<u8>, (Vec<u8>, i64)>,
        rev: i64,
    }

    impl Fake {
        fn txn(&mut self, t: &Txn) -> TxnResult {
            let ok = t.compares.iter().all(|c| match c.target {
                CompareTarget::ModRevision(r) => self.kv.get(&c.key).map_or(0, |(_, m)| *m) == r,
                _ => unreachable!(),
            });
            let mut gets = Vec::new();
            if ok {
                let writes = t.success.iter().any(|op| matches!(op, Op::Put { .. }));
                if writes {
                    self.rev += 1;
                }
                for op in &t.success {
                    match op {
                        Op::Put { key, value, .. } => {
                            self.kv.insert(key.clone(), (value.clone(), self.rev));
                        }
                        Op::Get { key } => gets.push(self.kv.get(key).map(|(v, m)| KeyValue {
                            key: key.clone(),
                            value: v.clone(),
                            create_revision: *m,
                            mod_revision: *m,
                            version: 1,
                            lease: 0,
                        })),
                        _ => unreachable!(),
                    }
                }
            }
            TxnResult { succeeded: ok, revision: self.rev, gets }
        }

        /// Requests per key id, summed over every replica's total shards.
        fn totals(&self) -> BTreeMap<String, u64> {
            let mut out = BTreeMap::new();
            for (k, (v, _)) in &self.kv {
                if let Some(ShardId { key_id, period: ShardPeriod::Total, .. }) = ShardId::parse(k) {
                    let n: u64 = decode_rows(v).unwrap().values().map(|c| c.requests).sum();
                    *out.entry(key_id).or_default() += n;
                }
            }
            out
        }

        fn marker(&self, edge: &str, epoch: &str) -> Option<u64> {
            let id = MarkerId { edge_id: edge.into(), epoch: epoch.into() };
            self.kv.get(&id.store_key()).map(|(v, _)| Marker::decode(v).unwrap().seq)
        }
    }

    type Outcomes = oneshot::Receiver<Result<Outcome, LedgerError>>;

    fn marker_id(edge: &str) -> MarkerId {
        MarkerId { edge_id: edge.into(), epoch: "e1".into() }
    }

    /// A report of `requests` on each of `keys`, in hour `h` and all-time, for replica `cp`.
    fn report(cp: &str, seq: u64, keys: &[&str], requests: u64) -> (Pending, Outcomes) {
        let (tx, rx) = oneshot::channel();
        let mut adds = Vec::new();
        for key in keys {
            for period in [ShardPeriod::Total, ShardPeriod::Hour(3600 * 500_000)] {
                let shard = ShardId { key_id: (*key).into(), period, cp_id: cp.into() };
                let row = RowKey { model: "m".into(), ..RowKey::default() };
                adds.push((shard.store_key(), row, Counters { requests, ..Counters::default() }));
            }
        }
        (Pending::new(seq, adds, Instant::now(), tx), rx)
    }

    fn push(b: &mut Batcher, cp: &str, edge: &str, seq: u64, keys: &[&str], requests: u64) -> Outcomes {
        let (p, rx) = report(cp, seq, keys, requests);
        b.push(marker_id(edge), p);
        rx
    }

    fn outcome(rx: &mut Outcomes) -> Option<Result<Outcome, LedgerError>> {
        match rx.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Closed) => panic!("reply dropped"),
        }
    }

    /// One store round trip, as the writer makes it; returns the plan's size when it wrote.
    fn step(b: &mut Batcher, store: &mut Fake) -> Option<usize> {
        b.answer_duplicates();
        let keys = b.to_read();
        if !keys.is_empty() {
            let gets = store
                .txn(&Txn {
                    success: keys.iter().map(|k| Op::Get { key: k.clone() }).collect(),
                    ..Txn::default()
                })
                .gets;
            b.loaded(keys.into_iter().zip(gets).collect(), Instant::now());
            return None;
        }
        let mut plan = b.plan(1_000)?;
        let ops = plan.ops();
        assert!(ops <= MAX_OPS && plan.txn.compares.len() == ops, "{ops} puts");
        let txn = std::mem::take(&mut plan.txn);
        let r = store.txn(&txn);
        if r.succeeded {
            b.committed(plan, r.revision, Instant::now());
        } else {
            b.forget(&plan);
        }
        Some(ops)
    }

    fn drain(b: &mut Batcher, store: &mut Fake) -> usize {
        let mut writes = 0;
        for _ in 0..1000 {
            if b.pending() == 0 {
                return writes;
            }
            writes += usize::from(step(b, store).is_some());
        }
        panic!("the batcher did not drain");
    }

    const MAX_OPS: usize = crate::store::MAX_TXN_OPS;

    #[test]
    fn counts_each_seq_once_and_acks_resends() {
        let (mut b, mut store) = (Batcher::new(Limits::default()), Fake::default());
        let mut rxs: Vec<Outcomes> = (1..=3).map(|seq| push(&mut b, "a", "edge", seq, &["k"], 1)).collect();
        assert!(b.to_read().len() == 3, "marker, total and hour shards");
        assert_eq!(drain(&mut b, &mut store), 1, "three reports, one write");
        for rx in &mut rxs {
            assert!(matches!(outcome(rx), Some(Ok(Outcome::Counted))));
        }
        assert_eq!(store.totals()["k"], 3);
        assert_eq!(store.marker("edge", "e1"), Some(3));

        // A resend of 2 and 3 and a new 4: the resends are answered without a write.
        let mut dup = push(&mut b, "a", "edge", 2, &["k"], 1);
        let mut dup2 = push(&mut b, "a", "edge", 3, &["k"], 1);
        let mut new = push(&mut b, "a", "edge", 4, &["k"], 1);
        assert_eq!(b.answer_duplicates(), 2);
        assert!(matches!(outcome(&mut dup), Some(Ok(Outcome::Duplicate))));
        assert!(matches!(outcome(&mut dup2), Some(Ok(Outcome::Duplicate))));
        assert_eq!(drain(&mut b, &mut store), 1);
        assert!(matches!(outcome(&mut new), Some(Ok(Outcome::Counted))));
        assert_eq!(store.totals()["k"], 4);
        let (m, rev) = b.cached_marker(&marker_id("edge")).unwrap();
        assert_eq!((m.unwrap().seq, rev), (4, store.rev));
    }

    #[test]
    fn a_resend_inside_one_batch_counts_once() {
        let (mut b, mut store) = (Batcher::new(Limits::default()), Fake::default());
        // The edge reconnected to this replica while its old stream's reports were waiting.
        let mut rxs: Vec<Outcomes> =
            [1, 2, 1, 2, 3].into_iter().map(|seq| push(&mut b, "a", "edge", seq, &["k"], 10)).collect();
        assert_eq!(drain(&mut b, &mut store), 1);
        let got: Vec<Outcome> = rxs.iter_mut().map(|rx| outcome(rx).unwrap().unwrap()).collect();
        use Outcome::{Counted as C, Duplicate as D};
        assert_eq!(got, [C, C, D, D, C]);
        assert_eq!(store.totals()["k"], 30);
    }

    #[test]
    fn a_marker_moved_elsewhere_fails_the_write_and_drops_what_was_counted() {
        let mut store = Fake::default();
        let (mut a, mut b) = (Batcher::new(Limits::default()), Batcher::new(Limits::default()));
        // Replica a knows the edge's marker (absent) and plans 1..=3...
        let mut on_a: Vec<Outcomes> = (1..=3).map(|seq| push(&mut a, "a", "edge", seq, &["k"], 1)).collect();
        assert_eq!(step(&mut a, &mut store), None, "a reads");
        // ...but the edge failed over: replica b counts 1 and 2 first.
        let _on_b: Vec<Outcomes> = (1..=2).map(|seq| push(&mut b, "b", "edge", seq, &["k"], 1)).collect();
        assert_eq!(drain(&mut b, &mut store), 1);
        assert_eq!(step(&mut a, &mut store), Some(3), "a's write loses its marker compare");
        assert!(on_a.iter_mut().all(|rx| outcome(rx).is_none()), "nothing acked yet");
        assert_eq!(drain(&mut a, &mut store), 1);
        let got: Vec<Outcome> = on_a.iter_mut().map(|rx| outcome(rx).unwrap().unwrap()).collect();
        assert_eq!(got, [Outcome::Duplicate, Outcome::Duplicate, Outcome::Counted]);
        assert_eq!(store.totals()["k"], 3);
        assert_eq!(store.marker("edge", "e1"), Some(3));
    }

    #[test]
    fn a_write_of_unknown_outcome_is_resolved_by_reading_again() {
        let (mut b, mut store) = (Batcher::new(Limits::default()), Fake::default());
        let mut rx = push(&mut b, "a", "edge", 1, &["k"], 5);
        assert_eq!(step(&mut b, &mut store), None);
        // The write commits, but the answer is lost (a timeout): the batcher forgets its keys.
        let mut plan = b.plan(1).unwrap();
        let txn = std::mem::take(&mut plan.txn);
        assert!(store.txn(&txn).succeeded);
        b.forget(&plan);
        drop(plan);
        // Re-read: the marker says 1 was counted; the report is a duplicate, not counted twice.
        assert_eq!(drain(&mut b, &mut store), 0);
        assert!(matches!(outcome(&mut rx), Some(Ok(Outcome::Duplicate))));
        assert_eq!(store.totals()["k"], 5);
        // The shard's value was re-read too: the next report adds to it.
        drop(push(&mut b, "a", "edge", 2, &["k"], 1));
        drain(&mut b, &mut store);
        assert_eq!(store.totals()["k"], 6);
    }

    #[test]
    fn two_writers_under_one_id_never_overwrite_each_other() {
        // Two processes started with the same --id: each compares the shard's revision.
        let mut store = Fake::default();
        let (mut a, mut b) = (Batcher::new(Limits::default()), Batcher::new(Limits::default()));
        drop(push(&mut a, "same", "e1", 1, &["k"], 1));
        drop(push(&mut b, "same", "e2", 1, &["k"], 10));
        step(&mut a, &mut store);
        step(&mut b, &mut store);
        drain(&mut a, &mut store);
        drain(&mut b, &mut store);
        assert_eq!(store.totals()["k"], 11);
    }

    #[test]
    fn transactions_carry_whole_reports_within_the_op_limit() {
        let (mut b, mut store) = (Batcher::new(Limits::default()), Fake::default());
        // 25 keys of its own × (hour + total) + marker = 51 puts per edge: two edges a transaction.
        let mut rxs = Vec::new();
        for e in 0..5 {
            let keys: Vec<String> = (0..25).map(|i| format!("e{e}k{i}")).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            rxs.push(push(&mut b, "a", &format!("edge{e}"), 1, &keys, 1));
        }
        let mut sizes = Vec::new();
        while b.pending() > 0 {
            if let Some(ops) = step(&mut b, &mut store) {
                sizes.push(ops);
                // After every commit, each edge's counts are there exactly when its marker is.
                for e in 0..5 {
                    let counted = store.marker(&format!("edge{e}"), "e1").is_some();
                    let total = store.totals().get(&format!("e{e}k0")).copied().unwrap_or(0);
                    assert_eq!(total, u64::from(counted));
                }
            }
        }
        assert_eq!(sizes, [102, 102, 51]);
        assert!(rxs.iter_mut().all(|rx| matches!(outcome(rx), Some(Ok(Outcome::Counted)))));

        // Edges reporting on the same keys share the shard puts: one transaction for all five.
        let keys: Vec<String> = (0..25).map(|i| format!("shared{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        for e in 0..5 {
            drop(push(&mut b, "a", &format!("edge{e}"), 2, &keys, 1));
        }
        assert_eq!(drain(&mut b, &mut store), 1);
        assert_eq!(store.totals()["shared0"], 5);
    }

    #[test]
    fn a_long_backlog_of_one_edge_is_split_in_seq_order() {
        let (mut b, mut store) = (Batcher::new(Limits::default()), Fake::default());
        // Each report touches 10 new keys: 20 shards; six fit in a transaction, with the marker.
        let mut rxs = Vec::new();
        for seq in 1..=20u64 {
            let keys: Vec<String> = (0..10).map(|i| format!("s{seq}k{i}")).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            rxs.push(push(&mut b, "a", "edge", seq, &keys, 1));
        }
        let mut markers = Vec::new();
        while b.pending() > 0 {
            if step(&mut b, &mut store).is_some() {
                markers.push(store.marker("edge", "e1").unwrap());
            }
        }
        assert_eq!(markers, [6, 12, 18, 20]);
        assert_eq!(store.totals().values().sum::<u64>(), 200);
    }

    #[test]
    fn a_report_no_transaction_can_hold_is_refused() {
        let (mut b, mut store) = (Batcher::new(Limits::default()), Fake::default());
        let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut big = push(&mut b, "a", "edge", 1, &keys, 1);
        let mut small = push(&mut b, "a", "edge", 2, &["k"], 1);
        drain(&mut b, &mut store);
        assert!(matches!(outcome(&mut big), Some(Err(LedgerError::Invalid(m))) if m.contains("fewer keys")));
        assert!(matches!(outcome(&mut small), Some(Ok(Outcome::Counted))));
        // 63 keys: 126 shards and the marker fit.
        drop(push(&mut b, "a", "edge", 3, &keys[..63], 1));
        drain(&mut b, &mut store);
        assert_eq!(store.marker("edge", "e1"), Some(3));
    }

    #[test]
    fn groups_go_in_arrival_order_and_expire_whole() {
        let (mut b, mut store) = (Batcher::new(Limits { ops: 4, bytes: 1 << 20 }), Fake::default());
        let mut first = push(&mut b, "a", "first", 1, &["k"], 1);
        let mut second = push(&mut b, "a", "second", 1, &["j"], 1);
        // 3 puts each: one edge per transaction, the first to arrive first.
        while step(&mut b, &mut store).is_none() {}
        assert!(matches!(outcome(&mut first), Some(Ok(Outcome::Counted))));
        assert!(outcome(&mut second).is_none());
        let later = Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(b.expire(later, std::time::Duration::from_secs(30)), 1);
        assert!(matches!(outcome(&mut second), Some(Err(LedgerError::Unavailable(_)))));
        assert_eq!(b.pending(), 0);
    }

    /// Overload: a report waits past `max_wait` and is failed while later reports of the same
    /// stream are still on their way. Those must not be counted before the failed one's resend,
    /// or the resend would be taken for a duplicate and never counted.
    #[test]
    fn reports_after_an_expired_one_wait_for_its_resend() {
        let (mut b, mut store) = (Batcher::new(Limits { ops: 64, bytes: 1 << 20 }), Fake::default());
        let mut two = push(&mut b, "a", "e", 2, &["k"], 2);
        let later = Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(b.expire(later, std::time::Duration::from_secs(30)), 1);
        assert!(matches!(outcome(&mut two), Some(Err(_))));
        // Report 3 of the old stream arrives after the failure: failed too, not counted.
        let mut three = push(&mut b, "a", "e", 3, &["k"], 3);
        assert!(matches!(outcome(&mut three), Some(Err(_))));
        assert_eq!(b.pending(), 0);
        // The edge resends 2 and 3, in order: both counted.
        let mut two = push(&mut b, "a", "e", 2, &["k"], 2);
        let mut three = push(&mut b, "a", "e", 3, &["k"], 3);
        while step(&mut b, &mut store).is_none() {}
        while b.pending() > 0 {
            let _ = step(&mut b, &mut store);
        }
        assert!(matches!(outcome(&mut two), Some(Ok(Outcome::Counted))));
        assert!(matches!(outcome(&mut three), Some(Ok(Outcome::Counted))));
    }

    /// Edges report to random replicas, resend what was not acked after random failovers, and
    /// replicas interleave their writes: every distinct report is counted exactly once.
    #[test]
    fn failovers_in_any_interleaving_count_exactly_once() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _round in 0..30 {
            let mut store = Fake::default();
            let mut replicas: Vec<Batcher> =
                (0..3).map(|_| Batcher::new(Limits { ops: 12, bytes: 1 << 20 })).collect();
            let cps = ["a", "b", "c"];
            // Each edge: its current replica, next seq, and the unacked reports (seq, key,
            // replies of each send).
            let edges = ["e0", "e1", "e2", "e3"];
            let mut current = [0usize; 4];
            let mut next = [1u64; 4];
            let mut unacked: Vec<Vec<(u64, &str, Vec<Outcomes>)>> = (0..4).map(|_| Vec::new()).collect();
            let mut sent_requests = 0u64;
            for _ in 0..300 {
                match rand(4) {
                    0 | 1 => {
                        // An edge sends a new report on its stream (requests = seq, so the sum
                        // catches a report counted twice or never).
                        let e = rand(4) as usize;
                        let r = current[e];
                        let seq = next[e];
                        next[e] += 1;
                        sent_requests += seq;
                        let key = ["k", "j"][rand(2) as usize];
                        let rx = push(&mut replicas[r], cps[r], edges[e], seq, &[key], seq);
                        unacked[e].push((seq, key, vec![rx]));
                    }
                    2 => {
                        // An edge reconnects (maybe to the same replica) and resends every
                        // unacked report in order; the old replica may still hold them.
                        let e = rand(4) as usize;
                        let r = rand(3) as usize;
                        current[e] = r;
                        for (seq, key, rxs) in &mut unacked[e] {
                            rxs.push(push(&mut replicas[r], cps[r], edges[e], *seq, &[*key], *seq));
                        }
                    }
                    _ => {
                        let r = rand(3) as usize;
                        step(&mut replicas[r], &mut store);
                    }
                }
                // A report is acked once any of its sends was answered.
                for reports in &mut unacked {
                    reports.retain_mut(|(_, _, rxs)| {
                        !rxs.iter_mut().any(|rx| matches!(outcome(rx), Some(Ok(_))))
                    });
                }
            }
            for r in &mut replicas {
                drain(r, &mut store);
            }
            assert_eq!(store.totals().values().sum::<u64>(), sent_requests);
        }
    }
}
