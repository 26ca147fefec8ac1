//! Usage accumulated by this edge per (key, project, team, model alias, provider, upstream
//! model), until a reporter drains it.
//!
//! Sharded mutexes held only for a hash-map update (never across an await), so two cores
//! recording at full rate rarely meet on the same shard.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use llmgw_shared::pricing::Tokens;

use crate::FastMap;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub key_id: smol_str::SmolStr,
    pub project: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    pub model: Arc<str>,
    pub provider: Arc<str>,
    pub upstream_model: Arc<str>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_micro_usd: u64,
    pub errors: u64,
}

const SHARDS: usize = 16;

pub struct UsageLedger {
    hasher: foldhash::fast::RandomState,
    shards: [Mutex<FastMap<UsageKey, UsageCounts>>; SHARDS],
}

impl Default for UsageLedger {
    fn default() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl UsageLedger {
    /// Adds one finished request.
    pub fn record(&self, key: &UsageKey, tokens: Tokens, cost_micro_usd: u64, error: bool) {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut map = match shard.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let c = match map.get_mut(key) {
            Some(c) => c,
            None => map.entry(key.clone()).or_default(),
        };
        c.requests += 1;
        c.input_tokens += tokens.input;
        c.output_tokens += tokens.output;
        c.cached_input_tokens += tokens.cached_input;
        c.cost_micro_usd += cost_micro_usd;
        c.errors += u64::from(error);
    }

    /// Takes everything accumulated so far, leaving the ledger empty.
    pub fn drain(&self) -> Vec<(UsageKey, UsageCounts)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut map = match shard.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            out.extend(map.drain());
        }
        out
    }

    /// A copy of what has accumulated, without draining.
    pub fn totals(&self) -> Vec<(UsageKey, UsageCounts)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let map = match shard.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            out.extend(map.iter().map(|(k, v)| (k.clone(), *v)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates_per_key_and_drains() {
        let ledger = UsageLedger::default();
        let k = |m: &str| UsageKey {
            key_id: "k1".into(),
            project: Some("p".into()),
            team: Some("t".into()),
            model: m.into(),
            provider: "openai".into(),
            upstream_model: "gpt".into(),
        };
        let t = Tokens { input: 10, output: 5, cached_input: 2 };
        ledger.record(&k("a"), t, 7, false);
        ledger.record(&k("a"), t, 7, true);
        ledger.record(&k("b"), t, 1, false);
        let mut rows = ledger.drain();
        rows.sort_by(|x, y| x.0.model.cmp(&y.0.model));
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].1,
            UsageCounts {
                requests: 2,
                input_tokens: 20,
                output_tokens: 10,
                cached_input_tokens: 4,
                cost_micro_usd: 14,
                errors: 1
            }
        );
        assert!(ledger.drain().is_empty());
    }
}
