//! Quota grants: how budgets and rate limits hold across every edge without a network hop per
//! request.
//!
//! Each scope's budget (per period) and rate limit (per window) is a pool. An edge spends a
//! share of it locally and, with each usage report, tells what it holds, uses and wants; the
//! replica that got the report answers on the ack with the edge's new allowance. The pool's state
//! (its limit, what was issued, each edge's share) lives in the store and is updated with a
//! compare on its revision, so replicas never hand out the same remainder twice, and a restart
//! forgets nothing.
//!
//! Why the shares are sized as they are: a share is at least what the asking request needs and
//! at most half of what is left divided among the edges using the pool, so early on edges rarely
//! ask and near the end shares shrink to single requests. When what is left cannot cover a
//! request, edges holding more than they use are asked to hand it back (on their next ack), and
//! shares of edge processes that stopped reporting are taken back after `stale_share`; only when
//! nothing can be reclaimed is the pool exhausted for that request.
//!
//! The bound: the issued total never exceeds the limit (spend from before the pool existed
//! counts as issued), and an edge reserves a request's worst case before forwarding, so spend
//! exceeds the limit only by what answers cost beyond their reservations.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use llmgw_shared::proto::{self, QuotaGrant, QuotaHolding, QuotaKind, QuotaPoolState, QuotaShare, resource};
use prost::Message;

use crate::broadcast::Broadcaster;
use crate::store::{Compare, CompareOp, CompareTarget, Op, Store, Txn};
use crate::usage::{Clock, Ledger, Period, Scope};

pub const PREFIX: &str = "/llmgw/v1/quota/";
/// A share whose edge process has not reported for this long is taken back. Edges stop spending
/// what they hold after half of it without a control plane (see the edge's `quota` module), so
/// a share taken back is never spent by a live edge.
pub const STALE_SHARE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct QuotaOptions {
    /// The window rate limits count in; RPM and TPM are scaled to it (a minute by default;
    /// tests make it shorter).
    pub rate_window: Duration,
    /// A share whose edge process has not reported for this long is taken back.
    pub stale_share: Duration,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolId {
    scope: String,
    kind: i32,
    period: String,
}

impl PoolId {
    fn store_key(&self) -> Vec<u8> {
        let kind = match QuotaKind::try_from(self.kind) {
            Ok(QuotaKind::Usd) => "usd",
            Ok(QuotaKind::Requests) => "requests",
            Ok(QuotaKind::Tokens) => "tokens",
            _ => "unknown",
        };
        format!("{PREFIX}{}/{kind}/{}", self.scope, self.period).into_bytes()
    }
}

/// A pool's limit in the period containing now.
struct Limit {
    limit: u64,
    period: String,
    end_ms: i64,
    /// Spend counted before the pool existed (a budget added mid-period, a restart of the
    /// period's accounting): issued from the start.
    already: u64,
}

pub struct Quotas {
    store: Arc<dyn Store>,
    broadcaster: Arc<Broadcaster>,
    ledger: Arc<Ledger>,
    opts: QuotaOptions,
    /// The newest report seq whose holdings were applied, per edge process: a resent report's
    /// holdings are stale.
    seen: Mutex<HashMap<(String, String), u64>>,
    /// Pools each edge is asked to hand back on its next ack.
    releases: Mutex<HashMap<String, HashSet<PoolId>>>,
    /// Pool states: (current in memory, as stored, the stored mod_revision).
    cache: tokio::sync::Mutex<HashMap<PoolId, (QuotaPoolState, QuotaPoolState, i64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Quotas {
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        broadcaster: Arc<Broadcaster>,
        ledger: Arc<Ledger>,
        opts: QuotaOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            broadcaster,
            ledger,
            opts,
            seen: Mutex::default(),
            releases: Mutex::default(),
            cache: tokio::sync::Mutex::default(),
        })
    }

    /// The grants for the ack of report `seq` of `(edge_id, epoch)`, after its usage committed.
    pub async fn on_report(
        &self,
        edge_id: &str,
        epoch: &str,
        seq: u64,
        holdings: &[QuotaHolding],
    ) -> Vec<QuotaGrant> {
        let fresh = {
            let mut seen = lock(&self.seen);
            let last = seen.entry((edge_id.to_owned(), epoch.to_owned())).or_insert(0);
            let fresh = seq > *last;
            *last = (*last).max(seq);
            fresh
        };
        let mut grants = Vec::new();
        if fresh {
            for h in holdings {
                match self.holding(edge_id, epoch, h).await {
                    Ok(Some(g)) => grants.push(g),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(scope = %h.scope, error = %e, "quota grant failed; the edge will ask again")
                    }
                }
            }
        }
        let asked = lock(&self.releases).remove(edge_id).unwrap_or_default();
        if !asked.is_empty() {
            let cache = self.cache.lock().await;
            for pool in asked {
                if let Some((state, _, _)) = cache.get(&pool) {
                    let allowance = share_of(state, edge_id, epoch).map_or(0, |s| s.allowance);
                    grants.push(QuotaGrant {
                        scope: pool.scope.clone(),
                        period: pool.period.clone(),
                        kind: pool.kind,
                        allowance,
                        exhausted: false,
                        period_end_unix_ms: state.period_end_unix_ms,
                        limit: state.limit,
                        remaining: state.limit.saturating_sub(state.issued),
                        release: true,
                    });
                }
            }
        }
        grants
    }

    fn limit_of(&self, scope: &str, kind: QuotaKind, now_ms: i64) -> Option<Limit> {
        let view = self.broadcaster.view();
        let parsed: Scope = scope.parse().ok()?;
        let (limits, budget) = match &parsed {
            Scope::Key(id) => {
                let (k, _) = view.key(id)?;
                (k.limits, k.budget)
            }
            Scope::Project(name) => match &view.get(proto::ResourceKind::Project, name)?.resource.resource {
                Some(resource::Resource::Project(p)) => (p.limits, p.budget),
                _ => return None,
            },
            Scope::Team(name) => match &view.get(proto::ResourceKind::Team, name)?.resource.resource {
                Some(resource::Resource::Team(t)) => (t.limits, t.budget),
                _ => return None,
            },
        };
        let now = now_ms.div_euclid(1000);
        match kind {
            QuotaKind::Usd => {
                let b = budget.filter(|b| b.limit_usd > 0.0)?;
                let period =
                    Period::from_proto(proto::Period::try_from(b.period).unwrap_or(proto::Period::Total));
                let end_ms = period.window(now).map_or(i64::MAX, |(_, end)| end * 1000);
                Some(Limit {
                    limit: (b.limit_usd * 1e6).round() as u64,
                    period: period.id(now),
                    end_ms,
                    already: self.ledger.spend_at(&parsed, period, now).cost_micro_usd,
                })
            }
            QuotaKind::Requests | QuotaKind::Tokens => {
                let per_minute = match kind {
                    QuotaKind::Requests => limits?.rpm,
                    _ => limits?.tpm,
                };
                if per_minute == 0 {
                    return None;
                }
                let window = (self.opts.rate_window.as_millis() as i64).max(1);
                let index = now_ms.div_euclid(window);
                let limit = (u128::from(per_minute) * window as u128).div_ceil(60_000) as u64;
                Some(Limit {
                    limit: limit.max(1),
                    period: format!("w{window}-{index}"),
                    end_ms: (index + 1) * window,
                    already: 0,
                })
            }
            QuotaKind::Unspecified => None,
        }
    }

    async fn holding(
        &self,
        edge_id: &str,
        epoch: &str,
        h: &QuotaHolding,
    ) -> Result<Option<QuotaGrant>, String> {
        let kind = QuotaKind::try_from(h.kind).map_err(|_| "unknown quota kind".to_owned())?;
        let now_ms = self.opts.clock.now_unix_ms();
        let Some(limit) = self.limit_of(&h.scope, kind, now_ms) else {
            // No such limit (any more): nothing to hold back.
            return Ok(Some(QuotaGrant {
                scope: h.scope.clone(),
                period: "unlimited".into(),
                kind: h.kind,
                allowance: u64::MAX / 4,
                period_end_unix_ms: i64::MAX,
                ..QuotaGrant::default()
            }));
        };
        let pool = PoolId { scope: h.scope.clone(), kind: h.kind, period: limit.period.clone() };
        let current = h.period == limit.period;
        if !current && h.want == 0 {
            // An old period's holding: nothing to decide until the edge asks in the new one.
            return Ok(None);
        }
        let mut cache = self.cache.lock().await;
        cache.retain(|_, (s, _, _)| s.period_end_unix_ms > now_ms - 60_000);
        for _attempt in 0..8 {
            let (mut state, stored, rev) = match cache.get(&pool) {
                Some(c) => c.clone(),
                None => {
                    let (s, rev) = self.load(&pool, &limit).await?;
                    (s.clone(), s, rev)
                }
            };
            let (grant, releasers) =
                decide(&mut state, &limit, edge_id, epoch, h, current, now_ms, self.opts.stale_share);
            let grant =
                QuotaGrant { scope: h.scope.clone(), period: limit.period.clone(), kind: h.kind, ..grant };
            if rev != 0 && unchanged_but_fresh(&stored, &state, self.opts.stale_share) {
                // Only what the edge uses moved (or an edge asks again for what nothing can
                // change): kept in memory, written with the next real change or before the
                // stored report times go stale.
                cache.insert(pool.clone(), (state, stored, rev));
                let mut rel = lock(&self.releases);
                for e in releasers {
                    rel.entry(e).or_default().insert(pool.clone());
                }
                return Ok(Some(grant));
            }
            let put = Op::Put { key: pool.store_key(), value: state.encode_to_vec(), lease: 0 };
            let cmp = Compare {
                key: pool.store_key(),
                op: CompareOp::Equal,
                target: CompareTarget::ModRevision(rev),
            };
            let res = self
                .store
                .txn(Txn { compares: vec![cmp], success: vec![put], failure: vec![] })
                .await
                .map_err(|e| e.to_string())?;
            if res.succeeded {
                cache.insert(pool.clone(), (state.clone(), state, res.revision));
                let mut rel = lock(&self.releases);
                for e in releasers {
                    rel.entry(e).or_default().insert(pool.clone());
                }
                return Ok(Some(grant));
            }
            // Another replica changed the pool: read it again.
            cache.remove(&pool);
        }
        Err("the pool kept changing under this replica".into())
    }

    async fn load(&self, pool: &PoolId, limit: &Limit) -> Result<(QuotaPoolState, i64), String> {
        match self.store.get(&pool.store_key()).await.map_err(|e| e.to_string())? {
            Some(kv) => {
                let s = QuotaPoolState::decode(kv.value.as_slice()).map_err(|e| e.to_string())?;
                Ok((s, kv.mod_revision))
            }
            None => Ok((
                QuotaPoolState {
                    limit: limit.limit,
                    issued: limit.already,
                    period_end_unix_ms: limit.end_ms,
                    shares: Vec::new(),
                },
                0,
            )),
        }
    }
}

/// The pool is as stored except for what edges use and when they reported, none of which is
/// close to going stale: worth no write.
fn unchanged_but_fresh(before: &QuotaPoolState, after: &QuotaPoolState, stale: Duration) -> bool {
    if before.limit != after.limit
        || before.issued != after.issued
        || before.period_end_unix_ms != after.period_end_unix_ms
        || before.shares.len() != after.shares.len()
    {
        return false;
    }
    let quarter = stale.as_millis() as i64 / 4;
    before.shares.iter().zip(&after.shares).all(|(b, a)| {
        b.edge_id == a.edge_id
            && b.epoch == a.epoch
            && b.allowance == a.allowance
            && a.updated_unix_ms - b.updated_unix_ms < quarter
    })
}

fn share_of<'a>(s: &'a QuotaPoolState, edge_id: &str, epoch: &str) -> Option<&'a QuotaShare> {
    s.shares.iter().find(|x| x.edge_id == edge_id && x.epoch == epoch)
}

/// Applies one holding to a pool and sizes the edge's share. Returns the grant (without its
/// scope/period/kind) and the edges to ask for a release.
#[allow(clippy::too_many_arguments)]
fn decide(
    state: &mut QuotaPoolState,
    limit: &Limit,
    edge_id: &str,
    epoch: &str,
    h: &QuotaHolding,
    current: bool,
    now_ms: i64,
    stale: Duration,
) -> (QuotaGrant, Vec<String>) {
    // A changed limit (config edited mid-period) applies from now on.
    state.limit = limit.limit;
    state.period_end_unix_ms = limit.end_ms;
    let stale_ms = stale.as_millis() as i64;
    // Take back shares of edge processes that went away: a newer process of the same edge, or
    // no report for `stale`. What they used stays issued.
    for s in &mut state.shares {
        let reporting = s.edge_id == edge_id && s.epoch == epoch;
        let replaced = s.edge_id == edge_id && s.epoch != epoch;
        if !reporting && (replaced || now_ms - s.updated_unix_ms > stale_ms) && s.allowance > s.used {
            state.issued = state.issued.saturating_sub(s.allowance - s.used);
            s.allowance = s.used;
        }
    }
    let idx = match state.shares.iter().position(|s| s.edge_id == edge_id && s.epoch == epoch) {
        Some(i) => i,
        None => {
            state.shares.push(QuotaShare {
                edge_id: edge_id.to_owned(),
                epoch: epoch.to_owned(),
                allowance: 0,
                used: 0,
                updated_unix_ms: now_ms,
            });
            state.shares.len() - 1
        }
    };
    let (held, used) = if current { (h.allowance, h.used) } else { (0, 0) };
    {
        let share = &mut state.shares[idx];
        // Only a declared release lowers a share: a lower allowance without one means grants
        // sent since are still on their way to the edge (its allowance never exceeds the share).
        if current && h.released && held < share.allowance {
            state.issued = state.issued.saturating_sub(share.allowance - held);
            share.allowance = held;
        } else if current && held > share.allowance {
            // The share was taken back as stale while the edge was alive but unheard (a store
            // outage): it still holds the allowance, so count it again and ask for it back.
            state.issued += held - share.allowance;
            share.allowance = held;
        }
        share.used = used;
        share.updated_unix_ms = now_ms;
    }
    let mut exhausted = false;
    let mut releasers = Vec::new();
    if h.want > 0 {
        let left = state.limit.saturating_sub(state.issued);
        if left >= h.want {
            let active = state
                .shares
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    *i == idx || (now_ms - s.updated_unix_ms <= 2_000 && (s.used > 0 || s.allowance > 0))
                })
                .count()
                .max(1) as u64;
            let give = h.want.max(left / (2 * active)).min(left);
            state.shares[idx].allowance += give;
            state.issued += give;
        } else {
            for (i, s) in state.shares.iter().enumerate() {
                if i != idx && s.allowance > s.used {
                    releasers.push(s.edge_id.clone());
                }
            }
            exhausted = releasers.is_empty();
        }
    }
    // Shares that hold nothing and used nothing only take space.
    let keep = state.shares[idx].edge_id.clone();
    state.shares.retain(|s| s.allowance > 0 || s.used > 0 || (s.edge_id == keep && s.epoch == epoch));
    let allowance =
        state.shares.iter().find(|s| s.edge_id == edge_id && s.epoch == epoch).map_or(0, |s| s.allowance);
    // More out than the limit: it was lowered mid-period (a config edit), or a share counted
    // again after a store outage. Every edge holding more than it uses hands the rest back, so
    // the new limit holds without waiting for some edge to run short and ask.
    if state.issued > state.limit {
        for s in &state.shares {
            if s.allowance > s.used && !releasers.contains(&s.edge_id) {
                releasers.push(s.edge_id.clone());
            }
        }
    }
    let grant = QuotaGrant {
        allowance,
        exhausted,
        period_end_unix_ms: state.period_end_unix_ms,
        limit: state.limit,
        remaining: state.limit.saturating_sub(state.issued),
        ..QuotaGrant::default()
    };
    (grant, releasers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u64) -> Limit {
        Limit { limit: n, period: "p".into(), end_ms: i64::MAX, already: 0 }
    }

    fn holding(allowance: u64, used: u64, want: u64, released: bool) -> QuotaHolding {
        QuotaHolding {
            scope: "key:k".into(),
            kind: QuotaKind::Usd.into(),
            period: "p".into(),
            allowance,
            used,
            want,
            released,
        }
    }

    const STALE: Duration = Duration::from_secs(60);

    #[test]
    fn shares_shrink_as_the_pool_empties_and_never_exceed_it() {
        let mut s = QuotaPoolState { limit: 100, ..QuotaPoolState::default() };
        let (g, _) = decide(&mut s, &limit(100), "a", "1", &holding(0, 0, 1, false), true, 0, STALE);
        assert_eq!(g.allowance, 50, "half of what is left for the only active edge");
        let (g, _) = decide(&mut s, &limit(100), "b", "1", &holding(0, 0, 1, false), true, 0, STALE);
        assert_eq!(g.allowance, 12, "a quarter of the 50 left, shared by two active edges");
        assert_eq!(s.issued, 62);
        // Asking for more than is left: a, which holds more than it uses, is asked to release.
        let (g, releasers) =
            decide(&mut s, &limit(100), "b", "1", &holding(12, 12, 40, false), true, 0, STALE);
        assert!(!g.exhausted);
        assert_eq!(releasers, ["a"]);
        // a releases down to what it used; b then gets what it asked.
        decide(&mut s, &limit(100), "a", "1", &holding(10, 10, 0, true), true, 0, STALE);
        assert_eq!(s.issued, 22);
        let (g, _) = decide(&mut s, &limit(100), "b", "1", &holding(12, 12, 40, false), true, 0, STALE);
        assert!(g.allowance >= 52 && s.issued <= 100, "{g:?} {s:?}");
        // Nothing left and nothing to reclaim: exhausted.
        let mut full = QuotaPoolState { limit: 10, issued: 10, ..QuotaPoolState::default() };
        let (g, releasers) =
            decide(&mut full, &limit(10), "c", "1", &holding(0, 0, 1, false), true, 0, STALE);
        assert!(g.exhausted && releasers.is_empty());
    }

    #[test]
    fn a_limit_lowered_below_what_is_out_asks_every_holder_to_hand_back_the_rest() {
        let mut s = QuotaPoolState { limit: 100, ..QuotaPoolState::default() };
        decide(&mut s, &limit(100), "a", "1", &holding(0, 0, 1, false), true, 0, STALE);
        decide(&mut s, &limit(100), "b", "1", &holding(0, 0, 1, false), true, 0, STALE);
        assert_eq!(s.issued, 62);
        // Nothing asked for more: the limit alone makes both release.
        let (g, releasers) = decide(&mut s, &limit(30), "a", "1", &holding(50, 10, 0, false), true, 0, STALE);
        assert_eq!((g.limit, g.remaining), (30, 0));
        assert_eq!(releasers, ["a", "b"]);
        decide(&mut s, &limit(30), "a", "1", &holding(10, 10, 0, true), true, 0, STALE);
        let (_, releasers) = decide(&mut s, &limit(30), "b", "1", &holding(3, 3, 0, true), true, 0, STALE);
        assert_eq!(s.issued, 13);
        assert!(releasers.is_empty());
        // What is left under the new limit is granted again.
        let (g, _) = decide(&mut s, &limit(30), "b", "1", &holding(3, 3, 5, false), true, 0, STALE);
        assert!(g.allowance >= 8 && s.issued <= 30, "{g:?} {s:?}");
    }

    #[test]
    fn a_lower_allowance_is_a_release_only_when_declared() {
        let mut s = QuotaPoolState { limit: 100, ..QuotaPoolState::default() };
        decide(&mut s, &limit(100), "a", "1", &holding(0, 0, 1, false), true, 0, STALE);
        // The edge has not applied the grant yet: its lower allowance is not a release.
        decide(&mut s, &limit(100), "a", "1", &holding(0, 0, 0, false), true, 0, STALE);
        assert_eq!(s.issued, 50);
        decide(&mut s, &limit(100), "a", "1", &holding(5, 5, 0, true), true, 0, STALE);
        assert_eq!(s.issued, 5);
    }

    #[test]
    fn stale_and_replaced_shares_are_taken_back_and_a_live_edge_is_counted_again() {
        let mut s = QuotaPoolState { limit: 100, ..QuotaPoolState::default() };
        decide(&mut s, &limit(100), "a", "1", &holding(0, 0, 1, false), true, 0, STALE);
        decide(&mut s, &limit(100), "b", "1", &holding(0, 0, 1, false), true, 0, STALE);
        let issued = s.issued;
        // A restarted a (new epoch) takes its old share back, minus what it used (nothing).
        decide(&mut s, &limit(100), "a", "2", &holding(0, 0, 0, false), true, 1_000, STALE);
        assert_eq!(s.issued, issued - 50);
        // b silent for longer than STALE: taken back when someone else reports.
        let later = 1_000 + STALE.as_millis() as i64 + 1;
        decide(&mut s, &limit(100), "a", "2", &holding(0, 0, 0, false), true, later, STALE);
        assert_eq!(s.issued, 0);
        // b was alive after all and still holds 12: it counts again.
        decide(&mut s, &limit(100), "b", "1", &holding(12, 3, 0, false), true, later, STALE);
        assert_eq!(s.issued, 12);
    }
}
