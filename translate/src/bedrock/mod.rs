//! OpenAI-format client → Amazon Bedrock provider through the Converse API: the OpenAI chat
//! request becomes a Converse body, and Converse's response, errors and ConverseStream events
//! come back in OpenAI's chat-completion shapes. Also the two pieces of AWS plumbing a
//! Bedrock call needs: SigV4 request signing ([`sign`]) and decoding the binary
//! `application/vnd.amazon.eventstream` response of ConverseStream ([`EventStreamDecoder`]).
//!
//! The model id is not part of the body: it goes in the path, see [`converse_path`].
//!
//! What does not translate is listed on [`request()`] and [`response()`].

mod eventstream;
mod request;
mod response;
mod sigv4;
mod stream;

pub use eventstream::{EventStreamDecoder, MAX_FRAME_BYTES};
pub use request::{EMPTY_TOOL_RESULT, request};
pub use response::{error, response};
pub use sigv4::{SERVICE, sign, sign_for_service};
pub use stream::StreamToOpenAi;

use serde_json::{Value, json};

use crate::{TranslateError, Usage};

/// The name Bedrock appears under in `TranslateError::Unsupported`.
pub(crate) const TARGET: &str = "Bedrock";

/// The Bedrock runtime endpoint of an AWS region, e.g.
/// `https://bedrock-runtime.us-east-1.amazonaws.com`.
#[must_use]
pub fn endpoint(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// The path of a Converse (or, with `stream`, ConverseStream) call for `model_id`: a model
/// id (`anthropic.claude-3-5-sonnet-20240620-v1:0`), an inference profile id or an ARN.
///
/// The id is percent-encoded as one path segment (`:` → `%3A`, `/` → `%2F`), as AWS's SDKs
/// send it; [`sign`] then signs the path as it is on the wire.
#[must_use]
pub fn converse_path(model_id: &str, stream: bool) -> String {
    let mut path = String::with_capacity(model_id.len() + 32);
    path.push_str("/model/");
    for b in model_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path.push_str(if stream { "/converse-stream" } else { "/converse" });
    path
}

/// Converse `stopReason` → OpenAI `finish_reason`.
///
/// `guardrail_intervened` and `content_filtered` are `content_filter`; `max_tokens` and
/// `model_context_window_exceeded` are `length`. `end_turn`, `stop_sequence`, the
/// `malformed_*` reasons and any added later ended the turn without a better OpenAI word, so
/// they are `stop`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// Converse `usage` in OpenAI's terms. Bedrock counts prompt-cache reads and writes apart from
/// `inputTokens`; OpenAI's `prompt_tokens` includes cached tokens, so all three add up to the
/// input, and the reads are the cached part.
pub(crate) fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cacheReadInputTokens");
    Usage {
        input: n("inputTokens") + cached + n("cacheWriteInputTokens"),
        output: n("outputTokens"),
        cached_input: cached,
    }
}

/// The prompt-cache writes among the input tokens of a Converse `usage`.
pub(crate) fn cache_writes(u: &Value) -> u64 {
    u.get("cacheWriteInputTokens").and_then(Value::as_u64).unwrap_or(0)
}

/// OpenAI's `usage` object. Cache writes, which OpenAI's format has no field for, are
/// `prompt_tokens_details.cache_write_tokens` (as OpenRouter reports them) when there are
/// any, so that an Anthropic-format client gets its `cache_creation_input_tokens` back.
pub(crate) fn usage_json(u: Usage, cache_writes: u64) -> Value {
    let mut details = json!({ "cached_tokens": u.cached_input });
    if cache_writes > 0 {
        details["cache_write_tokens"] = cache_writes.into();
    }
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": details,
        "completion_tokens_details": { "reasoning_tokens": 0 },
    })
}

/// A completion id: Converse answers carry none in the body.
pub(crate) fn completion_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Each RandomState carries fresh random keys: unique enough for an id, not for a secret.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(now_secs());
    format!("chatcmpl-{:016x}", h.finish())
}

/// Seconds since the epoch, for OpenAI's `created`.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(msg.into())
}

pub(crate) fn bad(msg: impl Into<String>) -> TranslateError {
    TranslateError::BadResponse(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_the_model_id() {
        assert_eq!(
            converse_path("anthropic.claude-3-5-sonnet-20240620-v1:0", false),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert_eq!(
            converse_path(
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b",
                true
            ),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3-2-1b/converse-stream"
        );
        assert_eq!(endpoint("eu-west-3"), "https://bedrock-runtime.eu-west-3.amazonaws.com");
    }
}
