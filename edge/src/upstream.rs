//! The connections to providers: for each provider origin and worker thread, a pool of
//! HTTP/1.1 connections, or one shared HTTP/2 connection when TLS negotiates h2; over rustls.
//!
//! Built on hyper's connection API rather than hyper-util's pooled client. That client hashes
//! the origin byte by byte with SipHash twice per request and spawns a task per response to
//! watch its connection become idle: about 9,000 of the edge's 80,000 instructions per request
//! (callgrind). Here a pool serves exactly one origin, so finding a connection is a `Vec::pop`,
//! and an HTTP/1.1 connection goes back when its response body ends.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::breaker::TargetHealth;

type ReqBody = Full<Bytes>;
type Connector = HttpsConnector<HttpConnector>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// (provider, upstream model) → that target's health.
type HealthMap = HashMap<(String, String), Arc<TargetHealth>>;

/// A connection idle this long is closed rather than reused: providers' load balancers drop
/// idle connections after a minute or more, and a request sent on one that is being dropped
/// would have to be retried.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle HTTP/1.1 connections kept per pool; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// h2 keep-alive ping interval, and how long a ping may go unanswered.
const H2_PING: Duration = Duration::from_secs(20);

thread_local! {
    /// Which worker thread this is (thread-per-core mode); 0 elsewhere.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Thread-per-core: one connection pool per worker, so a request's upstream connection is
/// driven by the thread that serves the request. Set once, before any config is built.
pub fn set_workers(n: usize) {
    let _ = WORKERS.set(n.max(1));
}

pub fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {origin}")]
    Connect { origin: Uri, source: BoxError },
    #[error("HTTP handshake with {origin} failed")]
    Handshake { origin: Uri, source: hyper::Error },
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// Nothing reached the provider: no connection could be made.
    #[must_use]
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Handshake { .. })
    }
}

/// A provider's pools, one per worker thread.
#[derive(Clone)]
pub struct Clients(Arc<[Arc<Pool>]>);

impl Clients {
    /// The calling worker's pool.
    #[must_use]
    pub fn get(&self) -> &Arc<Pool> {
        let i = WORKER.with(std::cell::Cell::get);
        &self.0[i % self.0.len()]
    }
}

/// Pools per (origin, connect timeout), kept across config reloads so a reload does not drop
/// warm connections. Used only when a config is built, never per request.
#[derive(Clone, Default)]
pub struct ClientCache {
    clients: Arc<Mutex<HashMap<(Uri, Duration), Clients>>>,
    health: Arc<Mutex<HealthMap>>,
}

impl ClientCache {
    /// The health record of a (provider, upstream model) target, the same across configs so a
    /// reload keeps breaker state and latency history of targets that still exist.
    pub fn health(&self, provider: &str, model: &str) -> Arc<TargetHealth> {
        lock(&self.health).entry((provider.to_owned(), model.to_owned())).or_default().clone()
    }

    /// Closes idle connections past their timeout in every pool, every `every` until `stop`:
    /// returning connections reap their pool only while it has traffic.
    pub async fn reap_idle(self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sweep(Instant::now());
        }
    }

    /// Drops the pools no config uses any more (an origin removed or changed: only this cache
    /// still holds them, so their idle connections close with them) and reaps the others.
    fn sweep(&self, now: Instant) {
        let pools: Vec<Clients> = {
            let mut clients = lock(&self.clients);
            // Under the lock nothing can clone a pool set out of the map, so a count of one
            // cannot grow while it is checked.
            clients.retain(|_, c| Arc::strong_count(&c.0) > 1);
            clients.values().cloned().collect()
        };
        for pool in pools.iter().flat_map(|c| c.0.iter()) {
            pool.reap(now);
        }
    }

    /// The pools for `base_url`'s origin.
    ///
    /// # Errors
    /// When `base_url` is not an absolute `http://` or `https://` URL.
    pub fn get(&self, base_url: &str, connect_timeout: Duration) -> Result<Clients, String> {
        let origin = origin(base_url)?;
        let n = WORKERS.get().copied().unwrap_or(1);
        let mut clients = lock(&self.clients);
        let pools = clients.entry((origin.clone(), connect_timeout)).or_insert_with(|| {
            let connector = connector(connect_timeout, webpki_roots());
            Clients(
                (0..n)
                    .map(|_| Arc::new(Pool::new(origin.clone(), connector.clone(), connect_timeout)))
                    .collect(),
            )
        });
        Ok(pools.clone())
    }
}

fn origin(base_url: &str) -> Result<Uri, String> {
    let uri: Uri = base_url.parse().map_err(|e| format!("base_url {base_url:?} is not a valid URL: {e}"))?;
    let scheme = uri.scheme().filter(|s| *s == &Scheme::HTTP || *s == &Scheme::HTTPS);
    match (scheme, uri.authority()) {
        (Some(s), Some(a)) => Uri::builder()
            .scheme(s.clone())
            .authority(a.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("base_url {base_url:?}: {e}")),
        _ => Err(format!("base_url {base_url:?} must start with http:// or https:// and name a host")),
    }
}

fn webpki_roots() -> rustls::RootCertStore {
    rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
}

fn connector(connect_timeout: Duration, roots: rustls::RootCertStore) -> Connector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match tls {
        Ok(tls) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http),
        // ring supports the default protocol versions, so this branch is unreachable in practice;
        // fall back to the crate's own defaults rather than panicking.
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http),
    }
}

struct Idle {
    tx: http1::SendRequest<ReqBody>,
    since: Instant,
}

enum Conn {
    H1(http1::SendRequest<ReqBody>),
    /// With the number of its connection in this pool.
    H2(http2::SendRequest<ReqBody>, u64),
}

struct H2Conn {
    tx: http2::SendRequest<ReqBody>,
    id: u64,
    used: Instant,
}

/// The connections of one worker to one origin.
pub struct Pool {
    origin: Uri,
    /// `Host` for HTTP/1.1 requests that carry none.
    host: Option<HeaderValue>,
    connector: Connector,
    /// Most recently returned at the back: reused first, so the oldest age out at the front.
    idle: Mutex<VecDeque<Idle>>,
    h2: Mutex<Option<H2Conn>>,
    /// The origin spoke h2 last time (or, for https, has not been reached yet): connects are
    /// then made one at a time, so a GOAWAY does not make every waiting request open its own
    /// connection.
    h2_seen: AtomicBool,
    h2_connecting: AtomicBool,
    h2_connected: tokio::sync::Notify,
    h2_opened: std::sync::atomic::AtomicU64,
    idle_timeout: Duration,
    /// For TCP and TLS together: a provider that accepts and then stalls the handshake is a
    /// connect failure (tried elsewhere at once), not a request that hangs to its deadline.
    connect_timeout: Duration,
}

/// Ends an h2 connect in progress, however it ends (done, failed, or its request dropped).
struct Connecting<'a>(&'a Pool);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.h2_connecting.store(false, Ordering::Release);
        self.0.h2_connected.notify_waiters();
    }
}

impl Pool {
    fn new(origin: Uri, connector: Connector, connect_timeout: Duration) -> Self {
        let tls = origin.scheme() == Some(&Scheme::HTTPS);
        let host = origin.authority().and_then(|a| {
            let default_port = if origin.scheme() == Some(&Scheme::HTTPS) { 443 } else { 80 };
            match a.port_u16() {
                // Host and port only: an authority may carry userinfo, never sent as Host.
                Some(p) if p != default_port => HeaderValue::try_from(format!("{}:{p}", a.host())).ok(),
                _ => HeaderValue::from_str(a.host()).ok(),
            }
        });
        Self {
            origin,
            host,
            connector,
            idle: Mutex::default(),
            h2: Mutex::default(),
            // TLS may negotiate h2: until a connection shows otherwise, the first connects are
            // made one at a time too, so a cold start opens one h2 connection, not one a request.
            h2_seen: AtomicBool::new(tls),
            h2_connecting: AtomicBool::new(false),
            h2_connected: tokio::sync::Notify::new(),
            h2_opened: std::sync::atomic::AtomicU64::new(0),
            idle_timeout: IDLE_TIMEOUT,
            connect_timeout,
        }
    }

    /// Sends `req` (an absolute URL on this pool's origin) on a pooled connection, or a new one.
    /// A request that a reused connection closed before taking is sent again on another.
    ///
    /// # Errors
    /// When no connection could be made, or the provider's answer could not be read.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<ReqBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut req = req;
        debug_assert_eq!(req.uri().authority(), self.origin.authority());
        loop {
            let (conn, reused) = match self.checkout().await {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            match conn {
                Conn::H2(mut tx, id) => match tx.try_send_request(req).await {
                    Ok(resp) => return Ok(resp.map(|b| UpstreamBody { inner: b, back: None })),
                    // A connection the provider is closing (GOAWAY) hands back requests it
                    // never sent; hyper may not have noticed the close before this one.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if reused => {
                            self.forget_h2(id);
                            req = unsent;
                        }
                        _ => return Err(e.into_error().into()),
                    },
                },
                Conn::H1(mut tx) => {
                    let uri = req.uri().clone();
                    if let Some(pq) = uri.path_and_query() {
                        *req.uri_mut() = Uri::from(pq.clone());
                    } else {
                        *req.uri_mut() = Uri::from(PathAndQuery::from_static("/"));
                    }
                    if let Some(host) = &self.host
                        && !req.headers().contains_key(HOST)
                    {
                        req.headers_mut().insert(HOST, host.clone());
                    }
                    match tx.try_send_request(req).await {
                        Ok(resp) => {
                            let back = Some((Arc::clone(self), tx));
                            return Ok(resp.map(|b| UpstreamBody { inner: b, back }));
                        }
                        Err(mut e) => match e.take_message() {
                            Some(mut unsent) if reused => {
                                *unsent.uri_mut() = uri;
                                req = unsent;
                            }
                            _ => return Err(e.into_error().into()),
                        },
                    }
                }
            }
        }
    }

    /// A connection ready for a request: the shared HTTP/2 one, or the most recently used idle
    /// HTTP/1.1 one that is still open.
    async fn checkout(&self) -> Option<Conn> {
        if let Some(c) = self.h2_checkout() {
            return Some(c);
        }
        // Still busy (its request body still being written after the answer, say): put back at
        // the old end once the search is over, not waited for; it ages out if it stays busy.
        let mut busy = Vec::new();
        let found = loop {
            let Some(mut idle) = lock(&self.idle).pop_back() else { break None };
            if self.spent(&idle, Instant::now()) {
                continue;
            }
            match ready_soon(&mut idle.tx).await {
                Some(true) => break Some(Conn::H1(idle.tx)),
                Some(false) => {}
                None => busy.push(idle),
            }
        };
        if !busy.is_empty() {
            let mut idle = lock(&self.idle);
            for i in busy {
                idle.push_front(i);
            }
        }
        found
    }

    fn h2_checkout(&self) -> Option<Conn> {
        let mut slot = lock(&self.h2);
        let c = slot.as_mut()?;
        let now = Instant::now();
        if c.tx.is_closed() || now.duration_since(c.used) > self.idle_timeout {
            *slot = None;
            return None;
        }
        c.used = now;
        Some(Conn::H2(c.tx.clone(), c.id))
    }

    /// Drops h2 connection `id` from the slot, unless another has replaced it already.
    fn forget_h2(&self, id: u64) {
        let mut slot = lock(&self.h2);
        if slot.as_ref().is_some_and(|c| c.id == id) {
            *slot = None;
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        if self.h2_seen.load(Ordering::Acquire) {
            if !self.h2_connecting.swap(true, Ordering::AcqRel) {
                let _connecting = Connecting(self);
                return self.open().await;
            }
            // Another request is connecting: wait for it once, then share its connection.
            let connected = self.h2_connected.notified();
            tokio::pin!(connected);
            connected.as_mut().enable();
            if self.h2_connecting.load(Ordering::Acquire) {
                connected.await;
            }
            if let Some(c) = self.h2_checkout() {
                return Ok(c);
            }
            // Its connect failed: try on our own rather than queue behind one more.
        }
        self.open().await
    }

    async fn open(&self) -> Result<Conn, UpstreamError> {
        let origin = || self.origin.clone();
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|source| UpstreamError::Connect { origin: origin(), source })?;
        let io = match tokio::time::timeout(self.connect_timeout, connector.call(origin())).await {
            Ok(r) => r.map_err(|source| UpstreamError::Connect { origin: origin(), source })?,
            Err(_) => {
                let ms = self.connect_timeout.as_millis();
                let source = format!("the connection (TCP and TLS) was not made within {ms} ms").into();
                return Err(UpstreamError::Connect { origin: origin(), source });
            }
        };
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                // Pings while streams are open find a connection that died silently.
                .keep_alive_interval(H2_PING)
                .keep_alive_timeout(H2_PING)
                .handshake(io)
                .await
                .map_err(|source| UpstreamError::Handshake { origin: origin(), source })?;
            // The connection's own errors reach the requests on it; nothing more to do with them.
            tokio::spawn(async move { drop(conn.await) });
            let id = self.h2_opened.fetch_add(1, Ordering::Relaxed);
            *lock(&self.h2) = Some(H2Conn { tx: tx.clone(), id, used: Instant::now() });
            self.h2_seen.store(true, Ordering::Release);
            Ok(Conn::H2(tx, id))
        } else {
            self.h2_seen.store(false, Ordering::Release);
            let (tx, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|source| UpstreamError::Handshake { origin: origin(), source })?;
            tokio::spawn(async move { drop(conn.await) });
            Ok(Conn::H1(tx))
        }
    }

    fn give_back(&self, tx: http1::SendRequest<ReqBody>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        // Close what has idled too long (or was closed by the provider) while traffic runs,
        // rather than keep it open until the provider gives up on it.
        while idle.front().is_some_and(|i| self.spent(i, now)) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { tx, since: now });
        }
    }

    fn spent(&self, i: &Idle, now: Instant) -> bool {
        i.tx.is_closed() || now.duration_since(i.since) > self.idle_timeout
    }

    /// Closes the connections idle past the timeout (dropping a sender ends its connection).
    fn reap(&self, now: Instant) {
        lock(&self.idle).retain(|i| !self.spent(i, now));
        let mut h2 = lock(&self.h2);
        if h2.as_ref().is_some_and(|c| c.tx.is_closed() || now.duration_since(c.used) > self.idle_timeout) {
            *h2 = None;
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        lock(&self.idle).len()
    }
}

/// A provider's response body. An HTTP/1.1 connection returns to its pool when the body ends;
/// dropped before that, the connection is closed (the rest of the body is never read).
pub struct UpstreamBody {
    inner: Incoming,
    back: Option<(Arc<Pool>, http1::SendRequest<ReqBody>)>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("pooled", &self.back.is_some()).finish_non_exhaustive()
    }
}

impl UpstreamBody {
    fn ended(&mut self) {
        if let Some((pool, tx)) = self.back.take() {
            pool.give_back(tx);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an idle HTTP/1.1 connection is ready within two scheduler turns: one that came back
/// as its body ended becomes ready once its connection task has run. `None`: still busy.
async fn ready_soon(tx: &mut http1::SendRequest<ReqBody>) -> Option<bool> {
    let mut turns = 0;
    std::future::poll_fn(|cx| match tx.poll_ready(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r.is_ok())),
        Poll::Pending if turns < 2 => {
            turns += 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
