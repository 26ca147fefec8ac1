//! OpenAI-format client → Google Gemini provider: the OpenAI chat request becomes a Gemini
//! `generateContent` body, and Gemini's response, errors and `streamGenerateContent?alt=sse`
//! events come back in OpenAI's chat-completion shapes.
//!
//! The model is not part of the body: the caller puts it in the URL,
//! `…/v1beta/models/{model}:generateContent` or `…:streamGenerateContent?alt=sse`.
//!
//! What does not translate is listed on [`request()`] and [`response()`]. The vocabulary both
//! directions share (finish reasons, tool-call ids, usage) lives here.

mod request;
mod response;
mod stream;

pub use request::request;
pub use response::{error, response};
pub use stream::StreamToOpenAi;

use serde_json::{Value, json};

use crate::{TranslateError, Usage};

/// The name Gemini appears under in `TranslateError::Unsupported`.
pub(crate) const TARGET: &str = "Gemini";

/// Separates a generated tool-call id from the Gemini thought signature it carries.
const SIGNATURE_MARK: &str = "_ts_";

/// Gemini `finishReason` → OpenAI `finish_reason`. `STOP` with function calls in the candidate
/// is `tool_calls`: Gemini has no separate reason for "stopped to call a tool".
///
/// The safety family (`SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`,
/// `IMAGE_SAFETY`, …) is `content_filter`; `MAX_TOKENS` is `length`. Everything else
/// (`LANGUAGE`, `OTHER`, `MALFORMED_FUNCTION_CALL`, reasons added later) ended the turn
/// without a better OpenAI word, so it is `stop`.
pub(crate) fn finish_reason(reason: &str, has_tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// Gemini's `usageMetadata` in OpenAI's terms, plus the reasoning ("thoughts") tokens, which
/// OpenAI counts inside `completion_tokens` and reports again in
/// `completion_tokens_details.reasoning_tokens`.
///
/// `promptTokenCount` already includes `cachedContentTokenCount`, as OpenAI's `prompt_tokens`
/// includes `cached_tokens`. Tokens of prompts Gemini wrote for its own tools
/// (`toolUsePromptTokenCount`) are billed as input, so they count as input.
pub(crate) fn usage(meta: &Value) -> (Usage, u64) {
    let n = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
    let thoughts = n("thoughtsTokenCount");
    let usage = Usage {
        input: n("promptTokenCount") + n("toolUsePromptTokenCount"),
        output: n("candidatesTokenCount") + thoughts,
        cached_input: n("cachedContentTokenCount"),
    };
    (usage, thoughts)
}

/// OpenAI's `usage` object.
pub(crate) fn usage_json(u: Usage, reasoning: u64) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": { "cached_tokens": u.cached_input },
        "completion_tokens_details": { "reasoning_tokens": reasoning },
    })
}

/// A tool-call id for a Gemini `functionCall`, which has none of its own.
///
/// Gemini 3 models reject a conversation whose earlier function calls come back without the
/// `thoughtSignature` they were returned with (a 400). OpenAI clients send back nothing but the
/// tool-call id verbatim, so the signature rides in the id: `call_<hex>_ts_<signature>`, the
/// signature's base64 turned into base64url without padding so the id stays within
/// `[A-Za-z0-9_-]` (the alphabet Anthropic clients accept for ids, should this id reach one).
pub(crate) fn tool_call_id(signature: Option<&str>) -> String {
    let mut id = format!("call_{}", random_hex());
    if let Some(sig) = signature.filter(|s| !s.is_empty()) {
        id.push_str(SIGNATURE_MARK);
        id.extend(sig.chars().filter(|c| *c != '=').map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        }));
    }
    id
}

/// The thought signature carried by an id from [`tool_call_id`], back in standard base64.
pub(crate) fn signature_from_id(id: &str) -> Option<String> {
    let rest = id.strip_prefix("call_")?;
    let (hex, sig) = rest.split_once(SIGNATURE_MARK)?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || sig.is_empty() {
        return None;
    }
    let mut out: String = sig
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    Some(out)
}

/// 16 hex digits, different on every call: unique enough for response and tool-call ids,
/// which only need to differ within a conversation. Not for secrets.
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Each RandomState carries fresh random keys (seeded per thread, then incremented).
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(now_nanos());
    format!("{:016x}", h.finish())
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
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
    fn signature_survives_the_tool_call_id() {
        for sig in ["CiQBcsjafB+/9xyz", "abcd", "ab/c+d==", "Zg==", "YWI+Pz8/"] {
            let id = tool_call_id(Some(sig));
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{id}");
            assert_eq!(signature_from_id(&id).as_deref(), Some(sig));
        }
        assert_eq!(signature_from_id(&tool_call_id(None)), None);
        // Ids the gateway did not make carry no signature.
        assert_eq!(signature_from_id("call_abc_ts_"), None);
        assert_eq!(signature_from_id("toolu_01_ts_abc"), None);
        assert_eq!(signature_from_id("call_xyz_ts_abc"), None);
    }

    #[test]
    fn ids_differ() {
        assert_ne!(random_hex(), random_hex());
    }
}
