//! Anthropic Messages request (from a client) → OpenAI chat-completions request.

use serde_json::{Map, Value, json};

use crate::TranslateError;
use crate::anthropic::{field, invalid};

/// What `Unsupported` names as the target: the request goes to whichever provider the model
/// routes to, through the OpenAI format.
const TARGET: &str = "the OpenAI chat format";

/// Translates an Anthropic Messages request into an OpenAI chat-completions request. `model`
/// is copied; the caller replaces it with the upstream model.
///
/// Translated: `system` (a string, or text blocks joined by blank lines) → a system message;
/// `messages` with text, image (base64 → data: URL, url), PDF `document` (base64 → a `file`
/// part, plain-text source → text), `tool_use` → `tool_calls`, `tool_result` → `tool`
/// messages placed before the rest of that user turn; `tools` → function tools;
/// `tool_choice` auto/any/tool/none → auto/required/function/none, with
/// `disable_parallel_tool_use` → `parallel_tool_calls: false`; `max_tokens` →
/// `max_completion_tokens` (OpenAI's current name, which its reasoning models require);
/// `stop_sequences` → `stop`; `temperature`, `top_p`; `metadata.user_id` → `user`;
/// `stream` → `stream` with `stream_options.include_usage` so usage comes back;
/// `output_config.format` (or the beta `output_format`) with a JSON schema →
/// `response_format` `json_schema`.
///
/// Dropped, as they only tune how the answer is produced: `top_k` (OpenAI has no such
/// sampling), `thinking` (no portable mapping from a token budget to a reasoning effort),
/// `cache_control` on tools and on blocks other than text (text blocks keep it in the pivot,
/// see below),
/// `service_tier`, `output_config.effort`, `thinking`/`redacted_thinking` blocks of the
/// history, `citations` settings, and parameters this function does not know (Anthropic adds
/// parameters often, and clients such as Claude Code send them; refusing them would break the
/// client with no option to drop them). Lost in translation: a `tool_result`'s `is_error`
/// flag (OpenAI tool messages have none) and images inside a `tool_result`, which move to a
/// user message right after the tool messages, as OpenAI tool messages carry only text.
///
/// # Errors
/// `InvalidRequest` when `messages` or `max_tokens` is missing (Anthropic requires both) or
/// the body is malformed; `Unsupported` for Anthropic's server tools (web search, code
/// execution, computer use, …), `mcp_servers` and `container`, which only Anthropic runs.
///
/// `cache_control` on a `system` or user text block stays on its text part (the system message
/// then keeps its blocks as parts), the Anthropic-style extension the Bedrock translator turns
/// into a `cachePoint`: prompt caching survives on Bedrock. [`for_openai_wire`] removes it
/// again for OpenAI-format providers, which cache prompts by themselves and may refuse the
/// unknown field.
pub fn request(body: &Value) -> Result<Value, TranslateError> {
    let obj = body.as_object().ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let unsupported = |param: &str, reason: &str| TranslateError::Unsupported {
        param: param.to_owned(),
        target: TARGET,
        reason: reason.to_owned(),
    };
    let Some(Value::Array(messages)) = field(obj, "messages") else {
        return Err(invalid("`messages` is required and must be an array"));
    };
    let max_tokens = field(obj, "max_tokens")
        .ok_or_else(|| invalid("`max_tokens` is required"))?
        .as_u64()
        .ok_or_else(|| invalid("`max_tokens` must be a non-negative integer"))?;

    let mut out = Map::new();
    if let Some(model) = field(obj, "model") {
        out.insert("model".into(), model.clone());
    }
    let mut msgs = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = field(obj, "system") {
        let text = match system {
            Value::String(s) => s.clone(),
            Value::Array(blocks) if blocks.iter().any(cached) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for (i, b) in blocks.iter().enumerate() {
                    let text = text_of(b, &format!("system[{i}]"))?;
                    // As the joined form: empty blocks add nothing (nor their cache point).
                    if !text.is_empty() {
                        let mut part = json!({"type": "text", "text": text});
                        keep_cache_control(b, &mut part);
                        parts.push(part);
                    }
                }
                if !parts.is_empty() {
                    msgs.push(json!({"role": "system", "content": parts}));
                }
                String::new()
            }
            Value::Array(blocks) => {
                let mut texts = Vec::with_capacity(blocks.len());
                for (i, b) in blocks.iter().enumerate() {
                    texts.push(text_of(b, &format!("system[{i}]"))?);
                }
                texts.join("\n\n")
            }
            _ => return Err(invalid("`system` must be a string or an array of text blocks")),
        };
        if !text.is_empty() {
            msgs.push(json!({"role": "system", "content": text}));
        }
    }
    for (i, m) in messages.iter().enumerate() {
        convert_message(m, &format!("messages[{i}]"), &mut msgs, &unsupported)?;
    }
    out.insert("messages".into(), Value::Array(msgs));
    out.insert("max_completion_tokens".into(), max_tokens.into());

    for (key, value) in obj {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "temperature" | "top_p" => {
                if !value.is_number() {
                    return Err(invalid(format!("`{key}` must be a number")));
                }
                out.insert(key.clone(), value.clone());
            }
            "stop_sequences" => {
                let stops = value
                    .as_array()
                    .filter(|a| a.iter().all(Value::is_string))
                    .ok_or_else(|| invalid("`stop_sequences` must be an array of strings"))?;
                if !stops.is_empty() {
                    out.insert("stop".into(), value.clone());
                }
            }
            "metadata" => {
                if let Some(user) = value.get("user_id").and_then(Value::as_str) {
                    out.insert("user".into(), user.into());
                }
            }
            "stream" if value.as_bool() == Some(true) => {
                out.insert("stream".into(), true.into());
                out.insert("stream_options".into(), json!({"include_usage": true}));
            }
            "tools" => {
                let tools = value.as_array().ok_or_else(|| invalid("`tools` must be an array"))?;
                let mut converted = Vec::with_capacity(tools.len());
                for (i, t) in tools.iter().enumerate() {
                    converted.push(convert_tool(t, &format!("tools[{i}]"), &unsupported)?);
                }
                if !converted.is_empty() {
                    out.insert("tools".into(), Value::Array(converted));
                }
            }
            "tool_choice" => {
                let (choice, parallel) = convert_tool_choice(value)?;
                out.insert("tool_choice".into(), choice);
                if !parallel {
                    out.insert("parallel_tool_calls".into(), false.into());
                }
            }
            "output_config" | "output_format" => {
                let format = if key == "output_config" { value.get("format") } else { Some(value) };
                if let Some(format) = format.filter(|f| !f.is_null()) {
                    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
                        return Err(unsupported(key, "only JSON-schema output formats translate"));
                    }
                    let schema = format
                        .get("schema")
                        .filter(|s| s.is_object())
                        .ok_or_else(|| invalid(format!("`{key}` needs a `schema` object")))?;
                    out.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": true}}),
                    );
                }
            }
            "mcp_servers" | "container" => {
                return Err(unsupported(key, "only Anthropic's own API runs these"));
            }
            // model, messages, max_tokens and system are done above; the rest is dropped.
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

type Unsupported<'a> = dyn Fn(&str, &str) -> TranslateError + 'a;

/// One Anthropic message → one or more OpenAI messages, appended to `out`.
fn convert_message(
    m: &Value,
    at: &str,
    out: &mut Vec<Value>,
    unsupported: &Unsupported,
) -> Result<(), TranslateError> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    let content = m.get("content").unwrap_or(&Value::Null);
    let blocks: &[Value] = match content {
        Value::String(s) => {
            if role != "user" && role != "assistant" {
                return Err(invalid(format!("{at}.role must be user or assistant")));
            }
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(format!("{at}.content must be a string or an array of blocks"))),
    };
    match role {
        "user" => {
            let mut parts = Vec::new();
            // Images from tool results go after the tool messages: OpenAI's carry only text.
            let mut moved = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                if b.get("type").and_then(Value::as_str) == Some("tool_result") {
                    out.push(tool_message(b, &at, &mut moved, unsupported)?);
                } else if let Some(part) = user_part(b, &at, unsupported)? {
                    parts.push(part);
                }
            }
            moved.extend(parts);
            if !moved.is_empty() {
                out.push(json!({"role": "user", "content": moved}));
            }
        }
        "assistant" => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                match b.get("type").and_then(Value::as_str).unwrap_or_default() {
                    "text" => text.push_str(&text_of(b, &at)?),
                    "tool_use" => {
                        let id = b
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("{at}.id must be a string")))?;
                        let name = b
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("{at}.name must be a string")))?;
                        let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                        calls.push(json!({
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": input.to_string()},
                        }));
                    }
                    "thinking" | "redacted_thinking" => {}
                    other => {
                        return Err(unsupported(&at, &format!("{other} blocks have no OpenAI equivalent")));
                    }
                }
            }
            let mut msg = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                if text.is_empty() {
                    msg["content"] = Value::Null;
                }
                msg["tool_calls"] = Value::Array(calls);
            }
            out.push(msg);
        }
        other => return Err(invalid(format!("{at}.role: unknown role {other:?}"))),
    }
    Ok(())
}

/// A user content block (not a tool result) → an OpenAI content part.
fn user_part(b: &Value, at: &str, unsupported: &Unsupported) -> Result<Option<Value>, TranslateError> {
    Ok(Some(match b.get("type").and_then(Value::as_str).unwrap_or_default() {
        "text" => {
            let text = text_of(b, at)?;
            if text.is_empty() {
                return Ok(None);
            }
            let mut part = json!({"type": "text", "text": text});
            keep_cache_control(b, &mut part);
            part
        }
        "image" => json!({"type": "image_url", "image_url": {"url": source_url(b, at)?}}),
        "document" => {
            let source = b.get("source").unwrap_or(&Value::Null);
            match source.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let data = source
                        .get("data")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("{at}.source.data must be a string")))?;
                    json!({"type": "text", "text": data})
                }
                Some("base64") => {
                    let mut file = json!({"file_data": source_url(b, at)?});
                    if let Some(title) = b.get("title").and_then(Value::as_str) {
                        file["filename"] = title.into();
                    }
                    json!({"type": "file", "file": file})
                }
                _ => return Err(unsupported(at, "only base64 and plain-text documents translate")),
            }
        }
        "thinking" | "redacted_thinking" => return Ok(None),
        other => return Err(unsupported(at, &format!("{other} blocks have no OpenAI equivalent"))),
    }))
}

/// A `tool_result` block → a `tool` message; images in it are pushed to `moved`.
fn tool_message(
    b: &Value,
    at: &str,
    moved: &mut Vec<Value>,
    unsupported: &Unsupported,
) -> Result<Value, TranslateError> {
    let id = b
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.tool_use_id must be a string")))?;
    let text = match b.get("content").unwrap_or(&Value::Null) {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let mut texts = Vec::new();
            for (k, item) in items.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(text_of(item, &at)?),
                    _ => moved.extend(user_part(item, &at, unsupported)?),
                }
            }
            texts.join("\n")
        }
        _ => return Err(invalid(format!("{at}.content must be a string or an array of blocks"))),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

/// An image or document `source` → a URL: base64 becomes a data: URL.
fn source_url(b: &Value, at: &str) -> Result<String, TranslateError> {
    let source = b.get("source").unwrap_or(&Value::Null);
    let str_of = |k: &str| {
        source
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{at}.source.{k} must be a string")))
    };
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => Ok(format!("data:{};base64,{}", str_of("media_type")?, str_of("data")?)),
        Some("url") => Ok(str_of("url")?.to_owned()),
        _ => Err(invalid(format!("{at}.source.type must be base64 or url"))),
    }
}

fn cached(b: &Value) -> bool {
    b.get("cache_control").is_some_and(Value::is_object)
}

fn keep_cache_control(block: &Value, part: &mut Value) {
    if let Some(cc) = block.get("cache_control").filter(|c| c.is_object()) {
        part["cache_control"] = cc.clone();
    }
}

/// The pivot as OpenAI-format providers take it: without the `cache_control` that
/// [`request`] keeps on text parts, and with a system message of text parts joined back into
/// one string, as it would be without them.
#[must_use]
pub fn for_openai_wire(pivot: &Value) -> Value {
    let mut v = pivot.clone();
    let Some(msgs) = v.get_mut("messages").and_then(Value::as_array_mut) else { return v };
    for m in msgs {
        let system = m.get("role").and_then(Value::as_str) == Some("system");
        let Some(parts) = m.get_mut("content").and_then(Value::as_array_mut) else { continue };
        for p in parts.iter_mut() {
            if let Some(o) = p.as_object_mut() {
                o.remove("cache_control");
            }
        }
        if system {
            let texts: Vec<&str> =
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            m["content"] = Value::String(texts.join("\n\n"));
        }
    }
    v
}

fn text_of(b: &Value, at: &str) -> Result<String, TranslateError> {
    if b.get("type").and_then(Value::as_str) != Some("text") {
        return Err(invalid(format!("{at} must be a text block")));
    }
    b.get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| invalid(format!("{at}.text must be a string")))
}

fn convert_tool(t: &Value, at: &str, unsupported: &Unsupported) -> Result<Value, TranslateError> {
    // Client tools have no `type` or `custom`; every other type is a server tool Anthropic
    // runs itself (web_search_…, code_execution_…, bash_…, computer_…).
    match t.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(other) => return Err(unsupported(at, &format!("{other} is a server tool only Anthropic runs"))),
    }
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.name must be a string")))?;
    let schema = t
        .get("input_schema")
        .filter(|s| s.is_object())
        .ok_or_else(|| invalid(format!("{at}.input_schema must be an object")))?;
    let mut f = json!({"name": name, "parameters": schema});
    if let Some(d) = t.get("description").and_then(Value::as_str) {
        f["description"] = d.into();
    }
    Ok(json!({"type": "function", "function": f}))
}

/// Anthropic `tool_choice` → OpenAI `tool_choice` and whether parallel tool calls are allowed.
fn convert_tool_choice(value: &Value) -> Result<(Value, bool), TranslateError> {
    let parallel = value.get("disable_parallel_tool_use").and_then(Value::as_bool) != Some(true);
    let choice = match value.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = value
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.name must be a string"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(invalid("tool_choice.type must be auto, any, tool or none")),
    };
    Ok((choice, parallel))
}
