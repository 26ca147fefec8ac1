//! Operating an edge: reload, graceful shutdown, --check, health, metrics and logs.

use std::time::Duration;

use llmgw_tests::mock::MockProvider;
use serde_json::json;

use crate::fixtures::*;
use crate::harness::{Llmgw, bin};

async fn chat_status(gw: &Llmgw, key: &str) -> u16 {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

const NEW_KEY: &str = "sk-llmgw-test-added-0009";

fn with_new_key(base: &str) -> String {
    format!("{}  - name: added\n    team: search\n    secret: {{ value: {NEW_KEY} }}\n", config(base, ""))
}

/// Writes the file whole (a rename), so a reload never reads it half-written.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_file_keeps_the_old_config() {
    let mock = MockProvider::start().await.unwrap();
    let mut gw = Llmgw::edge(&config(&mock.base_url(), ""), &["--reload-poll-ms", "3600000"]).await;
    let path = gw.dir.join("llmgw.yaml");
    assert_eq!(chat_status(&gw, NEW_KEY).await, 401);

    replace(&path, &with_new_key(&mock.base_url()));
    gw.signal("HUP");
    gw.wait_log(|l| l["message"] == "configuration reloaded").await;
    assert_eq!(chat_status(&gw, NEW_KEY).await, 200);

    replace(&path, "version: 1\nproviders: [ {name: x, kind: nope} ]\n");
    gw.signal("HUP");
    let line =
        gw.wait_log(|l| l["message"] == "configuration rejected; still serving the previous one").await;
    assert!(line["error"].as_str().unwrap().contains("llmgw.yaml:2:"), "{line}");
    assert_eq!(chat_status(&gw, NEW_KEY).await, 200);
    assert_eq!(chat_status(&gw, KEY).await, 200);
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_polling() {
    let mock = MockProvider::start().await.unwrap();
    let mut gw = Llmgw::edge(&config(&mock.base_url(), ""), &["--reload-poll-ms", "100"]).await;
    std::fs::write(gw.dir.join("llmgw.yaml"), with_new_key(&mock.base_url())).unwrap();
    gw.wait_log(|l| l["message"] == "configuration reloaded").await;
    assert_eq!(chat_status(&gw, NEW_KEY).await, 200);
    assert_eq!(gw.metric("llmgw_config_revision", &[]).await, 2.0);
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let mock = MockProvider::start().await.unwrap();
    let mut gw = Llmgw::edge(&config(&mock.base_url(), ""), &["--shutdown-grace", "20"]).await;
    let mut body = chat_body("#mock:slow_ms=300");
    body["stream"] = json!(true);
    let resp =
        client().post(gw.url("/v1/chat/completions")).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    gw.signal("TERM");
    gw.wait_log(|l| l["message"] == "draining in-flight requests").await;
    // New connections are refused once draining began.
    assert!(reqwest::get(gw.url("/healthz")).await.is_err(), "accepted a new connection while draining");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "stream cut by shutdown: {text}");
    let status = gw.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    // One line each for the whole edge, in the order they happened.
    let lines: Vec<String> = gw.logs().into_iter().filter(|l| l.contains("drain")).collect();
    let said = |m: &str| lines.iter().filter(|l| l.contains(m)).count();
    assert_eq!((said("draining in-flight requests"), said("all connections drained")), (1, 1), "{lines:#?}");
    assert!(lines[0].contains("draining in-flight requests"), "{lines:#?}");
}

#[tokio::test]
async fn check_validates_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, config("http://127.0.0.1:9/v1", "")).unwrap();
    let out =
        std::process::Command::new(bin()).args(["edge", "--check", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = dir.path().join("bad.yaml");
    let text = config("http://127.0.0.1:9/v1", "")
        .replace("provider: mock\n        model: gpt-4o\n", "provider: opanai\n        model: gpt-4o\n");
    let line = text.lines().position(|l| l.contains("opanai")).unwrap() + 1;
    std::fs::write(&bad, text).unwrap();
    // Servers often run with RUST_BACKTRACE set: an operator's mistake still reads as one line.
    let out = std::process::Command::new(bin())
        .args(["edge", "--check", "--config"])
        .arg(&bad)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opanai") && err.contains(&format!(":{line}:")), "{err}");
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "{err}");
}

#[tokio::test]
async fn a_missing_env_credential_fails_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let text = config("http://127.0.0.1:9/v1", "")
        .replace(&format!("- value: {UPSTREAM_CRED}"), "- env: LLMGW_TEST_SURELY_UNSET");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(bin())
        .args(["edge", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LLMGW_TEST_SURELY_UNSET"));
}

#[tokio::test]
async fn health_metrics_and_access_log_without_secrets() {
    let mock = MockProvider::start().await.unwrap();
    let mut gw = Llmgw::edge(&config(&mock.base_url(), ""), &[]).await;
    for (addr, path) in
        [(gw.http, "/healthz"), (gw.http, "/readyz"), (gw.metrics, "/healthz"), (gw.metrics, "/readyz")]
    {
        assert_eq!(reqwest::get(format!("http://{addr}{path}")).await.unwrap().status(), 200, "{path}");
    }
    let prompt = "my secret prompt text";
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-request-id", "trace-me-1")
        .json(&chat_body(prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-llmgw-wrong-secret")
        .json(&chat_body(prompt))
        .send()
        .await
        .unwrap();
    let line = gw.wait_log(|l| l["message"] == "request" && l["request_id"] == "trace-me-1").await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["key"], "main");
    assert_eq!(line["model"], "chat");
    assert_eq!(line["provider"], "mock");
    assert_eq!(line["input_tokens"], 4);
    gw.wait_log(|l| l["message"] == "request" && l["status"] == 401).await;
    let metrics = reqwest::get(format!("http://{}/metrics", gw.metrics)).await.unwrap().text().await.unwrap();
    for name in [
        "llmgw_requests_total",
        "llmgw_request_duration_seconds_bucket",
        "llmgw_tokens_total",
        "llmgw_config_revision",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The gateway's own time: one request answered by its first attempt (the 401 never went
    // upstream), in microsecond buckets.
    assert_eq!(gw.metric("llmgw_gateway_overhead_seconds_count", &[]).await, 1.0);
    let own = gw.metric("llmgw_gateway_overhead_seconds_sum", &[]).await;
    assert!(own > 0.0 && own < 0.5, "own time {own} s");
    assert!(metrics.contains(r#"llmgw_gateway_overhead_seconds_bucket{le="0.00002"}"#), "{metrics}");
    for l in gw.logs() {
        for secret in [KEY, "sk-llmgw-wrong-secret", UPSTREAM_CRED, UPSTREAM_CRED_2, prompt] {
            assert!(!l.contains(secret), "log line leaks {secret:?}: {l}");
        }
    }
}
