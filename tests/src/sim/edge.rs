//! One simulated edge: a WatchConfig stream (with AckConfig of the newest revision, as the real
//! edge sends it) and a ReportUsage stream sending numbered reports on a jittered interval. No
//! HTTP server, no config is built: only the sync protocol, checked as it goes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llmgw_shared::proto::sync_client::SyncClient;
use llmgw_shared::proto::{
    AckConfigRequest, ConfigUpdate, UsageAck, UsageReport, UsageRow, WatchConfigRequest, config_update,
    resource,
};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::Sim;
use super::stats::Stats;

/// Adds `authorization: Bearer TOKEN` to every call when a token is set.
#[derive(Clone)]
pub struct Auth(pub Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = SyncClient<InterceptedService<Channel, Auth>>;

/// Snapshots of a large config exceed tonic's 4 MiB default, as on the real edge.
const MAX_MESSAGE: usize = 1 << 30;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[must_use]
pub fn client(channel: Channel, auth: Auth) -> Client {
    SyncClient::with_interceptor(channel, auth).max_decoding_message_size(MAX_MESSAGE)
}

fn jittered(d: Duration, lo: f64, hi: f64) -> Duration {
    d.mul_f64(rand::rng().random_range(lo..hi))
}

async fn pause(sim: &Sim, backoff: &mut Duration) -> bool {
    Stats::add(&sim.stats.reconnects);
    let wait = jittered(*backoff, 0.5, 1.5);
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        () = sim.stop.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// Follows the config stream until the run stops; reconnects (with the revision it has) after
/// a failure, which counts as a protocol error.
pub async fn watch_config(ix: usize, mut client: Client, sim: Arc<Sim>, gate: Arc<Semaphore>) {
    let edge = &sim.edges[ix];
    // The first snapshot waits for a permit, so a large run opens its streams in waves instead
    // of all at once.
    let mut permit = tokio::select! {
        () = sim.stop.cancelled() => return,
        p = gate.acquire_owned() => p.ok(),
    };
    let (applied, applied_rx) = watch::channel(0u64);
    if sim.args.config_acks {
        sim.tasks.spawn(ack_config(edge.id.clone(), client.clone(), sim.clone(), applied_rx));
    }
    let mut have = 0u64;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let req = WatchConfigRequest {
            edge_id: edge.id.clone(),
            known_revision: have,
            version: "llmgw-sim".into(),
            // Simulated edges hold no config; one message per snapshot keeps their count simple.
            accepts_parts: false,
        };
        let opened = tokio::select! {
            () = sim.stop.cancelled() => return,
            r = client.watch_config(req) => r,
        };
        match opened {
            Err(s) => sim.stats.error(format!("watch: open failed ({:?})", s.code()), s.message()),
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    let msg = tokio::select! {
                        () = sim.stop.cancelled() => return,
                        m = stream.message() => m,
                    };
                    match msg {
                        Ok(Some(update)) => {
                            let at = Instant::now();
                            let revision = on_update(&sim, update, have);
                            if revision > have {
                                have = revision;
                                sim.tracker.received(edge, revision, at);
                                applied.send_replace(revision);
                            }
                            if permit.take().is_some() {
                                sim.stats.ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            backoff = FIRST_BACKOFF;
                        }
                        Ok(None) => {
                            sim.stats.error("watch: stream ended by the control plane", &edge.id);
                            break;
                        }
                        Err(s) => {
                            sim.stats.error(format!("watch: stream failed ({:?})", s.code()), s.message());
                            break;
                        }
                    }
                }
            }
        }
        if !pause(&sim, &mut backoff).await {
            return;
        }
    }
}

/// Checks one update; the revision it brings the edge to (`have` when it brings nothing new).
fn on_update(sim: &Sim, update: ConfigUpdate, have: u64) -> u64 {
    let revision = match update.update {
        Some(config_update::Update::Snapshot(s)) => {
            Stats::add(&sim.stats.snapshots);
            s.revision
        }
        Some(config_update::Update::Delta(d)) => {
            Stats::add(&sim.stats.deltas);
            if have == 0 {
                sim.stats.error("watch: a delta before any snapshot", format!("delta to {}", d.revision));
                return have;
            }
            for r in &d.upserts {
                if let Some(resource::Resource::Key(k)) = &r.resource
                    && k.revoked
                {
                    sim.saw_revoked(&k.id, d.revision);
                }
            }
            d.revision
        }
        None => {
            sim.stats.error("watch: an empty update", "");
            return have;
        }
    };
    if revision == 0 {
        sim.stats.error("watch: an update without a revision", "");
    }
    if revision <= have {
        Stats::add(&sim.stats.stale_updates);
    }
    revision.max(have)
}

/// Acks the newest applied revision, one call at a time, like the real edge: a burst of updates
/// costs one ack.
async fn ack_config(edge_id: String, mut client: Client, sim: Arc<Sim>, mut applied: watch::Receiver<u64>) {
    loop {
        let changed = tokio::select! {
            () = sim.stop.cancelled() => return,
            c = applied.changed() => c,
        };
        if changed.is_err() {
            return;
        }
        let applied_revision = *applied.borrow_and_update();
        let req = AckConfigRequest { edge_id: edge_id.clone(), applied_revision };
        let r = tokio::select! {
            () = sim.stop.cancelled() => return,
            r = client.ack_config(req) => r,
        };
        match r {
            Ok(_) => Stats::add(&sim.stats.config_acks),
            Err(s) => sim.stats.error(format!("config ack failed ({:?})", s.code()), s.message()),
        }
    }
}

struct Sent {
    report: UsageReport,
    requests: u64,
    at: Instant,
    /// Sent in the measured window: its ack is a sample.
    measured: bool,
}

/// What a report's rows say: `rows` distinct keys of the pool, a few requests each.
fn rows(sim: &Sim, hour_unix: i64) -> Vec<UsageRow> {
    let pool = &sim.key_ids;
    let n = sim.args.rows_per_report.min(pool.len());
    let mut rng = rand::rng();
    rand::seq::index::sample(&mut rng, pool.len(), n)
        .into_iter()
        .map(|i| {
            let requests = rng.random_range(1..=4u64);
            UsageRow {
                key_id: pool[i].clone(),
                team: sim.args.team.clone(),
                model: "sim".into(),
                provider: "sim".into(),
                upstream_model: "sim-1".into(),
                requests,
                input_tokens: requests * 120,
                output_tokens: requests * 30,
                cost_micro_usd: requests * 36,
                hour_unix,
                ..UsageRow::default()
            }
        })
        .collect()
}

/// Reports usage until the run stops sending, then waits for the last acks (or the stop).
/// After a failure it reconnects and resends every unacked report, in seq order, as the real
/// edge does.
pub async fn report_usage(ix: usize, mut client: Client, sim: Arc<Sim>) {
    let edge_id = sim.edges[ix].id.clone();
    let epoch = format!("{:016x}", rand::rng().random::<u64>());
    let interval = Duration::from_millis(sim.args.report_interval_ms);
    let mut next_seq = 1u64;
    let mut unacked: VecDeque<Sent> = VecDeque::new();
    // Edges start at random points of the interval, as real ones would.
    let mut next_at = Instant::now() + jittered(interval, 0.0, 1.0);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let (tx, rx) = mpsc::unbounded_channel::<UsageReport>();
        for s in &unacked {
            let _ = tx.send(s.report.clone());
        }
        let opened = tokio::select! {
            () = sim.stop.cancelled() => return,
            r = client.report_usage(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)) => r,
        };
        let mut acks = match opened {
            Ok(r) => r.into_inner(),
            Err(s) => {
                sim.stats.error(format!("usage: open failed ({:?})", s.code()), s.message());
                if !pause(&sim, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let draining = sim.stop_reports.is_cancelled();
            if draining && unacked.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                () = sim.stop.cancelled() => return,
                () = sim.stop_reports.cancelled(), if !draining => {}
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => {
                        on_ack(&sim, &epoch, &mut unacked, &ack);
                        backoff = FIRST_BACKOFF;
                    }
                    Ok(None) => {
                        sim.stats.error("usage: stream ended by the control plane", &edge_id);
                        break;
                    }
                    Err(s) => {
                        sim.stats.error(format!("usage: stream failed ({:?})", s.code()), s.message());
                        break;
                    }
                },
                () = tokio::time::sleep_until(next_at), if !draining => {
                    let now = Instant::now();
                    let hour_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                    let report = UsageReport {
                        edge_id: edge_id.clone(),
                        epoch: epoch.clone(),
                        seq: next_seq,
                        rows: rows(&sim, hour_unix),
                        holdings: Vec::new(),
                    };
                    next_seq += 1;
                    let measured = sim.stats.measuring.load(std::sync::atomic::Ordering::Relaxed);
                    let requests = report.rows.iter().map(|r| r.requests).sum();
                    Stats::add(&sim.stats.sent_total);
                    Stats::add_n(&sim.stats.requests_sent, requests);
                    if measured {
                        Stats::add(&sim.stats.sent);
                    }
                    let _ = tx.send(report.clone());
                    unacked.push_back(Sent { report, requests, at: now, measured });
                    // ±10 %, and no catching up after a stall: the schedule restarts from now.
                    next_at = (next_at + jittered(interval, 0.9, 1.1)).max(now);
                }
            }
        }
        if !pause(&sim, &mut backoff).await {
            return;
        }
    }
}

/// One ack per report, in the order sent (sync.proto): anything else is a protocol error.
fn on_ack(sim: &Sim, epoch: &str, unacked: &mut VecDeque<Sent>, ack: &UsageAck) {
    let now = Instant::now();
    if ack.epoch != epoch {
        sim.stats.error("usage: an ack for another epoch", format!("{} (ours {epoch})", ack.epoch));
        return;
    }
    let Some(front) = unacked.front() else {
        sim.stats.error("usage: an ack with no report outstanding", format!("seq {}", ack.seq));
        return;
    };
    if front.report.seq != ack.seq {
        sim.stats.error(
            "usage: an ack out of order",
            format!("expected seq {}, got {}", front.report.seq, ack.seq),
        );
    }
    // Whatever the order, everything up to the acked seq is done.
    while unacked.front().is_some_and(|s| s.report.seq <= ack.seq) {
        if let Some(s) = unacked.pop_front() {
            Stats::add(&sim.stats.acked_total);
            Stats::add_n(&sim.stats.requests_acked, s.requests);
            if s.measured {
                Stats::add(&sim.stats.acked);
                sim.stats.ack_latency(now.saturating_duration_since(s.at));
            }
        }
    }
}
