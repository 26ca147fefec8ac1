//! The one error type of `llmgw admin`, and the one table mapping gRPC status codes to words.

use std::time::Duration;

use llmgw_shared::configfile::ConfigError;
use tonic::Code;

use crate::duration;

/// Why an admin command failed. Displays as one line, without an `error:` prefix; the process
/// exits with [`AdminError::exit_code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The config file of `apply -f` cannot be read or is invalid: `FILE:LINE:COL: PATH: MESSAGE`.
    #[error("{}", one_line(&.0.to_string()))]
    Config(#[from] ConfigError),
    /// A flag or local file the command line names is unusable.
    #[error("{}", one_line(.0))]
    Usage(String),
    /// The control plane refused the admin token (or none was given).
    #[error("the admin token was refused (set --token or LLMGW_ADMIN_TOKEN)")]
    Unauthenticated,
    /// No connection to the control plane, or it answered `UNAVAILABLE`.
    #[error("cannot reach the control plane at {endpoint}: {}", one_line(.detail))]
    Unreachable { endpoint: String, detail: String },
    /// No answer within the request timeout.
    #[error("the control plane at {endpoint} did not answer within {}", duration::format(*.after))]
    Timeout { endpoint: String, after: Duration },
    /// The control plane answered with an error; `message` says why in plain words.
    #[error("{}", one_line(.message))]
    Rejected { code: Code, message: String },
    /// `key revoke --wait`: the change was committed but not every edge applied it in time.
    #[error(
        "revision {revision} was applied on {applied} of {total} edges within {}; the others have not applied it yet",
        duration::format(*.waited)
    )]
    EdgesBehind { revision: u64, applied: u32, total: u32, waited: Duration },
    /// The result cannot be written (a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// The result cannot be printed in the chosen format.
    #[error("cannot print the result: {}", one_line(.0))]
    Render(String),
}

impl AdminError {
    /// The process exit code for this error: 1 for every failure (0 is success; clap uses 2 for
    /// a command line it cannot parse).
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        1
    }

    /// Maps a gRPC status from the control plane at `endpoint` to plain words.
    pub(crate) fn from_status(status: &tonic::Status, endpoint: &str) -> Self {
        let msg = status.message().trim();
        let or = |fallback: &str| if msg.is_empty() { fallback.to_owned() } else { msg.to_owned() };
        let code = status.code();
        let message = match code {
            Code::Unauthenticated => return AdminError::Unauthenticated,
            Code::Unavailable => {
                let detail = or("the service is unavailable");
                return AdminError::Unreachable { endpoint: endpoint.to_owned(), detail };
            }
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Aborted => or(&format!("the control plane refused the request ({code})")),
            Code::PermissionDenied => format!("permission denied: {}", or("the admin token may not do this")),
            Code::DeadlineExceeded => format!("the control plane timed out: {}", or("deadline exceeded")),
            Code::ResourceExhausted => format!("the control plane is overloaded: {}", or("try again later")),
            // Also what a plain HTTP server's 404 maps to: say both possibilities.
            Code::Unimplemented => format!(
                "the server at {endpoint} does not serve this admin call (is it an llmgw control plane, \
                 as new as this CLI?): {}",
                or("unimplemented")
            ),
            Code::Ok | Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
                format!("the control plane failed: {}", or(&code.to_string()))
            }
        };
        AdminError::Rejected { code, message }
    }
}

/// Joins the lines of a message, so every error prints as one line.
fn one_line(s: &str) -> String {
    s.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::*;

    fn shown(status: Status) -> String {
        AdminError::from_status(&status, "http://cp:7070").to_string()
    }

    #[test]
    fn maps_codes_to_plain_words() {
        assert_eq!(
            shown(Status::unauthenticated("bad token")),
            "the admin token was refused (set --token or LLMGW_ADMIN_TOKEN)"
        );
        assert_eq!(
            shown(Status::unavailable("tcp connect error")),
            "cannot reach the control plane at http://cp:7070: tcp connect error"
        );
        for status in [
            Status::invalid_argument("models[0].targets[0].provider: no provider named \"opanai\""),
            Status::not_found("no key named \"ranker\""),
            Status::already_exists("a key named \"ranker\" exists"),
            Status::failed_precondition("team \"search\" still has projects"),
        ] {
            assert_eq!(shown(status.clone()), status.message());
        }
        assert!(shown(Status::invalid_argument("")).contains("refused the request"));
        assert!(shown(Status::permission_denied("read-only token")).contains("read-only token"));
        assert!(shown(Status::internal("store: boom")).contains("store: boom"));
        assert!(shown(Status::unimplemented("")).contains("does not serve this admin call"));
    }

    #[test]
    fn every_error_is_one_line() {
        let e = AdminError::from_status(&Status::invalid_argument("first\nsecond\r\n"), "x");
        assert_eq!(e.to_string(), "first; second");
        let e =
            AdminError::EdgesBehind { revision: 7, applied: 1, total: 3, waited: Duration::from_secs(10) };
        assert_eq!(
            e.to_string(),
            "revision 7 was applied on 1 of 3 edges within 10s; the others have not applied it yet"
        );
        assert_eq!(e.exit_code(), 1);
    }
}
