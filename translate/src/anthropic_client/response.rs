//! OpenAI chat completion → Anthropic message, for an Anthropic-format client.

use serde_json::{Map, Value, json};

use crate::TranslateError;
use crate::anthropic::{bad, count, stop_reason};

/// Translates an OpenAI `chat.completion` into an Anthropic message reporting `model`.
///
/// The first choice's text becomes a text block (a refusal too, with `stop_reason`
/// `refusal`), each tool call a `tool_use` block with its arguments parsed. Usage follows
/// Anthropic's convention: `input_tokens` excludes the tokens read from the prompt cache,
/// which are `cache_read_input_tokens`, and those written to it, which are
/// `cache_creation_input_tokens` (each present only when some were). `stop_sequence` is
/// always null: OpenAI does not say which stop sequence matched.
///
/// # Errors
/// `BadResponse` when the body has no choice with a message, or a tool call's arguments are
/// not a JSON object (Anthropic's `input` must be one).
pub fn response(body: &Value, model: &str) -> Result<Value, TranslateError> {
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| bad("the chat completion has no choices"))?;
    let message = choice.get("message").ok_or_else(|| bad("the chat completion's choice has no message"))?;
    let mut content = Vec::new();
    let refusal = message.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty());
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()).or(refusal) {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            content.push(tool_use(call)?);
        }
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop");
    let reason = if refusal.is_some() && message.get("content").is_none_or(Value::is_null) {
        "refusal"
    } else {
        stop_reason(finish)
    };
    Ok(json!({
        "id": body.get("id").cloned().unwrap_or_default(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": null,
        "usage": anthropic_usage(body.get("usage").unwrap_or(&Value::Null)),
    }))
}

/// An OpenAI tool call → a `tool_use` block. Empty arguments (some providers send them for
/// tools without parameters) are an empty object.
fn tool_use(call: &Value) -> Result<Value, TranslateError> {
    let name = call.pointer("/function/name").cloned().unwrap_or_default();
    let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or_default();
    let input = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(args)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| bad(format!("tool call {name} has arguments that are not a JSON object")))?
    };
    Ok(
        json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or_default(), "name": name, "input": input}),
    )
}

/// OpenAI `usage` → Anthropic `usage`. OpenAI's `prompt_tokens` counts the whole prompt;
/// Anthropic splits it into `input_tokens`, `cache_read_input_tokens` (OpenAI's
/// `cached_tokens`) and `cache_creation_input_tokens` (`cache_write_tokens`, which OpenAI does
/// not send but OpenRouter and this crate's Bedrock translation do). The cache fields appear
/// only when non-zero.
pub(crate) fn anthropic_usage(u: &Value) -> Value {
    let details = u.get("prompt_tokens_details").unwrap_or(&Value::Null);
    let (cached, written) = (count(details, "cached_tokens"), count(details, "cache_write_tokens"));
    let mut out = Map::new();
    let input = count(u, "prompt_tokens").saturating_sub(cached).saturating_sub(written);
    out.insert("input_tokens".into(), input.into());
    out.insert("output_tokens".into(), count(u, "completion_tokens").into());
    if written > 0 {
        out.insert("cache_creation_input_tokens".into(), written.into());
    }
    if cached > 0 {
        out.insert("cache_read_input_tokens".into(), cached.into());
    }
    Value::Object(out)
}
