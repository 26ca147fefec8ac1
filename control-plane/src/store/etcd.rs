//! etcd backend: every [`Store`] call is one etcd request (a range may take several pages), and
//! a [`Txn`] is exactly one etcd transaction, so revisions and compares are etcd's own.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use etcd_client as ec;
use futures_util::stream;
use tonic::Code;

use super::{
    Compare, CompareOp, CompareTarget, Event, KeyValue, Op, RangeResult, Store, StoreError, Txn, TxnResult,
    WatchBatch, WatchStream, prefix_end, validate_txn,
};

/// Keys per page when reading a range: bounds each response well under the 64 MiB limit below.
const RANGE_PAGE: i64 = 1000;
/// Largest response we accept. etcd caps a request at 1.5 MiB (`--max-request-bytes`), but one
/// watch response can carry up to 1000 revisions while a watcher catches up.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// How often a range restarts when compaction overtakes its pages.
const RANGE_ATTEMPTS: usize = 3;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Bounds connecting to an endpoint, and the first request `connect` makes.
    pub connect_timeout: Duration,
    /// Bounds every unary request (not watch streams, which live as long as the watch).
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive ping interval and timeout, so a dead connection (and the watches on it)
    /// fails in about their sum. etcd refuses pings more often than every 5 s
    /// (`--grpc-keepalive-min-time`), and pings only while a stream is open.
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`Store`] on an etcd cluster (v3 API; works with etcd 3.4 and later).
#[derive(Clone)]
pub struct EtcdStore {
    client: ec::Client,
    request_timeout: Duration,
}

impl EtcdStore {
    /// Connects to the cluster and reads its revision once, so an unreachable cluster fails here.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no endpoint answers within `opts.connect_timeout`;
    /// [`StoreError::Other`] for a malformed endpoint.
    pub async fn connect(endpoints: &[String], opts: &EtcdOptions) -> Result<Self, StoreError> {
        let options = ec::ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_keep_alive(opts.keep_alive_interval, opts.keep_alive_timeout)
            // Fail requests and watches when the member has no leader instead of hanging.
            .with_require_leader(true);
        let connecting = ec::Client::connect(endpoints, Some(options));
        let client = tokio::time::timeout(opts.connect_timeout, connecting)
            .await
            .map_err(|_| unreachable(endpoints, opts.connect_timeout))?
            .map_err(map_err)?;
        let store = Self { client, request_timeout: opts.request_timeout };
        // The channel connects lazily: one read proves the cluster answers.
        tokio::time::timeout(opts.connect_timeout, store.revision())
            .await
            .map_err(|_| unreachable(endpoints, opts.connect_timeout))??;
        Ok(store)
    }

    /// Discards the history before `revision`: watches from an older revision then fail with
    /// [`StoreError::Compacted`]. etcd does not compact by itself unless started with
    /// `--auto-compaction-retention`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], or [`StoreError::Other`] for a revision already compacted or
    /// in the future.
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        let opts = ec::CompactionOptions::new().with_physical();
        self.call(kv.compact(revision, Some(opts))).await.map(drop)
    }

    /// Runs a unary request under the request timeout, leaving etcd's own error to the caller.
    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, ec::Error>>,
    ) -> Result<Result<T, ec::Error>, StoreError> {
        tokio::time::timeout(self.request_timeout, fut).await.map_err(|_| timed_out(self.request_timeout))
    }

    /// Runs a unary request under the request timeout.
    async fn call<T>(&self, fut: impl Future<Output = Result<T, ec::Error>>) -> Result<T, StoreError> {
        self.timed(fut).await?.map_err(map_err)
    }

    fn kv_client(&self) -> ec::KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// One consistent read of a prefix; `Ok(None)` when compaction overtook the pages.
    async fn range_once(&self, prefix: &[u8]) -> Result<Option<RangeResult>, StoreError> {
        let mut kv = self.kv_client();
        // etcd spells "no upper bound" as range_end "\0", and "every key" as key "\0" too.
        let end = prefix_end(prefix).unwrap_or_else(|| vec![0]);
        let mut start = if prefix.is_empty() { vec![0] } else { prefix.to_vec() };
        let mut result = RangeResult { kvs: Vec::new(), revision: 0 };
        loop {
            let opts = ec::GetOptions::new()
                .with_range(end.clone())
                .with_limit(RANGE_PAGE)
                .with_revision(result.revision);
            let mut resp = match self.timed(kv.get(start, Some(opts))).await? {
                Err(e) if is_compacted(&e) => return Ok(None),
                resp => resp.map_err(map_err)?,
            };
            if result.revision == 0 {
                result.revision = revision_of(resp.header())?;
            }
            let more = resp.more();
            result.kvs.extend(resp.take_kvs().iter().map(to_key_value));
            match result.kvs.last() {
                Some(last) if more => start = [last.key.as_slice(), &[0]].concat(),
                _ => return Ok(Some(result)),
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.kv_client();
        let resp = self.call(kv.get(key, None)).await?;
        Ok(resp.kvs().first().map(to_key_value))
    }

    async fn range(&self, prefix: &[u8]) -> Result<RangeResult, StoreError> {
        for _ in 0..RANGE_ATTEMPTS {
            if let Some(result) = self.range_once(prefix).await? {
                return Ok(result);
            }
        }
        Err(StoreError::Other(format!(
            "range kept being overtaken by compaction ({RANGE_ATTEMPTS} attempts)"
        )))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        validate_txn(&txn)?;
        let request = ec::Txn::new()
            .when(txn.compares.iter().map(to_compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(to_op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(to_op).collect::<Vec<_>>());
        let mut kv = self.kv_client();
        let resp = self.call(kv.txn(request)).await.map_err(|e| lease_error(e, &txn))?;
        let gets = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                ec::TxnOpResponse::Get(get) => Some(get.kvs().first().map(to_key_value)),
                _ => None,
            })
            .collect();
        Ok(TxnResult { succeeded: resp.succeeded(), revision: revision_of(resp.header())?, gets })
    }

    async fn watch(&self, prefix: &[u8], from_revision: i64) -> Result<WatchStream, StoreError> {
        let mut client = self.client.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        let mut opts = ec::WatchOptions::new().with_prefix();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision);
        }
        let key = if prefix.is_empty() { vec![0] } else { prefix.to_vec() };
        let mut inner = self.call(client.watch(key, Some(opts))).await?;
        // Return once etcd confirms the watcher, so changes committed after `watch` returns are
        // seen even by a live-only watch.
        let mut next_revision = from_revision;
        loop {
            let Some(resp) = self.call(inner.message()).await? else {
                return Err(StoreError::Unavailable("etcd closed the watch before creating it".into()));
            };
            if let Some(e) = ended(&resp, from_revision) {
                return Err(e);
            }
            if resp.created() {
                if from_revision <= 0 {
                    next_revision = revision_of(resp.header())? + 1;
                }
                break;
            }
        }
        let state = EtcdWatch { inner, pending: VecDeque::new(), next_revision, done: false };
        Ok(Box::pin(stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })))
    }

    async fn revision(&self) -> Result<i64, StoreError> {
        let mut kv = self.kv_client();
        let resp = self.call(kv.get([0], Some(ec::GetOptions::new().with_count_only()))).await?;
        revision_of(resp.header())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        // etcd counts TTLs in whole seconds (and raises them to its minimum, 2 s by default).
        let secs = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX).max(1);
        let mut lease = self.client.lease_client();
        let resp = self.call(lease.grant(secs, None)).await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Other(format!("etcd lease grant: {}", resp.error())));
        }
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: i64) -> Result<(), StoreError> {
        let mut client = self.client.lease_client();
        // Opens a keep-alive stream, sends one keep-alive and awaits its answer (TTL 0 = gone).
        match self.timed(client.keep_alive(lease)).await? {
            Ok(_) => Ok(()),
            Err(ec::Error::LeaseKeepAliveError(msg)) if msg.contains("not found") => {
                Err(StoreError::LeaseNotFound(lease))
            }
            Err(e) => Err(lease_not_found(map_err(e), lease)),
        }
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        let mut client = self.client.lease_client();
        self.call(client.revoke(lease)).await.map(drop).map_err(|e| lease_not_found(e, lease))
    }
}

/// The state of one watch stream: etcd responses split into one batch per revision.
struct EtcdWatch {
    inner: ec::WatchStream,
    pending: VecDeque<WatchBatch>,
    /// The first revision not yet delivered: what a compaction made us miss.
    next_revision: i64,
    done: bool,
}

impl EtcdWatch {
    async fn next(&mut self) -> Option<Result<WatchBatch, StoreError>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                self.next_revision = batch.revision + 1;
                return Some(Ok(batch));
            }
            if self.done {
                return None;
            }
            let resp = match self.inner.message().await {
                Ok(Some(resp)) => ended(&resp, self.next_revision).map_or(Ok(resp), Err),
                Ok(None) => Err(StoreError::Unavailable("etcd ended the watch".into())),
                Err(e) => Err(map_err(e)),
            };
            let resp = match resp {
                Ok(resp) => resp,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            // A response may hold several revisions (while a watcher catches up); a
            // transaction's events share one revision and are never split across responses.
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let (revision, event) = match event.event_type() {
                    ec::EventType::Put => (kv.mod_revision(), Event::Put(to_key_value(kv))),
                    ec::EventType::Delete => {
                        let mod_revision = kv.mod_revision();
                        (mod_revision, Event::Delete { key: kv.key().to_vec(), mod_revision })
                    }
                };
                match self.pending.back_mut() {
                    Some(batch) if batch.revision == revision => batch.events.push(event),
                    _ => self.pending.push_back(WatchBatch { revision, events: vec![event] }),
                }
            }
        }
    }
}

/// The error a response ends the watch with: a compacted start revision, or a cancellation.
fn ended(resp: &ec::WatchResponse, next_revision: i64) -> Option<StoreError> {
    if resp.compact_revision() != 0 {
        let compact_revision = resp.compact_revision();
        Some(StoreError::Compacted { requested: next_revision, compact_revision })
    } else if resp.canceled() {
        Some(StoreError::Unavailable(format!("etcd canceled the watch: {}", resp.cancel_reason())))
    } else {
        None
    }
}

fn to_key_value(kv: &ec::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn to_compare(c: &Compare) -> ec::Compare {
    let op = match c.op {
        CompareOp::Equal => ec::CompareOp::Equal,
        CompareOp::NotEqual => ec::CompareOp::NotEqual,
        CompareOp::Greater => ec::CompareOp::Greater,
        CompareOp::Less => ec::CompareOp::Less,
    };
    let key = c.key.clone();
    match &c.target {
        CompareTarget::CreateRevision(r) => ec::Compare::create_revision(key, op, *r),
        CompareTarget::ModRevision(r) => ec::Compare::mod_revision(key, op, *r),
        CompareTarget::Version(v) => ec::Compare::version(key, op, *v),
        CompareTarget::Value(v) => ec::Compare::value(key, op, v.clone()),
    }
}

fn to_op(op: &Op) -> ec::TxnOp {
    match op {
        Op::Put { key, value, lease } => {
            let opts = (*lease != 0).then(|| ec::PutOptions::new().with_lease(*lease));
            ec::TxnOp::put(key.clone(), value.clone(), opts)
        }
        Op::Delete { key } => ec::TxnOp::delete(key.clone(), None),
        Op::DeletePrefix { prefix } => {
            let key = if prefix.is_empty() { vec![0] } else { prefix.clone() };
            ec::TxnOp::delete(key, Some(ec::DeleteOptions::new().with_prefix()))
        }
        Op::Get { key } => ec::TxnOp::get(key.clone(), None),
    }
}

fn revision_of(header: Option<&ec::ResponseHeader>) -> Result<i64, StoreError> {
    header
        .map(ec::ResponseHeader::revision)
        .ok_or_else(|| StoreError::Other("etcd response without header".into()))
}

/// Maps client errors: anything that says "could not reach a healthy cluster" is `Unavailable`,
/// so callers know to retry later rather than fix their request.
fn map_err(e: ec::Error) -> StoreError {
    match e {
        ec::Error::TransportError(e) => StoreError::Unavailable(format!("etcd transport: {e}")),
        ec::Error::IoError(e) => StoreError::Unavailable(format!("etcd i/o: {e}")),
        ec::Error::GRpcStatus(s) => {
            // etcd's own errors carry specific codes; tonic reports a broken connection as
            // Unknown (or Internal) with the h2/transport error as the message.
            let broken = ["transport", "h2 protocol", "connection"].iter().any(|m| s.message().contains(m));
            let unavailable =
                matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled)
                    || (matches!(s.code(), Code::Unknown | Code::Internal) && broken);
            if unavailable {
                StoreError::Unavailable(format!("etcd: {}", s.message()))
            } else {
                StoreError::Other(format!("etcd: {} ({:?})", s.message(), s.code()))
            }
        }
        ec::Error::WatchError(e) => StoreError::Unavailable(format!("etcd watch: {e}")),
        other => StoreError::Other(format!("etcd: {other}")),
    }
}

fn is_compacted(e: &ec::Error) -> bool {
    matches!(e, ec::Error::GRpcStatus(s) if s.code() == Code::OutOfRange && s.message().contains("compacted"))
}

/// etcd says "etcdserver: requested lease not found" (NotFound) for revoke, and for a put with
/// an unknown lease.
fn lease_not_found(e: StoreError, lease: i64) -> StoreError {
    match e {
        StoreError::Other(msg) if msg.contains("lease not found") => StoreError::LeaseNotFound(lease),
        other => other,
    }
}

fn lease_error(e: StoreError, txn: &Txn) -> StoreError {
    let lease = txn.success.iter().chain(&txn.failure).find_map(|op| match op {
        Op::Put { lease, .. } if *lease != 0 => Some(*lease),
        _ => None,
    });
    match lease {
        Some(lease) => lease_not_found(e, lease),
        None => e,
    }
}

fn unreachable(endpoints: &[String], timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!("no etcd endpoint of {endpoints:?} answered within {timeout:?}"))
}

fn timed_out(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!("etcd did not answer within {timeout:?}"))
}
