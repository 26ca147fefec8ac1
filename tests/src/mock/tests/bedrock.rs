//! Bedrock's Converse / ConverseStream over HTTP; stream bodies decoded with
//! `aws-smithy-eventstream`, as the AWS SDKs read them.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use bytes::BytesMut;
use http::StatusCode;
use hyper::Response;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Harness, body_json, header, read_body};

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1%3A0";
const DATE: &str = "20240601T120000Z";

fn signature(region: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240601/{region}/bedrock/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, Signature={}",
        "0123456789abcdef".repeat(4)
    )
}

fn converse(text: &str) -> Value {
    json!({"system": [{"text": "be brief"}],
           "messages": [{"role": "user", "content": [{"text": text}]}]})
}

async fn post(h: &Harness, action: &str, body: Value) -> Response<Incoming> {
    let authorization = signature("eu-west-3");
    let headers = [("authorization", authorization.as_str()), ("x-amz-date", DATE)];
    h.post_with(&format!("/model/{MODEL}/{action}"), &headers, body).await
}

fn string_header<'a>(message: &'a Message, name: &str) -> &'a str {
    let header = message.headers().iter().find(|h| h.name().as_str() == name).unwrap();
    header.value().as_string().unwrap().as_str()
}

/// Every frame of a ConverseStream body as `(message type, event or exception type, payload)`.
async fn decode(response: Response<Incoming>) -> (Vec<(String, String, Value)>, bool) {
    assert_eq!(header(&response, "content-type"), "application/vnd.amazon.eventstream");
    let (body, failed) = read_body(response).await;
    let mut buf = BytesMut::from(&body[..]);
    let mut decoder = MessageFrameDecoder::new();
    let mut out = Vec::new();
    while let DecodedFrame::Complete(message) = decoder.decode_frame(&mut buf).unwrap() {
        let kind = string_header(&message, ":message-type");
        let name = string_header(&message, if kind == "event" { ":event-type" } else { ":exception-type" });
        assert_eq!(string_header(&message, ":content-type"), "application/json");
        let payload = serde_json::from_slice(message.payload()).unwrap();
        out.push((kind.to_owned(), name.to_owned(), payload));
    }
    assert!(buf.is_empty(), "a partial frame is left");
    (out, failed)
}

#[tokio::test]
async fn requires_a_sigv4_shaped_signature() {
    let h = Harness::start().await;
    let path = format!("/model/{MODEL}/converse");
    let response = h.post_with(&path, &[], converse("hi")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(header(&response, "x-amzn-errortype").starts_with("MissingAuthenticationTokenException"));
    assert!(body_json(response).await["message"].is_string());

    let bad = [("authorization", "Bearer sk"), ("x-amz-date", DATE)];
    let response = h.post_with(&path, &bad, converse("hi")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(header(&response, "x-amzn-errortype").starts_with("IncompleteSignatureException:"));

    let authorization = signature("us-east-1");
    let undated = [("authorization", authorization.as_str())];
    assert_eq!(h.post_with(&path, &undated, converse("hi")).await.status(), StatusCode::FORBIDDEN);
    assert_eq!((h.mock.hits("unauthorized"), h.mock.hits("converse")), (3, 3));
}

#[tokio::test]
async fn answers_converse_and_records_the_region() {
    let h = Harness::start().await;
    let response = post(&h, "converse", converse("one two three")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!header(&response, "x-amzn-requestid").is_empty());
    let body = body_json(response).await;
    assert_eq!(
        body["output"],
        json!({"message": {"role": "assistant", "content": [{"text": "Hello from the mock provider."}]}})
    );
    assert_eq!(body["stopReason"], "end_turn");
    assert_eq!(body["usage"], json!({"inputTokens": 5, "outputTokens": 5, "totalTokens": 10}));
    assert!(body["metrics"]["latencyMs"].is_u64());
    let recorded = &h.mock.requests()[0];
    assert_eq!(recorded.path, format!("/model/{MODEL}/converse"));
    assert_eq!(recorded.aws_region(), Some("eu-west-3"));
    assert_eq!(recorded.header("x-amz-date"), Some(DATE));
    assert_eq!(h.mock.hits("converse"), 1);

    let mut short = converse("x #mock:usage=50,9,cached=20");
    short["inferenceConfig"] = json!({"maxTokens": 2});
    let body = body_json(post(&h, "converse", short).await).await;
    assert_eq!(body["stopReason"], "max_tokens");
    assert_eq!(
        body["usage"],
        json!({"inputTokens": 30, "outputTokens": 9, "totalTokens": 59, "cacheReadInputTokens": 20,
               "cacheWriteInputTokens": 0})
    );
}

#[tokio::test]
async fn streams_event_stream_frames() {
    let h = Harness::start().await;
    let (frames, failed) = decode(post(&h, "converse-stream", converse("hi")).await).await;
    assert!(!failed);
    let names: Vec<&str> = frames.iter().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert!(frames.iter().all(|(kind, _, _)| kind == "event"));
    assert_eq!(frames[0].2, json!({"role": "assistant"}));
    let text: String = frames[1..6]
        .iter()
        .map(|(_, _, p)| {
            assert_eq!(p["contentBlockIndex"], 0);
            p["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "Hello from the mock provider.");
    assert_eq!(frames[7].2, json!({"stopReason": "end_turn"}));
    assert_eq!(frames[8].2["usage"], json!({"inputTokens": 3, "outputTokens": 5, "totalTokens": 8}));
    assert!(frames[8].2["metrics"]["latencyMs"].is_u64());
    assert_eq!(h.mock.hits("converse_stream"), 1);
}

#[tokio::test]
async fn tool_use_and_tool_result() {
    let h = Harness::start().await;
    let body = body_json(post(&h, "converse", converse("weather? #mock:tool=get_weather")).await).await;
    assert_eq!(body["stopReason"], "tool_use");
    let tool_use = &body["output"]["message"]["content"][0]["toolUse"];
    assert_eq!(
        (tool_use["name"].as_str(), tool_use["input"].clone()),
        (Some("get_weather"), json!({"city": "Paris"}))
    );
    assert!(tool_use["toolUseId"].is_string());

    let (frames, _) = decode(post(&h, "converse-stream", converse("#mock:tool=get_weather")).await).await;
    assert_eq!(frames[1].1, "contentBlockStart");
    assert_eq!(frames[1].2["start"]["toolUse"]["name"], "get_weather");
    let input: String = frames
        .iter()
        .filter(|(_, name, _)| name == "contentBlockDelta")
        .map(|(_, _, p)| p["delta"]["toolUse"]["input"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&input).unwrap(), json!({"city": "Paris"}));
    let stop = frames.iter().find(|(_, name, _)| name == "messageStop").unwrap();
    assert_eq!(stop.2["stopReason"], "tool_use");

    let round_trip = json!({"messages": [
        {"role": "user", "content": [{"text": "weather? #mock:tool=get_weather"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather",
            "input": {"city": "Paris"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "22 degrees"}]}}]}
    ]});
    let body = body_json(post(&h, "converse", round_trip).await).await;
    assert_eq!(body["output"]["message"]["content"][0]["text"], "The tool said: 22 degrees");
}

#[tokio::test]
async fn errors_and_stream_exceptions() {
    let h = Harness::start().await;
    for (status, kind) in [
        (429, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
        (400, "ValidationException"),
    ] {
        let response = post(&h, "converse-stream", converse(&format!("#mock:status={status}"))).await;
        assert_eq!(response.status().as_u16(), status);
        let error_type = header(&response, "x-amzn-errortype");
        assert_eq!(error_type.split(':').next(), Some(kind));
        assert!(body_json(response).await["message"].is_string());
    }

    // The model id in the path carries directives too.
    let authorization = signature("us-west-2");
    let headers = [("authorization", authorization.as_str()), ("x-amz-date", DATE)];
    let response = h.post_with("/model/m%23mock%3Astatus%3D429/converse", &headers, converse("x")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    let (frames, failed) =
        decode(post(&h, "converse-stream", converse("#mock:stream_error=throttlingException")).await).await;
    assert!(!failed);
    let names: Vec<&str> = frames.iter().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(names, ["messageStart", "contentBlockDelta", "throttlingException"]);
    let (kind, _, payload) = frames.last().unwrap();
    assert_eq!(kind, "exception");
    assert!(payload["message"].is_string());
    assert_eq!(h.mock.hits("fault:stream_error"), 1);

    let (frames, failed) = decode(post(&h, "converse-stream", converse("#mock:drop_after=2")).await).await;
    assert!(failed);
    assert_eq!(frames.len(), 2);
    let response = post(&h, "converse", json!({"messages": "nope"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(header(&response, "x-amzn-errortype").starts_with("ValidationException"));
}
