//! One module per command: build the request, make the call, print the answer in each format.

pub(crate) mod apply;
pub(crate) mod audit;
pub(crate) mod edges;
pub(crate) mod get;
pub(crate) mod key;
pub(crate) mod usage;

use llmgw_shared::proto::ResourceKind;

/// A resource kind as the CLI prints it: `provider`, `model`, `team`, `project`, `key`.
pub(crate) fn kind_name(kind: i32) -> String {
    match ResourceKind::try_from(kind) {
        Ok(ResourceKind::Unspecified) | Err(_) => format!("kind-{kind}"),
        Ok(k) => crate::render::enum_name(k.as_str_name(), "RESOURCE_KIND_"),
    }
}
