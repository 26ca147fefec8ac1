//! Cluster-wide rate limits and budget periods: a control plane with a short rate window and an
//! injectable clock, three edges, and callers hammering one edge, then all three.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use llmgw_tests::mock::MockProvider;
use serde_json::{Value, json};

use crate::assert_eventually;
use crate::cluster::{ADMIN_TOKEN, apply, cp_env};
use crate::fixtures::client;
use crate::harness::{Llmgw, PATIENCE, admin};

const WINDOW_MS: u64 = 3_000;

fn config(base_url: &str) -> String {
    crate::fixtures::priced_config(base_url, (0.0, 10_000.0), "")
}

async fn key(cp: &Llmgw, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["key", "create", "--name", name, "--team", "search", "-o", "json"];
    args.extend_from_slice(extra);
    admin(&cp.grpc_url(), ADMIN_TOKEN, &args).await.json()["secret"].as_str().unwrap().to_owned()
}

async fn post(
    edge: &str,
    path: &str,
    secret: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = client().post(format!("{edge}{path}")).bearer_auth(secret).json(body).send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

fn chat() -> Value {
    json!({ "model": "chat", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] })
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Eight callers on `edges` for exactly `windows` whole rate windows; returns the requests
/// served. Refusals must be 429 `rate_limit_exceeded` with OpenAI's headers.
async fn hammer(edges: &[String], secret: &str, windows: u64) -> u64 {
    // Start on a window boundary (windows are aligned to the epoch), so the count covers whole
    // windows only.
    let start = (unix_ms() / WINDOW_MS + 1) * WINDOW_MS;
    tokio::time::sleep(Duration::from_millis(start - unix_ms())).await;
    let end = Instant::now() + Duration::from_millis(windows * WINDOW_MS);
    let served = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (edge, secret, served) = (edges[i % edges.len()].clone(), secret.to_owned(), served.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let (status, headers, body) = post(&edge, "/v1/chat/completions", &secret, &chat()).await;
                if Instant::now() >= end {
                    break;
                }
                match status {
                    200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                        assert!(headers.contains_key("x-ratelimit-limit-requests"), "{headers:?}");
                    }
                    429 => {
                        assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                        assert_eq!(headers["x-ratelimit-limit-requests"], "6");
                        assert!(headers.contains_key("x-ratelimit-remaining-requests"));
                        assert!(headers.contains_key("x-ratelimit-reset-requests"));
                        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                        assert!((1..=3).contains(&retry), "retry-after {retry}");
                        // A polite client waits a little instead of spinning on refusals.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    s => panic!("unexpected {s}: {body}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    served.load(Ordering::Relaxed)
}

#[tokio::test]
async fn rpm_holds_on_one_edge_and_spread_over_three() {
    let mock = MockProvider::start().await.unwrap();
    let window = format!("{WINDOW_MS}ms");
    let cp = Llmgw::control_plane(&["--store", "embedded", "--rate-window", &window], &cp_env()).await;
    apply(&cp, &config(&mock.base_url())).await;
    // 120 per minute is 6 per 3-second window.
    let secret = key(&cp, "limited", &["--rpm", "120"]).await;
    let mut edges = Vec::new();
    for _ in 0..3 {
        edges.push(Llmgw::edge_of(&[&cp], &[], &[]).await);
    }
    let urls: Vec<String> = edges.iter().map(|e| e.url("")).collect();
    // Five windows: 15 s of a 120-per-minute limit is 30 requests; ±10% is 27..=33.
    let one = hammer(&urls[..1], &secret, 5).await;
    let all = hammer(&urls, &secret, 5).await;
    eprintln!("served in 5 windows of 6: one edge {one}, three edges {all}");
    assert!((27..=33).contains(&one), "one edge served {one}");
    assert!((27..=33).contains(&all), "three edges served {all}");
}

#[tokio::test]
async fn a_daily_budget_serves_again_after_the_day_boundary() {
    let mock = MockProvider::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("clock-offset");
    std::fs::write(&offset, "0").unwrap();
    let cp = Llmgw::control_plane(
        &["--store", "embedded", "--clock-offset-file", offset.to_str().unwrap()],
        &cp_env(),
    )
    .await;
    apply(&cp, &config(&mock.base_url())).await;
    // $0.10 a day: two requests at $0.05.
    let secret = key(&cp, "daily", &["--budget-usd", "0.10", "--period", "daily"]).await;
    let edge = Llmgw::edge_of(&[&cp], &[], &[]).await;
    let url = edge.url("");
    for _ in 0..2 {
        let (status, _, body) = post(&url, "/v1/chat/completions", &secret, &chat()).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, headers, body) = post(&url, "/v1/chat/completions", &secret, &chat()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("key"), "{body}");
    assert_eq!(headers["x-should-retry"], "false");
    // Anthropic-format clients get Anthropic's shape.
    let msg = json!({ "model": "chat", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] });
    let (status, _, body) = post(&url, "/v1/messages", &secret, &msg).await;
    assert_eq!(status, 429);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("budget"), "{body}");

    // The control plane's clock crosses midnight UTC: a new day, a new budget.
    let now = (unix_ms() / 1000) as i64;
    let to_midnight = 86_400 - now.rem_euclid(86_400) + 60;
    std::fs::write(&offset, to_midnight.to_string()).unwrap();
    assert_eventually!(
        post(&url, "/v1/chat/completions", &secret, &chat()).await.0 == 200,
        PATIENCE,
        "the budget did not reopen after the day boundary"
    );
}

#[tokio::test]
async fn a_config_file_edge_enforces_budgets_and_limits_itself() {
    let mock = MockProvider::start().await.unwrap();
    let yaml = format!(
        r#"{}keys:
  - name: capped
    team: search
    budget: {{ limit_usd: 0.10, period: total }}
    secret: {{ value: sk-llmgw-capped-0001 }}
  - name: slow
    team: search
    limits: {{ rpm: 3 }}
    secret: {{ value: sk-llmgw-slow-0002 }}
"#,
        config(&mock.base_url())
    );
    let edge = Llmgw::edge(&yaml, &[]).await;
    let url = edge.url("");
    for (secret, served, code) in
        [("sk-llmgw-capped-0001", 2, "budget_exceeded"), ("sk-llmgw-slow-0002", 3, "rate_limit_exceeded")]
    {
        for _ in 0..served {
            assert_eq!(post(&url, "/v1/chat/completions", secret, &chat()).await.0, 200);
        }
        let (status, _, body) = post(&url, "/v1/chat/completions", secret, &chat()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (429, Some(code)), "{body}");
    }
}

#[tokio::test]
async fn a_budget_and_rate_limits_on_one_key_are_granted_together() {
    // Every pool of a scope starts empty on a new edge: the first request must get grants for
    // all of them, not only for the first one it found short.
    let mock = MockProvider::start().await.unwrap();
    let cp = Llmgw::control_plane(&["--store", "embedded"], &cp_env()).await;
    apply(&cp, &config(&mock.base_url())).await;
    let secret = key(
        &cp,
        "both",
        &["--budget-usd", "100", "--period", "monthly", "--rpm", "1000", "--tpm", "1000000"],
    )
    .await;
    let edge = Llmgw::edge_of(&[&cp], &[], &[]).await;
    let url = edge.url("");
    for _ in 0..3 {
        let (status, headers, body) = post(&url, "/v1/chat/completions", &secret, &chat()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-ratelimit-limit-requests"], "1000");
        assert_eq!(headers["x-ratelimit-limit-tokens"], "1000000");
    }
}
