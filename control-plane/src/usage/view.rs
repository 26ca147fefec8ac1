//! The cluster-wide usage every replica holds in memory: every shard of every replica, as last
//! written (shards hold absolute values, so an event replaces one), and running sums per scope
//! (key, project, team) for all time and per hour, so a budget's spend is at most a month of
//! hourly sums away.

use std::collections::{BTreeMap, HashMap};

use super::period::{Period, floor_hour};
use super::shard::{Counters, Rows, ShardId, ShardPeriod, decode_rows};

/// What a budget applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// By key id.
    Key(String),
    Project(String),
    Team(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Key(id) => write!(f, "key:{id}"),
            Scope::Project(n) => write!(f, "project:{n}"),
            Scope::Team(n) => write!(f, "team:{n}"),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    /// `key:{id}`, `project:{name}` or `team:{name}`, as `QuotaGrant.scope` spells them.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, name) = s.split_once(':').ok_or_else(|| format!("{s:?} is not kind:name"))?;
        if name.is_empty() {
            return Err(format!("{s:?} has no name"));
        }
        match kind {
            "key" => Ok(Scope::Key(name.to_owned())),
            "project" => Ok(Scope::Project(name.to_owned())),
            "team" => Ok(Scope::Team(name.to_owned())),
            _ => Err(format!("{s:?}: the scope is key, project or team")),
        }
    }
}

struct Stored {
    id: ShardId,
    rows: Rows,
    mod_revision: i64,
}

#[derive(Default)]
struct Sums {
    total: Counters,
    hours: BTreeMap<i64, Counters>,
}

/// One row of `llmgw admin usage`, before key ids are turned into names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowGroup {
    pub team: String,
    pub project: String,
    pub key_id: String,
    pub model: String,
    pub provider: String,
}

/// Which shards an admin query reads, and which rows it keeps.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub team: Option<String>,
    pub project: Option<String>,
    pub key_id: Option<String>,
    pub model: Option<String>,
    /// `None`: the all-time counters; else the hours from the one containing this time on.
    pub since: Option<i64>,
}

#[derive(Default)]
pub(crate) struct UsageView {
    /// The store revision this view reflects.
    pub revision: i64,
    shards: HashMap<Vec<u8>, Stored>,
    sums: HashMap<Scope, Sums>,
}

impl UsageView {
    /// Applies a put of a shard key; other keys are ignored.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8], mod_revision: i64) {
        let Some(id) = ShardId::parse(key) else { return };
        if self.shards.get(key).is_some_and(|s| s.mod_revision >= mod_revision) {
            return;
        }
        let rows = match decode_rows(value) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "ignoring an undecodable usage shard");
                return;
            }
        };
        if let Some(old) = self.shards.remove(key) {
            self.account(&old.id, &old.rows, Counters::wrapping_sub);
        }
        self.account(&id, &rows, Counters::wrapping_add);
        self.shards.insert(key.to_vec(), Stored { id, rows, mod_revision });
    }

    pub(crate) fn delete(&mut self, key: &[u8], mod_revision: i64) {
        if self.shards.get(key).is_some_and(|s| s.mod_revision < mod_revision)
            && let Some(old) = self.shards.remove(key)
        {
            self.account(&old.id, &old.rows, Counters::wrapping_sub);
        }
    }

    fn account(&mut self, id: &ShardId, rows: &Rows, f: fn(&mut Counters, Counters)) {
        for (row, c) in rows {
            let mut scopes = vec![Scope::Key(id.key_id.clone())];
            if !row.project.is_empty() {
                scopes.push(Scope::Project(row.project.clone()));
            }
            if !row.team.is_empty() {
                scopes.push(Scope::Team(row.team.clone()));
            }
            for scope in scopes {
                let sums = self.sums.entry(scope.clone()).or_default();
                match id.period {
                    ShardPeriod::Total => f(&mut sums.total, *c),
                    ShardPeriod::Hour(h) => {
                        let hour = sums.hours.entry(h).or_default();
                        f(hour, *c);
                        if hour.is_zero() {
                            sums.hours.remove(&h);
                        }
                    }
                }
                if sums.total.is_zero() && sums.hours.is_empty() {
                    self.sums.remove(&scope);
                }
            }
        }
    }

    /// What `scope` used in the `period` containing `now` (Unix seconds), over every replica.
    pub(crate) fn spend(&self, scope: &Scope, period: Period, now: i64) -> Counters {
        let Some(sums) = self.sums.get(scope) else { return Counters::default() };
        match period.window(now) {
            None => sums.total,
            Some((start, end)) => {
                sums.hours.range(start..end).fold(Counters::default(), |mut acc, (_, c)| {
                    acc.wrapping_add(*c);
                    acc
                })
            }
        }
    }

    /// Rows for `llmgw admin usage`, summed over replicas, upstream models and hours.
    pub(crate) fn rows(&self, f: &UsageFilter) -> BTreeMap<RowGroup, Counters> {
        let since_hour = f.since.map(floor_hour);
        let matches = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let mut out: BTreeMap<RowGroup, Counters> = BTreeMap::new();
        for s in self.shards.values() {
            let wanted = match (s.id.period, since_hour) {
                (ShardPeriod::Total, None) => true,
                (ShardPeriod::Hour(h), Some(since)) => h >= since,
                _ => false,
            };
            if !wanted || !matches(&f.key_id, &s.id.key_id) {
                continue;
            }
            for (row, c) in &s.rows {
                if !matches(&f.team, &row.team)
                    || !matches(&f.project, &row.project)
                    || !matches(&f.model, &row.model)
                {
                    continue;
                }
                let group = RowGroup {
                    team: row.team.clone(),
                    project: row.project.clone(),
                    key_id: s.id.key_id.clone(),
                    model: row.model.clone(),
                    provider: row.provider.clone(),
                };
                out.entry(group).or_default().wrapping_add(*c);
            }
        }
        out
    }

    /// Hour shards written by `cp_id` for hours before `cutoff`: the ones retention removes.
    pub(crate) fn expired(&self, cp_id: &str, cutoff: i64, limit: usize) -> Vec<(Vec<u8>, i64)> {
        let mut keys: Vec<(Vec<u8>, i64)> = self
            .shards
            .iter()
            .filter(|(_, s)| s.id.cp_id == cp_id && matches!(s.id.period, ShardPeriod::Hour(h) if h < cutoff))
            .map(|(k, s)| (k.clone(), s.mod_revision))
            .collect();
        keys.sort();
        keys.truncate(limit);
        keys
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::period::{DAY, HOUR};
    use super::super::shard::{RowKey, encode_rows};
    use super::*;

    fn rows(project: &str, team: &str, model: &str, requests: u64, cost: u64) -> Rows {
        let key = RowKey {
            project: project.into(),
            team: team.into(),
            model: model.into(),
            provider: "openai".into(),
            upstream_model: "gpt".into(),
        };
        Rows::from([(key, Counters { requests, cost_micro_usd: cost, ..Counters::default() })])
    }

    fn key(key_id: &str, period: ShardPeriod, cp: &str) -> Vec<u8> {
        ShardId { key_id: key_id.into(), period, cp_id: cp.into() }.store_key()
    }

    #[test]
    fn events_replace_shards_and_sums_follow() {
        let mut v = UsageView::default();
        let h = 1_795_525_200; // 2026-11-24T13:00Z
        v.put(&key("k1", ShardPeriod::Hour(h), "a"), &encode_rows(&rows("p", "t", "m", 2, 10)), 5);
        v.put(&key("k1", ShardPeriod::Hour(h), "b"), &encode_rows(&rows("p", "t", "m", 3, 20)), 6);
        v.put(&key("k2", ShardPeriod::Hour(h - DAY), "a"), &encode_rows(&rows("p", "t", "m", 1, 1)), 7);
        // A replay of an older write changes nothing; a newer one replaces.
        v.put(&key("k1", ShardPeriod::Hour(h), "a"), &encode_rows(&rows("p", "t", "m", 99, 99)), 4);
        v.put(&key("k1", ShardPeriod::Hour(h), "a"), &encode_rows(&rows("p", "t", "m", 4, 40)), 8);
        let now = h + 30 * 60;
        assert_eq!(v.spend(&Scope::Key("k1".into()), Period::Daily, now).requests, 7);
        assert_eq!(v.spend(&Scope::Project("p".into()), Period::Daily, now).cost_micro_usd, 60);
        assert_eq!(v.spend(&Scope::Team("t".into()), Period::Weekly, now).requests, 8);
        assert_eq!(v.spend(&Scope::Team("t".into()), Period::Daily, now + 11 * HOUR).requests, 0);
        assert_eq!(v.spend(&Scope::Team("nobody".into()), Period::Monthly, now), Counters::default());
        v.delete(&key("k1", ShardPeriod::Hour(h), "b"), 9);
        assert_eq!(v.spend(&Scope::Key("k1".into()), Period::Daily, now).requests, 4);
        v.delete(&key("k1", ShardPeriod::Hour(h), "a"), 10);
        v.delete(&key("k2", ShardPeriod::Hour(h - DAY), "a"), 10);
        assert!(v.sums.is_empty(), "sums of deleted shards are dropped");
        assert_eq!(v.shard_count(), 0);
    }

    #[test]
    fn admin_rows_filter_and_group() {
        let mut v = UsageView::default();
        let h = 1_795_525_200;
        v.put(&key("k1", ShardPeriod::Total, "a"), &encode_rows(&rows("p", "t", "m", 2, 10)), 5);
        v.put(&key("k1", ShardPeriod::Total, "b"), &encode_rows(&rows("p", "t", "m", 3, 10)), 6);
        v.put(&key("k2", ShardPeriod::Total, "a"), &encode_rows(&rows("q", "t", "n", 1, 10)), 7);
        v.put(&key("k1", ShardPeriod::Hour(h), "a"), &encode_rows(&rows("p", "t", "m", 2, 10)), 8);
        v.put(&key("k1", ShardPeriod::Hour(h - HOUR), "a"), &encode_rows(&rows("p", "t", "m", 1, 10)), 9);
        let all = v.rows(&UsageFilter::default());
        assert_eq!(all.len(), 2);
        assert_eq!(all.values().map(|c| c.requests).sum::<u64>(), 6);
        let only = v.rows(&UsageFilter { project: Some("q".into()), ..UsageFilter::default() });
        assert_eq!(only.keys().map(|g| g.key_id.as_str()).collect::<Vec<_>>(), ["k2"]);
        let since = v.rows(&UsageFilter { since: Some(h + 59), ..UsageFilter::default() });
        assert_eq!(since.values().map(|c| c.requests).sum::<u64>(), 2, "from the hour containing since");
        let since =
            v.rows(&UsageFilter { since: Some(h - 1), key_id: Some("k1".into()), ..UsageFilter::default() });
        assert_eq!(since.values().map(|c| c.requests).sum::<u64>(), 3);
        assert_eq!(v.expired("a", h, 10).len(), 1);
        assert_eq!(v.expired("b", h, 10).len(), 0);
    }

    #[test]
    fn scopes_parse_and_print() {
        for s in ["key:0a1b", "project:ranker", "team:search"] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        assert!("key:".parse::<Scope>().is_err());
        assert!("org:x".parse::<Scope>().is_err());
    }
}
