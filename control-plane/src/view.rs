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
            match map(stored.resource.clone()).resource {
                Some(resource::Resource::Provider(p)) => s.providers.push(p),
                Some(resource::Resource::Model(m)) => s.models.push(m),
                Some(resource::Resource::Team(t)) => s.teams.push(t),
                Some(resource::Resource::Project(p)) => s.projects.push(p),
                Some(resource::Resource::Key(k)) => s.keys.push(k),
                None => {}
            }
        }
        s
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
