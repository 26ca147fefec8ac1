//! `proto::Snapshot` → YAML text in the file format, for `llmgw admin get … -o yaml`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::proto::{self, credential::Source};

use super::{ConfigError, SEALED_PLACEHOLDER, raw, rfc3339};

type Result<T> = std::result::Result<T, ConfigError>;

/// The file name errors from printing carry.
const SOURCE: &str = "<snapshot>";

/// See [`super::to_yaml`].
pub(super) fn to_yaml(s: &proto::Snapshot) -> Result<String> {
    let mut out = String::from(
        "# llmgw configuration, version 1 (CONFIG.md). Key secrets are never printed; sealed\n\
         # provider credentials print as `sealed: <redacted>`, which keeps the stored value.\n",
    );
    if s.revision != 0 {
        out.push_str(&format!("# revision {}\n", s.revision));
    }
    out.push_str("version: 1\n");
    // One section at a time, so a blank line can separate them.
    section(&mut out, "providers", &collect(&s.providers, "providers", provider)?)?;
    section(&mut out, "models", &collect(&s.models, "models", model)?)?;
    section(&mut out, "teams", &collect(&s.teams, "teams", team)?)?;
    section(&mut out, "projects", &collect(&s.projects, "projects", project)?)?;
    section(&mut out, "keys", &collect(&s.keys, "keys", key)?)?;
    Ok(out)
}

fn collect<T, R>(items: &[T], section: &str, f: impl Fn(&str, &T) -> Result<R>) -> Result<Vec<R>> {
    items.iter().enumerate().map(|(i, item)| f(&format!("{section}[{i}]"), item)).collect()
}

fn section<T: Serialize>(out: &mut String, name: &str, items: &[T]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let yaml = serde_yaml_ng::to_string(&BTreeMap::from([(name, items)]))
        .map_err(|e| ConfigError::new(SOURCE, name, e.to_string()))?;
    out.push('\n');
    out.push_str(&yaml);
    Ok(())
}

fn error(path: &str, message: String) -> ConfigError {
    ConfigError::new(SOURCE, path, message)
}

fn provider(at: &str, p: &proto::Provider) -> Result<raw::Provider> {
    let kind = match proto::ProviderKind::try_from(p.kind) {
        Ok(proto::ProviderKind::Openai) => raw::ProviderKind::Openai,
        Ok(proto::ProviderKind::OpenaiCompatible) => raw::ProviderKind::OpenaiCompatible,
        Ok(proto::ProviderKind::AzureOpenai) => raw::ProviderKind::AzureOpenai,
        Ok(proto::ProviderKind::Anthropic) => raw::ProviderKind::Anthropic,
        Ok(proto::ProviderKind::Gemini) => raw::ProviderKind::Gemini,
        Ok(proto::ProviderKind::Bedrock) => raw::ProviderKind::Bedrock,
        Ok(proto::ProviderKind::Unspecified) | Err(_) => {
            return Err(error(&format!("{at}.kind"), format!("no file form for provider kind {}", p.kind)));
        }
    };
    Ok(raw::Provider {
        name: p.name.clone(),
        kind,
        base_url: p.base_url.clone(),
        credentials: p.credentials.iter().map(credential).collect(),
        timeout_ms: nonzero(p.timeout_ms),
        connect_timeout_ms: nonzero(p.connect_timeout_ms),
        headers: p.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        api_version: nonempty(&p.api_version),
        region: nonempty(&p.region),
        drop_unsupported_params: p.drop_unsupported_params,
    })
}

/// `value:` credentials print as they are (only standalone files hold them); sealed ones, and
/// ones with no source, as the placeholder `parse` reads back as "keep the stored credential".
fn credential(c: &proto::Credential) -> raw::Credential {
    let mut out = raw::Credential::default();
    match &c.source {
        Some(Source::Env(v)) => out.env = Some(v.clone()),
        Some(Source::File(v)) => out.file = Some(v.clone()),
        Some(Source::Value(v)) => out.value = Some(v.clone()),
        Some(Source::Sealed(_)) | None => out.sealed = Some(SEALED_PLACEHOLDER.to_owned()),
    }
    out
}

fn model(at: &str, m: &proto::Model) -> Result<raw::Model> {
    let strategy = match proto::Strategy::try_from(m.strategy) {
        Ok(proto::Strategy::Priority | proto::Strategy::Unspecified) => raw::Strategy::Priority,
        Ok(proto::Strategy::Weighted) => raw::Strategy::Weighted,
        Ok(proto::Strategy::LeastLatency) => raw::Strategy::LeastLatency,
        Ok(proto::Strategy::LeastCost) => raw::Strategy::LeastCost,
        Err(_) => {
            return Err(error(
                &format!("{at}.strategy"),
                format!("no file form for strategy {}", m.strategy),
            ));
        }
    };
    let fallback_on = m
        .fallback_on
        .iter()
        .enumerate()
        .map(|(j, f)| raw::FallbackOn::parse(f).map_err(|e| error(&format!("{at}.fallback_on[{j}]"), e)))
        .collect::<Result<_>>()?;
    Ok(raw::Model {
        name: m.name.clone(),
        strategy: Some(strategy),
        targets: m.targets.iter().map(target).collect(),
        fallback_on: Some(fallback_on),
        ttft_timeout_ms: nonzero(m.ttft_timeout_ms),
        max_attempts: nonzero(m.max_attempts),
        max_output_tokens: nonzero(m.max_output_tokens),
        breaker: m.breaker.as_ref().map(|b| raw::Breaker {
            failures: nonzero(b.failures),
            cooldown_ms: nonzero(b.cooldown_ms),
            max_cooldown_ms: nonzero(b.max_cooldown_ms),
        }),
    })
}

fn target(t: &proto::Target) -> raw::Target {
    raw::Target {
        provider: t.provider.clone(),
        model: t.model.clone(),
        // 0 means 1 on the wire; 1 is the file's default.
        weight: (t.weight > 1).then_some(t.weight),
        pricing: t.pricing.as_ref().map(|p| raw::Pricing {
            input_per_mtok: p.input_per_mtok,
            output_per_mtok: p.output_per_mtok,
            cached_input_per_mtok: p.cached_input_per_mtok,
        }),
    }
}

fn team(at: &str, t: &proto::Team) -> Result<raw::Team> {
    Ok(raw::Team {
        name: t.name.clone(),
        models: model_set(t.models.as_ref()),
        limits: t.limits.as_ref().map(limits),
        budget: budget(at, t.budget.as_ref())?,
    })
}

fn project(at: &str, p: &proto::Project) -> Result<raw::Project> {
    Ok(raw::Project {
        name: p.name.clone(),
        team: p.team.clone(),
        models: model_set(p.models.as_ref()),
        limits: p.limits.as_ref().map(limits),
        budget: budget(at, p.budget.as_ref())?,
    })
}

/// Neither the id nor anything about the secret is printed: keys are matched by name.
fn key(at: &str, k: &proto::Key) -> Result<raw::Key> {
    let expires_at = match k.expires_at_unix {
        0 => None,
        t => Some(
            rfc3339::format(t)
                .ok_or_else(|| error(&format!("{at}.expires_at"), format!("{t} is out of range")))?,
        ),
    };
    Ok(raw::Key {
        name: k.name.clone(),
        project: nonempty(&k.project),
        team: nonempty(&k.team),
        secret: None,
        models: model_set(k.models.as_ref()),
        limits: k.limits.as_ref().map(limits),
        budget: budget(at, k.budget.as_ref())?,
        expires_at,
        revoked: k.revoked,
    })
}

fn model_set(m: Option<&proto::ModelSet>) -> Option<Vec<String>> {
    m.map(|m| m.names.clone())
}

fn limits(l: &proto::Limits) -> raw::Limits {
    raw::Limits { rpm: nonzero(l.rpm), tpm: nonzero(l.tpm) }
}

fn budget(at: &str, b: Option<&proto::Budget>) -> Result<Option<raw::Budget>> {
    let Some(b) = b else { return Ok(None) };
    let period = match proto::Period::try_from(b.period) {
        Ok(proto::Period::Daily) => raw::Period::Daily,
        Ok(proto::Period::Weekly) => raw::Period::Weekly,
        Ok(proto::Period::Monthly) => raw::Period::Monthly,
        // Unspecified means total on the wire.
        Ok(proto::Period::Total | proto::Period::Unspecified) => raw::Period::Total,
        Err(_) => {
            return Err(error(
                &format!("{at}.budget.period"),
                format!("no file form for period {}", b.period),
            ));
        }
    };
    Ok(Some(raw::Budget { limit_usd: b.limit_usd, period }))
}

fn nonzero<T: Default + PartialEq>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}
