//! OpenAI chat-completions request → Bedrock Converse request body.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::{TARGET, invalid};
use crate::{Options, TranslateError};

/// Translates an OpenAI chat-completions request into a Bedrock Converse body (the same body
/// serves ConverseStream; the model id goes in the path, see [`super::converse_path`]).
///
/// Translated:
/// - `messages`: `system`/`developer` → `system` text blocks (all of them, wherever they
///   appear); `user` and `assistant` → messages of content blocks; assistant `tool_calls` →
///   `toolUse` blocks (the call id is the `toolUseId`, the arguments parsed from their JSON
///   string); `tool` messages → `toolResult` blocks in a user message ([`EMPTY_TOOL_RESULT`]
///   for a result with no text). Consecutive messages of one role are merged, because
///   Converse requires user and assistant to alternate; blank texts are left out, because
///   Converse refuses them.
/// - Content: text; images as base64 `data:` URLs (png, jpeg, gif, webp) → `image` blocks;
///   `file` parts with a base64 `file_data` of a type Converse reads (pdf, csv, doc, docx,
///   xls, xlsx, html, txt, md) → `document` blocks, named after the file name. A
///   `cache_control` on a text part (the Anthropic-style extension) adds a `cachePoint` after
///   it, so OpenAI clients can use Bedrock's prompt caching.
/// - `tools` → `toolConfig.tools[].toolSpec` (`inputSchema.json` is the JSON Schema as is).
///   When the conversation holds tool calls but the request declares no tools, a minimal spec
///   is declared for each tool name used, because Converse refuses `toolUse` blocks without a
///   `toolConfig`.
/// - `tool_choice`: `auto` → no `toolChoice` (Converse's default, and accepted by models that
///   support no `toolChoice` at all); `required` → `any`; a named function → `tool`; `none` →
///   no `toolConfig` when the conversation holds no tool calls.
/// - `inferenceConfig`: `max_completion_tokens` (or `max_tokens`) → `maxTokens`,
///   `temperature`, `top_p` → `topP`, `stop` → `stopSequences`.
///
/// Ignored because they change nothing the client can observe: `model`, `stream`,
/// `stream_options` (ConverseStream always reports usage), `user`, `safety_identifier`,
/// `metadata`, `prompt_cache_key`, `service_tier`, `store`, the image `detail` hint, `strict`
/// on tools, `name` on messages, and parameters at their no-op values (`n: 1`,
/// `logprobs: false`, penalties of 0, `parallel_tool_calls: true`,
/// `response_format: text`).
///
/// Refused with `Unsupported` naming the parameter — or, with
/// `opts.drop_unsupported_params`, dropped: `n` > 1, `seed`, `presence_penalty`,
/// `frequency_penalty`, `logit_bias`, `logprobs`, `top_logprobs`, `response_format`
/// `json_object`/`json_schema`, `parallel_tool_calls: false`, `reasoning_effort`, `verbosity`,
/// `modalities`, `audio`, `prediction`, `web_search_options`, the deprecated
/// `functions`/`function_call`, tools other than functions, `tool_choice` `allowed_tools`,
/// `tool_choice: none` in a conversation that holds tool calls (dropped: the tools stay
/// available), and any parameter not listed here; these are model-specific on Bedrock
/// (`additionalModelRequestFields`) or absent. Content Converse cannot be given is refused
/// even with that option, since dropping it would change the question: image URLs (Converse
/// takes image bytes or S3 locations only), audio, `file_id` references, file types it does
/// not read.
///
/// # Errors
/// `InvalidRequest` when the body is not a well-formed chat request; `Unsupported` as above.
pub fn request(body: &Value, opts: &Options) -> Result<Value, TranslateError> {
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

    let mut inference = Map::new();
    let mut tools: Option<&Value> = None;
    let mut tool_choice: Option<&Value> = None;
    for (key, value) in obj {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "messages" | "max_tokens" | "max_completion_tokens" => {}
            "model" | "stream" | "stream_options" | "user" | "safety_identifier" | "metadata"
            | "prompt_cache_key" | "service_tier" | "store" => {}
            "tools" => tools = Some(value),
            "tool_choice" => tool_choice = Some(value),
            "temperature" => {
                inference.insert("temperature".into(), number(value, key)?);
            }
            "top_p" => {
                inference.insert("topP".into(), number(value, key)?);
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
                    _ => return Err(invalid("`stop` must be a string or an array of strings")),
                };
                if !stops.is_empty() {
                    inference.insert("stopSequences".into(), Value::Array(stops));
                }
            }
            "n" => {
                if value.as_i64() != Some(1) {
                    refuse(key, "Converse returns one answer per request")?;
                }
            }
            "presence_penalty" | "frequency_penalty" => {
                if value.as_f64() != Some(0.0) {
                    refuse(key, "Converse has no penalties; they are model-specific on Bedrock")?;
                }
            }
            "logprobs" => {
                if value.as_bool() == Some(true) {
                    refuse(key, "Converse returns no log probabilities")?;
                }
            }
            "parallel_tool_calls" => {
                if value.as_bool() == Some(false) {
                    refuse(key, "Converse cannot be told to call at most one tool")?;
                }
            }
            "response_format" => {
                if value.get("type").and_then(Value::as_str) != Some("text") {
                    refuse(key, "Converse has no JSON mode; describe the format in the prompt")?;
                }
            }
            "seed" | "top_logprobs" | "logit_bias" => refuse(key, "Converse has no equivalent")?,
            _ => refuse(key, "not translated for Bedrock")?,
        }
    }
    if let Some(max) = obj.get("max_completion_tokens").filter(|v| !v.is_null()) {
        inference.insert("maxTokens".into(), integer(max, "max_completion_tokens")?.into());
    } else if let Some(max) = obj.get("max_tokens").filter(|v| !v.is_null()) {
        inference.insert("maxTokens".into(), integer(max, "max_tokens")?.into());
    }

    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` must be an array of messages"))?;
    let Converted { system, messages, used_tools } = convert_messages(messages, &refuse)?;

    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(config) = tool_config(tools, tool_choice, &used_tools, &refuse)? {
        out.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(out))
}

/// What a tool result with no text says to the model, since Converse refuses blank text.
pub const EMPTY_TOOL_RESULT: &str = "(no output)";

type Refuse<'a> = dyn Fn(&str, &str) -> Result<(), TranslateError> + 'a;

fn number(v: &Value, key: &str) -> Result<Value, TranslateError> {
    if v.is_number() { Ok(v.clone()) } else { Err(invalid(format!("`{key}` must be a number"))) }
}

fn integer(v: &Value, key: &str) -> Result<i64, TranslateError> {
    v.as_i64().ok_or_else(|| invalid(format!("`{key}` must be an integer")))
}

/// OpenAI's messages as Converse has them.
struct Converted {
    system: Vec<Value>,
    messages: Vec<Value>,
    /// The names of the tools the conversation called.
    used_tools: BTreeSet<String>,
}

fn convert_messages(messages: &[Value], refuse: &Refuse<'_>) -> Result<Converted, TranslateError> {
    let mut system = Vec::new();
    // (role, content blocks), merged by role as they come.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut used_tools = BTreeSet::new();

    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role =
            m.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.role is missing")))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(content, &at, false)?);
                continue;
            }
            "user" => ("user", user_blocks(content, &at, refuse)?),
            "assistant" => {
                let mut blocks = text_blocks(content, &at, true)?;
                let calls = m.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
                for (j, call) in calls.iter().enumerate() {
                    let at = format!("{at}.tool_calls[{j}]");
                    let id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("{at}.id is missing")))?;
                    let f = call.get("function").unwrap_or(&Value::Null);
                    let name = f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("{at}.function.name is missing")))?;
                    let input = arguments(f.get("arguments"), &at)?;
                    used_tools.insert(name.to_owned());
                    blocks.push(json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } }));
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.tool_call_id is missing")))?;
                let mut text = match content {
                    Value::String(s) => s.clone(),
                    _ => text_blocks(content, &at, false)?
                        .iter()
                        .filter_map(|b| b.get("text").and_then(Value::as_str))
                        .collect(),
                };
                if text.trim().is_empty() {
                    // Converse refuses a blank text block here too (a 400), and a tool that
                    // printed nothing is common.
                    text = EMPTY_TOOL_RESULT.to_owned();
                }
                ("user", vec![json!({ "toolResult": { "toolUseId": id, "content": [{ "text": text }] } })])
            }
            "function" => {
                refuse(&format!("{at}.role"), "the deprecated `function` role is not translated")?;
                continue;
            }
            other => return Err(invalid(format!("{at}.role `{other}` is not a chat role"))),
        };
        if blocks.is_empty() {
            // Converse refuses empty text; a message with nothing else says nothing.
            continue;
        }
        match turns.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages =
        turns.into_iter().map(|(role, content)| json!({ "role": role, "content": content })).collect();
    Ok(Converted { system, messages, used_tools })
}

/// Text blocks of a system, assistant or tool message: a string, or `text` (and, for
/// assistants, `refusal`) parts. Blank texts (empty or whitespace) are left out: Converse
/// refuses blank blocks with a 400.
fn text_blocks(content: &Value, at: &str, assistant: bool) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::new();
    match content {
        Value::Null => {}
        Value::String(s) => {
            if !s.trim().is_empty() {
                out.push(json!({ "text": s }));
            }
        }
        Value::Array(parts) => {
            for (j, p) in parts.iter().enumerate() {
                let text = match p.get("type").and_then(Value::as_str) {
                    Some("text") => p.get("text").and_then(Value::as_str),
                    Some("refusal") if assistant => p.get("refusal").and_then(Value::as_str),
                    _ => {
                        return Err(invalid(format!(
                            "{at}.content[{j}]: only text parts are allowed in this message"
                        )));
                    }
                }
                .ok_or_else(|| invalid(format!("{at}.content[{j}] has no text")))?;
                if !text.trim().is_empty() {
                    out.push(json!({ "text": text }));
                }
                if p.get("cache_control").is_some_and(|c| !c.is_null()) {
                    out.push(json!({ "cachePoint": { "type": "default" } }));
                }
            }
        }
        _ => return Err(invalid(format!("{at}.content must be a string or an array of parts"))),
    }
    Ok(out)
}

fn user_blocks(content: &Value, at: &str, refuse: &Refuse<'_>) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Value::String(_) | Value::Null => return text_blocks(content, at, false),
        Value::Array(parts) => parts,
        _ => return Err(invalid(format!("{at}.content must be a string or an array of parts"))),
    };
    let unsupported = |param: String, reason: &str| TranslateError::Unsupported {
        param,
        target: TARGET,
        reason: reason.to_owned(),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = p
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.text is missing")))?;
                if !text.trim().is_empty() {
                    out.push(json!({ "text": text }));
                }
                if p.get("cache_control").is_some_and(|c| !c.is_null()) {
                    out.push(json!({ "cachePoint": { "type": "default" } }));
                }
            }
            Some("image_url") => {
                let url = p
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.image_url.url is missing")))?;
                if !url.starts_with("data:") {
                    return Err(unsupported(
                        format!("{at}.image_url.url"),
                        "Converse takes image bytes, not URLs; send a base64 data: URL",
                    ));
                }
                let (mime, data) = parse_data_url(url)
                    .ok_or_else(|| invalid(format!("{at}.image_url.url is not a base64 data: URL")))?;
                let format = match mime.to_ascii_lowercase().as_str() {
                    "image/png" => "png",
                    "image/jpeg" | "image/jpg" => "jpeg",
                    "image/gif" => "gif",
                    "image/webp" => "webp",
                    _ => {
                        return Err(unsupported(
                            format!("{at}.image_url.url"),
                            &format!("Converse reads png, jpeg, gif and webp images, not {mime}"),
                        ));
                    }
                };
                out.push(json!({ "image": { "format": format, "source": { "bytes": data } } }));
            }
            Some("file") => {
                let file = p.get("file").unwrap_or(&Value::Null);
                let Some(data_url) = file.get("file_data").and_then(Value::as_str) else {
                    return Err(unsupported(
                        format!("{at}.file.file_id"),
                        "OpenAI file ids mean nothing to Bedrock; send the file as file_data",
                    ));
                };
                let (mime, data) = parse_data_url(data_url)
                    .ok_or_else(|| invalid(format!("{at}.file.file_data must be a base64 data: URL")))?;
                let format = document_format(mime).ok_or_else(|| {
                    unsupported(
                        format!("{at}.file.file_data"),
                        &format!("Converse does not read {mime} documents"),
                    )
                })?;
                let name = document_name(file.get("filename").and_then(Value::as_str).unwrap_or(""), j);
                out.push(
                    json!({ "document": { "format": format, "name": name, "source": { "bytes": data } } }),
                );
            }
            Some("input_audio") => {
                return Err(unsupported(format!("{at}.type"), "Converse takes no audio input"));
            }
            Some(other) => {
                refuse(&format!("{at}.type"), &format!("`{other}` parts are not translated for Bedrock"))?
            }
            None => return Err(invalid(format!("{at}.type is missing"))),
        }
    }
    Ok(out)
}

/// `data:<mime>[;param…];base64,<data>` → (mime, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mut fields = meta.split(';');
    let mime = fields.next().filter(|m| !m.is_empty())?;
    if !fields.any(|f| f.eq_ignore_ascii_case("base64")) {
        return None;
    }
    Some((mime, data))
}

/// The Converse document format of a MIME type.
fn document_format(mime: &str) -> Option<&'static str> {
    Some(match mime.to_ascii_lowercase().as_str() {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "text/html" => "html",
        "text/plain" => "txt",
        "text/markdown" => "md",
        _ => return None,
    })
}

/// A document name Converse accepts: letters, digits, single spaces, hyphens, parentheses and
/// square brackets (its documented alphabet), from the file name without its extension.
fn document_name(filename: &str, position: usize) -> String {
    let stem = filename.rsplit_once('.').map_or(filename, |(s, _)| s);
    let mut name = String::with_capacity(stem.len());
    for c in stem.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']') { c } else { ' ' };
        if !(c == ' ' && (name.is_empty() || name.ends_with(' '))) {
            name.push(c);
        }
    }
    let name = name.trim_end();
    if name.is_empty() { format!("document {}", position + 1) } else { name.to_owned() }
}

/// An assistant tool call's `arguments` (a JSON string) as an object.
fn arguments(args: Option<&Value>, at: &str) -> Result<Value, TranslateError> {
    match args {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(invalid(format!("{at}.function.arguments must be a JSON object"))),
        },
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(invalid(format!("{at}.function.arguments must be a JSON string"))),
    }
}

fn tool_config(
    tools: Option<&Value>,
    choice: Option<&Value>,
    used_tools: &BTreeSet<String>,
    refuse: &Refuse<'_>,
) -> Result<Option<Value>, TranslateError> {
    let mut specs = Vec::new();
    if let Some(tools) = tools {
        let tools = tools.as_array().ok_or_else(|| invalid("`tools` must be an array"))?;
        for (i, t) in tools.iter().enumerate() {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                refuse(&format!("tools[{i}].type"), "only function tools translate to Bedrock")?;
                continue;
            }
            let f = t.get("function").unwrap_or(&Value::Null);
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("tools[{i}].function.name is missing")))?;
            let schema = f.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or_else(empty_schema);
            let mut spec = Map::new();
            spec.insert("name".into(), name.into());
            if let Some(d) = f.get("description").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                spec.insert("description".into(), d.into());
            }
            spec.insert("inputSchema".into(), json!({ "json": schema }));
            specs.push(json!({ "toolSpec": spec }));
        }
    }
    let tool_choice = match choice {
        None => None,
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => None,
            "required" => Some(json!({ "any": {} })),
            "none" if used_tools.is_empty() => return Ok(None),
            "none" => {
                refuse(
                    "tool_choice",
                    "Converse cannot forbid tools in a conversation that already called them",
                )?;
                None
            }
            other => return Err(invalid(format!("`tool_choice` `{other}` is not auto, none or required"))),
        },
        Some(c @ Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = c
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("`tool_choice.function.name` is missing"))?;
                Some(json!({ "tool": { "name": name } }))
            }
            _ => {
                refuse("tool_choice", "only auto, none, required and a named function translate to Bedrock")?;
                None
            }
        },
        Some(_) => return Err(invalid("`tool_choice` must be a string or an object")),
    };
    if specs.is_empty() {
        // Converse refuses toolUse/toolResult blocks without a toolConfig.
        for name in used_tools {
            specs.push(json!({ "toolSpec": {
                "name": name,
                "description": "A tool this conversation used earlier.",
                "inputSchema": { "json": empty_schema() },
            }}));
        }
    }
    if specs.is_empty() {
        return Ok(None);
    }
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(specs));
    if let Some(choice) = tool_choice {
        config.insert("toolChoice".into(), choice);
    }
    Ok(Some(Value::Object(config)))
}

fn empty_schema() -> Value {
    json!({ "type": "object", "properties": {} })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names() {
        assert_eq!(document_name("Q3 report (final).v2.pdf", 0), "Q3 report (final) v2");
        assert_eq!(document_name("über_file.pdf", 0), "ber file");
        assert_eq!(document_name("", 2), "document 3");
        assert_eq!(document_name("...", 0), "document 1");
    }
}
