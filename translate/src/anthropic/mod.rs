//! OpenAI-format client → Anthropic provider: the OpenAI chat request becomes an Anthropic
//! Messages request, and Anthropic's response, errors and event stream come back in OpenAI's
//! chat-completion shapes.
//!
//! What does not translate, and what happens instead, is listed on [`request()`]; the
//! vocabulary both directions share (stop reasons, error types) lives here so that
//! `anthropic_client` maps them the same way back.

mod request;
mod response;
mod stream;

pub use request::{DEFAULT_MAX_TOKENS, request};
pub use response::{error, response};
pub use stream::StreamToOpenAi;

use serde_json::{Map, Value};

use crate::TranslateError;

/// The name Anthropic appears under in `TranslateError::Unsupported`.
pub(crate) const TARGET: &str = "Anthropic";

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
///
/// `pause_turn` (a server tool paused a long turn) has no OpenAI meaning; the turn did end, so
/// it reads as `stop`. `refusal` is the closest thing Anthropic has to a content filter.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and any reason added later.
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`. OpenAI does not say whether `stop` came
/// from a stop sequence, so it is always `end_turn`.
pub(crate) fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic error `type` → OpenAI error `type` and `code`, in the vocabulary the edge's own
/// errors use (`invalid_request_error`, `permission_error`, `api_error`, …).
pub(crate) fn openai_error_kind(anthropic_type: &str) -> (&'static str, Option<&'static str>) {
    match anthropic_type {
        "invalid_request_error" => ("invalid_request_error", None),
        "authentication_error" => ("invalid_request_error", Some("invalid_api_key")),
        "permission_error" => ("permission_error", None),
        "not_found_error" => ("invalid_request_error", Some("not_found")),
        "request_too_large" => ("invalid_request_error", Some("request_too_large")),
        "rate_limit_error" => ("rate_limit_error", Some("rate_limit_exceeded")),
        "billing_error" => ("insufficient_quota", Some("insufficient_quota")),
        "overloaded_error" => ("api_error", Some("overloaded")),
        "timeout_error" => ("api_error", Some("timeout")),
        _ => ("api_error", None),
    }
}

/// Anthropic's error `type` for an HTTP status, as its error reference lists them. 504 is
/// `timeout_error` there; other 5xx without an entry are `api_error`.
pub(crate) fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if (400..500).contains(&s) => "invalid_request_error",
        _ => "api_error",
    }
}

/// Seconds since the Unix epoch, for OpenAI's `created`; 0 if the clock is before 1970.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A non-negative integer field, 0 when absent or of another type: token counts.
pub(crate) fn count(obj: &Value, key: &str) -> u64 {
    obj.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The value if present and not JSON `null`: clients send explicit nulls for "unset".
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

pub(crate) fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(msg.into())
}

pub(crate) fn bad(msg: impl Into<String>) -> TranslateError {
    TranslateError::BadResponse(msg.into())
}

/// Parses one SSE `data:` payload as a JSON object.
pub(crate) fn parse_event(data: &str) -> Result<Value, TranslateError> {
    let v: Value = serde_json::from_str(data).map_err(|e| bad(format!("event data is not JSON: {e}")))?;
    if v.is_object() { Ok(v) } else { Err(bad("event data is not a JSON object")) }
}
