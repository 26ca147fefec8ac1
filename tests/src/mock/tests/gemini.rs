//! Gemini's generateContent / streamGenerateContent over HTTP.

use http::StatusCode;
use hyper::Response;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Harness, body_json, events, header, read_body};

const KEY: &[(&str, &str)] = &[("x-goog-api-key", "AIza-test")];
const GENERATE: &str = "/v1beta/models/gemini-2.0-flash:generateContent";
const STREAM: &str = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";

fn contents(text: &str) -> Value {
    json!({"systemInstruction": {"parts": [{"text": "be brief"}]},
           "contents": [{"role": "user", "parts": [{"text": text}]}]})
}

async fn post(h: &Harness, path: &str, body: Value) -> Response<Incoming> {
    h.post_with(path, KEY, body).await
}

async fn chunks(response: Response<Incoming>) -> Vec<Value> {
    let (body, failed) = read_body(response).await;
    assert!(!failed);
    events(&body).iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

#[tokio::test]
async fn requires_a_key_and_sse_for_streams() {
    let h = Harness::start().await;
    let response = h.post_with(GENERATE, &[], contents("hi")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = body_json(response).await;
    assert_eq!(
        (body["error"]["code"].as_u64(), body["error"]["status"].as_str()),
        (Some(403), Some("PERMISSION_DENIED"))
    );
    assert_eq!(h.mock.hits("unauthorized"), 1);

    let with_query_key = format!("{GENERATE}?key=AIza-test");
    assert_eq!(h.post_with(&with_query_key, &[], contents("hi")).await.status(), StatusCode::OK);

    let no_sse = "/v1beta/models/gemini-2.0-flash:streamGenerateContent";
    let response = post(&h, no_sse, contents("hi")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(h.mock.hits("gemini_stream"), 1);

    let response = post(&h, GENERATE, json!({"contents": "nope"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn answers_generate_content() {
    let h = Harness::start().await;
    let body = body_json(post(&h, GENERATE, contents("one two three")).await).await;
    let candidate = &body["candidates"][0];
    assert_eq!(
        candidate["content"],
        json!({"parts": [{"text": "Hello from the mock provider."}], "role": "model"})
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(
        body["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 5, "totalTokenCount": 10})
    );
    assert_eq!(body["modelVersion"], "gemini-2.0-flash");
    assert_eq!(h.mock.hits("gemini"), 1);
    let recorded = &h.mock.requests()[0];
    assert_eq!(recorded.path, GENERATE);
    assert_eq!(recorded.header("x-goog-api-key"), Some("AIza-test"));

    let mut short = contents("x #mock:cached=2");
    short["generationConfig"] = json!({"maxOutputTokens": 1});
    let body = body_json(post(&h, GENERATE, short).await).await;
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], "Hello");
    assert_eq!(body["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(body["usageMetadata"]["cachedContentTokenCount"], 2);
}

#[tokio::test]
async fn streams_one_chunk_per_word_and_usage_last() {
    let h = Harness::start().await;
    let response = post(&h, STREAM, contents("hi")).await;
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let chunks = chunks(response).await;
    assert_eq!(chunks.len(), 5);
    let text: String =
        chunks.iter().map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(text, "Hello from the mock provider.");
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 3);
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 5);
    assert!(rest.iter().all(|c| c.get("usageMetadata").is_none()));
    assert!(rest.iter().all(|c| c["candidates"][0].get("finishReason").is_none()));
    assert_eq!(h.mock.hits("gemini_stream"), 1);
}

#[tokio::test]
async fn function_call_and_function_response() {
    let h = Harness::start().await;
    let body = body_json(post(&h, GENERATE, contents("weather? #mock:tool=get_weather")).await).await;
    let part = &body["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"], json!({"name": "get_weather", "args": {"city": "Paris"}}));

    let chunks = chunks(post(&h, STREAM, contents("#mock:tool=get_weather")).await).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"], "get_weather");
    assert_eq!(chunks[0]["candidates"][0]["finishReason"], "STOP");

    let round_trip = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather? #mock:tool=get_weather"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
            "response": {"output": "22 degrees"}}}]}
    ]});
    let body = body_json(post(&h, GENERATE, round_trip).await).await;
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], "The tool said: 22 degrees");
}

#[tokio::test]
async fn errors_in_gemini_shape_from_the_path_or_the_text() {
    let h = Harness::start().await;
    // `#` and `:` percent-encoded in the model segment, as a client must send them.
    let path = "/v1beta/models/gemini-2.0-flash%23mock%3Astatus%3D503:generateContent";
    let response = post(&h, path, contents("hi")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(response).await;
    assert_eq!(
        (body["error"]["code"].as_u64(), body["error"]["status"].as_str()),
        (Some(503), Some("UNAVAILABLE"))
    );

    for (status, name) in [(429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (400, "INVALID_ARGUMENT")] {
        let response = post(&h, STREAM, contents(&format!("#mock:status={status}"))).await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(body_json(response).await["error"]["status"], name);
    }

    let response = post(&h, STREAM, contents("#mock:drop_after=2")).await;
    let (body, failed) = read_body(response).await;
    assert!(failed);
    assert_eq!(events(&body).len(), 2);
    let response = post(&h, STREAM, contents("#mock:not_sse")).await;
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(body_json(response).await["candidates"][0]["finishReason"], "STOP");
}
