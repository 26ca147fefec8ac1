//! The wall clock the ledger reads to pick hour buckets and budget periods, behind a trait so
//! tests can cross an hour, a day or a month without waiting. Timers (flush intervals, rate
//! limits) use tokio's clock instead, which tests pause separately.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_unix_ms(&self) -> i64;

    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> i64 {
        self.now_unix_ms().div_euclid(1000)
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> i64 {
        crate::compile::now_ms()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    #[must_use]
    pub fn at_unix(secs: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(secs * 1000)))
    }

    pub fn set_unix(&self, secs: i64) {
        self.0.store(secs * 1000, Ordering::SeqCst);
    }

    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * 1000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The system clock shifted by a number of seconds read from a file on every call: a test hook
/// (`LLMGW_CLOCK_OFFSET_FILE`) that lets an end-to-end test cross a budget period's boundary in
/// a real process. A missing or unreadable file means no shift.
#[derive(Debug)]
pub struct OffsetFileClock(pub std::path::PathBuf);

impl Clock for OffsetFileClock {
    fn now_unix_ms(&self) -> i64 {
        let offset =
            std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0);
        crate::compile::now_ms() + offset * 1000
    }
}
