//! OpenAI chat: tool calls, the tool-result round trip, cached tokens.

use http::StatusCode;
use serde_json::{Value, json};

use super::{Harness, body_json, events, read_body};

fn tool_round_trip(result: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "weather in Paris? #mock:tool=get_weather"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": result}
    ]})
}

#[tokio::test]
async fn tool_directive_answers_a_tool_call() {
    let h = Harness::start().await;
    let request = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "weather in Paris? #mock:tool=get_weather"}
    ]});
    let body = body_json(h.post("/v1/chat/completions", request).await).await;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn tool_call_streams_its_arguments_in_fragments() {
    let h = Harness::start().await;
    let request = json!({"model": "gpt-4o", "stream": true, "messages": [
        {"role": "user", "content": "#mock:tool=get_weather"}
    ]});
    let (body, failed) = read_body(h.post("/v1/chat/completions", request).await).await;
    assert!(!failed);
    let events = events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert!(first["content"].is_null());
    let call = &first["tool_calls"][0];
    assert_eq!((call["index"].as_u64(), call["type"].as_str()), (Some(0), Some("function")));
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"], json!({"name": "get_weather", "arguments": ""}));
    let fragments: Vec<&str> = chunks[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(fragments.len(), 2);
    let arguments: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn a_tool_result_gets_a_text_answer_quoting_it() {
    let h = Harness::start().await;
    let body = body_json(h.post("/v1/chat/completions", tool_round_trip("It is 22 degrees")).await).await;
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["content"], "The tool said: It is 22 degrees");
    assert_eq!(choice["finish_reason"], "stop");
    // Words of the user message and the tool result; the assistant's call has no text.
    assert_eq!(body["usage"]["prompt_tokens"], 4 + 4);

    let long = "x".repeat(250);
    let body = body_json(h.post("/v1/chat/completions", tool_round_trip(&long)).await).await;
    assert_eq!(body["choices"][0]["message"]["content"], format!("The tool said: {}", "x".repeat(100)));
}

#[tokio::test]
async fn cached_reports_cached_prompt_tokens() {
    let h = Harness::start().await;
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "a b c #mock:cached=2"}]});
    let body = body_json(h.post("/v1/chat/completions", request).await).await;
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9,
               "prompt_tokens_details": {"cached_tokens": 2}})
    );
    // The legacy completions endpoint has no tools: the directive is ignored there.
    let request = json!({"model": "m", "prompt": "#mock:tool=f"});
    let response = h.post("/v1/completions", request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await["choices"][0]["text"], "Hello from the mock provider.");
}
