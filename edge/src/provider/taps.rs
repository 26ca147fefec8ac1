//! Stream "converters" for answers already in the client's format: each passes the events on
//! unchanged and only watches them for usage, the first token and the documented end, so the
//! relay treats a passed-through stream and a translated one alike.

use std::borrow::Cow;

use llmgw_translate::{SseEvent, StreamConverter, TranslateError, Usage};
use serde_json::Value;

use super::openai::{FirstTokenProbe, ProviderUsage, StreamChunk};

fn pass(event: Option<&str>, data: &str) -> SseEvent {
    SseEvent { event: event.map(|e| Cow::Owned(e.to_owned())), data: data.to_owned() }
}

fn parse(data: &str) -> Result<Value, TranslateError> {
    serde_json::from_str(data)
        .map_err(|e| TranslateError::BadResponse(format!("event data is not JSON: {e}")))
}

fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// OpenAI chat chunks, as an OpenAI-format provider sends them.
#[derive(Default)]
pub struct OpenAiTap {
    usage: Usage,
    started: bool,
    done: bool,
}

impl StreamConverter for OpenAiTap {
    fn on_event(&mut self, event: Option<&str>, data: &str) -> Result<Vec<SseEvent>, TranslateError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            self.started = true;
            return Ok(vec![pass(None, "[DONE]")]);
        }
        let chunk: StreamChunk = serde_json::from_str(data)
            .map_err(|e| TranslateError::BadResponse(format!("event data is not JSON: {e}")))?;
        if let Some(u) = chunk.usage {
            let t = ProviderUsage::tokens(&u);
            self.usage = Usage { input: t.input, output: t.output, cached_input: t.cached_input };
        }
        self.started |= FirstTokenProbe::has_token(data);
        Ok(vec![pass(event.filter(|e| *e != "message"), data)])
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn started(&self) -> bool {
        self.started
    }

    fn complete(&self) -> bool {
        self.done
    }
}

/// Anthropic's usage object in OpenAI's terms: Anthropic's `input_tokens` leaves out the
/// tokens read from and written to the prompt cache, which OpenAI counts as input.
#[must_use]
pub fn anthropic_usage(u: &Value, mut into: Usage) -> Usage {
    let has = |k: &str| u.get(k).is_some_and(Value::is_u64);
    if has("input_tokens") || has("cache_read_input_tokens") || has("cache_creation_input_tokens") {
        let cached = n(u, "cache_read_input_tokens");
        into.input = n(u, "input_tokens") + cached + n(u, "cache_creation_input_tokens");
        into.cached_input = cached;
    }
    if has("output_tokens") {
        into.output = n(u, "output_tokens");
    }
    into
}

/// Anthropic Messages events, passed to an Anthropic-format client.
#[derive(Default)]
pub struct AnthropicTap {
    usage: Usage,
    started: bool,
    stopped: bool,
    failed: bool,
}

impl StreamConverter for AnthropicTap {
    fn on_event(&mut self, event: Option<&str>, data: &str) -> Result<Vec<SseEvent>, TranslateError> {
        let v = parse(data)?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "message_start" => {
                if let Some(u) = v.pointer("/message/usage") {
                    self.usage = anthropic_usage(u, self.usage);
                }
            }
            "content_block_start" => {
                self.started |= v.pointer("/content_block/type").and_then(Value::as_str) == Some("tool_use");
            }
            "content_block_delta" => self.started = true,
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.usage = anthropic_usage(u, self.usage);
                }
                self.started |= v.pointer("/delta/stop_reason").is_some_and(|r| !r.is_null());
            }
            // An error event is the provider's last word: the client gets it as sent.
            "message_stop" | "error" => {
                self.started = true;
                self.stopped = true;
                self.failed |= kind == "error";
            }
            _ => {}
        }
        let name = event.filter(|e| !e.is_empty() && *e != "message").or((!kind.is_empty()).then_some(kind));
        Ok(vec![pass(name, data)])
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        Vec::new()
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

    fn failed(&self) -> bool {
        self.failed
    }
}

/// The usage of an OpenAI Responses API response object.
#[must_use]
pub fn responses_usage(u: &Value) -> Usage {
    Usage {
        input: n(u, "input_tokens"),
        output: n(u, "output_tokens"),
        cached_input: u.get("input_tokens_details").map_or(0, |d| n(d, "cached_tokens")),
    }
}

/// OpenAI Responses API events, passed to the client.
#[derive(Default)]
pub struct ResponsesTap {
    usage: Usage,
    started: bool,
    ended: bool,
    failed: bool,
}

impl StreamConverter for ResponsesTap {
    fn on_event(&mut self, event: Option<&str>, data: &str) -> Result<Vec<SseEvent>, TranslateError> {
        let v = parse(data)?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
        self.failed |= matches!(kind, "response.failed" | "error");
        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {}
            "response.completed" | "response.incomplete" | "response.failed" | "error" => {
                if let Some(u) = v.pointer("/response/usage") {
                    self.usage = responses_usage(u);
                }
                self.started = true;
                self.ended = true;
            }
            _ => self.started = true,
        }
        Ok(vec![pass(event.filter(|e| !e.is_empty() && *e != "message"), data)])
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn started(&self) -> bool {
        self.started
    }

    fn complete(&self) -> bool {
        self.ended
    }

    fn failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_tap_counts_cache_as_input() {
        let mut t = AnthropicTap::default();
        let start = r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#;
        let out = t.on_event(Some("message_start"), start).unwrap();
        assert_eq!(out[0].event.as_deref(), Some("message_start"));
        assert!(!t.started());
        t.on_event(
            None,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
        )
        .unwrap();
        t.on_event(
            None,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
        )
        .unwrap();
        assert!(t.started() && !t.complete());
        let out = t.on_event(None, r#"{"type":"message_stop"}"#).unwrap();
        assert_eq!(out[0].event.as_deref(), Some("message_stop"));
        assert!(t.complete());
        assert_eq!(t.usage(), Usage { input: 15, output: 7, cached_input: 5 });
    }

    #[test]
    fn responses_tap_reads_the_final_usage() {
        let mut t = ResponsesTap::default();
        t.on_event(Some("response.created"), r#"{"type":"response.created"}"#).unwrap();
        assert!(!t.started());
        t.on_event(
            Some("response.output_text.delta"),
            r#"{"type":"response.output_text.delta","delta":"x"}"#,
        )
        .unwrap();
        assert!(t.started() && !t.complete());
        let done = r#"{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":4,"input_tokens_details":{"cached_tokens":1}}}}"#;
        t.on_event(Some("response.completed"), done).unwrap();
        assert!(t.complete());
        assert_eq!(t.usage(), Usage { input: 3, output: 4, cached_input: 1 });
    }
}
