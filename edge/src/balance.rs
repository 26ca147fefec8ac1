//! Which targets a request tries, in which order: the alias's strategy picks the first, the
//! rest follow as fallbacks, ejected targets are skipped, and when every target is ejected the
//! least recently ejected one is still tried.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::breaker::now_ms;
use crate::config::{ModelRoute, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Priority,
    Weighted,
    LeastLatency,
    LeastCost,
}

/// One request in 20 under least_latency goes to another healthy target, so a recovered or
/// never-measured target is measured again.
const EXPLORE_EVERY: u64 = 20;

/// Smooth weighted round-robin, precomputed: for weights 3:1 the order A A B A, so a target's
/// share is spread out rather than bunched. Lock-free at request time: one counter.
#[must_use]
pub fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|x| i64::from(x / g)).collect();
    let total: i64 = w.iter().sum();
    // 4096: plenty of resolution; larger weight sets are scaled down.
    let scale = if total > 4096 { total as f64 / 4096.0 } else { 1.0 };
    let w: Vec<i64> = w.iter().map(|x| ((*x as f64 / scale).round() as i64).max(i64::from(*x > 0))).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let Some((best, _)) = current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Per-alias state that outlives no config: the rotation counter.
#[derive(Default)]
pub struct Rotation(AtomicU64);

/// The request's size, for least_cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Estimate {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

fn cost(t: &Target, e: Estimate) -> f64 {
    t.pricing.map_or(0.0, |p| {
        e.input_tokens as f64 * p.input_per_mtok + e.output_tokens as f64 * p.output_per_mtok
    })
}

/// The order in which to try the alias's targets (indices), at most `max_attempts` long.
#[must_use]
pub fn plan(route: &ModelRoute, estimate: Estimate) -> Vec<usize> {
    let n = route.targets.len();
    let tick = route.rotation.0.fetch_add(1, Relaxed);
    let mut order: Vec<usize> = (0..n).collect();
    match route.strategy {
        Strategy::Priority => {}
        Strategy::Weighted => {
            if let Some(&first) = route.schedule.get((tick % route.schedule.len().max(1) as u64) as usize) {
                let first = usize::from(first);
                order.sort_by_key(|i| (*i != first, std::cmp::Reverse(route.targets[*i].weight)));
            }
        }
        Strategy::LeastLatency => {
            // Unmeasured targets sort first: they get measured.
            order.sort_by_key(|i| route.targets[*i].health.latency().unwrap_or_default());
            if n > 1 && tick % EXPLORE_EVERY == EXPLORE_EVERY - 1 {
                let pick = 1 + (tick / EXPLORE_EVERY) as usize % (n - 1);
                order.swap(0, pick);
            }
        }
        Strategy::LeastCost => {
            order.sort_by(|a, b| {
                cost(&route.targets[*a], estimate).total_cmp(&cost(&route.targets[*b], estimate))
            });
        }
    }
    let now = now_ms();
    let mut available: Vec<usize> =
        order.iter().copied().filter(|i| route.targets[*i].health.available(now)).collect();
    if available.is_empty() {
        // Everything is ejected: rather than fail without trying, try the least recently ejected.
        if let Some(i) = order.iter().copied().min_by_key(|i| route.targets[*i].health.ejected_at()) {
            available.push(i);
        }
    }
    available.truncate(route.max_attempts.max(1));
    available
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_schedule_spreads_weights() {
        assert_eq!(smooth_schedule(&[3, 1]), vec![0, 0, 1, 0]);
        assert_eq!(smooth_schedule(&[1, 1]), vec![0, 1]);
        assert_eq!(smooth_schedule(&[6, 2]), vec![0, 0, 1, 0], "reduced by the gcd");
        let s = smooth_schedule(&[5, 0, 5]);
        assert!(!s.contains(&1));
        let big = smooth_schedule(&[100_000, 1]);
        assert!(big.len() <= 4097 && big.contains(&1));
    }
}
