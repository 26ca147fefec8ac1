//! Following a control plane: one task owns the WatchConfig stream, applies each update off the
//! request path, publishes it with one atomic swap, and reports the revision it applied. It
//! reconnects with jittered backoff to any of the given control planes, and the edge keeps
//! serving its last config meanwhile (static stability).

use std::sync::Arc;
use std::time::Duration;

use llmgw_shared::proto::sync_client::SyncClient;
use llmgw_shared::proto::{AckConfigRequest, WatchConfigRequest, config_update};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::{EdgeConfig, ResolveCtx};
use crate::state::Edge;
use crate::upstream::ClientCache;

/// A config snapshot of a million keys is large; the default 4 MiB message limit is not.
const MAX_MESSAGE: usize = 1 << 30;

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub endpoints: Vec<String>,
    pub edge_id: String,
    /// Sent as `authorization: Bearer` when the control plane requires one (LLMGW_EDGE_TOKEN).
    pub token: Option<String>,
    /// For `https://` control planes: the public roots, plus `--control-plane-ca` if given.
    pub tls: ClientTlsConfig,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("bad control-plane URL {0:?}")]
    Url(String),
    // tonic's own text is only "transport error": the reason (refused, untrusted certificate,
    // wrong host name) is in its causes.
    #[error("connect: {}", crate::forward::chain(.0))]
    Connect(#[from] tonic::transport::Error),
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("the control plane sent a delta before any snapshot")]
    DeltaFirst,
    #[error("config rejected: {0}")]
    Build(#[from] crate::config::BuildError),
    #[error("config task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the control plane broke off the snapshot of revision {0} it was sending in parts")]
    Parts(u64),
}

/// A snapshot coming in parts: its revision, and the config built from the parts so far (`None`
/// when the snapshot is not newer than what the edge has, so its parts are only read).
struct Partial {
    revision: u64,
    config: Option<EdgeConfig>,
}

fn resolve_ctx(env: &dyn Fn(&str) -> Option<String>) -> ResolveCtx<'_> {
    ResolveCtx { base_dir: None, env, strict: false }
}

pub async fn run(opts: SyncOptions, edge: Arc<Edge>, clients: ClientCache, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut next = rand::rng().random_range(0..opts.endpoints.len().max(1));
    loop {
        let Some(url) = opts.endpoints.get(next % opts.endpoints.len().max(1)).cloned() else { return };
        next += 1;
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            r = session(&url, &opts, &edge, &clients) => r,
        };
        match outcome {
            // A session that got as far as applying something resets the backoff.
            Ok(true) => backoff = Duration::from_millis(100),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(control_plane = %url, error = %e, "config stream lost; serving the last config")
            }
        }
        let jitter = rand::rng().random_range(0.5..1.5);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A sync client that presents the edge token (`authorization: Bearer`) on every call.
pub(crate) fn authorized(
    channel: Channel,
    token: Option<&str>,
) -> SyncClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        impl tonic::service::Interceptor + Clone + use<>,
    >,
> {
    let token = token.and_then(|t| format!("Bearer {t}").parse::<tonic::metadata::MetadataValue<_>>().ok());
    SyncClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(t) = &token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    })
}

pub(crate) async fn connect(url: &str, tls: &ClientTlsConfig) -> Result<Channel, SessionError> {
    let mut ep = Endpoint::from_shared(url.to_owned()).map_err(|_| SessionError::Url(url.to_owned()))?;
    if url.starts_with("https://") {
        ep = ep.tls_config(tls.clone())?;
    }
    Ok(ep
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect()
        .await?)
}

/// One stream's life; `Ok(applied_any)` when the stream ended cleanly.
async fn session(
    url: &str,
    opts: &SyncOptions,
    edge: &Arc<Edge>,
    clients: &ClientCache,
) -> Result<bool, SessionError> {
    let channel = connect(url, &opts.tls).await?;
    let mut client = authorized(channel, opts.token.as_deref()).max_decoding_message_size(MAX_MESSAGE);
    let known = edge.config().map_or(0, |c| c.revision);
    let req = WatchConfigRequest {
        edge_id: opts.edge_id.clone(),
        known_revision: known,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        accepts_parts: true,
    };
    let mut stream = client.watch_config(req).await?.into_inner();
    tracing::info!(control_plane = %url, known_revision = known, "following the control plane");
    // Acks go out from their own task, newest revision only: a burst of deltas (a large apply
    // arrives as many transactions) is applied at full speed and acknowledged once.
    let (applied_tx, mut applied_rx) = tokio::sync::watch::channel(0u64);
    let (mut acker, edge_id) = (client.clone(), opts.edge_id.clone());
    let acks = tokio::spawn(async move {
        while applied_rx.changed().await.is_ok() {
            let applied_revision = *applied_rx.borrow_and_update();
            let req = AckConfigRequest { edge_id: edge_id.clone(), applied_revision };
            if let Err(e) = acker.ack_config(req).await {
                tracing::debug!(error = %e, "config ack failed");
            }
        }
    });
    let _abort_acks = AbortOnDrop(acks);
    let mut applied_any = false;
    let mut partial: Option<Partial> = None;
    while let Some(update) = stream.message().await? {
        let current = edge.config();
        let have = current.as_ref().map_or(0, |c| c.revision);
        let revision = match update.update {
            Some(config_update::Update::Snapshot(s)) => {
                let (rev, more) = (s.revision, s.more);
                // Revisions are the store's, global across replicas: anything not newer than
                // what this edge has is already reflected in it (a replica that lags behind).
                let base = match partial.take() {
                    Some(p) if p.revision == rev => p.config.map(Some),
                    Some(p) => return Err(SessionError::Parts(p.revision)),
                    None if rev > have || current.is_none() => Some(None),
                    None => None,
                };
                let built = match base {
                    None => None,
                    Some(base) => {
                        let clients = clients.clone();
                        let built = tokio::task::spawn_blocking(move || {
                            let env = |k: &str| std::env::var(k).ok();
                            let ctx = resolve_ctx(&env);
                            match base {
                                None => EdgeConfig::build(&s, &ctx, &clients),
                                Some(mut cfg) => cfg.add_keys(&s.keys, &ctx).map(|()| cfg),
                            }
                        })
                        .await??;
                        Some(built)
                    }
                };
                if more {
                    // Neither published nor acknowledged before the last part.
                    partial = Some(Partial { revision: rev, config: built });
                    continue;
                }
                match built {
                    Some(built) => {
                        let (keys, models) = (built.keys.len(), built.models.len());
                        // Logged after the swap: a reader of the log may act on it at once.
                        edge.publish(built);
                        tracing::info!(revision = rev, keys, models, "snapshot applied");
                        rev
                    }
                    None => have,
                }
            }
            Some(config_update::Update::Delta(_)) if partial.is_some() => {
                return Err(SessionError::Parts(partial.map_or(0, |p| p.revision)));
            }
            Some(config_update::Update::Delta(d)) if d.revision > have => {
                let current = current.ok_or(SessionError::DeltaFirst)?;
                let clients = clients.clone();
                let built = tokio::task::spawn_blocking(move || {
                    let env = |k: &str| std::env::var(k).ok();
                    current.apply_delta(&d, &resolve_ctx(&env), &clients)
                })
                .await??;
                let rev = built.revision;
                edge.publish(built);
                tracing::debug!(revision = rev, "delta applied");
                rev
            }
            _ => have,
        };
        applied_any = true;
        applied_tx.send_replace(revision);
    }
    match partial {
        Some(p) => Err(SessionError::Parts(p.revision)),
        None => Ok(applied_any),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Mutex;

    use futures_util::Stream;
    use llmgw_shared::keys::hash_secret;
    use llmgw_shared::proto::sync_server::{Sync, SyncServer};
    use llmgw_shared::proto::{self, AckConfigResponse, ConfigUpdate, UsageAck, UsageReport};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::state::ServerLimits;

    /// A control plane that answers each watch with the next script of updates, then ends it.
    struct Scripted(Mutex<Vec<Vec<ConfigUpdate>>>);

    type Updates = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;
    type Acks = Pin<Box<dyn Stream<Item = Result<UsageAck, Status>> + Send>>;

    #[tonic::async_trait]
    impl Sync for Scripted {
        type WatchConfigStream = Updates;
        type ReportUsageStream = Acks;

        async fn watch_config(&self, req: Request<WatchConfigRequest>) -> Result<Response<Updates>, Status> {
            assert!(req.get_ref().accepts_parts, "the edge takes snapshots in parts");
            let script = self.0.lock().unwrap().remove(0);
            Ok(Response::new(Box::pin(futures_util::stream::iter(script.into_iter().map(Ok)))))
        }

        async fn ack_config(
            &self,
            _: Request<AckConfigRequest>,
        ) -> Result<Response<AckConfigResponse>, Status> {
            Ok(Response::new(AckConfigResponse {}))
        }

        async fn report_usage(&self, _: Request<Streaming<UsageReport>>) -> Result<Response<Acks>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    fn part(revision: u64, keys: &[&str], more: bool) -> ConfigUpdate {
        let keys = keys
            .iter()
            .map(|k| proto::Key {
                id: (*k).into(),
                name: (*k).into(),
                secret_sha256: hash_secret(&format!("sk-{k}")).to_vec(),
                ..Default::default()
            })
            .collect();
        let s = proto::Snapshot { revision, keys, more, ..Default::default() };
        ConfigUpdate { update: Some(config_update::Update::Snapshot(s)) }
    }

    fn has(edge: &Edge, key: &str) -> bool {
        edge.config().is_some_and(|c| c.keys.get(&hash_secret(&format!("sk-{key}"))).is_some())
    }

    #[tokio::test]
    async fn a_snapshot_in_parts_is_applied_whole_or_not_at_all() {
        let scripts = vec![
            vec![part(5, &["a"], false)],
            // Broken off after its first part: the edge stays on revision 5.
            vec![part(7, &["b"], true)],
            vec![part(7, &["b"], true), part(7, &["c"], true), part(7, &["d"], false)],
        ];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tonic::transport::Server::builder()
            .add_service(SyncServer::new(Scripted(Mutex::new(scripts))))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        let server = tokio::spawn(server);
        let opts = SyncOptions {
            endpoints: vec![url.clone()],
            edge_id: "e1".into(),
            token: None,
            tls: ClientTlsConfig::new(),
        };
        let limits = ServerLimits { max_body_bytes: 1 << 20, body_read_timeout: Duration::from_secs(5) };
        let edge = Arc::new(Edge::new(limits));
        let clients = ClientCache::default();

        assert!(session(&url, &opts, &edge, &clients).await.unwrap());
        assert_eq!(edge.config().map(|c| c.revision), Some(5));
        assert!(has(&edge, "a"));

        let broken = session(&url, &opts, &edge, &clients).await;
        assert!(matches!(broken, Err(SessionError::Parts(7))), "{:?}", broken.err());
        assert_eq!(edge.config().map(|c| c.revision), Some(5));
        assert!(has(&edge, "a") && !has(&edge, "b"));

        assert!(session(&url, &opts, &edge, &clients).await.unwrap());
        assert_eq!(edge.config().map(|c| c.revision), Some(7));
        assert!(!has(&edge, "a"), "a snapshot replaces the config");
        for k in ["b", "c", "d"] {
            assert!(has(&edge, k), "key {k} of a later part");
        }
        server.abort();
    }
}
