//! Anthropic's Messages API over HTTP.

use http::StatusCode;
use hyper::Response;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Harness, body_json, header, read_body};

const HEADERS: &[(&str, &str)] = &[("x-api-key", "sk-ant-test"), ("anthropic-version", "2023-06-01")];

fn messages(text: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "be brief",
           "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]})
}

fn streamed(text: &str) -> Value {
    let mut body = messages(text);
    body["stream"] = json!(true);
    body
}

async fn post(h: &Harness, body: Value) -> Response<Incoming> {
    h.post_with("/v1/messages", HEADERS, body).await
}

/// `(event name, data)` of each SSE event; the data's `type` must repeat the name.
async fn sse(response: Response<Incoming>) -> Vec<(String, Value)> {
    let (body, failed) = read_body(response).await;
    assert!(!failed);
    let text = String::from_utf8(body).unwrap();
    text.split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event.strip_prefix("event: ").unwrap().split_once("\ndata: ").unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name);
            (name.to_owned(), data)
        })
        .collect()
}

#[tokio::test]
async fn requires_the_key_and_version_headers() {
    let h = Harness::start().await;
    let response = h.post_with("/v1/messages", &[("anthropic-version", "2023-06-01")], messages("hi")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = body_json(response).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    let response = h.post_with("/v1/messages", &[("x-api-key", "k")], messages("hi")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"]["type"], "invalid_request_error");
    assert_eq!((h.mock.hits("unauthorized"), h.mock.hits("bad_request")), (1, 1));

    let mut no_max = messages("hi");
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let body = body_json(post(&h, no_max).await).await;
    assert_eq!(body["error"]["message"], "max_tokens: Field required");
}

#[tokio::test]
async fn answers_a_message() {
    let h = Harness::start().await;
    let response = post(&h, messages("one two three")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "request-id").starts_with("req_"));
    let body = body_json(response).await;
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!((body["type"].as_str(), body["role"].as_str()), (Some("message"), Some("assistant")));
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["content"], json!([{"type": "text", "text": "Hello from the mock provider."}]));
    assert_eq!((body["stop_reason"].as_str(), body["stop_sequence"].is_null()), (Some("end_turn"), true));
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 5, "output_tokens": 5, "cache_read_input_tokens": 0,
               "cache_creation_input_tokens": 0})
    );
    assert_eq!(h.mock.hits("messages"), 1);
    let recorded = &h.mock.requests()[0];
    assert_eq!((recorded.path.as_str(), recorded.header("x-api-key")), ("/v1/messages", Some("sk-ant-test")));
    assert_eq!(recorded.body["system"], "be brief");
}

#[tokio::test]
async fn streams_the_event_sequence() {
    let h = Harness::start().await;
    let response = post(&h, streamed("hi there")).await;
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let events = sse(response).await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = &events[0].1["message"];
    assert_eq!((start["content"].clone(), start["usage"]["input_tokens"].as_u64()), (json!([]), Some(4)));
    assert_eq!(events[1].1["content_block"], json!({"type": "text", "text": ""}));
    let text: String = events[3..8]
        .iter()
        .map(|(_, e)| {
            assert_eq!(e["delta"]["type"], "text_delta");
            e["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "Hello from the mock provider.");
    let delta = &events[9].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 5);
    assert_eq!(h.mock.hits("messages_stream"), 1);
}

#[tokio::test]
async fn tool_call_and_round_trip() {
    let h = Harness::start().await;
    let body = body_json(post(&h, messages("weather? #mock:tool=get_weather")).await).await;
    assert_eq!(body["stop_reason"], "tool_use");
    let block = &body["content"][0];
    assert_eq!((block["type"].as_str(), block["name"].as_str()), (Some("tool_use"), Some("get_weather")));
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["input"], json!({"city": "Paris"}));

    let events = sse(post(&h, streamed("#mock:tool=get_weather")).await).await;
    let start = &events[1].1["content_block"];
    assert_eq!((start["type"].as_str(), start["input"].clone()), (Some("tool_use"), json!({})));
    let partial: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, e)| {
            assert_eq!(e["delta"]["type"], "input_json_delta");
            e["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), json!({"city": "Paris"}));
    assert_eq!(events[events.len() - 2].1["delta"]["stop_reason"], "tool_use");

    let round_trip = json!({"model": "claude", "max_tokens": 50, "messages": [
        {"role": "user", "content": "weather? #mock:tool=get_weather"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
            "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "22 degrees"}]}
    ]});
    let body = body_json(post(&h, round_trip).await).await;
    assert_eq!(body["content"], json!([{"type": "text", "text": "The tool said: 22 degrees"}]));
    assert_eq!(body["stop_reason"], "end_turn");
}

#[tokio::test]
async fn errors_in_anthropic_shape() {
    let h = Harness::start().await;
    for (status, kind) in [
        (529, "overloaded_error"),
        (503, "overloaded_error"),
        (500, "api_error"),
        (400, "invalid_request_error"),
    ] {
        let response = post(&h, messages(&format!("#mock:status={status}"))).await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(body_json(response).await["error"]["type"], kind);
    }
    let response = post(&h, streamed("#mock:status=429,retry_after=3")).await;
    assert_eq!((response.status().as_u16(), header(&response, "retry-after")), (429, "3"));
    assert_eq!(body_json(response).await["error"]["type"], "rate_limit_error");

    // An error after the stream started: one `error` event after the first delta, then the end.
    let events = sse(post(&h, streamed("#mock:stream_error=overloaded_error")).await).await;
    let (name, error) = events.last().unwrap();
    assert_eq!((name.as_str(), error["error"]["type"].as_str()), ("error", Some("overloaded_error")));
    assert_eq!(events.iter().filter(|(name, _)| name == "content_block_delta").count(), 1);
    assert_eq!(h.mock.hits("fault:stream_error"), 1);
}

#[tokio::test]
async fn usage_cached_max_tokens_and_count_tokens() {
    let h = Harness::start().await;
    let body = body_json(post(&h, messages("a b c #mock:usage=40,7,cached=30")).await).await;
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 30,
               "cache_creation_input_tokens": 0})
    );
    let mut short = messages("x");
    short["max_tokens"] = json!(2);
    let body = body_json(post(&h, short).await).await;
    assert_eq!(
        (body["content"][0]["text"].as_str(), body["stop_reason"].as_str()),
        (Some("Hello from"), Some("max_tokens"))
    );

    let response = h.post_with("/v1/messages/count_tokens", HEADERS, messages("one two")).await;
    assert_eq!(body_json(response).await, json!({"input_tokens": 4}));
    assert_eq!(h.mock.hits("count_tokens"), 1);

    let response = post(&h, messages("#mock:malformed")).await;
    let (bytes, _) = read_body(response).await;
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
}
