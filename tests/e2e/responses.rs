//! OpenAI's Responses API (`POST /v1/responses`) through the real binary: passed through to
//! OpenAI-kind providers with only `model` rewritten, usage counted and priced from the answer,
//! refused for other provider kinds, and a stream cut mid-way ended with an error event.

use llmgw_tests::mock::MockProvider;
use serde_json::{Value, json};

use crate::assert_eventually;
use crate::fixtures::{KEY, client};
use crate::harness::{Llmgw, PATIENCE, run_python};

const TEXT: &str = "Hello from the mock provider.";

/// An `openai` provider and a `gemini` one on the same mock (it routes by path); `gpt` is
/// priced: 60 uncached input × $2 + 40 cached × $1 + 10 output × $10 per million = 260 µ$.
fn config(addr: &str) -> String {
    format!(
        r#"version: 1
providers:
  - name: oai
    kind: openai
    base_url: http://{addr}/v1
    credentials: [{{ value: sk-oai-secret }}]
  - name: google
    kind: gemini
    base_url: http://{addr}/v1beta
    credentials: [{{ value: goog-secret }}]
models:
  - name: gpt
    targets:
      - provider: oai
        model: gpt-4o-mini
        pricing: {{ input_per_mtok: 2.0, output_per_mtok: 10.0, cached_input_per_mtok: 1.0 }}
  - name: gemini
    targets: [{{ provider: google, model: gemini-2.0-flash }}]
teams:
  - name: t
keys:
  - name: main
    team: t
    secret: {{ value: {KEY} }}
"#
    )
}

async fn setup() -> (MockProvider, Llmgw) {
    let mock = MockProvider::start().await.unwrap();
    let gw = Llmgw::edge(&config(&mock.addr().to_string()), &[]).await;
    (mock, gw)
}

/// Sends `body` as these exact bytes.
async fn post(gw: &Llmgw, body: impl Into<String>) -> reqwest::Response {
    client()
        .post(gw.url("/v1/responses"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body.into())
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body, with the `event:` name when there is one.
fn sse(text: &str) -> Vec<(Option<&str>, Value)> {
    text.split_terminator("\n\n")
        .map(|event| {
            let (name, data) = match event.strip_prefix("event: ") {
                Some(rest) => {
                    let (name, data) = rest.split_once('\n').unwrap();
                    (Some(name), data)
                }
                None => (None, event),
            };
            let data = data.strip_prefix("data: ").unwrap_or_else(|| panic!("not an SSE event: {event:?}"));
            (name, serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")))
        })
        .collect()
}

#[tokio::test]
async fn openai_sdk_gets_the_providers_response_through_the_gateway() {
    let (mock, gw) = setup().await;
    let out = run_python(
        "openai_responses.py",
        &[
            ("LLMGW_BASE_URL", &gw.base_url()),
            ("LLMGW_KEY", KEY),
            ("LLMGW_MODEL", "gpt"),
            ("LLMGW_UNSUPPORTED_MODEL", "gemini"),
        ],
    )
    .await;
    assert!(out.contains("all checks passed"), "{out}");
    // Two plain creates, the streams (`stream=True`, `responses.stream()`, the cut one), and
    // nothing at all for the Gemini alias.
    assert_eq!((mock.hits("responses"), mock.hits("responses_stream")), (2, 3), "{:?}", mock.all_hits());
    assert_eq!(mock.hits("gemini") + mock.hits("gemini_stream"), 0);
    assert!(mock.requests().iter().all(|r| r.path == "/v1/responses"));
}

#[tokio::test]
async fn the_upstream_gets_the_clients_bytes_with_only_the_model_rewritten() {
    let (mock, gw) = setup().await;
    // Compact at the top level (the gateway re-joins top-level fields without spaces), with
    // what a re-serialisation would change inside the values: an escape, `0.50`, spacing,
    // key order.
    let sent = r#"{"model":"gpt","instructions":"Answer in one line, caf\u00e9 style.","input":[{"role":"user","content":[{"type":"input_text","text":"one two  three"}]}],"temperature":0.50,"max_output_tokens":100,"metadata":{"z":"1", "a":"2"},"store":false}"#;
    let resp = post(&gw, sent).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmgw-provider"], "oai");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["output"][0]["content"][0]["text"], TEXT);
    // The provider's answer is relayed as it is: the upstream model and the echoed settings.
    assert_eq!(answer["model"], "gpt-4o-mini");
    assert_eq!(answer["instructions"], "Answer in one line, café style.");

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let upstream = &requests[0];
    assert_eq!(upstream.path, "/v1/responses");
    assert_eq!(upstream.header("authorization"), Some("Bearer sk-oai-secret"));
    assert_eq!(upstream.body["model"], "gpt-4o-mini");
    assert_eq!(upstream.body["instructions"], "Answer in one line, caf\u{e9} style.");
    assert_eq!(upstream.body["input"][0]["content"][0]["text"], "one two  three");
    assert_eq!(upstream.raw_body, sent.replacen(r#""model":"gpt""#, r#""model":"gpt-4o-mini""#, 1));

    // A stream request gets nothing added (no `stream_options`, which chat streams get).
    let sent = r#"{"model":"gpt","stream":true,"input":"hi there"}"#;
    let text = post(&gw, sent).await.text().await.unwrap();
    assert!(text.contains("event: response.completed"), "{text}");
    assert_eq!(mock.requests()[1].raw_body, r#"{"model":"gpt-4o-mini","stream":true,"input":"hi there"}"#);
}

#[tokio::test]
async fn usage_is_counted_and_priced_stream_or_not() {
    let (_mock, gw) = setup().await;
    let cost = || gw.metric("llmgw_cost_micro_usd_total", &[("model", "gpt")]);
    let body =
        |input: &str, stream: bool| json!({"model": "gpt", "input": input, "stream": stream}).to_string();

    // 100 input tokens of which 40 cached (inside the input count, as OpenAI reports them),
    // 10 out: 60 × $2 + 40 × $1 + 10 × $10 per million tokens = 260 micro-USD.
    let resp = post(&gw, body("x #mock:usage=100,10,cached=40", false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 40, "{v}");
    assert_eq!(cost().await, 260.0);
    assert_eq!(gw.metric("llmgw_tokens_total", &[("model", "gpt"), ("direction", "input")]).await, 100.0);
    assert_eq!(gw.metric("llmgw_tokens_total", &[("model", "gpt"), ("direction", "output")]).await, 10.0);

    // A stream's usage comes in `response.completed`: 40 × $2 + 10 × $1 + 20 × $10 = 290.
    let resp = post(&gw, body("x #mock:usage=50,20,cached=10", true)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let (name, last) = sse(&text).pop().unwrap();
    assert_eq!(name, Some("response.completed"), "{text}");
    assert_eq!(last["response"]["usage"]["output_tokens"], 20);
    assert_eventually!(cost().await == 550.0, PATIENCE, "the stream's cost was not counted");
    assert_eq!(gw.metric("llmgw_tokens_total", &[("model", "gpt"), ("direction", "output")]).await, 30.0);
}

#[tokio::test]
async fn a_provider_kind_without_the_responses_api_is_a_400_not_supported() {
    let (mock, gw) = setup().await;
    for stream in [false, true] {
        let resp = post(&gw, json!({"model": "gemini", "input": "hi", "stream": stream}).to_string()).await;
        assert_eq!(resp.status(), 400, "stream: {stream}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_supported", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    assert!(mock.requests().is_empty(), "a refused request reached the provider: {:?}", mock.requests());
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_error_event() {
    let (mock, gw) = setup().await;
    // The mock closes the connection after 6 events: created, in_progress, the item, the
    // content part and two deltas.
    let resp =
        post(&gw, json!({"model": "gpt", "input": "go #mock:drop_after=6", "stream": true}).to_string())
            .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let events = sse(&text);
    let names: Vec<Option<&str>> = events.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names[..6],
        [
            Some("response.created"),
            Some("response.in_progress"),
            Some("response.output_item.added"),
            Some("response.content_part.added"),
            Some("response.output_text.delta"),
            Some("response.output_text.delta"),
        ],
        "{text}"
    );
    assert_eq!(events.len(), 7, "{text}");
    let (name, error) = &events[6];
    assert_eq!(*name, Some("error"), "{text}");
    assert_eq!(error["type"], "error", "{text}");
    assert_eq!(error["sequence_number"], 6, "{text}");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("mid-stream")), "{text}");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("mid-stream")), "{text}");
    assert!(!text.contains("response.completed"), "{text}");
    assert_eq!(mock.hits("fault:drop"), 1);

    // The provider's own in-stream failure is relayed as it sent it, and ends the stream.
    let resp = post(
        &gw,
        json!({"model": "gpt", "input": "go #mock:stream_error=server_error", "stream": true}).to_string(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events = sse(&text);
    let tail: Vec<Option<&str>> = events[events.len() - 2..].iter().map(|(name, _)| *name).collect();
    assert_eq!(tail, [Some("error"), Some("response.failed")], "{text}");
    assert_eq!(events[events.len() - 2].1["code"], "server_error", "{text}");
}
