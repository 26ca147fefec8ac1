//! Translation between API formats, with OpenAI's chat-completions format as the pivot: every
//! provider format converts to and from it, and Anthropic-format clients are converted to it on
//! the way in and back on the way out. Pure functions on JSON values and stateful stream
//! converters; no I/O, so each is tested with golden files.
//!
//! Modules (one per format):
//! - `anthropic`: OpenAI request → Anthropic Messages request, Anthropic response/stream → OpenAI.
//! - `anthropic_client`: Anthropic Messages request (from a client) → OpenAI request, and OpenAI
//!   response/stream → Anthropic response/events for that client.
//! - `gemini`: OpenAI ⇄ Gemini `generateContent` / `streamGenerateContent?alt=sse`.
//! - `bedrock`: OpenAI ⇄ Bedrock Converse / ConverseStream (event-stream payloads).

/// Tokens a provider reported, in OpenAI's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    /// Part of `input` served from a prompt cache.
    pub cached_input: u64,
}

/// What the caller allows a translation to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Drop request parameters the target cannot honour instead of refusing the request.
    pub drop_unsupported_params: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client asked for something the target cannot do (a 400 naming the parameter).
    #[error("parameter `{param}` is not supported by {target}: {reason}")]
    Unsupported { param: String, target: &'static str, reason: String },
    /// The client's request is malformed for its own format (a 400).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The provider answered something that is not its documented format (a 502).
    #[error("unexpected response from the provider: {0}")]
    BadResponse(String),
}

/// One server-sent event to write to the client: `event:` (when set) and `data:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<std::borrow::Cow<'static, str>>,
    pub data: String,
}

impl SseEvent {
    /// The event's bytes on the wire.
    #[must_use]
    pub fn to_bytes(&self) -> bytes::Bytes {
        let mut s = String::with_capacity(self.data.len() + 32);
        if let Some(e) = &self.event {
            s.push_str("event: ");
            s.push_str(e);
            s.push('\n');
        }
        s.push_str("data: ");
        s.push_str(&self.data);
        s.push_str("\n\n");
        bytes::Bytes::from(s)
    }
}

/// Converts a provider's stream, one incoming event at a time, into another format's events.
/// Never buffers the whole answer: each input event yields the output events it completes.
pub trait StreamConverter: Send {
    /// One incoming event: its SSE `event:` name (or the event-stream `:event-type`), and its
    /// data (JSON text). Returns the events to send now.
    ///
    /// # Errors
    /// `BadResponse` for an event that is not the provider's documented format.
    fn on_event(&mut self, event: Option<&str>, data: &str) -> Result<Vec<SseEvent>, TranslateError>;
    /// The stream ended cleanly; returns closing events (e.g. `data: [DONE]`).
    fn finish(&mut self) -> Vec<SseEvent>;
    /// Tokens seen so far.
    fn usage(&self) -> Usage;
    /// Whether a first content token (text, tool call or finish) was emitted yet.
    fn started(&self) -> bool;
    /// Whether the provider's stream reached its documented end (a finish reason or stop
    /// event), so an end of input now is a clean end, not a cut connection.
    fn complete(&self) -> bool;
    /// Whether the provider ended the stream with an error of its own (passed on to the
    /// client as is): the answer failed even though the stream ended where it may.
    fn failed(&self) -> bool {
        false
    }
}

pub mod anthropic;
pub mod anthropic_client;
pub mod bedrock;
pub mod gemini;
