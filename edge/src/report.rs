//! Reporting usage to the control plane, exactly once.
//!
//! Every interval the ledger is drained into numbered reports `(edge_id, epoch, seq)`; a report,
//! once numbered, never changes. Reports stay in an outbox until the control plane acks them
//! (it acks after persisting, and acks a resend it already counted without counting it again),
//! and every unacked report is resent, in order, after a reconnect to any replica. With a spool
//! directory, each report is appended to a file before it is sent, so a crash loses at most what
//! was not yet drained (one interval); a clean shutdown that cannot reach any control plane leaves
//! the rest in the spool, and the next start sends it first.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use llmgw_shared::proto::{UsageAck, UsageReport, UsageRow};
use prost::Message as _;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::Edge;
use crate::usage::{UsageCounts, UsageKey};

/// The ledger's limit on distinct keys in one report (one store transaction).
const MAX_KEYS_PER_REPORT: usize = 40;

#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub endpoints: Vec<String>,
    pub edge_id: String,
    pub token: Option<String>,
    pub tls: tonic::transport::ClientTlsConfig,
    pub interval: Duration,
    pub spool_dir: Option<PathBuf>,
    /// Unacked reports kept in memory; beyond it the oldest are dropped (metric + log).
    pub max_pending: usize,
    /// How long a shutdown waits for the last acks before spooling.
    pub flush_timeout: Duration,
}

const PENDING: &str = "llmgw_usage_reports_pending";
const DROPPED: &str = "llmgw_usage_reports_dropped_total";
const ACKED: &str = "llmgw_usage_reports_acked_total";
const ACK_LATENCY: &str = "llmgw_usage_report_ack_seconds";

struct Sent {
    report: UsageReport,
    at: Instant,
}

/// Reports not yet acked, oldest first, and where they are spooled.
struct Outbox {
    edge_id: String,
    epoch: String,
    next_seq: u64,
    pending: VecDeque<Sent>,
    max_pending: usize,
    spool: Option<Spool>,
}

impl Outbox {
    /// Drains the ledger into new reports, the newest carrying the quota holdings; spooled
    /// (when configured) before they are returned.
    fn cut(&mut self, edge: &Edge) -> Vec<UsageReport> {
        let mut rows = edge.usage.drain();
        rows.sort_by(|a, b| a.0.key_id.cmp(&b.0.key_id));
        let hour = hour_now();
        let mut chunks: Vec<Vec<UsageRow>> = Vec::new();
        let mut keys = 0usize;
        let mut last_key: Option<smol_str::SmolStr> = None;
        for (k, c) in rows {
            if last_key.as_ref() != Some(&k.key_id) {
                if keys.is_multiple_of(MAX_KEYS_PER_REPORT) {
                    chunks.push(Vec::new());
                }
                keys += 1;
                last_key = Some(k.key_id.clone());
            }
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(row(&k, c, hour));
            }
        }
        let last_seq = self.next_seq + chunks.len().max(1) as u64 - 1;
        let holdings = edge.quota.holdings(last_seq);
        if chunks.is_empty() {
            if holdings.is_empty() {
                return Vec::new();
            }
            chunks.push(Vec::new());
        }
        let mut reports: Vec<UsageReport> = chunks.into_iter().map(|c| self.number(c)).collect();
        if let Some(last) = reports.last_mut() {
            last.holdings = holdings;
        }
        if let Some(spool) = &mut self.spool {
            spool.append(&reports);
        }
        let now = Instant::now();
        for r in &reports {
            self.pending.push_back(Sent { report: r.clone(), at: now });
        }
        while self.pending.len() > self.max_pending {
            if let Some(old) = self.pending.pop_front() {
                metrics::counter!(DROPPED).increment(1);
                tracing::error!(
                    epoch = %old.report.epoch,
                    seq = old.report.seq,
                    rows = old.report.rows.len(),
                    "usage buffer full: dropped the oldest unacked report"
                );
            }
        }
        metrics::gauge!(PENDING).set(self.pending.len() as f64);
        reports
    }

    fn number(&mut self, rows: Vec<UsageRow>) -> UsageReport {
        let seq = self.next_seq;
        self.next_seq += 1;
        UsageReport {
            edge_id: self.edge_id.clone(),
            epoch: self.epoch.clone(),
            seq,
            rows,
            holdings: Vec::new(),
        }
    }

    /// Acks come in the order the stream sent the reports: everything of that epoch up to seq
    /// is done.
    fn acked(&mut self, ack: &UsageAck) {
        let before = self.pending.len();
        let now = Instant::now();
        self.pending.retain(|s| {
            let done = s.report.epoch == ack.epoch && s.report.seq <= ack.seq;
            if done {
                metrics::histogram!(ACK_LATENCY).record(now.duration_since(s.at).as_secs_f64());
            }
            !done
        });
        metrics::counter!(ACKED).increment((before - self.pending.len()) as u64);
        metrics::gauge!(PENDING).set(self.pending.len() as f64);
        if self.pending.is_empty()
            && let Some(spool) = &mut self.spool
        {
            spool.clear();
        }
    }
}

fn row(k: &UsageKey, c: UsageCounts, hour_unix: i64) -> UsageRow {
    let s = |v: &Option<Arc<str>>| v.as_deref().unwrap_or_default().to_owned();
    UsageRow {
        key_id: k.key_id.to_string(),
        project: s(&k.project),
        team: s(&k.team),
        model: k.model.to_string(),
        provider: k.provider.to_string(),
        upstream_model: k.upstream_model.to_string(),
        requests: c.requests,
        input_tokens: c.input_tokens,
        output_tokens: c.output_tokens,
        cached_input_tokens: c.cached_input_tokens,
        cost_micro_usd: c.cost_micro_usd,
        errors: c.errors,
        hour_unix,
    }
}

fn hour_now() -> i64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    secs - secs.rem_euclid(3600)
}

/// Write-ahead spool: this process's reports, appended (length-delimited protobuf) and synced
/// before they are sent; emptied once everything is acked. Files of earlier processes are read
/// at start and removed once their reports are acked.
struct Spool {
    dir: PathBuf,
    file: Option<std::fs::File>,
    path: PathBuf,
    /// Earlier processes' files, removed when the outbox first empties.
    inherited: Vec<PathBuf>,
}

impl Spool {
    fn open(dir: &Path, epoch: &str) -> std::io::Result<(Self, Vec<UsageReport>)> {
        std::fs::create_dir_all(dir)?;
        let mut inherited = Vec::new();
        let mut reports = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "spool"))
            .collect();
        entries.sort();
        for path in entries {
            let bytes = std::fs::read(&path)?;
            let mut buf = bytes.as_slice();
            while !buf.is_empty() {
                // A torn last record (a crash mid-append) was never sent: nothing lost by skipping.
                match UsageReport::decode_length_delimited(&mut buf) {
                    Ok(r) => reports.push(r),
                    Err(_) => break,
                }
            }
            inherited.push(path);
        }
        // Resent in the order they were numbered: by epoch file, then seq.
        let path = dir.join(format!("{epoch}.spool"));
        Ok((Self { dir: dir.to_owned(), file: None, path, inherited }, reports))
    }

    fn append(&mut self, reports: &[UsageReport]) {
        let mut buf = Vec::new();
        for r in reports {
            if r.encode_length_delimited(&mut buf).is_err() {
                return;
            }
        }
        let result = (|| {
            if self.file.is_none() {
                self.file = Some(std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?);
            }
            let Some(f) = self.file.as_mut() else { return Ok(()) };
            f.write_all(&buf)?;
            f.sync_data()
        })();
        if let Err(e) = result {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot write the usage spool");
        }
    }

    fn clear(&mut self) {
        if let Some(f) = self.file.take() {
            drop(f);
            let _ = std::fs::remove_file(&self.path);
        }
        for p in self.inherited.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// At shutdown: everything still pending into this process's file (rewritten whole), and
    /// the inherited files removed, since their unacked reports are in it.
    fn persist(&mut self, pending: &VecDeque<Sent>) -> std::io::Result<()> {
        self.file = None;
        let mut buf = Vec::new();
        for s in pending {
            s.report.encode_length_delimited(&mut buf).map_err(std::io::Error::other)?;
        }
        let tmp = self.path.with_extension("spool.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        for p in self.inherited.drain(..) {
            if p != self.path {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    }
}

/// Runs until `drained` is cancelled (the HTTP server has finished its last request), then
/// flushes: a last report, up to `flush_timeout` for acks, the rest to the spool.
pub async fn run(opts: ReportOptions, edge: Arc<Edge>, drained: CancellationToken) {
    let epoch = format!("{:016x}", rand::random::<u64>());
    let mut outbox = Outbox {
        edge_id: opts.edge_id.clone(),
        epoch: epoch.clone(),
        next_seq: 1,
        pending: VecDeque::new(),
        max_pending: opts.max_pending.max(1),
        spool: None,
    };
    if let Some(dir) = &opts.spool_dir {
        match Spool::open(dir, &epoch) {
            Ok((spool, inherited)) => {
                if !inherited.is_empty() {
                    tracing::info!(reports = inherited.len(), dir = %dir.display(), "resending spooled usage");
                }
                let now = Instant::now();
                outbox.pending.extend(inherited.into_iter().map(|report| Sent { report, at: now }));
                outbox.spool = Some(spool);
            }
            Err(e) => tracing::error!(dir = %dir.display(), error = %e, "cannot open the usage spool"),
        }
    }
    let mut next = rand::rng().random_range(0..opts.endpoints.len().max(1));
    let mut backoff = Duration::from_millis(100);
    let mut flush_by: Option<Instant> = None;
    loop {
        let url = opts.endpoints[next % opts.endpoints.len().max(1)].clone();
        next += 1;
        match session(&url, &opts, &edge, &mut outbox, &drained, &mut flush_by).await {
            Ok(Done::Flushed) => return finish(&mut outbox),
            Ok(Done::Lost) => backoff = Duration::from_millis(100),
            Err(e) => tracing::warn!(control_plane = %url, error = %e, "usage stream lost; buffering"),
        }
        if flush_by.is_some_and(|t| Instant::now() >= t) {
            return finish(&mut outbox);
        }
        let pause = backoff.mul_f64(rand::rng().random_range(0.5..1.5));
        let wait_until = flush_by.map_or(Instant::now() + pause, |t| t.min(Instant::now() + pause));
        tokio::select! {
            () = tokio::time::sleep_until(wait_until.into()) => {}
            () = drained.cancelled(), if flush_by.is_none() => {
                outbox.cut(&edge);
                flush_by = Some(Instant::now() + opts.flush_timeout);
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn finish(outbox: &mut Outbox) {
    if outbox.pending.is_empty() {
        if let Some(s) = &mut outbox.spool {
            s.clear();
        }
        tracing::info!("usage flushed");
        return;
    }
    let n = outbox.pending.len();
    match &mut outbox.spool {
        Some(spool) => match spool.persist(&outbox.pending) {
            Ok(()) => {
                tracing::warn!(reports = n, dir = %spool.dir.display(), "no control plane acked the last usage; spooled for the next start")
            }
            Err(e) => tracing::error!(reports = n, error = %e, "usage lost: cannot write the spool"),
        },
        None => {
            tracing::error!(reports = n, "usage lost: no control plane acked it and no --spool-dir is set")
        }
    }
}

/// Marks the quota's control plane unreachable when the stream ends, however it ends.
struct Disconnected<'a>(&'a crate::quota::Quota);

impl Drop for Disconnected<'_> {
    fn drop(&mut self) {
        self.0.set_connected(false);
    }
}

enum Done {
    /// Shutting down and everything was acked.
    Flushed,
    /// The stream ended; reconnect.
    Lost,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Status(#[from] tonic::Status),
}

async fn session(
    url: &str,
    opts: &ReportOptions,
    edge: &Edge,
    outbox: &mut Outbox,
    drained: &CancellationToken,
    flush_by: &mut Option<Instant>,
) -> Result<Done, SessionError> {
    // Opening the stream is bounded by a shutdown's flush deadline: a control plane that hangs
    // instead of refusing must not hold the edge's exit.
    let resend: Vec<UsageReport> = outbox.pending.iter().map(|s| s.report.clone()).collect();
    let first_new = outbox.next_seq;
    let open = open_stream(url, opts, resend);
    tokio::pin!(open);
    let (tx, mut acks) = loop {
        let deadline = flush_by.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            r = &mut open => break r?,
            () = drained.cancelled(), if flush_by.is_none() => {
                outbox.cut(edge);
                *flush_by = Some(Instant::now() + opts.flush_timeout);
            }
            () = tokio::time::sleep_until(deadline.into()), if flush_by.is_some() => return Ok(Done::Lost),
        }
    };
    // Reports cut while the stream was opening (a shutdown's last one) follow the resent ones.
    for p in outbox.pending.iter().filter(|p| p.report.epoch == outbox.epoch && p.report.seq >= first_new) {
        let _ = tx.send(p.report.clone());
    }
    tracing::debug!(control_plane = %url, resent = outbox.pending.len(), "usage stream open");
    // Connected, for quota purposes, once a control plane acks: an open stream to a replica
    // whose store is down does not stop the cut-off clock.
    let _down = Disconnected(&edge.quota);
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if flush_by.is_some() && outbox.pending.is_empty() {
            return Ok(Done::Flushed);
        }
        let deadline = flush_by.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            _ = tick.tick(), if flush_by.is_none() => {
                for r in outbox.cut(edge) {
                    let _ = tx.send(r);
                }
            }
            () = edge.quota.asked.notified(), if flush_by.is_none() => {
                for r in outbox.cut(edge) {
                    let _ = tx.send(r);
                }
            }
            ack = acks.message() => match ack? {
                Some(a) => {
                    edge.quota.set_connected(true);
                    if a.epoch == outbox.epoch {
                        edge.quota.apply(&a.grants, a.seq);
                    }
                    outbox.acked(&a);
                }
                None => return Ok(Done::Lost),
            },
            () = drained.cancelled(), if flush_by.is_none() => {
                for r in outbox.cut(edge) {
                    let _ = tx.send(r);
                }
                *flush_by = Some(Instant::now() + opts.flush_timeout);
            }
            () = tokio::time::sleep_until(deadline.into()), if flush_by.is_some() => return Ok(Done::Lost),
        }
    }
}

type Acks = tonic::Streaming<llmgw_shared::proto::UsageAck>;

/// Connects and opens the usage stream with every unacked report queued first, in the order it
/// was numbered.
async fn open_stream(
    url: &str,
    opts: &ReportOptions,
    resend: Vec<UsageReport>,
) -> Result<(mpsc::UnboundedSender<UsageReport>, Acks), SessionError> {
    let channel =
        crate::sync::connect(url, &opts.tls).await.map_err(|e| SessionError::Connect(e.to_string()))?;
    let mut client = crate::sync::authorized(channel, opts.token.as_deref());
    let (tx, rx) = mpsc::unbounded_channel::<UsageReport>();
    for r in resend {
        let _ = tx.send(r);
    }
    let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let acks = client.report_usage(outbound).await?.into_inner();
    Ok((tx, acks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ServerLimits;
    use llmgw_shared::pricing::Tokens;

    fn edge_with(keys: usize) -> Edge {
        let edge = Edge::new(ServerLimits { max_body_bytes: 1, body_read_timeout: Duration::from_secs(1) });
        for i in 0..keys {
            let k = UsageKey {
                key_id: format!("k{i:03}").into(),
                project: None,
                team: Some("t".into()),
                model: "m".into(),
                provider: "p".into(),
                upstream_model: "u".into(),
            };
            edge.usage.record(&k, Tokens { input: 1, output: 2, cached_input: 0 }, 3, false);
        }
        edge
    }

    fn outbox(spool: Option<Spool>) -> Outbox {
        Outbox {
            edge_id: "e".into(),
            epoch: "ep".into(),
            next_seq: 1,
            pending: VecDeque::new(),
            max_pending: 1000,
            spool,
        }
    }

    #[test]
    fn reports_hold_at_most_forty_keys_and_acks_clear_them_in_order() {
        let edge = edge_with(95);
        let mut out = outbox(None);
        let reports = out.cut(&edge);
        assert_eq!(reports.iter().map(|r| r.rows.len()).collect::<Vec<_>>(), [40, 40, 15]);
        assert_eq!(reports.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(out.cut(&edge).is_empty(), "the ledger was drained");
        out.acked(&UsageAck { epoch: "ep".into(), seq: 2, grants: vec![] });
        assert_eq!(out.pending.len(), 1);
        out.acked(&UsageAck { epoch: "other".into(), seq: 9, grants: vec![] });
        assert_eq!(out.pending.len(), 1);
        out.acked(&UsageAck { epoch: "ep".into(), seq: 3, grants: vec![] });
        assert!(out.pending.is_empty());
    }

    #[test]
    fn the_spool_survives_a_restart_and_empties_once_acked() {
        let dir = std::env::temp_dir().join(format!("llmgw-spool-{}", rand::random::<u64>()));
        let (spool, inherited) = Spool::open(&dir, "ep").unwrap();
        assert!(inherited.is_empty());
        let mut out = outbox(Some(spool));
        let sent = out.cut(&edge_with(3));
        assert_eq!(sent.len(), 1);
        // A crash now: the next process finds the report, numbered as it was.
        let (_, inherited) = Spool::open(&dir, "ep2").unwrap();
        assert_eq!(inherited, sent);
        out.acked(&UsageAck { epoch: "ep".into(), seq: 1, grants: vec![] });
        let (_, inherited) = Spool::open(&dir, "ep3").unwrap();
        assert!(inherited.is_empty(), "acked reports stay in the spool");
        // A shutdown with reports unacked keeps them.
        out.cut(&edge_with(2));
        if let Some(s) = out.spool.as_mut() {
            s.persist(&out.pending).unwrap();
        }
        let (_, inherited) = Spool::open(&dir, "ep4").unwrap();
        assert_eq!(inherited.len(), 1);
        assert_eq!(inherited[0].seq, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
