//! Cluster-wide budgets and rate limits, spent locally.
//!
//! The control plane hands this edge an allowance in each quota pool (a scope's budget for the
//! current period, or its rate limit's requests or tokens for the current window). Before
//! forwarding, a request reserves its worst case in every pool on its path; after the answer it
//! settles the actual amount. A request that does not fit asks for more (an out-of-cycle report)
//! and waits a bounded time for the grant; a pool the control plane declared exhausted refuses at
//! once. Nothing here touches the network: the reporter carries holdings out and grants in.
//!
//! The bound this gives: the edges of the cluster together use at most what was granted, and the
//! control plane never grants more than a pool's limit, so a pool is exceeded only by the amount
//! by which settled amounts exceed their reservations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use llmgw_shared::proto::{QuotaGrant, QuotaHolding, QuotaKind};

use crate::FastMap;
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// micro-USD of a budget.
    Usd,
    Requests,
    Tokens,
}

impl Kind {
    fn proto(self) -> QuotaKind {
        match self {
            Self::Usd => QuotaKind::Usd,
            Self::Requests => QuotaKind::Requests,
            Self::Tokens => QuotaKind::Tokens,
        }
    }

    fn from_proto(k: i32) -> Option<Self> {
        match QuotaKind::try_from(k).ok()? {
            QuotaKind::Usd => Some(Self::Usd),
            QuotaKind::Requests => Some(Self::Requests),
            QuotaKind::Tokens => Some(Self::Tokens),
            QuotaKind::Unspecified => None,
        }
    }
}

/// One amount a request needs from one pool.
#[derive(Debug, Clone)]
pub struct Ask {
    /// `key:{id}`, `project:{name}` or `team:{name}`.
    pub scope: Arc<str>,
    pub kind: Kind,
    pub amount: u64,
    /// The pool's limit and period as the config states them: used only by an edge serving a
    /// config file, which is its own grant authority (a control plane decides them otherwise).
    pub limit: u64,
    pub window: Window,
}

/// The period a pool's limit applies to.
#[derive(Debug, Clone, Copy)]
pub enum Window {
    Budget(llmgw_shared::period::Period),
    /// Rate limits: a minute.
    Minute,
}

impl Window {
    /// The period containing `now_ms`: its id and end (Unix ms).
    fn current(self, now_ms: i64) -> (String, i64) {
        match self {
            Self::Budget(p) => {
                let now = now_ms.div_euclid(1000);
                (p.id(now), p.window(now).map_or(i64::MAX, |(_, end)| end * 1000))
            }
            Self::Minute => {
                let i = now_ms.div_euclid(60_000);
                (format!("m{i}"), (i + 1) * 60_000)
            }
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    Budget { scope: Arc<str> },
    Rate { scope: Arc<str>, kind: Kind, limit: u64, remaining: u64, reset: Duration },
}

/// How long an edge spends what it holds without a control plane: half the control plane's
/// `STALE_SHARE` (60 s), after which a silent edge's share is taken back.
const CUT_OFF_LIMIT_MS: i64 = 30_000;

#[derive(Default)]
struct Pool {
    /// The period the control plane named; empty until its first grant. Shared with the
    /// reservations taken in it, so reserving copies no string.
    period: Arc<str>,
    period_end_ms: i64,
    allowance: u64,
    used: u64,
    want: u64,
    exhausted: bool,
    limit: u64,
    remaining: u64,
    /// Reports numbered below this carried a higher allowance than we now hold (we released):
    /// grants on their acks predate the release and must not raise the allowance again.
    released_at_seq: u64,
    last_use: Option<Instant>,
    /// Changed since the last report.
    dirty: bool,
}

/// What a request reserved; settled (or dropped with the request) exactly once.
#[derive(Debug, Default)]
pub struct Reservation {
    items: Vec<(Arc<str>, Kind, Arc<str>, u64)>,
    /// The first request and token rate pools on the path as this reservation left them: what
    /// the `x-ratelimit-*` headers say.
    pub rate: [Option<RateStatus>; 2],
}

/// A rate pool's figures for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub tokens: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

impl Reservation {
    /// Keeps the figures of the first pool of each rate kind, as reserved: a pool without a
    /// limit (a budget-only scope) still counts as the first and gives no headers.
    fn note_rate(&mut self, kind: Kind, pool: &Pool, now_ms: i64, first: &mut [bool; 2]) {
        let i = match kind {
            Kind::Usd => return,
            Kind::Requests => 0,
            Kind::Tokens => 1,
        };
        if !std::mem::take(&mut first[i]) || pool.limit == 0 {
            return;
        }
        let left = pool.allowance.saturating_sub(pool.used) + pool.remaining;
        self.rate[i] = Some(RateStatus {
            tokens: kind == Kind::Tokens,
            limit: pool.limit,
            remaining: left.min(pool.limit),
            reset: reset_at(pool.period_end_ms, now_ms),
        });
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

pub struct Quota {
    pools: Mutex<FastMap<(Arc<str>, Kind), Pool>>,
    /// Grants arrived: waiting requests look again.
    granted: Notify,
    /// A request is waiting for more: the reporter sends a report now.
    pub asked: Notify,
    /// The reporter has a live stream to a control plane.
    connected: AtomicBool,
    /// Since when no control plane answers (Unix ms; 0 = connected or never connected yet).
    cut_off_since: std::sync::atomic::AtomicI64,
    /// Spend past the allowance while no control plane is reachable (`budget_fail_mode: open`).
    fail_open: bool,
    /// No control plane: this edge grants itself each pool's whole limit (a config file).
    local: bool,
    wait: Duration,
    idle: Duration,
}

impl Quota {
    /// An edge serving a config file: budgets and limits hold per process, from the limits in
    /// the file, and start again from nothing when the process restarts.
    #[must_use]
    pub fn local() -> Self {
        Self { local: true, ..Self::new(false, Duration::ZERO) }
    }

    #[must_use]
    pub fn new(fail_open: bool, wait: Duration) -> Self {
        Self {
            local: false,
            pools: Mutex::default(),
            granted: Notify::new(),
            asked: Notify::new(),
            connected: AtomicBool::new(false),
            cut_off_since: std::sync::atomic::AtomicI64::new(0),
            fail_open,
            wait,
            idle: Duration::from_secs(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FastMap<(Arc<str>, Kind), Pool>> {
        self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        if up {
            self.cut_off_since.store(0, Ordering::Relaxed);
        } else {
            let _ = self.cut_off_since.compare_exchange(0, unix_ms(), Ordering::Relaxed, Ordering::Relaxed);
        }
        if !up {
            // Requests waiting for a grant that cannot come now decide (fail mode) at once.
            self.granted.notify_waiters();
        }
    }

    /// Reserves every ask, waiting up to the configured time for grants where one does not fit.
    ///
    /// # Errors
    /// The first pool that cannot give what the request needs.
    pub async fn reserve(&self, asks: &[Ask]) -> Result<Reservation, Refusal> {
        if asks.is_empty() {
            return Ok(Reservation::default());
        }
        let deadline = Instant::now() + self.wait;
        loop {
            let notified = self.granted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let short = match self.try_reserve(asks) {
                Ok(r) => return Ok(r),
                Err(short) => short,
            };
            if let Some(refusal) = short.refusal {
                return Err(refusal);
            }
            if !self.connected.load(Ordering::Relaxed) && self.fail_open {
                return Ok(self.force_reserve(asks));
            }
            self.asked.notify_one();
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return Err(self.refusal(&short.ask));
            }
        }
    }

    fn try_reserve(&self, asks: &[Ask]) -> Result<Reservation, Short> {
        let now = Instant::now();
        let now_ms = unix_ms();
        let since = self.cut_off_since.load(Ordering::Relaxed);
        // Cut off for long enough that the control plane may take our shares back: stop
        // spending them (closed mode; open mode serves on regardless, see `reserve`).
        let expired = since != 0 && now_ms - since >= CUT_OFF_LIMIT_MS;
        let mut pools = self.lock();
        // Every pool that is short asks now, in one report: asking for the first only would
        // cost a round trip per pool.
        let mut short: Option<Short> = None;
        for a in asks {
            let pool = pools.entry((a.scope.clone(), a.kind)).or_default();
            if expired {
                release(pool);
            }
            if self.local && (pool.period.is_empty() || now_ms >= pool.period_end_ms) {
                let (period, end) = a.window.current(now_ms);
                *pool = Pool {
                    period: period.into(),
                    period_end_ms: end,
                    allowance: a.limit,
                    limit: a.limit,
                    exhausted: true,
                    ..Pool::default()
                };
            }
            if !pool.period.is_empty() && now_ms >= pool.period_end_ms {
                // The period (a rate window, mostly) is over: its allowance is not for this one.
                *pool = Pool { last_use: pool.last_use, dirty: true, ..Pool::default() };
            }
            if pool.used.saturating_add(a.amount) > pool.allowance {
                let want = pool.used.saturating_add(a.amount) - pool.allowance;
                if want > pool.want {
                    pool.want = want;
                    pool.dirty = true;
                }
                // Asked for is in use: what is granted for this request must not be handed
                // back as idle before the request can take it (with several pools short, the
                // first granted would otherwise be released while the others are asked for).
                pool.last_use = Some(now);
                // Refused at once, but the want still goes out with the next report: a new
                // period (or a freed share) is how an exhausted pool opens again.
                if pool.exhausted && !pool.period.is_empty() {
                    let refusal = Some(refusal_of(a, pool));
                    return Err(Short { ask: a.clone(), refusal });
                }
                short.get_or_insert_with(|| Short { ask: a.clone(), refusal: None });
            }
        }
        if let Some(short) = short {
            return Err(short);
        }
        let mut r = Reservation { items: Vec::with_capacity(asks.len()), rate: [None; 2] };
        let mut low = false;
        let mut first = [true; 2];
        for a in asks {
            if let Some(pool) = pools.get_mut(&(a.scope.clone(), a.kind)) {
                pool.used += a.amount;
                pool.last_use = Some(now);
                pool.dirty = true;
                r.items.push((a.scope.clone(), a.kind, pool.period.clone(), a.amount));
                r.note_rate(a.kind, pool, now_ms, &mut first);
                // Running low: ask for more now, while this and the next requests still fit,
                // so steady traffic never waits for a grant.
                if !self.local
                    && !pool.exhausted
                    && pool.want == 0
                    && pool.allowance - pool.used < pool.allowance / 4
                {
                    pool.want = a.amount.max(1);
                    low = true;
                }
            }
        }
        drop(pools);
        if low {
            self.asked.notify_one();
        }
        Ok(r)
    }

    fn force_reserve(&self, asks: &[Ask]) -> Reservation {
        let mut pools = self.lock();
        let mut r = Reservation { items: Vec::with_capacity(asks.len()), rate: [None; 2] };
        let now_ms = unix_ms();
        let mut first = [true; 2];
        for a in asks {
            let pool = pools.entry((a.scope.clone(), a.kind)).or_default();
            pool.used += a.amount;
            pool.dirty = true;
            r.items.push((a.scope.clone(), a.kind, pool.period.clone(), a.amount));
            r.note_rate(a.kind, pool, now_ms, &mut first);
        }
        r
    }

    fn refusal(&self, a: &Ask) -> Refusal {
        let pools = self.lock();
        match pools.get(&(a.scope.clone(), a.kind)) {
            Some(pool) => refusal_of(a, pool),
            None => refusal_of(a, &Pool::default()),
        }
    }

    /// The actual amounts: micro-USD spent and tokens used; a request always counts as one.
    pub fn settle(&self, r: Reservation, usd: u64, tokens: u64) {
        if r.items.is_empty() {
            return;
        }
        let mut pools = self.lock();
        for (scope, kind, period, reserved) in r.items {
            let Some(pool) = pools.get_mut(&(scope, kind)) else { continue };
            // Reserved in a period that has ended: its pool was reset, nothing to give back.
            if pool.period != period {
                continue;
            }
            let actual = match kind {
                Kind::Usd => usd,
                Kind::Tokens => tokens,
                Kind::Requests => reserved,
            };
            pool.used = pool.used.saturating_sub(reserved).saturating_add(actual);
            pool.dirty = true;
        }
    }

    /// Applies the grants that came with the ack of report `seq`.
    pub fn apply(&self, grants: &[QuotaGrant], seq: u64) {
        if grants.is_empty() {
            return;
        }
        let mut pools = self.lock();
        for g in grants {
            let Some(kind) = Kind::from_proto(g.kind) else { continue };
            let pool = pools.entry((Arc::from(g.scope.as_str()), kind)).or_default();
            if g.period != *pool.period {
                if g.period_end_unix_ms < pool.period_end_ms {
                    continue;
                }
                // A new period: what was used belongs to the old one.
                *pool = Pool { period: g.period.as_str().into(), last_use: pool.last_use, ..Pool::default() };
                pool.allowance = g.allowance;
            } else if seq >= pool.released_at_seq {
                pool.allowance = pool.allowance.max(g.allowance);
            }
            pool.period_end_ms = g.period_end_unix_ms;
            pool.exhausted = g.exhausted;
            pool.limit = g.limit;
            pool.remaining = g.remaining;
            if pool.used.saturating_add(pool.want) <= pool.allowance || g.exhausted {
                pool.want = 0;
            }
            if g.release {
                release(pool);
            }
            pool.dirty = true;
        }
        drop(pools);
        self.granted.notify_waiters();
    }

    /// The holdings for the report about to be numbered `seq`: pools that changed, with idle
    /// allowances handed back.
    pub fn holdings(&self, seq: u64) -> Vec<QuotaHolding> {
        let now = Instant::now();
        let mut pools = self.lock();
        let mut out = Vec::new();
        for ((scope, kind), pool) in pools.iter_mut() {
            let idle = pool.last_use.is_none_or(|t| now.duration_since(t) >= self.idle);
            if idle && pool.want == 0 && pool.allowance > pool.used {
                release(pool);
            }
            let released = pool.released_at_seq == u64::MAX;
            if released {
                pool.released_at_seq = seq;
            }
            if !pool.dirty && pool.want == 0 {
                continue;
            }
            pool.dirty = false;
            out.push(QuotaHolding {
                scope: scope.to_string(),
                kind: kind.proto().into(),
                period: pool.period.to_string(),
                allowance: pool.allowance,
                used: pool.used,
                want: pool.want,
                released,
            });
        }
        out
    }
}

/// Hands back what the pool holds beyond what it uses; the next report carries the lower
/// allowance, and grants computed before the control plane saw it are ignored.
fn release(pool: &mut Pool) {
    if pool.allowance > pool.used {
        pool.allowance = pool.used;
        pool.released_at_seq = u64::MAX;
        pool.dirty = true;
    }
}

struct Short {
    ask: Ask,
    refusal: Option<Refusal>,
}

fn refusal_of(a: &Ask, pool: &Pool) -> Refusal {
    match a.kind {
        Kind::Usd => Refusal::Budget { scope: a.scope.clone() },
        kind => Refusal::Rate {
            scope: a.scope.clone(),
            kind,
            limit: pool.limit,
            remaining: pool.allowance.saturating_sub(pool.used),
            reset: reset_in(pool.period_end_ms),
        },
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn reset_in(end_ms: i64) -> Duration {
    reset_at(end_ms, unix_ms())
}

fn reset_at(end_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(end_ms.saturating_sub(now_ms).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(scope: &str, period: &str, allowance: u64, exhausted: bool) -> QuotaGrant {
        QuotaGrant {
            scope: scope.into(),
            period: period.into(),
            kind: QuotaKind::Usd.into(),
            allowance,
            exhausted,
            period_end_unix_ms: if period == "d2" { i64::MAX } else { i64::MAX - 1 },
            limit: 100,
            remaining: 0,
            release: false,
        }
    }

    fn ask(amount: u64) -> Vec<Ask> {
        vec![Ask {
            scope: "key:k".into(),
            kind: Kind::Usd,
            amount,
            limit: 10,
            window: Window::Budget(llmgw_shared::period::Period::Daily),
        }]
    }

    #[tokio::test]
    async fn a_config_file_edge_is_its_own_authority() {
        let q = Quota::local();
        q.reserve(&ask(6)).await.unwrap();
        q.reserve(&ask(4)).await.unwrap();
        assert!(matches!(q.reserve(&ask(1)).await, Err(Refusal::Budget { .. })));
    }

    #[tokio::test]
    async fn a_reservation_carries_the_first_request_and_token_pools_as_it_left_them() {
        let q = Quota::local();
        let rate = |scope: &str, kind, amount, limit| Ask {
            scope: scope.into(),
            kind,
            amount,
            limit,
            window: Window::Minute,
        };
        let asks = vec![
            ask(1).remove(0),
            rate("key:k", Kind::Requests, 1, 5),
            rate("key:k", Kind::Tokens, 30, 100),
            rate("team:t", Kind::Requests, 1, 50),
            rate("team:t", Kind::Tokens, 30, 1000),
        ];
        let r = q.reserve(&asks).await.unwrap();
        let n = r.rate[0].unwrap();
        assert_eq!((n.tokens, n.limit, n.remaining), (false, 5, 4));
        let t = r.rate[1].unwrap();
        assert_eq!((t.tokens, t.limit, t.remaining), (true, 100, 70));
        assert!(t.reset <= Duration::from_secs(60), "{:?}", t.reset);
        let r2 = q.reserve(&asks).await.unwrap();
        assert_eq!(r2.rate[1].map(|t| t.remaining), Some(40));
        let mut h = Vec::new();
        crate::error::rate_limit_headers(&[None, r2.rate[1]], &mut h);
        let text: Vec<_> = h.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
        assert_eq!(text[..2], ["x-ratelimit-limit-tokens: 100", "x-ratelimit-remaining-tokens: 40"]);
        assert!(text[2].starts_with("x-ratelimit-reset-tokens: ") && text[2].ends_with('s'), "{text:?}");
        assert_eq!(text.len(), 3);
    }

    #[tokio::test]
    async fn spends_its_grant_then_waits_then_refuses_when_exhausted() {
        let q = Quota::new(false, Duration::from_millis(50));
        q.set_connected(true);
        q.apply(&[grant("key:k", "d1", 10, false)], 1);
        let r = q.reserve(&ask(6)).await.unwrap();
        // 6 reserved of 10: 5 more does not fit; no grant comes, so it is refused after the wait.
        assert!(matches!(q.reserve(&ask(5)).await, Err(Refusal::Budget { .. })));
        let h = q.holdings(2);
        assert_eq!((h[0].allowance, h[0].used, h[0].want), (10, 6, 1));
        // The answer cost 2: 8 left.
        q.settle(r, 2, 0);
        q.reserve(&ask(5)).await.unwrap();
        q.apply(&[grant("key:k", "d1", 10, true)], 2);
        assert!(matches!(q.reserve(&ask(5)).await, Err(Refusal::Budget { .. })), "exhausted refuses at once");
        // A new period starts from nothing used.
        q.apply(&[grant("key:k", "d2", 10, false)], 3);
        q.reserve(&ask(10)).await.unwrap();
    }

    #[tokio::test]
    async fn a_request_short_in_several_pools_asks_for_all_and_keeps_each_grant() {
        let q = Arc::new(Quota::new(false, Duration::from_secs(5)));
        q.set_connected(true);
        let mut asks = ask(3);
        asks.push(Ask {
            kind: Kind::Tokens,
            amount: 50,
            limit: 1000,
            window: Window::Minute,
            ..asks[0].clone()
        });
        let waiter = tokio::spawn({
            let (q, asks) = (q.clone(), asks.clone());
            async move { q.reserve(&asks).await.is_ok() }
        });
        q.asked.notified().await;
        // One report asks for both pools.
        let h = q.holdings(1);
        let mut wants: Vec<_> = h.iter().map(|h| (h.kind, h.want)).collect();
        wants.sort_unstable();
        assert_eq!(wants, [(QuotaKind::Usd.into(), 3), (QuotaKind::Tokens.into(), 50)]);
        // Only the budget is granted at first: the next report must not hand it back as idle
        // while the request waits for the other pool.
        q.apply(&[grant("key:k", "d1", 10, false)], 1);
        let h = q.holdings(2);
        assert!(
            !h.iter().any(|h| h.released || (h.kind == i32::from(QuotaKind::Usd) && h.allowance == 0)),
            "{h:?}"
        );
        let mut tokens = grant("key:k", "w1", 1000, false);
        tokens.kind = QuotaKind::Tokens.into();
        q.apply(&[tokens], 2);
        assert!(waiter.await.unwrap(), "the request did not proceed once both pools were granted");
    }

    #[tokio::test]
    async fn a_waiting_request_proceeds_when_the_grant_arrives() {
        let q = Arc::new(Quota::new(false, Duration::from_secs(5)));
        q.set_connected(true);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.reserve(&ask(3)).await.is_ok() }
        });
        q.asked.notified().await;
        q.apply(&[grant("key:k", "d1", 3, false)], 1);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_release_is_not_undone_by_a_grant_older_than_it() {
        let q = Quota::new(false, Duration::from_millis(10));
        q.set_connected(true);
        q.apply(&[grant("key:k", "d1", 10, false)], 1);
        let mut g = grant("key:k", "d1", 10, false);
        g.release = true;
        q.apply(&[g], 2);
        // Report 3 carries the release (allowance 0).
        assert_eq!(q.holdings(3)[0].allowance, 0);
        // The ack of report 2 was computed before the control plane saw it.
        q.apply(&[grant("key:k", "d1", 10, false)], 2);
        assert!(q.reserve(&ask(1)).await.is_err());
        q.apply(&[grant("key:k", "d1", 4, false)], 3);
        q.reserve(&ask(4)).await.unwrap();
    }

    #[tokio::test]
    async fn fail_open_serves_past_the_grant_only_while_disconnected() {
        let q = Quota::new(true, Duration::from_millis(10));
        q.reserve(&ask(5)).await.unwrap();
        q.set_connected(true);
        assert!(q.reserve(&ask(5)).await.is_err());
    }
}
