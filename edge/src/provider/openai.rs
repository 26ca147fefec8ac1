//! OpenAI's wire format (also OpenAI-compatible servers: vLLM, Ollama, Groq, …).

use llmgw_shared::pricing::Tokens;
use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Debug, Default, Deserialize)]
pub struct ProviderUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl ProviderUsage {
    #[must_use]
    pub fn tokens(u: &Self) -> Tokens {
        Tokens {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            cached_input: u.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
        }
    }
}

/// A streamed chunk, read only for its usage; everything else is forwarded untouched.
#[derive(Debug, Deserialize)]
pub struct StreamChunk {
    #[serde(default)]
    pub usage: Option<ProviderUsage>,
    #[serde(default)]
    pub choices: Option<Vec<IgnoredAny>>,
}

impl StreamChunk {
    /// Can `data` carry a usage object? A `"usage"` key whose value is an object: false for the
    /// `"usage":null` every chunk of an `include_usage` stream has. It cannot miss a `usage` key
    /// spelled without escapes (an unescaped `"usage"` followed by `:` is a key), which is how
    /// every OpenAI-compatible server writes it; a key spelled `"\u0075sage"` would go uncounted.
    #[must_use]
    pub fn may_carry_usage(data: &[u8]) -> bool {
        // Built once: `memmem::find_iter` would build its searcher for every event.
        static USAGE_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
        USAGE_KEY.find_iter(data).any(|at| {
            let rest = &data[at + 7..];
            let mut it = rest.iter().skip_while(|b| b.is_ascii_whitespace());
            it.next() == Some(&b':') && it.find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        })
    }
}

/// A whole response, read only for its usage (and to check it is a JSON object at all).
#[derive(Debug, Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub usage: Option<ProviderUsage>,
}

/// Does a chunk carry the first token: text, a tool call, or a finish? (A role-only chunk with
/// empty content does not: providers send it before they have produced anything.)
#[derive(Debug, Deserialize)]
pub struct FirstTokenProbe {
    #[serde(default)]
    choices: Vec<ChoiceProbe>,
}

#[derive(Debug, Deserialize)]
struct ChoiceProbe {
    #[serde(default)]
    delta: Option<DeltaProbe>,
    /// Legacy completions stream `text` instead of a delta.
    #[serde(default)]
    text: Option<NonEmpty>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

/// A string read only for whether it is empty, without copying it.
#[derive(Debug)]
struct NonEmpty(bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!v.is_empty()))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Deserialize)]
struct DeltaProbe {
    #[serde(default)]
    content: Option<NonEmpty>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
    #[serde(default)]
    function_call: Option<IgnoredAny>,
}

impl FirstTokenProbe {
    #[must_use]
    pub fn has_token(data: &str) -> bool {
        let Ok(p) = serde_json::from_str::<Self>(data) else { return true };
        p.choices.iter().any(|c| {
            c.finish_reason.is_some()
                || c.text.as_ref().is_some_and(|t| t.0)
                || c.delta.as_ref().is_some_and(|d| {
                    d.content.as_ref().is_some_and(|t| t.0)
                        || d.tool_calls.is_some()
                        || d.function_call.is_some()
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{FirstTokenProbe, StreamChunk};

    #[test]
    fn the_first_token_is_text_a_tool_call_or_a_finish() {
        let has = FirstTokenProbe::has_token;
        assert!(!has(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#
        ));
        assert!(!has(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#));
        assert!(!has(r#"{"choices":[],"usage":null}"#));
        assert!(has(r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#));
        assert!(has(r#"{"choices":[{"delta":{"content":"\n"}}]}"#));
        assert!(has(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#));
        assert!(has(r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#));
        assert!(has(r#"{"choices":[{"text":"x","finish_reason":null}]}"#));
        assert!(!has(r#"{"choices":[{"text":"","finish_reason":null}]}"#));
        // Not what it expects: passed on, and the stream counts as started.
        assert!(has("not json"));
        assert!(has(r#"{"choices":[{"delta":{"content":5}}]}"#));
    }

    #[test]
    fn only_a_usage_object_needs_a_parse() {
        let may = |s: &str| StreamChunk::may_carry_usage(s.as_bytes());
        assert!(may(r#"{"choices":[],"usage":{"prompt_tokens":5}}"#));
        assert!(may(r#"{"choices":[], "usage" :
            {"prompt_tokens":5}}"#));
        assert!(!may(r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#));
        assert!(!may(r#"{"choices":[{"delta":{"content":"say \"usage\":{ here"}}]}"#));
        // A text that mentions it first does not hide the real one after it.
        assert!(may(r#"{"choices":[{"delta":{"content":"\"usage\""}}],"usage":{"completion_tokens":1}}"#));
        assert!(!may(r#"{"id":"x"}"#));
    }
}
