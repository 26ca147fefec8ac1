//! The file's shape as serde reads and writes it: every field of CONFIG.md and nothing else
//! (`deny_unknown_fields` throughout). Values are checked and defaults filled in `read`, not
//! here, except the closed vocabularies (enums, `fallback_on`) that serde checks itself.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with version, providers, models, teams, projects and keys"
)]
pub(super) struct File {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<Provider>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<Model>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<Team>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<Project>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<Key>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a provider: a mapping with name, kind, base_url and optional credentials, timeouts, headers"
)]
pub(super) struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    #[serde(default)]
    pub credentials: Vec<Credential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub drop_unsupported_params: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ProviderKind {
    Openai,
    OpenaiCompatible,
    AzureOpenai,
    Anthropic,
    Gemini,
    Bedrock,
}

/// Exactly one field is set; `read` checks that, so the error can name the entry.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a credential: a mapping with one of env:, file: or value:")]
pub(super) struct Credential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Only ever [`super::SEALED_PLACEHOLDER`]: a credential the control plane holds sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// A key's secret: where to read it at load. Exactly one field is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a secret: a mapping with one of env:, file: or value:")]
pub(super) struct Secret {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a model: a mapping with name, targets and optional strategy, fallback_on, timeouts"
)]
pub(super) struct Model {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    pub targets: Vec<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_on: Option<Vec<FallbackOn>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Breaker>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a breaker: a mapping with failures, cooldown_ms, max_cooldown_ms")]
pub(super) struct Breaker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cooldown_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Strategy {
    Priority,
    Weighted,
    LeastLatency,
    LeastCost,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a target: a mapping with provider, model and optional weight, pricing"
)]
pub(super) struct Target {
    pub provider: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "pricing: a mapping with input_per_mtok, output_per_mtok and optional cached_input_per_mtok"
)]
pub(super) struct Pricing {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
}

/// One `fallback_on` condition, normalised to its string form: `connect`, `timeout`, `4xx`,
/// `5xx`, or a status code 100–599 (written as a YAML integer or string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FallbackOn(pub String);

const FALLBACK_WORDS: [&str; 4] = ["connect", "timeout", "4xx", "5xx"];
const FALLBACK_EXPECTED: &str = "connect, timeout, 4xx, 5xx or an HTTP status code such as 429";

impl FallbackOn {
    /// Checks a condition in its string form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let status = s.len() == 3 && s.parse::<u16>().is_ok_and(|n| (100..=599).contains(&n));
        if FALLBACK_WORDS.contains(&s) || status {
            Ok(FallbackOn(s.to_owned()))
        } else {
            Err(format!("unknown fallback condition `{s}`, expected {FALLBACK_EXPECTED}"))
        }
    }
}

impl<'de> Deserialize<'de> for FallbackOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = FallbackOn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(FALLBACK_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FallbackOn, E> {
                FallbackOn::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FallbackOn, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FallbackOn, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Serialize for FallbackOn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a team: a mapping with name and optional models, limits, budget")]
pub(super) struct Team {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a project: a mapping with name, team and optional models, limits, budget"
)]
pub(super) struct Project {
    pub name: String,
    pub team: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a key: a mapping with name, project or team, and optional secret, models, limits, budget, expires_at"
)]
pub(super) struct Key {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Never printed: the snapshot holds only the secret's hash.
    #[serde(default, skip_serializing)]
    pub secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub revoked: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "limits: a mapping with rpm and/or tpm")]
pub(super) struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a budget: a mapping with limit_usd and period")]
pub(super) struct Budget {
    pub limit_usd: f64,
    pub period: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Period {
    Daily,
    Weekly,
    Monthly,
    Total,
}

fn is_false(b: &bool) -> bool {
    !*b
}
