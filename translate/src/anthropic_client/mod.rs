//! Anthropic-format client → any provider, through the OpenAI pivot: a Messages request from
//! the client becomes an OpenAI chat request, and the OpenAI-shaped response, errors and chunk
//! stream go back to the client as Anthropic's message, error and event stream.
//!
//! What does not translate is listed on [`request()`].

mod request;
mod response;
mod stream;

pub use request::{for_openai_wire, request};
pub use response::response;
pub use stream::StreamFromOpenAi;

use serde_json::{Value, json};

/// An Anthropic error body, `{"type":"error","error":{"type","message"}}`, with the error type
/// Anthropic uses for HTTP `status`: 400 `invalid_request_error`, 401
/// `authentication_error`, 402 `billing_error`, 403 `permission_error`, 404
/// `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error`, 503 and 529
/// `overloaded_error`, 504 `timeout_error` (as in Anthropic's error reference), other 4xx
/// `invalid_request_error` and other 5xx (502 among them) `api_error`.
#[must_use]
pub fn error(status: u16, message: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": crate::anthropic::anthropic_error_type(status), "message": message},
    })
}

/// The Anthropic error type for an OpenAI error object met in a stream, which carries no
/// HTTP status: judged from its `type` and `code`.
pub(crate) fn error_type_of_openai(err: &Value) -> &'static str {
    let kind = err.get("type").and_then(Value::as_str).unwrap_or_default();
    let code = err.get("code").and_then(Value::as_str).unwrap_or_default();
    match (kind, code) {
        (_, "rate_limit_exceeded") | ("rate_limit_error" | "requests" | "tokens", _) => "rate_limit_error",
        ("insufficient_quota", _) | (_, "insufficient_quota") => "billing_error",
        (_, "invalid_api_key") | ("authentication_error", _) => "authentication_error",
        ("permission_error", _) => "permission_error",
        (_, "overloaded") => "overloaded_error",
        (_, "timeout") => "timeout_error",
        ("invalid_request_error", _) => "invalid_request_error",
        _ => "api_error",
    }
}
