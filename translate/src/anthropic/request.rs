//! OpenAI chat-completions request → Anthropic Messages request.

use serde_json::{Map, Value, json};

use super::{TARGET, field, invalid};
use crate::{Options, TranslateError};

/// `max_tokens` sent when the client gave neither `max_tokens` nor `max_completion_tokens`:
/// Anthropic requires it, OpenAI does not. 4096 is within every current Claude model's output
/// limit, so a client that never sets it gets an answer rather than a 400.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Appended to the system prompt for `response_format: {"type": "json_object"}`: Anthropic has
/// no "any JSON object" mode (its structured outputs need a schema), so JSON mode becomes an
/// instruction, as OpenAI's own JSON mode requires the prompt to ask for JSON anyway.
pub const JSON_MODE_INSTRUCTION: &str =
    "Respond with a single valid JSON object and nothing else: no prose, no code fences.";

/// Translates an OpenAI chat-completions request into an Anthropic Messages request for
/// `upstream_model`.
///
/// Translated: `messages` (system/developer hoisted into `system`, wherever they appear;
/// consecutive same-role turns merged, because Anthropic requires alternation; text, images
/// as data: URLs or http(s) URLs, PDF `file` parts with `file_data`, `tool_calls` →
/// `tool_use`, `tool` messages → `tool_result` blocks in one user turn), `tools`,
/// `tool_choice`, `parallel_tool_calls: false` → `disable_parallel_tool_use`,
/// `max_completion_tokens`/`max_tokens` (default [`DEFAULT_MAX_TOKENS`]), `temperature`
/// (0–1), `top_p`, `top_k` (a common extension), `stop` → `stop_sequences`, `user` (or
/// `safety_identifier`) → `metadata.user_id`, `stream`, `response_format` (`json_schema` →
/// `output_config.format`; `json_object` → [`JSON_MODE_INSTRUCTION`] in the system prompt).
/// A `cache_control` on a content part or tool is kept, so OpenAI clients can use Anthropic's
/// prompt caching. A final assistant message (a prefill) loses its trailing whitespace, which
/// Anthropic rejects.
///
/// Ignored because they change nothing the client can observe: `stream_options` (Anthropic
/// always reports usage), `metadata` and `prompt_cache_key` (OpenAI-side bookkeeping), the
/// image `detail` hint, `strict` on tools, and parameters at their no-op values (`n: 1`,
/// `logprobs: false`, penalties of 0, `parallel_tool_calls: true`, `store: false`, …).
///
/// Refused with `Unsupported` naming the parameter — or, with
/// `opts.drop_unsupported_params`, dropped: `n` > 1, `temperature` > 1 (dropping leaves
/// Anthropic's default of 1, the nearest allowed value), `logprobs`, `top_logprobs`,
/// `presence_penalty`, `frequency_penalty`, `logit_bias`, `seed`, `store: true`,
/// `service_tier` other than auto/default, `reasoning_effort`, `verbosity`, `modalities`
/// other than text, `audio`, `prediction`, `web_search_options`, the deprecated
/// `functions`/`function_call`, audio input parts, and any parameter not listed here.
///
/// # Errors
/// `InvalidRequest` when the body is not a well-formed chat request (no `messages`, a
/// message of unknown role, tool-call arguments that are not a JSON object, …);
/// `Unsupported` as above.
pub fn request(body: &Value, upstream_model: &str, opts: &Options) -> Result<Value, TranslateError> {
    let obj = body.as_object().ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let refuse = |param: &str, reason: &str| -> Result<(), TranslateError> {
        if opts.drop_unsupported_params {
            Ok(())
        } else {
            Err(TranslateError::Unsupported {
                param: param.to_owned(),
                target: TARGET,
                reason: reason.to_owned(),
            })
        }
    };

    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    let Some(Value::Array(messages)) = field(obj, "messages") else {
        return Err(invalid("`messages` is required and must be an array"));
    };
    let (mut system, turns) = convert_messages(messages, &refuse)?;
    out.insert("messages".into(), Value::Array(turns));

    let mut max_tokens = None;
    let mut user_id = None;
    let mut safety_identifier = None;
    let mut parallel = true;
    let mut tool_choice = None;
    for (key, value) in obj {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "messages" | "stream_options" | "metadata" | "prompt_cache_key" => {}
            // OpenAI deprecated `max_tokens` for `max_completion_tokens`; the newer one wins.
            "max_completion_tokens" => max_tokens = Some(non_negative_int(key, value)?),
            "max_tokens" => {
                if field(obj, "max_completion_tokens").is_none() {
                    max_tokens = Some(non_negative_int(key, value)?);
                }
            }
            "temperature" => {
                let t = number(key, value)?;
                if t > 1.0 {
                    refuse(key, "Anthropic accepts temperatures from 0 to 1")?;
                } else {
                    out.insert(key.clone(), value.clone());
                }
            }
            "top_p" => {
                number(key, value)?;
                out.insert(key.clone(), value.clone());
            }
            "top_k" => {
                non_negative_int(key, value)?;
                out.insert(key.clone(), value.clone());
            }
            "stop" => {
                let stops = match value {
                    Value::String(_) => vec![value.clone()],
                    Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
                    _ => return Err(invalid("`stop` must be a string or an array of strings")),
                };
                if !stops.is_empty() {
                    out.insert("stop_sequences".into(), Value::Array(stops));
                }
            }
            "user" => user_id = Some(string(key, value)?.to_owned()),
            "safety_identifier" => safety_identifier = Some(string(key, value)?.to_owned()),
            "stream" => {
                if !value.is_boolean() {
                    return Err(invalid("`stream` must be a boolean"));
                }
                out.insert(key.clone(), value.clone());
            }
            "n" => {
                if non_negative_int(key, value)? > 1 {
                    refuse(key, "Anthropic returns one choice per request")?;
                }
            }
            "logprobs" => {
                if value.as_bool() == Some(true) {
                    refuse(key, "Anthropic does not return log probabilities")?;
                }
            }
            "top_logprobs" => {
                if value.as_u64() != Some(0) {
                    refuse(key, "Anthropic does not return log probabilities")?;
                }
            }
            "presence_penalty" | "frequency_penalty" => {
                if value.as_f64() != Some(0.0) {
                    refuse(key, "Anthropic has no repetition penalties")?;
                }
            }
            "logit_bias" => {
                if value.as_object().is_none_or(|m| !m.is_empty()) {
                    refuse(key, "Anthropic has no logit bias")?;
                }
            }
            "seed" => refuse(key, "Anthropic has no deterministic sampling seed")?,
            "store" => {
                if value.as_bool() != Some(false) {
                    refuse(key, "completions are not stored with Anthropic")?;
                }
            }
            "service_tier" => {
                if !matches!(value.as_str(), Some("auto" | "default")) {
                    refuse(key, "OpenAI service tiers have no Anthropic equivalent")?;
                }
            }
            "parallel_tool_calls" => parallel = value.as_bool() != Some(false),
            "modalities" => {
                let text_only = value.as_array().is_some_and(|a| a.iter().all(|m| m == "text"));
                if !text_only {
                    refuse(key, "Anthropic answers in text only")?;
                }
            }
            "tools" => {
                let tools = convert_tools(value, &refuse)?;
                if !tools.is_empty() {
                    out.insert("tools".into(), Value::Array(tools));
                }
            }
            "tool_choice" => tool_choice = convert_tool_choice(value, &refuse)?,
            "response_format" => match value.get("type").and_then(Value::as_str) {
                Some("text") => {}
                Some("json_object") => system.push(json!({"type": "text", "text": JSON_MODE_INSTRUCTION})),
                Some("json_schema") => {
                    let Some(schema) = value.pointer("/json_schema/schema").filter(|s| s.is_object()) else {
                        return Err(invalid("`response_format.json_schema.schema` must be an object"));
                    };
                    out.insert(
                        "output_config".into(),
                        json!({"format": {"type": "json_schema", "schema": schema}}),
                    );
                }
                _ => return Err(invalid("`response_format.type` must be text, json_object or json_schema")),
            },
            "reasoning_effort" | "verbosity" => {
                refuse(key, "Anthropic's extended thinking is configured differently")?;
            }
            "functions" | "function_call" => refuse(key, "deprecated by OpenAI; send `tools`")?,
            "audio" | "prediction" | "web_search_options" => {
                refuse(key, "no Anthropic equivalent")?;
            }
            _ => refuse(key, "not a chat-completions parameter this gateway translates")?,
        }
    }

    out.insert("max_tokens".into(), max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).into());
    if let Some(id) = user_id.or(safety_identifier) {
        out.insert("metadata".into(), json!({ "user_id": id }));
    }
    let has_tools = out.contains_key("tools");
    if let Some(mut choice) =
        tool_choice.or_else(|| (!parallel && has_tools).then(|| json!({"type": "auto"})))
    {
        if !parallel && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
        out.insert("tool_choice".into(), choice);
    }
    match system.len() {
        0 => {}
        1 if system[0].get("cache_control").is_none() => {
            out.insert("system".into(), system[0]["text"].clone());
        }
        _ => {
            out.insert("system".into(), Value::Array(system));
        }
    }
    Ok(Value::Object(out))
}

type Refuse<'a> = dyn Fn(&str, &str) -> Result<(), TranslateError> + 'a;

/// One Anthropic message being built: consecutive OpenAI messages of the same Anthropic role
/// land in the same turn.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// Splits OpenAI messages into Anthropic's system blocks and alternating turns.
fn convert_messages(messages: &[Value], refuse: &Refuse) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let obj = msg.as_object().ok_or_else(|| invalid(format!("{at} must be an object")))?;
        let role = obj.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = field(obj, "content");
        let (turn_role, blocks) = match role {
            "system" | "developer" => {
                system.extend(content_blocks(content, &at, refuse, false)?);
                continue;
            }
            "user" => ("user", content_blocks(content, &at, refuse, true)?),
            "assistant" => {
                let mut blocks = content_blocks(content, &at, refuse, false)?;
                if let Some(calls) = field(obj, "tool_calls") {
                    let calls = calls
                        .as_array()
                        .ok_or_else(|| invalid(format!("{at}.tool_calls must be an array")))?;
                    for (j, call) in calls.iter().enumerate() {
                        blocks.push(tool_use(call, &format!("{at}.tool_calls[{j}]"))?);
                    }
                }
                if field(obj, "function_call").is_some() {
                    refuse(&format!("{at}.function_call"), "deprecated by OpenAI; send `tool_calls`")?;
                }
                ("assistant", blocks)
            }
            "tool" => ("user", vec![tool_result(obj, content, &at, refuse)?]),
            "function" => {
                refuse(&at, "`function` messages are deprecated by OpenAI; send `tool` messages")?;
                continue;
            }
            other => return Err(invalid(format!("{at}.role: unknown role {other:?}"))),
        };
        if blocks.is_empty() {
            // Anthropic rejects empty turns; an empty message carries nothing to keep.
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == turn_role => last.blocks.extend(blocks),
            _ => turns.push(Turn { role: turn_role, blocks }),
        }
    }
    // A final assistant turn is a prefill, which Anthropic rejects when it ends in whitespace.
    if let Some(last) = turns.last_mut().filter(|t| t.role == "assistant") {
        if let Some(text) = last.blocks.last_mut().and_then(|b| b.get_mut("text")) {
            let trimmed = text.as_str().unwrap_or_default().trim_end().to_owned();
            *text = trimmed.into();
        }
        if last.blocks.last().is_some_and(|b| b.get("text").is_some_and(|t| t == "")) {
            last.blocks.pop();
        }
        if last.blocks.is_empty() {
            turns.pop();
        }
    }
    let turns = turns.into_iter().map(|t| json!({"role": t.role, "content": t.blocks})).collect();
    Ok((system, turns))
}

/// Message content (a string or an array of parts) → Anthropic content blocks. Empty text is
/// skipped: Anthropic rejects empty text blocks.
fn content_blocks(
    content: Option<&Value>,
    at: &str,
    refuse: &Refuse,
    media_allowed: bool,
) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(invalid(format!("{at}.content must be a string or an array of parts"))),
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
        let mut block = match kind {
            // A refusal in an assistant message of the history is what the model said.
            "text" | "refusal" => {
                let text = part
                    .get(kind)
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.{kind} must be a string")))?;
                if text.is_empty() {
                    continue;
                }
                json!({"type": "text", "text": text})
            }
            "image_url" | "file" if !media_allowed => {
                return Err(invalid(format!("{at}: {kind} parts are only allowed in user messages")));
            }
            "image_url" => {
                let url = part
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.image_url.url must be a string")))?;
                json!({"type": "image", "source": media_source(url, &at)?})
            }
            "file" => match part.pointer("/file/file_data").and_then(Value::as_str) {
                Some(data) => json!({"type": "document", "source": media_source(data, &at)?}),
                None => {
                    refuse(&at, "files uploaded to OpenAI (`file_id`) are not available to Anthropic")?;
                    continue;
                }
            },
            "input_audio" => {
                refuse(&at, "Anthropic does not accept audio input")?;
                continue;
            }
            other => return Err(invalid(format!("{at}.type: unknown content part type {other:?}"))),
        };
        if let Some(cc) = part.get("cache_control").filter(|c| c.is_object()) {
            block["cache_control"] = cc.clone();
        }
        blocks.push(block);
    }
    Ok(blocks)
}

/// An image or file reference → an Anthropic `source`: `data:<type>;base64,<data>` becomes a
/// base64 source, an http(s) URL a url source.
fn media_source(url: &str, at: &str) -> Result<Value, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) =
            rest.split_once(',').ok_or_else(|| invalid(format!("{at}: malformed data: URL")))?;
        let media_type = meta
            .strip_suffix(";base64")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid(format!("{at}: data: URLs must be base64 with a media type")))?;
        return Ok(json!({"type": "base64", "media_type": media_type, "data": data}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err(invalid(format!("{at}: a URL must be http(s) or a base64 data: URL")))
}

/// An assistant `tool_calls` entry → a `tool_use` block with the arguments parsed.
fn tool_use(call: &Value, at: &str) -> Result<Value, TranslateError> {
    if call.get("type").is_some_and(|t| t != "function") {
        return Err(invalid(format!("{at}.type: only function tool calls can be sent to Anthropic")));
    }
    let id =
        call.get("id").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.id must be a string")))?;
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.function.name must be a string")))?;
    let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or_default();
    let input = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(args)
            .map_err(|e| invalid(format!("{at}.function.arguments is not valid JSON: {e}")))?
    };
    if !input.is_object() {
        return Err(invalid(format!("{at}.function.arguments must be a JSON object")));
    }
    Ok(json!({"type": "tool_use", "id": tool_id(id, at)?, "name": name, "input": input}))
}

/// A `tool` message → a `tool_result` block.
fn tool_result(
    obj: &Map<String, Value>,
    content: Option<&Value>,
    at: &str,
    refuse: &Refuse,
) -> Result<Value, TranslateError> {
    let id = obj
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.tool_call_id must be a string")))?;
    let mut block = json!({"type": "tool_result", "tool_use_id": tool_id(id, at)?});
    match content {
        Some(Value::String(s)) if !s.is_empty() => block["content"] = s.as_str().into(),
        Some(Value::Array(_)) => {
            let blocks = content_blocks(content, at, refuse, false)?;
            if !blocks.is_empty() {
                block["content"] = Value::Array(blocks);
            }
        }
        None | Some(Value::String(_)) => {}
        Some(_) => return Err(invalid(format!("{at}.content must be a string or an array of parts"))),
    }
    Ok(block)
}

/// Anthropic tool-use ids must match `^[a-zA-Z0-9_-]+$`; ids minted by other providers (the
/// history may come from anywhere) are mapped to that alphabet the same way in `tool_use` and
/// `tool_result`, so pairs still match.
fn tool_id(id: &str, at: &str) -> Result<String, TranslateError> {
    if id.is_empty() {
        return Err(invalid(format!("{at}: empty tool call id")));
    }
    Ok(id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect())
}

fn convert_tools(value: &Value, refuse: &Refuse) -> Result<Vec<Value>, TranslateError> {
    let tools = value.as_array().ok_or_else(|| invalid("`tools` must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            refuse(&at, "only function tools translate to Anthropic")?;
            continue;
        }
        let f = tool.get("function").ok_or_else(|| invalid(format!("{at}.function is required")))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{at}.function.name must be a string")))?;
        // Anthropic requires an object schema; OpenAI allows omitting it for no-argument tools.
        let schema = f
            .get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut t = json!({"name": name, "input_schema": schema});
        if let Some(d) = f.get("description").and_then(Value::as_str) {
            t["description"] = d.into();
        }
        if let Some(cc) = tool.get("cache_control").filter(|c| c.is_object()) {
            t["cache_control"] = cc.clone();
        }
        out.push(t);
    }
    Ok(out)
}

fn convert_tool_choice(value: &Value, refuse: &Refuse) -> Result<Option<Value>, TranslateError> {
    Ok(Some(match value {
        Value::String(s) => match s.as_str() {
            "none" => json!({"type": "none"}),
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            other => return Err(invalid(format!("tool_choice: unknown value {other:?}"))),
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = value
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.function.name must be a string"))?;
            json!({"type": "tool", "name": name})
        }
        _ => {
            refuse("tool_choice", "only none, auto, required and a named function translate")?;
            return Ok(None);
        }
    }))
}

fn non_negative_int(key: &str, value: &Value) -> Result<u64, TranslateError> {
    value.as_u64().ok_or_else(|| invalid(format!("`{key}` must be a non-negative integer")))
}

fn number(key: &str, value: &Value) -> Result<f64, TranslateError> {
    value.as_f64().ok_or_else(|| invalid(format!("`{key}` must be a number")))
}

fn string<'a>(key: &str, value: &'a Value) -> Result<&'a str, TranslateError> {
    value.as_str().ok_or_else(|| invalid(format!("`{key}` must be a string")))
}
