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
        memchr::memmem::find_iter(data, b"\"usage\"").any(|at| {
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
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeltaProbe {
    #[serde(default)]
    content: Option<String>,
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
                || c.text.as_deref().is_some_and(|t| !t.is_empty())
                || c.delta.as_ref().is_some_and(|d| {
                    d.content.as_deref().is_some_and(|t| !t.is_empty())
                        || d.tool_calls.is_some()
                        || d.function_call.is_some()
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::StreamChunk;

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
