use llmgw_shared::proto::{
    Budget, Credential, Key, Limits, Model, ModelSet, Project, Provider, SealedValue, Target, Team,
};

use super::*;

pub(crate) fn sample() -> Snapshot {
    Snapshot {
        revision: 9,
        more: false,
        keys_total: 0,
        providers: vec![Provider {
            name: "openai".into(),
            kind: proto::ProviderKind::Openai.into(),
            base_url: "https://api.openai.com/v1".into(),
            credentials: vec![
                Credential { source: Some(Source::Env("OPENAI_API_KEY".into())) },
                Credential {
                    source: Some(Source::Sealed(SealedValue {
                        nonce: vec![1; 12],
                        ciphertext: vec![2; 40],
                        key_id: "abcd1234".into(),
                    })),
                },
                Credential { source: Some(Source::Value("sk-upstream-SECRET".into())) },
            ],
            timeout_ms: 600_000,
            connect_timeout_ms: 5_000,
            ..Default::default()
        }],
        models: vec![Model {
            name: "chat".into(),
            strategy: proto::Strategy::Weighted.into(),
            targets: vec![
                Target { provider: "openai".into(), model: "gpt-4o-mini".into(), weight: 3, pricing: None },
                Target { provider: "openai".into(), model: "gpt-4o".into(), weight: 1, pricing: None },
            ],
            fallback_on: vec!["connect".into(), "5xx".into()],
            max_attempts: 2,
            ..Default::default()
        }],
        teams: vec![Team {
            name: "search".into(),
            models: Some(ModelSet { names: vec!["chat".into()] }),
            limits: Some(Limits { rpm: 600, tpm: 0 }),
            budget: Some(Budget { limit_usd: 100.0, period: proto::Period::Monthly.into() }),
        }],
        projects: vec![Project { name: "ranker".into(), team: "search".into(), ..Default::default() }],
        keys: vec![Key {
            id: "k_01".into(),
            name: "ranker-prod".into(),
            project: "ranker".into(),
            secret_sha256: vec![7; 32],
            secret_prefix: "sk-llmgw-abc".into(),
            expires_at_unix: 1_798_761_600,
            created_at_unix: 1_767_225_600,
            revoked: true,
            ..Default::default()
        }],
    }
}

#[test]
fn yaml_never_prints_a_credential_value_and_reads_back() {
    let yaml = configfile::to_yaml(&only(GetKind::All, sample())).unwrap();
    assert!(!yaml.contains("SECRET"), "{yaml}");
    assert_eq!(yaml.matches("- sealed: <redacted>").count(), 2, "{yaml}");
    let keep = configfile::ParseOptions { credentials: configfile::CredentialRefs::Keep };
    let back = configfile::parse_with(&yaml, "get.yaml", &|_| None, &keep).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.models, sample().models);
    assert_eq!(back.teams, sample().teams);
    assert_eq!(back.keys[0].name, "ranker-prod");
    assert!(back.keys[0].revoked);
}

#[test]
fn only_the_asked_sections() {
    let s = only(GetKind::Teams, sample());
    assert!(s.providers.is_empty() && s.models.is_empty() && s.projects.is_empty() && s.keys.is_empty());
    assert_eq!(s.teams.len(), 1);
}

#[test]
fn json_is_the_file_format_plus_key_metadata() {
    let v = to_json(GetKind::All, &only(GetKind::All, sample())).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["revision"], 9);
    assert_eq!(
        v["providers"][0]["credentials"],
        json!([{"env": "OPENAI_API_KEY"}, {"sealed": "<redacted>"}, {"sealed": "<redacted>"}])
    );
    assert_eq!(
        v["models"][0]["targets"][0],
        json!({"provider": "openai", "model": "gpt-4o-mini", "weight": 3})
    );
    assert_eq!(v["teams"][0]["budget"], json!({"limit_usd": 100.0, "period": "monthly"}));
    let key = &v["keys"][0];
    assert_eq!(key["id"], "k_01");
    assert_eq!(key["secret_prefix"], "sk-llmgw-abc");
    assert_eq!(key["created_at"], "2026-01-01T00:00:00Z");
    assert_eq!(key["expires_at"], "2027-01-01T00:00:00Z");
    assert_eq!(key["revoked"], true);
    assert!(!v.to_string().contains("SECRET"));

    let v = to_json(GetKind::Providers, &only(GetKind::Providers, Snapshot::default())).unwrap();
    assert_eq!(v, json!({"version": 1, "revision": 0, "providers": []}));
}

#[test]
fn tables() {
    let t = table(GetKind::Providers, &only(GetKind::Providers, sample()));
    assert_eq!(
        t,
        "NAME    KIND    BASE_URL                   CREDENTIALS\n\
         openai  openai  https://api.openai.com/v1  env:OPENAI_API_KEY, sealed, sealed\n"
    );
    let all = table(GetKind::All, &only(GetKind::All, sample()));
    for needle in [
        "PROVIDERS:\n",
        "\nMODELS:\nNAME  STRATEGY  TARGETS\nchat  weighted  openai:gpt-4o-mini (weight 3), openai:gpt-4o\n",
        "search  chat    rpm 600  $100.00/monthly",
        "ranker  search  all     -       -",
        "ranker-prod  k_01  project:ranker  sk-llmgw-abc  all     -       -       2027-01-01T00:00:00Z  revoked",
    ] {
        assert!(all.contains(needle), "{needle:?} not in\n{all}");
    }
    assert!(!all.contains("SECRET"));
    assert_eq!(table(GetKind::Keys, &Snapshot::default()), "no keys\n");
    assert_eq!(table(GetKind::All, &Snapshot::default()), "no resources\n");
}
