//! `llmgw dev`: the control plane on the embedded store and one edge, in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where the embedded store, the admin token and the master key live.
    #[arg(long, env = "LLMGW_DATA_DIR", default_value = "llmgw-data")]
    data_dir: PathBuf,
    /// Client-facing HTTP address of the edge.
    #[arg(long, env = "LLMGW_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// gRPC address of the control plane (admin API).
    #[arg(long, env = "LLMGW_GRPC_LISTEN", default_value = "127.0.0.1:7070")]
    grpc_listen: SocketAddr,
    /// Metrics and health address (both roles' metrics).
    #[arg(long, env = "LLMGW_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    metrics_listen: SocketAddr,
    /// Seed the store with this config file at start (applied like `llmgw admin apply -f`).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The value of `env`, else the contents of `file`, else a new value written to `file` (0600).
fn secret(env: &str, file: &Path, generate: impl FnOnce() -> String) -> anyhow::Result<(String, bool)> {
    if let Some(v) = std::env::var(env).ok().filter(|v| !v.is_empty()) {
        return Ok((v, false));
    }
    if let Ok(v) = std::fs::read_to_string(file) {
        return Ok((v.trim().to_owned(), false));
    }
    let v = generate();
    std::fs::write(file, &v).with_context(|| format!("writing {}", file.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    Ok((v, true))
}

pub async fn run(args: DevArgs, stop: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let token_file = args.data_dir.join("admin-token");
    let (admin_token, new_token) = secret("LLMGW_ADMIN_TOKEN", &token_file, || {
        format!("llmgw-admin-{}", llmgw_control_plane::seal::MasterKey::generate_hex())
    })?;
    let (master_key, _) = secret(
        "LLMGW_MASTER_KEY",
        &args.data_dir.join("master-key"),
        llmgw_control_plane::seal::MasterKey::generate_hex,
    )?;
    let cp_args = llmgw_control_plane::ControlPlaneArgs {
        store: llmgw_control_plane::StoreKind::Embedded,
        data_dir: args.data_dir.clone(),
        etcd_endpoints: vec![],
        grpc_listen: args.grpc_listen,
        // One metrics listener serves both roles (they share the process's recorder).
        metrics_listen: "127.0.0.1:0".parse()?,
        id: Some("dev".into()),
        usage_retention: llmgw_control_plane::usage::DEFAULT_RETENTION,
        usage_flush_interval: std::time::Duration::from_millis(50),
        usage_max_txn_rate: 25.0,
        rate_window: std::time::Duration::from_secs(60),
        tls_cert: None,
        tls_key: None,
        tls_client_ca: None,
        clock_offset_file: None,
    };
    let secrets = llmgw_control_plane::Secrets {
        admin_tokens: vec![admin_token.clone()],
        edge_tokens: vec![],
        master_key: Some(master_key),
    };
    // The control plane stops after the edge: the edge's last usage report then reaches the
    // ledger, instead of retrying a stopped control plane until its flush gives up.
    let cp_stop = CancellationToken::new();
    let _stop_cp = cp_stop.clone().drop_guard();
    let cp = llmgw_control_plane::start(cp_args, secrets, cp_stop.clone()).await?;
    if let Some(path) = &args.config {
        let desired = llmgw_shared::configfile::load(path)?;
        let applied =
            cp.apply(desired, "dev --config").await.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        tracing::info!(file = %path.display(), changes = applied.changes.len(), "seeded from the config file");
    }
    let grpc = cp.grpc;
    let edge_args = llmgw_edge::EdgeArgs {
        config: None,
        control_plane: vec![format!("http://{grpc}")],
        control_plane_ca: None,
        control_plane_cert: None,
        control_plane_key: None,
        edge_id: Some("dev-edge".into()),
        check: false,
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        max_body_bytes: 10 << 20,
        header_read_timeout_ms: 10_000,
        body_read_timeout_ms: 30_000,
        shutdown_grace: 30,
        reload_poll_ms: 2_000,
        usage_interval_ms: 200,
        spool_dir: Some(args.data_dir.join("usage-spool")),
        usage_buffer_reports: 50_000,
        budget_fail_mode: llmgw_edge::FailMode::Closed,
        quota_wait_ms: 1_000,
    };
    let shown = if new_token { admin_token.as_str() } else { "(in the file above)" };
    eprintln!(
        "\nllmgw dev: control plane on {grpc}, edge on http://{}\n  admin token: {shown}\n  saved in:    {}\n\n  export LLMGW_ENDPOINT=http://{grpc} LLMGW_ADMIN_TOKEN=$(cat {})\n  llmgw admin apply -f deploy/examples/dev.yaml\n  llmgw admin key create --name me --team demo -o json\n",
        args.listen,
        token_file.display(),
        token_file.display(),
    );
    // The edge runs as `llmgw edge` does, thread-per-core beside the control plane's runtime, so
    // what an operator measures against `llmgw dev` is the edge's own throughput.
    let edge_stop = stop.clone();
    let workers = crate::edge_workers();
    tokio::task::spawn_blocking(move || llmgw_edge::run_threaded(edge_args, workers, move || edge_stop))
        .await
        .context("the edge's thread failed")??;
    cp_stop.cancel();
    if let Ok(Err(e)) = cp.done.await {
        return Err(e.into());
    }
    Ok(())
}
