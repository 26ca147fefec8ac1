//! Every `llmgw admin` command against a live control plane (embedded store), tokens, audit,
//! and secrets never shown.

use llmgw_tests::mock::MockProvider;

use crate::cluster::{ADMIN_TOKEN, MASTER_KEY, cluster_config, cp_env, status, until_status};
use crate::fixtures::*;
use crate::harness::{Llmgw, PATIENCE, admin};

async fn embedded_cp() -> Llmgw {
    let dir = tempfile::tempdir().unwrap().keep();
    let data = dir.join("data");
    Llmgw::control_plane(&["--store", "embedded", "--data-dir", data.to_str().unwrap()], &cp_env()).await
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_command_against_a_live_control_plane() {
    let mock = MockProvider::start().await.unwrap();
    let cp = embedded_cp().await;
    let url = cp.grpc_url();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.yaml", &cluster_config(&mock.base_url()));

    let dry = admin(&url, ADMIN_TOKEN, &["apply", "-f", &file, "--dry-run", "-o", "json"]).await;
    assert!(dry.ok && dry.stdout.contains("chat"), "{}{}", dry.stdout, dry.stderr);
    let got = admin(&url, ADMIN_TOKEN, &["get", "models", "-o", "yaml"]).await;
    assert!(!got.stdout.contains("gpt-4o-mini"), "dry run changed the state: {}", got.stdout);

    let applied = admin(&url, ADMIN_TOKEN, &["apply", "-f", &file]).await;
    assert!(applied.ok, "{}", applied.stderr);
    let again = admin(&url, ADMIN_TOKEN, &["apply", "-f", &file, "-o", "json"]).await;
    assert!(
        again.ok && !again.stdout.contains("update"),
        "re-applying the same file changed something: {}",
        again.stdout
    );

    let edge = Llmgw::edge_of(&[&cp], &["--edge-id", "e-admin"], &[]).await;
    let created = admin(
        &url,
        ADMIN_TOKEN,
        &[
            "key",
            "create",
            "--name",
            "svc",
            "--team",
            "search",
            "--models",
            "chat",
            "--rpm",
            "100",
            "--expires-in",
            "30d",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    until_status(&edge, &secret, 200, PATIENCE).await;
    let dup = admin(&url, ADMIN_TOKEN, &["key", "create", "--name", "svc", "--team", "search"]).await;
    assert!(!dup.ok && dup.stderr.contains("already exists"), "{}", dup.stderr);
    let bad = admin(&url, ADMIN_TOKEN, &["key", "create", "--name", "x", "--team", "nope"]).await;
    assert!(!bad.ok && bad.stderr.lines().count() == 1, "{}", bad.stderr);

    // get all -o yaml is a file apply accepts unchanged.
    let all = admin(&url, ADMIN_TOKEN, &["get", "all", "-o", "yaml"]).await;
    assert!(all.ok && all.stdout.contains("name: svc"), "{}", all.stdout);
    let round = write(dir.path(), "all.yaml", &all.stdout);
    let re = admin(&url, ADMIN_TOKEN, &["apply", "-f", &round, "-o", "json"]).await;
    assert!(re.ok, "{}", re.stderr);
    assert!(
        !re.stdout.contains("update") && !re.stdout.contains("create"),
        "round trip was not a no-op: {}",
        re.stdout
    );
    for kind in ["providers", "models", "teams", "projects", "keys"] {
        let r = admin(&url, ADMIN_TOKEN, &["get", kind, "-o", "json"]).await;
        assert!(r.ok, "get {kind}: {}", r.stderr);
        let t = admin(&url, ADMIN_TOKEN, &["get", kind]).await;
        assert!(t.ok, "get {kind} (table): {}", t.stderr);
    }

    let edges = admin(&url, ADMIN_TOKEN, &["edges", "-o", "json"]).await;
    assert!(edges.ok && edges.stdout.contains("e-admin"), "{}", edges.stdout);
    let usage = admin(&url, ADMIN_TOKEN, &["usage", "-o", "json"]).await.json();
    assert!(usage["rows"].is_array(), "{usage}");

    let revoked = admin(&url, ADMIN_TOKEN, &["key", "revoke", "svc", "--wait"]).await;
    assert!(revoked.ok, "{}", revoked.stderr);
    assert_eq!(status(&edge, &secret).await, 401);

    let audit = admin(&url, ADMIN_TOKEN, &["audit", "-o", "json"]).await;
    assert!(audit.ok, "{}", audit.stderr);
    for action in ["apply", "key.create", "key.revoke"] {
        assert!(audit.stdout.contains(action), "audit lacks {action}: {}", audit.stdout);
    }
    assert!(audit.stdout.contains("token:"), "audit lacks the actor: {}", audit.stdout);

    // The control plane's own metrics and health.
    let metrics = reqwest::get(format!("http://{}/metrics", cp.metrics)).await.unwrap().text().await.unwrap();
    for name in [
        "llmgw_cp_connected_edges 1",
        "llmgw_cp_admin_calls_total{method=\"create_key\",code=\"ok\"}",
        "llmgw_cp_store_call_duration_seconds_bucket",
        "llmgw_cp_watch_lag_seconds_bucket",
        "llmgw_cp_config_revision",
    ] {
        assert!(metrics.contains(name), "{name} missing from the control plane's /metrics:\n{metrics}");
    }
    assert_eq!(reqwest::get(format!("http://{}/readyz", cp.metrics)).await.unwrap().status(), 200);

    // No secret in any listing or log line: key secrets, upstream credentials, tokens.
    let mut seen = String::new();
    for args in [
        &["get", "all", "-o", "yaml"][..],
        &["get", "all", "-o", "json"],
        &["audit", "-o", "json"],
        &["edges"],
    ] {
        seen.push_str(&admin(&url, ADMIN_TOKEN, args).await.stdout);
    }
    seen.push_str(&cp.logs().join("\n"));
    seen.push_str(&edge.logs().join("\n"));
    for s in [secret.as_str(), UPSTREAM_CRED, UPSTREAM_CRED_2, ADMIN_TOKEN, MASTER_KEY] {
        assert!(!seen.contains(s), "a secret leaked into a listing or log: {s}");
    }
}

#[tokio::test]
async fn calls_without_the_right_token_are_refused() {
    let cp = embedded_cp().await;
    for token in ["", "wrong-token"] {
        let r = admin(&cp.grpc_url(), token, &["get", "all"]).await;
        assert!(!r.ok, "token {token:?} accepted");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains("token"), "{}", r.stderr);
    }
    let r = admin(&cp.grpc_url(), ADMIN_TOKEN, &["get", "all"]).await;
    assert!(r.ok, "{}", r.stderr);
    // Edges too need their token when the control plane has one.
    let mut env = cp_env();
    env.push(("LLMGW_EDGE_TOKEN", "edge-secret"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let guarded =
        Llmgw::control_plane(&["--store", "embedded", "--data-dir", data.to_str().unwrap()], &env).await;
    let mut edge = Llmgw::spawn(
        &[
            "edge",
            "--control-plane",
            &guarded.grpc_url(),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[],
        dir.path(),
    )
    .await;
    edge.wait_log(|l| {
        l["message"] == "config stream lost; serving the last config"
            && l["error"].as_str().is_some_and(|e| e.contains("token"))
    })
    .await;
    let trusted = Llmgw::edge_of(&[&guarded], &[], &[("LLMGW_EDGE_TOKEN", "edge-secret")]).await;
    assert_eq!(reqwest::get(format!("http://{}/readyz", trusted.metrics)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn sealed_credentials_need_the_master_key_and_never_reach_the_store_in_clear() {
    let mock = MockProvider::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut no_key = Llmgw::control_plane(
        &["--store", "embedded", "--data-dir", data.to_str().unwrap()],
        &[("LLMGW_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await;
    let file = write(dir.path(), "c.yaml", &cluster_config(&mock.base_url()));
    let r = admin(&no_key.grpc_url(), ADMIN_TOKEN, &["apply", "-f", &file]).await;
    assert!(!r.ok && r.stderr.contains("LLMGW_MASTER_KEY"), "{}", r.stderr);
    no_key.signal("TERM");
    no_key.wait_exit(PATIENCE).await;
    let cp =
        Llmgw::control_plane(&["--store", "embedded", "--data-dir", data.to_str().unwrap()], &cp_env()).await;
    let r = admin(&cp.grpc_url(), ADMIN_TOKEN, &["apply", "-f", &file]).await;
    assert!(r.ok, "{}", r.stderr);
    drop(cp);
    let raw = std::fs::read(data.join("state.redb")).unwrap();
    for s in [UPSTREAM_CRED, UPSTREAM_CRED_2] {
        assert!(!raw.windows(s.len()).any(|w| w == s.as_bytes()), "{s} stored in clear");
    }
}

#[tokio::test]
async fn grpc_reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let cp = embedded_cp().await;
    let channel = tonic::transport::Endpoint::from_shared(cp.grpc_url()).unwrap().connect().await.unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        client.server_reflection_info(futures_util::stream::iter([req])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["llmgw.v1.Admin", "llmgw.v1.Sync"] {
        assert!(names.iter().any(|n| n == want), "{want} not listed: {names:?}");
    }
}
