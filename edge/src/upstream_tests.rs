//! The upstream pools against real local servers: plain HTTP/1.1, and TLS that negotiates h2 or
//! HTTP/1.1 (a self-signed `localhost` certificate from `testdata/`, trusted only here).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const CERT: &[u8] = include_bytes!("testdata/localhost.crt");
const KEY: &[u8] = include_bytes!("testdata/localhost.key");

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Answers `<version> <request target> <host>`; `x-close` makes it close the connection after
/// answering, `x-hang` sends one chunk and never ends the body.
async fn answer(req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("-").to_owned();
    let text = format!("{:?} {} {host}", req.version(), req.uri());
    let mut resp = if req.headers().contains_key("x-hang") {
        let first = futures_util::stream::once(async move { Ok(Frame::data(Bytes::from(text))) });
        Response::new(BodyExt::boxed(StreamBody::new(first.chain(futures_util::stream::pending()))))
    } else {
        Response::new(BodyExt::boxed(Full::new(Bytes::from(text))))
    };
    if req.headers().contains_key("x-close") {
        resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Closes every open connection gracefully (h2: GOAWAY; open streams may finish).
    goaway: Arc<tokio::sync::Notify>,
    /// A permit for every connection the server has finished with.
    ended: Arc<tokio::sync::Semaphore>,
}

impl Server {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A server on 127.0.0.1; with `alpn`, over TLS offering those protocols.
async fn server(alpn: Option<&[&[u8]]>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let tls = alpn.map(|protocols| {
        let cert = CertificateDer::from_pem_slice(CERT).unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap();
        cfg.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let count = accepted.clone();
    let goaway = Arc::new(tokio::sync::Notify::new());
    let closing = goaway.clone();
    let ended = Arc::new(tokio::sync::Semaphore::new(0));
    let ends = ended.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            let closing = closing.clone();
            let ends = ends.clone();
            tokio::spawn(async move {
                let auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else { return };
                        let conn = auto.serve_connection(TokioIo::new(stream), service_fn(answer));
                        serve_until_goaway(conn, &closing).await;
                    }
                    None => {
                        let conn = auto.serve_connection(TokioIo::new(tcp), service_fn(answer));
                        serve_until_goaway(conn, &closing).await;
                    }
                }
                ends.add_permits(1);
            });
        }
    });
    Server { addr, accepted, goaway, ended }
}

async fn serve_until_goaway<I, S>(
    conn: hyper_util::server::conn::auto::Connection<'_, I, S, TokioExecutor>,
    goaway: &tokio::sync::Notify,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<TestBody>> + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = goaway.notified() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

fn pool(base: &str) -> Arc<Pool> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(CERT).unwrap()).unwrap();
    Arc::new(Pool::new(
        origin(base).unwrap(),
        connector(Duration::from_secs(5), roots),
        Duration::from_secs(5),
    ))
}

fn post(url: &str, header: Option<&'static str>) -> Request<ReqBody> {
    let mut req = Request::post(url).body(Full::new(Bytes::from_static(b"{}"))).unwrap();
    if let Some(h) = header {
        req.headers_mut().insert(h, HeaderValue::from_static("1"));
    }
    req
}

async fn text(resp: Response<UpstreamBody>) -> (Version, String) {
    let version = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn http1_connections_are_reused_once_their_body_has_ended() {
    let s = server(None).await;
    let pool = pool(&format!("http://127.0.0.1:{}", s.addr.port()));
    let url = format!("http://127.0.0.1:{}/v1/chat/completions?x=1", s.addr.port());
    for _ in 0..3 {
        let (version, body) = text(pool.send(post(&url, None)).await.unwrap()).await;
        assert_eq!(version, Version::HTTP_11);
        // Origin-form request target, and the Host the pool adds.
        assert_eq!(body, format!("HTTP/1.1 /v1/chat/completions?x=1 127.0.0.1:{}", s.addr.port()));
        assert_eq!(pool.idle_count(), 1);
    }
    assert_eq!(s.accepted(), 1);
}

#[tokio::test]
async fn connections_idle_past_the_timeout_are_closed_not_reused() {
    let s = server(None).await;
    let mut p = Pool::new(
        origin(&format!("http://127.0.0.1:{}", s.addr.port())).unwrap(),
        connector(Duration::from_secs(5), webpki_roots()),
        Duration::from_secs(5),
    );
    p.idle_timeout = Duration::ZERO;
    let pool = Arc::new(p);
    let url = format!("http://127.0.0.1:{}/v1/x", s.addr.port());
    // Two at once open two connections; when the second comes back, the first has idled too
    // long and is closed.
    let (a, b) = tokio::join!(pool.send(post(&url, None)), pool.send(post(&url, None)));
    text(a.unwrap()).await;
    text(b.unwrap()).await;
    assert_eq!((pool.idle_count(), s.accepted()), (1, 2));
    // Nor is the one left reused.
    text(pool.send(post(&url, None)).await.unwrap()).await;
    assert_eq!((pool.idle_count(), s.accepted()), (1, 3));
}

/// A connection back in the pool but still busy is skipped, not waited for, and kept.
#[tokio::test]
async fn a_busy_idle_connection_is_skipped_not_waited_for() {
    let s = server(None).await;
    let pool = pool(&format!("http://127.0.0.1:{}", s.addr.port()));
    let url = format!("http://127.0.0.1:{}/v1/x", s.addr.port());
    let mut hanging = pool.send(post(&url, Some("x-hang"))).await.unwrap().into_body();
    hanging.frame().await.unwrap().unwrap();
    let (p, tx) = hanging.back.take().unwrap();
    p.give_back(tx);
    let sent = tokio::time::timeout(Duration::from_secs(10), pool.send(post(&url, None))).await;
    text(sent.expect("waited on the busy connection").unwrap()).await;
    assert_eq!((s.accepted(), pool.idle_count()), (2, 2));
}

/// Without traffic nothing returns to the pool to reap it: the reaper closes idle connections.
#[tokio::test]
async fn the_reaper_closes_idle_connections_without_traffic() {
    for alpn in [None, Some(&[b"h2".as_slice()][..])] {
        let s = server(alpn).await;
        let scheme = if alpn.is_some() { "https://localhost" } else { "http://127.0.0.1" };
        let mut p = pool(&format!("{scheme}:{}", s.addr.port()));
        Arc::get_mut(&mut p).unwrap().idle_timeout = Duration::from_secs(3600);
        text(p.send(post(&format!("{scheme}:{}/v1/x", s.addr.port()), None)).await.unwrap()).await;
        p.reap(Instant::now());
        assert_eq!(s.accepted(), 1);
        assert!(s.ended.available_permits() == 0, "closed before its time");
        p.reap(Instant::now() + Duration::from_secs(3601));
        assert_eq!(p.idle_count(), 0);
        // The provider sees the connection end.
        let ended = tokio::time::timeout(Duration::from_secs(10), s.ended.acquire()).await;
        ended.expect("the reaped connection stayed open").unwrap().forget();
    }
}

/// A reload that drops a provider's origin leaves its pools to the cache alone: the sweep drops
/// them, closing their connections, and keeps the pools a config still uses.
#[tokio::test]
async fn pools_no_config_uses_are_dropped_with_their_connections() {
    let (gone, kept) = (server(None).await, server(None).await);
    let cache = ClientCache::default();
    let base = |s: &Server| format!("http://127.0.0.1:{}/v1", s.addr.port());
    let (old, current) = (
        cache.get(&base(&gone), Duration::from_secs(5)).unwrap(),
        cache.get(&base(&kept), Duration::from_secs(5)).unwrap(),
    );
    for (c, s) in [(&old, &gone), (&current, &kept)] {
        text(c.get().send(post(&format!("{}/x", base(s)), None)).await.unwrap()).await;
    }
    cache.sweep(Instant::now());
    assert_eq!(lock(&cache.clients).len(), 2, "both still in use");
    drop(old);
    cache.sweep(Instant::now());
    assert_eq!(lock(&cache.clients).len(), 1);
    let ended = tokio::time::timeout(Duration::from_secs(10), gone.ended.acquire()).await;
    ended.expect("the dropped pool's connection stayed open").unwrap().forget();
    assert_eq!(kept.ended.available_permits(), 0, "the pool in use lost its connection");
    assert_eq!(current.get().idle_count(), 1);
}

#[tokio::test]
async fn a_connection_the_provider_closes_is_not_reused() {
    let s = server(None).await;
    let pool = pool(&format!("http://127.0.0.1:{}", s.addr.port()));
    let url = format!("http://127.0.0.1:{}/v1/x", s.addr.port());
    text(pool.send(post(&url, Some("x-close"))).await.unwrap()).await;
    text(pool.send(post(&url, None)).await.unwrap()).await;
    assert_eq!(s.accepted(), 2);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_does_not_return_its_connection() {
    let s = server(None).await;
    let pool = pool(&format!("http://127.0.0.1:{}", s.addr.port()));
    let url = format!("http://127.0.0.1:{}/v1/x", s.addr.port());
    let mut body = pool.send(post(&url, Some("x-hang"))).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"HTTP/1.1 /v1/x"));
    drop(body);
    assert_eq!(pool.idle_count(), 0);
    text(pool.send(post(&url, None)).await.unwrap()).await;
    assert_eq!(s.accepted(), 2);
}

/// A provider that closes an idle keep-alive connection (as load balancers do): the next request
/// goes out on a new connection, and the client never sees the closed one.
#[tokio::test]
async fn an_idle_connection_closed_by_the_provider_is_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                // The request ends with its two-byte body.
                while !seen.ends_with(b"\r\n\r\n{}") {
                    let n = tcp.read(&mut buf).await.unwrap();
                    assert!(n > 0, "request cut short");
                    seen.extend_from_slice(&buf[..n]);
                }
                tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                drop(tcp);
                let _ = closed_tx.send(());
            });
        }
    });
    let pool = pool(&format!("http://127.0.0.1:{port}"));
    let url = format!("http://127.0.0.1:{port}/v1/x");
    for _ in 0..3 {
        let (_, body) = text(pool.send(post(&url, None)).await.unwrap()).await;
        assert_eq!(body, "ok");
        closed.recv().await.unwrap();
    }
}

#[tokio::test]
async fn tls_that_negotiates_h2_shares_one_connection() {
    let s = server(Some(&[b"h2", b"http/1.1"])).await;
    let pool = pool(&format!("https://localhost:{}", s.addr.port()));
    let url = format!("https://localhost:{}/v1/x", s.addr.port());
    // A cold start: the requests that arrive together wait for the first connection.
    let (a, b) = tokio::join!(pool.send(post(&url, None)), pool.send(post(&url, None)));
    let (va, _) = text(a.unwrap()).await;
    let (vb, _) = text(b.unwrap()).await;
    let (vc, body) = text(pool.send(post(&url, None)).await.unwrap()).await;
    assert_eq!((va, vb, vc), (Version::HTTP_2, Version::HTTP_2, Version::HTTP_2));
    assert!(body.starts_with("HTTP/2.0 https://localhost:"), "{body}");
    assert_eq!(s.accepted(), 1);
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn tls_with_http1_only_sends_host_and_reuses_the_connection() {
    let s = server(Some(&[b"http/1.1"])).await;
    let pool = pool(&format!("https://localhost:{}", s.addr.port()));
    let url = format!("https://localhost:{}/v1/x", s.addr.port());
    for _ in 0..2 {
        let (version, body) = text(pool.send(post(&url, None)).await.unwrap()).await;
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(body, format!("HTTP/1.1 /v1/x localhost:{}", s.addr.port()));
    }
    assert_eq!(s.accepted(), 1);
    // Once the origin is known to answer HTTP/1.1, requests that arrive together connect
    // side by side (one waited for the first connection of the cold start only).
    let sends = (0..3).map(|_| async {
        let mut held = pool.send(post(&url, Some("x-hang"))).await.unwrap().into_body();
        held.frame().await.unwrap().unwrap();
        held
    });
    let held = futures_util::future::join_all(sends).await;
    assert_eq!(s.accepted(), 3);
    drop(held);
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_connect_error() {
    let s = server(Some(&[b"http/1.1"])).await;
    let pool = Arc::new(Pool::new(
        origin(&format!("https://localhost:{}", s.addr.port())).unwrap(),
        connector(Duration::from_secs(5), webpki_roots()),
        Duration::from_secs(5),
    ));
    let err = pool.send(post(&format!("https://localhost:{}/v1/x", s.addr.port()), None)).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let chain = crate::forward::chain(&err);
    assert!(chain.contains("certificate"), "{chain}");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let pool = pool(&format!("http://127.0.0.1:{port}"));
    let err = pool.send(post(&format!("http://127.0.0.1:{port}/v1/x"), None)).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn a_tls_handshake_that_stalls_is_a_connect_error_within_the_connect_timeout() {
    // Accepts, then never says a word: TCP connects, TLS never completes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(sock);
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(CERT).unwrap()).unwrap();
    let url = format!("https://localhost:{port}");
    let pool = Arc::new(Pool::new(
        origin(&url).unwrap(),
        connector(Duration::from_millis(300), roots),
        Duration::from_millis(300),
    ));
    // Without the bound this waits forever; the outer limit only keeps a failure from hanging.
    let sent = tokio::time::timeout(Duration::from_secs(30), pool.send(post(&format!("{url}/v1/x"), None)));
    let err = sent.await.expect("the stalled handshake was not given up").unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let chain = crate::forward::chain(&err);
    assert!(chain.contains("within 300 ms"), "{chain}");
    held.abort();
}

#[test]
fn base_urls_need_a_scheme_and_a_host() {
    assert_eq!(origin("https://api.openai.com/v1").unwrap().to_string(), "https://api.openai.com/");
    assert_eq!(origin("http://10.0.0.1:8080").unwrap().to_string(), "http://10.0.0.1:8080/");
    for bad in ["api.openai.com/v1", "ftp://host/x", "/v1", "http://"] {
        assert!(origin(bad).is_err(), "{bad}");
    }
}

/// A provider closing its h2 connection (GOAWAY, as load balancers do on a schedule): the
/// requests that follow go out on one new connection, not one each, and none of them fails,
/// whether hyper has noticed the close when they are sent or only when they are handed over.
#[tokio::test]
async fn an_h2_goaway_costs_no_request_and_one_new_connection() {
    let s = server(Some(&[b"h2"])).await;
    let pool = pool(&format!("https://localhost:{}", s.addr.port()));
    let url = format!("https://localhost:{}/v1/x", s.addr.port());
    text(pool.send(post(&url, None)).await.unwrap()).await;
    s.goaway.notify_waiters();
    s.ended.acquire().await.unwrap().forget();
    let sends = (0..5).map(|_| pool.send(post(&url, None)));
    for r in futures_util::future::join_all(sends).await {
        let (version, _) = text(r.unwrap()).await;
        assert_eq!(version, Version::HTTP_2);
    }
    assert_eq!(s.accepted(), 2);
}

#[tokio::test]
async fn an_idle_h2_connection_is_replaced_past_the_timeout() {
    let s = server(Some(&[b"h2"])).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(CERT).unwrap()).unwrap();
    let mut p = Pool::new(
        origin(&format!("https://localhost:{}", s.addr.port())).unwrap(),
        connector(Duration::from_secs(5), roots),
        Duration::from_secs(5),
    );
    p.idle_timeout = Duration::ZERO;
    let pool = Arc::new(p);
    let url = format!("https://localhost:{}/v1/x", s.addr.port());
    for n in 1..=2 {
        text(pool.send(post(&url, None)).await.unwrap()).await;
        assert_eq!(s.accepted(), n);
    }
}
