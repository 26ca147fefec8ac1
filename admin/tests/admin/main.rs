//! `llmgw admin` end to end against an in-process Admin server: the request each command sends
//! (fields and the `authorization` metadata) and what it prints.

// Test helpers outside `#[test]` functions: failing loudly is their job.
#![allow(clippy::unwrap_used, clippy::panic)]

mod mock;

use clap::Parser;
use llmgw_admin::{AdminArgs, AdminError, run_to};
use llmgw_shared::configfile::{self, SEALED_PLACEHOLDER};
use llmgw_shared::keys::hash_secret;
use llmgw_shared::proto::credential::Source;
use llmgw_shared::proto::*;
use mock::{Answers, Call, TOKEN};
use serde_json::json;
use tonic::Status;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    admin: AdminArgs,
}

/// Runs `llmgw admin --endpoint E --token T ARGS…`; the result and what it printed.
async fn admin_with(endpoint: &str, token: &str, args: &[&str]) -> (Result<(), AdminError>, String) {
    let argv = ["admin", "--endpoint", endpoint, "--token", token].into_iter().chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let result = run_to(cli.admin, &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

async fn admin(server: &mock::Running, args: &[&str]) -> String {
    let (result, out) = admin_with(&server.endpoint, TOKEN, args).await;
    result.unwrap_or_else(|e| panic!("{args:?} failed: {e}\n{out}"));
    out
}

const FILE: &str = r#"version: 1
providers:
  - name: openai
    kind: openai
    base_url: https://api.openai.com/v1
    credentials:
      - env: LLMGW_ADMIN_TEST_SURELY_UNSET
      - file: /run/secrets/not-on-this-machine
      - sealed: <redacted>
models:
  - name: chat
    targets: [{ provider: openai, model: gpt-4o-mini, pricing: { input_per_mtok: 0.15, output_per_mtok: 0.6 } }]
teams:
  - name: search
    budget: { limit_usd: 100, period: monthly }
projects:
  - { name: ranker, team: search }
keys:
  - name: ranker-prod
    project: ranker
    secret: { value: sk-llmgw-test-0123456789 }
    models: [chat]
  - { name: ranker-dev, team: search }
"#;

fn write_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("llmgw.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn change(action: &str, kind: ResourceKind, name: &str) -> Change {
    Change { action: action.into(), kind: kind.into(), name: name.into() }
}

#[tokio::test]
async fn apply_sends_the_file_and_prints_the_changes() {
    let apply = ApplyResponse {
        changes: vec![
            change("create", ResourceKind::Model, "chat"),
            change("update", ResourceKind::Key, "ranker-prod"),
        ],
        revision: 12,
    };
    let server = mock::start(Answers { apply, ..Answers::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, FILE);

    let out = admin(&server, &["apply", "-f", &path, "--dry-run", "--prune"]).await;
    assert_eq!(out, "create model chat\nupdate key ranker-prod\ndry run: 2 changes not applied\n");

    let recorded = server.only_call();
    assert_eq!(recorded.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    let Call::Apply(request) = recorded.call else { panic!("not an apply: {recorded:?}") };
    assert!(request.dry_run && request.prune);
    let desired = request.desired.unwrap();
    // Credential references are sent as written, for the edges to resolve.
    let sources: Vec<_> = desired.providers[0].credentials.iter().map(|c| c.source.clone()).collect();
    assert_eq!(
        sources,
        [
            Some(Source::Env("LLMGW_ADMIN_TEST_SURELY_UNSET".into())),
            Some(Source::File("/run/secrets/not-on-this-machine".into())),
            None,
        ]
    );
    // Keys go by name, with the hash of a secret the file gives, never the secret.
    let names: Vec<_> = desired.keys.iter().map(|k| (k.id.as_str(), k.name.as_str())).collect();
    assert_eq!(names, [("", "ranker-prod"), ("", "ranker-dev")]);
    assert_eq!(desired.keys[0].secret_sha256, hash_secret("sk-llmgw-test-0123456789"));
    assert!(desired.keys[1].secret_sha256.is_empty());
    assert!(!format!("{desired:?}").contains("sk-llmgw-test-0123456789"));

    let out = admin(&server, &["apply", "-f", &path, "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changes"][1], json!({"action": "update", "kind": "key", "name": "ranker-prod"}));
    assert_eq!((v["dry_run"].clone(), v["revision"].clone()), (json!(false), json!(12)));
    let Call::Apply(request) = server.calls()[1].call.clone() else { panic!("not an apply") };
    assert!(!request.dry_run && !request.prune);
}

#[tokio::test]
async fn apply_with_no_changes_says_so() {
    let server =
        mock::start(Answers { apply: ApplyResponse { changes: vec![], revision: 3 }, ..Answers::default() })
            .await;
    let dir = tempfile::tempdir().unwrap();
    let out = admin(&server, &["apply", "-f", &write_file(&dir, FILE)]).await;
    assert_eq!(out, "no changes\n");
}

#[tokio::test]
async fn a_bad_file_fails_with_its_field_and_line_before_any_call() {
    let server = mock::start(Answers::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, &FILE.replace("    base_url: https", "    base_uri: https"));
    let (result, out) = admin_with(&server.endpoint, TOKEN, &["apply", "-f", &path]).await;
    let err = result.unwrap_err().to_string();
    assert!(err.starts_with(&format!("{path}:5:")), "{err}");
    assert!(err.contains("providers[0].base_uri") && err.contains("unknown field"), "{err}");
    assert!(!err.contains('\n'));
    assert!(out.is_empty() && server.calls().is_empty());

    let path = write_file(&dir, &FILE.replace("provider: openai, model", "provider: opanai, model"));
    let err = admin_with(&server.endpoint, TOKEN, &["apply", "-f", &path]).await.0.unwrap_err().to_string();
    assert!(err.contains(":12:") && err.contains("no provider named \"opanai\""), "{err}");

    let missing = dir.path().join("missing.yaml");
    let err =
        admin_with(&server.endpoint, TOKEN, &["apply", "-f", missing.to_str().unwrap()]).await.0.unwrap_err();
    assert!(err.to_string().contains("cannot read the config file"), "{err}");
    assert!(server.calls().is_empty());
}

/// What the control plane would hold after applying `FILE`: ids assigned, secrets hashed,
/// credentials sealed.
fn stored_state() -> Snapshot {
    let keep = configfile::ParseOptions { credentials: configfile::CredentialRefs::Keep };
    let mut s = configfile::parse_with(FILE, "f", &|_| None, &keep).unwrap();
    s.revision = 12;
    let sealed = SealedValue { nonce: vec![0; 12], ciphertext: vec![1; 32], key_id: "0123abcd".into() };
    s.providers[0].credentials[2].source = Some(Source::Sealed(sealed));
    for (i, k) in s.keys.iter_mut().enumerate() {
        k.id = format!("k_{i}");
        k.secret_sha256 = vec![9; 32];
        k.secret_prefix = "sk-llmgw-abc".into();
        k.created_at_unix = 1_767_225_600;
    }
    s
}

#[tokio::test]
async fn get_all_yaml_applies_back_unchanged() {
    let state = stored_state();
    let server =
        mock::start(Answers { get: GetResponse { state: Some(state.clone()) }, ..Answers::default() }).await;
    let yaml = admin(&server, &["get", "all", "-o", "yaml"]).await;
    assert_eq!(yaml, configfile::to_yaml(&state).unwrap());
    assert!(yaml.contains(&format!("sealed: {SEALED_PLACEHOLDER}")));
    let Call::Get(request) = server.only_call().call else { panic!("not a get") };
    assert_eq!(request.kind(), ResourceKind::Unspecified);

    // Applying what `get` printed sends the same state back (sealed stays "keep the stored one").
    let dir = tempfile::tempdir().unwrap();
    admin(&server, &["apply", "-f", &write_file(&dir, &yaml)]).await;
    let Call::Apply(request) = server.calls()[1].call.clone() else { panic!("not an apply") };
    let desired = request.desired.unwrap();
    let mut expected = state.clone();
    expected.revision = 0;
    expected.providers[0].credentials[2].source = None;
    for k in &mut expected.keys {
        (k.id, k.secret_sha256, k.secret_prefix, k.created_at_unix) =
            (String::new(), vec![], String::new(), 0);
    }
    assert_eq!(desired, expected);
}

#[tokio::test]
async fn get_one_kind_as_json_and_table() {
    let server =
        mock::start(Answers { get: GetResponse { state: Some(stored_state()) }, ..Answers::default() }).await;
    let out = admin(&server, &["get", "keys", "-o", "json"]).await;
    let Call::Get(request) = server.only_call().call else { panic!("not a get") };
    assert_eq!(request.kind(), ResourceKind::Key);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["revision"], 12);
    assert!(v.get("providers").is_none(), "{v}");
    assert_eq!(
        v["keys"][0],
        json!({
            "name": "ranker-prod", "project": "ranker", "models": ["chat"], "id": "k_0",
            "secret_prefix": "sk-llmgw-abc", "created_at": "2026-01-01T00:00:00Z"
        })
    );

    let out = admin(&server, &["get", "providers"]).await;
    assert_eq!(
        out,
        "NAME    KIND    BASE_URL                   CREDENTIALS\n\
         openai  openai  https://api.openai.com/v1  env:LLMGW_ADMIN_TEST_SURELY_UNSET, \
         file:/run/secrets/not-on-this-machine, sealed\n"
    );
}

#[tokio::test]
async fn key_create_sends_the_flags_and_prints_the_secret_once() {
    let create_key = CreateKeyResponse {
        id: "k_7".into(),
        name: "ranker-ci".into(),
        secret: "sk-llmgw-s3cr3t".into(),
        revision: 13,
    };
    let server = mock::start(Answers { create_key, ..Answers::default() }).await;
    let args = [
        "key",
        "create",
        "--name",
        "ranker-ci",
        "--project",
        "ranker",
        "--models",
        "chat,embed",
        "--rpm",
        "60",
        "--tpm",
        "10000",
        "--budget-usd",
        "5",
        "--period",
        "daily",
        "--expires-in",
        "30d",
        "-o",
        "json",
    ];
    let out = admin(&server, &args).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!({"id": "k_7", "name": "ranker-ci", "secret": "sk-llmgw-s3cr3t"}));
    let Call::CreateKey(r) = server.only_call().call else { panic!("not a create") };
    assert_eq!(
        r,
        CreateKeyRequest {
            name: "ranker-ci".into(),
            team: String::new(),
            project: "ranker".into(),
            models: Some(ModelSet { names: vec!["chat".into(), "embed".into()] }),
            limits: Some(Limits { rpm: 60, tpm: 10_000 }),
            budget: Some(Budget { limit_usd: 5.0, period: Period::Daily.into() }),
            expires_in_seconds: 30 * 86_400,
        }
    );

    let out = admin(&server, &["key", "create", "--name", "t", "--team", "search"]).await;
    assert!(out.contains("secret: sk-llmgw-s3cr3t\n") && out.contains("shown once"), "{out}");
    let Call::CreateKey(r) = server.calls()[1].call.clone() else { panic!("not a create") };
    assert_eq!(
        (r.team.as_str(), r.project.as_str(), r.models, r.limits, r.budget),
        ("search", "", None, None, None)
    );
}

#[tokio::test]
async fn key_revoke_waits_and_fails_when_edges_are_missing() {
    let revoke_key = RevokeKeyResponse { revision: 20, edges_applied: 2, edges_total: 3 };
    let server = mock::start(Answers { revoke_key, ..Answers::default() }).await;
    let (result, out) =
        admin_with(&server.endpoint, TOKEN, &["key", "revoke", "ranker-prod", "--wait", "--timeout", "2s"])
            .await;
    assert_eq!(out, "revoked key ranker-prod at revision 20\napplied on 2 of 3 edges\n");
    let err = result.unwrap_err();
    assert!(matches!(err, AdminError::EdgesBehind { revision: 20, applied: 2, total: 3, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "revision 20 was applied on 2 of 3 edges within 2s; the others have not applied it yet"
    );
    let Call::RevokeKey(r) = server.only_call().call else { panic!("not a revoke") };
    assert_eq!(r, RevokeKeyRequest { name_or_id: "ranker-prod".into(), wait: true, wait_timeout_ms: 2000 });
}

#[tokio::test]
async fn key_revoke_without_wait_and_with_every_edge() {
    let revoke_key = RevokeKeyResponse { revision: 21, edges_applied: 3, edges_total: 3 };
    let server = mock::start(Answers { revoke_key, ..Answers::default() }).await;
    let out = admin(&server, &["key", "revoke", "k_7"]).await;
    assert_eq!(out, "revoked key k_7 at revision 21\n");
    let Call::RevokeKey(r) = server.only_call().call else { panic!("not a revoke") };
    assert_eq!((r.wait, r.wait_timeout_ms), (false, 0));
    let out = admin(&server, &["key", "revoke", "k_7", "--wait", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({"key": "k_7", "revision": 21, "waited": true, "edges_applied": 3, "edges_total": 3})
    );
    let Call::RevokeKey(r) = server.calls()[1].call.clone() else { panic!("not a revoke") };
    assert_eq!(r.wait_timeout_ms, 10_000);
}

#[tokio::test]
async fn usage_json_has_the_contract_shape() {
    let row = UsageRowView {
        team: "search".into(),
        project: "ranker".into(),
        key: "ranker-prod".into(),
        model: "chat".into(),
        provider: "openai".into(),
        requests: 10,
        input_tokens: 1000,
        output_tokens: 200,
        cost_usd: 0.0027,
        errors: 1,
    };
    let server =
        mock::start(Answers { usage: UsageResponse { rows: vec![row] }, ..Answers::default() }).await;
    let args =
        ["usage", "--team", "search", "--model", "chat", "--since", "2026-01-01T00:00:00Z", "-o", "json"];
    let v: serde_json::Value = serde_json::from_str(&admin(&server, &args).await).unwrap();
    assert_eq!(
        v,
        json!({"rows": [{
            "team": "search", "project": "ranker", "key": "ranker-prod", "model": "chat", "provider": "openai",
            "requests": 10, "input_tokens": 1000, "output_tokens": 200, "cost_usd": 0.0027, "errors": 1
        }]})
    );
    let Call::Usage(r) = server.only_call().call else { panic!("not usage") };
    assert_eq!(
        r,
        UsageRequest {
            team: "search".into(),
            project: String::new(),
            key: String::new(),
            model: "chat".into(),
            since_unix: 1_767_225_600
        }
    );
}

#[tokio::test]
async fn edges_and_audit_tables() {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let edges = ListEdgesResponse {
        edges: vec![EdgeInfo {
            edge_id: "edge-a".into(),
            applied_revision: 20,
            last_contact_unix_ms: now_ms - 3_000,
            control_plane_id: "cp-1".into(),
            version: "0.1.0".into(),
        }],
        revision: 21,
    };
    let audit = ListAuditResponse {
        records: vec![AuditRecord {
            time_unix_ms: 1_767_225_600_000,
            id: "a1".into(),
            actor: "bootstrap".into(),
            action: "key.revoke".into(),
            resource: "key/ranker-prod".into(),
            before: String::new(),
            after: String::new(),
        }],
    };
    let server = mock::start(Answers { edges, audit, ..Answers::default() }).await;
    let out = admin(&server, &["edges"]).await;
    let row = out.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells[0..2], ["edge-a", "20 (behind)"], "{out}");
    assert!(cells[2].ends_with("s ago") && cells[3..] == ["cp-1", "0.1.0"], "{out}");

    let out = admin(&server, &["audit", "--since", "2025-12-31T00:00:00Z"]).await;
    assert_eq!(
        out,
        "TIME                  ACTOR      ACTION      RESOURCE\n\
         2026-01-01T00:00:00Z  bootstrap  key.revoke  key/ranker-prod\n"
    );
    let calls = server.calls();
    assert_eq!(calls[0].call, Call::ListEdges(ListEdgesRequest {}));
    assert_eq!(calls[1].call, Call::ListAudit(ListAuditRequest { since_unix: 1_767_139_200 }));
}

#[tokio::test]
async fn a_refused_token_is_one_line() {
    let server = mock::start(Answers::default()).await;
    let (result, out) = admin_with(&server.endpoint, "wrong-token", &["get", "all"]).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "the admin token was refused (set --token or LLMGW_ADMIN_TOKEN)"
    );
    assert!(out.is_empty());
    assert_eq!(server.only_call().authorization.as_deref(), Some("Bearer wrong-token"));

    // No token at all: nothing is sent, and the server's refusal reads the same.
    let (result, _) = admin_with(&server.endpoint, "", &["edges"]).await;
    assert!(matches!(result, Err(AdminError::Unauthenticated)));
    assert_eq!(server.calls()[1].authorization, None);
}

#[tokio::test]
async fn server_errors_print_the_servers_message() {
    let fail = Status::not_found("no key named \"ghost\"");
    let server = mock::start(Answers { fail: Some(fail), ..Answers::default() }).await;
    let (result, out) = admin_with(&server.endpoint, TOKEN, &["key", "revoke", "ghost"]).await;
    assert_eq!(result.unwrap_err().to_string(), "no key named \"ghost\"");
    assert!(out.is_empty());
}

#[tokio::test]
async fn an_unreachable_control_plane_names_the_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let (result, _) = admin_with(&endpoint, TOKEN, &["edges"]).await;
    let err = result.unwrap_err();
    assert!(err.to_string().starts_with(&format!("cannot reach the control plane at {endpoint}: ")), "{err}");
    assert_eq!(err.exit_code(), 1);
}
