//! `llmgw`: one binary, four roles. Only parses the command line and hands off to the crates.

mod dev;

// The request path allocates small, short-lived buffers on two threads; mimalloc's per-thread
// free lists cost less than glibc's arenas there (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Control plane and one edge in one process, on the embedded store: a gateway in one command.
    Dev(dev::DevArgs),
    /// Run a control plane: admin API, config store, config streaming to edges.
    ControlPlane(llmgw_control_plane::ControlPlaneArgs),
    /// Run an edge: the HTTP proxy that serves client traffic.
    Edge(llmgw_edge::EdgeArgs),
    /// Manage a control plane: apply config, keys, usage, edges, audit.
    Admin(llmgw_admin::AdminArgs),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("{}", error_text(&e));
        std::process::exit(1);
    }
}

/// `error: <what failed>: <why>`, each cause once: the default report repeats a cause that
/// already names itself in the message above it, and with `RUST_BACKTRACE` set (common on
/// servers) adds a backtrace that tells an operator nothing about a wrong config or port.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::from("error: ");
    let mut shown = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if shown.contains(&text) {
            continue;
        }
        if !shown.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        shown.push_str(&text);
    }
    out
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Edge(args) if args.check => {
            let msg = llmgw_edge::check(&args)?;
            eprintln!("{msg}");
            Ok(())
        }
        Command::Edge(args) => {
            llmgw_edge::run_threaded(args, edge_workers(), shutdown_signal)?;
            Ok(())
        }
        Command::ControlPlane(args) => runtime()?.block_on(async {
            llmgw_control_plane::run(args, secrets_from_env(), shutdown_signal()).await?;
            Ok(())
        }),
        Command::Dev(args) => runtime()?.block_on(async { dev::run(args, shutdown_signal()).await }),
        Command::Admin(args) => {
            if let Err(e) = runtime()?.block_on(llmgw_admin::run(args)) {
                eprintln!("error: {e}");
                std::process::exit(e.exit_code());
            }
            Ok(())
        }
    }
}

/// The edge's worker threads: one per core, or `LLMGW_WORKERS`.
fn edge_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    std::env::var("LLMGW_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(cores)
}

fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn secrets_from_env() -> llmgw_control_plane::Secrets {
    llmgw_control_plane::Secrets {
        admin_tokens: env_list("LLMGW_ADMIN_TOKEN"),
        edge_tokens: env_list("LLMGW_EDGE_TOKEN"),
        master_key: std::env::var("LLMGW_MASTER_KEY").ok().filter(|k| !k.is_empty()),
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
