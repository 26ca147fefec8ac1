//! Bedrock's `POST /model/{modelId}/converse` and `/converse-stream`: a SigV4 shape check,
//! Converse's JSON, ConverseStream's binary `application/vnd.amazon.eventstream` frames
//! (encoded by `aws-smithy-eventstream`, as the AWS SDKs decode them), and Bedrock's errors:
//! `{"message"}` with the exception named in `x-amzn-errortype`.
//!
//! Built with `serde_json::json!` for the reason given in [`super::anthropic`].

use std::borrow::Cow;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};

use super::plan::Payload;
use super::reply::{Finish, Reply, tool_input};
use super::request::{Call, count_words};
use super::route::{Refusal, header};

/// What every answer reports as `metrics.latencyMs`: fixed, so tests can predict it.
const LATENCY_MS: u64 = 10;
/// The payload of the frame `#mock:malformed` puts in a stream: framed correctly, not JSON.
const MALFORMED_PAYLOAD: &[u8] = b"{\"contentBlockIndex\": 0, this is not json";

/// Checks the shape of a SigV4 `authorization` header and `x-amz-date`, not the signature
/// itself (the mock has no secret key): `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/bedrock/
/// aws4_request, SignedHeaders=a;b;…, Signature=<64 lowercase hex>`, the signed headers sorted,
/// lowercase, present, and including `host` and `x-amz-date`, whose day is the scope's.
/// AWS answers a missing header `MissingAuthenticationTokenException` and a malformed one
/// `IncompleteSignatureException`, both 403 here.
pub(crate) fn admit(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(authorization) = header(headers, "authorization") else {
        return Err(Refusal::new(
            403,
            Some("MissingAuthenticationTokenException"),
            "Missing Authentication Token",
        ));
    };
    check_signature(headers, authorization)
        .map_err(|reason| Refusal::new(403, Some("IncompleteSignatureException"), reason))
}

fn check_signature(headers: &HeaderMap, authorization: &str) -> Result<(), String> {
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization header requires the AWS4-HMAC-SHA256 algorithm")?;
    let field =
        |name: &str| fields.split(',').map(str::trim).find_map(|f| f.strip_prefix(name)?.strip_prefix('='));
    let credential = field("Credential").ok_or("Authorization header requires 'Credential' parameter")?;
    let signed = field("SignedHeaders").ok_or("Authorization header requires 'SignedHeaders' parameter")?;
    let signature = field("Signature").ok_or("Authorization header requires 'Signature' parameter")?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, day, region, service, terminator] = scope[..] else {
        return Err(format!("Credential `{credential}` is not KEY/DATE/REGION/SERVICE/aws4_request"));
    };
    let alphanumeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !alphanumeric(key_id) || !digits(day, 8) || terminator != "aws4_request" {
        return Err(format!("Credential `{credential}` is malformed"));
    }
    if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("Credential should be scoped to a valid region, not `{region}`"));
    }
    if service != "bedrock" {
        return Err(format!("Credential should be scoped to correct service: 'bedrock', not `{service}`"));
    }

    let names: Vec<&str> = signed.split(';').collect();
    let lowercase = |n: &&str| !n.is_empty() && !n.bytes().any(|b| b.is_ascii_uppercase());
    if !names.iter().all(lowercase) || !names.is_sorted() {
        return Err(format!("SignedHeaders `{signed}` must be sorted lowercase names"));
    }
    for required in ["host", "x-amz-date"] {
        if !names.contains(&required) {
            return Err(format!("SignedHeaders `{signed}` must include {required}"));
        }
    }
    if let Some(missing) = names.iter().find(|n| **n != "host" && !headers.contains_key(**n)) {
        return Err(format!("Signed header `{missing}` is not in the request"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err("Signature must be 64 lowercase hex digits".into());
    }

    let date = header(headers, "x-amz-date").ok_or("The request must contain an x-amz-date header")?;
    let well_formed = date.len() == 16
        && date.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !well_formed {
        return Err(format!("x-amz-date `{date}` is not in the form yyyymmddThhmmssZ"));
    }
    if &date[..8] != day {
        return Err(format!("Credential date {day} does not match x-amz-date {date}"));
    }
    Ok(())
}

/// Reads a Converse body. Prompt tokens are the words of `system` and of every `text` and
/// `toolResult` block; directives come from the model (the path's) and the last user message
/// with text; a last user message holding a `toolResult` ends with a tool result.
///
/// # Errors
/// A message for a 400 `ValidationException`.
pub(crate) fn parse<'a>(model: &'a str, body: &'a Value) -> Result<Call<'a>, String> {
    if !body.is_object() {
        return Err("Malformed input request, please reformat your input and try again.".into());
    }
    let messages = body.get("messages").and_then(Value::as_array).ok_or("The field messages is required.")?;
    let mut call = Call {
        model,
        max_tokens: body.pointer("/inferenceConfig/maxTokens").and_then(Value::as_u64),
        directive_texts: vec![model],
        ..Call::default()
    };
    let mut words: u64 = texts(body.get("system")).iter().map(|t| count_words(t)).sum();
    for message in messages {
        let content = message.get("content");
        words += texts(content).iter().map(|t| count_words(t)).sum::<u64>();
        words += tool_results(content).iter().map(|t| count_words(t)).sum::<u64>();
    }
    let user = |m: &Value| m.get("role").and_then(Value::as_str) == Some("user");
    if let Some(last) =
        messages.iter().rev().filter(|m| user(m)).find(|m| !texts(m.get("content")).is_empty())
    {
        call.directive_texts.extend(texts(last.get("content")));
    }
    if let Some(last) = messages.last().filter(|m| user(m)) {
        let results = tool_results(last.get("content"));
        if !results.is_empty() {
            call.tool_result = Some(Cow::Owned(results.concat()));
        }
    }
    call.prompt_tokens = words.max(1);
    Ok(call)
}

/// The `text` of each block of a content list.
fn texts(blocks: Option<&Value>) -> Vec<&str> {
    let blocks = blocks.and_then(Value::as_array);
    blocks.into_iter().flatten().filter_map(|b| b.get("text").and_then(Value::as_str)).collect()
}

/// The text of each `toolResult` block: its `text` blocks, and its `json` blocks as JSON.
fn tool_results(blocks: Option<&Value>) -> Vec<Cow<'_, str>> {
    let blocks = blocks.and_then(Value::as_array);
    let results = blocks.into_iter().flatten().filter_map(|b| b.pointer("/toolResult/content")?.as_array());
    results
        .flatten()
        .filter_map(|part| match (part.get("text").and_then(Value::as_str), part.get("json")) {
            (Some(text), _) => Some(Cow::Borrowed(text)),
            (None, Some(json)) => Some(Cow::Owned(json.to_string())),
            (None, None) => None,
        })
        .collect()
}

/// Converse's JSON, or ConverseStream's frames: `messageStart`, for a tool call
/// `contentBlockStart` with its id and name, one `contentBlockDelta` per word (or arguments
/// fragment), `contentBlockStop`, `messageStop`, `metadata`. A `stream_error` replaces
/// everything after the first delta with one exception message of that type.
pub(crate) fn render(
    serial: u64,
    reply: &Reply<'_>,
    stream: bool,
    malformed: bool,
    stream_error: Option<&str>,
) -> Payload {
    let stop_reason = match reply.finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::Tool => "tool_use",
    };
    let t = reply.tokens;
    // Like Anthropic, Converse counts cache reads beside `inputTokens`, inside `totalTokens`.
    let mut usage =
        json!({"inputTokens": t.uncached(), "outputTokens": t.completion, "totalTokens": t.total()});
    if let Some(cached) = t.cached {
        usage["cacheReadInputTokens"] = cached.into();
        usage["cacheWriteInputTokens"] = 0.into();
    }
    let metrics = json!({"latencyMs": LATENCY_MS});
    let tool_use_id = format!("tooluse_mock{serial}");
    if !stream {
        let block = match reply.tool() {
            Some(name) => json!({"toolUse": {"toolUseId": tool_use_id, "name": name, "input": tool_input()}}),
            None => json!({"text": reply.text()}),
        };
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": stop_reason, "usage": usage, "metrics": metrics,
        });
        return Payload::Json(Bytes::from(body.to_string()));
    }

    let mut frames = vec![event_frame("messageStart", &json!({"role": "assistant"}))];
    if malformed {
        frames.push(frame(event_headers("contentBlockDelta"), MALFORMED_PAYLOAD));
    }
    if let Some(name) = reply.tool() {
        let start = json!({"toolUse": {"toolUseId": tool_use_id, "name": name}});
        frames.push(event_frame("contentBlockStart", &json!({"contentBlockIndex": 0, "start": start})));
    }
    for (i, piece) in reply.pieces().enumerate() {
        let delta = match reply.tool() {
            Some(_) => json!({"toolUse": {"input": piece}}),
            None => json!({"text": piece}),
        };
        frames.push(event_frame("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": delta})));
        if let Some(kind) = stream_error.filter(|_| i == 0) {
            frames.push(exception_frame(kind, "The mock was told to fail this stream."));
            return Payload::EventStream(frames);
        }
    }
    frames.push(event_frame("contentBlockStop", &json!({"contentBlockIndex": 0})));
    frames.push(event_frame("messageStop", &json!({"stopReason": stop_reason})));
    frames.push(event_frame("metadata", &json!({"usage": usage, "metrics": metrics})));
    Payload::EventStream(frames)
}

fn event_headers(event_type: &'static str) -> Vec<Header> {
    vec![
        Header::new(":event-type", HeaderValue::String(event_type.into())),
        Header::new(":content-type", HeaderValue::String("application/json".into())),
        Header::new(":message-type", HeaderValue::String("event".into())),
    ]
}

fn event_frame(event_type: &'static str, payload: &Value) -> Bytes {
    frame(event_headers(event_type), payload.to_string().as_bytes())
}

/// An exception message: what Bedrock sends when a stream fails after it started.
fn exception_frame(exception_type: &str, message: &str) -> Bytes {
    let headers = vec![
        Header::new(":exception-type", HeaderValue::String(exception_type.to_owned().into())),
        Header::new(":content-type", HeaderValue::String("application/json".into())),
        Header::new(":message-type", HeaderValue::String("exception".into())),
    ];
    frame(headers, json!({"message": message}).to_string().as_bytes())
}

fn frame(headers: Vec<Header>, payload: &[u8]) -> Bytes {
    let message = Message::new_from_parts(headers, Bytes::copy_from_slice(payload));
    let mut buf = Vec::with_capacity(payload.len() + 128);
    // Fails only for headers or a payload past the format's 16 MiB limits; these are tiny.
    if write_message_to(&message, &mut buf).is_err() {
        buf.clear();
    }
    Bytes::from(buf)
}

/// Bedrock's error body and the `x-amzn-errortype` value: the exception for that status
/// unless given, followed (as AWS sends it) by `:` and a namespace that clients cut off.
pub(crate) fn error(status: u16, kind: Option<&str>, message: &str) -> (Bytes, String) {
    let kind = kind.unwrap_or(match status {
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        500..=599 => "InternalServerException",
        _ => "ValidationException",
    });
    let body = Bytes::from(json!({ "message": message }).to_string());
    (body, format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(authorization: &str, date: &str) -> Result<(), Refusal> {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", authorization.parse().unwrap());
        headers.insert("x-amz-date", date.parse().unwrap());
        headers.insert("x-amz-security-token", "t".parse().unwrap());
        admit(&headers)
    }

    #[test]
    fn sigv4_shape() {
        let sig = "a".repeat(64);
        let good = |scope: &str, signed_headers: &str| {
            format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={signed_headers}, Signature={sig}")
        };
        let scope = "AKIDEXAMPLE/20240601/eu-west-3/bedrock/aws4_request";
        assert!(signed(&good(scope, "host;x-amz-date"), "20240601T120000Z").is_ok());
        assert!(
            signed(&good(scope, "content-type;host;x-amz-date;x-amz-security-token"), "20240601T120000Z")
                .is_err()
        );
        assert!(signed(&good(scope, "host;x-amz-date;x-amz-security-token"), "20240601T120000Z").is_ok());
        assert!(signed(&good(scope, "x-amz-date;host"), "20240601T120000Z").is_err());
        assert!(signed(&good(scope, "host"), "20240601T120000Z").is_err());
        assert!(signed(&good(scope, "host;x-amz-date"), "20240602T120000Z").is_err());
        assert!(signed(&good(scope, "host;x-amz-date"), "2024-06-01T12:00:00Z").is_err());
        let other_service = "AKIDEXAMPLE/20240601/eu-west-3/s3/aws4_request";
        assert!(signed(&good(other_service, "host;x-amz-date"), "20240601T120000Z").is_err());
        let refusal = signed("Bearer abc", "20240601T120000Z").unwrap_err();
        assert_eq!((refusal.status, refusal.kind), (403, Some("IncompleteSignatureException")));
        assert_eq!(admit(&HeaderMap::new()).unwrap_err().kind, Some("MissingAuthenticationTokenException"));
    }

    #[test]
    fn reads_blocks_and_tool_results() {
        let body = json!({
            "system": [{"text": "be brief"}],
            "inferenceConfig": {"maxTokens": 3},
            "messages": [
                {"role": "user", "content": [{"text": "weather? #mock:tool=get_weather"}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"c": 22}}]}}]}
            ]
        });
        let call = parse("m", &body).unwrap();
        assert_eq!(call.directive_texts, ["m", "weather? #mock:tool=get_weather"]);
        assert_eq!(call.tool_result.as_deref(), Some(r#"{"c":22}"#));
        assert_eq!(call.prompt_tokens, 2 + 2 + 1);
        assert_eq!(call.max_tokens, Some(3));
        assert!(parse("m", &json!({"messages": 1})).is_err());
    }
}
