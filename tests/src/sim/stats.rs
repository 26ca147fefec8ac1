//! What the simulated edges count: reports and acks, config updates, and protocol errors, shared
//! by every edge task through atomics (and a mutex for the rare events).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counters of one run. Reports sent while `measuring` is set are the measured ones: their acks
/// give the latency samples.
#[derive(Default)]
pub struct Stats {
    pub measuring: AtomicBool,
    /// Edges that applied their first config update.
    pub ready: AtomicUsize,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub sent_total: AtomicU64,
    pub acked_total: AtomicU64,
    /// Requests in every report of the run, and in those acked: the ledger must have counted
    /// at least the acked and at most the sent.
    pub requests_sent: AtomicU64,
    pub requests_acked: AtomicU64,
    pub snapshots: AtomicU64,
    pub deltas: AtomicU64,
    /// Updates at or below the revision the edge already had (legal after a reconnect to a
    /// lagging replica; never expected from one replica).
    pub stale_updates: AtomicU64,
    pub config_acks: AtomicU64,
    pub reconnects: AtomicU64,
    /// Ack latencies of measured reports, in microseconds.
    ack_us: Mutex<Vec<u32>>,
    /// Protocol errors by kind: count and the first one's detail.
    errors: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Stats {
    pub fn ack_latency(&self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        lock(&self.ack_us).push(us);
    }

    /// Ack latencies recorded from index `from` on (for progress lines), and the new length.
    pub fn ack_latencies_since(&self, from: usize) -> (Vec<u32>, usize) {
        let v = lock(&self.ack_us);
        (v.get(from..).map(<[u32]>::to_vec).unwrap_or_default(), v.len())
    }

    pub fn take_ack_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *lock(&self.ack_us))
    }

    /// A protocol error: anything a well-behaved control plane would not do to a well-behaved
    /// edge (a stream failing, an ack out of order, a delta before any snapshot).
    pub fn error(&self, kind: impl Into<String>, detail: impl Display) {
        let mut errors = lock(&self.errors);
        let e = errors.entry(kind.into()).or_insert_with(|| (0, detail.to_string()));
        e.0 += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, (u64, String)> {
        lock(&self.errors).clone()
    }

    pub fn error_count(&self) -> u64 {
        lock(&self.errors).values().map(|(n, _)| n).sum()
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_n(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Nearest-rank percentiles of a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for no samples.
    #[must_use]
    pub fn of(mut samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Some(Self { count: samples.len(), p50: rank(0.50), p99: rank(0.99), max: rank(1.0) })
    }

    /// From microsecond samples, in milliseconds.
    #[must_use]
    pub fn of_us_as_ms(samples: &[u32]) -> Option<Self> {
        Self::of(samples.iter().map(|&us| f64::from(us) / 1000.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(Percentiles::of(vec![]), None);
        let p = Percentiles::of((1..=100).rev().map(f64::from).collect()).unwrap();
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
        let p = Percentiles::of(vec![7.0]).unwrap();
        assert_eq!((p.p50, p.p99, p.max), (7.0, 7.0, 7.0));
        // With ten samples the p99 is the largest: say so rather than interpolate.
        let p = Percentiles::of((1..=10).map(f64::from).collect()).unwrap();
        assert_eq!((p.p50, p.p99), (5.0, 10.0));
    }

    #[test]
    fn errors_are_counted_by_kind_with_the_first_detail() {
        let s = Stats::default();
        s.error("usage: ack out of order", "expected 3, got 4");
        s.error("usage: ack out of order", "expected 9, got 10");
        s.error("watch: stream ended", "");
        assert_eq!(s.error_count(), 3);
        assert_eq!(s.errors()["usage: ack out of order"], (2, "expected 3, got 4".to_owned()));
    }
}
