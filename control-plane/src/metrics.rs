//! The control plane's Prometheus metrics.

pub const CONNECTED_EDGES: &str = "llmgw_cp_connected_edges";
pub const CONFIG_REVISION: &str = "llmgw_cp_config_revision";
pub const ADMIN_CALLS: &str = "llmgw_cp_admin_calls_total";
pub const ADMIN_LATENCY: &str = "llmgw_cp_admin_call_duration_seconds";
pub const WATCH_LAG: &str = "llmgw_cp_watch_lag_seconds";
pub const USAGE_REPORTS: &str = "llmgw_cp_usage_reports_total";
pub const USAGE_DUPLICATES: &str = "llmgw_cp_usage_duplicates_total";
pub const USAGE_FAILED: &str = "llmgw_cp_usage_reports_failed_total";
pub const USAGE_TXNS: &str = "llmgw_cp_usage_txns_total";
pub const USAGE_TXN_OPS: &str = "llmgw_cp_usage_txn_ops";
pub const USAGE_TXN_REPORTS: &str = "llmgw_cp_usage_txn_reports";
pub const USAGE_COMMIT_LATENCY: &str = "llmgw_cp_usage_commit_duration_seconds";
pub const USAGE_ACK_DELAY: &str = "llmgw_cp_usage_ack_delay_seconds";
pub const USAGE_PENDING: &str = "llmgw_cp_usage_pending_reports";
pub const USAGE_SHARDS: &str = "llmgw_cp_usage_shards";

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
    describe_counter!(USAGE_REPORTS, "Usage reports received from edges (well-formed ones).");
    describe_counter!(USAGE_DUPLICATES, "Usage reports already counted (resends): acked, not counted again.");
    describe_counter!(
        USAGE_FAILED,
        "Usage reports answered with an error, by reason (too_large, timeout, stopped); edges resend them."
    );
    describe_counter!(
        USAGE_TXNS,
        "Ledger store transactions, by kind (write, read, retention, markers) and outcome."
    );
    describe_histogram!(USAGE_TXN_OPS, "Puts per ledger write transaction (shards and markers).");
    describe_histogram!(USAGE_TXN_REPORTS, "Usage reports per ledger write transaction.");
    describe_histogram!(USAGE_COMMIT_LATENCY, Unit::Seconds, "Ledger write transaction latency.");
    describe_histogram!(
        USAGE_ACK_DELAY,
        Unit::Seconds,
        "Time from receiving a usage report to committing it (oldest report of each transaction)."
    );
    describe_gauge!(USAGE_PENDING, "Usage reports waiting for a ledger transaction on this replica.");
    describe_gauge!(USAGE_SHARDS, "Usage counter shards (all replicas) in this replica's view.");
    describe_histogram!(
        crate::store::metered::STORE_LATENCY,
        Unit::Seconds,
        "Store call latency, by operation."
    );
}
