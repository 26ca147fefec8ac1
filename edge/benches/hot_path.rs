//! Micro-benchmarks of what the edge does for every request: authenticate the key, parse the
//! body and rewrite its model, relay (or convert) the answer's SSE events, and record usage and
//! quota. Run with `cargo bench -p llmgw-edge --bench hot_path` (add `-- --quick` for a short
//! run); bench/README.md has the latest figures.
//!
//! Inputs are shaped like real traffic: generated `sk-llmgw-` secrets, chat bodies of ~200 B
//! and ~100 KB, and the streams the mock provider sends for its default answer (five words).

// A benchmark whose setup fails is broken: stop loudly rather than measure something else.
#![allow(clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eventsource_stream2::Eventsource;
use futures_util::{FutureExt, StreamExt};
use http::HeaderMap;
use llmgw_edge::adapt::{self, Mode};
use llmgw_edge::auth::authenticate;
use llmgw_edge::body::RequestBody;
use llmgw_edge::config::{EdgeConfig, ResolveCtx};
use llmgw_edge::error::ClientFormat;
use llmgw_edge::provider::Wire;
use llmgw_edge::provider::openai::StreamChunk;
use llmgw_edge::quota::{Ask, Kind, Quota, Window};
use llmgw_edge::upstream::ClientCache;
use llmgw_edge::usage::{UsageKey, UsageLedger};
use llmgw_shared::keys::{SECRET_PREFIX, hash_secret};
use llmgw_shared::period::Period;
use llmgw_shared::pricing::Tokens;
use llmgw_shared::proto;
use llmgw_translate::StreamConverter;
use serde_json::json;

// ---- auth -------------------------------------------------------------------------------------

/// A generated secret's shape: the prefix and 40 characters (control-plane's `new_secret`).
fn secret(i: usize) -> String {
    format!("{SECRET_PREFIX}{i:0>40}")
}

/// An edge config holding `n` keys (and nothing else: authentication reads only the keys),
/// built the way a snapshot from the control plane is.
fn config_with_keys(n: usize) -> EdgeConfig {
    let keys = (0..n)
        .map(|i| proto::Key {
            id: format!("key-{i}"),
            name: format!("key-{i}"),
            project: format!("project-{}", i % 100),
            secret_sha256: hash_secret(&secret(i)).to_vec(),
            limits: Some(proto::Limits { rpm: 600, tpm: 100_000 }),
            budget: Some(proto::Budget { limit_usd: 50.0, period: proto::Period::Daily.into() }),
            ..proto::Key::default()
        })
        .collect();
    let snapshot = proto::Snapshot { revision: 1, keys, ..proto::Snapshot::default() };
    let env = |_: &str| None;
    let ctx = ResolveCtx { base_dir: None, env: &env, strict: true };
    EdgeConfig::build(&snapshot, &ctx, &ClientCache::default()).expect("the key snapshot builds")
}

fn bearer(secret: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, format!("Bearer {secret}").parse().expect("a header value"));
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    h
}

fn auth(c: &mut Criterion) {
    let mut g = c.benchmark_group("auth");
    for n in [10_000, 1_000_000] {
        let config = config_with_keys(n);
        // A key from the middle of the range; which one does not matter to a hash map.
        let hit = bearer(&secret(n / 2));
        assert!(authenticate(&config, &hit).is_ok());
        g.bench_with_input(BenchmarkId::new("bearer_hit", n), &hit, |b, h| {
            b.iter(|| authenticate(black_box(&config), black_box(h)).is_ok());
        });
        let miss = bearer(&secret(n + 1));
        assert!(authenticate(&config, &miss).is_err());
        g.bench_with_input(BenchmarkId::new("bearer_unknown", n), &miss, |b, h| {
            b.iter(|| authenticate(black_box(&config), black_box(h)).is_err());
        });
    }
    g.finish();
}

// ---- body -------------------------------------------------------------------------------------

fn small_body() -> Vec<u8> {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France? Answer in one word."},
        ],
        "stream": true,
        "temperature": 0.2,
        "max_tokens": 64,
    });
    serde_json::to_vec(&body).expect("json")
}

/// A long conversation: ~100 KB of messages with quotes, newlines and non-ASCII text to escape.
fn large_body() -> Vec<u8> {
    let paragraph = "The gateway forwards the request body byte for byte; only \"model\" is \
                     rewritten.\nLine two — with a tab\tand accents: café, naïve, Zürich. ";
    let mut messages = vec![json!({"role": "system", "content": "You are a careful code reviewer."})];
    let mut i = 0;
    while serde_json::to_vec(&messages).expect("json").len() < 100_000 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": paragraph.repeat(12)}));
        i += 1;
    }
    let body = json!({
        "model": "gpt-4o",
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": false},
        "temperature": 0.7,
        "max_completion_tokens": 2048,
        "user": "user-1234",
    });
    serde_json::to_vec(&body).expect("json")
}

fn body(c: &mut Criterion) {
    let mut g = c.benchmark_group("body");
    for (name, bytes) in [("small", small_body()), ("large", large_body())] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("parse", name), &bytes, |b, bytes| {
            b.iter(|| RequestBody::parse(black_box(bytes)).map(|p| p.stream));
        });
        let parsed = RequestBody::parse(&bytes).expect("the body parses");
        g.bench_with_input(BenchmarkId::new("rewrite", name), &parsed, |b, parsed| {
            b.iter(|| parsed.rewrite(black_box("gpt-4o-2024-08-06"), true));
        });
    }
    g.finish();
}

// ---- SSE relay --------------------------------------------------------------------------------

/// The words of the mock provider's default answer, one streamed chunk each.
const WORDS: [&str; 5] = ["Hello", " from", " the", " mock", " provider."];

/// The mock provider's OpenAI stream with `include_usage`: role chunk, five word chunks, finish
/// chunk, usage chunk, `[DONE]` — nine events' `data`.
fn openai_events() -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({
            "id": "chatcmpl-mock1", "object": "chat.completion.chunk", "created": 1_764_000_000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            "usage": null,
        })
        .to_string()
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    events.extend(WORDS.iter().map(|w| chunk(json!({"content": w}), None)));
    events.push(chunk(json!({}), Some("stop")));
    events.push(
        json!({
            "id": "chatcmpl-mock1", "object": "chat.completion.chunk", "created": 1_764_000_000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_mock", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        })
        .to_string(),
    );
    events.push("[DONE]".to_owned());
    events
}

/// The same answer from Anthropic: `message_start`, `content_block_start`, `ping`, five
/// `content_block_delta`, `content_block_stop`, `message_delta`, `message_stop` (11 events).
fn anthropic_events() -> Vec<(&'static str, String)> {
    let usage = |out| {
        json!({"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
               "output_tokens": out})
    };
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": "msg_mock1", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5", "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": usage(1)}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    events.extend(WORDS.iter().map(|w| {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": w}}),
        )
    }));
    events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": usage(5)}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events.into_iter().map(|(name, data)| (name, data.to_string())).collect()
}

/// The same answer from Gemini (`alt=sse`): one event per word, the last with `finishReason`
/// and `usageMetadata`; no end marker.
fn gemini_events() -> Vec<String> {
    WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut candidate = json!({"content": {"parts": [{"text": w}], "role": "model"}, "index": 0});
            let mut response =
                json!({"candidates": [], "modelVersion": "gemini-2.5-flash", "responseId": "mock1"});
            if i + 1 == WORDS.len() {
                candidate["finishReason"] = "STOP".into();
                response["usageMetadata"] =
                    json!({"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17});
            }
            response["candidates"] = json!([candidate]);
            response.to_string()
        })
        .collect()
}

/// Feeds a whole stream through a new pipeline, as one request does.
fn run_pipeline(mode: Mode, events: &[(Option<&str>, &str)], out: &mut BytesMut) -> Tokens {
    out.clear();
    let mut p = adapt::pipeline(mode, "claude-sonnet", false);
    for (event, data) in events {
        p.feed(*event, data, out).expect("a valid event");
    }
    p.finish(out).expect("a complete stream");
    p.tokens()
}

fn sse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse");
    let openai = openai_events();

    // The raw bytes as the mock writes them (one read per event), parsed into events.
    let raw: Vec<Bytes> = openai.iter().map(|d| Bytes::from(format!("data: {d}\n\n"))).collect();
    g.throughput(Throughput::Elements(raw.len() as u64));
    g.bench_function("eventsource_parse/openai_9", |b| {
        b.iter(|| {
            // Every item of `stream::iter` is ready, so the stream never returns `Pending`.
            let mut events =
                futures_util::stream::iter(raw.iter().cloned().map(Ok::<_, Infallible>)).eventsource();
            let mut n = 0;
            while let Some(Some(ev)) = events.next().now_or_never() {
                n += black_box(ev.expect("an event").data.len());
            }
            n
        });
    });

    // OpenAI client, OpenAI provider: the relay (relay.rs, which needs a hyper body) parses
    // each event's data as a `StreamChunk` to find the usage; this is that per-event parse.
    g.throughput(Throughput::Elements(openai.len() as u64));
    g.bench_function("openai_chunk_parse/openai_9", |b| {
        b.iter(|| {
            let mut usage = 0;
            for data in openai.iter().filter(|d| *d != "[DONE]") {
                let chunk: StreamChunk = serde_json::from_str(black_box(data)).expect("a chunk");
                usage += usize::from(chunk.usage.is_some());
            }
            usage
        });
    });

    let mut out = BytesMut::with_capacity(8 << 10);
    let events: Vec<(Option<&str>, &str)> = openai.iter().map(|d| (None, d.as_str())).collect();
    let to_anthropic = Mode::Translated { client: ClientFormat::Anthropic, wire: Wire::OpenAi };
    assert_eq!(run_pipeline(to_anthropic, &events, &mut out).output, 5);
    g.bench_function("pipeline/openai_to_anthropic_client_9", |b| {
        b.iter(|| run_pipeline(to_anthropic, black_box(&events), &mut out));
    });

    let anthropic = anthropic_events();
    let events: Vec<(Option<&str>, &str)> =
        anthropic.iter().map(|(name, data)| (Some(*name), data.as_str())).collect();
    assert_eq!(run_pipeline(Mode::Anthropic, &events, &mut out).output, 5);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("pipeline/anthropic_passthrough_11", |b| {
        b.iter(|| run_pipeline(Mode::Anthropic, black_box(&events), &mut out));
    });

    let gemini = gemini_events();
    g.throughput(Throughput::Elements(gemini.len() as u64));
    g.bench_function("gemini_to_openai_5", |b| {
        b.iter(|| {
            let mut conv = llmgw_translate::gemini::StreamToOpenAi::new("gemini", true);
            let mut n = 0;
            for data in &gemini {
                n += conv.on_event(None, black_box(data)).expect("a valid event").len();
            }
            n + conv.finish().len()
        });
    });
    g.finish();
}

// ---- usage and quota --------------------------------------------------------------------------

fn usage_keys(n: usize) -> Vec<UsageKey> {
    let (model, provider, upstream): (Arc<str>, Arc<str>, Arc<str>) =
        ("gpt-4o-mini".into(), "openai".into(), "gpt-4o-mini-2024-07-18".into());
    (0..n)
        .map(|i| UsageKey {
            key_id: format!("key-{i}").into(),
            project: Some(format!("project-{}", i % 100).into()),
            team: Some(format!("team-{}", i % 10).into()),
            model: model.clone(),
            provider: provider.clone(),
            upstream_model: upstream.clone(),
        })
        .collect()
}

fn usage(c: &mut Criterion) {
    let mut g = c.benchmark_group("usage");
    let tokens = Tokens { input: 1_200, output: 350, cached_input: 0 };
    // Steady state: after the warm-up every key already has its row (the reporter drains the
    // ledger every 200 ms, so a key's first request after a drain inserts it again).
    for (name, keys) in [("one_key", usage_keys(1)), ("10000_keys", usage_keys(10_000))] {
        let ledger = UsageLedger::default();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("record", name), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                ledger.record(black_box(&keys[i]), tokens, 1_230, false);
            });
        });
    }
    g.finish();

    // A key with a daily budget and rpm/tpm limits: three pools, as `Limits` makes them. The
    // limits are large enough never to refuse, so every iteration takes the fitting path.
    let scope: Arc<str> = "key:key-1".into();
    let ask = |kind, amount, window| Ask { scope: scope.clone(), kind, amount, limit: u64::MAX / 2, window };
    let asks = [
        ask(Kind::Usd, 20_000, Window::Budget(Period::Daily)),
        ask(Kind::Requests, 1, Window::Minute),
        ask(Kind::Tokens, 2_048, Window::Minute),
    ];
    let quota = Quota::local();
    let mut g = c.benchmark_group("quota");
    g.bench_function("reserve_settle/3_asks", |b| {
        b.iter(|| {
            // A request that fits is reserved without awaiting anything: no runtime needed.
            let r = quota.reserve(black_box(&asks)).now_or_never().expect("never waits").expect("fits");
            quota.settle(r, 1_230, 1_550);
        });
    });
    g.finish();
}

criterion_group!(benches, auth, body, sse, usage);
criterion_main!(benches);
