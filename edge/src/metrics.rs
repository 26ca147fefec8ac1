//! Prometheus metrics, and the metrics/health listener.
//!
//! Labels are aliases and provider names from the config, or fixed error codes: never a string a
//! client typed, so cardinality is bounded by the config.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::Edge;

pub const REQUESTS: &str = "llmgw_requests_total";
pub const REQUEST_DURATION: &str = "llmgw_request_duration_seconds";
pub const TTFT: &str = "llmgw_time_to_first_token_seconds";
pub const TOKENS: &str = "llmgw_tokens_total";
pub const COST: &str = "llmgw_cost_micro_usd_total";
pub const UPSTREAM_ERRORS: &str = "llmgw_upstream_errors_total";
pub const CONFIG_REVISION: &str = "llmgw_config_revision";
pub const CONFIG_RELOAD_FAILURES: &str = "llmgw_config_reload_failures_total";
pub const IN_FLIGHT: &str = "llmgw_requests_in_flight";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot install the metrics recorder: {0}")]
    Install(String),
}

/// Installs the global recorder once per process; later calls (`llmgw dev` runs several roles in
/// one process) reuse the first handle.
///
/// # Errors
/// When another recorder was installed by someone else.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TTFT.into()), &latency))
        .map_err(|e| MetricsError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Install(e.to_string()))?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "Requests answered, by model alias, provider and status.");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Time from request to last byte.");
    describe_histogram!(TTFT, Unit::Seconds, "Time from request to the first streamed event.");
    describe_counter!(TOKENS, "Tokens reported by providers, by direction.");
    describe_counter!(COST, "Cost of requests in micro-USD.");
    describe_counter!(UPSTREAM_ERRORS, "Failed upstream attempts, by provider and reason.");
    describe_gauge!(CONFIG_REVISION, "Revision of the configuration this edge serves.");
    describe_counter!(CONFIG_RELOAD_FAILURES, "Configurations rejected on reload.");
    describe_gauge!(IN_FLIGHT, "Requests being served.");
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    edge: Arc<Edge>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    continue;
                }
            },
        };
        let (handle, edge) = (handle.clone(), edge.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = respond(&req, &handle, &edge);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, handle: &PrometheusHandle, edge: &Edge) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, handle.render()),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" if edge.ready() => (StatusCode::OK, "ready\n".to_owned()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "no configuration applied yet\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

/// Binds the metrics listener.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
