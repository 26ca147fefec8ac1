//! The answer to one call before it is put in a provider's wire format: text or a tool call,
//! why it stopped, and the token accounting. Every format renders the same `Reply`, so a test
//! can predict the numbers whichever provider kind the gateway talks to.

use std::borrow::Cow;

use super::behaviour::Behaviour;
use super::request::{Call, count_words};

/// The default assistant text: 5 words, so 5 completion tokens.
pub(crate) const DEFAULT_CONTENT: &str = "Hello from the mock provider.";
/// The arguments of every tool call `#mock:tool=NAME` answers, as JSON text. Streams send it
/// in two fragments (split after each space, like text), and it counts as 2 completion tokens.
pub(crate) const TOOL_ARGUMENTS: &str = r#"{"city": "Paris"}"#;
/// How much of a tool result the round-trip answer quotes, in characters.
const TOOL_RESULT_CHARS: usize = 100;

pub(crate) enum Output<'a> {
    Text(Cow<'a, str>),
    /// A call of the tool of this name with [`TOOL_ARGUMENTS`].
    Tool(&'a str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    /// Cut at the request's output-token limit.
    Length,
    Tool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tokens {
    /// Every input token, cached ones included.
    pub(crate) prompt: u64,
    pub(crate) completion: u64,
    /// `#mock:cached=N`: how many of `prompt` came from the prompt cache (at most `prompt`).
    pub(crate) cached: Option<u64>,
}

impl Tokens {
    /// Input tokens not read from the cache: what Anthropic and Bedrock call input tokens.
    pub(crate) fn uncached(&self) -> u64 {
        self.prompt - self.cached.unwrap_or(0)
    }

    pub(crate) fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

pub(crate) struct Reply<'a> {
    pub(crate) model: &'a str,
    pub(crate) output: Output<'a>,
    pub(crate) finish: Finish,
    pub(crate) tokens: Tokens,
}

impl<'a> Reply<'a> {
    /// The text is `"The tool said: …"` when the conversation ends with a tool result, else
    /// `behaviour.content` or [`DEFAULT_CONTENT`]; it is a tool call when `behaviour.tool` names
    /// one and the conversation does not end with a tool result. Completion tokens are the
    /// text's words, cut at `max_tokens` (then [`Finish::Length`]); `behaviour.usage` overrides
    /// both counts.
    pub(crate) fn new(call: &Call<'a>, behaviour: &'a Behaviour) -> Self {
        let tool = behaviour.tool.as_ref().filter(|_| !call.text_only);
        let (output, finish, completion) = match (&call.tool_result, tool) {
            (None, Some(name)) => (Output::Tool(name), Finish::Tool, count_words(TOOL_ARGUMENTS)),
            (tool_result, _) => {
                let full = match tool_result {
                    Some(result) => {
                        Cow::Owned(format!("The tool said: {}", truncate(result, TOOL_RESULT_CHARS)))
                    }
                    None => Cow::Borrowed(behaviour.content.as_deref().unwrap_or(DEFAULT_CONTENT)),
                };
                let words = count_words(&full);
                match call.max_tokens {
                    Some(max) if max < words => {
                        let cut: Vec<&str> = full.split_whitespace().take(max as usize).collect();
                        (Output::Text(Cow::Owned(cut.join(" "))), Finish::Length, max)
                    }
                    _ => (Output::Text(full), Finish::Stop, words),
                }
            }
        };
        let (prompt, completion) = behaviour.usage.unwrap_or((call.prompt_tokens, completion));
        let cached = behaviour.cached.map(|n| n.min(prompt));
        Self { model: call.model, output, finish, tokens: Tokens { prompt, completion, cached } }
    }

    /// The pieces a stream sends one per event: the text's words (each with its trailing
    /// space), or the tool arguments' fragments.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &str> {
        match &self.output {
            Output::Text(text) => text.split_inclusive(' '),
            Output::Tool(_) => TOOL_ARGUMENTS.split_inclusive(' '),
        }
    }

    pub(crate) fn tool(&self) -> Option<&'a str> {
        match self.output {
            Output::Tool(name) => Some(name),
            Output::Text(_) => None,
        }
    }

    /// The text, `""` for a tool call.
    pub(crate) fn text(&self) -> &str {
        match &self.output {
            Output::Text(text) => text,
            Output::Tool(_) => "",
        }
    }
}

/// The tool arguments as a JSON value, for formats that send them as an object.
pub(crate) fn tool_input() -> serde_json::Value {
    serde_json::json!({"city": "Paris"})
}

fn truncate(text: &str, chars: usize) -> &str {
    text.char_indices().nth(chars).map_or(text, |(at, _)| &text[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_arguments_match_the_tool_input() {
        let parsed: serde_json::Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap();
        assert_eq!(parsed, tool_input());
        assert_eq!(TOOL_ARGUMENTS.split_inclusive(' ').collect::<String>(), TOOL_ARGUMENTS);
    }

    #[test]
    fn a_tool_result_beats_the_tool_directive() {
        let behaviour =
            Behaviour { tool: Some("get_weather".into()), cached: Some(9), ..Behaviour::default() };
        let call = Call { model: "m", prompt_tokens: 4, ..Call::default() };
        let reply = Reply::new(&call, &behaviour);
        assert_eq!((reply.tool(), reply.finish), (Some("get_weather"), Finish::Tool));
        assert_eq!(reply.tokens, Tokens { prompt: 4, completion: 2, cached: Some(4) });

        let long = "é".repeat(150);
        let call =
            Call { model: "m", prompt_tokens: 4, tool_result: Some(long.as_str().into()), ..Call::default() };
        let reply = Reply::new(&call, &behaviour);
        assert_eq!(reply.tool(), None);
        assert_eq!(reply.text(), format!("The tool said: {}", "é".repeat(100)));
        assert_eq!(reply.tokens.completion, 4);
    }
}
