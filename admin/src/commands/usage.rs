//! `usage [--team T] [--project P] [--key K] [--model M] [--since TIME]`.

use std::io::Write;

use llmgw_shared::proto::{UsageRequest, UsageResponse};
use serde::Serialize;

use crate::client::{Client, REQUEST_TIMEOUT};
use crate::render::{self, Output, Table};
use crate::{AdminError, UsageArgs};

/// `-o json`: `{"rows": [...]}` with exactly these fields (CONFIG.md); `key` is the key's name.
#[derive(Debug, Serialize)]
struct Usage {
    rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Row {
    team: String,
    project: String,
    key: String,
    model: String,
    provider: String,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    errors: u64,
}

pub(crate) fn request(a: &UsageArgs) -> UsageRequest {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    UsageRequest {
        team: s(&a.team),
        project: s(&a.project),
        key: s(&a.key),
        model: s(&a.model),
        since_unix: a.since.unwrap_or(0),
    }
}

pub(crate) async fn run(
    client: &Client,
    args: &UsageArgs,
    output: Output,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let response =
        client.call(request(args), REQUEST_TIMEOUT, |mut c, r| async move { c.usage(r).await }).await?;
    print(response, output, out)
}

fn print(response: UsageResponse, output: Output, out: &mut (dyn Write + Send)) -> Result<(), AdminError> {
    let rows: Vec<Row> = response
        .rows
        .into_iter()
        .map(|r| Row {
            team: r.team,
            project: r.project,
            key: r.key,
            model: r.model,
            provider: r.provider,
            requests: r.requests,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: r.cost_usd,
            errors: r.errors,
        })
        .collect();
    if output != Output::Table {
        return render::structured(out, output, &Usage { rows });
    }
    if rows.is_empty() {
        return render::write_all(out, "no usage\n");
    }
    let mut t = Table::new(&[
        "TEAM",
        "PROJECT",
        "KEY",
        "MODEL",
        "PROVIDER",
        "REQUESTS",
        "INPUT_TOKENS",
        "OUTPUT_TOKENS",
        "COST",
        "ERRORS",
    ]);
    let mut total = (0u64, 0u64, 0u64, 0f64, 0u64);
    for r in &rows {
        total = (
            total.0.saturating_add(r.requests),
            total.1.saturating_add(r.input_tokens),
            total.2.saturating_add(r.output_tokens),
            total.3 + r.cost_usd,
            total.4.saturating_add(r.errors),
        );
        t.row(vec![
            r.team.clone(),
            r.project.clone(),
            r.key.clone(),
            r.model.clone(),
            r.provider.clone(),
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            render::usd(r.cost_usd),
            r.errors.to_string(),
        ]);
    }
    if rows.len() > 1 {
        let blank = String::new;
        t.row(vec![
            "TOTAL".to_owned(),
            blank(),
            blank(),
            blank(),
            blank(),
            total.0.to_string(),
            total.1.to_string(),
            total.2.to_string(),
            render::usd(total.3),
            total.4.to_string(),
        ]);
    }
    render::write_all(out, &t.render())
}

#[cfg(test)]
mod tests {
    use llmgw_shared::proto::UsageRowView;

    use super::*;

    fn row(key: &str, requests: u64, cost_usd: f64) -> UsageRowView {
        UsageRowView {
            team: "search".into(),
            project: "ranker".into(),
            key: key.into(),
            model: "chat".into(),
            provider: "openai".into(),
            requests,
            input_tokens: 100,
            output_tokens: 20,
            cost_usd,
            errors: 1,
        }
    }

    fn printed(rows: Vec<UsageRowView>, output: Output) -> String {
        let mut out = Vec::new();
        print(UsageResponse { rows }, output, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_rows_have_exactly_the_contract_keys() {
        let v: serde_json::Value =
            serde_json::from_str(&printed(vec![row("ranker-prod", 3, 0.25)], Output::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"rows": [{
                "team": "search", "project": "ranker", "key": "ranker-prod", "model": "chat",
                "provider": "openai", "requests": 3, "input_tokens": 100, "output_tokens": 20,
                "cost_usd": 0.25, "errors": 1
            }]})
        );
        assert_eq!(printed(vec![], Output::Json), "{\n  \"rows\": []\n}\n");
    }

    #[test]
    fn table_has_a_total_row() {
        let t = printed(vec![row("a", 3, 0.25), row("b", 2, 1.0)], Output::Table);
        let last = t.lines().last().unwrap();
        assert!(last.starts_with("TOTAL") && last.contains("$1.25"), "{t}");
        assert!(last.split_whitespace().any(|w| w == "5"), "{t}");
        assert_eq!(printed(vec![], Output::Table), "no usage\n");
    }

    #[test]
    fn request_fields() {
        let a = UsageArgs {
            team: Some("t".into()),
            project: None,
            key: Some("k".into()),
            model: None,
            since: Some(5),
        };
        let r = request(&a);
        assert_eq!((r.team.as_str(), r.project.as_str(), r.key.as_str(), r.since_unix), ("t", "", "k", 5));
    }
}
