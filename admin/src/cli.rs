//! The command line of `llmgw admin` (CONFIG.md, "Admin CLI"). Flag combinations clap can check
//! (`--team` xor `--project`, `--budget-usd` with `--period`) are declared here, so they fail
//! before anything is sent.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use crate::client::Connection;
use crate::duration;
use crate::render::Output;

/// Where `llmgw dev` and `llmgw control-plane` serve the admin API by default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7070";

/// `llmgw admin …`: manage a control plane over its admin gRPC API.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The control plane's gRPC endpoint (http:// or https://).
    #[arg(long, global = true, env = "LLMGW_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// The admin token, sent as `authorization: Bearer TOKEN` (of a comma-separated list, the first).
    #[arg(long, global = true, env = "LLMGW_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust for an https:// endpoint, besides the public roots.
    #[arg(long, global = true, env = "LLMGW_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// A PEM client certificate, for a control plane that requires one (mTLS).
    #[arg(long, global = true, env = "LLMGW_CLIENT_CERT", value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, global = true, env = "LLMGW_CLIENT_KEY", value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: AdminCommand,
}

impl AdminArgs {
    pub(crate) fn connection(&self) -> Connection {
        Connection {
            endpoint: self.endpoint.clone(),
            token: self.token.as_deref().and_then(first_token),
            ca_cert: self.ca_cert.clone(),
            client_identity: self.client_cert.clone().zip(self.client_key.clone()),
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Make the control plane's state match a config file and print the changes.
    Apply(ApplyArgs),
    /// Print resources (`-o yaml` prints the config-file format, which `apply -f` reads back).
    Get(GetArgs),
    /// Create or revoke virtual keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print usage counters: requests, tokens, cost and errors.
    Usage(UsageArgs),
    /// Print the connected edges and the config revision each one applied.
    Edges,
    /// Print the audit log: who changed what, when.
    Audit(AuditArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The config file (CONFIG.md's format).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Print what would change without changing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete what the file does not name.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// What to print.
    #[arg(value_enum)]
    pub what: GetKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetKind {
    #[value(alias = "provider")]
    Providers,
    #[value(alias = "model")]
    Models,
    #[value(alias = "team")]
    Teams,
    #[value(alias = "project")]
    Projects,
    #[value(alias = "key")]
    Keys,
    All,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeyCommand {
    /// Create a virtual key and print its secret, once.
    Create(KeyCreateArgs),
    /// Revoke a virtual key by name or id.
    Revoke(KeyRevokeArgs),
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("owner").required(true).args(["team", "project"])))]
pub struct KeyCreateArgs {
    /// The key's name.
    #[arg(long)]
    pub name: String,
    /// The team the key belongs to.
    #[arg(long)]
    pub team: Option<String>,
    /// The project the key belongs to.
    #[arg(long)]
    pub project: Option<String>,
    /// The model aliases the key may use (comma-separated); omitted: all.
    #[arg(long, value_delimiter = ',', value_name = "A,B", value_parser = non_empty)]
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tpm: Option<u64>,
    /// Budget in USD per --period.
    #[arg(long, requires = "period", value_parser = usd, value_name = "USD")]
    pub budget_usd: Option<f64>,
    /// The budget's period.
    #[arg(long, requires = "budget_usd", value_enum)]
    pub period: Option<PeriodArg>,
    /// Expiry from now: 30d, 12h, 90m, 3600s.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    pub expires_in: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeriodArg {
    Daily,
    Weekly,
    Monthly,
    Total,
}

#[derive(Debug, Clone, Args)]
pub struct KeyRevokeArgs {
    /// The key's name or id.
    #[arg(value_name = "NAME|ID")]
    pub key: String,
    /// Return once every connected edge applied the revocation.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "10s", value_parser = duration::parse, value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    #[arg(long)]
    pub team: Option<String>,
    #[arg(long)]
    pub project: Option<String>,
    /// The key's name or id.
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    /// From this time (RFC 3339, or a duration ago such as 24h); omitted: all-time totals.
    #[arg(long, value_parser = since, value_name = "TIME")]
    pub since: Option<i64>,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// From this time (RFC 3339, or a duration ago such as 24h); omitted: all.
    #[arg(long, value_parser = since, value_name = "TIME")]
    pub since: Option<i64>,
}

/// The token to send. `llmgw control-plane` reads `LLMGW_ADMIN_TOKEN` as a comma-separated list
/// (to rotate tokens), so in an environment set up for it the CLI sends the first entry.
fn first_token(value: &str) -> Option<String> {
    value.split(',').map(str::trim).find(|t| !t.is_empty()).map(str::to_owned)
}

fn non_empty(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() { Err("a model name cannot be empty".to_owned()) } else { Ok(s.to_owned()) }
}

fn usd(s: &str) -> Result<f64, String> {
    match s.trim_start_matches('$').parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("\"{s}\" is not an amount of USD ≥ 0, such as 25 or 12.50")),
    }
}

/// `--since`: an RFC 3339 time, or a duration meaning that long ago; Unix seconds.
fn since(s: &str) -> Result<i64, String> {
    if let Some(t) = llmgw_shared::configfile::parse_time(s) {
        return Ok(t);
    }
    let ago = duration::parse(s).map_err(|_| {
        format!("\"{s}\" is neither an RFC 3339 time such as 2026-01-01T00:00:00Z nor a duration such as 24h")
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_owned())?;
    let secs = now.saturating_sub(ago).as_secs();
    i64::try_from(secs).map_err(|_| format!("\"{s}\" is out of range"))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser, error::ErrorKind};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    fn parse(args: &str) -> Result<AdminArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("admin").chain(args.split_whitespace())).map(|c| c.admin)
    }

    fn key_create(args: &str) -> Result<KeyCreateArgs, clap::Error> {
        match parse(&format!("key create {args}"))?.command {
            AdminCommand::Key(KeyCommand::Create(a)) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere_and_have_defaults() {
        let a = parse("get all -o yaml --endpoint http://cp:7070").unwrap();
        assert_eq!((a.output, a.endpoint.as_str()), (Output::Yaml, "http://cp:7070"));
        // The env var may be set where the tests run; only the default's shape is checked.
        let a = parse("-o json edges").unwrap();
        assert_eq!(a.output, Output::Json);
        assert!(matches!(a.command, AdminCommand::Edges));
        assert_eq!(parse("edges").unwrap().output, Output::Table);
        assert!(parse("edges -o xml").is_err());
    }

    #[test]
    fn key_create_needs_exactly_one_owner() {
        let a = key_create("--name k --team search").unwrap();
        assert_eq!((a.team.as_deref(), a.project), (Some("search"), None));
        let a = key_create("--name k --project ranker").unwrap();
        assert_eq!(a.project.as_deref(), Some("ranker"));
        assert_eq!(
            key_create("--name k --team t --project p").unwrap_err().kind(),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(key_create("--name k").unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(key_create("--team t").unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn budget_and_period_go_together() {
        let a = key_create("--name k --team t --budget-usd 5 --period daily").unwrap();
        assert_eq!((a.budget_usd, a.period), (Some(5.0), Some(PeriodArg::Daily)));
        let err = key_create("--name k --team t --budget-usd 5").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        let err = key_create("--name k --team t --period daily").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        assert!(key_create("--name k --team t --budget-usd -1 --period daily").is_err());
        assert!(key_create("--name k --team t --budget-usd NaN --period daily").is_err());
        assert!(key_create("--name k --team t --budget-usd 5 --period hourly").is_err());
    }

    #[test]
    fn key_create_values() {
        let a = key_create("--name k --team t --models a,b --rpm 60 --tpm 1000 --expires-in 30d").unwrap();
        assert_eq!(a.models, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!((a.rpm, a.tpm), (Some(60), Some(1000)));
        assert_eq!(a.expires_in, Some(Duration::from_secs(30 * 86_400)));
        assert!(key_create("--name k --team t --rpm 0").is_err());
        assert!(key_create("--name k --team t --models a,,b").is_err());
        assert!(key_create("--name k --team t --expires-in 30").is_err());
    }

    #[test]
    fn revoke_timeout_defaults_to_10s() {
        let AdminCommand::Key(KeyCommand::Revoke(a)) = parse("key revoke k --wait").unwrap().command else {
            panic!("not a revoke");
        };
        assert_eq!((a.key.as_str(), a.wait, a.timeout), ("k", true, Duration::from_secs(10)));
        let AdminCommand::Key(KeyCommand::Revoke(a)) =
            parse("key revoke k --wait --timeout 2m").unwrap().command
        else {
            panic!("not a revoke");
        };
        assert_eq!(a.timeout, Duration::from_secs(120));
    }

    #[test]
    fn since_takes_a_time_or_a_duration_ago() {
        assert_eq!(since("2026-01-01T00:00:00Z"), Ok(1_767_225_600));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let t = since("1h").unwrap();
        assert!((now as i64 - 3600 - t).abs() <= 2, "{t}");
        assert!(since("last tuesday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn the_token_is_the_first_of_a_list() {
        assert_eq!(first_token("abc").as_deref(), Some("abc"));
        assert_eq!(first_token(" new , old").as_deref(), Some("new"));
        assert_eq!(first_token(""), None);
        assert_eq!(first_token(" , "), None);
    }

    #[test]
    fn get_accepts_singular_kinds() {
        let AdminCommand::Get(a) = parse("get provider").unwrap().command else { panic!("not a get") };
        assert_eq!(a.what, GetKind::Providers);
        assert!(parse("get widgets").is_err());
    }
}
