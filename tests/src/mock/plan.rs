//! What to answer one request: route it, check the provider's headers, read the body, merge
//! the default behaviour with the request's directives, count hits, and render the body in the
//! request's wire format. [`super::server`] then delivers it.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::Value;

use super::behaviour::{Behaviour, scan};
use super::embeddings::{embeddings_json, models_json};
use super::openai::{Answer, MALFORMED_JSON, error_json, fault_message};
use super::reply::Reply;
use super::request::Call;
use super::route::{Endpoint, Refusal, Route, Wire, header};
use super::server::State;
use super::{anthropic, bedrock, gemini, responses};

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";
/// ConverseStream's binary framing.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// What to answer and how to deliver it; owns its bytes so the request body can be recorded.
pub(crate) struct Plan {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    /// The provider's own headers: request ids, Bedrock's error type.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) payload: Payload,
    pub(crate) delay: Duration,
    pub(crate) slow: Duration,
    pub(crate) drop_after: Option<u64>,
    pub(crate) reset: bool,
}

/// A body: one JSON document, or a stream sent one event (or binary frame) per body frame.
pub(crate) enum Payload {
    Json(Bytes),
    Sse(Vec<Bytes>),
    EventStream(Vec<Bytes>),
}

impl Plan {
    fn new(status: StatusCode, payload: Payload) -> Self {
        Self {
            status,
            content_type: match payload {
                Payload::Json(_) => JSON,
                Payload::Sse(_) => SSE,
                Payload::EventStream(_) => EVENT_STREAM,
            },
            headers: Vec::new(),
            retry_after: None,
            payload,
            delay: Duration::ZERO,
            slow: Duration::ZERO,
            drop_after: None,
            reset: false,
        }
    }

    /// An error in the shape of `wire`'s API; `kind` overrides the error type the status gets.
    pub(crate) fn error(wire: Wire, status: u16, kind: Option<&str>, message: &str) -> Self {
        let mut headers = Vec::new();
        let body = match wire {
            Wire::OpenAi | Wire::Azure => error_json(status, message),
            Wire::Anthropic => anthropic::error_json(status, kind, message),
            Wire::Gemini => gemini::error_json(status, message),
            Wire::Bedrock => {
                let (body, error_type) = bedrock::error(status, kind, message);
                if let Ok(value) = HeaderValue::try_from(error_type) {
                    headers.push((HeaderName::from_static("x-amzn-errortype"), value));
                }
                body
            }
        };
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { headers, ..Self::new(code, Payload::Json(body)) }
    }
}

/// Routes, checks the provider's required headers, merges the default behaviour with the
/// request's directives, counts hits, and renders the body. Hits are counted here, before any
/// byte is sent, so a test that got a response (or a dropped connection) sees them.
pub(crate) fn plan(state: &State, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Value) -> Plan {
    let ledger = &state.ledger;
    let path = uri.path();
    let Some(route) = Route::new(method, path, uri.query()) else {
        ledger.hit("not_found");
        return Plan::error(Wire::OpenAi, 404, None, &format!("Unknown request URL: {method} {path}"));
    };
    let wire = route.wire;
    let serial = state.serial.fetch_add(1, Ordering::Relaxed) + 1;
    let mut plan = plan_call(state, &route, headers, body, serial);
    let request_id = match wire {
        Wire::Anthropic => Some(("request-id", format!("req_mock{serial}"))),
        Wire::Bedrock => Some(("x-amzn-requestid", format!("00000000-0000-4000-8000-{serial:012}"))),
        Wire::OpenAi | Wire::Azure | Wire::Gemini => None,
    };
    if let Some((name, id)) = request_id
        && let Ok(value) = HeaderValue::try_from(id)
    {
        plan.headers.push((HeaderName::from_static(name), value));
    }
    plan
}

fn plan_call(state: &State, route: &Route<'_>, headers: &HeaderMap, body: &Value, serial: u64) -> Plan {
    let ledger = &state.ledger;
    let wire = route.wire;
    let asked_stream = route.stream(body);
    ledger.hit(route.hit_name(asked_stream));
    if let Err(refusal) = admit(route, headers) {
        ledger.hit(if refusal.status == 400 { "bad_request" } else { "unauthorized" });
        return Plan::error(wire, refusal.status, refusal.kind, &refusal.message);
    }
    let model = route.path_model.as_deref().unwrap_or_default();
    let parsed = match wire {
        Wire::OpenAi if route.endpoint == Endpoint::Responses => responses::parse(body),
        Wire::OpenAi | Wire::Azure => Call::parse(route.endpoint, body, route.path_model.as_deref()),
        Wire::Anthropic => anthropic::parse(route.endpoint, body),
        Wire::Gemini => gemini::parse(model, body),
        Wire::Bedrock => bedrock::parse(model, body),
    };
    let call = match parsed {
        Ok(call) => call,
        Err(message) => {
            ledger.hit("bad_request");
            return Plan::error(wire, 400, None, &message);
        }
    };

    let mut directives = None;
    for text in &call.directive_texts {
        if let Err(error) = scan(text, &mut directives) {
            ledger.hit("fault:bad_directive");
            return Plan::error(wire, 400, None, &error.to_string());
        }
    }
    let default = state.default.load();
    let behaviour = match directives {
        None => Cow::Borrowed(&**default),
        Some(over) => {
            let mut merged = Behaviour::clone(&default);
            merged.overlay(over);
            Cow::Owned(merged)
        }
    };
    let b = &*behaviour;
    let flag = |f: Option<bool>| f == Some(true);
    let error_status = b.status.filter(|s| *s >= 400);
    let malformed = flag(b.malformed) && error_status.is_none();
    let not_sse = flag(b.not_sse) && asked_stream && error_status.is_none();
    let stream = asked_stream && !not_sse;
    let stream_error =
        b.stream_error.as_deref().filter(|_| stream && error_status.is_none()).filter(|_| {
            matches!(route.endpoint, Endpoint::Messages | Endpoint::Converse | Endpoint::Responses)
        });
    for (on, name) in [
        (flag(b.reset), "fault:reset"),
        (b.delay_ms.is_some_and(|ms| ms > 0), "fault:delay"),
        (b.slow_ms.is_some_and(|ms| ms > 0), "fault:slow"),
        (b.drop_after.is_some(), "fault:drop"),
        (malformed, "fault:malformed"),
        (not_sse, "fault:not_sse"),
        (stream_error.is_some(), "fault:stream_error"),
    ] {
        if on {
            ledger.hit(name);
        }
    }

    let mut plan = match error_status {
        Some(status) => {
            ledger.hit(format!("fault:{status}"));
            Plan::error(wire, status, None, fault_message(status))
        }
        None => {
            let payload = render(serial, route, &call, b, stream, malformed, stream_error);
            let status = b.status.and_then(|s| StatusCode::from_u16(s).ok());
            Plan::new(status.unwrap_or(StatusCode::OK), payload)
        }
    };
    plan.retry_after = b.retry_after;
    plan.delay = Duration::from_millis(b.delay_ms.unwrap_or(0));
    plan.slow = Duration::from_millis(b.slow_ms.unwrap_or(0));
    plan.drop_after = b.drop_after;
    plan.reset = flag(b.reset);
    plan
}

/// The provider's own checks of headers and query before the body is read.
fn admit(route: &Route<'_>, headers: &HeaderMap) -> Result<(), Refusal> {
    match route.wire {
        // Any key, or none: tests assert on `authorization` in the recorded requests.
        Wire::OpenAi => Ok(()),
        Wire::Azure => {
            if route.query_param("api-version").is_none_or(|v| v.is_empty()) {
                return Err(Refusal::new(400, None, "Missing required query parameter: api-version"));
            }
            // Azure's key header; an `authorization` header alone does not do.
            match header(headers, "api-key") {
                Some(_) => Ok(()),
                None => Err(Refusal::new(401, None, "Access denied due to a missing api-key header (mock).")),
            }
        }
        Wire::Anthropic => anthropic::admit(headers),
        Wire::Gemini => gemini::admit(headers, route),
        Wire::Bedrock => bedrock::admit(headers),
    }
}

fn render(
    serial: u64,
    route: &Route<'_>,
    call: &Call<'_>,
    behaviour: &Behaviour,
    stream: bool,
    malformed: bool,
    stream_error: Option<&str>,
) -> Payload {
    let reply = || Reply::new(call, behaviour);
    let payload = match route.endpoint {
        Endpoint::Models => Payload::Json(models_json()),
        Endpoint::Embeddings => Payload::Json(embeddings_json(call, behaviour)),
        Endpoint::Chat => {
            let answer = Answer::new("chatcmpl", serial, reply());
            if stream {
                Payload::Sse(answer.chat_events(call.include_usage, malformed))
            } else {
                Payload::Json(answer.chat_json())
            }
        }
        Endpoint::Completions => {
            let answer = Answer::new("cmpl", serial, reply());
            if stream {
                Payload::Sse(answer.completion_events(call.include_usage, malformed))
            } else {
                Payload::Json(answer.completion_json())
            }
        }
        Endpoint::Responses => {
            responses::render(serial, &reply(), call.body, stream, malformed, stream_error)
        }
        Endpoint::Messages => anthropic::render(serial, &reply(), stream, malformed, stream_error),
        Endpoint::CountTokens => Payload::Json(anthropic::count_json(call, behaviour.usage)),
        Endpoint::Generate => gemini::render(serial, &reply(), stream, malformed),
        Endpoint::Converse => bedrock::render(serial, &reply(), stream, malformed, stream_error),
    };
    match payload {
        Payload::Json(_) if malformed => Payload::Json(Bytes::from_static(MALFORMED_JSON)),
        payload => payload,
    }
}
