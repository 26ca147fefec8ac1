//! A large config: 100,000 keys.

use std::fmt::Write;
use std::time::{Duration, Instant};

use llmgw_tests::mock::MockProvider;

use crate::cluster::{ADMIN_TOKEN, cluster_config, cp_env, create_key, until_status};
use crate::harness::{Llmgw, admin};

#[tokio::test]
async fn a_hundred_thousand_keys_then_one_more_reaches_the_edge_within_a_second() {
    const KEYS: usize = 100_000;
    let mock = MockProvider::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cp =
        Llmgw::control_plane(&["--store", "embedded", "--data-dir", data.to_str().unwrap()], &cp_env()).await;
    let edge = Llmgw::edge_of(&[&cp], &[], &[]).await;
    let idle_kib = edge.rss_kib();

    let mut yaml = cluster_config(&mock.base_url());
    yaml.push_str("keys:\n");
    for i in 0..KEYS {
        writeln!(yaml, "  - {{ name: k{i}, team: search, secret: {{ value: sk-llmgw-bulk-{i:08} }} }}")
            .unwrap();
    }
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, yaml).unwrap();
    let start = Instant::now();
    let r = admin(&cp.grpc_url(), ADMIN_TOKEN, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(r.ok, "{}", r.stderr);
    let applied = start.elapsed();
    // The edge has them all once a bulk key answers.
    until_status(&edge, &format!("sk-llmgw-bulk-{:08}", KEYS - 1), 200, Duration::from_secs(120)).await;
    let propagated = start.elapsed();

    let created = Instant::now();
    let secret = create_key(&cp, "one-more").await;
    let create_call = created.elapsed();
    let after_create = Instant::now();
    let took = until_status(&edge, &secret, 200, Duration::from_secs(10)).await;
    let total_kib = edge.rss_kib();
    eprintln!(
        "100k keys: apply {applied:?}, on the edge after {propagated:?}; one more key: create call {create_call:?}, \
         then on the edge after {:?}; edge RSS {idle_kib} KiB idle -> {total_kib} KiB",
        after_create.elapsed().min(took)
    );
    assert!(took < Duration::from_secs(1), "one key took {took:?} to reach the edge");

    // An edge that joins now gets them as a snapshot in parts of 10,000 keys, applied whole.
    let joined = Instant::now();
    let late = Llmgw::edge_of(&[&cp], &[], &[]).await;
    for secret in ["sk-llmgw-bulk-00000000", &format!("sk-llmgw-bulk-{:08}", KEYS - 1), &secret] {
        until_status(&late, secret, 200, Duration::from_secs(30)).await;
    }
    eprintln!("a late edge served every part's keys {:?} after it started", joined.elapsed());
    // Proportionate: a key costs the edge well under 2 KiB (hash, id, name, maps).
    assert!(
        total_kib.saturating_sub(idle_kib) < (KEYS as u64 * 2),
        "edge grew by {} KiB",
        total_kib - idle_kib
    );
}
