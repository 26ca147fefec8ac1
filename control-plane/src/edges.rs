//! The edges connected to this replica, registered in the store under this replica's lease so
//! every replica can list them (and wait for them), and the registrations vanish if the replica
//! dies.
//!
//! Connects and acks change memory only; a flusher writes what changed every [`FLUSH`], up to
//! [`MAX_TXN_OPS`] registrations a transaction. One transaction per ack was ~430 transactions/s
//! at 2,000 edges (bench/SIM.md); batched, a revision acked by every edge costs 16. Readers here
//! see memory, so only other replicas see an ack up to [`FLUSH`] late.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmgw_shared::proto::EdgeInfo;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::compile::now_ms;
use crate::layout;
use crate::store::{Compare, CompareOp, CompareTarget, MAX_TXN_OPS, Op, Store, StoreError, Txn};

/// Registrations outlive a dead replica by at most this long.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often changed registrations are written.
pub const FLUSH: Duration = Duration::from_millis(500);
/// A registration unchanged this long is written again, so `last contact` in other replicas'
/// listings is at most this old.
const REFRESH: Duration = Duration::from_secs(30);

struct Local {
    info: EdgeInfo,
    /// The revision of our last write of its registration, so we only ever delete our own.
    written_at: i64,
    /// Streams open for this edge here (a reconnect may overlap the old stream briefly).
    streams: usize,
    /// Changed since it was last written.
    dirty: bool,
    /// When it was last written (Unix ms).
    written_ms: i64,
}

pub struct Registry {
    store: Arc<dyn Store>,
    cp_id: String,
    lease: Mutex<i64>,
    local: Mutex<HashMap<String, Local>>,
    /// A new edge: written at once (with whatever else is due), because a replica waiting for
    /// every edge to apply a change must know it exists.
    flush_now: tokio::sync::Notify,
}

impl Registry {
    #[must_use]
    pub fn new(store: Arc<dyn Store>, cp_id: String) -> Arc<Self> {
        Arc::new(Self {
            store,
            cp_id,
            lease: Mutex::new(0),
            local: Mutex::default(),
            flush_now: tokio::sync::Notify::new(),
        })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lease_id(&self) -> i64 {
        *self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps this replica's lease alive (re-granting it and re-registering local edges if lost)
    /// and writes changed registrations.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut lease_tick = tokio::time::interval(LEASE_TTL / 4);
        let mut flush_tick = tokio::time::interval(FLUSH);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = lease_tick.tick() => self.renew_lease().await,
                _ = flush_tick.tick() => self.flush_logged().await,
                () = self.flush_now.notified() => self.flush_logged().await,
            }
        }
        let lease = self.lease_id();
        if lease != 0 {
            let _ = self.store.revoke_lease(lease).await;
        }
    }

    async fn renew_lease(&self) {
        let lease = self.lease_id();
        if lease != 0 && self.store.keep_alive(lease).await.is_ok() {
            return;
        }
        match self.store.grant_lease(LEASE_TTL).await {
            Ok(l) => {
                *self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = l;
                // The registrations went with the old lease.
                for l in self.local().values_mut() {
                    l.dirty = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot get a lease for edge registrations"),
        }
    }

    async fn flush_logged(&self) {
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "cannot write edge registrations; retrying");
        }
    }

    /// Writes every changed (or stale) registration, [`MAX_TXN_OPS`] to a transaction.
    async fn flush(&self) -> Result<(), StoreError> {
        let lease = self.lease_id();
        if lease == 0 {
            return Ok(());
        }
        let now = now_ms();
        let stale = now - REFRESH.as_millis() as i64;
        let due: Vec<EdgeInfo> = self
            .local()
            .values()
            .filter(|l| l.dirty || l.written_ms < stale)
            .map(|l| l.info.clone())
            .collect();
        for chunk in due.chunks(MAX_TXN_OPS) {
            let success = chunk
                .iter()
                .map(|info| Op::Put {
                    key: format!("{}{}", layout::EDGES, info.edge_id).into_bytes(),
                    value: info.encode_to_vec(),
                    lease,
                })
                .collect();
            let r = self.store.txn(Txn { success, ..Default::default() }).await?;
            let mut local = self.local();
            for info in chunk {
                // Changed again while the write was in flight: stays dirty for the next flush.
                if let Some(l) = local.get_mut(&info.edge_id)
                    && l.info == *info
                {
                    l.dirty = false;
                }
                if let Some(l) = local.get_mut(&info.edge_id) {
                    l.written_at = r.revision;
                    l.written_ms = now;
                }
            }
        }
        Ok(())
    }

    /// An edge opened a config stream here.
    pub fn connected(&self, edge_id: &str, version: &str) {
        let connected = {
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
                dirty: true,
                written_ms: 0,
            });
            l.streams += 1;
            l.info.last_contact_unix_ms = now_ms();
            local.len()
        };
        metrics::gauge!(crate::metrics::CONNECTED_EDGES).set(connected as f64);
        self.flush_now.notify_one();
    }

    /// The edge applied `revision`.
    pub fn applied(&self, edge_id: &str, revision: u64) {
        let mut local = self.local();
        let Some(l) = local.get_mut(edge_id) else { return };
        if revision > l.info.applied_revision {
            l.info.applied_revision = revision;
            l.dirty = true;
        }
        l.info.last_contact_unix_ms = now_ms();
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
            metrics::gauge!(crate::metrics::CONNECTED_EDGES).set(local.len() as f64);
            w
        };
        if written_at == 0 {
            return; // never written: nothing to delete
        }
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

    /// Every registered edge, from every replica: this replica's from memory (current even
    /// before the next flush), the others' as they last wrote them.
    ///
    /// # Errors
    /// The store's.
    pub async fn list(&self) -> Result<Vec<EdgeInfo>, StoreError> {
        let r = self.store.range(layout::EDGES.as_bytes()).await?;
        let stored = r.kvs.iter().filter_map(|kv| EdgeInfo::decode(kv.value.as_slice()).ok());
        let local = self.local();
        let mut out: Vec<EdgeInfo> = stored
            // Ours but no longer connected: its delete is on its way.
            .filter(|e| e.control_plane_id != self.cp_id || local.contains_key(&e.edge_id))
            .map(|e| match local.get(&e.edge_id) {
                Some(l) => l.info.clone(),
                None => e,
            })
            .collect();
        let listed: std::collections::HashSet<&str> = out.iter().map(|e| e.edge_id.as_str()).collect();
        let unwritten: Vec<EdgeInfo> = local
            .values()
            .filter(|l| !listed.contains(l.info.edge_id.as_str()))
            .map(|l| l.info.clone())
            .collect();
        out.extend(unwritten);
        Ok(out)
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
