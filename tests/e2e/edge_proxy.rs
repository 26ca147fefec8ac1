//! The happy paths: chat, stream, completions, embeddings, models, credential substitution.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use llmgw_tests::mock::MockProvider;
use serde_json::json;

use crate::fixtures::*;
use crate::harness::Llmgw;

async fn setup() -> (MockProvider, Llmgw) {
    let mock = MockProvider::start().await.unwrap();
    let gw = Llmgw::edge(&config(&mock.base_url(), ""), &[]).await;
    (mock, gw)
}

/// Reads an SSE response to the end: the `data:` payloads in order.
async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_owned).collect()
}

#[tokio::test]
async fn chat_substitutes_model_and_credential() {
    let (mock, gw) = setup().await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat_body("hello there"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-llmgw-provider"], "mock");
    assert_eq!(h["x-llmgw-model"], "gpt-4o-mini");
    assert_eq!(h["x-request-id"].len(), 32);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the mock provider.");

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.body["model"], "gpt-4o-mini");
    assert_eq!(r.body["messages"][0]["content"], "hello there");
    assert_eq!(r.header("authorization"), Some(format!("Bearer {UPSTREAM_CRED}").as_str()));
    for (name, value) in &r.headers {
        assert!(!value.contains(KEY), "the caller's key reached the provider in {name}");
    }
}

#[tokio::test]
async fn credentials_rotate_and_request_id_is_kept() {
    let (mock, gw) = setup().await;
    for _ in 0..4 {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-request-id", "req-abc-123")
            .json(&chat_body("hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
    }
    let auths: Vec<_> =
        mock.requests().iter().map(|r| r.header("authorization").unwrap().to_owned()).collect();
    let first = auths.iter().filter(|a| a.ends_with(UPSTREAM_CRED)).count();
    let second = auths.iter().filter(|a| a.ends_with(UPSTREAM_CRED_2)).count();
    assert_eq!((first, second), (2, 2), "{auths:?}");
}

#[tokio::test]
async fn x_api_key_authenticates_too() {
    let (_mock, gw) = setup().await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", KEY)
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn stream_hides_usage_chunk_unless_asked() {
    let (mock, gw) = setup().await;
    let mut body = chat_body("count my tokens please");
    body["stream"] = json!(true);
    let resp =
        client().post(gw.url("/v1/chat/completions")).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.len() >= 3, "{events:?}");
    assert!(
        chunks.iter().all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "usage chunk leaked: {events:?}"
    );
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello from the mock provider.");
    // The gateway asked for usage upstream, so it could count the tokens.
    assert_eq!(mock.requests()[0].body["stream_options"]["include_usage"], true);
    assert_eq!(gw.metric("llmgw_tokens_total", &[("model", "chat"), ("direction", "input")]).await, 4.0);

    body["stream_options"] = json!({ "include_usage": true });
    let resp =
        client().post(gw.url("/v1/chat/completions")).bearer_auth(KEY).json(&body).send().await.unwrap();
    let events = sse_events(resp).await;
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 4);
    assert_eq!(usage["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn stream_is_relayed_chunk_by_chunk() {
    let (_mock, gw) = setup().await;
    let body = json!({
        "model": "chat", "stream": true,
        "messages": [{ "role": "user", "content": "slowly #mock:slow_ms=400" }]
    });
    let start = Instant::now();
    let resp =
        client().post(gw.url("/v1/chat/completions")).bearer_auth(KEY).json(&body).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let mut first_content = None;
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if first_content.is_none() && chunk.windows(9).any(|w| w == b"\"content\"") {
            first_content = Some(start.elapsed());
        }
        all.extend_from_slice(&chunk);
    }
    let total = start.elapsed();
    let first = first_content.expect("no content chunk");
    // 8 events 400 ms apart: a buffering proxy would deliver everything at the end.
    assert!(total - first >= Duration::from_millis(1500), "first content at {first:?}, end at {total:?}");
    assert!(String::from_utf8(all).unwrap().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn completions_and_embeddings() {
    let (mock, gw) = setup().await;
    let resp = client()
        .post(gw.url("/v1/completions"))
        .bearer_auth(KEY)
        .json(&json!({ "model": "chat", "prompt": "once upon a time" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");

    let resp = client()
        .post(gw.url("/v1/completions"))
        .bearer_auth(KEY)
        .json(&json!({ "model": "chat", "prompt": "once", "stream": true }))
        .send()
        .await
        .unwrap();
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    let resp = client()
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(KEY)
        .json(&json!({ "model": "embed", "input": ["a b", "c"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmgw-model"], "text-embedding-3-small");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let paths: Vec<_> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v1/completions", "/v1/completions", "/v1/embeddings"]);
    assert_eq!(mock.requests()[2].body["model"], "text-embedding-3-small");
}

#[tokio::test]
async fn models_lists_what_the_key_may_use() {
    let (_mock, gw) = setup().await;
    let ids = |v: serde_json::Value| -> Vec<String> {
        v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
    };
    let all: serde_json::Value =
        client().get(gw.url("/v1/models")).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["object"], "list");
    assert_eq!(ids(all), ["chat", "embed", "other"]);
    let some: serde_json::Value = client()
        .get(gw.url("/v1/models"))
        .bearer_auth(LIMITED_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(some), ["chat"]);
}

#[tokio::test]
async fn usage_tokens_and_cost_are_counted() {
    let (_mock, gw) = setup().await;
    for _ in 0..3 {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&chat_body("#mock:usage=1000,500"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(gw.metric("llmgw_tokens_total", &[("model", "chat"), ("direction", "input")]).await, 3000.0);
    assert_eq!(gw.metric("llmgw_tokens_total", &[("model", "chat"), ("direction", "output")]).await, 1500.0);
    // 1000 × $1/Mtok + 500 × $2/Mtok = 2000 micro-USD a request.
    assert_eq!(
        gw.metric("llmgw_cost_micro_usd_total", &[("model", "chat"), ("provider", "mock")]).await,
        6000.0
    );
    assert_eq!(gw.metric("llmgw_requests_total", &[("model", "chat"), ("status", "200")]).await, 3.0);
}
