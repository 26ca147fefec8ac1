//! Routing and resilience across several mock providers: strategies, fallback, first-token
//! timeouts, the breaker, and the error when every target fails.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use llmgw_tests::mock::{Behaviour, MockProvider};
use serde_json::json;

use crate::fixtures::{KEY, chat_body, client, error_of};
use crate::harness::{Llmgw, run_python};

struct Setup {
    a: MockProvider,
    b: MockProvider,
    gw: Llmgw,
}

/// Providers `a` and `b` (two mock processes' worth of ports) and `dead` (nothing listens),
/// and the given `models:` section.
async fn setup(models: &str) -> Setup {
    let a = MockProvider::start().await.unwrap();
    let b = MockProvider::start().await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        r#"version: 1
providers:
  - {{ name: a, kind: openai_compatible, base_url: "{}", credentials: [{{ value: key-a }}] }}
  - {{ name: b, kind: openai_compatible, base_url: "{}", credentials: [{{ value: key-b }}] }}
  - {{ name: dead, kind: openai_compatible, base_url: "http://127.0.0.1:{dead}/v1", connect_timeout_ms: 500 }}
models:
{models}
teams:
  - name: t
keys:
  - name: k
    team: t
    secret: {{ value: {KEY} }}
"#,
        a.base_url(),
        b.base_url()
    );
    let gw = Llmgw::edge(&yaml, &[]).await;
    Setup { a, b, gw }
}

fn two(strategy: &str, first: &str, second: &str, extra: &str) -> String {
    format!(
        "  - name: m\n    strategy: {strategy}\n    targets:\n      - {{ provider: {first} }}\n      - {{ provider: {second} }}\n{extra}"
    )
    .replace("{ provider: a }", "{ provider: a, model: \"model-a\" }")
    .replace("{ provider: b }", "{ provider: b, model: \"model-b\" }")
    .replace("{ provider: dead }", "{ provider: dead, model: \"model-dead\" }")
}

async fn chat(gw: &Llmgw, body: serde_json::Value) -> reqwest::Response {
    client().post(gw.url("/v1/chat/completions")).bearer_auth(KEY).json(&body).send().await.unwrap()
}

fn body(content: &str, stream: bool) -> serde_json::Value {
    let mut b = chat_body(content);
    b["model"] = json!("m");
    b["stream"] = json!(stream);
    b
}

async fn expect_second(s: &Setup, resp: reqwest::Response) {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmgw-provider"], "b");
    assert_eq!(resp.headers()["x-llmgw-attempts"], "2");
    let _ = resp.bytes().await.unwrap();
    assert_eq!(s.b.requests().last().unwrap().body["model"], "model-b");
}

#[tokio::test]
async fn falls_back_on_500_429_and_connect_refused() {
    // The first target's model name carries the fault, so only it fails.
    // A fresh gateway each time: a 429 with retry-after ejects the target, so a second request
    // would rightly skip it.
    for fault in ["status=500", "status=429,retry_after=1"] {
        for stream in [false, true] {
            let s =
                setup(&two("priority", "a", "b", "").replace("model-a", &format!("model-a#mock:{fault}")))
                    .await;
            expect_second(&s, chat(&s.gw, body("hi", stream)).await).await;
        }
    }
    for stream in [false, true] {
        let s = setup(&two("priority", "dead", "b", "")).await;
        expect_second(&s, chat(&s.gw, body("hi", stream)).await).await;
    }
    // Once ejected by its retry-after, the target is skipped: one attempt, straight to b.
    let s = setup(&two("priority", "a", "b", "").replace("model-a", "model-a#mock:status=429,retry_after=5"))
        .await;
    expect_second(&s, chat(&s.gw, body("hi", false)).await).await;
    let resp = chat(&s.gw, body("hi", false)).await;
    assert_eq!(
        (
            resp.headers()["x-llmgw-attempts"].to_str().unwrap(),
            resp.headers()["x-llmgw-provider"].to_str().unwrap()
        ),
        ("1", "b")
    );
    assert_eq!(s.a.hits("chat"), 1);
    // The official SDK sees only the second target's answer.
    let s = setup(&two("priority", "a", "b", "").replace("model-a", "model-a#mock:status=503")).await;
    run_python("openai_fallback.py", &[("LLMGW_BASE_URL", &s.gw.base_url()), ("LLMGW_KEY", KEY)]).await;
}

#[tokio::test]
async fn a_slow_first_token_moves_on_at_the_threshold() {
    let s = setup(
        &two("priority", "a", "b", "    ttft_timeout_ms: 400\n")
            .replace("model-a", "model-a#mock:delay_ms=3000"),
    )
    .await;
    for stream in [false, true] {
        let start = Instant::now();
        expect_second(&s, chat(&s.gw, body("hi", stream)).await).await;
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "stream={stream}: answered after {took:?}");
    }
    // A stream that sends its role chunk at once but no token in time moves on too.
    let s = setup(
        &two("priority", "a", "b", "    ttft_timeout_ms: 400\n")
            .replace("model-a", "model-a#mock:slow_ms=3000"),
    )
    .await;
    let start = Instant::now();
    expect_second(&s, chat(&s.gw, body("hi", true)).await).await;
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn caller_errors_are_not_retried() {
    let s = setup(&two("priority", "a", "b", "").replace("model-a", "model-a#mock:status=400")).await;
    let resp = chat(&s.gw, body("hi", false)).await;
    assert_eq!(resp.headers()["x-llmgw-attempts"], "1");
    let (status, _) = error_of(resp).await;
    assert_eq!(status, 400);
    assert_eq!(s.b.requests().len(), 0);
}

#[tokio::test]
async fn all_targets_down_is_502_listing_every_attempt() {
    let s = setup(&two("priority", "a", "dead", "").replace("model-a", "model-a#mock:status=500")).await;
    let resp = chat(&s.gw, body("hi", false)).await;
    assert_eq!(resp.headers()["x-llmgw-attempts"], "2");
    let (status, e) = error_of(resp).await;
    assert_eq!(status, 502);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("a/model-a") && msg.contains("500"), "{msg}");
    assert!(msg.contains("dead/model-dead") && msg.to_lowercase().contains("connect"), "{msg}");
}

#[tokio::test]
async fn weighted_three_to_one() {
    let models =
        two("weighted", "a", "b", "").replace("model: \"model-a\" }", "model: \"model-a\", weight: 3 }");
    let s = setup(&models).await;
    let gw = &s.gw;
    let statuses: Vec<u16> = futures_util::stream::iter(0..4000)
        .map(|_| async move { chat(gw, body("hi", false)).await.status().as_u16() })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    let (a, b) = (s.a.hits("chat") as f64, s.b.hits("chat") as f64);
    let share = a / (a + b);
    assert!((share - 0.75).abs() <= 0.75 * 0.05, "a got {a}, b got {b}");
}

#[tokio::test]
async fn least_latency_prefers_the_faster_and_returns_to_a_recovered_one() {
    let s = setup(&two("least_latency", "a", "b", "")).await;
    s.a.set_default(Behaviour { delay_ms: Some(20), ..Behaviour::default() });
    s.b.set_default(Behaviour { delay_ms: Some(200), ..Behaviour::default() });
    for _ in 0..20 {
        assert_eq!(chat(&s.gw, body("hi", false)).await.status(), 200);
    }
    let (a0, b0) = (s.a.hits("chat"), s.b.hits("chat"));
    for _ in 0..100 {
        assert_eq!(chat(&s.gw, body("hi", false)).await.status(), 200);
    }
    let (a1, b1) = (s.a.hits("chat") - a0, s.b.hits("chat") - b0);
    assert!(a1 >= 90, "fast target got {a1} of 100 (slow: {b1})");

    // b recovers and becomes the faster: exploration measures it again and traffic follows.
    s.b.set_default(Behaviour::default());
    let mut window = Vec::new();
    for i in 0..600 {
        let resp = chat(&s.gw, body("hi", false)).await;
        window.push(resp.headers()["x-llmgw-provider"] == "b");
        if window.len() > 40 {
            window.remove(0);
        }
        if window.len() == 40 && window.iter().filter(|b| **b).count() >= 30 {
            return;
        }
        assert!(i < 599, "traffic never moved back to the recovered target");
    }
}

#[tokio::test]
async fn a_failing_target_is_ejected_then_used_again_after_it_recovers() {
    let models = two("priority", "a", "b", "    breaker: { failures: 3, cooldown_ms: 300 }\n");
    let s = setup(&models).await;
    s.a.set_default(Behaviour { status: Some(500), ..Behaviour::default() });
    for _ in 0..30 {
        assert_eq!(chat(&s.gw, body("hi", false)).await.status(), 200);
    }
    let tried = s.a.hits("chat");
    assert!(tried <= 5, "the failing target was tried {tried} times in 30 requests");
    assert!(s.gw.metric("llmgw_ejections_total", &[("target", "a/model-a")]).await >= 1.0);

    s.a.set_default(Behaviour::default());
    let start = Instant::now();
    loop {
        let resp = chat(&s.gw, body("hi", false)).await;
        if resp.headers()["x-llmgw-provider"] == "a" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the recovered target was never used again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn least_cost_picks_the_cheapest_target() {
    let models = two("least_cost", "a", "b", "")
        .replace(
            "model: \"model-a\" }",
            "model: \"model-a\", pricing: { input_per_mtok: 5.0, output_per_mtok: 15.0 } }",
        )
        .replace(
            "model: \"model-b\" }",
            "model: \"model-b\", pricing: { input_per_mtok: 0.1, output_per_mtok: 0.4 } }",
        );
    let s = setup(&models).await;
    for _ in 0..10 {
        let resp = chat(&s.gw, body("hi", false)).await;
        assert_eq!(resp.headers()["x-llmgw-provider"], "b");
    }
    // The cheap one failing, the expensive one answers.
    s.b.set_default(Behaviour { status: Some(503), ..Behaviour::default() });
    let resp = chat(&s.gw, body("hi", false)).await;
    assert_eq!((resp.status().as_u16(), resp.headers()["x-llmgw-provider"].to_str().unwrap()), (200, "a"));
}

#[tokio::test]
async fn a_reload_keeps_the_breaker_state_of_targets_that_still_exist() {
    let models = two("priority", "a", "b", "    breaker: { failures: 1, cooldown_ms: 60000 }\n");
    let mut s = setup(&models).await;
    s.a.set_default(Behaviour { status: Some(500), ..Behaviour::default() });
    expect_second(&s, chat(&s.gw, body("hi", false)).await).await;
    assert_eq!(s.a.hits("chat"), 1);
    // A reload (a new key, same targets): target a is still ejected for its cooldown.
    let path = s.gw.dir.join("llmgw.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}  - name: k2\n    team: t\n    secret: {{ value: sk-llmgw-other-0002 }}\n"),
    )
    .unwrap();
    s.gw.signal("HUP");
    s.gw.wait_log(|l| l["message"] == "configuration reloaded").await;
    let resp = chat(&s.gw, body("hi", false)).await;
    assert_eq!(resp.headers()["x-llmgw-attempts"], "1");
    assert_eq!(resp.headers()["x-llmgw-provider"], "b");
    assert_eq!(s.a.hits("chat"), 1, "the reload forgot that a was ejected");
}
