//! `llmgw dev`: the whole system in one process, durable across kill -9.

use llmgw_tests::mock::MockProvider;

use crate::cluster::{cluster_config, status, until_status};
use crate::harness::{Llmgw, PATIENCE, admin};

async fn start_dev(data: &std::path::Path, extra: &[&str]) -> (Llmgw, String) {
    let mut args = vec![
        "dev",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut dev = Llmgw::spawn(&args, &[], data.parent().unwrap()).await;
    let cp = dev.wait_log(|l| l["message"] == "control plane listening").await;
    let grpc = format!("http://{}", cp["grpc"].as_str().unwrap());
    dev.wait_ready().await;
    (dev, grpc)
}

#[tokio::test]
async fn dev_seeds_serves_and_keeps_state_across_kill_9() {
    let mock = MockProvider::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, cluster_config(&mock.base_url())).unwrap();

    let (mut dev, grpc) = start_dev(&data, &["--config", seed.to_str().unwrap()]).await;
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let printed = dev.logs().join("\n");
    assert!(printed.contains(token.trim()), "the first start prints the admin token");
    assert!(printed.contains("llmgw admin"), "the first start prints an example");

    let created =
        admin(&grpc, token.trim(), &["key", "create", "--name", "me", "--team", "search", "-o", "json"])
            .await
            .json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    until_status(&dev, &secret, 200, PATIENCE).await;

    dev.signal("KILL");
    dev.wait_exit(PATIENCE).await;
    let (dev, _) = start_dev(&data, &[]).await;
    assert!(!dev.logs().join("\n").contains(token.trim()), "the token is printed only once");
    assert_eq!(status(&dev, &secret).await, 200, "the key created before kill -9 is gone");
}
