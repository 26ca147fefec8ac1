//! `apply -f FILE [--dry-run] [--prune]`: the file's desired state → `Apply`, then the changes.

use std::io::Write;

use llmgw_shared::configfile::{self, CredentialRefs, ParseOptions};
use llmgw_shared::proto::{ApplyRequest, ApplyResponse, Snapshot};
use serde::Serialize;

use crate::client::{Client, REQUEST_TIMEOUT};
use crate::render::{self, Output};
use crate::{AdminError, ApplyArgs};

/// Reads and checks the file. Provider credential references are kept as written (the edges
/// resolve them, not this machine); key `secret:` values are resolved and hashed here.
pub(crate) fn read(args: &ApplyArgs) -> Result<Snapshot, AdminError> {
    let options = ParseOptions { credentials: CredentialRefs::Keep };
    let mut desired = configfile::load_with(&args.file, &options)?;
    // A file's key ids are its names (standalone edges have no id store); the control plane
    // matches keys by name and keeps the ids it assigned, so none is sent.
    for key in &mut desired.keys {
        key.id.clear();
    }
    Ok(desired)
}

#[derive(Debug, Serialize)]
struct Applied {
    dry_run: bool,
    revision: u64,
    changes: Vec<ChangeView>,
}

#[derive(Debug, Serialize)]
struct ChangeView {
    action: String,
    kind: String,
    name: String,
}

pub(crate) async fn run(
    client: &Client,
    args: &ApplyArgs,
    desired: Snapshot,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let request = ApplyRequest { desired: Some(desired), dry_run: args.dry_run, prune: args.prune };
    // A large file is one store transaction per chunk: give it more than a read.
    let response =
        client.call(request, REQUEST_TIMEOUT * 4, |mut c, r| async move { c.apply(r).await }).await?;
    print(&response, args.dry_run, output, out)
}

fn print(
    response: &ApplyResponse,
    dry_run: bool,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let changes: Vec<ChangeView> = response
        .changes
        .iter()
        .map(|c| ChangeView {
            action: c.action.clone(),
            kind: super::kind_name(c.kind),
            name: c.name.clone(),
        })
        .collect();
    if output != Output::Table {
        return render::structured(out, output, &Applied { dry_run, revision: response.revision, changes });
    }
    let mut text = String::new();
    for c in &changes {
        text.push_str(&format!("{} {} {}\n", c.action, c.kind, c.name));
    }
    let n = changes.len();
    let plural = if n == 1 { "change" } else { "changes" };
    text.push_str(&match (n, dry_run) {
        (0, _) => "no changes\n".to_owned(),
        (_, true) => format!("dry run: {n} {plural} not applied\n"),
        (_, false) => format!("applied {n} {plural} at revision {}\n", response.revision),
    });
    render::write_all(out, &text)
}

#[cfg(test)]
mod tests {
    use llmgw_shared::proto::{Change, ResourceKind};

    use super::*;

    fn response(changes: &[(&str, ResourceKind, &str)]) -> ApplyResponse {
        ApplyResponse {
            changes: changes
                .iter()
                .map(|(a, k, n)| Change { action: (*a).into(), kind: (*k).into(), name: (*n).into() })
                .collect(),
            revision: 42,
        }
    }

    fn printed(r: &ApplyResponse, dry_run: bool, output: Output) -> String {
        let mut out = Vec::new();
        print(r, dry_run, output, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn prints_changes_one_per_line() {
        let r = response(&[
            ("create", ResourceKind::Model, "chat"),
            ("update", ResourceKind::Key, "ranker-prod"),
            ("delete", ResourceKind::Provider, "old"),
        ]);
        assert_eq!(
            printed(&r, false, Output::Table),
            "create model chat\nupdate key ranker-prod\ndelete provider old\napplied 3 changes at revision 42\n"
        );
        assert!(printed(&r, true, Output::Table).ends_with("dry run: 3 changes not applied\n"));
        assert_eq!(printed(&response(&[]), false, Output::Table), "no changes\n");
    }

    #[test]
    fn json_lists_the_changes() {
        let r = response(&[("create", ResourceKind::Team, "search")]);
        let v: serde_json::Value = serde_json::from_str(&printed(&r, true, Output::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "dry_run": true, "revision": 42,
                "changes": [{"action": "create", "kind": "team", "name": "search"}]
            })
        );
    }
}
