//! Every client and upstream failure gets a clear error in OpenAI's shape: never a panic or a hang.

use std::time::{Duration, Instant};

use llmgw_tests::mock::MockProvider;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixtures::*;
use crate::harness::Llmgw;

async fn setup_with(provider_extra: &str, args: &[&str]) -> (MockProvider, Llmgw) {
    let mock = MockProvider::start().await.unwrap();
    let gw = Llmgw::edge(&config(&mock.base_url(), provider_extra), args).await;
    (mock, gw)
}

async fn post(gw: &Llmgw, key: Option<&str>, body: reqwest::Body) -> reqwest::Response {
    let mut req =
        client().post(gw.url("/v1/chat/completions")).header("content-type", "application/json").body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

async fn expect(resp: reqwest::Response, status: u16, code: Option<&str>) -> serde_json::Value {
    let (got, e) = error_of(resp).await;
    assert_eq!(got, status, "{e}");
    if let Some(code) = code {
        assert_eq!(e["code"], code, "{e}");
    }
    e
}

#[tokio::test]
async fn keys_are_checked() {
    let (mock, gw) = setup_with("", &[]).await;
    let body = || reqwest::Body::from(chat_body("hi").to_string());
    expect(post(&gw, None, body()).await, 401, Some("missing_api_key")).await;
    expect(post(&gw, Some("sk-llmgw-nope"), body()).await, 401, Some("invalid_api_key")).await;
    expect(post(&gw, Some(REVOKED_KEY), body()).await, 401, Some("key_revoked")).await;
    expect(post(&gw, Some(EXPIRED_KEY), body()).await, 401, Some("key_expired")).await;
    let models = client().get(gw.url("/v1/models")).bearer_auth("wrong").send().await.unwrap();
    expect(models, 401, Some("invalid_api_key")).await;

    let other = json!({ "model": "other", "messages": [] }).to_string();
    let e = expect(post(&gw, Some(LIMITED_KEY), other.into()).await, 403, Some("model_not_allowed")).await;
    assert!(e["message"].as_str().unwrap().contains("other"));
    let unknown = json!({ "model": "gpt-9", "messages": [] }).to_string();
    expect(post(&gw, Some(KEY), unknown.into()).await, 404, Some("model_not_found")).await;
    assert_eq!(mock.requests().len(), 0, "a refused request reached the provider");
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let (mock, gw) = setup_with("", &[]).await;
    let deep = format!(r#"{{"model":"chat","messages":{}{}}}"#, "[".repeat(50_000), "]".repeat(50_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"{not json".to_vec()),
        ("empty", Vec::new()),
        ("array", b"[1,2]".to_vec()),
        ("no model", br#"{"messages":[]}"#.to_vec()),
        ("model not a string", br#"{"model":7}"#.to_vec()),
        ("stream not a bool", br#"{"model":"chat","stream":"yes"}"#.to_vec()),
        (
            "invalid utf-8",
            [&br#"{"model":"chat","messages":[{"role":"user","content":""#[..], &[0xc3, 0x28], br#""}]}"#]
                .concat(),
        ),
        ("deep nesting", deep.into_bytes()),
    ];
    for (what, body) in cases {
        let e = expect(post(&gw, Some(KEY), body.into()).await, 400, None).await;
        assert_eq!(e["type"], "invalid_request_error", "{what}: {e}");
    }
    assert_eq!(mock.requests().len(), 0);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let (_mock, gw) = setup_with("", &["--max-body-bytes", "2048"]).await;
    let big = chat_body(&"x".repeat(4096)).to_string();
    expect(post(&gw, Some(KEY), big.clone().into()).await, 413, Some("body_too_large")).await;
    // Without a content-length (chunked), the limit still holds while reading.
    let chunks = futures_util::stream::iter(
        big.into_bytes().chunks(512).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    expect(post(&gw, Some(KEY), reqwest::Body::wrap_stream(chunks)).await, 413, Some("body_too_large")).await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let (_mock, gw) = setup_with("", &[]).await;
    expect(client().get(gw.url("/v1/nope")).bearer_auth(KEY).send().await.unwrap(), 404, Some("unknown_url"))
        .await;
    expect(client().get(gw.url("/v1/chat/completions")).bearer_auth(KEY).send().await.unwrap(), 405, None)
        .await;
    expect(client().delete(gw.url("/v1/models")).bearer_auth(KEY).send().await.unwrap(), 405, None).await;
}

#[tokio::test]
async fn upstream_failures_are_502_and_provider_errors_pass_through() {
    let (_mock, gw) = setup_with("", &[]).await;
    for directive in ["#mock:drop_after=20", "#mock:malformed", "#mock:reset"] {
        let e = expect(
            post(&gw, Some(KEY), chat_body(directive).to_string().into()).await,
            502,
            Some("upstream_error"),
        )
        .await;
        assert!(e["message"].as_str().unwrap().contains("mock"), "{directive}: {e}");
    }
    let mut stream = chat_body("#mock:not_sse");
    stream["stream"] = json!(true);
    expect(post(&gw, Some(KEY), stream.to_string().into()).await, 502, Some("upstream_error")).await;

    let resp = post(&gw, Some(KEY), chat_body("#mock:status=429,retry_after=7").to_string().into()).await;
    assert_eq!(resp.headers()["retry-after"], "7");
    let e = expect(resp, 429, Some("rate_limit_exceeded")).await;
    assert!(e["message"].is_string());
    expect(post(&gw, Some(KEY), chat_body("#mock:status=503").to_string().into()).await, 503, None).await;
    // The provider's own 400 is the caller's fault: relayed as sent.
    expect(post(&gw, Some(KEY), chat_body("#mock:status=400").to_string().into()).await, 400, None).await;
}

#[tokio::test]
async fn mid_stream_drop_ends_with_an_error_event() {
    let (_mock, gw) = setup_with("", &[]).await;
    let mut body = chat_body("#mock:drop_after=3");
    body["stream"] = json!(true);
    let resp = post(&gw, Some(KEY), body.to_string().into()).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let event: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["error"]["code"], "upstream_error", "{text}");
    assert!(event["error"]["message"].as_str().unwrap().contains("mid-stream"), "{text}");
    assert!(!text.contains("[DONE]"), "a broken stream must not look finished: {text}");

    let mut body = chat_body("#mock:malformed");
    body["stream"] = json!(true);
    let resp = post(&gw, Some(KEY), body.to_string().into()).await;
    let text = resp.text().await.unwrap();
    assert!(text.contains(r#""error""#) && !text.contains("[DONE]"), "{text}");
}

#[tokio::test]
async fn upstream_timeout_is_504_and_connect_refused_is_502() {
    let (_mock, gw) = setup_with("    timeout_ms: 500\n", &[]).await;
    let start = Instant::now();
    let e = expect(
        post(&gw, Some(KEY), chat_body("#mock:delay_ms=5000").to_string().into()).await,
        504,
        Some("upstream_timeout"),
    )
    .await;
    assert!(start.elapsed() < Duration::from_secs(4), "timeout not applied: {e}");

    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw = Llmgw::edge(&config(&format!("http://127.0.0.1:{port}/v1"), ""), &[]).await;
    let e =
        expect(post(&gw, Some(KEY), chat_body("hi").to_string().into()).await, 502, Some("upstream_error"))
            .await;
    assert!(e["message"].as_str().unwrap().to_lowercase().contains("connect"), "{e}");
}

#[tokio::test]
async fn half_open_connections_time_out_without_starving_others() {
    let (_mock, gw) = setup_with("", &["--header-read-timeout-ms", "500"]).await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        idle.push(s);
    }
    // Other clients are served while those hang.
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // And the server closes the half-open ones.
    for mut s in idle {
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a connection that never finished its headers stayed open");
    }
}

#[tokio::test]
async fn client_hanging_up_mid_stream_frees_the_upstream() {
    let (_mock, mut gw) = setup_with("", &[]).await;
    let mut body = chat_body("#mock:slow_ms=1000");
    body["stream"] = json!(true);
    let resp = post(&gw, Some(KEY), body.to_string().into()).await;
    assert_eq!(resp.status(), 200);
    drop(resp);
    // The stream would take ~8 s; the edge notices the hang-up and ends the request (499).
    let line = gw.wait_log(|l| l["message"] == "request" && l["status"] == 499).await;
    assert_eq!(line["stream"], true);
    assert_eq!(gw.metric("llmgw_requests_in_flight", &[]).await, 0.0);
}
