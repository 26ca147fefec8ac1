//! OpenAI's Responses API: `POST /v1/responses`, stream or not, following OpenAI's API reference
//! (the `response` object, its output items and the typed stream events). Azure's flavour of it
//! is not served.
//!
//! Built with `serde_json::json!` for the reason given in [`super::anthropic`].

use bytes::Bytes;
use serde_json::{Value, json};

use super::openai::unix_now;
use super::plan::Payload;
use super::reply::{Finish, Reply, TOOL_ARGUMENTS};
use super::request::{Call, count_words, join};

/// The event `#mock:malformed` puts in a stream, after `response.created`.
const MALFORMED_EVENT: &[u8] =
    b"event: response.in_progress\ndata: {\"type\": \"response.in_progress\", this is not json\n\n";

/// Reads a create-response body. Prompt tokens are the words of `instructions` and of `input`:
/// a string, or a list of items whose message texts (a string `content`, or the `text` of each
/// part) and `function_call_output` outputs count, function calls not. Directives come from the
/// model and the last user message (the last item when no message is a user's); a list ending
/// with a `function_call_output` ends with a tool result. `max_output_tokens` is the output
/// limit.
///
/// # Errors
/// A message for a 400 `invalid_request_error`, worded as OpenAI words them.
pub(crate) fn parse(body: &Value) -> Result<Call<'_>, String> {
    if !body.is_object() {
        return Err("We could not parse the JSON body of your request.".into());
    }
    let model = body.get("model").and_then(Value::as_str).ok_or("Missing required parameter: 'model'.")?;
    let mut call = Call {
        model,
        max_tokens: body.get("max_output_tokens").and_then(Value::as_u64),
        directive_texts: vec![model],
        body: Some(body),
        ..Call::default()
    };
    let mut words = match body.get("instructions") {
        None | Some(Value::Null) => 0,
        Some(Value::String(text)) => count_words(text),
        Some(_) => return Err("Invalid type for 'instructions': expected a string.".into()),
    };
    match body.get("input") {
        // Optional: a `previous_response_id` or a `prompt` can stand in for it.
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            words += count_words(text);
            call.directive_texts.push(text);
        }
        Some(Value::Array(items)) => words += read_items(&mut call, items)?,
        Some(_) => {
            return Err("Invalid type for 'input': expected one of a string or array of input items.".into());
        }
    }
    call.prompt_tokens = words.max(1);
    Ok(call)
}

/// The words of a list of input items; fills in the directive texts and the tool result.
fn read_items<'a>(call: &mut Call<'a>, items: &'a [Value]) -> Result<u64, String> {
    if let Some(i) = items.iter().position(|item| !item.is_object()) {
        return Err(format!("Invalid type for 'input[{i}]': expected an input item object."));
    }
    let role = |item: &Value| item.get("role").and_then(Value::as_str) == Some("user");
    let directives_from = items.iter().rposition(role).or(items.len().checked_sub(1));
    let mut words = 0;
    for (i, item) in items.iter().enumerate() {
        let texts = item_texts(item);
        words += texts.iter().map(|t| count_words(t)).sum::<u64>();
        if Some(i) == directives_from && kind(item) == "message" {
            call.directive_texts.extend(&texts);
        }
    }
    if let Some(last) = items.last().filter(|item| kind(item) == "function_call_output") {
        call.tool_result = Some(join(item_texts(last)));
    }
    Ok(words)
}

/// An input item's type; an item with a `role` and no `type` is a message (the "easy input
/// message" of OpenAI's reference).
fn kind(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or("message")
}

/// The texts an input item contributes to the prompt: a message's content, a
/// `function_call_output`'s output; none for the other item types.
fn item_texts(item: &Value) -> Vec<&str> {
    let content = match kind(item) {
        "message" => item.get("content"),
        "function_call_output" => item.get("output"),
        _ => None,
    };
    match content {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect()
        }
        _ => Vec::new(),
    }
}

/// The `response` object, or its event stream: `response.created`, `response.in_progress`,
/// `response.output_item.added`, then for text `response.content_part.added`, one
/// `response.output_text.delta` per word, `response.output_text.done`,
/// `response.content_part.done`, or for a tool call one `response.function_call_arguments.delta`
/// per fragment and `response.function_call_arguments.done`; then `response.output_item.done`
/// and `response.completed` (`response.incomplete` when cut at `max_output_tokens`), each with
/// its `event:` line and a `sequence_number` from 0. A `stream_error` replaces everything after
/// the first delta with an `error` event and `response.failed`.
pub(crate) fn render(
    serial: u64,
    reply: &Reply<'_>,
    request: Option<&Value>,
    stream: bool,
    malformed: bool,
    stream_error: Option<&str>,
) -> Payload {
    let answer = Answer::new(serial, reply, request.unwrap_or(&Value::Null));
    if stream {
        Payload::Sse(answer.events(malformed, stream_error))
    } else {
        Payload::Json(Bytes::from(answer.response(answer.status(), true).to_string()))
    }
}

struct Answer<'r, 'a> {
    reply: &'r Reply<'a>,
    request: &'r Value,
    id: String,
    /// The output item's id: `msg_…`, or `fc_…` for a tool call.
    item_id: String,
    call_id: String,
    created_at: u64,
}

impl<'r, 'a> Answer<'r, 'a> {
    fn new(serial: u64, reply: &'r Reply<'a>, request: &'r Value) -> Self {
        let item_prefix = if reply.tool().is_some() { "fc" } else { "msg" };
        Self {
            reply,
            request,
            id: format!("resp_mock{serial}"),
            item_id: format!("{item_prefix}_mock{serial}"),
            call_id: format!("call_mock{serial}"),
            created_at: unix_now(),
        }
    }

    /// `completed`, or `incomplete` when the answer was cut at `max_output_tokens`.
    fn status(&self) -> &'static str {
        if self.reply.finish == Finish::Length { "incomplete" } else { "completed" }
    }

    fn usage(&self) -> Value {
        let t = self.reply.tokens;
        json!({
            "input_tokens": t.prompt,
            "input_tokens_details": {"cached_tokens": t.cached.unwrap_or(0)},
            "output_tokens": t.completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": t.total(),
        })
    }

    /// The request's value of a field the response object echoes, else the API's default.
    fn echo(&self, key: &str, default: Value) -> Value {
        self.request.get(key).filter(|v| !v.is_null()).cloned().unwrap_or(default)
    }

    /// The `response` object in `status`; `done` puts in the finished output item and usage
    /// (an `in_progress` snapshot has neither).
    fn response(&self, status: &str, done: bool) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "completed_at": if status == "completed" { json!(unix_now()) } else { Value::Null },
            "error": null,
            "incomplete_details": if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
            "instructions": self.echo("instructions", Value::Null),
            "max_output_tokens": self.echo("max_output_tokens", Value::Null),
            "max_tool_calls": null,
            "model": self.reply.model,
            "output": if done { json!([self.item(true)]) } else { json!([]) },
            "parallel_tool_calls": self.echo("parallel_tool_calls", json!(true)),
            "previous_response_id": self.echo("previous_response_id", Value::Null),
            "reasoning": {"effort": null, "summary": null},
            "service_tier": "default",
            "store": self.echo("store", json!(true)),
            "temperature": self.echo("temperature", json!(1.0)),
            "text": self.echo("text", json!({"format": {"type": "text"}, "verbosity": "medium"})),
            "tool_choice": self.echo("tool_choice", json!("auto")),
            "tools": self.echo("tools", json!([])),
            "top_logprobs": 0,
            "top_p": self.echo("top_p", json!(1.0)),
            "truncation": self.echo("truncation", json!("disabled")),
            "usage": if done { self.usage() } else { Value::Null },
            "user": null,
            "metadata": self.echo("metadata", json!({})),
        })
    }

    /// The output item: a message with one `output_text` part, or a `function_call`; `done`
    /// gives the finished one, else the empty `in_progress` item a stream adds first.
    fn item(&self, done: bool) -> Value {
        let status = match (done, self.reply.finish) {
            (false, _) => "in_progress",
            (true, Finish::Length) => "incomplete",
            (true, _) => "completed",
        };
        match self.reply.tool() {
            Some(name) => json!({
                "type": "function_call", "id": self.item_id, "call_id": self.call_id, "name": name,
                "arguments": if done { TOOL_ARGUMENTS } else { "" }, "status": status,
            }),
            None => json!({
                "type": "message", "id": self.item_id, "status": status, "role": "assistant",
                "content": if done { json!([text_part(self.reply.text())]) } else { json!([]) },
            }),
        }
    }

    /// An event's data about the output item: `fields` with its `item_id` and `output_index`.
    fn in_item(&self, mut fields: Value) -> Value {
        if let Some(map) = fields.as_object_mut() {
            map.insert("item_id".into(), json!(self.item_id));
            map.insert("output_index".into(), json!(0));
        }
        fields
    }

    fn events(&self, malformed: bool, stream_error: Option<&str>) -> Vec<Bytes> {
        let mut out = Events::default();
        out.push("response.created", json!({"response": self.response("in_progress", false)}));
        if malformed {
            out.frames.push(Bytes::from_static(MALFORMED_EVENT));
        }
        out.push("response.in_progress", json!({"response": self.response("in_progress", false)}));
        out.push("response.output_item.added", json!({"output_index": 0, "item": self.item(false)}));
        let with = |fields: Value| self.in_item(fields);
        let tool = self.reply.tool().is_some();
        if !tool {
            out.push("response.content_part.added", with(json!({"content_index": 0, "part": text_part("")})));
        }
        for (i, piece) in self.reply.pieces().enumerate() {
            if tool {
                out.push("response.function_call_arguments.delta", with(json!({"delta": piece})));
            } else {
                out.push(
                    "response.output_text.delta",
                    with(json!({"content_index": 0, "delta": piece, "logprobs": []})),
                );
            }
            if let Some(code) = stream_error.filter(|_| i == 0) {
                let message = "The mock was told to fail this stream.";
                out.push("error", json!({"code": code, "message": message, "param": null}));
                let mut failed = self.response("failed", false);
                failed["error"] = json!({"code": code, "message": message});
                out.push("response.failed", json!({"response": failed}));
                return out.frames;
            }
        }
        if tool {
            out.push("response.function_call_arguments.done", with(json!({"arguments": TOOL_ARGUMENTS})));
        } else {
            let text = self.reply.text();
            out.push(
                "response.output_text.done",
                with(json!({"content_index": 0, "text": text, "logprobs": []})),
            );
            out.push(
                "response.content_part.done",
                with(json!({"content_index": 0, "part": text_part(text)})),
            );
        }
        out.push("response.output_item.done", json!({"output_index": 0, "item": self.item(true)}));
        let status = self.status();
        out.push(&format!("response.{status}"), json!({"response": self.response(status, true)}));
        out.frames
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
}

/// A stream being written: each event gets its `type` (the event name) and the next
/// `sequence_number`.
#[derive(Default)]
struct Events {
    frames: Vec<Bytes>,
    sequence: u64,
}

impl Events {
    fn push(&mut self, name: &str, mut data: Value) {
        if let Some(fields) = data.as_object_mut() {
            fields.insert("type".into(), json!(name));
            fields.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        self.frames.push(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_string_or_items_and_the_last_user_text() {
        let body = json!({"model": "gpt-4o#mock:cached=1", "instructions": "be brief",
                          "input": "one two three", "max_output_tokens": 7});
        let call = parse(&body).unwrap();
        assert_eq!(call.directive_texts, ["gpt-4o#mock:cached=1", "one two three"]);
        assert_eq!((call.prompt_tokens, call.max_tokens), (5, Some(7)));

        let body = json!({"model": "m", "input": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "input_text", "text": "weather? #mock:tool=get_weather"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "22 degrees"}
        ]});
        let call = parse(&body).unwrap();
        assert_eq!(call.directive_texts, ["m", "weather? #mock:tool=get_weather"]);
        assert_eq!(call.tool_result.as_deref(), Some("22 degrees"));
        assert_eq!(call.prompt_tokens, 2 + 2 + 2);

        assert_eq!(parse(&json!({"model": "m"})).unwrap().prompt_tokens, 1);
    }

    #[test]
    fn bad_bodies_are_client_errors() {
        assert_eq!(parse(&json!({"input": "x"})).unwrap_err(), "Missing required parameter: 'model'.");
        assert!(parse(&json!({"model": "m", "input": 3})).is_err());
        assert!(parse(&json!({"model": "m", "input": ["x"]})).is_err());
        assert!(parse(&json!({"model": "m", "instructions": ["x"]})).is_err());
        assert!(parse(&json!("text")).is_err());
    }
}
