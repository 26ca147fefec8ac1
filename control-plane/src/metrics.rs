//! The control plane's Prometheus metrics.

pub const CONNECTED_EDGES: &str = "llmgw_cp_connected_edges";
pub const CONFIG_REVISION: &str = "llmgw_cp_config_revision";
pub const ADMIN_CALLS: &str = "llmgw_cp_admin_calls_total";
pub const ADMIN_LATENCY: &str = "llmgw_cp_admin_call_duration_seconds";
pub const WATCH_LAG: &str = "llmgw_cp_watch_lag_seconds";

pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTED_EDGES, "Edges with an open config stream to this replica.");
    describe_gauge!(CONFIG_REVISION, "Store revision this replica's config view reflects.");
    describe_counter!(ADMIN_CALLS, "Admin API calls, by method and gRPC status code.");
    describe_histogram!(ADMIN_LATENCY, Unit::Seconds, "Admin API call latency, store writes included.");
    describe_histogram!(
        WATCH_LAG,
        Unit::Seconds,
        "Time from an admin commit to this replica's view reflecting it."
    );
    describe_histogram!(
        crate::store::metered::STORE_LATENCY,
        Unit::Seconds,
        "Store call latency, by operation."
    );
}
