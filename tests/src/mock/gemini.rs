//! Gemini's `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`, with
//! Gemini's key check, error shape and stream of whole `GenerateContentResponse` chunks.
//!
//! Built with `serde_json::json!` for the reason given in [`super::anthropic`].

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};

use super::plan::Payload;
use super::reply::{Finish, Reply, tool_input};
use super::request::{Call, count_words};
use super::route::{Refusal, Route, header};

/// The event `#mock:malformed` puts first in a stream.
const MALFORMED_EVENT: &[u8] = b"data: {\"candidates\": [ this is not json\n\n";

/// The key comes in `x-goog-api-key` (or Gemini's older `?key=`); streams must ask for SSE,
/// the only stream framing the mock speaks.
pub(crate) fn admit(headers: &HeaderMap, route: &Route<'_>) -> Result<(), Refusal> {
    let query_key = route.query_param("key").filter(|k| !k.is_empty());
    if header(headers, "x-goog-api-key").is_none() && query_key.is_none() {
        // Google answers a keyless call with 403 PERMISSION_DENIED, not 401.
        return Err(Refusal::new(
            403,
            None,
            "The caller sent no API key: use the x-goog-api-key header (mock).",
        ));
    }
    if route.path_stream && route.query_param("alt").as_deref() != Some("sse") {
        return Err(Refusal::new(400, None, "The mock streams only with alt=sse."));
    }
    Ok(())
}

/// Reads a `GenerateContentRequest`. Prompt tokens are the words of `systemInstruction` and of
/// every text and `functionResponse` part; directives come from the model (the path's) and the
/// last user content with text; a last content holding a `functionResponse` ends with a tool
/// result, whose text is the response's `output` (or `result`, `content`) string, else its
/// JSON.
///
/// # Errors
/// A message for a 400 `INVALID_ARGUMENT`.
pub(crate) fn parse<'a>(model: &'a str, body: &'a Value) -> Result<Call<'a>, String> {
    if !body.is_object() {
        return Err("Invalid JSON payload received.".into());
    }
    let contents = body.get("contents").and_then(Value::as_array).ok_or("contents is not specified")?;
    let mut call = Call {
        model,
        max_tokens: body.pointer("/generationConfig/maxOutputTokens").and_then(Value::as_u64),
        directive_texts: vec![model],
        ..Call::default()
    };
    let mut words: u64 = texts(body.get("systemInstruction")).iter().map(|t| count_words(t)).sum();
    for content in contents {
        words += texts(Some(content)).iter().map(|t| count_words(t)).sum::<u64>();
        words += responses(content).iter().map(|t| count_words(t)).sum::<u64>();
    }
    // A content without a role is the user's.
    let user = |c: &Value| c.get("role").and_then(Value::as_str).is_none_or(|r| r == "user");
    if let Some(last) = contents.iter().rev().filter(|c| user(c)).find(|c| !texts(Some(c)).is_empty()) {
        call.directive_texts.extend(texts(Some(last)));
    }
    if let Some(last) = contents.last() {
        let results = responses(last);
        if !results.is_empty() {
            call.tool_result = Some(Cow::Owned(results.concat()));
        }
    }
    call.prompt_tokens = words.max(1);
    Ok(call)
}

/// The `text` of each part of a content.
fn texts(content: Option<&Value>) -> Vec<&str> {
    let parts = content.and_then(|c| c.get("parts")).and_then(Value::as_array);
    parts.into_iter().flatten().filter_map(|p| p.get("text").and_then(Value::as_str)).collect()
}

/// The text of each `functionResponse` part of a content.
fn responses(content: &Value) -> Vec<Cow<'_, str>> {
    let parts = content.get("parts").and_then(Value::as_array);
    parts
        .into_iter()
        .flatten()
        .filter_map(|p| p.pointer("/functionResponse/response"))
        .map(|response| {
            let named = ["output", "result", "content"].iter().find_map(|k| response.get(*k)?.as_str());
            named.map_or_else(|| Cow::Owned(response.to_string()), Cow::Borrowed)
        })
        .collect()
}

/// The response, or its SSE stream: one chunk per word (or one with the whole
/// `functionCall`, as Gemini sends calls unsplit), the last carrying `finishReason` and
/// `usageMetadata`; no end marker.
pub(crate) fn render(serial: u64, reply: &Reply<'_>, stream: bool, malformed: bool) -> Payload {
    let finish = match reply.finish {
        Finish::Stop | Finish::Tool => "STOP",
        Finish::Length => "MAX_TOKENS",
    };
    let t = reply.tokens;
    let mut usage = json!({
        "promptTokenCount": t.prompt,
        "candidatesTokenCount": t.completion,
        "totalTokenCount": t.total(),
    });
    if let Some(cached) = t.cached {
        usage["cachedContentTokenCount"] = cached.into();
    }
    let response_id = format!("mock{serial}");
    let chunk = |part: Value, last: bool| {
        let mut candidate = json!({"content": {"parts": [part], "role": "model"}, "index": 0});
        let mut response = json!({"candidates": [], "modelVersion": reply.model, "responseId": response_id});
        if last {
            candidate["finishReason"] = finish.into();
            response["usageMetadata"] = usage.clone();
        }
        response["candidates"] = json!([candidate]);
        response
    };
    let tool_part = reply.tool().map(|name| json!({"functionCall": {"name": name, "args": tool_input()}}));
    if !stream {
        let part = tool_part.unwrap_or_else(|| json!({"text": reply.text()}));
        return Payload::Json(Bytes::from(chunk(part, true).to_string()));
    }
    let mut parts: Vec<Value> = match tool_part {
        Some(part) => vec![part],
        None => reply.pieces().map(|piece| json!({"text": piece})).collect(),
    };
    if parts.is_empty() {
        parts.push(json!({"text": ""}));
    }
    let mut events = Vec::with_capacity(parts.len() + 1);
    if malformed {
        events.push(Bytes::from_static(MALFORMED_EVENT));
    }
    let count = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        events.push(Bytes::from(format!("data: {}\n\n", chunk(part, i + 1 == count))));
    }
    Payload::Sse(events)
}

/// `{"error": {"code", "message", "status"}}` with the canonical status name for the code.
pub(crate) fn error_json(status: u16, message: &str) -> Bytes {
    let name = match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    };
    Bytes::from(json!({"error": {"code": status, "message": message, "status": name}}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parts_and_function_responses() {
        let body = json!({
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {"maxOutputTokens": 7},
            "contents": [
                {"role": "user", "parts": [{"text": "weather? #mock:tool=get_weather"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                    "response": {"output": "22 degrees"}}}]}
            ]
        });
        let call = parse("gemini-2.0-flash", &body).unwrap();
        assert_eq!(call.directive_texts, ["gemini-2.0-flash", "weather? #mock:tool=get_weather"]);
        assert_eq!(call.tool_result.as_deref(), Some("22 degrees"));
        assert_eq!(call.prompt_tokens, 2 + 2 + 2);
        assert_eq!(call.max_tokens, Some(7));

        let object =
            json!({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {"t": 1}}}]}]});
        assert_eq!(parse("m", &object).unwrap().tool_result.as_deref(), Some(r#"{"t":1}"#));
        assert!(parse("m", &json!({})).is_err());
    }
}
