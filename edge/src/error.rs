//! Every way a request can fail, mapped once to a status, an error type and a code, and rendered
//! in the client's API format.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

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
    #[error("all {} attempts failed: {}", attempts.len(), attempts.join("; "))]
    AllAttemptsFailed { attempts: Vec<String>, timeout: bool },
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
}
