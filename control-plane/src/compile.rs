//! The config compiler: turns a desired state into store transactions. It is the only writer of
//! config resources, so every stored config is sealed, validated and referentially whole.

use std::collections::{BTreeMap, BTreeSet};

use llmgw_shared::proto::{self, Change, Resource, ResourceKind, credential::Source, resource};
use rand::Rng;

use crate::broadcast::kind_name;
use crate::layout;
use crate::seal::{MasterKey, SealError};
use crate::store::{Compare, CompareOp, CompareTarget, MAX_TXN_OPS, Op, Store, StoreError, Txn};
use crate::view::{Stored, View, resources_of};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the state changed while this change was being made; retry")]
    Conflict,
}

fn invalid(msg: impl Into<String>) -> CompileError {
    CompileError::Invalid(msg.into())
}

/// A random identifier: 16 hex characters.
#[must_use]
pub fn new_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// One planned write, with the compare that guards it.
pub struct Write {
    pub change: Change,
    pub ops: Vec<Op>,
    pub compares: Vec<Compare>,
}

fn guard(key: &[u8], stored: Option<&Stored>) -> Compare {
    match stored {
        Some(s) => Compare {
            key: key.to_vec(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(s.mod_revision),
        },
        None => Compare { key: key.to_vec(), op: CompareOp::Equal, target: CompareTarget::CreateRevision(0) },
    }
}

/// Seals `value:` credentials; a placeholder (no source) keeps the stored credential at its
/// position; a value equal to the stored one keeps the stored ciphertext so re-applying the same
/// file is not a change.
fn seal_provider(
    p: &mut proto::Provider,
    current: Option<&proto::Provider>,
    key: Option<&MasterKey>,
) -> Result<(), CompileError> {
    for (i, c) in p.credentials.iter_mut().enumerate() {
        let stored = current.and_then(|cur| cur.credentials.get(i));
        match &c.source {
            None => {
                *c = stored.cloned().ok_or_else(|| {
                    invalid(format!(
                        "provider {}: credentials[{i}] is a placeholder but nothing is stored there",
                        p.name
                    ))
                })?;
            }
            Some(Source::Value(v)) => {
                let key = key.ok_or(SealError::NoKey)?;
                if let Some(proto::Credential { source: Some(Source::Sealed(s)) }) = stored
                    && key.open(s).is_ok_and(|old| old == *v)
                {
                    *c = stored.cloned().unwrap_or_default();
                } else {
                    c.source = Some(Source::Sealed(key.seal(v)?));
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Keys are matched by name: the file carries no id, and no secret unless it sets one.
fn resolve_key(k: &mut proto::Key, view: &View) -> Result<(), CompileError> {
    let current = view.key(&k.name).map(|(c, _)| c.clone());
    match current {
        Some(cur) => {
            k.id = cur.id;
            k.created_at_unix = cur.created_at_unix;
            if k.secret_sha256.is_empty() {
                k.secret_sha256 = cur.secret_sha256;
                k.secret_prefix = cur.secret_prefix;
            }
        }
        None if k.secret_sha256.is_empty() => {
            return Err(invalid(format!(
                "key {}: no such key and no secret given; create keys with `llmgw admin key create`",
                k.name
            )));
        }
        None => {
            k.id = new_id();
            k.created_at_unix = now_unix();
        }
    }
    if k.secret_sha256.len() != 32 {
        return Err(invalid(format!("key {}: the secret hash must be 32 bytes", k.name)));
    }
    Ok(())
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[must_use]
pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Every reference in the state resolves.
pub fn validate(state: &BTreeMap<(i32, String), Resource>) -> Result<(), CompileError> {
    let names = |kind: ResourceKind| -> BTreeSet<&str> {
        state
            .iter()
            .filter(|((k, _), _)| *k == kind as i32)
            .filter_map(|(_, r)| layout::kind_of(r).map(|(_, n)| n))
            .collect()
    };
    let (providers, models, teams, projects) = (
        names(ResourceKind::Provider),
        names(ResourceKind::Model),
        names(ResourceKind::Team),
        names(ResourceKind::Project),
    );
    let check_models = |owner: &str, set: &Option<proto::ModelSet>| -> Result<(), CompileError> {
        for m in set.iter().flat_map(|s| &s.names) {
            if !models.contains(m.as_str()) {
                return Err(invalid(format!("{owner}: no model named {m:?}")));
            }
        }
        Ok(())
    };
    let mut key_names = BTreeSet::new();
    for r in state.values() {
        match &r.resource {
            Some(resource::Resource::Model(m)) => {
                if m.targets.is_empty() {
                    return Err(invalid(format!("model {}: has no targets", m.name)));
                }
                for t in &m.targets {
                    if !providers.contains(t.provider.as_str()) {
                        return Err(invalid(format!("model {}: no provider named {:?}", m.name, t.provider)));
                    }
                }
            }
            Some(resource::Resource::Team(t)) => check_models(&format!("team {}", t.name), &t.models)?,
            Some(resource::Resource::Project(p)) => {
                if !teams.contains(p.team.as_str()) {
                    return Err(invalid(format!("project {}: no team named {:?}", p.name, p.team)));
                }
                check_models(&format!("project {}", p.name), &p.models)?;
            }
            Some(resource::Resource::Key(k)) => {
                if !key_names.insert(k.name.as_str()) {
                    return Err(invalid(format!("key {}: the name is used twice", k.name)));
                }
                match (k.project.is_empty(), k.team.is_empty()) {
                    (false, true) if !projects.contains(k.project.as_str()) => {
                        return Err(invalid(format!("key {}: no project named {:?}", k.name, k.project)));
                    }
                    (true, false) if !teams.contains(k.team.as_str()) => {
                        return Err(invalid(format!("key {}: no team named {:?}", k.name, k.team)));
                    }
                    (false, true) | (true, false) => {}
                    _ => return Err(invalid(format!("key {}: set exactly one of project and team", k.name))),
                }
                check_models(&format!("key {}", k.name), &k.models)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Plans the writes that make the store match `desired`.
///
/// # Errors
/// An invalid desired state, or credentials that cannot be sealed.
pub fn plan_apply(
    desired: &proto::Snapshot,
    prune: bool,
    view: &View,
    key: Option<&MasterKey>,
) -> Result<Vec<Write>, CompileError> {
    let mut wanted: BTreeMap<(i32, String), Resource> = BTreeMap::new();
    for (kind, _, mut r) in resources_of(desired) {
        match &mut r.resource {
            Some(resource::Resource::Provider(p)) => {
                let cur = match view.get(ResourceKind::Provider, &p.name).map(|s| &s.resource.resource) {
                    Some(Some(resource::Resource::Provider(c))) => Some(c),
                    _ => None,
                };
                seal_provider(p, cur, key)?;
            }
            Some(resource::Resource::Key(k)) => resolve_key(k, view)?,
            _ => {}
        }
        let name = layout::kind_of(&r).map(|(_, n)| n.to_owned()).unwrap_or_default();
        if wanted.insert((kind as i32, name.clone()), r).is_some() {
            return Err(invalid(format!("{} {name} is listed twice", kind_name(kind))));
        }
    }
    // The state after the change: the desired resources, plus (without prune) the rest.
    let mut after = wanted.clone();
    if !prune {
        for (id, s) in &view.resources {
            after.entry(id.clone()).or_insert_with(|| s.resource.clone());
        }
    }
    validate(&after)?;

    let mut writes = Vec::new();
    for ((kind, name), r) in &wanted {
        let kind = ResourceKind::try_from(*kind).unwrap_or(ResourceKind::Unspecified);
        let stored = view.get(kind, name);
        if stored.is_some_and(|s| layout::encode(&s.resource) == layout::encode(r)) {
            continue;
        }
        let key = layout::store_key(kind, name);
        let mut w = Write {
            change: Change {
                action: if stored.is_some() { "update" } else { "create" }.into(),
                kind: kind as i32,
                name: display_name(r, name),
            },
            compares: vec![guard(&key, stored)],
            ops: vec![Op::Put { key, value: layout::encode(r), lease: 0 }],
        };
        if let (None, Some(resource::Resource::Key(k))) = (stored, &r.resource) {
            let idx = format!("{}{}", layout::KEY_NAMES, k.name).into_bytes();
            w.compares.push(Compare {
                key: idx.clone(),
                op: CompareOp::Equal,
                target: CompareTarget::CreateRevision(0),
            });
            w.ops.push(Op::Put { key: idx, value: k.id.clone().into_bytes(), lease: 0 });
        }
        writes.push(w);
    }
    if prune {
        for (id, s) in &view.resources {
            if wanted.contains_key(id) {
                continue;
            }
            let kind = ResourceKind::try_from(id.0).unwrap_or(ResourceKind::Unspecified);
            let key = layout::store_key(kind, &id.1);
            let mut w = Write {
                change: Change {
                    action: "delete".into(),
                    kind: id.0,
                    name: display_name(&s.resource, &id.1),
                },
                compares: vec![guard(&key, Some(s))],
                ops: vec![Op::Delete { key }],
            };
            if let Some(resource::Resource::Key(k)) = &s.resource.resource {
                w.ops.push(Op::Delete { key: format!("{}{}", layout::KEY_NAMES, k.name).into_bytes() });
            }
            writes.push(w);
        }
    }
    Ok(writes)
}

/// Keys are shown by name, not id.
fn display_name(r: &Resource, fallback: &str) -> String {
    match &r.resource {
        Some(resource::Resource::Key(k)) => k.name.clone(),
        _ => fallback.to_owned(),
    }
}

/// Commits planned writes (plus `extra` ops, e.g. the audit record, in the first transaction),
/// chunked under etcd's transaction limit. Returns the last revision.
///
/// # Errors
/// `Conflict` when a guarded resource changed since it was read.
pub async fn commit(store: &dyn Store, writes: Vec<Write>, extra: Vec<Op>) -> Result<i64, CompileError> {
    let mut revision = 0;
    let mut txn = Txn { success: extra, ..Default::default() };
    for w in writes {
        if txn.success.len() + txn.compares.len() + w.ops.len() + w.compares.len() > MAX_TXN_OPS
            && !txn.success.is_empty()
        {
            revision = run(store, std::mem::take(&mut txn)).await?;
        }
        txn.compares.extend(w.compares);
        txn.success.extend(w.ops);
    }
    if !txn.success.is_empty() {
        revision = run(store, txn).await?;
    }
    Ok(revision)
}

async fn run(store: &dyn Store, txn: Txn) -> Result<i64, CompileError> {
    let r = store.txn(txn).await?;
    if !r.succeeded {
        return Err(CompileError::Conflict);
    }
    Ok(r.revision)
}
