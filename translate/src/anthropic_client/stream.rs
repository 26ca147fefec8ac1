//! OpenAI `chat.completion.chunk` stream → Anthropic Messages event stream.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::error_type_of_openai;
use super::response::anthropic_usage;
use crate::anthropic::{bad, count, parse_event, stop_reason};
use crate::{SseEvent, StreamConverter, TranslateError, Usage};

/// The content block open in the Anthropic stream.
enum Block {
    Text { index: u64 },
    Tool { index: u64, call: u64, id: Option<String> },
}

/// Converts OpenAI chunks into Anthropic's event sequence: `message_start`, then for each run
/// of text and for each tool call a `content_block_start`, its deltas (`text_delta`,
/// `input_json_delta`) and `content_block_stop`, numbered in order of appearance however text
/// and tool calls interleave; then `message_delta` (stop reason, usage) and `message_stop`.
///
/// OpenAI's usage arrives in a chunk after the one carrying `finish_reason` (with
/// `stream_options.include_usage`), so `message_delta` waits for `data: [DONE]` or
/// [`finish`](StreamConverter::finish), whichever comes first. `message_start` reports
/// `input_tokens: 0` unless the first chunk already carried usage; `message_delta` carries the
/// final counts. An OpenAI error object in the stream becomes an Anthropic `error` event, which
/// ends the stream.
pub struct StreamFromOpenAi {
    model: String,
    id: String,
    message_started: bool,
    ended: bool,
    block: Option<Block>,
    next_block: u64,
    /// OpenAI tool-call indexes whose Anthropic block was closed.
    closed_calls: HashSet<u64>,
    stop: Option<&'static str>,
    /// OpenAI's last `usage` object.
    raw_usage: Value,
    usage: Usage,
    started: bool,
}

impl StreamFromOpenAi {
    /// `model` is what the client sees as the message's model.
    #[must_use]
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            id: String::new(),
            message_started: false,
            ended: false,
            block: None,
            next_block: 0,
            closed_calls: HashSet::new(),
            stop: None,
            raw_usage: Value::Null,
            usage: Usage::default(),
            started: false,
        }
    }

    fn start_message(&mut self, out: &mut Vec<SseEvent>) {
        if self.message_started {
            return;
        }
        self.message_started = true;
        let mut usage = anthropic_usage(&self.raw_usage);
        usage["output_tokens"] = 0.into();
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage,
        });
        out.push(event("message_start", json!({"type": "message_start", "message": message})));
    }

    fn close_block(&mut self, out: &mut Vec<SseEvent>) {
        let index = match self.block.take() {
            None => return,
            Some(Block::Text { index }) => index,
            Some(Block::Tool { index, call, .. }) => {
                self.closed_calls.insert(call);
                index
            }
        };
        out.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<SseEvent>) -> u64 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn text(&mut self, text: &str, out: &mut Vec<SseEvent>) {
        let index = match self.block {
            Some(Block::Text { index }) => index,
            _ => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.block = Some(Block::Text { index });
                index
            }
        };
        self.started = true;
        let delta = json!({"type": "text_delta", "text": text});
        out.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        ));
    }

    fn tool_call(&mut self, tc: &Value, out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        let id = tc.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
        let current = match &self.block {
            Some(Block::Tool { call, id: cur, .. }) => Some((*call, cur.as_deref())),
            _ => None,
        };
        // Providers that omit `index` send one call at a time: a new id means a new call.
        let call = match (tc.get("index").and_then(Value::as_u64), current) {
            (Some(i), _) => i,
            (None, Some((c, cur))) if id.is_none() || id == cur => c,
            (None, _) => self.closed_calls.len() as u64 + u64::from(current.is_some()),
        };
        let continuing = current.is_some_and(|(c, cur)| c == call && (id.is_none() || id == cur));
        let index = if continuing {
            match self.block {
                Some(Block::Tool { index, .. }) => index,
                _ => return Err(bad("tool call state lost")),
            }
        } else {
            if id.is_none() && self.closed_calls.contains(&call) {
                return Err(bad(format!("tool call {call} continued after another block started")));
            }
            let name = tc.pointer("/function/name").and_then(Value::as_str).unwrap_or_default();
            let block_id = id.map_or_else(|| format!("toolu_{}", self.next_block), str::to_owned);
            let index =
                self.open_block(json!({"type": "tool_use", "id": block_id, "name": name, "input": {}}), out);
            self.block = Some(Block::Tool { index, call, id: id.map(str::to_owned) });
            self.started = true;
            index
        };
        if let Some(args) =
            tc.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty())
        {
            let delta = json!({"type": "input_json_delta", "partial_json": args});
            out.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        Ok(())
    }

    fn end(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.ended = true;
        self.start_message(&mut out);
        self.close_block(&mut out);
        let delta = json!({"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null});
        let usage = anthropic_usage(&self.raw_usage);
        out.push(event("message_delta", json!({"type": "message_delta", "delta": delta, "usage": usage})));
        out.push(event("message_stop", json!({"type": "message_stop"})));
        out
    }
}

fn event(name: &'static str, data: Value) -> SseEvent {
    SseEvent { event: Some(name.into()), data: data.to_string() }
}

impl StreamConverter for StreamFromOpenAi {
    fn on_event(&mut self, _event: Option<&str>, data: &str) -> Result<Vec<SseEvent>, TranslateError> {
        if self.ended {
            return Ok(Vec::new());
        }
        if data.trim() == "[DONE]" {
            return Ok(self.end());
        }
        let chunk = parse_event(data)?;
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            self.ended = true;
            let message = err.get("message").and_then(Value::as_str).unwrap_or("the provider failed");
            let error = json!({"type": error_type_of_openai(err), "message": message});
            return Ok(vec![event("error", json!({"type": "error", "error": error}))]);
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.raw_usage = u.clone();
            let cached = u.get("prompt_tokens_details").map_or(0, |d| count(d, "cached_tokens"));
            self.usage = Usage {
                input: count(u, "prompt_tokens"),
                output: count(u, "completion_tokens"),
                cached_input: cached,
            };
        }
        let mut out = Vec::new();
        if !self.message_started {
            if let Some(id) = chunk.get("id").and_then(Value::as_str) {
                id.clone_into(&mut self.id);
            }
            self.start_message(&mut out);
        }
        // Only the first choice: Anthropic has one answer, and this gateway never asks for more.
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|ch| ch.get("index").and_then(Value::as_u64).unwrap_or(0) == 0));
        let Some(choice) = choice else { return Ok(out) };
        if let Some(delta) = choice.get("delta") {
            for key in ["content", "refusal"] {
                if let Some(text) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    self.text(text, &mut out);
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for tc in calls {
                    self.tool_call(tc, &mut out)?;
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(stop_reason(reason));
            self.started = true;
            self.close_block(&mut out);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        self.end()
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn started(&self) -> bool {
        self.started
    }

    fn complete(&self) -> bool {
        self.ended || self.stop.is_some()
    }
}
