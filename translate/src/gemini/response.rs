//! Gemini `generateContent` response and errors → OpenAI chat completion and errors.

use serde_json::{Map, Value, json};

use super::{bad, finish_reason, now_secs, random_hex, tool_call_id, usage, usage_json};
use crate::{TranslateError, Usage};

/// Translates a Gemini `GenerateContentResponse` into an OpenAI `chat.completion` for the
/// client's model name `alias`, with the tokens it used.
///
/// Each candidate becomes a choice (so `n` > 1 works): its text parts joined as `content`,
/// its `functionCall` parts as `tool_calls` (fresh `call_…` ids carrying any thought
/// signature, arguments serialised to a JSON string), its thought parts (`thought: true`,
/// sent by thinking models when asked for thought summaries) as `reasoning_content`, the
/// field OpenAI-compatible servers use for reasoning text. A prompt Gemini blocked outright
/// (`promptFeedback.blockReason`, no candidates) is one empty choice with finish reason
/// `content_filter`.
///
/// Not translated: inline images or audio the model generated, code-execution parts,
/// grounding and citation metadata, safety ratings, log probabilities.
///
/// # Errors
/// `BadResponse` when the body is not a Gemini response (or is a Gemini error object).
pub fn response(body: &Value, alias: &str) -> Result<(Value, Usage), TranslateError> {
    let obj = body.as_object().ok_or_else(|| bad("Gemini response is not a JSON object"))?;
    if let Some(err) = obj.get("error") {
        return Err(bad(format!("Gemini returned an error: {}", error_message(err))));
    }
    let (usage, reasoning) = usage(obj.get("usageMetadata").unwrap_or(&Value::Null));

    let mut choices = Vec::new();
    match obj.get("candidates") {
        Some(Value::Array(candidates)) if !candidates.is_empty() => {
            for (i, c) in candidates.iter().enumerate() {
                choices.push(choice(c, i)?);
            }
        }
        None | Some(Value::Array(_)) => {
            if body.pointer("/promptFeedback/blockReason").is_none() {
                return Err(bad("Gemini response has no candidates and no block reason"));
            }
            choices.push(json!({
                "index": 0,
                "message": { "role": "assistant", "content": null, "refusal": null },
                "logprobs": null,
                "finish_reason": "content_filter",
            }));
        }
        Some(_) => return Err(bad("Gemini `candidates` is not an array")),
    }

    let id = match obj.get("responseId").and_then(Value::as_str) {
        Some(r) => format!("chatcmpl-{r}"),
        None => format!("chatcmpl-{}", random_hex()),
    };
    let out = json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": alias,
        "choices": choices,
        "usage": usage_json(usage, reasoning),
    });
    Ok((out, usage))
}

/// One candidate → one OpenAI choice.
fn choice(c: &Value, position: usize) -> Result<Value, TranslateError> {
    let index = c.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
    let parts = match c.pointer("/content/parts") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(p)) => p.as_slice(),
        Some(_) => return Err(bad("Gemini candidate `content.parts` is not an array")),
    };
    let mut text = String::new();
    let mut thoughts = String::new();
    let mut calls = Vec::new();
    for p in parts {
        if let Some(call) = p.get("functionCall") {
            calls.push(tool_call(p, call)?);
        } else if let Some(t) = p.get("text").and_then(Value::as_str) {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                thoughts.push_str(t);
            } else {
                text.push_str(t);
            }
        }
    }
    let reason = c.get("finishReason").and_then(Value::as_str).unwrap_or("STOP");
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    let content =
        if text.is_empty() && (!calls.is_empty() || parts.is_empty()) { Value::Null } else { text.into() };
    message.insert("content".into(), content);
    message.insert("refusal".into(), Value::Null);
    if !thoughts.is_empty() {
        message.insert("reasoning_content".into(), thoughts.into());
    }
    let has_calls = !calls.is_empty();
    if has_calls {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(json!({
        "index": index,
        "message": message,
        "logprobs": null,
        "finish_reason": finish_reason(reason, has_calls),
    }))
}

/// A `functionCall` part → an OpenAI tool call (also the streamed shape, minus `index`).
pub(crate) fn tool_call(part: &Value, call: &Value) -> Result<Value, TranslateError> {
    let name =
        call.get("name").and_then(Value::as_str).ok_or_else(|| bad("Gemini functionCall has no name"))?;
    let args = match call.get("args") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(a) => a.to_string(),
    };
    let id = tool_call_id(part.get("thoughtSignature").and_then(Value::as_str));
    Ok(json!({ "id": id, "type": "function", "function": { "name": name, "arguments": args } }))
}

/// Translates a Gemini error (`{"error": {"code", "message", "status"}}`) with HTTP `status`
/// into OpenAI's error object. The client sees the same HTTP status; the OpenAI `type`
/// follows it, and `code` is Gemini's status name (`RESOURCE_EXHAUSTED`, …) so nothing is
/// lost. A body that is not a Gemini error (an HTML page from a proxy, say) yields a generic
/// message naming the status.
#[must_use]
pub fn error(status: u16, body: &Value) -> Value {
    let err =
        body.get("error").or_else(|| body.as_array().and_then(|a| a.first()).and_then(|e| e.get("error")));
    let message = err.map(error_message).unwrap_or_else(|| format!("Gemini returned HTTP {status}"));
    let gemini_status = err.and_then(|e| e.get("status")).and_then(Value::as_str);
    let kind = match (status, gemini_status) {
        (429, _) | (_, Some("RESOURCE_EXHAUSTED")) => "rate_limit_error",
        (403, _) | (_, Some("PERMISSION_DENIED")) => "permission_error",
        (400..=499, _) => "invalid_request_error",
        _ => "api_error",
    };
    let code = match gemini_status {
        Some(s) => Value::String(s.to_owned()),
        None if kind == "rate_limit_error" => "rate_limit_exceeded".into(),
        None => Value::Null,
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

pub(crate) fn error_message(err: &Value) -> String {
    match err.get("message").and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => err.to_string(),
    }
}
