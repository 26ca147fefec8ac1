//! OpenAI chat-completions request → Gemini `generateContent` request body.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{TARGET, invalid, signature_from_id};
use crate::{Options, TranslateError};

/// Translates an OpenAI chat-completions request into a Gemini `generateContent` body (the
/// same body serves `streamGenerateContent`; the model goes in the URL).
///
/// Translated:
/// - `messages`: `system`/`developer` → `systemInstruction` (all of them, wherever they appear:
///   Gemini has one system instruction); `user` → `user` contents; `assistant` → `model`
///   contents (text, then `tool_calls` as `functionCall` parts with the arguments parsed from
///   their JSON string); `tool` → `functionResponse` parts, the function name looked up from the
///   earlier tool call with that id, consecutive tool messages in one `user` turn (Gemini
///   expects every response to a turn's parallel calls together); empty texts, and turns left
///   with nothing, are left out (Gemini refuses a content without parts). A tool result that
///   is a JSON object is sent as the response object; anything else is wrapped as
///   `{"output": text}`, the key Gemini documents for a function's output.
/// - Content parts: text; images and files as `data:` URLs → `inlineData`; `http(s)://` and
///   `gs://` image URLs → `fileData` with a MIME type guessed from the URL's extension (a URL
///   whose type cannot be guessed is refused: Gemini requires a MIME type and a wrong one
///   fails upstream less clearly); `input_audio` (wav, mp3) → `inlineData`.
/// - `tools` → one `functionDeclarations` tool; parameters go in `parametersJsonSchema`, which
///   takes the JSON Schema as OpenAI has it (the older `parameters` field takes only an
///   OpenAPI subset and would need rewriting).
/// - `tool_choice`: `auto`/`none`/`required` → `functionCallingConfig.mode` AUTO/NONE/ANY; a
///   named function → ANY with `allowedFunctionNames`; `allowed_tools` with mode `required`
///   → ANY with those names.
/// - `generationConfig`: `max_completion_tokens` (or `max_tokens`) → `maxOutputTokens`,
///   `temperature`, `top_p` → `topP`, `stop` → `stopSequences`, `n` → `candidateCount`,
///   `presence_penalty`, `frequency_penalty`, `seed`, `response_format`: `json_object` →
///   `responseMimeType: application/json`; `json_schema` → that plus `responseJsonSchema`
///   (JSON Schema as is; Gemini honours a subset — `$ref`/`$defs`, `type`, `enum`,
///   `properties`, `required`, `items`, `anyOf`, min/max bounds … — and ignores or rejects the
///   rest, and `strict` has no equivalent).
///
/// Ignored because they change nothing the client can observe: `model`, `stream`,
/// `stream_options`, `user`, `safety_identifier`, `metadata`, `prompt_cache_key`,
/// `service_tier`, `store`, the image `detail` hint, `strict` on tools, `name` on messages,
/// and parameters at their no-op values (`logprobs: false`, `parallel_tool_calls: true`).
///
/// Refused with `Unsupported` naming the parameter — or, with
/// `opts.drop_unsupported_params`, dropped: `logprobs: true`, `top_logprobs`, `logit_bias`,
/// `parallel_tool_calls: false`, `reasoning_effort` (Gemini's thinking budgets and levels
/// differ by model generation), `verbosity`, `modalities`, `audio`, `prediction`,
/// `web_search_options`, the deprecated `functions`/`function_call`, tools other than
/// functions, `tool_choice` `allowed_tools` in mode `auto`, and any parameter not listed here.
/// Content the model cannot be given is refused even with that option, since dropping it
/// would change the question: `file_id` references, image URLs of unknown type.
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

    let mut generation = Map::new();
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
                generation.insert("temperature".into(), number(value, key)?);
            }
            "top_p" => {
                generation.insert("topP".into(), number(value, key)?);
            }
            "presence_penalty" => {
                generation.insert("presencePenalty".into(), number(value, key)?);
            }
            "frequency_penalty" => {
                generation.insert("frequencyPenalty".into(), number(value, key)?);
            }
            "seed" => {
                generation.insert("seed".into(), integer(value, key)?.into());
            }
            "n" => {
                let n = integer(value, key)?;
                if n != 1 {
                    generation.insert("candidateCount".into(), n.into());
                }
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
                    _ => return Err(invalid("`stop` must be a string or an array of strings")),
                };
                if !stops.is_empty() {
                    generation.insert("stopSequences".into(), Value::Array(stops));
                }
            }
            "response_format" => response_format(value, &mut generation)?,
            "logprobs" => {
                if value.as_bool() == Some(true) {
                    refuse(key, "Gemini's log probabilities are not translated")?;
                }
            }
            "parallel_tool_calls" => {
                if value.as_bool() == Some(false) {
                    refuse(key, "Gemini cannot be told to call at most one function")?;
                }
            }
            "top_logprobs" | "logit_bias" => refuse(key, "Gemini has no equivalent")?,
            "reasoning_effort" => {
                refuse(key, "Gemini's thinking configuration differs by model and is not translated")?
            }
            _ => refuse(key, "not translated for Gemini")?,
        }
    }
    if let Some(max) = obj.get("max_completion_tokens").filter(|v| !v.is_null()) {
        generation.insert("maxOutputTokens".into(), integer(max, "max_completion_tokens")?.into());
    } else if let Some(max) = obj.get("max_tokens").filter(|v| !v.is_null()) {
        generation.insert("maxOutputTokens".into(), integer(max, "max_tokens")?.into());
    }

    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` must be an array of messages"))?;
    let (system, contents) = messages_to_contents(messages, &refuse)?;

    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    if let Some(tools) = tools {
        let decls = function_declarations(tools, &refuse)?;
        if !decls.is_empty() {
            out.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
        }
    }
    if let Some(choice) = tool_choice
        && let Some(config) = function_calling_config(choice, &refuse)?
    {
        out.insert("toolConfig".into(), json!({ "functionCallingConfig": config }));
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(out))
}

type Refuse<'a> = dyn Fn(&str, &str) -> Result<(), TranslateError> + 'a;

fn number(v: &Value, key: &str) -> Result<Value, TranslateError> {
    if v.is_number() { Ok(v.clone()) } else { Err(invalid(format!("`{key}` must be a number"))) }
}

fn integer(v: &Value, key: &str) -> Result<i64, TranslateError> {
    v.as_i64().ok_or_else(|| invalid(format!("`{key}` must be an integer")))
}

fn response_format(v: &Value, generation: &mut Map<String, Value>) -> Result<(), TranslateError> {
    match v.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            generation.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            let schema = v
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .ok_or_else(|| invalid("`response_format.json_schema.schema` is required"))?;
            generation.insert("responseMimeType".into(), "application/json".into());
            generation.insert("responseJsonSchema".into(), schema.clone());
        }
        _ => return Err(invalid("`response_format.type` must be text, json_object or json_schema")),
    }
    Ok(())
}

/// The system parts, and the contents.
fn messages_to_contents(
    messages: &[Value],
    refuse: &Refuse<'_>,
) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool-call id → function name, from the assistant turns seen so far.
    let mut names: HashMap<&str, &str> = HashMap::new();
    // Whether the last content is the `user` turn collecting function responses.
    let mut in_responses = false;

    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role =
            m.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.role is missing")))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let responses_before = in_responses;
        in_responses = false;
        match role {
            "system" | "developer" => {
                for text in texts(content, &at)? {
                    system.push(json!({ "text": text }));
                }
            }
            "user" => {
                let parts = user_parts(content, &at, refuse)?;
                if !parts.is_empty() {
                    contents.push(json!({ "role": "user", "parts": parts }));
                }
            }
            "assistant" => {
                let mut parts: Vec<Value> = texts(content, &at)?
                    .into_iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| json!({ "text": t }))
                    .collect();
                let calls = m.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
                for (j, call) in calls.iter().enumerate() {
                    let at = format!("{at}.tool_calls[{j}]");
                    let id = call.get("id").and_then(Value::as_str).unwrap_or("");
                    let f = call.get("function").unwrap_or(&Value::Null);
                    let name = f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("{at}.function.name is missing")))?;
                    let args = arguments(f.get("arguments"), &at)?;
                    names.insert(id, name);
                    let mut part = json!({ "functionCall": { "name": name, "args": args } });
                    // The signature Gemini gave this call, from our id or from the extension
                    // field Google's own OpenAI-compatible endpoint uses.
                    let sig = signature_from_id(id).or_else(|| {
                        call.pointer("/extra_content/google/thought_signature")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    });
                    if let Some(sig) = sig {
                        part["thoughtSignature"] = Value::String(sig);
                    }
                    parts.push(part);
                }
                // An empty assistant turn says nothing, and Gemini refuses a content without
                // parts.
                if !parts.is_empty() {
                    contents.push(json!({ "role": "model", "parts": parts }));
                }
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.tool_call_id is missing")))?;
                let name = names.get(id).copied().ok_or_else(|| {
                    invalid(format!("{at}.tool_call_id `{id}` answers no earlier assistant tool call"))
                })?;
                let text = texts(content, &at)?.concat();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(obj @ Value::Object(_)) => obj,
                    _ => json!({ "output": text }),
                };
                let part = json!({ "functionResponse": { "name": name, "response": response } });
                match contents.last_mut().and_then(|c| c.get_mut("parts")).and_then(Value::as_array_mut) {
                    Some(parts) if responses_before => parts.push(part),
                    _ => contents.push(json!({ "role": "user", "parts": [part] })),
                }
                in_responses = true;
            }
            "function" => refuse(&format!("{at}.role"), "the deprecated `function` role is not translated")?,
            other => return Err(invalid(format!("{at}.role `{other}` is not a chat role"))),
        }
    }
    Ok((system, contents))
}

/// The texts of a system, assistant or tool message's content: a string, or an array of
/// `text` (and, for assistants, `refusal`) parts.
fn texts(content: &Value, at: &str) -> Result<Vec<String>, TranslateError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(format!("{at}.content[{j}].text is missing"))),
                Some("refusal") => Ok(p.get("refusal").and_then(Value::as_str).unwrap_or("").to_owned()),
                _ => Err(invalid(format!("{at}.content[{j}]: only text parts are allowed in this message"))),
            })
            .collect(),
        _ => Err(invalid(format!("{at}.content must be a string or an array of parts"))),
    }
}

fn user_parts(content: &Value, at: &str, refuse: &Refuse<'_>) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Value::String(s) if s.is_empty() => return Ok(Vec::new()),
        Value::String(s) => return Ok(vec![json!({ "text": s })]),
        Value::Array(parts) => parts,
        _ => return Err(invalid(format!("{at}.content must be a string or an array of parts"))),
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
                if !text.is_empty() {
                    out.push(json!({ "text": text }));
                }
            }
            Some("image_url") => {
                let url = p
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.image_url.url is missing")))?;
                out.push(image_part(url, &at)?);
            }
            Some("input_audio") => {
                let audio = p.get("input_audio").unwrap_or(&Value::Null);
                let data = audio
                    .get("data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.input_audio.data is missing")))?;
                let mime = match audio.get("format").and_then(Value::as_str) {
                    Some("wav") => "audio/wav",
                    Some("mp3") => "audio/mp3",
                    _ => return Err(invalid(format!("{at}.input_audio.format must be wav or mp3"))),
                };
                out.push(json!({ "inlineData": { "mimeType": mime, "data": data } }));
            }
            Some("file") => {
                let file = p.get("file").unwrap_or(&Value::Null);
                match file.get("file_data").and_then(Value::as_str) {
                    Some(data_url) => {
                        let (mime, data) = parse_data_url(data_url).ok_or_else(|| {
                            invalid(format!("{at}.file.file_data must be a base64 data: URL"))
                        })?;
                        out.push(json!({ "inlineData": { "mimeType": mime, "data": data } }));
                    }
                    None => {
                        return Err(TranslateError::Unsupported {
                            param: format!("{at}.file.file_id"),
                            target: TARGET,
                            reason: "OpenAI file ids mean nothing to Gemini; send the file as file_data"
                                .into(),
                        });
                    }
                }
            }
            Some(other) => {
                refuse(&format!("{at}.type"), &format!("`{other}` parts are not translated for Gemini"))?
            }
            None => return Err(invalid(format!("{at}.type is missing"))),
        }
    }
    Ok(out)
}

fn image_part(url: &str, at: &str) -> Result<Value, TranslateError> {
    if url.starts_with("data:") {
        let (mime, data) = parse_data_url(url)
            .ok_or_else(|| invalid(format!("{at}.image_url.url is not a base64 data: URL")))?;
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") {
        let mime = guess_mime(url).ok_or_else(|| TranslateError::Unsupported {
            param: format!("{at}.image_url.url"),
            target: TARGET,
            reason: "Gemini needs the image's type, and this URL's extension does not tell it; \
                     send a data: URL"
                .into(),
        })?;
        return Ok(json!({ "fileData": { "mimeType": mime, "fileUri": url } }));
    }
    Err(invalid(format!("{at}.image_url.url must be an http(s) or data: URL")))
}

/// `data:<mime>[;param…];base64,<data>` → (mime, data).
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mut fields = meta.split(';');
    let mime = fields.next().filter(|m| !m.is_empty())?;
    if !fields.any(|f| f.eq_ignore_ascii_case("base64")) {
        return None;
    }
    Some((mime, data))
}

/// The MIME type of a file from its URL's extension, for the types Gemini reads.
fn guess_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let ext = file.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
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

fn function_declarations(tools: &Value, refuse: &Refuse<'_>) -> Result<Vec<Value>, TranslateError> {
    let tools = tools.as_array().ok_or_else(|| invalid("`tools` must be an array"))?;
    let mut decls = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            refuse(&format!("tools[{i}].type"), "only function tools translate to Gemini")?;
            continue;
        }
        let f = t.get("function").unwrap_or(&Value::Null);
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("tools[{i}].function.name is missing")))?;
        let mut decl = Map::new();
        decl.insert("name".into(), name.into());
        if let Some(d) = f.get("description").and_then(Value::as_str) {
            decl.insert("description".into(), d.into());
        }
        if let Some(p) = f.get("parameters").filter(|p| !p.is_null()) {
            decl.insert("parametersJsonSchema".into(), p.clone());
        }
        decls.push(Value::Object(decl));
    }
    Ok(decls)
}

fn function_calling_config(choice: &Value, refuse: &Refuse<'_>) -> Result<Option<Value>, TranslateError> {
    let config = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => json!({ "mode": "AUTO" }),
            "none" => json!({ "mode": "NONE" }),
            "required" => json!({ "mode": "ANY" }),
            other => return Err(invalid(format!("`tool_choice` `{other}` is not auto, none or required"))),
        },
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = choice
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("`tool_choice.function.name` is missing"))?;
                json!({ "mode": "ANY", "allowedFunctionNames": [name] })
            }
            Some("allowed_tools") => {
                let allowed = o.get("allowed_tools").unwrap_or(&Value::Null);
                if allowed.get("mode").and_then(Value::as_str) != Some("required") {
                    refuse("tool_choice.allowed_tools.mode", "Gemini restricts functions only in mode ANY")?;
                    return Ok(None);
                }
                let names: Vec<&str> = allowed
                    .get("tools")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter().filter_map(|t| t.pointer("/function/name").and_then(Value::as_str)).collect()
                    })
                    .unwrap_or_default();
                json!({ "mode": "ANY", "allowedFunctionNames": names })
            }
            _ => {
                refuse("tool_choice", "only function tool choices translate to Gemini")?;
                return Ok(None);
            }
        },
        _ => return Err(invalid("`tool_choice` must be a string or an object")),
    };
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        assert_eq!(parse_data_url("data:image/png;base64,AAAA"), Some(("image/png", "AAAA")));
        assert_eq!(parse_data_url("data:image/png;charset=x;base64,QQ=="), Some(("image/png", "QQ==")));
        assert_eq!(parse_data_url("data:image/png,AAAA"), None);
        assert_eq!(parse_data_url("data:;base64,AAAA"), None);
        assert_eq!(parse_data_url("https://x/y.png"), None);
    }

    #[test]
    fn mime_guesses() {
        assert_eq!(guess_mime("https://x.test/a/b.JPG?size=2"), Some("image/jpeg"));
        assert_eq!(guess_mime("gs://bucket/doc.pdf"), Some("application/pdf"));
        assert_eq!(guess_mime("https://x.test/image"), None);
        assert_eq!(guess_mime("https://x.test.com/"), None);
    }
}
