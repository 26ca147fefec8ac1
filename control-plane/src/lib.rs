//! The control plane: stores, admin API, config compiler and broadcaster, edge registry, audit.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod broadcast;
pub mod compile;
pub mod edges;
pub mod layout;
pub mod metrics;
pub mod quota;
pub mod seal;
pub mod store;
pub mod sync;
pub mod usage;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use llmgw_shared::proto::admin_server::AdminServer;
use llmgw_shared::proto::sync_server::SyncServer;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;

use crate::auth::TokenCheck;
use crate::broadcast::Broadcaster;
use crate::edges::Registry;
use crate::seal::MasterKey;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Embedded,
    Etcd,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ControlPlaneArgs {
    /// Where state lives: an embedded database (one machine) or etcd (a cluster).
    #[arg(long, env = "LLMGW_STORE", value_enum, default_value = "embedded")]
    pub store: StoreKind,
    /// Directory of the embedded store.
    #[arg(long, env = "LLMGW_DATA_DIR", default_value = "llmgw-data")]
    pub data_dir: PathBuf,
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "LLMGW_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,
    /// gRPC address for the admin API and edge sync.
    #[arg(long, env = "LLMGW_GRPC_LISTEN", default_value = "0.0.0.0:7070")]
    pub grpc_listen: SocketAddr,
    /// Metrics and health address.
    #[arg(long, env = "LLMGW_METRICS_LISTEN", default_value = "0.0.0.0:9091")]
    pub metrics_listen: SocketAddr,
    /// This replica's id (in edge registrations and usage shards); default: the host name.
    /// Replicas need distinct ids.
    #[arg(long, env = "LLMGW_ID")]
    pub id: Option<String>,
    /// How long hourly usage buckets are kept, for `admin usage --since` and budget periods; at
    /// least 32d, so a month is always whole.
    #[arg(long, env = "LLMGW_USAGE_RETENTION", default_value = "35d", value_parser = retention_arg, value_name = "DURATION")]
    pub usage_retention: Duration,
    /// How long a usage report may wait to share a store transaction with others.
    #[arg(long, env = "LLMGW_USAGE_FLUSH_INTERVAL", default_value = "50ms", value_parser = duration_arg, value_name = "DURATION")]
    pub usage_flush_interval: Duration,
    /// Store transactions per second this replica's usage ledger may run (0 = no limit); under
    /// load, more reports share each transaction instead.
    #[arg(long, env = "LLMGW_USAGE_MAX_TXN_RATE", default_value_t = 25.0)]
    pub usage_max_txn_rate: f64,
    /// The window RPM and TPM limits count in (the limits scale to it): a minute unless a test
    /// wants to see many windows quickly.
    #[arg(long, env = "LLMGW_RATE_WINDOW", default_value = "60s", value_parser = duration_arg, value_name = "DURATION")]
    pub rate_window: Duration,
    /// Serve gRPC (admin API and edge sync) over TLS with this PEM certificate chain.
    #[arg(long, env = "LLMGW_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "LLMGW_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mTLS) from edges and admin clients.
    #[arg(long, env = "LLMGW_TLS_CLIENT_CA", value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Test hook: the wall clock budgets and usage hours follow is shifted by the number of
    /// seconds in this file.
    #[arg(long, env = "LLMGW_CLOCK_OFFSET_FILE", hide = true)]
    pub clock_offset_file: Option<std::path::PathBuf>,
}

/// A duration flag: a whole number and a unit (ms, s, m, h, d).
///
/// # Errors
/// Anything else, with an example.
pub fn duration_arg(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 35d, 12h or 50ms"))?;
    let ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?} is not a duration such as 35d, 12h or 50ms")),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| format!("{s:?} is too long"))
}

fn retention_arg(s: &str) -> Result<Duration, String> {
    let d = duration_arg(s)?;
    if d < usage::MIN_RETENTION {
        return Err(format!("{s:?} is shorter than 32d: a monthly budget needs every hour of its month"));
    }
    Ok(d)
}

/// Secrets the control plane runs with; from the environment, never from flags (which `ps`
/// would show).
#[derive(Clone, Default)]
pub struct Secrets {
    pub admin_tokens: Vec<String>,
    pub edge_tokens: Vec<String>,
    pub master_key: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("no admin token: set LLMGW_ADMIN_TOKEN")]
    NoAdminToken,
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Metrics(#[from] llmgw_shared::ops::MetricsError),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("invalid replica id {0:?}: it becomes part of store keys, so no '/' and not empty")]
    BadId(String),
    #[error("cannot read {path}: {source}")]
    TlsFile { path: String, source: std::io::Error },
    #[error("the TLS certificate or key is not usable")]
    Tls(#[source] tonic::transport::Error),
}

/// The gRPC server's TLS, when --tls-cert and --tls-key are given.
fn server_tls(args: &ControlPlaneArgs) -> Result<Option<ServerTlsConfig>, ControlPlaneError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else { return Ok(None) };
    let read = |p: &PathBuf| {
        std::fs::read(p)
            .map_err(|source| ControlPlaneError::TlsFile { path: p.display().to_string(), source })
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    // A client that connects and never finishes the handshake does not hold a task forever.
    let mut tls = ServerTlsConfig::new().identity(identity).timeout(Duration::from_secs(10));
    if let Some(ca) = &args.tls_client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// Opens the configured store.
///
/// # Errors
/// The store's, e.g. etcd unreachable.
pub async fn open_store(args: &ControlPlaneArgs) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match args.store {
        StoreKind::Embedded => {
            std::fs::create_dir_all(&args.data_dir).map_err(|e| StoreError::Other(e.to_string()))?;
            Arc::new(store::embedded::EmbeddedStore::open(&args.data_dir.join("state.redb"))?)
        }
        StoreKind::Etcd => Arc::new(
            store::etcd::EtcdStore::connect(&args.etcd_endpoints, &store::etcd::EtcdOptions::default())
                .await?,
        ),
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("cp-{}", compile::new_id()))
}

/// A started control plane: where it listens, and the task that ends when it stops.
pub struct Running {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub broadcaster: Arc<Broadcaster>,
    /// The usage ledger: what every scope spent, for grants and `admin usage`.
    pub ledger: Arc<usage::Ledger>,
    admin: admin::AdminService,
    pub done: tokio::task::JoinHandle<Result<(), ControlPlaneError>>,
}

/// Starts serving; returns once the listeners are bound.
///
/// # Errors
/// A missing admin token, a bad master key, a store that cannot be opened or a port in use.
pub async fn start(
    args: ControlPlaneArgs,
    secrets: Secrets,
    stop: CancellationToken,
) -> Result<Running, ControlPlaneError> {
    if secrets.admin_tokens.is_empty() {
        return Err(ControlPlaneError::NoAdminToken);
    }
    let store = open_store(&args).await?;
    start_with_store(args, secrets, store, stop).await
}

/// [`start`] on a store the caller opened: replicas sharing one store in a process (tests), or
/// a store shared with other code. `args.store`, `data_dir` and `etcd_endpoints` are ignored.
///
/// # Errors
/// As [`start`], but for opening the store.
pub async fn start_with_store(
    args: ControlPlaneArgs,
    secrets: Secrets,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) -> Result<Running, ControlPlaneError> {
    if secrets.admin_tokens.is_empty() {
        return Err(ControlPlaneError::NoAdminToken);
    }
    let master_key = secrets.master_key.as_deref().map(MasterKey::from_hex).transpose()?.map(Arc::new);
    if master_key.is_none() {
        tracing::warn!("LLMGW_MASTER_KEY is not set: providers with value: credentials cannot be applied");
    }
    let handle = llmgw_shared::ops::install_metrics()?;
    metrics::describe();
    let store: Arc<dyn Store> = Arc::new(store::metered::Metered(store));
    let cp_id = args.id.clone().unwrap_or_else(host_name);
    if cp_id.is_empty() || cp_id.contains('/') || cp_id.chars().any(char::is_control) {
        return Err(ControlPlaneError::BadId(cp_id));
    }
    let clock: Arc<dyn usage::Clock> = match &args.clock_offset_file {
        Some(path) => Arc::new(usage::OffsetFileClock(path.clone())),
        None => Arc::new(usage::SystemClock),
    };
    let ledger = usage::Ledger::new(
        store.clone(),
        usage::LedgerOptions {
            retention: args.usage_retention,
            flush_interval: args.usage_flush_interval,
            max_txn_rate: args.usage_max_txn_rate,
            clock: clock.clone(),
            ..usage::LedgerOptions::new(cp_id.clone())
        },
        stop.clone(),
    );

    let broadcaster = Broadcaster::new();
    let registry = Registry::new(store.clone(), cp_id.clone());
    let quotas = quota::Quotas::new(
        store.clone(),
        broadcaster.clone(),
        ledger.clone(),
        quota::QuotaOptions { rate_window: args.rate_window, stale_share: quota::STALE_SHARE, clock },
    );
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(broadcaster.clone().run(store.clone(), stop.clone()));
    tasks.spawn(registry.clone().run(stop.clone()));
    tasks.spawn(ledger.clone().run());

    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|source| ControlPlaneError::Bind { addr, source })
    };
    let grpc_listener = bind(args.grpc_listen).await?;
    let metrics_listener = bind(args.metrics_listen).await?;
    let grpc = grpc_listener
        .local_addr()
        .map_err(|source| ControlPlaneError::Bind { addr: args.grpc_listen, source })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|source| ControlPlaneError::Bind { addr: args.metrics_listen, source })?;
    let bc = broadcaster.clone();
    tasks.spawn(llmgw_shared::ops::serve(
        metrics_listener,
        handle,
        Arc::new(move || bc.ready()),
        stop.clone(),
    ));

    let admin_check = TokenCheck::new(&secrets.admin_tokens, "admin");
    let edge_check = TokenCheck::new(&secrets.edge_tokens, "edge");
    let admin = admin::AdminService {
        store: store.clone(),
        broadcaster: broadcaster.clone(),
        registry: registry.clone(),
        master_key: master_key.clone(),
        ledger: ledger.clone(),
    };
    let sync = sync::SyncService {
        broadcaster: broadcaster.clone(),
        registry,
        master_key,
        ledger: ledger.clone(),
        quotas,
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(llmgw_shared::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ControlPlaneError::Reflection(e.to_string()))?;
    let mut builder = tonic::transport::Server::builder();
    let tls = server_tls(&args)?;
    if let Some(tls) = tls.clone() {
        builder = builder.tls_config(tls).map_err(ControlPlaneError::Tls)?;
    }
    let server = builder
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(InterceptedService::new(
            AdminServer::new(admin.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            move |r| admin_check.check(r),
        ))
        .add_service(InterceptedService::new(
            SyncServer::new(sync).max_encoding_message_size(MAX_MESSAGE),
            move |r| edge_check.check(r),
        ))
        .add_service(reflection);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
    let stop2 = stop.clone();
    tracing::info!(grpc = %grpc, tls = tls.is_some(), metrics = %metrics_addr, id = %cp_id, store = ?args.store, "control plane listening");
    let done = tokio::spawn(async move {
        let r = server.serve_with_incoming_shutdown(incoming, stop2.cancelled()).await;
        tasks.close();
        tasks.wait().await;
        r.map_err(ControlPlaneError::from)
    });
    Ok(Running { grpc, metrics: metrics_addr, broadcaster, ledger, admin, done })
}

/// Large applies (100,000 keys) and snapshots exceed tonic's 4 MiB default.
const MAX_MESSAGE: usize = 1 << 30;

impl Running {
    /// Applies a desired state as `actor` (e.g. `llmgw dev --config FILE` seeding its store).
    ///
    /// # Errors
    /// As the admin API's Apply.
    pub async fn apply(
        &self,
        desired: llmgw_shared::proto::Snapshot,
        actor: &str,
    ) -> Result<llmgw_shared::proto::ApplyResponse, tonic::Status> {
        use llmgw_shared::proto::admin_server::Admin;
        let mut req = tonic::Request::new(llmgw_shared::proto::ApplyRequest {
            desired: Some(desired),
            dry_run: false,
            prune: false,
        });
        req.extensions_mut().insert(auth::Actor(actor.to_owned()));
        self.admin.apply(req).await.map(tonic::Response::into_inner)
    }
}

/// Runs until `stop` is cancelled.
///
/// # Errors
/// As [`start`], or the server failing.
pub async fn run(
    args: ControlPlaneArgs,
    secrets: Secrets,
    stop: CancellationToken,
) -> Result<(), ControlPlaneError> {
    let running = start(args, secrets, stop).await?;
    running.done.await.unwrap_or(Ok(()))
}
