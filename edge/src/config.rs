//! The edge's immutable, validated view of a `Snapshot`: every reference resolved, every index
//! built, so the hot path only does hash lookups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderName, HeaderValue};
use llmgw_shared::proto;
use smol_str::SmolStr;

use std::time::Duration;

use crate::FastMap;
use crate::balance::{Rotation, Strategy, smooth_schedule};
use crate::breaker::{Policy, TargetHealth};
use crate::key_table::KeyTable;
use crate::upstream::{ClientCache, Clients};

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

/// The client-facing endpoints the edge forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// OpenAI's Responses API, passed through to OpenAI-kind providers.
    Responses,
    /// Anthropic's Messages API: passed through to Anthropic providers, translated for others.
    Messages,
    /// Anthropic's token counting, passed through to Anthropic providers.
    CountTokens,
}

impl Endpoint {
    #[must_use]
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// The API format the client speaks on this endpoint.
    #[must_use]
    pub fn client_format(self) -> crate::error::ClientFormat {
        match self {
            Self::Messages | Self::CountTokens => crate::error::ClientFormat::Anthropic,
            _ => crate::error::ClientFormat::OpenAi,
        }
    }
}

pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    /// Values of the kind's auth header (`Bearer <credential>` for OpenAI), marked sensitive
    /// so they never print.
    credentials: Vec<HeaderValue>,
    pub auth_header: HeaderName,
    /// Bedrock's key pairs, used to sign each request.
    aws: Vec<crate::provider::AwsCredential>,
    next_credential: AtomicUsize,
    base_url: String,
    api_version: String,
    pub region: Arc<str>,
    pub drop_unsupported_params: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: std::time::Duration,
    pub client: Clients,
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

    /// The next AWS key pair, round-robin (Bedrock).
    pub fn aws_credential(&self) -> Option<&crate::provider::AwsCredential> {
        if self.aws.is_empty() {
            return None;
        }
        let i = self.next_credential.fetch_add(1, Ordering::Relaxed) % self.aws.len();
        self.aws.get(i)
    }

    /// Whether the provider sets this header itself (e.g. its own `anthropic-version`).
    #[must_use]
    pub fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k.as_str() == name)
    }
}

pub struct Target {
    pub provider: Arc<Provider>,
    pub model: Arc<str>,
    pub urls: crate::provider::Urls,
    pub pricing: Option<proto::Pricing>,
    pub weight: u32,
    /// `provider/model`, for metrics and messages.
    pub label: Arc<str>,
    /// Shared with every config that has this target, so a reload keeps its breaker and EWMA.
    pub health: Arc<TargetHealth>,
    pub metrics: Arc<crate::metrics::TargetMetrics>,
}

/// Which failures move a request on to the next target (`fallback_on`).
#[derive(Debug, Clone, Default)]
pub struct Fallback {
    pub connect: bool,
    pub timeout: bool,
    pub status_429: bool,
    pub status_5xx: bool,
    pub status_4xx: bool,
    pub codes: Vec<u16>,
}

impl Fallback {
    fn from_proto(list: &[String]) -> Self {
        let mut f = Self::default();
        for item in list {
            match item.as_str() {
                "connect" => f.connect = true,
                "timeout" => f.timeout = true,
                "429" => f.status_429 = true,
                "5xx" => f.status_5xx = true,
                "4xx" => f.status_4xx = true,
                code => f.codes.extend(code.parse::<u16>().ok()),
            }
        }
        f
    }

    /// A provider's HTTP error worth another target. The caller's own mistakes (400, 413, 422)
    /// are never retried unless named exactly: another provider would refuse them too.
    #[must_use]
    pub fn retries_status(&self, status: u16) -> bool {
        self.codes.contains(&status)
            || (status == 429 && self.status_429)
            || (status >= 500 && self.status_5xx)
            || (self.status_4xx && (400..500).contains(&status) && !matches!(status, 400 | 413 | 422))
    }
}

pub struct ModelRoute {
    pub name: Arc<str>,
    pub targets: Vec<Target>,
    pub strategy: Strategy,
    /// Smooth weighted round-robin order, for `weighted`.
    pub schedule: Vec<u16>,
    pub rotation: Rotation,
    pub max_attempts: usize,
    pub fallback: Fallback,
    /// Streams: the first content must arrive by then; others: the response headers.
    pub ttft: Option<Duration>,
    pub breaker: Policy,
    pub max_output_tokens: u32,
}

/// 112 bytes, so with its `Arc` it fills mimalloc's 128-byte class: at a million keys each byte
/// here is a megabyte. Ids and names up to 23 bytes live inline (no allocation of their own);
/// the rarer parts (a model list, limits) sit behind one pointer each.
pub struct KeyEntry {
    pub id: SmolStr,
    pub name: SmolStr,
    pub project: Option<Arc<str>>,
    /// Set for keys that belong to a team directly; otherwise the project's team applies.
    pub team: Option<Arc<str>>,
    /// The key's own allowed aliases; `None` = all.
    pub models: Option<Arc<Vec<Arc<str>>>>,
    pub revoked: bool,
    /// Unix seconds; 0 = never.
    pub expires_at: i64,
    /// `None`: the key has no budget or rate limit of its own.
    pub quota: Option<Box<Limits>>,
}

const _: () = assert!(std::mem::size_of::<KeyEntry>() <= 112);

/// A team or project: what it allows.
pub struct Scope {
    /// A project's team.
    pub team: Option<Arc<str>>,
    pub models: Option<Vec<Arc<str>>>,
    pub quota: Limits,
}

/// The budget and rate limits on one scope, as the quota pools they make.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `key:{id}`, `project:{name}` or `team:{name}`: the pools' scope.
    pub scope: Arc<str>,
    /// micro-USD per period.
    pub budget: Option<(u64, llmgw_shared::period::Period)>,
    /// Per minute; 0 = none.
    pub rpm: u64,
    pub tpm: u64,
}

impl Limits {
    /// `scope` is only called when there is a limit: a million keys without one need no
    /// million scope names.
    fn new(
        scope: impl FnOnce() -> String,
        limits: Option<&proto::Limits>,
        budget: Option<&proto::Budget>,
    ) -> Self {
        static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
        let period = |b: &proto::Budget| {
            llmgw_shared::period::Period::from_proto(
                proto::Period::try_from(b.period).unwrap_or(proto::Period::Total),
            )
        };
        let mut l = Self {
            scope: NONE.clone(),
            budget: budget
                .filter(|b| b.limit_usd > 0.0)
                .map(|b| ((b.limit_usd * 1e6).round() as u64, period(b))),
            rpm: limits.map_or(0, |l| l.rpm),
            tpm: limits.map_or(0, |l| l.tpm),
        };
        if l.any() {
            l.scope = scope().into();
        }
        l
    }

    #[must_use]
    pub fn any(&self) -> bool {
        self.budget.is_some() || self.rpm > 0 || self.tpm > 0
    }
}

fn allowed(set: Option<&Vec<Arc<str>>>, model: &str) -> bool {
    set.is_none_or(|a| a.iter().any(|m| &**m == model))
}

impl KeyEntry {
    /// The key's team: its own, or its project's.
    #[must_use]
    pub fn team(&self, cfg: &EdgeConfig) -> Option<Arc<str>> {
        if self.team.is_some() {
            return self.team.clone();
        }
        cfg.projects.get(self.project.as_deref()?)?.team.clone()
    }

    /// The alias is allowed by the key, its project and its team.
    #[must_use]
    pub fn allows(&self, cfg: &EdgeConfig, model: &str) -> bool {
        if !allowed(self.models.as_deref(), model) {
            return false;
        }
        let project = self.project.as_deref().and_then(|p| cfg.projects.get(p));
        if project.is_some_and(|p| !allowed(p.models.as_ref(), model)) {
            return false;
        }
        let team = self.team.as_deref().or_else(|| project.and_then(|p| p.team.as_deref()));
        team.and_then(|t| cfg.teams.get(t)).is_none_or(|t| allowed(t.models.as_ref(), model))
    }
}

/// A resource other than a key, borrowed from a snapshot or a delta.
#[derive(Clone, Copy)]
enum Upsert<'a> {
    Provider(&'a proto::Provider),
    Model(&'a proto::Model),
    Team(&'a proto::Team),
    Project(&'a proto::Project),
}

/// The small resource kinds as received, so a delta can rebuild what depends on them.
#[derive(Clone, Default)]
struct Sources {
    providers: Vec<proto::Provider>,
    models: Vec<proto::Model>,
    teams: Vec<proto::Team>,
    projects: Vec<proto::Project>,
}

fn upsert<T>(v: &mut Vec<T>, item: T, name: impl Fn(&T) -> &str) {
    let n = name(&item).to_owned();
    match v.iter_mut().find(|x| name(x) == n) {
        Some(slot) => *slot = item,
        None => v.push(item),
    }
}

/// One applied configuration. Immutable; replaced whole with one `ArcSwap::store`. Keys live in
/// maps whose versions share structure, so a one-key delta to a million keys copies one shard
/// of ~1,000 entries, not the map.
#[derive(Clone, Default)]
pub struct EdgeConfig {
    pub revision: u64,
    pub keys: KeyTable,
    pub models: FastMap<Arc<str>, Arc<ModelRoute>>,
    /// Aliases in configuration order, for `GET /v1/models`.
    pub model_order: Vec<Arc<str>>,
    pub teams: FastMap<Arc<str>, Arc<Scope>>,
    pub projects: FastMap<Arc<str>, Arc<Scope>>,
    sources: Sources,
}

/// Where `file:` credentials are read from, how `env:` ones are looked up, and whether a
/// resource that cannot be used fails the whole config (a file, checked before it serves) or is
/// skipped with an error log (a stream from the control plane, which already validated it).
pub struct ResolveCtx<'a> {
    pub base_dir: Option<&'a Path>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub strict: bool,
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
    let (auth_header, bearer) = kind.auth_header();
    let mut credentials = Vec::with_capacity(p.credentials.len());
    let mut aws = Vec::new();
    for c in &p.credentials {
        let secret = resolve_credential(c, ctx).map_err(err)?;
        if kind == ProviderKind::Bedrock {
            aws.push(crate::provider::AwsCredential::parse(&secret).map_err(err)?);
            continue;
        }
        let value = if bearer { format!("Bearer {secret}") } else { secret };
        let mut v = HeaderValue::try_from(value)
            .map_err(|_| err("credential contains characters not allowed in a header".into()))?;
        v.set_sensitive(true);
        credentials.push(v);
    }
    if kind == ProviderKind::Bedrock && p.region.is_empty() {
        return Err(err("a bedrock provider needs `region`".into()));
    }
    if kind == ProviderKind::Bedrock && aws.is_empty() {
        return Err(err("a bedrock provider needs a credential ACCESS_KEY_ID:SECRET_ACCESS_KEY".into()));
    }
    let base_url = p.base_url.trim_end_matches('/').to_owned();
    // Checked once here so a bad URL fails the config, not the first request.
    crate::provider::Urls::build(kind, &base_url, "model", &p.api_version).map_err(err)?;
    let mut headers = Vec::with_capacity(p.headers.len());
    for (k, v) in &p.headers {
        let name = HeaderName::try_from(k.as_str()).map_err(|_| err(format!("bad header name {k:?}")))?;
        let value =
            HeaderValue::try_from(v.as_str()).map_err(|_| err(format!("bad value for header {k}")))?;
        headers.push((name, value));
    }
    let ms = |v: u64, default: u64| std::time::Duration::from_millis(if v == 0 { default } else { v });
    let client = clients.get(&base_url, ms(p.connect_timeout_ms, 5_000)).map_err(err)?;
    Ok(Provider {
        name: p.name.as_str().into(),
        kind,
        credentials,
        auth_header,
        aws,
        next_credential: AtomicUsize::new(0),
        base_url,
        api_version: p.api_version.clone(),
        region: p.region.as_str().into(),
        drop_unsupported_params: p.drop_unsupported_params,
        headers,
        timeout: ms(p.timeout_ms, 600_000),
        client,
    })
}

fn model_set(s: Option<&proto::ModelSet>) -> Option<Vec<Arc<str>>> {
    s.map(|s| s.names.iter().map(|n| Arc::from(n.as_str())).collect())
}

/// In strict mode the first problem fails the build; otherwise it is logged and skipped.
fn tolerate<T>(ctx: &ResolveCtx<'_>, r: Result<T, BuildError>) -> Result<Option<T>, BuildError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if ctx.strict => Err(e),
        Err(e) => {
            tracing::error!(error = %e, "skipping a resource this edge cannot use");
            Ok(None)
        }
    }
}

impl EdgeConfig {
    /// # Errors
    /// In strict mode, a reference that does not resolve or a credential that cannot be read.
    pub fn build(
        s: &proto::Snapshot,
        ctx: &ResolveCtx<'_>,
        clients: &ClientCache,
    ) -> Result<Self, BuildError> {
        // Borrowed, not cloned into resources: a million keys' snapshot is ~330 MiB already.
        let upserts = (s.providers.iter().map(Upsert::Provider))
            .chain(s.models.iter().map(Upsert::Model))
            .chain(s.teams.iter().map(Upsert::Team))
            .chain(s.projects.iter().map(Upsert::Project));
        let mut empty = Self::default();
        // Tables sized once: grown by doubling, a million keys leave ~140 MiB of freed tables
        // behind that the allocator returns to the system only slowly.
        empty.keys.reserve((s.keys_total as usize).max(s.keys.len()));
        empty.apply(s.revision, upserts, s.keys.iter(), &[], ctx, clients)
    }

    /// This config with a delta applied, sharing everything the delta did not touch.
    ///
    /// # Errors
    /// As [`EdgeConfig::build`].
    pub fn apply_delta(
        &self,
        d: &proto::Delta,
        ctx: &ResolveCtx<'_>,
        clients: &ClientCache,
    ) -> Result<Self, BuildError> {
        use proto::resource::Resource as R;
        let upserts = d.upserts.iter().filter_map(|u| match &u.resource {
            Some(R::Provider(p)) => Some(Upsert::Provider(p)),
            Some(R::Model(m)) => Some(Upsert::Model(m)),
            Some(R::Team(t)) => Some(Upsert::Team(t)),
            Some(R::Project(p)) => Some(Upsert::Project(p)),
            Some(R::Key(_)) | None => None,
        });
        let keys = d.upserts.iter().filter_map(|u| match &u.resource {
            Some(R::Key(k)) => Some(k),
            _ => None,
        });
        self.clone().apply(d.revision, upserts, keys, &d.deletes, ctx, clients)
    }

    /// Keys go last: they name teams and projects, whose names they then share.
    /// Consumes the version it changes: a clone shares every shard with its original, and the
    /// first write to each would copy it (at a million keys, every table twice over).
    fn apply<'a>(
        self,
        revision: u64,
        upserts: impl Iterator<Item = Upsert<'a>>,
        keys: impl Iterator<Item = &'a proto::Key>,
        deletes: &[proto::ResourceRef],
        ctx: &ResolveCtx<'_>,
        clients: &ClientCache,
    ) -> Result<Self, BuildError> {
        use proto::ResourceKind as K;
        let mut next = self;
        next.revision = revision;
        let (mut routes_changed, mut scopes_changed) = (false, false);
        for d in deletes {
            match K::try_from(d.kind) {
                Ok(K::Provider) => next.sources.providers.retain(|p| p.name != d.name),
                Ok(K::Model) => next.sources.models.retain(|m| m.name != d.name),
                Ok(K::Team) => next.sources.teams.retain(|t| t.name != d.name),
                Ok(K::Project) => next.sources.projects.retain(|p| p.name != d.name),
                Ok(K::Key) => next.keys.remove_id(&d.name),
                _ => {}
            }
            routes_changed |= matches!(K::try_from(d.kind), Ok(K::Provider | K::Model));
            scopes_changed |= matches!(K::try_from(d.kind), Ok(K::Team | K::Project));
        }
        for u in upserts {
            match u {
                Upsert::Provider(p) => upsert(&mut next.sources.providers, p.clone(), |p| &p.name),
                Upsert::Model(m) => upsert(&mut next.sources.models, m.clone(), |m| &m.name),
                Upsert::Team(t) => upsert(&mut next.sources.teams, t.clone(), |t| &t.name),
                Upsert::Project(p) => upsert(&mut next.sources.projects, p.clone(), |p| &p.name),
            }
            routes_changed |= matches!(u, Upsert::Provider(_) | Upsert::Model(_));
            scopes_changed |= matches!(u, Upsert::Team(_) | Upsert::Project(_));
        }
        if routes_changed {
            next.rebuild_routes(ctx, clients)?;
        }
        if scopes_changed {
            next.rebuild_scopes(ctx)?;
        }
        next.insert_keys(keys, ctx)?;
        Ok(next)
    }

    /// Adds the keys of a later part of a snapshot (`Snapshot.more`) to the config built from its
    /// first part. In place: the config is not published yet, so no shard is shared or copied.
    ///
    /// # Errors
    /// In strict mode, the first key that cannot be used.
    pub fn add_keys(&mut self, keys: &[proto::Key], ctx: &ResolveCtx<'_>) -> Result<(), BuildError> {
        self.insert_keys(keys.iter(), ctx)
    }

    fn insert_keys<'a>(
        &mut self,
        keys: impl Iterator<Item = &'a proto::Key>,
        ctx: &ResolveCtx<'_>,
    ) -> Result<(), BuildError> {
        for k in keys {
            if let Some((hash, entry)) = tolerate(ctx, key_entry(k, &self.teams, &self.projects))? {
                self.keys.insert(hash, entry);
            }
        }
        Ok(())
    }

    fn rebuild_routes(&mut self, ctx: &ResolveCtx<'_>, clients: &ClientCache) -> Result<(), BuildError> {
        let mut providers = HashMap::with_capacity(self.sources.providers.len());
        for p in &self.sources.providers {
            if let Some(built) = tolerate(ctx, build_provider(p, ctx, clients))? {
                providers.insert(p.name.as_str(), Arc::new(built));
            }
        }
        self.models = FastMap::with_capacity_and_hasher(self.sources.models.len(), Default::default());
        self.model_order = Vec::with_capacity(self.sources.models.len());
        for m in &self.sources.models {
            let err = |reason: String| BuildError::Model { model: m.name.clone(), reason };
            let mut targets = Vec::with_capacity(m.targets.len());
            for t in &m.targets {
                let provider = providers
                    .get(t.provider.as_str())
                    .ok_or_else(|| err(format!("no provider named {:?}", t.provider)));
                if let Some(provider) = tolerate(ctx, provider)? {
                    let urls = crate::provider::Urls::build(
                        provider.kind,
                        &provider.base_url,
                        &t.model,
                        &provider.api_version,
                    )
                    .map_err(|e| err(format!("target {}/{}: {e}", t.provider, t.model)));
                    let Some(urls) = tolerate(ctx, urls)? else { continue };
                    targets.push(Target {
                        provider: provider.clone(),
                        model: t.model.as_str().into(),
                        urls,
                        pricing: t.pricing,
                        weight: t.weight.max(1),
                        label: format!("{}/{}", t.provider, t.model).into(),
                        health: clients.health(&t.provider, &t.model),
                        metrics: Arc::new(crate::metrics::TargetMetrics::new(
                            &m.name,
                            &t.provider,
                            &format!("{}/{}", t.provider, t.model),
                        )),
                    });
                }
            }
            if targets.is_empty() {
                tolerate::<()>(ctx, Err(err("has no usable targets".into())))?;
                continue;
            }
            let name: Arc<str> = m.name.as_str().into();
            self.model_order.push(name.clone());
            let strategy = match proto::Strategy::try_from(m.strategy).unwrap_or(proto::Strategy::Priority) {
                proto::Strategy::Weighted => Strategy::Weighted,
                proto::Strategy::LeastLatency => Strategy::LeastLatency,
                proto::Strategy::LeastCost => Strategy::LeastCost,
                proto::Strategy::Priority | proto::Strategy::Unspecified => Strategy::Priority,
            };
            let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
            let route = ModelRoute {
                name: name.clone(),
                schedule: smooth_schedule(&weights),
                max_attempts: if m.max_attempts == 0 { targets.len() } else { m.max_attempts as usize },
                targets,
                strategy,
                rotation: Rotation::default(),
                fallback: Fallback::from_proto(&m.fallback_on),
                ttft: (m.ttft_timeout_ms > 0).then(|| Duration::from_millis(m.ttft_timeout_ms)),
                breaker: Policy::from_proto(m.breaker.as_ref()),
                max_output_tokens: m.max_output_tokens,
            };
            self.models.insert(name, Arc::new(route));
        }
        Ok(())
    }

    fn rebuild_scopes(&mut self, ctx: &ResolveCtx<'_>) -> Result<(), BuildError> {
        self.teams = self
            .sources
            .teams
            .iter()
            .map(|t| {
                (
                    Arc::from(t.name.as_str()),
                    Arc::new(Scope {
                        team: None,
                        models: model_set(t.models.as_ref()),
                        quota: Limits::new(
                            || format!("team:{}", t.name),
                            t.limits.as_ref(),
                            t.budget.as_ref(),
                        ),
                    }),
                )
            })
            .collect();
        let mut projects = FastMap::with_capacity_and_hasher(self.sources.projects.len(), Default::default());
        for p in &self.sources.projects {
            let team = if self.teams.contains_key(p.team.as_str()) {
                Ok(p.team.as_str())
            } else {
                Err(BuildError::Key {
                    key: format!("project {}", p.name),
                    reason: format!("no team named {:?}", p.team),
                })
            };
            if let Some(team) = tolerate(ctx, team)? {
                let scope = Scope {
                    team: Some(team.into()),
                    models: model_set(p.models.as_ref()),
                    quota: Limits::new(
                        || format!("project:{}", p.name),
                        p.limits.as_ref(),
                        p.budget.as_ref(),
                    ),
                };
                projects.insert(Arc::from(p.name.as_str()), Arc::new(scope));
            }
        }
        self.projects = projects;
        Ok(())
    }
}

/// A name as the scope map holds it, so a million keys of a few hundred projects do not each
/// hold a copy; `None` when empty.
fn shared_name(scopes: &FastMap<Arc<str>, Arc<Scope>>, name: &str) -> Option<Arc<str>> {
    if name.is_empty() {
        return None;
    }
    Some(scopes.get_key_value(name).map_or_else(|| Arc::from(name), |(k, _)| k.clone()))
}

fn key_entry(
    k: &proto::Key,
    teams: &FastMap<Arc<str>, Arc<Scope>>,
    projects: &FastMap<Arc<str>, Arc<Scope>>,
) -> Result<([u8; 32], KeyEntry), BuildError> {
    let hash: [u8; 32] = k
        .secret_sha256
        .as_slice()
        .try_into()
        .map_err(|_| BuildError::Key { key: k.name.clone(), reason: "secret hash is not 32 bytes".into() })?;
    let name = SmolStr::new(&k.name);
    let id = if k.id.is_empty() || k.id == k.name { name.clone() } else { SmolStr::new(&k.id) };
    let quota = Limits::new(|| format!("key:{id}"), k.limits.as_ref(), k.budget.as_ref());
    let quota = quota.any().then(|| Box::new(quota));
    Ok((
        hash,
        KeyEntry {
            id,
            name,
            project: shared_name(projects, &k.project),
            team: shared_name(teams, &k.team),
            models: model_set(k.models.as_ref()).map(Arc::new),
            revoked: k.revoked,
            expires_at: k.expires_at_unix,
            quota,
        },
    ))
}
