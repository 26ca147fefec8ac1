//! Forwarding with fallback: try the alias's targets in the order the strategy gives, move on
//! after a failure named in `fallback_on` (only while no byte has reached the client), feed each
//! outcome to the target's breaker, and report every attempt when all fail.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, Limited};
use tokio::time::timeout_at;

use crate::adapt::{self, BuildError, Mode, Parsed};
use crate::balance::{self, Estimate};
use crate::body::RequestBody;
use crate::breaker::now_ms;
use crate::coalesce::Coalesce;
use crate::config::{Endpoint, ModelRoute, ProviderKind, Target};
use crate::convert::{ConvertRelay, ErrorEvents, Source};
use crate::error::{ApiError, ClientFormat};
use crate::metrics as m;
use crate::provider::{self, ClientHeaders, RequestError, openai};
use crate::record::{RequestRecord, Routed};
use crate::relay::{RespBody, SseRelay, StartError};
use crate::upstream::UpstreamBody;

/// What an upstream may send back for one non-streamed answer (a large embeddings batch fits).
const MAX_UPSTREAM_BODY: usize = 64 << 20;
/// An upstream error body is relayed to the client; anything longer is not an error message.
const MAX_UPSTREAM_ERROR_BODY: usize = 1 << 20;

type Resp = Response<RespBody>;

/// Why an attempt failed: decides fallback, ejection and the final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Connect,
    Timeout,
    FirstToken,
    Status(u16),
    BadResponse,
    /// This target cannot serve the request (endpoint or parameter); another target might.
    Unsupported,
    /// The client's request is malformed: no target would take it.
    Invalid,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::FirstToken => "ttft",
            Self::Status(429) => "429",
            Self::Status(s) if s >= 500 => "5xx",
            Self::Status(_) => "4xx",
            Self::BadResponse => "bad_response",
            Self::Unsupported => "unsupported",
            Self::Invalid => "invalid_request",
        }
    }

    fn retryable(self, route: &ModelRoute) -> bool {
        let f = &route.fallback;
        match self {
            Self::Connect => f.connect,
            Self::Timeout => f.timeout,
            // Configuring a first-token timeout is asking to move on when it passes.
            Self::FirstToken | Self::Unsupported => true,
            Self::Status(s) => f.retries_status(s),
            Self::BadResponse => f.status_5xx,
            Self::Invalid => false,
        }
    }

    /// Failures that say something about the target's health (not the caller's request).
    fn counts_against_target(self) -> bool {
        match self {
            Self::Status(s) => s == 429 || s >= 500,
            Self::Unsupported | Self::Invalid => false,
            _ => true,
        }
    }
}

struct Failure {
    reason: Reason,
    message: String,
    retry_after: Option<Duration>,
    /// The provider's own error response, relayed as is when it is the final answer.
    passthrough: Option<Resp>,
}

impl Failure {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), retry_after: None, passthrough: None }
    }
}

/// The error and its causes on one line: hyper's own message alone ("client error (Connect)")
/// does not say what went wrong.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What the response headers report about the route taken.
#[derive(Default)]
pub struct RouteMeta {
    pub provider: Option<HeaderValue>,
    pub model: Option<HeaderValue>,
    pub attempts: u32,
}

pub struct Request<'a> {
    pub body: &'a RequestBody<'a>,
    pub raw: &'a Bytes,
    /// The body parsed whole, for translation; parsed at most once.
    pub parsed: Parsed,
    pub endpoint: Endpoint,
    pub client: ClientFormat,
    pub headers: ClientHeaders,
    pub stream: bool,
    pub estimate: Estimate,
}

/// Tries the route's targets until one answers.
///
/// # Errors
/// The final failure: a caller error passed through, or 502/504 listing every attempt.
pub async fn forward(
    route: &ModelRoute,
    req: &Request<'_>,
    record: &mut Option<RequestRecord>,
    meta: &mut RouteMeta,
) -> Result<Resp, ApiError> {
    let plan = balance::plan(route, req.estimate);
    let mut tried = Vec::with_capacity(plan.len());
    let mut last: Option<Failure> = None;
    let mut all_unsupported = true;
    let only_ejected = plan.len() == 1 && route.targets[plan[0]].health.is_ejected(now_ms());
    for &i in &plan {
        let target = &route.targets[i];
        if !target.health.admit(now_ms(), only_ejected) {
            // Its cooldown just ended and another request holds the one probe.
            tried.push(format!("{}: skipped (ejected)", target.label));
            continue;
        }
        if meta.attempts > 0 {
            metrics::counter!(m::FALLBACKS, "model" => route.name.to_string(), "to" => target.label.to_string()).increment(1);
        }
        meta.attempts += 1;
        meta.provider = HeaderValue::try_from(&*target.provider.name).ok();
        meta.model = HeaderValue::try_from(&*target.model).ok();
        if let Some(rec) = record.as_mut() {
            rec.routed = Some(Routed {
                model: route.name.clone(),
                provider: target.provider.name.clone(),
                upstream_model: target.model.clone(),
                pricing: target.pricing,
                metrics: target.metrics.clone(),
            });
        }
        let started = Instant::now();
        let outcome = attempt(route, target, req, record, started).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(f) => f.reason.label(),
        };
        if label == "ok" {
            target.metrics.attempts_ok.increment(1);
        } else {
            metrics::counter!(m::ATTEMPTS, "model" => route.name.to_string(), "target" => target.label.to_string(), "outcome" => label).increment(1);
        }
        let failure = match outcome {
            Ok((resp, ttfb)) => {
                target.health.on_success(ttfb);
                if let Some(l) = target.health.latency() {
                    target.metrics.latency.set(l.as_secs_f64());
                }
                target.metrics.ejected.set(0.0);
                return Ok(resp);
            }
            Err(f) => f,
        };
        if failure.reason.counts_against_target()
            && let Some(cooldown) = target.health.on_failure(&route.breaker, now_ms(), failure.retry_after)
        {
            metrics::counter!(m::EJECTIONS, "target" => target.label.to_string(), "reason" => failure.reason.label()).increment(1);
            target.metrics.ejected.set(1.0);
            tracing::warn!(target = %target.label, reason = failure.reason.label(), cooldown_ms = cooldown.as_millis() as u64, "target ejected");
        }
        tried.push(format!("{}: {}", target.label, failure.message));
        all_unsupported &= failure.reason == Reason::Unsupported;
        if !failure.reason.retryable(route) {
            return finish(failure, tried);
        }
        last = Some(failure);
    }
    match last {
        Some(_) if all_unsupported => Err(ApiError::NotSupported(tried.join("; "))),
        // One attempt, and the provider said why: the client sees the provider's own answer.
        Some(f) if tried.len() == 1 && f.passthrough.is_some() => finish(f, tried),
        Some(f) => Err(ApiError::AllAttemptsFailed {
            timeout: matches!(f.reason, Reason::Timeout | Reason::FirstToken),
            attempts: tried,
        }),
        None => Err(ApiError::AllAttemptsFailed { timeout: false, attempts: tried }),
    }
}

fn finish(f: Failure, tried: Vec<String>) -> Result<Resp, ApiError> {
    match f.passthrough {
        Some(resp) => Ok(resp),
        None if f.reason == Reason::Invalid => Err(ApiError::InvalidRequest(f.message)),
        None => Err(ApiError::AllAttemptsFailed {
            timeout: matches!(f.reason, Reason::Timeout | Reason::FirstToken),
            attempts: tried,
        }),
    }
}

/// One try at one target. Success returns the response and the time to first byte (to the
/// first token, for streams).
async fn attempt(
    route: &ModelRoute,
    target: &Target,
    req: &Request<'_>,
    record: &mut Option<RequestRecord>,
    started: Instant,
) -> Result<(Resp, Duration), Failure> {
    let provider = &target.provider;
    let Some(mode) = Mode::choose(req.endpoint, provider.kind) else {
        let msg = format!("provider kind {} does not serve {}", provider.kind.as_str(), req.endpoint.path());
        return Err(Failure::new(Reason::Unsupported, msg));
    };
    let body = if mode.passthrough() {
        req.body.rewrite(&target.model, req.stream && mode == Mode::OpenAi)
    } else {
        match req.parsed.translated(req.raw, req.client, target) {
            Ok(b) => b,
            Err(BuildError::Invalid(m)) => return Err(Failure::new(Reason::Invalid, m)),
            Err(BuildError::Unsupported(m)) => return Err(Failure::new(Reason::Unsupported, m)),
        }
    };
    let upstream_req = match provider::request(target, req.endpoint, req.stream, body, &req.headers) {
        Ok(r) => r,
        Err(RequestError::Unserved) => {
            let msg =
                format!("provider kind {} does not serve {}", provider.kind.as_str(), req.endpoint.path());
            return Err(Failure::new(Reason::Unsupported, msg));
        }
        Err(RequestError::Sign(m)) => {
            return Err(Failure::new(Reason::BadResponse, format!("cannot sign the request: {m}")));
        }
    };
    let deadline = started + provider.timeout;
    let ttft = route.ttft.map(|t| started + t);
    // No token can come before the headers: the first-token bound covers them too (and is all
    // there is to bound for a non-streamed answer).
    let headers_by = ttft.map_or(deadline, |t| t.min(deadline));
    let timeout = |after: Instant| {
        let ms = after.saturating_duration_since(started).as_millis();
        if ttft == Some(after) {
            Failure::new(Reason::FirstToken, format!("no first token within {ms} ms"))
        } else {
            Failure::new(Reason::Timeout, format!("timed out after {ms} ms"))
        }
    };
    if let Some(r) = record.as_mut() {
        r.sending();
    }
    let resp = match timeout_at(headers_by.into(), provider.client.get().send(upstream_req)).await {
        Err(_) => return Err(timeout(headers_by)),
        Ok(Err(e)) if e.is_connect() => return Err(Failure::new(Reason::Connect, chain(&e))),
        Ok(Err(e)) => return Err(Failure::new(Reason::BadResponse, chain(&e))),
        Ok(Ok(r)) => r,
    };
    let ttfb = started.elapsed();
    let status = resp.status();
    if !status.is_success() {
        return Err(provider_error(resp, deadline, mode).await);
    }
    if req.stream {
        let expected = if provider.kind == ProviderKind::Bedrock {
            "application/vnd.amazon.eventstream"
        } else {
            "text/event-stream"
        };
        let is_stream = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(expected));
        if !is_stream {
            return Err(Failure::new(
                Reason::BadResponse,
                "answered a stream request without an event stream",
            ));
        }
        let Some(rec) = record.take() else {
            return Err(Failure::new(Reason::BadResponse, "request record missing"));
        };
        let start_failure = |e: StartError| match e {
            StartError::Timeout => timeout(deadline),
            StartError::FirstToken => timeout(ttft.unwrap_or(deadline)),
            StartError::ClosedEarly => {
                Failure::new(Reason::BadResponse, "closed the stream before sending any token")
            }
            StartError::Malformed(m) | StartError::Read(m) => Failure::new(Reason::BadResponse, m),
        };
        let body = if mode == Mode::OpenAi {
            let relay = SseRelay::new(resp.into_body(), req.body.include_usage, deadline, rec);
            match relay.start(ttft).await {
                Ok(r) => {
                    let mut relay = Box::new(Coalesce::new(r));
                    relay.prefetch().await;
                    RespBody::Sse(relay)
                }
                Err((e, rec)) => {
                    *record = Some(rec);
                    return Err(start_failure(e));
                }
            }
        } else {
            let source = if provider.kind == ProviderKind::Bedrock {
                Source::aws(resp.into_body())
            } else {
                Source::sse(resp.into_body())
            };
            let pipeline = adapt::pipeline(mode, &route.name, req.body.include_usage);
            let errors = ErrorEvents::of(req.client, req.endpoint == Endpoint::Responses);
            let relay = ConvertRelay::new(source, pipeline, errors, deadline, rec);
            match relay.start(ttft).await {
                Ok(r) => {
                    let mut relay = Box::new(Coalesce::new(r));
                    relay.prefetch().await;
                    RespBody::Converted(relay)
                }
                Err((e, rec)) => {
                    *record = Some(rec);
                    return Err(start_failure(e));
                }
            }
        };
        let mut r = answer(body);
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok((r, started.elapsed()));
    }
    let collected = match timeout_at(
        deadline.into(),
        Limited::new(resp.into_body(), MAX_UPSTREAM_BODY).collect(),
    )
    .await
    {
        Err(_) => return Err(timeout(deadline)),
        Ok(Err(e)) => {
            return Err(Failure::new(Reason::BadResponse, format!("response cut short: {}", chain(&*e))));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let read_at = Instant::now();
    let collected = if mode == Mode::OpenAi {
        let parsed: openai::Completion = serde_json::from_slice(&collected).map_err(|e| {
            Failure::new(
                Reason::BadResponse,
                format!("answered 200 with a body that is not the expected JSON: {e}"),
            )
        })?;
        if let (Some(u), Some(rec)) = (parsed.usage, record.as_mut()) {
            rec.tokens = openai::ProviderUsage::tokens(&u);
        }
        collected
    } else {
        let (converted, tokens) = adapt::convert_body(mode, collected, &route.name).map_err(|e| {
            Failure::new(
                Reason::BadResponse,
                format!("answered 200 with a body that is not the expected format: {e}"),
            )
        })?;
        if let Some(rec) = record.as_mut() {
            rec.tokens = tokens;
        }
        converted
    };
    let mut r = answer(RespBody::full(collected));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(rec) = record.as_mut() {
        rec.handed_over(read_at);
    }
    Ok((r, ttfb))
}

/// A success answer, its header map sized for what the proxy adds (content type, request id,
/// provider, model, attempts, six rate-limit headers, hyper's content length), so it is
/// allocated once instead of grown.
fn answer(body: RespBody) -> Response<RespBody> {
    let mut r = Response::new(body);
    r.headers_mut().reserve(12);
    r
}

/// A provider's own error: kept whole so it can be passed through with its status and body.
async fn provider_error(resp: Response<UpstreamBody>, deadline: Instant, mode: Mode) -> Failure {
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    let retry_after = parts
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = match timeout_at(deadline.into(), Limited::new(body, MAX_UPSTREAM_ERROR_BODY).collect()).await
    {
        Ok(Ok(c)) => c.to_bytes(),
        _ => {
            let mut f = Failure::new(
                Reason::BadResponse,
                format!("answered {status} and its error body could not be read"),
            );
            f.retry_after = retry_after;
            return f;
        }
    };
    let aws_type = parts.headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok());
    let converted = adapt::convert_error(mode, status, aws_type, &bytes);
    let mut r = Response::new(RespBody::full(converted.clone().unwrap_or_else(|| bytes.clone())));
    *r.status_mut() = parts.status;
    for h in [CONTENT_TYPE, RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&h) {
            r.headers_mut().insert(h, v.clone());
        }
    }
    if converted.is_some() {
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Failure {
        reason: Reason::Status(status),
        message: format!("answered {status}{}", detail(&bytes)),
        retry_after,
        passthrough: Some(r),
    }
}

/// The provider's error message, briefly, for the list of attempts.
fn detail(body: &Bytes) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| {
        let m = v["error"]["message"].as_str().or_else(|| v["message"].as_str())?;
        Some(m.chars().take(200).collect::<String>())
    });
    msg.map(|m| format!(" ({m})")).unwrap_or_default()
}
