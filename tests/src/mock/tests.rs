//! The mock over real sockets, driven by a plain hyper client: OpenAI here, the other formats
//! in the modules below.

mod anthropic;
mod azure;
mod bedrock;
mod gemini;
mod openai_tools;
mod responses;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::{Behaviour, MockOptions, MockProvider};

struct Harness {
    mock: MockProvider,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Harness {
    async fn start() -> Self {
        Self::with(MockOptions::default()).await
    }

    async fn with(options: MockOptions) -> Self {
        Self {
            mock: MockProvider::start_with(options).await.unwrap(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Bytes) -> Response<Incoming> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.mock.addr()))
            .header("authorization", "Bearer sk-test")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        self.client.request(request).await.unwrap()
    }

    /// A POST with exactly these headers (and a JSON content type).
    async fn post_with(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Response<Incoming> {
        let mut request = Request::post(format!("http://{}{path}", self.mock.addr()))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.client.request(request.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Response<Incoming> {
        self.send(Method::POST, path, Bytes::from(body.to_string())).await
    }

    async fn get(&self, path: &str) -> Response<Incoming> {
        self.send(Method::GET, path, Bytes::new()).await
    }
}

fn chat(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": content}
    ]})
}

fn stream_chat(model: &str, content: &str) -> Value {
    let mut body = chat(model, content);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

async fn body_json(response: Response<Incoming>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// Reads frames until the body ends or fails; returns what arrived and whether it failed.
async fn read_body(response: Response<Incoming>) -> (Vec<u8>, bool) {
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received.extend_from_slice(frame.data_ref().unwrap()),
            Err(_) => return (received, true),
        }
    }
    (received, false)
}

/// The `data:` payloads of an SSE body.
fn events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn header<'a>(response: &'a Response<Incoming>, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

#[tokio::test]
async fn chat_answers_an_openai_completion_and_records_the_request() {
    let h = Harness::start().await;
    let response = h.post("/v1/chat/completions", chat("gpt-4o-mini", "one two three")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "application/json");
    let body = body_json(response).await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].is_u64());
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello from the mock provider.");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(body["usage"], json!({"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}));

    assert_eq!(h.mock.hits("chat"), 1);
    assert_eq!(h.mock.hits("chat_stream"), 0);
    let requests = h.mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(requests[0].body["messages"][1]["content"], "one two three");
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_a_usage_chunk_and_done() {
    let h = Harness::start().await;
    let response = h.post("/v1/chat/completions", stream_chat("gpt-4o", "hi there")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let (body, failed) = read_body(response).await;
    assert!(!failed);
    let events = events(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert!(chunks.iter().all(|c| c["model"] == "gpt-4o"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello from the mock provider.");
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}));
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert!(rest.iter().all(|c| c["usage"].is_null()));
    assert_eq!(h.mock.hits("chat_stream"), 1);
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_field() {
    let h = Harness::start().await;
    let mut request = chat("m", "hi");
    request["stream"] = json!(true);
    let (body, _) = read_body(h.post("/v1/chat/completions", request).await).await;
    let events = events(&body);
    assert_eq!(events.len(), 1 + 5 + 1 + 1);
    let finish: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(finish.get("usage").is_none());
}

#[tokio::test]
async fn model_directive_injects_a_500() {
    let h = Harness::start().await;
    let response = h.post("/v1/chat/completions", chat("gpt-4o-mini#mock:status=500", "hi")).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = body_json(response).await;
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"].is_string());
    assert!(body["error"]["param"].is_null());
    assert_eq!(h.mock.hits("fault:500"), 1);
    assert_eq!(h.mock.hits("chat"), 1);

    // The same mock still answers a plain model.
    let ok = h.post("/v1/chat/completions", chat("gpt-4o-mini", "hi")).await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn message_directive_injects_a_429_with_retry_after() {
    let h = Harness::start().await;
    let response =
        h.post("/v1/chat/completions", stream_chat("gpt-4o", "hello #mock:status=429,retry_after=2")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), "2");
    assert_eq!(header(&response, "content-type"), "application/json");
    let body = body_json(response).await;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(h.mock.hits("fault:429"), 1);
    assert_eq!(h.mock.hits("chat_stream"), 1);
}

#[tokio::test]
async fn drop_after_closes_a_stream_after_n_events() {
    let h = Harness::start().await;
    let response = h.post("/v1/chat/completions", stream_chat("m", "go #mock:drop_after=2")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (body, failed) = read_body(response).await;
    assert!(failed, "the body should end in an error");
    assert_eq!(events(&body).len(), 2);
    assert_eq!(h.mock.hits("fault:drop"), 1);
}

#[tokio::test]
async fn drop_after_truncates_a_json_body() {
    let h = Harness::start().await;
    let response = h.post("/v1/chat/completions", chat("m#mock:drop_after=10", "x")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (body, failed) = read_body(response).await;
    assert!(failed);
    assert_eq!(body.len(), 10);
}

#[tokio::test]
async fn malformed_answers_json_that_does_not_parse() {
    let h = Harness::start().await;
    let response = h.post("/v1/chat/completions", chat("m", "#mock:malformed")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    let response = h.post("/v1/chat/completions", stream_chat("m", "#mock:malformed")).await;
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let (body, failed) = read_body(response).await;
    assert!(!failed);
    let bad =
        events(&body).iter().filter(|e| *e != "[DONE]" && serde_json::from_str::<Value>(e).is_err()).count();
    assert_eq!(bad, 1);
    assert_eq!(h.mock.hits("fault:malformed"), 2);
}

#[tokio::test]
async fn not_sse_answers_a_stream_request_with_json() {
    let h = Harness::start().await;
    let response = h.post("/v1/chat/completions", stream_chat("m#mock:not_sse", "x")).await;
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(body_json(response).await["object"], "chat.completion");
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let h = Harness::start().await;
    let request = Request::post(format!("{}/chat/completions", h.mock.base_url()))
        .body(Full::new(Bytes::from(chat("m#mock:reset", "x").to_string())))
        .unwrap();
    assert!(h.client.request(request).await.is_err());
    assert_eq!(h.mock.hits("fault:reset"), 1);
}

#[tokio::test]
async fn delay_and_overrides_apply() {
    let h = Harness::start().await;
    let started = Instant::now();
    let response = h
        .post(
            "/v1/chat/completions",
            chat("m", "#mock:delay_ms=50,usage=10,20,content=\"Hi, you\" #mock:slow_ms=1"),
        )
        .await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    let body = body_json(response).await;
    assert_eq!(body["choices"][0]["message"]["content"], "Hi, you");
    assert_eq!(body["usage"]["total_tokens"], 30);
    assert_eq!(h.mock.hits("fault:delay"), 1);
    assert_eq!(h.mock.hits("fault:slow"), 1);
}

#[tokio::test]
async fn max_tokens_cuts_the_answer() {
    let h = Harness::start().await;
    let mut request = chat("m", "x");
    request["max_completion_tokens"] = json!(3);
    let body = body_json(h.post("/v1/chat/completions", request).await).await;
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn bad_directive_is_a_400() {
    let h = Harness::start().await;
    let response = h.post("/v1/chat/completions", chat("m", "#mock:stauts=500")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = body_json(response).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("stauts"));
    assert_eq!(h.mock.hits("fault:bad_directive"), 1);
}

#[tokio::test]
async fn default_behaviour_applies_until_reset() {
    let h = Harness::start().await;
    h.mock.set_default(Behaviour { status: Some(503), ..Behaviour::default() });
    let response = h.post("/v1/chat/completions", chat("m", "x")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A directive overrides the default field by field.
    let response = h.post("/v1/chat/completions", chat("m#mock:status=200", "x")).await;
    assert_eq!(response.status(), StatusCode::OK);
    h.mock.reset();
    assert_eq!(h.mock.hits("fault:503"), 0);
    let response = h.post("/v1/chat/completions", chat("m", "x")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn completions_stream_and_not() {
    let h = Harness::start().await;
    let request = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"});
    let body = body_json(h.post("/v1/completions", request.clone()).await).await;
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Hello from the mock provider.");
    assert_eq!(body["usage"]["prompt_tokens"], 5);

    let mut stream = request;
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let (body, _) = read_body(h.post("/v1/completions", stream).await).await;
    let events = events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(h.mock.hits("completions"), 1);
    assert_eq!(h.mock.hits("completions_stream"), 1);
}

#[tokio::test]
async fn embeddings_take_strings_and_arrays() {
    let h = Harness::start().await;
    let request = json!({"model": "text-embedding-3-small", "input": ["a b", "c"]});
    let body = body_json(h.post("/v1/embeddings", request).await).await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][0]["object"], "embedding");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(body["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    let request = json!({"model": "e", "input": "hello", "encoding_format": "base64",
                         "dimensions": 4});
    let body = body_json(h.post("/v1/embeddings", request).await).await;
    // 4 f32 = 16 bytes = 24 base64 characters.
    assert_eq!(body["data"][0]["embedding"].as_str().unwrap().len(), 24);
}

#[tokio::test]
async fn models_and_unknown_paths() {
    let h = Harness::start().await;
    let body = body_json(h.get("/v1/models").await).await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["object"], "model");
    let response = h.get("/v1/nope").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(h.mock.hits("models"), 1);
    assert_eq!(h.mock.hits("not_found"), 1);
}

#[tokio::test]
async fn control_endpoints_work_over_http() {
    let h = Harness::start().await;
    let response = h.post("/_mock/default", json!({"status": 502})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = h.post("/v1/chat/completions", chat("m", "x")).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let bad = h.post("/_mock/default", json!({"stauts": 1})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let hits = body_json(h.get("/_mock/hits").await).await;
    assert_eq!(hits, json!({"chat": 1, "fault:502": 1}));
    let requests = body_json(h.get("/_mock/requests").await).await;
    assert_eq!(requests.as_array().unwrap().len(), 1);
    assert_eq!(requests[0]["headers"]["authorization"], "Bearer sk-test");

    h.post("/_mock/reset", json!({})).await;
    assert!(h.mock.all_hits().is_empty());
    let response = h.post("/v1/chat/completions", chat("m", "x")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn recording_is_bounded() {
    let h = Harness::with(MockOptions { record_limit: 3, ..MockOptions::default() }).await;
    for i in 0..5 {
        h.post("/v1/chat/completions", chat("m", &format!("n{i}"))).await;
    }
    let requests = h.mock.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].body["messages"][1]["content"], "n2");
    assert_eq!(h.mock.hits("chat"), 5);
}
