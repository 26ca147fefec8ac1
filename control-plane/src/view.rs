//! The control plane's in-memory view of the config in the store, kept current by the
//! broadcaster's watch. Persistent maps, so readers take a cheap copy and never hold a lock
//! while they build a snapshot.

use llmgw_shared::proto::{self, Resource, ResourceKind, resource};

use crate::layout;

#[derive(Debug, Clone)]
pub struct Stored {
    pub resource: Resource,
    pub mod_revision: i64,
}

/// Everything edges receive, as of `revision`.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The store revision the view reflects (edge registrations and audit records bump it too).
    pub revision: i64,
    /// The revision of the last change to the config itself: an edge that applied this is current.
    pub config_revision: i64,
    /// (kind, name) → resource; keys are named by id.
    pub resources: imbl::OrdMap<(i32, String), Stored>,
    /// Key name → key id.
    pub key_names: imbl::HashMap<String, String>,
}

impl View {
    #[must_use]
    pub fn get(&self, kind: ResourceKind, name: &str) -> Option<&Stored> {
        self.resources.get(&(kind as i32, name.to_owned()))
    }

    pub fn of_kind(&self, kind: ResourceKind) -> impl Iterator<Item = &Stored> {
        let k = kind as i32;
        self.resources.range((k, String::new())..).take_while(move |((kk, _), _)| *kk == k).map(|(_, v)| v)
    }

    /// Applies a put; returns false when the view already has this or a newer write.
    pub fn put(&mut self, kind: ResourceKind, name: &str, resource: Resource, mod_revision: i64) -> bool {
        let id = (kind as i32, name.to_owned());
        if self.resources.get(&id).is_some_and(|s| s.mod_revision >= mod_revision) {
            return false;
        }
        if let Some(resource::Resource::Key(k)) = &resource.resource {
            if let Some(Stored {
                resource: Resource { resource: Some(resource::Resource::Key(old)) }, ..
            }) = self.resources.get(&id)
                && old.name != k.name
            {
                self.key_names.remove(&old.name);
            }
            self.key_names.insert(k.name.clone(), k.id.clone());
        }
        self.resources.insert(id, Stored { resource, mod_revision });
        self.config_revision = self.config_revision.max(mod_revision);
        true
    }

    /// Applies a delete; returns false when there was nothing (newer) to delete.
    pub fn delete(&mut self, kind: ResourceKind, name: &str, revision: i64) -> bool {
        let id = (kind as i32, name.to_owned());
        match self.resources.get(&id) {
            Some(s) if s.mod_revision < revision => {
                if let Some(resource::Resource::Key(k)) = &s.resource.resource {
                    self.key_names.remove(&k.name);
                }
                self.resources.remove(&id);
                self.config_revision = self.config_revision.max(revision);
                true
            }
            _ => false,
        }
    }

    /// A key by name or id.
    #[must_use]
    pub fn key(&self, name_or_id: &str) -> Option<(&proto::Key, i64)> {
        let id = self.key_names.get(name_or_id).map_or(name_or_id, String::as_str);
        match self.get(ResourceKind::Key, id)? {
            Stored { resource: Resource { resource: Some(resource::Resource::Key(k)) }, mod_revision } => {
                Some((k, *mod_revision))
            }
            _ => None,
        }
    }

    /// The whole view as a `Snapshot`, each resource passed through `map` (which seals or
    /// unseals credentials for its audience).
    pub fn snapshot(&self, mut map: impl FnMut(Resource) -> Resource) -> proto::Snapshot {
        let mut s = proto::Snapshot { revision: self.revision.max(0) as u64, ..Default::default() };
        for stored in self.resources.values() {
            push(&mut s, map(stored.resource.clone()));
        }
        s
    }

    /// The same snapshot in parts of at most `keys_per_part` keys (at least one part), made one
    /// at a time as they are taken: a million keys need never be one message in memory. The
    /// first part has every other resource (they sort before keys); each but the last says
    /// `more`.
    pub fn snapshot_parts<'a>(
        &'a self,
        keys_per_part: usize,
        mut map: impl FnMut(Resource) -> Resource + 'a,
    ) -> impl Iterator<Item = proto::Snapshot> + 'a {
        let revision = self.revision.max(0) as u64;
        let mut resources = self.resources.values().peekable();
        let (mut done, mut first) = (false, true);
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let mut part = proto::Snapshot { revision, ..Default::default() };
            if std::mem::take(&mut first) {
                part.keys_total = self.key_names.len() as u64;
            }
            while part.keys.len() < keys_per_part.max(1) {
                let Some(stored) = resources.next() else { break };
                push(&mut part, map(stored.resource.clone()));
            }
            part.more = resources.peek().is_some();
            done = !part.more;
            Some(part)
        })
    }
}

fn push(s: &mut proto::Snapshot, r: Resource) {
    match r.resource {
        Some(resource::Resource::Provider(p)) => s.providers.push(p),
        Some(resource::Resource::Model(m)) => s.models.push(m),
        Some(resource::Resource::Team(t)) => s.teams.push(t),
        Some(resource::Resource::Project(p)) => s.projects.push(p),
        Some(resource::Resource::Key(k)) => s.keys.push(k),
        None => {}
    }
}

/// The resources of a snapshot, each with its kind and name (id for keys).
pub fn resources_of(s: &proto::Snapshot) -> Vec<(ResourceKind, String, Resource)> {
    let mut out = Vec::new();
    let wrap = |r: resource::Resource| Resource { resource: Some(r) };
    out.extend(
        s.providers
            .iter()
            .map(|p| (ResourceKind::Provider, p.name.clone(), wrap(resource::Resource::Provider(p.clone())))),
    );
    out.extend(
        s.models
            .iter()
            .map(|m| (ResourceKind::Model, m.name.clone(), wrap(resource::Resource::Model(m.clone())))),
    );
    out.extend(
        s.teams
            .iter()
            .map(|t| (ResourceKind::Team, t.name.clone(), wrap(resource::Resource::Team(t.clone())))),
    );
    out.extend(
        s.projects
            .iter()
            .map(|p| (ResourceKind::Project, p.name.clone(), wrap(resource::Resource::Project(p.clone())))),
    );
    out.extend(
        s.keys.iter().map(|k| (ResourceKind::Key, k.id.clone(), wrap(resource::Resource::Key(k.clone())))),
    );
    out
}

/// Kind and name of a store key, decoded value included, if it is a config resource.
pub fn decode_kv(key: &[u8], value: &[u8]) -> Option<(ResourceKind, String, Resource)> {
    let (kind, name) = layout::parse_key(key)?;
    let r = layout::decode(kind, value).ok()?;
    Some((kind, name.to_owned(), r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(keys: usize) -> View {
        let mut v = View { revision: 3, ..View::default() };
        let mut put = |kind: ResourceKind, name: String, r: resource::Resource| {
            v.resources.insert(
                (kind as i32, name),
                Stored { resource: Resource { resource: Some(r) }, mod_revision: 1 },
            );
        };
        put(
            ResourceKind::Team,
            "t".into(),
            resource::Resource::Team(proto::Team { name: "t".into(), ..Default::default() }),
        );
        for i in 0..keys {
            let id = format!("k{i:03}");
            v.key_names.insert(format!("name-{i}"), id.clone());
            put(
                ResourceKind::Key,
                id.clone(),
                resource::Resource::Key(proto::Key { id, ..Default::default() }),
            );
        }
        put(
            ResourceKind::Model,
            "m".into(),
            resource::Resource::Model(proto::Model { name: "m".into(), ..Default::default() }),
        );
        v
    }

    #[test]
    fn parts_carry_every_resource_once_and_only_the_last_says_no_more() {
        let v = view(25);
        let parts: Vec<_> = v.snapshot_parts(10, |r| r).collect();
        let shape: Vec<_> = parts
            .iter()
            .map(|p| (p.revision, p.teams.len() + p.models.len(), p.keys.len(), p.more))
            .collect();
        assert_eq!(shape, [(3, 2, 10, true), (3, 0, 10, true), (3, 0, 5, false)]);
        let totals: Vec<_> = parts.iter().map(|p| p.keys_total).collect();
        assert_eq!(totals, [25, 0, 0], "the first part says how many keys are coming");
        let ids: Vec<_> = parts.iter().flat_map(|p| &p.keys).map(|k| k.id.as_str()).collect();
        let whole = v.snapshot(|r| r);
        assert_eq!(ids, whole.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>());

        let exact: Vec<_> = view(20).snapshot_parts(10, |r| r).map(|p| (p.keys.len(), p.more)).collect();
        assert_eq!(exact, [(10, true), (10, false)], "no empty last part");
        let none: Vec<_> =
            view(0).snapshot_parts(10, |r| r).map(|p| (p.teams.len(), p.keys.len(), p.more)).collect();
        assert_eq!(none, [(1, 0, false)]);
    }
}
