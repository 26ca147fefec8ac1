//! Azure OpenAI's deployment URLs over HTTP.

use http::StatusCode;
use serde_json::json;

use super::{Harness, body_json, events, read_body};

const CHAT: &str = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21";
const KEY: &[(&str, &str)] = &[("api-key", "azure-key")];

fn chat(text: &str) -> serde_json::Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn requires_api_version_and_api_key() {
    let h = Harness::start().await;
    let response = h.post_with("/openai/deployments/d/chat/completions", KEY, chat("hi")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(body_json(response).await["error"]["message"].as_str().unwrap().contains("api-version"));

    // A bearer token is not Azure's key header.
    let response = h.post_with(CHAT, &[("authorization", "Bearer azure-key")], chat("hi")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!((h.mock.hits("bad_request"), h.mock.hits("unauthorized")), (1, 1));
    assert_eq!(h.mock.hits("azure_chat"), 2);
}

#[tokio::test]
async fn answers_as_openai_with_the_deployment_as_model() {
    let h = Harness::start().await;
    let body = body_json(h.post_with(CHAT, KEY, chat("one two")).await).await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt4o-prod");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the mock provider.");
    assert_eq!(body["usage"]["prompt_tokens"], 2);

    let mut named = chat("x");
    named["model"] = json!("gpt-4o");
    assert_eq!(body_json(h.post_with(CHAT, KEY, named).await).await["model"], "gpt-4o");

    let mut stream = chat("x #mock:tool=lookup");
    stream["stream"] = json!(true);
    let (body, _) = read_body(h.post_with(CHAT, KEY, stream).await).await;
    let events = events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let first: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "lookup");

    let embeddings = "/openai/deployments/emb/embeddings?api-version=2024-10-21";
    let body = body_json(h.post_with(embeddings, KEY, json!({"input": "a b"})).await).await;
    assert_eq!((body["model"].as_str(), body["usage"]["prompt_tokens"].as_u64()), (Some("emb"), Some(2)));

    let completions = "/openai/deployments/instruct/completions?api-version=2024-10-21";
    let response = h.post_with(completions, KEY, json!({"prompt": "hi #mock:status=429"})).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body_json(response).await["error"]["code"], "rate_limit_exceeded");

    let hits = h.mock.all_hits();
    for name in ["azure_chat", "azure_chat_stream", "azure_embeddings", "azure_completions"] {
        assert!(hits.contains_key(name), "{name}: {hits:?}");
    }
    assert_eq!(hits.get("azure_chat"), Some(&2));
    let recorded = &h.mock.requests()[0];
    assert_eq!(recorded.query("api-version").as_deref(), Some("2024-10-21"));
    assert_eq!(recorded.header("api-key"), Some("azure-key"));
}
