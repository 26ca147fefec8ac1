//! Anthropic Messages response and error → OpenAI chat completion and error.

use serde_json::{Value, json};

use super::{bad, count, finish_reason, now_secs, openai_error_kind};
use crate::{TranslateError, Usage};

/// Translates an Anthropic message into an OpenAI `chat.completion` answering as `alias`.
///
/// Text blocks are joined into `content` (Anthropic splits one answer into several blocks
/// around citations); `tool_use` blocks become `tool_calls` with the input serialised as the
/// arguments string; `thinking` and server-tool blocks are left out, as chat completions have
/// no place for them. Usage is reported the OpenAI way: prompt tokens include the tokens read
/// from and written to Anthropic's prompt cache, and the cache reads are the cached tokens.
///
/// # Errors
/// `BadResponse` when the body is not an Anthropic message.
pub fn response(body: &Value, alias: &str) -> Result<(Value, Usage), TranslateError> {
    if body.get("type").and_then(Value::as_str) == Some("error") {
        let msg = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
        return Err(bad(format!("Anthropic answered an error with a success status: {msg}")));
    }
    let content = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the Anthropic response has no `content` array"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or_default(),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !tool_calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let finish = body.get("stop_reason").and_then(Value::as_str).map_or("stop", finish_reason);
    let usage = usage_of(body.get("usage").unwrap_or(&Value::Null));
    let out = json!({
        "id": body.get("id").cloned().unwrap_or_default(),
        "object": "chat.completion",
        "created": now_secs(),
        "model": alias,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": openai_usage(usage),
    });
    Ok((out, usage))
}

/// Anthropic usage → ours. Anthropic's `input_tokens` excludes cache reads and writes; OpenAI's
/// prompt tokens include every token of the prompt.
pub(crate) fn usage_of(u: &Value) -> Usage {
    let cached = count(u, "cache_read_input_tokens");
    Usage {
        input: count(u, "input_tokens") + cached + count(u, "cache_creation_input_tokens"),
        output: count(u, "output_tokens"),
        cached_input: cached,
    }
}

/// Our usage → OpenAI's `usage` object.
pub(crate) fn openai_usage(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached_input},
    })
}

/// Translates an Anthropic error body (`{"type":"error","error":{"type","message"}}`) received
/// with HTTP `status` into an OpenAI error object `{"error":{"message","type","param","code"}}`.
/// A body of another shape (a proxy's HTML page, say) still yields an error naming the status.
#[must_use]
pub fn error(status: u16, body: &Value) -> Value {
    let err = body.get("error");
    let anthropic_type = err
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| super::anthropic_error_type(status));
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("Anthropic answered HTTP {status}"), str::to_owned);
    let (kind, code) = openai_error_kind(anthropic_type);
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}
