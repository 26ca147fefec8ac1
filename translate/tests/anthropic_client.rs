//! Golden-file tests of `llmgw_translate::anthropic_client` (Anthropic-format client → the
//! OpenAI pivot and back).
//!
//! Fixtures under `tests/fixtures/anthropic/client/`, written from the two published API
//! references:
//! - `request/<case>.anthropic.json` → `<case>.openai.json`, or `<case>.error.json`
//!   (`{"unsupported": [params…]}` or `{"invalid": "text"}`);
//! - `response/<case>.openai.json` → `<case>.anthropic.json` (the model is `claude-sonnet-4-5`;
//!   `cache_write` carries OpenRouter's `prompt_tokens_details.cache_write_tokens`);
//! - `stream/<case>.openai.sse` → `<case>.anthropic.sse`.

// Test code: a failed expectation panics with the case name.
#![allow(clippy::unwrap_used, clippy::panic)]

mod anthropic_golden;

use anthropic_golden::{
    Event, assert_events_eq, assert_json_eq, cases, dir, normalize, read_json, read_opt, read_sse,
};
use llmgw_translate::anthropic_client::{self, StreamFromOpenAi};
use llmgw_translate::{StreamConverter, TranslateError, Usage};
use serde_json::{Value, json};

const MODEL: &str = "claude-sonnet-4-5";

#[test]
fn requests() {
    let d = dir("client/request");
    for case in cases(&d, ".anthropic.json") {
        let input = read_json(&d.join(format!("{case}.anthropic.json")));
        let got = anthropic_client::request(&input);
        // The fixtures are what an OpenAI-format provider receives.
        if let Some(mut expected) = read_opt(&d.join(format!("{case}.openai.json"))) {
            let mut got = anthropic_client::for_openai_wire(&got.unwrap_or_else(|e| panic!("{case}: {e}")));
            normalize(&mut got);
            normalize(&mut expected);
            assert_json_eq(&case, &got, &expected);
            continue;
        }
        let expected = read_opt(&d.join(format!("{case}.error.json")))
            .unwrap_or_else(|| panic!("{case}: no expected output for this input"));
        let err = match got {
            Ok(v) => panic!("{case}: expected an error, got {v}"),
            Err(e) => e,
        };
        if let Some(params) = expected.get("unsupported").and_then(Value::as_array) {
            let TranslateError::Unsupported { param, .. } = &err else { panic!("{case}: {err:?}") };
            assert!(params.iter().any(|p| p == param.as_str()), "{case}: error names `{param}`");
        } else {
            let text = expected["invalid"].as_str().unwrap();
            let TranslateError::InvalidRequest(msg) = &err else { panic!("{case}: {err:?}") };
            assert!(msg.contains(text), "{case}: {msg:?} should mention {text:?}");
        }
    }
}

#[test]
fn responses() {
    let d = dir("client/response");
    for case in cases(&d, ".openai.json") {
        let input = read_json(&d.join(format!("{case}.openai.json")));
        let expected = read_json(&d.join(format!("{case}.anthropic.json")));
        let got = anthropic_client::response(&input, MODEL).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_json_eq(&case, &got, &expected);
    }
}

#[test]
fn response_with_bad_tool_arguments_is_bad() {
    let body = json!({"id": "x", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": null,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]}}]});
    assert!(matches!(anthropic_client::response(&body, MODEL), Err(TranslateError::BadResponse(_))));
    assert!(matches!(
        anthropic_client::response(&json!({"choices": []}), MODEL),
        Err(TranslateError::BadResponse(_))
    ));
}

#[test]
fn error_types_follow_the_status() {
    let table = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ];
    for (status, kind) in table {
        let e = anthropic_client::error(status, "something failed");
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": kind, "message": "something failed"}}),
            "HTTP {status}"
        );
    }
}

fn run_stream(conv: &mut StreamFromOpenAi, input: &[Event]) -> Vec<Event> {
    let mut out = Vec::new();
    for ev in input {
        let events =
            conv.on_event(ev.name.as_deref(), &ev.data).unwrap_or_else(|e| panic!("{}: {e}", ev.data));
        out.extend(
            events
                .into_iter()
                .map(|e| Event { name: e.event.map(std::borrow::Cow::into_owned), data: e.data }),
        );
    }
    out.extend(
        conv.finish()
            .into_iter()
            .map(|e| Event { name: e.event.map(std::borrow::Cow::into_owned), data: e.data }),
    );
    out
}

#[test]
fn streams() {
    let d = dir("client/stream");
    for case in cases(&d, ".openai.sse") {
        let input = read_sse(&d.join(format!("{case}.openai.sse")));
        let expected = read_sse(&d.join(format!("{case}.anthropic.sse")));
        let mut conv = StreamFromOpenAi::new(MODEL);
        assert!(!conv.started());
        let got = run_stream(&mut conv, &input);
        assert_events_eq(&case, &got, &expected);
        assert!(conv.started(), "{case}");
    }
}

#[test]
fn stream_usage_is_the_usage_chunk() {
    let d = dir("client/stream");
    let mut conv = StreamFromOpenAi::new(MODEL);
    run_stream(&mut conv, &read_sse(&d.join("text_and_tools.openai.sse")));
    assert_eq!(conv.usage(), Usage { input: 1200, output: 48, cached_input: 1024 });
}

#[test]
fn stream_interleaving_keeps_block_indexes() {
    // Some OpenAI-compatible providers send text after a tool call; each run is its own block.
    let mut conv = StreamFromOpenAi::new(MODEL);
    let chunks = [
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t0", "type": "function", "function": {"name": "a", "arguments": "{}"}}]}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "between"}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "t1", "type": "function", "function": {"name": "b", "arguments": ""}}]}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": null}),
        // vLLM sends the usage chunk with `choices: null`.
        json!({"id": "c1", "choices": null, "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}),
    ];
    let mut events = Vec::new();
    for c in &chunks {
        events.extend(conv.on_event(None, &c.to_string()).unwrap());
    }
    events.extend(conv.on_event(None, "[DONE]").unwrap());
    assert!(conv.finish().is_empty(), "the stream already ended at [DONE]");
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            format!(
                "{} {}",
                e.event.as_deref().unwrap(),
                v.get("index").map(Value::to_string).unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "message_start ",
            "content_block_start 0",
            "content_block_delta 0",
            "content_block_stop 0",
            "content_block_start 1",
            "content_block_delta 1",
            "content_block_stop 1",
            "content_block_start 2",
            "content_block_stop 2",
            "message_delta ",
            "message_stop ",
        ]
    );
    let delta: Value = serde_json::from_str(&events[9].data).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"], json!({"input_tokens": 7, "output_tokens": 3}));
}

#[test]
fn stream_rejects_garbage() {
    let mut conv = StreamFromOpenAi::new(MODEL);
    assert!(matches!(conv.on_event(None, "{not json"), Err(TranslateError::BadResponse(_))));
}

#[test]
fn empty_stream_still_yields_a_whole_message() {
    let mut conv = StreamFromOpenAi::new(MODEL);
    let names: Vec<String> = conv.finish().into_iter().map(|e| e.event.unwrap().into_owned()).collect();
    assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
}

/// An Anthropic client routed to an Anthropic provider goes through the pivot both ways: every
/// client request fixture must translate on to an Anthropic request.
#[test]
fn client_requests_survive_the_pivot_to_anthropic() {
    let d = dir("client/request");
    for case in cases(&d, ".anthropic.json") {
        let Some(openai) = read_opt(&d.join(format!("{case}.openai.json"))) else { continue };
        let back = llmgw_translate::anthropic::request(&openai, MODEL, &llmgw_translate::Options::default())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let original = read_json(&d.join(format!("{case}.anthropic.json")));
        assert_eq!(back["max_tokens"], original["max_tokens"], "{case}");
        assert_eq!(back["tool_choice"]["type"], original["tool_choice"]["type"], "{case}");
    }
}

/// Anthropic's stream → OpenAI chunks → Anthropic's stream gives back the same content blocks.
#[test]
fn stream_round_trip_through_the_pivot() {
    let original = read_sse(&dir("stream").join("text_and_tools.anthropic.sse"));
    let mut to_openai = llmgw_translate::anthropic::StreamToOpenAi::new(MODEL, true);
    let mut from_openai = StreamFromOpenAi::new(MODEL);
    let mut chunks = Vec::new();
    for ev in &original {
        chunks.extend(to_openai.on_event(ev.name.as_deref(), &ev.data).unwrap());
    }
    chunks.extend(to_openai.finish());
    let mut back = Vec::new();
    for c in &chunks {
        back.extend(from_openai.on_event(None, &c.data).unwrap());
    }
    back.extend(from_openai.finish());

    let blocks = |evs: Vec<(String, Value)>| -> Vec<(String, Value)> {
        evs.into_iter()
            .filter(|(name, _)| name.starts_with("content_block"))
            .map(|(name, mut v)| {
                // Anthropic's first, empty input_json_delta carries nothing and is not replayed.
                if v["delta"]["partial_json"] == "" {
                    v = Value::Null;
                }
                (name, v)
            })
            .filter(|(_, v)| !v.is_null())
            .collect()
    };
    let orig: Vec<(String, Value)> =
        original.iter().map(|e| (e.name.clone().unwrap(), serde_json::from_str(&e.data).unwrap())).collect();
    let got: Vec<(String, Value)> = back
        .iter()
        .map(|e| (e.event.clone().unwrap().into_owned(), serde_json::from_str(&e.data).unwrap()))
        .collect();
    assert_eq!(blocks(got.clone()), blocks(orig));
    let delta = &got.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 472, "output_tokens": 89, "cache_read_input_tokens": 1024})
    );
    assert_eq!(from_openai.usage(), to_openai.usage());
}

/// Prompt caching survives the pivot: `cache_control` on system and user text blocks becomes
/// Bedrock's `cachePoint` (and would stay `cache_control` were the pivot sent on to Anthropic;
/// Gemini ignores it), while OpenAI-format providers get the fixture's plain form.
#[test]
fn cache_control_on_text_reaches_bedrock() {
    let d = dir("client/request");
    let input = read_json(&d.join("system_blocks_stream.anthropic.json"));
    let pivot = anthropic_client::request(&input).unwrap();
    let opts = llmgw_translate::Options::default();

    let bedrock = llmgw_translate::bedrock::request(&pivot, &opts).unwrap();
    assert_eq!(
        bedrock["system"],
        json!([{"text": "You are Claude Code."}, {"text": "Be concise."}, {"cachePoint": {"type": "default"}}])
    );
    let last = bedrock["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["content"], json!([{"text": "List the files."}, {"cachePoint": {"type": "default"}}]));

    let anthropic = llmgw_translate::anthropic::request(&pivot, MODEL, &opts).unwrap();
    assert_eq!(anthropic["system"][1]["cache_control"], json!({"type": "ephemeral"}), "{anthropic}");
    assert!(anthropic["system"][0].get("cache_control").is_none(), "{anthropic}");

    let gemini = llmgw_translate::gemini::request(&pivot, &opts).unwrap();
    assert_eq!(
        gemini["systemInstruction"]["parts"],
        json!([{"text": "You are Claude Code."}, {"text": "Be concise."}])
    );

    let openai = anthropic_client::for_openai_wire(&pivot);
    assert!(!openai.to_string().contains("cache_control"), "{openai}");
    assert_eq!(openai["messages"][0]["content"], "You are Claude Code.\n\nBe concise.");

    // Empty system blocks add nothing, cached or not: no empty part, no system message at all.
    let cc = json!({"type": "ephemeral"});
    let mut input = input;
    input["system"] =
        json!([{"type": "text", "text": "", "cache_control": cc}, {"type": "text", "text": "Hi."}]);
    let pivot = anthropic_client::request(&input).unwrap();
    assert_eq!(pivot["messages"][0]["content"], json!([{"type": "text", "text": "Hi."}]));
    input["system"] = json!([{"type": "text", "text": "", "cache_control": cc}]);
    let pivot = anthropic_client::request(&input).unwrap();
    assert_eq!(pivot["messages"][0]["role"], "user", "{pivot}");
}
