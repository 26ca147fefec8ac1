//! Memory and apply time of a large key set, as an edge following a control plane holds it:
//! `cargo bench -p llmgw-edge --bench big_config` (keys: `LLMGW_BENCH_KEYS`, default 1,000,000).
//! Prints the snapshot's build time, the resident memory of the built config alone, and the
//! time to apply a one-key delta. Runs under mimalloc, as the `llmgw` binary does.

// A benchmark whose setup fails is broken: stop loudly rather than measure something else.
#![allow(clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use llmgw_edge::config::{EdgeConfig, ResolveCtx};
use llmgw_edge::upstream::ClientCache;
use llmgw_shared::keys::hash_secret;
use llmgw_shared::proto;

/// mimalloc, counting live bytes: RSS alone cannot tell what the config holds, because freed
/// memory (the snapshot message) stays mapped for a while.
#[global_allocator]
static GLOBAL: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

fn live_mib() -> f64 {
    GLOBAL.allocated() as f64 / 1_048_576.0
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Shaped like keys the control plane creates: a generated id, a name, a project (or a team),
/// limits and a budget on some.
fn key(i: usize) -> proto::Key {
    let scoped = i.is_multiple_of(4);
    proto::Key {
        id: format!("k_{i:016x}"),
        name: format!("service-{i}"),
        project: if i.is_multiple_of(10) { String::new() } else { format!("project-{}", i % 500) },
        team: if i.is_multiple_of(10) { format!("team-{}", i % 50) } else { String::new() },
        secret_sha256: hash_secret(&format!("sk-llmgw-{i:0>40}")).to_vec(),
        limits: scoped.then_some(proto::Limits { rpm: 600, tpm: 100_000 }),
        budget: scoped.then(|| proto::Budget { limit_usd: 50.0, period: proto::Period::Daily.into() }),
        created_at_unix: 1_790_000_000,
        secret_prefix: "sk-llmgw-abcd".into(),
        ..proto::Key::default()
    }
}

fn scopes() -> (Vec<proto::Team>, Vec<proto::Project>) {
    let teams = (0..50).map(|t| proto::Team { name: format!("team-{t}"), ..Default::default() }).collect();
    let projects = (0..500)
        .map(|p| proto::Project {
            name: format!("project-{p}"),
            team: format!("team-{}", p % 50),
            ..Default::default()
        })
        .collect();
    (teams, projects)
}

fn main() {
    let n: usize = std::env::var("LLMGW_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let env = |_: &str| None;
    let ctx = ResolveCtx { base_dir: None, env: &env, strict: false };
    let clients = ClientCache::default();
    let idle = rss_mib();
    let live0 = live_mib();

    let (teams, projects) = scopes();
    let snapshot = proto::Snapshot {
        revision: 1,
        keys: (0..n).map(key).collect(),
        teams,
        projects,
        ..Default::default()
    };
    let with_snapshot = rss_mib();
    let live_snapshot = live_mib();
    let t = Instant::now();
    let config = EdgeConfig::build(&snapshot, &ctx, &clients).expect("the snapshot builds");
    let build = t.elapsed();
    let peak = rss_mib();
    drop(snapshot);
    let held = rss_mib();
    let live_config = live_mib() - live0;
    assert_eq!(config.keys.len(), n);

    let mut deltas = Vec::new();
    let mut current = config;
    for r in 0..200u64 {
        let d = proto::Delta {
            revision: 2 + r,
            upserts: vec![proto::Resource {
                resource: Some(proto::resource::Resource::Key(key(n + r as usize))),
            }],
            ..Default::default()
        };
        let t = Instant::now();
        current = current.apply_delta(&d, &ctx, &clients).expect("the delta applies");
        deltas.push(t.elapsed());
    }
    deltas.sort();
    let pct = |p: f64| deltas[((deltas.len() - 1) as f64 * p) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("keys: {n}");
    println!("process idle before: {idle:.1} MiB");
    println!("snapshot message: {:.1} MiB live, RSS +{:.1} MiB", live_snapshot - live0, with_snapshot - idle);
    println!("build (EdgeConfig::build): {:.0} ms", ms(build));
    println!("peak during build (snapshot + config): {peak:.1} MiB");
    println!(
        "config alone (snapshot dropped): {live_config:.1} MiB live ({:.0} B a key); process RSS {held:.1} MiB",
        live_config * 1_048_576.0 / n as f64
    );
    println!(
        "one-key delta: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(pct(1.0))
    );
    println!("process at the end: {:.1} MiB", rss_mib());
}
