//! The HTTP side: accept loop, control endpoints, and delivery of a [`Plan`] with the injected
//! delays, pacing and connection drops.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::behaviour::Behaviour;
use super::openai::error_json;
use super::plan::{Payload, Plan, plan};
use super::record::{Ledger, Raw};

pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// 32 MiB: larger than any request a test sends, small enough that a runaway client cannot
/// exhaust memory.
const MAX_BODY_BYTES: usize = 32 << 20;
/// Back-off after a failed accept (EMFILE under a load test) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// A non-stream body sent with `slow_ms` goes out in this many parts.
const SLOW_BODY_PARTS: usize = 4;
const JSON: &str = "application/json";

/// Shared by every connection of one mock.
pub(crate) struct State {
    pub(crate) default: ArcSwap<Behaviour>,
    pub(crate) ledger: Ledger,
    pub(crate) serial: AtomicU64,
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
