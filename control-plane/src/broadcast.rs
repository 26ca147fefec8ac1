//! Keeps the in-memory view in step with the store and fans each committed change out to the
//! edges' WatchConfig streams as a `Delta`, keeping a window of recent deltas so a reconnecting
//! edge can catch up without a full snapshot.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use llmgw_shared::proto::{self, ResourceKind, ResourceRef};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::layout;
use crate::store::{Event, Store, StoreError};
use crate::view::{View, decode_kv};

/// Deltas kept for reconnecting edges.
const WINDOW: usize = 1024;

#[derive(Debug, Clone)]
pub enum Update {
    Delta(Arc<proto::Delta>),
    /// The view was rebuilt (the watch fell behind compaction): streams send a full snapshot.
    Reset,
}

struct Shared {
    view: View,
    window: VecDeque<Arc<proto::Delta>>,
    /// Edges that applied at least this revision can be served from the window.
    window_floor: i64,
}

pub struct Broadcaster {
    shared: RwLock<Shared>,
    updates: broadcast::Sender<Update>,
    revision: watch::Sender<i64>,
}

/// What a new WatchConfig stream starts with.
pub enum Start {
    Snapshot(View),
    Deltas(Vec<Arc<proto::Delta>>, i64),
}

impl Broadcaster {
    #[must_use]
    pub fn new() -> Arc<Self> {
        let (updates, _) = broadcast::channel(4096);
        let (revision, _) = watch::channel(0);
        Arc::new(Self {
            shared: RwLock::new(Shared {
                view: View::default(),
                window: VecDeque::new(),
                window_floor: i64::MAX,
            }),
            updates,
            revision,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Shared> {
        self.shared.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Shared> {
        self.shared.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the current view (cheap: persistent maps).
    #[must_use]
    pub fn view(&self) -> View {
        self.read().view.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    /// The revision the view reflects; changes as the watch applies batches.
    pub fn revision(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Waits until the view reflects at least `revision` (a change this replica just committed),
    /// so a following read sees it.
    pub async fn wait_for(&self, revision: i64, patience: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        tokio::time::timeout(patience, rx.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// How a stream for an edge that already applied `known` should start.
    #[must_use]
    pub fn start_for(&self, known: i64) -> Start {
        let s = self.read();
        if known > 0 && known >= s.window_floor && known <= s.view.revision {
            let deltas = s.window.iter().filter(|d| d.revision as i64 > known).cloned().collect();
            return Start::Deltas(deltas, s.view.revision);
        }
        Start::Snapshot(s.view.clone())
    }

    /// Waits until the view was loaded from the store, so nobody is served an empty config.
    ///
    /// # Errors
    /// `Unavailable` when the store could not be read within `patience`.
    pub async fn loaded(&self, patience: Duration) -> Result<(), tonic::Status> {
        if self.wait_for(1, patience).await {
            Ok(())
        } else {
            Err(tonic::Status::unavailable(
                "config store unavailable: the control plane has not loaded its config yet",
            ))
        }
    }

    #[must_use]
    pub fn ready(&self) -> bool {
        *self.revision.borrow() > 0
    }

    /// Loads the view and follows the store until `stop`; re-syncs after errors.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = self.follow(&store) => r,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "config watch interrupted; re-syncing");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn load(&self, store: &Arc<dyn Store>) -> Result<i64, StoreError> {
        let mut view = View::default();
        let mut min_rev = i64::MAX;
        for (_, prefix) in layout::CONFIG_KINDS {
            let r = store.range(prefix.as_bytes()).await?;
            min_rev = min_rev.min(r.revision);
            for kv in r.kvs {
                if let Some((kind, name, res)) = decode_kv(&kv.key, &kv.value) {
                    view.put(kind, &name, res, kv.mod_revision);
                }
            }
        }
        // Each prefix was read at its own revision, so the view is only known to be complete as
        // of the oldest. Labelling it with that revision makes every write replayed by the watch
        // (from there on) a newer revision than any snapshot handed out now, so edges apply it;
        // labelling it with the newest would let an edge skip a write its snapshot lacks.
        view.revision = min_rev;
        let rev = view.revision;
        let mut s = self.write();
        let had = s.view.revision > 0;
        s.view = view;
        s.window.clear();
        s.window_floor = rev;
        drop(s);
        if had {
            let _ = self.updates.send(Update::Reset);
        }
        self.revision.send_replace(rev);
        tracing::info!(revision = rev, "config view loaded");
        Ok(min_rev)
    }

    async fn follow(&self, store: &Arc<dyn Store>) -> Result<(), StoreError> {
        // Watch from the oldest revision read; the view ignores writes it already has (it
        // compares mod revisions).
        let from = self.load(store).await? + 1;
        let mut watch = store.watch(layout::ROOT.as_bytes(), from).await?;
        while let Some(batch) = watch.next().await {
            let batch = batch?;
            let mut s = self.write();
            let from_revision = s.view.revision;
            let mut delta = proto::Delta { from_revision: from_revision.max(0) as u64, ..Default::default() };
            for ev in batch.events {
                match ev {
                    Event::Put(kv) => {
                        if let Some((kind, name, res)) = decode_kv(&kv.key, &kv.value)
                            && s.view.put(kind, &name, res.clone(), kv.mod_revision)
                        {
                            delta.upserts.push(res);
                        }
                    }
                    Event::Delete { key, mod_revision } => {
                        if let Some((kind, name)) = layout::parse_key(&key)
                            && s.view.delete(kind, name, mod_revision)
                        {
                            delta.deletes.push(ResourceRef { kind: kind as i32, name: name.to_owned() });
                        }
                    }
                }
            }
            s.view.revision = s.view.revision.max(batch.revision);
            let revision = s.view.revision;
            if !delta.upserts.is_empty() || !delta.deletes.is_empty() {
                delta.revision = revision as u64;
                let delta = Arc::new(delta);
                s.window.push_back(delta.clone());
                if s.window.len() > WINDOW
                    && let Some(old) = s.window.pop_front()
                {
                    s.window_floor = old.revision as i64;
                }
                drop(s);
                let _ = self.updates.send(Update::Delta(delta));
            } else {
                drop(s);
            }
            self.revision.send_replace(revision);
            metrics::gauge!(crate::metrics::CONFIG_REVISION).set(revision as f64);
        }
        Err(StoreError::Unavailable("the watch stream ended".into()))
    }
}

/// A resource kind's display name, for logs, audit and diffs.
#[must_use]
pub fn kind_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Provider => "provider",
        ResourceKind::Model => "model",
        ResourceKind::Team => "team",
        ResourceKind::Project => "project",
        ResourceKind::Key => "key",
        ResourceKind::Unspecified => "resource",
    }
}
