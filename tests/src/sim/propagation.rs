//! Timing one config change until every simulated edge has it.
//!
//! Each edge publishes the newest revision it received and when (its own clock reading, taken as
//! the message was decoded). To time revision R, the tracker arms a target; from then on the
//! first of the edge task and the measurer that sees the edge at ≥ R claims it (a `fetch_max` on
//! the edge's claim, so exactly one of them does) and records the edge's arrival time. Edges
//! that had R before the target was armed (the delta can overtake the admin call's response)
//! are claimed by the measurer's sweep with the time they received it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use tokio::time::Instant;

/// One simulated edge's config position.
pub struct EdgeState {
    pub id: String,
    /// The newest revision received (snapshot or delta).
    pub revision: AtomicU64,
    /// When it was received, in microseconds since [`Tracker::epoch`].
    pub revision_at_us: AtomicU64,
    /// The highest target this edge was counted for.
    claimed: AtomicU64,
}

impl EdgeState {
    #[must_use]
    pub fn new(id: String) -> Self {
        Self {
            id,
            revision: AtomicU64::new(0),
            revision_at_us: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
        }
    }
}

struct Armed {
    target: u64,
    pending: usize,
    arrivals: Vec<Instant>,
}

pub struct Tracker {
    epoch: Instant,
    /// The armed target (0: none), read on every update without the lock.
    target: AtomicU64,
    armed: Mutex<Armed>,
}

/// How one change spread.
#[derive(Debug, Clone)]
pub struct Spread {
    pub revision: u64,
    pub edges: usize,
    /// When each edge that got it got it.
    pub arrivals: Vec<Instant>,
}

impl Spread {
    /// Every edge got it: when the last one did.
    #[must_use]
    pub fn complete_at(&self) -> Option<Instant> {
        if self.arrivals.len() < self.edges {
            return None;
        }
        self.arrivals.iter().max().copied()
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    #[must_use]
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            target: AtomicU64::new(0),
            armed: Mutex::new(Armed { target: 0, pending: 0, arrivals: Vec::new() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Armed> {
        self.armed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[must_use]
    pub fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn instant(&self, us: u64) -> Instant {
        self.epoch + Duration::from_micros(us)
    }

    /// An edge received `revision` at `at`: publishes it, and counts the edge if it reached the
    /// armed target. Revisions never go down here; the caller passes only newer ones.
    pub fn received(&self, edge: &EdgeState, revision: u64, at: Instant) {
        // The time first, so whoever sees the revision also sees (at least) this time.
        edge.revision_at_us.store(self.micros(at), SeqCst);
        edge.revision.store(revision, SeqCst);
        let target = self.target.load(SeqCst);
        if target != 0 && revision >= target {
            self.claim(edge, target, at);
        }
    }

    fn claim(&self, edge: &EdgeState, target: u64, at: Instant) {
        if edge.claimed.fetch_max(target, SeqCst) >= target {
            return;
        }
        let mut armed = self.lock();
        // A late edge of a previous target (it read the old target just before a re-arm).
        if armed.target != target {
            return;
        }
        armed.arrivals.push(at);
        armed.pending = armed.pending.saturating_sub(1);
    }

    /// Times `revision` across `edges` for at most `patience`: returns when every edge has it or
    /// the time is up.
    pub async fn spread(&self, edges: &[EdgeState], revision: u64, patience: Duration) -> Spread {
        {
            let mut armed = self.lock();
            *armed = Armed { target: revision, pending: edges.len(), arrivals: Vec::new() };
        }
        self.target.store(revision, SeqCst);
        for e in edges {
            if e.revision.load(SeqCst) >= revision {
                let at = self.instant(e.revision_at_us.load(SeqCst));
                self.claim(e, revision, at);
            }
        }
        let deadline = Instant::now() + patience;
        // Polling costs the measurer a millisecond of resolution at most, not the result: the
        // arrival times are the edges' own.
        while self.lock().pending > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.target.store(0, SeqCst);
        let mut armed = self.lock();
        armed.target = 0;
        Spread { revision, edges: edges.len(), arrivals: std::mem::take(&mut armed.arrivals) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_edge_is_counted_once_whether_it_was_early_or_late() {
        let tracker = std::sync::Arc::new(Tracker::new());
        let edges: std::sync::Arc<Vec<EdgeState>> =
            std::sync::Arc::new((0..3).map(|i| EdgeState::new(format!("e{i}"))).collect());
        let t0 = Instant::now();
        // Edge 0 already has revision 10 (the delta overtook the admin call's answer).
        tracker.received(&edges[0], 10, t0);
        let (t, e) = (tracker.clone(), edges.clone());
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            t.received(&e[1], 10, Instant::now());
            t.received(&e[1], 11, Instant::now()); // a later change: not counted again
            t.received(&e[2], 12, Instant::now());
        });
        let spread = tracker.spread(&edges, 10, Duration::from_secs(5)).await;
        late.await.unwrap();
        assert_eq!(spread.arrivals.len(), 3);
        // The early edge counts with the time it got the revision (kept to the microsecond).
        let first = *spread.arrivals.iter().min().unwrap();
        assert!(first <= t0 && t0.duration_since(first) < Duration::from_micros(1));
        assert!(spread.complete_at().unwrap() >= t0 + Duration::from_millis(30));
    }

    #[tokio::test]
    async fn an_edge_that_never_gets_it_leaves_the_spread_incomplete() {
        let tracker = Tracker::new();
        let edges: Vec<EdgeState> = (0..2).map(|i| EdgeState::new(format!("e{i}"))).collect();
        tracker.received(&edges[0], 5, Instant::now());
        let spread = tracker.spread(&edges, 5, Duration::from_millis(20)).await;
        assert_eq!(spread.arrivals.len(), 1);
        assert_eq!(spread.complete_at(), None);
        // Disarmed: a late arrival is not counted anywhere.
        tracker.received(&edges[1], 5, Instant::now());
        assert_eq!(tracker.lock().arrivals.len(), 0);
    }
}
