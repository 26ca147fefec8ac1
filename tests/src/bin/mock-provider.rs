//! The mock provider as a process, for benchmarks and for tests in other languages: OpenAI,
//! Azure OpenAI, Anthropic, Gemini and Bedrock on one port. Prints `listening on ADDR` once it
//! accepts connections; see `llmgw_tests::mock` for the endpoints, the `#mock:` directives and
//! the `/_mock/` control endpoints.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use llmgw_tests::mock::{Behaviour, MockOptions, MockProvider};

#[derive(Parser)]
#[command(
    about = "Mock LLM provider (OpenAI, Azure, Anthropic, Gemini, Bedrock) with per-request fault injection"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Also write the bound address to this file (atomically, via a rename).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Runtime worker threads; 1 runs everything on the main thread. Default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// How many of the last requests to keep for `GET /_mock/requests`; 0 records none.
    #[arg(long, default_value_t = 1000)]
    record_limit: usize,
    /// Default behaviour as a directive, e.g. `status=500` or `delay_ms=100,slow_ms=10`.
    #[arg(long, value_name = "DIRECTIVE")]
    default: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
        None => tokio::runtime::Runtime::new()?,
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let default = match &args.default {
        Some(directive) => Behaviour::parse(directive)?,
        None => Behaviour::default(),
    };
    let mock = MockProvider::start_with(MockOptions {
        listen: args.listen,
        record_limit: args.record_limit,
        default,
    })
    .await
    .with_context(|| format!("binding {}", args.listen))?;
    announce(mock.addr(), args.ready_file.as_deref())?;
    shutdown_signal().await?;
    drop(mock);
    Ok(())
}

/// stdout is the interface here: whoever started the process reads the address from it.
#[allow(clippy::print_stdout)]
fn announce(addr: SocketAddr, ready_file: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = ready_file {
        // Write then rename, so a poller never reads a half-written address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{addr}\n")).with_context(|| format!("{}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))?;
    }
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
