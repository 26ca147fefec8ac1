//! The edge: a stateless HTTP proxy that authenticates virtual keys, routes to providers and
//! records usage, serving from an in-memory config swapped in atomically.

pub mod adapt;
pub mod auth;
pub mod balance;
pub mod body;
pub mod breaker;
pub mod coalesce;
pub mod config;
pub mod convert;
pub mod error;
pub mod forward;
pub mod key_table;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod quota;
pub mod record;
pub mod relay;
pub mod reload;
pub mod report;
pub mod server;
pub mod shard_map;
pub mod state;
pub mod sync;
pub mod upstream;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::{Edge, ServerLimits};

/// The hash map of the per-request path. Its keys are names the operator configured, not client
/// input, so a fast seeded hash replaces SipHash, which cost ~4,000 instructions a request in
/// quota, usage and route lookups (callgrind, issue 8).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use crate::upstream::ClientCache;

#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Serve the config in this YAML file (standalone, no control plane).
    #[arg(long, env = "LLMGW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Follow these control planes (comma-separated gRPC URLs) for config.
    #[arg(long, env = "LLMGW_CONTROL_PLANE", value_delimiter = ',', conflicts_with = "config")]
    pub control_plane: Vec<String>,
    /// A PEM file of CA certificates to trust for `https://` control planes, besides the public
    /// roots (a private PKI).
    #[arg(long, env = "LLMGW_CONTROL_PLANE_CA", value_name = "FILE", conflicts_with = "config")]
    pub control_plane_ca: Option<PathBuf>,
    /// A PEM client certificate for a control plane that requires one (mTLS).
    #[arg(long, env = "LLMGW_CONTROL_PLANE_CERT", value_name = "FILE", requires = "control_plane_key")]
    pub control_plane_cert: Option<PathBuf>,
    /// The PEM private key of --control-plane-cert.
    #[arg(long, env = "LLMGW_CONTROL_PLANE_KEY", value_name = "FILE", requires = "control_plane_cert")]
    pub control_plane_key: Option<PathBuf>,
    /// This edge's id in the control plane's listings; default: host name and a random suffix.
    #[arg(long, env = "LLMGW_EDGE_ID")]
    pub edge_id: Option<String>,
    /// Validate the config file, print the result and exit.
    #[arg(long, requires = "config")]
    pub check: bool,
    /// Client-facing HTTP address.
    #[arg(long, env = "LLMGW_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Metrics and health address.
    #[arg(long, env = "LLMGW_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Requests with a larger body are refused with 413.
    #[arg(long, env = "LLMGW_MAX_BODY_BYTES", default_value_t = 10 << 20)]
    pub max_body_bytes: usize,
    /// Milliseconds a client has to send its request head.
    #[arg(long, env = "LLMGW_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Milliseconds a client has to send its request body.
    #[arg(long, env = "LLMGW_BODY_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// Seconds in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "LLMGW_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
    /// How often the config file is checked for changes, in milliseconds.
    #[arg(long, env = "LLMGW_RELOAD_POLL_MS", default_value_t = 2_000)]
    pub reload_poll_ms: u64,
    /// How often usage is reported to the control plane, in milliseconds.
    #[arg(long, env = "LLMGW_USAGE_INTERVAL_MS", default_value_t = 200)]
    pub usage_interval_ms: u64,
    /// Usage reports are written here before they are sent, and kept when no control plane
    /// acks them by shutdown; the next start sends them first.
    #[arg(long, env = "LLMGW_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Unacked usage reports kept in memory while no control plane answers; beyond it the
    /// oldest are dropped (metric `llmgw_usage_reports_dropped_total`).
    #[arg(long, env = "LLMGW_USAGE_BUFFER_REPORTS", default_value_t = 50_000)]
    pub usage_buffer_reports: usize,
    /// With no control plane reachable: `closed` spends only the quota grants this edge holds;
    /// `open` serves past them (and reports the spend when the control plane is back).
    #[arg(long, env = "LLMGW_BUDGET_FAIL_MODE", value_enum, default_value_t = FailMode::Closed)]
    pub budget_fail_mode: FailMode,
    /// How long a request that does not fit this edge's quota waits for a grant, in ms.
    #[arg(long, env = "LLMGW_QUOTA_WAIT_MS", default_value_t = 1_000)]
    pub quota_wait_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    Closed,
    Open,
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("no config source: pass --config FILE or --control-plane URL")]
    NoSource,
    #[error("{0}")]
    Load(#[from] reload::LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("cannot read {path}: {source}")]
    TlsFile { path: String, source: std::io::Error },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
}

/// TLS for `https://` control planes: the public roots and the operator's CA if given, and a
/// client certificate for mTLS if given.
fn control_plane_tls(args: &EdgeArgs) -> Result<tonic::transport::ClientTlsConfig, EdgeError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| EdgeError::TlsFile { path: path.display().to_string(), source })
    };
    let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
    if let Some(ca) = &args.control_plane_ca {
        let pem = read(ca)?;
        // tonic skips what does not parse: a wrong file would leave only the public roots and an
        // edge that never connects, so it fails the start instead.
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
        if !certs.is_ok_and(|c| !c.is_empty()) {
            return Err(EdgeError::NoCertificate(ca.display().to_string()));
        }
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    if let (Some(cert), Some(key)) = (&args.control_plane_cert, &args.control_plane_key) {
        tls = tls.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

/// Validates the config file without serving it.
///
/// # Errors
/// The file's first problem.
pub fn check(args: &EdgeArgs) -> Result<String, EdgeError> {
    let path = args.config.as_ref().ok_or(EdgeError::NoSource)?;
    let cfg = reload::load(path, 1, &ClientCache::default())?;
    Ok(format!("{}: OK ({} models, {} keys)", path.display(), cfg.models.len(), cfg.keys.len()))
}

/// Runs the edge until `stop` is cancelled, then drains.
///
/// # Errors
/// A config that does not load at start, or an address that cannot be bound.
/// The edge's shared state and background tasks, started before any client listener.
struct Started {
    edge: Arc<Edge>,
    tasks: tokio_util::task::TaskTracker,
    /// Cancelled once the HTTP server finished its last request: the usage reporter's cue to
    /// send the last report.
    drained: CancellationToken,
    metrics_addr: SocketAddr,
    opts: server::ServerOptions,
}

async fn start(args: &EdgeArgs, stop: &CancellationToken) -> Result<Started, EdgeError> {
    // A second install would fail, and the default provider is what the upstream client uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let handle = metrics::install()?;
    // A config file has no control plane to grant quota: the edge is its own authority.
    let quota = if args.config.is_some() {
        quota::Quota::local()
    } else {
        quota::Quota::new(args.budget_fail_mode == FailMode::Open, Duration::from_millis(args.quota_wait_ms))
    };
    let edge = Arc::new(Edge::with_quota(
        ServerLimits {
            max_body_bytes: args.max_body_bytes,
            body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
        },
        quota,
    ));
    let clients = ClientCache::default();
    // Standalone: the file must load before anything is served. With a control plane: serve
    // (503 on /readyz) until the first snapshot arrives.
    let file = match &args.config {
        Some(path) => {
            let loaded = reload::stamp(path);
            let cfg = reload::load(path, 1, &clients)?;
            let (keys, models) = (cfg.keys.len(), cfg.models.len());
            edge.publish(cfg);
            tracing::info!(file = %path.display(), keys, models, "configuration loaded");
            Some((path.clone(), loaded))
        }
        None if args.control_plane.is_empty() => return Err(EdgeError::NoSource),
        None => None,
    };
    let addr = args.metrics_listen;
    let metrics_listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| EdgeError::Bind { addr, source })?;
    let metrics_addr = metrics_listener.local_addr().map_err(|source| EdgeError::Bind { addr, source })?;
    let tasks = tokio_util::task::TaskTracker::new();
    let drained = CancellationToken::new();
    let ready_edge = edge.clone();
    let ready = Arc::new(move || ready_edge.ready());
    tasks.spawn(llmgw_shared::ops::serve(metrics_listener, handle, ready, stop.clone()));
    tasks.spawn(clients.clone().reap_idle(Duration::from_secs(15), stop.clone()));
    match file {
        Some((path, loaded)) => {
            let poll = Duration::from_millis(args.reload_poll_ms);
            tasks.spawn(reload::watch(path, loaded, edge.clone(), clients, poll, stop.clone()));
        }
        None => {
            let opts = sync::SyncOptions {
                endpoints: args.control_plane.clone(),
                edge_id: args.edge_id.clone().unwrap_or_else(default_edge_id),
                token: std::env::var("LLMGW_EDGE_TOKEN").ok().filter(|t| !t.is_empty()),
                tls: control_plane_tls(args)?,
            };
            tracing::info!(edge_id = %opts.edge_id, "config from the control plane");
            let report = report::ReportOptions {
                endpoints: opts.endpoints.clone(),
                edge_id: opts.edge_id.clone(),
                token: opts.token.clone(),
                tls: opts.tls.clone(),
                interval: Duration::from_millis(args.usage_interval_ms.max(10)),
                spool_dir: args.spool_dir.clone(),
                max_pending: args.usage_buffer_reports,
                flush_timeout: Duration::from_secs(5),
            };
            tasks.spawn(report::run(report, edge.clone(), drained.clone()));
            tasks.spawn(sync::run(opts, edge.clone(), clients, stop.clone()));
        }
    }
    let opts = server::ServerOptions {
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };
    Ok(Started { edge, tasks, drained, metrics_addr, opts })
}

/// Runs the edge thread-per-core: `workers` threads, each a single-threaded runtime with its
/// own `SO_REUSEPORT` listener and its own upstream connection pools, so a request is accepted,
/// forwarded and answered on one thread without cross-thread wake-ups (on 2 cores this took the
/// added p50 at 100 req/s from ~0.3 ms to under 0.1 ms; see bench/README.md). Config, reload,
/// sync and metrics run on a separate control thread. `make_stop` is called on that thread.
///
/// # Errors
/// A config that does not load at start, or an address that cannot be bound.
pub fn run_threaded(
    args: EdgeArgs,
    workers: usize,
    make_stop: impl FnOnce() -> CancellationToken,
) -> Result<(), EdgeError> {
    let workers = workers.max(1);
    upstream::set_workers(workers);
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| EdgeError::Bind { addr: args.listen, source })?;
    control.block_on(async move {
        let stop = make_stop();
        let started = start(&args, &stop).await?;
        let addr = args.listen;
        let listeners =
            server::bind_reuseport(addr, workers).map_err(|source| EdgeError::Bind { addr, source })?;
        let http = listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .ok_or_else(|| EdgeError::Bind { addr, source: std::io::Error::other("no listener") })?;
        let mut threads = Vec::with_capacity(workers);
        let all = server::Workers::new(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            let (edge, stop, opts, all) = (started.edge.clone(), stop.clone(), started.opts, all.clone());
            let spawned = std::thread::Builder::new().name(format!("llmgw-edge-{i}")).spawn(move || {
                upstream::set_worker(i);
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    server::serve(listener, edge, opts, stop, all).await;
                    Ok::<(), std::io::Error>(())
                })
            });
            threads.push(spawned.map_err(|source| EdgeError::Bind { addr, source })?);
        }
        tracing::info!(http = %http, metrics = %started.metrics_addr, workers, "edge listening");
        let joined = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|t| t.join().map_err(|_| std::io::Error::other("worker panicked")).and_then(|r| r))
                .collect::<Result<Vec<()>, _>>()
        })
        .await;
        started.drained.cancel();
        started.tasks.close();
        started.tasks.wait().await;
        match joined {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(EdgeError::Bind { addr, source }),
            Err(e) => Err(EdgeError::Bind { addr, source: std::io::Error::other(e.to_string()) }),
        }
    })
}

fn default_edge_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_default();
    let suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    if host.is_empty() { format!("edge-{suffix}") } else { format!("{host}-{suffix}") }
}
