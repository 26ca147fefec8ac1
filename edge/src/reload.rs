//! Standalone mode: the config comes from a file, re-read on SIGHUP and when it changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use llmgw_shared::configfile;
use tokio_util::sync::CancellationToken;

use crate::config::{BuildError, EdgeConfig, ResolveCtx};
use crate::state::Edge;
use crate::upstream::ClientCache;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] configfile::ConfigError),
    #[error("{0}")]
    Build(#[from] BuildError),
}

/// Reads, validates and builds the config in the file. `revision` is what it is published as.
///
/// # Errors
/// The file's first problem, naming the field and its line.
pub fn load(path: &Path, revision: u64, clients: &ClientCache) -> Result<EdgeConfig, LoadError> {
    let mut snapshot = configfile::load(path)?;
    snapshot.revision = revision;
    let env = |k: &str| std::env::var(k).ok();
    let ctx = ResolveCtx { base_dir: path.parent(), env: &env, strict: true };
    Ok(EdgeConfig::build(&snapshot, &ctx, clients)?)
}

/// What "the file changed" is judged by: modification time and size.
pub type Stamp = Option<(SystemTime, u64)>;

/// Taken before the file is read, so a write that lands while it loads is noticed later.
#[must_use]
pub fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Re-reads the file on SIGHUP, or when its modification time or size changes (checked every
/// `poll`). A file that fails to load is logged and the running config keeps serving.
///
/// The SIGHUP handler is installed when this is called, not when the future first runs: a
/// SIGHUP before that would otherwise terminate the process (the signal's default action).
pub fn watch(
    path: PathBuf,
    loaded: Stamp,
    edge: Arc<Edge>,
    clients: ClientCache,
    poll: Duration,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
            None
        }
    };
    watch_loop(path, loaded, hup, edge, clients, poll, stop)
}

async fn watch_loop(
    path: PathBuf,
    loaded: Stamp,
    mut hup: Option<tokio::signal::unix::Signal>,
    edge: Arc<Edge>,
    clients: ClientCache,
    poll: Duration,
    stop: CancellationToken,
) {
    let mut revision = edge.config().map_or(0, |c| c.revision);
    let mut last = loaded;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let now = stamp(&path);
                if now == last { continue; }
                last = now;
                "file changed"
            }
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                last = stamp(&path);
                "SIGHUP"
            }
        };
        let clients = clients.clone();
        let p = path.clone();
        // Building a large config is CPU work; keep it off the request-serving threads' queue.
        let built = tokio::task::spawn_blocking(move || load(&p, revision + 1, &clients)).await;
        match built {
            Ok(Ok(cfg)) => {
                revision += 1;
                let (keys, models) = (cfg.keys.len(), cfg.models.len());
                // Logged after the swap: a reader of the log may act on it at once.
                edge.publish(cfg);
                tracing::info!(reason = why, revision, keys, models, "configuration reloaded");
            }
            Ok(Err(e)) => {
                metrics::counter!(crate::metrics::CONFIG_RELOAD_FAILURES).increment(1);
                tracing::error!(reason = why, error = %e, "configuration rejected; still serving the previous one");
            }
            Err(e) => tracing::error!(error = %e, "configuration reload task failed"),
        }
    }
}
