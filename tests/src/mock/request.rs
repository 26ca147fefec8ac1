//! Reads what the mock needs from a request: the model, `include_usage`, token limits, the
//! prompt's word count, the texts a `#mock:` directive may hide in, and whether the
//! conversation ends with a tool result. OpenAI's (and Azure's) bodies are read here; the
//! other formats fill the same [`Call`] in their own modules.

use std::borrow::Cow;

use serde_json::Value;

use super::route::Endpoint;

/// One embeddings input: text, or a list of token ids (counted, not decoded).
#[derive(Debug, PartialEq)]
pub(crate) enum Input<'a> {
    Text(&'a str),
    Tokens(usize),
}

/// What the mock read from one request body.
#[derive(Debug, Default)]
pub(crate) struct Call<'a> {
    pub model: &'a str,
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Whitespace-separated words in every message / prompt / input, at least 1.
    pub prompt_tokens: u64,
    /// Where directives are read: the model, then the last user message's (prompt's, input's)
    /// text.
    pub directive_texts: Vec<&'a str>,
    /// The text of the tool result the conversation ends with, if it does.
    pub tool_result: Option<Cow<'a, str>>,
    /// The endpoint cannot answer a tool call (legacy completions): `#mock:tool` is ignored.
    pub text_only: bool,
    pub inputs: Vec<Input<'a>>,
    /// Embeddings: `dimensions`, and whether `encoding_format` is `base64`.
    pub dimensions: Option<u64>,
    pub base64: bool,
    /// Responses API: the request, whose settings the `response` object echoes.
    pub body: Option<&'a Value>,
}

impl<'a> Call<'a> {
    /// An OpenAI body; `deployment` (Azure's, from the path) is the model when the body names
    /// none.
    ///
    /// # Errors
    /// A message for a 400 `invalid_request_error` when a required field is missing or has the
    /// wrong type.
    pub(crate) fn parse(
        endpoint: Endpoint,
        body: &'a Value,
        deployment: Option<&'a str>,
    ) -> Result<Self, String> {
        if endpoint == Endpoint::Models {
            return Ok(Self::default());
        }
        if !body.is_object() {
            return Err("We could not parse the JSON body of your request.".into());
        }
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .or(deployment)
            .ok_or("you must provide a model parameter")?;
        let mut call = Self {
            model,
            include_usage: body.pointer("/stream_options/include_usage").and_then(Value::as_bool)
                == Some(true),
            max_tokens: ["max_completion_tokens", "max_tokens"]
                .iter()
                .find_map(|k| body.get(*k).and_then(Value::as_u64)),
            directive_texts: vec![model],
            text_only: endpoint != Endpoint::Chat,
            ..Self::default()
        };
        let words = match endpoint {
            Endpoint::Chat => call.read_messages(body)?,
            Endpoint::Completions => call.read_prompt(body)?,
            Endpoint::Embeddings => call.read_inputs(body)?,
            _ => 0,
        };
        call.prompt_tokens = words.max(1);
        Ok(call)
    }

    /// Counts every message's text; directives come from the last `user` message (the last
    /// message when none is a user's), so a conversation ending with a tool result still reads
    /// the user's directives.
    fn read_messages(&mut self, body: &'a Value) -> Result<u64, String> {
        let messages =
            body.get("messages").and_then(Value::as_array).ok_or("'messages' is a required property")?;
        let role = |m: &'a Value| m.get("role").and_then(Value::as_str);
        let directives_from =
            messages.iter().rposition(|m| role(m) == Some("user")).or(messages.len().checked_sub(1));
        let mut words = 0;
        for (i, message) in messages.iter().enumerate() {
            let texts = content_texts(message.get("content"));
            words += texts.iter().map(|t| count_words(t)).sum::<u64>();
            if Some(i) == directives_from {
                self.directive_texts.extend(&texts);
            }
        }
        if let Some(last) = messages.last().filter(|m| role(m) == Some("tool")) {
            self.tool_result = Some(join(content_texts(last.get("content"))));
        }
        Ok(words)
    }

    fn read_prompt(&mut self, body: &'a Value) -> Result<u64, String> {
        let texts: Vec<&str> = match body.get("prompt") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => vec![text],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err("'prompt' must be a string or an array of strings".into()),
        };
        self.directive_texts.extend(texts.last());
        Ok(texts.iter().map(|t| count_words(t)).sum())
    }

    fn read_inputs(&mut self, body: &'a Value) -> Result<u64, String> {
        let bad = || "'input' must be a string or an array of strings or token arrays".to_owned();
        self.inputs = match body.get("input") {
            Some(Value::String(text)) => vec![Input::Text(text)],
            Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
                vec![Input::Tokens(items.len())]
            }
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(Input::Text(text)),
                    Value::Array(tokens) => Ok(Input::Tokens(tokens.len())),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?,
            None => return Err("'input' is a required property".into()),
            Some(_) => return Err(bad()),
        };
        if let Some(Input::Text(text)) = self.inputs.last() {
            self.directive_texts.push(text);
        }
        self.dimensions = body.get("dimensions").and_then(Value::as_u64);
        self.base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
        Ok(self
            .inputs
            .iter()
            .map(|input| match input {
                Input::Text(text) => count_words(text),
                Input::Tokens(n) => *n as u64,
            })
            .sum())
    }
}

pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The texts of OpenAI message content: a string, or the `text` of each part.
fn content_texts(content: Option<&Value>) -> Vec<&str> {
    match content {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect()
        }
        _ => Vec::new(),
    }
}

/// Several texts as one, without copying when there is only one.
pub(crate) fn join<'a>(texts: Vec<&'a str>) -> Cow<'a, str> {
    match texts.as_slice() {
        [one] => Cow::Borrowed(one),
        _ => Cow::Owned(texts.concat()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_counts_words_and_reads_the_last_message() {
        let body = json!({
            "model": "m#mock:status=500",
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 3,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "one two three"}]}
            ]
        });
        let call = Call::parse(Endpoint::Chat, &body, None).unwrap();
        assert_eq!(call.model, "m#mock:status=500");
        assert!(call.include_usage);
        assert_eq!(call.max_tokens, Some(3));
        assert_eq!(call.prompt_tokens, 5);
        assert_eq!(call.directive_texts, ["m#mock:status=500", "one two three"]);
    }

    #[test]
    fn embeddings_inputs_take_every_shape() {
        let body = json!({"model": "e", "input": ["a b", [1, 2, 3]], "encoding_format": "base64"});
        let call = Call::parse(Endpoint::Embeddings, &body, None).unwrap();
        assert_eq!(call.inputs, [Input::Text("a b"), Input::Tokens(3)]);
        assert_eq!(call.prompt_tokens, 5);
        assert!(call.base64);
        let tokens = json!({"model": "e", "input": [1, 2]});
        let call = Call::parse(Endpoint::Embeddings, &tokens, None).unwrap();
        assert_eq!(call.inputs, [Input::Tokens(2)]);
    }

    #[test]
    fn missing_fields_are_client_errors() {
        assert!(Call::parse(Endpoint::Chat, &json!({"messages": []}), None).is_err());
        assert!(Call::parse(Endpoint::Chat, &json!({"model": "m"}), None).is_err());
        assert!(Call::parse(Endpoint::Embeddings, &json!({"model": "m"}), None).is_err());
        assert!(Call::parse(Endpoint::Chat, &json!("text"), None).is_err());
        let no_prompt = json!({"model": "m"});
        let call = Call::parse(Endpoint::Completions, &no_prompt, None).unwrap();
        assert_eq!(call.prompt_tokens, 1);
        // Azure: the deployment stands in for a missing model.
        let azure = json!({"messages": []});
        let call = Call::parse(Endpoint::Chat, &azure, Some("dep")).unwrap();
        assert_eq!(call.model, "dep");
    }

    #[test]
    fn a_conversation_ending_with_a_tool_result_reads_the_user_directives() {
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": "weather? #mock:tool=get_weather"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "22 C"}]}
        ]});
        let call = Call::parse(Endpoint::Chat, &body, None).unwrap();
        assert_eq!(call.directive_texts, ["m", "weather? #mock:tool=get_weather"]);
        assert_eq!(call.tool_result.as_deref(), Some("22 C"));
        assert_eq!(call.prompt_tokens, 4);
    }
}
