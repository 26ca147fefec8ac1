//! Which provider's API a request speaks and which endpoint it calls, read from the method and
//! the path alone: one port serves every format, so a gateway config can point every provider
//! kind at the same mock.

use std::borrow::Cow;

use http::Method;
use serde_json::Value;

/// A provider API, as a gateway's provider kind names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
    Bedrock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// OpenAI and Azure.
    Chat,
    Completions,
    Embeddings,
    Models,
    /// OpenAI's Responses API.
    Responses,
    /// Anthropic.
    Messages,
    CountTokens,
    /// Gemini `generateContent` / `streamGenerateContent`.
    Generate,
    /// Bedrock `Converse` / `ConverseStream`.
    Converse,
}

/// A request the mock turns down before reading its body (a missing key, header or query
/// parameter), answered in the error shape of the API it was sent to.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    /// The API's own error type when it is not the one that status usually gets.
    pub(crate) kind: Option<&'static str>,
    pub(crate) message: Cow<'static, str>,
}

impl Refusal {
    pub(crate) fn new(
        status: u16,
        kind: Option<&'static str>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self { status, kind, message: message.into() }
    }
}

/// A header's value when it is present, text and not blank.
pub(crate) fn header<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().filter(|v| !v.trim().is_empty())
}

/// A routed request: the API, the endpoint, and what the path says beyond that.
#[derive(Debug)]
pub(crate) struct Route<'a> {
    pub(crate) wire: Wire,
    pub(crate) endpoint: Endpoint,
    /// Gemini and Bedrock: the path names the streaming method.
    pub(crate) path_stream: bool,
    /// The model (Gemini, Bedrock) or deployment (Azure) the path names, percent-decoded.
    pub(crate) path_model: Option<String>,
    /// The raw query string, `""` when there is none.
    pub(crate) query: &'a str,
}

impl<'a> Route<'a> {
    pub(crate) fn new(method: &Method, path: &str, query: Option<&'a str>) -> Option<Self> {
        let route =
            |wire, endpoint| Route { wire, endpoint, path_stream: false, path_model: None, query: "" };
        let mut route = if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            let (deployment, action) = rest.split_once('/')?;
            let endpoint = match (method, action) {
                (&Method::POST, "chat/completions") => Endpoint::Chat,
                (&Method::POST, "completions") => Endpoint::Completions,
                (&Method::POST, "embeddings") => Endpoint::Embeddings,
                _ => return None,
            };
            Route { path_model: Some(percent_decode(deployment)), ..route(Wire::Azure, endpoint) }
        } else if let Some(rest) = path.strip_prefix("/model/") {
            // A model ARN is percent-encoded, `/` included, so the action is after the last `/`.
            let (model, action) = rest.rsplit_once('/')?;
            let path_stream = match (method, action) {
                (&Method::POST, "converse") => false,
                (&Method::POST, "converse-stream") => true,
                _ => return None,
            };
            Route {
                path_stream,
                path_model: Some(percent_decode(model)),
                ..route(Wire::Bedrock, Endpoint::Converse)
            }
        } else if let Some(rest) =
            ["/v1beta/models/", "/v1/models/"].iter().find_map(|p| path.strip_prefix(p))
        {
            // `{model}:{method}`; a `:` inside the model is percent-encoded or before the last one.
            let (model, action) = rest.rsplit_once(':')?;
            let path_stream = match (method, action) {
                (&Method::POST, "generateContent") => false,
                (&Method::POST, "streamGenerateContent") => true,
                _ => return None,
            };
            Route {
                path_stream,
                path_model: Some(percent_decode(model)),
                ..route(Wire::Gemini, Endpoint::Generate)
            }
        } else {
            // `/v1` is optional so a client configured without it still reaches the mock.
            let path = path.strip_prefix("/v1").unwrap_or(path);
            let (wire, endpoint) = match (method, path) {
                (&Method::POST, "/chat/completions") => (Wire::OpenAi, Endpoint::Chat),
                (&Method::POST, "/completions") => (Wire::OpenAi, Endpoint::Completions),
                (&Method::POST, "/embeddings") => (Wire::OpenAi, Endpoint::Embeddings),
                (&Method::GET, "/models") => (Wire::OpenAi, Endpoint::Models),
                (&Method::POST, "/responses") => (Wire::OpenAi, Endpoint::Responses),
                (&Method::POST, "/messages") => (Wire::Anthropic, Endpoint::Messages),
                (&Method::POST, "/messages/count_tokens") => (Wire::Anthropic, Endpoint::CountTokens),
                _ => return None,
            };
            route(wire, endpoint)
        };
        route.query = query.unwrap_or("");
        Some(route)
    }

    /// Whether the request asks for a stream: the path for Gemini and Bedrock, the body's
    /// `"stream": true` elsewhere.
    pub(crate) fn stream(&self, body: &Value) -> bool {
        match self.endpoint {
            Endpoint::Chat | Endpoint::Completions | Endpoint::Responses | Endpoint::Messages => {
                body.get("stream").and_then(Value::as_bool) == Some(true)
            }
            Endpoint::Generate | Endpoint::Converse => self.path_stream,
            Endpoint::Embeddings | Endpoint::Models | Endpoint::CountTokens => false,
        }
    }

    /// The hit-count name of a request to this endpoint.
    pub(crate) fn hit_name(&self, stream: bool) -> &'static str {
        let azure = self.wire == Wire::Azure;
        match (self.endpoint, stream) {
            (Endpoint::Chat, false) if azure => "azure_chat",
            (Endpoint::Chat, true) if azure => "azure_chat_stream",
            (Endpoint::Completions, false) if azure => "azure_completions",
            (Endpoint::Completions, true) if azure => "azure_completions_stream",
            (Endpoint::Embeddings, _) if azure => "azure_embeddings",
            (Endpoint::Chat, false) => "chat",
            (Endpoint::Chat, true) => "chat_stream",
            (Endpoint::Completions, false) => "completions",
            (Endpoint::Completions, true) => "completions_stream",
            (Endpoint::Embeddings, _) => "embeddings",
            (Endpoint::Models, _) => "models",
            (Endpoint::Responses, false) => "responses",
            (Endpoint::Responses, true) => "responses_stream",
            (Endpoint::Messages, false) => "messages",
            (Endpoint::Messages, true) => "messages_stream",
            (Endpoint::CountTokens, _) => "count_tokens",
            (Endpoint::Generate, false) => "gemini",
            (Endpoint::Generate, true) => "gemini_stream",
            (Endpoint::Converse, false) => "converse",
            (Endpoint::Converse, true) => "converse_stream",
        }
    }

    /// The first value of a query parameter, percent-decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<Cow<'a, str>> {
        query_param(self.query, name)
    }
}

pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            if value.contains(['%', '+']) {
                Cow::Owned(percent_decode(&value.replace('+', " ")))
            } else {
                Cow::Borrowed(value)
            }
        })
    })
}

/// `%XX` escapes to bytes, read as UTF-8 (lossily); a `%` not followed by two hex digits stays.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_wire() {
        let r = Route::new(&Method::POST, "/v1/chat/completions", None).unwrap();
        assert_eq!((r.wire, r.endpoint), (Wire::OpenAi, Endpoint::Chat));
        let r = Route::new(&Method::POST, "/messages", None).unwrap();
        assert_eq!((r.wire, r.endpoint), (Wire::Anthropic, Endpoint::Messages));
        let r = Route::new(&Method::POST, "/v1/messages/count_tokens", None).unwrap();
        assert_eq!(r.hit_name(false), "count_tokens");
        for path in ["/v1/responses", "/responses"] {
            let r = Route::new(&Method::POST, path, None).unwrap();
            assert_eq!((r.wire, r.endpoint), (Wire::OpenAi, Endpoint::Responses));
            assert_eq!((r.hit_name(false), r.hit_name(true)), ("responses", "responses_stream"));
        }

        let r =
            Route::new(&Method::POST, "/openai/deployments/my%20dep/chat/completions", Some("api-version=1"))
                .unwrap();
        assert_eq!((r.wire, r.hit_name(true)), (Wire::Azure, "azure_chat_stream"));
        assert_eq!(r.path_model.as_deref(), Some("my dep"));
        assert_eq!(r.query_param("api-version").as_deref(), Some("1"));

        let r = Route::new(
            &Method::POST,
            "/v1beta/models/gemini-2.0-flash%23mock%3Astatus%3D500:streamGenerateContent",
            Some("alt=sse"),
        )
        .unwrap();
        assert_eq!((r.wire, r.path_stream), (Wire::Gemini, true));
        assert_eq!(r.path_model.as_deref(), Some("gemini-2.0-flash#mock:status=500"));

        let r = Route::new(
            &Method::POST,
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
            None,
        )
        .unwrap();
        assert_eq!((r.wire, r.hit_name(r.path_stream)), (Wire::Bedrock, "converse_stream"));
        assert_eq!(r.path_model.as_deref(), Some("anthropic.claude-3-5-sonnet-20240620-v1:0"));

        assert!(Route::new(&Method::GET, "/v1/messages", None).is_none());
        assert!(Route::new(&Method::POST, "/model/x/invoke", None).is_none());
        assert!(Route::new(&Method::POST, "/v1beta/models/x:embedContent", None).is_none());
    }

    #[test]
    fn percent_decoding_keeps_stray_percents() {
        assert_eq!(percent_decode("a%3Ab%2fc%zz%4"), "a:b/c%zz%4");
        assert_eq!(query_param("a=1&key=x%20y&b", "key").as_deref(), Some("x y"));
        assert_eq!(query_param("a=1&b", "b").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "c"), None);
    }
}
