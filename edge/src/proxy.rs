//! The request path: auth, parse, route, forward, relay, record.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::timeout_at;

use crate::auth::authenticate;
use crate::body::RequestBody;
use crate::config::{EdgeConfig, Endpoint};
use crate::error::{ApiError, ClientFormat};
use crate::provider::openai;
use crate::record::{RequestRecord, Routed};
use crate::relay::{RespBody, SseRelay, StartError};
use crate::state::Edge;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_PROVIDER: HeaderName = HeaderName::from_static("x-llmgw-provider");
static X_MODEL: HeaderName = HeaderName::from_static("x-llmgw-model");

/// What an upstream may send back for one non-streamed answer (a large embeddings batch fits).
const MAX_UPSTREAM_BODY: usize = 64 << 20;
/// An upstream error body is relayed to the client; anything longer is not an error message.
const MAX_UPSTREAM_ERROR_BODY: usize = 1 << 20;

type Resp = Response<RespBody>;

/// The hyper service: never fails at the HTTP level, every error is a response.
pub async fn handle(edge: Arc<Edge>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let start = Instant::now();
    let request_id = request_id(req.headers());
    let mut resp = dispatch(edge, req, request_id.clone(), start).await;
    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    Ok(resp)
}

fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    let id = format!("{:032x}", rand::random::<u128>());
    HeaderValue::try_from(id).unwrap_or(HeaderValue::from_static("-"))
}

async fn dispatch(edge: Arc<Edge>, req: Request<Incoming>, request_id: HeaderValue, start: Instant) -> Resp {
    let endpoint = match req.uri().path() {
        "/v1/chat/completions" => Some((Endpoint::ChatCompletions, "/v1/chat/completions")),
        "/v1/completions" => Some((Endpoint::Completions, "/v1/completions")),
        "/v1/embeddings" => Some((Endpoint::Embeddings, "/v1/embeddings")),
        _ => None,
    };
    let method = req.method().clone();
    match (endpoint, req.uri().path()) {
        (Some((endpoint, path)), _) if method == Method::POST => {
            let mut record = Some(RequestRecord::new(edge.clone(), request_id, start, path));
            let mut routed = None;
            let result = proxy(&edge, req, endpoint, &mut record, &mut routed).await;
            let mut resp = match result {
                Ok(resp) => {
                    if let Some(r) = record.as_mut() {
                        r.finish(resp.status().as_u16(), None);
                    }
                    resp
                }
                Err(e) => {
                    if let Some(r) = record.as_mut() {
                        r.finish(e.status().as_u16(), Some(e.metric_label()));
                    }
                    error_response(&e)
                }
            };
            if let Some((provider, model)) = routed {
                resp.headers_mut().insert(X_PROVIDER.clone(), provider);
                resp.headers_mut().insert(X_MODEL.clone(), model);
            }
            resp
        }
        (_, "/v1/models") if method == Method::GET => {
            list_models(&edge, req.headers()).unwrap_or_else(|e| error_response(&e))
        }
        (_, "/healthz") if method == Method::GET => text(StatusCode::OK, "ok\n"),
        (_, "/readyz") if method == Method::GET => match edge.ready() {
            true => text(StatusCode::OK, "ready\n"),
            false => error_response(&ApiError::NotReady),
        },
        (Some(_), path) | (None, path @ ("/v1/models" | "/healthz" | "/readyz")) => {
            error_response(&ApiError::MethodNotAllowed { method: method.to_string(), path: path.to_owned() })
        }
        (None, path) => {
            error_response(&ApiError::NoRoute { method: method.to_string(), path: truncate(path) })
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(RespBody::full(body));
    *r.status_mut() = status;
    r
}

fn json(status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(RespBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, ApiError::content_type());
    r
}

pub fn error_response(e: &ApiError) -> Resp {
    json(e.status(), e.body(ClientFormat::OpenAi))
}

fn list_models(edge: &Edge, headers: &http::HeaderMap) -> Result<Resp, ApiError> {
    let cfg = edge.config().ok_or(ApiError::NotReady)?;
    let key = authenticate(&cfg, headers)?;
    let data: Vec<_> = cfg
        .model_order
        .iter()
        .filter(|m| key.allows(&cfg, m))
        .map(|m| serde_json::json!({ "id": &**m, "object": "model", "created": 0, "owned_by": "llmgw" }))
        .collect();
    let body = serde_json::json!({ "object": "list", "data": data });
    Ok(json(StatusCode::OK, Bytes::from(body.to_string())))
}

async fn read_body(req: Request<Incoming>, edge: &Edge) -> Result<Bytes, ApiError> {
    let max = edge.limits.max_body_bytes;
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::BodyTooLarge(max));
    }
    let collected =
        tokio::time::timeout(edge.limits.body_read_timeout, Limited::new(req.into_body(), max).collect())
            .await
            .map_err(|_| ApiError::BodyTimeout)?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge(max)),
        Err(e) => Err(ApiError::InvalidRequest(format!("failed to read the request body: {e}"))),
    }
}

/// The error and its causes on one line: hyper's own message alone ("client error (Connect)")
/// does not say what went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn proxy(
    edge: &Arc<Edge>,
    req: Request<Incoming>,
    endpoint: Endpoint,
    record: &mut Option<RequestRecord>,
    routed_headers: &mut Option<(HeaderValue, HeaderValue)>,
) -> Result<Resp, ApiError> {
    let cfg: Arc<EdgeConfig> = edge.config().ok_or(ApiError::NotReady)?;
    let key = authenticate(&cfg, req.headers())?;
    let rec = record.as_mut().ok_or(ApiError::NotReady)?;
    rec.team = key.team(&cfg);
    rec.key = Some(key.clone());
    let bytes = read_body(req, edge).await?;
    let body = RequestBody::parse(&bytes)?;
    let route = cfg.models.get(&*body.model).ok_or_else(|| ApiError::UnknownModel(truncate(&body.model)))?;
    if !key.allows(&cfg, &route.name) {
        return Err(ApiError::ModelNotAllowed(route.name.to_string()));
    }
    // Routing strategies and fallback arrive with their own issue; for now the first target.
    let target = route.targets.first().ok_or_else(|| ApiError::UnknownModel(route.name.to_string()))?;
    let provider = &target.provider;
    *routed_headers = Some((
        HeaderValue::try_from(&*provider.name).unwrap_or(HeaderValue::from_static("-")),
        HeaderValue::try_from(&*target.model).unwrap_or(HeaderValue::from_static("-")),
    ));
    let stream = body.stream && endpoint != Endpoint::Embeddings;
    rec.stream = stream;
    rec.routed = Some(Routed {
        model: route.name.clone(),
        provider: provider.name.clone(),
        upstream_model: target.model.clone(),
        pricing: target.pricing,
    });
    if !provider.kind.is_openai_wire() {
        return Err(ApiError::UnsupportedProvider {
            provider: provider.name.to_string(),
            kind: provider.kind.as_str(),
        });
    }
    let upstream_body = body.rewrite(&target.model, stream);
    let client_wants_usage = body.include_usage;
    drop(body);
    let upstream_req = openai::request(provider, endpoint, upstream_body, stream)
        .map_err(|e| upstream_err(&provider.name, format!("cannot build the request: {e}")))?;
    let deadline = rec.start + provider.timeout;
    let timeout = || ApiError::UpstreamTimeout {
        provider: provider.name.to_string(),
        after_ms: provider.timeout.as_millis() as u64,
    };
    let resp = match timeout_at(deadline.into(), provider.client.request(upstream_req)).await {
        Err(_) => return Err(timeout()),
        Ok(Err(e)) => return Err(upstream_err(&provider.name, chain(&e))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if !status.is_success() {
        return relay_error(resp, deadline, &provider.name).await;
    }
    if stream {
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(upstream_err(
                &provider.name,
                "the upstream answered a stream request without an event stream".into(),
            ));
        }
        let Some(rec) = record.take() else { return Err(ApiError::NotReady) };
        let relay = SseRelay::new(resp.into_body(), client_wants_usage, deadline, rec);
        let relay = match relay.start().await {
            Ok(r) => r,
            Err((e, rec)) => {
                *record = Some(rec);
                return Err(match e {
                    StartError::Timeout => timeout(),
                    StartError::ClosedEarly => upstream_err(
                        &provider.name,
                        "the upstream closed the stream before sending any event".into(),
                    ),
                    StartError::Malformed(m) | StartError::Read(m) => upstream_err(&provider.name, m),
                });
            }
        };
        let mut r = Response::new(RespBody::Sse(Box::new(relay)));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(r);
    }
    let collected = match timeout_at(
        deadline.into(),
        Limited::new(resp.into_body(), MAX_UPSTREAM_BODY).collect(),
    )
    .await
    {
        Err(_) => return Err(timeout()),
        Ok(Err(e)) => {
            return Err(upstream_err(
                &provider.name,
                format!("the upstream response could not be read to the end: {}", chain(&*e)),
            ));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let parsed: openai::Completion = serde_json::from_slice(&collected).map_err(|e| {
        upstream_err(
            &provider.name,
            format!("the upstream answered 200 with a body that is not the expected JSON: {e}"),
        )
    })?;
    if let (Some(u), Some(rec)) = (parsed.usage, record.as_mut()) {
        rec.tokens = openai::ProviderUsage::tokens(&u);
    }
    Ok(json(StatusCode::OK, collected))
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn upstream_err(provider: &str, reason: String) -> ApiError {
    metrics::counter!(crate::metrics::UPSTREAM_ERRORS, "provider" => provider.to_owned(), "reason" => "bad_response").increment(1);
    ApiError::Upstream { provider: provider.to_owned(), reason }
}

/// A provider's own error, passed through with its status and body.
async fn relay_error(resp: Response<Incoming>, deadline: Instant, provider: &str) -> Result<Resp, ApiError> {
    let (parts, body) = resp.into_parts();
    metrics::counter!(crate::metrics::UPSTREAM_ERRORS, "provider" => provider.to_owned(), "reason" => status_class(parts.status)).increment(1);
    let bytes = match timeout_at(deadline.into(), Limited::new(body, MAX_UPSTREAM_ERROR_BODY).collect()).await
    {
        Ok(Ok(c)) => c.to_bytes(),
        _ => {
            return Err(ApiError::Upstream {
                provider: provider.to_owned(),
                reason: format!("answered {} and its error body could not be read", parts.status),
            });
        }
    };
    let mut r = Response::new(RespBody::full(bytes));
    *r.status_mut() = parts.status;
    for h in [CONTENT_TYPE, RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&h) {
            r.headers_mut().insert(h, v.clone());
        }
    }
    Ok(r)
}
