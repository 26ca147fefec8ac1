//! The edges connected to this replica, registered in the store under this replica's lease so
//! every replica can list them (and wait for them), and the registrations vanish if the replica
//! dies.
//!
//! Connects, acks and disconnects change memory only; one flusher task writes what changed
//! every [`FLUSH`] (at once after a connect), up to [`MAX_TXN_OPS`] registrations a
//! transaction. One transaction per ack was ~430 transactions/s at 2,000 edges (bench/SIM.md);
//! batched, a revision acked by every edge costs 16. Readers here see memory, so only other
//! replicas see an ack up to [`FLUSH`] late.
//!
//! Ownership: a replica where an edge opens a stream writes its registration unconditionally
//! (the newest stream wins); every later write or delete compares the key's revision with its
//! own last write. When that fails, another replica has the edge's newer stream: this one
//! yields, and writes again only if the key disappears while its stream is still open. All
//! writes and deletes run in the one flusher, so a delete never races a put of the same key.

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
    /// The revision of our last write of its registration; 0: none (or it went with a lease).
    written_at: i64,
    /// Streams open for this edge here (a reconnect may overlap the old stream briefly); 0: gone,
    /// its registration to be deleted by the flusher.
    streams: usize,
    /// Changed since it was last written.
    dirty: bool,
    /// When it was last written, or last found owned by another replica (Unix ms).
    written_ms: i64,
    /// A new stream here: the next write is unconditional.
    take_over: bool,
    /// Another replica wrote the registration after us.
    yielded: bool,
}

/// A write the flusher decided on.
struct Put {
    info: EdgeInfo,
    /// Compare the key's revision with this first (0: it must be absent).
    expect: Option<i64>,
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

fn key_of(edge_id: &str) -> Vec<u8> {
    format!("{}{edge_id}", layout::EDGES).into_bytes()
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

    /// Keeps this replica's lease alive (re-granting it if lost) and, separately so a slow
    /// store cannot starve the keep-alive, writes changed registrations.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let lease = async {
            let mut tick = tokio::time::interval(LEASE_TTL / 4);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => self.renew_lease().await,
                }
            }
        };
        let flush = async {
            let mut tick = tokio::time::interval(FLUSH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                    () = self.flush_now.notified() => {}
                }
                if let Err(e) = self.flush().await {
                    tracing::warn!(error = %e, "cannot write edge registrations; retrying");
                }
            }
        };
        tokio::join!(lease, flush);
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
                // The registrations went with the old lease: write them again where nobody
                // else did meanwhile.
                for l in self.local().values_mut() {
                    l.written_at = 0;
                    l.dirty = true;
                }
                self.flush_now.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "cannot get a lease for edge registrations"),
        }
    }

    /// Deletes the registrations of edges gone from here, then writes every changed (or stale)
    /// one, [`MAX_TXN_OPS`] to a transaction.
    async fn flush(&self) -> Result<(), StoreError> {
        let lease = self.lease_id();
        if lease == 0 {
            return Ok(());
        }
        let now = now_ms();
        let stale = now - REFRESH.as_millis() as i64;
        let (deletes, puts) = {
            let mut local = self.local();
            // Gone, and nothing of ours in the store: forget at once.
            local.retain(|_, l| l.streams > 0 || (l.written_at != 0 && !l.yielded));
            let deletes: Vec<(String, i64)> = local
                .iter()
                .filter(|(_, l)| l.streams == 0)
                .map(|(id, l)| (id.clone(), l.written_at))
                .collect();
            let puts: Vec<Put> = local
                .values()
                .filter(|l| l.streams > 0)
                .filter_map(|l| match () {
                    () if l.yielded && l.written_ms < stale => {
                        Some(Put { info: l.info.clone(), expect: Some(0) })
                    }
                    () if l.yielded => None,
                    () if l.take_over => Some(Put { info: l.info.clone(), expect: None }),
                    () if l.dirty || l.written_ms < stale => {
                        Some(Put { info: l.info.clone(), expect: Some(l.written_at) })
                    }
                    () => None,
                })
                .collect();
            (deletes, puts)
        };
        for chunk in deletes.chunks(MAX_TXN_OPS) {
            self.delete(chunk).await?;
        }
        for chunk in puts.chunks(MAX_TXN_OPS) {
            self.put(chunk, lease, now).await?;
        }
        Ok(())
    }

    /// Deletes registrations still ours; forgets the edges unless a stream came back meanwhile.
    async fn delete(&self, chunk: &[(String, i64)]) -> Result<(), StoreError> {
        let txn = |items: &[(String, i64)]| Txn {
            compares: items
                .iter()
                .map(|(id, at)| Compare {
                    key: key_of(id),
                    op: CompareOp::Equal,
                    target: CompareTarget::ModRevision(*at),
                })
                .collect(),
            success: items.iter().map(|(id, _)| Op::Delete { key: key_of(id) }).collect(),
            failure: vec![],
        };
        // Together first; one at a time when one of them is no longer ours.
        if !self.store.txn(txn(chunk)).await?.succeeded {
            for one in chunk.chunks(1) {
                self.store.txn(txn(one)).await?;
            }
        }
        let mut local = self.local();
        for (id, at) in chunk {
            if let Some(l) = local.get_mut(id)
                && l.written_at == *at
            {
                if l.streams == 0 {
                    local.remove(id);
                } else {
                    l.written_at = 0;
                    l.dirty = true;
                }
            }
        }
        Ok(())
    }

    async fn put(&self, chunk: &[Put], lease: i64, now: i64) -> Result<(), StoreError> {
        let txn = |items: &[Put]| Txn {
            compares: items
                .iter()
                .filter_map(|p| {
                    Some(Compare {
                        key: key_of(&p.info.edge_id),
                        op: CompareOp::Equal,
                        target: CompareTarget::ModRevision(p.expect?),
                    })
                })
                .collect(),
            success: items
                .iter()
                .map(|p| Op::Put { key: key_of(&p.info.edge_id), value: p.info.encode_to_vec(), lease })
                .collect(),
            failure: vec![],
        };
        let r = self.store.txn(txn(chunk)).await?;
        if r.succeeded {
            self.written(chunk, r.revision, now);
            return Ok(());
        }
        for one in chunk.chunks(1) {
            let r = self.store.txn(txn(one)).await?;
            if r.succeeded {
                self.written(one, r.revision, now);
            } else if let Some(l) = self.local().get_mut(&one[0].info.edge_id) {
                // Another replica has this edge's newer stream.
                l.yielded = true;
                l.written_at = 0;
                l.written_ms = now;
            }
        }
        Ok(())
    }

    fn written(&self, puts: &[Put], revision: i64, now: i64) {
        let mut local = self.local();
        for p in puts {
            let Some(l) = local.get_mut(&p.info.edge_id) else { continue };
            l.written_at = revision;
            l.written_ms = now;
            l.take_over = false;
            l.yielded = false;
            // Changed again while the write was in flight: stays dirty for the next flush.
            if l.info == p.info {
                l.dirty = false;
            }
        }
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
                take_over: true,
                yielded: false,
            });
            l.streams += 1;
            l.info.version = version.to_owned();
            l.info.last_contact_unix_ms = now_ms();
            l.dirty = true;
            l.take_over = true;
            local.values().filter(|l| l.streams > 0).count()
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

    /// The edge's stream here ended; the flusher deletes its registration if it is still ours.
    pub fn disconnected(&self, edge_id: &str) {
        let connected = {
            let mut local = self.local();
            let Some(l) = local.get_mut(edge_id) else { return };
            l.streams = l.streams.saturating_sub(1);
            local.values().filter(|l| l.streams > 0).count()
        };
        metrics::gauge!(crate::metrics::CONNECTED_EDGES).set(connected as f64);
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
        let ours = |id: &str| local.get(id).filter(|l| l.streams > 0 && !l.yielded);
        let mut out: Vec<EdgeInfo> = stored
            .filter_map(|e| match ours(&e.edge_id) {
                Some(l) => Some(l.info.clone()),
                // Ours but no longer connected here: its delete is on its way.
                None if e.control_plane_id == self.cp_id => None,
                None => Some(e),
            })
            .collect();
        let listed: std::collections::HashSet<String> = out.iter().map(|e| e.edge_id.clone()).collect();
        out.extend(
            local
                .iter()
                .filter(|(id, l)| l.streams > 0 && !l.yielded && !listed.contains(id.as_str()))
                .map(|(_, l)| l.info.clone()),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    async fn replica(store: &Arc<dyn Store>, id: &str) -> Arc<Registry> {
        let r = Registry::new(store.clone(), id.into());
        r.renew_lease().await;
        r
    }

    async fn stored(store: &Arc<dyn Store>) -> Vec<EdgeInfo> {
        let r = store.range(layout::EDGES.as_bytes()).await.unwrap();
        r.kvs.iter().map(|kv| EdgeInfo::decode(kv.value.as_slice()).unwrap()).collect()
    }

    #[tokio::test]
    async fn the_newest_stream_owns_the_registration_and_a_gone_edge_is_not_resurrected() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        let (a, b) = (replica(&store, "a").await, replica(&store, "b").await);

        // Acks are batched: nothing is written until the flush; this replica sees them at once.
        a.connected("e1", "v1");
        a.applied("e1", 5);
        assert_eq!(a.list().await.unwrap()[0].applied_revision, 5);
        assert!(b.list().await.unwrap().is_empty());
        a.flush().await.unwrap();
        let seen = b.list().await.unwrap();
        assert_eq!((seen.len(), seen[0].control_plane_id.as_str(), seen[0].applied_revision), (1, "a", 5));

        // The edge reconnects to b while a's old stream lingers: b takes over, a yields.
        b.connected("e1", "v1");
        b.flush().await.unwrap();
        a.applied("e1", 6);
        a.flush().await.unwrap();
        let s = stored(&store).await;
        // b's registration, not a's later ack of the old stream.
        assert_eq!((s.len(), s[0].control_plane_id.as_str(), s[0].applied_revision), (1, "b", 0));
        assert_eq!(a.list().await.unwrap()[0].control_plane_id, "b");
        // a's stream ends: not a's to delete.
        a.disconnected("e1");
        a.flush().await.unwrap();
        assert_eq!(stored(&store).await[0].control_plane_id, "b");

        // b's stream ends: deleted, and a flap (connect, disconnect between flushes) leaves nothing.
        b.disconnected("e1");
        b.connected("e2", "v1");
        b.flush().await.unwrap();
        b.disconnected("e2");
        b.flush().await.unwrap();
        assert!(stored(&store).await.is_empty(), "{:?}", stored(&store).await);
        assert!(a.list().await.unwrap().is_empty() && b.list().await.unwrap().is_empty());

        // A registration lost with the lease is written again.
        a.connected("e3", "v1");
        a.flush().await.unwrap();
        store.revoke_lease(a.lease_id()).await.unwrap();
        assert!(stored(&store).await.is_empty());
        a.renew_lease().await;
        a.flush().await.unwrap();
        assert_eq!(stored(&store).await.len(), 1);
    }
}
