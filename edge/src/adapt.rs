//! Which request goes out, and how its answer comes back, for each pair of client format and
//! provider wire format: bytes passed through with the model rewritten where both speak the
//! same format, translation through OpenAI's chat format (the pivot) where they do not.

use std::sync::OnceLock;

use bytes::Bytes;
use llmgw_shared::pricing::Tokens;
use llmgw_translate::{self as tr, StreamConverter, TranslateError, Usage};
use serde_json::Value;

use crate::config::{Endpoint, ProviderKind, Target};
use crate::error::ClientFormat;
use crate::provider::Wire;
use crate::provider::taps::{AnthropicTap, OpenAiTap, ResponsesTap, anthropic_usage, responses_usage};

/// How one attempt is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// OpenAI client, OpenAI-format provider: the fast path (bytes, model rewritten).
    OpenAi,
    /// OpenAI's Responses API to an OpenAI-kind provider, passed through.
    Responses,
    /// Anthropic client, Anthropic provider (messages, count_tokens), passed through.
    Anthropic,
    /// Through the OpenAI pivot.
    Translated { client: ClientFormat, wire: Wire },
}

impl Mode {
    /// `None`: this provider kind does not serve the endpoint.
    #[must_use]
    pub fn choose(endpoint: Endpoint, kind: ProviderKind) -> Option<Self> {
        let wire = kind.wire();
        Some(match (endpoint, wire) {
            (Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings, Wire::OpenAi) => {
                Self::OpenAi
            }
            (Endpoint::ChatCompletions, _) => Self::Translated { client: ClientFormat::OpenAi, wire },
            (Endpoint::Responses, _)
                if matches!(kind, ProviderKind::OpenAi | ProviderKind::OpenAiCompatible) =>
            {
                Self::Responses
            }
            (Endpoint::Messages | Endpoint::CountTokens, Wire::Anthropic) => Self::Anthropic,
            (Endpoint::Messages, _) => Self::Translated { client: ClientFormat::Anthropic, wire },
            _ => return None,
        })
    }

    /// Bytes can be forwarded with only `model` rewritten.
    #[must_use]
    pub fn passthrough(self) -> bool {
        !matches!(self, Self::Translated { .. })
    }
}

/// The client's body, parsed once however many targets are tried.
#[derive(Default)]
pub struct Parsed {
    body: OnceLock<Result<Value, String>>,
    /// An Anthropic client's request in OpenAI's chat format.
    pivot: OnceLock<Result<Value, TranslateError>>,
}

/// Why no request could be built for a target.
pub enum BuildError {
    /// The client's request is malformed for its own format: a 400, whatever the target.
    Invalid(String),
    /// This target cannot honour a parameter; another target might.
    Unsupported(String),
}

impl From<TranslateError> for BuildError {
    fn from(e: TranslateError) -> Self {
        match e {
            TranslateError::Unsupported { .. } => Self::Unsupported(e.to_string()),
            TranslateError::InvalidRequest(m) | TranslateError::BadResponse(m) => Self::Invalid(m),
        }
    }
}

impl Parsed {
    fn body(&self, raw: &[u8]) -> Result<&Value, BuildError> {
        let parsed = self.body.get_or_init(|| {
            serde_json::from_slice(raw).map_err(|e| format!("the request body is not valid JSON: {e}"))
        });
        parsed.as_ref().map_err(|m| BuildError::Invalid(m.clone()))
    }

    fn pivot(&self, raw: &[u8]) -> Result<&Value, BuildError> {
        let body = self.body(raw)?;
        let pivot = self.pivot.get_or_init(|| tr::anthropic_client::request(body));
        pivot.as_ref().map_err(|e| e.clone().into())
    }

    /// The translated upstream body for `target` (modes other than the pass-through ones).
    ///
    /// # Errors
    /// As [`BuildError`].
    pub fn translated(&self, raw: &[u8], client: ClientFormat, target: &Target) -> Result<Bytes, BuildError> {
        let opts = tr::Options { drop_unsupported_params: target.provider.drop_unsupported_params };
        let wire = target.provider.kind.wire();
        let openai = match client {
            ClientFormat::OpenAi => self.body(raw)?,
            ClientFormat::Anthropic => self.pivot(raw)?,
        };
        let out = match wire {
            Wire::OpenAi => {
                let mut v = match client {
                    ClientFormat::OpenAi => openai.clone(),
                    ClientFormat::Anthropic => tr::anthropic_client::for_openai_wire(openai),
                };
                if let Some(o) = v.as_object_mut() {
                    o.insert("model".into(), Value::String(target.model.to_string()));
                }
                v
            }
            Wire::Anthropic => tr::anthropic::request(openai, &target.model, &opts)?,
            Wire::Gemini => tr::gemini::request(openai, &opts)?,
            Wire::Bedrock => tr::bedrock::request(openai, &opts)?,
        };
        serde_json::to_vec(&out).map(Bytes::from).map_err(|e| BuildError::Invalid(e.to_string()))
    }
}

fn tokens(u: Usage) -> Tokens {
    Tokens { input: u.input, output: u.output, cached_input: u.cached_input }
}

fn openai_usage(v: &Value) -> Usage {
    let n = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input: n("/usage/prompt_tokens"),
        output: n("/usage/completion_tokens"),
        cached_input: n("/usage/prompt_tokens_details/cached_tokens"),
    }
}

/// A whole (non-streamed) answer of a mode other than `OpenAi`, in the client's format, and
/// the tokens it reports.
///
/// # Errors
/// A message when the body is not the provider's documented format.
pub fn convert_body(mode: Mode, bytes: Bytes, alias: &str) -> Result<(Bytes, Tokens), String> {
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("the body is not a JSON object".into());
    }
    let (client, wire) = match mode {
        Mode::OpenAi => return Ok((bytes, tokens(openai_usage(&v)))),
        Mode::Responses => {
            return Ok((bytes, tokens(v.get("usage").map(responses_usage).unwrap_or_default())));
        }
        Mode::Anthropic => {
            let usage = v.get("usage").map(|u| anthropic_usage(u, Usage::default())).unwrap_or_default();
            return Ok((bytes, tokens(usage)));
        }
        Mode::Translated { client, wire } => (client, wire),
    };
    let (openai, usage) = match wire {
        Wire::OpenAi => {
            let u = openai_usage(&v);
            (v, u)
        }
        Wire::Anthropic => tr::anthropic::response(&v, alias).map_err(|e| e.to_string())?,
        Wire::Gemini => tr::gemini::response(&v, alias).map_err(|e| e.to_string())?,
        Wire::Bedrock => tr::bedrock::response(&v, alias).map_err(|e| e.to_string())?,
    };
    let out = match client {
        ClientFormat::OpenAi => openai,
        ClientFormat::Anthropic => {
            tr::anthropic_client::response(&openai, alias).map_err(|e| e.to_string())?
        }
    };
    let bytes = serde_json::to_vec(&out).map_err(|e| e.to_string())?;
    Ok((Bytes::from(bytes), tokens(usage)))
}

/// A provider's error body in the client's format, for a translated mode; `None` keeps the
/// provider's own body (the formats match).
#[must_use]
pub fn convert_error(mode: Mode, status: u16, aws_error_type: Option<&str>, body: &[u8]) -> Option<Bytes> {
    let Mode::Translated { client, wire } = mode else { return None };
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let openai = match wire {
        Wire::OpenAi if v.get("error").is_some_and(Value::is_object) => v,
        Wire::OpenAi => {
            serde_json::json!({"error": {"message": format!("the provider answered {status}"), "type": "api_error", "param": null, "code": null}})
        }
        Wire::Anthropic => tr::anthropic::error(status, &v),
        Wire::Gemini => tr::gemini::error(status, &v),
        Wire::Bedrock => tr::bedrock::error(status, aws_error_type, &v),
    };
    let out = match client {
        ClientFormat::OpenAi => openai,
        ClientFormat::Anthropic => {
            let msg =
                openai.pointer("/error/message").and_then(Value::as_str).unwrap_or("the provider failed");
            tr::anthropic_client::error(status, msg)
        }
    };
    Some(Bytes::from(out.to_string()))
}

/// The stream converters for a mode other than `OpenAi`: the first reads the provider's
/// events, the second (Anthropic clients of non-Anthropic providers) turns OpenAI chunks
/// into Anthropic events.
#[must_use]
pub fn pipeline(mode: Mode, alias: &str, client_wants_usage: bool) -> Pipeline {
    let (client, wire) = match mode {
        Mode::OpenAi => return Pipeline::new(Box::new(OpenAiTap::default()), None),
        Mode::Responses => return Pipeline::new(Box::new(ResponsesTap::default()), None),
        Mode::Anthropic => return Pipeline::new(Box::new(AnthropicTap::default()), None),
        Mode::Translated { client, wire } => (client, wire),
    };
    // An Anthropic client always gets usage; the OpenAI chunks in between must carry it.
    let usage = client_wants_usage || client == ClientFormat::Anthropic;
    let first: Box<dyn StreamConverter> = match wire {
        Wire::OpenAi => Box::new(OpenAiTap::default()),
        Wire::Anthropic => Box::new(tr::anthropic::StreamToOpenAi::new(alias, usage)),
        Wire::Gemini => Box::new(tr::gemini::StreamToOpenAi::new(alias, usage)),
        Wire::Bedrock => Box::new(tr::bedrock::StreamToOpenAi::new(alias, usage)),
    };
    let second =
        (client == ClientFormat::Anthropic).then(|| tr::anthropic_client::StreamFromOpenAi::new(alias));
    Pipeline::new(first, second)
}

/// One or two stream converters in a row.
pub struct Pipeline {
    first: Box<dyn StreamConverter>,
    second: Option<tr::anthropic_client::StreamFromOpenAi>,
    /// Events written so far: a passed-through Responses stream numbers its events from 0, so
    /// this is the `sequence_number` an error event of ours takes.
    emitted: u64,
}

impl Pipeline {
    fn new(first: Box<dyn StreamConverter>, second: Option<tr::anthropic_client::StreamFromOpenAi>) -> Self {
        Self { first, second, emitted: 0 }
    }

    /// One upstream event; what it completes is appended to `out` as wire bytes.
    ///
    /// # Errors
    /// The provider's stream is not its documented format, or reported an error.
    pub fn feed(
        &mut self,
        event: Option<&str>,
        data: &str,
        out: &mut bytes::BytesMut,
    ) -> Result<(), TranslateError> {
        let events = self.first.on_event(event, data)?;
        self.emit(events, out)
    }

    fn emit(&mut self, events: Vec<tr::SseEvent>, out: &mut bytes::BytesMut) -> Result<(), TranslateError> {
        for ev in events {
            match &mut self.second {
                Some(second) => {
                    for e in second.on_event(ev.event.as_deref(), &ev.data)? {
                        put(&e, out);
                        self.emitted += 1;
                    }
                }
                None => {
                    put(&ev, out);
                    self.emitted += 1;
                }
            }
        }
        Ok(())
    }

    #[must_use]
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// The provider ended its stream with its own error event (passed on as is).
    #[must_use]
    pub fn failed(&self) -> bool {
        self.first.failed()
    }

    /// The stream ended where the provider's format says it may.
    ///
    /// # Errors
    /// As [`Pipeline::feed`].
    pub fn finish(&mut self, out: &mut bytes::BytesMut) -> Result<(), TranslateError> {
        let events = self.first.finish();
        self.emit(events, out)?;
        if let Some(second) = &mut self.second {
            for e in second.finish() {
                put(&e, out);
            }
        }
        Ok(())
    }

    #[must_use]
    pub fn tokens(&self) -> Tokens {
        tokens(self.first.usage())
    }

    #[must_use]
    pub fn started(&self) -> bool {
        self.first.started()
    }

    #[must_use]
    pub fn complete(&self) -> bool {
        self.first.complete()
    }
}

fn put(e: &tr::SseEvent, out: &mut bytes::BytesMut) {
    use bytes::BufMut;
    if let Some(name) = &e.event {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    out.put_slice(e.data.as_bytes());
    out.put_slice(b"\n\n");
}
