//! Anthropic Messages event stream → OpenAI `chat.completion.chunk` stream.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::response::{openai_usage, usage_of};
use super::{bad, count, finish_reason, now_secs, parse_event};
use crate::{SseEvent, StreamConverter, TranslateError, Usage};

/// Converts Anthropic's stream (`message_start`, `content_block_*`, `message_delta`,
/// `message_stop`, `ping`, `error`) into OpenAI chunks, one Anthropic event at a time.
///
/// - `message_start` → a chunk with `role: assistant` (and the input usage is noted);
/// - text deltas → `content` chunks;
/// - a `tool_use` block start → a `tool_calls` chunk with the id, name and empty arguments,
///   each tool call numbered from 0 in order of appearance (OpenAI's `index`, which is not
///   Anthropic's block index once text precedes the tools); `input_json_delta` → argument
///   chunks under that index;
/// - `message_delta` → a chunk with the `finish_reason` (and the output usage is noted);
/// - `error` → `Err(BadResponse)` with Anthropic's message; thinking deltas, `ping` and
///   event types Anthropic may add later are skipped.
///
/// [`finish`](StreamConverter::finish) sends the usage chunk (`choices: []`) when the client
/// asked for `stream_options.include_usage`, then `data: [DONE]`.
pub struct StreamToOpenAi {
    alias: String,
    include_usage: bool,
    id: String,
    created: u64,
    usage: Usage,
    /// Anthropic's usage counters as last reported.
    raw_usage: Map<String, Value>,
    /// Anthropic block index → OpenAI tool-call index, for `tool_use` blocks.
    tools: HashMap<u64, u64>,
    started: bool,
    stopped: bool,
}

impl StreamToOpenAi {
    /// `alias` is the model name the client asked for; `include_usage` is the client's
    /// `stream_options.include_usage`.
    #[must_use]
    pub fn new(alias: &str, include_usage: bool) -> Self {
        Self {
            alias: alias.to_owned(),
            include_usage,
            id: String::new(),
            created: now_secs(),
            usage: Usage::default(),
            raw_usage: Map::new(),
            tools: HashMap::new(),
            started: false,
            stopped: false,
        }
    }

    fn chunk(&self, choices: Value) -> SseEvent {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.alias,
            "choices": choices,
        });
        SseEvent { event: None, data: chunk.to_string() }
    }

    fn delta(&self, delta: Value, finish: Option<&str>) -> SseEvent {
        self.chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]))
    }

    /// Anthropic's counts in `message_delta` are cumulative, so each one seen replaces the
    /// previous; fields it leaves out keep their `message_start` values.
    fn note_usage(&mut self, u: &Value) {
        let Some(fields) = u.as_object() else { return };
        for (k, v) in fields {
            if v.is_u64() {
                self.raw_usage.insert(k.clone(), v.clone());
            }
        }
        self.usage = usage_of(&Value::Object(self.raw_usage.clone()));
    }
}

impl StreamConverter for StreamToOpenAi {
    fn on_event(&mut self, _event: Option<&str>, data: &str) -> Result<Vec<SseEvent>, TranslateError> {
        let ev = parse_event(data)?;
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
        let out = match kind {
            "message_start" => {
                let msg = ev.get("message").unwrap_or(&Value::Null);
                if let Some(id) = msg.get("id").and_then(Value::as_str) {
                    id.clone_into(&mut self.id);
                }
                self.note_usage(msg.get("usage").unwrap_or(&Value::Null));
                vec![self.delta(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let block = ev.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = self.tools.len() as u64;
                        self.tools.insert(count(&ev, "index"), index);
                        self.started = true;
                        let call = json!({
                            "index": index,
                            "id": block.get("id").cloned().unwrap_or_default(),
                            "type": "function",
                            "function": {"name": block.get("name").cloned().unwrap_or_default(), "arguments": ""},
                        });
                        vec![self.delta(json!({"tool_calls": [call]}), None)]
                    }
                    // A text block starts empty; its text comes in deltas.
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(t) if !t.is_empty() => {
                            self.started = true;
                            vec![self.delta(json!({"content": t}), None)]
                        }
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
            "content_block_delta" => {
                let delta = ev.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => match delta.get("text").and_then(Value::as_str) {
                        Some(t) if !t.is_empty() => {
                            self.started = true;
                            vec![self.delta(json!({"content": t}), None)]
                        }
                        _ => Vec::new(),
                    },
                    Some("input_json_delta") => {
                        let block = count(&ev, "index");
                        let index = *self.tools.get(&block).ok_or_else(|| {
                            bad(format!("input_json_delta for block {block}, not a tool_use"))
                        })?;
                        match delta.get("partial_json").and_then(Value::as_str) {
                            Some(p) if !p.is_empty() => {
                                let call = json!({"index": index, "function": {"arguments": p}});
                                vec![self.delta(json!({"tool_calls": [call]}), None)]
                            }
                            _ => Vec::new(),
                        }
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                if let Some(u) = ev.get("usage") {
                    self.note_usage(u);
                }
                match ev.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    Some(reason) => {
                        self.started = true;
                        vec![self.delta(json!({}), Some(finish_reason(reason)))]
                    }
                    None => Vec::new(),
                }
            }
            "error" => {
                let kind = ev.pointer("/error/type").and_then(Value::as_str).unwrap_or("error");
                let msg = ev.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
                return Err(bad(format!("Anthropic stream error ({kind}): {msg}")));
            }
            "message_stop" => {
                self.stopped = true;
                Vec::new()
            }
            // content_block_stop, ping, and event types added later.
            _ => Vec::new(),
        };
        Ok(out)
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::with_capacity(2);
        if self.include_usage {
            let mut chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.alias,
                "choices": [],
            });
            chunk["usage"] = openai_usage(self.usage);
            out.push(SseEvent { event: None, data: chunk.to_string() });
        }
        out.push(SseEvent { event: None, data: "[DONE]".to_owned() });
        out
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn started(&self) -> bool {
        self.started
    }

    fn complete(&self) -> bool {
        self.stopped
    }
}
