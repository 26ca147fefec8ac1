//! `llmgw admin`: the command-line client of the control plane's Admin gRPC API
//! (`proto/llmgw/v1/admin.proto`). The commands, flags and output shapes scripts rely on are
//! CONFIG.md's "Admin CLI" section.
//!
//! Everything a command prints for scripts goes to the writer given to [`run_to`] (stdout for
//! [`run`]); a failure is an [`AdminError`], which displays as one line for stderr.
//!
//! The binary wires it as `Command::Admin(llmgw_admin::AdminArgs)`, and on failure prints
//! `error: {e}` to stderr and exits with [`AdminError::exit_code`].

mod cli;
mod client;
mod commands;
mod duration;
mod error;
mod render;

use std::io::Write;

pub use cli::{
    AdminArgs, AdminCommand, ApplyArgs, AuditArgs, DEFAULT_ENDPOINT, GetArgs, GetKind, KeyCommand,
    KeyCreateArgs, KeyRevokeArgs, PeriodArg, UsageArgs,
};
pub use error::AdminError;
pub use render::Output;

/// Runs one `llmgw admin` command, printing its result to stdout.
///
/// # Errors
/// See [`run_to`].
pub async fn run(args: AdminArgs) -> Result<(), AdminError> {
    run_to(args, &mut std::io::stdout()).await
}

/// Runs one `llmgw admin` command, writing its result to `out`.
///
/// Local input (the file of `apply -f`, the flags) is checked before the control plane is
/// contacted.
///
/// # Errors
/// The file or a flag is invalid, the control plane cannot be reached or refuses the call, or
/// `key revoke --wait` timed out before every edge applied the change (its result is written
/// first). Every [`AdminError`] displays as one line; the process should exit with
/// [`AdminError::exit_code`].
pub async fn run_to(args: AdminArgs, out: &mut (dyn Write + Send)) -> Result<(), AdminError> {
    let (output, connection) = (args.output, args.connection());
    let connect = || client::Client::connect(&connection);
    match args.command {
        AdminCommand::Apply(a) => {
            // The file first, so a broken file fails the same with the control plane down.
            let desired = commands::apply::read(&a)?;
            commands::apply::run(&connect().await?, &a, desired, output, out).await
        }
        AdminCommand::Get(a) => commands::get::run(&connect().await?, &a, output, out).await,
        AdminCommand::Key(KeyCommand::Create(a)) => {
            commands::key::create(&connect().await?, &a, output, out).await
        }
        AdminCommand::Key(KeyCommand::Revoke(a)) => {
            commands::key::revoke(&connect().await?, &a, output, out).await
        }
        AdminCommand::Usage(a) => commands::usage::run(&connect().await?, &a, output, out).await,
        AdminCommand::Edges => commands::edges::run(&connect().await?, output, out).await,
        AdminCommand::Audit(a) => commands::audit::run(&connect().await?, &a, output, out).await,
    }
}
