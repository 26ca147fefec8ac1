//! `llmgw-sim`: simulated edges against a control plane — usage ack latency, key-revocation
//! propagation and the store's transaction rate. The logic is `llmgw_tests::sim`; how to run it
//! and what it measured are in `bench/SIM.md`.
//!
//! Exit status: 0 when the run was clean, 2 on protocol errors, 3 when a revocation did not
//! reach every edge in time or measured reports were never acked (the table is printed anyway).

use std::io::Write;

use clap::Parser;
use llmgw_tests::sim::{self, SimArgs};

fn main() -> anyhow::Result<()> {
    let args = SimArgs::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(sim::run(args))?;
    let mut out = std::io::stdout().lock();
    out.write_all(report.render().as_bytes())?;
    out.flush()?;
    drop(out);
    let code = if report.protocol_errors() > 0 {
        2
    } else if report.unpropagated() > 0 || report.unacked > 0 {
        3
    } else {
        0
    };
    std::process::exit(code)
}
