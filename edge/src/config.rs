//! The edge's immutable, validated view of a `Snapshot`: every reference resolved, every index
//! built, so the hot path only does hash lookups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderName, HeaderValue, Uri};
use llmgw_shared::proto;

use crate::upstream::{ClientCache, UpstreamClient};

/// How the edge speaks to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    OpenAiCompatible,
    AzureOpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

impl ProviderKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::OpenAiCompatible => "openai_compatible",
            Self::AzureOpenAi => "azure_openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Bedrock => "bedrock",
        }
    }

    /// Speaks OpenAI's wire format at `{base_url}/chat/completions` with a Bearer token.
    #[must_use]
    pub fn is_openai_wire(self) -> bool {
        matches!(self, Self::OpenAi | Self::OpenAiCompatible)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("provider {provider}: {reason}")]
    Provider { provider: String, reason: String },
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },
    #[error("key {key}: {reason}")]
    Key { key: String, reason: String },
}

/// The endpoints the edge forwards, each a path under the provider's base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    fn suffix(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }
}

pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    /// `Bearer <credential>` values, marked sensitive so they never print.
    credentials: Vec<HeaderValue>,
    next_credential: AtomicUsize,
    uris: [Uri; 3],
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: std::time::Duration,
    pub client: UpstreamClient,
}

impl Provider {
    /// The next credential, round-robin; `None` for providers that need none.
    pub fn credential(&self) -> Option<&HeaderValue> {
        if self.credentials.is_empty() {
            return None;
        }
        let i = self.next_credential.fetch_add(1, Ordering::Relaxed) % self.credentials.len();
        self.credentials.get(i)
    }

    #[must_use]
    pub fn uri(&self, endpoint: Endpoint) -> &Uri {
        &self.uris[endpoint as usize]
    }
}

pub struct Target {
    pub provider: Arc<Provider>,
    pub model: Arc<str>,
    pub pricing: Option<proto::Pricing>,
}

pub struct ModelRoute {
    pub name: Arc<str>,
    pub targets: Vec<Target>,
}

pub struct KeyEntry {
    pub id: Arc<str>,
    pub name: Arc<str>,
    pub project: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    /// Allowed aliases after intersecting key, project and team; `None` = all.
    pub allowed: Option<Vec<Arc<str>>>,
    pub revoked: bool,
    /// Unix seconds; 0 = never.
    pub expires_at: i64,
}

impl KeyEntry {
    #[must_use]
    pub fn allows(&self, model: &str) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.iter().any(|m| &**m == model))
    }
}

/// One applied configuration. Immutable; replaced whole with one `ArcSwap::store`.
pub struct EdgeConfig {
    pub revision: u64,
    pub keys: imbl::HashMap<[u8; 32], Arc<KeyEntry>>,
    pub models: HashMap<Arc<str>, Arc<ModelRoute>>,
    /// Aliases in configuration order, for `GET /v1/models`.
    pub model_order: Vec<Arc<str>>,
}

/// Where `file:` credentials are read from and how `env:` ones are looked up.
pub struct ResolveCtx<'a> {
    pub base_dir: Option<&'a Path>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

fn resolve_credential(c: &proto::Credential, ctx: &ResolveCtx<'_>) -> Result<String, String> {
    use proto::credential::Source;
    match &c.source {
        Some(Source::Value(v)) => Ok(v.clone()),
        Some(Source::Env(name)) => (ctx.env)(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("environment variable {name} is not set")),
        Some(Source::File(f)) => {
            let p = ctx.base_dir.map_or_else(|| PathBuf::from(f), |d| d.join(f));
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("cannot read credential file {}: {e}", p.display()))
        }
        Some(Source::Sealed(_)) => Err("sealed credential cannot be opened by this edge".into()),
        None => Err("credential has no source".into()),
    }
}

fn provider_kind(k: i32) -> Result<ProviderKind, String> {
    use proto::ProviderKind as P;
    Ok(match P::try_from(k).map_err(|_| format!("unknown provider kind {k}"))? {
        P::Openai => ProviderKind::OpenAi,
        P::OpenaiCompatible => ProviderKind::OpenAiCompatible,
        P::AzureOpenai => ProviderKind::AzureOpenAi,
        P::Anthropic => ProviderKind::Anthropic,
        P::Gemini => ProviderKind::Gemini,
        P::Bedrock => ProviderKind::Bedrock,
        P::Unspecified => return Err("provider kind is not set".into()),
    })
}

fn build_provider(
    p: &proto::Provider,
    ctx: &ResolveCtx<'_>,
    clients: &ClientCache,
) -> Result<Provider, BuildError> {
    let err = |reason: String| BuildError::Provider { provider: p.name.clone(), reason };
    let kind = provider_kind(p.kind).map_err(err)?;
    let mut credentials = Vec::with_capacity(p.credentials.len());
    for c in &p.credentials {
        let secret = resolve_credential(c, ctx).map_err(err)?;
        let mut v = HeaderValue::try_from(format!("Bearer {secret}"))
            .map_err(|_| err("credential contains characters not allowed in a header".into()))?;
        v.set_sensitive(true);
        credentials.push(v);
    }
    let base = p.base_url.trim_end_matches('/');
    let uri = |e: Endpoint| {
        format!("{base}{}", e.suffix())
            .parse::<Uri>()
            .map_err(|e| err(format!("base_url {base:?} is not a valid URL: {e}")))
    };
    let uris = [uri(Endpoint::ChatCompletions)?, uri(Endpoint::Completions)?, uri(Endpoint::Embeddings)?];
    let mut headers = Vec::with_capacity(p.headers.len());
    for (k, v) in &p.headers {
        let name = HeaderName::try_from(k.as_str()).map_err(|_| err(format!("bad header name {k:?}")))?;
        let value =
            HeaderValue::try_from(v.as_str()).map_err(|_| err(format!("bad value for header {k}")))?;
        headers.push((name, value));
    }
    let ms = |v: u64, default: u64| std::time::Duration::from_millis(if v == 0 { default } else { v });
    Ok(Provider {
        name: p.name.as_str().into(),
        kind,
        credentials,
        next_credential: AtomicUsize::new(0),
        uris,
        headers,
        timeout: ms(p.timeout_ms, 600_000),
        client: clients.get(ms(p.connect_timeout_ms, 5_000)),
    })
}

fn model_set(s: Option<&proto::ModelSet>) -> Option<Vec<Arc<str>>> {
    s.map(|s| s.names.iter().map(|n| Arc::from(n.as_str())).collect())
}

/// Intersection of allowed-model sets, where `None` means "all".
fn intersect(a: Option<Vec<Arc<str>>>, b: Option<Vec<Arc<str>>>) -> Option<Vec<Arc<str>>> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(a.into_iter().filter(|m| b.contains(m)).collect()),
    }
}

impl EdgeConfig {
    /// # Errors
    /// A reference that does not resolve, or a credential that cannot be read.
    pub fn build(
        s: &proto::Snapshot,
        ctx: &ResolveCtx<'_>,
        clients: &ClientCache,
    ) -> Result<Self, BuildError> {
        let mut providers = HashMap::with_capacity(s.providers.len());
        for p in &s.providers {
            providers.insert(p.name.as_str(), Arc::new(build_provider(p, ctx, clients)?));
        }
        let mut models = HashMap::with_capacity(s.models.len());
        let mut model_order = Vec::with_capacity(s.models.len());
        for m in &s.models {
            let err = |reason: String| BuildError::Model { model: m.name.clone(), reason };
            if m.targets.is_empty() {
                return Err(err("has no targets".into()));
            }
            let mut targets = Vec::with_capacity(m.targets.len());
            for t in &m.targets {
                let provider = providers
                    .get(t.provider.as_str())
                    .ok_or_else(|| err(format!("no provider named {:?}", t.provider)))?;
                targets.push(Target {
                    provider: provider.clone(),
                    model: t.model.as_str().into(),
                    pricing: t.pricing,
                });
            }
            let name: Arc<str> = m.name.as_str().into();
            model_order.push(name.clone());
            models.insert(name.clone(), Arc::new(ModelRoute { name, targets }));
        }
        let teams: HashMap<&str, &proto::Team> = s.teams.iter().map(|t| (t.name.as_str(), t)).collect();
        let projects: HashMap<&str, &proto::Project> =
            s.projects.iter().map(|p| (p.name.as_str(), p)).collect();
        let mut keys = imbl::HashMap::new();
        for k in &s.keys {
            let err = |reason: String| BuildError::Key { key: k.name.clone(), reason };
            let hash: [u8; 32] = k
                .secret_sha256
                .as_slice()
                .try_into()
                .map_err(|_| err("secret hash is not 32 bytes".into()))?;
            let (project, team_name) = if k.project.is_empty() {
                (None, k.team.as_str())
            } else {
                let p = projects
                    .get(k.project.as_str())
                    .ok_or_else(|| err(format!("no project named {:?}", k.project)))?;
                (Some(*p), p.team.as_str())
            };
            let team = teams.get(team_name).ok_or_else(|| err(format!("no team named {team_name:?}")))?;
            let allowed = intersect(
                intersect(model_set(k.models.as_ref()), project.and_then(|p| model_set(p.models.as_ref()))),
                model_set(team.models.as_ref()),
            );
            keys.insert(
                hash,
                Arc::new(KeyEntry {
                    id: k.id.as_str().into(),
                    name: k.name.as_str().into(),
                    project: project.map(|p| p.name.as_str().into()),
                    team: Some(team.name.as_str().into()),
                    allowed,
                    revoked: k.revoked,
                    expires_at: k.expires_at_unix,
                }),
            );
        }
        Ok(Self { revision: s.revision, keys, models, model_order })
    }
}
