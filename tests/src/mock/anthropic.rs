//! Anthropic's Messages API: `POST /v1/messages` (stream or not) and
//! `POST /v1/messages/count_tokens`, with Anthropic's headers, error shape and event sequence.
//!
//! Bodies are built with `serde_json::json!`: unlike OpenAI's, these answers are not on a
//! load-test path, and the literal reads like the API reference it follows.

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};

use super::plan::Payload;
use super::reply::{Finish, Reply, tool_input};
use super::request::{Call, count_words, join};
use super::route::{Endpoint, Refusal, header};

/// The event `#mock:malformed` puts in a stream, after `message_start`.
const MALFORMED_EVENT: &[u8] =
    b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", this is not json\n\n";

/// Anthropic requires both its key header and a version header on every request.
pub(crate) fn admit(headers: &HeaderMap) -> Result<(), Refusal> {
    if header(headers, "x-api-key").is_none() {
        return Err(Refusal::new(401, None, "x-api-key header is required"));
    }
    if header(headers, "anthropic-version").is_none() {
        return Err(Refusal::new(400, None, "anthropic-version: header is required"));
    }
    Ok(())
}

/// Reads a Messages (or count_tokens) body. Prompt tokens are the words of `system` and of every
/// text and `tool_result` block; directives come from the model and the last user message that
/// has text of its own; a last user message holding a `tool_result` ends with a tool result.
///
/// # Errors
/// A message for a 400 `invalid_request_error`, worded as Anthropic words them.
pub(crate) fn parse(endpoint: Endpoint, body: &Value) -> Result<Call<'_>, String> {
    if !body.is_object() {
        return Err("The request body is not valid JSON.".into());
    }
    let model = body.get("model").and_then(Value::as_str).ok_or("model: Field required")?;
    let messages = body.get("messages").and_then(Value::as_array).ok_or("messages: Field required")?;
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
    if endpoint == Endpoint::Messages && max_tokens.is_none() {
        return Err("max_tokens: Field required".into());
    }
    let mut call = Call { model, max_tokens, directive_texts: vec![model], ..Call::default() };
    let mut words: u64 = blocks_text(body.get("system")).iter().map(|t| count_words(t)).sum();
    let user = |m: &Value| m.get("role").and_then(Value::as_str) == Some("user");
    for message in messages {
        let content = message.get("content");
        words +=
            blocks_text(content).iter().chain(&tool_results(content)).map(|t| count_words(t)).sum::<u64>();
    }
    if let Some(last) =
        messages.iter().rev().filter(|m| user(m)).find(|m| !blocks_text(m.get("content")).is_empty())
    {
        call.directive_texts.extend(blocks_text(last.get("content")));
    }
    if let Some(last) = messages.last().filter(|m| user(m)) {
        let results = tool_results(last.get("content"));
        if !results.is_empty() {
            call.tool_result = Some(join(results));
        }
    }
    call.prompt_tokens = words.max(1);
    Ok(call)
}

/// A string, or the `text` of each `text` block.
fn blocks_text(content: Option<&Value>) -> Vec<&str> {
    match content {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

/// The texts of every `tool_result` block (its `content` is a string or text blocks).
fn tool_results(content: Option<&Value>) -> Vec<&str> {
    let Some(Value::Array(blocks)) = content else { return Vec::new() };
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .flat_map(|b| blocks_text(b.get("content")))
        .collect()
}

/// `{"input_tokens": N}`; `#mock:usage=P,C` reports P.
pub(crate) fn count_json(call: &Call<'_>, usage: Option<(u64, u64)>) -> Bytes {
    let input_tokens = usage.map_or(call.prompt_tokens, |(prompt, _)| prompt);
    to_bytes(&json!({ "input_tokens": input_tokens }))
}

/// The message, or its event sequence: `message_start`, `content_block_start`, `ping`, one
/// `content_block_delta` per word (`text_delta`) or arguments fragment (`input_json_delta`),
/// `content_block_stop`, `message_delta` (stop reason, output tokens), `message_stop`. A
/// `stream_error` replaces everything after the first delta with one `error` event.
pub(crate) fn render(
    serial: u64,
    reply: &Reply<'_>,
    stream: bool,
    malformed: bool,
    stream_error: Option<&str>,
) -> Payload {
    let id = format!("msg_mock{serial}");
    let tool_id = format!("toolu_mock{serial}");
    let stop_reason = match reply.finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::Tool => "tool_use",
    };
    let t = reply.tokens;
    let usage = |output_tokens| {
        json!({
            "input_tokens": t.uncached(),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": t.cached.unwrap_or(0),
            "output_tokens": output_tokens,
        })
    };
    let message = |content: Value, stop_reason: Option<&str>, output_tokens| {
        json!({
            "id": id, "type": "message", "role": "assistant", "model": reply.model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": usage(output_tokens),
        })
    };
    if !stream {
        let block = match reply.tool() {
            Some(name) => json!({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input()}),
            None => json!({"type": "text", "text": reply.text()}),
        };
        return Payload::Json(to_bytes(&message(json!([block]), Some(stop_reason), t.completion)));
    }

    // message_start's output count is a placeholder (Anthropic's is small and non-zero); the
    // real one comes in message_delta.
    let mut events = vec![event(
        "message_start",
        &json!({"type": "message_start", "message": message(json!([]), None, 1)}),
    )];
    if malformed {
        events.push(Bytes::from_static(MALFORMED_EVENT));
    }
    let start = match reply.tool() {
        Some(name) => json!({"type": "tool_use", "id": tool_id, "name": name, "input": {}}),
        None => json!({"type": "text", "text": ""}),
    };
    events.push(event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": start}),
    ));
    events.push(event("ping", &json!({"type": "ping"})));
    for (i, piece) in reply.pieces().enumerate() {
        let delta = match reply.tool() {
            Some(_) => json!({"type": "input_json_delta", "partial_json": piece}),
            None => json!({"type": "text_delta", "text": piece}),
        };
        events.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
        if let Some(kind) = stream_error.filter(|_| i == 0) {
            events.push(event("error", &error_value(kind, "The mock was told to fail this stream.")));
            return Payload::Sse(events);
        }
    }
    events.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    events.push(event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": t.completion},
        }),
    ));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    Payload::Sse(events)
}

/// Anthropic's error type for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}}`, the type chosen by status unless given.
pub(crate) fn error_json(status: u16, kind: Option<&str>, message: &str) -> Bytes {
    to_bytes(&error_value(kind.unwrap_or_else(|| error_type(status)), message))
}

fn error_value(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_blocks_tool_results_and_the_last_user_text() {
        let body = json!({
            "model": "claude#mock:usage=1,2", "max_tokens": 10, "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "weather in Paris? #mock:tool=get_weather"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "22 degrees"}]}]}
            ]
        });
        let call = parse(Endpoint::Messages, &body).unwrap();
        assert_eq!(
            call.directive_texts,
            ["claude#mock:usage=1,2", "weather in Paris? #mock:tool=get_weather"]
        );
        assert_eq!(call.tool_result.as_deref(), Some("22 degrees"));
        assert_eq!(call.prompt_tokens, 2 + 4 + 2);
        assert_eq!(call.max_tokens, Some(10));
    }

    #[test]
    fn required_fields() {
        let no_max = json!({"model": "m", "messages": []});
        assert_eq!(parse(Endpoint::Messages, &no_max).unwrap_err(), "max_tokens: Field required");
        assert!(parse(Endpoint::CountTokens, &no_max).is_ok());
        assert!(parse(Endpoint::Messages, &json!({"max_tokens": 1, "messages": []})).is_err());
        let body: Value = serde_json::from_slice(&error_json(529, None, "busy")).unwrap();
        assert_eq!(body, json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}));
    }
}
