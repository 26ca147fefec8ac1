//! A mock LLM provider: a real HTTP server speaking the wire formats of OpenAI (Chat
//! Completions and Responses), Azure OpenAI, Anthropic, Gemini and Bedrock on one port (routed
//! by path), with faults chosen per request, hit counts and recorded requests for assertions.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use llmgw_tests::mock::{Behaviour, MockProvider};
//! let mock = MockProvider::start().await?; // 127.0.0.1, any free port
//! let base_url = mock.base_url(); // "http://127.0.0.1:PORT/v1": an OpenAI base URL
//! let root = mock.url(); // "http://127.0.0.1:PORT": Anthropic, Gemini, Azure, Bedrock endpoints
//! // … send requests through the gateway …
//! assert_eq!(mock.hits("chat"), 1);
//! mock.set_default(Behaviour { status: Some(503), ..Behaviour::default() });
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//! | API | route | required (else) | hit names |
//! | --- | --- | --- | --- |
//! | OpenAI | `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/responses` (each stream or not), `POST /v1/embeddings`, `GET /v1/models`; `/v1` optional | nothing: any key or none; assert on `authorization` in [`MockProvider::requests`] | `chat`, `chat_stream`, `completions`, `completions_stream`, `responses`, `responses_stream`, `embeddings`, `models` |
//! | Azure OpenAI | `POST /openai/deployments/{deployment}/chat/completions` (also `/completions`, `/embeddings`) | `?api-version=` (400), header `api-key` (401; `authorization` alone does not do) | `azure_chat`, `azure_chat_stream`, `azure_completions`, `azure_completions_stream`, `azure_embeddings` |
//! | Anthropic | `POST /v1/messages` (stream or not), `POST /v1/messages/count_tokens`; `/v1` optional | headers `x-api-key` (401 `authentication_error`) and `anthropic-version` (400 `invalid_request_error`); body `model`, `messages`, `max_tokens` (400) | `messages`, `messages_stream`, `count_tokens` |
//! | Gemini | `POST /v1beta/models/{model}:generateContent`, `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (also under `/v1/`) | header `x-goog-api-key` or `?key=` (403 `PERMISSION_DENIED`, as Google answers a keyless call); `alt=sse` on streams (400); body `contents` (400) | `gemini`, `gemini_stream` |
//! | Bedrock | `POST /model/{modelId}/converse`, `POST /model/{modelId}/converse-stream`, the id percent-encoded (`anthropic.claude-3-5-sonnet-20240620-v1%3A0`) | a SigV4-shaped `authorization` (below) and `x-amz-date` (403); body `messages` (400 `ValidationException`) | `converse`, `converse_stream` |
//!
//! The model is the body's `model` (OpenAI, Responses included, and Anthropic), the deployment
//! when an Azure body names none, the path's (percent-decoded) for Gemini and Bedrock; answers
//! echo it verbatim, directives included (Gemini's `modelVersion`).
//!
//! Bedrock's signature is checked for shape only (the mock has no secret):
//! `AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/REGION/bedrock/aws4_request,
//! SignedHeaders=a;b;…, Signature=<64 lowercase hex>`, the signed headers sorted lowercase
//! names including `host` and `x-amz-date`, each present in the request, and `x-amz-date`
//! `YYYYMMDDTHHMMSSZ` on the scope's day. A missing header is answered
//! `MissingAuthenticationTokenException`, a malformed one `IncompleteSignatureException`, both
//! 403. [`RecordedRequest::aws_region`] reads the signed region back.
//!
//! # Answers
//! Deterministic in every format: the text is `"Hello from the mock provider."`; prompt
//! tokens are the whitespace-separated words of every message's text (system prompt and tool
//! results included, tool calls not; Responses: `instructions` and the `input` string or the
//! texts of its message items and `function_call_output` outputs), at least 1, directives
//! included; completion tokens are the words of the text (5), cut to the request's output limit
//! (`max_completion_tokens` / `max_tokens`, Responses `max_output_tokens`, Anthropic
//! `max_tokens`, Gemini `generationConfig.maxOutputTokens`, Bedrock `inferenceConfig.maxTokens`)
//! with the text cut to as many words and the format's "length" stop reason (`length`,
//! `status: "incomplete"` with `incomplete_details.reason: "max_output_tokens"`, `max_tokens`,
//! `MAX_TOKENS`, `max_tokens`).
//!
//! - OpenAI (and Azure): `chat.completion`; streams send a role delta, one delta per word, a
//!   chunk with `finish_reason`, with `stream_options.include_usage` a chunk with
//!   `"choices": []` and `usage` (earlier chunks then carry `"usage": null`), then
//!   `data: [DONE]`. Embeddings are 8 floats (or `dimensions`, at most 4096) per input, a unit
//!   vector seeded by the input's text, or base64 little-endian f32 with
//!   `"encoding_format": "base64"`.
//! - OpenAI Responses: a `response` object (`resp_…`, `status` `completed`, `created_at`,
//!   `completed_at`, the request's `instructions`, `max_output_tokens`, `temperature`, `top_p`,
//!   `tools`, `tool_choice`, `text`, `metadata`, … echoed or the API's defaults) whose `output`
//!   is one `message` item (`msg_…`, `role` `assistant`, `content`
//!   `[{"type": "output_text", "text", "annotations": [], "logprobs": []}]`), and `usage`
//!   (`input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`,
//!   `output_tokens_details.reasoning_tokens` (0), `total_tokens`). Streams send typed events,
//!   each with its `event:` line, its `type` and a `sequence_number` from 0:
//!   `response.created` and `response.in_progress` (the response `in_progress`, no output,
//!   `usage: null`), `response.output_item.added` (the empty item), `response.content_part.added`,
//!   one `response.output_text.delta` per word, `response.output_text.done`,
//!   `response.content_part.done`, `response.output_item.done`, then `response.completed`
//!   (`response.incomplete` when cut) carrying the whole response with usage; no `[DONE]`.
//! - Anthropic: a `message` (`msg_…`, `stop_reason` `end_turn`, `usage` with `input_tokens`,
//!   `output_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`) and a
//!   `request-id` header. Streams: `message_start` (input usage; `output_tokens: 1` as a
//!   placeholder, as Anthropic sends), `content_block_start`, `ping`, one `content_block_delta`
//!   (`text_delta`) per word, `content_block_stop`, `message_delta` (`stop_reason`, the real
//!   `output_tokens`), `message_stop`, each with its `event:` line. `count_tokens` answers
//!   `{"input_tokens": N}`.
//! - Gemini: `candidates[0].content.parts[0].text`, `finishReason` `STOP`, `usageMetadata`
//!   (`promptTokenCount`, `candidatesTokenCount`, `totalTokenCount`). Streams: one
//!   `data: {…}` chunk per word, the last with `finishReason` and `usageMetadata`, no end marker.
//! - Bedrock: `output.message.content[0].text`, `stopReason` `end_turn`, `usage`
//!   (`inputTokens`, `outputTokens`, `totalTokens`), `metrics.latencyMs` (always 10), an
//!   `x-amzn-requestid` header. ConverseStream answers `application/vnd.amazon.eventstream`
//!   binary frames (headers `:event-type`, `:content-type: application/json`,
//!   `:message-type: event`): `messageStart`, one `contentBlockDelta`
//!   (`{"contentBlockIndex":0,"delta":{"text":…}}`) per word, `contentBlockStop`,
//!   `messageStop` (`stopReason`), `metadata` (`usage`, `metrics`).
//!
//! Every stream event (or frame) is its own flushed body frame.
//!
//! ## Tool calls and round trips
//! `tool=NAME` answers a call of tool NAME with arguments `{"city": "Paris"}` (2 completion
//! tokens) instead of text: OpenAI `tool_calls` (`call_…`, `finish_reason: "tool_calls"`;
//! streamed as a first chunk with role, id, name and `""` arguments, then one chunk per
//! arguments fragment); Anthropic a `tool_use` block (`toolu_…`, `stop_reason: "tool_use"`;
//! streamed as `content_block_start` with `input: {}` then `input_json_delta`s); Gemini a
//! `functionCall {name, args}` part (`STOP`; streamed whole in one chunk); Bedrock a
//! `toolUse {toolUseId, name, input}` block (`stopReason: "tool_use"`; streamed as
//! `contentBlockStart` with the id and name, then `contentBlockDelta`s
//! `{"toolUse":{"input":"<partial JSON>"}}`); Responses a `function_call` output item (`fc_…`,
//! `call_id` `call_…`, `name`, `arguments`; streamed as `response.output_item.added` with `""`
//! arguments, one `response.function_call_arguments.delta` per fragment,
//! `response.function_call_arguments.done`). The legacy completions endpoint ignores it.
//!
//! When the conversation's last message is a tool result (OpenAI role `tool`; a Responses
//! `function_call_output` item, its `output` string or parts' texts; an Anthropic
//! user message with a `tool_result` block; a Gemini content with a `functionResponse` part,
//! whose text is the response's `output`, `result` or `content` string, else its JSON; a
//! Bedrock user message with a `toolResult` block, `json` blocks as JSON), the answer is the
//! text `"The tool said: <result, first 100 characters>"`, whatever `tool=` says: a round trip
//! ends.
//!
//! # Directives: faults per request
//! The gateway forwards only the body (and the model, in the path for Gemini and Bedrock), so a
//! request picks its fault inside them: `#mock:` then comma-separated items, up to the next
//! whitespace, found in the model (`"gpt-4o-mini#mock:status=500"`, which lets two targets on
//! one mock behave differently; percent-encoded in a Gemini or Bedrock path:
//! `gemini-2.0-flash%23mock%3Astatus%3D500`) or anywhere in the text of the last user message
//! (its text blocks or parts; a Responses `input` string; an earlier user message when the
//! last one holds only tool results, so a round trip keeps its directives), the last prompt of
//! `/v1/completions`, the last input of `/v1/embeddings`. Several directives apply in order, the
//! model's first, and each item overrides the same field of the whole-mock default. An unknown
//! key or bad value answers 400 and counts `fault:bad_directive`.
//!
//! | item | effect |
//! | --- | --- |
//! | `status=N` | N ≥ 400: the format's error body with that status (below); 2xx/3xx: the normal body with that status |
//! | `retry_after=S` | a `retry-after: S` header |
//! | `delay_ms=MS` | wait before sending the headers |
//! | `drop_after=N` | close the connection after N stream events (Bedrock: frames); non-stream: after N body bytes (at most all but one), with the full `content-length` declared |
//! | `slow_ms=MS` | sleep between stream events; non-stream: the body goes in 4 parts with this sleep between |
//! | `malformed` | 200, `application/json`, a body that is not JSON; streams: one event whose data is not JSON after the first event (OpenAI completions and Gemini: before it; Bedrock: a well-framed `contentBlockDelta` whose payload is not JSON) |
//! | `not_sse` | a stream request gets the non-stream JSON body, `application/json` |
//! | `reset` | close the connection without any response |
//! | `usage=P,C` | report P prompt (input) and C completion (output) tokens |
//! | `cached=N` | N of the prompt tokens come from the cache (at most all): OpenAI `prompt_tokens_details.cached_tokens`, Responses `input_tokens_details.cached_tokens`, Gemini `cachedContentTokenCount` (both inside the prompt count); Anthropic `cache_read_input_tokens`, Bedrock `cacheReadInputTokens` (both beside it: input tokens become P−N, so every format adds up to P) |
//! | `content=TEXT` | the assistant's text; quote it to include spaces or commas: `content="Hi, you"` |
//! | `tool=NAME` | answer a call of tool NAME (above) |
//! | `stream_error=TYPE` | Anthropic, Bedrock and Responses streams: after the first delta, an in-stream error, then the end of the body: Anthropic `event: error` with `error.type` TYPE (e.g. `overloaded_error`); Bedrock a frame with `:message-type: exception`, `:exception-type: TYPE` (e.g. `throttlingException`, `modelStreamErrorException`) and payload `{"message"}`; Responses `event: error` (`{"type": "error", "code": TYPE, "message", "param": null}`) then `response.failed` (`status: "failed"`, `error: {code, message}`, `usage: null`). Ignored elsewhere |
//!
//! Flags also take `=true` / `=false` (to switch off a default). Example message:
//! `"say hi #mock:status=429,retry_after=2"`.
//!
//! ## Error shapes
//! | API | body | type by status |
//! | --- | --- | --- |
//! | OpenAI (Responses too), Azure | `{"error":{"message","type","param","code"}}` | 429: `type: "requests"`, `code: "rate_limit_exceeded"`; 5xx: `server_error`; else `invalid_request_error` |
//! | Anthropic | `{"type":"error","error":{"type","message"}}` | 400 `invalid_request_error`, 401 `authentication_error`, 403 `permission_error`, 404 `not_found_error`, 429 `rate_limit_error`, 503/529 `overloaded_error`, 504 `timeout_error`, other 5xx `api_error` |
//! | Gemini | `{"error":{"code","message","status"}}` | 400 `INVALID_ARGUMENT`, 401 `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 404 `NOT_FOUND`, 429 `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`, 504 `DEADLINE_EXCEEDED`, other 5xx `INTERNAL` |
//! | Bedrock | `{"message"}` and `x-amzn-errortype: NAME:http://internal.amazon.com/coral/com.amazon.bedrock/` (cut at `:` as the AWS SDKs do) | 400 `ValidationException`, 403 `AccessDeniedException`, 404 `ResourceNotFoundException`, 429 `ThrottlingException`, 503 `ServiceUnavailableException`, other 5xx `InternalServerException` |
//!
//! # Hit counts
//! Counted when a request arrives, before any byte of the answer: the endpoint (the names in
//! the table above, or `not_found`), `unauthorized` (a 401/403 for a missing key or
//! signature), `bad_request` (a 400 for a missing header, query parameter or body field), plus
//! one per fault applied: `fault:N` (status ≥ 400), `fault:delay`, `fault:slow`,
//! `fault:drop`, `fault:malformed`, `fault:not_sse`, `fault:reset`, `fault:stream_error`,
//! `fault:bad_directive`.
//!
//! # Recorded requests
//! Every request but the control ones: method, path with its query string, every header, the
//! JSON body, and the body's bytes as text (`raw_body`, for byte-for-byte checks). See
//! [`RecordedRequest::header`], [`RecordedRequest::query`] and [`RecordedRequest::aws_region`].
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
mod responses;
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

    /// `http://ADDR`: the endpoint for Anthropic, Gemini, Azure OpenAI and Bedrock configs,
    /// whose clients add their own path (`/v1/messages`, `/v1beta/models/…`,
    /// `/openai/deployments/…`, `/model/…`).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
