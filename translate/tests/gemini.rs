//! Golden-file tests for the OpenAI ⇄ Gemini translation. Fixtures under
//! `tests/fixtures/gemini/` were written from Google's Gemini API reference and OpenAI's chat
//! completions reference:
//!
//! - `request/NAME.openai.json` → `NAME.gemini.json` (default options), `NAME.dropped.gemini.json`
//!   (with `drop_unsupported_params`), or `NAME.error.json` (`{"unsupported": param}` or
//!   `{"invalid": message}`);
//! - `response/NAME.gemini.json` → `NAME.openai.json`;
//! - `stream/NAME.sse` (Gemini's `alt=sse` wire text) → `NAME.openai.json` (the chunks, then
//!   `"[DONE]"`), with `include_usage`;
//! - `error/NAME.gemini.json` (`{"status", "body"}`) → `NAME.openai.json`;
//! - `response/NAME.anthropic.json` and `stream/NAME.anthropic.json`: what an Anthropic-format
//!   client receives for the same input, through the OpenAI pivot (see `client_chain`; streams
//!   as `[{"event", "data"}]`). `UPDATE_GOLDEN=1` rewrites these.
//!
//! Generated values are normalised before comparing: `created` → 0, a random completion id →
//! `chatcmpl-random`, generated tool-call ids → `call_0`, `call_1`, … in order of appearance
//! (any thought signature they carry is kept).

// Test helpers outside `#[test]` functions panic on broken fixtures, as the tests do.
#![allow(clippy::unwrap_used, clippy::panic)]

mod client_chain;

use std::path::{Path, PathBuf};

use llmgw_translate::{Options, StreamConverter, TranslateError, Usage, gemini};
use serde_json::{Value, json};

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemini").join(kind)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture names in `kind` with inputs ending in `suffix`, sorted.
fn cases(kind: &str, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir(kind))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(suffix).map(str::to_owned))
        .filter(|n| !n.contains('.'))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures in {kind}");
    names
}

struct Normaliser {
    ids: Vec<String>,
}

impl Normaliser {
    fn new() -> Self {
        Self { ids: Vec::new() }
    }

    fn value(&mut self, v: &mut Value) {
        match v {
            Value::Object(o) => {
                if o.contains_key("created") {
                    o.insert("created".into(), json!(0));
                }
                for (k, v) in o.iter_mut() {
                    if k == "id"
                        && let Value::String(s) = v
                    {
                        *s = self.id(s);
                    } else {
                        self.value(v);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| self.value(v)),
            _ => {}
        }
    }

    fn id(&mut self, id: &str) -> String {
        if let Some(rest) = id.strip_prefix("chatcmpl-")
            && rest.len() == 16
            && rest.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return "chatcmpl-random".into();
        }
        if let Some(rest) = id.strip_prefix("call_") {
            let (hex, tail) = rest.split_once('_').map_or((rest, ""), |(h, t)| (h, t));
            if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                let n = match self.ids.iter().position(|h| h == hex) {
                    Some(n) => n,
                    None => {
                        self.ids.push(hex.to_owned());
                        self.ids.len() - 1
                    }
                };
                return if tail.is_empty() { format!("call_{n}") } else { format!("call_{n}_{tail}") };
            }
        }
        id.to_owned()
    }
}

fn normalised(mut v: Value) -> Value {
    Normaliser::new().value(&mut v);
    v
}

fn usage_of(openai: &Value) -> Usage {
    let u = &openai["usage"];
    Usage {
        input: u["prompt_tokens"].as_u64().unwrap(),
        output: u["completion_tokens"].as_u64().unwrap(),
        cached_input: u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(),
    }
}

#[test]
fn requests() {
    for name in cases("request", ".openai.json") {
        let input = read_json(&dir("request").join(format!("{name}.openai.json")));
        let strict = gemini::request(&input, &Options::default());
        let expected = dir("request").join(format!("{name}.gemini.json"));
        let error = dir("request").join(format!("{name}.error.json"));
        let dropped = dir("request").join(format!("{name}.dropped.gemini.json"));
        let mut checked = false;
        if expected.exists() {
            assert_eq!(strict.clone().unwrap(), read_json(&expected), "request/{name}");
            checked = true;
        }
        if error.exists() {
            let want = read_json(&error);
            match (strict.clone().unwrap_err(), want) {
                (TranslateError::Unsupported { param, target, .. }, w) if w.get("unsupported").is_some() => {
                    assert_eq!(param, w["unsupported"], "request/{name}");
                    assert_eq!(target, "Gemini");
                }
                (TranslateError::InvalidRequest(m), w) if w.get("invalid").is_some() => {
                    assert_eq!(m, w["invalid"], "request/{name}")
                }
                (got, w) => panic!("request/{name}: got {got:?}, want {w}"),
            }
            checked = true;
        }
        if dropped.exists() {
            assert!(strict.is_err(), "request/{name} should be refused without drop_unsupported_params");
            let opts = Options { drop_unsupported_params: true };
            let got = gemini::request(&input, &opts).unwrap();
            assert_eq!(got, read_json(&dropped), "request/{name} (dropped)");
            checked = true;
        }
        assert!(checked, "request/{name} has no expected output");
    }
}

#[test]
fn responses() {
    for name in cases("response", ".gemini.json") {
        let input = read_json(&dir("response").join(format!("{name}.gemini.json")));
        let expected = read_json(&dir("response").join(format!("{name}.openai.json")));
        let alias = expected["model"].as_str().unwrap();
        let (got, usage) = gemini::response(&input, alias).unwrap();
        assert_eq!(normalised(got), expected, "response/{name}");
        assert_eq!(usage, usage_of(&expected), "response/{name} usage");
    }
}

/// The `data:` payloads of an SSE text, one per event.
fn sse_data(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

fn run_stream(conv: &mut dyn StreamConverter, events: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for data in events {
        for ev in conv.on_event(None, data).unwrap() {
            assert_eq!(ev.event, None);
            out.push(ev.data);
        }
    }
    out.extend(conv.finish().into_iter().map(|e| e.data));
    out.into_iter()
        .map(|d| if d == "[DONE]" { Value::String(d) } else { serde_json::from_str(&d).unwrap() })
        .collect()
}

#[test]
fn streams() {
    for name in cases("stream", ".sse") {
        let events = sse_data(&read(&dir("stream").join(format!("{name}.sse"))));
        let expected = read_json(&dir("stream").join(format!("{name}.openai.json")));
        let alias = expected[0]["model"].as_str().unwrap();
        let mut conv = gemini::StreamToOpenAi::new(alias, true);
        assert!(!conv.started());
        let got = run_stream(&mut conv, &events);
        assert_eq!(normalised(Value::Array(got)), expected, "stream/{name}");
        assert!(conv.started());
        let usage_chunk = expected.as_array().unwrap().iter().rev().nth(1).unwrap();
        assert_eq!(conv.usage(), usage_of(usage_chunk), "stream/{name} usage");
    }
}

#[test]
fn responses_for_anthropic_clients() {
    for name in cases("response", ".gemini.json") {
        let input = read_json(&dir("response").join(format!("{name}.gemini.json")));
        let alias = read_json(&dir("response").join(format!("{name}.openai.json")))["model"].clone();
        let alias = alias.as_str().unwrap();
        let (openai, usage) = gemini::response(&input, alias).unwrap();
        let got = client_chain::response(&name, &openai, usage, alias);
        client_chain::check_golden(&dir("response").join(format!("{name}.anthropic.json")), &normalised(got));
    }
}

#[test]
fn streams_for_anthropic_clients() {
    for name in cases("stream", ".sse") {
        let events = sse_data(&read(&dir("stream").join(format!("{name}.sse"))));
        let alias = read_json(&dir("stream").join(format!("{name}.openai.json")))[0]["model"].clone();
        let alias = alias.as_str().unwrap();
        let mut first = gemini::StreamToOpenAi::new(alias, true);
        let got = client_chain::stream(&mut first, events.iter().map(|d| (None, d.as_str())), alias);
        let message = client_chain::assemble(&name, &got);
        client_chain::check_message(&name, &message, first.usage());
        client_chain::check_golden(
            &dir("stream").join(format!("{name}.anthropic.json")),
            &normalised(json!(got)),
        );
    }
}

#[test]
fn errors() {
    for name in cases("error", ".gemini.json") {
        let input = read_json(&dir("error").join(format!("{name}.gemini.json")));
        let expected = read_json(&dir("error").join(format!("{name}.openai.json")));
        let status = u16::try_from(input["status"].as_u64().unwrap()).unwrap();
        assert_eq!(gemini::error(status, &input["body"]), expected, "error/{name}");
    }
}

#[test]
fn stream_without_include_usage_ends_with_done_only() {
    let mut conv = gemini::StreamToOpenAi::new("m", false);
    let data = r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":"STOP","index":0}],
                   "usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,"totalTokenCount":4}}"#;
    let out = conv.on_event(None, data).unwrap();
    assert_eq!(out.len(), 3, "role, text, finish");
    let end = conv.finish();
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].data, "[DONE]");
    assert_eq!(end[0].to_bytes(), "data: [DONE]\n\n");
    assert_eq!(conv.usage(), Usage { input: 3, output: 1, cached_input: 0 });
    assert!(conv.finish().is_empty(), "finish is idempotent");
}

#[test]
fn stream_error_event_and_garbage_are_bad_responses() {
    let mut conv = gemini::StreamToOpenAi::new("m", true);
    let err = conv.on_event(None, r#"{"error":{"code":500,"message":"Internal error","status":"INTERNAL"}}"#);
    assert!(matches!(err, Err(TranslateError::BadResponse(m)) if m.contains("Internal error")));
    assert!(matches!(conv.on_event(None, "not json"), Err(TranslateError::BadResponse(_))));
    assert!(!conv.started());
}

#[test]
fn stream_blocked_prompt_finishes_with_content_filter() {
    let mut conv = gemini::StreamToOpenAi::new("m", false);
    let out = conv.on_event(None, r#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}"#).unwrap();
    let last: Value = serde_json::from_str(&out.last().unwrap().data).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "content_filter");
    assert!(conv.started());
}

#[test]
fn stream_cut_without_finish_reason_still_finishes() {
    let mut conv = gemini::StreamToOpenAi::new("m", false);
    conv.on_event(None, r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]},"index":0}]}"#).unwrap();
    let end = conv.finish();
    let finish: Value = serde_json::from_str(&end[0].data).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
}

#[test]
fn response_errors() {
    let err = gemini::response(
        &json!({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}),
        "m",
    );
    assert!(matches!(err, Err(TranslateError::BadResponse(m)) if m.contains("bad")));
    assert!(matches!(gemini::response(&json!({}), "m"), Err(TranslateError::BadResponse(_))));
    assert!(matches!(gemini::response(&json!("x"), "m"), Err(TranslateError::BadResponse(_))));
}

#[test]
fn malformed_requests_are_invalid() {
    for body in [
        json!("x"),
        json!({"messages": "hi"}),
        json!({"messages": [{"content": "no role"}]}),
        json!({"messages": [{"role": "wizard", "content": "x"}]}),
        json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
        json!({"messages": [{"role": "user", "content": "x"}], "stop": 3}),
        json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
    ] {
        let err = gemini::request(&body, &Options { drop_unsupported_params: true }).unwrap_err();
        assert!(matches!(err, TranslateError::InvalidRequest(_)), "{body}: {err:?}");
    }
}

#[test]
fn a_response_round_trips_into_the_next_request() {
    // The tool-call ids the gateway hands out carry Gemini's thought signature back to it.
    let gemini_response = read_json(&dir("response").join("parallel_function_calls.gemini.json"));
    let (openai, _) = gemini::response(&gemini_response, "m").unwrap();
    let message = openai["choices"][0]["message"].clone();
    let calls = message["tool_calls"].as_array().unwrap().clone();
    let mut messages = vec![json!({"role": "user", "content": "weather?"}), message];
    for c in &calls {
        messages.push(json!({"role": "tool", "tool_call_id": c["id"], "content": "ok"}));
    }
    let next = gemini::request(&json!({"model": "m", "messages": messages}), &Options::default()).unwrap();
    let model_parts = next["contents"][1]["parts"].as_array().unwrap();
    assert_eq!(model_parts[0], json!({"text": "Checking both cities."}));
    assert_eq!(model_parts[1]["thoughtSignature"], "CiQBcsjafB+/9xyz");
    assert_eq!(
        model_parts[1]["functionCall"],
        gemini_response["candidates"][0]["content"]["parts"][1]["functionCall"]
    );
    assert!(model_parts[2].get("thoughtSignature").is_none());
    let responses = next["contents"][2]["parts"].as_array().unwrap();
    let names: Vec<&str> =
        responses.iter().map(|p| p["functionResponse"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["get_weather", "get_weather", "get_time"]);
}
