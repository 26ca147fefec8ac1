//! Bedrock Converse response and errors → OpenAI chat completion and errors.

use serde_json::{Map, Value, json};

use super::{bad, cache_writes, completion_id, finish_reason, now_secs, usage, usage_json};
use crate::{TranslateError, Usage};

/// Translates a Converse response into an OpenAI `chat.completion` for the client's model name
/// `alias`, with the tokens it used.
///
/// `output.message` becomes the one choice: text blocks joined as `content`, `toolUse` blocks
/// as `tool_calls` (the `toolUseId` is the call id, the input serialised to a JSON string),
/// reasoning text (`reasoningContent`) as `reasoning_content`, the field OpenAI-compatible
/// servers use for it. `stopReason` becomes `finish_reason`.
///
/// Not translated: images or documents in the output, citations, guardrail traces, metrics,
/// `additionalModelResponseFields`.
///
/// # Errors
/// `BadResponse` when the body is not a Converse response.
pub fn response(body: &Value, alias: &str) -> Result<(Value, Usage), TranslateError> {
    if !body.is_object() {
        return Err(bad("Bedrock response is not a JSON object"));
    }
    let blocks = body
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("Bedrock response has no output.message.content"))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(tu) = b.get("toolUse") {
            let id = tu
                .get("toolUseId")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("Bedrock toolUse has no toolUseId"))?;
            let name =
                tu.get("name").and_then(Value::as_str).ok_or_else(|| bad("Bedrock toolUse has no name"))?;
            let args =
                tu.get("input").filter(|i| !i.is_null()).map_or_else(|| "{}".to_owned(), Value::to_string);
            calls.push(
                json!({ "id": id, "type": "function", "function": { "name": name, "arguments": args } }),
            );
        } else if let Some(t) = b.pointer("/reasoningContent/reasoningText/text").and_then(Value::as_str) {
            reasoning.push_str(t);
        }
    }
    let stop = body.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn");
    let raw_usage = body.get("usage").unwrap_or(&Value::Null);
    let usage = usage(raw_usage);

    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() };
    message.insert("content".into(), content);
    message.insert("refusal".into(), Value::Null);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let out = json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": now_secs(),
        "model": alias,
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(stop) }],
        "usage": usage_json(usage, cache_writes(raw_usage)),
    });
    Ok((out, usage))
}

/// Translates a Bedrock error into OpenAI's error object. Bedrock puts the error's type in the
/// `x-amzn-ErrorType` response header (`ThrottlingException`, possibly followed by `:` and a
/// URL; pass the header's value as `error_type`) and only `{"message": …}` in the body. The
/// OpenAI `type` follows the error type (or the HTTP status without one), and `code` is the
/// Bedrock type, so nothing is lost.
#[must_use]
pub fn error(status: u16, error_type: Option<&str>, body: &Value) -> Value {
    let aws_type = error_type
        .or_else(|| body.get("__type").and_then(Value::as_str))
        .map(|t| t.split(':').next().unwrap_or(t).rsplit('#').next().unwrap_or(t).trim())
        .filter(|t| !t.is_empty());
    let message = ["message", "Message"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .map(str::to_owned)
        .unwrap_or_else(|| match aws_type {
            Some(t) => format!("Bedrock returned HTTP {status} ({t})"),
            None => format!("Bedrock returned HTTP {status}"),
        });
    let kind = match (aws_type, status) {
        (Some("ThrottlingException" | "ServiceQuotaExceededException"), _) | (_, 429) => "rate_limit_error",
        (Some("AccessDeniedException"), _) | (_, 403) => "permission_error",
        (
            Some(
                "ModelTimeoutException"
                | "ModelNotReadyException"
                | "ModelErrorException"
                | "ModelStreamErrorException"
                | "InternalServerException"
                | "ServiceUnavailableException",
            ),
            _,
        ) => "api_error",
        (_, 400..=499) => "invalid_request_error",
        _ => "api_error",
    };
    let code = match aws_type {
        Some(t) => Value::String(t.to_owned()),
        None if kind == "rate_limit_error" => "rate_limit_exceeded".into(),
        None => Value::Null,
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}
