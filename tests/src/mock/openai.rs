//! OpenAI response bodies, serialized from borrowed structs straight to bytes (no
//! `serde_json::Value` on the answer path).

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use super::behaviour::Behaviour;
use super::request::{Call, Input, count_words};

/// The default assistant text: 5 words, so 5 completion tokens.
pub(crate) const DEFAULT_CONTENT: &str = "Hello from the mock provider.";
/// Answered with `content-type: application/json` by `#mock:malformed`.
pub(crate) const MALFORMED_JSON: &[u8] = b"{\"id\": \"mock\", \"choices\": [ this is not json";
/// The SSE event `#mock:malformed` puts in a stream.
pub(crate) const MALFORMED_EVENT: &[u8] = b"data: {\"choices\": [ this is not json\n\n";
pub(crate) const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";
/// Embedding width when the request names no `dimensions`; 4096 caps what one may ask for.
const EMBEDDING_DIMENSIONS: u64 = 8;
const MAX_EMBEDDING_DIMENSIONS: u64 = 4096;

#[derive(Serialize, Clone, Copy, Debug)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// Fields shared by `chat.completion`, `chat.completion.chunk` and `text_completion`.
#[derive(Serialize)]
struct Envelope<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'static str>,
    choices: C,
    /// Absent; `null` on stream chunks when usage was asked for; or the usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// One completion's content and accounting, rendered as whichever body the request needs.
pub(crate) struct Answer<'a> {
    id: String,
    created: u64,
    model: &'a str,
    content: Cow<'a, str>,
    finish_reason: &'static str,
    usage: Usage,
}

impl<'a> Answer<'a> {
    /// Completion tokens are the content's words, cut at `max_tokens` (then
    /// `finish_reason: "length"`); `behaviour.usage` overrides both counts.
    pub(crate) fn new(id: String, call: &Call<'a>, behaviour: &'a Behaviour) -> Self {
        let full = behaviour.content.as_deref().unwrap_or(DEFAULT_CONTENT);
        let words = count_words(full);
        let (content, completion, finish_reason) = match call.max_tokens {
            Some(max) if max < words => {
                let cut: Vec<&str> = full.split_whitespace().take(max as usize).collect();
                (Cow::Owned(cut.join(" ")), max, "length")
            }
            _ => (Cow::Borrowed(full), words, "stop"),
        };
        let (prompt, completion) = behaviour.usage.unwrap_or((call.prompt_tokens, completion));
        Self {
            id,
            created: unix_now(),
            model: call.model,
            content,
            finish_reason,
            usage: usage(prompt, completion),
        }
    }

    fn envelope<C>(&self, object: &'static str, choices: C) -> Envelope<'_, C> {
        Envelope {
            id: &self.id,
            object,
            created: self.created,
            model: self.model,
            system_fingerprint: object.starts_with("chat").then_some("fp_mock"),
            choices,
            usage: None,
        }
    }

    pub(crate) fn chat_json(&self) -> Bytes {
        let mut body = self.envelope(
            "chat.completion",
            [ChatChoice {
                index: 0,
                message: Message { role: "assistant", content: &self.content, refusal: None },
                logprobs: None,
                finish_reason: self.finish_reason,
            }],
        );
        body.usage = Some(Some(self.usage));
        json(&body)
    }

    /// Role delta, one delta per word, the `finish_reason` chunk, the usage chunk if asked for,
    /// then `[DONE]`; `malformed` puts a non-JSON event after the role delta.
    pub(crate) fn chat_events(&self, include_usage: bool, malformed: bool) -> Vec<Bytes> {
        let chunk = |role, content, finish_reason| {
            let mut chunk = self.envelope(
                "chat.completion.chunk",
                [ChunkChoice { index: 0, delta: Delta { role, content }, logprobs: None, finish_reason }],
            );
            chunk.usage = include_usage.then_some(None);
            event(&chunk)
        };
        let mut events = vec![chunk(Some("assistant"), Some(""), None)];
        if malformed {
            events.push(Bytes::from_static(MALFORMED_EVENT));
        }
        events.extend(self.content.split_inclusive(' ').map(|piece| chunk(None, Some(piece), None)));
        events.push(chunk(None, None, Some(self.finish_reason)));
        self.finish_events("chat.completion.chunk", include_usage, &mut events);
        events
    }

    pub(crate) fn completion_json(&self) -> Bytes {
        let mut body = self.envelope(
            "text_completion",
            [TextChoice {
                text: &self.content,
                index: 0,
                logprobs: None,
                finish_reason: Some(self.finish_reason),
            }],
        );
        body.usage = Some(Some(self.usage));
        json(&body)
    }

    /// One chunk per word, an empty-text chunk with `finish_reason`, usage, `[DONE]`.
    pub(crate) fn completion_events(&self, include_usage: bool, malformed: bool) -> Vec<Bytes> {
        let chunk = |text, finish_reason| {
            let mut chunk = self
                .envelope("text_completion", [TextChoice { text, index: 0, logprobs: None, finish_reason }]);
            chunk.usage = include_usage.then_some(None);
            event(&chunk)
        };
        let mut events: Vec<Bytes> = Vec::new();
        if malformed {
            events.push(Bytes::from_static(MALFORMED_EVENT));
        }
        events.extend(self.content.split_inclusive(' ').map(|t| chunk(t, None)));
        events.push(chunk("", Some(self.finish_reason)));
        self.finish_events("text_completion", include_usage, &mut events);
        events
    }

    fn finish_events(&self, object: &'static str, include_usage: bool, events: &mut Vec<Bytes>) {
        if include_usage {
            let mut last = self.envelope(object, [(); 0]);
            last.usage = Some(Some(self.usage));
            events.push(event(&last));
        }
        events.push(Bytes::from_static(DONE_EVENT));
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Floats(Vec<f32>),
    /// Little-endian f32s, base64: what the Python SDK asks for by default.
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// A deterministic unit vector per input, seeded by the input's text.
pub(crate) fn embeddings_json(call: &Call<'_>, behaviour: &Behaviour) -> Bytes {
    let dimensions =
        call.dimensions.unwrap_or(EMBEDDING_DIMENSIONS).clamp(1, MAX_EMBEDDING_DIMENSIONS) as usize;
    let data = call
        .inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let seed = match input {
                Input::Text(text) => fnv1a(text.as_bytes()),
                Input::Tokens(n) => fnv1a(&n.to_le_bytes()),
            };
            let floats = unit_vector(seed, dimensions);
            let embedding = if call.base64 {
                let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
                Vector::Base64(base64(&bytes))
            } else {
                Vector::Floats(floats)
            };
            Embedding { object: "embedding", index, embedding }
        })
        .collect();
    let prompt_tokens = behaviour.usage.map_or(call.prompt_tokens, |(p, _)| p);
    json(&EmbeddingList {
        object: "list",
        data,
        model: call.model,
        usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
    })
}

/// `GET /v1/models`: the same small list every time.
pub(crate) fn models_json() -> Bytes {
    static MODELS: LazyLock<Bytes> = LazyLock::new(|| {
        #[derive(Serialize)]
        struct Model {
            id: &'static str,
            object: &'static str,
            created: u64,
            owned_by: &'static str,
        }
        #[derive(Serialize)]
        struct List {
            object: &'static str,
            data: Vec<Model>,
        }
        let data = ["gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small"]
            .into_iter()
            .map(|id| Model { id, object: "model", created: 1_700_000_000, owned_by: "mock" })
            .collect();
        json(&List { object: "list", data })
    });
    MODELS.clone()
}

/// OpenAI's error shape, with the `type` and `code` OpenAI uses for that status.
pub(crate) fn error_json(status: u16, message: &str) -> Bytes {
    #[derive(Serialize)]
    struct Error<'a> {
        error: Detail<'a>,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        param: Option<()>,
        code: Option<&'static str>,
    }
    let (kind, code) = match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    json(&Error { error: Detail { message, kind, param: None, code } })
}

/// The message of an error injected with `#mock:status=N`.
pub(crate) fn fault_message(status: u16) -> &'static str {
    match status {
        429 => "Rate limit reached for requests (mock).",
        500..=599 => "The server had an error while processing your request (mock).",
        _ => "The mock was told to fail this request.",
    }
}

fn json<T: Serialize>(value: &T) -> Bytes {
    // These are plain structs of strings and numbers: serializing them cannot fail.
    serde_json::to_vec(value).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from)
}

fn event<T: Serialize>(value: &T) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// xorshift64 from `seed`, scaled to [-1, 1], then normalized to length 1.
fn unit_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed | 1;
    let mut v: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (input, want) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn unit_vectors_are_deterministic_and_normalized() {
        let a = unit_vector(fnv1a(b"hello"), 8);
        assert_eq!(a, unit_vector(fnv1a(b"hello"), 8));
        assert_ne!(a, unit_vector(fnv1a(b"world"), 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn max_tokens_cuts_the_content() {
        let call = Call { model: "m", max_tokens: Some(2), prompt_tokens: 3, ..Call::default() };
        let behaviour = Behaviour::default();
        let answer = Answer::new("chatcmpl-1".into(), &call, &behaviour);
        let body: serde_json::Value = serde_json::from_slice(&answer.chat_json()).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "Hello from");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], 2);
        assert_eq!(body["usage"]["total_tokens"], 5);
    }
}
