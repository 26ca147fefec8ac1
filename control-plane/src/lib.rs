//! The control plane: stores, admin API, config compiler and broadcaster, edge registry, audit.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod broadcast;
pub mod compile;
pub mod edges;
pub mod layout;
pub mod metrics;
pub mod seal;
pub mod store;
pub mod sync;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use llmgw_shared::proto::admin_server::AdminServer;
use llmgw_shared::proto::sync_server::SyncServer;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

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
    #[arg(long, env = "LLMGW_ID")]
    pub id: Option<String>,
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
    let master_key = secrets.master_key.as_deref().map(MasterKey::from_hex).transpose()?.map(Arc::new);
    if master_key.is_none() {
        tracing::warn!("LLMGW_MASTER_KEY is not set: providers with value: credentials cannot be applied");
    }
    let handle = llmgw_shared::ops::install_metrics()?;
    metrics::describe();
    let store: Arc<dyn Store> = Arc::new(store::metered::Metered(open_store(&args).await?));
    let cp_id = args.id.clone().unwrap_or_else(host_name);

    let broadcaster = Broadcaster::new();
    let registry = Registry::new(store.clone(), cp_id.clone());
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(broadcaster.clone().run(store.clone(), stop.clone()));
    tasks.spawn(registry.clone().run(stop.clone()));

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
    };
    let sync = sync::SyncService { broadcaster: broadcaster.clone(), registry, master_key };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(llmgw_shared::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ControlPlaneError::Reflection(e.to_string()))?;
    let server = tonic::transport::Server::builder()
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
    tracing::info!(grpc = %grpc, metrics = %metrics_addr, id = %cp_id, store = ?args.store, "control plane listening");
    let done = tokio::spawn(async move {
        let r = server.serve_with_incoming_shutdown(incoming, stop2.cancelled()).await;
        tasks.close();
        tasks.wait().await;
        r.map_err(ControlPlaneError::from)
    });
    Ok(Running { grpc, metrics: metrics_addr, broadcaster, admin, done })
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
