//! Where everything lives in the store (ARCHITECTURE.md's etcd layout), and the encoding of
//! resource values (protobuf messages from config.proto).

use llmgw_shared::proto::{self, Resource, ResourceKind, resource};
use prost::Message;

pub const ROOT: &str = "/llmgw/v1/";
pub const PROVIDERS: &str = "/llmgw/v1/providers/";
pub const MODELS: &str = "/llmgw/v1/models/";
pub const TEAMS: &str = "/llmgw/v1/teams/";
pub const PROJECTS: &str = "/llmgw/v1/projects/";
pub const KEYS: &str = "/llmgw/v1/keys/";
/// Key name → key id: a create-if-absent here makes names unique across replicas.
pub const KEY_NAMES: &str = "/llmgw/v1/keynames/";
pub const EDGES: &str = "/llmgw/v1/edges/";
pub const AUDIT: &str = "/llmgw/v1/audit/";
/// Usage counter shards: `key:{key_id}/{h{YYYYMMDDHH}|total}/{cp_id}` (see `usage::shard`).
pub const USAGE: &str = "/llmgw/v1/usage/";
/// The last counted seq of each edge process: `{edge_id}/{epoch}`.
pub const USAGE_SEQ: &str = "/llmgw/v1/usage-seq/";

/// The kinds that make up the config edges receive, with their prefixes.
pub const CONFIG_KINDS: [(ResourceKind, &str); 5] = [
    (ResourceKind::Provider, PROVIDERS),
    (ResourceKind::Model, MODELS),
    (ResourceKind::Team, TEAMS),
    (ResourceKind::Project, PROJECTS),
    (ResourceKind::Key, KEYS),
];

#[must_use]
pub fn prefix(kind: ResourceKind) -> Option<&'static str> {
    CONFIG_KINDS.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p)
}

/// The kind and name (a key's id for keys) a store key holds, if it is a config resource.
#[must_use]
pub fn parse_key(key: &[u8]) -> Option<(ResourceKind, &str)> {
    let key = std::str::from_utf8(key).ok()?;
    CONFIG_KINDS.iter().find_map(|(k, p)| key.strip_prefix(p).filter(|n| !n.is_empty()).map(|n| (*k, n)))
}

#[must_use]
pub fn store_key(kind: ResourceKind, name: &str) -> Vec<u8> {
    format!("{}{name}", prefix(kind).unwrap_or(ROOT)).into_bytes()
}

#[must_use]
pub fn kind_of(r: &Resource) -> Option<(ResourceKind, &str)> {
    Some(match r.resource.as_ref()? {
        resource::Resource::Provider(p) => (ResourceKind::Provider, p.name.as_str()),
        resource::Resource::Model(m) => (ResourceKind::Model, m.name.as_str()),
        resource::Resource::Team(t) => (ResourceKind::Team, t.name.as_str()),
        resource::Resource::Project(p) => (ResourceKind::Project, p.name.as_str()),
        resource::Resource::Key(k) => (ResourceKind::Key, k.id.as_str()),
    })
}

/// Values are stored as the kind's own message, so etcdctl users see plain protobuf.
#[must_use]
pub fn encode(r: &Resource) -> Vec<u8> {
    match &r.resource {
        Some(resource::Resource::Provider(p)) => p.encode_to_vec(),
        Some(resource::Resource::Model(m)) => m.encode_to_vec(),
        Some(resource::Resource::Team(t)) => t.encode_to_vec(),
        Some(resource::Resource::Project(p)) => p.encode_to_vec(),
        Some(resource::Resource::Key(k)) => k.encode_to_vec(),
        None => Vec::new(),
    }
}

/// # Errors
/// Bytes that are not the kind's message.
pub fn decode(kind: ResourceKind, bytes: &[u8]) -> Result<Resource, prost::DecodeError> {
    let r = match kind {
        ResourceKind::Provider => resource::Resource::Provider(proto::Provider::decode(bytes)?),
        ResourceKind::Model => resource::Resource::Model(proto::Model::decode(bytes)?),
        ResourceKind::Team => resource::Resource::Team(proto::Team::decode(bytes)?),
        ResourceKind::Project => resource::Resource::Project(proto::Project::decode(bytes)?),
        ResourceKind::Key | ResourceKind::Unspecified => resource::Resource::Key(proto::Key::decode(bytes)?),
    };
    Ok(Resource { resource: Some(r) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = store_key(ResourceKind::Model, "meta-llama/Llama-3.1-8B");
        assert_eq!(parse_key(&k), Some((ResourceKind::Model, "meta-llama/Llama-3.1-8B")));
        assert_eq!(parse_key(b"/llmgw/v1/keynames/x"), None);
        assert_eq!(parse_key(b"/llmgw/v1/models/"), None);
    }
}
