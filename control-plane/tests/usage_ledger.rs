//! Exactly-once usage through the real gRPC API, on both stores: an edge reports over
//! `ReportUsage`, resends, fails over to a second replica, loses a replica mid-stream, and the
//! replica comes back under the same id; the ledger (read with the admin `Usage` call, and with
//! `spend`) must equal the sum of the distinct reports, exactly.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use llmgw_control_plane::store::Store;
use llmgw_control_plane::store::embedded::EmbeddedStore;
use llmgw_control_plane::store::etcd::{EtcdOptions, EtcdStore};
use llmgw_control_plane::usage::{Period, Scope};
use llmgw_control_plane::{ControlPlaneArgs, Running, Secrets, StoreKind};
use llmgw_shared::proto::admin_client::AdminClient;
use llmgw_shared::proto::sync_client::SyncClient;
use llmgw_shared::proto::{self, CreateKeyRequest, UsageAck, UsageReport, UsageRequest, UsageRow};
use llmgw_tests::etcd::Etcd;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

const PATIENCE: Duration = Duration::from_secs(20);
const ADMIN_TOKEN: &str = "admin-token";
const EDGE_TOKEN: &str = "edge-token";

struct Replica {
    running: Running,
    stop: CancellationToken,
}

impl Replica {
    async fn start(store: Arc<dyn Store>, id: &str) -> Self {
        let args = ControlPlaneArgs {
            store: StoreKind::Embedded,
            data_dir: "unused".into(),
            etcd_endpoints: vec![],
            grpc_listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            id: Some(id.into()),
            usage_retention: llmgw_control_plane::usage::DEFAULT_RETENTION,
            usage_flush_interval: Duration::from_millis(20),
            usage_max_txn_rate: 0.0,
            rate_window: std::time::Duration::from_secs(60),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            clock_offset_file: None,
        };
        let secrets = Secrets {
            admin_tokens: vec![ADMIN_TOKEN.into()],
            edge_tokens: vec![EDGE_TOKEN.into()],
            master_key: None,
        };
        let stop = CancellationToken::new();
        let running =
            llmgw_control_plane::start_with_store(args, secrets, store, stop.clone()).await.unwrap();
        Self { running, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.running.grpc)
    }

    /// Stops it as a crash would look to an edge: streams end, queued reports are dropped.
    async fn kill(self) {
        self.stop.cancel();
        let done = tokio::time::timeout(PATIENCE, self.running.done).await;
        assert!(done.is_ok(), "the control plane did not stop in time");
    }

    async fn admin(&self) -> AdminClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>> {
        let channel = Channel::from_shared(self.url()).unwrap().connect().await.unwrap();
        AdminClient::with_interceptor(channel, Bearer(ADMIN_TOKEN))
    }
}

#[derive(Clone)]
struct Bearer(&'static str);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", format!("Bearer {}", self.0).parse().unwrap());
        Ok(req)
    }
}

/// One open `ReportUsage` stream.
struct Stream {
    tx: mpsc::Sender<UsageReport>,
    acks: Streaming<UsageAck>,
}

impl Stream {
    async fn open(url: &str) -> Self {
        let channel = Channel::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
        let mut client = SyncClient::with_interceptor(channel, Bearer(EDGE_TOKEN));
        let (tx, rx) = mpsc::channel(1024);
        let acks = client.report_usage(ReceiverStream::new(rx)).await.unwrap().into_inner();
        Self { tx, acks }
    }

    async fn send(&self, r: &UsageReport) {
        self.tx.send(r.clone()).await.unwrap();
    }

    /// The next ack; `None` when the stream ended (cleanly or not).
    async fn ack(&mut self) -> Option<UsageAck> {
        match tokio::time::timeout(PATIENCE, self.acks.next()).await {
            Ok(Some(Ok(ack))) => Some(ack),
            Ok(Some(Err(_)) | None) => None,
            Err(_) => panic!("no ack within {PATIENCE:?}"),
        }
    }
}

/// An edge process: numbered reports, kept until acked (as the real edge must).
struct Edge {
    id: String,
    epoch: String,
    keys: Vec<String>,
    next: u64,
    sent: BTreeMap<u64, UsageReport>,
    acked: BTreeSet<u64>,
}

impl Edge {
    fn new(id: &str, keys: &[String]) -> Self {
        let epoch = format!("{:016x}", rand_u64());
        Self {
            id: id.into(),
            epoch,
            keys: keys.to_vec(),
            next: 1,
            sent: BTreeMap::new(),
            acked: BTreeSet::new(),
        }
    }

    /// A new report: a few rows over the keys and two models, amounts varying with seq.
    fn report(&mut self) -> UsageReport {
        let seq = self.next;
        self.next += 1;
        let hour = now_unix() / 3600 * 3600;
        let mut rows = Vec::new();
        for (i, key_id) in self.keys.iter().enumerate() {
            if (seq + i as u64).is_multiple_of(3) {
                continue;
            }
            let model = if seq.is_multiple_of(2) { "chat" } else { "embed" };
            rows.push(UsageRow {
                key_id: key_id.clone(),
                project: "ranker".into(),
                team: "search".into(),
                model: model.into(),
                provider: "openai".into(),
                upstream_model: format!("{model}-upstream"),
                requests: seq % 5 + 1,
                input_tokens: 100 * seq,
                output_tokens: 7 * seq + i as u64,
                cached_input_tokens: seq,
                cost_micro_usd: 1_000 * seq + 17,
                errors: seq % 4 / 3,
                hour_unix: hour,
            });
        }
        let r = UsageReport {
            edge_id: self.id.clone(),
            epoch: self.epoch.clone(),
            seq,
            rows,
            ..Default::default()
        };
        self.sent.insert(seq, r.clone());
        r
    }

    fn unacked(&self) -> Vec<UsageReport> {
        self.sent.iter().filter(|(seq, _)| !self.acked.contains(seq)).map(|(_, r)| r.clone()).collect()
    }

    /// Reads acks until `seq` is acked, checking they come in order.
    async fn await_ack(&mut self, stream: &mut Stream, seq: u64) {
        let mut previous = 0;
        while !self.acked.contains(&seq) {
            let ack =
                stream.ack().await.unwrap_or_else(|| panic!("the stream ended before seq {seq} was acked"));
            assert_eq!(ack.epoch, self.epoch);
            assert!(ack.seq > previous, "ack {} after {previous}", ack.seq);
            previous = ack.seq;
            self.acked.insert(ack.seq);
        }
    }

    /// Records the acks a stream still delivers until it ends.
    async fn acks_until_end(&mut self, stream: &mut Stream) {
        while let Some(ack) = stream.ack().await {
            self.acked.insert(ack.seq);
        }
    }

    /// Resends everything unacked on `stream`, in order, and waits for all of it.
    async fn resend_all(&mut self, stream: &mut Stream) {
        let unacked = self.unacked();
        for r in &unacked {
            stream.send(r).await;
        }
        if let Some(last) = unacked.last() {
            self.await_ack(stream, last.seq).await;
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_unix() as u64);
    h.finish()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The admin view's numbers per (team, project, key, model, provider).
type Sums = BTreeMap<[String; 5], [u64; 5]>;

/// What the ledger must say: every distinct report once.
fn expected(edges: &[&Edge], names: &BTreeMap<String, String>) -> Sums {
    let mut out = Sums::new();
    for e in edges {
        for r in e.sent.values() {
            for row in &r.rows {
                let key = names.get(&row.key_id).cloned().unwrap_or_else(|| row.key_id.clone());
                let g = [row.team.clone(), row.project.clone(), key, row.model.clone(), row.provider.clone()];
                let v = out.entry(g).or_default();
                v[0] += row.requests;
                v[1] += row.input_tokens;
                v[2] += row.output_tokens;
                v[3] += row.cost_micro_usd;
                v[4] += row.errors;
            }
        }
    }
    out
}

async fn usage(replica: &Replica, req: UsageRequest) -> Sums {
    let rows = replica.admin().await.usage(req).await.unwrap().into_inner().rows;
    rows.into_iter()
        .map(|r| {
            let cost = (r.cost_usd * 1e6).round() as u64;
            (
                [r.team, r.project, r.key, r.model, r.provider],
                [r.requests, r.input_tokens, r.output_tokens, cost, r.errors],
            )
        })
        .collect()
}

/// The whole story, on replicas of one store.
async fn exactly_once(store_a: Arc<dyn Store>, store_b: Arc<dyn Store>) {
    let a = Replica::start(store_a.clone(), "cp-a").await;
    let b = Replica::start(store_b.clone(), "cp-b").await;

    // A team, a project and a key, so the admin view can show the key by name; a second key id
    // that no longer exists shows as its id.
    let desired = proto::Snapshot {
        teams: vec![proto::Team { name: "search".into(), ..Default::default() }],
        projects: vec![proto::Project { name: "ranker".into(), team: "search".into(), ..Default::default() }],
        ..Default::default()
    };
    a.running.apply(desired, "test").await.unwrap();
    let key = a
        .admin()
        .await
        .create_key(CreateKeyRequest {
            name: "ranker-prod".into(),
            project: "ranker".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names = BTreeMap::from([(key.id.clone(), "ranker-prod".to_owned())]);
    let keys = [key.id.clone(), "deleted0key".to_owned()];
    let mut edge = Edge::new("edge-1", &keys);
    let mut other = Edge::new("edge-2", &keys[..1]);

    // 1. Reports 1..=20 to a, acked in order; resends of 5..=10 are acked and not counted.
    let mut s = Stream::open(&a.url()).await;
    for _ in 0..20 {
        let r = edge.report();
        s.send(&r).await;
    }
    edge.await_ack(&mut s, 20).await;
    for seq in 5..=10 {
        s.send(&edge.sent[&seq]).await;
    }
    for seq in 5..=10 {
        assert_eq!(s.ack().await.unwrap().seq, seq, "resends are acked in order");
    }
    assert_eq!(usage(&b, UsageRequest::default()).await, expected(&[&edge], &names), "after 1..=20");

    // 2. 21..=30 to a, acks unread; the edge fails over to b, resends them and goes on to 40,
    //    while a second edge reports to a (its 11..=15 left unacked).
    for _ in 0..10 {
        let r = edge.report();
        s.send(&r).await;
    }
    let mut s2 = Stream::open(&b.url()).await;
    edge.resend_all(&mut s2).await;
    let mut o = Stream::open(&a.url()).await;
    for _ in 0..10 {
        let r = edge.report();
        s2.send(&r).await;
        let r = other.report();
        o.send(&r).await;
    }
    edge.await_ack(&mut s2, 40).await;
    other.await_ack(&mut o, 10).await;
    assert_eq!(
        usage(&a, UsageRequest::default()).await,
        expected(&[&edge, &other], &names),
        "after failover"
    );
    for _ in 0..5 {
        let r = other.report();
        o.send(&r).await;
    }

    // 3. a dies mid-stream: 41..=50 go to a; once the first is acked, 51..=60 follow and a is
    //    stopped at once, with reports queued, in flight or committed but not acked.
    let mut s3 = Stream::open(&a.url()).await;
    for _ in 0..10 {
        let r = edge.report();
        s3.send(&r).await;
    }
    let first = s3.ack().await.expect("a acks before it dies");
    edge.acked.insert(first.seq);
    for _ in 0..10 {
        let r = edge.report();
        s3.send(&r).await;
    }
    a.kill().await;
    edge.acks_until_end(&mut s3).await;
    other.acks_until_end(&mut o).await;
    assert!(!edge.unacked().is_empty(), "a died before acking everything");
    // The edge resends what was not acked to b; whatever a committed unacked is a duplicate.
    edge.resend_all(&mut s2).await;
    assert_eq!(edge.unacked(), vec![]);

    // 4. a comes back under the same id: it must add to its shards, not start them from zero.
    let a = Replica::start(store_a, "cp-a").await;
    let mut s4 = Stream::open(&a.url()).await;
    for _ in 0..10 {
        let r = edge.report();
        s4.send(&r).await;
    }
    edge.await_ack(&mut s4, edge.next - 1).await;
    let mut o4 = Stream::open(&a.url()).await;
    other.resend_all(&mut o4).await;
    assert_eq!(other.unacked(), vec![]);

    // The ledger, from either replica, is the sum of the distinct reports.
    let want = expected(&[&edge, &other], &names);
    assert!(want.keys().any(|g| g[2] == "ranker-prod") && want.keys().any(|g| g[2] == "deleted0key"));
    assert_eq!(usage(&a, UsageRequest::default()).await, want);
    assert_eq!(usage(&b, UsageRequest::default()).await, want);
    // The hourly buckets say the same (all reports fell in the hours from `since` on).
    let since = edge.sent.values().flat_map(|r| &r.rows).map(|r| r.hour_unix).min().unwrap();
    assert_eq!(usage(&b, UsageRequest { since_unix: since, ..Default::default() }).await, want);
    // Filters: by key name, by model.
    let by_key = usage(&b, UsageRequest { key: "ranker-prod".into(), ..Default::default() }).await;
    assert_eq!(
        by_key,
        want.iter().filter(|(g, _)| g[2] == "ranker-prod").map(|(g, v)| (g.clone(), *v)).collect()
    );
    let by_model =
        usage(&a, UsageRequest { model: "embed".into(), team: "search".into(), ..Default::default() }).await;
    assert_eq!(
        by_model,
        want.iter().filter(|(g, _)| g[3] == "embed").map(|(g, v)| (g.clone(), *v)).collect()
    );
    // And spend, which grants will use, agrees.
    let total_cost: u64 = want.values().map(|v| v[3]).sum();
    for replica in [&a, &b] {
        let ledger = &replica.running.ledger;
        assert_eq!(ledger.spend(&Scope::Team("search".into()), Period::Total).cost_micro_usd, total_cost);
        assert_eq!(ledger.spend(&Scope::Project("ranker".into()), Period::Daily).cost_micro_usd, total_cost);
    }
    let key_cost: u64 = want.iter().filter(|(g, _)| g[2] == "ranker-prod").map(|(_, v)| v[3]).sum();
    assert_eq!(b.running.ledger.spend(&Scope::Key(key.id.clone()), Period::Monthly).cost_micro_usd, key_cost);

    // The ledger's metrics are exported (one recorder per process: the tests' counts add up).
    let metrics = scrape(b.running.metrics).await;
    for name in ["llmgw_cp_usage_reports_total", "llmgw_cp_usage_duplicates_total", "llmgw_cp_usage_txn_ops"]
    {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    a.kill().await;
    b.kill().await;
}

/// `GET /metrics`, the whole response.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_counts_usage_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).unwrap());
    exactly_once(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_counts_usage_exactly_once() {
    let etcd = Etcd::start().await;
    let (endpoints, opts) = (etcd.endpoints(), EtcdOptions::default());
    let a = EtcdStore::connect(&endpoints, &opts).await.unwrap();
    let b = EtcdStore::connect(&endpoints, &opts).await.unwrap();
    exactly_once(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test]
async fn report_usage_needs_the_edge_token() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).unwrap());
    let cp = Replica::start(store, "cp").await;
    let channel = Channel::from_shared(cp.url()).unwrap().connect().await.unwrap();
    let (_tx, rx) = mpsc::channel::<UsageReport>(1);
    let err = SyncClient::new(channel).report_usage(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // A malformed report ends the stream with InvalidArgument, after the acks before it.
    let mut s = Stream::open(&cp.url()).await;
    let mut edge = Edge::new("edge", &["k".to_owned()]);
    let good = edge.report();
    s.send(&good).await;
    s.send(&UsageReport {
        edge_id: "edge".into(),
        epoch: "e".into(),
        seq: 0,
        rows: vec![],
        ..Default::default()
    })
    .await;
    assert_eq!(s.ack().await.unwrap().seq, good.seq);
    let end = tokio::time::timeout(PATIENCE, s.acks.next()).await.unwrap();
    assert!(matches!(end, Some(Err(status)) if status.code() == tonic::Code::InvalidArgument));
    cp.kill().await;
}
