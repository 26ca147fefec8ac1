//! Per-target health: consecutive-failure ejection with exponential cooldown, a single half-open
//! probe after the cooldown, and an EWMA of time to first byte. All atomics: two cores at full
//! load never wait on each other here.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use llmgw_shared::proto;

/// Milliseconds since this process started: a clock atomics can hold.
#[must_use]
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub failures: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Policy {
    #[must_use]
    pub fn from_proto(b: Option<&proto::Breaker>) -> Self {
        let b = b.cloned().unwrap_or_default();
        let ms = |v: u64, d: u64| Duration::from_millis(if v == 0 { d } else { v });
        Self {
            failures: if b.failures == 0 { 3 } else { b.failures },
            cooldown: ms(b.cooldown_ms, 1_000),
            max_cooldown: ms(b.max_cooldown_ms, 60_000),
        }
    }
}

/// The weight of a new latency sample in the EWMA: high, so a recovered target wins traffic back
/// after a few exploration samples.
const ALPHA: f64 = 0.5;

#[derive(Default)]
pub struct TargetHealth {
    consecutive_failures: AtomicU32,
    /// Ejections since the last success: the cooldown doubles with each.
    ejections: AtomicU32,
    /// `now_ms()` until which the target is skipped; 0 = not ejected.
    ejected_until: AtomicU64,
    /// When the current ejection began, to pick the least recently ejected when all are.
    ejected_at: AtomicU64,
    /// A half-open probe is in flight.
    probing: AtomicBool,
    /// EWMA of time to first byte in microseconds, as f64 bits; 0 = never measured.
    ewma_us: AtomicU64,
}

impl TargetHealth {
    /// Not ejected, or its cooldown is over (a probe may go).
    #[must_use]
    pub fn available(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) <= now
    }

    #[must_use]
    pub fn ejected_at(&self) -> u64 {
        self.ejected_at.load(Relaxed)
    }

    #[must_use]
    pub fn is_ejected(&self, now: u64) -> bool {
        !self.available(now)
    }

    /// May a request go to this target now? Closed: yes. Cooling down: no. Cooldown over: only
    /// the one request that wins the half-open probe. `force` lets a request through anyway (when
    /// every target is ejected, the least recently ejected one is tried).
    pub fn admit(&self, now: u64, force: bool) -> bool {
        let until = self.ejected_until.load(Relaxed);
        if until == 0 || force {
            return true;
        }
        if now < until {
            return false;
        }
        !self.probing.swap(true, Relaxed)
    }

    pub fn on_success(&self, ttfb: Duration) {
        self.consecutive_failures.store(0, Relaxed);
        self.ejections.store(0, Relaxed);
        self.ejected_until.store(0, Relaxed);
        self.probing.store(false, Relaxed);
        let sample = ttfb.as_secs_f64() * 1e6;
        let old = f64::from_bits(self.ewma_us.load(Relaxed));
        let new = if old == 0.0 { sample } else { old + ALPHA * (sample - old) };
        // A lost update under contention only drops one sample.
        self.ewma_us.store(new.max(1.0).to_bits(), Relaxed);
    }

    /// Records a failure; returns the cooldown when this failure ejected the target.
    pub fn on_failure(&self, policy: &Policy, now: u64, retry_after: Option<Duration>) -> Option<Duration> {
        let was_probe = self.probing.swap(false, Relaxed);
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if !was_probe && failures < policy.failures && retry_after.is_none() {
            return None;
        }
        let n = self.ejections.fetch_add(1, Relaxed).min(16);
        let backoff = policy.cooldown.saturating_mul(1 << n).min(policy.max_cooldown);
        let cooldown = retry_after.map_or(backoff, |r| r.max(backoff));
        self.consecutive_failures.store(0, Relaxed);
        self.ejected_at.store(now, Relaxed);
        self.ejected_until.store(now + cooldown.as_millis() as u64, Relaxed);
        Some(cooldown)
    }

    /// EWMA of time to first byte; `None` before the first success.
    #[must_use]
    pub fn latency(&self) -> Option<Duration> {
        let us = f64::from_bits(self.ewma_us.load(Relaxed));
        (us > 0.0).then(|| Duration::from_secs_f64(us / 1e6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy { failures: 3, cooldown: Duration::from_millis(100), max_cooldown: Duration::from_millis(350) }
    }

    #[test]
    fn ejects_after_consecutive_failures_with_growing_cooldown() {
        let h = TargetHealth::default();
        let p = policy();
        assert_eq!(h.on_failure(&p, 10, None), None);
        assert_eq!(h.on_failure(&p, 10, None), None);
        assert_eq!(h.on_failure(&p, 10, None), Some(Duration::from_millis(100)));
        assert!(!h.admit(50, false));
        // Cooldown over: exactly one probe.
        assert!(h.admit(110, false));
        assert!(!h.admit(110, false));
        // The probe failed: ejected again, for twice as long.
        assert_eq!(h.on_failure(&p, 120, None), Some(Duration::from_millis(200)));
        assert!(h.admit(320, false));
        assert_eq!(h.on_failure(&p, 320, None), Some(Duration::from_millis(350)), "capped");
        assert!(h.admit(700, false));
        h.on_success(Duration::from_millis(5));
        assert!(h.admit(701, false) && h.admit(701, false));
        assert_eq!(h.on_failure(&p, 702, None), None, "a success resets the count");
    }

    #[test]
    fn retry_after_ejects_at_once_for_at_least_that_long() {
        let h = TargetHealth::default();
        assert_eq!(h.on_failure(&policy(), 0, Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
        assert!(!h.admit(1_999, false));
        assert!(h.admit(1_999, true), "forced when every target is ejected");
    }

    #[test]
    fn ewma_moves_toward_samples() {
        let h = TargetHealth::default();
        assert_eq!(h.latency(), None);
        h.on_success(Duration::from_millis(100));
        h.on_success(Duration::from_millis(200));
        let l = h.latency().unwrap().as_secs_f64();
        assert!((l - 0.150).abs() < 1e-6, "{l}");
    }
}
