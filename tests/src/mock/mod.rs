//! A mock OpenAI provider: a real HTTP server speaking OpenAI's wire format, with faults chosen
//! per request, hit counts and recorded requests for assertions.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use llmgw_tests::mock::{Behaviour, MockProvider};
//! let mock = MockProvider::start().await?; // 127.0.0.1, any free port
//! let base_url = mock.base_url(); // "http://127.0.0.1:PORT/v1": give it to the gateway
//! // … send requests through the gateway …
//! assert_eq!(mock.hits("chat"), 1);
//! mock.set_default(Behaviour { status: Some(503), ..Behaviour::default() });
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//! `POST /v1/chat/completions`, `POST /v1/completions` (both stream and not),
//! `POST /v1/embeddings`, `GET /v1/models`; the `/v1` prefix is optional. Any key is accepted;
//! assert on `authorization` in [`MockProvider::requests`].
//!
//! Answers are deterministic: the content is `"Hello from the mock provider."`;
//! `prompt_tokens` is the number of whitespace-separated words in every message's text (the
//! prompt, the inputs), at least 1, directives included; `completion_tokens` is the number of
//! words of the content (5), cut to `max_completion_tokens` / `max_tokens` when smaller, with the
//! content cut to as many words and `finish_reason: "length"`. `model` echoes the request's
//! `model` verbatim, directive included. Streams send a role delta, one delta per word, a chunk
//! with `finish_reason`, with `stream_options.include_usage` a chunk with `"choices": []` and
//! `usage` (earlier chunks then carry `"usage": null`), then `data: [DONE]`, each event its own
//! flushed body frame. Embeddings are 8 floats (or `dimensions`, at most 4096) per input, a unit
//! vector seeded by the input's text, or base64 little-endian f32 with
//! `"encoding_format": "base64"`.
//!
//! # Directives: faults per request
//! The gateway forwards only the body, so a request picks its fault inside it: `#mock:` then
//! comma-separated items, up to the next whitespace, found in the `model` string
//! (`"gpt-4o-mini#mock:status=500"`, which lets two targets on one mock behave differently) or
//! anywhere in the last message's text (the last prompt of `/v1/completions`, the last input of
//! `/v1/embeddings`). Several directives apply in order, the model's first, and each item
//! overrides the same field of the whole-mock default. An unknown key or bad value answers 400
//! and counts `fault:bad_directive`.
//!
//! | item | effect |
//! | --- | --- |
//! | `status=N` | N ≥ 400: OpenAI's error body `{"error":{"message","type","param","code"}}` with that status (429: `type: "requests"`, `code: "rate_limit_exceeded"`; 5xx: `type: "server_error"`); 2xx/3xx: the normal body with that status |
//! | `retry_after=S` | a `retry-after: S` header |
//! | `delay_ms=MS` | wait before sending the headers |
//! | `drop_after=N` | close the connection after N stream events; non-stream: after N body bytes (at most all but one), with the full `content-length` declared |
//! | `slow_ms=MS` | sleep between stream events; non-stream: the body goes in 4 parts with this sleep between |
//! | `malformed` | 200, `application/json`, a body that is not JSON; streams: a non-JSON `data:` event after the role delta |
//! | `not_sse` | a stream request gets the non-stream JSON body, `application/json` |
//! | `reset` | close the connection without any response |
//! | `usage=P,C` | report P prompt and C completion tokens |
//! | `content=TEXT` | the assistant's text; quote it to include spaces or commas: `content="Hi, you"` |
//!
//! Flags also take `=true` / `=false` (to switch off a default). Example message:
//! `"say hi #mock:status=429,retry_after=2"`.
//!
//! # Hit counts
//! Counted when a request arrives, before any byte of the answer: the endpoint (`chat`,
//! `chat_stream`, `completions`, `completions_stream`, `embeddings`, `models`, `not_found`,
//! `bad_request`), plus one per fault applied: `fault:N` (status ≥ 400), `fault:delay`,
//! `fault:slow`, `fault:drop`, `fault:malformed`, `fault:not_sse`, `fault:reset`,
//! `fault:bad_directive`.
//!
//! # Control over HTTP (out-of-process tests)
//! `GET /_mock/hits` (`{"chat": 2, …}`), `GET /_mock/requests` (array of [`RecordedRequest`]),
//! `GET|POST /_mock/default` (a [`Behaviour`] as JSON, e.g. `{"status": 500}`; `{}` clears it),
//! `POST /_mock/reset` (clears hits, requests and the default). These are not counted or
//! recorded.

mod anthropic;
mod bedrock;
mod behaviour;
mod embeddings;
mod gemini;
mod openai;
mod plan;
mod record;
mod reply;
mod request;
mod route;
mod server;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use behaviour::{Behaviour, DirectiveError};
pub use record::RecordedRequest;
use server::State;

/// How to start a [`MockProvider`].
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How many of the last requests to keep; 0 records none (fastest, for load tests).
    pub record_limit: usize,
    /// The behaviour every request starts from.
    pub default: Behaviour,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            record_limit: 1000,
            default: Behaviour::default(),
        }
    }
}

/// A running mock provider. It serves on the current tokio runtime until dropped; dropping it
/// stops accepting and closes every open connection.
pub struct MockProvider {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl MockProvider {
    /// Starts on 127.0.0.1 with a free port, recording the last 1000 requests.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn start() -> io::Result<Self> {
        Self::start_with(MockOptions::default()).await
    }

    /// # Errors
    /// When `options.listen` cannot be bound.
    pub async fn start_with(options: MockOptions) -> io::Result<Self> {
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(options.record_limit));
        state.default.store(Arc::new(options.default));
        let server = tokio::spawn(server::serve(listener, Arc::clone(&state)));
        Ok(Self { addr, state, server })
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`: what an OpenAI client or a provider config takes as its base URL.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// How many requests counted under `name` (see the module doc for the names).
    #[must_use]
    pub fn hits(&self, name: &str) -> u64 {
        self.state.ledger.count(name)
    }

    /// Every hit count, by name.
    #[must_use]
    pub fn all_hits(&self) -> BTreeMap<String, u64> {
        self.state.ledger.counts()
    }

    /// The recorded requests, oldest first (at most `record_limit`).
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.ledger.requests()
    }

    /// What every request gets from now on, before its own directives.
    pub fn set_default(&self, behaviour: Behaviour) {
        self.state.default.store(Arc::new(behaviour));
    }

    /// Clears hit counts, recorded requests and the default behaviour.
    pub fn reset(&self) {
        self.state.ledger.clear();
        self.set_default(Behaviour::default());
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}
