//! `llmgw-sim`: many simulated edges against a control plane, to measure what the sync protocol
//! costs at scale — usage ack latency, how fast a key revocation reaches every edge, and how many
//! store transactions the control plane runs meanwhile. See `bench/SIM.md`.
//!
//! A run: open N edges (a WatchConfig and a ReportUsage stream each, multiplexed over a few
//! HTTP/2 connections), wait until each applied a snapshot, warm up, create the keys to revoke,
//! then measure for `--duration-s`: reports flow every interval, and the keys are revoked one at
//! a time, evenly spread over the window, each timed until every edge has its revision. Before
//! and after the window the control plane's (and optionally etcd's) metrics and `/proc` are
//! read; the rates are over the window.

pub mod edge;
pub mod probe;
pub mod propagation;
pub mod stats;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use llmgw_shared::proto::admin_client::AdminClient;
use llmgw_shared::proto::{CreateKeyRequest, GetRequest, ResourceKind, RevokeKeyRequest, UsageRequest};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use edge::Auth;
use probe::ProcStat;
use propagation::{EdgeState, Spread, Tracker};
use stats::{Percentiles, Stats};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "llmgw-sim",
    about = "Simulated edges against an llmgw control plane: usage ack latency, key-revocation \
             propagation, store transaction rate"
)]
pub struct SimArgs {
    /// Control-plane gRPC URLs, comma-separated; the edges' connections are spread over them
    /// (admin calls go to the first).
    #[arg(long, value_delimiter = ',', required = true)]
    pub control_plane: Vec<String>,
    /// Simulated edges.
    #[arg(long, default_value_t = 100)]
    pub edges: usize,
    /// Edges per HTTP/2 connection. Each edge holds two long streams (config and usage) plus
    /// its AckConfig calls: a server with a concurrent-stream limit needs 2 × this + a few below
    /// it (the control plane sets none).
    #[arg(long, default_value_t = 50)]
    pub edges_per_channel: usize,
    /// How often each edge reports usage (±10 % jitter per report).
    #[arg(long, default_value_t = 200)]
    pub report_interval_ms: u64,
    /// Rows (distinct keys) per report.
    #[arg(long, default_value_t = 3)]
    pub rows_per_report: usize,
    /// Size of the key pool the rows are spread over.
    #[arg(long, default_value_t = 20)]
    pub keys: usize,
    /// Take the pool from the control plane's keys (admin Get) instead of synthetic ids
    /// `sim-{run}-key-{i}`.
    #[arg(long)]
    pub existing_keys: bool,
    /// Length of the measured window.
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// Reports flow this long, unmeasured, after every edge has its snapshot.
    #[arg(long, default_value_t = 5)]
    pub warmup_s: u64,
    /// Key revocations to time, spread evenly over the window (keys created just before it).
    #[arg(long, default_value_t = 10)]
    pub revocations: usize,
    /// How long one revocation may take to reach every edge before it counts as not reaching.
    #[arg(long, default_value_t = 10_000)]
    pub propagation_timeout_ms: u64,
    /// Team of the keys created to revoke, and of the usage rows.
    #[arg(long, default_value = "search")]
    pub team: String,
    #[arg(long, env = "LLMGW_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Sent by the simulated edges when the control plane requires one.
    #[arg(long, env = "LLMGW_EDGE_TOKEN", hide_env_values = true)]
    pub edge_token: Option<String>,
    /// The control plane's metrics URL (e.g. http://127.0.0.1:9091/metrics): store and ledger
    /// transaction rates.
    #[arg(long)]
    pub metrics: Option<String>,
    /// etcd's metrics URL (e.g. http://127.0.0.1:2379/metrics): the Txn RPCs and raft
    /// proposals etcd itself saw.
    #[arg(long)]
    pub etcd_metrics: Option<String>,
    /// The control plane's PID, for its CPU and memory (from /proc; same machine only).
    #[arg(long)]
    pub cp_pid: Option<u32>,
    /// etcd's PID, for its CPU and memory.
    #[arg(long)]
    pub etcd_pid: Option<u32>,
    /// Ack each applied revision with AckConfig, as the real edge does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub config_acks: bool,
    /// After the window, how long to wait for the acks of reports still outstanding.
    #[arg(long, default_value_t = 15)]
    pub drain_s: u64,
    /// Edges waiting for their first snapshot at once while connecting.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// How long every edge may take to get its first snapshot.
    #[arg(long, default_value_t = 120)]
    pub connect_timeout_s: u64,
    /// Prefix of edge ids and key names (default: random), so runs do not collide.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Progress lines on stderr this often (0: none).
    #[arg(long, default_value_t = 5)]
    pub progress_s: u64,
}

/// State every edge task shares.
pub struct Sim {
    pub args: SimArgs,
    pub edges: Vec<EdgeState>,
    pub key_ids: Vec<String>,
    pub tracker: Tracker,
    pub stats: Stats,
    /// Stops new reports (the drain).
    pub stop_reports: CancellationToken,
    /// Stops everything.
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
    /// The first revision at which any edge saw each key revoked.
    revoked_seen: Mutex<HashMap<String, u64>>,
}

impl Sim {
    fn saw_revoked(&self, key_id: &str, revision: u64) {
        let mut seen = self.revoked_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.entry(key_id.to_owned()).or_insert(revision);
    }

    fn revoked_at(&self, key_id: &str) -> Option<u64> {
        self.revoked_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key_id).copied()
    }
}

type Admin = AdminClient<InterceptedService<Channel, Auth>>;

fn bearer(token: Option<&str>) -> anyhow::Result<Auth> {
    let Some(t) = token else { return Ok(Auth(None)) };
    let mut v = tonic::metadata::MetadataValue::try_from(format!("Bearer {}", t.trim()))
        .context("the token holds characters a header cannot carry")?;
    v.set_sensitive(true);
    Ok(Auth(Some(v)))
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    let ep = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad control-plane URL {url:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    ep.connect().await.with_context(|| format!("cannot connect to {url}"))
}

/// One revocation's timings.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub revision: u64,
    /// The RevokeKey call's own latency.
    pub call: Duration,
    /// From the call returning (called) until the last edge had the revision; `None`: not every
    /// edge got it in time.
    pub from_return: Option<Duration>,
    pub from_call: Option<Duration>,
    pub reached: usize,
    /// Each edge's delay after the call returned (0 when it had it already).
    pub per_edge: Vec<Duration>,
}

fn revocation(spread: &Spread, called: Instant, returned: Instant) -> Revocation {
    let last = spread.complete_at();
    Revocation {
        revision: spread.revision,
        call: returned - called,
        from_return: last.map(|l| l.saturating_duration_since(returned)),
        from_call: last.map(|l| l.saturating_duration_since(called)),
        reached: spread.arrivals.len(),
        per_edge: spread.arrivals.iter().map(|a| a.saturating_duration_since(returned)).collect(),
    }
}

/// Readings at one end of the window.
#[derive(Debug, Clone, Default)]
struct Reading {
    cp_metrics: Option<String>,
    etcd_metrics: Option<String>,
    cp: Option<ProcStat>,
    etcd: Option<ProcStat>,
    sim: Option<ProcStat>,
    machine: Option<probe::MachineStat>,
    load: Option<f64>,
}

async fn read(args: &SimArgs) -> Reading {
    let scrape = |url: Option<String>| async move {
        let url = url?;
        match probe::fetch(&url).await {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("llmgw-sim: cannot read {url}: {e:#}");
                None
            }
        }
    };
    Reading {
        cp_metrics: scrape(args.metrics.clone()).await,
        etcd_metrics: scrape(args.etcd_metrics.clone()).await,
        cp: args.cp_pid.and_then(|p| probe::proc_stat(&p.to_string())),
        etcd: args.etcd_pid.and_then(|p| probe::proc_stat(&p.to_string())),
        sim: probe::proc_stat("self"),
        machine: probe::machine_stat(),
        load: probe::load_average(),
    }
}

/// Requests the ledger counted for the run's keys and model, against the requests in the reports
/// the simulated edges sent and got acked: exactly once means acked ≤ counted ≤ sent (the
/// difference: reports committed whose ack never arrived, or not committed when the run ended).
#[derive(Debug, Clone, Copy)]
pub struct LedgerCheck {
    pub counted: u64,
    pub acked: u64,
    pub sent: u64,
}

impl LedgerCheck {
    #[must_use]
    pub fn verdict(&self) -> &'static str {
        if self.counted < self.acked {
            "LOST USAGE"
        } else if self.counted > self.sent {
            "COUNTED TWICE"
        } else {
            "ok"
        }
    }
}

/// All-time requests the ledger counted for model `sim` of `team` on the pool's keys.
async fn ledger_requests(
    admin: &mut Admin,
    team: &str,
    keys: &std::collections::HashSet<String>,
) -> anyhow::Result<u64> {
    let req = UsageRequest { team: team.to_owned(), model: "sim".into(), ..UsageRequest::default() };
    let rows = admin.usage(req).await.context("admin Usage")?.into_inner().rows;
    Ok(rows.iter().filter(|r| keys.contains(&r.key)).map(|r| r.requests).sum())
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub args: SimArgs,
    pub channels: usize,
    pub connect: Option<Duration>,
    pub window: Duration,
    pub sent: u64,
    pub acked: u64,
    /// Measured reports still unacked after the drain.
    pub unacked: u64,
    pub ack_ms: Option<Percentiles>,
    pub revocations: Vec<Revocation>,
    /// Edges that reached the revision of the keys' creation, and how long that took.
    pub create_spread: Option<Duration>,
    pub snapshots: u64,
    pub deltas: u64,
    pub stale_updates: u64,
    pub config_acks: u64,
    pub reconnects: u64,
    pub errors: std::collections::BTreeMap<String, (u64, String)>,
    /// What the ledger counted for the run's keys, against what the edges sent.
    pub ledger: Option<LedgerCheck>,
    before: Reading,
    after: Reading,
}

/// Runs the simulation.
///
/// # Errors
/// Bad flags, an unreachable control plane, an admin call failing (no team, bad token).
pub async fn run(args: SimArgs) -> anyhow::Result<Report> {
    if args.edges == 0 || args.edges_per_channel == 0 || args.report_interval_ms == 0 {
        bail!("--edges, --edges-per-channel and --report-interval-ms must be above 0");
    }
    let Some(first_url) = args.control_plane.first().cloned() else { bail!("--control-plane is required") };
    let run_id = args.run_id.clone().unwrap_or_else(|| format!("{:06x}", rand::rng().random::<u32>() >> 8));
    let needs_admin = args.revocations > 0 || args.existing_keys;
    let mut admin: Option<Admin> = if needs_admin {
        if args.admin_token.is_none() {
            bail!(
                "--revocations and --existing-keys need an admin token (--admin-token or LLMGW_ADMIN_TOKEN)"
            );
        }
        let auth = bearer(args.admin_token.as_deref())?;
        Some(AdminClient::with_interceptor(connect(&first_url).await?, auth))
    } else {
        None
    };
    // (id, name as `admin usage` shows it: the name of a configured key, else the id).
    let pool: Vec<(String, String)> = match (&mut admin, args.existing_keys) {
        (Some(admin), true) => {
            let state = admin
                .get(GetRequest { kind: ResourceKind::Key as i32 })
                .await
                .context("admin Get keys")?
                .into_inner()
                .state
                .unwrap_or_default();
            let keys: Vec<(String, String)> = state
                .keys
                .into_iter()
                .filter(|k| !k.revoked)
                .map(|k| (k.id, k.name))
                .take(args.keys)
                .collect();
            if keys.is_empty() {
                bail!("--existing-keys: the control plane has no unrevoked key");
            }
            keys
        }
        _ => (0..args.keys.max(1))
            .map(|i| format!("sim-{run_id}-key-{i}"))
            .map(|id| (id.clone(), id))
            .collect(),
    };
    let key_ids = pool.iter().map(|(id, _)| id.clone()).collect();
    let key_names: std::collections::HashSet<String> = pool.into_iter().map(|(_, name)| name).collect();
    // The ledger's count before the run, to check afterwards that it counted every acked
    // request once.
    let counted_before = match &mut admin {
        Some(a) => Some(ledger_requests(a, &args.team, &key_names).await?),
        None => None,
    };

    let channels_needed = args.edges.div_ceil(args.edges_per_channel);
    let mut channels = Vec::with_capacity(channels_needed);
    for c in 0..channels_needed {
        let url = &args.control_plane[c % args.control_plane.len()];
        channels.push(connect(url).await?);
    }
    let edge_auth = bearer(args.edge_token.as_deref())?;
    let sim = Arc::new(Sim {
        edges: (0..args.edges).map(|i| EdgeState::new(format!("sim-{run_id}-{i}"))).collect(),
        key_ids,
        tracker: Tracker::new(),
        stats: Stats::default(),
        stop_reports: CancellationToken::new(),
        stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
        revoked_seen: Mutex::default(),
        args: args.clone(),
    });
    eprintln!(
        "llmgw-sim: run {run_id}: {} edges over {} connections to {}",
        args.edges,
        channels.len(),
        args.control_plane.join(",")
    );

    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let reporters = TaskTracker::new();
    let started = Instant::now();
    for i in 0..args.edges {
        let channel = channels[i / args.edges_per_channel].clone();
        let client = edge::client(channel, edge_auth.clone());
        sim.tasks.spawn(edge::watch_config(i, client.clone(), sim.clone(), gate.clone()));
        reporters.spawn(edge::report_usage(i, client, sim.clone()));
    }
    reporters.close();
    let progress = (args.progress_s > 0).then(|| tokio::spawn(progress(sim.clone(), started)));

    let result = measure(&sim, &mut admin, &run_id, started).await;

    // Drain: no new reports; wait for the outstanding acks, then stop everything.
    sim.stop_reports.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(args.drain_s), reporters.wait()).await.is_ok();
    if !drained {
        eprintln!("llmgw-sim: reports still unacked after {} s of drain", args.drain_s);
    }
    sim.stop.cancel();
    sim.tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), sim.tasks.wait()).await;
    if let Some(p) = progress {
        p.abort();
    }
    let m = result?;
    let s = &sim.stats;
    let ledger = match (&mut admin, counted_before) {
        (Some(a), Some(before)) => {
            let after = ledger_requests(a, &args.team, &key_names).await?;
            let check = LedgerCheck {
                counted: after.saturating_sub(before),
                acked: Stats::get(&s.requests_acked),
                sent: Stats::get(&s.requests_sent),
            };
            if check.counted < check.acked {
                s.error(
                    "ledger: acked usage not counted (lost)",
                    format!("{} requests acked, {} counted", check.acked, check.counted),
                );
            }
            if check.counted > check.sent {
                s.error(
                    "ledger: usage counted more than once",
                    format!("{} requests sent, {} counted", check.sent, check.counted),
                );
            }
            Some(check)
        }
        _ => None,
    };
    let sent = Stats::get(&s.sent);
    let acked = Stats::get(&s.acked);
    Ok(Report {
        args,
        channels: channels.len(),
        connect: m.connect,
        window: m.window,
        sent,
        acked,
        unacked: sent.saturating_sub(acked),
        ack_ms: Percentiles::of_us_as_ms(&s.take_ack_latencies()),
        revocations: m.revocations,
        create_spread: m.create_spread,
        snapshots: Stats::get(&s.snapshots),
        deltas: Stats::get(&s.deltas),
        stale_updates: Stats::get(&s.stale_updates),
        config_acks: Stats::get(&s.config_acks),
        reconnects: Stats::get(&s.reconnects),
        errors: s.errors(),
        ledger,
        before: m.before,
        after: m.after,
    })
}

struct Measured {
    connect: Option<Duration>,
    window: Duration,
    revocations: Vec<Revocation>,
    create_spread: Option<Duration>,
    before: Reading,
    after: Reading,
}

/// Connect, warm up, create the keys, then the measured window with its revocations.
async fn measure(
    sim: &Arc<Sim>,
    admin: &mut Option<Admin>,
    run_id: &str,
    started: Instant,
) -> anyhow::Result<Measured> {
    let args = &sim.args;
    let connect_deadline = started + Duration::from_secs(args.connect_timeout_s);
    while sim.stats.ready.load(Ordering::Relaxed) < args.edges && Instant::now() < connect_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ready = sim.stats.ready.load(Ordering::Relaxed);
    let connect = (ready == args.edges).then(|| started.elapsed());
    if connect.is_none() {
        sim.stats.error(
            "watch: not every edge got a snapshot in time",
            format!("{ready} of {} in {} s", args.edges, args.connect_timeout_s),
        );
    }
    eprintln!("llmgw-sim: {ready}/{} edges have a snapshot after {:.1?}", args.edges, started.elapsed());
    tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;

    let patience = Duration::from_millis(args.propagation_timeout_ms);
    let mut to_revoke = Vec::new();
    let mut create_spread = None;
    if let Some(admin) = admin.as_mut() {
        let mut last = 0;
        let t = Instant::now();
        for i in 0..args.revocations {
            let req = CreateKeyRequest {
                name: format!("sim-{run_id}-{i}"),
                team: args.team.clone(),
                ..Default::default()
            };
            let created = admin.create_key(req).await.with_context(|| {
                format!("admin CreateKey in team {:?} (apply a config with that team first)", args.team)
            })?;
            let created = created.into_inner();
            last = last.max(created.revision);
            to_revoke.push(created.id);
        }
        if last > 0 {
            create_spread = sim
                .tracker
                .spread(&sim.edges, last, patience)
                .await
                .complete_at()
                .map(|l| l.saturating_duration_since(t));
        }
    }

    let before = read(args).await;
    sim.stats.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let duration = Duration::from_secs(args.duration_s);
    let mut revocations = Vec::new();
    if let Some(admin) = admin.as_mut() {
        let spacing = duration / u32::try_from(to_revoke.len().max(1)).unwrap_or(u32::MAX);
        for (i, id) in to_revoke.iter().enumerate() {
            // Mid-slot: the first revocation does not land on the window's first reports.
            let slot = t0 + spacing * u32::try_from(i).unwrap_or(u32::MAX) + spacing / 2;
            tokio::time::sleep_until(slot).await;
            let called = Instant::now();
            let req = RevokeKeyRequest { name_or_id: id.clone(), wait: false, wait_timeout_ms: 0 };
            let resp = admin.revoke_key(req).await.context("admin RevokeKey")?.into_inner();
            let returned = Instant::now();
            let revision = if resp.revision > 0 {
                resp.revision
            } else {
                // No revision in the answer: the first delta that shows the key revoked tells.
                let deadline = returned + patience;
                loop {
                    if let Some(r) = sim.revoked_at(id) {
                        break r;
                    }
                    if Instant::now() >= deadline {
                        bail!("key {id} was revoked but no edge saw it revoked within {patience:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            let spread = sim.tracker.spread(&sim.edges, revision, patience).await;
            let r = revocation(&spread, called, returned);
            eprintln!(
                "llmgw-sim: revocation {}/{} at revision {}: call {:.1?}, every edge after {} ({} of {})",
                i + 1,
                to_revoke.len(),
                r.revision,
                r.call,
                r.from_return.map_or_else(|| "—".to_owned(), |d| format!("{d:.1?}")),
                r.reached,
                sim.edges.len()
            );
            revocations.push(r);
        }
    }
    tokio::time::sleep_until(t0 + duration).await;
    sim.stats.measuring.store(false, Ordering::Relaxed);
    let window = t0.elapsed();
    let after = read(args).await;
    Ok(Measured { connect, window, revocations, create_spread, before, after })
}

async fn progress(sim: Arc<Sim>, started: Instant) {
    let every = Duration::from_secs(sim.args.progress_s);
    let mut seen = 0usize;
    loop {
        tokio::time::sleep(every).await;
        let s = &sim.stats;
        let (recent, len) = s.ack_latencies_since(seen);
        seen = len;
        let p = Percentiles::of_us_as_ms(&recent);
        let (sent, acked) = (Stats::get(&s.sent_total), Stats::get(&s.acked_total));
        eprintln!(
            "llmgw-sim: t={:>4.0?} ready {}/{} reports sent {sent} acked {acked} in flight {} ack p50/p99 {} deltas {} errors {}",
            started.elapsed(),
            s.ready.load(Ordering::Relaxed),
            sim.edges.len(),
            sent.saturating_sub(acked),
            p.map_or_else(|| "—".to_owned(), |p| format!("{:.0}/{:.0} ms", p.p50, p.p99)),
            Stats::get(&s.deltas),
            s.error_count(),
        );
    }
}

impl Report {
    /// Protocol errors seen (the exit status says whether there were any).
    #[must_use]
    pub fn protocol_errors(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }

    /// Revocations that did not reach every edge in time.
    #[must_use]
    pub fn unpropagated(&self) -> usize {
        self.revocations.iter().filter(|r| r.from_return.is_none()).count()
    }

    fn rate(
        &self,
        metric: &str,
        text: impl Fn(&Reading) -> Option<&String>,
        want: &[(&str, &str)],
    ) -> Option<f64> {
        // A series not exported yet counts as 0 (e.g. no conflicts so far).
        let before = probe::sum(text(&self.before)?, metric, want).unwrap_or(0.0);
        let after = probe::sum(text(&self.after)?, metric, want).unwrap_or(0.0);
        Some((after - before) / self.window.as_secs_f64())
    }

    fn cp_rate(&self, metric: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.rate(metric, |r| r.cp_metrics.as_ref(), want)
    }

    fn etcd_rate(&self, metric: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.rate(metric, |r| r.etcd_metrics.as_ref(), want)
    }

    /// CPU as % of one core over the window, peak RSS in MiB, and the time its threads waited
    /// for a CPU as % of the window.
    fn process(&self, which: impl Fn(&Reading) -> Option<ProcStat>) -> Option<(f64, f64, f64)> {
        let (b, a) = (which(&self.before)?, which(&self.after)?);
        let secs = self.window.as_secs_f64();
        let cpu = a.cpu.saturating_sub(b.cpu).as_secs_f64() / secs * 100.0;
        let wait = a.run_wait.saturating_sub(b.run_wait).as_secs_f64() / secs * 100.0;
        Some((cpu, a.hwm_kib as f64 / 1024.0, wait))
    }

    /// The mean of a Prometheus histogram or summary over the window (`_sum` / `_count`).
    fn cp_mean(&self, metric: &str, want: &[(&str, &str)]) -> Option<f64> {
        let get = |r: &Reading, suffix: &str| {
            r.cp_metrics.as_ref().and_then(|t| probe::sum(t, &format!("{metric}{suffix}"), want))
        };
        let sum = get(&self.after, "_sum")? - get(&self.before, "_sum").unwrap_or(0.0);
        let count = get(&self.after, "_count")? - get(&self.before, "_count").unwrap_or(0.0);
        (count > 0.0).then(|| sum / count)
    }

    /// The whole machine's busy CPU over the window, in cores, and how many it has.
    fn machine(&self) -> Option<(f64, usize)> {
        let (b, a) = (self.before.machine?, self.after.machine?);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let total = a.total.saturating_sub(b.total) as f64;
        (total > 0.0).then(|| (a.busy.saturating_sub(b.busy) as f64 / total * cores as f64, cores))
    }

    fn propagation(&self, f: impl Fn(&Revocation) -> Option<Duration>) -> Option<Percentiles> {
        let all: Option<Vec<f64>> =
            self.revocations.iter().map(|r| f(r).map(|d| d.as_secs_f64() * 1000.0)).collect();
        Percentiles::of(all?)
    }

    /// The report as Markdown: a two-column table of everything measured, then the protocol
    /// errors (if any), then one summary row (with its header) to collect runs in one table.
    #[must_use]
    pub fn render(&self) -> String {
        let a = &self.args;
        let ms = |p: Option<Percentiles>| {
            p.map_or_else(|| "—".to_owned(), |p| format!("{:.0} / {:.0} / {:.0} ms", p.p50, p.p99, p.max))
        };
        let num = |v: Option<f64>, unit: &str| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.1}{unit}"));
        let store_txns = self.cp_rate("llmgw_cp_store_call_duration_seconds_count", &[("op", "txn")]);
        let usage_txns = self.cp_rate("llmgw_cp_usage_txns_total", &[]);
        let usage_writes =
            self.cp_rate("llmgw_cp_usage_txns_total", &[("kind", "write"), ("outcome", "committed")]);
        let reports_per_txn = self.cp_mean("llmgw_cp_usage_txn_reports", &[]);
        let store_txn_ms =
            self.cp_mean("llmgw_cp_store_call_duration_seconds", &[("op", "txn")]).map(|s| s * 1000.0);
        let commit_ms = self.cp_mean("llmgw_cp_usage_commit_duration_seconds", &[]).map(|s| s * 1000.0);
        let oldest_ms = self.cp_mean("llmgw_cp_usage_ack_delay_seconds", &[]).map(|s| s * 1000.0);
        let etcd_txns = self.etcd_rate("grpc_server_handled_total", &[("grpc_method", "Txn")]);
        let etcd_proposals = self.etcd_rate("etcd_server_proposals_committed_total", &[]);
        let cp = self.process(|r| r.cp);
        let etcd = self.process(|r| r.etcd);
        let sim = self.process(|r| r.sim);
        let proc = |p: Option<(f64, f64, f64)>| {
            p.map_or_else(
                || "—".to_owned(),
                |(cpu, rss, wait)| {
                    format!("{cpu:.0} % of a core, peak RSS {rss:.0} MiB; waiting for a CPU {wait:.0} % of the window (summed over its threads)")
                },
            )
        };
        let from_return = self.propagation(|r| r.from_return);
        let from_call = self.propagation(|r| r.from_call);
        let per_edge = Percentiles::of(
            self.revocations
                .iter()
                .flat_map(|r| r.per_edge.iter().map(|d| d.as_secs_f64() * 1000.0))
                .collect(),
        );
        let calls = Percentiles::of(self.revocations.iter().map(|r| r.call.as_secs_f64() * 1000.0).collect());
        let secs = self.window.as_secs_f64();

        let mut out = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(out, "| {k} | {v} |");
        };
        row("measure", "value".into());
        row("---", "---".into());
        row(
            "edges",
            format!(
                "{} over {} HTTP/2 connection{} to {}",
                a.edges,
                self.channels,
                if self.channels == 1 { "" } else { "s" },
                a.control_plane.join(", ")
            ),
        );
        row(
            "every edge had a snapshot after",
            self.connect.map_or_else(|| "— (not all)".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        );
        row("measured window", format!("{secs:.1} s, after {} s of warm-up", a.warmup_s));
        row(
            "usage reports",
            format!(
                "every {} ms ±10 %, {} rows over {} keys: {} sent, {} acked ({:.0}/s), {} unacked after the drain",
                a.report_interval_ms,
                a.rows_per_report,
                a.keys,
                self.sent,
                self.acked,
                self.acked as f64 / secs,
                self.unacked
            ),
        );
        row("usage ack latency p50 / p99 / max", ms(self.ack_ms));
        row(
            "revocations reaching every edge",
            format!(
                "{} of {} (timeout {} ms)",
                self.revocations.len() - self.unpropagated(),
                self.revocations.len(),
                a.propagation_timeout_ms
            ),
        );
        row("propagation after RevokeKey returned p50 / p99 / max", ms(from_return));
        row("propagation from the RevokeKey call p50 / p99 / max", ms(from_call));
        row("per-edge arrival after RevokeKey returned p50 / p99 / max", ms(per_edge));
        row("RevokeKey call p50 / p99 / max", ms(calls));
        row(
            "CreateKey ×R: every edge had the last one after",
            self.create_spread
                .map_or_else(|| "—".to_owned(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)),
        );
        row("control-plane store txns/s (all)", num(store_txns, ""));
        let kind = |k: &str, o: &str| {
            num(self.cp_rate("llmgw_cp_usage_txns_total", &[("kind", k), ("outcome", o)]), "")
        };
        row(
            "usage ledger txns/s (all kinds)",
            format!(
                "{}: reads {}, writes committed {}, conflicts {}, errors {}",
                num(usage_txns, ""),
                kind("read", "ok"),
                kind("write", "committed"),
                kind("write", "conflict"),
                kind("write", "error")
            ),
        );
        row("usage ledger write txns/s (committed)", num(usage_writes, ""));
        row("usage reports per write txn (mean)", num(reports_per_txn, ""));
        row("usage write txn latency (mean)", num(commit_ms, " ms"));
        row("usage: oldest report's wait for its txn (mean)", num(oldest_ms, " ms"));
        row("control-plane store txn latency (mean)", num(store_txn_ms, " ms"));
        row("etcd Txn RPCs/s", num(etcd_txns, ""));
        row("etcd raft proposals committed/s", num(etcd_proposals, ""));
        row("control plane", proc(cp));
        row("etcd", proc(etcd));
        row("simulator", proc(sim));
        row(
            "machine (all processes)",
            match (self.machine(), self.after.load) {
                (Some((busy, cores)), load) => format!(
                    "{busy:.2} of {cores} cores busy; load average {}",
                    load.map_or_else(|| "—".to_owned(), |l| format!("{l:.1}"))
                ),
                _ => "—".to_owned(),
            },
        );
        row(
            "config updates received",
            format!(
                "{} snapshots, {} deltas, {} stale; {} AckConfig calls",
                self.snapshots, self.deltas, self.stale_updates, self.config_acks
            ),
        );
        row(
            "ledger check: requests counted / acked / sent",
            self.ledger.map_or_else(
                || "— (needs an admin token)".to_owned(),
                |l| format!("{} / {} / {} ({})", l.counted, l.acked, l.sent, l.verdict()),
            ),
        );
        row("stream reconnects", self.reconnects.to_string());
        row("protocol errors", self.protocol_errors().to_string());
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nProtocol errors:\n");
            for (kind, (n, first)) in &self.errors {
                let _ = writeln!(out, "- {kind}: {n} (first: {first})");
            }
        }
        let p = |p: Option<Percentiles>, f: fn(&Percentiles) -> f64| {
            p.map_or_else(|| "—".to_owned(), |p| format!("{:.0}", f(&p)))
        };
        let _ = writeln!(
            out,
            "\n| edges | reports sent / acked | ack p50 / p99 ms | propagation p50 / p99 / max ms | store txns/s | usage txns/s | etcd Txn/s | CP CPU % | CP RSS MiB | ledger | protocol errors |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n\
             | {} | {} / {} | {} / {} | {} / {} / {} | {} | {} | {} | {} | {} | {} | {} |",
            a.edges,
            self.sent,
            self.acked,
            p(self.ack_ms, |p| p.p50),
            p(self.ack_ms, |p| p.p99),
            p(from_return, |p| p.p50),
            p(from_return, |p| p.p99),
            p(from_return, |p| p.max),
            num(store_txns, ""),
            num(usage_txns, ""),
            num(etcd_txns, ""),
            cp.map_or_else(|| "—".to_owned(), |(c, _, _)| format!("{c:.0}")),
            cp.map_or_else(|| "—".to_owned(), |(_, r, _)| format!("{r:.0}")),
            self.ledger.map_or("—", |l| l.verdict()),
            self.protocol_errors(),
        );
        out
    }
}
