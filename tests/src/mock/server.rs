//! The HTTP side: accept loop, per-request plan (endpoint, behaviour, body), and delivery with
//! the injected delays, pacing and connection drops.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::behaviour::{Behaviour, scan};
use super::embeddings::{embeddings_json, models_json};
use super::openai::{Answer, MALFORMED_JSON, error_json, fault_message};
use super::record::{Ledger, Raw};
use super::reply::Reply;
use super::request::Call;
use super::route::{Endpoint, Refusal, Route, Wire, header};
use super::{anthropic, bedrock, gemini};

pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// 32 MiB: larger than any request a test sends, small enough that a runaway client cannot
/// exhaust memory.
const MAX_BODY_BYTES: usize = 32 << 20;
/// Back-off after a failed accept (EMFILE under a load test) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// A non-stream body sent with `slow_ms` goes out in this many parts.
const SLOW_BODY_PARTS: usize = 4;
const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";
/// ConverseStream's binary framing.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// Shared by every connection of one mock.
pub(crate) struct State {
    pub(crate) default: ArcSwap<Behaviour>,
    pub(crate) ledger: Ledger,
    serial: AtomicU64,
}

impl State {
    pub(crate) fn new(record_limit: usize) -> Self {
        Self {
            default: ArcSwap::from_pointee(Behaviour::default()),
            ledger: Ledger::new(record_limit),
            serial: AtomicU64::new(0),
        }
    }
}

/// Serves until the task running it is aborted; aborting drops the `JoinSet`, which aborts
/// every connection.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Small SSE events must leave at once, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let builder = builder.clone();
                    let state = Arc::clone(&state);
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(Arc::clone(&state), req));
                        // A connection error (including an injected drop) ends only that connection.
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    });
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// An `Err` makes hyper close the connection without a response: `#mock:reset`.
async fn handle(state: Arc<State>, req: Request<Incoming>) -> io::Result<Response<Body>> {
    let (parts, body) = req.into_parts();
    let Ok(collected) = Limited::new(body, MAX_BODY_BYTES).collect().await else {
        return Ok(json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_json(413, "request body too large or unreadable"),
        ));
    };
    let bytes = collected.to_bytes();
    if let Some(command) = parts.uri.path().strip_prefix("/_mock/") {
        return Ok(control(&state, &parts.method, command, &bytes));
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        // Not JSON: each format's parser answers 400.
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    let plan = plan(&state, &parts.method, &parts.uri, &parts.headers, &body);
    state.ledger.record(Raw { method: parts.method, uri: parts.uri, headers: parts.headers, body: bytes });
    deliver(plan).await
}

/// What to answer and how to deliver it; owns its bytes so the request body can be recorded.
struct Plan {
    status: StatusCode,
    content_type: &'static str,
    /// The provider's own headers: request ids, Bedrock's error type.
    headers: Vec<(HeaderName, HeaderValue)>,
    retry_after: Option<u64>,
    payload: Payload,
    delay: Duration,
    slow: Duration,
    drop_after: Option<u64>,
    reset: bool,
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
    fn error(wire: Wire, status: u16, kind: Option<&str>, message: &str) -> Self {
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
fn plan(state: &State, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Value) -> Plan {
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
    let stream_error = b
        .stream_error
        .as_deref()
        .filter(|_| stream && error_status.is_none() && matches!(wire, Wire::Anthropic | Wire::Bedrock));
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

async fn deliver(plan: Plan) -> io::Result<Response<Body>> {
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    if plan.reset {
        return Err(io::Error::new(io::ErrorKind::ConnectionReset, "mock: reset"));
    }
    let mut extra = Vec::new();
    let body = match plan.payload {
        Payload::Json(bytes) if plan.slow.is_zero() && plan.drop_after.is_none() => full(bytes),
        Payload::Json(bytes) => {
            // Declare the whole length so a client sees the truncation as an error.
            extra.push((CONTENT_LENGTH, HeaderValue::from(bytes.len())));
            let len = bytes.len();
            let sent =
                plan.drop_after.map_or(len, |n| usize::try_from(n).unwrap_or(len).min(len.saturating_sub(1)));
            let parts = if plan.slow.is_zero() { 1 } else { SLOW_BODY_PARTS };
            let frames: Vec<Bytes> = (0..parts)
                .map(|i| bytes.slice(i * sent / parts..(i + 1) * sent / parts))
                .filter(|part| !part.is_empty())
                .collect();
            let drop_after = plan.drop_after.map(|_| frames.len());
            paced(frames, plan.slow, drop_after)
        }
        Payload::Sse(events) | Payload::EventStream(events) => {
            extra.push((CACHE_CONTROL, HeaderValue::from_static("no-cache")));
            let drop_after = plan.drop_after.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            paced(events, plan.slow, drop_after)
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = plan.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(plan.content_type));
    if let Some(seconds) = plan.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    headers.extend(extra.into_iter().chain(plan.headers).map(|(name, value)| (Some(name), value)));
    Ok(response)
}

/// One body frame per item. Between frames the task yields (or sleeps `slow`) so hyper flushes
/// each one on its own: a relay can be seen passing events through one by one. After
/// `drop_after` frames the body fails, which makes hyper close the connection mid-body.
fn paced(frames: Vec<Bytes>, slow: Duration, drop_after: Option<usize>) -> Body {
    let stream = futures_util::stream::unfold(Some((frames.into_iter(), 0usize)), move |state| async move {
        let (mut frames, sent) = state?;
        let dropping = drop_after.is_some_and(|n| sent >= n);
        if sent > 0 || dropping {
            // Also before a drop: what was sent so far must be flushed first.
            if slow.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(slow).await;
            }
        }
        if dropping {
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "mock: drop_after");
            return Some((Err(error), None));
        }
        let frame = frames.next()?;
        Some((Ok(Frame::data(frame)), Some((frames, sent + 1))))
    });
    BodyExt::boxed_unsync(StreamBody::new(stream))
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

fn json_response(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// `/_mock/…`: the out-of-process twin of the Rust API.
fn control(state: &State, method: &Method, command: &str, body: &[u8]) -> Response<Body> {
    let ok = |result: Result<Vec<u8>, serde_json::Error>| match result {
        Ok(bytes) => json_response(StatusCode::OK, Bytes::from(bytes)),
        Err(error) => json_response(StatusCode::INTERNAL_SERVER_ERROR, error_json(500, &error.to_string())),
    };
    match (method, command) {
        (&Method::GET, "hits") => ok(serde_json::to_vec(&state.ledger.counts())),
        (&Method::GET, "requests") => ok(serde_json::to_vec(&state.ledger.requests())),
        (&Method::GET, "default") => ok(serde_json::to_vec(&**state.default.load())),
        (&Method::POST, "default") => {
            let parsed = if body.iter().all(u8::is_ascii_whitespace) {
                Ok(Behaviour::default())
            } else {
                serde_json::from_slice::<Behaviour>(body)
            };
            match parsed {
                Ok(behaviour) => {
                    let echo = serde_json::to_vec(&behaviour);
                    state.default.store(Arc::new(behaviour));
                    ok(echo)
                }
                Err(error) => json_response(
                    StatusCode::BAD_REQUEST,
                    error_json(400, &format!("mock default behaviour: {error}")),
                ),
            }
        }
        (&Method::POST, "reset") => {
            state.ledger.clear();
            state.default.store(Arc::new(Behaviour::default()));
            ok(Ok(b"{}".to_vec()))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            error_json(404, &format!("unknown mock control: {method} /_mock/{command}")),
        ),
    }
}
