//! YAML text → checked `proto::Snapshot`: serde reads the shape (`raw`), then every value,
//! name and reference is checked here and defaults are filled in, each error naming its field
//! path and the line the `locate` index has for it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::proto;

use super::locate::Index;
use super::names::{check_alias, check_name, check_upstream_model, did_you_mean};
use super::{ConfigError, CredentialRefs, ParseOptions, raw, rfc3339};

/// Defaults written into the snapshot, so every consumer sees the same values.
const DEFAULT_TIMEOUT_MS: u64 = 600_000;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_FALLBACK_ON: [&str; 4] = ["connect", "timeout", "429", "5xx"];
/// 3: more attempts than that mostly adds latency to a request that is failing anyway.
const MAX_DEFAULT_ATTEMPTS: usize = 3;

pub(super) type Result<T> = std::result::Result<T, ConfigError>;
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// See [`super::parse`]; `base` is the directory relative `file:` references are read from.
pub(super) fn parse(
    text: &str,
    file: &str,
    base: Option<&Path>,
    env: Env<'_>,
    options: &ParseOptions,
) -> Result<proto::Snapshot> {
    let index = Index::build(text, file)?;
    let reader = Reader { file, index, base, env, credentials: options.credentials };
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| reader.yaml_error(&e))?;
    if value.is_null() {
        return Err(reader.err("", "the file is empty; it needs at least `version: 1`"));
    }
    // `<<: *anchor` merge keys let a file share settings between entries.
    value.apply_merge().map_err(|e| reader.yaml_error(&e))?;
    let raw: raw::File = serde_path_to_error::deserialize(value).map_err(|e| reader.serde_error(&e))?;
    reader.snapshot(raw)
}

pub(super) struct Reader<'a> {
    file: &'a str,
    index: Index,
    /// Where relative `file:` references are read from; `None`: the current directory.
    pub(super) base: Option<&'a Path>,
    pub(super) env: Env<'a>,
    /// Whether provider credential references must resolve here.
    pub(super) credentials: CredentialRefs,
}

/// The names each kind of resource defines, for checking references.
struct Defined<'a> {
    providers: HashSet<&'a str>,
    models: HashSet<&'a str>,
}

impl Reader<'_> {
    pub(super) fn err(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, path, message).at(self.index.locate(path))
    }

    /// An error from serde_yaml_ng's own parser (rare: `locate` already caught syntax errors).
    fn yaml_error(&self, e: &serde_yaml_ng::Error) -> ConfigError {
        let mut message = e.to_string();
        let position = e.location().map(|l| (l.line(), l.column()));
        if let Some((line, column)) = position {
            let suffix = format!(" at line {line} column {column}");
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
        }
        ConfigError::new(self.file, "", message).at(position)
    }

    /// A shape error (unknown field, wrong type, bad enum value, missing field).
    fn serde_error(&self, e: &serde_path_to_error::Error<serde_yaml_ng::Error>) -> ConfigError {
        let mut path = String::new();
        for segment in e.path() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        // Deserialising from a `Value` leaves serde_yaml_ng's message without a location.
        self.err(&path, e.inner().to_string())
    }

    fn snapshot(&self, file: raw::File) -> Result<proto::Snapshot> {
        if file.version != 1 {
            return Err(self.err(
                "version",
                format!("unsupported version {}; this llmgw reads version 1", file.version),
            ));
        }
        let providers = file.providers.unwrap_or_default();
        let models = file.models.unwrap_or_default();
        let teams = file.teams.unwrap_or_default();
        let projects = file.projects.unwrap_or_default();
        let keys = file.keys.unwrap_or_default();

        let defined = Defined {
            providers: self.unique("providers", "provider", providers.iter().map(|p| &p.name), check_name)?,
            models: self.unique("models", "model", models.iter().map(|m| &m.name), check_alias)?,
        };
        let team_names = self.unique("teams", "team", teams.iter().map(|t| &t.name), check_name)?;
        let project_names =
            self.unique("projects", "project", projects.iter().map(|p| &p.name), check_name)?;
        self.unique("keys", "key", keys.iter().map(|k| &k.name), check_name)?;

        let mut snapshot = proto::Snapshot::default();
        for (i, p) in providers.iter().enumerate() {
            snapshot.providers.push(self.provider(&format!("providers[{i}]"), p)?);
        }
        for (i, m) in models.iter().enumerate() {
            snapshot.models.push(self.model(&format!("models[{i}]"), m, &defined)?);
        }
        for (i, t) in teams.iter().enumerate() {
            let at = format!("teams[{i}]");
            snapshot.teams.push(proto::Team {
                name: t.name.clone(),
                models: self.model_set(&at, t.models.as_deref(), &defined)?,
                limits: self.limits(&at, t.limits.as_ref())?,
                budget: self.budget(&at, t.budget.as_ref())?,
            });
        }
        for (i, p) in projects.iter().enumerate() {
            let at = format!("projects[{i}]");
            self.reference(&format!("{at}.team"), "team", &p.team, &team_names)?;
            snapshot.projects.push(proto::Project {
                name: p.name.clone(),
                team: p.team.clone(),
                models: self.model_set(&at, p.models.as_deref(), &defined)?,
                limits: self.limits(&at, p.limits.as_ref())?,
                budget: self.budget(&at, p.budget.as_ref())?,
            });
        }
        for (i, k) in keys.iter().enumerate() {
            let owners = (&team_names, &project_names);
            snapshot.keys.push(self.key(&format!("keys[{i}]"), k, &defined, owners)?);
        }
        Ok(snapshot)
    }

    /// Checks each name's form and that none repeats; returns the set of names.
    fn unique<'n>(
        &self,
        section: &str,
        what: &str,
        names: impl Iterator<Item = &'n String>,
        check: fn(&str) -> std::result::Result<(), String>,
    ) -> Result<HashSet<&'n str>> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let at = format!("{section}[{i}].name");
            check(name).map_err(|m| self.err(&at, m))?;
            if let Some(first) = seen.insert(name, i) {
                let first_at = self.index.locate(&format!("{section}[{first}].name"));
                let line = first_at.map(|(l, _)| format!(" at line {l}")).unwrap_or_default();
                return Err(self.err(&at, format!("duplicate {what} name \"{name}\" (first defined{line})")));
            }
        }
        Ok(seen.into_keys().collect())
    }

    fn reference(&self, at: &str, what: &str, name: &str, known: &HashSet<&str>) -> Result<()> {
        if known.contains(name) {
            return Ok(());
        }
        let hint = did_you_mean(name, known.iter().copied());
        Err(self.err(at, format!("no {what} named \"{name}\"{hint}")))
    }

    fn provider(&self, at: &str, p: &raw::Provider) -> Result<proto::Provider> {
        check_base_url(&p.base_url).map_err(|m| self.err(&format!("{at}.base_url"), m))?;
        let credentials = p
            .credentials
            .iter()
            .enumerate()
            .map(|(j, c)| self.credential(&format!("{at}.credentials[{j}]"), c))
            .collect::<Result<_>>()?;
        for (name, value) in &p.headers {
            check_header(name, value).map_err(|m| self.err(&format!("{at}.headers.{name}"), m))?;
        }
        let kind = match p.kind {
            raw::ProviderKind::Openai => proto::ProviderKind::Openai,
            raw::ProviderKind::OpenaiCompatible => proto::ProviderKind::OpenaiCompatible,
            raw::ProviderKind::AzureOpenai => proto::ProviderKind::AzureOpenai,
            raw::ProviderKind::Anthropic => proto::ProviderKind::Anthropic,
            raw::ProviderKind::Gemini => proto::ProviderKind::Gemini,
            raw::ProviderKind::Bedrock => proto::ProviderKind::Bedrock,
        };
        let region = p.region.as_deref().unwrap_or_default();
        if kind == proto::ProviderKind::Bedrock && region.is_empty() {
            return Err(
                self.err(&format!("{at}.region"), "a bedrock provider needs `region` (e.g. us-east-1)")
            );
        }
        if !region.is_empty()
            && !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(self.err(&format!("{at}.region"), format!("{region:?} is not an AWS region name")));
        }
        if kind != proto::ProviderKind::Bedrock && !region.is_empty() {
            return Err(self.err(&format!("{at}.region"), "`region` is only for bedrock providers"));
        }
        if kind != proto::ProviderKind::AzureOpenai && p.api_version.is_some() {
            return Err(
                self.err(&format!("{at}.api_version"), "`api_version` is only for azure_openai providers")
            );
        }
        Ok(proto::Provider {
            name: p.name.clone(),
            kind: kind.into(),
            base_url: p.base_url.clone(),
            credentials,
            timeout_ms: self.positive(&format!("{at}.timeout_ms"), p.timeout_ms, DEFAULT_TIMEOUT_MS)?,
            connect_timeout_ms: self.positive(
                &format!("{at}.connect_timeout_ms"),
                p.connect_timeout_ms,
                DEFAULT_CONNECT_TIMEOUT_MS,
            )?,
            headers: p.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            api_version: p.api_version.clone().unwrap_or_default(),
            region: p.region.clone().unwrap_or_default(),
            drop_unsupported_params: p.drop_unsupported_params,
        })
    }

    fn model(&self, at: &str, m: &raw::Model, defined: &Defined<'_>) -> Result<proto::Model> {
        if m.targets.is_empty() {
            return Err(self.err(&format!("{at}.targets"), "a model needs at least one target"));
        }
        let mut targets = Vec::with_capacity(m.targets.len());
        for (j, t) in m.targets.iter().enumerate() {
            targets.push(self.target(&format!("{at}.targets[{j}]"), t, defined)?);
        }
        let strategy = match m.strategy.unwrap_or(raw::Strategy::Priority) {
            raw::Strategy::Priority => proto::Strategy::Priority,
            raw::Strategy::Weighted => proto::Strategy::Weighted,
            raw::Strategy::LeastLatency => proto::Strategy::LeastLatency,
            raw::Strategy::LeastCost => proto::Strategy::LeastCost,
        };
        let fallback_on = match &m.fallback_on {
            Some(list) => list.iter().map(|f| f.0.clone()).collect(),
            None => DEFAULT_FALLBACK_ON.map(str::to_owned).to_vec(),
        };
        let default_attempts = targets.len().min(MAX_DEFAULT_ATTEMPTS);
        let max_attempts = match m.max_attempts {
            Some(0) => return Err(self.err(&format!("{at}.max_attempts"), "must be at least 1")),
            Some(n) => n,
            // At most MAX_DEFAULT_ATTEMPTS (3), so the cast cannot truncate.
            None => u32::try_from(default_attempts).unwrap_or(u32::MAX),
        };
        Ok(proto::Model {
            name: m.name.clone(),
            strategy: strategy.into(),
            targets,
            fallback_on,
            ttft_timeout_ms: m.ttft_timeout_ms.unwrap_or(0),
            max_attempts,
            max_output_tokens: m.max_output_tokens.unwrap_or(0),
            breaker: m.breaker.as_ref().map(|b| proto::Breaker {
                failures: b.failures.unwrap_or(0),
                cooldown_ms: b.cooldown_ms.unwrap_or(0),
                max_cooldown_ms: b.max_cooldown_ms.unwrap_or(0),
            }),
        })
    }

    fn target(&self, at: &str, t: &raw::Target, defined: &Defined<'_>) -> Result<proto::Target> {
        self.reference(&format!("{at}.provider"), "provider", &t.provider, &defined.providers)?;
        check_upstream_model(&t.model).map_err(|m| self.err(&format!("{at}.model"), m))?;
        let weight = match t.weight {
            Some(0) => {
                return Err(
                    self.err(&format!("{at}.weight"), "must be at least 1; remove the target to disable it")
                );
            }
            Some(w) => w,
            None => 1,
        };
        let pricing = match &t.pricing {
            None => None,
            Some(p) => {
                let at = format!("{at}.pricing");
                self.non_negative(&format!("{at}.input_per_mtok"), p.input_per_mtok)?;
                self.non_negative(&format!("{at}.output_per_mtok"), p.output_per_mtok)?;
                if let Some(cached) = p.cached_input_per_mtok {
                    self.non_negative(&format!("{at}.cached_input_per_mtok"), cached)?;
                }
                Some(proto::Pricing {
                    input_per_mtok: p.input_per_mtok,
                    output_per_mtok: p.output_per_mtok,
                    cached_input_per_mtok: p.cached_input_per_mtok,
                })
            }
        };
        Ok(proto::Target { provider: t.provider.clone(), model: t.model.clone(), weight, pricing })
    }

    fn key(
        &self,
        at: &str,
        k: &raw::Key,
        defined: &Defined<'_>,
        (teams, projects): (&HashSet<&str>, &HashSet<&str>),
    ) -> Result<proto::Key> {
        match (&k.project, &k.team) {
            (Some(project), None) => {
                self.reference(&format!("{at}.project"), "project", project, projects)?
            }
            (None, Some(team)) => self.reference(&format!("{at}.team"), "team", team, teams)?,
            (Some(_), Some(_)) => {
                return Err(self.err(&format!("{at}.team"), "a key belongs to a project or a team, not both"));
            }
            (None, None) => return Err(self.err(at, "a key needs a project: or a team:")),
        }
        let (secret_sha256, secret_prefix) = match &k.secret {
            Some(secret) => self.secret_digest(&format!("{at}.secret"), secret)?,
            None => (Vec::new(), String::new()),
        };
        let expires_at_unix = match &k.expires_at {
            Some(s) => rfc3339::parse(s).ok_or_else(|| {
                self.err(
                    &format!("{at}.expires_at"),
                    format!("\"{s}\" is not an RFC 3339 time such as 2027-01-01T00:00:00Z"),
                )
            })?,
            None => 0,
        };
        Ok(proto::Key {
            // Standalone files have no id store: the name is the stable id.
            id: k.name.clone(),
            name: k.name.clone(),
            project: k.project.clone().unwrap_or_default(),
            team: k.team.clone().unwrap_or_default(),
            secret_sha256,
            models: self.model_set(at, k.models.as_deref(), defined)?,
            limits: self.limits(at, k.limits.as_ref())?,
            budget: self.budget(at, k.budget.as_ref())?,
            expires_at_unix,
            revoked: k.revoked,
            created_at_unix: 0,
            secret_prefix,
        })
    }

    fn model_set(
        &self,
        at: &str,
        names: Option<&[String]>,
        defined: &Defined<'_>,
    ) -> Result<Option<proto::ModelSet>> {
        let Some(names) = names else { return Ok(None) };
        for (j, name) in names.iter().enumerate() {
            self.reference(&format!("{at}.models[{j}]"), "model", name, &defined.models)?;
        }
        Ok(Some(proto::ModelSet { names: names.to_vec() }))
    }

    fn limits(&self, at: &str, limits: Option<&raw::Limits>) -> Result<Option<proto::Limits>> {
        let Some(l) = limits else { return Ok(None) };
        let mut checked = [0; 2];
        for (slot, (field, value)) in checked.iter_mut().zip([("rpm", l.rpm), ("tpm", l.tpm)]) {
            *slot = match value {
                Some(0) => {
                    return Err(
                        self.err(&format!("{at}.limits.{field}"), "must be at least 1; omit it for no limit")
                    );
                }
                Some(n) => n,
                None => 0,
            };
        }
        Ok(Some(proto::Limits { rpm: checked[0], tpm: checked[1] }))
    }

    fn budget(&self, at: &str, budget: Option<&raw::Budget>) -> Result<Option<proto::Budget>> {
        let Some(b) = budget else { return Ok(None) };
        self.non_negative(&format!("{at}.budget.limit_usd"), b.limit_usd)?;
        let period = match b.period {
            raw::Period::Daily => proto::Period::Daily,
            raw::Period::Weekly => proto::Period::Weekly,
            raw::Period::Monthly => proto::Period::Monthly,
            raw::Period::Total => proto::Period::Total,
        };
        Ok(Some(proto::Budget { limit_usd: b.limit_usd, period: period.into() }))
    }

    fn non_negative(&self, at: &str, value: f64) -> Result<()> {
        if value.is_finite() && value >= 0.0 {
            Ok(())
        } else {
            Err(self.err(at, format!("must be a finite number ≥ 0, not {value}")))
        }
    }

    /// A duration that must be positive when given, else `default`.
    fn positive(&self, at: &str, value: Option<u64>, default: u64) -> Result<u64> {
        match value {
            Some(0) => Err(self.err(at, "must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    }
}

fn check_base_url(url: &str) -> std::result::Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    match rest {
        None => Err(format!("\"{url}\" is not an http:// or https:// URL")),
        Some(rest) if rest.is_empty() || rest.starts_with(['/', '?', '#']) => {
            Err(format!("\"{url}\" has no host"))
        }
        Some(_) if url.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(format!("\"{url}\" contains whitespace"))
        }
        Some(_) => Ok(()),
    }
}

/// RFC 9110 field names are tokens; values may not contain CR, LF or NUL.
fn check_header(name: &str, value: &str) -> std::result::Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("invalid header name \"{name}\""));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err("header value contains a control character".to_owned());
    }
    Ok(())
}
