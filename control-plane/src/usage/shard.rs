//! The ledger's store layout: counter shards (`/llmgw/v1/usage/key:{id}/{period}/{cp_id}`,
//! a `UsageShard`) and seq markers (`/llmgw/v1/usage-seq/{edge_id}/{epoch}`, a
//! `UsageSeqMarker`), and the counters they hold.

use std::collections::BTreeMap;

use llmgw_shared::proto::{UsageCounter, UsageRow, UsageShard};
use prost::Message;

use super::period::{hour_id, parse_hour_id};
use crate::layout;

/// What a shard counts over: an hour (UTC, its start in Unix seconds), or all time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShardPeriod {
    Hour(i64),
    Total,
}

/// One replica's shard of one key's counters for one period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId {
    pub key_id: String,
    pub period: ShardPeriod,
    pub cp_id: String,
}

impl ShardId {
    #[must_use]
    pub fn store_key(&self) -> Vec<u8> {
        let period = match self.period {
            ShardPeriod::Hour(h) => hour_id(h),
            ShardPeriod::Total => "total".to_owned(),
        };
        format!("{}key:{}/{period}/{}", layout::USAGE, self.key_id, self.cp_id).into_bytes()
    }

    /// The shard a store key names, if it is one.
    #[must_use]
    pub fn parse(key: &[u8]) -> Option<Self> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(layout::USAGE)?;
        let mut parts = rest.split('/');
        let (scope, period, cp_id) = (parts.next()?, parts.next()?, parts.next()?);
        let key_id = scope.strip_prefix("key:")?;
        if parts.next().is_some() || key_id.is_empty() || cp_id.is_empty() {
            return None;
        }
        let period = match period {
            "total" => ShardPeriod::Total,
            h => ShardPeriod::Hour(parse_hour_id(h)?),
        };
        Some(Self { key_id: key_id.to_owned(), period, cp_id: cp_id.to_owned() })
    }
}

/// An edge process: its reports are numbered by `seq` within `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MarkerId {
    pub edge_id: String,
    pub epoch: String,
}

impl MarkerId {
    #[must_use]
    pub fn store_key(&self) -> Vec<u8> {
        format!("{}{}/{}", layout::USAGE_SEQ, self.edge_id, self.epoch).into_bytes()
    }

    #[must_use]
    pub fn parse(key: &[u8]) -> Option<Self> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(layout::USAGE_SEQ)?;
        let (edge_id, epoch) = rest.split_once('/')?;
        (!edge_id.is_empty() && !epoch.is_empty() && !epoch.contains('/'))
            .then(|| Self { edge_id: edge_id.to_owned(), epoch: epoch.to_owned() })
    }
}

/// Usage counts. Adding saturates in the ledger (a counter never wraps to a small number);
/// the cluster view adds and subtracts whole shards with wrapping arithmetic, which undoes
/// exactly what it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_micro_usd: u64,
    pub errors: u64,
}

impl Counters {
    #[must_use]
    pub fn from_row(r: &UsageRow) -> Self {
        Self {
            requests: r.requests,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cost_micro_usd: r.cost_micro_usd,
            errors: r.errors,
        }
    }

    fn fields(&mut self) -> [&mut u64; 6] {
        [
            &mut self.requests,
            &mut self.input_tokens,
            &mut self.output_tokens,
            &mut self.cached_input_tokens,
            &mut self.cost_micro_usd,
            &mut self.errors,
        ]
    }

    fn zip(&mut self, mut other: Self, f: impl Fn(u64, u64) -> u64) {
        for (a, b) in self.fields().into_iter().zip(other.fields()) {
            *a = f(*a, *b);
        }
    }

    pub fn add(&mut self, other: Self) {
        self.zip(other, u64::saturating_add);
    }

    pub(crate) fn wrapping_add(&mut self, other: Self) {
        self.zip(other, u64::wrapping_add);
    }

    pub(crate) fn wrapping_sub(&mut self, other: Self) {
        self.zip(other, u64::wrapping_sub);
    }

    #[must_use]
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// The cost in USD, for people.
    #[must_use]
    pub fn cost_usd(&self) -> f64 {
        self.cost_micro_usd as f64 / 1e6
    }
}

/// What a shard's rows are keyed by, besides the key itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RowKey {
    pub project: String,
    pub team: String,
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
}

impl RowKey {
    #[must_use]
    pub fn of_row(r: &UsageRow) -> Self {
        Self {
            project: r.project.clone(),
            team: r.team.clone(),
            model: r.model.clone(),
            provider: r.provider.clone(),
            upstream_model: r.upstream_model.clone(),
        }
    }
}

/// A shard's contents.
pub type Rows = BTreeMap<RowKey, Counters>;

/// Rows in key order, so equal contents encode to equal bytes.
#[must_use]
pub fn encode_rows(rows: &Rows) -> Vec<u8> {
    UsageShard {
        rows: rows
            .iter()
            .map(|(k, c)| UsageCounter {
                project: k.project.clone(),
                team: k.team.clone(),
                model: k.model.clone(),
                provider: k.provider.clone(),
                upstream_model: k.upstream_model.clone(),
                requests: c.requests,
                input_tokens: c.input_tokens,
                output_tokens: c.output_tokens,
                cached_input_tokens: c.cached_input_tokens,
                cost_micro_usd: c.cost_micro_usd,
                errors: c.errors,
            })
            .collect(),
    }
    .encode_to_vec()
}

/// # Errors
/// Bytes that are not a `UsageShard`.
pub fn decode_rows(bytes: &[u8]) -> Result<Rows, prost::DecodeError> {
    let shard = UsageShard::decode(bytes)?;
    let mut rows = Rows::new();
    for r in shard.rows {
        let key = RowKey {
            project: r.project,
            team: r.team,
            model: r.model,
            provider: r.provider,
            upstream_model: r.upstream_model,
        };
        let c = Counters {
            requests: r.requests,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cost_micro_usd: r.cost_micro_usd,
            errors: r.errors,
        };
        rows.entry(key).or_default().add(c);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let hour = 1_795_525_200;
        let id = ShardId { key_id: "0123abcd".into(), period: ShardPeriod::Hour(hour), cp_id: "cp-1".into() };
        assert_eq!(id.store_key(), b"/llmgw/v1/usage/key:0123abcd/h2026112413/cp-1");
        assert_eq!(ShardId::parse(&id.store_key()), Some(id));
        let total = ShardId { key_id: "k".into(), period: ShardPeriod::Total, cp_id: "cp".into() };
        assert_eq!(ShardId::parse(&total.store_key()), Some(total));
        for bad in [
            "/llmgw/v1/usage/key:k/total",
            "/llmgw/v1/usage/key:k/total/cp/x",
            "/llmgw/v1/usage/project:p/total/cp",
            "/llmgw/v1/usage/key:k/yesterday/cp",
            "/llmgw/v1/usage-seq/e/1",
        ] {
            assert_eq!(ShardId::parse(bad.as_bytes()), None, "{bad}");
        }
        let m = MarkerId { edge_id: "edge-a".into(), epoch: "e1".into() };
        assert_eq!(m.store_key(), b"/llmgw/v1/usage-seq/edge-a/e1");
        assert_eq!(MarkerId::parse(&m.store_key()), Some(m));
        assert_eq!(MarkerId::parse(b"/llmgw/v1/usage-seq/edge-a"), None);
    }

    #[test]
    fn rows_round_trip_and_counters_undo_exactly() {
        let mut rows = Rows::new();
        let k = RowKey { project: "p".into(), team: "t".into(), model: "m".into(), ..RowKey::default() };
        rows.insert(k.clone(), Counters { requests: 2, cost_micro_usd: 7, ..Counters::default() });
        rows.insert(RowKey { model: "a".into(), ..k }, Counters { errors: 1, ..Counters::default() });
        assert_eq!(decode_rows(&encode_rows(&rows)).unwrap(), rows);

        let mut c = Counters { requests: u64::MAX, ..Counters::default() };
        c.add(Counters { requests: 5, input_tokens: 1, ..Counters::default() });
        assert_eq!((c.requests, c.input_tokens), (u64::MAX, 1));
        let before = c;
        let d = Counters { requests: 9, errors: 3, ..Counters::default() };
        c.wrapping_add(d);
        c.wrapping_sub(d);
        assert_eq!(c, before);
    }
}
