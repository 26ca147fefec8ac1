//! The chain an Anthropic-format client's answer goes through when its model routes to a
//! Gemini or Bedrock provider (as `edge/src/adapt.rs` runs it): the provider's body or events
//! → OpenAI's chat format (streams with `include_usage`) → Anthropic's message or events.
//! Shared by `gemini.rs` and `bedrock.rs`, with the golden-file I/O of their
//! `NAME.anthropic.json` files and checks of what Anthropic's Messages reference requires of
//! a message and of an event stream, so that a golden cannot quietly record a malformed one.
//!
//! `UPDATE_GOLDEN=1 cargo test -p llmgw-translate` rewrites the goldens from what the
//! translation produces now; read the diff before committing it.

// Test code: a failed expectation panics with the case name.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use llmgw_translate::anthropic_client::{self, StreamFromOpenAi};
use llmgw_translate::{SseEvent, StreamConverter, Usage};
use serde_json::{Map, Value, json};

/// Anthropic's `stop_reason` values (Messages reference, "Handling stop reasons").
const STOP_REASONS: [&str; 7] = [
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
];

/// What the client receives for one streamed answer: the events the provider's converter
/// (`first`, made with `include_usage`) yields for `events`, each passed through
/// `StreamFromOpenAi`, then both converters' closing events, as `{"event", "data"}` objects.
///
/// The provider's stream must have reached its documented end: the edge only finishes a
/// stream cleanly when `first.complete()`.
pub fn stream<'a>(
    first: &mut dyn StreamConverter,
    events: impl IntoIterator<Item = (Option<&'a str>, &'a str)>,
    model: &str,
) -> Vec<Value> {
    // As `Pipeline::feed` and `Pipeline::finish` in edge/src/adapt.rs.
    let mut second = StreamFromOpenAi::new(model);
    let mut out = Vec::new();
    for (name, data) in events {
        let evs = first.on_event(name, data).unwrap_or_else(|e| panic!("{data}: {e}"));
        out.extend(through(&mut second, evs));
    }
    assert!(first.complete(), "the provider's stream did not reach its end");
    let evs = first.finish();
    out.extend(through(&mut second, evs));
    out.extend(second.finish());
    out.into_iter()
        .map(|e| {
            let name = e.event.unwrap_or_else(|| panic!("an Anthropic event without a name: {}", e.data));
            let data: Value = serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {}", e.data));
            json!({"event": name, "data": data})
        })
        .collect()
}

fn through(second: &mut StreamFromOpenAi, chunks: Vec<SseEvent>) -> Vec<SseEvent> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend(
            second.on_event(c.event.as_deref(), &c.data).unwrap_or_else(|e| panic!("{}: {e}", c.data)),
        );
    }
    out
}

/// Checks one Anthropic message against the Messages reference and against the tokens the
/// gateway records for it (`usage`, in OpenAI's terms: input includes cache reads).
#[track_caller]
pub fn check_message(case: &str, m: &Value, usage: Usage) {
    assert_eq!(m["type"], "message", "{case}");
    assert_eq!(m["role"], "assistant", "{case}");
    assert!(m["id"].as_str().is_some_and(|s| !s.is_empty()), "{case}: id");
    assert!(m["model"].is_string(), "{case}: model");
    assert!(m["stop_sequence"].is_null(), "{case}: no stop sequence is ever reported");
    let stop =
        m["stop_reason"].as_str().unwrap_or_else(|| panic!("{case}: stop_reason {}", m["stop_reason"]));
    assert!(STOP_REASONS.contains(&stop), "{case}: stop_reason {stop}");
    let content = m["content"].as_array().unwrap_or_else(|| panic!("{case}: content"));
    for block in content {
        match block["type"].as_str() {
            Some("text") => {
                let text = block["text"].as_str().unwrap_or_else(|| panic!("{case}: {block}"));
                // The API never returns an empty text block, and refuses one sent back.
                assert!(!text.is_empty(), "{case}: empty text block");
            }
            Some("tool_use") => {
                let id = block["id"].as_str().unwrap_or_else(|| panic!("{case}: {block}"));
                // The pattern Anthropic enforces on tool_use ids the client sends back.
                assert!(
                    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                    "{case}: tool_use id {id}"
                );
                assert!(block["name"].as_str().is_some_and(|n| !n.is_empty()), "{case}: {block}");
                assert!(block["input"].is_object(), "{case}: tool input must be an object: {block}");
            }
            _ => panic!("{case}: unexpected block {block}"),
        }
    }
    // A turn cut by max_tokens may end inside a tool call; one that stopped for tools has one.
    if stop == "tool_use" {
        assert!(content.iter().any(|b| b["type"] == "tool_use"), "{case}: tool_use without a tool call");
    }
    let u = &m["usage"];
    let n = |k: &str| u.get(k).map_or(0, |v| v.as_u64().unwrap_or_else(|| panic!("{case}: usage.{k} {v}")));
    // Anthropic's input_tokens excludes cache reads and writes; together they are the prompt.
    let prompt = n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens");
    assert_eq!(prompt, usage.input, "{case}: input tokens");
    assert_eq!(n("cache_read_input_tokens"), usage.cached_input, "{case}: cache reads");
    assert_eq!(n("output_tokens"), usage.output, "{case}: output tokens");
    for k in ["cache_read_input_tokens", "cache_creation_input_tokens"] {
        assert!(u.get(k).is_none_or(|c| c.as_u64() > Some(0)), "{case}: {k} is sent only when non-zero: {u}");
    }
}

/// Checks an event stream against the Messages streaming reference and returns the message it
/// builds, as an SDK's accumulator would: `message_start` (a message with empty content), then
/// per content block a `content_block_start` at the next index, its deltas and a
/// `content_block_stop`, then `message_delta` (stop reason, cumulative usage) and
/// `message_stop`, nothing after. Each event's name is its data's `type`.
#[track_caller]
pub fn assemble(case: &str, events: &[Value]) -> Value {
    let mut message: Option<Value> = None;
    let mut content: Vec<Value> = Vec::new();
    let mut open: Option<(usize, String)> = None; // index, partial JSON of a tool_use
    let mut delta_seen = false;
    let mut stopped = false;
    for ev in events {
        let (name, data) = (ev["event"].as_str().unwrap(), &ev["data"]);
        assert_eq!(data["type"], name, "{case}: event name and type differ");
        assert!(!stopped, "{case}: {name} after message_stop");
        if name != "message_start" {
            assert!(message.is_some(), "{case}: {name} before message_start");
        }
        match name {
            "message_start" => {
                assert!(message.is_none(), "{case}: a second message_start");
                let m = &data["message"];
                assert_eq!(m["content"], json!([]), "{case}: message_start content");
                assert!(m["stop_reason"].is_null() && m["stop_sequence"].is_null(), "{case}: {m}");
                assert_eq!(m["usage"]["output_tokens"], 0, "{case}: nothing is generated yet");
                message = Some(m.clone());
            }
            "content_block_start" => {
                assert!(open.is_none() && !delta_seen, "{case}: block started while another is open");
                let index = data["index"].as_u64().unwrap() as usize;
                assert_eq!(index, content.len(), "{case}: block indexes count up from 0");
                let block = data["content_block"].clone();
                match block["type"].as_str() {
                    Some("text") => assert_eq!(block["text"], "", "{case}: {block}"),
                    Some("tool_use") => assert_eq!(block["input"], json!({}), "{case}: {block}"),
                    _ => panic!("{case}: unexpected block {block}"),
                }
                content.push(block);
                open = Some((index, String::new()));
            }
            "content_block_delta" => {
                let (index, partial) =
                    open.as_mut().unwrap_or_else(|| panic!("{case}: delta outside a block"));
                assert_eq!(data["index"], json!(*index), "{case}: delta for another block");
                let (delta, block) = (&data["delta"], &mut content[*index]);
                match (block["type"].as_str(), delta["type"].as_str()) {
                    (Some("text"), Some("text_delta")) => {
                        let t = delta["text"].as_str().unwrap();
                        block["text"] = format!("{}{t}", block["text"].as_str().unwrap()).into();
                    }
                    (Some("tool_use"), Some("input_json_delta")) => {
                        partial.push_str(delta["partial_json"].as_str().unwrap());
                    }
                    _ => panic!("{case}: {delta} in a {} block", block["type"]),
                }
            }
            "content_block_stop" => {
                let (index, partial) = open.take().unwrap_or_else(|| panic!("{case}: stop outside a block"));
                assert_eq!(data["index"], json!(index), "{case}: stop for another block");
                if content[index]["type"] == "tool_use" && !partial.is_empty() {
                    content[index]["input"] = serde_json::from_str(&partial)
                        .unwrap_or_else(|e| panic!("{case}: tool input {partial:?}: {e}"));
                }
            }
            "message_delta" => {
                assert!(open.is_none(), "{case}: message_delta inside a block");
                delta_seen = true;
                let m = message.as_mut().unwrap();
                m["stop_reason"] = data["delta"]["stop_reason"].clone();
                m["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                // Counts in message_delta are cumulative: they replace those of message_start.
                let usage: &mut Map<String, Value> = m["usage"].as_object_mut().unwrap();
                for (k, v) in data["usage"].as_object().unwrap() {
                    usage.insert(k.clone(), v.clone());
                }
            }
            "message_stop" => {
                assert!(delta_seen, "{case}: message_stop without message_delta");
                stopped = true;
            }
            _ => panic!("{case}: unexpected event {ev}"),
        }
    }
    assert!(stopped, "{case}: the stream has no message_stop");
    let mut m = message.unwrap();
    m["content"] = Value::Array(content);
    m
}

/// Compares `got` with the golden file at `path`, or (with `UPDATE_GOLDEN` set) writes it.
#[track_caller]
pub fn check_golden(path: &Path, got: &Value) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, render(got)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (UPDATE_GOLDEN=1 writes it; read it against the API reference before committing)",
            path.display()
        )
    });
    let expected: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if *got != expected {
        panic!(
            "{}: the translation differs from the golden file\n--- actual\n{}--- expected\n{}",
            path.display(),
            render(got),
            render(&expected)
        );
    }
}

/// Pretty JSON; a stream's events one per line, as `{"event": name, "data": {…}}`.
fn render(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let lines: Vec<String> = items
                .iter()
                .map(|i| match (i["event"].as_str(), i.get("data")) {
                    (Some(name), Some(data)) => format!("  {{\"event\": \"{name}\", \"data\": {data}}}"),
                    _ => format!("  {i}"),
                })
                .collect();
            format!("[\n{}\n]\n", lines.join(",\n"))
        }
        _ => format!("{}\n", serde_json::to_string_pretty(v).unwrap()),
    }
}

/// `anthropic_client::response` over a provider's translated answer, checked.
#[track_caller]
pub fn response(case: &str, openai: &Value, usage: Usage, model: &str) -> Value {
    let got = anthropic_client::response(openai, model).unwrap_or_else(|e| panic!("{case}: {e}"));
    check_message(case, &got, usage);
    got
}
