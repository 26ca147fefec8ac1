//! The request path: auth, parse, route, forward, relay, record.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::adapt::Parsed;
use crate::auth::authenticate;
use crate::balance::Estimate;
use crate::body::RequestBody;
use crate::config::{EdgeConfig, Endpoint, KeyEntry, ModelRoute};
use crate::error::{ApiError, ClientFormat};
use crate::forward::{self, RouteMeta};
use crate::provider::ClientHeaders;
use crate::quota::{Ask, Kind, Window};
use crate::record::RequestRecord;
use crate::relay::RespBody;
use crate::state::Edge;
use llmgw_shared::pricing::{Tokens, cost_micro_usd};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_PROVIDER: HeaderName = HeaderName::from_static("x-llmgw-provider");
static X_MODEL: HeaderName = HeaderName::from_static("x-llmgw-model");
static X_ATTEMPTS: HeaderName = HeaderName::from_static("x-llmgw-attempts");

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
    let mut hex = [0u8; 32];
    // `hex` rather than `format!`: this runs for every request.
    let _ = hex::encode_to_slice(rand::random::<u128>().to_be_bytes(), &mut hex);
    HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("-"))
}

async fn dispatch(edge: Arc<Edge>, req: Request<Incoming>, request_id: HeaderValue, start: Instant) -> Resp {
    let endpoint = match req.uri().path() {
        "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
        "/v1/completions" => Some(Endpoint::Completions),
        "/v1/embeddings" => Some(Endpoint::Embeddings),
        "/v1/responses" => Some(Endpoint::Responses),
        "/v1/messages" => Some(Endpoint::Messages),
        "/v1/messages/count_tokens" => Some(Endpoint::CountTokens),
        _ => None,
    };
    let method = req.method().clone();
    match (endpoint, req.uri().path()) {
        (Some(endpoint), _) if method == Method::POST => {
            let format = endpoint.client_format();
            let mut record = Some(RequestRecord::new(edge.clone(), request_id, start, endpoint.path()));
            let mut meta = RouteMeta::default();
            let mut rate_headers = Vec::new();
            let result = proxy(&edge, req, endpoint, &mut record, &mut meta, &mut rate_headers).await;
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
                    error_in(&e, format)
                }
            };
            let h = resp.headers_mut();
            if let Some(provider) = meta.provider {
                h.insert(X_PROVIDER.clone(), provider);
            }
            if let Some(model) = meta.model {
                h.insert(X_MODEL.clone(), model);
            }
            if meta.attempts > 0 {
                h.insert(X_ATTEMPTS.clone(), HeaderValue::from(meta.attempts));
            }
            for (k, v) in rate_headers {
                h.entry(k).or_insert(v);
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
        (Some(endpoint), path) => error_in(
            &ApiError::MethodNotAllowed { method: method.to_string(), path: path.to_owned() },
            endpoint.client_format(),
        ),
        (None, path @ ("/v1/models" | "/healthz" | "/readyz")) => {
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
    error_in(e, ClientFormat::OpenAi)
}

fn error_in(e: &ApiError, format: ClientFormat) -> Resp {
    let mut r = json(e.status(), e.body(format));
    for (k, v) in e.headers() {
        r.headers_mut().insert(k, v);
    }
    r
}

/// The output a request may produce when neither it nor its alias sets a cap: what its
/// reservation assumes, so the overspend bound holds only as far as real answers stay under it.
const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// What a request must reserve: its worst-case cost in every budget on its path (key,
/// project, team), one request and its worst-case tokens in every rate limit.
fn quota_asks(cfg: &EdgeConfig, key: &KeyEntry, route: &ModelRoute, estimate: Estimate) -> Vec<Ask> {
    let project = key.project.as_deref().and_then(|p| cfg.projects.get(p));
    let team = key
        .team
        .as_deref()
        .or_else(|| project.and_then(|p| p.team.as_deref()))
        .and_then(|t| cfg.teams.get(t));
    let scopes = [key.quota.as_deref(), project.map(|p| &p.quota), team.map(|t| &t.quota)];
    if scopes.iter().flatten().all(|l| !l.any()) {
        return Vec::new();
    }
    let tokens = Tokens { input: estimate.input_tokens, output: estimate.output_tokens, cached_input: 0 };
    let usd = route.targets.iter().map(|t| cost_micro_usd(t.pricing.as_ref(), tokens)).max().unwrap_or(0);
    let n = scopes
        .iter()
        .flatten()
        .map(|l| usize::from(l.budget.is_some()) + usize::from(l.rpm > 0) + usize::from(l.tpm > 0));
    let mut asks = Vec::with_capacity(n.sum());
    for l in scopes.into_iter().flatten() {
        let ask = |kind, amount, limit, window| Ask { scope: l.scope.clone(), kind, amount, limit, window };
        if let Some((limit, period)) = l.budget {
            asks.push(ask(Kind::Usd, usd, limit, Window::Budget(period)));
        }
        if l.rpm > 0 {
            asks.push(ask(Kind::Requests, 1, l.rpm, Window::Minute));
        }
        if l.tpm > 0 {
            asks.push(ask(Kind::Tokens, tokens.input + tokens.output, l.tpm, Window::Minute));
        }
    }
    asks
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

async fn proxy(
    edge: &Arc<Edge>,
    req: Request<Incoming>,
    endpoint: Endpoint,
    record: &mut Option<RequestRecord>,
    meta: &mut RouteMeta,
    rate_headers: &mut Vec<(HeaderName, HeaderValue)>,
) -> Result<Resp, ApiError> {
    let cfg: Arc<EdgeConfig> = edge.config().ok_or(ApiError::NotReady)?;
    let key = authenticate(&cfg, req.headers())?;
    let headers = ClientHeaders::from(req.headers());
    let rec = record.as_mut().ok_or(ApiError::NotReady)?;
    rec.team = key.team(&cfg);
    rec.key = Some(key.clone());
    let waited = Instant::now();
    let bytes = read_body(req, edge).await?;
    rec.client_wait = waited.elapsed();
    let body = RequestBody::parse(&bytes)?;
    let route = cfg.models.get(&*body.model).ok_or_else(|| ApiError::UnknownModel(truncate(&body.model)))?;
    if !key.allows(&cfg, &route.name) {
        return Err(ApiError::ModelNotAllowed(route.name.to_string()));
    }
    let stream = body.stream && !matches!(endpoint, Endpoint::Embeddings | Endpoint::CountTokens);
    rec.stream = stream;
    // Worst case for least_cost and quota: ~4 bytes a token in, the cap (or the alias's
    // default) out.
    let estimate = Estimate {
        input_tokens: bytes.len() as u64 / 4,
        output_tokens: body.max_tokens.unwrap_or(match route.max_output_tokens {
            0 => DEFAULT_MAX_OUTPUT_TOKENS,
            n => u64::from(n),
        }),
    };
    let asks = quota_asks(&cfg, &key, route, estimate);
    if !asks.is_empty() {
        let reservation = edge.quota.reserve(&asks).await.map_err(ApiError::from)?;
        crate::error::rate_limit_headers(&reservation.rate, rate_headers);
        rec.reservation = Some(reservation);
    }
    let req = forward::Request {
        body: &body,
        raw: &bytes,
        parsed: Parsed::default(),
        endpoint,
        client: endpoint.client_format(),
        headers,
        stream,
        estimate,
    };
    forward::forward(route, &req, record, meta).await
}
