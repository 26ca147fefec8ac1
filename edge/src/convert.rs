//! Streams relayed through converters: the provider's events (SSE, or Bedrock's binary event
//! stream) go through an [`adapt::Pipeline`] and out in the client's format, each upstream
//! event written as soon as it is converted. Like [`crate::relay::SseRelay`], it holds what
//! comes before the first token so a target that fails early can still be replaced, and it ends
//! a broken stream with an error event in the client's format.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use eventsource_stream2::{EventStream, Eventsource};
use futures_util::{Stream, StreamExt};
use http_body_util::BodyDataStream;
use llmgw_translate::bedrock::EventStreamDecoder;
use tokio::time::Sleep;

use crate::adapt::Pipeline;
use crate::error::ClientFormat;
use crate::record::RequestRecord;
use crate::relay::StartError;
use crate::upstream::UpstreamBody;

/// Where the provider's events come from.
pub enum Source {
    Sse(EventStream<BodyDataStream<UpstreamBody>>),
    /// `application/vnd.amazon.eventstream` (Bedrock's ConverseStream).
    Aws {
        body: BodyDataStream<UpstreamBody>,
        decoder: EventStreamDecoder,
        queue: VecDeque<(String, String, Bytes)>,
    },
}

/// One event from the source: its name and data.
type Event = (Option<String>, String);

impl Source {
    #[must_use]
    pub fn sse(body: UpstreamBody) -> Self {
        Self::Sse(BodyDataStream::new(body).eventsource())
    }

    #[must_use]
    pub fn aws(body: UpstreamBody) -> Self {
        Self::Aws {
            body: BodyDataStream::new(body),
            decoder: EventStreamDecoder::new(),
            queue: VecDeque::new(),
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Fault>>> {
        match self {
            Self::Sse(events) => Poll::Ready(ready!(events.poll_next_unpin(cx)).map(|r| match r {
                Ok(ev) => {
                    let name = (!ev.event.is_empty() && ev.event != "message").then_some(ev.event);
                    Ok((name, ev.data))
                }
                Err(e) => match e.as_transport() {
                    Some(t) => Err(Fault::Read(format!("the upstream connection failed mid-stream: {t}"))),
                    None => Err(Fault::Malformed(format!("the upstream sent a malformed event stream: {e}"))),
                },
            })),
            Self::Aws { body, decoder, queue } => loop {
                if let Some((name, kind, payload)) = queue.pop_front() {
                    let text = String::from_utf8_lossy(&payload).into_owned();
                    if kind == "event" {
                        return Poll::Ready(Some(Ok((Some(name), text))));
                    }
                    return Poll::Ready(Some(Err(Fault::Malformed(format!(
                        "the provider's stream failed: {name}: {text}"
                    )))));
                }
                match ready!(body.poll_next_unpin(cx)) {
                    Some(Ok(chunk)) => match decoder.push(&chunk) {
                        Ok(messages) => queue.extend(messages),
                        Err(e) => return Poll::Ready(Some(Err(Fault::Malformed(e.to_string())))),
                    },
                    Some(Err(e)) => {
                        return Poll::Ready(Some(Err(Fault::Read(format!(
                            "the upstream connection failed mid-stream: {e}"
                        )))));
                    }
                    None if decoder.has_partial_frame() => {
                        return Poll::Ready(Some(Err(Fault::Read(
                            "the upstream closed the stream mid-frame".into(),
                        ))));
                    }
                    None => return Poll::Ready(None),
                }
            },
        }
    }
}

enum Fault {
    Malformed(String),
    Read(String),
}

/// The shape of an error event this relay writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorEvents {
    OpenAiChat,
    Anthropic,
    /// OpenAI's Responses API: `event: error` with `type`, `code`, `sequence_number`.
    Responses,
}

impl ErrorEvents {
    #[must_use]
    pub fn of(format: ClientFormat, responses: bool) -> Self {
        match format {
            ClientFormat::Anthropic => Self::Anthropic,
            ClientFormat::OpenAi if responses => Self::Responses,
            ClientFormat::OpenAi => Self::OpenAiChat,
        }
    }
}

pub struct ConvertRelay {
    source: Source,
    pipeline: Pipeline,
    client: ErrorEvents,
    first: Option<Bytes>,
    deadline: Pin<Box<Sleep>>,
    record: RequestRecord,
    finished: bool,
}

enum Step {
    Emit(Bytes),
    Fail(&'static str, String),
    End(Bytes),
}

impl ConvertRelay {
    pub fn new(
        source: Source,
        pipeline: Pipeline,
        client: ErrorEvents,
        deadline: Instant,
        record: RequestRecord,
    ) -> Self {
        Self {
            source,
            pipeline,
            client,
            first: None,
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            record,
            finished: false,
        }
    }

    /// Waits for the first token, holding back what comes before it (see `SseRelay::start`).
    pub async fn start(mut self, ttft: Option<Instant>) -> Result<Self, (StartError, RequestRecord)> {
        let mut held = BytesMut::new();
        let mut read_at = Instant::now();
        let mut ttft_timer = Box::pin(tokio::time::sleep_until(
            ttft.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)).into(),
        ));
        loop {
            let step = tokio::select! {
                () = &mut self.deadline => return Err(self.fail_start(StartError::Timeout)),
                () = &mut ttft_timer, if ttft.is_some() => return Err(self.fail_start(StartError::FirstToken)),
                step = std::future::poll_fn(|cx| poll_step(&mut self.source, &mut self.pipeline, cx, Some(&mut read_at))) => step,
            };
            match step {
                Step::Emit(b) => {
                    held.extend_from_slice(&b);
                    if self.pipeline.started() {
                        self.record.ttft = Some(self.record.start.elapsed());
                        self.first = Some(held.freeze());
                        self.record.handed_over(read_at);
                        return Ok(self);
                    }
                }
                // A complete answer with no token at all (an empty reply) is still an answer.
                Step::End(b) if self.pipeline.complete() => {
                    held.extend_from_slice(&b);
                    self.first = Some(held.freeze());
                    self.finished = true;
                    self.record.tokens = self.pipeline.tokens();
                    match self.pipeline.failed() {
                        true => self.record.finish(502, Some("upstream_error")),
                        false => self.record.finish(200, None),
                    }
                    return Ok(self);
                }
                Step::End(_) => return Err(self.fail_start(StartError::ClosedEarly)),
                Step::Fail("malformed", m) => return Err(self.fail_start(StartError::Malformed(m))),
                Step::Fail(_, m) => return Err(self.fail_start(StartError::Read(m))),
            }
        }
    }

    fn fail_start(self, e: StartError) -> (StartError, RequestRecord) {
        (e, self.record)
    }

    fn error_event(&self, message: &str) -> Bytes {
        match self.client {
            ErrorEvents::Responses => {
                // The Responses API's error event, plus the `error` object the OpenAI SDKs raise
                // on: a client iterating events sees `type: error`, an SDK user an exception.
                let body = serde_json::json!({
                    "type": "error",
                    "code": "upstream_error",
                    "message": message,
                    "param": null,
                    "sequence_number": self.pipeline.emitted(),
                    "error": { "message": message, "type": "api_error", "param": null, "code": "upstream_error" },
                });
                Bytes::from(format!("event: error\ndata: {body}\n\n"))
            }
            ErrorEvents::OpenAiChat => {
                let body = serde_json::json!({
                    "error": { "message": message, "type": "api_error", "param": null, "code": "upstream_error" }
                });
                Bytes::from(format!("data: {body}\n\n"))
            }
            ErrorEvents::Anthropic => {
                let body = llmgw_translate::anthropic_client::error(502, message);
                Bytes::from(format!("event: error\ndata: {body}\n\n"))
            }
        }
    }
}

impl Stream for ConvertRelay {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if let Some(b) = this.first.take() {
            return Poll::Ready(Some(b));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.finished = true;
            this.record.tokens = this.pipeline.tokens();
            this.record.finish(504, Some("upstream_timeout"));
            return Poll::Ready(Some(this.error_event("the upstream did not finish the stream in time")));
        }
        match ready!(poll_step(&mut this.source, &mut this.pipeline, cx, None)) {
            Step::Emit(b) => Poll::Ready(Some(b)),
            Step::End(b) => {
                this.finished = true;
                this.record.tokens = this.pipeline.tokens();
                match this.pipeline.failed() {
                    // The provider's own error event went to the client; the log says it failed.
                    true => this.record.finish(502, Some("upstream_error")),
                    false => this.record.finish(200, None),
                }
                Poll::Ready((!b.is_empty()).then_some(b))
            }
            Step::Fail(code, msg) => {
                this.finished = true;
                this.record.tokens = this.pipeline.tokens();
                // The status already went out as 200; the access log says what happened.
                this.record.finish(502, Some(code));
                Poll::Ready(Some(this.error_event(&msg)))
            }
        }
    }
}

/// Reads source events until one produces output, the stream ends or fails. `read_at`, when
/// given, is set to when the last event was read (the start of the gateway's own time for it).
fn poll_step(
    source: &mut Source,
    pipeline: &mut Pipeline,
    cx: &mut Context<'_>,
    mut read_at: Option<&mut Instant>,
) -> Poll<Step> {
    let mut out = BytesMut::new();
    loop {
        match ready!(source.poll_event(cx)) {
            Some(Ok((name, data))) => {
                if let Some(at) = read_at.as_deref_mut() {
                    *at = Instant::now();
                }
                if let Err(e) = pipeline.feed(name.as_deref(), &data, &mut out) {
                    return Poll::Ready(Step::Fail("malformed", e.to_string()));
                }
                if !out.is_empty() {
                    return Poll::Ready(Step::Emit(out.freeze()));
                }
            }
            Some(Err(Fault::Malformed(m))) => return Poll::Ready(Step::Fail("malformed", m)),
            Some(Err(Fault::Read(m))) => return Poll::Ready(Step::Fail("upstream_read", m)),
            None if pipeline.complete() => {
                if let Err(e) = pipeline.finish(&mut out) {
                    return Poll::Ready(Step::Fail("malformed", e.to_string()));
                }
                return Poll::Ready(Step::End(out.freeze()));
            }
            None => {
                return Poll::Ready(if pipeline.started() {
                    Step::Fail(
                        "upstream_closed",
                        "the upstream closed the connection mid-stream, before the stream finished".into(),
                    )
                } else {
                    Step::End(Bytes::new())
                });
            }
        }
    }
}
