//! The pooled HTTP client that talks to providers: HTTP/1.1 and HTTP/2 over rustls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::breaker::TargetHealth;

/// (provider, upstream model) → that target's health.
type HealthMap = HashMap<(String, String), Arc<TargetHealth>>;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

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

/// A provider's clients, one per worker thread.
#[derive(Clone)]
pub struct Clients(Arc<[UpstreamClient]>);

impl Clients {
    /// The calling worker's client.
    #[must_use]
    pub fn get(&self) -> &UpstreamClient {
        let i = WORKER.with(std::cell::Cell::get);
        &self.0[i % self.0.len()]
    }
}

/// One client (and so one connection pool) per connect timeout, kept across config reloads so a
/// reload does not drop warm connections. Used only when a config is built, never per request.
#[derive(Clone, Default)]
pub struct ClientCache {
    clients: Arc<Mutex<HashMap<Duration, Clients>>>,
    health: Arc<Mutex<HealthMap>>,
}

impl ClientCache {
    /// The health record of a (provider, upstream model) target, the same across configs so a
    /// reload keeps breaker state and latency history of targets that still exist.
    pub fn health(&self, provider: &str, model: &str) -> Arc<TargetHealth> {
        let mut map = match self.health.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((provider.to_owned(), model.to_owned())).or_default().clone()
    }

    pub fn get(&self, connect_timeout: Duration) -> Clients {
        let mut clients = match self.clients.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = WORKERS.get().copied().unwrap_or(1);
        clients
            .entry(connect_timeout)
            .or_insert_with(|| Clients((0..n).map(|_| new_client(connect_timeout)).collect()))
            .clone()
    }
}

fn new_client(connect_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::from_iter(
                webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
            ))
            .with_no_client_auth()
        });
    let https = match tls {
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
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}
