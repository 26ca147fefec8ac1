//! What one request gets: the whole-mock default overlaid with `#mock:` directives read from
//! the request body. The grammar is documented on the [`crate::mock`] module.

use serde::{Deserialize, Serialize};

/// The marker that starts a directive in a model string or a message.
pub(crate) const MARKER: &str = "#mock:";

/// How the mock answers a request. Every field is optional: `None` means "as the layer below
/// says" (the whole-mock default, then the normal answer), so a per-request directive changes
/// only the fields it names.
///
/// The serde form (used by `POST /_mock/default`) names fields exactly as the directive keys:
/// `{"status": 429, "retry_after": 2}`; `usage` is `[prompt, completion]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Response status. 400 and above answer OpenAI's error body instead of a completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Seconds for a `retry-after` header (any status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Milliseconds to wait before sending the response headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Close the connection abruptly after this many stream events (streams) or body bytes
    /// (everything else).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_after: Option<u64>,
    /// Milliseconds to sleep between stream events, or between the 4 parts a JSON body is then
    /// sent in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_ms: Option<u64>,
    /// Answer 200 with a body that is not JSON (streams: one SSE event whose data is not JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed: Option<bool>,
    /// Answer a stream request with the non-stream JSON body and `application/json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_sse: Option<bool>,
    /// Close the connection without any response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
    /// Reported `(prompt_tokens, completion_tokens)` instead of the counted ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<(u64, u64)>,
    /// The assistant's text instead of the default sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Answer a call of the tool of this name, arguments `{"city": "Paris"}`, instead of text
    /// (unless the conversation ends with a tool result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Report this many of the prompt tokens as read from the provider's prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached: Option<u64>,
    /// Anthropic and Bedrock streams: after the first delta, an in-stream error of this type
    /// (Anthropic's `error.type`, Bedrock's `:exception-type`), then the end of the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_error: Option<String>,
}

/// A directive the mock cannot read; answered as a 400 so a typo fails the test loudly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mock directive `{item}`: {reason}")]
pub struct DirectiveError {
    item: String,
    reason: &'static str,
}

impl Behaviour {
    /// Parses the part of a directive after `#mock:`, e.g. `status=429,retry_after=2`.
    ///
    /// # Errors
    /// An unknown key, a value that does not parse, or an unterminated quote.
    pub fn parse(directive: &str) -> Result<Self, DirectiveError> {
        let mut behaviour = Self::default();
        let mut items = split_items(directive)?;
        // `usage=10,20`: a bare number continues the previous item's value.
        let mut i = 1;
        while i < items.len() {
            if items[i].bytes().all(|b| b.is_ascii_digit()) && !items[i].is_empty() {
                let tail = items.remove(i);
                items[i - 1] = format!("{},{tail}", items[i - 1]);
            } else {
                i += 1;
            }
        }
        for item in items.iter().filter(|item| !item.is_empty()) {
            behaviour.set(item)?;
        }
        Ok(behaviour)
    }

    /// Replaces every field that `over` sets.
    pub(crate) fn overlay(&mut self, over: Self) {
        macro_rules! take {
            ($($field:ident),*) => { $( if over.$field.is_some() { self.$field = over.$field; } )* };
        }
        take!(
            status,
            retry_after,
            delay_ms,
            drop_after,
            slow_ms,
            malformed,
            not_sse,
            reset,
            usage,
            content,
            tool,
            cached,
            stream_error
        );
    }

    fn set(&mut self, item: &str) -> Result<(), DirectiveError> {
        let err = |reason| DirectiveError { item: item.to_owned(), reason };
        let (key, value) = match item.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (item, None),
        };
        let number = || -> Result<u64, DirectiveError> {
            value.ok_or_else(|| err("needs a value"))?.parse().map_err(|_| err("not a whole number"))
        };
        let name = || match value {
            Some(name) if !name.is_empty() => Ok(name.to_owned()),
            _ => Err(err("needs a name")),
        };
        let flag = || match value {
            None | Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(err("a flag takes no value, or true|false")),
        };
        match key {
            "status" => {
                let status = number()?;
                if !(200..=599).contains(&status) {
                    return Err(err("status must be 200..=599"));
                }
                self.status = u16::try_from(status).ok();
            }
            "retry_after" => self.retry_after = Some(number()?),
            "delay_ms" => self.delay_ms = Some(number()?),
            "drop_after" => self.drop_after = Some(number()?),
            "slow_ms" => self.slow_ms = Some(number()?),
            "malformed" => self.malformed = flag()?,
            "not_sse" => self.not_sse = flag()?,
            "reset" => self.reset = flag()?,
            "usage" => {
                let value = value.ok_or_else(|| err("needs prompt,completion"))?;
                let (prompt, completion) =
                    value.split_once(',').ok_or_else(|| err("needs prompt,completion"))?;
                let parse = |s: &str| s.parse().map_err(|_| err("not a whole number"));
                self.usage = Some((parse(prompt)?, parse(completion)?));
            }
            "content" => self.content = Some(value.unwrap_or_default().to_owned()),
            "tool" => self.tool = Some(name()?),
            "cached" => self.cached = Some(number()?),
            "stream_error" => self.stream_error = Some(name()?),
            _ => return Err(err("unknown key")),
        }
        Ok(())
    }
}

/// Splits on commas outside double quotes and removes the quotes.
fn split_items(directive: &str) -> Result<Vec<String>, DirectiveError> {
    let mut items = vec![String::new()];
    let mut quoted = false;
    for c in directive.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(String::new()),
            _ => {
                if let Some(last) = items.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    if quoted {
        return Err(DirectiveError { item: directive.to_owned(), reason: "unterminated quote" });
    }
    Ok(items)
}

/// Finds every `#mock:` directive in `text`, in order, and overlays each onto `into`
/// (created on the first one found, so `None` afterwards means "no directive").
pub(crate) fn scan(text: &str, into: &mut Option<Behaviour>) -> Result<(), DirectiveError> {
    let mut rest = text;
    while let Some(at) = rest.find(MARKER) {
        let after = &rest[at + MARKER.len()..];
        let end = directive_end(after);
        let found = Behaviour::parse(&after[..end])?;
        into.get_or_insert_with(Behaviour::default).overlay(found);
        rest = &after[end..];
    }
    Ok(())
}

/// A directive runs to the first whitespace outside double quotes.
fn directive_end(s: &str) -> usize {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return i,
            _ => {}
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let b = Behaviour::parse(
            "status=429,retry_after=2,delay_ms=5,drop_after=3,slow_ms=7,malformed,not_sse=false,\
             reset=true,usage=10,20,content=\"Hi, there\",tool=get_weather,cached=4,\
             stream_error=throttlingException",
        )
        .unwrap();
        assert_eq!(
            b,
            Behaviour {
                status: Some(429),
                retry_after: Some(2),
                delay_ms: Some(5),
                drop_after: Some(3),
                slow_ms: Some(7),
                malformed: Some(true),
                not_sse: Some(false),
                reset: Some(true),
                usage: Some((10, 20)),
                content: Some("Hi, there".into()),
                tool: Some("get_weather".into()),
                cached: Some(4),
                stream_error: Some("throttlingException".into()),
            }
        );
    }

    #[test]
    fn rejects_typos_and_bad_values() {
        assert!(Behaviour::parse("stauts=500").is_err());
        assert!(Behaviour::parse("status=abc").is_err());
        assert!(Behaviour::parse("status=99").is_err());
        assert!(Behaviour::parse("usage=10").is_err());
        assert!(Behaviour::parse("content=\"open").is_err());
        assert!(Behaviour::parse("tool").is_err());
        assert!(Behaviour::parse("tool=").is_err());
        assert!(Behaviour::parse("cached=x").is_err());
        assert_eq!(Behaviour::parse("").unwrap(), Behaviour::default());
    }

    #[test]
    fn scans_model_and_message_text() {
        let mut found = None;
        scan("gpt-4o-mini#mock:status=500", &mut found).unwrap();
        scan("hello #mock:status=503 world #mock:content=\"a b\" end", &mut found).unwrap();
        let found = found.unwrap();
        assert_eq!(found.status, Some(503));
        assert_eq!(found.content.as_deref(), Some("a b"));

        let mut none = None;
        scan("plain text", &mut none).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn overlay_keeps_unset_fields() {
        let mut base = Behaviour::parse("status=500,delay_ms=3").unwrap();
        base.overlay(Behaviour::parse("status=200").unwrap());
        assert_eq!(base.status, Some(200));
        assert_eq!(base.delay_ms, Some(3));
    }
}
