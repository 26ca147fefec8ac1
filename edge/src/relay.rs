//! Response bodies: whole ones, and OpenAI SSE streams relayed event by event.
//!
//! The relay writes each upstream event to the client as soon as it is parsed (together with
//! whatever else the upstream already sent, see [`crate::coalesce`]), counts tokens
//! from the usage chunk, hides that chunk from clients that did not ask for it, and ends a
//! broken stream with an error event rather than a silent truncation.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use eventsource_stream2::{EventStream, Eventsource};
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyDataStream;
use tokio::time::Sleep;

use crate::coalesce::Coalesce;
use crate::provider::openai::{FirstTokenProbe, ProviderUsage, StreamChunk};
use crate::record::RequestRecord;
use crate::upstream::UpstreamBody;

pub enum RespBody {
    Full(Option<Bytes>),
    Sse(Box<Coalesce<SseRelay>>),
    Converted(Box<Coalesce<crate::convert::ConvertRelay>>),
}

impl RespBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self::Full(Some(b.into()))
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Sse(relay) => relay.poll_chunk(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            Self::Converted(relay) => relay.poll_chunk(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Sse(_) | Self::Converted(_) => SizeHint::default(),
        }
    }
}

/// Why a stream could not start; the caller turns it into a 502 or 504.
#[derive(Debug)]
pub enum StartError {
    ClosedEarly,
    /// No first token by the alias's `ttft_timeout_ms`.
    FirstToken,
    Malformed(String),
    Read(String),
    Timeout,
}

pub struct SseRelay {
    events: EventStream<BodyDataStream<UpstreamBody>>,
    /// Events read before the first token (a role chunk), sent together with it.
    first: Option<Bytes>,
    client_wants_usage: bool,
    deadline: Pin<Box<Sleep>>,
    record: RequestRecord,
    saw_done: bool,
    finished: bool,
    /// The first token went out. Before it every event is parsed (garbage then can still be
    /// retried on another target); after it only the one that carries usage is, and the others
    /// are relayed as they came, as a reverse proxy would.
    started: bool,
}

enum Next {
    Emit(Bytes),
    Skip,
    Fail(&'static str, String),
    End,
}

impl SseRelay {
    pub fn new(
        body: UpstreamBody,
        client_wants_usage: bool,
        deadline: Instant,
        record: RequestRecord,
    ) -> Self {
        Self {
            events: BodyDataStream::new(body).eventsource(),
            first: None,
            client_wants_usage,
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            record,
            saw_done: false,
            finished: false,
            started: false,
        }
    }

    /// Waits for the first token (holding back a role-only chunk before it), so an upstream that
    /// answers 200 and then nothing useful — or nothing by `ttft` — can still be retried on
    /// another target, or answered with a clean 502/504, before any byte reaches the client.
    pub async fn start(mut self, ttft: Option<Instant>) -> Result<Self, (StartError, RequestRecord)> {
        let mut held = BytesMut::new();
        let mut ttft_timer = Box::pin(tokio::time::sleep_until(
            ttft.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)).into(),
        ));
        loop {
            let next = tokio::select! {
                () = &mut self.deadline => return Err(self.fail_start(StartError::Timeout)),
                () = &mut ttft_timer, if ttft.is_some() => return Err(self.fail_start(StartError::FirstToken)),
                ev = self.events.next() => ev,
            };
            let read_at = Instant::now();
            let token =
                matches!(&next, Some(Ok(ev)) if ev.data == "[DONE]" || FirstTokenProbe::has_token(&ev.data));
            match self.classify(next) {
                Next::Emit(b) if !token => held.extend_from_slice(&b),
                Next::Emit(b) => {
                    self.record.ttft = Some(self.record.start.elapsed());
                    held.extend_from_slice(&b);
                    self.first = Some(held.freeze());
                    self.started = true;
                    self.record.handed_over(read_at);
                    return Ok(self);
                }
                Next::Skip => {}
                Next::End => return Err(self.fail_start(StartError::ClosedEarly)),
                Next::Fail("malformed", m) => return Err(self.fail_start(StartError::Malformed(m))),
                Next::Fail(_, m) => return Err(self.fail_start(StartError::Read(m))),
            }
        }
    }

    fn fail_start(self, e: StartError) -> (StartError, RequestRecord) {
        (e, self.record)
    }

    fn classify(
        &mut self,
        ev: Option<Result<eventsource_stream2::Event, eventsource_stream2::EventStreamError<hyper::Error>>>,
    ) -> Next {
        let ev = match ev {
            None if self.saw_done => return Next::End,
            None => {
                return Next::Fail(
                    "upstream_closed",
                    "the upstream closed the connection mid-stream, before the stream finished".into(),
                );
            }
            Some(Err(e)) => {
                return Next::Fail(
                    "upstream_read",
                    format!("the upstream connection failed mid-stream: {e}"),
                );
            }
            Some(Ok(ev)) => ev,
        };
        if ev.data == "[DONE]" {
            self.saw_done = true;
            return Next::Emit(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        let chunk = if self.started && !StreamChunk::may_carry_usage(ev.data.as_bytes()) {
            StreamChunk { usage: None, choices: None }
        } else {
            match serde_json::from_str::<StreamChunk>(&ev.data) {
                Ok(c) => c,
                Err(e) => {
                    return Next::Fail(
                        "malformed",
                        format!("the upstream sent an event that is not JSON: {e}"),
                    );
                }
            }
        };
        if let Some(u) = chunk.usage {
            self.record.tokens = ProviderUsage::tokens(&u);
            if chunk.choices.is_some_and(|c| c.is_empty()) && !self.client_wants_usage {
                return Next::Skip;
            }
        }
        let mut out = BytesMut::with_capacity(ev.data.len() + ev.event.len() + 16);
        if !ev.event.is_empty() && ev.event != "message" {
            out.put_slice(b"event: ");
            out.put_slice(ev.event.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_slice(b"data: ");
        out.put_slice(ev.data.as_bytes());
        out.put_slice(b"\n\n");
        Next::Emit(out.freeze())
    }

    fn error_event(message: &str) -> Bytes {
        let body = serde_json::json!({
            "error": { "message": message, "type": "api_error", "param": null, "code": "upstream_error" }
        });
        Bytes::from(format!("data: {body}\n\n"))
    }
}

impl Stream for SseRelay {
    type Item = Bytes;

    /// One event per item; [`Coalesce`] joins what is ready into one write.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if let Some(b) = this.first.take() {
            return Poll::Ready(Some(b));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            if this.deadline.as_mut().poll(cx).is_ready() {
                this.finished = true;
                this.record.finish(504, Some("upstream_timeout"));
                return Poll::Ready(Some(Self::error_event(
                    "the upstream did not finish the stream in time",
                )));
            }
            let ev = ready!(this.events.poll_next_unpin(cx));
            match this.classify(ev) {
                Next::Emit(b) => return Poll::Ready(Some(b)),
                Next::Skip => {}
                Next::End => {
                    this.finished = true;
                    this.record.finish(200, None);
                    return Poll::Ready(None);
                }
                Next::Fail(code, msg) => {
                    this.finished = true;
                    // The status already went out as 200; the access log says what happened.
                    this.record.finish(502, Some(code));
                    return Poll::Ready(Some(Self::error_event(&msg)));
                }
            }
        }
    }
}
