//! `audit [--since TIME]`: who changed what, when.

use std::io::Write;

use llmgw_shared::proto::{ListAuditRequest, ListAuditResponse};
use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, REQUEST_TIMEOUT};
use crate::render::{self, Output, Table};
use crate::{AdminError, AuditArgs};

#[derive(Debug, Serialize)]
struct Audit {
    records: Vec<Record>,
}

#[derive(Debug, Serialize)]
struct Record {
    time: String,
    time_unix_ms: i64,
    id: String,
    actor: String,
    action: String,
    resource: String,
    /// The resource before and after, as the JSON the server recorded (null when none).
    before: Value,
    after: Value,
}

pub(crate) async fn run(
    client: &Client,
    args: &AuditArgs,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let request = ListAuditRequest { since_unix: args.since.unwrap_or(0) };
    let response =
        client.call(request, REQUEST_TIMEOUT, |mut c, r| async move { c.list_audit(r).await }).await?;
    print(response, output, out)
}

/// The server's JSON text as JSON; text that is not JSON stays a string.
fn embedded(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn print(
    response: ListAuditResponse,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    if output != Output::Table {
        let records = response
            .records
            .into_iter()
            .map(|r| Record {
                time: render::time(r.time_unix_ms.div_euclid(1000)),
                time_unix_ms: r.time_unix_ms,
                before: embedded(&r.before),
                after: embedded(&r.after),
                id: r.id,
                actor: r.actor,
                action: r.action,
                resource: r.resource,
            })
            .collect();
        return render::structured(out, output, &Audit { records });
    }
    if response.records.is_empty() {
        return render::write_all(out, "no audit records\n");
    }
    let mut t = Table::new(&["TIME", "ACTOR", "ACTION", "RESOURCE"]);
    for r in &response.records {
        t.row(vec![
            render::time(r.time_unix_ms.div_euclid(1000)),
            r.actor.clone(),
            r.action.clone(),
            r.resource.clone(),
        ]);
    }
    render::write_all(out, &t.render())
}

#[cfg(test)]
mod tests {
    use llmgw_shared::proto::AuditRecord;

    use super::*;

    fn response() -> ListAuditResponse {
        ListAuditResponse {
            records: vec![AuditRecord {
                time_unix_ms: 1_767_225_600_123,
                id: "a1".into(),
                actor: "admin-bootstrap".into(),
                action: "revoke_key".into(),
                resource: "key/ranker-prod".into(),
                before: r#"{"revoked":false}"#.into(),
                after: "not json".into(),
            }],
        }
    }

    fn printed(r: ListAuditResponse, output: Output) -> String {
        let mut out = Vec::new();
        print(r, output, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_and_json() {
        assert_eq!(
            printed(response(), Output::Table),
            "TIME                  ACTOR            ACTION      RESOURCE\n\
             2026-01-01T00:00:00Z  admin-bootstrap  revoke_key  key/ranker-prod\n"
        );
        let v: serde_json::Value = serde_json::from_str(&printed(response(), Output::Json)).unwrap();
        assert_eq!(
            v["records"][0],
            serde_json::json!({
                "time": "2026-01-01T00:00:00Z", "time_unix_ms": 1_767_225_600_123_i64, "id": "a1",
                "actor": "admin-bootstrap", "action": "revoke_key", "resource": "key/ranker-prod",
                "before": {"revoked": false}, "after": "not json"
            })
        );
        assert_eq!(printed(ListAuditResponse::default(), Output::Table), "no audit records\n");
    }
}
