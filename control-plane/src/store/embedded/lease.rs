//! The embedded store's leases: in memory only. They do not survive a restart, and the store
//! deletes the keys bound to them when it opens: such keys belong to edges and replicas, which
//! re-register when they reconnect anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

struct Lease {
    ttl: Duration,
    deadline: Instant,
}

pub(super) struct Leases {
    live: Mutex<HashMap<i64, Lease>>,
    next_id: AtomicI64,
    /// Wakes the expiry task: a deadline moved, or the store is closing.
    pub(super) wake: Arc<Notify>,
    pub(super) expiry_started: AtomicBool,
}

impl Leases {
    pub(super) fn new() -> Self {
        // Ids differ across restarts (like etcd's), which keeps logs unambiguous.
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let seed = i64::try_from(seed % (1 << 52)).unwrap_or(0) + 1;
        Self {
            live: Mutex::new(HashMap::new()),
            next_id: AtomicI64::new(seed),
            wake: Arc::new(Notify::new()),
            expiry_started: AtomicBool::new(false),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<i64, Lease>> {
        // The map stays consistent whatever panicked while holding it: every change is one call.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn grant(&self, ttl: Duration) -> i64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.live().insert(id, Lease { ttl, deadline: deadline_after(Instant::now(), ttl) });
        self.wake.notify_one();
        id
    }

    /// Restarts the lease's TTL; false if it is unknown or already past its deadline.
    pub(super) fn keep_alive(&self, id: i64) -> bool {
        let now = Instant::now();
        match self.live().get_mut(&id) {
            Some(lease) if lease.deadline > now => {
                lease.deadline = deadline_after(now, lease.ttl);
                true
            }
            _ => false,
        }
    }

    pub(super) fn is_alive(&self, id: i64) -> bool {
        self.live().get(&id).is_some_and(|lease| lease.deadline > Instant::now())
    }

    /// Forgets the lease; false if it was unknown. Its keys are the caller's to delete.
    pub(super) fn remove(&self, id: i64) -> bool {
        self.live().remove(&id).is_some()
    }

    /// Forgets and returns the leases past their deadline.
    pub(super) fn take_expired(&self) -> Vec<i64> {
        let now = Instant::now();
        let mut live = self.live();
        let expired: Vec<i64> = live.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        for id in &expired {
            live.remove(id);
        }
        expired
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.live().values().map(|l| l.deadline).min()
    }
}

/// `now + ttl`, saturating at about 30 years for absurd TTLs instead of overflowing.
fn deadline_after(now: Instant, ttl: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(ttl.min(FAR)).unwrap_or(now)
}
