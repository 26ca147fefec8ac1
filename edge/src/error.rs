//! Every way a request can fail, mapped once to a status, an error type and a code, and rendered
//! in the client's API format.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::quota::RateStatus;

/// The API format the client speaks; errors are rendered in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFormat {
    OpenAi,
    /// `/v1/messages`: errors as `{"type":"error","error":{"type","message"}}`.
    Anthropic,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing API key: send it as `Authorization: Bearer <key>` or `x-api-key`")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this API key has been revoked")]
    KeyRevoked,
    #[error("this API key has expired")]
    KeyExpired,
    #[error("this API key may not use model {0:?}")]
    ModelNotAllowed(String),
    #[error("the model {0:?} does not exist")]
    UnknownModel(String),
    #[error("request body exceeds the limit of {0} bytes")]
    BodyTooLarge(usize),
    #[error("the client did not send the request body in time")]
    BodyTimeout,
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("the gateway is not ready: no configuration applied yet")]
    NotReady,
    #[error("upstream {provider}: {reason}")]
    Upstream { provider: String, reason: String },
    #[error("upstream {provider} timed out after {after_ms} ms")]
    UpstreamTimeout { provider: String, after_ms: u64 },
    #[error("{0}")]
    NotSupported(String),
    #[error("budget exceeded for {}", describe(scope))]
    BudgetExceeded { scope: String },
    #[error("rate limit reached for {} on {} per minute: limit {limit}, remaining {remaining}", describe(scope), if *tokens { "tokens" } else { "requests" })]
    RateLimited { scope: String, tokens: bool, limit: u64, remaining: u64, reset: std::time::Duration },
    #[error("all {} attempts failed: {}", attempts.len(), attempts.join("; "))]
    AllAttemptsFailed { attempts: Vec<String>, timeout: bool },
}

/// `key:abc` → `key abc`: how a scope reads in a message.
fn describe(scope: &str) -> String {
    scope.replacen(':', " ", 1)
}

impl From<crate::quota::Refusal> for ApiError {
    fn from(r: crate::quota::Refusal) -> Self {
        match r {
            crate::quota::Refusal::Budget { scope } => Self::BudgetExceeded { scope: scope.to_string() },
            crate::quota::Refusal::Rate { scope, kind, limit, remaining, reset } => Self::RateLimited {
                scope: scope.to_string(),
                tokens: kind == crate::quota::Kind::Tokens,
                limit,
                remaining,
                reset,
            },
        }
    }
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers for one pool.
#[must_use]
pub fn rate_headers(
    tokens: bool,
    limit: u64,
    remaining: u64,
    reset: Duration,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    rate_limit_headers(&[Some(RateStatus { tokens, limit, remaining, reset }), None], &mut out);
    out
}

/// OpenAI's `x-ratelimit-*` headers for each pool given; the reset reads like OpenAI's (`6s`,
/// `1m0s`).
pub fn rate_limit_headers(pools: &[Option<RateStatus>; 2], out: &mut Vec<(HeaderName, HeaderValue)>) {
    // Every answer under a limit carries these, so no formatting machinery: static names, and
    // every value a slice of one buffer (a `HeaderValue` from an integer allocates twice; this
    // was ~4,000 instructions a request with both pools; callgrind, issue 8).
    const REQUESTS: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ];
    const TOKENS: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ];
    let n = pools.iter().flatten().count();
    if n == 0 {
        return;
    }
    let mut buf = BytesMut::with_capacity(n * 48);
    let mut num = itoa::Buffer::new();
    let mut ends = [0; 6];
    let mut k = 0;
    for p in pools.iter().flatten() {
        buf.put_slice(num.format(p.limit).as_bytes());
        ends[k] = buf.len();
        buf.put_slice(num.format(p.remaining).as_bytes());
        ends[k + 1] = buf.len();
        put_reset(&mut buf, p.reset, &mut num);
        ends[k + 2] = buf.len();
        k += 3;
    }
    let buf = buf.freeze();
    out.reserve(n * 3);
    let names = pools.iter().flatten().flat_map(|p| if p.tokens { TOKENS } else { REQUESTS });
    let mut start = 0;
    for (name, end) in names.zip(&ends[..k]) {
        // Digits and `m`/`s` only: always a valid value.
        let v =
            HeaderValue::from_maybe_shared(buf.slice(start..*end)).unwrap_or(HeaderValue::from_static("0"));
        out.push((name, v));
        start = *end;
    }
}

/// OpenAI's form: `1m30s` from a minute up, whole seconds (rounded) below.
fn put_reset(buf: &mut BytesMut, reset: Duration, num: &mut itoa::Buffer) {
    let secs = reset.as_secs();
    if secs >= 60 {
        buf.put_slice(num.format(secs / 60).as_bytes());
        buf.put_u8(b'm');
        buf.put_slice(num.format(secs % 60).as_bytes());
    } else {
        buf.put_slice(num.format((reset.as_millis() as u64 + 500) / 1000).as_bytes());
    }
    buf.put_u8(b's');
}

/// One row of the mapping table: what the client sees.
struct Mapping {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
}

impl ApiError {
    fn mapping(&self) -> Mapping {
        use StatusCode as S;
        let (status, kind, code) = match self {
            Self::InvalidRequest(_) => (S::BAD_REQUEST, "invalid_request_error", None),
            Self::MissingKey => (S::UNAUTHORIZED, "invalid_request_error", Some("missing_api_key")),
            Self::InvalidKey => (S::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key")),
            Self::KeyRevoked => (S::UNAUTHORIZED, "invalid_request_error", Some("key_revoked")),
            Self::KeyExpired => (S::UNAUTHORIZED, "invalid_request_error", Some("key_expired")),
            Self::ModelNotAllowed(_) => (S::FORBIDDEN, "permission_error", Some("model_not_allowed")),
            Self::UnknownModel(_) => (S::NOT_FOUND, "invalid_request_error", Some("model_not_found")),
            Self::BodyTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("body_too_large")),
            Self::BodyTimeout => (S::REQUEST_TIMEOUT, "invalid_request_error", Some("request_timeout")),
            Self::NoRoute { .. } => (S::NOT_FOUND, "invalid_request_error", Some("unknown_url")),
            Self::MethodNotAllowed { .. } => {
                (S::METHOD_NOT_ALLOWED, "invalid_request_error", Some("method_not_allowed"))
            }
            Self::NotReady => (S::SERVICE_UNAVAILABLE, "api_error", Some("not_ready")),
            Self::Upstream { .. } => (S::BAD_GATEWAY, "api_error", Some("upstream_error")),
            Self::UpstreamTimeout { .. } => (S::GATEWAY_TIMEOUT, "api_error", Some("upstream_timeout")),
            Self::NotSupported(_) => (S::BAD_REQUEST, "invalid_request_error", Some("not_supported")),
            Self::BudgetExceeded { .. } => {
                (S::TOO_MANY_REQUESTS, "insufficient_quota", Some("budget_exceeded"))
            }
            Self::RateLimited { tokens: false, .. } => {
                (S::TOO_MANY_REQUESTS, "requests", Some("rate_limit_exceeded"))
            }
            Self::RateLimited { tokens: true, .. } => {
                (S::TOO_MANY_REQUESTS, "tokens", Some("rate_limit_exceeded"))
            }
            Self::AllAttemptsFailed { timeout: true, .. } => {
                (S::GATEWAY_TIMEOUT, "api_error", Some("upstream_timeout"))
            }
            Self::AllAttemptsFailed { timeout: false, .. } => {
                (S::BAD_GATEWAY, "api_error", Some("upstream_error"))
            }
        };
        Mapping { status, kind, code }
    }

    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.mapping().status
    }

    /// A short, fixed label for metrics: never a client-typed string.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        self.mapping().code.unwrap_or("invalid_request")
    }

    /// The error body in the client's format.
    #[must_use]
    pub fn body(&self, format: ClientFormat) -> Bytes {
        let m = self.mapping();
        let body = match format {
            ClientFormat::OpenAi => serde_json::json!({
                "error": { "message": self.to_string(), "type": m.kind, "param": null, "code": m.code }
            }),
            ClientFormat::Anthropic => {
                llmgw_translate::anthropic_client::error(m.status.as_u16(), &self.to_string())
            }
        };
        Bytes::from(body.to_string())
    }

    /// Headers the error carries: `Retry-After` and `x-ratelimit-*` for rate limits, and
    /// `x-should-retry: false` for an exhausted budget (OpenAI's SDKs retry 429s otherwise).
    #[must_use]
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            Self::RateLimited { tokens, limit, remaining, reset, .. } => {
                let secs = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
                let mut h = vec![(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)))];
                h.extend(rate_headers(*tokens, *limit, *remaining, *reset));
                h
            }
            Self::BudgetExceeded { .. } => {
                vec![(HeaderName::from_static("x-should-retry"), HeaderValue::from_static("false"))]
            }
            _ => Vec::new(),
        }
    }

    #[must_use]
    pub fn content_type() -> HeaderValue {
        HeaderValue::from_static("application/json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let e = ApiError::UnknownModel("gpt-9".into());
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_slice(&e.body(ClientFormat::OpenAi)).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));
    }

    #[test]
    fn anthropic_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&ApiError::InvalidKey.body(ClientFormat::Anthropic)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["message"], "invalid API key");
    }

    #[test]
    fn rate_headers_use_openais_names_and_reset_form() {
        use std::time::Duration;
        let h = rate_headers(true, 1000, 250, Duration::from_secs(90));
        let text: Vec<_> = h.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
        assert_eq!(
            text,
            [
                "x-ratelimit-limit-tokens: 1000",
                "x-ratelimit-remaining-tokens: 250",
                "x-ratelimit-reset-tokens: 1m30s"
            ]
        );
        let reset = |d| rate_headers(false, 1, 0, d)[2].1.to_str().unwrap().to_owned();
        assert_eq!(reset(Duration::from_millis(1_600)), "2s");
        assert_eq!(reset(Duration::from_millis(400)), "0s");
        assert_eq!(reset(Duration::from_secs(3_600)), "60m0s");
        assert_eq!(rate_headers(false, 1, 0, Duration::ZERO)[0].0, "x-ratelimit-limit-requests");
        // Both pools: six values cut from one buffer, each where it belongs.
        let both = [
            Some(RateStatus { tokens: false, limit: 60, remaining: 7, reset: Duration::from_secs(61) }),
            Some(RateStatus { tokens: true, limit: 1_000_000, remaining: 123_456, reset: Duration::ZERO }),
        ];
        let mut h = Vec::new();
        rate_limit_headers(&both, &mut h);
        let text: Vec<_> = h.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
        assert_eq!(
            text,
            [
                "x-ratelimit-limit-requests: 60",
                "x-ratelimit-remaining-requests: 7",
                "x-ratelimit-reset-requests: 1m1s",
                "x-ratelimit-limit-tokens: 1000000",
                "x-ratelimit-remaining-tokens: 123456",
                "x-ratelimit-reset-tokens: 0s"
            ]
        );
        rate_limit_headers(&[None, None], &mut h);
        assert_eq!(h.len(), 6);
    }
}
