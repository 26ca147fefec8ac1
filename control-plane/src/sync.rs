//! The edge-facing gRPC service: config streams, applied-revision acks, and usage reports.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt};
use llmgw_shared::proto::sync_server::Sync;
use llmgw_shared::proto::{
    self, AckConfigRequest, AckConfigResponse, ConfigUpdate, Resource, UsageAck, UsageReport,
    WatchConfigRequest, config_update, credential::Source, resource,
};
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status, Streaming};

use crate::broadcast::{Broadcaster, Start, Update};
use crate::edges::Registry;
use crate::seal::MasterKey;
use crate::usage::Ledger;
use crate::view::View;

pub struct SyncService {
    pub broadcaster: Arc<Broadcaster>,
    pub registry: Arc<Registry>,
    pub master_key: Option<Arc<MasterKey>>,
    pub ledger: Arc<Ledger>,
    pub quotas: Arc<crate::quota::Quotas>,
}

/// Reports of one stream submitted and not yet acked: beyond this the stream stops reading, so a
/// fast sender waits for the ledger instead of queueing without bound.
const REPORTS_IN_FLIGHT: usize = 1024;

/// Edges get credentials they can use: sealed values are opened here, so edges never need the
/// master key (the sync channel must then be trusted: TLS or a private network).
fn for_edge(mut r: Resource, key: Option<&MasterKey>) -> Resource {
    if let Some(resource::Resource::Provider(p)) = &mut r.resource {
        for c in &mut p.credentials {
            if let Some(Source::Sealed(s)) = &c.source {
                c.source = match key.map(|k| k.open(s)) {
                    Some(Ok(v)) => Some(Source::Value(v)),
                    Some(Err(e)) => {
                        tracing::error!(provider = %p.name, error = %e, "cannot open a sealed credential");
                        None
                    }
                    None => {
                        tracing::error!(provider = %p.name, "a sealed credential needs LLMGW_MASTER_KEY");
                        None
                    }
                };
            }
        }
    }
    r
}

/// Keys per snapshot part for edges that take parts: ~2 MiB encoded, ~3 MiB decoded.
const KEYS_PER_PART: usize = 10_000;

/// Sends the view as a snapshot: in parts to an edge that accepts them, else as one message.
/// False when the edge went away.
async fn send_snapshot(
    tx: &mpsc::Sender<Result<ConfigUpdate, Status>>,
    view: &View,
    key: Option<&MasterKey>,
    parts: bool,
) -> bool {
    let wrap = |s| Ok(ConfigUpdate { update: Some(config_update::Update::Snapshot(s)) });
    if !parts {
        return tx.send(wrap(view.snapshot(|r| for_edge(r, key)))).await.is_ok();
    }
    for part in view.snapshot_parts(KEYS_PER_PART, |r| for_edge(r, key)) {
        if tx.send(wrap(part)).await.is_err() {
            return false;
        }
    }
    true
}

fn delta(d: &proto::Delta, key: Option<&MasterKey>) -> ConfigUpdate {
    let mut d = d.clone();
    d.upserts = d.upserts.into_iter().map(|r| for_edge(r, key)).collect();
    ConfigUpdate { update: Some(config_update::Update::Delta(d)) }
}

/// Feeds one edge's config stream until the edge goes away: where it is behind (a snapshot, or
/// the deltas it missed), then each change.
async fn stream_updates(
    tx: mpsc::Sender<Result<ConfigUpdate, Status>>,
    mut updates: broadcast::Receiver<Update>,
    bc: &Broadcaster,
    key: Option<&MasterKey>,
    req: &WatchConfigRequest,
) {
    let mut sent = match bc.start_for(req.known_revision as i64) {
        Start::Snapshot(view) => {
            if !send_snapshot(&tx, &view, key, req.accepts_parts).await {
                return;
            }
            view.revision
        }
        Start::Deltas(deltas, rev) => {
            for d in deltas {
                if tx.send(Ok(delta(&d, key))).await.is_err() {
                    return;
                }
            }
            rev
        }
    };
    loop {
        let msg = tokio::select! {
            () = tx.closed() => return,
            m = updates.recv() => m,
        };
        let out = match msg {
            Ok(Update::Delta(d)) if d.revision as i64 > sent => {
                sent = d.revision as i64;
                delta(&d, key)
            }
            Ok(Update::Delta(_)) => continue,
            // Fell behind or the view was rebuilt: start over from a snapshot.
            Ok(Update::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                let view = bc.view();
                sent = view.revision;
                if !send_snapshot(&tx, &view, key, req.accepts_parts).await {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(Ok(out)).await.is_err() {
            return;
        }
    }
}

type Updates = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;
type Acks = Pin<Box<dyn Stream<Item = Result<UsageAck, Status>> + Send>>;

#[tonic::async_trait]
impl Sync for SyncService {
    type WatchConfigStream = Updates;
    type ReportUsageStream = Acks;

    async fn watch_config(&self, req: Request<WatchConfigRequest>) -> Result<Response<Updates>, Status> {
        let req = req.into_inner();
        if req.edge_id.is_empty() {
            return Err(Status::invalid_argument("edge_id is required"));
        }
        // Never hand out the empty view of a replica that is still loading.
        self.broadcaster.loaded(std::time::Duration::from_secs(10)).await?;
        let (tx, rx) = mpsc::channel::<Result<ConfigUpdate, Status>>(16);
        let (bc, registry, key) = (self.broadcaster.clone(), self.registry.clone(), self.master_key.clone());
        // The stream is endless and the server's graceful shutdown waits for it: it ends itself
        // when the control plane stops, with a status that sends the edge to another replica at
        // once (not after its keepalive notices).
        let stop = self.ledger.stopping().clone();
        let stopping = tx.clone();
        let updates = bc.subscribe();
        registry.connected(&req.edge_id, &req.version);
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {
                    let _ = stopping.try_send(Err(Status::unavailable("the control plane is stopping")));
                }
                () = stream_updates(tx, updates, &bc, key.as_deref(), &req) => {}
            }
            registry.disconnected(&req.edge_id);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn ack_config(
        &self,
        req: Request<AckConfigRequest>,
    ) -> Result<Response<AckConfigResponse>, Status> {
        let req = req.into_inner();
        self.registry.applied(&req.edge_id, req.applied_revision);
        Ok(Response::new(AckConfigResponse {}))
    }

    /// Each report goes to the ledger in stream order; its ack is sent once it is committed (or
    /// found already committed), in the same order. A malformed report ends the stream with
    /// `InvalidArgument` after the acks of the reports before it; a ledger that cannot commit
    /// ends it with `Unavailable`, and the edge resends what was not acked.
    async fn report_usage(&self, req: Request<Streaming<UsageReport>>) -> Result<Response<Acks>, Status> {
        let mut inbound = req.into_inner();
        let ledger = self.ledger.clone();
        let quotas = self.quotas.clone();
        let (tx, rx) = mpsc::channel::<Result<UsageAck, Status>>(64);
        tokio::spawn(async move {
            let stop = ledger.stopping().clone();
            let mut waiting = FuturesOrdered::new();
            let (mut reading, mut failure) = (true, None::<Status>);
            while reading || !waiting.is_empty() {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => {
                        failure = Some(Status::unavailable("the control plane is stopping"));
                        break;
                    }
                    () = tx.closed() => return,
                    Some(ack) = waiting.next(), if !waiting.is_empty() => match ack {
                        Ok(ack) => {
                            if tx.send(Ok(ack)).await.is_err() {
                                return;
                            }
                        }
                        Err(status) => {
                            failure = Some(status);
                            break;
                        }
                    },
                    msg = inbound.message(), if reading && waiting.len() < REPORTS_IN_FLIGHT => match msg {
                        Ok(Some(report)) => {
                            let (epoch, seq) = (report.epoch.clone(), report.seq);
                            let (edge_id, holdings) = (report.edge_id.clone(), report.holdings.clone());
                            let quotas = quotas.clone();
                            match ledger.submit(report).await {
                                Ok(outcome) => waiting.push_back(async move {
                                    match outcome.await {
                                        Ok(Ok(_)) => {
                                            // Grants after the commit: the spend they build on is counted.
                                            let grants = quotas.on_report(&edge_id, &epoch, seq, &holdings).await;
                                            Ok(UsageAck { epoch, seq, grants })
                                        }
                                        Ok(Err(e)) => Err(Status::from(e)),
                                        Err(_) => Err(Status::unavailable("the usage ledger stopped")),
                                    }
                                }),
                                Err(e) => {
                                    failure = Some(e.into());
                                    reading = false;
                                }
                            }
                        }
                        Ok(None) => reading = false,
                        // The edge went away: nothing to ack to.
                        Err(_) => return,
                    },
                }
            }
            if let Some(status) = failure {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
