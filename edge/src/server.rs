//! The client-facing HTTP server: HTTP/1.1 and HTTP/2, slow-client timeouts, graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::Edge;

#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// A client that has not sent its whole request head by then is disconnected, so
    /// half-open connections cannot pile up.
    pub header_read_timeout: Duration,
    /// How long in-flight requests and streams may run after shutdown begins.
    pub shutdown_grace: Duration,
}

/// The workers of one edge, counted so the shutdown lines speak for all of them: "draining" when
/// no worker accepts any more, "drained" when none has a connection left.
pub struct Workers {
    accepting: AtomicUsize,
    serving: AtomicUsize,
}

impl Workers {
    #[must_use]
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self { accepting: AtomicUsize::new(n), serving: AtomicUsize::new(n) })
    }
}

/// Accepts until `stop` is cancelled, then lets in-flight requests finish within the grace.
pub async fn serve(
    listener: TcpListener,
    edge: Arc<Edge>,
    opts: ServerOptions,
    stop: CancellationToken,
    workers: Arc<Workers>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let svc = hyper::service::service_fn(move |req| crate::proxy::handle(edge.clone(), req));
        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if workers.accepting.fetch_sub(1, Ordering::AcqRel) == 1 {
        tracing::info!(grace_ms = opts.shutdown_grace.as_millis() as u64, "draining in-flight requests");
    }
    let drained = tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(opts.shutdown_grace) => false,
    };
    if !drained {
        tracing::warn!("shutdown grace elapsed; closing remaining connections");
    }
    // The last worker to finish speaks for all, after the "draining" line.
    if workers.serving.fetch_sub(1, Ordering::AcqRel) == 1 && drained {
        tracing::info!("all connections drained");
    }
}

/// `n` listeners on one address with `SO_REUSEPORT`, so the kernel spreads connections over the
/// worker threads. Port 0 is resolved by the first bind and reused by the others.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind_reuseport(addr: std::net::SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}
