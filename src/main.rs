//! `llmgw`: one binary, four roles. Only parses the command line and hands off to the crates.

use clap::{Parser, Subcommand};
use llmgw_shared::telemetry::{LogFormat, init_logging};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "llmgw", version, about = "An LLM gateway: virtual keys, routing, fallback, budgets.")]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, env = "LLMGW_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an edge: the HTTP proxy that serves client traffic.
    Edge(llmgw_edge::EdgeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Edge(args) if args.check => {
            let msg = llmgw_edge::check(&args)?;
            eprintln!("{msg}");
            Ok(())
        }
        Command::Edge(args) => runtime()?.block_on(async {
            let stop = shutdown_signal();
            llmgw_edge::run(args, stop).await?;
            Ok(())
        }),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

/// Cancelled on the first SIGTERM or SIGINT.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}
