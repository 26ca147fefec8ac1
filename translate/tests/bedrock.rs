//! Golden-file tests for the OpenAI ⇄ Bedrock Converse translation, plus the event-stream
//! decoder and SigV4 signing. Fixtures under `tests/fixtures/bedrock/` were written from the
//! Amazon Bedrock API reference (Converse, ConverseStream) and OpenAI's chat completions
//! reference:
//!
//! - `request/NAME.openai.json` → `NAME.bedrock.json` (default options),
//!   `NAME.dropped.bedrock.json` (with `drop_unsupported_params`), or `NAME.error.json`
//!   (`{"unsupported": param}` or `{"invalid": message}`);
//! - `response/NAME.bedrock.json` → `NAME.openai.json`;
//! - `stream/NAME.events.json` (`[{"event": type, "payload": {…}}]`, encoded here into
//!   event-stream frames with `aws-smithy-eventstream`'s encoder and fed to the decoder in
//!   odd-sized chunks) → `NAME.openai.json` (the chunks, then `"[DONE]"`), with
//!   `include_usage`;
//! - `error/NAME.bedrock.json` (`{"status", "type", "body"}`) → `NAME.openai.json`;
//! - `response/NAME.anthropic.json` and `stream/NAME.anthropic.json`: what an Anthropic-format
//!   client receives for the same input, through the OpenAI pivot (see `client_chain`; streams
//!   as `[{"event", "data"}]`, the events fed as the edge feeds them once decoded).
//!   `UPDATE_GOLDEN=1` rewrites these.
//!
//! Generated values are normalised before comparing: `created` → 0, the random completion id
//! → `chatcmpl-random`.

// Test helpers outside `#[test]` functions panic on broken fixtures, as the tests do.
#![allow(clippy::unwrap_used, clippy::panic)]

mod client_chain;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use llmgw_translate::bedrock::{self, EventStreamDecoder};
use llmgw_translate::{Options, StreamConverter, TranslateError, Usage};
use serde_json::{Value, json};

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bedrock").join(kind)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture names in `kind` with inputs ending in `suffix`, sorted.
fn cases(kind: &str, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir(kind))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(suffix).map(str::to_owned))
        .filter(|n| !n.contains('.'))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures in {kind}");
    names
}

fn normalise(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.contains_key("created") {
                o.insert("created".into(), json!(0));
            }
            if let Some(Value::String(id)) = o.get_mut("id")
                && let Some(rest) = id.strip_prefix("chatcmpl-")
                && rest.len() == 16
                && rest.bytes().all(|b| b.is_ascii_hexdigit())
            {
                *id = "chatcmpl-random".into();
            }
            o.values_mut().for_each(normalise);
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn normalised(mut v: Value) -> Value {
    normalise(&mut v);
    v
}

fn usage_of(openai: &Value) -> Usage {
    let u = &openai["usage"];
    Usage {
        input: u["prompt_tokens"].as_u64().unwrap(),
        output: u["completion_tokens"].as_u64().unwrap(),
        cached_input: u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(),
    }
}

const DROP: Options = Options { drop_unsupported_params: true };

#[test]
fn requests() {
    for name in cases("request", ".openai.json") {
        let input = read_json(&dir("request").join(format!("{name}.openai.json")));
        let strict = bedrock::request(&input, &Options::default());
        let expected = dir("request").join(format!("{name}.bedrock.json"));
        let error = dir("request").join(format!("{name}.error.json"));
        let dropped = dir("request").join(format!("{name}.dropped.bedrock.json"));
        let mut checked = false;
        if expected.exists() {
            assert_eq!(strict.clone().unwrap(), read_json(&expected), "request/{name}");
            checked = true;
        }
        if error.exists() {
            let want = read_json(&error);
            match (strict.clone().unwrap_err(), want) {
                (TranslateError::Unsupported { param, target, .. }, w) if w.get("unsupported").is_some() => {
                    assert_eq!(param, w["unsupported"], "request/{name}");
                    assert_eq!(target, "Bedrock");
                }
                (TranslateError::InvalidRequest(m), w) if w.get("invalid").is_some() => {
                    assert_eq!(m, w["invalid"], "request/{name}")
                }
                (got, w) => panic!("request/{name}: got {got:?}, want {w}"),
            }
            checked = true;
        }
        if dropped.exists() {
            assert!(strict.is_err(), "request/{name} should be refused without drop_unsupported_params");
            let got = bedrock::request(&input, &DROP).unwrap();
            assert_eq!(got, read_json(&dropped), "request/{name} (dropped)");
            checked = true;
        }
        assert!(checked, "request/{name} has no expected output");
    }
}

#[test]
fn content_is_refused_even_when_dropping_params() {
    for name in ["image_url_http", "image_bmp"] {
        let input = read_json(&dir("request").join(format!("{name}.openai.json")));
        assert!(matches!(bedrock::request(&input, &DROP), Err(TranslateError::Unsupported { .. })), "{name}");
    }
}

#[test]
fn responses() {
    for name in cases("response", ".bedrock.json") {
        let input = read_json(&dir("response").join(format!("{name}.bedrock.json")));
        let expected = read_json(&dir("response").join(format!("{name}.openai.json")));
        let alias = expected["model"].as_str().unwrap();
        let (got, usage) = bedrock::response(&input, alias).unwrap();
        assert_eq!(normalised(got), expected, "response/{name}");
        assert_eq!(usage, usage_of(&expected), "response/{name} usage");
    }
}

#[test]
fn responses_for_anthropic_clients() {
    for name in cases("response", ".bedrock.json") {
        let input = read_json(&dir("response").join(format!("{name}.bedrock.json")));
        let alias = read_json(&dir("response").join(format!("{name}.openai.json")))["model"].clone();
        let alias = alias.as_str().unwrap();
        let (openai, usage) = bedrock::response(&input, alias).unwrap();
        let got = client_chain::response(&name, &openai, usage, alias);
        client_chain::check_golden(&dir("response").join(format!("{name}.anthropic.json")), &normalised(got));
    }
}

#[test]
fn streams_for_anthropic_clients() {
    for name in cases("stream", ".events.json") {
        let events: Vec<(String, String)> = read_json(&dir("stream").join(format!("{name}.events.json")))
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["event"].as_str().unwrap().to_owned(), e["payload"].to_string()))
            .collect();
        let alias = read_json(&dir("stream").join(format!("{name}.openai.json")))[0]["model"].clone();
        let alias = alias.as_str().unwrap();
        let mut first = bedrock::StreamToOpenAi::new(alias, true);
        let got = client_chain::stream(
            &mut first,
            events.iter().map(|(event, payload)| (Some(event.as_str()), payload.as_str())),
            alias,
        );
        let message = client_chain::assemble(&name, &got);
        client_chain::check_message(&name, &message, first.usage());
        client_chain::check_golden(
            &dir("stream").join(format!("{name}.anthropic.json")),
            &normalised(json!(got)),
        );
    }
}

#[test]
fn errors() {
    for name in cases("error", ".bedrock.json") {
        let input = read_json(&dir("error").join(format!("{name}.bedrock.json")));
        let expected = read_json(&dir("error").join(format!("{name}.openai.json")));
        let status = u16::try_from(input["status"].as_u64().unwrap()).unwrap();
        let got = bedrock::error(status, input["type"].as_str(), &input["body"]);
        assert_eq!(got, expected, "error/{name}");
    }
}

fn string_header(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_owned().into()))
}

/// One event-stream frame, as Bedrock sends it.
fn frame(message_type: &str, type_header: &'static str, kind: &str, payload: &Value) -> Vec<u8> {
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(string_header(type_header, kind))
        .add_header(string_header(":content-type", "application/json"))
        .add_header(string_header(":message-type", message_type));
    let mut buf = Vec::new();
    write_message_to(&message, &mut buf).unwrap();
    buf
}

fn event_frame(kind: &str, payload: &Value) -> Vec<u8> {
    frame("event", ":event-type", kind, payload)
}

/// Feeds `body` to a decoder in chunks of the given sizes (cycled), returning every message.
fn decode_in_chunks(body: &[u8], sizes: &[usize]) -> Vec<(String, String, Bytes)> {
    let mut decoder = EventStreamDecoder::new();
    let mut out = Vec::new();
    let mut rest = body;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        out.extend(decoder.push(chunk).unwrap());
        rest = tail;
    }
    assert!(!decoder.has_partial_frame());
    out
}

#[test]
fn streams() {
    for name in cases("stream", ".events.json") {
        let events = read_json(&dir("stream").join(format!("{name}.events.json")));
        let expected = read_json(&dir("stream").join(format!("{name}.openai.json")));
        let alias = expected[0]["model"].as_str().unwrap();
        let body: Vec<u8> = events
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| event_frame(e["event"].as_str().unwrap(), &e["payload"]))
            .collect();
        // Whole, byte by byte, and in sizes that split preludes, headers and payloads.
        for sizes in [&[body.len()][..], &[1], &[7, 64, 3, 500, 13]] {
            let messages = decode_in_chunks(&body, sizes);
            assert_eq!(messages.len(), events.as_array().unwrap().len());
            let mut conv = bedrock::StreamToOpenAi::new(alias, true);
            let mut got = Vec::new();
            for (event_type, message_type, payload) in &messages {
                assert_eq!(message_type, "event");
                got.extend(conv.on_message(event_type, message_type, payload).unwrap());
            }
            assert!(conv.started());
            got.extend(conv.finish());
            let got: Vec<Value> = got
                .into_iter()
                .map(|e| {
                    if e.data == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(&e.data).unwrap() }
                })
                .collect();
            assert_eq!(normalised(Value::Array(got)), expected, "stream/{name} in chunks of {sizes:?}");
            let usage_chunk = expected.as_array().unwrap().iter().rev().nth(1).unwrap();
            assert_eq!(conv.usage(), usage_of(usage_chunk), "stream/{name} usage");
        }
    }
}

#[test]
fn stream_exceptions_are_bad_responses() {
    let mut body = event_frame("messageStart", &json!({"role": "assistant"}));
    body.extend(frame(
        "exception",
        ":exception-type",
        "throttlingException",
        &json!({"message": "Too many tokens, please wait before trying again."}),
    ));
    let messages = decode_in_chunks(&body, &[5]);
    assert_eq!(messages[1].0, "throttlingException");
    assert_eq!(messages[1].1, "exception");
    let mut conv = bedrock::StreamToOpenAi::new("m", true);
    assert_eq!(conv.on_message(&messages[0].0, &messages[0].1, &messages[0].2).unwrap().len(), 1);
    assert!(!conv.started(), "a role chunk is no content yet");
    match conv.on_message(&messages[1].0, &messages[1].1, &messages[1].2) {
        Err(TranslateError::BadResponse(m)) => {
            assert!(m.contains("throttlingException") && m.contains("Too many tokens"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // The same through on_event, for a caller that passes exception types as event types.
    let err =
        conv.on_event(Some("modelStreamErrorException"), r#"{"message":"boom","originalStatusCode":500}"#);
    assert!(matches!(err, Err(TranslateError::BadResponse(m)) if m.contains("boom")));
}

#[test]
fn event_stream_error_messages_carry_their_code() {
    let message = Message::new(Bytes::new())
        .add_header(string_header(":message-type", "error"))
        .add_header(string_header(":error-code", "InternalFailure"))
        .add_header(string_header(":error-message", "An internal error occurred"));
    let mut body = Vec::new();
    write_message_to(&message, &mut body).unwrap();
    let messages = decode_in_chunks(&body, &[body.len()]);
    assert_eq!((messages[0].0.as_str(), messages[0].1.as_str()), ("InternalFailure", "error"));
    let err =
        bedrock::StreamToOpenAi::new("m", false).on_message(&messages[0].0, &messages[0].1, &messages[0].2);
    assert!(matches!(err, Err(TranslateError::BadResponse(m)) if m.contains("An internal error occurred")));
}

#[test]
fn corrupt_frames_are_bad_responses() {
    let good = event_frame("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": "hi"}}));
    // A flipped payload byte fails the message CRC.
    let mut bad = good.clone();
    let at = bad.len() - 8;
    bad[at] ^= 0x20;
    let mut decoder = EventStreamDecoder::new();
    assert!(matches!(decoder.push(&bad), Err(TranslateError::BadResponse(_))));

    // A length prefix past the format's limit fails once that much is buffered, not never.
    let mut decoder = EventStreamDecoder::new();
    let mut huge = vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
    huge.extend(vec![0u8; 1024]);
    assert!(decoder.push(&huge).unwrap().is_empty());
    let filler = vec![0u8; 1024 * 1024];
    let mut failed = false;
    for _ in 0..17 {
        if decoder.push(&filler).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "a 2 GiB frame must not be buffered");
}

#[test]
fn a_cut_stream_is_visible_and_still_finishes() {
    let body = event_frame("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": "hi"}}));
    let mut decoder = EventStreamDecoder::new();
    assert!(!decoder.has_partial_frame());
    assert!(decoder.push(&body[..5]).unwrap().is_empty());
    assert!(decoder.has_partial_frame());
    assert!(decoder.push(&body[5..20]).unwrap().is_empty());
    assert!(decoder.has_partial_frame());
    let messages = decoder.push(&body[20..]).unwrap();
    assert_eq!(messages.len(), 1);
    assert!(!decoder.has_partial_frame());

    let mut conv = bedrock::StreamToOpenAi::new("m", false);
    let out = conv.on_message(&messages[0].0, &messages[0].1, &messages[0].2).unwrap();
    assert_eq!(out.len(), 2, "role, then the text");
    let end = conv.finish();
    let finish: Value = serde_json::from_str(&end[0].data).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(end[1].data, "[DONE]");
    assert!(conv.finish().is_empty(), "finish is idempotent");
}

#[test]
fn stream_tool_input_without_a_start_is_a_bad_response() {
    let mut conv = bedrock::StreamToOpenAi::new("m", false);
    let err = conv
        .on_event(Some("contentBlockDelta"), r#"{"contentBlockIndex":3,"delta":{"toolUse":{"input":"{}"}}}"#);
    assert!(matches!(err, Err(TranslateError::BadResponse(_))));
    assert!(matches!(conv.on_event(None, "{}"), Err(TranslateError::BadResponse(_))));
    assert!(matches!(conv.on_event(Some("messageStart"), "nope"), Err(TranslateError::BadResponse(_))));
}

#[test]
fn response_errors() {
    assert!(matches!(bedrock::response(&json!({"message": "x"}), "m"), Err(TranslateError::BadResponse(_))));
    assert!(matches!(bedrock::response(&json!([]), "m"), Err(TranslateError::BadResponse(_))));
}

#[test]
fn malformed_requests_are_invalid() {
    for body in [
        json!([]),
        json!({"messages": {}}),
        json!({"messages": [{"role": "user", "content": 3}]}),
        json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,xyz"}}]}]}),
    ] {
        let err = bedrock::request(&body, &DROP).unwrap_err();
        assert!(matches!(err, TranslateError::InvalidRequest(_)), "{body}: {err:?}");
    }
}

// SigV4: AWS's published test vectors (aws-c-auth's tests/aws-signing-test-suite/v4: region
// us-east-1, service "service", 2015-08-30T12:36:00Z, the documented example key pair).

const VECTOR_TIME: u64 = 1_440_938_160; // 2015-08-30T12:36:00Z
const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn vector(method: &str, uri: &str, token: Option<&str>) -> http::Request<Bytes> {
    let mut req = http::Request::builder().method(method).uri(uri).body(Bytes::new()).unwrap();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(VECTOR_TIME);
    bedrock::sign_for_service(&mut req, "service", "us-east-1", AKID, SECRET, token, at).unwrap();
    req
}

fn header<'a>(req: &'a http::Request<Bytes>, name: &str) -> &'a str {
    req.headers().get(name).unwrap().to_str().unwrap()
}

#[test]
fn sigv4_post_vanilla() {
    let req = vector("POST", "https://example.amazonaws.com/", None);
    assert_eq!(header(&req, "x-amz-date"), "20150830T123600Z");
    assert_eq!(
        header(&req, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
    );
    assert!(req.headers().get("x-amz-security-token").is_none());
}

#[test]
fn sigv4_post_vanilla_query() {
    let req = vector("POST", "https://example.amazonaws.com/?Param1=value1", None);
    assert_eq!(
        header(&req, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"
    );
}

#[test]
fn sigv4_get_vanilla_with_session_token() {
    let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
    let req = vector("GET", "https://example.amazonaws.com/", Some(token));
    assert_eq!(header(&req, "x-amz-security-token"), token);
    assert!(req.headers().get("x-amz-security-token").unwrap().is_sensitive());
    assert_eq!(
        header(&req, "authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-security-token, \
         Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
    );
}

#[test]
fn sigv4_bedrock_request_shape() {
    let body = bedrock::request(
        &json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}),
        &Options::default(),
    )
    .unwrap();
    let uri = format!(
        "{}{}",
        bedrock::endpoint("us-east-1"),
        bedrock::converse_path("anthropic.claude-3-5-sonnet-20240620-v1:0", true)
    );
    let mut req = http::Request::builder()
        .method("POST")
        .uri(&uri)
        .header("content-type", "application/json")
        .header("accept", "application/vnd.amazon.eventstream")
        .body(Bytes::from(body.to_string()))
        .unwrap();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_478_400); // 2026-11-24T00:00:00Z
    bedrock::sign(&mut req, "us-east-1", "AKID", "secret", None, at).unwrap();
    assert_eq!(header(&req, "x-amz-date"), "20261124T000000Z");
    let auth = header(&req, "authorization");
    let prefix = "AWS4-HMAC-SHA256 Credential=AKID/20261124/us-east-1/bedrock/aws4_request, \
                  SignedHeaders=accept;content-type;host;x-amz-date, Signature=";
    let signature = auth.strip_prefix(prefix).unwrap_or_else(|| panic!("{auth}"));
    assert_eq!(signature.len(), 64);
    assert!(signature.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert!(req.headers().get("authorization").unwrap().is_sensitive());
    assert!(req.headers().get("x-amz-content-sha256").is_none());

    // The signature covers the body and the model in the path.
    let resign = |uri: &str, body: &str| {
        let mut r = http::Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/json")
            .header("accept", "application/vnd.amazon.eventstream")
            .body(Bytes::from(body.to_owned()))
            .unwrap();
        bedrock::sign(&mut r, "us-east-1", "AKID", "secret", None, at).unwrap();
        r.headers()["authorization"].to_str().unwrap().to_owned()
    };
    assert_eq!(resign(&uri, &body.to_string()), auth);
    assert_ne!(resign(&uri, "{}"), auth);
    assert_ne!(resign(&uri.replace("v1%3A0", "v2%3A0"), &body.to_string()), auth);
}

#[test]
fn sigv4_refuses_what_it_cannot_sign() {
    let mut req = http::Request::builder().method("POST").uri("/no/host").body(Bytes::new()).unwrap();
    let err = bedrock::sign(&mut req, "us-east-1", "AKID", "secret", None, SystemTime::UNIX_EPOCH);
    assert!(matches!(err, Err(TranslateError::InvalidRequest(_))), "{err:?}");
}
