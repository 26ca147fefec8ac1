//! OpenAI's Responses API over HTTP.

use http::StatusCode;
use hyper::Response;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Harness, body_json, header, read_body};

const TEXT: &str = "Hello from the mock provider.";

fn request(input: Value) -> Value {
    json!({"model": "gpt-4.1-mini", "instructions": "be brief", "input": input})
}

fn streamed(input: Value) -> Value {
    let mut body = request(input);
    body["stream"] = json!(true);
    body
}

/// `(event name, data)` of each SSE event; the data's `type` repeats the name and the
/// `sequence_number`s count from 0.
fn sse(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let events: Vec<(String, Value)> = text
        .split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event.strip_prefix("event: ").unwrap().split_once("\ndata: ").unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name);
            (name.to_owned(), data)
        })
        .collect();
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    events
}

async fn stream_events(response: Response<Incoming>) -> Vec<(String, Value)> {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let (body, failed) = read_body(response).await;
    assert!(!failed);
    sse(&body)
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

#[tokio::test]
async fn answers_a_response_object() {
    let h = Harness::start().await;
    let mut body = request(json!("one two three"));
    body["temperature"] = json!(0.2);
    body["metadata"] = json!({"k": "v"});
    let response = h.post("/v1/responses", body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "application/json");
    let body = body_json(response).await;
    assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!((body["object"].as_str(), body["status"].as_str()), (Some("response"), Some("completed")));
    assert!(body["created_at"].is_u64() && body["completed_at"].is_u64());
    assert_eq!(body["model"], "gpt-4.1-mini");
    assert!(body["error"].is_null() && body["incomplete_details"].is_null());
    // Request settings are echoed, the rest has the API's defaults.
    assert_eq!(body["instructions"], "be brief");
    assert_eq!((body["temperature"].as_f64(), body["metadata"].clone()), (Some(0.2), json!({"k": "v"})));
    assert_eq!((body["tools"].clone(), body["tool_choice"].as_str()), (json!([]), Some("auto")));
    let output = body["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    let message = &output[0];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        (message["type"].as_str(), message["status"].as_str(), message["role"].as_str()),
        (Some("message"), Some("completed"), Some("assistant"))
    );
    assert_eq!(
        message["content"],
        json!([{"type": "output_text", "text": TEXT, "annotations": [], "logprobs": []}])
    );
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 10})
    );
    assert_eq!((h.mock.hits("responses"), h.mock.hits("responses_stream")), (1, 0));
    let recorded = &h.mock.requests()[0];
    assert_eq!(recorded.body["input"], "one two three");
    assert_eq!(recorded.raw_body, recorded.body.to_string());

    // `/v1` is optional, and input items count as messages do.
    let items = json!([
        {"role": "user", "content": "first question"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "an answer"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "and then?"},
                                     {"type": "input_image", "image_url": "https://example.com/a.png"}]}
    ]);
    let body = body_json(h.post("/responses", request(items)).await).await;
    assert_eq!(body["usage"]["input_tokens"], 2 + 2 + 2 + 2);
    assert_eq!(h.mock.hits("responses"), 2);
}

#[tokio::test]
async fn streams_the_event_sequence() {
    let h = Harness::start().await;
    let events = stream_events(h.post("/v1/responses", streamed(json!("one two three"))).await).await;
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let created = &events[0].1["response"];
    assert_eq!((created["status"].as_str(), created["usage"].is_null()), (Some("in_progress"), true));
    assert_eq!(created["output"], json!([]));
    let id = created["id"].as_str().unwrap();
    let added = &events[2].1;
    assert_eq!(added["output_index"], 0);
    assert_eq!(added["item"]["status"], "in_progress");
    assert_eq!(added["item"]["content"], json!([]));
    let item_id = added["item"]["id"].as_str().unwrap();
    assert!(item_id.starts_with("msg_"));
    assert_eq!(
        events[3].1["part"],
        json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
    );

    let deltas: Vec<&Value> =
        events.iter().filter(|(name, _)| name == "response.output_text.delta").map(|(_, d)| d).collect();
    assert!(
        deltas.iter().all(|d| d["item_id"] == item_id && d["output_index"] == 0 && d["content_index"] == 0)
    );
    let text: String = deltas.iter().map(|d| d["delta"].as_str().unwrap()).collect();
    assert_eq!(text, TEXT);
    assert_eq!(events[9].1["text"], TEXT);
    assert_eq!(events[10].1["part"]["text"], TEXT);
    assert_eq!(events[11].1["item"]["status"], "completed");
    assert_eq!(events[11].1["item"]["content"][0]["text"], TEXT);

    let done = &events[12].1["response"];
    assert_eq!((done["id"].as_str(), done["status"].as_str()), (Some(id), Some("completed")));
    assert_eq!(done["output"][0]["content"][0]["text"], TEXT);
    assert_eq!(done["usage"]["input_tokens"], 5);
    assert_eq!(done["usage"]["output_tokens"], 5);
    assert_eq!(done["usage"]["total_tokens"], 10);
    assert_eq!(h.mock.hits("responses_stream"), 1);
}

#[tokio::test]
async fn directives_apply() {
    let h = Harness::start().await;
    // An error in OpenAI's shape, the model's directive first.
    let mut body = request(json!("hi"));
    body["model"] = json!("gpt-4.1#mock:status=429,retry_after=3");
    let response = h.post("/v1/responses", body).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), "3");
    let body = body_json(response).await;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"].get("param").is_some());
    assert_eq!(h.mock.hits("fault:429"), 1);

    // Usage, cache and content, from the last user message.
    let items = json!([{"role": "user", "content": "x #mock:usage=100,7,cached=40,content=\"Hi, you\""}]);
    let body = body_json(h.post("/v1/responses", request(items.clone())).await).await;
    assert_eq!(body["output"][0]["content"][0]["text"], "Hi, you");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40}, "output_tokens": 7,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 107})
    );
    let events = stream_events(h.post("/v1/responses", streamed(items)).await).await;
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(done["response"]["usage"]["input_tokens_details"]["cached_tokens"], 40);

    // A bad directive and a body without a model: 400s.
    let response = h.post("/v1/responses", request(json!("#mock:stauts=1"))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.mock.hits("fault:bad_directive"), 1);
    let response = h.post("/v1/responses", json!({"input": "hi"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = body_json(response).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(h.mock.hits("bad_request"), 1);
}

#[tokio::test]
async fn max_output_tokens_makes_an_incomplete_response() {
    let h = Harness::start().await;
    let mut body = request(json!("go"));
    body["max_output_tokens"] = json!(2);
    let json = body_json(h.post("/v1/responses", body.clone()).await).await;
    assert_eq!(json["status"], "incomplete");
    assert_eq!(json["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(json["max_output_tokens"], 2);
    assert_eq!(json["output"][0]["status"], "incomplete");
    assert_eq!(json["output"][0]["content"][0]["text"], "Hello from");
    assert_eq!(json["usage"]["output_tokens"], 2);

    body["stream"] = json!(true);
    let events = stream_events(h.post("/v1/responses", body).await).await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "response.incomplete");
    assert_eq!(data["response"]["status"], "incomplete");
    assert_eq!(data["response"]["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn a_tool_call_and_its_round_trip() {
    let h = Harness::start().await;
    let ask = json!([{"role": "user", "content": "weather in Paris? #mock:tool=get_weather"}]);
    let body = body_json(h.post("/v1/responses", request(ask.clone())).await).await;
    let call = &body["output"][0];
    assert_eq!((call["type"].as_str(), call["name"].as_str()), (Some("function_call"), Some("get_weather")));
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(body["usage"]["output_tokens"], 2);

    let events = stream_events(h.post("/v1/responses", streamed(ask.clone())).await).await;
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[2].1["item"]["arguments"], "");
    let arguments: String = events[3..5].iter().map(|(_, d)| d["delta"].as_str().unwrap()).collect();
    assert_eq!(arguments, events[5].1["arguments"].as_str().unwrap());

    // The call's output comes back: the answer quotes it, the user's directive still read.
    let mut items = ask.as_array().unwrap().clone();
    items.push(call.clone());
    items.push(json!({"type": "function_call_output", "call_id": call["call_id"], "output": "22 degrees"}));
    let body = body_json(h.post("/v1/responses", request(Value::Array(items))).await).await;
    assert_eq!(body["output"][0]["type"], "message");
    assert_eq!(body["output"][0]["content"][0]["text"], "The tool said: 22 degrees");
}

#[tokio::test]
async fn stream_faults() {
    let h = Harness::start().await;
    let response = h.post("/v1/responses", streamed(json!("go #mock:drop_after=4"))).await;
    let (body, failed) = read_body(response).await;
    assert!(failed, "the body should end in an error");
    assert_eq!(sse(&body).len(), 4);
    assert_eq!(h.mock.hits("fault:drop"), 1);

    let response = h.post("/v1/responses", streamed(json!("#mock:malformed"))).await;
    let (body, failed) = read_body(response).await;
    assert!(!failed);
    let text = String::from_utf8(body).unwrap();
    let bad = text
        .split_terminator("\n\n")
        .filter(|e| serde_json::from_str::<Value>(e.split_once("data: ").unwrap().1).is_err())
        .count();
    assert_eq!(bad, 1);
    assert!(text.starts_with("event: response.created\n"), "{text}");
    let response = h.post("/v1/responses", request(json!("#mock:malformed"))).await;
    let bytes = read_body(response).await.0;
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
    assert_eq!(h.mock.hits("fault:malformed"), 2);

    let events =
        stream_events(h.post("/v1/responses", streamed(json!("#mock:stream_error=server_error"))).await)
            .await;
    assert_eq!(names(&events)[4..], ["response.output_text.delta", "error", "response.failed"]);
    assert_eq!(events[5].1["code"], "server_error");
    assert!(events[5].1["message"].is_string());
    assert_eq!(events[6].1["response"]["status"], "failed");
    assert_eq!(events[6].1["response"]["error"]["code"], "server_error");
    assert_eq!(h.mock.hits("fault:stream_error"), 1);

    let response = h.post("/v1/responses", streamed(json!("#mock:not_sse"))).await;
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(body_json(response).await["object"], "response");
}
