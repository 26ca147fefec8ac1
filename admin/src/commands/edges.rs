//! `edges`: each connected edge, the revision it applied, and when it was last heard from.

use std::io::Write;

use llmgw_shared::proto::{ListEdgesRequest, ListEdgesResponse};
use serde::Serialize;

use crate::AdminError;
use crate::client::{Client, REQUEST_TIMEOUT};
use crate::render::{self, Output, Table};

#[derive(Debug, Serialize)]
struct Edges {
    /// The control plane's current revision: an edge below it has not applied the latest change.
    revision: u64,
    edges: Vec<Edge>,
}

#[derive(Debug, Serialize)]
struct Edge {
    edge_id: String,
    applied_revision: u64,
    last_contact: String,
    last_contact_unix_ms: i64,
    control_plane_id: String,
    version: String,
}

pub(crate) async fn run(
    client: &Client,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let response = client
        .call(ListEdgesRequest {}, REQUEST_TIMEOUT, |mut c, r| async move { c.list_edges(r).await })
        .await?;
    print(response, render::now_unix_ms(), output, out)
}

fn print(
    response: ListEdgesResponse,
    now_ms: i64,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    if output != Output::Table {
        let edges = response
            .edges
            .into_iter()
            .map(|e| Edge {
                last_contact: render::time(e.last_contact_unix_ms.div_euclid(1000)),
                edge_id: e.edge_id,
                applied_revision: e.applied_revision,
                last_contact_unix_ms: e.last_contact_unix_ms,
                control_plane_id: e.control_plane_id,
                version: e.version,
            })
            .collect();
        return render::structured(out, output, &Edges { revision: response.revision, edges });
    }
    if response.edges.is_empty() {
        return render::write_all(out, &format!("no edges connected (revision {})\n", response.revision));
    }
    let mut t = Table::new(&["EDGE", "REVISION", "LAST_CONTACT", "CONTROL_PLANE", "VERSION"]);
    for e in &response.edges {
        let revision = if e.applied_revision < response.revision {
            format!("{} (behind)", e.applied_revision)
        } else {
            e.applied_revision.to_string()
        };
        t.row(vec![
            e.edge_id.clone(),
            revision,
            render::age(e.last_contact_unix_ms, now_ms),
            e.control_plane_id.clone(),
            e.version.clone(),
        ]);
    }
    render::write_all(out, &t.render())
}

#[cfg(test)]
mod tests {
    use llmgw_shared::proto::EdgeInfo;

    use super::*;

    fn response() -> ListEdgesResponse {
        let edge = |id: &str, rev, ms| EdgeInfo {
            edge_id: id.into(),
            applied_revision: rev,
            last_contact_unix_ms: ms,
            control_plane_id: "cp-0".into(),
            version: "0.1.0".into(),
        };
        ListEdgesResponse {
            edges: vec![edge("edge-a", 42, 1_767_225_598_000), edge("edge-b", 41, 1_767_225_480_000)],
            revision: 42,
        }
    }

    fn printed(r: ListEdgesResponse, output: Output) -> String {
        let mut out = Vec::new();
        print(r, 1_767_225_600_000, output, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_shows_ages_and_lagging_edges() {
        assert_eq!(
            printed(response(), Output::Table),
            "EDGE    REVISION     LAST_CONTACT  CONTROL_PLANE  VERSION\n\
             edge-a  42           2s ago        cp-0           0.1.0\n\
             edge-b  41 (behind)  2m ago        cp-0           0.1.0\n"
        );
        assert_eq!(
            printed(ListEdgesResponse { edges: vec![], revision: 3 }, Output::Table),
            "no edges connected (revision 3)\n"
        );
    }

    #[test]
    fn json() {
        let v: serde_json::Value = serde_json::from_str(&printed(response(), Output::Json)).unwrap();
        assert_eq!(v["revision"], 42);
        assert_eq!(
            v["edges"][0],
            serde_json::json!({
                "edge_id": "edge-a", "applied_revision": 42, "last_contact": "2025-12-31T23:59:58Z",
                "last_contact_unix_ms": 1_767_225_598_000_i64, "control_plane_id": "cp-0", "version": "0.1.0"
            })
        );
    }
}
