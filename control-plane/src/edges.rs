//! The edges connected to this replica, registered in the store under this replica's lease so
//! every replica can list them (and wait for them), and the registrations vanish if the replica
//! dies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmgw_shared::proto::EdgeInfo;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::compile::now_ms;
use crate::layout;
use crate::store::{Compare, CompareOp, CompareTarget, Op, Store, StoreError, Txn};

/// Registrations outlive a dead replica by at most this long.
const LEASE_TTL: Duration = Duration::from_secs(10);

struct Local {
    info: EdgeInfo,
    /// The revision of our last write of its registration, so we only ever delete our own.
    written_at: i64,
    /// Streams open for this edge here (a reconnect may overlap the old stream briefly).
    streams: usize,
}

pub struct Registry {
    store: Arc<dyn Store>,
    cp_id: String,
    lease: Mutex<i64>,
    local: Mutex<HashMap<String, Local>>,
}

impl Registry {
    #[must_use]
    pub fn new(store: Arc<dyn Store>, cp_id: String) -> Arc<Self> {
        Arc::new(Self { store, cp_id, lease: Mutex::new(0), local: Mutex::default() })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lease_id(&self) -> i64 {
        *self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps this replica's lease alive; re-grants it (and re-registers local edges) if lost.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(LEASE_TTL / 4);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let lease = self.lease_id();
            let alive = lease != 0 && self.store.keep_alive(lease).await.is_ok();
            if alive {
                continue;
            }
            match self.store.grant_lease(LEASE_TTL).await {
                Ok(l) => {
                    *self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = l;
                    let infos: Vec<EdgeInfo> = self.local().values().map(|l| l.info.clone()).collect();
                    for info in infos {
                        let _ = self.write(info).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot get a lease for edge registrations"),
            }
        }
        let lease = self.lease_id();
        if lease != 0 {
            let _ = self.store.revoke_lease(lease).await;
        }
    }

    async fn write(&self, info: EdgeInfo) -> Result<(), StoreError> {
        let key = format!("{}{}", layout::EDGES, info.edge_id).into_bytes();
        let edge_id = info.edge_id.clone();
        let r = self
            .store
            .txn(Txn {
                success: vec![Op::Put { key, value: info.encode_to_vec(), lease: self.lease_id() }],
                ..Default::default()
            })
            .await?;
        if let Some(l) = self.local().get_mut(&edge_id) {
            l.written_at = r.revision;
        }
        Ok(())
    }

    /// An edge opened a config stream here.
    pub async fn connected(&self, edge_id: &str, version: &str) {
        let info = {
            let mut local = self.local();
            let l = local.entry(edge_id.to_owned()).or_insert_with(|| Local {
                info: EdgeInfo {
                    edge_id: edge_id.to_owned(),
                    control_plane_id: self.cp_id.clone(),
                    version: version.to_owned(),
                    ..Default::default()
                },
                written_at: 0,
                streams: 0,
            });
            l.streams += 1;
            l.info.last_contact_unix_ms = now_ms();
            l.info.clone()
        };
        metrics::gauge!(crate::metrics::CONNECTED_EDGES).set(self.local().len() as f64);
        if let Err(e) = self.write(info).await {
            tracing::warn!(error = %e, edge_id, "cannot register edge");
        }
    }

    /// The edge applied `revision`.
    pub async fn applied(&self, edge_id: &str, revision: u64) {
        let info = {
            let mut local = self.local();
            let Some(l) = local.get_mut(edge_id) else { return };
            l.info.applied_revision = l.info.applied_revision.max(revision);
            l.info.last_contact_unix_ms = now_ms();
            l.info.clone()
        };
        if let Err(e) = self.write(info).await {
            tracing::warn!(error = %e, edge_id, "cannot record the edge's applied revision");
        }
    }

    /// The edge's stream here ended.
    pub async fn disconnected(&self, edge_id: &str) {
        let written_at = {
            let mut local = self.local();
            let Some(l) = local.get_mut(edge_id) else { return };
            l.streams = l.streams.saturating_sub(1);
            if l.streams > 0 {
                return;
            }
            let w = l.written_at;
            local.remove(edge_id);
            w
        };
        metrics::gauge!(crate::metrics::CONNECTED_EDGES).set(self.local().len() as f64);
        // Delete only our own registration: the edge may already be registered by another replica.
        let key = format!("{}{edge_id}", layout::EDGES).into_bytes();
        let txn = Txn {
            compares: vec![Compare {
                key: key.clone(),
                op: CompareOp::Equal,
                target: CompareTarget::ModRevision(written_at),
            }],
            success: vec![Op::Delete { key }],
            failure: vec![],
        };
        let _ = self.store.txn(txn).await;
    }

    /// Every registered edge, from every replica.
    ///
    /// # Errors
    /// The store's.
    pub async fn list(&self) -> Result<Vec<EdgeInfo>, StoreError> {
        let r = self.store.range(layout::EDGES.as_bytes()).await?;
        Ok(r.kvs.iter().filter_map(|kv| EdgeInfo::decode(kv.value.as_slice()).ok()).collect())
    }

    /// Waits until every registered edge applied `revision`; returns (applied, total).
    ///
    /// # Errors
    /// The store's.
    pub async fn wait_applied(&self, revision: u64, patience: Duration) -> Result<(u32, u32), StoreError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let edges = self.list().await?;
            let applied = edges.iter().filter(|e| e.applied_revision >= revision).count() as u32;
            let total = edges.len() as u32;
            if applied == total || tokio::time::Instant::now() >= deadline {
                return Ok((applied, total));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
