//! The format end to end: CONFIG.md's example, the round trip, and one test per kind of error,
//! each checking the path and the line it reports.

use super::*;
use crate::keys::hash_secret;
use crate::proto::credential::Source;

/// CONFIG.md's example, verbatim.
const EXAMPLE: &str = r#"version: 1

providers:
  - name: openai                      # [a-z0-9][a-z0-9-]{0,62}
    kind: openai                      # openai | openai_compatible | azure_openai | anthropic | gemini | bedrock
    base_url: https://api.openai.com/v1   # always the API's version root: …/v1 (Anthropic too), …/v1beta (Gemini)
    credentials:                      # one or more, used round-robin; each is env:, file: or value:
      - env: OPENAI_API_KEY
    timeout_ms: 600000                # whole attempt
    connect_timeout_ms: 5000
    headers: {}                       # extra headers sent upstream
    # azure_openai: api_version; bedrock: region (credentials: access key id + secret)

  - name: local-vllm
    kind: openai_compatible
    base_url: http://10.0.0.5:8000/v1
    credentials: []

models:
  - name: chat-default                # the "model" clients send
    strategy: priority                # priority | weighted | least_latency | least_cost
    targets:
      - provider: openai
        model: gpt-4o-mini            # the upstream model id
        weight: 1                     # for weighted
        pricing: { input_per_mtok: 0.15, output_per_mtok: 0.60 }   # USD per million tokens
      - provider: local-vllm
        model: meta-llama/Llama-3.1-8B-Instruct
        pricing: { input_per_mtok: 0, output_per_mtok: 0 }
    fallback_on: [connect, timeout, "429", "5xx"]
    ttft_timeout_ms: 3000             # streaming: next target if no first token by then
    max_attempts: 3

teams:
  - name: search
    models: [chat-default]            # allowed aliases; omitted = all
    limits: { rpm: 600, tpm: 200000 }
    budget: { limit_usd: 100.0, period: monthly }   # daily | weekly | monthly | total

projects:
  - name: ranker
    team: search
    budget: { limit_usd: 20.0, period: daily }

keys:                                 # secrets are never in this file
  - name: ranker-prod
    project: ranker                   # or team:
    secret: { env: LLMGW_KEY_RANKER } # standalone mode; with a control plane keys come from `llmgw admin key create`
    models: [chat-default]
    limits: { rpm: 60 }
    budget: { limit_usd: 5.0, period: daily }
    expires_at: 2027-01-01T00:00:00Z
"#;

const RANKER_SECRET: &str = "sk-llmgw-ranker-0123456789abcdef";

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-upstream".to_owned()),
        // Surrounding whitespace is not part of the secret.
        "LLMGW_KEY_RANKER" => Some(format!("{RANKER_SECRET}\n")),
        _ => None,
    }
}

fn parse_ok(text: &str) -> proto::Snapshot {
    parse(text, "llmgw.yaml", &env).unwrap_or_else(|e| panic!("{e}"))
}

/// `EXAMPLE` with `from` replaced by `to` (which must occur exactly once).
fn example_with(from: &str, to: &str) -> String {
    assert_eq!(EXAMPLE.matches(from).count(), 1, "{from:?} must occur once");
    EXAMPLE.replacen(from, to, 1)
}

/// The 1-based line of the only occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<usize> =
        text.lines().enumerate().filter(|(_, l)| l.contains(needle)).map(|(i, _)| i + 1).collect();
    assert_eq!(lines.len(), 1, "{needle:?} must occur on exactly one line");
    lines[0]
}

/// Parses `text`, expecting an error at `path` on the line holding `needle`; returns the error.
fn expect_error(text: &str, path: &str, needle: &str) -> ConfigError {
    expect_error_at(text, path, line_of(text, needle))
}

fn expect_error_at(text: &str, path: &str, line: usize) -> ConfigError {
    let err = parse(text, "llmgw.yaml", &env).expect_err("the file should be rejected");
    assert_eq!(err.path, path, "{err}");
    assert_eq!(err.line, Some(line), "{err}");
    assert_eq!(err.file, "llmgw.yaml");
    assert!(err.to_string().starts_with(&format!("llmgw.yaml:{line}:")), "{err}");
    err
}

fn expected_example() -> proto::Snapshot {
    let pricing =
        |i, o| Some(proto::Pricing { input_per_mtok: i, output_per_mtok: o, cached_input_per_mtok: None });
    let chat_default = || Some(proto::ModelSet { names: vec!["chat-default".to_owned()] });
    proto::Snapshot {
        revision: 0,
        more: false,
        keys_total: 0,
        providers: vec![
            proto::Provider {
                name: "openai".into(),
                kind: proto::ProviderKind::Openai.into(),
                base_url: "https://api.openai.com/v1".into(),
                credentials: vec![proto::Credential { source: Some(Source::Env("OPENAI_API_KEY".into())) }],
                timeout_ms: 600_000,
                connect_timeout_ms: 5_000,
                ..Default::default()
            },
            proto::Provider {
                name: "local-vllm".into(),
                kind: proto::ProviderKind::OpenaiCompatible.into(),
                base_url: "http://10.0.0.5:8000/v1".into(),
                timeout_ms: 600_000,
                connect_timeout_ms: 5_000,
                ..Default::default()
            },
        ],
        models: vec![proto::Model {
            name: "chat-default".into(),
            strategy: proto::Strategy::Priority.into(),
            targets: vec![
                proto::Target {
                    provider: "openai".into(),
                    model: "gpt-4o-mini".into(),
                    weight: 1,
                    pricing: pricing(0.15, 0.60),
                },
                proto::Target {
                    provider: "local-vllm".into(),
                    model: "meta-llama/Llama-3.1-8B-Instruct".into(),
                    weight: 1,
                    pricing: pricing(0.0, 0.0),
                },
            ],
            fallback_on: vec!["connect".into(), "timeout".into(), "429".into(), "5xx".into()],
            ttft_timeout_ms: 3000,
            max_attempts: 3,
            max_output_tokens: 0,
            breaker: None,
        }],
        teams: vec![proto::Team {
            name: "search".into(),
            models: chat_default(),
            limits: Some(proto::Limits { rpm: 600, tpm: 200_000 }),
            budget: Some(proto::Budget { limit_usd: 100.0, period: proto::Period::Monthly.into() }),
        }],
        projects: vec![proto::Project {
            name: "ranker".into(),
            team: "search".into(),
            models: None,
            limits: None,
            budget: Some(proto::Budget { limit_usd: 20.0, period: proto::Period::Daily.into() }),
        }],
        keys: vec![proto::Key {
            id: "ranker-prod".into(),
            name: "ranker-prod".into(),
            project: "ranker".into(),
            team: String::new(),
            secret_sha256: hash_secret(RANKER_SECRET).to_vec(),
            models: chat_default(),
            limits: Some(proto::Limits { rpm: 60, tpm: 0 }),
            budget: Some(proto::Budget { limit_usd: 5.0, period: proto::Period::Daily.into() }),
            expires_at_unix: 1_798_761_600,
            revoked: false,
            created_at_unix: 0,
            secret_prefix: "sk-llmgw-ran".into(),
        }],
    }
}

#[test]
fn parses_the_config_md_example() {
    assert_eq!(parse_ok(EXAMPLE), expected_example());
}

#[test]
fn fills_defaults() {
    let text = "\
version: 1
providers:
  - { name: a, kind: anthropic, base_url: 'https://api.anthropic.com/v1' }
models:
  - name: m
    targets: [{ provider: a, model: x }, { provider: a, model: y }, { provider: a, model: z }, { provider: a, model: w }]
";
    let s = parse_ok(text);
    assert_eq!(s.providers[0].timeout_ms, 600_000);
    assert_eq!(s.providers[0].connect_timeout_ms, 5_000);
    assert!(s.providers[0].credentials.is_empty());
    let m = &s.models[0];
    assert_eq!(m.strategy, i32::from(proto::Strategy::Priority));
    assert_eq!(m.fallback_on, ["connect", "timeout", "429", "5xx"]);
    assert_eq!(m.max_attempts, 3, "capped at 3");
    assert!(m.targets.iter().all(|t| t.weight == 1 && t.pricing.is_none()));
    assert!(s.teams.is_empty() && s.keys.is_empty());
}

#[test]
fn reads_every_optional_field() {
    let text = r#"
version: 1
providers:
  - name: azure
    kind: azure_openai
    base_url: https://x.openai.azure.com/openai
    credentials: [{ value: k1 }, { env: OPENAI_API_KEY }]
    headers: { x-tenant: search }
    api_version: "2024-10-21"
    drop_unsupported_params: true
  - { name: aws, kind: bedrock, base_url: "https://bedrock-runtime.eu-west-1.amazonaws.com", region: eu-west-1 }
models:
  - name: meta-llama/Llama-3.1-8B:fast
    strategy: weighted
    targets:
      - provider: azure
        model: gpt-4o
        weight: 3
        pricing: { input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 1.25 }
      - { provider: aws, model: "anthropic.claude-3-5-sonnet-20240620-v1:0" }
    fallback_on: [connect, 503, "4xx"]
    max_attempts: 5
    max_output_tokens: 4096
teams:
  - { name: t, models: [] }
keys:
  - { name: k, team: t, revoked: true }
"#;
    let s = parse_ok(text);
    let azure = &s.providers[0];
    assert_eq!(azure.api_version, "2024-10-21");
    assert!(azure.drop_unsupported_params);
    assert_eq!(azure.headers.get("x-tenant").map(String::as_str), Some("search"));
    assert_eq!(azure.credentials[0].source, Some(Source::Value("k1".into())));
    assert_eq!(s.providers[1].region, "eu-west-1");
    let m = &s.models[0];
    assert_eq!(m.strategy, i32::from(proto::Strategy::Weighted));
    assert_eq!(m.fallback_on, ["connect", "503", "4xx"]);
    assert_eq!((m.max_attempts, m.max_output_tokens, m.targets[0].weight), (5, 4096, 3));
    assert_eq!(m.targets[0].pricing.as_ref().and_then(|p| p.cached_input_per_mtok), Some(1.25));
    assert_eq!(s.teams[0].models, Some(proto::ModelSet { names: vec![] }), "[] allows no model");
    let key = &s.keys[0];
    assert!(key.revoked && key.secret_sha256.is_empty() && key.secret_prefix.is_empty());
}

#[test]
fn round_trips_through_to_yaml() {
    let original = parse_ok(EXAMPLE);
    let yaml = to_yaml(&original).unwrap();
    let again = parse(&yaml, "printed.yaml", &env).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    // Only what the printed form deliberately leaves out differs: the key's secret.
    let mut expected = original.clone();
    for key in &mut expected.keys {
        key.secret_sha256.clear();
        key.secret_prefix.clear();
    }
    assert_eq!(again, expected, "{yaml}");
    assert!(!yaml.contains("LLMGW_KEY_RANKER") && !yaml.contains("sk-llmgw"), "{yaml}");
    // Printing is stable.
    assert_eq!(to_yaml(&again).unwrap(), yaml);
}

#[test]
fn sealed_credentials_print_as_a_placeholder_and_read_back_as_no_source() {
    let mut snapshot = parse_ok(EXAMPLE);
    snapshot.revision = 42;
    snapshot.providers[0].credentials = vec![
        proto::Credential {
            source: Some(Source::Sealed(proto::SealedValue {
                nonce: vec![1; 12],
                ciphertext: b"secret-ciphertext".to_vec(),
                key_id: "0badcafe".into(),
            })),
        },
        proto::Credential { source: None },
    ];
    let yaml = to_yaml(&snapshot).unwrap();
    assert!(yaml.contains("sealed: <redacted>") && yaml.contains("# revision 42"), "{yaml}");
    assert!(!yaml.contains("0badcafe"), "{yaml}");
    let again = parse(&yaml, "printed.yaml", &env).unwrap();
    assert_eq!(again.providers[0].credentials, vec![proto::Credential { source: None }; 2]);

    let text = example_with("- env: OPENAI_API_KEY", "- sealed: sk-real-secret");
    let err = expect_error(&text, "providers[0].credentials[0].sealed", "sealed:");
    assert!(err.message.contains("cannot be written"), "{err}");
}

#[test]
fn to_yaml_refuses_what_the_file_cannot_express() {
    let mut snapshot = parse_ok(EXAMPLE);
    snapshot.providers[1].kind = 0;
    let err = to_yaml(&snapshot).unwrap_err();
    assert_eq!(err.path, "providers[1].kind");
}

#[test]
fn the_standalone_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/standalone.yaml");
    let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.providers[0].credentials[0].source, Some(Source::Value("sk-mock-upstream".into())));
    assert_eq!(s.models[0].targets[0].model, "gpt-4o-mini");
    let key = &s.keys[0];
    assert_eq!(key.secret_sha256, hash_secret("sk-llmgw-dev-0000000000000000"));
    assert_eq!(key.secret_prefix, "sk-llmgw-dev");
}

#[test]
fn load_reads_files_relative_to_the_config() {
    let dir = std::env::temp_dir().join(format!("llmgw-configfile-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/upstream"), "sk-upstream\n").unwrap();
    std::fs::write(dir.join("secrets/key"), "sk-llmgw-from-a-file-000000\n").unwrap();
    let config = "\
version: 1
providers:
  - { name: p, kind: openai, base_url: 'https://api.openai.com/v1', credentials: [{ file: secrets/upstream }] }
teams: [{ name: t }]
keys: [{ name: k, team: t, secret: { file: secrets/key } }]
";
    std::fs::write(dir.join("llmgw.yaml"), config).unwrap();
    let s = load(&dir.join("llmgw.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let expected = dir.join("secrets/upstream").to_str().unwrap().to_owned();
    assert_eq!(s.providers[0].credentials[0].source, Some(Source::File(expected)));
    assert_eq!(s.keys[0].secret_sha256, hash_secret("sk-llmgw-from-a-file-000000"));

    std::fs::remove_file(dir.join("secrets/upstream")).unwrap();
    let err = load(&dir.join("llmgw.yaml")).unwrap_err();
    assert_eq!((err.path.as_str(), err.line), ("providers[0].credentials[0].file", Some(3)), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_field_at_top_level() {
    let text = example_with("version: 1\n", "version: 1\nprovider: []\n");
    let err = expect_error(&text, "provider", "provider: []");
    assert!(err.message.contains("unknown field `provider`"), "{err}");
}

#[test]
fn unknown_field_nested() {
    let text = example_with("        model: gpt-4o-mini ", "        modle: gpt-4o-mini ");
    let err = expect_error(&text, "models[0].targets[0].modle", "modle:");
    assert!(err.message.contains("unknown field `modle`"), "{err}");
}

#[test]
fn bad_enum_values() {
    let text = example_with("kind: openai_compatible", "kind: vllm");
    let err = expect_error(&text, "providers[1].kind", "kind: vllm");
    assert!(err.message.contains("unknown variant `vllm`"), "{err}");
    let text = example_with("strategy: priority ", "strategy: random ");
    expect_error(&text, "models[0].strategy", "strategy: random");
    let text = example_with("period: monthly", "period: yearly");
    expect_error(&text, "teams[0].budget.period", "period: yearly");
    let text = example_with(r#"fallback_on: [connect, timeout, "429", "5xx"]"#, "fallback_on: [connect, 42]");
    expect_error(&text, "models[0].fallback_on[1]", "fallback_on:");
}

#[test]
fn kind_specific_fields() {
    let text = example_with("kind: openai_compatible", "kind: bedrock");
    let err = parse(&text, "llmgw.yaml", &env).expect_err("bedrock without a region");
    assert_eq!(err.path, "providers[1].region", "{err}");
    assert!(err.message.contains("needs `region`"), "{err}");
    let text = example_with("kind: openai_compatible", "kind: openai_compatible\n    region: us-east-1");
    expect_error(&text, "providers[1].region", "region: us-east-1");
    let text = example_with("kind: openai_compatible", "kind: openai_compatible\n    api_version: v1");
    expect_error(&text, "providers[1].api_version", "api_version: v1");
}

#[test]
fn bad_types() {
    let text = example_with("ttft_timeout_ms: 3000", "ttft_timeout_ms: soon");
    let err = expect_error(&text, "models[0].ttft_timeout_ms", "ttft_timeout_ms: soon");
    assert!(err.message.contains("invalid type"), "{err}");
    let text = example_with("limits: { rpm: 60 }", "limits: { rpm: -60 }");
    expect_error(&text, "keys[0].limits.rpm", "rpm: -60");
    let text = "version: 1\nmodels:\n  - name: m\n    targets: many\n";
    let err = expect_error(text, "models[0].targets", "targets: many");
    assert!(err.message.contains("expected a sequence"), "{err}");
}

#[test]
fn missing_reference_suggests_the_name() {
    let text = example_with("      - provider: openai", "      - provider: opanai");
    let err = expect_error(&text, "models[0].targets[0].provider", "provider: opanai");
    assert_eq!(err.message, r#"no provider named "opanai" (did you mean "openai"?)"#);
    assert_eq!(
        err.to_string(),
        format!("llmgw.yaml:{}:9: models[0].targets[0].provider: {}", line_of(&text, "opanai"), err.message)
    );
    let text = example_with("    team: search", "    team: serch");
    expect_error(&text, "projects[0].team", "team: serch");
    let text = example_with("    project: ranker ", "    project: rankr ");
    expect_error(&text, "keys[0].project", "project: rankr");
    let text = example_with("    models: [chat-default]            #", "    models: [chat]            #");
    expect_error(&text, "teams[0].models[0]", "models: [chat]");
}

#[test]
fn duplicate_names() {
    let text = example_with("  - name: local-vllm", "  - name: openai");
    let err = expect_error_at(&text, "providers[1].name", line_of(&text, "kind: openai_compatible") - 1);
    assert!(err.message.contains("duplicate provider name \"openai\" (first defined at line 4)"), "{err}");
}

#[test]
fn duplicate_yaml_keys() {
    let text = example_with("    timeout_ms: 600000", "    timeout_ms: 1\n    timeout_ms: 2");
    expect_error(&text, "providers[0].timeout_ms", "timeout_ms: 2");
}

#[test]
fn missing_env_var() {
    let text = example_with("env: OPENAI_API_KEY", "env: OPENAI_KEY");
    let err = expect_error(&text, "providers[0].credentials[0].env", "OPENAI_KEY");
    assert_eq!(err.message, "environment variable OPENAI_KEY is not set");
    let text = example_with("env: LLMGW_KEY_RANKER", "env: LLMGW_KEY_NONE");
    expect_error(&text, "keys[0].secret.env", "LLMGW_KEY_NONE");
}

#[test]
fn bad_or_missing_version() {
    let text = example_with("version: 1", "version: 2");
    let err = expect_error(&text, "version", "version: 2");
    assert!(err.message.contains("unsupported version 2"), "{err}");
    let text = example_with("version: 1\n", "");
    let err = parse(&text, "llmgw.yaml", &env).unwrap_err();
    assert!(err.message.contains("missing field `version`"), "{err}");
    let err = parse("", "llmgw.yaml", &env).unwrap_err();
    assert!(err.message.contains("empty"), "{err}");
}

#[test]
fn key_with_both_or_neither_owner() {
    let text = example_with("    project: ranker ", "    team: search\n    project: ranker ");
    let err = expect_error_at(&text, "keys[0].team", line_of(&text, "project: ranker ") - 1);
    assert!(err.message.contains("not both"), "{err}");
    let text = example_with("    project: ranker ", "   ");
    expect_error(&text, "keys[0]", "- name: ranker-prod");
}

#[test]
fn credential_with_several_or_no_sources() {
    let text = example_with("- env: OPENAI_API_KEY", "- { env: OPENAI_API_KEY, value: sk-x }");
    expect_error(&text, "providers[0].credentials[0]", "value: sk-x");
    let text = example_with("- env: OPENAI_API_KEY", "- {}");
    expect_error(&text, "providers[0].credentials[0]", "- {}");
}

#[test]
fn bad_values() {
    let cases = [
        ("base_url: http://10.0.0.5:8000/v1", "base_url: ftp://10.0.0.5/v1", "providers[1].base_url"),
        ("input_per_mtok: 0.15", "input_per_mtok: -0.15", "models[0].targets[0].pricing.input_per_mtok"),
        ("limit_usd: 20.0", "limit_usd: -1", "projects[0].budget.limit_usd"),
        ("expires_at: 2027-01-01T00:00:00Z", "expires_at: next year", "keys[0].expires_at"),
        ("  - name: ranker-prod", "  - name: Ranker Prod", "keys[0].name"),
        ("max_attempts: 3", "max_attempts: 0", "models[0].max_attempts"),
        ("        weight: 1 ", "        weight: 0 ", "models[0].targets[0].weight"),
        ("headers: {}", "headers: { \"bad header\": x }", "providers[0].headers.bad header"),
    ];
    for (from, to, path) in cases {
        let text = example_with(from, to);
        expect_error(&text, path, to.trim());
    }
}

#[test]
fn model_without_targets() {
    let text = "version: 1\nmodels:\n  - name: m\n    targets: []\n";
    expect_error(text, "models[0].targets", "targets: []");
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let text = example_with("    team: search", "    team: [search");
    let err = parse(&text, "llmgw.yaml", &env).unwrap_err();
    assert!(err.line.is_some() && err.message.starts_with("invalid YAML"), "{err}");
}

#[test]
fn merge_keys_share_settings() {
    let text = "\
version: 1
providers:
  - &base { name: a, kind: openai, base_url: 'https://api.openai.com/v1', timeout_ms: 1000 }
  - <<: *base
    name: b
";
    let s = parse_ok(text);
    assert_eq!((s.providers[1].name.as_str(), s.providers[1].timeout_ms), ("b", 1000));
}

#[test]
fn kept_credential_refs_need_not_resolve_here() {
    let keep = ParseOptions { credentials: CredentialRefs::Keep };
    let text = example_with(
        "credentials: []",
        "credentials: [{ env: NOT_SET_HERE }, { file: secrets/upstream }, { sealed: <redacted> }]",
    );
    let s = parse_with(&text, "llmgw.yaml", &env, &keep).unwrap_or_else(|e| panic!("{e}"));
    let sources: Vec<_> = s.providers[1].credentials.iter().map(|c| c.source.clone()).collect();
    assert_eq!(
        sources,
        [Some(Source::Env("NOT_SET_HERE".into())), Some(Source::File("secrets/upstream".into())), None]
    );
    // Key secrets are still resolved and hashed.
    assert_eq!(s.keys[0].secret_sha256, hash_secret(RANKER_SECRET));
    let text = example_with("env: LLMGW_KEY_RANKER", "env: LLMGW_KEY_NONE");
    let err = parse_with(&text, "llmgw.yaml", &env, &keep).unwrap_err();
    assert_eq!(err.path, "keys[0].secret.env");
    // The form is still checked.
    let text = example_with("env: OPENAI_API_KEY", "env: 'A=B'");
    let err = parse_with(&text, "llmgw.yaml", &env, &keep).unwrap_err();
    assert_eq!(err.path, "providers[0].credentials[0].env");
    let text = example_with("env: OPENAI_API_KEY", "file: ''");
    let err = parse_with(&text, "llmgw.yaml", &env, &keep).unwrap_err();
    assert_eq!(err.path, "providers[0].credentials[0].file");
}

#[test]
fn times_parse_and_format() {
    assert_eq!(parse_time("2027-01-01T00:00:00Z"), Some(1_798_761_600));
    assert_eq!(format_time(1_798_761_600).as_deref(), Some("2027-01-01T00:00:00Z"));
    assert_eq!(parse_time("yesterday"), None);
}
