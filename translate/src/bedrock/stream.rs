//! ConverseStream events → OpenAI `chat.completion.chunk` events.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{bad, cache_writes, completion_id, finish_reason, now_secs, usage, usage_json};
use crate::{SseEvent, StreamConverter, TranslateError, Usage};

/// Converts ConverseStream's events, one decoded event-stream message at a time, into OpenAI
/// chunks. Feed it what [`super::EventStreamDecoder`] yields, through
/// [`StreamToOpenAi::on_message`] (which also turns exception messages into errors), or call
/// [`StreamConverter::on_event`] with the `:event-type` and the JSON payload.
///
/// `messageStart` → the role chunk; `contentBlockStart` of a tool use → a tool-call chunk
/// with id, name and empty arguments; `contentBlockDelta` → a content chunk (text), an
/// arguments chunk (the tool input's partial JSON, passed on as is) or a `reasoning_content`
/// chunk (reasoning text); `messageStop` → the finish chunk; `metadata` → the usage, sent by
/// [`StreamConverter::finish`] (when the client asked for `stream_options.include_usage`)
/// before `[DONE]`. An exception event (`throttlingException`, `modelStreamErrorException`, …)
/// is a `BadResponse` carrying its message.
pub struct StreamToOpenAi {
    alias: String,
    include_usage: bool,
    id: String,
    created: u64,
    role_sent: bool,
    /// Converse content-block index → OpenAI tool-call index.
    tool_blocks: HashMap<u64, u64>,
    finished: bool,
    usage: Usage,
    cache_writes: u64,
    started: bool,
    done: bool,
}

impl StreamToOpenAi {
    /// A converter answering as model `alias`; `include_usage` is the client's
    /// `stream_options.include_usage`.
    #[must_use]
    pub fn new(alias: &str, include_usage: bool) -> Self {
        Self {
            alias: alias.to_owned(),
            include_usage,
            id: completion_id(),
            created: now_secs(),
            role_sent: false,
            tool_blocks: HashMap::new(),
            finished: false,
            usage: Usage::default(),
            cache_writes: 0,
            started: false,
            done: false,
        }
    }

    /// One decoded event-stream message: its `:event-type` (for exceptions, the
    /// `:exception-type`), `:message-type` and payload, as [`super::EventStreamDecoder::push`]
    /// returns them.
    ///
    /// # Errors
    /// `BadResponse` for an exception or error message, or an event that is not ConverseStream's
    /// documented format.
    pub fn on_message(
        &mut self,
        event_type: &str,
        message_type: &str,
        payload: &[u8],
    ) -> Result<Vec<SseEvent>, TranslateError> {
        let text = std::str::from_utf8(payload).map_err(|_| bad("Bedrock stream payload is not UTF-8"))?;
        match message_type {
            "event" => self.on_event(Some(event_type), text),
            _ => Err(exception(event_type, text)),
        }
    }

    fn chunk(&self, choices: Value) -> SseEvent {
        let data = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.alias,
            "choices": choices,
        });
        SseEvent { event: None, data: data.to_string() }
    }

    fn delta(&self, delta: Value) -> SseEvent {
        self.chunk(json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": null }]))
    }

    fn finish_chunk(&self, reason: &str) -> SseEvent {
        self.chunk(json!([{ "index": 0, "delta": {}, "logprobs": null, "finish_reason": reason }]))
    }

    fn open(&mut self, out: &mut Vec<SseEvent>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.delta(json!({ "role": "assistant", "content": "" })));
        }
    }
}

/// The error for an exception message (`{"message": …}` payload).
fn exception(kind: &str, payload: &str) -> TranslateError {
    let message = serde_json::from_str::<Value>(payload)
        .ok()
        .and_then(|v| {
            ["message", "Message"].iter().find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_owned))
        })
        .unwrap_or_else(|| payload.to_owned());
    bad(format!("Bedrock stream failed with {kind}: {message}"))
}

fn block_index(v: &Value) -> Result<u64, TranslateError> {
    v.get("contentBlockIndex")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("Bedrock stream event has no contentBlockIndex"))
}

impl StreamConverter for StreamToOpenAi {
    fn on_event(&mut self, event: Option<&str>, data: &str) -> Result<Vec<SseEvent>, TranslateError> {
        let event = event.ok_or_else(|| bad("Bedrock stream event has no event type"))?;
        // Exceptions arrive as messages of type `exception` named after the exception, all
        // ending in "Exception"; a caller passing them here gets the same error.
        if event.ends_with("Exception") || event.ends_with("exception") {
            return Err(exception(event, data));
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| bad(format!("Bedrock stream payload is not JSON: {e}")))?;
        let mut out = Vec::new();
        match event {
            "messageStart" => self.open(&mut out),
            "contentBlockStart" => {
                if let Some(tu) = v.pointer("/start/toolUse") {
                    let block = block_index(&v)?;
                    let id = tu
                        .get("toolUseId")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("toolUse start has no toolUseId"))?;
                    let name = tu
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("toolUse start has no name"))?;
                    self.open(&mut out);
                    let index = self.tool_blocks.len() as u64;
                    self.tool_blocks.insert(block, index);
                    out.push(self.delta(json!({ "tool_calls": [{
                        "index": index,
                        "id": id,
                        "type": "function",
                        "function": { "name": name, "arguments": "" },
                    }]})));
                    self.started = true;
                }
            }
            "contentBlockDelta" => {
                let delta = v.get("delta").ok_or_else(|| bad("contentBlockDelta has no delta"))?;
                let non_empty = |p: &str| delta.pointer(p).and_then(Value::as_str).filter(|t| !t.is_empty());
                if let Some(t) = non_empty("/text") {
                    self.open(&mut out);
                    out.push(self.delta(json!({ "content": t })));
                    self.started = true;
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str) {
                    let block = block_index(&v)?;
                    let index = *self.tool_blocks.get(&block).ok_or_else(|| {
                        bad(format!("tool input for content block {block}, which started no tool use"))
                    })?;
                    if !input.is_empty() {
                        out.push(self.delta(
                            json!({ "tool_calls": [{ "index": index, "function": { "arguments": input } }] }),
                        ));
                    }
                } else if let Some(t) = non_empty("/reasoningContent/text") {
                    self.open(&mut out);
                    out.push(self.delta(json!({ "reasoning_content": t })));
                    self.started = true;
                }
            }
            "messageStop" if !self.finished => {
                self.finished = true;
                self.open(&mut out);
                let reason = finish_reason(v.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn"));
                out.push(self.finish_chunk(reason));
                self.started = true;
            }
            "metadata" => {
                if let Some(u) = v.get("usage") {
                    self.usage = usage(u);
                    self.cache_writes = cache_writes(u);
                }
            }
            // contentBlockStop, a repeated messageStop and events added later carry nothing a
            // chunk needs.
            _ => {}
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        if self.role_sent && !self.finished {
            // A stream that ended without messageStop still needs a finish for OpenAI clients.
            out.push(self.finish_chunk(if self.tool_blocks.is_empty() { "stop" } else { "tool_calls" }));
        }
        if self.include_usage {
            let data = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.alias,
                "choices": [],
                "usage": usage_json(self.usage, self.cache_writes),
            });
            out.push(SseEvent { event: None, data: data.to_string() });
        }
        out.push(SseEvent { event: None, data: "[DONE]".into() });
        out
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn started(&self) -> bool {
        self.started
    }

    fn complete(&self) -> bool {
        self.finished
    }
}
