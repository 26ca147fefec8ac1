//! A real cluster: etcd, control-plane replicas and edges as separate processes, administered
//! with the `llmgw admin` CLI.

use std::time::{Duration, Instant};

use llmgw_tests::etcd::Etcd;
use llmgw_tests::mock::MockProvider;

use crate::fixtures::*;
use crate::harness::{Llmgw, PATIENCE, admin};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

pub fn cp_env() -> Vec<(&'static str, &'static str)> {
    vec![("LLMGW_ADMIN_TOKEN", ADMIN_TOKEN), ("LLMGW_MASTER_KEY", MASTER_KEY)]
}

/// The shared test config without keys: keys come from `admin key create`.
pub fn cluster_config(base_url: &str) -> String {
    let full = config(base_url, "");
    full[..full.find("keys:").unwrap()].to_owned()
}

pub async fn cp_on_etcd(etcd: &Etcd, id: &str) -> Llmgw {
    let endpoints = etcd.endpoint();
    Llmgw::control_plane(&["--store", "etcd", "--etcd-endpoints", &endpoints, "--id", id], &cp_env()).await
}

pub async fn apply(cp: &Llmgw, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, yaml).unwrap();
    let r = admin(&cp.grpc_url(), ADMIN_TOKEN, &["apply", "-f", f.to_str().unwrap()]).await;
    assert!(r.ok, "apply failed: {}{}", r.stdout, r.stderr);
}

/// Creates a key and returns its secret.
pub async fn create_key(cp: &Llmgw, name: &str) -> String {
    let v = admin(
        &cp.grpc_url(),
        ADMIN_TOKEN,
        &["key", "create", "--name", name, "--team", "search", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(v["name"], name);
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()));
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-llmgw-"), "{secret}");
    secret
}

pub async fn status(edge: &Llmgw, key: &str) -> u16 {
    client()
        .post(edge.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body("hi"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Waits until `key` gets `want` from `edge`; returns how long that took.
pub async fn until_status(edge: &Llmgw, key: &str, want: u16, patience: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = status(edge, key).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < patience,
            "edge {} answered {got}, not {want}, for {patience:?}",
            edge.http
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn three_edges_serve_and_a_revoked_key_is_refused_everywhere_within_a_second() {
    let etcd = Etcd::start().await;
    let mock = MockProvider::start().await.unwrap();
    let cp = cp_on_etcd(&etcd, "cp-1").await;
    apply(&cp, &cluster_config(&mock.base_url())).await;
    let mut edges = Vec::new();
    for i in 0..3 {
        edges.push(Llmgw::edge_of(&[&cp], &["--edge-id", &format!("edge-{i}")], &[]).await);
    }
    let secret = create_key(&cp, "app").await;
    for e in &edges {
        until_status(e, &secret, 200, PATIENCE).await;
    }
    // The provider got the sealed credential, opened, never the caller's key.
    let auth = mock.requests().last().unwrap().header("authorization").unwrap().to_owned();
    assert!(
        auth == format!("Bearer {UPSTREAM_CRED}") || auth == format!("Bearer {UPSTREAM_CRED_2}"),
        "{auth}"
    );

    let r = admin(&cp.grpc_url(), ADMIN_TOKEN, &["key", "revoke", "app"]).await;
    assert!(r.ok, "{}", r.stderr);
    let revoked_at = Instant::now();
    let mut worst = Duration::ZERO;
    for e in &edges {
        until_status(e, &secret, 401, Duration::from_secs(5)).await;
        worst = worst.max(revoked_at.elapsed());
    }
    eprintln!("revocation refused on all 3 edges {worst:?} after the revoke returned");
    assert!(worst < Duration::from_secs(1), "revocation took {worst:?}");

    let listed = admin(&cp.grpc_url(), ADMIN_TOKEN, &["edges", "-o", "json"]).await;
    for i in 0..3 {
        assert!(listed.stdout.contains(&format!("edge-{i}")), "{}", listed.stdout);
    }
}

/// etcd, a control plane on it and an edge following it, serving the key `secret`.
struct One {
    etcd: Etcd,
    mock: MockProvider,
    cp: Llmgw,
    edge: Llmgw,
    secret: String,
}

async fn one_of_each() -> One {
    let etcd = Etcd::start().await;
    let mock = MockProvider::start().await.unwrap();
    let cp = cp_on_etcd(&etcd, "cp-1").await;
    apply(&cp, &cluster_config(&mock.base_url())).await;
    let secret = create_key(&cp, "app").await;
    let edge = Llmgw::edge_of(&[&cp], &[], &[]).await;
    until_status(&edge, &secret, 200, PATIENCE).await;
    One { etcd, mock, cp, edge, secret }
}

#[tokio::test]
async fn edges_survive_a_killed_control_plane_and_reconnect_to_its_restart() {
    let One { etcd, mock: _mock, mut cp, edge, secret } = one_of_each().await;

    let grpc = cp.http.to_string();
    cp.signal("KILL");
    cp.wait_exit(PATIENCE).await;
    // Static stability: the edge keeps serving its last config and stays ready.
    for _ in 0..20 {
        assert_eq!(status(&edge, &secret).await, 200);
    }
    assert_eq!(reqwest::get(format!("http://{}/readyz", edge.metrics)).await.unwrap().status(), 200);

    // The restarted control plane (same address) is found again and its changes arrive.
    let endpoints = etcd.endpoint();
    let cp = Llmgw::control_plane(
        &["--store", "etcd", "--etcd-endpoints", &endpoints, "--id", "cp-1", "--grpc-listen", &grpc],
        &cp_env(),
    )
    .await;
    let second = create_key(&cp, "second").await;
    until_status(&edge, &second, 200, PATIENCE).await;
}

#[tokio::test]
async fn a_control_plane_with_edges_connected_stops_promptly_on_sigterm() {
    let One { etcd: _etcd, mock: _mock, mut cp, edge, secret } = one_of_each().await;

    // A rolling restart: the edge's config and usage streams must not hold the replica open.
    cp.signal("TERM");
    let exit = cp.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(status(&edge, &secret).await, 200);
}

#[tokio::test]
async fn a_change_through_one_replica_reaches_edges_of_the_other() {
    let etcd = Etcd::start().await;
    let mock = MockProvider::start().await.unwrap();
    let cp1 = cp_on_etcd(&etcd, "cp-1").await;
    let cp2 = cp_on_etcd(&etcd, "cp-2").await;
    apply(&cp1, &cluster_config(&mock.base_url())).await;
    let edge = Llmgw::edge_of(&[&cp2], &[], &[]).await;
    let secret = create_key(&cp1, "via-one").await;
    let took = until_status(&edge, &secret, 200, PATIENCE).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    let r = admin(&cp1.grpc_url(), ADMIN_TOKEN, &["key", "revoke", "via-one", "--wait"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(status(&edge, &secret).await, 401, "--wait returned before the edge applied the revoke");
}

/// A control plane started with `cp_tls` flags, administered with `admin_tls` and followed by an
/// edge with `edge_tls`: the edge serves a key created over TLS. Returns the control plane's
/// https URL and a config file, for more checks.
async fn over_tls(
    cp_tls: &[&str],
    admin_tls: &[&str],
    edge_tls: &[&str],
) -> (Llmgw, String, tempfile::TempDir) {
    let mock = MockProvider::start().await.unwrap();
    let mut args = vec!["--store", "embedded"];
    args.extend_from_slice(cp_tls);
    let cp = Llmgw::control_plane(&args, &cp_env()).await;
    let url = format!("https://localhost:{}", cp.http.port());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, cluster_config(&mock.base_url())).unwrap();
    let apply = [&["apply", "-f", f.to_str().unwrap()][..], admin_tls].concat();
    let applied = admin(&url, ADMIN_TOKEN, &apply).await;
    assert!(applied.ok, "{}{}", applied.stdout, applied.stderr);
    let create =
        [&["key", "create", "--name", "k", "--team", "search", "-o", "json"][..], admin_tls].concat();
    let created = admin(&url, ADMIN_TOKEN, &create).await;
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let mut args =
        vec!["edge", "--control-plane", &url, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    args.extend_from_slice(edge_tls);
    let edge_dir = tempfile::tempdir().unwrap();
    let edge = Llmgw::spawn(&args, &[], edge_dir.path()).await;
    edge.wait_ready().await;
    assert_eq!(status(&edge, &secret).await, 200);
    drop((edge, mock));
    (cp, url, dir)
}

fn testdata(name: &str) -> String {
    format!("{}/tests/testdata/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `--tls-cert`/`--tls-key`: the admin CLI and edges reach the control plane over TLS, trusting
/// the operator's CA; plaintext and an untrusted certificate are refused.
#[tokio::test]
async fn a_control_plane_serves_tls_to_the_admin_cli_and_edges() {
    let (ca, cert, key) = (testdata("ca.crt"), testdata("server.crt"), testdata("server.key"));
    let (cp, url, dir) = over_tls(
        &["--tls-cert", &cert, "--tls-key", &key],
        &["--ca-cert", &ca],
        &["--control-plane-ca", &ca],
    )
    .await;
    let f = dir.path().join("c.yaml");
    let f = f.to_str().unwrap();
    let plain = admin(&cp.grpc_url(), ADMIN_TOKEN, &["apply", "-f", f]).await;
    assert!(!plain.ok, "plaintext was served: {}", plain.stdout);
    let untrusted = admin(&url, ADMIN_TOKEN, &["apply", "-f", f]).await;
    assert!(!untrusted.ok && untrusted.stderr.contains("certificate"), "{}", untrusted.stderr);
}

/// `--tls-client-ca`: only clients with a certificate from that CA get in (mTLS).
#[tokio::test]
async fn a_control_plane_with_a_client_ca_requires_client_certificates() {
    let (ca, cert, key) = (testdata("ca.crt"), testdata("server.crt"), testdata("server.key"));
    let (client_cert, client_key) = (testdata("client.crt"), testdata("client.key"));
    let (_cp, url, dir) = over_tls(
        &["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca],
        &["--ca-cert", &ca, "--client-cert", &client_cert, "--client-key", &client_key],
        &[
            "--control-plane-ca",
            &ca,
            "--control-plane-cert",
            &client_cert,
            "--control-plane-key",
            &client_key,
        ],
    )
    .await;
    let f = dir.path().join("c.yaml");
    let no_cert = admin(&url, ADMIN_TOKEN, &["apply", "-f", f.to_str().unwrap(), "--ca-cert", &ca]).await;
    assert!(!no_cert.ok, "served without a client certificate: {}", no_cert.stdout);
    // A server certificate is not a client certificate.
    let wrong = ["--ca-cert", &ca, "--client-cert", &cert, "--client-key", &key];
    let wrong =
        admin(&url, ADMIN_TOKEN, &[&["apply", "-f", f.to_str().unwrap()][..], &wrong[..]].concat()).await;
    assert!(!wrong.ok, "served with a server certificate as client: {}", wrong.stdout);
}

/// A certificate file that is not one, or a key that does not fit, stops the process at start
/// with the reason, instead of a server or edge that never works.
#[tokio::test]
async fn tls_files_that_cannot_be_used_fail_the_start_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let run = |args: Vec<String>| {
        let mut cmd = std::process::Command::new(crate::harness::bin());
        cmd.args(&args).current_dir(dir.path());
        for (k, v) in cp_env() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let edge = run([
        "edge",
        "--control-plane",
        "https://localhost:1",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(ToString::to_string)
    .chain(["--control-plane-ca".into(), not_pem.display().to_string()])
    .collect());
    let err = String::from_utf8_lossy(&edge.stderr);
    assert!(!edge.status.success() && err.contains("holds no PEM certificate"), "{err}");

    let cp = run([
        "control-plane",
        "--grpc-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
        "d",
    ]
    .iter()
    .map(ToString::to_string)
    .chain(["--tls-cert".into(), testdata("server.crt"), "--tls-key".into(), testdata("ca.crt")])
    .collect());
    let err = String::from_utf8_lossy(&cp.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(!cp.status.success() && last.contains("not usable"), "{err}");
    // The cause is spelled out, not only tonic's "transport error".
    assert!(
        last.trim_end().len() > "error: the TLS certificate or key is not usable: transport error".len(),
        "{last}"
    );
}
