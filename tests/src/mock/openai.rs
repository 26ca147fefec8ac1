//! OpenAI response bodies (Azure's too), serialized from borrowed structs straight to bytes: no
//! `serde_json::Value` on this answer path, which the load tests drive.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use super::reply::{Finish, Reply, TOOL_ARGUMENTS, Tokens};

/// Answered with `content-type: application/json` by `#mock:malformed`, in every format.
pub(crate) const MALFORMED_JSON: &[u8] = b"{\"id\": \"mock\", \"choices\": [ this is not json";
/// The SSE event `#mock:malformed` puts in a stream.
pub(crate) const MALFORMED_EVENT: &[u8] = b"data: {\"choices\": [ this is not json\n\n";
pub(crate) const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

#[derive(Serialize, Clone, Copy, Debug)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    /// Only with `#mock:cached=N`, so a plain answer's usage has exactly the three counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Serialize, Clone, Copy, Debug)]
struct PromptDetails {
    cached_tokens: u64,
}

impl From<Tokens> for Usage {
    fn from(t: Tokens) -> Self {
        Self {
            prompt_tokens: t.prompt,
            completion_tokens: t.completion,
            total_tokens: t.total(),
            prompt_tokens_details: t.cached.map(|cached_tokens| PromptDetails { cached_tokens }),
        }
    }
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
    /// `null` beside tool calls.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
    refusal: Option<()>,
}

/// A whole tool call, or (in a stream) its first chunk or one arguments fragment.
#[derive(Serialize)]
struct ToolCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// Absent, `null`, or text.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// One reply rendered as whichever OpenAI body the request needs.
pub(crate) struct Answer<'a> {
    id: String,
    tool_call_id: String,
    created: u64,
    reply: Reply<'a>,
}

impl<'a> Answer<'a> {
    /// `id_prefix` is `chatcmpl` or `cmpl`; `serial` makes the ids unique per mock.
    pub(crate) fn new(id_prefix: &str, serial: u64, reply: Reply<'a>) -> Self {
        Self {
            id: format!("{id_prefix}-mock{serial}"),
            tool_call_id: format!("call_mock{serial}"),
            created: unix_now(),
            reply,
        }
    }

    fn finish_reason(&self) -> &'static str {
        match self.reply.finish {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Tool => "tool_calls",
        }
    }

    fn envelope<C>(&self, object: &'static str, choices: C) -> Envelope<'_, C> {
        Envelope {
            id: &self.id,
            object,
            created: self.created,
            model: self.reply.model,
            system_fingerprint: object.starts_with("chat").then_some("fp_mock"),
            choices,
            usage: None,
        }
    }

    pub(crate) fn chat_json(&self) -> Bytes {
        let tool_calls = self.reply.tool().map(|name| {
            [ToolCall {
                index: None,
                id: Some(&self.tool_call_id),
                kind: Some("function"),
                function: Function { name: Some(name), arguments: TOOL_ARGUMENTS },
            }]
        });
        let content = tool_calls.is_none().then(|| self.reply.text());
        let mut body = self.envelope(
            "chat.completion",
            [ChatChoice {
                index: 0,
                message: Message { role: "assistant", content, tool_calls, refusal: None },
                logprobs: None,
                finish_reason: self.finish_reason(),
            }],
        );
        body.usage = Some(Some(self.reply.tokens.into()));
        json(&body)
    }

    /// Role delta, one delta per word, the `finish_reason` chunk, the usage chunk if asked for,
    /// then `[DONE]`. A tool call's first chunk carries the role, the call's id and name and
    /// empty arguments; then one chunk per arguments fragment. `malformed` puts a non-JSON
    /// event after the first chunk.
    pub(crate) fn chat_events(&self, include_usage: bool, malformed: bool) -> Vec<Bytes> {
        let chunk = |delta, finish_reason| {
            let mut chunk = self.envelope(
                "chat.completion.chunk",
                [ChunkChoice { index: 0, delta, logprobs: None, finish_reason }],
            );
            chunk.usage = include_usage.then_some(None);
            event(&chunk)
        };
        let fragment = |index, id, kind, name, arguments| {
            Some([ToolCall { index: Some(index), id, kind, function: Function { name, arguments } }])
        };
        let tool = self.reply.tool();
        let first = match tool {
            Some(name) => Delta {
                role: Some("assistant"),
                content: Some(None),
                tool_calls: fragment(0, Some(&self.tool_call_id), Some("function"), Some(name), ""),
            },
            None => Delta { role: Some("assistant"), content: Some(Some("")), tool_calls: None },
        };
        let mut events = vec![chunk(first, None)];
        if malformed {
            events.push(Bytes::from_static(MALFORMED_EVENT));
        }
        events.extend(self.reply.pieces().map(|piece| {
            let delta = match tool {
                Some(_) => Delta { tool_calls: fragment(0, None, None, None, piece), ..Delta::default() },
                None => Delta { content: Some(Some(piece)), ..Delta::default() },
            };
            chunk(delta, None)
        }));
        events.push(chunk(Delta::default(), Some(self.finish_reason())));
        self.finish_events("chat.completion.chunk", include_usage, &mut events);
        events
    }

    pub(crate) fn completion_json(&self) -> Bytes {
        let mut body = self.envelope(
            "text_completion",
            [TextChoice {
                text: self.reply.text(),
                index: 0,
                logprobs: None,
                finish_reason: Some(self.finish_reason()),
            }],
        );
        body.usage = Some(Some(self.reply.tokens.into()));
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
        events.extend(self.reply.pieces().map(|t| chunk(t, None)));
        events.push(chunk("", Some(self.finish_reason())));
        self.finish_events("text_completion", include_usage, &mut events);
        events
    }

    fn finish_events(&self, object: &'static str, include_usage: bool, events: &mut Vec<Bytes>) {
        if include_usage {
            let mut last = self.envelope(object, [(); 0]);
            last.usage = Some(Some(self.reply.tokens.into()));
            events.push(event(&last));
        }
        events.push(Bytes::from_static(DONE_EVENT));
    }
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

pub(crate) fn json<T: Serialize>(value: &T) -> Bytes {
    // These are plain structs of strings and numbers: serializing them cannot fail.
    serde_json::to_vec(value).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from)
}

pub(crate) fn event<T: Serialize>(value: &T) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::behaviour::Behaviour;
    use crate::mock::request::Call;

    #[test]
    fn max_tokens_cuts_the_content() {
        let call = Call { model: "m", max_tokens: Some(2), prompt_tokens: 3, ..Call::default() };
        let behaviour = Behaviour::default();
        let answer = Answer::new("chatcmpl", 1, Reply::new(&call, &behaviour));
        let body: serde_json::Value = serde_json::from_slice(&answer.chat_json()).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "Hello from");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], 2);
        assert_eq!(body["usage"]["total_tokens"], 5);
    }
}
