//! Golden-file tests of `llmgw_translate::anthropic` (OpenAI-format client → Anthropic).
//!
//! Fixtures under `tests/fixtures/anthropic/`, written from the two published API references:
//! - `request/<case>.openai.json` → `<case>.anthropic.json` (default options), and/or
//!   `<case>.error.json` (`{"unsupported": [params…]}`: the error names one of them, or
//!   `{"invalid": "text"}`: an invalid-request error containing the text), and/or
//!   `<case>.dropped.anthropic.json` (with `drop_unsupported_params`);
//! - `response/<case>.anthropic.json` → `<case>.openai.json` (the model alias is `my-claude`);
//! - `error/<case>.anthropic.json` (`{"status", "body"}`) → `<case>.openai.json`;
//! - `stream/<case>.anthropic.sse` → `<case>.openai.sse` (with `include_usage`).

// Test code: a failed expectation panics with the case name.
#![allow(clippy::unwrap_used, clippy::panic)]

mod anthropic_golden;

use anthropic_golden::{
    Event, assert_events_eq, assert_json_eq, cases, comparable, dir, normalize, read_json, read_opt, read_sse,
};
use llmgw_translate::anthropic::{self, StreamToOpenAi};
use llmgw_translate::{Options, StreamConverter, TranslateError, Usage};
use serde_json::{Value, json};

const UPSTREAM: &str = "claude-sonnet-4-5";
const ALIAS: &str = "my-claude";

fn check_error(case: &str, err: &TranslateError, expected: &Value) {
    if let Some(params) = expected.get("unsupported") {
        let TranslateError::Unsupported { param, target, .. } = err else {
            panic!("{case}: expected Unsupported, got {err:?}");
        };
        assert_eq!(*target, "Anthropic", "{case}");
        let allowed: Vec<&str> = params.as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert!(
            allowed.contains(&param.as_str()),
            "{case}: error names `{param}`, expected one of {allowed:?}"
        );
        assert!(err.to_string().contains(param.as_str()), "{case}: message must name the parameter: {err}");
    } else if let Some(text) = expected.get("invalid").and_then(Value::as_str) {
        let TranslateError::InvalidRequest(msg) = err else {
            panic!("{case}: expected InvalidRequest, got {err:?}");
        };
        assert!(msg.contains(text), "{case}: {msg:?} should mention {text:?}");
    } else {
        panic!("{case}: malformed error fixture {expected}");
    }
}

#[test]
fn requests() {
    let d = dir("request");
    for case in cases(&d, ".openai.json") {
        let input = read_json(&d.join(format!("{case}.openai.json")));
        let expected = read_opt(&d.join(format!("{case}.anthropic.json")));
        let error = read_opt(&d.join(format!("{case}.error.json")));
        let dropped = read_opt(&d.join(format!("{case}.dropped.anthropic.json")));
        assert!(
            expected.is_some() || error.is_some() || dropped.is_some(),
            "{case}: no expected output for this input"
        );
        let strict = anthropic::request(&input, UPSTREAM, &Options::default());
        match (&expected, &error) {
            (Some(exp), _) => {
                assert_json_eq(&case, strict.as_ref().unwrap_or_else(|e| panic!("{case}: {e}")), exp)
            }
            (None, Some(err)) => match &strict {
                Ok(v) => panic!("{case}: expected an error, got {v}"),
                Err(e) => check_error(&case, e, err),
            },
            (None, None) => {}
        }
        if let Some(exp) = dropped {
            let opts = Options { drop_unsupported_params: true };
            let got = anthropic::request(&input, UPSTREAM, &opts)
                .unwrap_or_else(|e| panic!("{case} (dropped): {e}"));
            assert_json_eq(&format!("{case} (dropped)"), &got, &exp);
        }
    }
}

/// Each refused parameter alone: the error names exactly it, and dropping it succeeds.
#[test]
fn each_unsupported_param_is_named() {
    let params = [
        ("n", json!(3)),
        ("temperature", json!(1.5)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(2)),
        ("presence_penalty", json!(0.4)),
        ("frequency_penalty", json!(-1)),
        ("logit_bias", json!({"50256": -100})),
        ("seed", json!(42)),
        ("store", json!(true)),
        ("service_tier", json!("flex")),
        ("reasoning_effort", json!("high")),
        ("modalities", json!(["text", "audio"])),
        ("audio", json!({"voice": "alloy", "format": "mp3"})),
        ("prediction", json!({"type": "content", "content": "x"})),
        ("web_search_options", json!({})),
        ("functions", json!([{"name": "f", "parameters": {"type": "object"}}])),
        ("some_future_param", json!(true)),
    ];
    for (param, value) in params {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        body[param] = value;
        match anthropic::request(&body, UPSTREAM, &Options::default()) {
            Err(TranslateError::Unsupported { param: p, .. }) => assert_eq!(p, param),
            other => panic!("{param}: expected Unsupported, got {other:?}"),
        }
        let dropped = anthropic::request(&body, UPSTREAM, &Options { drop_unsupported_params: true })
            .unwrap_or_else(|e| panic!("{param} dropped: {e}"));
        assert!(dropped.get(param).is_none(), "{param} must be dropped");
    }
}

#[test]
fn temperature_within_anthropic_range_passes() {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 1});
    let out = anthropic::request(&body, UPSTREAM, &Options::default()).unwrap();
    assert_eq!(out["temperature"], 1);
}

#[test]
fn malformed_requests_are_invalid() {
    let bad = [
        json!([]),
        json!({"messages": [{"role": "narrator", "content": "x"}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]}),
        json!({"messages": [{"role": "tool", "content": "x"}]}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
        json!({"messages": [{"role": "user", "content": "x"}], "stop": 5}),
        json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
    ];
    for body in bad {
        match anthropic::request(&body, UPSTREAM, &Options::default()) {
            Err(TranslateError::InvalidRequest(_)) => {}
            other => panic!("{body}: expected InvalidRequest, got {other:?}"),
        }
    }
}

fn usage_of_openai(u: &Value) -> Usage {
    Usage {
        input: u["prompt_tokens"].as_u64().unwrap(),
        output: u["completion_tokens"].as_u64().unwrap(),
        cached_input: u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(),
    }
}

#[test]
fn responses() {
    let d = dir("response");
    for case in cases(&d, ".anthropic.json") {
        let input = read_json(&d.join(format!("{case}.anthropic.json")));
        let expected = read_json(&d.join(format!("{case}.openai.json")));
        let (mut got, usage) = anthropic::response(&input, ALIAS).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(got["created"].as_u64().unwrap() > 1_700_000_000, "{case}: created is now");
        normalize(&mut got);
        let mut expected_n = expected.clone();
        normalize(&mut expected_n);
        assert_json_eq(&case, &got, &expected_n);
        assert_eq!(usage, usage_of_openai(&expected["usage"]), "{case}: usage");
    }
}

#[test]
fn response_without_content_is_bad() {
    let err = anthropic::response(&json!({"type": "message", "id": "x"}), ALIAS).unwrap_err();
    assert!(matches!(err, TranslateError::BadResponse(_)), "{err:?}");
    let body = json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}});
    match anthropic::response(&body, ALIAS) {
        Err(TranslateError::BadResponse(msg)) => assert!(msg.contains("Internal server error"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors() {
    let d = dir("error");
    for case in cases(&d, ".anthropic.json") {
        let input = read_json(&d.join(format!("{case}.anthropic.json")));
        let expected = read_json(&d.join(format!("{case}.openai.json")));
        let status = u16::try_from(input["status"].as_u64().unwrap()).unwrap();
        assert_json_eq(&case, &anthropic::error(status, &input["body"]), &expected);
    }
}

fn run_stream(conv: &mut StreamToOpenAi, input: &[Event]) -> Result<Vec<Event>, TranslateError> {
    let mut out = Vec::new();
    for ev in input {
        for e in conv.on_event(ev.name.as_deref(), &ev.data)? {
            out.push(Event { name: e.event.map(std::borrow::Cow::into_owned), data: e.data });
        }
    }
    for e in conv.finish() {
        out.push(Event { name: e.event.map(std::borrow::Cow::into_owned), data: e.data });
    }
    Ok(out)
}

#[test]
fn streams() {
    let d = dir("stream");
    for case in cases(&d, ".anthropic.sse") {
        let input = read_sse(&d.join(format!("{case}.anthropic.sse")));
        let expected = read_sse(&d.join(format!("{case}.openai.sse")));
        let mut conv = StreamToOpenAi::new(ALIAS, true);
        assert!(!conv.started());
        let got = run_stream(&mut conv, &input).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_events_eq(&case, &got, &expected);
        assert!(conv.started());
        // The converter's usage is what the final usage chunk says.
        let usage_chunk =
            expected.iter().rev().map(|e| comparable(&e.data)).find(|v| v.get("usage").is_some()).unwrap();
        assert_eq!(conv.usage(), usage_of_openai(&usage_chunk["usage"]), "{case}: usage");
    }
}

#[test]
fn stream_without_include_usage_ends_with_done_only() {
    let d = dir("stream");
    let input = read_sse(&d.join("text_max_tokens.anthropic.sse"));
    let mut conv = StreamToOpenAi::new(ALIAS, false);
    let got = run_stream(&mut conv, &input).unwrap();
    assert_eq!(got.last().unwrap().data, "[DONE]");
    assert!(got.iter().all(|e| e.data == "[DONE]" || comparable(&e.data).get("usage").is_none()));
    assert_eq!(conv.usage(), Usage { input: 15, output: 4, cached_input: 0 });
}

#[test]
fn stream_error_event_is_bad_response() {
    let mut conv = StreamToOpenAi::new(ALIAS, true);
    let start = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":10,"output_tokens":1}}}"#;
    assert_eq!(conv.on_event(Some("message_start"), start).unwrap().len(), 1);
    let err = conv
        .on_event(
            Some("error"),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
    match err {
        TranslateError::BadResponse(msg) => {
            assert!(msg.contains("Overloaded") && msg.contains("overloaded_error"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!conv.started(), "no content was sent before the error");
}

#[test]
fn stream_rejects_garbage() {
    let mut conv = StreamToOpenAi::new(ALIAS, true);
    assert!(matches!(conv.on_event(None, "not json"), Err(TranslateError::BadResponse(_))));
    let stray =
        r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#;
    assert!(matches!(conv.on_event(None, stray), Err(TranslateError::BadResponse(_))));
}
