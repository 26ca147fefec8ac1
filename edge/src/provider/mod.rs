//! How the edge reaches each provider kind: where a request goes (per target, since Azure,
//! Gemini and Bedrock put the model in the URL), how it authenticates, and the wire format
//! its answers come in.

pub mod openai;
pub mod taps;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Uri};
use http_body_util::Full;

use crate::config::{Endpoint, ProviderKind, Target};

/// The format a provider's answers (bodies, streams, errors) come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI, OpenAI-compatible servers and Azure OpenAI.
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

impl ProviderKind {
    #[must_use]
    pub fn wire(self) -> Wire {
        match self {
            Self::OpenAi | Self::OpenAiCompatible | Self::AzureOpenAi => Wire::OpenAi,
            Self::Anthropic => Wire::Anthropic,
            Self::Gemini => Wire::Gemini,
            Self::Bedrock => Wire::Bedrock,
        }
    }

    /// The header a credential goes in, and whether its value is `Bearer <credential>`.
    #[must_use]
    pub fn auth_header(self) -> (HeaderName, bool) {
        match self {
            Self::OpenAi | Self::OpenAiCompatible => (http::header::AUTHORIZATION, true),
            Self::AzureOpenAi => (HeaderName::from_static("api-key"), false),
            Self::Anthropic => (HeaderName::from_static("x-api-key"), false),
            Self::Gemini => (HeaderName::from_static("x-goog-api-key"), false),
            // Signed per request; the header is SigV4's, computed from the key pair.
            Self::Bedrock => (http::header::AUTHORIZATION, false),
        }
    }
}

/// Anthropic's API version sent when the provider's `headers` do not name one.
pub const ANTHROPIC_VERSION: HeaderValue = HeaderValue::from_static("2023-06-01");
/// Azure OpenAI's `api-version` when the provider sets none: the latest GA data-plane version.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// A target's upstream URLs, one per endpoint it can serve (streams differ for Gemini and
/// Bedrock). `None`: this provider kind does not serve that endpoint.
#[derive(Debug, Default, Clone)]
pub struct Urls {
    chat: Option<Uri>,
    chat_stream: Option<Uri>,
    completions: Option<Uri>,
    embeddings: Option<Uri>,
    responses: Option<Uri>,
    count_tokens: Option<Uri>,
    /// The `Host` header of every URL above (one base URL), built once: hyper would otherwise
    /// format it on every request.
    host: Option<HeaderValue>,
}

impl Urls {
    /// # Errors
    /// A message when the URL built from `base` is not valid.
    pub fn build(kind: ProviderKind, base: &str, model: &str, api_version: &str) -> Result<Self, String> {
        let base = base.trim_end_matches('/');
        let parse = |s: String| s.parse::<Uri>().map_err(|e| format!("{s:?} is not a valid URL: {e}"));
        let at = |suffix: &str| parse(format!("{base}{suffix}")).map(Some);
        let mut urls = match kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                let chat = at("/chat/completions")?;
                Self {
                    chat_stream: chat.clone(),
                    chat,
                    completions: at("/completions")?,
                    embeddings: at("/embeddings")?,
                    responses: at("/responses")?,
                    count_tokens: None,
                    host: None,
                }
            }
            ProviderKind::AzureOpenAi => {
                let version = if api_version.is_empty() { AZURE_DEFAULT_API_VERSION } else { api_version };
                let deployment = path_segment(model);
                let at = |op: &str| at(&format!("/deployments/{deployment}/{op}?api-version={version}"));
                let chat = at("chat/completions")?;
                Self {
                    chat_stream: chat.clone(),
                    chat,
                    completions: at("completions")?,
                    embeddings: at("embeddings")?,
                    ..Self::default()
                }
            }
            ProviderKind::Anthropic => {
                let chat = at("/messages")?;
                Self {
                    chat_stream: chat.clone(),
                    chat,
                    count_tokens: at("/messages/count_tokens")?,
                    ..Self::default()
                }
            }
            ProviderKind::Gemini => {
                let model = path_segment(model.strip_prefix("models/").unwrap_or(model));
                Self {
                    chat: at(&format!("/models/{model}:generateContent"))?,
                    chat_stream: at(&format!("/models/{model}:streamGenerateContent?alt=sse"))?,
                    ..Self::default()
                }
            }
            ProviderKind::Bedrock => Self {
                chat: at(&llmgw_translate::bedrock::converse_path(model, false))?,
                chat_stream: at(&llmgw_translate::bedrock::converse_path(model, true))?,
                ..Self::default()
            },
        };
        urls.host = urls.chat.as_ref().and_then(host_header);
        Ok(urls)
    }

    /// Where `endpoint` goes for this target. Anthropic-format requests go to the chat URL: for
    /// an Anthropic provider that is `/messages`, for the others the translated chat call.
    #[must_use]
    pub fn get(&self, endpoint: Endpoint, stream: bool) -> Option<&Uri> {
        match endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages if stream => self.chat_stream.as_ref(),
            Endpoint::ChatCompletions | Endpoint::Messages => self.chat.as_ref(),
            Endpoint::Completions => self.completions.as_ref(),
            Endpoint::Embeddings => self.embeddings.as_ref(),
            Endpoint::Responses => self.responses.as_ref(),
            Endpoint::CountTokens => self.count_tokens.as_ref(),
        }
    }
}

/// What hyper would send as `Host` on HTTP/1: the host, and the port unless it is 80. Only for
/// `http://` targets: an `https://` one may speak HTTP/2, where hyper sends `:authority` and no
/// `Host` (and a `Host` that differs from it, as with an explicit `:443`, is malformed).
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host()?;
    match uri.port_u16() {
        Some(p) if p != 80 => HeaderValue::try_from(format!("{host}:{p}")).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

/// `s` percent-encoded as one URL path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An AWS key pair for Bedrock, from a credential `ACCESS_KEY_ID:SECRET_ACCESS_KEY` with an
/// optional `:SESSION_TOKEN`.
pub struct AwsCredential {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredential").field("access_key", &self.access_key).finish_non_exhaustive()
    }
}

impl AwsCredential {
    /// # Errors
    /// A message (without the secret) when the value is not `ID:SECRET[:TOKEN]`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut parts = value.trim().splitn(3, ':');
        let (Some(id), Some(secret)) = (parts.next(), parts.next()) else {
            return Err("a bedrock credential is ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]".into());
        };
        if id.is_empty() || secret.is_empty() {
            return Err("a bedrock credential is ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]".into());
        }
        Ok(Self {
            access_key: id.to_owned(),
            secret_key: secret.to_owned(),
            session_token: parts.next().filter(|t| !t.is_empty()).map(str::to_owned),
        })
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const AWS_EVENT_STREAM: HeaderValue = HeaderValue::from_static("application/vnd.amazon.eventstream");
static ANTHROPIC_VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");
static ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// Headers from the client that matter upstream: Anthropic's version and beta flags, which
/// an Anthropic provider needs to read a passed-through request as the client meant it.
#[derive(Debug, Default, Clone)]
pub struct ClientHeaders {
    pub anthropic_version: Option<HeaderValue>,
    pub anthropic_beta: Option<HeaderValue>,
}

impl ClientHeaders {
    #[must_use]
    pub fn from(headers: &http::HeaderMap) -> Self {
        Self {
            anthropic_version: headers.get(&ANTHROPIC_VERSION_HEADER).cloned(),
            anthropic_beta: headers.get(&ANTHROPIC_BETA).cloned(),
        }
    }
}

/// The upstream request for one attempt at `target`: URL, credential (signed, for Bedrock),
/// the provider's extra headers.
///
/// # Errors
/// When the target's kind does not serve `endpoint`, or signing fails.
pub fn request(
    target: &Target,
    endpoint: Endpoint,
    stream: bool,
    body: Bytes,
    client: &ClientHeaders,
) -> Result<http::Request<Full<Bytes>>, RequestError> {
    let provider = &target.provider;
    let uri = target.urls.get(endpoint, stream).ok_or(RequestError::Unserved)?.clone();
    let mut req = http::Request::new(body);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    if let Some(host) = &target.urls.host {
        h.insert(http::header::HOST, host.clone());
    }
    h.insert(CONTENT_TYPE, JSON);
    let accept = match (stream, provider.kind) {
        (true, ProviderKind::Bedrock) => AWS_EVENT_STREAM,
        (true, _) => EVENT_STREAM,
        (false, _) => JSON,
    };
    h.insert(ACCEPT, accept);
    if provider.kind == ProviderKind::Anthropic {
        let version = client.anthropic_version.clone().unwrap_or(ANTHROPIC_VERSION);
        h.insert(ANTHROPIC_VERSION_HEADER.clone(), version);
        if let Some(beta) = &client.anthropic_beta
            && endpoint != Endpoint::ChatCompletions
        {
            h.insert(ANTHROPIC_BETA.clone(), beta.clone());
        }
    }
    if let Some(c) = provider.credential() {
        h.insert(provider.auth_header.clone(), c.clone());
    }
    for (k, v) in &provider.headers {
        h.insert(k.clone(), v.clone());
    }
    if provider.kind == ProviderKind::Bedrock {
        let c = provider.aws_credential().ok_or(RequestError::Sign("no AWS credential".into()))?;
        llmgw_translate::bedrock::sign(
            &mut req,
            &provider.region,
            &c.access_key,
            &c.secret_key,
            c.session_token.as_deref(),
            std::time::SystemTime::now(),
        )
        .map_err(|e| RequestError::Sign(e.to_string()))?;
    }
    Ok(req.map(Full::new))
}

#[derive(Debug, Clone)]
pub enum RequestError {
    /// The target's provider kind does not serve this endpoint.
    Unserved,
    /// Bedrock: the request could not be signed.
    Sign(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_built_once_for_plain_http_only() {
        let host = |url: &str| host_header(&url.parse().unwrap()).map(|h| h.to_str().unwrap().to_owned());
        assert_eq!(host("http://127.0.0.1:8080/v1").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host("http://vllm.internal/v1").as_deref(), Some("vllm.internal"));
        assert_eq!(host("http://vllm.internal:80/v1").as_deref(), Some("vllm.internal"));
        assert_eq!(host("http://[::1]:8000/v1").as_deref(), Some("[::1]:8000"));
        // HTTPS may be HTTP/2: hyper sends `:authority` there, and `Host` on HTTP/1 itself.
        assert_eq!(host("https://api.openai.com:443/v1"), None);
    }

    #[test]
    fn urls_per_kind() {
        let u = Urls::build(ProviderKind::AzureOpenAi, "https://r.openai.azure.com/openai/", "gpt 4o", "")
            .unwrap();
        assert_eq!(
            u.get(Endpoint::ChatCompletions, true).unwrap().to_string(),
            "https://r.openai.azure.com/openai/deployments/gpt%204o/chat/completions?api-version=2024-10-21"
        );
        assert!(u.get(Endpoint::Responses, false).is_none());
        let u = Urls::build(ProviderKind::Gemini, "https://g/v1beta", "models/gemini-2.0-flash", "").unwrap();
        assert_eq!(
            u.get(Endpoint::Messages, true).unwrap().to_string(),
            "https://g/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
        let u = Urls::build(ProviderKind::Bedrock, "https://b", "anthropic.claude-v2:1", "").unwrap();
        assert_eq!(
            u.get(Endpoint::ChatCompletions, false).unwrap().to_string(),
            "https://b/model/anthropic.claude-v2%3A1/converse"
        );
        let u = Urls::build(ProviderKind::Anthropic, "https://a/v1", "claude", "").unwrap();
        assert_eq!(
            u.get(Endpoint::CountTokens, false).unwrap().to_string(),
            "https://a/v1/messages/count_tokens"
        );
        assert!(u.get(Endpoint::Embeddings, false).is_none());
    }

    #[test]
    fn aws_credentials() {
        let c = AwsCredential::parse("AKID:secret:tok").unwrap();
        assert_eq!(
            (c.access_key.as_str(), c.secret_key.as_str(), c.session_token.as_deref()),
            ("AKID", "secret", Some("tok"))
        );
        assert!(AwsCredential::parse("AKID").is_err());
        assert!(!format!("{c:?}").contains("secret"));
    }
}
