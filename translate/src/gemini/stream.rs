//! Gemini `streamGenerateContent?alt=sse` events → OpenAI `chat.completion.chunk` events.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::response::{error_message, tool_call};
use super::{bad, finish_reason, now_secs, random_hex, usage, usage_json};
use crate::{SseEvent, StreamConverter, TranslateError, Usage};

/// Converts Gemini's SSE stream, one `data:` event (a whole `GenerateContentResponse`) at a
/// time, into OpenAI chunks.
///
/// Per candidate (choice): a role chunk first, then a chunk per text part (thought parts as
/// `reasoning_content` deltas), a chunk per `functionCall` part (Gemini sends each call whole,
/// so id, name and complete arguments arrive in one chunk), and a finish chunk when the
/// candidate has a `finishReason`. Usage is taken from the last `usageMetadata` seen (each
/// event carries the running totals). [`StreamConverter::finish`] adds the usage chunk when
/// the client asked for `stream_options.include_usage`, then `[DONE]`.
pub struct StreamToOpenAi {
    alias: String,
    include_usage: bool,
    id: Option<String>,
    created: u64,
    choices: BTreeMap<u64, ChoiceState>,
    usage: Usage,
    reasoning: u64,
    started: bool,
    done: bool,
}

#[derive(Default)]
struct ChoiceState {
    tool_calls: u64,
    finished: bool,
}

impl StreamToOpenAi {
    /// A converter answering as model `alias`; `include_usage` is the client's
    /// `stream_options.include_usage`.
    #[must_use]
    pub fn new(alias: &str, include_usage: bool) -> Self {
        Self {
            alias: alias.to_owned(),
            include_usage,
            id: None,
            created: now_secs(),
            choices: BTreeMap::new(),
            usage: Usage::default(),
            reasoning: 0,
            started: false,
            done: false,
        }
    }

    fn id(&mut self) -> String {
        self.id.get_or_insert_with(|| format!("chatcmpl-{}", random_hex())).clone()
    }

    fn chunk(&mut self, choices: Value) -> SseEvent {
        let data = json!({
            "id": self.id(),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.alias,
            "choices": choices,
        });
        SseEvent { event: None, data: data.to_string() }
    }

    /// The closing chunk with no choices and the usage, as OpenAI sends for `include_usage`.
    fn usage_chunk(&mut self) -> SseEvent {
        let data = json!({
            "id": self.id(),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.alias,
            "choices": [],
            "usage": usage_json(self.usage, self.reasoning),
        });
        SseEvent { event: None, data: data.to_string() }
    }

    fn delta(&mut self, index: u64, delta: Value) -> SseEvent {
        self.chunk(json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": null }]))
    }

    fn finish_chunk(&mut self, index: u64, reason: &str) -> SseEvent {
        self.chunk(json!([{ "index": index, "delta": {}, "logprobs": null, "finish_reason": reason }]))
    }

    /// Opens choice `index`, pushing its role chunk to `out`, the first time it is seen.
    fn open(&mut self, index: u64, out: &mut Vec<SseEvent>) {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.choices.entry(index) {
            slot.insert(ChoiceState::default());
            let role = self.delta(index, json!({ "role": "assistant", "content": "" }));
            out.push(role);
        }
    }

    fn candidate(&mut self, c: &Value, position: u64, out: &mut Vec<SseEvent>) -> Result<(), TranslateError> {
        let index = c.get("index").and_then(Value::as_u64).unwrap_or(position);
        self.open(index, out);
        if let Some(parts) = c.pointer("/content/parts").and_then(Value::as_array) {
            for p in parts {
                if let Some(call) = p.get("functionCall") {
                    let mut call = tool_call(p, call)?;
                    let slot = self.choices.get_mut(&index).map(|s| {
                        s.tool_calls += 1;
                        s.tool_calls - 1
                    });
                    call["index"] = slot.unwrap_or(0).into();
                    let ev = self.delta(index, json!({ "tool_calls": [call] }));
                    out.push(ev);
                    self.started = true;
                } else if let Some(t) = p.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    let delta = if p.get("thought").and_then(Value::as_bool) == Some(true) {
                        json!({ "reasoning_content": t })
                    } else {
                        json!({ "content": t })
                    };
                    let ev = self.delta(index, delta);
                    out.push(ev);
                    self.started = true;
                }
            }
        }
        if let Some(reason) = c.get("finishReason").and_then(Value::as_str) {
            let state = self.choices.entry(index).or_default();
            if !state.finished {
                state.finished = true;
                let reason = finish_reason(reason, state.tool_calls > 0);
                let ev = self.finish_chunk(index, reason);
                out.push(ev);
                self.started = true;
            }
        }
        Ok(())
    }
}

impl StreamConverter for StreamToOpenAi {
    fn on_event(&mut self, _event: Option<&str>, data: &str) -> Result<Vec<SseEvent>, TranslateError> {
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(Vec::new());
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| bad(format!("Gemini stream event is not JSON: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(bad(format!("Gemini stream failed: {}", error_message(err))));
        }
        if self.id.is_none()
            && let Some(r) = v.get("responseId").and_then(Value::as_str)
        {
            self.id = Some(format!("chatcmpl-{r}"));
        }
        if let Some(meta) = v.get("usageMetadata") {
            (self.usage, self.reasoning) = usage(meta);
        }
        let mut out = Vec::new();
        match v.get("candidates") {
            Some(Value::Array(cs)) if !cs.is_empty() => {
                for (i, c) in cs.iter().enumerate() {
                    self.candidate(c, i as u64, &mut out)?;
                }
            }
            Some(Value::Array(_)) | None => {
                if v.pointer("/promptFeedback/blockReason").is_some() {
                    self.candidate(&json!({ "index": 0, "finishReason": "SAFETY" }), 0, &mut out)?;
                }
            }
            Some(_) => return Err(bad("Gemini stream event `candidates` is not an array")),
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        // A choice Gemini never gave a finish reason still needs one for OpenAI clients.
        let open: Vec<(u64, bool)> =
            self.choices.iter().filter(|(_, s)| !s.finished).map(|(i, s)| (*i, s.tool_calls > 0)).collect();
        for (index, has_calls) in open {
            let ev = self.finish_chunk(index, finish_reason("STOP", has_calls));
            out.push(ev);
        }
        if self.include_usage {
            let ev = self.usage_chunk();
            out.push(ev);
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
        !self.choices.is_empty() && self.choices.values().all(|c| c.finished)
    }
}
