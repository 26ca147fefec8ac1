//! Reads what the mock needs from an OpenAI request: the endpoint, the model, stream flags,
//! token limits, the prompt's word count, and the texts a `#mock:` directive may hide in.

use hyper::Method;
use serde_json::Value;

/// The OpenAI endpoints the mock answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Models,
}

impl Endpoint {
    /// `/v1` is optional so a client configured without it still reaches the mock.
    pub(crate) fn route(method: &Method, path: &str) -> Option<Self> {
        let path = path.strip_prefix("/v1").unwrap_or(path);
        match (method, path) {
            (&Method::POST, "/chat/completions") => Some(Self::Chat),
            (&Method::POST, "/completions") => Some(Self::Completions),
            (&Method::POST, "/embeddings") => Some(Self::Embeddings),
            (&Method::GET, "/models") => Some(Self::Models),
            _ => None,
        }
    }

    /// The hit-count name of a request to this endpoint.
    pub(crate) fn hit_name(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Self::Chat, false) => "chat",
            (Self::Chat, true) => "chat_stream",
            (Self::Completions, false) => "completions",
            (Self::Completions, true) => "completions_stream",
            (Self::Embeddings, _) => "embeddings",
            (Self::Models, _) => "models",
        }
    }
}

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
    pub stream: bool,
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Whitespace-separated words in every message / prompt / input, at least 1.
    pub prompt_tokens: u64,
    /// Where directives are read: the model, then the last message's (prompt's, input's) text.
    pub directive_texts: Vec<&'a str>,
    pub inputs: Vec<Input<'a>>,
    /// Embeddings: `dimensions`, and whether `encoding_format` is `base64`.
    pub dimensions: Option<u64>,
    pub base64: bool,
}

impl<'a> Call<'a> {
    /// # Errors
    /// A message for a 400 `invalid_request_error` when a required field is missing or has the
    /// wrong type.
    pub(crate) fn parse(endpoint: Endpoint, body: &'a Value) -> Result<Self, String> {
        if endpoint == Endpoint::Models {
            return Ok(Self::default());
        }
        if !body.is_object() {
            return Err("We could not parse the JSON body of your request.".into());
        }
        let model = body.get("model").and_then(Value::as_str).ok_or("you must provide a model parameter")?;
        let mut call = Self {
            model,
            stream: body.get("stream").and_then(Value::as_bool) == Some(true),
            include_usage: body.pointer("/stream_options/include_usage").and_then(Value::as_bool)
                == Some(true),
            max_tokens: ["max_completion_tokens", "max_tokens"]
                .iter()
                .find_map(|k| body.get(*k).and_then(Value::as_u64)),
            directive_texts: vec![model],
            ..Self::default()
        };
        let words = match endpoint {
            Endpoint::Chat => call.read_messages(body)?,
            Endpoint::Completions => call.read_prompt(body)?,
            Endpoint::Embeddings => call.read_inputs(body)?,
            Endpoint::Models => 0,
        };
        call.prompt_tokens = words.max(1);
        Ok(call)
    }

    fn read_messages(&mut self, body: &'a Value) -> Result<u64, String> {
        let messages =
            body.get("messages").and_then(Value::as_array).ok_or("'messages' is a required property")?;
        let mut words = 0;
        for (i, message) in messages.iter().enumerate() {
            let last = i + 1 == messages.len();
            let mut add = |text: &'a str| {
                words += count_words(text);
                if last {
                    self.directive_texts.push(text);
                }
            };
            match message.get("content") {
                Some(Value::String(text)) => add(text),
                Some(Value::Array(parts)) => {
                    parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).for_each(add)
                }
                _ => {}
            }
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
        let call = Call::parse(Endpoint::Chat, &body).unwrap();
        assert_eq!(call.model, "m#mock:status=500");
        assert!(call.stream && call.include_usage);
        assert_eq!(call.max_tokens, Some(3));
        assert_eq!(call.prompt_tokens, 5);
        assert_eq!(call.directive_texts, ["m#mock:status=500", "one two three"]);
    }

    #[test]
    fn embeddings_inputs_take_every_shape() {
        let body = json!({"model": "e", "input": ["a b", [1, 2, 3]], "encoding_format": "base64"});
        let call = Call::parse(Endpoint::Embeddings, &body).unwrap();
        assert_eq!(call.inputs, [Input::Text("a b"), Input::Tokens(3)]);
        assert_eq!(call.prompt_tokens, 5);
        assert!(call.base64);
        let tokens = json!({"model": "e", "input": [1, 2]});
        let call = Call::parse(Endpoint::Embeddings, &tokens).unwrap();
        assert_eq!(call.inputs, [Input::Tokens(2)]);
    }

    #[test]
    fn missing_fields_are_client_errors() {
        assert!(Call::parse(Endpoint::Chat, &json!({"messages": []})).is_err());
        assert!(Call::parse(Endpoint::Chat, &json!({"model": "m"})).is_err());
        assert!(Call::parse(Endpoint::Embeddings, &json!({"model": "m"})).is_err());
        assert!(Call::parse(Endpoint::Chat, &json!("text")).is_err());
        let no_prompt = json!({"model": "m"});
        let call = Call::parse(Endpoint::Completions, &no_prompt).unwrap();
        assert_eq!(call.prompt_tokens, 1);
    }
}
