//! The edge's Prometheus metrics.
//!
//! Labels are aliases and provider names from the config, or fixed error codes: never a string a
//! client typed, so cardinality is bounded by the config.

use metrics_exporter_prometheus::PrometheusHandle;

pub const REQUESTS: &str = "llmgw_requests_total";
pub const REQUEST_DURATION: &str = "llmgw_request_duration_seconds";
pub const TTFT: &str = "llmgw_time_to_first_token_seconds";
pub const TOKENS: &str = "llmgw_tokens_total";
pub const COST: &str = "llmgw_cost_micro_usd_total";
pub const UPSTREAM_ERRORS: &str = "llmgw_upstream_errors_total";
pub const CONFIG_REVISION: &str = "llmgw_config_revision";
pub const CONFIG_RELOAD_FAILURES: &str = "llmgw_config_reload_failures_total";
pub const IN_FLIGHT: &str = "llmgw_requests_in_flight";
pub const ATTEMPTS: &str = "llmgw_attempts_total";
pub const FALLBACKS: &str = "llmgw_fallbacks_total";
pub const EJECTIONS: &str = "llmgw_ejections_total";
pub const TARGET_EJECTED: &str = "llmgw_target_ejected";
pub const TARGET_LATENCY: &str = "llmgw_target_latency_ewma_seconds";
pub const OVERHEAD: &str = "llmgw_gateway_overhead_seconds";

pub use llmgw_shared::ops::MetricsError;

/// Installs the process's recorder (shared with the control plane under `llmgw dev`) and
/// describes the edge's metrics.
///
/// # Errors
/// When a recorder of another kind was installed first.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let handle = llmgw_shared::ops::install_metrics()?;
    describe();
    Ok(handle)
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
    describe_counter!(ATTEMPTS, "Upstream attempts, by alias, target and outcome (ok or failure reason).");
    describe_counter!(
        FALLBACKS,
        "Attempts that moved on to another target, by alias and the target moved to."
    );
    describe_counter!(EJECTIONS, "Targets ejected by the breaker, by target and reason.");
    describe_gauge!(TARGET_EJECTED, "1 while a target is ejected.");
    describe_gauge!(TARGET_LATENCY, "EWMA of a target's time to first byte (first token for streams).");
    describe_histogram!(
        OVERHEAD,
        Unit::Seconds,
        "The gateway's own time for requests answered by their first attempt: arrival to the \
         upstream request handed to its connection (less any wait for the client's body), plus \
         the upstream answer (a stream's first token) read to it handed to the client's connection."
    );
}

/// Metric handles for one target of one alias, registered when the config is built so the
/// request path only touches atomics (no label hashing or allocation per request).
pub struct TargetMetrics {
    pub ok: metrics::Counter,
    pub duration: metrics::Histogram,
    pub ttft: metrics::Histogram,
    pub tokens_in: metrics::Counter,
    pub tokens_out: metrics::Counter,
    pub cost: metrics::Counter,
    pub attempts_ok: metrics::Counter,
    pub latency: metrics::Gauge,
    pub ejected: metrics::Gauge,
}

impl TargetMetrics {
    #[must_use]
    pub fn new(model: &str, provider: &str, target: &str) -> Self {
        let (m, p, t) = (model.to_owned(), provider.to_owned(), target.to_owned());
        Self {
            ok: metrics::counter!(REQUESTS, "model" => m.clone(), "provider" => p.clone(), "status" => "200"),
            duration: metrics::histogram!(REQUEST_DURATION, "model" => m.clone(), "provider" => p.clone()),
            ttft: metrics::histogram!(TTFT, "model" => m.clone(), "provider" => p.clone()),
            tokens_in: metrics::counter!(TOKENS, "model" => m.clone(), "provider" => p.clone(), "direction" => "input"),
            tokens_out: metrics::counter!(TOKENS, "model" => m.clone(), "provider" => p.clone(), "direction" => "output"),
            cost: metrics::counter!(COST, "model" => m.clone(), "provider" => p),
            attempts_ok: metrics::counter!(ATTEMPTS, "model" => m, "target" => t.clone(), "outcome" => "ok"),
            latency: metrics::gauge!(TARGET_LATENCY, "target" => t.clone()),
            ejected: metrics::gauge!(TARGET_EJECTED, "target" => t),
        }
    }
}

/// The own-processing histogram, looked up once.
pub fn overhead() -> &'static metrics::Histogram {
    static H: std::sync::OnceLock<metrics::Histogram> = std::sync::OnceLock::new();
    H.get_or_init(|| metrics::histogram!(OVERHEAD))
}

/// The in-flight gauge, looked up once.
pub fn in_flight() -> &'static metrics::Gauge {
    static G: std::sync::OnceLock<metrics::Gauge> = std::sync::OnceLock::new();
    G.get_or_init(|| metrics::gauge!(IN_FLIGHT))
}
