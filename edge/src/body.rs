//! The request body: parse only what routing needs, forward the rest byte for byte.
//!
//! The top level is read as (key, raw value) pairs, so nested values are validated by serde_json
//! but never turned into a tree; rewriting `model` and adding `stream_options` re-emits the
//! pairs with those two values changed.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// A parsed JSON object body, borrowing from the request bytes.
pub struct RequestBody<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    pub model: Cow<'a, str>,
    pub stream: bool,
    /// The client asked for the usage chunk at the end of a stream.
    pub include_usage: bool,
    pub max_tokens: Option<u64>,
}

struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> de::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(k) = map.next_key::<Key<'de>>()? {
                    out.push((k.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A key that borrows when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// serde_json's own recursion limit, which its raw-value skipping does not apply.
const MAX_DEPTH: usize = 128;

/// Nesting depth of JSON that serde_json already validated, so only strings need care.
fn too_deep(json: &[u8]) -> bool {
    // Fewer opening brackets than the limit cannot nest that deep: a count the compiler
    // vectorises spares every ordinary body (kilobytes of messages) the byte-wise walk below.
    let openings = json.iter().fold(0usize, |n, &b| n + usize::from(b == b'[' || b == b'{'));
    if openings < MAX_DEPTH {
        return false;
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth >= MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(msg.into())
}

impl<'a> RequestBody<'a> {
    /// # Errors
    /// A clear 400 for bytes that are not a JSON object, or a missing or mistyped `model`,
    /// `stream`, `stream_options` or `max_tokens`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(invalid("the request body is empty; expected a JSON object"));
        }
        let Fields(fields) = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("the request body is not valid JSON: {e}")))?;
        if fields.iter().any(|(_, v)| too_deep(v.get().as_bytes())) {
            return Err(invalid(format!("the request body nests deeper than {MAX_DEPTH} levels")));
        }
        let mut model = None;
        let (mut stream, mut include_usage, mut max_tokens) = (false, false, None);
        for (k, v) in &fields {
            match k.as_ref() {
                "model" => {
                    let m: Cow<'a, str> =
                        serde_json::from_str(v.get()).map_err(|_| invalid("`model` must be a string"))?;
                    model = Some(m);
                }
                "stream" => {
                    stream = serde_json::from_str::<Option<bool>>(v.get())
                        .map_err(|_| invalid("`stream` must be a boolean"))?
                        .unwrap_or(false);
                }
                "stream_options" => {
                    let o: Option<StreamOptions> = serde_json::from_str(v.get())
                        .map_err(|_| invalid("`stream_options` must be an object"))?;
                    include_usage = o.and_then(|o| o.include_usage).unwrap_or(false);
                }
                "max_tokens" | "max_completion_tokens" => {
                    let n: Option<u64> = serde_json::from_str(v.get())
                        .map_err(|_| invalid(format!("`{k}` must be a non-negative integer")))?;
                    max_tokens = max_tokens.or(n);
                }
                _ => {}
            }
        }
        let model = match model {
            Some(m) if !m.is_empty() => m,
            _ => return Err(invalid("you must provide a model parameter")),
        };
        Ok(Self { fields, model, stream, include_usage, max_tokens })
    }

    /// The body to send upstream: `model` replaced, and for streams `include_usage` forced on so
    /// the gateway can count tokens.
    #[must_use]
    pub fn rewrite(&self, upstream_model: &str, force_include_usage: bool) -> Bytes {
        let extra = upstream_model.len() + 64;
        let mut out = BytesMut::with_capacity(
            self.fields.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>() + extra,
        );
        out.put_u8(b'{');
        let mut first = true;
        let mut sep = |out: &mut BytesMut| {
            if !std::mem::take(&mut first) {
                out.put_u8(b',');
            }
        };
        let mut saw_stream_options = false;
        for (k, v) in &self.fields {
            sep(&mut out);
            put_json_str(&mut out, k);
            out.put_u8(b':');
            match k.as_ref() {
                "model" => put_json_str(&mut out, upstream_model),
                "stream_options" if force_include_usage => {
                    saw_stream_options = true;
                    put_stream_options(&mut out, v);
                }
                _ => out.put_slice(v.get().as_bytes()),
            }
        }
        if force_include_usage && !saw_stream_options {
            sep(&mut out);
            out.put_slice(br#""stream_options":{"include_usage":true}"#);
        }
        out.put_u8(b'}');
        out.freeze()
    }
}

fn put_json_str(out: &mut BytesMut, s: &str) {
    // Writing a &str into a BytesMut cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), s);
}

/// Keeps whatever else the client put in `stream_options`, with `include_usage` set.
fn put_stream_options(out: &mut BytesMut, v: &RawValue) {
    match serde_json::from_str::<Option<serde_json::Map<String, serde_json::Value>>>(v.get()) {
        Ok(Some(mut m)) => {
            m.insert("include_usage".into(), serde_json::Value::Bool(true));
            let _ = serde_json::to_writer((&mut *out).writer(), &m);
        }
        _ => out.put_slice(br#"{"include_usage":true}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RequestBody<'_>, ApiError> {
        RequestBody::parse(s.as_bytes())
    }

    #[test]
    fn reads_routing_fields() {
        let b = parse(
            r#"{"model":"m","stream":true,"max_tokens":7,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(b.model, "m");
        assert!(b.stream);
        assert!(!b.include_usage);
        assert_eq!(b.max_tokens, Some(7));
    }

    #[test]
    fn rewrites_model_and_adds_usage() {
        let b = parse(r#"{"model":"alias","stream":true, "x":{"y":[1, 2]}}"#).unwrap();
        let out = b.rewrite("gpt-\"4\"", true);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "gpt-\"4\"");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["x"]["y"][1], 2);
        assert_eq!(&out[..], br#"{"model":"gpt-\"4\"","stream":true,"x":{"y":[1, 2]},"stream_options":{"include_usage":true}}"#);
    }

    #[test]
    fn merges_existing_stream_options() {
        let b = parse(r#"{"model":"a","stream_options":{"include_usage":false,"other":1}}"#).unwrap();
        assert!(!b.include_usage);
        let v: serde_json::Value = serde_json::from_slice(&b.rewrite("u", true)).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["other"], 1);
    }

    #[test]
    fn escaped_keys_survive() {
        let b = parse(r#"{"mo\u0064el":"a","k\"ey":1}"#).unwrap();
        assert_eq!(b.model, "a");
        let v: serde_json::Value = serde_json::from_slice(&b.rewrite("u", false)).unwrap();
        assert_eq!(v["k\"ey"], 1);
    }

    #[test]
    fn bad_bodies_are_400s() {
        for body in [
            "",
            "  ",
            "[1]",
            "{",
            r#"{"model":1}"#,
            r#"{"messages":[]}"#,
            r#"{"model":""}"#,
            r#"{"model":"a","stream":"yes"}"#,
            r#"{"model":"a","max_tokens":-1}"#,
            "{\"model\":\"a\"} trailing",
        ] {
            let e = parse(body).err().unwrap_or_else(|| panic!("{body} parsed"));
            assert!(matches!(e, ApiError::InvalidRequest(_)), "{body}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(r#"{{"model":"a","x":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn moderate_nesting_and_brackets_in_strings_are_fine() {
        let ok = format!(r#"{{"model":"a","x":{}"[[[\\\"{{"{}}}"#, "[".repeat(100), "]".repeat(100));
        parse(&ok).unwrap();
    }

    /// Past the bracket count, the depth walk decides: many brackets, in strings and side by
    /// side, are not depth.
    #[test]
    fn many_brackets_that_do_not_nest_deep_are_fine() {
        let siblings = vec!["[{}]"; 200].join(",");
        let ok = format!(r#"{{"model":"a","s":"{}","x":[{siblings}]}}"#, "[{".repeat(500));
        parse(&ok).unwrap();
        let deep = format!(
            r#"{{"model":"a","s":"{}","x":{}{}}}"#,
            "[".repeat(500),
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut b = br#"{"model":"a","messages":[{"content":""#.to_vec();
        b.extend_from_slice(&[0xff, 0xfe]);
        b.extend_from_slice(br#""}]}"#);
        assert!(RequestBody::parse(&b).is_err());
    }
}
