//! Config files and clients shared by the end-to-end tests.

/// The secret of the key allowed every model.
pub const KEY: &str = "sk-llmgw-test-main-0001";
/// A key allowed only `chat`.
pub const LIMITED_KEY: &str = "sk-llmgw-test-limited-0002";
pub const REVOKED_KEY: &str = "sk-llmgw-test-revoked-0003";
pub const EXPIRED_KEY: &str = "sk-llmgw-test-expired-0004";
/// What the gateway sends upstream instead of the caller's key.
pub const UPSTREAM_CRED: &str = "sk-upstream-secret-aaaa";
pub const UPSTREAM_CRED_2: &str = "sk-upstream-secret-bbbb";

/// A config with one mock provider at `base_url`, models `chat` and `embed` and `other`, and
/// the keys above. `provider_extra` is spliced into the provider (e.g. `timeout_ms: 500`).
pub fn config(base_url: &str, provider_extra: &str) -> String {
    format!(
        r#"version: 1
providers:
  - name: mock
    kind: openai_compatible
    base_url: {base_url}
    credentials:
      - value: {UPSTREAM_CRED}
      - value: {UPSTREAM_CRED_2}
{provider_extra}
models:
  - name: chat
    targets:
      - provider: mock
        model: gpt-4o-mini
        pricing: {{ input_per_mtok: 1.0, output_per_mtok: 2.0 }}
  - name: embed
    targets:
      - provider: mock
        model: text-embedding-3-small
        pricing: {{ input_per_mtok: 0.02, output_per_mtok: 0 }}
  - name: other
    targets:
      - provider: mock
        model: gpt-4o
teams:
  - name: search
projects:
  - name: ranker
    team: search
keys:
  - name: main
    project: ranker
    secret: {{ value: {KEY} }}
  - name: limited
    team: search
    models: [chat]
    secret: {{ value: {LIMITED_KEY} }}
  - name: gone
    team: search
    revoked: true
    secret: {{ value: {REVOKED_KEY} }}
  - name: old
    team: search
    expires_at: 2020-01-01T00:00:00Z
    secret: {{ value: {EXPIRED_KEY} }}
"#
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

pub fn chat_body(content: &str) -> serde_json::Value {
    serde_json::json!({ "model": "chat", "messages": [{ "role": "user", "content": content }] })
}

/// The OpenAI error object of a response, asserting the shape.
pub async fn error_of(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("error body is JSON");
    let e = body["error"].clone();
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
    assert!(e["type"].is_string(), "no type in {body}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "param/code missing in {body}");
    (status, e)
}

/// A cluster config: the mock as the only provider, model `chat` at `pricing` (USD per million
/// input and output tokens), and a team `search` with `team_extra` (indented YAML) spliced in.
pub fn priced_config(base_url: &str, pricing: (f64, f64), team_extra: &str) -> String {
    let (input, output) = pricing;
    format!(
        r#"version: 1
providers:
  - name: mock
    kind: openai_compatible
    base_url: {base_url}
    credentials: []
models:
  - name: chat
    targets:
      - provider: mock
        model: gpt-4o-mini
        pricing: {{ input_per_mtok: {input}, output_per_mtok: {output} }}
teams:
  - name: search
{team_extra}
"#
    )
}
