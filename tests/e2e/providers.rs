//! Provider kinds other than OpenAI's, and Anthropic-format clients: the real binary in front
//! of the mock speaking each provider's wire format, with the official SDKs as clients.

use llmgw_tests::mock::MockProvider;
use serde_json::{Value, json};

use crate::fixtures::{KEY, client};
use crate::harness::{Llmgw, run_python};

const BEDROCK_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// Every provider kind on one mock (it routes by path), an alias for each, and one key.
fn config(addr: &str) -> String {
    format!(
        r#"version: 1
providers:
  - name: oai
    kind: openai
    base_url: http://{addr}/v1
    credentials: [{{ value: sk-oai-secret }}]
  - name: claude-api
    kind: anthropic
    base_url: http://{addr}/v1
    credentials: [{{ value: sk-ant-secret }}]
  - name: claude-lax
    kind: anthropic
    base_url: http://{addr}/v1
    drop_unsupported_params: true
    credentials: [{{ value: sk-ant-secret }}]
  - name: google
    kind: gemini
    base_url: http://{addr}/v1beta
    credentials: [{{ value: goog-secret }}]
  - name: azure
    kind: azure_openai
    base_url: http://{addr}/openai
    api_version: "2024-10-21"
    credentials: [{{ value: azure-secret }}]
  - name: aws
    kind: bedrock
    base_url: http://{addr}
    region: eu-west-1
    credentials: [{{ value: "AKIDEXAMPLE:aws-secret-key" }}]
models:
  - name: gpt
    targets: [{{ provider: oai, model: gpt-4o-mini }}]
  - name: claude
    targets:
      - provider: claude-api
        model: claude-sonnet-4-5
        pricing: {{ input_per_mtok: 2.0, output_per_mtok: 10.0, cached_input_per_mtok: 1.0 }}
  - name: claude-lax
    targets: [{{ provider: claude-lax, model: claude-sonnet-4-5 }}]
  - name: gemini
    targets: [{{ provider: google, model: gemini-2.0-flash }}]
  - name: azure
    targets: [{{ provider: azure, model: my-deployment }}]
  - name: bedrock
    targets: [{{ provider: aws, model: "{BEDROCK_MODEL}" }}]
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

async fn chat(gw: &Llmgw, model: &str, content: &str, stream: bool) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({ "model": model, "stream": stream, "messages": [{ "role": "user", "content": content }] }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn openai_sdk_reaches_anthropic_gemini_bedrock_and_azure_targets() {
    let (_mock, gw) = setup().await;
    let out = run_python(
        "openai_translated.py",
        &[
            ("LLMGW_BASE_URL", &gw.base_url()),
            ("LLMGW_KEY", KEY),
            ("LLMGW_MODELS", "claude,gemini,bedrock,azure"),
        ],
    )
    .await;
    assert!(out.contains("all checks passed"), "{out}");
}

#[tokio::test]
async fn anthropic_sdk_reaches_openai_anthropic_gemini_and_bedrock_targets() {
    let (_mock, gw) = setup().await;
    let out = run_python(
        "anthropic_sdk.py",
        &[
            ("LLMGW_BASE_URL", &gw.url("")),
            ("LLMGW_KEY", KEY),
            ("LLMGW_MODELS", "gpt,claude,gemini,bedrock"),
            ("LLMGW_COUNT_MODEL", "claude"),
        ],
    )
    .await;
    assert!(out.contains("all checks passed"), "{out}");
}

#[tokio::test]
async fn each_kind_gets_its_own_url_auth_and_body() {
    let (mock, gw) = setup().await;
    for (model, stream) in
        [("azure", false), ("claude", false), ("gemini", false), ("gemini", true), ("bedrock", true)]
    {
        let resp = chat(&gw, model, "hello there", stream).await;
        assert_eq!(resp.status(), 200, "{model}");
        let text = resp.text().await.unwrap();
        for secret in ["secret", "AKIDEXAMPLE"] {
            assert!(!text.contains(secret), "{model} leaked a credential: {text}");
        }
    }
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 5, "{reqs:#?}");

    let azure = &reqs[0];
    assert_eq!(azure.path, "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21");
    assert_eq!(azure.header("api-key"), Some("azure-secret"));
    assert_eq!(azure.header("authorization"), None);

    let anthropic = &reqs[1];
    assert_eq!(anthropic.path, "/v1/messages");
    assert_eq!(anthropic.header("x-api-key"), Some("sk-ant-secret"));
    assert_eq!(anthropic.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(anthropic.body["model"], "claude-sonnet-4-5");
    assert!(anthropic.body["max_tokens"].as_u64().is_some_and(|n| n > 0), "{}", anthropic.body);
    assert_eq!(anthropic.body["messages"][0]["role"], "user");

    let gemini = &reqs[2];
    assert_eq!(gemini.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(gemini.header("x-goog-api-key"), Some("goog-secret"));
    assert_eq!(gemini.body["contents"][0]["parts"][0]["text"], "hello there");
    assert_eq!(reqs[3].path, "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse");

    let bedrock = &reqs[4];
    assert_eq!(bedrock.path, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream");
    let auth = bedrock.header("authorization").unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{auth}");
    assert_eq!(bedrock.aws_region(), Some("eu-west-1"));
    assert!(bedrock.header("x-amz-date").is_some());
    assert_eq!(bedrock.body["messages"][0]["content"][0]["text"], "hello there");
}

#[tokio::test]
async fn a_parameter_a_provider_cannot_honour_is_refused_or_dropped_as_configured() {
    let (mock, gw) = setup().await;
    let body =
        |model: &str| json!({ "model": model, "n": 2, "messages": [{ "role": "user", "content": "hi" }] });
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body("claude"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("`n`"), "{err}");
    assert_eq!(mock.requests().len(), 0, "a refused request reached the provider");

    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body("claude-lax"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(mock.requests()[0].body.get("n").is_none());

    // An endpoint a kind does not serve: a clear 400, not a 502.
    let resp = client()
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(KEY)
        .json(&json!({ "model": "gemini", "input": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_supported", "{err}");
}

#[tokio::test]
async fn anthropic_clients_get_errors_in_anthropic_shape_even_mid_stream() {
    let (_mock, gw) = setup().await;
    let post =
        |body: Value| client().post(gw.url("/v1/messages")).header("x-api-key", KEY).json(&body).send();
    // The gateway's own error.
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-llmgw-nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    // A provider's error, translated: Gemini's 429 reaches an Anthropic client as rate_limit_error.
    let msg = |content: &str, stream: bool| json!({ "model": "gemini", "max_tokens": 50, "stream": stream, "messages": [{ "role": "user", "content": content }] });
    let resp = post(msg("x #mock:status=429", false)).await.unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");

    // A stream cut after it started: an Anthropic `error` event, not a silent end.
    let resp = post(msg("x #mock:drop_after=3", true)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
}

#[tokio::test]
async fn a_bedrock_stream_exception_and_a_cut_gemini_stream_end_with_an_error_event() {
    let (_mock, gw) = setup().await;
    let resp = chat(&gw, "bedrock", "x #mock:stream_error=throttlingException", true).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");

    let resp = chat(&gw, "gemini", "x #mock:drop_after=2", true).await;
    let text = resp.text().await.unwrap();
    assert!(text.contains("Hello ") && text.contains("mid-stream"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
}

#[tokio::test]
async fn cached_input_tokens_are_priced_at_their_own_rate() {
    let (_mock, gw) = setup().await;
    // 100 input tokens of which 40 read from the cache (Anthropic reports them apart:
    // input_tokens 60, cache_read_input_tokens 40), 10 out.
    let resp = chat(&gw, "claude", "x #mock:usage=100,10,cached=40", false).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 100, "{v}");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 40, "{v}");
    // 60 × $2 + 40 × $1 + 10 × $10 per million tokens = 260 micro-USD.
    assert_eq!(gw.metric("llmgw_cost_micro_usd_total", &[("model", "claude")]).await, 260.0);
}
