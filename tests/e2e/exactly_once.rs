//! Usage is exactly-once from edge to ledger (invariant 3): 1,000 requests spread over edges
//! while control planes are SIGKILLed and restarted and an edge is SIGTERMed and restarted on
//! its spool; afterwards the ledger equals what the clients were served, to the request and the
//! micro-dollar.
//!
//! Traffic is paced by tickets, not by time: the test releases a number of requests, waits until
//! a number of them were answered, then strikes, so every kill lands mid-traffic on any machine.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use llmgw_tests::etcd::Etcd;
use llmgw_tests::mock::MockProvider;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::assert_eventually;
use crate::cluster::{ADMIN_TOKEN, apply, cp_env, create_key};
use crate::harness::{Llmgw, PATIENCE, admin};

/// Requests each test serves.
const REQUESTS: u64 = 1_000;
/// Concurrent clients: modest, the machine has 2 cores and runs other tests.
const CLIENTS: usize = 8;
/// The mock's answer to every request: 7 input and 5 output tokens.
const PROMPT: &str = "count me once #mock:usage=7,5";
/// 7 × $0.30 + 5 × $1,234.50 per million tokens = 6,174.6 micro-USD, rounded up per request to
/// 6,175: a ledger that priced summed tokens instead would be off by 0.4 µ$ a request.
const MICRO_USD_PER_REQUEST: u64 = 6_175;
/// How long the ledger may take to catch up after the last request: edges back off up to 5 s
/// (×1.5 jitter) between reconnects, and a restarted edge resends its spool first.
const LEDGER_PATIENCE: Duration = Duration::from_secs(60);

fn config(base_url: &str) -> String {
    crate::fixtures::priced_config(base_url, (0.3, 1234.5), "")
}

/// Clients sending one request per ticket to the edges in `edges`; a ticket whose edge cannot
/// be reached (it is shutting down) is tried on the next edge, so every ticket ends served.
struct Traffic {
    tickets: Arc<Semaphore>,
    released: u64,
    edges: Arc<RwLock<Vec<String>>>,
    answered: watch::Receiver<u64>,
    served: Arc<AtomicU64>,
    /// Connection failures: tried again on another edge.
    unreachable: Arc<AtomicU64>,
    /// Anything but a 200 or a connection failure.
    unexpected: Arc<Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(secret: &str, edges: &[&Llmgw]) -> Self {
        let tickets = Arc::new(Semaphore::new(0));
        let edges =
            Arc::new(RwLock::new(edges.iter().map(|e| e.url("/v1/chat/completions")).collect::<Vec<_>>()));
        let (done, answered) = watch::channel(0u64);
        let done = Arc::new(done);
        let served = Arc::new(AtomicU64::new(0));
        let unreachable = Arc::new(AtomicU64::new(0));
        let unexpected = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let clients = (0..CLIENTS)
            .map(|i| {
                let (tickets, edges, done) = (tickets.clone(), edges.clone(), done.clone());
                let (served, unreachable, unexpected) =
                    (served.clone(), unreachable.clone(), unexpected.clone());
                let (http, secret) = (http.clone(), secret.to_owned());
                tokio::spawn(async move {
                    let body =
                        json!({ "model": "chat", "messages": [{ "role": "user", "content": PROMPT }] });
                    // Closed: the test is over.
                    while let Ok(ticket) = tickets.acquire().await {
                        ticket.forget();
                        // This client's edge first, then the others in turn; 100 tries at most.
                        for pick in i..i + 100 {
                            let url = {
                                let edges = edges.read().unwrap();
                                edges[pick % edges.len()].clone()
                            };
                            let sent = http.post(&url).bearer_auth(&secret).json(&body).send().await;
                            let resp = match sent {
                                Ok(r) => r,
                                Err(e) if e.is_connect() || e.is_request() => {
                                    unreachable.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                Err(e) => {
                                    unexpected.lock().unwrap().push(format!("{url}: {e}"));
                                    break;
                                }
                            };
                            let status = resp.status().as_u16();
                            match resp.bytes().await {
                                Ok(_) if status == 200 => {
                                    served.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(b) => unexpected
                                    .lock()
                                    .unwrap()
                                    .push(format!("{url}: {status} {}", String::from_utf8_lossy(&b))),
                                Err(e) => {
                                    unexpected.lock().unwrap().push(format!("{url}: {status}, body: {e}"))
                                }
                            }
                            break;
                        }
                        done.send_modify(|n| *n += 1);
                    }
                })
            })
            .collect();
        Self { tickets, released: 0, edges, answered, served, unreachable, unexpected, clients }
    }

    /// Lets `n` more requests go.
    fn release(&mut self, n: u64) {
        self.released += n;
        assert!(self.released <= REQUESTS);
        self.tickets.add_permits(n as usize);
    }

    /// Waits until `n` requests were answered (served or not).
    async fn answered(&mut self, n: u64) {
        assert!(n <= self.released, "waiting for {n} answers with {} released", self.released);
        let reached = tokio::time::timeout(PATIENCE * 3, self.answered.wait_for(|a| *a >= n)).await;
        assert!(
            reached.is_ok_and(|r| r.is_ok()),
            "only {} of {n} requests answered",
            *self.answered.borrow()
        );
    }

    fn remove_edge(&self, edge: &Llmgw) {
        let url = edge.url("/v1/chat/completions");
        self.edges.write().unwrap().retain(|u| *u != url);
    }

    fn add_edge(&self, edge: &Llmgw) {
        self.edges.write().unwrap().push(edge.url("/v1/chat/completions"));
    }

    /// Sends the rest of the requests, waits for every answer, and returns how many were
    /// served, after checking that nothing but connection failures went wrong.
    async fn finish(mut self) -> u64 {
        self.release(REQUESTS - self.released);
        self.answered(REQUESTS).await;
        self.tickets.close();
        for c in self.clients.drain(..) {
            c.await.unwrap();
        }
        let unexpected = self.unexpected.lock().unwrap().clone();
        assert!(unexpected.is_empty(), "{} unexpected answers: {unexpected:#?}", unexpected.len());
        let served = self.served.load(Ordering::Relaxed);
        eprintln!(
            "served {served} of {REQUESTS} requests; {} attempts found their edge gone and were retried elsewhere",
            self.unreachable.load(Ordering::Relaxed)
        );
        served
    }
}

/// The ledger's totals for the key `app`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ledger {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    micro_usd: u64,
    errors: u64,
}

async fn ledger(cp: &Llmgw) -> Option<Ledger> {
    let run = admin(&cp.grpc_url(), ADMIN_TOKEN, &["usage", "--key", "app", "-o", "json"]).await;
    if !run.ok {
        return None;
    }
    let v: Value = serde_json::from_str(&run.stdout).ok()?;
    let mut sum = Ledger::default();
    let mut cost = 0.0;
    for r in v["rows"].as_array()? {
        sum.requests += r["requests"].as_u64()?;
        sum.input_tokens += r["input_tokens"].as_u64()?;
        sum.output_tokens += r["output_tokens"].as_u64()?;
        sum.errors += r["errors"].as_u64()?;
        cost += r["cost_usd"].as_f64()?;
    }
    let micro = cost * 1e6;
    // The ledger counts integer micro-USD: a fraction here would be a pricing bug, not noise.
    assert!((micro - micro.round()).abs() < 1e-3, "cost_usd {cost} is not a whole number of micro-USD");
    sum.micro_usd = micro.round() as u64;
    Some(sum)
}

/// What a process's usage metrics say, for the failure message.
async fn usage_metrics(p: &Llmgw, names: &[&str]) -> String {
    let mut out = Vec::new();
    for name in names {
        out.push(format!("{name}={}", p.metric(name, &[]).await));
    }
    out.join(" ")
}

const EDGE_METRICS: &[&str] =
    &["llmgw_usage_reports_pending", "llmgw_usage_reports_acked_total", "llmgw_usage_reports_dropped_total"];
const CP_METRICS: &[&str] = &[
    "llmgw_cp_usage_reports_total",
    "llmgw_cp_usage_duplicates_total",
    "llmgw_cp_usage_reports_failed_total",
    "llmgw_cp_usage_pending_reports",
];

/// Waits until the ledger (read through `cp`) holds exactly `served` requests at their price;
/// fails at once if it ever holds more, since a count never goes back.
async fn assert_ledger_equals(cp: &Llmgw, edges: &[&Llmgw], served: u64) -> Duration {
    let want = Ledger {
        requests: served,
        input_tokens: 7 * served,
        output_tokens: 5 * served,
        micro_usd: MICRO_USD_PER_REQUEST * served,
        errors: 0,
    };
    let start = Instant::now();
    let mut last = None;
    loop {
        let got = ledger(cp).await;
        if got == Some(want) {
            return start.elapsed();
        }
        if let Some(g) = got {
            assert!(
                g.requests <= served,
                "the ledger counted {} requests, {served} were served: {g:?}",
                g.requests
            );
        }
        last = got.or(last);
        if start.elapsed() > LEDGER_PATIENCE {
            let mut diag = vec![format!("control plane: {}", usage_metrics(cp, CP_METRICS).await)];
            for e in edges {
                diag.push(format!("edge {}: {}", e.http, usage_metrics(e, EDGE_METRICS).await));
            }
            panic!(
                "the ledger never matched what was served after {LEDGER_PATIENCE:?}:\n  want {want:?}\n  got  \
                 {last:?}\n  {}",
                diag.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An edge of the control planes at `urls` (comma-separated) under a fixed id, reporting every
/// 100 ms, spooling to `dir/spool`; `dir` outlives the process, so a restart finds the spool.
async fn edge(urls: &str, id: &str, dir: &Path) -> Llmgw {
    let spool = dir.join("spool");
    let args = [
        "edge",
        "--control-plane",
        urls,
        "--edge-id",
        id,
        "--spool-dir",
        spool.to_str().unwrap(),
        "--usage-interval-ms",
        "100",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let edge = Llmgw::spawn(&args, &[], dir).await;
    edge.wait_ready().await;
    edge
}

/// A loopback port nothing listens on now, for a process started later.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn has_log(p: &Llmgw, message: &str) -> bool {
    p.logs().iter().any(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["message"] == message))
}

/// A control-plane replica on the etcd at `endpoints`, serving gRPC on `grpc`.
async fn replica(endpoints: &str, id: &str, grpc: &str) -> Llmgw {
    let args = ["--store", "etcd", "--etcd-endpoints", endpoints, "--id", id, "--grpc-listen", grpc];
    Llmgw::control_plane(&args, &cp_env()).await
}

/// Resends a control-plane process found already counted, so far.
async fn duplicates(cp: &Llmgw) -> u64 {
    cp.metric("llmgw_cp_usage_duplicates_total", &[]).await as u64
}

/// One control plane on the embedded store (its file survives the kills), three edges with
/// spools. The control plane is SIGKILLed twice mid-traffic; while it is down the second time,
/// an edge is SIGTERMed (its last reports cannot be acked, so they go to its spool), and comes
/// back after the control plane does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_two_control_plane_kills_and_an_edge_restart() {
    let started = Instant::now();
    let mock = MockProvider::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("store");
    // Restarts bind the same address, so the edges find them again.
    let grpc = format!("127.0.0.1:{}", free_port());
    let start_cp = || {
        let args = [
            "--store",
            "embedded",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--id",
            "cp-1",
            "--grpc-listen",
            &grpc,
        ];
        async move { Llmgw::control_plane(&args, &cp_env()).await }
    };
    let mut cp = start_cp().await;
    apply(&cp, &config(&mock.base_url())).await;
    let secret = create_key(&cp, "app").await;
    let url = cp.grpc_url();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut edges = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        edges.push(edge(&url, &format!("edge-{i}"), dir.path()).await);
    }
    let mut traffic = Traffic::start(&secret, &edges.iter().collect::<Vec<_>>());
    let mut dups = 0;

    // The first kill, mid-traffic; the edges keep serving (static stability).
    traffic.release(250);
    traffic.answered(100).await;
    cp.signal("KILL");
    cp.wait_exit(PATIENCE).await;
    traffic.release(150);
    traffic.answered(300).await;
    cp = start_cp().await;
    // Reports from before the kill reach the new process before it dies too.
    assert_eventually!(
        ledger(&cp).await.is_some_and(|l| l.requests >= 100),
        PATIENCE,
        "the restarted control plane never counted the first requests"
    );

    // The second kill, mid-traffic; an edge stops while no control plane can ack its last
    // reports: it waits its flush timeout (5 s), then spools them.
    traffic.release(200);
    traffic.answered(450).await;
    dups += duplicates(&cp).await;
    cp.signal("KILL");
    cp.wait_exit(PATIENCE).await;
    traffic.answered(500).await;
    let mut leaving = edges.remove(1);
    leaving.signal("TERM");
    traffic.remove_edge(&leaving);
    traffic.release(100);
    let status = leaving.wait_exit(PATIENCE).await;
    assert!(status.success(), "the edge exited with {status}");
    assert!(
        has_log(&leaving, "no control plane acked the last usage; spooled for the next start"),
        "the edge did not spool its last reports; log:\n{}",
        leaving.logs().join("\n")
    );

    // The control plane comes back, then the edge, on the same spool and id.
    traffic.answered(600).await;
    cp = start_cp().await;
    traffic.release(100);
    let mut back = edge(&url, "edge-1", dirs[1].path()).await;
    back.wait_log(|l| l["message"] == "resending spooled usage").await;
    traffic.add_edge(&back);
    edges.push(back);

    let served = traffic.finish().await;
    assert_eq!(served, REQUESTS, "every request should have been served by some edge");
    let traffic_done = started.elapsed();
    let caught_up = assert_ledger_equals(&cp, &edges.iter().collect::<Vec<_>>(), served).await;
    dups += duplicates(&cp).await;
    eprintln!(
        "ledger = {served} requests, {} µ$ = served ({dups} resends dropped as duplicates); traffic took \
         {traffic_done:?}, the ledger caught up {caught_up:?} later; {:?} in all",
        served * MICRO_USD_PER_REQUEST,
        started.elapsed()
    );
}

/// Two control-plane replicas on one etcd, three edges given both. The edges start while only
/// replica a runs, so every edge reports to a; a is SIGKILLed mid-traffic (every edge fails over
/// to b, resending what a had not acked), comes back, then b is SIGKILLed (every edge fails over
/// to a); both replicas' ledgers end equal to what was served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_with_edges_failing_over_between_two_replicas_on_etcd() {
    let started = Instant::now();
    let etcd = Etcd::start().await;
    let mock = MockProvider::start().await.unwrap();
    let endpoints = etcd.endpoint();
    let (grpc_a, grpc_b) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut a = replica(&endpoints, "cp-a", &grpc_a).await;
    apply(&a, &config(&mock.base_url())).await;
    let secret = create_key(&a, "app").await;
    let urls = format!("http://{grpc_a},http://{grpc_b}");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut edges = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        edges.push(edge(&urls, &format!("edge-{i}"), dir.path()).await);
    }
    let mut b = replica(&endpoints, "cp-b", &grpc_b).await;
    let edge_refs: Vec<&Llmgw> = edges.iter().collect();
    let mut traffic = Traffic::start(&secret, &edge_refs);
    let mut dups = 0;

    traffic.release(300);
    traffic.answered(150).await;
    a.signal("KILL");
    a.wait_exit(PATIENCE).await;
    // Every edge now reports to b: the ledger there catches up with what was served so far.
    traffic.answered(300).await;
    let so_far = traffic.served.load(Ordering::Relaxed);
    assert_eventually!(
        ledger(&b).await.is_some_and(|l| l.requests == so_far),
        PATIENCE,
        "the edges did not fail over to the other replica: it never counted {so_far} requests"
    );

    a = replica(&endpoints, "cp-a", &grpc_a).await;
    traffic.release(300);
    traffic.answered(450).await;
    dups += duplicates(&b).await;
    b.signal("KILL");
    b.wait_exit(PATIENCE).await;
    traffic.answered(600).await;
    b = replica(&endpoints, "cp-b", &grpc_b).await;

    let served = traffic.finish().await;
    assert_eq!(served, REQUESTS, "every request should have been served");
    let traffic_done = started.elapsed();
    let caught_up = assert_ledger_equals(&a, &edge_refs, served).await;
    // The other replica reads the same shards.
    assert_ledger_equals(&b, &edge_refs, served).await;
    dups += duplicates(&a).await + duplicates(&b).await;
    eprintln!(
        "ledger on both replicas = {served} requests, {} µ$ = served ({dups} resends dropped as duplicates); traffic \
         took {traffic_done:?}, the ledger caught up {caught_up:?} later; {:?} in all",
        served * MICRO_USD_PER_REQUEST,
        started.elapsed()
    );
}
